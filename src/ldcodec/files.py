"""Atomic file writes: a crash (even SIGKILL) leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path

from ldcodec.errors import LdcodecError


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_atomic(path: Path, write, parents: bool = False) -> Path:
    """Call ``write(tmp)`` then rename ``tmp`` to ``path``: no half-written output on failure.

    ``tmp`` keeps ``path``'s suffix (writers that infer the format still work); ``parents=True``
    creates missing folders first. OS errors become a one-line ``LdcodecError``.
    """
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        if parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        tmp.replace(path)
    except OSError as e:
        raise LdcodecError(f"{path}: cannot write the output ({e.strerror or e}); check that its folder "
                           "exists and is writable") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
