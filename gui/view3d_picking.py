"""Picking in the 3D view: which point is under the cursor, and the points marked for "Set scale".

Plain numpy on a model-view-projection matrix, testable without OpenGL: :func:`project_to_screen`
takes world points to widget pixels, :func:`pick_point` finds the frontmost one near a click.
:class:`Markers` keeps the (up to two) points picked and draws them on the view's marker items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QMatrix4x4

#: A shift+click picks the frontmost point within this many pixels of the cursor.
PICK_RADIUS_PX = 6.0


def is_pick(event: QEvent) -> bool:
    """Whether an input event is a pick: a shift + left button press (not an orbit)."""
    return (
        event.type() == QEvent.Type.MouseButtonPress
        and event.button() == Qt.MouseButton.LeftButton
        and bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
    )


def world_to_clip(gl_view: Any, model: QMatrix4x4) -> np.ndarray:
    """The ``(4, 4)`` row-major matrix from world to clip coordinates of a ``GLViewWidget``.

    ``model`` is the items' transform (world to the view's display frame).
    """
    w, h = max(gl_view.width(), 1), max(gl_view.height(), 1)
    projection = gl_view.projectionMatrix((0, 0, w, h), (0, 0, w, h))
    return qmatrix_to_numpy(projection * gl_view.viewMatrix() * model)


def qmatrix_to_numpy(matrix: QMatrix4x4) -> np.ndarray:
    """A ``QMatrix4x4`` as a row-major ``(4, 4)`` float64 array (``M @ [x, y, z, 1]``)."""
    return np.array(matrix.data(), dtype=np.float64).reshape(4, 4).T  # data() is column-major


def project_to_screen(
    points: np.ndarray, mvp: np.ndarray, width: float, height: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project world points through a model-view-projection matrix to widget pixels.

    Parameters
    ----------
    points
        ``(N, 3)`` world coordinates.
    mvp
        ``(4, 4)`` row-major matrix from world to clip coordinates (OpenGL conventions).
    width, height
        Size of the widget in pixels (logical: as mouse events give them).

    Returns
    -------
    tuple of ndarray
        ``(xy (N, 2) pixels from the top-left, depth (N,) normalised device z in [-1, 1],
        visible (N,) bool: in front of the camera and inside the clipping volume)``.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    clip = pts @ mvp[:3, :3].T + mvp[:3, 3]
    w = pts @ mvp[3, :3] + mvp[3, 3]
    visible = w > 1e-12
    safe_w = np.where(visible, w, 1.0)
    ndc = clip / safe_w[:, None]
    visible &= np.all(np.abs(ndc) <= 1.0, axis=1)
    xy = np.stack([(ndc[:, 0] + 1.0) * 0.5 * width, (1.0 - ndc[:, 1]) * 0.5 * height], axis=1)
    return xy, ndc[:, 2], visible


def pick_point(
    points: np.ndarray,
    mvp: np.ndarray,
    size: tuple[float, float],
    click: tuple[float, float],
    radius_px: float = PICK_RADIUS_PX,
) -> int | None:
    """Index of the point a click picks: the frontmost one within ``radius_px`` of the click.

    Frontmost, not nearest on screen, so a click on a surface never picks a point of the far
    side that projects to the same pixel. When none is that close, the radius is doubled up to
    three times.

    Parameters
    ----------
    points
        ``(N, 3)`` world coordinates.
    mvp
        ``(4, 4)`` row-major world-to-clip matrix (see :func:`project_to_screen`).
    size
        ``(width, height)`` of the widget in pixels.
    click
        ``(x, y)`` of the click in the same pixels, from the top-left.
    radius_px
        Search radius in pixels.

    Returns
    -------
    int or None
        Index into ``points``, or None when no visible point is near the click.
    """
    if len(points) == 0:
        return None
    xy, depth, visible = project_to_screen(points, mvp, *size)
    d2 = np.sum((xy - np.asarray(click, dtype=np.float64)) ** 2, axis=1)
    radius = float(radius_px)
    for _ in range(4):
        near = np.flatnonzero(visible & (d2 <= radius * radius))
        if len(near):
            order = np.lexsort((d2[near], depth[near]))
            return int(near[order[0]])
        radius *= 2.0
    return None


class Markers:
    """Up to two picked points (reconstruction coordinates), drawn as dots joined by a line.

    The points are kept without OpenGL too; :meth:`attach` gives the items that draw them.
    """

    def __init__(self) -> None:
        self._points = np.zeros((0, 3))
        self._dots: Any = None
        self._line: Any = None

    @property
    def points(self) -> np.ndarray:
        """The marked points, ``(K, 3)`` (a copy)."""
        return self._points.copy()

    def attach(self, dots: Any, line: Any) -> None:
        """Draw on these items (a scatter item and a line item); None, None: draw nothing."""
        self._dots, self._line = dots, line

    def set(self, points: list | np.ndarray) -> None:
        """Mark these points (the first two are joined by a line)."""
        marked = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        self._points = marked
        if self._dots is None:
            return
        if len(marked) == 0:
            self._dots.setVisible(False)
            self._line.setVisible(False)
            return
        self._dots.setData(pos=marked.astype(np.float32))
        self._dots.setVisible(True)
        if len(marked) >= 2:
            self._line.setData(pos=marked[:2].astype(np.float32))
            self._line.setVisible(True)
        else:
            self._line.setVisible(False)
