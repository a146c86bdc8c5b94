"""The export stage: a run's shareable files, written together into the run folder.

``sparse.ply``, ``viewer.html`` and, when a mesh was built, ``mesh.glb`` (storefronts), OBJ +
MTL + texture, ``mesh.usdz`` when possible and ``embed.html``. Every file is staged first
(:class:`engine.run_folder.StagedOutputs`): a failed or cancelled export leaves the previous
run's files as they were, never a mix of old and new ones.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engine import run_folder as rf
from engine.config import PipelineConfig
from engine.export.plotly_html import write_viewer
from engine.export.ply import write_ply
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.types import CameraPose, Mesh, PointCloud

logger = logging.getLogger(__name__)

STAGE = "export"


@dataclasses.dataclass(frozen=True)
class ExportInputs:
    """What the export writes: the run's clouds, cameras and mesh."""

    title: str
    """The product's name, shown in the viewer and the embed page."""
    sparse_points: PointCloud
    cameras: Mapping[str, CameraPose]
    dense: PointCloud | None = None
    """The fused cloud (shown in the viewer when not empty; else the sparse points)."""
    mesh: Mesh | None = None
    transform: np.ndarray | None = None
    """The scale stage's similarity from the sparse frame to the exported one (None: none)."""
    dimensions_mm: list[float] | None = None


@dataclasses.dataclass
class ExportResult:
    """The export's report section and the files it left, with their sizes."""

    info: dict[str, Any]
    outputs: dict[str, int]

    def to_report(self) -> dict[str, Any]:
        """report.json's ``stages.export``."""
        return self.info


def run(
    inputs: ExportInputs,
    cfg: PipelineConfig,
    out_dir: Path,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> ExportResult:
    """Write the run's shareable files into ``out_dir`` (all of them, or none on failure).

    Raises
    ------
    Cancelled
        When ``cancel`` was set (the previous run's files stay as they were).
    OutputError
        When a file cannot be written.
    """
    cancel = cancel or CancelToken()
    out_dir = Path(out_dir)
    mesh = inputs.mesh
    steps = 4 if mesh is not None else 2
    info: dict[str, Any] = {"title": inputs.title}
    with rf.staged_outputs(out_dir) as staged:
        progress(ProgressEvent(STAGE, 0, steps, "writing sparse.ply"))
        cancel.raise_if_cancelled()  # before each file: none is half-written
        if len(inputs.sparse_points):
            write_ply(staged.path(rf.SPARSE_PLY), inputs.sparse_points)
        if mesh is not None:
            info["mesh"] = _write_mesh(staged, mesh, inputs, cfg, steps, progress, cancel)
        else:
            for stale in rf.MESH_OUTPUTS:  # a mesh of an earlier run must not pass for this one's
                staged.remove(stale)
        progress(ProgressEvent(STAGE, steps - 1, steps, "writing viewer.html"))
        cancel.raise_if_cancelled()  # before each file: none is half-written
        dense = inputs.dense
        shown = dense if dense is not None and len(dense) else inputs.sparse_points
        stats = write_viewer(
            staged.path(rf.VIEWER),
            shown,
            inputs.cameras,
            title=inputs.title,
            point_budget=cfg.export.point_budget,
            show_cameras=cfg.export.show_cameras,
            mesh=mesh,
            dimensions_mm=inputs.dimensions_mm,
        )
        stats["cloud"] = "dense" if shown is dense else "sparse"
        info["viewer"] = stats
    outputs = {}
    for name in rf.OUTPUTS:
        path = out_dir / name
        if path.exists():
            outputs[name] = path.stat().st_size
    progress(ProgressEvent(STAGE, steps, steps, "done"))
    return ExportResult(info, outputs)


def _write_mesh(
    staged: rf.StagedOutputs,
    mesh: Mesh,
    inputs: ExportInputs,
    cfg: PipelineConfig,
    steps: int,
    progress: ProgressCallback,
    cancel: CancelToken,
) -> dict[str, Any]:
    """mesh.glb (storefronts), OBJ + MTL + texture, mesh.usdz when possible, embed.html."""
    from engine.export import glb
    from engine.export.embed import write_embed_html

    transform = inputs.transform
    progress(ProgressEvent(STAGE, 1, steps, "writing mesh.glb"))
    cancel.raise_if_cancelled()  # before each file: none is half-written
    info: dict[str, Any] = {
        "glb": glb.write_glb(
            staged.path("mesh.glb"), mesh, transform=transform, max_mb=cfg.mesh.max_glb_mb
        )
    }
    progress(ProgressEvent(STAGE, 2, steps, "writing mesh.obj"))
    cancel.raise_if_cancelled()  # before each file: none is half-written
    glb.write_obj(staged.path("mesh.obj"), mesh, transform=transform)
    usdz_name = None
    try:
        glb.write_usdz(staged.path("mesh.usdz"), mesh, transform=transform)
        usdz_name = "mesh.usdz"
    except glb.UsdzUnavailable as exc:
        staged.remove("mesh.usdz")
        info["usdz"] = f"not written: {exc}"
        logger.info("mesh.usdz not written: %s", exc)
    write_embed_html(staged.path("embed.html"), "mesh.glb", title=inputs.title, usdz_name=usdz_name)
    return info
