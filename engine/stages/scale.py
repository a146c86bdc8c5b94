"""True scale, orientation and dimensions of the product.

Structure from motion places cameras and points in arbitrary units. This stage finds how many
metres one unit is, from (in order of precedence):

1. **A known distance**: two points the user picked in the 3D view and the millimetres between
   them.
2. **A known dimension**: the product's width, depth or height as the user measured it.
3. **Printed ArUco markers** of known size lying in the scene. Each marker is detected in every
   registered photo (:class:`cv2.aruco.ArucoDetector`); its four corners are then refined by
   fitting straight lines to the sub-pixel positions of the marker's four outer edges (about
   0.03 px on the synthetic scenes, where OpenCV's own corner refinement is 0.2 px off and
   biased inwards), undistorted with the photo's COLMAP camera and triangulated from all the
   views that agree (RANSAC over view pairs, then Gauss-Newton on the reprojection error).
   ``metres_per_unit = marker side / median triangulated side``.

Entered measurements win over markers (the user typed them for this product); the markers still
give the floor's orientation and cross-check the entered scale.

The product frame puts the origin at the centre of the product's base, ``+Z`` up and ``X``
along the longest side of the minimal-area rectangle around the product's footprint. Up is the
markers' normal when markers lie on the floor (their plane is then also the base); otherwise
the cameras' ring axis (:func:`engine.geometry.up_direction`), tilted by up to
:data:`MAX_UP_REFINE_DEG` to the product's own axis when that clearly shrinks its box
(:func:`refine_up`). Width x depth x height are the box's sides along ``X``, ``Y`` and ``Z``;
each end of an extent is a flat face's median position when the points there form one, else a
trimmed percentile (:func:`robust_extent`), so neither stray points nor the halo dense stereo
leaves along sharp edges grow the box.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pycolmap

from engine.config import ScaleConfig
from engine.geometry import up_direction
from engine.io import read_image
from engine.io.decode import ImageReadError
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.types import CameraPose, ImageRecord

logger = logging.getLogger(__name__)

STAGE = "scale"
#: Product dimensions a known size can name, in the order of ``dimensions``.
DIMENSIONS = ("width", "depth", "height")
#: Percentiles bounding every robust extent (points beyond are treated as strays).
TRIM_PCT = (0.5, 99.5)
#: Outer band (fraction of the extent) examined for a flat face at each end of an extent.
FACE_BAND = 0.03
#: Percent of points beyond a trimmed edge whose density extrapolates it outwards.
EXTRAPOLATE_PCT = 1.0
#: A band whose robust spread is under this fraction of its width is a flat face.
FACE_SPREAD = 1.0 / 6.0
#: Directions (over 180 degrees) along which the footprint is trimmed before the rectangle fit.
FOOTPRINT_DIRECTIONS = 90
#: A marker view whose corners reproject further than this (pixels, RMS) is an outlier.
MAX_REPROJ_PX = 2.0
#: A triangulated marker whose sides differ from their mean by more than this is rejected.
MAX_SIDE_SPREAD = 0.05
#: Markers whose normal is further than this from the cameras' up are not taken as the floor.
MAX_FLOOR_TILT_DEG = 30.0
#: Largest tilt (degrees) :func:`refine_up` applies to the cameras' up direction.
MAX_UP_REFINE_DEG = 4.0
#: Relative box-volume gain a tilt must bring to be kept.
MIN_UP_GAIN = 0.005
#: Scales from two sources differing by more than this (fraction) are reported.
DISAGREEMENT = 0.02

NO_SCALE_NOTE = "no true scale: add a printed marker of known size or enter a known dimension"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class Markers:
    """Printed markers found in the photos and placed in 3D.

    Attributes
    ----------
    detections
        Image name -> marker id -> (4, 2) refined corner pixels (COLMAP convention, the
        top-left pixel's centre at (0.5, 0.5)), in ArUco corner order.
    corners
        Marker id -> (4, 3) triangulated corners in reconstruction units (only the markers
        placed in 3D).
    views
        Marker id -> the photos whose detection agreed with the triangulation.
    reprojection_px
        Marker id -> RMS reprojection error of its corners over ``views`` (pixels).
    ignored
        Marker id -> why it was not placed (plain words).
    """

    detections: dict[str, dict[int, np.ndarray]] = field(default_factory=dict, repr=False)
    corners: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    views: dict[int, tuple[str, ...]] = field(default_factory=dict)
    reprojection_px: dict[int, float] = field(default_factory=dict)
    ignored: dict[int, str] = field(default_factory=dict)

    def side_lengths(self) -> np.ndarray:
        """The four sides of every placed marker, (4 M,) in reconstruction units."""
        if not self.corners:
            return np.zeros(0)
        quads = np.array([self.corners[k] for k in sorted(self.corners)])
        return np.linalg.norm(np.roll(quads, -1, axis=1) - quads, axis=2).ravel()


@dataclass(frozen=True, eq=False)
class OrientedBox:
    """The product's upright bounding box in reconstruction coordinates.

    Attributes
    ----------
    origin
        Centre of the box's base (3,).
    axes
        (3, 3) rows ``X``, ``Y``, ``Z``: unit vectors along the width (longest horizontal side),
        the depth and up; a right-handed frame.
    size
        (3,) width, depth, height in reconstruction units.
    base
        Where the base came from: ``"floor"`` (the markers' plane) or ``"points"``.
    """

    origin: np.ndarray
    axes: np.ndarray
    size: np.ndarray
    base: str = "points"

    def transform(self, scale: float = 1.0) -> np.ndarray:
        """4x4 similarity from reconstruction coordinates to the box frame, times ``scale``."""
        out = np.eye(4)
        out[:3, :3] = scale * self.axes
        out[:3, 3] = -scale * self.axes @ self.origin
        return out


@dataclass(frozen=True, eq=False)
class ScaleResult:
    """True scale, product frame and dimensions.

    Attributes
    ----------
    source
        ``"aruco"``, ``"known_distance"``, ``"known_dimension"`` or ``"none"``.
    metres_per_unit
        Metres per reconstruction unit, or None without a true scale.
    transform
        4x4 similarity from reconstruction coordinates to the product frame (origin at the
        centre of the base, ``+Z`` up, ``X`` along the width), in metres when the scale is
        known, else in reconstruction units.
    dimensions_mm
        ``(width, depth, height)`` in millimetres, or None without a true scale or a product.
    dimensions_units
        ``(width, depth, height)`` in reconstruction units (empty without a product).
    markers
        Number of markers placed in 3D.
    error_pct
        Estimated uncertainty of the scale in percent (from the spread of the marker sides),
        or None when unknown.
    up
        Unit up vector in reconstruction coordinates.
    note
        What happened, in plain words (empty when there is nothing to say).
    box
        The product's upright box, or None without product points.
    marker_result
        The markers found (empty when none were looked for).
    scales
        Metres per unit from every source that gave one (the chosen one included).
    up_source
        Where ``up`` came from: ``"markers"`` (their plane), ``"support"`` (the plane the
        product stands on, found in the dense cloud by the mesh stage), ``"cameras"``
        (:func:`engine.geometry.up_direction`) or the cameras tilted by :func:`refine_up`.
    """

    source: str
    metres_per_unit: float | None
    transform: np.ndarray = field(repr=False)
    dimensions_mm: tuple[float, float, float] | None
    dimensions_units: tuple[float, ...]
    markers: int
    error_pct: float | None
    up: np.ndarray
    note: str = ""
    box: OrientedBox | None = field(default=None, repr=False)
    marker_result: Markers = field(default_factory=Markers, repr=False)
    scales: dict[str, float] = field(default_factory=dict)
    up_source: str = "cameras"

    def to_report(self) -> dict[str, Any]:
        """JSON-ready summary for report.json."""
        out: dict[str, Any] = {
            "source": self.source,
            "metres_per_unit": self.metres_per_unit,
            "dimensions_mm": None
            if self.dimensions_mm is None
            else [round(float(v), 2) for v in self.dimensions_mm],
            "dimensions_units": [float(v) for v in self.dimensions_units],
            "markers": int(self.markers),
            "error_pct": None if self.error_pct is None else round(float(self.error_pct), 3),
            "up": [float(v) for v in self.up],
            "up_source": self.up_source,
            "transform": np.asarray(self.transform, np.float64).tolist(),
            "note": self.note,
            "scales": {k: float(v) for k, v in self.scales.items()},
        }
        if self.box is not None:
            out["base"] = self.box.base
        if self.marker_result.reprojection_px:
            out["marker_reprojection_px"] = {
                str(k): round(float(v), 3) for k, v in self.marker_result.reprojection_px.items()
            }
        if self.marker_result.ignored:
            out["markers_ignored"] = {str(k): v for k, v in self.marker_result.ignored.items()}
        return out


def dimensions_text(dims_mm: Sequence[float]) -> str:
    """``(160, 100, 220)`` -> ``"160 x 100 x 220 mm"`` (one decimal under 100 mm)."""

    def mm(v: float) -> str:
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}".rstrip("0").rstrip(".")

    return " x ".join(mm(float(v)) for v in dims_mm) + " mm"


# --------------------------------------------------------------------------- marker detection


def _detector(dictionary: str) -> cv2.aruco.ArucoDetector:
    """ArUco detector of the named dictionary (``DICT_4X4_50`` ...)."""
    key = dictionary.strip().upper()
    if not key.startswith("DICT_"):
        key = "DICT_" + key
    if not hasattr(cv2.aruco, key):
        raise ValueError(
            f"unknown ArUco dictionary {dictionary!r}: use an OpenCV name such as DICT_4X4_50"
        )
    params = cv2.aruco.DetectorParameters()
    # Sub-pixel corners as a start; refine_corners does the accurate part.
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    return cv2.aruco.ArucoDetector(
        cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, key)), params
    )


def refine_corners(gray: np.ndarray, corners: np.ndarray, cells: int = 6) -> np.ndarray | None:
    """Sub-pixel marker corners from straight lines fitted to the marker's four outer edges.

    Along the middle 60% of each side, intensity profiles across the edge (0.4 of a marker cell
    to either side, bilinear) locate the edge by the area under the normalised step, which is
    unbiased for any symmetric blur; a line through those points (refitted without outliers)
    per side, and adjacent lines intersect at the corners.

    Parameters
    ----------
    gray
        (H, W) float32 greyscale image.
    corners
        (4, 2) approximate corners (OpenCV pixel convention), ArUco order.
    cells
        Cells across the marker including its black border (6 for 4x4 dictionaries).

    Returns
    -------
    numpy.ndarray or None
        (4, 2) refined corners, or None when an edge has too little contrast or too few pixels.
    """
    c = np.asarray(corners, np.float64).reshape(4, 2)
    centre = c.mean(0)
    lines = []
    for k in range(4):
        a, b = c[k], c[(k + 1) % 4]
        length = float(np.linalg.norm(b - a))
        if length < 2 * cells:
            return None
        t = (b - a) / length
        n = np.array([t[1], -t[0]])
        if n @ (a - centre) < 0:
            n = -n
        # cell size across this side: the neighbouring sides' lengths / cells
        across = 0.5 * (np.linalg.norm(c[(k + 2) % 4] - b) + np.linalg.norm(c[(k - 1) % 4] - a))
        half = 0.4 * across / cells
        s = np.linspace(0.2 * length, 0.8 * length, max(6, int(0.6 * length)))
        offs = np.linspace(-half, half, 21)
        pts = a[None, None, :] + s[:, None, None] * t + offs[None, :, None] * n
        prof = cv2.remap(
            gray,
            pts[..., 0].astype(np.float32),
            pts[..., 1].astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).astype(np.float64)
        black = prof[:, :4].mean(1, keepdims=True)
        white = prof[:, -4:].mean(1, keepdims=True)
        contrast = (white - black).ravel()
        good = contrast > max(10.0, 0.25 * float(np.median(contrast)))
        if good.sum() < 3:
            return None
        step = np.clip((prof - black) / np.maximum(white - black, 1e-6), 0.0, 1.0)
        edge = half - np.trapezoid(step, offs, axis=1)
        p = (a + s[:, None] * t + edge[:, None] * n)[good]
        for _ in range(2):
            m = p.mean(0)
            normal = np.linalg.svd(p - m)[2][1]
            r = (p - m) @ normal
            keep = np.abs(r) <= 3.0 * 1.4826 * np.median(np.abs(r)) + 0.05
            if keep.sum() < 3:
                return None
            p = p[keep]
        m = p.mean(0)
        normal = np.linalg.svd(p - m)[2][1]
        lines.append(np.array([normal[0], normal[1], -normal @ m]))
    out = []
    for k in range(4):
        h = np.cross(lines[(k - 1) % 4], lines[k])
        if abs(h[2]) < 1e-12:
            return None
        out.append(h[:2] / h[2])
    out = np.array(out)
    # a refinement that moved a corner by more than a cell went wrong: keep the detector's
    if np.max(np.linalg.norm(out - c, axis=1)) > max(1.0, np.linalg.norm(c[1] - c[0]) / cells):
        return None
    return out


def _colmap_camera(cam: CameraPose) -> pycolmap.Camera:
    colmap_cam = pycolmap.Camera.create_from_model_name(
        0, cam.model or "PINHOLE", float(cam.K[0, 0]), int(cam.width), int(cam.height)
    )
    if cam.params:
        colmap_cam.params = list(cam.params)
    else:
        colmap_cam = pycolmap.Camera.create_from_model_name(
            0, "PINHOLE", float(cam.K[0, 0]), int(cam.width), int(cam.height)
        )
        colmap_cam.params = [cam.K[0, 0], cam.K[1, 1], cam.K[0, 2], cam.K[1, 2]]
    return colmap_cam


def _normalised(cam: CameraPose, pixels: np.ndarray) -> np.ndarray:
    """Undistorted normalised image coordinates (x/z, y/z) of COLMAP-convention pixels."""
    if cam.model in ("PINHOLE", "SIMPLE_PINHOLE") or not cam.params:
        k = np.asarray(cam.K, np.float64)
        return (pixels - k[:2, 2]) / np.array([k[0, 0], k[1, 1]])
    return np.asarray(_colmap_camera(cam).cam_from_img(np.asarray(pixels, np.float64)))


def _triangulate(rays: np.ndarray, poses: np.ndarray, focal: np.ndarray) -> np.ndarray:
    """DLT then Gauss-Newton triangulation of one point from (V, 2) normalised observations.

    ``poses`` is (V, 3, 4) ``[R | t]``; ``focal`` (V,) weights the residuals into pixels.
    """
    a = np.concatenate(
        [rays[:, :1] * poses[:, 2] - poses[:, 0], rays[:, 1:2] * poses[:, 2] - poses[:, 1]]
    )
    x = np.linalg.svd(a)[2][-1]
    if abs(x[3]) < 1e-12:
        return np.full(3, np.nan)
    x = x[:3] / x[3]
    for _ in range(8):
        pc = poses[:, :, :3] @ x + poses[:, :, 3]
        z = pc[:, 2]
        if np.any(z <= 1e-12):
            break
        proj = pc[:, :2] / z[:, None]
        res = ((proj - rays) * focal[:, None]).ravel()
        # d(proj)/dX = (1/z) [I | -proj] R
        jac = np.empty((len(rays), 2, 3))
        for i in range(2):
            jac[:, i] = (poses[:, i, :3] - proj[:, i, None] * poses[:, 2, :3]) / z[:, None]
        jac = (jac * focal[:, None, None]).reshape(-1, 3)
        step = np.linalg.lstsq(jac, -res, rcond=None)[0]
        x = x + step
        if np.linalg.norm(step) < 1e-12 * max(1.0, np.linalg.norm(x)):
            break
    return x


def _reprojection_px(
    point: np.ndarray, rays: np.ndarray, poses: np.ndarray, focal: np.ndarray
) -> np.ndarray:
    pc = poses[:, :, :3] @ point + poses[:, :, 3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.linalg.norm(pc[:, :2] / z[:, None] - rays, axis=1) * focal
    return np.where(z > 1e-12, err, np.inf)


def _place_marker(
    obs: list[tuple[str, np.ndarray]], cameras: Mapping[str, CameraPose]
) -> tuple[np.ndarray, tuple[str, ...], float] | str:
    """Triangulate one marker's four corners from its detections, or say why not."""
    names = [n for n, _ in obs]
    rays = np.array([_normalised(cameras[n], px) for n, px in obs])  # (V, 4, 2)
    poses = np.array([np.hstack([cameras[n].R, cameras[n].t[:, None]]) for n in names])
    focal = np.array([0.5 * (cameras[n].K[0, 0] + cameras[n].K[1, 1]) for n in names])

    def solve(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pts = np.array([_triangulate(rays[idx, j], poses[idx], focal[idx]) for j in range(4)])
        if not np.all(np.isfinite(pts)):
            return pts, np.full(len(names), np.inf)
        err = np.array([_reprojection_px(pts[j], rays[:, j], poses, focal) for j in range(4)])
        return pts, np.sqrt(np.mean(err**2, axis=0))

    pairs = list(itertools.combinations(range(len(names)), 2))
    if len(pairs) > 300:
        rng = np.random.default_rng(0)
        pairs = [pairs[i] for i in rng.choice(len(pairs), 300, replace=False)]
    best: tuple[int, float, np.ndarray] | None = None
    for i, j in pairs:
        # a pair seeing the marker from nearly the same direction pins its depth poorly
        mid = rays[[i, j]].mean(axis=1)
        d = [poses[v, :, :3].T @ np.array([*mid[k], 1.0]) for k, v in enumerate((i, j))]
        cosang = float(d[0] @ d[1] / (np.linalg.norm(d[0]) * np.linalg.norm(d[1])))
        if len(names) > 2 and cosang > math.cos(math.radians(2.0)):
            continue
        _, err = solve(np.array([i, j]))
        inliers = err < MAX_REPROJ_PX
        score = (int(inliers.sum()), -float(np.sum(np.minimum(err, MAX_REPROJ_PX))))
        if best is None or score > best[:2]:
            best = (score[0], score[1], inliers)
    if best is None or best[0] < 2:
        return "its detections do not agree on one position (misread or moved between photos)"
    inliers = best[2]
    for _ in range(2):
        pts, err = solve(np.nonzero(inliers)[0])
        inliers = err < min(MAX_REPROJ_PX, max(0.5, 4.0 * float(np.median(err[inliers]))))
        if inliers.sum() < 2:
            return "its detections do not agree on one position (misread or moved between photos)"
    pts, err = solve(np.nonzero(inliers)[0])
    if not np.all(np.isfinite(pts)):
        return "its detections do not agree on one position"
    sides = np.linalg.norm(np.roll(pts, -1, axis=0) - pts, axis=1)
    diags = np.linalg.norm(pts[2:] - pts[:2], axis=1)
    if (
        np.max(np.abs(sides / sides.mean() - 1.0)) > MAX_SIDE_SPREAD
        or abs(diags.mean() / (sides.mean() * math.sqrt(2.0)) - 1.0) > MAX_SIDE_SPREAD
    ):
        return "its corners do not form a square (not flat, or misread)"
    kept = tuple(n for n, ok in zip(names, inliers, strict=True) if ok)
    return pts, kept, float(np.sqrt(np.mean(err[inliers] ** 2)))


def detect_markers(
    images: Sequence[ImageRecord],
    cameras: Mapping[str, CameraPose],
    dictionary: str = "DICT_4X4_50",
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> Markers:
    """Find printed ArUco markers in the registered photos and triangulate their corners.

    Parameters
    ----------
    images
        The photos (their working copies are read); photos without a camera are skipped.
    cameras
        Registered cameras by image name (sizes are the working copies' sizes).
    dictionary
        OpenCV ArUco dictionary name.
    progress
        Called after each photo with ``ProgressEvent("scale", i, n, ...)``.
    cancel
        Checked before each photo.

    Returns
    -------
    Markers
        Detections per photo, corners of the markers seen consistently in two or more photos,
        and the reason for every marker left out.

    Raises
    ------
    ValueError
        For an unknown dictionary name.
    """
    detector = _detector(dictionary)
    todo = [rec for rec in images if rec.name in cameras]
    detections: dict[str, dict[int, np.ndarray]] = {}
    for i, rec in enumerate(todo):
        if cancel is not None:
            cancel.raise_if_cancelled()
        cam = cameras[rec.name]
        try:
            rgb, _ = read_image(rec.working_path)
        except (ImageReadError, OSError) as exc:
            logger.warning("Markers: cannot read %s (%s); skipped.", rec.working_path, exc)
            continue
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        found, ids, _ = detector.detectMarkers(gray)
        per_image: dict[int, np.ndarray] = {}
        if ids is not None:
            grayf = gray.astype(np.float32)
            sx, sy = cam.width / gray.shape[1], cam.height / gray.shape[0]
            counts = np.bincount(ids.ravel())
            for quad, mid in zip(found, ids.ravel(), strict=True):
                if counts[mid] > 1:  # the same id twice in one photo: ambiguous
                    continue
                quad = quad.reshape(4, 2).astype(np.float64)
                fine = refine_corners(grayf, quad)
                px = (quad if fine is None else fine) + 0.5  # OpenCV -> COLMAP pixel centres
                per_image[int(mid)] = px * np.array([sx, sy])
        if per_image:
            detections[rec.name] = per_image
        progress(ProgressEvent(STAGE, i + 1, len(todo), f"looking for markers in {rec.name}"))
    return place_markers(detections, cameras)


def place_markers(
    detections: Mapping[str, Mapping[int, np.ndarray]], cameras: Mapping[str, CameraPose]
) -> Markers:
    """Triangulate markers from their corner pixels in several photos.

    Each marker's corners are triangulated from the pair of photos most others agree with
    (RANSAC over pairs; a photo agrees when the four corners reproject within
    :data:`MAX_REPROJ_PX` RMS), then refined over all agreeing photos. A marker seen in fewer
    than two photos, whose photos do not agree, or whose corners do not form a square is left
    out with the reason.

    Parameters
    ----------
    detections
        Image name -> marker id -> (4, 2) corner pixels (COLMAP convention), ArUco order.
    cameras
        Registered cameras by image name; detections in other images are ignored.

    Returns
    -------
    Markers
    """
    detections = {
        name: {int(k): np.asarray(v, np.float64).reshape(4, 2) for k, v in per.items()}
        for name, per in detections.items()
        if name in cameras
    }
    by_marker: dict[int, list[tuple[str, np.ndarray]]] = {}
    for name, per_image in detections.items():
        for mid, px in per_image.items():
            by_marker.setdefault(mid, []).append((name, px))
    corners, views, reproj, ignored = {}, {}, {}, {}
    for mid in sorted(by_marker):
        obs = by_marker[mid]
        if len(obs) < 2:
            ignored[mid] = f"seen in only one photo ({obs[0][0]})"
            continue
        placed = _place_marker(obs, cameras)
        if isinstance(placed, str):
            ignored[mid] = placed
            continue
        corners[mid], views[mid], reproj[mid] = placed
    for mid, why in ignored.items():
        logger.info("Marker %d ignored: %s.", mid, why)
    return Markers(detections, corners, views, reproj, ignored)


def marker_scale(markers: Markers, marker_size_mm: float) -> tuple[float, float] | None:
    """Metres per unit from the placed markers' sides, and its uncertainty in percent.

    The uncertainty is the relative spread (standard deviation) of all sides divided by the
    square root of the number of markers (the sides of one marker share its errors), at least
    the spread of the per-marker means over the same root.

    Returns
    -------
    tuple or None
        ``(metres_per_unit, error_pct)``, or None when no marker was placed.
    """
    sides = markers.side_lengths()
    if len(sides) == 0 or not marker_size_mm > 0:
        return None
    median = float(np.median(sides))
    n = len(markers.corners)
    spread = float(np.std(sides, ddof=1)) / median
    if n >= 2:
        means = sides.reshape(n, 4).mean(1)
        spread = max(spread, float(np.std(means, ddof=1)) / median)
    return marker_size_mm * 1e-3 / median, 100.0 * spread / math.sqrt(n)


def _marker_floor(
    markers: Markers, cameras: Sequence[CameraPose], up: np.ndarray
) -> tuple[np.ndarray, float] | None:
    """The floor's unit normal (towards the cameras) and height along it from the markers."""
    if not markers.corners:
        return None
    pts = np.concatenate([markers.corners[k] for k in sorted(markers.corners)])
    centre = pts.mean(0)
    normal = np.linalg.svd(pts - centre)[2][2]
    if cameras:
        above = np.mean([(c.center - centre) @ normal for c in cameras])
        normal = normal * (1.0 if above >= 0 else -1.0)
    elif normal @ up < 0:
        normal = -normal
    tilt = math.degrees(math.acos(float(np.clip(normal @ up, -1.0, 1.0))))
    if tilt > MAX_FLOOR_TILT_DEG:
        logger.info("Markers tilted %.0f deg from the cameras' up: not taken as the floor.", tilt)
        return None
    return normal, float(np.mean(pts @ normal))


# --------------------------------------------------------------------------- product box


def _horizontal_basis(up: np.ndarray) -> np.ndarray:
    """Two unit vectors spanning the plane perpendicular to ``up`` (rows)."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, up)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(up, x)])


def robust_extent(x: np.ndarray) -> tuple[float, float]:
    """Low and high edge of 1D positions, robust to stray points and to noise on flat faces.

    Each edge starts at the :data:`TRIM_PCT` percentile. When the points in the outer band
    (:data:`FACE_BAND` of the extent inside that percentile) are concentrated in a thin slab (a
    flat face seen edge-on: robust spread under :data:`FACE_SPREAD` of the band), the edge is
    that slab's median, which noise and the halo dense stereo leaves along sharp edges do not
    push outwards. Otherwise (curved or vertical sides) the trimmed points are put back by
    extrapolating the density of the next :data:`EXTRAPOLATE_PCT` percent of points outwards,
    exact for a uniform density (a wall seen end-on, a sphere) and 0.04% of the radius beyond
    the side of a cylinder.

    Parameters
    ----------
    x
        (N,) positions along one direction, N >= 1.

    Returns
    -------
    tuple of float
        ``(low, high)``.
    """
    x = np.asarray(x, np.float64)
    p_lo, p_hi = TRIM_PCT
    lo, hi, lo_in, hi_in = (
        float(v)
        for v in np.percentile(x, [p_lo, p_hi, p_lo + EXTRAPOLATE_PCT, p_hi - EXTRAPOLATE_PCT])
    )
    band = FACE_BAND * (hi - lo)
    out = []
    for edge, inner, inward in ((lo, lo_in, 1.0), (hi, hi_in, -1.0)):
        depth = inward * (x - edge)
        sel = x[(depth >= 0) & (depth <= band)]
        med = float(np.median(sel)) if len(sel) else edge
        if (
            band > 0
            and len(sel) >= 20
            and (1.4826 * float(np.median(np.abs(sel - med))) < FACE_SPREAD * band)
        ):
            out.append(med)
        else:
            out.append(edge - (inner - edge) * p_lo / EXTRAPOLATE_PCT)
    return out[0], out[1]


def footprint_rectangle(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimal-area rectangle around 2D points, robust to a few strays.

    The orientation comes from :func:`cv2.minAreaRect` of the points left after dropping those
    outside the :data:`TRIM_PCT` percentiles along any of :data:`FOOTPRINT_DIRECTIONS`
    directions; the sides then come from :func:`robust_extent` of all points along its axes.

    Returns
    -------
    centre, axes, size
        Rectangle centre (2,), unit axes (2, 2) rows (the first along the longer side), and
        side lengths (2,) longest first.
    """
    xy = np.asarray(xy, np.float64)
    shift = np.median(xy, axis=0)
    q = xy - shift
    ang = np.linspace(0.0, np.pi, FOOTPRINT_DIRECTIONS, endpoint=False)
    proj = q @ np.stack([np.cos(ang), np.sin(ang)])
    lo, hi = np.percentile(proj, TRIM_PCT, axis=0)
    keep = np.all((proj >= lo) & (proj <= hi), axis=1)
    kept = q[keep] if keep.sum() >= 3 else q
    span = float(np.max(np.abs(kept))) or 1.0
    _, _, deg = cv2.minAreaRect((kept / span).astype(np.float32))
    a = math.radians(deg)
    u = np.array([math.cos(a), math.sin(a)])
    v = np.array([-u[1], u[0]])
    u_lo, u_hi = robust_extent(q @ u)
    v_lo, v_hi = robust_extent(q @ v)
    size = np.array([u_hi - u_lo, v_hi - v_lo])
    centre = shift + u * (u_lo + u_hi) / 2 + v * (v_lo + v_hi) / 2
    if size[1] > size[0]:
        u, v, size = v, -u, size[::-1]
    return centre, np.stack([u, v]), size


def oriented_box(
    points: np.ndarray, up: np.ndarray, *, floor: float | None = None
) -> OrientedBox | None:
    """The product's upright box: base centre, axes and width x depth x height.

    Parameters
    ----------
    points
        (N, 3) product points (mesh vertices or a dense cloud, trimmed to the product).
    up
        Up direction (normalised here).
    floor
        Height of the floor along ``up`` (``points @ up``), when known from markers; it is taken
        as the base when the product's lowest points lie within 5% of its height above or
        below it (the product stands on that floor, and its lowest few millimetres are rarely
        reconstructed).

    Returns
    -------
    OrientedBox or None
        None with fewer than 10 finite points or a degenerate (flat or thin) set.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) < 10:
        return None
    up = np.asarray(up, np.float64)
    up = up / np.linalg.norm(up)
    low, top = robust_extent(pts @ up)
    base, base_src = low, "points"
    if floor is not None and abs(low - floor) <= 0.05 * max(top - floor, top - low):
        base, base_src = float(floor), "floor"
    height = float(top - base)
    basis = _horizontal_basis(up)
    centre2, axes2, size2 = footprint_rectangle(pts @ basis.T)
    if height <= 0 or size2[0] <= 0:
        return None
    x_axis = axes2[0] @ basis
    y_axis = np.cross(up, x_axis)
    origin = centre2 @ basis + base * up
    axes = np.stack([x_axis, y_axis, up])
    return OrientedBox(origin, axes, np.array([size2[0], size2[1], height]), base_src)


def _trimmed_volume(pts: np.ndarray, up: np.ndarray, dirs: np.ndarray) -> float:
    """Volume of the smallest upright box (percentile extents, footprint angle on a grid)."""
    h = pts @ up
    basis = _horizontal_basis(up)
    proj = (pts @ basis.T) @ dirs  # (N, 2 K): K directions, then the same turned 90 degrees
    lo, hi = np.percentile(proj, TRIM_PCT, axis=0)
    ext = hi - lo
    k = dirs.shape[1] // 2
    h_lo, h_hi = np.percentile(h, TRIM_PCT)
    return float(np.min(ext[:k] * ext[k:]) * (h_hi - h_lo))


def refine_up(points: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, bool]:
    """Tilt ``up`` by up to :data:`MAX_UP_REFINE_DEG` to the product's own upright axis.

    The cameras give the up direction to a degree or so (a hand-held ring is neither flat nor
    level), and a tilt of one degree moves the top of a 20 cm product 3.5 mm sideways, which
    widens its footprint. The upright box of a product standing on its base is smallest when
    ``up`` is its true axis (its volume grows in proportion to the tilt), so the tilt that
    minimises the volume of the percentile-trimmed box is searched on grids of 1, 0.25 and
    0.0625 degrees. It is kept only when it shrinks the volume by more than
    :data:`MIN_UP_GAIN` (round products have no preferred tilt).

    Returns
    -------
    up, changed
        The unit up vector and whether it was tilted.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    if len(pts) < 50:
        return up, False
    pts = pts[:: max(1, len(pts) // 2500)]
    pts = pts - np.median(pts, axis=0)
    basis = _horizontal_basis(up)
    ang = np.radians(np.arange(0.0, 90.0, 2.0))
    dirs = np.concatenate(
        [np.stack([np.cos(ang), np.sin(ang)]), np.stack([-np.sin(ang), np.cos(ang)])], axis=1
    )

    def tilted(a: float, b: float) -> np.ndarray:
        v = up + math.tan(math.radians(a)) * basis[0] + math.tan(math.radians(b)) * basis[1]
        return v / np.linalg.norm(v)

    start = _trimmed_volume(pts, up, dirs)
    best = (start, 0.0, 0.0)
    for step, reach in ((1.0, MAX_UP_REFINE_DEG), (0.25, 0.75), (0.0625, 0.1875)):
        ca, cb = best[1], best[2]
        offsets = np.arange(-reach, reach + 1e-9, step)
        for da, db in itertools.product(offsets, offsets):
            a, b = ca + da, cb + db
            if math.hypot(a, b) > MAX_UP_REFINE_DEG + 1e-9 or (da == 0 and db == 0):
                continue
            v = _trimmed_volume(pts, tilted(a, b), dirs)
            if v < best[0]:
                best = (v, a, b)
    if not best[0] < (1.0 - MIN_UP_GAIN) * start:
        return up, False
    return tilted(best[1], best[2]), True


# --------------------------------------------------------------------------- the stage


def _known_distance(cfg: ScaleConfig) -> tuple[float | None, str]:
    if not cfg.known_distance_mm > 0 and not cfg.known_points:
        return None, ""
    if not (cfg.known_distance_mm > 0 and math.isfinite(cfg.known_distance_mm)):
        return None, "known distance ignored: enter the distance in millimetres"
    pts = np.asarray(cfg.known_points, np.float64)
    if pts.shape != (2, 3) or not np.all(np.isfinite(pts)):
        return None, "known distance ignored: pick exactly two points in the 3D view"
    d = float(np.linalg.norm(pts[1] - pts[0]))
    if d <= 1e-12:
        return None, "known distance ignored: the two points picked are the same point"
    return cfg.known_distance_mm * 1e-3 / d, ""


def _known_dimension(cfg: ScaleConfig, box: OrientedBox | None) -> tuple[float | None, str]:
    if not cfg.known_dimension and not cfg.known_dimension_mm > 0:
        return None, ""
    which = cfg.known_dimension.strip().lower()
    if which not in DIMENSIONS or not (
        cfg.known_dimension_mm > 0 and math.isfinite(cfg.known_dimension_mm)
    ):
        return None, (
            "known dimension ignored: give width, depth or height and a size in millimetres"
        )
    if box is None:
        return None, "known dimension ignored: no product points to measure"
    units = float(box.size[DIMENSIONS.index(which)])
    if units <= 0:
        return None, f"known dimension ignored: the product has no {which}"
    return cfg.known_dimension_mm * 1e-3 / units, ""


@dataclass(frozen=True, eq=False)
class ScaleInputs:
    """What the scale stage measures.

    Attributes
    ----------
    cameras
        Registered cameras by image name.
    images
        The photos (searched for markers when ``cfg.marker_size_mm > 0``).
    points
        (N, 3) product geometry in reconstruction coordinates (mesh vertices or the dense
        cloud), already trimmed to the product.
    support
        The plane the product stands on, as the mesh stage reports it (``{"normal": [..],
        "level": ..}``, the normal pointing to the cameras' side): without markers it gives the
        product's up and the height of its base (a table or sheet fused from thousands of points
        is level to a fraction of a degree; the cameras' up is good to a degree or so). None
        when none was found.
    """

    cameras: Mapping[str, CameraPose]
    images: Sequence[ImageRecord]
    points: np.ndarray
    support: Mapping[str, Any] | None = None


def run(
    inputs: ScaleInputs,
    cfg: ScaleConfig,
    out_dir: Path | None = None,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> ScaleResult:
    """True scale, product frame and dimensions.

    Parameters
    ----------
    inputs
        The cameras, the photos, the product's points and the support it stands on
        (:class:`ScaleInputs`).
    cfg
        Marker size and dictionary, known distance, known dimension.
    out_dir
        Unused: the stage writes nothing (None; the argument keeps every stage's ``run``
        alike). The caller records the result in the report.
    progress
        ``ProgressEvent("scale", ...)`` per photo searched, then one when done.
    cancel
        Checked before each photo.

    Returns
    -------
    ScaleResult
        Never raises for bad settings: they leave a note and no scale from that source.
    """
    cameras, images, points, support = inputs.cameras, inputs.images, inputs.points, inputs.support
    cams = list(cameras.values())
    up = up_direction(cams)
    notes: list[str] = []
    markers = Markers()
    floor: float | None = None
    searched = False
    if cfg.marker_size_mm > 0:
        try:
            markers = detect_markers(
                images, cameras, cfg.marker_dictionary, progress=progress, cancel=cancel
            )
            searched = True
        except ValueError as exc:
            notes.append(str(exc))
        plane = _marker_floor(markers, cams, up)
        if plane is not None:
            up, floor = plane
    up_source = "markers" if floor is not None else "cameras"
    if floor is None and support is not None:
        normal = np.asarray(support["normal"], np.float64)
        if np.all(np.isfinite(normal)) and np.linalg.norm(normal) > 0:
            up = normal / np.linalg.norm(normal)
            floor = float(support["level"])
            up_source = "support"
    if floor is None:
        up, tilted = refine_up(points, up)
        if tilted:
            up_source = "cameras, tilted to the product's axis"
    box = oriented_box(points, up, floor=floor)

    scales: dict[str, float] = {}
    errors: dict[str, float | None] = {}
    value, why = _known_distance(cfg)
    if value is not None:
        scales["known_distance"], errors["known_distance"] = value, None
    if why:
        notes.append(why)
    value, why = _known_dimension(cfg, box)
    if value is not None:
        scales["known_dimension"], errors["known_dimension"] = value, None
    if why:
        notes.append(why)
    if searched:
        found = marker_scale(markers, cfg.marker_size_mm)
        if found is not None:
            scales["aruco"], errors["aruco"] = found
        notes.extend(_marker_notes(markers, cfg, found is not None))

    source = next(
        (s for s in ("known_distance", "known_dimension", "aruco") if s in scales), "none"
    )
    mpu = scales.get(source)
    if source == "none":
        notes.insert(0, NO_SCALE_NOTE)
    else:
        for other, value in scales.items():
            diff = value / scales[source] - 1.0
            if other != source and abs(diff) > DISAGREEMENT:
                notes.append(
                    f"the scale from the {_SOURCE_WORDS[other]} differs by "
                    f"{100 * diff:+.1f}% from the one used ({_SOURCE_WORDS[source]})"
                )
    if box is None:
        if len(np.asarray(points).reshape(-1, 3)) == 0 or source != "none":
            notes.append("no product points to measure")
        basis = _horizontal_basis(up)
        frame = OrientedBox(np.zeros(3), np.stack([basis[0], basis[1], up]), np.zeros(3))
        transform = frame.transform(mpu or 1.0)
        dims_units: tuple[float, ...] = ()
        dims_mm = None
    else:
        transform = box.transform(mpu or 1.0)
        dims_units = tuple(float(v) for v in box.size)
        dims_mm = None if mpu is None else tuple(float(v) * mpu * 1e3 for v in box.size)
    note = "; ".join(dict.fromkeys(n for n in notes if n))
    result = ScaleResult(
        source=source,
        metres_per_unit=mpu,
        transform=transform,
        dimensions_mm=dims_mm,  # type: ignore[arg-type]
        dimensions_units=dims_units,
        markers=len(markers.corners),
        error_pct=errors.get(source),
        up=np.asarray(up, np.float64),
        note=note[:1].upper() + note[1:] if note else "",
        box=box,
        marker_result=markers,
        scales=scales,
        up_source=up_source,
    )
    summary = (
        f"{dimensions_text(dims_mm)} ({source})"
        if dims_mm is not None
        else (result.note or "no dimensions")
    )
    progress(ProgressEvent(STAGE, 1, 1, summary))
    logger.info("Scale: %s%s", source, f", {summary}" if dims_mm is not None else "")
    return result


_SOURCE_WORDS = {
    "aruco": "markers",
    "known_distance": "known distance",
    "known_dimension": "known dimension",
}


def _marker_notes(markers: Markers, cfg: ScaleConfig, placed: bool) -> list[str]:
    """Plain words about the marker search."""
    notes = []
    seen = sorted({m for per in markers.detections.values() for m in per})
    size = f"{cfg.marker_size_mm:g} mm {cfg.marker_dictionary}"
    if not seen:
        notes.append(
            f"no printed marker ({size}) found in the photos: check that it is in "
            "view, flat, printed at that size and from that dictionary"
        )
    elif not placed:
        notes.append(
            f"markers {', '.join(map(str, seen))} were found but none could be placed "
            "in 3D: each must be seen, unmoved, in two or more photos"
        )
    for mid, why in sorted(markers.ignored.items()):
        notes.append(f"marker {mid} ignored: {why}")
    return notes
