"""The one exception type that the command line turns into a clear message and exit status 2."""

from contextlib import contextmanager


class LdcodecError(Exception):
    """A user-facing error: bad input, a wrong checkpoint, a corrupt stream, a bad config.

    The message must say what went wrong and what to do about it, in one line.
    """


@contextmanager
def reraise_damage(what: str):
    """Report an entropy or image decoder's complaint about damaged data as a one-line ``LdcodecError``.

    constriction reports damaged data as ``ValueError``/``AssertionError``, Pillow as ``OSError``
    and others; inside this block any of them becomes "damaged WHAT payload".
    """
    try:
        yield
    except LdcodecError:
        raise
    except Exception as e:
        raise LdcodecError(f"damaged {what} payload ({e.__class__.__name__}); the stream is corrupt") from None
