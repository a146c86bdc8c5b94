"""The fault matrix, as the desktop app meets it (issue 6): bad files added (PDFs, empty,
truncated, non-images, 500 tiny photos, a 100-megapixel photo), runs that cannot run (one photo
with damaged depth weights, no overlap, two objects, nothing usable), runs that fail mid-way
(disk full, out of memory, a read-only project folder), cancel inside every stage, closing
mid-run, the app killed with SIGKILL mid-run, non-ASCII and space-containing paths.

Every case checks what the user sees (a non-modal message naming the files and what to do),
that nothing crashed, and that the project file and the last finished run are still there.
Runs use tiny synthetic scenes (16 views at 320x240) with the preview preset, or a standard
preset shrunk for tests (:func:`small_standard`), so the whole file stays short.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QMessageBox

import engine.config
import engine.pipeline
import engine.stages.scale
from engine.errors import OutputError
from gui import settings_panel
from gui.main_window import MainWindow
from gui.project import MANIFEST, Project

#: The presets as the engine defines them (the fixtures below shrink them for these tests).
REAL_PRESET = engine.config.preset
TINY = {"n_azimuth": 8, "elevations_deg": (20, 45), "width": 320, "height": 240}
RUN_TIMEOUT_MS = 240_000
#: Folder names with spaces and characters outside ASCII (photos and projects live there).
PHOTOS_DIR = "Fotos für den Tisch – 2 é ☕"
PROJECT_DIR = "Projekt Müller mit Leerzeichen ✓"
R = dataclasses.replace


# ---------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(autouse=True)
def _homes(tmp_path, monkeypatch):
    """Keep the app's folders (home, unsaved runs) inside the test's temporary folder."""
    monkeypatch.setenv("VITRINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VITRINE_UNSAVED_DIR", str(tmp_path / "unsaved"))


def small_standard(cfg):  # noqa: ANN001, ANN201 - PipelineConfig
    """The standard preset shrunk for tests: small depth maps, few features, a coarse mesh."""
    return cfg.replace(
        sfm=R(cfg.sfm, max_num_features=1024),
        dense=R(cfg.dense, max_image_size=160, num_depths=16, levels=2, refine_depths=2),
        mesh=R(cfg.mesh, poisson_depth=6, texture_size=256, max_triangles=5000),
    )


@pytest.fixture(autouse=True)
def _small_presets(monkeypatch):
    """Runs from the window (settings panel) and from a project get the shrunk standard."""
    real = settings_panel.preset

    def shrunk(name, **overrides):  # noqa: ANN001, ANN202
        cfg = real(name, **overrides)
        return small_standard(cfg) if name == "standard" else cfg

    monkeypatch.setattr(settings_panel, "preset", shrunk)
    monkeypatch.setattr(engine.config, "preset", shrunk)


@pytest.fixture(scope="module")
def tiny_images(scene_factory) -> Path:
    """Folder of the tiny scene's photos (rendered once per session)."""
    return scene_factory("box", **TINY).root / "images"


@pytest.fixture(scope="module")
def unicode_photos(tiny_images, tmp_path_factory) -> Path:
    """The tiny scene's photos in a folder whose name has spaces and non-ASCII characters."""
    folder = tmp_path_factory.mktemp("photos") / PHOTOS_DIR
    shutil.copytree(tiny_images, folder)
    return folder


@pytest.fixture(scope="module")
def finished_project(unicode_photos, tmp_path_factory) -> Path:
    """A saved project (non-ASCII folder) whose set 'Tisch' has a finished preview run."""
    folder = tmp_path_factory.mktemp("finished") / PROJECT_DIR
    project = Project()
    project.add_set("Tisch", preset="preview", no_depth_prior=True, auto_masks=False)
    project.add_paths("Tisch", [unicode_photos])
    project.save(folder)
    cfg = project.config_for_run("Tisch")  # tiny: keep its 5-photo model (see conftest)
    cfg = cfg.replace(sfm=R(cfg.sfm, min_placed_fraction=0.0))
    result = engine.pipeline.reconstruct(
        project.inputs_for_run("Tisch"), project.run_dir("Tisch"), cfg
    )
    assert result.report.status == "finished" and len(result.sparse.points) > 0
    project.update_set("Tisch", last_status="finished", last_message="done")
    project.save()
    return folder


def copy_project(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished project (each test may break its own)."""
    target = tmp_path / f"{PROJECT_DIR} (Kopie)"
    shutil.copytree(finished, target)
    return target


def run_files(run: Path) -> dict[str, bytes]:
    """The finished run's result files, to compare after a failure."""
    names = ("sparse.ply", "viewer.html", "sparse/0/images.bin", "sparse/0/points3D.bin")
    return {name: (run / name).read_bytes() for name in names}


@pytest.fixture
def windows(qtbot):
    """Makes windows; runs still going at the end of a test are cancelled and waited for."""
    made: list[MainWindow] = []

    def make(project: Project | None = None) -> MainWindow:
        win = MainWindow(project, gpu_probe=None)
        win.confirm = lambda _question: True  # never a modal question in a test
        qtbot.addWidget(win)
        win.resize(1000, 700)
        win.show()
        qtbot.waitExposed(win)
        made.append(win)
        return win

    yield make
    for win in made:
        if win.worker is not None:
            win.worker.cancel()
            win.wait_for_run(60)


def vitrine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "vitrine" in t.name.lower()]


def drop(win: MainWindow, paths: list[Path]) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(win.width() / 2, win.height() / 2)
    args = (pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton)
    enter = QDragEnterEvent(*args, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(win, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(win, QDropEvent(*args, Qt.KeyboardModifier.NoModifier))


def run_and_wait(qtbot, win: MainWindow, name: str | None = None) -> str:
    """Start a run from the window; return how it ended."""
    with qtbot.waitSignal(win.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        assert win.start_run(name)
    assert win.worker is None and not vitrine_threads()
    return ended.args[0]


def last_box(win: MainWindow, title: str) -> QMessageBox:
    """The last message box shown, checked to be open, non-modal and titled ``title``."""
    box = win.errors.last_dialog
    assert box is not None and box.isVisible()
    assert box.windowTitle() == title
    assert box.windowModality() == Qt.WindowModality.NonModal
    return box


def box_titled(win: MainWindow, title: str) -> QMessageBox:
    """The open message box titled ``title`` (several may be open)."""
    boxes = [b for b in win.errors.open_dialogs if b.windowTitle() == title]
    assert len(boxes) == 1, [b.windowTitle() for b in win.errors.open_dialogs]
    assert boxes[0].windowModality() == Qt.WindowModality.NonModal
    return boxes[0]


def close_boxes(win: MainWindow) -> None:
    for box in win.errors.open_dialogs:
        box.close()


def write_jpeg(path: Path, size: tuple[int, int], seed: int, orientation: int = 0) -> Path:
    """A textured JPEG (EXIF orientation when given)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(path, quality=85, exif=exif)
    return path


def damaged_model(folder: Path) -> Path:
    """A depth-network folder whose weights file is damaged (random bytes)."""
    folder.mkdir()
    config = {"model_type": "depth_anything", "architectures": ["DepthAnythingForDepthEstimation"]}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(os.urandom(3000))
    return folder


def read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` behave as on a read-only file system (EROFS) for the app and the engine.

    Why a simulation: the tests run as root, for whom permission bits do not stop writes. Every
    way the project and the run folder are written goes through these calls: atomic writes
    (``tempfile.mkstemp``), the run's write test (``Path.write_bytes``) and new folders.
    """
    folder = Path(os.path.abspath(folder))

    def inside(path) -> bool:  # noqa: ANN001
        path = Path(os.path.abspath(path))
        return path == folder or folder in path.parents

    def refuse(path) -> None:  # noqa: ANN001
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    real_mkstemp, real_write, real_mkdir = tempfile.mkstemp, Path.write_bytes, Path.mkdir

    def mkstemp(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        where = kwargs.get("dir")
        if where is not None and inside(where):
            refuse(where)
        return real_mkstemp(*args, **kwargs)

    def write_bytes(self, data):  # noqa: ANN001, ANN202
        if inside(self):
            refuse(self)
        return real_write(self, data)

    def mkdir(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if inside(self) and not self.is_dir():
            refuse(self)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.setattr(Path, "mkdir", mkdir)


# ---------------------------------------------------------------------- adding bad files


def test_bad_files_are_refused_by_name_and_the_good_ones_kept(
    qtbot, windows, tiny_images, tmp_path
):
    photos = sorted(tiny_images.glob("*.jpg"))
    drop_dir = tmp_path / "Ablage mit Leerzeichen ü"
    drop_dir.mkdir()
    good = [shutil.copy(p, drop_dir / p.name) for p in photos[:2]]
    good.append(write_jpeg(drop_dir / "hochkant.jpg", (240, 320), 1, orientation=6))
    good.append(drop_dir / "anders.png")
    Image.fromarray(np.asarray(Image.open(photos[2]))[::2, ::2]).save(good[-1])
    good = [Path(p) for p in good]
    pdf = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
    (drop_dir / "leaflet.jpg").write_bytes(pdf)  # a PDF renamed .jpg
    (drop_dir / "empty.jpg").write_bytes(b"")
    data = photos[3].read_bytes()
    (drop_dir / "cut off.jpg").write_bytes(data[: len(data) // 2])  # a truncated copy
    (drop_dir / "notes.txt").write_text("shoot notes\n", encoding="utf-8")
    (drop_dir / "brochure.pdf").write_bytes(pdf)
    pdf_folder = drop_dir / "pdfs"
    pdf_folder.mkdir()
    for stem in ("a", "b", "c", "d"):
        (pdf_folder / f"{stem}.pdf").write_bytes(pdf)
    mixed = drop_dir / "gemischt"  # a folder of photos, one of them damaged
    mixed.mkdir()
    for p in photos[4:6]:
        shutil.copy(p, mixed / p.name)
    (mixed / "broken.jpg").write_bytes(data[:600])
    bad_files = ["leaflet.jpg", "empty.jpg", "cut off.jpg", "notes.txt", "brochure.pdf"]

    win = windows()
    win.new_set("Tisch")
    folder = tmp_path / PROJECT_DIR
    assert win.save_project_as(folder)
    before = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))

    t0 = time.perf_counter()
    drop(win, [*good, *(drop_dir / n for n in bad_files), pdf_folder, mixed])
    add_s = time.perf_counter() - t0

    # one non-modal warning lists every refused file with its reason and says what to do
    box = last_box(win, "Some files cannot be used")
    assert box.icon() == QMessageBox.Icon.Warning
    text = box.text()
    assert "6 of the 11 item(s) were not added to 'Tisch'" in text
    assert "leaflet.jpg — not an image (looks like a PDF document)" in text
    assert "empty.jpg — empty file (0 bytes)" in text
    assert "cut off.jpg — damaged or incomplete file (the image data ends early)" in text
    assert "notes.txt — not an image" in text and "not a photo file (.txt)" in text
    assert "brochure.pdf — not an image (looks like a PDF document)" in text
    assert "pdfs — holds no photos" in text and "4 other file(s): a.pdf, b.pdf, c.pdf" in text
    assert "broken.jpg — damaged" in text and "a run skips them" in text
    assert "Replace damaged or incomplete files with the originals" in text
    assert "The other photos were added." in text
    for name in [*bad_files, "pdfs", "broken.jpg"]:
        assert name in box.detailedText()
    log = win.log_panel.text.toPlainText()
    assert "leaflet.jpg" in log and "broken.jpg" in log
    # the good photos and the folder are in the set; nothing else
    image_set = win.project.image_set("Tisch")
    assert image_set.sources == [str(p) for p in good] + [str(mixed)]
    files = win.project.image_files("Tisch")
    assert len(files) == 4 + 3
    # the thumbnails: sizes and orientations read fine, the damaged one in the folder is badged
    qtbot.waitUntil(lambda: win.thumbs.loaded_count() == 7, timeout=30_000)
    assert win.thumbs.status_of(mixed / "broken.jpg")[0] == "unreadable"
    assert {win.thumbs.status_of(p)[0] for p in good} <= {"ok", "blurry"}
    # the manifest changes by the good sources only, once saved
    assert win.save_project()
    after = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    before["sets"][0]["sources"] = [str(p) for p in good] + [str(mixed)]
    assert after == before
    print(f"\nscreening 11 dropped items: {add_s * 1000:.0f} ms")


def test_nothing_usable_makes_no_set_and_missing_paths_are_named(windows, tmp_path):
    win = windows()
    pdfs = tmp_path / "Broschüren"
    pdfs.mkdir()
    (pdfs / "katalog.pdf").write_bytes(b"%PDF-1.4\n")
    win.add_paths([pdfs, tmp_path / "weg.jpg"])
    assert win.project.set_names == []  # no empty set left behind
    text = last_box(win, "Some files cannot be used").text()
    assert "Broschüren — holds no photos" in text and "katalog.pdf" in text
    assert "weg.jpg — does not exist (moved or renamed?)" in text
    assert "Nothing was added." in text


def test_500_tiny_photos_and_a_100_megapixel_photo(qtbot, windows, tmp_path):
    tiny = tmp_path / "z 500 kleine Bilder"  # listed after the big one
    tiny.mkdir()
    rng = np.random.default_rng(5)
    for i in range(500):
        pixels = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tiny / f"img_{i:03d}.jpg", quality=80)
    big_dir = tmp_path / "a groß"
    big_dir.mkdir()
    big = big_dir / "100MP.jpg"
    texture = rng.integers(0, 255, (100, 125), dtype=np.uint8)
    Image.fromarray(texture).resize((12500, 8000), Image.Resampling.NEAREST).save(big, quality=70)

    win = windows()
    t0 = time.perf_counter()
    win.add_paths([big_dir, tiny])
    add_s = time.perf_counter() - t0
    print(f"\nadding 501 photos (one of 100 MP): {add_s * 1000:.0f} ms on the GUI thread")
    assert add_s < 5.0
    assert win.errors.last_dialog is None  # all of them are usable photos
    name = win.current_set
    assert len(win.project.image_files(name)) == 501
    assert "501 photos" in win.set_info.text()
    # the 100-megapixel photo gets its thumbnail (decoded at a fraction of its size)
    qtbot.waitUntil(lambda: win.thumbs.status_of(big)[0] != "loading", timeout=30_000)
    assert win.thumbs.status_of(big)[0] == "ok"
    assert win.run_button.isEnabled()


# ---------------------------------------------------------------------- runs that cannot run


def test_runs_that_cannot_run_say_why_and_keep_the_last_result(
    qtbot, windows, finished_project, tiny_images, tmp_path, monkeypatch
):
    folder = copy_project(finished_project, tmp_path)
    manifest = folder / MANIFEST
    win = windows(Project.load(folder))
    name = win.current_set
    run = win.project.run_dir(name)
    shown = len(win.cloud_model)
    assert name == "Tisch" and shown > 0 and win.cloud_model.kind == "sparse"
    files = run_files(run)
    photos = win.project.image_files(name)

    # 1. one photo, and a depth network folder with damaged weights: no relief, a clear message
    bad_model = damaged_model(tmp_path / "Tiefe kaputt")
    for photo in photos[1:]:
        win.project.set_excluded(name, photo, True)
    win.settings.set_depth_folder(bad_model)
    assert win.project.image_set(name).depth_model == str(bad_model)
    assert run_and_wait(qtbot, win) == "failed"
    text = last_box(win, "Reconstruction failed").text()
    assert f"Only one usable photo ({photos[0].name})" in text
    assert "at least two overlapping photos" in text
    assert "model.safetensors" in text and str(bad_model) in text and "damaged" in text
    assert f"Image set 'Tisch': 1 photo from '{photos[0].parent}'" in text
    assert "results already in its run folder are kept and shown" in text
    # the last finished result is on show again, its files untouched, the project reopens
    assert len(win.cloud_model) == shown and win.cloud_model.kind == "sparse"
    assert run_files(run) == files
    assert Project.load(folder).image_set(name).last_status == "failed"
    close_boxes(win)

    # 2. photos that do not overlap at all (random textures): the set and its folder are named
    for photo in photos:
        win.project.set_excluded(name, photo, False)
    noise = tmp_path / "Rauschen ohne Überlappung"
    noise.mkdir()
    for i in range(5):
        write_jpeg(noise / f"zufall_{i}.jpg", (320, 240), 100 + i)
    noise_set = win.new_set("Rauschen")
    win.project.update_set(noise_set, preset="preview", no_depth_prior=True, auto_masks=False)
    win.add_paths([noise], noise_set)
    win.settings.load(win.project.image_set(noise_set))
    assert run_and_wait(qtbot, win) == "failed"
    text = last_box(win, "Reconstruction failed").text()
    assert "do not overlap enough" in text and "70% overlap" in text
    assert f"Image set 'Rauschen': 5 photos from '{noise}'" in text
    close_boxes(win)

    # 3. photos of two things in one set, most of them of the other thing (the box's 16 and 20
    # random textures): the set is named with its folders, and so are photos the run could not
    # place. A real run's rule (the conftest lifts it for the tiny shoot): under half placed is
    # no model.
    for module in (settings_panel, engine.config):
        monkeypatch.setattr(module, "preset", REAL_PRESET)
    others = tmp_path / "Andere Dinge"
    others.mkdir()
    for i in range(20):
        write_jpeg(others / f"ding_{i:02d}.jpg", (320, 240), 200 + i)
    mixed_set = win.new_set("Zwei Objekte")
    win.project.update_set(mixed_set, preset="preview", no_depth_prior=True, auto_masks=False)
    win.add_paths([photos[0].parent, others], mixed_set)
    win.settings.load(win.project.image_set(mixed_set))
    assert run_and_wait(qtbot, win) == "failed"
    text = last_box(win, "Reconstruction failed").text()
    assert "of the 36 photos could be placed" in text and "ding_00.jpg" in text
    assert f"Image set 'Zwei Objekte': 36 photos from '{photos[0].parent}', '{others}'" in text
    close_boxes(win)

    # 4. no usable photo at all (a damaged copy and a PDF named .jpg): each is named
    broken = tmp_path / "kaputt"
    broken.mkdir()
    data = photos[0].read_bytes()
    (broken / "halb.jpg").write_bytes(data[: len(data) // 3])
    (broken / "flyer.jpg").write_bytes(b"%PDF-1.4\n%%EOF\n")
    broken_set = win.new_set("kaputt")
    win.project.update_set(broken_set, preset="preview", no_depth_prior=True, auto_masks=False)
    win.add_paths([broken], broken_set)  # added: a folder of photo files; the warning lists both
    assert "halb.jpg" in last_box(win, "Some files cannot be used").text()
    close_boxes(win)
    win.settings.load(win.project.image_set(broken_set))
    assert run_and_wait(qtbot, win) == "failed"
    text = last_box(win, "Reconstruction failed").text()
    assert "No usable photos" in text and "halb.jpg: damaged or incomplete" in text
    assert "flyer.jpg: not an image (looks like a PDF document)" in text
    assert "Add photos taken all around the product" in text
    close_boxes(win)

    # the finished set is still whole: reopening shows its result
    win.select_set(name)
    assert len(win.cloud_model) == shown
    assert run_files(run) == files
    win.save_project()
    reopened = Project.load(folder)
    assert reopened.set_names == ["Tisch", "Rauschen", "Zwei Objekte", "kaputt"]
    cloud, _cams, kind, _report = reopened.last_result("Tisch")
    assert kind == "sparse" and len(cloud) == shown
    assert json.loads(manifest.read_text(encoding="utf-8"))["format"] == "vitrine-project"


# ---------------------------------------------------------------------- runs that fail mid-way


def test_disk_full_mid_run_keeps_the_project_and_the_last_run(
    qtbot, windows, finished_project, tmp_path, monkeypatch
):
    folder = copy_project(finished_project, tmp_path)
    win = windows(Project.load(folder))
    name = win.current_set
    run = win.project.run_dir(name)
    shown = len(win.cloud_model)
    files = run_files(run)
    reached = []

    def full_disk(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - the scale stage
        reached.append(True)
        raise OutputError(
            f"Cannot write scale.json in {run}: [Errno {errno.ENOSPC}] No space left on "
            "device. Free some disk space and run again."
        )

    monkeypatch.setattr(engine.stages.scale, "run", full_disk)
    assert run_and_wait(qtbot, win) == "failed"
    assert reached  # the run resumed SfM and failed in a later stage
    box = last_box(win, "Reconstruction failed")
    assert box.icon() == QMessageBox.Icon.Critical
    assert "No space left on device" in box.text() and "Free some disk space" in box.text()
    assert f"Image set 'Tisch': 16 photos from '{win.project.image_set(name).sources[0]}'" in (
        box.text()
    )
    assert "kept and shown" in box.text()
    assert "failed" in win.statusBar().currentMessage()
    assert len(win.cloud_model) == shown
    assert run_files(run) == files
    # the project file is valid, says how the run ended, and reopens with the last result
    reopened = Project.load(folder)
    assert reopened.image_set(name).last_status == "failed"
    assert "No space left on device" in reopened.image_set(name).last_message
    again = windows(reopened)
    assert len(again.cloud_model) == shown
    assert "Last run failed" in again.progress_panel.total.text()


def test_out_of_memory_in_dense_says_what_to_do_and_keeps_the_last_run(
    qtbot, windows, finished_project, tmp_path, monkeypatch
):
    folder = copy_project(finished_project, tmp_path)
    win = windows(Project.load(folder))
    name = win.current_set
    run = win.project.run_dir(name)
    shown = len(win.cloud_model)
    files = run_files(run)
    # a device with 1 MB free: not even one depth hypothesis fits (engine's simulated cap)
    monkeypatch.setenv("VITRINE_SIMULATE_MEMORY_CAP_MB", "1")
    win.settings.preset.setCurrentIndex(win.settings.preset.findData("standard"))
    assert win.project.image_set(name).preset == "standard"
    assert run_and_wait(qtbot, win) == "failed"
    text = last_box(win, "Reconstruction failed").text()
    assert "Not enough memory for the depth map of" in text and "preview" in text
    assert "finished stages are kept" in text and "Image set 'Tisch'" in text
    assert "Internal error" not in text
    # the last result's files and view stay; the new run's finished SfM is kept for a resume
    assert len(win.cloud_model) == shown
    after = run_files(run)
    assert all(after[k] == files[k] for k in ("sparse.ply", "viewer.html"))
    state = json.loads((run / "work" / "state.json").read_text(encoding="utf-8"))
    assert {"ingest", "sfm"} <= set(state["done"]) and "fuse" not in state["done"]
    assert Project.load(folder).image_set(name).last_status == "failed"


def test_read_only_project_folder_keeps_the_old_manifest_and_the_last_run(
    qtbot, windows, finished_project, tmp_path
):
    folder = copy_project(finished_project, tmp_path)
    manifest = folder / MANIFEST
    win = windows(Project.load(folder))
    name = win.current_set
    run = win.project.run_dir(name)
    shown = len(win.cloud_model)
    files = run_files(run)
    old = manifest.read_bytes()

    with pytest.MonkeyPatch.context() as monkeypatch:
        read_only(monkeypatch, folder)
        win.new_set("Zweites Produkt")
        assert not win.save_project()
        text = last_box(win, "Cannot save the project").text()
        assert "project.json" in text and "Read-only file system" in text
        assert f"The project file '{manifest}' was left as it was" in text
        assert "File ▸ Save project as…" in text and "writable" in text
        assert manifest.read_bytes() == old
        assert win.windowTitle().startswith(f"{folder.name}*")
        assert not [p for p in folder.iterdir() if p.name.startswith(".project.json")]
        close_boxes(win)

        # a run into the read-only run folder fails at once, naming it; the last result stays
        win.select_set(name)
        assert run_and_wait(qtbot, win) == "failed"
        text = box_titled(win, "Reconstruction failed").text()
        assert f"Cannot write to the output folder '{run}'" in text
        assert "Read-only file system" in text and "Choose a folder you can write to" in text
        assert len(win.cloud_model) == shown
        assert run_files(run) == files
        assert manifest.read_bytes() == old
        close_boxes(win)

    # writable again: saving works and keeps everything
    assert win.save_project()
    reopened = Project.load(folder)
    assert reopened.set_names == ["Tisch", "Zweites Produkt"]
    assert reopened.image_set(name).last_status == "failed"
    assert len(reopened.last_result(name)[0]) == shown


# ---------------------------------------------------------------------- cancel, close


CHAIN = ["ingest", "masks", "sfm", "dense", "fuse", "mesh"]
#: Stages timed by a run cancelled in the key's stage, when the run before it was cancelled in
#: the stage before: only that one (the rest resumed). Dense always runs once SfM is done, but
#: it reuses the depth maps already on disk view by view (``resumed_views`` in the report).
RAN_BEFORE_CANCEL = {
    "ingest": set(),
    "masks": {"ingest"},
    "sfm": {"masks"},
    "dense": {"sfm"},
    "fuse": {"dense"},
    "mesh": {"dense", "fuse"},
}


def test_cancel_at_each_stage_from_the_window_then_resume(
    qtbot, windows, tiny_images, tmp_path, monkeypatch
):
    """One run per stage, each cancelled from the window inside that stage; the last resumes."""
    target: list[str] = []
    reached = threading.Event()
    real = engine.pipeline.reconstruct

    def gated(inputs, out_dir, config, *, progress, cancel):  # noqa: ANN001, ANN202
        # In the worker thread: at the target stage's first event, hold the run until the
        # window's Cancel was pressed, so that the cancel lands inside that stage.
        def hold(event) -> None:  # noqa: ANN001
            progress(event)
            if target and event.stage == target[0] and not reached.is_set():
                reached.set()
                deadline = time.monotonic() + 60
                while not cancel.cancelled and time.monotonic() < deadline:
                    time.sleep(0.005)

        return real(inputs, out_dir, config, progress=hold, cancel=cancel)

    monkeypatch.setattr(engine.pipeline, "reconstruct", gated)
    win = windows()
    win.add_paths([tiny_images])
    name = win.current_set
    # a depth network with damaged weights: every run goes on without it, and says so once done
    bad_model = damaged_model(tmp_path / "Tiefe kaputt")
    win.settings.set_depth_folder(bad_model)
    assert win.project.image_set(name).depth_model == str(bad_model)
    assert win.save_project_as(tmp_path / PROJECT_DIR)
    run = win.project.run_dir(name)
    state = run / "work" / "state.json"
    timings = {}
    for index, stage in enumerate(CHAIN):
        target[:] = [stage]
        reached.clear()
        with qtbot.waitSignal(win.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
            assert win.start_run()
            qtbot.waitUntil(reached.is_set, timeout=RUN_TIMEOUT_MS)
            t0 = time.perf_counter()
            qtbot.mouseClick(win.cancel_button, Qt.MouseButton.LeftButton)
            assert "Cancelling" in win.progress_panel.total.text()
        timings[stage] = time.perf_counter() - t0
        assert ended.args == ["cancelled"], stage
        # the window is idle again and says so; the project file says so too
        assert win.worker is None and not vitrine_threads()
        assert win.run_button.isEnabled() and not win.cancel_button.isEnabled()
        assert "Cancelled" in win.statusBar().currentMessage()
        assert "run again to resume" in win.progress_panel.total.text()
        saved = Project.load(win.project.folder).image_set(name)
        assert saved.last_status == "cancelled"
        # finished stages are kept, the cancelled one is not; this run did only the stage
        # the previous one was cancelled in (everything before it was resumed)
        done = (
            set(json.loads(state.read_text(encoding="utf-8"))["done"]) if state.exists() else set()
        )
        assert stage not in done
        assert {s for s in CHAIN[:index] if s not in ("dense", "mesh")} <= done, stage
        report = json.loads((run / "report.json").read_text(encoding="utf-8"))
        assert report["status"] == "cancelled"
        assert set(report["stage_seconds"]) == RAN_BEFORE_CANCEL[stage], stage
        if stage == "mesh":  # every depth map came from the runs cancelled in dense and fuse
            dense = report["stages"]["dense"]
            assert dense["resumed_views"] == dense["views"] > 0
    print("\ncancel latency " + ", ".join(f"{s} {t:.2f} s" for s, t in timings.items()))
    assert max(timings.values()) < 5.0

    # Run again: it resumes after the last cancel and finishes
    target.clear()
    assert run_and_wait(qtbot, win) == "finished"
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "finished"
    assert set(report["stage_seconds"]) == {"dense", "mesh", "scale", "coverage", "export"}
    dense = report["stages"]["dense"]
    assert dense["resumed_views"] == dense["views"] > 0
    assert report["stages"]["mesh"]["built"] is True
    box = box_titled(win, "Depth network not used")
    assert box.icon() == QMessageBox.Icon.Warning
    assert str(bad_model) in box.text() and "model.safetensors" in box.text()
    assert "damaged" in box.text() and "switch the depth network off" in box.text()
    assert report["model"]["depth_prior"].startswith("not used")
    assert win.cloud_model.kind == "dense" and len(win.cloud_model) > 0
    assert Project.load(win.project.folder).image_set(name).last_status == "finished"


def test_closing_mid_run_cancels_it_and_saves_the_project(qtbot, windows, unicode_photos, tmp_path):
    win = windows()
    win.add_paths([unicode_photos])
    name = win.current_set
    win.project.update_set(name, preset="preview", no_depth_prior=True, auto_masks=False)
    win.settings.load(win.project.image_set(name))
    folder = tmp_path / PROJECT_DIR
    assert win.save_project_as(folder)
    assert win.start_run()
    worker = win.worker
    qtbot.waitUntil(lambda: win.progress_model.current == "sfm", timeout=RUN_TIMEOUT_MS)
    questions = []
    win.confirm = lambda q: questions.append(q) or True
    t0 = time.perf_counter()
    win.close()
    elapsed = time.perf_counter() - t0
    assert questions == ["A reconstruction is running. Cancel it and quit?"]
    assert not win.isVisible() and elapsed < 10.0
    assert worker.wait(0) and not worker.is_running() and win.worker is None
    assert not vitrine_threads()
    saved = Project.load(folder)
    assert saved.image_set(name).last_status == "cancelled"
    assert "run again to resume" in saved.image_set(name).last_message
    report = json.loads((saved.run_dir(name) / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "cancelled"


# ---------------------------------------------------------------------- non-ASCII paths


def test_non_ascii_and_space_paths_save_reopen_and_run(qtbot, windows, unicode_photos, tmp_path):
    # the tiny shoot with 6 photos of other things, which no run can place: over a quarter of
    # the set, when the window names them in a message
    unicode_photos = shutil.copytree(unicode_photos, tmp_path / "kopie" / PHOTOS_DIR)
    for i in range(6):
        write_jpeg(unicode_photos / f"zufall_fremd_{i}.jpg", (320, 240), 7 + i)
    win = windows()
    win.add_paths([unicode_photos])
    name = win.current_set
    assert name == PHOTOS_DIR
    win.project.update_set(name, preset="preview", no_depth_prior=True, auto_masks=False)
    win.settings.load(win.project.image_set(name))
    folder = tmp_path / PROJECT_DIR
    assert win.save_project_as(folder)
    assert run_and_wait(qtbot, win) == "finished"
    points = len(win.cloud_model)
    assert points > 0
    run = win.project.run_dir(name)
    # photos left out (the strays at least): a message names them and what to do
    unplaced = json.loads((run / "report.json").read_text(encoding="utf-8"))["unregistered"]
    assert {f"zufall_fremd_{i}.jpg" for i in range(6)} <= set(unplaced)
    box = last_box(win, "Photos not placed")
    assert f"{len(unplaced)} of the 22 photos of '{name}' could not be placed" in box.text()
    assert "Untick the photos of other objects, or take photos in between" in box.text()
    for photo, reason in unplaced.items():
        assert f"{photo}: {reason}" in box.detailedText()
    close_boxes(win)
    assert str(folder.resolve()) in str(run)
    assert (run / "viewer.html").is_file() and (run / "sparse.ply").is_file()
    win.close()

    reopened = windows(Project.load(folder))
    assert reopened.project.image_set(name).sources == [str(unicode_photos)]
    assert reopened.windowTitle().startswith(PROJECT_DIR)
    assert len(reopened.cloud_model) == points
    assert len(reopened.project.image_files(name)) == 22
    assert run_and_wait(qtbot, reopened) == "finished"  # everything resumed
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert "sfm" not in report["stage_seconds"] and "ingest" not in report["stage_seconds"]
    assert len(reopened.cloud_model) == points


# ---------------------------------------------------------------------- the app killed mid-run

KILLED_APP = """
import os, signal, sys
from PySide6.QtWidgets import QApplication
app = QApplication([])
from gui.main_window import MainWindow
from gui.project import Project
win = MainWindow(Project.load(sys.argv[1]), gpu_probe=None)
name = win.current_set
win.project.set_excluded(name, win.project.image_files(name)[-1], True)  # inputs changed
win.start_run()
# SIGKILL (no clean-up at all) once SfM is computing
win.worker.progress.connect(
    lambda e: os.kill(os.getpid(), signal.SIGKILL) if e.stage == "sfm" else None
)
app.exec()
"""


def test_app_killed_mid_run_reopens_and_resumes(qtbot, windows, finished_project, tmp_path):
    folder = copy_project(finished_project, tmp_path)
    run = Project.load(folder).run_dir("Tisch")
    files = run_files(run)
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    script = tmp_path / "killed_app.py"
    script.write_text(KILLED_APP, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), str(folder)], env=env, capture_output=True, timeout=240
    )
    assert done.returncode == -9, done.stderr.decode(errors="replace")[-2000:]

    # the project file written when the run started is whole, and says the run was interrupted
    project = Project.load(folder)
    image_set = project.image_set("Tisch")
    assert image_set.last_status == "cancelled"
    assert image_set.last_message == "Interrupted: the app closed during the run."
    assert len(image_set.excluded) == 1
    win = windows(project)
    assert "Interrupted" in win.progress_panel.total.text()
    assert len(win.cloud_model) > 0  # the last finished result is still on show
    assert run_files(run) == files
    state = json.loads((run / "work" / "state.json").read_text(encoding="utf-8"))
    assert "ingest" in state["done"] and "sfm" not in state["done"]
    # Run resumes after the photos were read: ingest is not done again
    assert run_and_wait(qtbot, win) == "finished"
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "finished" and "ingest" not in report["stage_seconds"]
    assert "sfm" in report["stage_seconds"]
    assert report["inputs"]["photos_used"] == 15
