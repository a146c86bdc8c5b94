"""Chains the stages into a run folder and skips stages already done (resume).

The run folder contract (ARCHITECTURE.md): report.json, config.json, sparse/0, dense.ply (when
the dense stage ran), viewer.html, run.log. Intermediate results live in ``work/`` with a
``state.json`` recording which stages finished for which inputs and settings, so a crashed or
cancelled run resumes from its last finished stage.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import engine
from engine import messages
from engine.config import MIN_PHOTO_SIDE, PipelineConfig
from engine.device import resolve_device
from engine.errors import (
    InputError,
    NoProductError,
    OutputError,
    ReconstructionError,
    VitrineError,
    disk_full_error,
    is_disk_full,
)
from engine.export.plotly_html import write_viewer
from engine.export.ply import read_ply, write_ply
from engine.export.report import scrub_paths, to_jsonable, write_json_atomic, write_report
from engine.progress import Cancelled, CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.stages import ingest as ingest_stage
from engine.stages import sfm as sfm_stage
from engine.types import (
    CameraPose,
    ImageRecord,
    IngestResult,
    Mesh,
    PointCloud,
    RunReport,
    SkippedFile,
    SparseModel,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
STATE_FILE = "state.json"
#: Where a failed or cancelled run's report goes when the folder holds a finished run: the
#: finished run's report.json (and its viewer, cloud and mesh) stay as they were.
ATTEMPT_REPORT = "report-last-attempt.json"
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


def frame_report(up: np.ndarray, transform: np.ndarray) -> dict[str, Any]:
    """report.json's ``frame``: up in the sparse model's frame and the GLB's 4x4 from it."""
    from engine.export.glb import glb_from

    return {
        "up": [round(float(v), 6) for v in np.asarray(up, np.float64)],
        "glb_from_sparse": [[float(v) for v in row] for row in glb_from(transform)],
    }


def _fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _folder_listing(folder: str) -> list[Any]:
    """Relative names and content hashes of a folder's files, sub-folders included.

    A user's repainted masks: a changed stroke must redo the masks and what follows.
    """
    if not folder:
        return []
    root = Path(folder)
    listing = []
    try:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                listing.append([path.relative_to(root).as_posix(), digest])
    except OSError:
        return []
    return listing


def _finished_before(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds the report.json of a finished run."""
    try:
        saved = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and saved.get("status") == "finished"


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


class _State:
    """work/state.json: which stages finished, for which inputs and settings."""

    def __init__(self, path: Path, key: dict[str, str]) -> None:
        self.path = path
        self.key = key
        self.done: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                logger.warning("Ignoring an unreadable %s; every stage runs again.", path.name)
                saved = {}
            if saved.get("key") == key:
                self.done = saved.get("done", {})
            elif saved:
                logger.info("Inputs or settings changed since the last run: starting afresh.")

    def get(self, stage: str) -> dict[str, Any] | None:
        return self.done.get(stage)

    def finish(self, stage: str, info: dict[str, Any]) -> None:
        self.done[stage] = info
        write_json_atomic(self.path, {"key": self.key, "done": self.done})

    def forget_from(self, stage: str, order: Sequence[str]) -> None:
        for name in order[order.index(stage) :]:
            self.done.pop(name, None)


# --------------------------------------------------------------- (de)serialising stage results


def _ingest_to_json(result: IngestResult, out_dir: Path) -> dict[str, Any]:
    def rel(p: Path | None) -> str | None:
        return None if p is None else os.path.relpath(p, out_dir)

    images = []
    for rec in result.images:
        d = dataclasses.asdict(rec)
        d["source"] = str(rec.source)  # private to the run folder's work/, never exported
        d["working_path"] = rel(rec.working_path)
        d["mask_path"] = rel(rec.mask_path)
        images.append(d)
    return {
        "images": images,
        "skipped": [dataclasses.asdict(s) for s in result.skipped],
        "image_dir": rel(result.image_dir),
        "warnings": list(result.warnings),
    }


def _ingest_from_json(data: dict[str, Any], out_dir: Path) -> IngestResult:
    images = []
    for d in data["images"]:
        d = dict(d)
        d["source"] = Path(d["source"])
        d["working_path"] = out_dir / d["working_path"]
        d["mask_path"] = out_dir / d["mask_path"] if d["mask_path"] else None
        images.append(ImageRecord(**d))
    return IngestResult(
        images=tuple(images),
        skipped=tuple(SkippedFile(**s) for s in data["skipped"]),
        image_dir=out_dir / data["image_dir"],
        warnings=tuple(data.get("warnings", ())),
    )


# --------------------------------------------------------------- the run


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

    STAGES = (
        "ingest",
        "masks",
        "sfm",
        "dense",
        "depth_prior",
        "fuse",
        "mesh",
        "scale",
        "coverage",
        "export",
    )

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

    def _input_key(self) -> str:
        entries = []
        for p in self.inputs:
            try:
                st = p.stat()
                entries.append([str(p.resolve()), st.st_mtime_ns, st.st_size])
            except OSError:
                entries.append([str(p), None, None])
        return _fingerprint(entries)

    def fingerprint(self) -> str:
        """Fingerprint of this run's photos (paths, sizes, times), settings and engine version.

        Two runs with the same fingerprint compute the same thing; a batch uses it to leave
        alone a product that failed for reasons its unchanged photos would give again.
        """
        return _fingerprint([self._input_key(), self.config.to_dict(), engine.__version__])

    def up_to_date(self) -> bool:
        """Whether the run folder already holds a finished run of these photos and settings.

        True when report.json says ``finished``, every stage up to the export finished for
        these inputs with this engine version (work/state.json), and config.json equals this
        run's settings: running again would only rewrite the same files.
        """
        if not _finished_before(self.out_dir):
            return False
        try:
            state = json.loads((self.out_dir / "work" / STATE_FILE).read_text(encoding="utf-8"))
            saved = json.loads((self.out_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        key = state.get("key", {}) if isinstance(state, dict) else {}
        return (
            key.get("inputs") == self._input_key()
            and key.get("engine") == engine.__version__
            and "export" in state.get("done", {})
            and saved == self._saved_config()
        )

    def _saved_config(self) -> Any:
        """The settings as config.json holds them (local paths made relative)."""
        clean = scrub_paths(to_jsonable(self.config.to_dict()), [self.out_dir.resolve()])
        return json.loads(json.dumps(clean))

    def _timed(self, report: RunReport, stage: str, fn: Callable[[], T]) -> T:
        self.cancel.raise_if_cancelled()
        self.progress(ProgressEvent("pipeline", self.STAGES.index(stage), len(self.STAGES), stage))
        t0 = time.perf_counter()
        result = fn()
        report.stage_seconds[stage] = round(time.perf_counter() - t0, 3)
        return result

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
        handler = logging.FileHandler(self.out_dir / "run.log", encoding="utf-8")
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
        self._finished_before = _finished_before(self.out_dir)
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
            name = "report.json"
            if report.status != "finished" and self._finished_before:
                name = ATTEMPT_REPORT
                logger.info(
                    "The finished run already in %s is kept; this attempt's report is %s.",
                    self.out_dir,
                    ATTEMPT_REPORT,
                )
            try:
                write_report(self.out_dir / name, report, [self.out_dir, *self.inputs])
                if name == "report.json":
                    (self.out_dir / ATTEMPT_REPORT).unlink(missing_ok=True)
            except (OSError, OutputError) as exc:  # disk full or folder gone: keep 1st error
                logger.error("Could not write %s: %s", name, exc)
            engine_logger.removeHandler(handler)
            engine_logger.setLevel(old_level)
            handler.close()

    def _run(self, report: RunReport) -> RunResult:
        cfg = self.config
        out = self.out_dir
        if not self._finished_before:  # else written when this run finishes, with its report
            write_json_atomic(out / "config.json", cfg.to_dict())
        work = out / "work"
        work.mkdir(exist_ok=True)
        key = {"inputs": self._input_key(), "engine": engine.__version__}
        state = _State(
            work / STATE_FILE, {**key, "ingest": _fingerprint(dataclasses.asdict(cfg.ingest))}
        )
        # Stages downstream of a changed config must rerun: fold upstream settings into each key.

        # -- ingest
        done = state.get("ingest")
        if done is not None:
            ingest = _ingest_from_json(done["result"], out)
            logger.info("Ingest already done: %d photos (resumed).", len(ingest.images))
        else:
            state.forget_from("ingest", self.STAGES)
            # One usable photo is not an error: it makes a single-photo relief (below).
            # Thumbnails are skipped at once: SfM on hundreds of them would run for nothing.
            ingest_cfg = dataclasses.replace(
                cfg.ingest, min_images=1, min_side=max(cfg.ingest.min_side, MIN_PHOTO_SIDE)
            )
            ingest = self._timed(
                report,
                "ingest",
                lambda: ingest_stage.run(
                    self.inputs, ingest_cfg, work, progress=self.progress, cancel=self.cancel
                ),
            )
            state.finish("ingest", {"result": _ingest_to_json(ingest, out)})
        report.inputs = {
            "photos_given": len(ingest.images) + len(ingest.skipped),
            "photos_used": len(ingest.images),
            "cameras": len({r.camera_key for r in ingest.images}),
            "focal_prior": sorted({r.focal_source for r in ingest.images}),
            "images": [
                {
                    "name": r.name,
                    "width": r.width,
                    "height": r.height,
                    "sharpness": round(r.sharpness, 1),
                }
                for r in ingest.images
            ],
        }
        report.skipped = [{"file": s.path, "reason": s.reason} for s in ingest.skipped]
        report.warnings.extend(ingest.warnings)
        self._preflight(report, ingest)
        if len(ingest.images) == 1:
            return self._single_photo(report, ingest)

        # -- masks (product vs backdrop, turntable, floor); they feed SfM, dense and the mesh
        # The painted masks' contents count, not where the folder is (saving a project moves it).
        masks_key = _fingerprint(
            [
                # 2: records say where each mask came from (ImageRecord.mask_source), which
                # decides whether SfM uses it; masks resumed from older runs lack it
                "masks-2",
                dataclasses.asdict(cfg.ingest),
                {**dataclasses.asdict(cfg.masks), "override_dir": None},
                _folder_listing(cfg.masks.override_dir),
            ]
        )
        ingest = self._masks(report, ingest, state, masks_key, work)

        # -- sfm
        sfm_key = _fingerprint([masks_key, dataclasses.asdict(cfg.sfm)])
        done = state.get("sfm")
        if done is not None and done.get("key") == sfm_key and (out / "sparse" / "0").is_dir():
            sparse = sfm_stage.load_sparse(out / "sparse" / "0", done["unregistered"])
            sparse = dataclasses.replace(
                sparse, attempts=tuple(done["attempts"]), check=done.get("check", {})
            )
            logger.info("SfM already done: %d photos placed (resumed).", sparse.num_registered)
            self.progress(ProgressEvent("sfm", 1, 1, "resumed", sparse))
        else:
            state.forget_from("sfm", self.STAGES)
            sparse = self._timed(
                report,
                "sfm",
                lambda: sfm_stage.run(
                    ingest, cfg.sfm, out, progress=self.progress, cancel=self.cancel
                ),
            )
            state.finish(
                "sfm",
                {
                    "key": sfm_key,
                    "unregistered": sparse.unregistered,
                    "attempts": list(sparse.attempts),
                    "check": sparse.check,
                },
            )
        report.registered = sorted(sparse.cameras)
        report.unregistered = dict(sparse.unregistered)
        report.stages["sfm"] = {
            "registered": sparse.num_registered,
            "images": len(ingest.images),
            "points": len(sparse.points),
            "attempts": list(sparse.attempts),
            "check": sparse.check,
        }
        if sparse.unregistered:
            report.warnings.append(
                f"{len(sparse.unregistered)} of {len(ingest.images)} photos could not be placed "
                "(see 'unregistered' for the reason of each)."
            )
        # -- dense, depth prior, fuse, mesh
        dense_cloud = None
        mesh = None
        if cfg.stop_after == "dense":
            dense_cloud, fuse_key = self._dense(report, ingest, sparse, state, work)
            mesh = self._mesh(report, ingest, sparse, dense_cloud, state, work, fuse_key)
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
        scale = self._timed(
            report, "scale", lambda: self._scale(report, ingest, sparse, product, support)
        )
        coverage = self._timed(
            report, "coverage", lambda: self._coverage(report, ingest, sparse, product, scale)
        )

        # -- export
        self._timed(
            report,
            "export",
            lambda: self._export(
                report, sparse.points, sparse.cameras, dense_cloud, mesh=mesh, scale=scale
            ),
        )
        state.finish("export", {})
        write_json_atomic(out / "config.json", cfg.to_dict())
        report.status = "finished"
        return RunResult(out, report, ingest, sparse, dense_cloud, mesh, scale, coverage)

    def _preflight(self, report: RunReport, ingest: IngestResult) -> None:
        """Blurry, badly exposed and duplicate photos, too few photos: advice before the run."""
        from engine.stages import coverage as coverage_stage

        advice = coverage_stage.preflight(
            ingest, self.config.coverage, progress=self.progress, cancel=self.cancel
        )
        report.stages["coverage"] = {"preflight": [a.to_dict() for a in advice]}
        report.advice.extend(a.message for a in advice)
        for a in advice:
            logger.warning("Pre-flight: %s", a.message)

    def _masks(
        self,
        report: RunReport,
        ingest: IngestResult,
        state: _State,
        key: str,
        work: Path,
    ) -> IngestResult:
        """Product masks for every photo (or the reason there is none); resumable."""
        from engine.stages import masks as masks_stage

        out = self.out_dir
        done = state.get("masks")
        if done is not None and done.get("key") == key:
            masked = _ingest_from_json(done["result"], out)
            info, warnings = done["report"], done["warnings"]
            logger.info("Masks already done (resumed).")
            self.progress(ProgressEvent("masks", 1, 1, "resumed"))
        else:
            state.forget_from("masks", self.STAGES)
            result = self._timed(
                report,
                "masks",
                lambda: masks_stage.run(
                    ingest,
                    work,
                    self.config.masks,
                    progress=self.progress,
                    cancel=self.cancel,
                    device=self.device,
                ),
            )
            masked = dataclasses.replace(ingest, images=result.images)
            info, warnings = result.to_report(), list(result.warnings)
            state.finish(
                "masks",
                {
                    "key": key,
                    "result": _ingest_to_json(masked, out),
                    "report": info,
                    "warnings": warnings,
                },
            )
        report.stages["masks"] = info
        report.warnings.extend(warnings)
        turntable = info.get("turntable") or {}
        if turntable.get("detected") and turntable.get("note"):
            report.notes.append(turntable["note"])
            logger.info("%s", turntable["note"])
        return masked

    def _mesh(
        self,
        report: RunReport,
        ingest: IngestResult,
        sparse: SparseModel,
        cloud: PointCloud,
        state: _State,
        work: Path,
        fuse_key: str,
    ) -> Mesh | None:
        """The web mesh from the fused cloud; a failure here leaves the cloud and warns."""
        cfg = self.config.mesh
        if not cfg.enabled:
            report.stages["mesh"] = {"built": False, "reason": "turned off"}
            return None
        from engine.stages import mesh as mesh_stage

        mesh_key = _fingerprint([fuse_key, dataclasses.asdict(cfg)])
        path = work / mesh_stage.MESH_FILE
        done = state.get("mesh")
        if done is not None and done.get("key") == mesh_key and path.is_file():
            mesh = mesh_stage.load_mesh(path)
            stats = done["stats"]
            logger.info("Mesh already done: %d triangles (resumed).", mesh.num_triangles)
            self.progress(ProgressEvent("mesh", 1, 1, "resumed", mesh))
        else:
            try:
                result = self._timed(
                    report,
                    "mesh",
                    lambda: mesh_stage.run(
                        cloud,
                        sparse.cameras,
                        ingest.images,
                        cfg,
                        work / "mesh",
                        progress=self.progress,
                        cancel=self.cancel,
                    ),
                )
            except NoProductError as exc:
                # the cloud holds only the product's surroundings: no export, exit 3
                report.stages["mesh"] = {"built": False, "reason": str(exc)}
                raise
            except (ReconstructionError, InputError) as exc:
                report.stages["mesh"] = {"built": False, "reason": str(exc)}
                report.warnings.append(f"No mesh: {exc} The point cloud is still exported.")
                logger.warning("No mesh: %s", exc)
                return None
            mesh, stats = result.mesh, dict(result.stats)
            mesh_stage.save_mesh(path, mesh)
            state.finish("mesh", {"key": mesh_key, "stats": stats})
        report.stages["mesh"] = {"built": True, **stats}
        disagreeing = stats.get("masks_disagreeing") or []
        if disagreeing:
            report.warnings.append(
                f"The masks of {messages.named(list(disagreeing))} disagree with the product "
                "found in 3D (its outline from the mesh: work/mesh/product_masks); check them "
                "in the mask inspector."
            )
        completeness = stats.get("completeness")
        if completeness is not None and completeness < mesh_stage.MIN_COMPLETENESS:
            report.warnings.append(
                f"The mesh covers only {completeness:.0%} of the product's dense points: part "
                "of the surface the photos support was trimmed away (wrong masks?). The point "
                "cloud (dense.ply) holds all of it; check the masks in the mask inspector."
            )
        return mesh

    def _scale(
        self,
        report: RunReport,
        ingest: IngestResult,
        sparse: SparseModel,
        product: np.ndarray,
        support: dict[str, Any] | None = None,
    ) -> Any:
        """True scale (markers, a known distance or dimension) and the product's dimensions.

        ``support``: the plane the product stands on, when the mesh stage found one (its up).
        """
        from engine.stages import scale as scale_stage

        result = scale_stage.run(
            sparse.cameras,
            ingest.images,
            product,
            self.config.scale,
            support=support,
            progress=self.progress,
            cancel=self.cancel,
        )
        report.stages["scale"] = result.to_report()
        report.frame = frame_report(result.up, result.transform)
        if result.dimensions_mm is not None:
            report.dimensions_mm = [round(float(v), 1) for v in result.dimensions_mm]
            logger.info(
                "Dimensions: %s (%s).",
                scale_stage.dimensions_text(result.dimensions_mm),
                result.source,
            )
        elif result.note:
            report.notes.append(result.note)
        if self.config.scale.marker_size_mm > 0 and result.source != "aruco" and result.note:
            report.warnings.append(result.note)
        return result

    def _coverage(
        self,
        report: RunReport,
        ingest: IngestResult,
        sparse: SparseModel,
        product: np.ndarray,
        scale: Any,
    ) -> Any:
        """Viewing directions around the product and the gaps worth a reshoot."""
        from engine.stages import coverage as coverage_stage

        centre = np.median(product, axis=0) if len(product) else None
        # The floor seen through markers, or the support found in the cloud, is the surest up;
        # otherwise coverage finds it from the cameras held level, which stays right when part
        # of the way round is missing.
        up = scale.up if getattr(scale, "up_source", "") in ("markers", "support") else None
        result = coverage_stage.run(
            sparse.cameras,
            centre,
            self.config.coverage,
            up=up,
            expected=[r.name for r in ingest.images],
        )
        info = report.stages.setdefault("coverage", {})
        info.update(result.to_report())
        report.advice.extend(a for a in result.advice if a not in report.advice)
        report.notes.extend(n for n in result.notes if n not in report.notes)
        logger.info("Coverage:\n%s", coverage_stage.coverage_text(result))
        return result

    def _dense(
        self,
        report: RunReport,
        ingest: IngestResult,
        sparse: SparseModel,
        state: _State,
        work: Path,
    ) -> tuple[PointCloud, str]:
        """Depth maps, the optional monocular prior and fusion: the fused cloud and its key."""
        from engine.stages import dense as dense_stage
        from engine.stages import fuse as fuse_stage

        cfg = self.config
        out = self.out_dir
        # the settings really used here (depth maps are smaller on the CPU): they key fusion, so
        # a run resumed on another device does not reuse a cloud fused from other depth maps
        dense_cfg = dense_stage.for_device(cfg.dense, self.device)
        dense = self._timed(
            report,
            "dense",
            lambda: dense_stage.run(
                ingest,
                sparse,
                dense_cfg,
                work / "dense",
                device=self.device,
                progress=self.progress,
                cancel=self.cancel,
            ),
        )
        fractions = [v.get("valid_fraction", 0.0) for v in dense.views.values()]
        report.stages["dense"] = {
            "views": len(dense.paths),
            "device": dense.device,
            "depth_map_size": dense_cfg.max_image_size,
            "seconds_per_view": round(dense.seconds_per_view, 3),
            "resumed_views": sum(1 for v in dense.views.values() if v.get("resumed")),
            "median_valid_fraction": round(float(np.median(fractions)), 4) if fractions else 0,
            "skipped": dense.skipped,
        }
        if dense.memory_note:
            report.stages["dense"]["memory"] = dense.memory_note
            report.warnings.append(dense.memory_note)
        maps = list(dense.paths)
        prior_key: Any = None
        estimator = self._depth_model(report)
        if estimator is not None:
            from engine.stages import depth_prior as prior_stage

            prior = self._timed(
                report,
                "depth_prior",
                lambda: prior_stage.run(
                    maps,
                    cfg.depth_prior,
                    work / "depth_prior",
                    estimator=estimator,
                    progress=self.progress,
                    cancel=self.cancel,
                ),
            )
            maps = list(prior.paths)
            prior_key = estimator.info.to_dict()
            report.stages["depth_prior"] = {
                "views_filled": prior.views_used,
                "filled_pixels": prior.filled_pixels,
                "not_filled": prior.skipped,
            }

        # Upstream changes (ingest, SfM) already cleared this stage from the state.
        fuse_key = _fingerprint(
            [
                {
                    k: v
                    for k, v in dataclasses.asdict(dense_cfg).items()
                    if k not in dense_stage.SPEED_ONLY_SETTINGS  # same depths, only faster
                },
                dataclasses.asdict(cfg.depth_prior) if prior_key else None,
                dataclasses.asdict(cfg.fuse),
                prior_key,
                [p.name for p in maps],
            ]
        )
        done = state.get("fuse")
        if done is not None and done.get("key") == fuse_key and (out / "dense.ply").is_file():
            cloud = read_ply(out / "dense.ply")
            stats = done["stats"]
            logger.info("Fusion already done: %d points (resumed).", len(cloud))
            self.progress(ProgressEvent("fuse", 1, 1, "resumed", cloud))
        else:
            result = self._timed(
                report,
                "fuse",
                lambda: fuse_stage.run(
                    maps, cfg.fuse, out / "dense.ply", progress=self.progress, cancel=self.cancel
                ),
            )
            cloud, stats = result.cloud, result.stats
            state.finish("fuse", {"key": fuse_key, "stats": stats})
        report.stages["fuse"] = stats
        if isinstance(report.model.get("depth_prior"), dict):
            report.model["depth_prior"]["fused_point_fraction"] = stats.get("prior_fraction", 0.0)
        return cloud, fuse_key

    def _load_depth_model(self):  # noqa: ANN202 - engine.models.DepthEstimator
        """The configured depth network (raises ModelUnavailable when it cannot be had)."""
        from engine.models import load_depth_model

        cfg = self.config.depth_prior
        return load_depth_model(
            cfg.model,
            device=self.device,
            allow_download=cfg.allow_download,
            input_size=cfg.input_size,
            progress=self.progress,
            cancel=self.cancel,
        )

    def _depth_model(self, report: RunReport):  # noqa: ANN202 - DepthEstimator or None
        """Load the depth network when asked and available; say in the report why not."""
        cfg = self.config.depth_prior
        if not cfg.enabled:
            report.model = {"depth_prior": "not used: turned off (--no-depth-prior)"}
            logger.info("Depth prior turned off.")
            return None
        from engine.models import ModelUnavailable

        try:
            estimator = self._load_depth_model()
        except ModelUnavailable as exc:
            report.model = {"depth_prior": f"not used: {exc}"}
            report.warnings.append(
                "Depth prior not used (its weights are not on this computer): plain or shiny "
                "surfaces may have holes. See 'model' for how to provide them."
            )
            logger.warning("Depth prior not used: %s", exc)
            return None
        info = estimator.info
        report.model = {"depth_prior": info.to_dict()}
        if not info.commercial_use and info.licence_warning:
            report.warnings.append(info.licence_warning)
        logger.info("Depth prior: %s (%s, from %s).", info.name, info.licence, info.source)
        return estimator

    def _single_photo(self, report: RunReport, ingest: IngestResult) -> RunResult:
        """One usable photo: a 2.5D relief from the depth network (relative scale)."""
        from engine.models import ModelUnavailable
        from engine.stages import single_photo

        rec = ingest.images[0]
        logger.info("Only one usable photo (%s): making a single-photo relief.", rec.name)
        try:
            estimator = self._load_depth_model()
        except ModelUnavailable as exc:
            skipped = "".join(f" {s.path} was skipped: {s.reason}." for s in ingest.skipped[:5])
            raise ModelUnavailable(
                f"Only one usable photo ({rec.name}): a 3D model needs at least two overlapping "
                "photos, and a single-photo relief needs the depth network, which is not "
                f"available.{skipped} {exc}"
            ) from exc
        info = estimator.info
        report.model = {"depth_prior": info.to_dict()}
        if not info.commercial_use and info.licence_warning:
            report.warnings.append(info.licence_warning)
        result = self._timed(
            report,
            "depth_prior",
            lambda: single_photo.run(
                rec,
                self.out_dir / "work" / "single_photo",
                estimator=estimator,
                focal_px=rec.focal_px,
                progress=self.progress,
                cancel=self.cancel,
            ),
        )
        report.warnings.append(result.note)
        report.registered = [rec.name]
        report.stages["single_photo"] = {
            "points": len(result.cloud),
            "foreground": result.foreground_source,
            "focal_source": result.focal_source,
            "note": result.note,
        }
        self.progress(ProgressEvent("fuse", 1, 1, "relief", result.cloud))
        write_ply(self.out_dir / "dense.ply", result.cloud)
        write_json_atomic(self.out_dir / "config.json", self.config.to_dict())
        self._timed(
            report,
            "export",
            lambda: self._export(
                report, PointCloud.empty(), {rec.name: result.camera}, result.cloud
            ),
        )
        report.status = "finished"
        return RunResult(self.out_dir, report, ingest, None, result.cloud)

    def _export(
        self,
        report: RunReport,
        sparse_points: PointCloud,
        cameras: dict[str, CameraPose],
        dense: PointCloud | None,
        *,
        mesh: Mesh | None = None,
        scale: Any = None,
    ) -> None:
        out = self.out_dir
        cfg = self.config.export
        title = cfg.product_name or _product_name(self.inputs)
        steps = 4 if mesh is not None else 2
        self.progress(ProgressEvent("export", 0, steps, "writing sparse.ply"))
        self.cancel.raise_if_cancelled()  # before each file: none is half-written
        if len(sparse_points):
            write_ply(out / "sparse.ply", sparse_points)
        info: dict[str, Any] = {"title": title}
        if mesh is not None:
            info["mesh"] = self._export_mesh(mesh, scale, title, steps)
        else:
            for stale in MESH_OUTPUTS:  # a mesh of an earlier run must not pass for this one's
                (out / stale).unlink(missing_ok=True)
        self.progress(ProgressEvent("export", steps - 1, steps, "writing viewer.html"))
        self.cancel.raise_if_cancelled()  # before each file: none is half-written
        shown = dense if dense is not None and len(dense) else sparse_points
        stats = write_viewer(
            out / "viewer.html",
            shown,
            cameras,
            title=title,
            point_budget=cfg.point_budget,
            show_cameras=cfg.show_cameras,
            mesh=mesh,
            dimensions_mm=report.dimensions_mm,
        )
        stats["cloud"] = "dense" if shown is dense else "sparse"
        info["viewer"] = stats
        report.stages["export"] = info
        for name in ("sparse.ply", "viewer.html", "dense.ply", *MESH_OUTPUTS):
            path = out / name
            if path.exists():
                report.outputs[name] = path.stat().st_size
        self.progress(ProgressEvent("export", steps, steps, "done"))

    def _export_mesh(self, mesh: Mesh, scale: Any, title: str, steps: int) -> dict[str, Any]:
        """mesh.glb (storefronts), OBJ + MTL + texture, mesh.usdz when possible, embed.html."""
        from engine.export import glb
        from engine.export.embed import write_embed_html

        out = self.out_dir
        transform = getattr(scale, "transform", None)
        self.progress(ProgressEvent("export", 1, steps, "writing mesh.glb"))
        self.cancel.raise_if_cancelled()  # before each file: none is half-written
        info: dict[str, Any] = {
            "glb": glb.write_glb(
                out / "mesh.glb", mesh, transform=transform, max_mb=self.config.mesh.max_glb_mb
            )
        }
        self.progress(ProgressEvent("export", 2, steps, "writing mesh.obj"))
        self.cancel.raise_if_cancelled()  # before each file: none is half-written
        glb.write_obj(out / "mesh.obj", mesh, transform=transform)
        usdz_name = None
        try:
            glb.write_usdz(out / "mesh.usdz", mesh, transform=transform)
            usdz_name = "mesh.usdz"
        except glb.UsdzUnavailable as exc:
            (out / "mesh.usdz").unlink(missing_ok=True)
            info["usdz"] = f"not written: {exc}"
            logger.info("mesh.usdz not written: %s", exc)
        write_embed_html(out / "embed.html", "mesh.glb", title=title, usdz_name=usdz_name)
        return info


#: Files the mesh export writes into the run folder.
MESH_OUTPUTS = (
    "mesh.glb",
    "mesh.obj",
    "mesh.mtl",
    "mesh_texture.png",
    "mesh.usdz",
    "embed.html",
)


def _product_name(inputs: Sequence[Path]) -> str:
    """A title from the input folder's name ('images'/'photos' folders use their parent)."""
    first = inputs[0].resolve()
    folder = first if first.is_dir() else first.parent
    if folder.name.lower() in {"images", "photos", "jpg", "raw"} and folder.parent.name:
        folder = folder.parent
    return folder.name.replace("_", " ").strip() or "Product"


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
