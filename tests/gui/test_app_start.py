"""How the app starts from an installer's launcher: folders as arguments, the CPU notice, icon."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gui import app as gui_app
from gui.main_window import MainWindow


@pytest.fixture(autouse=True)
def _homes(tmp_path, monkeypatch):
    """The app's folders (home, unsaved runs) inside the test's temporary folder."""
    monkeypatch.setenv("VITRINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VITRINE_UNSAVED_DIR", str(tmp_path / "unsaved"))


@pytest.fixture
def photos(scene_factory, tmp_path) -> Path:
    """Six photos of the tiny box in a folder named like a product."""
    src = scene_factory("box", n_azimuth=8, elevations_deg=(20, 45), width=320, height=240)
    folder = tmp_path / "blue_mug" / "photos"
    folder.mkdir(parents=True)
    for image in sorted((src.root / "images").glob("*.jpg"))[:6]:
        shutil.copy(image, folder / image.name)
    return folder


@pytest.fixture
def no_runs(monkeypatch):
    """Record sample openings and run starts instead of computing."""
    calls = []
    monkeypatch.setattr(MainWindow, "open_sample", lambda self, start=True: calls.append("sample"))
    monkeypatch.setattr(
        MainWindow, "start_run", lambda self, set_name=None: calls.append(("run", set_name))
    )
    return calls


def _start(qtbot, argv):
    win, errors = gui_app.start_window(argv, None)
    qtbot.addWidget(win)
    errors.uninstall_excepthook()
    return win


def test_a_folder_from_the_launcher_becomes_a_set_and_no_sample_opens(qtbot, photos, no_runs):
    win = _start(qtbot, [str(photos)])
    qtbot.waitUntil(lambda: win.project.set_names != [], timeout=10_000)
    name = win.project.set_names[0]
    assert name == "blue mug"  # named after the product folder, as a drop would be
    assert len(win.project.image_files(name)) == 6
    assert win.current_set == name
    qtbot.wait(50)
    assert no_runs == []  # neither the sample nor a run starts by itself


def test_main_hands_folders_without_a_command_to_the_window(monkeypatch, tmp_path):
    import main

    seen = []
    monkeypatch.setattr(gui_app, "run_app", lambda argv=None, sample=None: seen.append(argv) or 0)
    assert main.main([str(tmp_path), "--no-sample"]) == 0
    assert seen == [["--no-sample", str(tmp_path)]]
    assert main.main(["--project", str(tmp_path)]) == 0
    assert seen[-1] == ["--project", str(tmp_path)]


@pytest.mark.parametrize(("device", "shown"), [("cpu", True), ("cuda", False)])
def test_first_start_says_the_sample_runs_on_the_cpu(qtbot, no_runs, monkeypatch, device, shown):
    from PySide6.QtWidgets import QLabel

    monkeypatch.setattr(gui_app, "resolve_device", lambda requested: device)
    win = _start(qtbot, [])
    qtbot.waitUntil(lambda: no_runs == ["sample"], timeout=10_000)
    label = win.findChild(QLabel, "cpuNotice")
    if not shown:
        assert label is None
        return
    assert label is not None and label.isVisible()
    text = label.text()
    assert "CPU" in text and f"{gui_app.SAMPLE_CPU_MINUTES} minutes" in text
    assert any("No GPU found" in line for line in win.log_panel.lines())
    win.run_ended.emit("finished")  # the note goes once the sample's run ends
    assert not label.isVisible()


def test_a_later_start_says_nothing_about_the_device(qtbot, no_runs, monkeypatch, tmp_path):
    from PySide6.QtWidgets import QLabel

    from gui.main_window import remember_project
    from gui.project import Project

    monkeypatch.setattr(gui_app, "resolve_device", lambda requested: "cpu")
    project = Project()
    project.save(tmp_path / "shoot")
    remember_project(tmp_path / "shoot")
    win = _start(qtbot, [])
    qtbot.wait(50)
    assert win.findChild(QLabel, "cpuNotice") is None


def test_the_window_has_the_installers_icon(qtbot):
    app = gui_app.make_application()
    assert gui_app.ICON.is_file()
    assert not app.windowIcon().isNull()
