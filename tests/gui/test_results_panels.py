"""Dimensions, coverage map, pre-flight badges and the set-scale dialog, from report.json data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtGui import QImage

from engine.config import ScaleConfig
from engine.io import write_png
from gui.coverage_widget import (
    EMPTY_COLOUR,
    GAP_COLOUR,
    HIGH_COLOUR,
    LOW_COLOUR,
    CoverageWidget,
    cell_colour,
    cell_colours,
)
from gui.main_window import MainWindow
from gui.project import Project
from gui.results import (
    NO_SCALE_TEXT,
    ResultModel,
    dimensions_text,
    mask_summary,
    preflight_status,
    read_coverage,
)
from gui.scale_dialog import SetScaleDialog

# 3 elevation rows (-30..0, 0..30, 30..60) x 4 azimuth columns
COUNTS = [[0, 0, 0, 0], [3, 1, 0, 2], [5, 4, 0, 0]]


def report(**extra) -> dict:
    data = {
        "status": "finished",
        "dimensions_mm": [160.04, 99.96, 220.3],
        "stages": {
            "scale": {"source": "aruco", "metres_per_unit": 0.05, "markers": 4, "error_pct": 0.3},
            "coverage": {
                "preflight": [
                    {"kind": "blurry", "images": ["b.png"], "message": "b.png is blurry: retake"},
                    {
                        "kind": "duplicate",
                        "images": ["a.png", "c.png"],
                        "message": "a.png and c.png are the same view",
                    },
                    {"kind": "too_few", "images": [], "message": "Only 3 photos: take 20 more"},
                ],
                "azimuth_edges": [0, 90, 180, 270, 360],
                "elevation_edges": [-30, 0, 30, 60],
                "counts": COUNTS,
                "gaps": ["no photos between 180 and 270 deg around the product"],
                "advice": ["Add photos between 180 and 270 deg"],
            },
            "masks": {
                "computed": 30,
                "from_files": 0,
                "user": 4,
                "disabled": 2,
                "failed": [{"image": "x.png", "reason": "faint outline"}],
                "turntable": {"detected": True, "note": "Turntable shoot detected."},
            },
        },
    }
    data.update(extra)
    return data


# -- dimensions


def test_dimensions_text_from_reports():
    assert dimensions_text(report()) == "160 x 100 x 220 mm (from ArUco markers, ±0.3%)"
    known = report()
    known["stages"]["scale"] = {"source": "known_dimension", "error_pct": None}
    known["dimensions_mm"] = [45.25, 30, 120]
    assert dimensions_text(known) == "45.2 x 30 x 120 mm (from the size you entered)"
    none = report(dimensions_mm=None)
    none["stages"]["scale"] = {"source": "none", "note": "no markers found"}
    assert dimensions_text(none) == NO_SCALE_TEXT
    assert dimensions_text({"status": "finished"}) == NO_SCALE_TEXT  # an older engine's report
    assert dimensions_text(None) == ""
    # damaged values read as "not measured", never raise
    assert dimensions_text(report(dimensions_mm=["a", 1, 2])) == NO_SCALE_TEXT
    assert dimensions_text(report(dimensions_mm=[1, 2])) == NO_SCALE_TEXT
    odd = report()
    odd["stages"] = "nonsense"
    assert dimensions_text(odd) == "160 x 100 x 220 mm"


def test_window_shows_the_dimensions_of_the_result(qtbot):
    win = MainWindow(gpu_probe=None)
    qtbot.addWidget(win)
    win.result_model.set_report(report())
    assert win.dimensions_label.text() == "160 x 100 x 220 mm (from ArUco markers, ±0.3%)"
    win.result_model.set_report(report(dimensions_mm=None))
    assert win.dimensions_label.text() == NO_SCALE_TEXT
    win.result_model.clear()
    assert win.dimensions_label.text() == ""


# -- coverage


def test_coverage_is_read_defensively():
    cov = read_coverage(report())
    assert cov.counts.shape == (3, 4) and cov.counts.sum() == 15
    np.testing.assert_array_equal(cov.elevation_edges, [-30, 0, 30, 60])
    assert cov.gaps == ("no photos between 180 and 270 deg around the product",)
    # coverage advice first, then pre-flight messages, each once
    assert cov.advice[0] == "Add photos between 180 and 270 deg"
    assert "Only 3 photos: take 20 more" in cov.advice
    assert len(cov.advice) == len(set(cov.advice)) == 4
    # missing edges: evenly spread; ragged counts: no map but the advice stays
    bare = report()
    del bare["stages"]["coverage"]["azimuth_edges"]
    np.testing.assert_array_equal(read_coverage(bare).azimuth_edges, [0, 90, 180, 270, 360])
    ragged = report()
    ragged["stages"]["coverage"]["counts"] = [[1, 2], [3]]
    assert not read_coverage(ragged).has_map and read_coverage(ragged).advice
    assert read_coverage({"status": "finished"}) is None


def test_cell_colours_follow_counts_and_gaps():
    cov = read_coverage(report())
    colours = cell_colours(cov)

    def rgb(colour):
        return (colour.red(), colour.green(), colour.blue())

    # the bottom row (-30..0) is below the horizon: empty is only dark, not a gap
    assert all(tuple(c) == rgb(EMPTY_COLOUR) for c in colours[0])
    # above the horizon an empty cell is a gap
    assert tuple(colours[1, 2]) == rgb(GAP_COLOUR)
    assert tuple(colours[2, 2]) == tuple(colours[2, 3]) == rgb(GAP_COLOUR)
    # the fullest cell (5) is the high colour, a single photo the low one
    assert tuple(colours[2, 0]) == rgb(HIGH_COLOUR)
    assert tuple(colours[1, 1]) == rgb(LOW_COLOUR)
    # 3 photos of 1..5: half way
    mid = [round((a + b) / 2) for a, b in zip(rgb(LOW_COLOUR), rgb(HIGH_COLOUR), strict=True)]
    assert list(colours[1, 0]) == mid
    assert rgb(cell_colour(2, 5)) < rgb(cell_colour(4, 5))  # more photos, lighter
    assert rgb(cell_colour(1, 1)) == rgb(HIGH_COLOUR)

    # with the engine's gap cells, only the empty cells of a named gap are red
    named = report()
    named["stages"]["coverage"]["gap_cells"] = [
        [False] * 4,
        [False, False, True, False],
        [False] * 4,
    ]
    named["stages"]["coverage"]["notes"] = ["The underside is not seen."]
    cov = read_coverage(named)
    assert cov.notes == ("The underside is not seen.",)
    colours = cell_colours(cov)
    assert tuple(colours[1, 2]) == rgb(GAP_COLOUR)
    assert tuple(colours[2, 2]) == tuple(colours[2, 3]) == rgb(EMPTY_COLOUR)
    assert tuple(colours[2, 0]) == rgb(HIGH_COLOUR)
    # a grid of the wrong shape is ignored
    named["stages"]["coverage"]["gap_cells"] = [[True]]
    assert read_coverage(named).gap_cells is None


def test_coverage_widget_paints_the_grid_and_lists_the_advice(qtbot):
    model = ResultModel()
    widget = CoverageWidget(model)
    qtbot.addWidget(widget)
    widget.resize(400, 300)
    widget.show()
    qtbot.waitExposed(widget)
    model.set_report(report())
    image = widget.map.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    grid = widget.map.grid_rect()
    rows, cols = 3, 4
    colours = cell_colours(model.coverage)
    for r in range(rows):
        for c in range(cols):
            # the middle-left of a cell (numbers are drawn in its centre)
            x = int(grid.left() + (c + 0.2) * grid.width() / cols)
            y = int(grid.top() + (rows - 1 - r + 0.5) * grid.height() / rows)
            pixel = image.pixelColor(x, y)
            assert (pixel.red(), pixel.green(), pixel.blue()) == tuple(colours[r, c]), (r, c)
    lines = widget.advice_lines()
    assert lines[0] == "Add photos between 180 and 270 deg"
    assert "Masks: 30 automatic, 4 painted, 2 off, 1 without a mask. Turntable shoot detected." in (
        lines
    )
    assert "b.png is blurry: retake" in widget.advice.text()
    model.clear()
    assert widget.advice.text() == "" and widget.advice_lines() == []


def test_mask_summary_and_preflight_badges(tmp_path):
    assert mask_summary({"stages": {}}) == ""
    status = preflight_status(report())
    assert status == {
        "b.png": ("blurry", "b.png is blurry: retake"),
        "a.png": ("duplicate", "a.png and c.png are the same view"),
        "c.png": ("duplicate", "a.png and c.png are the same view"),
    }
    # through the project: badges by photo path, unregistered wins over pre-flight
    folder = tmp_path / "shoot"
    for name in ("a.png", "b.png", "c.png"):
        write_png(folder / name, np.zeros((8, 8, 3), np.uint8))
    project = Project()
    project.add_set("S")
    project.add_paths("S", [folder])
    run = project.run_dir("S")
    run.mkdir(parents=True)
    data = report(unregistered={"c.png": "too few matches"})
    (run / "report.json").write_text(json.dumps(data), encoding="utf-8")
    assert project.image_status("S") == {
        str(folder / "a.png"): ("duplicate", "a.png and c.png are the same view"),
        str(folder / "b.png"): ("blurry", "b.png is blurry: retake"),
        str(folder / "c.png"): ("not registered", "too few matches"),
    }


# -- set scale


def test_set_scale_dialog_builds_the_scale_config(qtbot):
    dialog = SetScaleDialog()
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(dialog.buttons.StandardButton.Ok)
    assert dialog.mode == "none" and ok.isEnabled()
    assert dialog.scale_config(ScaleConfig(marker_size_mm=40.0)) == ScaleConfig(marker_size_mm=40.0)

    dialog.set_mode("dimension")
    assert not ok.isEnabled()  # no size yet
    dialog.dimension.setCurrentIndex(dialog.dimension.findData("height"))
    dialog.dimension_mm.setValue(220.0)
    assert ok.isEnabled()
    assert dialog.scale_config(ScaleConfig(marker_size_mm=40.0)) == ScaleConfig(
        marker_size_mm=40.0, known_dimension="height", known_dimension_mm=220.0
    )

    picked = []
    dialog.points_changed.connect(lambda pts: picked.append(pts.copy()))
    dialog.add_point([0.1, 0.2, 0.3])
    assert dialog.mode == "points" and not ok.isEnabled()
    dialog.add_point(np.array([0.1, 0.2, 1.3]))
    dialog.distance_mm.setValue(80.0)
    assert ok.isEnabled()
    assert "1 units apart" in dialog.points_label.text()
    assert dialog.scale_config() == ScaleConfig(
        known_distance_mm=80.0, known_points=((0.1, 0.2, 0.3), (0.1, 0.2, 1.3))
    )
    assert [len(p) for p in picked] == [1, 2]
    dialog.add_point([5, 5, 5])  # a third point starts a new pair
    assert dialog.points.tolist() == [[5.0, 5.0, 5.0]] and not ok.isEnabled()
    # two identical points are not a distance
    dialog.add_point([5, 5, 5])
    assert not dialog.is_complete()


def test_set_scale_from_the_window_reaches_the_next_runs_config(qtbot, tmp_path):
    folder = tmp_path / "shoot"
    write_png(folder / "a.png", np.zeros((8, 8, 3), np.uint8))
    win = MainWindow(gpu_probe=None)
    qtbot.addWidget(win)
    win.add_paths([folder])
    name = win.current_set
    run = win.project.run_dir(name)
    run.mkdir(parents=True)
    (run / "report.json").write_text(json.dumps(report()), encoding="utf-8")
    win.show_last_result(name)

    dialog = win.show_set_scale()
    assert dialog.metres_per_unit == 0.05
    win.view.point_picked.emit(np.array([0.0, 0.0, 0.0]))  # as a shift+click does
    win.view.point_picked.emit(np.array([0.0, 2.0, 0.0]))
    np.testing.assert_array_equal(win.view.marked_points, [[0, 0, 0], [0, 2, 0]])
    assert "(100.0 mm by the last run's scale)" in dialog.points_label.text()
    dialog.distance_mm.setValue(97.5)
    dialog.accept()
    scale = win.run_config(name).scale
    assert scale.known_points == ((0.0, 0.0, 0.0), (0.0, 2.0, 0.0))
    assert scale.known_distance_mm == 97.5 and scale.known_dimension == ""
    assert len(win.view.marked_points) == 0  # marks go with the dialog

    # reopening the dialog shows the saved pair; switching to a dimension clears it
    dialog = win.show_set_scale()
    assert dialog.mode == "points" and len(dialog.points) == 2
    dialog.set_mode("dimension")
    dialog.dimension.setCurrentIndex(dialog.dimension.findData("width"))
    dialog.dimension_mm.setValue(160.0)
    dialog.accept()
    scale = win.run_config(name).scale
    assert (scale.known_dimension, scale.known_dimension_mm) == ("width", 160.0)
    assert scale.known_points == () and scale.known_distance_mm == 0.0
    win.settings.marker_size.setValue(30.0)
    assert win.run_config(name).scale.marker_size_mm == 30.0


@pytest.fixture
def mesh_run(tmp_path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    for name, size in (
        ("mesh.glb", 3 * 1024 * 1024),
        ("embed.html", 2_000),
        ("mesh.obj", 50_000),
        ("mesh.mtl", 100),
        ("mesh_texture.png", 20_000),
        ("dense.ply", 1_000),
    ):
        (run / name).write_bytes(b"x" * size)
    return run


def test_export_lists_the_mesh_files_and_copies_the_obj_with_its_companions(
    qtbot, mesh_run, tmp_path
):
    from gui.export_dialog import ExportDialog

    dialog = ExportDialog(mesh_run)
    qtbot.addWidget(dialog)
    assert dialog.files() == ["mesh.glb", "embed.html", "mesh.obj", "dense.ply"]
    assert dialog.size_text("mesh.obj") == "68.5 KB"  # obj + mtl + texture
    assert dialog.size_text("embed.html") == "2.0 KB"  # the GLB is listed on its own
    assert dialog.budget_text("mesh.glb") == "within 15.0 MB"
    dialog.set_checked(["mesh.obj", "embed.html"])
    copies = dialog.copy_to(tmp_path / "out")
    assert sorted(p.name for p in copies) == [
        "embed.html",
        "mesh.glb",
        "mesh.mtl",
        "mesh.obj",
        "mesh_texture.png",
    ]
