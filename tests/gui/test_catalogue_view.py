"""The catalogue view (gui/catalogue_view.py): every image set of a project run one after
another through engine.catalogue, per-set status, the gallery in the project folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gui.catalogue_view import (
    STATUS_TEXT,
    CatalogueDialog,
    read_ray_address,
    remember_ray_address,
    set_products,
)
from gui.main_window import MainWindow
from gui.project import Project

BATCH_TIMEOUT_MS = 240_000


@pytest.fixture
def tiny_images(tiny_shoot) -> Path:
    """The session's tiny box shoot (tests/gui/conftest.py)."""
    return tiny_shoot.root / "images"


def test_ray_address_is_remembered(tmp_path):
    home = tmp_path / "home"
    assert read_ray_address(home) == ""
    remember_ray_address(home, "ray://head:10001")
    assert read_ray_address(home) == "ray://head:10001"
    (home / "settings.json").write_text("[not a dict]")
    assert read_ray_address(home) == ""
    remember_ray_address(home, "")  # a damaged file is replaced, not an error
    assert json.loads((home / "settings.json").read_text()) == {"ray_address": ""}


def test_sets_become_products_with_their_own_settings(tmp_path, tiny_images):
    project = Project(tmp_path / "shop")
    project.add_set("Blue box")
    project.add_paths("Blue box", [tiny_images])
    project.update_set("Blue box", preset="preview", marker_size_mm=40.0)
    project.add_set("Empty")
    site, products, by_slug = set_products(
        project, ["Blue box", "Empty"], lambda name: project.config_for_run(name)
    )
    assert site == project.run_dir("Blue box").parent.parent
    box, empty = products
    assert by_slug[box.slug] == "Blue box" and by_slug[empty.slug] == "Empty"
    assert len(box.photos) == 16 and not box.problem
    assert box.config.preset == "preview" and box.config.scale.marker_size_mm == 40.0
    assert "no photos" in empty.problem and empty.config is None


def test_dialog_lists_the_sets_and_refuses_while_the_window_runs(qtbot, tmp_path, tiny_images):
    project = Project()
    project.add_set("A")
    project.add_paths("A", [tiny_images])
    project.add_set("B")
    dialog = CatalogueDialog(
        project, project.config_for_run, tmp_path / "home", busy=lambda: "A run is going."
    )
    qtbot.addWidget(dialog)
    assert dialog.checked_sets() == ["A", "B"]
    assert dialog.table.item(0, 1).text() == "16" and dialog.table.item(1, 1).text() == "0"
    assert "temporary folder" in dialog.info.text()
    assert not dialog.gallery_button.isEnabled()
    assert dialog.start() is False and dialog.state.text() == "A run is going."
    dialog.set_checked("A", False)
    dialog.set_checked("B", False)
    dialog.busy = lambda: ""
    assert dialog.start() is False and "Tick" in dialog.state.text()
    assert dialog.ray_address() is None
    dialog.where.setCurrentIndex(1)
    assert dialog.address.isEnabled() and dialog.ray_address() == "auto"


@pytest.mark.slow
def test_run_all_sets_then_again_from_the_window(qtbot, tmp_path, tiny_images, monkeypatch):
    """Two sets: one runs to a model, one has no photos and is listed failed with its reason;
    the project records both, the gallery is in the project folder, a second run computes
    nothing."""
    monkeypatch.setenv("VITRINE_HOME", str(tmp_path / "home"))
    win = MainWindow(gpu_probe=None)
    qtbot.addWidget(win)
    win.resize(1000, 700)
    win.show()
    qtbot.waitExposed(win)
    win.add_paths([tiny_images])
    box = win.current_set
    win.project.update_set(box, preset="preview", no_depth_prior=True)
    win.settings.load(win.project.image_set(box))
    empty = win.new_set("Empty")
    assert win.save_project_as(tmp_path / "shop")
    win.select_set(box)

    dialog = win.show_catalogue()
    assert dialog.checked_sets() == [box, empty]
    told = []
    dialog.set_finished.connect(lambda *args: told.append(args))
    assert dialog.start()
    assert not win.start_run(box)  # one thing at a time
    qtbot.waitUntil(lambda: dialog.worker is None, timeout=BATCH_TIMEOUT_MS)

    status, verdict = dialog.status_of(box)
    assert status == STATUS_TEXT["finished"], dialog.state.text()
    assert verdict.split(":")[0] in ("Ready", "Check", "Reshoot")
    status, reason = dialog.status_of(empty)
    assert status == STATUS_TEXT["failed"] and "no photos" in reason
    assert sorted(name for name, _, _ in told) == sorted([box, empty])
    assert win.project.image_set(box).last_status == "finished"
    assert win.project.image_set(empty).last_status == "failed"
    assert win.result_model.report is not None  # the selected set's result is shown

    site = tmp_path / "shop"
    page = (site / "index.html").read_text(encoding="utf-8")
    slug = win.project.run_dir(box).name
    assert f'data-slug="{slug}"' in page and f"runs/{slug}/index.html" in page
    assert (win.project.run_dir(box) / "index.html").is_file()
    summary = json.loads((site / "summary.json").read_text(encoding="utf-8"))
    assert {p["slug"]: p["status"] for p in summary["products"]}[slug] == "finished"
    assert dialog.gallery_path() == site / "index.html"
    assert Project.load(site).image_set(box).last_status == "finished"  # saved

    t0 = time.monotonic()
    assert dialog.start()
    qtbot.waitUntil(lambda: dialog.worker is None, timeout=BATCH_TIMEOUT_MS)
    assert dialog.result.computed == [] and time.monotonic() - t0 < 30
    assert dialog.status_of(box)[0] == STATUS_TEXT["up to date"]
    win.close()
