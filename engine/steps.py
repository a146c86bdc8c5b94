"""Each stage as one step of a run: resume from work/state.json, run, its report section.

:class:`engine.pipeline.Pipeline` orders the steps; a step decides from the run's
:class:`engine.run_folder.RunState` whether the stage's earlier result still holds (its key folds
in the settings of every stage upstream, so a changed setting reruns what follows it), else runs
the stage (``run(inputs, cfg, out_dir, *, progress, cancel)``) and records it, and puts what the
stage's result says (``to_report()``, warnings, notes) into the run's report.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from engine import messages
from engine import run_folder as rf
from engine.config import MIN_PHOTO_SIDE, PipelineConfig
from engine.errors import InputError, NoProductError, ReconstructionError
from engine.export.ply import read_ply, write_ply
from engine.export.report import write_json_atomic
from engine.progress import CancelToken, ProgressCallback, ProgressEvent
from engine.stages import coverage as coverage_stage
from engine.stages import ingest as ingest_stage
from engine.stages import sfm as sfm_stage
from engine.types import CameraPose, IngestResult, Mesh, PointCloud, RunReport, SparseModel

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The steps of a run, in order (the ``pipeline`` progress events count them).
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


@dataclasses.dataclass
class RunContext:
    """What every step of one run shares: its settings, folder, report and resume state."""

    inputs: list[Path]
    out_dir: Path
    config: PipelineConfig
    device: str
    report: RunReport
    state: rf.RunState
    progress: ProgressCallback
    cancel: CancelToken

    @property
    def work(self) -> Path:
        """The run's ``work/`` folder."""
        return rf.work_dir(self.out_dir)

    def timed(self, stage: str, fn: Callable[[], T]) -> T:
        """Announce ``stage``, run ``fn`` and record its seconds in the report."""
        self.cancel.raise_if_cancelled()
        self.progress(ProgressEvent("pipeline", STAGES.index(stage), len(STAGES), stage))
        t0 = time.perf_counter()
        result = fn()
        self.report.stage_seconds[stage] = round(time.perf_counter() - t0, 3)
        return result


def frame_report(up: np.ndarray, transform: np.ndarray) -> dict[str, Any]:
    """report.json's ``frame``: up in the sparse model's frame and the GLB's 4x4 from it."""
    from engine.export.glb import glb_from

    return {
        "up": [round(float(v), 6) for v in np.asarray(up, np.float64)],
        "glb_from_sparse": [[float(v) for v in row] for row in glb_from(transform)],
    }


def ingest(ctx: RunContext) -> IngestResult:
    """The photos read into working copies (resumable), the report's inputs and pre-flight."""
    out = ctx.out_dir
    done = ctx.state.get("ingest")
    if done is not None:
        ingest = rf.ingest_from_json(done["result"], out)
        logger.info("Ingest already done: %d photos (resumed).", len(ingest.images))
    else:
        ctx.state.forget_from("ingest", STAGES)
        # One usable photo is not an error: it makes a single-photo relief (below).
        # Thumbnails are skipped at once: SfM on hundreds of them would run for nothing.
        ingest_cfg = dataclasses.replace(
            ctx.config.ingest,
            min_images=1,
            min_side=max(ctx.config.ingest.min_side, MIN_PHOTO_SIDE),
        )
        ingest = ctx.timed(
            "ingest",
            lambda: ingest_stage.run(
                ctx.inputs, ingest_cfg, ctx.work, progress=ctx.progress, cancel=ctx.cancel
            ),
        )
        ctx.state.finish("ingest", {"result": rf.ingest_to_json(ingest, out)})
    ctx.report.inputs = ingest.to_report()
    ctx.report.skipped = [{"file": s.path, "reason": s.reason} for s in ingest.skipped]
    ctx.report.warnings.extend(ingest.warnings)
    preflight(ctx, ingest)
    return ingest


def preflight(ctx: RunContext, ingest: IngestResult) -> None:
    """Blurry, badly exposed and duplicate photos, too few photos: advice before the run."""
    advice = coverage_stage.preflight(
        ingest, ctx.config.coverage, progress=ctx.progress, cancel=ctx.cancel
    )
    ctx.report.stages["coverage"] = {"preflight": [a.to_dict() for a in advice]}
    ctx.report.advice.extend(a.message for a in advice)
    for a in advice:
        logger.warning("Pre-flight: %s", a.message)


def masks(ctx: RunContext, ingest: IngestResult) -> tuple[IngestResult, str]:
    """Product masks for every photo (or the reason there is none); resumable.

    Returns the photos with their masks, and the key SfM's own key builds on.
    """
    from engine.stages import masks as masks_stage

    cfg = ctx.config
    # The painted masks' contents count, not where the folder is (saving a project moves it).
    key = rf.fingerprint(
        [
            # 2: records say where each mask came from (ImageRecord.mask_source), which
            # decides whether SfM uses it; masks resumed from older runs lack it. 3: the
            # backdrop's lightness spread follows its grey level (masks.py: _light_floor)
            "masks-3",
            dataclasses.asdict(cfg.ingest),
            {**dataclasses.asdict(cfg.masks), "override_dir": None},
            rf.folder_listing(cfg.masks.override_dir),
        ]
    )
    out = ctx.out_dir
    done = ctx.state.get("masks")
    if done is not None and done.get("key") == key:
        masked = rf.ingest_from_json(done["result"], out)
        info, warnings = done["report"], done["warnings"]
        logger.info("Masks already done (resumed).")
        ctx.progress(ProgressEvent("masks", 1, 1, "resumed"))
    else:
        ctx.state.forget_from("masks", STAGES)
        result = ctx.timed(
            "masks",
            lambda: masks_stage.run(
                ingest,
                ctx.config.masks,
                ctx.work,
                progress=ctx.progress,
                cancel=ctx.cancel,
                device=ctx.device,
            ),
        )
        masked = dataclasses.replace(ingest, images=result.images)
        info, warnings = result.to_report(), list(result.warnings)
        ctx.state.finish(
            "masks",
            {
                "key": key,
                "result": rf.ingest_to_json(masked, out),
                "report": info,
                "warnings": warnings,
            },
        )
    ctx.report.stages["masks"] = info
    ctx.report.warnings.extend(warnings)
    turntable = info.get("turntable") or {}
    if turntable.get("detected") and turntable.get("note"):
        ctx.report.notes.append(turntable["note"])
        logger.info("%s", turntable["note"])
    return masked, key


def sfm(ctx: RunContext, ingest: IngestResult, masks_key: str) -> SparseModel:
    """Cameras and sparse points (resumable while the photos, masks and settings stay)."""
    out = ctx.out_dir
    key = rf.fingerprint(
        [masks_key, dataclasses.asdict(ctx.config.sfm), sfm_stage.ALGORITHM_VERSION]
    )
    done = ctx.state.get("sfm")
    if done is not None and done.get("key") == key and rf.sparse_model_dir(out).is_dir():
        sparse = sfm_stage.load_sparse(rf.sparse_model_dir(out), done["unregistered"])
        sparse = dataclasses.replace(
            sparse, attempts=tuple(done["attempts"]), check=done.get("check", {})
        )
        logger.info("SfM already done: %d photos placed (resumed).", sparse.num_registered)
        ctx.progress(ProgressEvent("sfm", 1, 1, "resumed", sparse))
    else:
        ctx.state.forget_from("sfm", STAGES)
        sparse = ctx.timed(
            "sfm",
            lambda: sfm_stage.run(
                ingest, ctx.config.sfm, out, progress=ctx.progress, cancel=ctx.cancel
            ),
        )
        ctx.state.finish(
            "sfm",
            {
                "key": key,
                "unregistered": sparse.unregistered,
                "attempts": list(sparse.attempts),
                "check": sparse.check,
            },
        )
    ctx.report.registered = sorted(sparse.cameras)
    ctx.report.unregistered = dict(sparse.unregistered)
    ctx.report.stages["sfm"] = sparse.to_report(images=len(ingest.images))
    if sparse.unregistered:
        ctx.report.warnings.append(
            f"{len(sparse.unregistered)} of {len(ingest.images)} photos could not be placed "
            "(see 'unregistered' for the reason of each)."
        )
    return sparse


def mesh(
    ctx: RunContext, ingest: IngestResult, sparse: SparseModel, cloud: PointCloud, fuse_key: str
) -> Mesh | None:
    """The web mesh from the fused cloud; a failure here leaves the cloud and warns."""
    cfg = ctx.config.mesh
    if not cfg.enabled:
        ctx.report.stages["mesh"] = {"built": False, "reason": "turned off"}
        return None
    from engine.stages import mesh as mesh_stage

    mesh_key = rf.fingerprint([fuse_key, dataclasses.asdict(cfg), mesh_stage.ALGORITHM_VERSION])
    path = rf.mesh_file(ctx.out_dir)
    done = ctx.state.get("mesh")
    if done is not None and done.get("key") == mesh_key and path.is_file():
        result = mesh_stage.MeshResult(mesh_stage.load_mesh(path), done["stats"])
        logger.info("Mesh already done: %d triangles (resumed).", result.mesh.num_triangles)
        ctx.progress(ProgressEvent("mesh", 1, 1, "resumed", result.mesh))
    else:
        try:
            result = ctx.timed(
                "mesh",
                lambda: mesh_stage.run(
                    mesh_stage.MeshInputs(cloud, sparse.cameras, ingest.images),
                    cfg,
                    ctx.work / "mesh",
                    progress=ctx.progress,
                    cancel=ctx.cancel,
                ),
            )
        except NoProductError as exc:
            # the cloud holds only the product's surroundings: no export, exit 3
            ctx.report.stages["mesh"] = {"built": False, "reason": str(exc)}
            raise
        except (ReconstructionError, InputError) as exc:
            ctx.report.stages["mesh"] = {"built": False, "reason": str(exc)}
            ctx.report.warnings.append(f"No mesh: {exc} The point cloud is still exported.")
            logger.warning("No mesh: %s", exc)
            return None
        mesh_stage.save_mesh(path, result.mesh)
        ctx.state.finish("mesh", {"key": mesh_key, "stats": dict(result.stats)})
    ctx.report.stages["mesh"] = result.to_report()
    mesh, stats = result.mesh, result.stats
    disagreeing = stats.get("masks_disagreeing") or []
    if disagreeing:
        ctx.report.warnings.append(
            f"The masks of {messages.named(list(disagreeing))} disagree with the product "
            "found in 3D (its outline from the mesh: work/mesh/product_masks); check them "
            "in the mask inspector."
        )
    completeness = stats.get("completeness")
    if completeness is not None and completeness < mesh_stage.MIN_COMPLETENESS:
        ctx.report.warnings.append(
            f"The mesh covers only {completeness:.0%} of the product's dense points: part "
            "of the surface the photos support was trimmed away (wrong masks?). The point "
            "cloud (dense.ply) holds all of it; check the masks in the mask inspector."
        )
    return mesh


def scale(
    ctx: RunContext,
    ingest: IngestResult,
    sparse: SparseModel,
    product: np.ndarray,
    support: dict[str, Any] | None = None,
) -> Any:
    """True scale (markers, a known distance or dimension) and the product's dimensions.

    ``support``: the plane the product stands on, when the mesh stage found one (its up).
    """
    from engine.stages import scale as scale_stage

    inputs = scale_stage.ScaleInputs(sparse.cameras, ingest.images, product, support)
    result = scale_stage.run(
        inputs, ctx.config.scale, None, progress=ctx.progress, cancel=ctx.cancel
    )
    ctx.report.stages["scale"] = result.to_report()
    ctx.report.frame = frame_report(result.up, result.transform)
    if result.dimensions_mm is not None:
        ctx.report.dimensions_mm = [round(float(v), 1) for v in result.dimensions_mm]
        logger.info(
            "Dimensions: %s (%s).",
            scale_stage.dimensions_text(result.dimensions_mm),
            result.source,
        )
    elif result.note:
        ctx.report.notes.append(result.note)
    if ctx.config.scale.marker_size_mm > 0 and result.source != "aruco" and result.note:
        ctx.report.warnings.append(result.note)
    return result


def coverage(
    ctx: RunContext,
    ingest: IngestResult,
    sparse: SparseModel,
    product: np.ndarray,
    scale: Any,
) -> Any:
    """Viewing directions around the product and the gaps worth a reshoot."""
    centre = np.median(product, axis=0) if len(product) else None
    # The floor seen through markers, or the support found in the cloud, is the surest up;
    # otherwise coverage finds it from the cameras held level, which stays right when part
    # of the way round is missing.
    up = scale.up if getattr(scale, "up_source", "") in ("markers", "support") else None
    inputs = coverage_stage.CoverageInputs(
        sparse.cameras, centre, up=up, expected=[r.name for r in ingest.images]
    )
    result = coverage_stage.run(
        inputs, ctx.config.coverage, None, progress=ctx.progress, cancel=ctx.cancel
    )
    info = ctx.report.stages.setdefault("coverage", {})
    info.update(result.to_report())
    ctx.report.advice.extend(a for a in result.advice if a not in ctx.report.advice)
    ctx.report.notes.extend(n for n in result.notes if n not in ctx.report.notes)
    logger.info("Coverage:\n%s", coverage_stage.coverage_text(result))
    return result


def dense(ctx: RunContext, ingest: IngestResult, sparse: SparseModel) -> tuple[PointCloud, str]:
    """Depth maps, the optional monocular prior and fusion: the fused cloud and its key."""
    from engine.stages import dense as dense_stage
    from engine.stages import fuse as fuse_stage

    cfg = ctx.config
    out = ctx.out_dir
    # the settings really used here (depth maps are smaller on the CPU): they key fusion, so
    # a run resumed on another device does not reuse a cloud fused from other depth maps
    dense_cfg = dense_stage.for_device(cfg.dense, ctx.device)
    dense = ctx.timed(
        "dense",
        lambda: dense_stage.run(
            dense_stage.DenseInputs(ingest, sparse),
            dense_cfg,
            ctx.work / "dense",
            device=ctx.device,
            progress=ctx.progress,
            cancel=ctx.cancel,
        ),
    )
    ctx.report.stages["dense"] = dense.to_report(depth_map_size=dense_cfg.max_image_size)
    if dense.memory_note:
        ctx.report.warnings.append(dense.memory_note)
    maps = list(dense.paths)
    prior_key: Any = None
    estimator = depth_model(ctx)
    if estimator is not None:
        from engine.stages import depth_prior as prior_stage

        prior = ctx.timed(
            "depth_prior",
            lambda: prior_stage.run(
                maps,
                cfg.depth_prior,
                ctx.work / "depth_prior",
                estimator=estimator,
                progress=ctx.progress,
                cancel=ctx.cancel,
            ),
        )
        maps = list(prior.paths)
        prior_key = estimator.info.to_dict()
        ctx.report.stages["depth_prior"] = prior.to_report()

    # Upstream changes (ingest, SfM) already cleared this stage from the state.
    fuse_key = rf.fingerprint(
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
            # the depth maps' own keys: recomputed maps (a new algorithm version) are fused anew
            sorted(dense.keys.items()),
        ]
    )
    done = ctx.state.get("fuse")
    if done is not None and done.get("key") == fuse_key and (out / rf.DENSE_PLY).is_file():
        fused = fuse_stage.FuseResult(read_ply(out / rf.DENSE_PLY), done["stats"])
        logger.info("Fusion already done: %d points (resumed).", len(fused.cloud))
        ctx.progress(ProgressEvent("fuse", 1, 1, "resumed", fused.cloud))
    else:
        fused = ctx.timed(
            "fuse",
            lambda: fuse_stage.run(
                maps, cfg.fuse, out / rf.DENSE_PLY, progress=ctx.progress, cancel=ctx.cancel
            ),
        )
        ctx.state.finish("fuse", {"key": fuse_key, "stats": fused.stats})
    ctx.report.stages["fuse"] = fused.to_report()
    cloud, stats = fused.cloud, fused.stats
    if isinstance(ctx.report.model.get("depth_prior"), dict):
        ctx.report.model["depth_prior"]["fused_point_fraction"] = stats.get("prior_fraction", 0.0)
    return cloud, fuse_key


def load_depth_model(ctx: RunContext):  # noqa: ANN202 - engine.models.DepthEstimator
    """The configured depth network (raises ModelUnavailable when it cannot be had)."""
    from engine.models import load_depth_model

    cfg = ctx.config.depth_prior
    return load_depth_model(
        cfg.model,
        device=ctx.device,
        allow_download=cfg.allow_download,
        input_size=cfg.input_size,
        progress=ctx.progress,
        cancel=ctx.cancel,
    )


def depth_model(ctx: RunContext):  # noqa: ANN202 - DepthEstimator or None
    """Load the depth network when asked and available; say in the report why not."""
    cfg = ctx.config.depth_prior
    if not cfg.enabled:
        ctx.report.model = {"depth_prior": "not used: turned off (--no-depth-prior)"}
        logger.info("Depth prior turned off.")
        return None
    from engine.models import ModelUnavailable

    try:
        estimator = load_depth_model(ctx)
    except ModelUnavailable as exc:
        ctx.report.model = {"depth_prior": f"not used: {exc}"}
        ctx.report.warnings.append(
            "Depth prior not used (its weights are not on this computer): plain or shiny "
            "surfaces may have holes. See 'model' for how to provide them."
        )
        logger.warning("Depth prior not used: %s", exc)
        return None
    info = estimator.info
    ctx.report.model = {"depth_prior": info.to_dict()}
    if not info.commercial_use and info.licence_warning:
        ctx.report.warnings.append(info.licence_warning)
    logger.info("Depth prior: %s (%s, from %s).", info.name, info.licence, info.source)
    return estimator


def single_photo(ctx: RunContext, ingest: IngestResult) -> PointCloud:
    """One usable photo: a 2.5D relief from the depth network (relative scale), exported."""
    from engine.models import ModelUnavailable
    from engine.stages import single_photo as relief_stage

    rec = ingest.images[0]
    logger.info("Only one usable photo (%s): making a single-photo relief.", rec.name)
    try:
        estimator = load_depth_model(ctx)
    except ModelUnavailable as exc:
        skipped = "".join(f" {s.path} was skipped: {s.reason}." for s in ingest.skipped[:5])
        raise ModelUnavailable(
            f"Only one usable photo ({rec.name}): a 3D model needs at least two overlapping "
            "photos, and a single-photo relief needs the depth network, which is not "
            f"available.{skipped} {exc}"
        ) from exc
    info = estimator.info
    ctx.report.model = {"depth_prior": info.to_dict()}
    if not info.commercial_use and info.licence_warning:
        ctx.report.warnings.append(info.licence_warning)
    result = ctx.timed(
        "depth_prior",
        lambda: relief_stage.run(
            relief_stage.SinglePhotoInputs(rec),
            relief_stage.SinglePhotoConfig(focal_px=rec.focal_px),
            rf.work_dir(ctx.out_dir) / "single_photo",
            estimator=estimator,
            progress=ctx.progress,
            cancel=ctx.cancel,
        ),
    )
    ctx.report.warnings.append(result.note)
    ctx.report.registered = [rec.name]
    ctx.report.stages["single_photo"] = result.to_report()
    ctx.progress(ProgressEvent("fuse", 1, 1, "relief", result.cloud))
    write_ply(ctx.out_dir / rf.DENSE_PLY, result.cloud)
    write_json_atomic(ctx.out_dir / rf.CONFIG, ctx.config.to_dict())
    ctx.timed(
        "export",
        lambda: export(ctx, PointCloud.empty(), {rec.name: result.camera}, result.cloud),
    )
    return result.cloud


def export(
    ctx: RunContext,
    sparse_points: PointCloud,
    cameras: dict[str, CameraPose],
    dense: PointCloud | None,
    *,
    mesh: Mesh | None = None,
    scale: Any = None,
) -> None:
    """The run's shareable files (:mod:`engine.export.run_outputs`): all of them, or none."""
    from engine.export import run_outputs

    inputs = run_outputs.ExportInputs(
        title=ctx.config.export.product_name or product_name(ctx.inputs),
        sparse_points=sparse_points,
        cameras=cameras,
        dense=dense,
        mesh=mesh,
        transform=getattr(scale, "transform", None),
        dimensions_mm=ctx.report.dimensions_mm,
    )
    result = run_outputs.run(
        inputs, ctx.config, ctx.out_dir, progress=ctx.progress, cancel=ctx.cancel
    )
    ctx.report.stages["export"] = result.to_report()
    ctx.report.outputs.update(result.outputs)


def product_name(inputs: Sequence[Path]) -> str:
    """A title from the input folder's name ('images'/'photos' folders use their parent)."""
    first = inputs[0].resolve()
    folder = first if first.is_dir() else first.parent
    if folder.name.lower() in {"images", "photos", "jpg", "raw"} and folder.parent.name:
        folder = folder.parent
    return folder.name.replace("_", " ").strip() or "Product"
