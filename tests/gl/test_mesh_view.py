"""The mesh in the 3D view (pixels of its colour, the cloud / mesh toggle), picking points with
Shift+click, and reopening a project whose last run built a mesh and measured dimensions.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from engine.types import Mesh, PointCloud
from gui.view3d import pick_point, project_to_screen, vertex_normals
from tests.gl.test_view3d import BG, SIZE, cube_cloud, frame_array, red_mask


def cube_mesh(half: float = 0.5, rgb=(0, 200, 0)) -> Mesh:
    """A closed cube, 8 vertices, 12 triangles wound outwards, one colour."""
    v = np.array(
        [[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)], float
    )
    quads = [
        (0, 1, 3, 2),  # x = -half
        (4, 6, 7, 5),  # x = +half
        (0, 4, 5, 1),  # y = -half
        (2, 3, 7, 6),  # y = +half
        (0, 2, 6, 4),  # z = -half
        (1, 5, 7, 3),  # z = +half
    ]
    faces = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], np.int32)
    colours = np.tile(np.array(rgb, np.uint8), (8, 1))
    return Mesh(v, faces, colours)


def green_mask(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (g > 50) & (r < 30) & (b < 30)


@pytest.fixture
def mesh_view(qtbot, gl_required):
    from gui.models import CloudModel
    from gui.results import ResultModel
    from gui.view3d import PointCloudView

    model, results = CloudModel(), ResultModel()
    view = PointCloudView(model, results=results, background=BG)
    qtbot.addWidget(view)
    view.resize(*SIZE)
    view.show()
    qtbot.waitExposed(view)
    assert view.available, view.unavailable_reason
    return model, results, view


# -- pure geometry (no OpenGL)


def test_vertex_normals_of_a_cube_point_outwards():
    mesh = cube_mesh()
    normals = vertex_normals(mesh.vertices, mesh.faces)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    # area-weighted, so not the exact diagonal, but every component points outwards
    assert np.all(np.sign(normals) == np.sign(mesh.vertices))
    # corners shared alike by the three faces' triangles lie on the diagonal
    np.testing.assert_allclose(normals[0], -np.ones(3) / np.sqrt(3), atol=1e-6)
    # a flat square: +z everywhere; a vertex no face uses gets +z too
    square = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [5, 5, 5]], float)
    flat = vertex_normals(square, np.array([[0, 1, 2], [0, 2, 3]]))
    np.testing.assert_allclose(flat, np.tile([0, 0, 1.0], (5, 1)))


def perspective(f: float, aspect: float, near: float = 0.1, far: float = 100.0) -> np.ndarray:
    """OpenGL projection (camera at the origin looking down -z), focal ``f`` in NDC units."""
    return np.array(
        [
            [f / aspect, 0, 0, 0],
            [0, f, 0, 0],
            [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
            [0, 0, -1, 0],
        ]
    )


def test_pick_returns_the_frontmost_point_under_the_click():
    mvp = perspective(2.0, 4 / 3)
    w, h = 400, 300
    points = np.array(
        [
            [0.0, 0.0, -5.0],  # centre, near
            [0.0, 0.0, -9.0],  # centre, far: hidden behind the first
            [1.0, 0.5, -5.0],  # right and up
            [0.0, 0.0, 5.0],  # behind the camera
        ]
    )
    xy, depth, visible = project_to_screen(points, mvp, w, h)
    # x = (f / aspect * X / -Z + 1) / 2 * w
    np.testing.assert_allclose(xy[0], [200, 150])
    np.testing.assert_allclose(xy[2], [(1.5 * 0.2 + 1) / 2 * w, (1 - 2 * 0.1) / 2 * h])
    assert list(visible) == [True, True, True, False]
    assert depth[0] < depth[1]
    assert pick_point(points, mvp, (w, h), (201, 149)) == 0  # the near one, not the far one
    assert pick_point(points, mvp, (w, h), tuple(xy[2] + [2, -2])) == 2
    assert pick_point(points[1:], mvp, (w, h), (200, 150)) == 0  # alone, the far one
    assert pick_point(points, mvp, (w, h), (20, 20)) is None  # nothing within 48 px
    # the radius doubles when nothing is close: 10 px away still finds it
    assert pick_point(points, mvp, (w, h), (210, 150)) == 0
    assert pick_point(np.zeros((0, 3)), mvp, (w, h), (200, 150)) is None


# -- pixels


@pytest.mark.gl
def test_mesh_renders_in_its_colour_and_the_toggle_switches_items(mesh_view, qtbot):
    model, results, view = mesh_view
    model.set_cloud(cube_cloud(20_000, half=0.5))
    results.set_mesh(cube_mesh())
    view.flush()
    assert view.mesh_triangles == 12 and view.point_count == 20_000

    # cloud first: red points, no green
    assert view.display == "cloud"
    assert view.points_item.visible() and not view.mesh_item.visible()
    rgb = frame_array(view.grab_frame())
    w, h = SIZE
    assert red_mask(rgb).sum() > 0.15 * w * h
    assert green_mask(rgb).sum() == 0

    seen = []
    view.display_changed.connect(seen.append)
    view.set_display("mesh")
    assert seen == ["mesh"] and view.mesh_shown()
    assert view.mesh_item.visible() and not view.points_item.visible()
    rgb = frame_array(view.grab_frame())
    green = green_mask(rgb)
    assert green.sum() > 0.15 * w * h, green.sum()
    assert red_mask(rgb).sum() == 0
    ys, xs = np.nonzero(green)
    assert abs(xs.mean() - w / 2) < 0.1 * w and abs(ys.mean() - h / 2) < 0.1 * h
    # lit, two faces at least: more than one shade of green, none brighter than the colour
    shades = np.unique(rgb[green][:, 1])
    assert len(shades) > 1 and shades.max() <= 201
    # the background stays in the corners
    assert tuple(rgb[2, 2]) == BG

    # no mesh: mesh mode shows the cloud again
    results.set_mesh(None)
    view.flush()
    assert not view.mesh_shown() and view.points_item.visible()
    assert red_mask(frame_array(view.grab_frame())).sum() > 0.15 * w * h
    with pytest.raises(ValueError):
        view.set_display("wireframe")


@pytest.mark.gl
def test_shift_click_picks_the_point_under_the_cursor(mesh_view, qtbot):
    model, results, view = mesh_view
    rng = np.random.default_rng(3)
    # a blue slab and one red point in front of it (towards +z, the default view's up side)
    xyz = np.concatenate(
        [rng.uniform([-1, -1, -0.05], [1, 1, 0.05], (20_000, 3)), [[0.3, -0.2, 0.4]]]
    ).astype(np.float32)
    rgb = np.zeros((len(xyz), 3), np.uint8)
    rgb[:, 2] = 200
    rgb[-1] = (255, 0, 0)
    model.set_cloud(PointCloud(xyz, rgb))
    view.set_point_size(6)
    view.flush()
    frame = frame_array(view.grab_frame())
    ys, xs = np.nonzero(red_mask(frame))
    assert len(xs) > 0, "the red point is not drawn"
    x, y = float(xs.mean()), float(ys.mean())
    picked = view.pick(x, y)
    np.testing.assert_allclose(picked, xyz[-1], atol=1e-6)

    got = []
    view.point_picked.connect(got.append)
    qtbot.mouseClick(
        view.gl_view,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.ShiftModifier,
        QPoint(round(x), round(y)),
    )
    assert len(got) == 1
    np.testing.assert_allclose(got[0], xyz[-1], atol=1e-6)
    # a click far from every point picks nothing
    assert view.pick(2, 2) is None

    # in mesh mode the mesh's vertices are picked
    results.set_mesh(cube_mesh(half=0.5))
    view.set_display("mesh")
    view.flush()
    mvp = view.world_to_clip()
    corner = cube_mesh().vertices
    xy, depth, visible = project_to_screen(corner, mvp, view.gl_view.width(), view.gl_view.height())
    front = int(np.argmin(np.where(visible, depth, np.inf)))
    np.testing.assert_allclose(view.pick(*xy[front]), corner[front])


@pytest.mark.gl
def test_reopened_project_shows_its_mesh_and_dimensions(qtbot, gl_required, tmp_path, monkeypatch):
    from engine.export.ply import write_ply
    from engine.io import write_png
    from engine.stages.mesh import MESH_FILE, save_mesh
    from gui.main_window import MainWindow
    from gui.project import Project

    monkeypatch.setenv("VITRINE_HOME", str(tmp_path / "home"))
    shoot = tmp_path / "shoot"
    write_png(shoot / "a.png", np.zeros((8, 8, 3), np.uint8))
    project = Project()
    project.add_set("Cube")
    project.add_paths("Cube", [shoot])
    project.update_set("Cube", last_status="finished")
    folder = tmp_path / "proj"
    project.save(folder)
    run = project.run_dir("Cube")
    run.mkdir(parents=True)
    write_ply(run / "dense.ply", cube_cloud(5_000))
    save_mesh(run / "work" / MESH_FILE, cube_mesh())
    report = {
        "status": "finished",
        "dimensions_mm": [100.0, 100.0, 100.0],
        "stages": {"scale": {"source": "known_dimension", "error_pct": None}},
    }
    (run / "report.json").write_text(json.dumps(report), encoding="utf-8")

    win = MainWindow(gpu_probe=None)
    qtbot.addWidget(win)
    win.resize(900, 600)
    win.show()
    qtbot.waitExposed(win)
    assert win.open_project(folder)
    win.view.flush()
    assert win.view.mesh_triangles == 12 and win.view.point_count == 5_000
    assert win.view.display == "mesh" and win.view.mesh_item.visible()
    assert win.mesh_button.isEnabled() and win.mesh_button.isChecked()
    assert win.mesh_action.isChecked() and not win.cloud_action.isChecked()
    assert win.dimensions_label.text() == "100 x 100 x 100 mm (from the size you entered)"
    assert green_mask(frame_array(win.view.grab_frame())).sum() > 1000

    # the toolbar's Cloud button shows the cloud
    win.cloud_button.click()
    assert win.view.display == "cloud" and win.view.points_item.visible()
    assert not win.mesh_action.isChecked()
    # a mesh arriving live (the run's mesh event) switches to it
    win._on_mesh(cube_mesh(rgb=(0, 180, 0)))
    win.view.flush()
    assert win.view.display == "mesh" and win.mesh_button.isChecked()
