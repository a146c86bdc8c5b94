"""The mask inspector: the overlay, painting and undo, and what the next run gets from it.

Photos here are small numpy-made PNGs and the "last run" is a run folder written by hand
(working copies and masks where the engine puts them), so no reconstruction runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from engine.config import PipelineConfig
from engine.io import read_image, write_png
from gui.main_window import MainWindow
from gui.mask_inspector import (
    BACKDROP_STRENGTH,
    BACKDROP_TINT,
    OUTLINE_RGB,
    MaskCanvas,
    MaskInspector,
    overlay_mask,
    read_mask,
)
from gui.project import Project

W, H = 120, 90
# The "automatic" mask of the last run: a centred rectangle
RECT = (slice(20, 70), slice(30, 90))


@pytest.fixture(autouse=True)
def _homes(tmp_path, monkeypatch):
    monkeypatch.setenv("VITRINE_HOME", str(tmp_path / "home"))


def photo_rgb(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 220, (H, W, 3), dtype=np.uint8)


def rect_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[RECT] = 255
    return mask


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    folder = tmp_path / "shoot"
    return [write_png(folder / f"p{i}.png", photo_rgb(i)) for i in range(3)]


def fake_last_run(project: Project, name: str, photos: list[Path]) -> None:
    """Working copies and masks where a finished run leaves them."""
    run = project.run_dir(name)
    for photo in photos:
        image_name = project.image_name(name, photo)
        rgb, _ = read_image(photo)
        write_png(run / "work" / "images" / image_name, rgb)
        write_png(run / "work" / "masks" / f"{image_name}.png", rect_mask())


# -- the overlay


def test_overlay_darkens_exactly_the_backdrop_and_outlines_the_product():
    rgb = photo_rgb(0)
    mask = rect_mask()
    out = overlay_mask(rgb, mask)
    back = mask == 0
    expected = np.clip(
        (1 - BACKDROP_STRENGTH) * rgb[back].astype(np.float32)
        + BACKDROP_STRENGTH * np.asarray(BACKDROP_TINT, np.float32)
        + 0.5,
        0,
        255,
    ).astype(np.uint8)
    assert np.array_equal(out[back], expected)
    # every backdrop pixel changed (the photo's values are 40..219, far from the tint)
    assert np.all(np.any(out[back] != rgb[back], axis=1))
    # inside the product, away from its outline, the photo is untouched
    inner = out[RECT][1:-1, 1:-1]
    assert np.array_equal(inner, rgb[RECT][1:-1, 1:-1])
    # the outline is the rectangle's border: 2 * (50 + 60) - 4 pixels
    outline = np.all(out == OUTLINE_RGB, axis=2)
    assert outline.sum() == 2 * (50 + 60) - 4
    assert outline[20, 30] and outline[69, 89] and not outline[45, 60]
    # no mask: the photo as it is
    assert np.array_equal(overlay_mask(rgb, None), rgb)
    with pytest.raises(ValueError, match="sizes differ"):
        overlay_mask(rgb, mask[:-1])


def test_strokes_paint_and_erase_and_undo_and_the_overlay_follows(qtbot):
    rgb = photo_rgb(1)
    canvas = MaskCanvas(rgb, rect_mask())
    qtbot.addWidget(canvas)
    # erase a horizontal band through the product, 10 px wide
    canvas.stroke([(40, 45), (80, 45)], add=False, size=10)
    mask = canvas.mask
    assert mask[45, 40:81].max() == 0 and mask[41:50, 45:75].max() == 0
    assert mask[30, 60] == 255 and mask[60, 60] == 255  # above and below the band
    # add a dot outside the rectangle
    canvas.stroke([(10, 10)], add=True, size=7)
    assert canvas.mask[10, 10] == 255 and canvas.mask[7:14, 7:14].sum() > 0
    assert canvas.mask[0, 0] == 0
    # the overlay updated region by region equals one computed from scratch
    assert np.array_equal(canvas.overlay(), overlay_mask(rgb, canvas.mask))
    assert canvas.undo() and canvas.mask[10, 10] == 0
    assert canvas.undo() and np.array_equal(canvas.mask, rect_mask())
    assert not canvas.undo()
    assert np.array_equal(canvas.overlay(), overlay_mask(rgb, rect_mask()))


def test_mouse_drag_paints_in_image_pixels(qtbot):
    canvas = MaskCanvas(photo_rgb(2), None)  # no mask yet: all product
    qtbot.addWidget(canvas)
    canvas.resize(360, 270)  # three times the photo: widget (x, y) = image (x/3, y/3)
    canvas.show()
    qtbot.waitExposed(canvas)
    canvas.brush_size = 6
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPointF(60, 60).toPoint())
    qtbot.mouseMove(canvas, QPointF(180, 60).toPoint())
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPointF(180, 60).toPoint())
    mask = canvas.mask
    assert mask[20, 20:61].max() == 0  # erased from image x 20 to 60 on row 20
    assert mask[20, 70] == 255 and mask[40, 40] == 255
    assert canvas.to_image(QPointF(150, 75)) == (50.0, 25.0)
    assert canvas.undo() and canvas.mask.min() == 255  # one drag, one stroke


# -- from the inspector to the next run's configuration


def test_switched_off_and_painted_masks_reach_the_next_runs_config(
    qtbot, photos, tmp_path, monkeypatch
):
    win = MainWindow(gpu_probe=None)
    qtbot.addWidget(win)
    win.add_paths([photos[0].parent])
    name = win.current_set
    fake_last_run(win.project, name, photos)
    win.select_set(name)
    win.set_panel.show_images(name)
    assert win.thumbs.mask_state_of(photos[0]) == "auto"
    assert win.run_config(name).masks == PipelineConfig().masks  # nothing changed yet

    # photo 1: mask switched off
    inspector = win.inspect_photo(photos[1])
    assert isinstance(inspector, MaskInspector)
    assert inspector.source == "auto" and inspector.use_mask.isChecked()
    assert np.array_equal(inspector.canvas.mask, rect_mask())
    inspector.use_mask.setChecked(False)
    assert win.thumbs.mask_state_of(photos[1]) == "off"

    # photo 2: a stroke erases the right part of the product, then saved
    inspector = win.inspect_photo(photos[2])
    inspector.canvas.stroke([(80, 20), (80, 69)], add=False, size=9)
    assert inspector.modified
    inspector.save()
    assert win.thumbs.mask_state_of(photos[2]) == "painted"

    # the configuration the next run gets
    captured: list[PipelineConfig] = []

    class Stub:
        def __init__(self, inputs, run_dir, config, parent=None):
            captured.append(config)
            self.progress = self.snapshot = self.mesh = self.finished = _Sig()
            self.failed = self.cancelled = self.done = _Sig()

        def start(self):
            pass

    monkeypatch.setattr("gui.run_controller.RunWorker", Stub)
    assert win.start_run(name)
    win.worker = None  # the stub never ends
    cfg = captured[0]
    assert cfg == win.run_config(name)
    assert cfg.masks.enabled is True
    assert cfg.masks.disabled == ("p1.png",)
    override = Path(cfg.masks.override_dir)
    assert override == win.project.mask_dir(name) and override.is_relative_to(tmp_path / "unsaved")
    assert sorted(p.name for p in override.iterdir()) == ["p2.png.png"]
    painted = read_mask(override / "p2.png.png")
    assert painted.shape == (H, W)
    # a 9 px brush along x = 80, y 20..69: pixels within 4 px of that segment erased, those
    # 5.5 px or more away as the automatic mask had them
    ys, xs = np.mgrid[0:H, 0:W]
    dist = np.hypot(xs - 80.0, ys - np.clip(ys, 20, 69))
    assert painted[dist <= 4.0].max() == 0
    far = dist >= 5.5
    assert np.array_equal(painted[far], rect_mask()[far])
    assert (painted != rect_mask()).sum() == (rect_mask()[dist < 5.5] > 0).sum()

    # the automatic-masks setting switches the automatic masks off
    win.settings.auto_masks.setChecked(False)
    assert win.project.image_set(name).auto_masks is False
    assert win.run_config(name).masks.enabled is False

    # forgetting the painted mask: no override folder for the next run
    inspector.revert()
    assert win.run_config(name).masks.override_dir == ""
    assert win.thumbs.mask_state_of(photos[2]) == "auto"


class _Sig:
    def connect(self, *_args):
        pass


def test_masks_and_scale_settings_survive_save_as_and_reopen(qtbot, photos, tmp_path):
    project = Project()
    name = project.add_set("Mug").name
    project.add_paths(name, [photos[0].parent])
    project.set_mask_disabled(name, photos[0], True)
    mask = rect_mask()
    mask[:, :10] = 255
    first = project.save_painted_mask(name, photos[1], mask)
    assert first.is_file() and first.name == "p1.png.png"
    project.update_set(
        name,
        marker_size_mm=40,
        known_dimension="height",
        known_dimension_mm=220.0,
        known_points=[[0, 0, 0], [1, 0, 0]],
        known_distance_mm=80,
    )
    folder = tmp_path / "saved"
    project.save(folder)  # moves the painted masks out of the temporary folder
    assert not first.exists()

    again = Project.load(folder)
    image_set = again.image_set(name)
    assert image_set.mask_disabled == {str(photos[0])}
    assert image_set.marker_size_mm == 40.0 and image_set.known_dimension == "height"
    saved = again.painted_mask_path(name, photos[1])
    assert saved is not None and saved.is_relative_to(folder)
    assert np.array_equal(read_mask(saved), mask)
    cfg = again.config_for_run(name)
    assert cfg.masks.disabled == ("p0.png",)
    assert cfg.masks.override_dir == str(folder / "masks" / "mug")
    assert cfg.scale.marker_size_mm == 40.0
    assert cfg.scale.known_dimension == "height" and cfg.scale.known_dimension_mm == 220.0
    assert cfg.scale.known_points == ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    assert cfg.scale.known_distance_mm == 80.0
    # config.json round trip: the run folder's copy reads back equal
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg


def test_painted_masks_follow_a_photos_new_name(qtbot, photos, tmp_path):
    project = Project()
    name = project.add_set().name
    project.add_paths(name, [photos[0].parent])
    project.save_painted_mask(name, photos[0], rect_mask())
    # a second folder changes the common root: the photo is now "shoot/p0.png"
    other = write_png(tmp_path / "more" / "q.png", photo_rgb(9))
    project.add_paths(name, [other])
    assert project.image_name(name, photos[0]) == "shoot/p0.png"
    cfg = project.config_for_run(name)
    moved = Path(cfg.masks.override_dir) / "shoot" / "p0.png.png"
    assert moved.is_file() and np.array_equal(read_mask(moved), rect_mask())
    assert not (Path(cfg.masks.override_dir) / "p0.png.png").exists()


def test_bad_settings_are_refused_with_a_clear_message():
    project = Project()
    name = project.add_set().name
    with pytest.raises(ValueError, match="width, depth or height"):
        project.update_set(name, known_dimension="diagonal")
    with pytest.raises(ValueError, match="millimetres"):
        project.update_set(name, marker_size_mm=-5)
    with pytest.raises(ValueError, match="two points"):
        project.update_set(name, known_points=[[0, 0, 0]])


def test_a_photo_the_run_could_not_mask_says_why(qtbot, photos):
    import json

    win = MainWindow(gpu_probe=None)
    qtbot.addWidget(win)
    win.add_paths([photos[0].parent])
    name = win.current_set
    run = win.project.run_dir(name)
    run.mkdir(parents=True)
    failed = {"image": "p0.png", "reason": "the outline is faint against the backdrop"}
    report = {"status": "finished", "stages": {"masks": {"computed": 2, "failed": [failed]}}}
    (run / "report.json").write_text(json.dumps(report), encoding="utf-8")
    # what the engine leaves for it: an all-white mask file (COLMAP needs one per photo)
    write_png(run / "work" / "masks" / "p0.png.png", np.full((H, W), 255, np.uint8))
    write_png(run / "work" / "masks" / "p1.png.png", rect_mask())
    win.set_panel.show_images(name)
    assert win.thumbs.mask_state_of(photos[1]) == "auto"
    inspector = win.inspect_photo(photos[0])
    assert inspector.source == "none"
    assert "made no mask for this photo: the outline is faint" in inspector.note.text()
    # no mask: the photo is shown as it is, and painting starts from "all product"
    assert np.array_equal(inspector.canvas.overlay(), photo_rgb(0))
    assert inspector.canvas.mask.min() == 255
    assert win.thumbs.mask_state_of(photos[0]) is None


def test_the_product_found_in_3d_can_replace_a_wrong_mask(qtbot, photos):
    """The last run's mesh seen from a photo (work/mesh/product_masks) is offered in the
    inspector: one click loads it (undoable), Save makes it the photo's painted mask; a mask
    the run found at odds with it says so."""
    import json

    win = MainWindow(gpu_probe=None)
    qtbot.addWidget(win)
    win.add_paths([photos[0].parent])
    name = win.current_set
    fake_last_run(win.project, name, photos)
    run = win.project.run_dir(name)
    report = {"status": "finished", "stages": {"mesh": {"masks_disagreeing": ["p0.png"]}}}
    (run / "report.json").write_text(json.dumps(report), encoding="utf-8")
    # the product in 3D: a disc, stored at the mesh stage's smaller test scale
    product_small = np.zeros((H // 2, W // 2), np.uint8)
    yy, xx = np.mgrid[: H // 2, : W // 2]
    product_small[(yy - 22) ** 2 + (xx - 30) ** 2 < 15**2] = 255
    write_png(run / "work" / "mesh" / "product_masks" / "p0.png.png", product_small)
    win.set_panel.show_images(name)

    inspector = win.inspect_photo(photos[0])
    assert "disagrees with the product the last run found in 3D" in inspector.note.text()
    assert inspector.product_button.isEnabled()
    before = inspector.canvas.mask
    assert np.array_equal(before, rect_mask())
    qtbot.mouseClick(inspector.product_button, Qt.MouseButton.LeftButton)
    loaded = inspector.canvas.mask
    expected = read_mask(
        run / "work" / "mesh" / "product_masks" / "p0.png.png", (W, H)
    )  # resized to the photo, nearest
    assert np.array_equal(loaded, np.where(expected > 0, 255, 0))
    assert inspector.save_button.isEnabled() and inspector.undo()
    assert np.array_equal(inspector.canvas.mask, before)
    inspector.use_product()
    with qtbot.waitSignal(inspector.mask_saved) as saved:
        inspector.save()
    assert np.array_equal(saved.args[1], loaded)
    assert win.project.painted_mask_path(name, photos[0]) is not None

    # a photo with no 3D product mask: the button is off, and no disagreement is claimed
    other = win.inspect_photo(photos[1])
    assert not other.product_button.isEnabled() and not other.use_product()
    assert "disagrees" not in other.note.text()
