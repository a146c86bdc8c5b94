"""The main window end to end: adding photos, badges, runs through the real worker, cancel,
close during a run, errors, and reopening a saved project.

One tiny synthetic scene (16 views at 320x240) is rendered per session; the run's settings are
the standard preset without the depth network, so a whole run takes seconds.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication
from PySide6.QtWidgets import QApplication

from engine.export.ply import read_ply
from gui.main_window import MainWindow
from gui.project import Project
from gui.results import NO_SCALE_TEXT

TINY = {"n_azimuth": 8, "elevations_deg": (20, 45), "width": 320, "height": 240}
RUN_TIMEOUT_MS = 120_000


@pytest.fixture(autouse=True)
def _homes(tmp_path, monkeypatch):
    """Keep the app's folders (home, unsaved runs) inside the test's temporary folder."""
    monkeypatch.setenv("VITRINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VITRINE_UNSAVED_DIR", str(tmp_path / "unsaved"))


@pytest.fixture(scope="module")
def tiny_images(scene_factory) -> Path:
    """Folder of the tiny scene's photos (rendered once per session)."""
    return scene_factory("box", **TINY).root / "images"


#: A photo of another product among the tiny box's: no run can place it.
STRANGER = "zz_another_product.jpg"


@pytest.fixture(scope="module")
def tiny_images_and_a_stranger(scene_factory, tiny_images, tmp_path_factory) -> Path:
    """The tiny box's photos and one of a bottle (a photo from another shoot in the folder)."""
    folder = tmp_path_factory.mktemp("tiny_and_stranger")
    for photo in tiny_images.glob("*.jpg"):
        shutil.copy2(photo, folder / photo.name)
    bottle = sorted((scene_factory("bottle", **TINY).root / "images").glob("*.jpg"))[0]
    shutil.copy2(bottle, folder / STRANGER)
    return folder


@pytest.fixture(scope="module")
def shared() -> dict:
    """Results handed from one test to another when they run in the same session."""
    return {}


@pytest.fixture
def window(qtbot):
    win = MainWindow(gpu_probe=None)
    qtbot.addWidget(win)
    # Smaller than the default: next to software OpenGL (Xvfb + Mesa) every repaint composes
    # the whole window on the CPU the run also needs.
    win.resize(1000, 700)
    win.show()
    qtbot.waitExposed(win)
    yield win
    if win.worker is not None:  # a failed test must not leave a run going
        win.worker.cancel()
        win.wait_for_run(60)


def vitrine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "vitrine" in t.name.lower()]


def add_fast_set(win: MainWindow, folder: Path) -> str:
    """Add ``folder`` as a set with the fast settings (depth network off)."""
    win.add_paths([folder])
    name = win.current_set
    win.project.update_set(name, no_depth_prior=True)
    win.settings.load(win.project.image_set(name))
    assert win.settings.config().depth_prior.enabled is False
    return name


def wait_for_stage(qtbot, win: MainWindow, stage: str, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: win.progress_model.current == stage, timeout=timeout)


def drop(win: MainWindow, urls: list[QUrl]) -> tuple[bool, bool]:
    mime = QMimeData()
    mime.setUrls(urls)
    pos = QPointF(win.width() / 2, win.height() / 2)
    enter = QDragEnterEvent(
        pos,
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(win, enter)
    event = QDropEvent(
        pos,
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(win, event)
    return enter.isAccepted(), event.isAccepted()


# ---------------------------------------------------------------------- adding photos


def test_drop_folder_adds_images_thumbnails_and_unreadable_badge(
    qtbot, window, tiny_images, tmp_path
):
    folder = tmp_path / "shoot"
    folder.mkdir()
    for src in sorted(tiny_images.glob("*.jpg"))[:4]:
        shutil.copy(src, folder / src.name)
    corrupt = folder / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)  # a JPEG header, then nothing

    entered, dropped = drop(window, [QUrl.fromLocalFile(str(folder))])

    assert entered and dropped
    name = window.current_set
    assert name == "shoot"
    files = window.project.image_files(name)
    assert len(files) == 5
    assert window.thumbs.paths() == [str(p) for p in files]
    qtbot.waitUntil(lambda: window.thumbs.loaded_count() == 5, timeout=30_000)
    status, reason = window.thumbs.status_of(corrupt)
    assert status == "unreadable"
    assert reason  # the loader's reason, e.g. "damaged or truncated"
    assert "unreadable" in window.thumbs.store.item(0).toolTip() or reason in (
        window.thumbs.store.item(files.index(corrupt)).toolTip()
    )
    others = [window.thumbs.status_of(p)[0] for p in files if p != corrupt]
    assert others == ["ok"] * 4
    for row in range(5):
        assert not window.thumbs.store.item(row).icon().isNull()
    assert "5 photos" in window.set_info.text()
    assert window.run_button.isEnabled()


def test_drop_of_non_files_is_refused(window):
    entered, _ = drop(window, [QUrl("https://example.com/photo.jpg")])
    assert not entered
    assert window.project.set_names == []


def test_paste_paths_and_exclude_toggle(qtbot, window, tiny_images, tmp_path):
    photos = sorted(tiny_images.glob("*.jpg"))[:3]
    mime = QMimeData()
    mime.setText(
        f"{photos[0]}\n  '{photos[1]}'\n{QUrl.fromLocalFile(str(photos[2])).toString()}\n"
        f"{tmp_path / 'missing.jpg'}\n"
    )
    QGuiApplication.clipboard().setMimeData(mime)
    window.paste_action.trigger()  # Edit > Paste photo paths (Ctrl+V)

    name = window.current_set
    assert name is not None
    assert [p.name for p in window.project.image_files(name)] == [p.name for p in photos]
    assert "missing.jpg" in window.statusBar().currentMessage()

    # Untick a photo: excluded badge, left out of the run; the context-menu path takes it back.
    target = str(window.project.image_files(name)[1])
    row = window.thumbs.paths().index(target)
    window.thumbs.store.item(row).setCheckState(Qt.CheckState.Unchecked)
    assert window.project.is_excluded(name, target)
    assert window.thumbs.status_of(target)[0] == "excluded"
    assert Path(target) not in window.project.inputs_for_run(name)
    assert "1 left out" in window.set_info.text()

    window.thumbs.set_excluded([target], False)
    assert not window.project.is_excluded(name, target)
    assert Path(target) in window.project.inputs_for_run(name)
    qtbot.waitUntil(lambda: window.thumbs.status_of(target)[0] == "ok", timeout=30_000)


# ---------------------------------------------------------------------- runs


def test_full_run_live_preview_responsive_then_dense(
    qtbot, window, tiny_images_and_a_stranger, tmp_path, shared
):
    name = add_fast_set(window, tiny_images_and_a_stranger)
    photos = len(list(tiny_images_and_a_stranger.glob("*.jpg")))
    events: list[tuple[str, str, int]] = []
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))

    with qtbot.waitSignal(window.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        timer.start()
        qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
        worker = window.worker
        assert worker is not None and worker.is_running()
        assert window.cancel_button.isEnabled() and not window.run_button.isEnabled()
        worker.progress.connect(
            lambda e: events.append(
                ("progress", e.stage if e.stage != "pipeline" else "pipeline:" + e.message, 0)
            )
        )
        worker.snapshot.connect(lambda c, _cams, kind: events.append(("snapshot", kind, len(c))))
        result_box = []
        worker.finished.connect(
            lambda r: (result_box.append(r), events.append(("finished", "", 0)))
        )
    timer.stop()

    assert ended.args == ["finished"]
    result = result_box[0]
    # stages in order, in the model and on the panel (where the photo checks count as reading
    # the photos, and the coverage map as the scale stage)
    stages = ["ingest", "masks", "sfm", "dense", "fuse", "mesh", "scale", "coverage", "export"]
    shown = [s for s in stages if s != "coverage"]
    assert window.progress_panel.started_order() == shown
    announced = [e[1].split(":", 1)[1] for e in events if e[1].startswith("pipeline:")]
    assert announced == stages
    for stage in shown:
        assert window.progress_panel.rows[stage].bar.value() == 1000
    skipped = window.progress_panel.rows["depth_prior"]
    assert skipped.bar.value() == 0 and skipped.message.text() == "skipped"
    # partial clouds reached the model before the run finished
    done_at = [i for i, e in enumerate(events) if e[0] == "finished"][0]
    kinds_before = {e[1] for e in events[:done_at] if e[0] == "snapshot" and e[2] > 0}
    assert {"sparse", "dense-partial", "fuse-partial"} <= kinds_before
    assert window.snapshot_counts["sparse"] >= 1
    # the GUI thread stayed responsive: longest gap between 10 ms timer ticks
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    shared["max_gap_s"] = max(gaps)
    print(f"\nrun: {len(ticks)} ticks, longest event-loop gap {1000 * max(gaps):.0f} ms")
    assert max(gaps) < 0.2
    # the dense cloud is on show, and the photos the run could not place are badged
    assert window.cloud_model.kind == "dense"
    assert len(window.cloud_model) == len(result.dense) > 1000
    assert len(read_ply(window.project.run_dir(name) / "dense.ply")) == len(result.dense)
    unregistered = result.report.unregistered
    assert STRANGER in unregistered  # the other product's photo is left out, and badged
    for row in range(photos):  # thumbnails load lazily, as they come into view
        window.thumbs.scrollTo(window.thumbs.store.index(row, 0))
        qtbot.wait(100)  # past the lazy loader's 60 ms timer
    qtbot.waitUntil(lambda: window.thumbs.loaded_count() == photos, timeout=30_000)
    statuses = window.thumbs.statuses()
    for path, status in statuses.items():
        expected = "not registered" if Path(path).name in unregistered else "ok"
        assert status == expected, path
    assert window.project.image_set(name).last_status == "finished"
    assert "Finished" in window.statusBar().currentMessage()
    assert window.worker is None and not vitrine_threads()
    # the mesh arrived live and is on show; every photo has its automatic mask
    assert result.mesh is not None and result.mesh.num_triangles > 1000
    assert window.result_model.mesh is result.mesh and window.view.display == "mesh"
    window.view.flush()
    if window.view.available:
        assert window.view.mesh_triangles == result.mesh.num_triangles
        assert window.view.mesh_shown() and window.mesh_button.isChecked()
    assert set(window.thumbs.mask_states_shown().values()) == {"auto"}
    assert len(window.thumbs.mask_states_shown()) == photos
    # no markers, no known size: the window says how to get true dimensions
    assert window.dimensions_label.text() == NO_SCALE_TEXT
    # the coverage map counts the placed photos; its advice is in the log too
    coverage = window.result_model.coverage
    assert int(coverage.counts.sum()) == len(result.report.registered)
    assert coverage.gaps and coverage.gaps[0] in window.coverage.advice_lines()
    assert f"Advice: {coverage.gaps[0]}" in window.log_panel.text.toPlainText()

    # saved for the reopen test
    folder = tmp_path / "project"
    assert window.save_project_as(folder)
    shared["project"] = folder
    shared["points"] = len(result.dense)
    shared["mesh_triangles"] = result.mesh.num_triangles


def test_cancel_mid_sfm_and_mid_dense_returns_quickly(qtbot, window, tiny_images):
    add_fast_set(window, tiny_images)
    latencies = {}
    for stage in ("sfm", "dense"):  # the second run resumes: SfM was not finished
        qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
        worker = window.worker
        wait_for_stage(qtbot, window, stage)
        with qtbot.waitSignal(window.run_ended, timeout=10_000) as ended:
            t0 = time.perf_counter()
            qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
            click_s = time.perf_counter() - t0
        latencies[stage] = time.perf_counter() - t0
        assert ended.args == ["cancelled"]
        assert click_s < 0.5  # the click never waits for the worker (one repaint at most)
        assert latencies[stage] < 2.0, latencies
        assert worker.wait(1000)
        assert window.worker is None and not vitrine_threads()
        assert "Cancelled" in window.statusBar().currentMessage()
        assert "run again to resume" in window.progress_panel.total.text()
        assert window.run_button.isEnabled()
    print(f"\ncancel latency: sfm {latencies['sfm']:.2f} s, dense {latencies['dense']:.2f} s")


def test_close_during_run_asks_then_stops_the_worker(qtbot, window, tiny_images):
    add_fast_set(window, tiny_images)
    questions = []
    window.start_run()
    worker = window.worker
    wait_for_stage(qtbot, window, "sfm")

    window.confirm = lambda q: questions.append(q) or False  # "No": keep running
    window.close()
    assert window.isVisible() and worker.is_running()

    window.confirm = lambda q: questions.append(q) or True
    t0 = time.perf_counter()
    window.close()
    elapsed = time.perf_counter() - t0

    assert questions == ["A reconstruction is running. Cancel it and quit?"] * 2
    assert not window.isVisible()
    assert worker.wait(0)
    assert not worker.is_running()
    assert window.worker is None
    assert not vitrine_threads()
    assert elapsed < 5.0


def test_failing_run_shows_the_engine_message(qtbot, window, tmp_path):
    folder = tmp_path / "pdf"
    folder.mkdir()
    (folder / "leaflet.jpg").write_bytes(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n")
    add_fast_set(window, folder)
    with qtbot.waitSignal(window.run_ended, timeout=60_000) as ended:
        window.start_run()
    assert ended.args == ["failed"]
    box = window.errors.last_dialog
    assert box is not None and box.isVisible()
    assert box.windowTitle() == "Reconstruction failed"
    assert "leaflet.jpg" in box.text()
    assert "PDF" in box.text()
    assert window.project.image_set(window.current_set).last_status == "failed"
    box.close()


def test_saved_project_reopens_with_its_last_result(
    qtbot, tiny_images, tmp_path, shared, monkeypatch
):
    folder = shared.get("project")
    if folder is None:  # run alone: make a finished project without the GUI
        from engine.pipeline import reconstruct

        folder = tmp_path / "project"
        project = Project()
        project.add_set("box", no_depth_prior=True)
        project.add_paths("box", [tiny_images])
        project.save(folder)
        result = reconstruct(
            project.inputs_for_run("box"), project.run_dir("box"), project.config_for_run("box")
        )
        project.update_set("box", last_status="finished", last_message="done")
        project.save()
        shared["points"] = len(result.dense)
        shared["mesh_triangles"] = result.mesh.num_triangles

    from gui import workers

    started = []
    monkeypatch.setattr(workers.RunWorker, "start", lambda self: started.append(self))
    win = MainWindow(Project.load(folder), gpu_probe=None)
    qtbot.addWidget(win)
    win.show()

    assert win.project.folder == Path(folder).resolve()
    assert win.current_set is not None
    assert len(win.cloud_model) == shared["points"] > 0
    assert win.cloud_model.kind == "dense"
    assert len(win.cloud_model.cameras) >= 2
    assert win.worker is None and not started
    assert "finished" in win.progress_panel.total.text()
    win.view.flush()
    if win.view.available:
        assert win.view.point_count > 0
        assert win.view.mesh_triangles == shared["mesh_triangles"]
    # the mesh, the dimensions line and the coverage map come back from the run folder
    assert win.result_model.mesh.num_triangles == shared["mesh_triangles"]
    assert win.view.display == "mesh"
    assert win.dimensions_label.text() == NO_SCALE_TEXT
    assert win.result_model.coverage.counts.sum() == len(win.cloud_model.cameras)


def test_about_lists_versions_and_model_licences(window):
    dialog = window.show_about()
    text = dialog.browser.toPlainText()
    for name in (
        "Python",
        "PySide6",
        "pyqtgraph",
        "PyTorch",
        "transformers",
        "pycolmap",
        "NumPy",
        "OpenCV",
    ):
        assert name in text
    assert "Depth-Anything-V2-Small-hf" in text and "Apache-2.0" in text
    assert "CC-BY-NC-4.0" in text and "non-commercial" in text
    dialog.close()


def test_settings_build_the_run_config(window, tmp_path):
    window.new_set("p")
    settings = window.settings
    settings.preset.setCurrentIndex(settings.preset.findData("preview"))
    settings.device.setCurrentIndex(settings.device.findData("cpu"))
    settings.set_depth_folder(tmp_path)
    cfg = settings.config()
    assert cfg.preset == "preview" and cfg.device == "cpu" and cfg.stop_after == "sparse"
    assert cfg.depth_prior.enabled and cfg.depth_prior.model == str(tmp_path)
    image_set = window.project.image_set("p")
    assert (image_set.preset, image_set.device, image_set.depth_model) == (
        "preview",
        "cpu",
        str(tmp_path),
    )
    settings.depth.setCurrentIndex(settings.depth.findData("download"))
    settings.depth.activated.emit(settings.depth.currentIndex())
    assert settings.config().depth_prior.allow_download


# ---------------------------------------------------------------------- first start: the sample


def test_first_start_writes_the_sample_and_runs_it_then_reuses_it(qtbot, tiny_images, monkeypatch):
    import engine.synthetic
    from gui import app as gui_app
    from gui.main_window import SAMPLE_SET, remember_project, sample_folder

    def fake_write_sample(folder, kind="bottle", *, progress=None, cancel=None):
        photos = Path(folder) / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        for i, src in enumerate(sorted(tiny_images.glob("*.jpg"))[:6]):
            shutil.copy(src, photos / src.name)
            if progress is not None:
                from engine.progress import ProgressEvent

                progress(ProgressEvent("synthetic", i + 1, 6, src.name))
        return photos

    monkeypatch.setattr(engine.synthetic, "write_sample", fake_write_sample)
    started = []
    monkeypatch.setattr(
        MainWindow, "start_run", lambda self, set_name=None: started.append(set_name) or True
    )

    win, errors = gui_app.start_window(
        [],
        None,
    )
    qtbot.addWidget(win)
    try:
        qtbot.waitUntil(lambda: started == [SAMPLE_SET], timeout=30_000)
        assert win.project.folder == sample_folder().resolve()
        assert (sample_folder() / "project.json").is_file()
        assert len(win.project.image_files(SAMPLE_SET)) == 6
        assert win.current_set == SAMPLE_SET
        win.project.update_set(SAMPLE_SET, last_status="finished", last_message="done")
        win.project.save()
        win.close()
    finally:
        errors.uninstall_excepthook()

    # Second start (the sample is the last project): its finished result shows, no run.
    remember_project(sample_folder())
    win2, errors2 = gui_app.start_window([], None)
    qtbot.addWidget(win2)
    try:
        qtbot.waitUntil(
            lambda: "last reconstruction" in win2.statusBar().currentMessage(), timeout=10_000
        )
        assert win2.project.has_set(SAMPLE_SET) and started == [SAMPLE_SET]
        # An interrupted sample run resumes on the next start.
        win2.project.update_set(SAMPLE_SET, last_status="running")
        win2.project.save()
        win2.close()
    finally:
        errors2.uninstall_excepthook()
    win3, errors3 = gui_app.start_window([], None)
    qtbot.addWidget(win3)
    errors3.uninstall_excepthook()
    qtbot.waitUntil(lambda: started == [SAMPLE_SET, SAMPLE_SET], timeout=10_000)
    win3.close()

    # --no-sample starts empty when no project was opened before.
    (sample_folder().parent / "recent.json").unlink()
    win4, errors4 = gui_app.start_window(["--no-sample"], None)
    qtbot.addWidget(win4)
    errors4.uninstall_excepthook()
    qtbot.wait(50)
    assert win4.project.set_names == [] and win4.hint.isVisible()
    assert len(started) == 2
