"""RunWorker and ThumbnailLoader with the real engine in real threads."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QTimer

from engine.types import PointCloud
from gui.project import Project
from gui.workers import RunWorker, ThumbnailLoader, _Throttle

RUN_TIMEOUT_MS = 240_000
STAGES_WITHOUT_PRIOR = [
    "ingest",
    "masks",
    "sfm",
    "dense",
    "fuse",
    "mesh",
    "scale",
    "coverage",
    "export",
]
# The pre-flight checks report progress right after ingest, without an announcement; the
# coverage map is computed in one step, without progress events of its own.
PROGRESS_ORDER = ["ingest", "preflight", "masks", "sfm", "dense", "fuse", "mesh", "scale", "export"]


class Recorder:
    """Records every signal of a RunWorker in arrival order, with times."""

    def __init__(self, worker: RunWorker) -> None:
        self.log: list[tuple] = []
        self.worker = worker
        worker.progress.connect(lambda e: self.log.append(("progress", e, time.perf_counter())))
        worker.snapshot.connect(
            lambda c, cams, kind: self.log.append(
                ("snapshot", (c, cams, kind), time.perf_counter())
            )
        )
        worker.mesh.connect(lambda m: self.log.append(("mesh", m, time.perf_counter())))
        worker.finished.connect(lambda r: self.log.append(("finished", r, time.perf_counter())))
        worker.failed.connect(lambda m, d: self.log.append(("failed", (m, d), time.perf_counter())))
        worker.cancelled.connect(lambda: self.log.append(("cancelled", None, time.perf_counter())))
        worker.done.connect(lambda: self.log.append(("done", None, time.perf_counter())))

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.log]

    def stages(self) -> list[str]:
        """Stages announced by the pipeline, in order."""
        return [e.message for k, e, _ in self.log if k == "progress" and e.stage == "pipeline"]

    def first(self, kind: str) -> tuple:
        return next(item for item in self.log if item[0] == kind)


def _run(qtbot, worker: RunWorker) -> Recorder:
    rec = Recorder(worker)
    with qtbot.waitSignal(worker.done, timeout=RUN_TIMEOUT_MS):
        worker.start()
    assert worker.wait(5000)
    assert not worker.is_running()
    return rec


def test_full_run_streams_progress_and_snapshots_while_the_gui_ticks(
    qtbot, tiny_shoot, fast_config, tmp_path
):
    project = Project(tmp_path / "proj")
    project.add_set("Box")
    project.add_paths("Box", [tiny_shoot.root / "images"])
    worker = RunWorker(project.inputs_for_run("Box"), project.run_dir("Box"), fast_config)
    rec = Recorder(worker)

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    with qtbot.waitSignal(worker.done, timeout=RUN_TIMEOUT_MS):
        worker.start()
        assert worker.is_running()
    timer.stop()
    assert worker.wait(5000)
    seconds = time.perf_counter() - t0

    kinds = rec.kinds()
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert "failed" not in kinds and "cancelled" not in kinds
    result = rec.first("finished")[1]
    assert result.report.status == "finished"
    assert result.dense is not None and len(result.dense) > 1000

    # Stage announcements in order; the depth prior is off, so absent.
    assert rec.stages() == STAGES_WITHOUT_PRIOR
    stage_order = []
    for kind, event, _ in rec.log:
        if kind == "progress" and event.stage != "pipeline" and event.stage not in stage_order:
            stage_order.append(event.stage)
    assert stage_order == PROGRESS_ORDER
    # The mesh arrived once, live, before the run finished: the result's mesh
    assert kinds.count("mesh") == 1 and kinds.index("mesh") < kinds.index("finished")
    mesh = rec.log[kinds.index("mesh")][1]
    assert mesh is result.mesh and mesh.num_triangles > 1000
    # Partial results were stripped from the progress events.
    assert all(e.partial is None for k, e, _ in rec.log if k == "progress")

    # Live snapshots of every kind arrived, all before finished.
    finished_at = kinds.index("finished")
    snaps = [(i, s) for i, (k, s, _) in enumerate(rec.log) if k == "snapshot"]
    snap_kinds = {s[2] for _, s in snaps}
    assert {"sparse", "dense-partial", "fuse-partial"} <= snap_kinds
    assert all(i < finished_at for i, _ in snaps)
    for _, (cloud, cameras, kind) in snaps:
        assert isinstance(cloud, PointCloud)
        assert (cameras is not None) == (kind == "sparse")
    sparse = [s for _, s in snaps if s[2] == "sparse"]
    assert len(sparse[-1][1]) >= 2 and len(sparse[-1][0]) > 0
    # Throttled: no more than about 5 partial batches per second of run.
    partial_count = sum(1 for _, s in snaps if s[2] != "sparse")
    assert partial_count <= 5 * seconds + 4

    # The event loop kept ticking: no gap over 200 ms while the engine worked.
    gaps = np.diff(np.asarray(ticks))
    longest = float(gaps.max())
    print(
        f"\nrun {seconds:.1f} s, {len(ticks)} ticks, longest event-loop gap "
        f"{longest * 1000:.0f} ms, {len(snaps)} snapshots ({partial_count} partial batches)"
    )
    assert longest < 0.2

    # Reopening the project shows the run's result without recomputing.
    project.save()
    cloud, cameras, kind, report = Project.load(tmp_path / "proj").last_result("Box")
    assert kind == "dense" and len(cloud) == len(result.dense)
    assert set(cameras) == set(result.sparse.cameras)
    assert report["status"] == "finished"


@pytest.mark.parametrize("stage", ["sfm", "dense"])
def test_cancel_mid_stage_then_resume(qtbot, tiny_shoot, fast_config, tmp_path, stage):
    out = tmp_path / "run"
    worker = RunWorker([tiny_shoot.root / "images"], out, fast_config)
    rec = Recorder(worker)
    asked: list[float] = []

    def on_progress(event) -> None:
        if event.stage == stage and not asked:
            asked.append(time.perf_counter())
            worker.cancel()

    worker.progress.connect(on_progress)
    with qtbot.waitSignal(worker.done, timeout=RUN_TIMEOUT_MS):
        worker.start()
    assert worker.wait(5000)
    assert asked, f"the run never reached {stage}"
    kinds = rec.kinds()
    assert "cancelled" in kinds and "finished" not in kinds and "failed" not in kinds
    assert kinds[-1] == "done"
    latency = rec.first("cancelled")[2] - asked[0]
    print(f"\ncancel mid-{stage}: cancelled {latency * 1000:.0f} ms after cancel()")
    assert latency < 2.0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "cancelled"

    # Run again into the same folder: finished stages are not redone.
    again = _run(qtbot, RunWorker([tiny_shoot.root / "images"], out, fast_config))
    assert "finished" in again.kinds()
    assert "ingest" not in again.stages()
    if stage == "dense":
        assert again.stages() == ["dense", "fuse", "mesh", "scale", "coverage", "export"]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "finished"


def test_bad_photos_fail_with_a_readable_message(qtbot, fast_config, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "front.jpg").write_bytes(b"%PDF-1.4\n% not a photo\n")
    rec = _run(qtbot, RunWorker([photos], tmp_path / "run", fast_config))
    assert rec.kinds()[-2:] == ["failed", "done"]
    message, details = rec.first("failed")[1]
    assert "front.jpg" in message and "PDF" in message
    assert details == ""  # the engine's own error: no traceback to show


def test_unwritable_run_folder_fails_naming_it(qtbot, tiny_shoot, fast_config, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the run folder should go")
    rec = _run(qtbot, RunWorker([tiny_shoot.root / "images"], blocker / "run", fast_config))
    message, _ = rec.first("failed")[1]
    assert "not-a-folder" in message and "Choose a folder" in message


def test_internal_error_carries_the_traceback(qtbot, fast_config, tmp_path, monkeypatch):
    import engine.pipeline

    def boom(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(engine.pipeline, "reconstruct", boom)
    rec = _run(qtbot, RunWorker([tmp_path], tmp_path / "run", fast_config))
    message, details = rec.first("failed")[1]
    assert message.startswith("Internal error: ZeroDivisionError")
    assert "Traceback" in details and "boom" in details


def test_throttle_batches_partials():
    from engine.progress import ProgressEvent
    from engine.types import SparseModel

    now = [0.0]
    progress, snaps = [], []
    throttle = _Throttle(
        progress.append, lambda c, cams, k: snaps.append((len(c), k)), clock=lambda: now[0]
    )
    cloud = PointCloud(np.zeros((10, 3), np.float32), np.zeros((10, 3), np.uint8))
    model = SparseModel(Path("."), {}, cloud)
    throttle(ProgressEvent("pipeline", 1, 6, "sfm"))
    for i in range(10):  # 10 snapshots within 0.1 s: one sent at once, the last one at the end
        now[0] += 0.01
        throttle(ProgressEvent("sfm", i, 10, "placing", model))
    throttle(ProgressEvent("pipeline", 2, 6, "dense"))
    assert [k for _, k in snaps] == ["sparse", "sparse"]
    for i in range(20):  # 20 views in 0.2 s: batched
        now[0] += 0.01
        throttle(ProgressEvent("dense", i + 1, 20, "view", cloud))
    throttle.flush()
    dense = [n for n, k in snaps if k == "dense-partial"]
    assert sum(dense) == 200 and len(dense) <= 3
    assert len(progress) == 32 and progress[-1].current == 20  # every event, without partial
    assert all(e.partial is None for e in progress)


def test_throttle_hands_the_mesh_over_at_once():
    from engine.progress import ProgressEvent
    from engine.types import Mesh

    progress, snaps, meshes = [], [], []
    throttle = _Throttle(
        progress.append, lambda *a: snaps.append(a), clock=lambda: 0.0, emit_mesh=meshes.append
    )
    mesh = Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]], np.int32))
    throttle(ProgressEvent("mesh", 0, 1, "surface"))
    throttle(ProgressEvent("mesh", 1, 1, "done", mesh))
    assert meshes == [mesh] and snaps == []
    assert [e.message for e in progress] == ["surface", "done"]
    assert all(e.partial is None for e in progress)


# ---------------------------------------------------------------------------- thumbnails


@pytest.fixture
def graded_photos(tmp_path):
    rng = np.random.default_rng(0)
    sharp = cv2.resize(
        (rng.random((60, 80, 3)) * 255).astype(np.uint8),
        (640, 480),
        interpolation=cv2.INTER_NEAREST,
    )
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "sharp.jpg"), sharp)
    cv2.imwrite(str(folder / "blurry.jpg"), cv2.GaussianBlur(sharp, (0, 0), 12))
    data = (folder / "sharp.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    for i in range(6):
        shutil.copy(folder / "sharp.jpg", folder / f"more{i}.jpg")
    return folder


def test_thumbnails_are_graded_off_the_gui_thread(qtbot, graded_photos):
    loader = ThumbnailLoader()
    got = {}
    loader.loaded.connect(
        lambda path, image, status, reason: got.update({Path(path).name: (image, status, reason)})
    )
    names = ["sharp.jpg", "blurry.jpg", "truncated.jpg"]
    with qtbot.waitSignal(loader.request_done, timeout=30_000) as blocker:
        request = loader.load([graded_photos / n for n in names])
    assert blocker.args == [request]
    assert sorted(got) == sorted(names)
    image, status, reason = got["sharp.jpg"]
    assert status == "ok" and reason == ""
    assert not image.isNull() and max(image.width(), image.height()) == 256
    image, status, reason = got["blurry.jpg"]
    assert status == "blurry" and "blurry" in reason and not image.isNull()
    image, status, reason = got["truncated.jpg"]
    assert status == "unreadable" and image.isNull()
    assert "damaged" in reason or "incomplete" in reason
    assert loader.wait(5000)


def test_newer_thumbnail_request_drops_stale_results(qtbot, graded_photos):
    loader = ThumbnailLoader()
    got = []
    loader.loaded.connect(lambda path, image, status, reason: got.append(Path(path).name))
    old = loader.load(sorted(graded_photos.glob("more*.jpg")))
    with qtbot.waitSignal(loader.request_done, timeout=30_000) as blocker:
        new = loader.load([graded_photos / "blurry.jpg"])
    assert new > old and blocker.args == [new]
    assert loader.wait(5000)
    qtbot.wait(50)  # let any queued stale result arrive (it must be dropped)
    assert got == ["blurry.jpg"]

    loader.load([graded_photos / "sharp.jpg"])
    loader.cancel()
    assert loader.wait(5000)
    qtbot.wait(50)
    assert got == ["blurry.jpg"]
