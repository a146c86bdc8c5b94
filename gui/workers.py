"""The only place engine calls cross into threads.

:class:`RunWorker` runs :func:`engine.pipeline.reconstruct` in a :class:`QThread` and turns its
progress callback into Qt signals, queued to the GUI thread. Partial results are throttled in
the worker thread (superqt ``qthrottled`` spirit): at most one SfM snapshot per
:data:`SFM_SNAPSHOT_INTERVAL` seconds, and the partial clouds of dense and fuse batched into at
most one signal per :data:`PARTIAL_INTERVAL` seconds, so the GUI is never flooded. The mesh
stage's :class:`~engine.types.Mesh` (one per run) goes straight through.

:class:`ThumbnailLoader` decodes thumbnails on a private thread pool and grades them (``ok``,
``blurry``, ``unreadable``); a newer request drops the results of older ones (request id, as
napari's slice requests).

Nothing here blocks the GUI thread: the only waits are in :meth:`RunWorker.wait` and
:meth:`ThumbnailLoader.wait`, for window close and tests.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage

import engine.pipeline
from engine.config import PipelineConfig
from engine.errors import VitrineError
from engine.progress import Cancelled, CancelToken, ProgressEvent
from engine.types import Mesh, PointCloud, SparseModel

logger = logging.getLogger(__name__)

#: Least seconds between two SfM snapshots sent to the GUI.
SFM_SNAPSHOT_INTERVAL = 0.25
#: Least seconds between two batches of dense / fuse partial clouds (about 5 per second).
PARTIAL_INTERVAL = 0.2
#: Longest side of the thumbnails :class:`ThumbnailLoader` makes.
THUMBNAIL_SIZE = 256


engine.pipeline.preload()


def concat_clouds(clouds: Sequence[PointCloud]) -> PointCloud:
    """One cloud holding all points of ``clouds`` (normals kept only when all have them)."""
    clouds = [c for c in clouds if len(c)]
    if not clouds:
        return PointCloud.empty()
    if len(clouds) == 1:
        return clouds[0]
    normals = None
    if all(c.normals is not None for c in clouds):
        normals = np.concatenate([c.normals for c in clouds]).astype(np.float32, copy=False)
    return PointCloud(
        np.concatenate([c.xyz for c in clouds]).astype(np.float32, copy=False),
        np.concatenate([c.rgb for c in clouds]).astype(np.uint8, copy=False),
        normals,
    )


def _lower_thread_priority() -> None:
    """Give the calling (compute) thread a lower CPU priority than the GUI thread.

    On a busy machine the run's threads otherwise starve the GUI thread and the window
    stutters; on Linux a thread's nice value is per thread. Elsewhere this does nothing.
    """
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:  # not permitted: keep the default priority
            pass


class _Throttle:
    """Turns engine progress events into throttled emissions (runs in the worker thread)."""

    def __init__(  # noqa: ANN001
        self, emit_progress, emit_snapshot, clock=time.monotonic, emit_mesh=None
    ) -> None:
        self._emit_progress = emit_progress
        self._emit_snapshot = emit_snapshot
        self._emit_mesh = emit_mesh
        self._clock = clock
        self._stage: str | None = None
        self._pending_sfm: SparseModel | None = None
        self._last_sfm_time = -1e9
        self._parts: list[PointCloud] = []
        self._parts_kind = ""
        self._last_parts_time = -1e9

    def __call__(self, event: ProgressEvent) -> None:
        now = self._clock()
        stage = event.stage if event.stage != "pipeline" else self._stage
        if event.stage == "pipeline" or stage != self._stage:
            # A new stage: everything held back from the previous one goes first.
            self.flush()
        partial = event.partial
        if isinstance(partial, SparseModel):
            self._pending_sfm = partial
            if now - self._last_sfm_time >= SFM_SNAPSHOT_INTERVAL or event.message == "resumed":
                self._flush_sfm(now)
        elif isinstance(partial, PointCloud):
            kind = "dense-partial" if event.stage == "dense" else "fuse-partial"
            if self._parts and kind != self._parts_kind:
                self._flush_parts(now)
            self._parts.append(partial)
            self._parts_kind = kind
            if now - self._last_parts_time >= PARTIAL_INTERVAL:
                self._flush_parts(now)
        elif isinstance(partial, Mesh):
            if self._emit_mesh is not None:
                self._emit_mesh(partial)
        elif event.stage in ("dense", "fuse") and self._parts:
            self._flush_parts(now)  # fuse's last event (partial None): the views are all in
        if event.stage != "pipeline":
            self._stage = event.stage
        # Progress events are small and come at the pace of real work: all are sent, so the
        # message shown is never one that a held-back event has overtaken.
        self._emit_progress(
            dataclasses.replace(event, partial=None) if partial is not None else event
        )

    def flush(self) -> None:
        """Send everything held back (before a new stage and at the end of the run)."""
        now = self._clock()
        if self._pending_sfm is not None:
            self._flush_sfm(now)
        if self._parts:
            self._flush_parts(now)

    def _flush_sfm(self, now: float) -> None:
        model, self._pending_sfm = self._pending_sfm, None
        if model is None:
            return
        self._last_sfm_time = now
        self._emit_snapshot(model.points, dict(model.cameras), "sparse")

    def _flush_parts(self, now: float) -> None:
        parts, self._parts = self._parts, []
        self._last_parts_time = now
        self._emit_snapshot(concat_clouds(parts), None, self._parts_kind)


_heap_lock = threading.Lock()
_runs_going = 0


def _freeze_heap() -> None:
    """Keep the garbage collector's full passes off the app's long-lived objects during runs.

    Why: a full pass over the app's heap (torch, Qt, plotly: several hundred thousand objects)
    holds the GIL for 0.1-0.3 s, and it often falls in the run's thread, freezing the window.
    While a run goes, the objects that existed when it started sit in the permanent generation
    (:func:`gc.freeze`); :func:`_thaw_heap` puts them back when the last run ends, so nothing
    is leaked. Nothing else in the app may call :func:`gc.freeze`.
    """
    global _runs_going
    with _heap_lock:
        if _runs_going == 0:
            gc.freeze()
        _runs_going += 1


def _thaw_heap() -> None:
    global _runs_going
    with _heap_lock:
        _runs_going = max(0, _runs_going - 1)
        if _runs_going == 0:
            gc.unfreeze()


class _Runner(QObject):
    """Lives in the worker thread; runs the pipeline once."""

    progress = Signal(object)
    snapshot = Signal(object, object, str)
    mesh = Signal(object)
    finished = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()

    def __init__(
        self, inputs: list[Path], out_dir: Path, config: PipelineConfig, token: CancelToken
    ) -> None:
        super().__init__()
        self.inputs = inputs
        self.out_dir = out_dir
        self.config = config
        self.token = token

    @Slot()
    def run(self) -> None:
        _lower_thread_priority()
        throttle = _Throttle(self.progress.emit, self.snapshot.emit, emit_mesh=self.mesh.emit)
        try:
            try:
                result = engine.pipeline.reconstruct(
                    self.inputs, self.out_dir, self.config, progress=throttle, cancel=self.token
                )
            finally:
                throttle.flush()
        except Cancelled:
            self.cancelled.emit()
        except VitrineError as exc:
            self.failed.emit(str(exc), "")
        except Exception as exc:  # noqa: BLE001 - shown to the user with the traceback
            logger.exception("Run failed with an internal error")
            self.failed.emit(f"Internal error: {type(exc).__name__}: {exc}", traceback.format_exc())
        else:
            self.finished.emit(result)
        finally:
            QThread.currentThread().quit()


class RunWorker(QObject):
    """One reconstruction run in a worker thread.

    Parameters
    ----------
    inputs
        Photo files and/or folders.
    out_dir
        The run folder.
    config
        The run's settings.
    parent
        Qt parent.

    Signals
    -------
    progress(object)
        A :class:`~engine.progress.ProgressEvent` without its partial result.
    snapshot(object, object, str)
        ``(PointCloud, cameras dict or None, kind)``; kind ``"sparse"`` (a whole SfM snapshot
        with its cameras: replaces what is shown), ``"dense-partial"`` or ``"fuse-partial"``
        (points of the views just computed: add to what is shown).
    mesh(object)
        The :class:`~engine.types.Mesh` the mesh stage built (reconstruction coordinates).
    finished(object)
        The :class:`~engine.pipeline.RunResult` of a finished run.
    failed(str, str)
        ``(message, details)``: a readable message; details hold the traceback of an
        internal error (empty for the engine's own errors).
    cancelled()
        The run stopped on :meth:`cancel` (report.json says so; the next run resumes).
    done()
        Always, last, once the thread has ended.
    """

    progress = Signal(object)
    snapshot = Signal(object, object, str)
    mesh = Signal(object)
    finished = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    done = Signal()

    def __init__(
        self,
        inputs: Sequence[Path | str],
        out_dir: Path | str,
        config: PipelineConfig,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.inputs = [Path(p) for p in inputs]
        self.out_dir = Path(out_dir)
        self.config = config
        self._thread: QThread | None = None
        self._runner: _Runner | None = None
        self._token: CancelToken | None = None
        self._running = False

    def start(self) -> None:
        """Start the run in a new thread (returns at once).

        Raises
        ------
        RuntimeError
            When this worker's run is still going.
        """
        if self._running:
            raise RuntimeError("This run is already going.")
        self._token = CancelToken()
        thread = QThread()
        thread.setObjectName("vitrine-run")
        runner = _Runner(self.inputs, self.out_dir, self.config, self._token)
        runner.moveToThread(thread)
        # Signal to signal: queued to this object's (the GUI) thread.
        runner.progress.connect(self.progress)
        runner.snapshot.connect(self.snapshot)
        runner.mesh.connect(self.mesh)
        runner.finished.connect(self.finished)
        runner.failed.connect(self.failed)
        runner.cancelled.connect(self.cancelled)
        thread.started.connect(runner.run)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._runner = thread, runner
        self._running = True
        _freeze_heap()
        thread.start()

    def cancel(self) -> None:
        """Ask the run to stop at the engine's next check (returns at once; thread-safe)."""
        if self._token is not None:
            self._token.cancel()

    def is_running(self) -> bool:
        """Whether the run's thread is still going (True until just before ``done``)."""
        return self._running

    def wait(self, ms: int = 30_000) -> bool:
        """Block until the run's thread ended or ``ms`` passed; True when it ended.

        For window close and tests only: it blocks the calling (GUI) thread. ``done`` is
        emitted when the event loop next runs.
        """
        thread = self._thread
        if thread is None:
            return True
        return bool(thread.wait(ms))

    @Slot()
    def _on_thread_finished(self) -> None:
        thread, runner = self._thread, self._runner
        if thread is not None:
            thread.wait()  # it is ending now: the join is immediate
        # Dropping the last references deletes both (neither has a Qt parent).
        del thread, runner
        self._thread, self._runner = None, None
        self._running = False
        _thaw_heap()
        self.done.emit()


# ---------------------------------------------------------------------------- thumbnails


class _ThumbnailJob(QRunnable):
    """Decodes one photo in a pool thread and hands the result to the loader."""

    def __init__(self, loader: ThumbnailLoader, request: int, path: str, blur_warning: float):
        super().__init__()
        self.loader = loader
        self.request = request
        self.path = path
        self.blur_warning = blur_warning
        self.setAutoDelete(True)

    def run(self) -> None:
        if not self.loader._is_current(self.request):
            return
        image, status, reason = make_thumbnail(self.path, self.blur_warning)
        if self.loader._is_current(self.request):
            try:
                # Emitted from the pool thread: queued to the loader's (GUI) thread.
                self.loader._result.emit(self.request, self.path, image, status, reason)
            except RuntimeError:
                pass  # the loader was deleted meanwhile (window closing)


def default_blur_warning() -> float:
    """Sharpness under which a thumbnail is badged ``blurry`` (the pre-flight's absolute floor)."""
    return float(engine.pipeline.BLUR_FLOOR)


def make_thumbnail(
    path: str | Path, blur_warning: float | None = None, size: int = THUMBNAIL_SIZE
) -> tuple[QImage, str, str]:
    """Decode and grade one photo (any thread: it makes a QImage, never a QPixmap).

    Sharpness is measured as ingest measures it (:func:`engine.io.sharpness` on an image of
    at most its reference size). A photo is ``blurry`` here under the pre-flight's absolute
    floor (``engine.stages.coverage.BLUR_FLOOR``: almost no detail at all); the run's pre-flight
    also compares each photo with the rest of its set, and its verdict replaces this badge.

    Returns
    -------
    tuple
        ``(image, status, reason)``: status ``ok``, ``blurry`` or ``unreadable``; the image
        is null when unreadable.
    """
    from engine.io import ImageReadError, fit_size, read_image, resize_area, sharpness
    from engine.io.quality import SHARPNESS_SIZE

    if blur_warning is None:
        blur_warning = default_blur_warning()
    try:
        rgb, _info = read_image(path, max_size=max(size, SHARPNESS_SIZE))
    except ImageReadError as exc:
        return QImage(), "unreadable", exc.reason
    except MemoryError:
        return QImage(), "unreadable", "too large to decode in the memory available"
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the others
        logger.warning("Cannot make a thumbnail of %s: %s", path, exc)
        return QImage(), "unreadable", f"could not be read ({type(exc).__name__}: {exc})"
    sharp = sharpness(rgb)
    height, width = rgb.shape[:2]
    target = fit_size(width, height, size)
    if target != (width, height):
        rgb = resize_area(rgb, *target)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    # copy(): the QImage must own its pixels, not borrow the numpy buffer.
    image = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    if sharp < blur_warning:
        reason = f"probably blurry (sharpness {sharp:.0f}, under {blur_warning:g})"
        return image, "blurry", reason
    return image, "ok", ""


class ThumbnailLoader(QObject):
    """Loads and grades thumbnails off the GUI thread.

    Parameters
    ----------
    max_threads
        Pool threads decoding at once (the run needs the other cores).
    blur_warning
        Sharpness under which a photo is ``blurry``; default the pre-flight's absolute floor.
    parent
        Qt parent.

    Signals
    -------
    loaded(str, QImage, str, str)
        ``(path, image, status, reason)`` per photo of the current request; status ``ok``,
        ``blurry`` or ``unreadable`` (then the image is null); results of older requests
        are dropped.
    request_done(int)
        Every photo of that request was reported.
    """

    loaded = Signal(str, QImage, str, str)
    request_done = Signal(int)
    _result = Signal(int, str, QImage, str, str)

    def __init__(
        self,
        max_threads: int = 1,
        blur_warning: float | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.blur_warning = default_blur_warning() if blur_warning is None else blur_warning
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, max_threads))
        self._lock = threading.Lock()
        self._request = 0
        self._remaining = 0
        self._result.connect(self._on_result)

    @property
    def request_id(self) -> int:
        """Id of the current request (0 before the first)."""
        with self._lock:
            return self._request

    def load(self, paths: Sequence[str | Path]) -> int:
        """Start loading ``paths``; earlier requests are dropped. Returns the request id."""
        self._pool.clear()  # queued jobs of older requests never start
        with self._lock:
            self._request += 1
            request = self._request
        self._remaining = len(paths)
        for path in paths:
            self._pool.start(_ThumbnailJob(self, request, str(path), self.blur_warning))
        if not paths:
            self.request_done.emit(request)
        return request

    def cancel(self) -> None:
        """Drop the current request: nothing more is reported for it."""
        self._pool.clear()
        with self._lock:
            self._request += 1
        self._remaining = 0

    def wait(self, ms: int = 30_000) -> bool:
        """Block until the pool's jobs ended (window close, tests); True when they did."""
        return bool(self._pool.waitForDone(ms))

    def _is_current(self, request: int) -> bool:
        with self._lock:
            return request == self._request

    @Slot(int, str, QImage, str, str)
    def _on_result(self, request: int, path: str, image: QImage, status: str, reason: str) -> None:
        if not self._is_current(request):
            return  # stale: the user moved on
        self.loaded.emit(path, image, status, reason)
        self._remaining -= 1
        if self._remaining == 0:
            self.request_done.emit(request)


class SampleWriter(QObject):
    """Writes the sample shoot on a background thread (rendering takes about half a minute).

    Signals
    -------
    progress(int, int)
        Views rendered, views in all.
    finished(str, str)
        ``(photo folder, error message)``; the message is empty on success.
    """

    progress = Signal(int, int)
    finished = Signal(str, str)

    def __init__(self, folder: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.folder = folder
        self.token = CancelToken()
        self.thread = threading.Thread(target=self._work, name="vitrine-sample", daemon=True)

    def start(self) -> None:
        """Start writing (returns at once)."""
        self.thread.start()

    def cancel(self) -> None:
        """Stop after the view being rendered."""
        self.token.cancel()

    def _work(self) -> None:
        from engine.synthetic import write_sample

        try:
            photos = write_sample(
                self.folder,
                kind="bottle",
                progress=lambda e: self.progress.emit(e.current, e.total),
                cancel=self.token,
            )
        except Cancelled:
            self.finished.emit("", "cancelled")
        except Exception as exc:  # noqa: BLE001 - shown to the user
            logger.exception("Could not write the sample")
            self.finished.emit("", f"{type(exc).__name__}: {exc}")
        else:
            self.finished.emit(str(photos), "")
