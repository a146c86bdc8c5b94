"""The export dialog: the run folder's shareable files with sizes and budgets, and the copy."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QUrl

from gui.export_dialog import MB, ExportDialog, human_size


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    (run / "work").mkdir(parents=True)
    (run / "work" / "state.json").write_text("{}")
    (run / "viewer.html").write_bytes(b"<html>" + b"x" * 2_000_000)
    (run / "dense.ply").write_bytes(b"p" * 123_456)
    (run / "sparse.ply").write_bytes(b"s" * 2_048)
    (run / "report.json").write_text("{}")
    (run / "run.log").write_text("log")
    return run


def test_lists_the_exportable_files_with_sizes_and_budgets(qtbot, run_dir):
    dialog = ExportDialog(run_dir)
    qtbot.addWidget(dialog)

    assert dialog.files() == ["viewer.html", "dense.ply", "sparse.ply"]  # no mesh.glb yet
    assert dialog.size_text("viewer.html") == human_size(2_000_006) == "1.9 MB"
    assert dialog.size_text("dense.ply") == "120.6 KB"
    assert dialog.size_text("sparse.ply") == "2.0 KB"
    assert dialog.budget_text("viewer.html") == "within 15.0 MB"
    assert dialog.budget_text("dense.ply") == "informational"
    assert dialog.open_button.isEnabled()

    opened = []
    dialog.open_url = opened.append
    qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)
    assert opened == [QUrl.fromLocalFile(str((run_dir / "viewer.html").resolve()))]


def test_over_budget_files_are_flagged(qtbot, run_dir):
    (run_dir / "mesh.glb").write_bytes(b"\0" * (15 * MB + 1))
    dialog = ExportDialog(run_dir)
    qtbot.addWidget(dialog)
    assert dialog.files()[:2] == ["viewer.html", "mesh.glb"]
    assert dialog.budget_text("mesh.glb").startswith("OVER")


def test_copy_to_folder_copies_exactly_the_chosen_files(qtbot, run_dir, tmp_path):
    dialog = ExportDialog(run_dir)
    qtbot.addWidget(dialog)
    destination = tmp_path / "shop"
    dialog.choose_folder = lambda: destination
    dialog.set_checked(["viewer.html", "sparse.ply"])

    qtbot.mouseClick(dialog.copy_button, Qt.MouseButton.LeftButton)

    assert sorted(p.name for p in destination.iterdir()) == ["sparse.ply", "viewer.html"]
    for name in ("viewer.html", "sparse.ply"):
        assert (destination / name).read_bytes() == (run_dir / name).read_bytes()
    assert "Copied 2" in dialog.note.text()

    # untick everything: nothing is copied; the run folder is never a destination
    dialog.set_checked([])
    other = tmp_path / "other"
    dialog.choose_folder = lambda: other
    qtbot.mouseClick(dialog.copy_button, Qt.MouseButton.LeftButton)
    assert not other.exists()
    dialog.set_checked(["dense.ply"])
    dialog.choose_folder = lambda: run_dir
    qtbot.mouseClick(dialog.copy_button, Qt.MouseButton.LeftButton)
    assert "another folder" in dialog.note.text()


def test_empty_run_folder_offers_nothing(qtbot, tmp_path):
    dialog = ExportDialog(tmp_path / "nothing")
    qtbot.addWidget(dialog)
    assert dialog.files() == []
    assert not dialog.copy_button.isEnabled() and not dialog.open_button.isEnabled()
    assert "run the set first" in dialog.note.text()
