"""Runs of a project's image sets: starting, live snapshots, cancelling and finishing.

:class:`RunController` holds all state of the run in progress (which set, its worker, how it
ended, the live preview's bookkeeping) and updates the models the window shows (the cloud, the
result, the progress); everything that is the window's own (its status bar, buttons, the 3D
view's framing) it asks for through signals. :class:`gui.main_window.MainWindow` keeps the
layout and connects the two.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, Signal

from engine.config import PipelineConfig
from engine.errors import OutputError
from engine.types import Mesh, PointCloud
from gui.errors import ErrorSink
from gui.models import CloudModel, ProgressModel
from gui.project import Project
from gui.results import ResultModel
from gui.workers import RunWorker

#: Seconds to wait for a cancelled run to stop when the window closes.
CLOSE_WAIT_S = 120.0
#: At most this many files or photos are named in a message (the rest in its details).
MAX_LISTED = 10
#: From this share of a run's photos unplaced, a message names them (fewer are only badged).
UNPLACED_WARNING = 0.25


class RunController(QObject):
    """Starts, follows, cancels and finishes the runs of a project's image sets.

    Parameters
    ----------
    project
        Returns the window's project now (the window may open another one between runs).
    config_for
        ``config_for(set_name) -> PipelineConfig``: the settings a run of the set gets.
    cloud_model, result_model, progress_model
        The models the window's widgets show; the run fills them.
    errors
        The application's error sink (failures and warnings of runs go there).
    parent
        Qt parent.

    Attributes
    ----------
    worker
        The run in progress (None between runs).
    snapshot_counts
        Live snapshots received in the current run, by kind (``sparse``, ``dense-partial`` ...).

    Signals
    -------
    started(str)
        A run of the named set was started (the window selects the set).
    running_changed(bool)
        A run began (True) or its thread ended (False).
    status(str)
        A line for the window's status bar.
    panel_status(str)
        A line for the progress panel.
    log_line(str, str)
        ``(level, text)`` for the log panel.
    mesh(object)
        The run's mesh (:class:`engine.types.Mesh`) to show.
    refit()
        The live cloud moved to a new frame: the view should fit it again.
    shown()
        Something is on show (the window hides its hint).
    mesh_loaded()
        A set's run folder put a mesh on show (:meth:`show_run_folder`): the view should show
        it.
    save_requested()
        The project's state changed (a set's last status): a saved project saves it.
    ended(str)
        The run ended: ``finished``, ``failed`` or ``cancelled``.
    """

    started = Signal(str)
    running_changed = Signal(bool)
    status = Signal(str)
    panel_status = Signal(str)
    log_line = Signal(str, str)
    mesh = Signal(object)
    refit = Signal()
    shown = Signal()
    save_requested = Signal()
    mesh_loaded = Signal()
    ended = Signal(str)

    def __init__(
        self,
        project: Callable[[], Project],
        config_for: Callable[[str], PipelineConfig],
        cloud_model: CloudModel,
        result_model: ResultModel,
        progress_model: ProgressModel,
        errors: ErrorSink,
        *,
        current_set: Callable[[], str | None],
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.project = project
        self.config_for = config_for
        self.cloud_model = cloud_model
        self.result_model = result_model
        self.progress_model = progress_model
        self.errors = errors
        self.current_set = current_set
        self.worker: RunWorker | None = None
        self.snapshot_counts: Counter[str] = Counter()
        self.run_set: str | None = None
        """The set being reconstructed (None between runs)."""
        self._outcome = ""
        self._partial_kind: str | None = None
        self._sparse_cameras = 0

    @property
    def running(self) -> bool:
        """Whether a run is going (its worker not yet ended)."""
        return self.worker is not None

    # ------------------------------------------------------------------ starting

    def start(self, name: str | None) -> bool:
        """Reconstruct the set ``name`` in a worker thread; True if started.

        A set run before resumes from its last finished stage (the engine skips stages done
        with the same photos and settings).
        """
        if self.worker is not None:
            self.status.emit("A run is already going.")
            return False
        if name is None:
            self.errors.report(
                "Nothing to reconstruct",
                "Add photos first: drop a folder of photos on the window, or use File ▸ Add "
                "folder….",
            )
            return False
        project = self.project()
        inputs = project.inputs_for_run(name)
        if not inputs:
            missing = [s for s in project.image_set(name).sources if not Path(s).exists()]
            if missing:
                shown = ", ".join(f"'{m}'" for m in missing[:3])
                message = (
                    f"The photos of the image set '{name}' are not where they were: {shown} "
                    "no longer exist(s) (moved, renamed or on a drive not connected). Connect "
                    "the drive, or add the photos again from their new place."
                )
            else:
                message = (
                    f"The image set '{name}' has no photos to use: add photos, or tick the "
                    "ones left out."
                )
            self.errors.report("Nothing to reconstruct", message)
            return False
        try:
            config = self.config_for(name)
        except OutputError as exc:
            self.errors.report("Cannot prepare the run", str(exc))
            return False
        run_dir = project.run_dir(name)
        worker = RunWorker(inputs, run_dir, config, parent=self)
        worker.progress.connect(self._on_progress)
        worker.snapshot.connect(self._on_snapshot)
        worker.mesh.connect(self.mesh)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        worker.done.connect(self._on_done)
        self.worker = worker
        self.run_set = name
        self._outcome = ""
        self._partial_kind = None
        self._sparse_cameras = 0
        self.snapshot_counts = Counter()
        self.started.emit(name)
        self.cloud_model.clear()
        self.result_model.clear()
        self.progress_model.start()
        self.panel_status.emit("Running…")
        self.log_line.emit("INFO", f"— Run of '{name}' ({len(inputs)} photos) into {run_dir}")
        project.update_set(name, last_status="running", last_message="")
        self.save_requested.emit()
        self.running_changed.emit(True)
        worker.start()
        self.status.emit(f"Reconstructing '{name}'…")
        return True

    def cancel(self) -> bool:
        """Ask the run to stop (returns at once; the run ends at its next check).

        Returns
        -------
        bool
            Whether there was a run to cancel.
        """
        if self.worker is None:
            return False
        self.worker.cancel()
        self.panel_status.emit("Cancelling…")
        self.status.emit("Cancelling…")
        return True

    def wait(self, timeout_s: float = CLOSE_WAIT_S) -> bool:
        """Process events until the run's thread has ended (or ``timeout_s``); True if ended."""
        worker = self.worker
        deadline = time.monotonic() + timeout_s
        while worker is not None and time.monotonic() < deadline:
            ended = worker.wait(50)
            QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
            if ended and not worker.is_running():
                break
        if worker is not None and worker.is_running():
            return False
        # 'done' may still be queued: deliver it so the window sees the run end.
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        return True

    # ------------------------------------------------------------------ during the run

    def stop_for_close(self, timeout_s: float = CLOSE_WAIT_S) -> bool:
        """The window closes and the run was cancelled: wait for it; False (reported) if late."""
        self.status.emit("Stopping the run before closing…")
        if self.wait(timeout_s):
            return True
        self.errors.report(
            "The run is still stopping",
            "The reconstruction did not stop in time. Wait a moment and close again.",
        )
        return False

    def _on_progress(self, event) -> None:  # noqa: ANN001 - engine.progress.ProgressEvent
        if event.stage == "pipeline":
            self.progress_model.update(event.message, 0, 0, "starting")
        else:
            self.progress_model.update(event.stage, event.current, event.total, event.message)

    def _on_snapshot(self, cloud: PointCloud, cameras, kind: str) -> None:  # noqa: ANN001
        self.snapshot_counts[kind] += 1
        refit = False
        if kind == "sparse":
            n_cameras = len(cameras or {})
            # Fewer cameras than the last snapshot: a new SfM attempt, in a new coordinate
            # frame, so the view's orbit no longer points at the model.
            refit = n_cameras < self._sparse_cameras
            self._sparse_cameras = n_cameras
            self.cloud_model.set_cloud(cloud, cameras, "sparse")
            self._partial_kind = None
        else:
            if self._partial_kind != kind:
                # First partial of a stage: its points replace the previous stage's cloud.
                self.cloud_model.set_cloud(PointCloud.empty(), cameras, kind)
                refit = kind == "dense-partial"  # the final frame: fit the view to it once
                self._partial_kind = kind
            self.cloud_model.add_partial(cloud)
        if refit:
            self.refit.emit()
        self.shown.emit()

    # ------------------------------------------------------------------ the end

    def _on_finished(self, result) -> None:  # noqa: ANN001 - engine.pipeline.RunResult
        self._outcome = "finished"
        sparse = result.sparse
        cameras = dict(sparse.cameras) if sparse is not None else None
        if result.dense is not None and len(result.dense):
            cloud, kind = result.dense, "dense"
        elif sparse is not None:
            cloud, kind = sparse.points, "sparse"
        else:
            cloud, kind = PointCloud.empty(), "none"
        self.cloud_model.set_cloud(cloud, cameras, kind)
        mesh: Mesh | None = getattr(result, "mesh", None)
        if mesh is not None:
            self.mesh.emit(mesh)
        name = self.run_set
        project = self.project()
        report_data = project.last_report(name) if name and project.has_set(name) else None
        self.result_model.set_report(report_data)
        self._log_advice()
        report = result.report
        used = len(result.ingest.images)
        placed = len(report.registered)
        message = f"{placed} of {used} photos placed, {len(cloud):,} {kind} points"
        if report.skipped:
            message += f", {len(report.skipped)} file(s) skipped"
        self._end("finished", message)
        self.status.emit(f"Finished: {message}.")
        self._warn_unused_model(name, report)
        self._warn_unplaced(name, report, used)

    def _on_failed(self, message: str, details: str) -> None:
        self._outcome = "failed"
        name = self.run_set
        self._end("failed", message)
        context = ""
        if name is not None and self.project().has_set(name):
            # The live view was cleared for the run: show again what the run folder holds.
            kept = name == self.current_set() and self.show_run_folder(name)
            context = "\n\n" + self.set_summary(name)
            if kept:
                context += " The results already in its run folder are kept and shown."
        self.status.emit("The run failed: see the message.")
        self.errors.report("Reconstruction failed", message + context, details)

    def show_run_folder(self, name: str) -> bool:
        """Put the cloud, cameras, report and mesh of the set's run folder on show.

        Returns
        -------
        bool
            Whether there was a cloud or a mesh to show.
        """
        project = self.project()
        cloud, cameras, kind, report = project.last_result(name)
        if cloud is not None:
            self.cloud_model.set_cloud(cloud, cameras, kind or "cloud")
        else:
            self.cloud_model.set_cloud(PointCloud.empty(), cameras, "none")
        self.result_model.set_report(report)
        mesh = project.last_mesh(name)
        self.result_model.set_mesh(mesh)
        if mesh is not None:
            self.mesh_loaded.emit()
        return (cloud is not None and len(cloud) > 0) or mesh is not None

    def show_last_result(self, name: str) -> None:
        """Show what the set's last run left in its run folder, and how it ended (no run)."""
        self.show_run_folder(name)
        image_set = self.project().image_set(name)
        self.progress_model.reset()
        status = ""
        if image_set.last_status != "new":
            status = f"Last run {image_set.last_status}"
            if image_set.last_message:
                status += f": {image_set.last_message}"
        self.panel_status.emit(status)

    def set_summary(self, name: str) -> str:
        """'Image set 'X': 12 photos from 'folder'.' — which photos a message is about."""
        image_set = self.project().image_set(name)
        n = len(self.project().inputs_for_run(name))
        sources = [f"'{s}'" for s in image_set.sources[:2]]
        if len(image_set.sources) > 2:
            sources.append(f"{len(image_set.sources) - 2} more")
        where = f" from {', '.join(sources)}" if sources else ""
        return f"Image set '{name}': {n} photo{'' if n == 1 else 's'}{where}."

    def _warn_unplaced(self, name: str | None, report, used: int) -> None:  # noqa: ANN001
        """Name the photos SfM could not place when they are many (another object, no overlap).

        A few unplaced photos are usual and only badged; from :data:`UNPLACED_WARNING` of the
        photos up, the run probably mixes products or has gaps, and a message says so.
        """
        unplaced = dict(getattr(report, "unregistered", {}) or {})
        if name is None or not unplaced or len(unplaced) < UNPLACED_WARNING * max(used, 1):
            return
        names = sorted(unplaced)
        lines = [f"• {n} — {unplaced[n]}" for n in names[:MAX_LISTED]]
        if len(names) > MAX_LISTED:
            lines.append(f"• … and {len(names) - MAX_LISTED} more (see the details).")
        self.errors.warn(
            "Photos not placed",
            f"{len(unplaced)} of the {used} photos of '{name}' could not be placed in the model:"
            "\n\n" + "\n".join(lines) + "\n\nPhotos of another object, or photos that do not "
            "overlap the others, cannot be placed. Untick the photos of other objects, or take "
            "photos in between (about 70% overlap with their neighbours) and run again; the "
            "model of the placed photos is kept until then.",
            "\n".join(f"{n}: {unplaced[n]}" for n in names),
        )

    def _warn_unused_model(self, name: str | None, report) -> None:  # noqa: ANN001 - RunReport
        """Say so when the depth network the user chose could not be used (the run went on)."""
        worker = self.worker
        if name is None or worker is None or not self.project().has_set(name):
            return
        chosen = self.project().image_set(name).depth_model
        used = getattr(report, "model", {}) or {}
        status = used.get("depth_prior") if isinstance(used, dict) else None
        config = worker.config
        if not chosen or not config.depth_prior.enabled or config.stop_after != "dense":
            return  # no network asked for, or a preset that never uses one
        if isinstance(status, str) and status.startswith("not used"):
            reason = status.removeprefix("not used:").strip()
            self.errors.warn(
                "Depth network not used",
                f"The depth network chosen for '{name}' ({chosen}) could not be used: {reason}"
                "\n\nThe model was built without it, so plain or shiny surfaces may have holes. "
                "Choose a folder holding a complete Depth-Anything-V2 model (config.json and "
                "model.safetensors) in the settings, or switch the depth network off.",
            )

    def _on_cancelled(self) -> None:
        self._outcome = "cancelled"
        self._end("cancelled", "Cancelled — run again to resume")
        self.status.emit("Cancelled — run again to resume.")

    def _end(self, status: str, message: str) -> None:
        self.progress_model.finish()
        self.panel_status.emit(message)
        name = self.run_set
        project = self.project()
        if name is not None and project.has_set(name):
            project.update_set(name, last_status=status, last_message=message)
        self.save_requested.emit()

    def _on_done(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.deleteLater()
        self.running_changed.emit(False)
        outcome = self._outcome or "cancelled"
        self.run_set = None
        self.ended.emit(outcome)

    def _log_advice(self) -> None:
        coverage = self.result_model.coverage
        if coverage is None:
            return
        logged = {entry["message"] for entry in coverage.preflight}  # the run logged these
        for line in coverage.advice:
            if line not in logged:
                self.log_line.emit("WARNING", f"Advice: {line}")
