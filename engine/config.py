"""Frozen, typed configuration: one dataclass per stage, nested in :class:`PipelineConfig`.

Named presets (``preview``, ``standard``, ``high``) are built by :func:`preset`. The resolved
config is saved as ``config.json`` in every run folder. pycolmap options are built from these
only at the stage boundary (engine/stages/sfm.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PRESETS = ("preview", "standard", "high")
Device = Literal["auto", "cpu", "cuda"]


#: Longest side in pixels below which a photo is too small to reconstruct from: SIFT finds too
#: few features in it and SfM would grind through hundreds of thumbnails for nothing.
MIN_PHOTO_SIDE = 160


@dataclass(frozen=True)
class IngestConfig:
    """How photos are read and prepared."""

    max_image_size: int = 1600
    """Longest side of the working copies in pixels (originals are never changed)."""
    recursive: bool = True
    """Descend into sub-folders of the given folders."""
    min_images: int = 2
    """Fewer usable photos than this is an error."""
    max_pixels: int = 250_000_000
    """Refuse to decode images larger than this (decompression-bomb guard)."""
    min_side: int = 0
    """Photos whose longest side is below this many pixels are skipped as too small to
    reconstruct (thumbnails); 0: no limit. A run uses at least ``MIN_PHOTO_SIDE``."""


@dataclass(frozen=True)
class SfMConfig:
    """Structure from motion (pycolmap) settings."""

    max_num_features: int = 4096
    """SIFT features per image on the first attempt."""
    first_octave: int | None = None
    """SIFT first octave; -1 upsamples (slower, more features). None: -1 for photos whose
    longest side is at most ``upsample_below`` pixels, else 0."""
    upsample_below: int = 1200
    """Longest side under which ``first_octave=None`` upsamples."""
    matcher: Literal["auto", "exhaustive", "sequential", "retrieval"] = "auto"
    """``auto``: exhaustive for small sets, ``retrieval`` for larger ones. ``sequential``:
    capture-order neighbours with ring links and loop closure; ``retrieval``: each photo with
    the photos that look most like it, plus its capture-order neighbours
    (:mod:`engine.stages.pairs`)."""
    exhaustive_max_images: int = 30
    """Sets up to this size are matched exhaustively under ``auto``; larger ones by retrieval
    pairs. Most pairs of a ring shoot never verify (the synthetic box: 198 of 630; lego: 323 of
    1,128), and retrieval pairs halved the matching on lego and socketed_axe with the same
    cameras (bench/BENCHMARKS.md). The strong retry still matches every pair up to
    ``sfm.RETRY_EXHAUSTIVE_MAX_IMAGES`` photos."""
    sequential_overlap: int = 12
    """Neighbours each image is matched with under sequential matching."""
    retrieval_neighbours: int = 20
    """Most similar photos each photo is matched with under retrieval matching."""
    retrieval_overlap: int = 5
    """Capture-order neighbours each photo is also matched with under retrieval matching."""
    max_pairs: int = 20_000
    """Cap on image pairs matched for large sets."""
    camera_model: Literal["auto", "SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "OPENCV"] = "auto"
    """``auto``: SIMPLE_RADIAL with the EXIF focal prior, SIMPLE_PINHOLE on retry."""
    default_focal_factor: float = 1.2
    """Focal guess (x the longest side) when EXIF gives none."""
    min_registered_fraction: float = 0.8
    """Below this fraction of registered images, retry with stronger settings."""
    min_placed_fraction: float = 0.5
    """Below this fraction of photos placed by the kept model, the stage stops with a reason
    (exit 3) rather than hand on a model of a small part of the set: on the hard synthetic
    shoots such models were also wrong (a small bottle: 10 of 24 placed, 2.2 deg off)."""
    retry: bool = True
    """Allow automatic retries."""
    global_mapper: bool = True
    """When the incremental mapper leaves photos out or its model fails its check, try
    pycolmap's global mapper (GLOMAP) on the same features and matches (seconds) before
    extracting features again; the checked model with most photos placed is kept."""
    refine_principal_point: bool = True
    """Refine the lens centre in a final bundle adjustment when the views are spread widely."""
    snapshot_every: int = 4
    """Emit a live-preview snapshot every this many newly registered images (0 = off)."""
    num_threads: int = -1
    """Threads for pycolmap (-1 = all cores)."""
    seed: int = 0
    """Random seed for pycolmap's RANSAC and mapper (reproducible runs)."""


@dataclass(frozen=True)
class DenseConfig:
    """Multi-view stereo (our torch plane sweep, engine/stages/dense.py)."""

    max_image_size: int = 800
    """Longest side of the depth maps in pixels (photos are downscaled, never upscaled)."""
    cpu_max_image_size: int = 560
    """Longest side of the depth maps when they are computed on the CPU (0: no CPU cap, use
    ``max_image_size``). 560 px is half the pixels of 800 px and about 0.6x the dense stage's
    time; on the synthetic scenes the cloud keeps F@2mm >= 0.93 with under 1.1% floaters (400 px:
    0.90 and 2.6%), and the web mesh is as close to the true surface (bench/BENCHMARKS.md,
    "End to end")."""
    num_sources: int = 5
    """Source views compared with each reference view."""
    top_k: int = 2
    """Matching costs averaged over the best ``top_k`` sources per pixel (occlusion-robust)."""
    num_depths: int = 48
    """Depth hypotheses of the coarsest level."""
    levels: int = 0
    """Coarse-to-fine levels (each halves the resolution of the one above); 0: as many as
    bring the coarsest level to about ``dense.COARSEST_SIDE`` pixels (3 at 800 px, 2 at 400
    to 560 px, 4 at 1600 px)."""
    refine_depths: int = 6
    """Hypotheses per pixel at each finer level, around the coarser level's estimate."""
    window: int = 5
    """NCC window side in pixels (odd)."""
    min_angle_deg: float = 3.0
    """Source views seeing the product under a smaller triangulation angle are not used."""
    max_angle_deg: float = 50.0
    """... nor under a larger one."""
    depth_margin: float = 0.15
    """Depth range = sparse points' depth range widened by this fraction on each side."""
    min_confidence: float = 0.05
    """Depths below this matching confidence are dropped (the prior may fill them); fusion's
    consistency check, not this, is what removes wrong depths."""
    min_texture: float = 1.0
    """Pixels whose NCC window varies less than this (grey levels, std) get no MVS depth."""
    backdrop_rim: bool = True
    """Drop depths that a plain backdrop's pixels took from the product's outline: a window
    that straddles the outline gives the backdrop beside it the product's depth (a dark or
    light fringe round the model). Within the coarsest level's window reach of a large region
    without depth, a pixel whose colour is the backdrop's there, not the product's nearby,
    loses its depth (``dense.backdrop_rim``). Views with a mask skip it: the mask already
    bounds the product (and a thin light part, lego's base plate seen edge-on, keeps its
    depth)."""
    max_batch_pixels: int = 0
    """Pixels x hypotheses x sources per batch; 0 sizes it to the device's free memory."""
    memory_budget_mb: float = 0.0
    """Memory the depth sweep may use at once, in MB (0: half the GPU's free memory, or about
    14 MB on the CPU, where small batches run fastest). A batch that still runs out of memory
    is halved and the view goes on with the same result; ``max_batch_pixels`` wins when
    set."""


@dataclass(frozen=True)
class DepthPriorConfig:
    """Monocular depth network (Depth-Anything-V2) filling where stereo is unsure."""

    enabled: bool = True
    """Use the prior when its weights are available (the run says when they are not)."""
    model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    """Hugging Face model id or a local folder holding the weights (safetensors)."""
    allow_download: bool = False
    """Download the weights when they are not found locally (needs internet)."""
    input_size: int = 518
    """Network input size (shorter side, multiple of 14)."""
    fill_below: float = 0.3
    """Pixels whose MVS confidence is below this take the aligned prior's depth."""
    max_residual: float = 0.05
    """Alignments whose median relative residual exceeds this are not used for the view."""


@dataclass(frozen=True)
class FuseConfig:
    """Depth-map fusion into one coloured cloud (engine/stages/fuse.py)."""

    min_consistent_views: int = 2
    """Other views whose depth must agree with a pixel's for it to be kept."""
    max_reproj_px: float = 1.0
    """Forward-backward reprojection error allowed for agreement (depth-map pixels)."""
    max_rel_depth: float = 0.01
    """Relative depth difference allowed for agreement."""
    min_confidence: float = 0.15
    """Pixels below this confidence are not fused."""
    voxel_px: float = 1.0
    """De-duplication voxel, in units of the median pixel footprint on the surface."""
    outlier_neighbors: int = 16
    """Neighbours used by the statistical outlier removal."""
    outlier_std: float = 2.5
    """Points farther than mean + this x std of neighbour distances are removed."""
    max_points: int = 3_000_000
    """Cap on the fused cloud's size (uniformly subsampled above it)."""


@dataclass(frozen=True)
class MaskConfig:
    """Product masks (engine/stages/masks.py).

    The backdrop, turntable and floor are left out of feature extraction, dense stereo and the
    mesh.
    """

    enabled: bool = True
    """Compute automatic masks for photos that have no mask file."""
    border: float = 0.04
    """Width of the image border band that models the backdrop (fraction of the side)."""
    max_side: int = 640
    """Masks are estimated at this longest side, then scaled to the working copy."""
    min_confidence: float = 0.5
    """Automatic masks less confident than this are not used (the whole photo is used)."""
    static_background: bool = True
    """Detect a fixed camera and backdrop with the product turning (a turntable shoot) and mask
    out what stays still from photo to photo."""
    override_dir: str = ""
    """Folder of masks painted by the user (``<image name>.png``, 255 = product); they win over
    mask files and automatic masks. Empty: none."""
    disabled: tuple[str, ...] = ()
    """Image names whose mask is switched off (the whole photo is used)."""
    model: str = ""
    """A segmentation model folder or Hugging Face id (a transformers semantic-segmentation
    checkpoint with a product/foreground class, safetensors only); empty: the weight-free
    method. A model that cannot be loaded falls back to the weight-free method, with the reason
    in the report."""
    allow_download: bool = False
    """Download ``model`` when it is not on this computer (needs internet); without it no
    network call is made."""


@dataclass(frozen=True)
class MeshConfig:
    """Surface from the dense cloud (engine/stages/mesh.py)."""

    enabled: bool = True
    """Build a mesh after fusion."""
    poisson_depth: int = 8
    """Screened Poisson octree depth (higher: more detail, more time). At 8 the finest cells
    are about 1/256 of the cloud's extent, about the edge length of a 100k-triangle web mesh of
    a product; 9 took 3x longer (Poisson and decimation) for the same distance to the true
    surface after decimation (bench/BENCHMARKS.md, "End to end")."""
    max_triangles: int = 100_000
    """Triangle budget of the web mesh (GLB/OBJ)."""
    texture_size: int = 2048
    """Side of the texture atlas in pixels (0: vertex colours only)."""
    max_glb_mb: float = 15.0
    """Size budget of mesh.glb; the texture is shrunk until it fits."""
    trim_min_views: float = 0.5
    """Vertices inside fewer than this fraction of the masks that should see them are cut."""


@dataclass(frozen=True)
class ScaleConfig:
    """True scale and dimensions (engine/stages/scale.py)."""

    marker_size_mm: float = 0.0
    """Side of the printed ArUco marker(s) in millimetres (0: do not look for markers)."""
    marker_dictionary: str = "DICT_4X4_50"
    """OpenCV ArUco dictionary of the markers."""
    known_distance_mm: float = 0.0
    """A distance the user measured between two points (``known_points``), in millimetres."""
    known_points: tuple[tuple[float, float, float], ...] = ()
    """Two points picked in the 3D view, in reconstruction coordinates."""
    known_dimension: str = ""
    """Which of the product's dimensions the user measured: ``"width"`` (the longest
    horizontal side), ``"depth"`` (the other horizontal side) or ``"height"``; empty: none."""
    known_dimension_mm: float = 0.0
    """The measured size of ``known_dimension`` in millimetres (0: none)."""


@dataclass(frozen=True)
class CoverageConfig:
    """Pre-flight checks and the coverage map (engine/stages/coverage.py)."""

    min_photos: int = 20
    """Fewer photos than this gets reshoot advice."""
    azimuth_bins: int = 12
    """Coverage map columns (30 degrees each by default)."""
    elevation_bins: int = 6
    """Coverage map rows from -90 to +90 degrees (30 degrees each by default)."""


@dataclass(frozen=True)
class ExportConfig:
    """What the run folder's exports contain."""

    point_budget: int = 300_000
    """Maximum points drawn in viewer.html."""
    product_name: str = ""
    """Title of the viewer page; defaults to the input folder's name."""
    show_cameras: bool = True
    """Cameras visible in the viewer when it opens (they can always be toggled)."""


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a run needs to know; saved as config.json."""

    preset: str = "standard"
    device: Device = "auto"
    stop_after: Literal["sparse", "dense"] = "dense"
    """Last compute stage; ``sparse`` stops after SfM (the preview preset)."""
    ingest: IngestConfig = field(default_factory=IngestConfig)
    sfm: SfMConfig = field(default_factory=SfMConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    depth_prior: DepthPriorConfig = field(default_factory=DepthPriorConfig)
    fuse: FuseConfig = field(default_factory=FuseConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    coverage: CoverageConfig = field(default_factory=CoverageConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> PipelineConfig:
        """Copy with top-level fields changed."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> PipelineConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys take defaults."""
        data = dict(data)
        nested = {
            "ingest": IngestConfig,
            "sfm": SfMConfig,
            "dense": DenseConfig,
            "depth_prior": DepthPriorConfig,
            "fuse": FuseConfig,
            "masks": MaskConfig,
            "mesh": MeshConfig,
            "scale": ScaleConfig,
            "coverage": CoverageConfig,
            "export": ExportConfig,
        }
        for key, cls in nested.items():
            if key in data:
                data[key] = cls(**{k: _tuples(v) for k, v in data[key].items()})
        return PipelineConfig(**data)

    def save(self, path: Path) -> None:
        """Write as indented JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the frozen dataclasses hold."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def parse_known_dimension(text: str) -> tuple[str, float]:
    """``height=250`` (or ``width=120mm``) -> ``("height", 250.0)``.

    Raises
    ------
    ValueError
        When ``text`` is not ``width=MM``, ``depth=MM`` or ``height=MM`` with MM > 0.
    """
    which, _, value = text.partition("=")
    which = which.strip().lower()
    value = value.strip().lower().removesuffix("mm").strip()
    try:
        mm = float(value)
    except ValueError:
        mm = 0.0
    if which not in ("width", "depth", "height") or not mm > 0:
        raise ValueError(
            f"'{text}' is not a dimension: write width=MM, depth=MM or height=MM, "
            "for example height=250"
        )
    return which, mm


def preset(name: str, **overrides: Any) -> PipelineConfig:
    """Build a named preset; ``overrides`` replace top-level fields (device, export ...).

    Raises
    ------
    ValueError
        For an unknown preset name.
    """
    if name == "preview":
        cfg = PipelineConfig(
            preset=name,
            stop_after="sparse",
            ingest=IngestConfig(max_image_size=1000),
            sfm=SfMConfig(max_num_features=2048, snapshot_every=2),
        )
    elif name == "standard":
        cfg = PipelineConfig(preset=name)
    elif name == "high":
        cfg = PipelineConfig(
            preset=name,
            ingest=IngestConfig(max_image_size=3200),
            sfm=SfMConfig(max_num_features=8192, exhaustive_max_images=100),
            dense=DenseConfig(max_image_size=1600, cpu_max_image_size=0),
            mesh=MeshConfig(poisson_depth=9),
        )
    else:
        raise ValueError(f"Unknown preset {name!r}: choose one of {', '.join(PRESETS)}.")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
