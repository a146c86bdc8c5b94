"""Chains the stages into a run folder and skips stages already done (resume).

Only orchestration lives here: the order of the steps (:mod:`engine.steps`, each a stage with
its resume check and report section), the run's log file, its status and its report.json. The
run folder's layout, resume state and staged writes are :mod:`engine.run_folder`'s; a failed or
cancelled run leaves a folder that holds a finished run as it was (its report goes to
``report-last-attempt.json``), and the next run resumes from the last finished stage.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import engine
from engine import run_folder as rf
from engine import steps
from engine.config import PipelineConfig
from engine.device import resolve_device
from engine.errors import (
    InputError,
    OutputError,
    VitrineError,
    disk_full_error,
    is_disk_full,
)
from engine.export.report import write_json_atomic, write_report
from engine.progress import Cancelled, CancelToken, ProgressCallback, no_progress
from engine.stages import coverage as coverage_stage
from engine.types import (
    IngestResult,
    Mesh,
    PointCloud,
    RunReport,
    SparseModel,
)

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclasses.dataclass
class RunResult:
    """What a finished run returns to its caller (CLI, GUI worker, tests)."""

    out_dir: Path
    report: RunReport
    ingest: IngestResult
    sparse: SparseModel | None
    dense: PointCloud | None = None
    """The fused dense cloud (or the single-photo relief); None when the run stopped at sparse."""
    mesh: Mesh | None = None
    """The trimmed, decimated mesh in reconstruction coordinates; None when none was built."""
    scale: Any = None
    """The scale stage's :class:`engine.stages.scale.ScaleResult` (None when SfM did not run)."""
    coverage: Any = None
    """The coverage stage's :class:`engine.stages.coverage.CoverageResult` (or None)."""


def _output_error(exc: BaseException, out_dir: Path) -> OutputError | None:
    """A readable error for an OSError that escaped a stage while writing the run folder."""
    if is_disk_full(exc):
        return disk_full_error(out_dir)
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = Path(exc.filename).name if exc.filename else out_dir.name
        return OutputError(
            f"Cannot write {where} in the output folder '{out_dir}' ({exc.strerror or exc}). "
            "Make the folder writable or choose another one, then run again: finished stages "
            "are kept."
        )
    return None


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".vitrine-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"Cannot write to the output folder '{out_dir}' ({exc.strerror or exc}). "
            "Choose a folder you can write to, with free disk space."
        ) from exc


# --------------------------------------------------------------- the run

#: Sharpness under which a photo is blurry whatever the rest of its set (the pre-flight's floor).
BLUR_FLOOR = coverage_stage.BLUR_FLOOR


def preload() -> None:
    """Import what a run would import lazily, on the calling thread.

    Torch, scipy, plotly's figure machinery and Pillow's plugins. Why: importing a module holds
    the GIL for its whole initialisation (torch's takes about a second), so imports done in a
    run's thread would freeze a window mid-run; the GUI calls this once at start-up.
    """
    import plotly.graph_objects as go
    import plotly.io as pio
    import scipy.spatial  # noqa: F401 - fusion's KD-tree
    from PIL import Image

    import engine.stages.dense  # noqa: F401 - torch
    import engine.stages.fuse  # noqa: F401

    Image.init()
    np.random.default_rng(0)
    pio.to_html(go.Figure(go.Scatter3d(x=[0], y=[0], z=[0])), include_plotlyjs=False)


class Pipeline:
    """One reconstruction run into one run folder.

    Parameters
    ----------
    inputs
        Photo files and/or folders.
    out_dir
        Run folder (created if needed).
    config
        Resolved settings; saved as config.json.
    progress
        Callback receiving every :class:`ProgressEvent` (stage ``pipeline`` announces stages).
    cancel
        Token to stop the run between steps; a cancelled run raises :class:`Cancelled`.
    """

    STAGES = steps.STAGES

    def __init__(
        self,
        inputs: Sequence[Path | str],
        out_dir: Path | str,
        config: PipelineConfig,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> None:
        self.inputs = [Path(p) for p in inputs]
        self.out_dir = Path(out_dir)
        self.config = config
        self.progress = progress
        self.cancel = cancel or CancelToken()

    def fingerprint(self) -> str:
        """Fingerprint of the photos, settings and engine (:func:`.run_folder.run_fingerprint`)."""
        return rf.run_fingerprint(self.inputs, self.config)

    def up_to_date(self) -> bool:
        """Whether the run folder already holds a finished run of these photos and settings.

        See :func:`engine.run_folder.up_to_date`.
        """
        return rf.up_to_date(self.out_dir, self.inputs, self.config)

    def run(self) -> RunResult:
        """Run every stage not already done; write the run folder.

        Raises
        ------
        Cancelled
            The user cancelled (report.json says so; finished stages are kept).
        VitrineError
            Bad input, failed reconstruction or unwritable output, with a readable message.
        """
        if not self.inputs:
            raise InputError("No photos given: pass image files or folders of photos.")
        _check_writable(self.out_dir)
        handler = logging.FileHandler(self.out_dir / rf.RUN_LOG, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        engine_logger = logging.getLogger("engine")
        engine_logger.addHandler(handler)
        old_level = engine_logger.level
        if engine_logger.getEffectiveLevel() > logging.INFO:
            engine_logger.setLevel(logging.INFO)
        device = resolve_device(self.config.device)
        self.device = device
        report = RunReport(engine.__version__, self.config.preset, device)
        # A finished run already in this folder keeps its report, viewer, cloud and mesh when
        # this run fails or is cancelled before its own export.
        self._finished_before = rf.finished_before(self.out_dir)
        try:
            return self._run(report)
        except Cancelled:
            report.status = "cancelled"
            logger.info("Run cancelled; finished stages are kept and the next run resumes.")
            raise
        except VitrineError as exc:
            report.status = "failed"
            report.warnings.append(str(exc))
            logger.info("Run failed: %s", exc)  # the caller shows it; this keeps it in run.log
            raise
        except Exception as exc:
            report.status = "failed"
            error = _output_error(exc, self.out_dir)
            if error is not None:  # disk full, folder made read-only: not a bug, say what to do
                report.warnings.append(str(error))
                logger.error("Run failed: %s", error)
                raise error from exc
            report.warnings.append(f"internal error: {type(exc).__name__}: {exc}")
            logger.exception("Run failed with an internal error")
            raise
        finally:
            name = rf.REPORT
            if report.status != "finished" and self._finished_before:
                name = rf.ATTEMPT_REPORT
                logger.info(
                    "The finished run already in %s is kept; this attempt's report is %s.",
                    self.out_dir,
                    rf.ATTEMPT_REPORT,
                )
            try:
                write_report(self.out_dir / name, report, [self.out_dir, *self.inputs])
                if name == rf.REPORT:
                    (self.out_dir / rf.ATTEMPT_REPORT).unlink(missing_ok=True)
            except (OSError, OutputError) as exc:  # disk full or folder gone: keep 1st error
                logger.error("Could not write %s: %s", name, exc)
            engine_logger.removeHandler(handler)
            engine_logger.setLevel(old_level)
            handler.close()

    def _run(self, report: RunReport) -> RunResult:
        cfg = self.config
        out = self.out_dir
        if not self._finished_before:  # else written when this run finishes, with its report
            write_json_atomic(out / rf.CONFIG, cfg.to_dict())
        work = rf.work_dir(out)
        work.mkdir(exist_ok=True)
        key = {"inputs": rf.input_key(self.inputs), "engine": engine.__version__}
        state = rf.RunState(
            work / rf.STATE_FILE, {**key, "ingest": rf.fingerprint(dataclasses.asdict(cfg.ingest))}
        )
        ctx = steps.RunContext(
            self.inputs, out, cfg, self.device, report, state, self.progress, self.cancel
        )
        ingest = steps.ingest(ctx)
        if len(ingest.images) == 1:  # one usable photo is not an error: a single-photo relief
            relief = steps.single_photo(ctx, ingest)
            report.status = "finished"
            return RunResult(out, report, ingest, None, relief)

        # Stages downstream of a changed config rerun: each key folds in the upstream settings.
        ingest, masks_key = steps.masks(ctx, ingest)
        sparse = steps.sfm(ctx, ingest, masks_key)
        dense_cloud = None
        mesh = None
        if cfg.stop_after == "dense":
            dense_cloud, fuse_key = steps.dense(ctx, ingest, sparse)
            mesh = steps.mesh(ctx, ingest, sparse, dense_cloud, fuse_key)
        else:
            report.model = {"depth_prior": "not used: this preset stops after the sparse model"}

        # -- scale and dimensions, coverage: cheap, recomputed every run
        if mesh is not None and len(mesh):
            product = np.asarray(mesh.vertices, np.float64)
        elif dense_cloud is not None and len(dense_cloud):
            product = np.asarray(dense_cloud.xyz, np.float64)
        else:
            product = np.asarray(sparse.points.xyz, np.float64)
        support = (report.stages.get("mesh") or {}).get("support")
        scale = ctx.timed("scale", lambda: steps.scale(ctx, ingest, sparse, product, support))
        coverage = ctx.timed(
            "coverage", lambda: steps.coverage(ctx, ingest, sparse, product, scale)
        )
        ctx.timed(
            "export",
            lambda: steps.export(
                ctx, sparse.points, sparse.cameras, dense_cloud, mesh=mesh, scale=scale
            ),
        )
        state.finish("export", {})
        write_json_atomic(out / rf.CONFIG, cfg.to_dict())
        report.status = "finished"
        return RunResult(out, report, ingest, sparse, dense_cloud, mesh, scale, coverage)


def reconstruct(
    inputs: Sequence[Path | str],
    out_dir: Path | str,
    config: PipelineConfig,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> RunResult:
    """Run the pipeline (see :class:`Pipeline`)."""
    return Pipeline(inputs, out_dir, config, progress=progress, cancel=cancel).run()
