"""Level of detail for the 3D view: how many points it uploads, and how thin a moving preview is.

:class:`DrawBudget` is plain bookkeeping, without Qt or OpenGL, so it can be tested on numbers:
it caps the points uploaded (an even random subset with a fixed seed), learns the cost of a
frame per point from the frames the view reports, and from that picks how many points a run may
draw live and every how many points the preview keeps while the camera moves.
:class:`MovingPreview` applies its answers to the cloud's items of
:class:`gui.view3d.PointCloudView` while the camera moves.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal

#: Fewest points in the preview drawn while the camera moves.
PREVIEW_MIN_POINTS = 50_000
#: Fewest points drawn while a run computes (see :meth:`DrawBudget.live_budget`).
LIVE_MIN_POINTS = 100_000
#: The preview lasts this long after the last mouse, wheel or key event.
SETTLE_MS = 300
_INTERACTION_EVENTS = {
    QEvent.Type.MouseButtonPress,
    QEvent.Type.MouseMove,
    QEvent.Type.Wheel,
    QEvent.Type.KeyPress,
}


def moves_camera(event: QEvent) -> bool:
    """Whether an input event over the view may move its camera (a press, drag, wheel or key)."""
    if event.type() not in _INTERACTION_EVENTS:
        return False
    hovering = event.type() == QEvent.Type.MouseMove and event.buttons() == Qt.MouseButton.NoButton
    return not hovering


class DrawBudget:
    """The 3D view's point budget and the measured cost of its frames.

    Parameters
    ----------
    max_draw_points
        At most this many points are uploaded (uniform decimation with a fixed seed).
    interactive_frame_ms
        Frame-time budget while the camera moves: when a full frame costs more, an evenly
        thinned preview (every k-th point, at least 50,000) is drawn until the user stops.

    Attributes
    ----------
    frame_s_per_point
        Seconds per drawn point, measured on the last frame that uploaded nothing (None before).
    last_frame_points
        Points drawn in the last frame shown.
    preview_active
        Whether the thinned preview is drawn (the camera is moving).
    preview_stride
        Every how many points the preview built holds (0: none built).

    Raises
    ------
    ValueError
        For a budget under one point.
    """

    def __init__(self, max_draw_points: int = 3_000_000, interactive_frame_ms: float = 50.0):
        self.max_draw_points = max_draw_points
        self.interactive_frame_ms = float(interactive_frame_ms)
        self.frame_s_per_point: float | None = None
        self.last_frame_points = 0
        self.preview_active = False
        self.preview_stride = 0

    @property
    def max_draw_points(self) -> int:
        """Most points uploaded; larger clouds are decimated."""
        return self._max_draw_points

    @max_draw_points.setter
    def max_draw_points(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"max_draw_points must be positive, got {value}")
        self._max_draw_points = int(value)

    def decimate(self, xyz: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """At most :attr:`max_draw_points` of the points, evenly at random (seed 0), in order."""
        n = len(xyz)
        if n <= self._max_draw_points:
            return xyz, rgb
        idx = np.random.default_rng(0).choice(n, self._max_draw_points, replace=False)
        idx.sort()  # keeps memory access in order for the upload
        return xyz[idx], rgb[idx]

    def full_frame_ms(self, points: int) -> float | None:
        """Estimated time of a frame drawing ``points`` (None before a frame was measured)."""
        if self.frame_s_per_point is None:
            return None
        return 1000.0 * self.frame_s_per_point * points

    def live_budget(self, frame_ms: float = 40.0, floor: int = LIVE_MIN_POINTS) -> int:
        """Points that can be drawn in about ``frame_ms`` by the frame cost measured so far.

        Used while a run computes on the same CPU: software OpenGL (no GPU) redrawing a growing
        cloud would otherwise stall the window for hundreds of milliseconds per frame. Before
        any frame was measured this is ``floor``.
        """
        if self.frame_s_per_point is None or self.frame_s_per_point <= 0:
            return floor
        return max(floor, int(frame_ms / 1000.0 / self.frame_s_per_point))

    def wanted_stride(self, points: int) -> int:
        """Every how many of ``points`` the preview keeps (1: full frames fit, no preview)."""
        full_ms = self.full_frame_ms(points)
        if full_ms is None or points == 0 or full_ms <= self.interactive_frame_ms:
            return 1
        k = max(PREVIEW_MIN_POINTS, int(points * self.interactive_frame_ms / full_ms))
        return math.ceil(points / k) if k < points else 1

    def record_frame(self, seconds: float, drawn: int, uploaded: bool) -> bool:
        """Note a frame shown: ``drawn`` points in ``seconds``; True when it was measured.

        Frames that uploaded buffers are not typical and are not measured. Fixed costs
        (clearing, compositing) count as per-point cost too: on a slow renderer that thins the
        preview a little more, towards the budget.
        """
        self.last_frame_points = drawn
        if not drawn or uploaded:
            return False
        self.frame_s_per_point = seconds / drawn
        return True

    def preview_outdated(self, points: int) -> bool:
        """Whether the preview built is more than 25% off the stride the last frame asks for."""
        if not self.preview_stride:
            return False
        return not 0.8 <= self.wanted_stride(points) / self.preview_stride <= 1.25


class MovingPreview(QObject):
    """Draws an evenly thinned copy of the cloud while the camera moves, as the budget says.

    Parameters
    ----------
    budget
        Says every how many points the preview keeps, and records the frames.
    settle_ms
        The preview lasts this long after the last camera-moving input.
    parent
        Qt parent.

    Signals
    -------
    ended()
        The camera has been still for ``settle_ms``, or full frames fit the budget again: the
        owner shows the full cloud.
    """

    ended = Signal()

    def __init__(
        self, budget: DrawBudget, settle_ms: int = SETTLE_MS, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.budget = budget
        self._full: Any = None
        self._preview: Any = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(settle_ms)
        self._timer.timeout.connect(self.ended)

    def attach(self, full: Any, preview: Any) -> None:
        """Thin ``full``'s arrays into ``preview`` (scatter items); None, None: no OpenGL."""
        self._full, self._preview = full, preview
        if full is None:
            self.budget.preview_active = False

    def moved(self, points: int) -> None:
        """The camera moved: keep the preview 300 ms longer, and show it if it is not shown."""
        self._timer.start()
        if not self.budget.preview_active:
            self.show(points)

    def show(self, points: int) -> None:
        """Show the preview of the ``points`` uploaded (or emit :attr:`ended` if none is needed)."""
        budget = self.budget
        stride = budget.wanted_stride(points)
        if stride <= 1:
            self.ended.emit()
            return
        if stride != budget.preview_stride:
            # every k-th point of the uploaded arrays: uniform across fused views, no shuffle
            full = self._full
            self._preview.setData(pos=full.pos[::stride], color=full.color[::stride])
            budget.preview_stride = stride
        self._preview.setVisible(True)
        self._full.setVisible(False)
        budget.preview_active = True

    def frame_shown(self, seconds: float, points: int, uploaded: bool) -> None:
        """A frame took ``seconds`` (``uploaded``: it uploaded buffers); adapt a shown preview."""
        budget = self.budget
        drawn = len(self._preview.pos) if budget.preview_active else points
        measured = budget.record_frame(seconds, drawn, uploaded)
        if measured and budget.preview_active and budget.preview_outdated(points):
            self.show(points)  # adapt to the measured preview frames
