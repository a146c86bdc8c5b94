"""Atomic file writes: a temporary file in the target's folder, fsync, then ``os.replace``.

A crash or a full disk leaves either the old file or the new one, never half of one, and no
temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from engine.errors import OutputError, disk_full_error, is_disk_full

#: Mode of the files written (tempfile creates 0600; exports are meant to be shared).
FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically.

    Parameters
    ----------
    path
        Final file. Its folder must exist.
    mode
        ``"wb"`` or ``"w"``.
    **kwargs
        Passed to :func:`open` (``encoding``, ``newline`` for text mode).

    Yields
    ------
    IO
        The open temporary file; write everything to it inside the ``with`` block.

    Raises
    ------
    OutputError
        When the folder is missing or cannot be written (read-only, disk full ...).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes only, got mode {mode!r}")
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path.parent, path.name) from exc
        raise OutputError(
            f"Cannot write {path.name} in {path.parent}: {exc.strerror or exc}. "
            "Choose a folder you can write to."
        ) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise disk_full_error(path.parent, path.name) from exc
        if isinstance(exc, OSError):
            raise OutputError(
                f"Cannot write {path.name} in {path.parent}: "
                f"{exc.strerror or exc}. Check free disk space and "
                "permissions."
            ) from exc
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable on POSIX; not possible (nor needed) on Windows.
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    Parameters
    ----------
    path
        Final file.
    data
        Content.

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)
