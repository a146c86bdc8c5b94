"""The 3D view's plain helpers, on numbers: level of detail, picking markers, framing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.types import CameraPose, Mesh
from gui.view3d_budget import LIVE_MIN_POINTS, PREVIEW_MIN_POINTS, DrawBudget, MovingPreview
from gui.view3d_geometry import (
    FRUSTUM_FRACTION,
    MESH_DEFAULT_RGB,
    display_rotation,
    frame_view,
    frustum_depth,
    mesh_rgba,
)
from gui.view3d_picking import Markers


def camera(centre, look_at=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> CameraPose:
    """A camera at ``centre`` looking at ``look_at`` with image "up" towards ``up``."""
    c = np.asarray(centre, dtype=np.float64)
    z = np.asarray(look_at, dtype=np.float64) - c
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    return CameraPose(name="c", K=K, R=R, t=-R @ c, width=100, height=80)


def test_budget_decimates_evenly_with_a_fixed_seed_and_refuses_nothing_to_draw():
    budget = DrawBudget(max_draw_points=1_000)
    xyz = np.random.default_rng(1).uniform(-1, 1, (5_000, 3))
    rgb = np.zeros((5_000, 3), np.uint8)
    a, _ = budget.decimate(xyz, rgb)
    b, _ = budget.decimate(xyz, rgb)
    assert a.shape == (1_000, 3) and np.array_equal(a, b)
    small, _ = budget.decimate(xyz[:10], rgb[:10])
    assert small is not None and len(small) == 10
    with pytest.raises(ValueError, match="positive"):
        DrawBudget(max_draw_points=0)
    with pytest.raises(ValueError, match="positive"):
        budget.max_draw_points = 0


def test_budget_learns_the_frame_cost_and_thins_the_preview_to_the_frame_budget():
    budget = DrawBudget(interactive_frame_ms=50.0)
    assert budget.wanted_stride(1_000_000) == 1  # nothing measured yet
    assert budget.live_budget() == LIVE_MIN_POINTS
    assert not budget.record_frame(0.5, 1_000_000, uploaded=True)  # uploads are not typical
    assert budget.frame_s_per_point is None and budget.last_frame_points == 1_000_000
    assert budget.record_frame(0.2, 1_000_000, uploaded=False)  # 200 ms for a million points
    assert budget.full_frame_ms(1_000_000) == pytest.approx(200.0)
    # 50 ms fits a quarter of them: every 4th point
    assert budget.wanted_stride(1_000_000) == 4
    assert budget.wanted_stride(200_000) == 1  # 40 ms: full frames fit
    assert budget.live_budget(frame_ms=40.0) == 200_000
    budget.preview_stride = 4
    assert not budget.preview_outdated(1_000_000)
    assert budget.preview_outdated(3_000_000)  # wants every 12th now
    # never thinner than PREVIEW_MIN_POINTS
    budget.interactive_frame_ms = 5.0
    assert budget.wanted_stride(100_000) == math.ceil(100_000 / PREVIEW_MIN_POINTS)


def test_moving_preview_thins_the_uploaded_arrays_and_ends_when_full_frames_fit(qtbot):
    class Item:
        def __init__(self, n: int) -> None:
            self.pos = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
            self.color = np.ones((n, 4), np.float32)
            self.visible = True

        def setData(self, pos, color):  # noqa: N802 - pyqtgraph's name
            self.pos, self.color = pos, color

        def setVisible(self, visible):  # noqa: N802 - Qt's name
            self.visible = visible

    budget = DrawBudget(interactive_frame_ms=50.0)
    budget.record_frame(0.2, 1_000_000, uploaded=False)
    full, thin = Item(1_000_000), Item(0)
    preview = MovingPreview(budget, settle_ms=20)
    preview.attach(full, thin)
    preview.moved(1_000_000)
    assert budget.preview_active and len(thin.pos) == 250_000
    assert thin.visible and not full.visible
    with qtbot.waitSignal(preview.ended, timeout=2000):
        pass  # the camera was still for settle_ms
    # full frames fit the budget: no preview, the owner is told to end it
    budget.record_frame(0.001, 1_000_000, uploaded=False)
    with qtbot.waitSignal(preview.ended, timeout=100):
        preview.show(1_000_000)


def test_markers_keep_their_points_without_items_and_join_two_with_a_line():
    class Item:
        def __init__(self) -> None:
            self.pos, self.visible = None, False

        def setData(self, pos):  # noqa: N802 - pyqtgraph's name
            self.pos = pos

        def setVisible(self, visible):  # noqa: N802 - Qt's name
            self.visible = visible

    markers = Markers()
    markers.set([[0, 0, 0], [1, 2, 3]])
    assert markers.points.shape == (2, 3)
    dots, line = Item(), Item()
    markers.attach(dots, line)
    markers.set([[1, 1, 1]])
    assert dots.visible and not line.visible
    markers.set([[1, 1, 1], [2, 2, 2]])
    assert line.visible and line.pos.shape == (2, 3)
    markers.set([])
    assert not dots.visible and not line.visible and len(markers.points) == 0


def test_framing_turns_the_cameras_up_to_z_and_fits_the_box_from_the_first_camera():
    up = np.array([0.0, 1.0, 0.0])  # a reconstruction whose up is +y
    # level cameras (their image up is the world's up), the first one 1 above the box's centre
    cams = [camera((3 * math.cos(a), 0.0, 3 * math.sin(a)), up=up) for a in (0.0, 1.0, 2.0)]
    rotation = display_rotation(cams)
    assert np.allclose(rotation @ up, [0, 0, 1], atol=1e-9)
    assert np.allclose(display_rotation([]), np.eye(3))

    bounds = np.array([[-0.5, -1.5, -0.5], [0.5, -0.5, 0.5]])
    centre, distance, elevation, azimuth = frame_view(rotation, cams, bounds, 60.0, (800, 400))
    assert np.allclose(centre, rotation @ [0.0, -1.0, 0.0])
    radius = 0.5 * math.sqrt(3.0)
    half = math.atan(math.tan(math.radians(30.0)) * 400 / 800)  # the narrower angle
    assert distance == pytest.approx(radius / math.sin(half) * 1.05)
    # looked at from the first camera's side: 1 up over 3 across
    assert elevation == pytest.approx(math.degrees(math.atan2(1.0, 3.0)))
    assert frame_view(np.eye(3), [], None, 60.0, (10, 10)) is None
    lo = np.minimum(np.min([c.center for c in cams], axis=0), bounds[0])
    hi = np.maximum(np.max([c.center for c in cams], axis=0), bounds[1])
    assert frustum_depth(cams, bounds) == pytest.approx(FRUSTUM_FRACTION * np.linalg.norm(hi - lo))


def test_mesh_colours_are_opaque_and_grey_without_vertex_colours():
    vertices = np.eye(3)
    faces = np.array([[0, 1, 2]])
    grey = mesh_rgba(Mesh(vertices=vertices, faces=faces))
    assert grey.dtype == np.uint8 and (grey[:, :3] == MESH_DEFAULT_RGB).all()
    assert (grey[:, 3] == 255).all()
    red = np.tile([[255, 0, 0]], (3, 1)).astype(np.uint8)
    assert (mesh_rgba(Mesh(vertices=vertices, faces=faces, vertex_colors=red))[:, 0] == 255).all()
