"""The one exception type that the command line turns into a clear message and exit status 2."""


class LdcodecError(Exception):
    """A user-facing error: bad input, a wrong checkpoint, a corrupt stream, a bad config.

    The message must say what went wrong and what to do about it, in one line.
    """
