"""Single-photo mode: one photo in, a 2.5D coloured relief of the product out.

With one photo there is no stereo: the depth comes from the monocular network alone, which gives
inverse depth up to an unknown scale and shift. The relief is therefore *relative*: honest about
its shape's order (nearer / farther) and smoothness, not about its true size or true thickness,
and the back of the product is never seen.

How the relief is made
    1. The network's relative inverse depth ``r`` is normalised over the foreground to
       ``u`` in [0, 1] (1st and 99th percentiles; 1 is the nearest part, 0 the farthest).
    2. Depth is ``(1 + k) / (u + k)`` with ``k = 1 / (depth_ratio - 1)``: the nearest part is at
       depth 1.0, the farthest foreground part at ``depth_ratio`` (default 1.4). This is an
       inverse-depth-linear map, as the network's output is.
    3. Pixels are back-projected through a pinhole camera: the EXIF focal prior (or the given
       ``focal_px``), else 1.2 x the longest side; principal point at the image centre; the
       camera is the world frame (identity pose, OpenCV axes: x right, y down, z forward).

Foreground
    The mask when one is given or found beside the photo (as ingest finds them). Without one,
    the farthest background is dropped: Otsu's threshold on the normalised inverse depth of the
    whole image splits near from far, the largest connected near region is kept and its holes
    filled. When that split is not credible (under 0.5 % or over 99.5 % of the image) every
    pixel is kept.

Normals come from the depth gradient of the back-projected point map, turned to face the camera.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from engine.io import binarize_mask, focal_prior, read_image, read_mask
from engine.io.depthmaps import depth_map_path, save_depth_map
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.stages.depth_prior import Estimator, model_info_dict
from engine.stages.ingest import find_mask
from engine.types import ORIGIN_NONE, ORIGIN_PRIOR, CameraPose, DepthMap, ImageRecord, PointCloud

logger = logging.getLogger(__name__)

STAGE = "single_photo"
#: What the user should know about a single-photo result (shown in the report and viewer).
NOTE = (
    "Single-photo relief: depth is relative (no true scale); the back of the product is not seen."
)
#: Focal guess (x the longest side) when EXIF gives none (as the SfM default).
DEFAULT_FOCAL_FACTOR = 1.2
#: Farthest kept point's depth relative to the nearest one's.
DEFAULT_DEPTH_RATIO = 1.4
#: A threshold foreground outside this fraction of the image is not believed.
MIN_FOREGROUND, MAX_FOREGROUND = 0.005, 0.995
#: Confidence stored with the relief's depths (a prior, not a measurement).
RELIEF_CONFIDENCE = 0.5


@dataclass(frozen=True)
class SinglePhotoConfig:
    """Settings of a single-photo relief.

    Not part of :class:`engine.config.PipelineConfig`: a run makes a relief only when a single
    photo is usable, with that photo's own focal prior.

    Attributes
    ----------
    focal_px
        Focal length in pixels of the photo as read (after ``max_size``); None uses the EXIF
        focal prior, else 1.2 x the longest side.
    max_size
        Longest side the photo is read at (None: full size); one point per pixel.
    depth_ratio
        Depth of the farthest foreground point relative to the nearest.
    """

    focal_px: float | None = None
    max_size: int | None = 1024
    depth_ratio: float = DEFAULT_DEPTH_RATIO


@dataclass(frozen=True, eq=False)
class SinglePhotoInputs:
    """The photo a relief is made of.

    Attributes
    ----------
    photo
        The photo (any format :func:`engine.io.read_image` reads), or an ingested
        :class:`~engine.types.ImageRecord` (its working copy, focal prior and mask are used).
    mask
        Product mask (bool or 0/255 array, or a mask file); None looks for one beside the photo
        as ingest does, else separates the product by depth.
    """

    photo: Path | str | ImageRecord
    mask: np.ndarray | Path | str | None = None


@dataclass(frozen=True)
class SinglePhotoResult:
    """A single photo's relief.

    Attributes
    ----------
    cloud
        Coloured points with normals (float32 xyz in relative units: the nearest part at
        depth 1.0).
    camera
        The photo's pinhole camera, identity pose (the world frame is the camera's).
    note
        :data:`NOTE`: what this result is not.
    image_name
        The photo's file name.
    depth
        (H, W) float32 relief depth, 0 off the foreground.
    foreground
        (H, W) bool pixels kept.
    foreground_source
        ``"mask"``, ``"threshold"`` or ``"all"``.
    focal_px, focal_source
        Focal length used (pixels of this image) and where it came from: ``"given"``,
        ``"exif_35mm"``, ``"exif_sensor"`` or ``"default"``.
    model
        The depth network's :meth:`~engine.models.ModelInfo.to_dict` (or its class name).
    depth_path
        The relief saved as a depth map (``engine.io.depthmaps``) in the output folder.
    """

    cloud: PointCloud
    camera: CameraPose
    note: str
    image_name: str
    depth: np.ndarray = field(repr=False)
    foreground: np.ndarray = field(repr=False)
    foreground_source: str
    focal_px: float
    focal_source: str
    model: dict[str, Any] = field(default_factory=dict)
    depth_path: Path | None = None

    def to_report(self) -> dict[str, Any]:
        """report.json's ``stages.single_photo``."""
        return {
            "points": len(self.cloud),
            "foreground": self.foreground_source,
            "focal_source": self.focal_source,
            "note": self.note,
        }


def _normalise(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Map ``values`` to [0, 1] by their 1st / 99th percentiles over ``where`` (0.5 if flat)."""
    sample = values[where & np.isfinite(values)]
    if sample.size == 0:
        return np.full(values.shape, 0.5, np.float32)
    lo, hi = np.percentile(sample, [1.0, 99.0])
    if not hi - lo > 1e-12 * max(abs(float(hi)), 1e-30):
        return np.full(values.shape, 0.5, np.float32)
    out = (np.nan_to_num(values, nan=float(lo)) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def threshold_foreground(u: np.ndarray) -> np.ndarray | None:
    """Near-region foreground of a normalised inverse depth (1 = near), or None if unclear.

    Otsu's threshold splits near from far; the largest connected near region is kept and its
    holes filled.

    Parameters
    ----------
    u
        (H, W) inverse depth normalised to [0, 1].

    Returns
    -------
    numpy.ndarray or None
        bool (H, W), or None when the split keeps under 0.5 % or over 99.5 % of the image.
    """
    img = np.round(np.clip(u, 0.0, 1.0) * 255.0).astype(np.uint8)
    if int(img.max()) == int(img.min()):
        return None
    t, _ = cv2.threshold(img, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    near = img > t
    labels, count = ndimage.label(near)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    fg = labels == (1 + int(np.argmax(sizes)))
    fg = ndimage.binary_fill_holes(fg)
    frac = float(fg.mean())
    if not MIN_FOREGROUND <= frac <= MAX_FOREGROUND:
        return None
    return fg


def relief_depth(u: np.ndarray, depth_ratio: float = DEFAULT_DEPTH_RATIO) -> np.ndarray:
    """Depth from normalised inverse depth: ``(1 + k) / (u + k)``, ``k = 1 / (ratio - 1)``.

    ``u = 1`` (nearest) gives 1.0 and ``u = 0`` (farthest) gives ``depth_ratio``.

    Parameters
    ----------
    u
        Normalised inverse depth in [0, 1].
    depth_ratio
        Depth of the farthest point relative to the nearest (> 1).

    Returns
    -------
    numpy.ndarray
        float32 depth, same shape.
    """
    if not depth_ratio > 1.0:
        raise ValueError(f"depth_ratio must be > 1, not {depth_ratio}")
    k = 1.0 / (depth_ratio - 1.0)
    return ((1.0 + k) / (np.asarray(u, np.float64) + k)).astype(np.float32)


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points (H, W, 3) of a depth map through pixel centres (COLMAP convention)."""
    h, w = depth.shape
    us, vs = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x = (us - K[0, 2]) / K[0, 0] * depth
    y = (vs - K[1, 2]) / K[1, 1] * depth
    return np.stack([x, y, depth], axis=-1).astype(np.float32)


def normals_from_points(points: np.ndarray) -> np.ndarray:
    """Unit normals (H, W, 3) of a point map from its image gradients, facing the camera.

    Degenerate pixels get ``(0, 0, -1)`` (towards the camera).
    """
    p = points.astype(np.float64)
    dy = np.gradient(p, axis=0)
    dx = np.gradient(p, axis=1)
    n = np.cross(dy, dx)  # towards the camera (-z) for a fronto-parallel plane
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    ok = norm[..., 0] > 1e-12
    n = np.where(ok[..., None], n / np.where(norm > 0, norm, 1.0), np.array([0.0, 0.0, -1.0]))
    flip = np.einsum("hwc,hwc->hw", n, p) > 0
    n[flip] *= -1.0
    return n.astype(np.float32)


def _photo_inputs(
    image: Path | str | ImageRecord, mask: np.ndarray | Path | str | None
) -> tuple[Path, str, np.ndarray | Path | str | None, tuple[float, int, str] | None]:
    """Photo path, name, mask (given or found) and an ingest focal prior (focal, width, source)."""
    if isinstance(image, ImageRecord):
        found = mask if mask is not None else image.mask_path
        prior = None
        if image.focal_px is not None:
            prior = (float(image.focal_px), image.width, image.focal_source)
        return image.working_path, image.name, found, prior
    path = Path(image)
    found = mask if mask is not None else find_mask(path)
    return path, path.name, found, None


def _load_mask(mask: np.ndarray | Path | str, width: int, height: int) -> np.ndarray:
    if isinstance(mask, np.ndarray):
        arr = mask.astype(np.uint8) * 255 if mask.dtype == bool else mask.astype(np.uint8)
    else:
        arr = read_mask(mask)
    return binarize_mask(arr, width, height) > 0


def run(
    inputs: SinglePhotoInputs,
    cfg: SinglePhotoConfig,
    out_dir: Path,
    *,
    estimator: Estimator,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> SinglePhotoResult:
    """Turn one photo into a coloured relief (2.5D point cloud) with relative depth.

    Parameters
    ----------
    inputs
        The photo and its mask, if any (:class:`SinglePhotoInputs`).
    cfg
        Focal length, working size and depth range (:class:`SinglePhotoConfig`).
    out_dir
        Folder where the relief is saved as a depth map (created).
    estimator
        The depth network (:func:`engine.models.load_depth_model`).
    progress, cancel
        ``single_photo`` events per step; the token is checked between steps.

    Returns
    -------
    SinglePhotoResult
        The cloud, its camera and :data:`NOTE`.

    Raises
    ------
    engine.io.ImageReadError
        When the photo (or its mask) cannot be read.
    engine.progress.Cancelled
        When the run was cancelled.
    """
    path, name, mask_src, record_prior = _photo_inputs(inputs.photo, inputs.mask)
    focal_px, max_size, depth_ratio = cfg.focal_px, cfg.max_size, cfg.depth_ratio
    total = 4

    def step(i: int, msg: str) -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress(ProgressEvent(STAGE, i, total, msg))

    step(0, f"Reading {name}")
    rgb, info = read_image(path, max_size)
    h, w = rgb.shape[:2]
    if focal_px is not None:
        f, f_source = float(focal_px), "given"
    elif record_prior is not None:
        f, f_source = record_prior[0] * w / record_prior[1], record_prior[2]
    else:
        prior, source = focal_prior(info, w, h)
        if prior is not None:
            f, f_source = float(prior), source
        else:
            f, f_source = DEFAULT_FOCAL_FACTOR * max(w, h), "default"
    fg_mask = _load_mask(mask_src, w, h) if mask_src is not None else None

    step(1, f"Estimating depth of {name}")
    rel = np.asarray(estimator.predict(rgb), np.float32)
    if rel.shape != (h, w):
        rel = cv2.resize(rel, (w, h), interpolation=cv2.INTER_LINEAR)

    step(2, "Building the relief")
    whole = np.ones((h, w), bool)
    if fg_mask is not None and fg_mask.any():
        fg, fg_source = fg_mask, "mask"
    else:
        fg = threshold_foreground(_normalise(rel, whole))
        fg_source = "threshold"
        if fg is None:
            fg, fg_source = whole, "all"
    u = _normalise(rel, fg)
    depth = np.where(fg, relief_depth(u, depth_ratio), 0.0).astype(np.float32)
    K = np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
    camera = CameraPose(name, np.eye(3), np.zeros(3), K, w, h, "PINHOLE", (f, f, w / 2.0, h / 2.0))
    points = backproject(np.where(fg, depth, relief_depth(u, depth_ratio)), K)
    normals = normals_from_points(points)
    keep = fg & (depth > 0)
    cloud = PointCloud(
        np.ascontiguousarray(points[keep], np.float32),
        np.ascontiguousarray(rgb[keep], np.uint8),
        np.ascontiguousarray(normals[keep], np.float32),
    )

    step(3, f"Saving the relief of {name}")
    out_dir = Path(out_dir)
    depth_path = depth_map_path(out_dir, name)
    origin = np.where(keep, ORIGIN_PRIOR, ORIGIN_NONE).astype(np.uint8)
    conf = np.where(keep, RELIEF_CONFIDENCE, 0.0).astype(np.float32)
    dm = DepthMap(name, camera, depth, conf, rgb, fg if fg_source == "mask" else None, origin)
    model = model_info_dict(estimator)
    save_depth_map(
        depth_path,
        dm,
        {
            "single_photo": True,
            "note": NOTE,
            "focal_source": f_source,
            "foreground_source": fg_source,
            "depth_ratio": depth_ratio,
            "model": model,
        },
    )
    progress(ProgressEvent(STAGE, total, total, f"Relief of {name}: {len(cloud)} points"))
    logger.info(
        "Single-photo relief of %s: %d points (foreground from %s, focal %.0f px from %s)",
        name,
        len(cloud),
        fg_source,
        f,
        f_source,
    )
    return SinglePhotoResult(
        cloud=cloud,
        camera=camera,
        note=NOTE,
        image_name=name,
        depth=depth,
        foreground=fg,
        foreground_source=fg_source,
        focal_px=f,
        focal_source=f_source,
        model=model,
        depth_path=depth_path,
    )
