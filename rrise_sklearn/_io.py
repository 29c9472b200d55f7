"""Atomic file writes: a temporary file beside the target, flushed to disk, then renamed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO, Any


def write_atomic(
    path: str | os.PathLike,
    writer: Callable[[IO[Any]], None],
    *,
    text: bool = False,
    fsync: bool = True,
) -> None:
    """Call ``writer(file)`` on a temporary file in ``path``'s folder, then rename it to ``path``.

    A crash leaves the old file (or none), never a half-written one; the
    temporary file is removed on any error. ``fsync=False`` skips forcing the
    data to disk before the rename: only for files whose readers verify a
    checksum (a power cut can then leave a renamed but torn file, which the
    reader detects and rejects).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"folder {directory} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".rrise-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as fh:
            writer(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
