"""Specific exceptions whose messages a photographer understands.

Every message names the file or folder concerned and says what to do next.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class VitrineError(Exception):
    """Base class of all errors the engine raises on purpose."""

    #: Process exit code the command line uses for this error.
    exit_code = 1


class InputError(VitrineError):
    """The photos given cannot be used (missing, unreadable, too few ...)."""

    exit_code = 2


class NotEnoughImagesError(InputError):
    """Fewer usable photos than a reconstruction needs."""


class ClusterUnavailableError(InputError):
    """A Ray cluster was asked for but Ray is not installed (or the cluster cannot be reached)."""


class ReconstructionError(VitrineError):
    """A stage ran but could not produce a usable result from these photos."""

    exit_code = 3


class NoProductError(ReconstructionError):
    """Only the product's surroundings were reconstructed (a bare floor, background).

    The run stops instead of exporting them as the product.
    """


class OutputError(VitrineError):
    """The run folder cannot be written (read-only, disk full ...)."""

    exit_code = 4


class ModelError(VitrineError):
    """A neural network's weights are missing, corrupt or refused."""

    exit_code = 5


class DiskFullError(OutputError):
    """The disk (or the user's quota) is full while the run folder is written."""


#: ``errno`` values that mean "no space left" (disk full, or the user's quota used up).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, *((errno.EDQUOT,) if hasattr(errno, "EDQUOT") else ())})


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is an ``OSError`` for a full disk."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def free_space_text(folder: str | os.PathLike[str]) -> str:
    """Free space on the disk holding ``folder`` (its nearest existing parent), in words."""
    path = Path(folder)
    while not path.exists() and path.parent != path:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "free space unknown"
    if free >= 10 * 1024**3:
        return f"{free / 1024**3:.0f} GB free"
    return f"{free / 1024**2:.1f} MB free"


def disk_full_error(folder: str | os.PathLike[str], what: str = "") -> DiskFullError:
    """The error for a full disk while writing ``what`` into ``folder``.

    The message names the folder, the space left and what to do; finished stages are kept,
    so running again after freeing space resumes the run.
    """
    target = f"{what} in '{folder}'" if what else f"into '{folder}'"
    return DiskFullError(
        f"The disk is full: cannot write {target} ({free_space_text(folder)}). Free some disk "
        "space, or choose an output folder on another disk, then run again: finished stages "
        "are kept and the run resumes."
    )
