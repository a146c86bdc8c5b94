"""The 3D view: what it draws (pixels), how often it redraws, cameras, and the no-GL fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from engine.types import CameraPose, PointCloud

ROOT = Path(__file__).resolve().parents[2]
BG = (20, 20, 24)
SIZE = (320, 240)


# -- helpers


def frame_array(image) -> np.ndarray:
    """QImage -> uint8 (H, W, 3) RGB."""
    from PySide6.QtGui import QImage

    img = image.convertToFormat(QImage.Format.Format_RGBA8888)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())
    return arr[:, : 4 * img.width()].reshape(img.height(), img.width(), 4)[..., :3].copy()


def red_mask(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (r > 150) & (g < 80) & (b < 80)


def cube_cloud(n: int = 50_000, half: float = 0.5, seed: int = 0) -> PointCloud:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-half, half, (n, 3)).astype(np.float32)
    rgb = np.zeros((n, 3), np.uint8)
    rgb[:, 0] = 230
    return PointCloud(xyz, rgb)


def look_at(name: str, centre, target, up, f: float = 300.0, w: int = 320, h: int = 240):
    """A pinhole camera at ``centre`` looking at ``target`` with world ``up`` (OpenCV axes)."""
    centre, target, up = (np.asarray(v, float) for v in (centre, target, up))
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross(z, up)  # camera x: right
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # camera y: down
    R = np.stack([x, y, z])
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    return CameraPose(name, R, -R @ centre, K, w, h)


def ring(n: int = 12, radius: float = 3.0, up=(0.0, -1.0, 0.0)) -> dict[str, CameraPose]:
    """Cameras on a ring around the origin, slightly above it, all with world ``up``."""
    up = np.asarray(up, float)
    a = np.cross(up, [1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.cross(up, [0.0, 0.0, 1.0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    cams = {}
    for i in range(n):
        th = 2 * np.pi * i / n
        c = radius * (np.cos(th) * a + np.sin(th) * b) + 0.8 * up
        cams[f"cam{i:02d}"] = look_at(f"cam{i:02d}", c, (0, 0, 0), up)
    return cams


@pytest.fixture
def make_view(qtbot, gl_required):
    from gui.models import CloudModel
    from gui.view3d import PointCloudView

    def make(**kwargs):
        model = CloudModel()
        kwargs.setdefault("background", BG)
        view = PointCloudView(model, **kwargs)
        qtbot.addWidget(view)
        view.resize(*SIZE)
        view.show()
        qtbot.waitExposed(view)
        assert view.available, view.unavailable_reason
        return model, view

    return make


def settle(qtbot, view, redraws: int = 1) -> None:
    qtbot.waitUntil(lambda: view.redraws >= redraws, timeout=5000)


# -- pixels


@pytest.mark.gl
def test_red_cube_is_drawn_at_the_frame_centre(make_view, qtbot):
    model, view = make_view(point_size=2)
    model.set_cloud(cube_cloud())
    settle(qtbot, view)
    assert view.point_count == 50_000

    rgb = frame_array(view.grab_frame())
    h, w = rgb.shape[:2]
    assert (w, h) == SIZE
    red = red_mask(rgb)
    # A fitted cube covers a good part of the frame, not a speck
    assert red.sum() > 0.15 * w * h, red.sum()
    ys, xs = np.nonzero(red)
    assert abs(xs.mean() - w / 2) < 0.08 * w
    assert abs(ys.mean() - h / 2) < 0.08 * h
    # ... and fits inside it: reset_view frames the whole (robust) box
    assert ys.min() > 0 and ys.max() < h - 1
    # Not blank: the corners show the background colour
    for corner in (rgb[2, 2], rgb[2, -3], rgb[-3, 2], rgb[-3, -3]):
        assert np.abs(corner.astype(int) - BG).max() <= 2, corner


@pytest.mark.gl
def test_point_size_and_background_change_the_frame(make_view, qtbot):
    model, view = make_view(point_size=1)
    model.set_cloud(cube_cloud(5_000))
    settle(qtbot, view)
    small = red_mask(frame_array(view.grab_frame())).sum()

    view.set_point_size(6)
    big = red_mask(frame_array(view.grab_frame())).sum()
    assert big > 2 * small > 0, (small, big)

    view.set_background((0, 0, 160))
    rgb = frame_array(view.grab_frame())
    assert tuple(rgb[2, 2]) == (0, 0, 160)
    assert view.background.getRgb()[:3] == (0, 0, 160)


# -- throttling


@pytest.mark.gl
def test_partials_arriving_fast_are_drawn_in_few_redraws(make_view, qtbot, qapp):
    model, view = make_view()
    parts = [cube_cloud(250, seed=i) for i in range(200)]
    t0 = time.perf_counter()
    for part in parts:
        model.add_partial(part)
        qapp.processEvents()  # the event loop runs between partials, as with worker signals
    elapsed = time.perf_counter() - t0
    during = view.redraws
    qtbot.waitUntil(lambda: view.point_count == 50_000, timeout=5000)

    # One redraw per 100 ms tick at most, whatever the rate of partials
    assert during <= elapsed / 0.1 + 1, (during, elapsed)
    assert view.redraws <= during + 1
    assert view.redraws <= 20, (view.redraws, elapsed)

    # A steady stream is shown as it grows (throttled, not postponed until it stops)
    before, t0 = view.redraws, time.perf_counter()
    for i in range(20):
        model.add_partial(cube_cloud(250, seed=1000 + i))
        qtbot.wait(40)
    elapsed = time.perf_counter() - t0
    during = view.redraws - before
    assert 2 <= during <= elapsed / 0.1 + 1, (during, elapsed)
    qtbot.waitUntil(lambda: view.point_count == 55_000, timeout=5000)
    assert red_mask(frame_array(view.grab_frame())).sum() > 1000


@pytest.mark.gl
def test_large_snapshots_are_decimated_to_max_draw_points(make_view, qtbot):
    model, view = make_view(max_draw_points=10_000)
    model.set_cloud(cube_cloud(50_000))
    settle(qtbot, view)
    assert view.point_count == 10_000
    drawn = view.gl_view.items[0].pos
    assert drawn.shape == (10_000, 3)
    # uniform: the decimated cube still spans the whole cube
    assert np.all(drawn.min(axis=0) < -0.49) and np.all(drawn.max(axis=0) > 0.49)


@pytest.mark.gl
def test_moving_the_camera_draws_a_thinned_preview_then_the_full_cloud(make_view, qtbot):
    from PySide6.QtCore import QPoint, Qt

    from gui.view3d import PREVIEW_MIN_POINTS

    model, view = make_view(interactive_frame_ms=0.01)  # every real frame is over this budget
    model.set_cloud(cube_cloud(200_000))
    settle(qtbot, view)
    glv = view.gl_view
    for _ in range(2):  # the first frame uploads; a later one measures the frame time
        with qtbot.waitSignal(glv.frameSwapped, timeout=5000):
            glv.update()
    assert view.full_frame_ms is not None and view.full_frame_ms > 0
    assert view.last_frame_points == 200_000 and not view.preview_active

    # A left-button drag orbits; while it lasts, every k-th point is drawn
    qtbot.mousePress(glv, Qt.MouseButton.LeftButton, pos=QPoint(100, 100))
    assert view.preview_active
    azimuth = glv.opts["azimuth"]
    with qtbot.waitSignal(glv.frameSwapped, timeout=5000):
        qtbot.mouseMove(glv, QPoint(160, 110))
    assert glv.opts["azimuth"] != azimuth
    assert PREVIEW_MIN_POINTS <= view.last_frame_points < 200_000
    assert red_mask(frame_array(view.grab_frame())).sum() > 1000
    qtbot.mouseRelease(glv, Qt.MouseButton.LeftButton, pos=QPoint(160, 110))

    # 300 ms after the last input the full cloud is back
    qtbot.waitUntil(lambda: not view.preview_active, timeout=3000)
    qtbot.waitUntil(lambda: view.last_frame_points == 200_000, timeout=5000)

    # Clouds whose full frames fit the budget never get a preview
    model2, view2 = make_view(interactive_frame_ms=60_000.0)
    model2.set_cloud(cube_cloud(2_000))
    settle(qtbot, view2)
    with qtbot.waitSignal(view2.gl_view.frameSwapped, timeout=5000):
        view2.gl_view.update()
    view2.note_interaction()
    assert not view2.preview_active


@pytest.mark.gl
def test_two_views_and_a_move_to_another_window_still_draw(make_view, qtbot):
    from PySide6.QtWidgets import QVBoxLayout, QWidget

    model_a, view_a = make_view()
    model_b, view_b = make_view()  # a second GL context: pyqtgraph's shared shader cache
    model_a.set_cloud(cube_cloud())
    model_b.set_cloud(cube_cloud(seed=2))
    settle(qtbot, view_a)
    settle(qtbot, view_b)
    assert red_mask(frame_array(view_a.grab_frame())).sum() > 5000
    assert red_mask(frame_array(view_b.grab_frame())).sum() > 5000

    # Reparenting to another top-level window (a floating dock) recreates the GL context
    window = QWidget()
    qtbot.addWidget(window)
    QVBoxLayout(window).addWidget(view_a)
    window.resize(*SIZE)
    window.show()
    qtbot.waitExposed(window)
    qtbot.wait(50)
    assert red_mask(frame_array(view_a.grab_frame())).sum() > 5000
    view_a.setParent(None)  # and back to a window of its own (qtbot closes it)
    view_a.show()
    qtbot.waitExposed(view_a)
    assert red_mask(frame_array(view_a.grab_frame())).sum() > 5000


@pytest.mark.gl
def test_later_snapshots_keep_the_users_view(make_view, qtbot):
    model, view = make_view()
    model.set_cloud(cube_cloud())
    settle(qtbot, view)
    view.gl_view.setCameraPosition(distance=40.0, azimuth=10.0)
    model.set_cloud(cube_cloud(seed=1))
    settle(qtbot, view, 2)
    assert view.gl_view.opts["distance"] == 40.0
    view.reset_view()
    assert view.gl_view.opts["distance"] < 5.0


# -- cameras


@pytest.mark.gl
def test_camera_frustums_have_8_segments_each_and_toggle(make_view, qtbot):
    model, view = make_view()
    cams = ring(12)
    model.set_cloud(cube_cloud(), cams)
    settle(qtbot, view)
    qtbot.waitUntil(lambda: view.frustum_count == 12, timeout=5000)

    item = view.frustum_item
    assert item is not None and item.visible()
    assert item.mode == "lines"
    assert item.pos.shape == (12 * 8 * 2, 3)
    # Each pyramid's apex is its camera centre, its depth 5% of the scene's extent
    first = item.pos[:16].astype(float)
    assert np.allclose(first[0], cams["cam00"].center, atol=1e-5)
    depth = np.linalg.norm(first[1] - first[0])
    assert 0.1 < depth < 0.6  # cube + ring extent is about 6.3; 5% with the corner slant

    with_cams = frame_array(view.grab_frame())
    view.set_cameras_visible(False)
    assert not item.visible() and not view.cameras_visible
    without = frame_array(view.grab_frame())
    assert np.any(with_cams != without)
    view.set_cameras_visible(True)
    assert item.visible()

    model.set_cameras({})
    qtbot.waitUntil(lambda: view.frustum_count == 0, timeout=5000)
    assert not item.visible()


@pytest.mark.gl
def test_reset_view_puts_the_cameras_up_direction_up_on_screen(make_view, qtbot):
    model, view = make_view()
    up = np.array([0.0, -1.0, 0.0])  # COLMAP-like world: up is -y, not the view's default +z
    n = 20_000
    rng = np.random.default_rng(0)
    # A red column standing along `up`: tall and thin once "up" is up on screen
    xyz = np.c_[rng.uniform(-0.1, 0.1, n), rng.uniform(-1, 1, n), rng.uniform(-0.1, 0.1, n)]
    rgb = np.zeros((n, 3), np.uint8)
    rgb[:, 0] = 230
    model.set_cloud(PointCloud(xyz.astype(np.float32), rgb), ring(8, up=up))
    settle(qtbot, view)

    ys, xs = np.nonzero(red_mask(frame_array(view.grab_frame())))
    assert len(ys) > 500
    assert np.ptp(ys) > 3 * np.ptp(xs), (np.ptp(xs), np.ptp(ys))


# -- without OpenGL (no display needed)


def test_offscreen_platform_shows_the_fallback_label():
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        from PySide6.QtWidgets import QApplication
        app = QApplication(sys.argv)
        from engine.types import PointCloud
        from gui.models import CloudModel
        from gui.view3d import PointCloudView, opengl_available
        model = CloudModel()
        view = PointCloudView(model)
        view.resize(320, 240)
        view.show()
        model.set_cloud(PointCloud(np.zeros((7, 3), np.float32), np.zeros((7, 3), np.uint8)))
        view.flush()
        app.processEvents()
        frame = view.grab_frame()
        print(json.dumps({
            "available": opengl_available(),
            "view_available": view.available,
            "label_visible": view.fallback_label.isVisible(),
            "text": view.fallback_label.text(),
            "frame": [frame.width(), frame.height()],
        }))
        """
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["available"] is False
    assert out["view_available"] is False
    assert out["label_visible"] is True
    assert out["text"].startswith("3D preview unavailable: OpenGL could not start (")
    assert "offscreen" in out["text"]
    assert "7 points" in out["text"]
    assert out["frame"] == [320, 240]


# -- geometry helpers (no Qt application needed)


def test_frustum_segments_span_the_image_corners_at_the_given_depth():
    from gui.view3d import frustum_segments

    cam = look_at("c", (0, 0, -5), (0, 0, 0), (0, -1, 0), f=100.0, w=200, h=100)
    seg = frustum_segments([cam, cam], depth=2.0)
    assert seg.shape == (2 * 8 * 2, 3) and seg.dtype == np.float32
    apex = cam.center
    corners = seg[1:8:2]  # second vertex of the 4 apex-to-corner segments
    assert np.allclose(seg[0:8:2], apex)
    # depth 2 along the optical axis (+z here); half-width 200/2/100*2 = 2, half-height 1
    assert np.allclose(corners[:, 2], -3.0)
    assert np.allclose(np.sort(np.abs(corners[:, 0])), 2.0)
    assert np.allclose(np.abs(corners[:, 1]), 1.0)
    assert frustum_segments([], 1.0).shape == (0, 3)


def test_rotation_to_z_and_camera_up():
    from gui.view3d import camera_up, rotation_to_z

    for up in ([0, -1, 0], [1, 2, 3], [0, 0, -1], [0, 0, 1]):
        R = rotation_to_z(np.asarray(up, float))
        assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)
        assert np.allclose(R @ (np.asarray(up) / np.linalg.norm(up)), [0, 0, 1])
    cam = look_at("c", (0, 0, -5), (0, 0, 0), (0, -1, 0))
    assert np.allclose(camera_up(cam.R), [0, -1, 0])


def test_colour_conversion_and_robust_bounds():
    from gui.view3d import rgb_to_rgba_float, robust_bounds

    rgb = np.array([[0, 128, 255], [255, 0, 1]], np.uint8)
    rgba = rgb_to_rgba_float(rgb)
    assert rgba.dtype == np.float32 and rgba.shape == (2, 4)
    assert np.allclose(rgba, np.c_[rgb / 255.0, np.ones(2)], atol=1e-6)

    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, (10_000, 3))
    xyz[:20] = 1e6  # stray points do not inflate the box
    lo, hi = robust_bounds(xyz)
    assert np.all(lo > -1.0) and np.all(lo < -0.9) and np.all(hi < 1.0) and np.all(hi > 0.9)
    with pytest.raises(ValueError):
        robust_bounds(np.zeros((0, 3)))
