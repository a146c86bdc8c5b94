"""User options to a :class:`~engine.config.PipelineConfig`, in one place.

The command line (``reconstruct``, ``batch``), the window (an image set's settings) and the
batch's catalogue (a product's name and true-scale hints) each say what the user chose as
:class:`RunOptions`; :func:`pipeline_config` turns them into the run's settings. An option left
at None keeps what the preset (or the base configuration) says.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import engine.config
from engine.config import PipelineConfig, ScaleConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What a user chose for a run; None (or empty) keeps the preset's setting."""

    preset: str = "standard"
    """Preset name (``preview``, ``standard``, ``high``); used when no base config is given."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda``; used when no base config is given."""
    product_name: str = ""
    """Name shown in the viewer and the gallery ("" : from the photos' folder)."""
    depth_prior: bool | None = None
    """False turns the monocular depth prior off."""
    depth_model: str | None = None
    """Depth network: a local folder or a Hugging Face id."""
    download_models: bool = False
    """Let the depth (and mask) network be downloaded when it is not on this computer."""
    sparse_only: bool = False
    """Stop after the cameras and sparse points."""
    auto_masks: bool | None = None
    """Compute automatic product masks (``MaskConfig.enabled``)."""
    mask_model: str | None = None
    """Segmentation network for the masks."""
    painted_masks_dir: str | None = None
    """Folder of the masks the user painted (``MaskConfig.override_dir``; "" for none)."""
    masks_disabled: tuple[str, ...] | None = None
    """Image names whose mask is switched off."""
    mesh: bool | None = None
    """False stops at the point cloud."""
    max_triangles: int | None = None
    """Triangle budget of the mesh."""
    scale: dict[str, Any] = dataclasses.field(default_factory=dict)
    """True-scale hints, :class:`~engine.config.ScaleConfig` fields (``marker_size_mm``,
    ``known_dimension`` and ``known_dimension_mm``, ``known_points`` and
    ``known_distance_mm``)."""


def replace_known(scale: ScaleConfig, values: dict[str, Any]) -> ScaleConfig:
    """``scale`` with ``values`` replaced, leaving out fields this engine's ScaleConfig lacks.

    A field the engine does not know yet (an older engine) is logged, not fatal: the run then
    goes without that setting.
    """
    known = {f.name for f in dataclasses.fields(ScaleConfig)}
    missing = {k: v for k, v in values.items() if k not in known}
    if any(missing.values()):
        logger.warning(
            "This version of the engine has no scale setting %s; it is not used.",
            ", ".join(sorted(k for k, v in missing.items() if v)),
        )
    return dataclasses.replace(scale, **{k: v for k, v in values.items() if k in known})


def pipeline_config(options: RunOptions, base: PipelineConfig | None = None) -> PipelineConfig:
    """The run's settings: ``base`` (else the options' preset and device) with ``options``.

    Parameters
    ----------
    options
        What the user chose.
    base
        Configuration to start from (the window's settings panel, the batch's command line);
        None builds :func:`engine.config.preset` ``(options.preset, device=options.device)``.
    """
    if base is None:  # engine.config.preset looked up now: the tests' one seam for presets
        base = engine.config.preset(options.preset, device=options.device)
    cfg = base
    replace = dataclasses.replace
    if options.product_name:
        cfg = cfg.replace(export=replace(cfg.export, product_name=options.product_name))
    prior = cfg.depth_prior
    if options.depth_prior is False:
        prior = replace(prior, enabled=False)
    if options.depth_model:
        prior = replace(prior, model=str(options.depth_model))
    if options.download_models:
        prior = replace(prior, allow_download=True)
    cfg = cfg.replace(depth_prior=prior)
    if options.sparse_only:
        cfg = cfg.replace(stop_after="sparse")
    masks = cfg.masks
    if options.auto_masks is not None:
        masks = replace(masks, enabled=options.auto_masks)
    if options.mask_model:
        masks = replace(
            masks, model=str(options.mask_model), allow_download=options.download_models
        )
    if options.painted_masks_dir is not None:
        masks = replace(masks, override_dir=options.painted_masks_dir)
    if options.masks_disabled is not None:
        masks = replace(masks, disabled=tuple(options.masks_disabled))
    mesh = cfg.mesh
    if options.mesh is False:
        mesh = replace(mesh, enabled=False)
    if options.max_triangles:
        mesh = replace(mesh, max_triangles=options.max_triangles)
    scale = replace_known(cfg.scale, options.scale) if options.scale else cfg.scale
    return cfg.replace(masks=masks, mesh=mesh, scale=scale)
