"""Typed progress events and cooperative cancellation.

The engine reports progress as :class:`ProgressEvent` objects passed to a callback; the command
line turns them into a bar and the GUI into a Qt signal. One :class:`CancelToken` per run is
checked at every loop boundary and handed to every pycolmap call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pycolmap

logger = logging.getLogger(__name__)


class Cancelled(Exception):  # noqa: N818 - reads better at call sites than CancelledError
    """Raised inside the engine when the user cancelled the run. Not an error."""


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress of one stage.

    Attributes
    ----------
    stage
        Stage name (``ingest``, ``sfm``, ``export`` ...).
    current, total
        Units done and units in all (images, pairs ...); ``total`` 0 when unknown.
    message
        Short human-readable description of what is happening.
    partial
        Optional immutable partial result for a live preview (for example a
        :class:`engine.types.PointCloud` snapshot of the growing sparse model).
    """

    stage: str
    current: int = 0
    total: int = 0
    message: str = ""
    partial: Any = None

    @property
    def fraction(self) -> float | None:
        """Fraction done in [0, 1], or None when the total is unknown."""
        if self.total <= 0:
            return None
        return min(1.0, max(0.0, self.current / self.total))


ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """Progress callback that ignores every event."""


class CancelToken:
    """One per run: set from any thread, checked by the engine, passed into pycolmap."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._colmap = pycolmap.CancellationToken()

    def cancel(self) -> None:
        """Ask the run to stop at its next check (thread-safe, idempotent)."""
        self._event.set()
        self._colmap.cancel()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` when the run was cancelled."""
        if self._event.is_set():
            raise Cancelled()

    @property
    def colmap(self) -> pycolmap.CancellationToken:
        """The pycolmap token to pass as ``cancellation_token=``."""
        return self._colmap
