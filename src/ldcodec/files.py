"""Atomic file writes: a crash (even SIGKILL) leaves either the old file or the new one, never half of one.

:func:`write_folder_atomic` does the same for a new folder of files: it appears whole or not at all.
"""

from __future__ import annotations

import os
import shutil
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
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")  # per process: two writers never share it
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


def write_folder_atomic(path: Path, write) -> Path:
    """Call ``write(tmp)`` on a new folder ``tmp`` beside ``path``, then rename ``tmp`` to ``path``.

    ``path`` must be absent or an empty folder; a stale ``tmp`` of an interrupted run is removed
    first, and ``tmp`` is removed if ``write`` fails. OS errors become a one-line ``LdcodecError``.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise LdcodecError(f"{path} exists and is not an empty folder; choose a new output folder")
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        if path.exists():
            path.rmdir()
        tmp.replace(path)
    except OSError as e:
        raise LdcodecError(f"{path}: cannot write the output folder ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
