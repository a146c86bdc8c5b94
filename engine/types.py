"""Plain data passed between stages. No behaviour beyond small conveniences."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ImageRecord:
    """One usable input photo and its decoded, oriented, downscaled working copy.

    Attributes
    ----------
    name
        Unique image name: the file's path relative to the input root (POSIX, usually just the
        file name). This is the image name in the COLMAP model.
    source
        The original file (never modified, never exported).
    working_path
        Working copy: EXIF orientation applied, downscaled to the preset's size, 8-bit RGB.
    width, height
        Working copy size in pixels.
    original_width, original_height
        Size of the decoded, oriented original.
    camera_key
        Images with the same key share intrinsics (make, model, lens, focal, size).
    focal_px
        Focal length prior in working-copy pixels, or None when EXIF gives none.
    focal_source
        Where ``focal_px`` came from: ``"exif_sensor"``, ``"exif_35mm"``, ``"none"``.
    make, model, lens
        EXIF camera description ("" when absent).
    sharpness
        Variance of the Laplacian of a greyscale copy at an 800 px long side (higher is
        sharper; comparable across photo sizes).
    dark_fraction, bright_fraction
        Fractions of pixels clipped to black / white.
    sha256
        Hash of the original file's bytes (exact-duplicate detection).
    mask_path
        Foreground mask (255 = product) at working size, when one is known.
    """

    name: str
    source: Path
    working_path: Path
    width: int
    height: int
    original_width: int
    original_height: int
    camera_key: str
    focal_px: float | None = None
    focal_source: str = "none"
    make: str = ""
    model: str = ""
    lens: str = ""
    sharpness: float = 0.0
    dark_fraction: float = 0.0
    bright_fraction: float = 0.0
    sha256: str = ""
    mask_path: Path | None = None
    mask_source: str = ""
    """Where ``mask_path`` came from: ``"file"`` (beside the photo), ``"painted"`` (by the
    user), ``"automatic"`` (the border backdrop model), ``"turntable"`` (the still backdrop of a
    turntable shoot), ``"model"`` (a segmentation network); ``""`` without a mask."""

    @property
    def scale(self) -> float:
        """Working size / original size."""
        return self.width / self.original_width


@dataclass(frozen=True)
class SkippedFile:
    """An input file that was not used, with the reason in plain words."""

    path: str
    reason: str


@dataclass(frozen=True)
class IngestResult:
    """Output of the ingest stage."""

    images: tuple[ImageRecord, ...]
    skipped: tuple[SkippedFile, ...]
    image_dir: Path
    warnings: tuple[str, ...] = ()

    def to_report(self) -> dict[str, Any]:
        """report.json's ``inputs``: photos given and used, cameras, focal priors, each photo."""
        return {
            "photos_given": len(self.images) + len(self.skipped),
            "photos_used": len(self.images),
            "cameras": len({r.camera_key for r in self.images}),
            "focal_prior": sorted({r.focal_source for r in self.images}),
            "images": [
                {
                    "name": r.name,
                    "width": r.width,
                    "height": r.height,
                    "sharpness": round(r.sharpness, 1),
                }
                for r in self.images
            ],
        }


@dataclass(frozen=True)
class CameraPose:
    """A registered camera: world-to-camera ``x_cam = R @ x_world + t``, pinhole ``K``.

    OpenCV/COLMAP axes (x right, y down, z forward); ``K`` in COLMAP's pixel convention
    (centre of the top-left pixel at (0.5, 0.5)). ``params`` keeps the full COLMAP camera.
    """

    name: str
    R: np.ndarray
    t: np.ndarray
    K: np.ndarray
    width: int
    height: int
    model: str = "PINHOLE"
    params: tuple[float, ...] = ()

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return -self.R.T @ self.t


@dataclass(frozen=True)
class PointCloud:
    """Coloured points, immutable snapshot. ``xyz`` float32 (N,3), ``rgb`` uint8 (N,3)."""

    xyz: np.ndarray
    rgb: np.ndarray
    normals: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    @staticmethod
    def empty() -> PointCloud:
        """A cloud with no points."""
        return PointCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh, immutable snapshot.

    Attributes
    ----------
    vertices
        (N, 3) float64 positions (reconstruction units unless said otherwise).
    faces
        (M, 3) int32 vertex indices, counter-clockwise seen from outside.
    vertex_colors
        (N, 3) uint8 RGB, or None.
    uv
        (N, 2) float32 texture coordinates in [0, 1] (origin bottom-left, glTF flips), or None.
    texture
        (H, W, 3) uint8 RGB atlas that ``uv`` indexes, or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None
    uv: np.ndarray | None = None
    texture: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_triangles(self) -> int:
        """Number of faces."""
        return int(self.faces.shape[0])

    def __len__(self) -> int:
        return int(self.vertices.shape[0])


#: Where a depth-map pixel's depth came from (``DepthMap.origin``).
ORIGIN_NONE, ORIGIN_MVS, ORIGIN_PRIOR = 0, 1, 2


@dataclass(frozen=True, eq=False)
class DepthMap:
    """One view's depth map, in the undistorted pinhole camera it was computed for.

    Attributes
    ----------
    name
        Image name (as in the sparse model).
    camera
        Pinhole camera at the depth map's resolution: ``K`` scaled, no distortion,
        ``width``/``height`` equal to the arrays' shape, pose as in the sparse model.
    depth
        float32 (H, W) camera-z depth in model units; 0 where there is no depth.
    confidence
        float32 (H, W) in [0, 1]; 0 where there is no depth.
    rgb
        uint8 (H, W, 3) undistorted colour image at this resolution.
    mask
        bool (H, W) product foreground, or None when no mask is known.
    origin
        uint8 (H, W): :data:`ORIGIN_NONE`, :data:`ORIGIN_MVS` or :data:`ORIGIN_PRIOR` per pixel.
    """

    name: str
    camera: CameraPose
    depth: np.ndarray = field(repr=False)
    confidence: np.ndarray = field(repr=False)
    rgb: np.ndarray = field(repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)
    origin: np.ndarray | None = field(default=None, repr=False)

    @property
    def valid(self) -> np.ndarray:
        """Pixels with a depth, bool (H, W)."""
        return self.depth > 0


@dataclass(frozen=True)
class SparseModel:
    """Output of the SfM stage.

    Attributes
    ----------
    path
        Folder holding the COLMAP binary model (cameras.bin, images.bin, points3D.bin).
    cameras
        Registered cameras by image name.
    points
        Sparse coloured points.
    unregistered
        Image name -> reason it could not be placed.
    attempts
        One summary dict per SfM attempt (settings, registered count, seconds).
    """

    path: Path
    cameras: dict[str, CameraPose]
    points: PointCloud
    unregistered: dict[str, str] = field(default_factory=dict)
    attempts: tuple[dict[str, Any], ...] = ()
    visibility: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Image name -> int64 indices into ``points`` of the sparse points it observes (SfM tracks);
    empty when unknown (then stages fall back to projecting the points)."""
    check: dict[str, Any] = field(default_factory=dict)
    """The kept model's check against its verified photo pairs
    (:meth:`engine.stages.sfm_check.ModelCheck.to_report`, plus the ``mapper``); empty when
    unknown."""

    @property
    def num_registered(self) -> int:
        """Number of registered images."""
        return len(self.cameras)

    def to_report(self, images: int) -> dict[str, Any]:
        """report.json's ``stages.sfm`` (``images``: how many photos SfM was given)."""
        return {
            "registered": self.num_registered,
            "images": images,
            "points": len(self.points),
            "attempts": list(self.attempts),
            "check": self.check,
        }


@dataclass
class RunReport:
    """What ``report.json`` holds. Filled in by the pipeline as stages finish."""

    vitrine_version: str
    preset: str
    device: str
    inputs: dict[str, Any] = field(default_factory=dict)
    registered: list[str] = field(default_factory=list)
    unregistered: dict[str, str] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Plain-words facts about the run that are not problems (a turntable shoot was detected)."""
    advice: list[str] = field(default_factory=list)
    """Reshoot advice: pre-flight findings and coverage gaps, most useful first."""
    dimensions_mm: list[float] | None = None
    frame: dict[str, Any] | None = None
    """The product's frame: ``up`` (unit, in the sparse model's frame) and ``glb_from_sparse``
    (4x4 similarity from the sparse model's frame to mesh.glb's, +y up, base on y = 0)."""
    outputs: dict[str, int] = field(default_factory=dict)
    status: str = "running"
