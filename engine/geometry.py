"""Small geometry helpers shared by stages, tests and benchmarks.

The similarity alignment and pose-error metrics live here once, so tests and benchmarks score
reconstructions the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.types import CameraPose


def umeyama(
    src: np.ndarray, dst: np.ndarray, with_scale: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s * R @ src + t`` (Umeyama 1991).

    Parameters
    ----------
    src, dst
        (N, 3) corresponding points, N >= 3 and not collinear.
    with_scale
        Estimate the scale (otherwise ``s = 1``).

    Returns
    -------
    s, R, t
        Scale, rotation (3, 3) with det +1, translation (3,).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[0] < 3:
        raise ValueError("umeyama needs two (N, 3) arrays with N >= 3")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    rot = u @ sign @ vt
    var_s = (xs**2).sum() / len(src)
    s = float(np.trace(np.diag(d) @ sign) / var_s) if with_scale else 1.0
    t = mu_d - s * rot @ mu_s
    return s, rot, t


def rotation_angle_deg(rot: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees."""
    c = (np.trace(rot) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


@dataclass(frozen=True)
class PoseErrors:
    """Camera errors of an estimate against ground truth after similarity alignment.

    Attributes
    ----------
    matched
        Number of cameras present in both.
    rotation_deg
        Per-camera rotation error (degrees), in ``names`` order.
    center_error
        Per-camera centre distance in ground-truth units.
    names
        Image names compared.
    scale, rotation, translation
        The similarity mapping the estimate's world to the ground truth's.
    """

    matched: int
    rotation_deg: np.ndarray
    center_error: np.ndarray
    names: tuple[str, ...]
    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    @property
    def median_rotation_deg(self) -> float:
        """Median rotation error in degrees."""
        return float(np.median(self.rotation_deg))

    @property
    def median_center_error(self) -> float:
        """Median camera-centre error in ground-truth units."""
        return float(np.median(self.center_error))


def mean_rotation(rotations: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of rotation matrices (projection of their sum onto SO(3))."""
    u, _, vt = np.linalg.svd(np.sum(rotations, axis=0))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def align_cameras(
    estimate: Mapping[str, CameraPose], truth: Mapping[str, CameraPose], names: Sequence[str]
) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``x_true = s * A @ x_est + t`` mapping an estimated world to the true one.

    The rotation ``A`` is the mean of ``R_true_i^T R_est_i`` over cameras (orientations pin the
    rotation far better than centres, whose depth is the least certain part of a pose); scale
    and translation then fit the camera centres in least squares.
    """
    rot = mean_rotation(np.array([truth[n].R.T @ estimate[n].R for n in names]))
    c_est = np.array([estimate[n].center for n in names]) @ rot.T
    c_true = np.array([truth[n].center for n in names])
    d_est, d_true = c_est - c_est.mean(0), c_true - c_true.mean(0)
    s = float((d_est * d_true).sum() / (d_est**2).sum())
    t = c_true.mean(0) - s * c_est.mean(0)
    return s, rot, t


def pose_errors(
    estimate: Mapping[str, CameraPose], truth: Mapping[str, CameraPose], *, robust: bool = True
) -> PoseErrors:
    """Align estimated cameras to ground truth by their centres and measure pose errors.

    The similarity comes from :func:`align_cameras`, optionally refitted on the best 80% of
    cameras so one lost camera does not skew the rest. Rotation errors compare
    ``R_est @ A^T`` with ``R_true`` where ``A`` is the aligning rotation.

    Raises
    ------
    ValueError
        With fewer than 3 common cameras.
    """
    names = tuple(sorted(set(estimate) & set(truth)))
    if len(names) < 3:
        raise ValueError(f"need >= 3 common cameras to align, got {len(names)}")
    s, rot, t = align_cameras(estimate, truth, names)
    if robust and len(names) >= 6:
        # Refit on the best 80% so one lost camera does not tilt the others.
        err = _rotation_errors(estimate, truth, names, rot)
        keep = [n for n, e in zip(names, err, strict=True) if e <= np.quantile(err, 0.8)]
        s, rot, t = align_cameras(estimate, truth, keep)
    c_est = np.array([estimate[n].center for n in names])
    c_true = np.array([truth[n].center for n in names])
    center_err = np.linalg.norm((s * (rot @ c_est.T)).T + t - c_true, axis=1)
    rot_err = _rotation_errors(estimate, truth, names, rot)
    return PoseErrors(len(names), rot_err, center_err, names, s, rot, t)


def _rotation_errors(
    estimate: Mapping[str, CameraPose],
    truth: Mapping[str, CameraPose],
    names: Sequence[str],
    rot: np.ndarray,
) -> np.ndarray:
    return np.array([rotation_angle_deg(estimate[n].R @ rot.T @ truth[n].R.T) for n in names])


@dataclass(frozen=True)
class SurfaceScores:
    """Accuracy of a reconstructed cloud against ground-truth surface samples.

    ``precision``: fraction of reconstructed points within ``threshold`` of the true surface;
    ``recall`` (completeness): fraction of surface samples within ``threshold`` of the cloud.
    """

    threshold: float
    precision: float
    recall: float
    fscore: float
    median_error: float


def surface_scores(points: np.ndarray, surface: np.ndarray, threshold: float) -> SurfaceScores:
    """Precision, recall and F-score of ``points`` against ``surface`` samples (same frame).

    Accuracy is scored with the same samples, so ``surface`` must be dense relative to
    ``threshold`` (the synthetic scenes give 150k samples, about 1 mm apart).
    """
    from scipy.spatial import cKDTree

    points = np.asarray(points, np.float64)
    surface = np.asarray(surface, np.float64)
    if len(points) == 0 or len(surface) == 0:
        return SurfaceScores(threshold, 0.0, 0.0, 0.0, float("inf"))
    d_pred, _ = cKDTree(surface).query(points, k=1, workers=-1)
    d_true, _ = cKDTree(points).query(surface, k=1, workers=-1)
    precision = float(np.mean(d_pred <= threshold))
    recall = float(np.mean(d_true <= threshold))
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return SurfaceScores(threshold, precision, recall, f, float(np.median(d_pred)))


def outside_box_fraction(
    points: np.ndarray, box_min: np.ndarray, box_max: np.ndarray, margin: float = 0.10
) -> float:
    """Fraction of ``points`` outside the box grown by ``margin`` x its size on each side."""
    points = np.asarray(points, np.float64)
    if len(points) == 0:
        return 0.0
    lo, hi = np.asarray(box_min, np.float64), np.asarray(box_max, np.float64)
    pad = margin * (hi - lo)
    inside = np.all((points >= lo - pad) & (points <= hi + pad), axis=1)
    return float(1.0 - inside.mean())


#: A camera counts as held level (or on its side) when one of its image axes is within this
#: many degrees of horizontal.
LEVEL_TOLERANCE_DEG = 20.0
#: Cameras this many degrees or more above (or below) the product tell up from down; a ring
#: closer to the product's height than this leaves the sign to the image up of level cameras
#: (a camera looking straight down has no image up to trust: et, photos of a toy on a desk).
MIN_SIGN_ELEVATION_DEG = 2.0
#: Share of those cameras that must stand on the same side for their side to sign up (a
#: shoot from all round at the product's height does not).
SIGN_AGREEMENT = 0.8
#: Directions over the sphere that :func:`_level_axes_up` also starts from (so that every up
#: that fits the cameras about equally well is found, not only the nearest to four guesses).
LEVEL_SPHERE_STARTS = 64
#: Two ups this far apart that both leave every camera level are two readings of the photos.
AMBIGUOUS_APART_DEG = 20.0
#: ... when the second one's tilt is within this ratio of the best one's (RMS degrees) ...
AMBIGUOUS_TILT_RATIO = 2.0
#: ... or within this many degrees of it (a camera's roll is seldom truer than a few degrees).
AMBIGUOUS_TILT_DEG = 2.0


def axes_meeting_point(cameras: Sequence[CameraPose]) -> np.ndarray:
    """Least-squares point nearest every camera's optical axis (the centres' mean if none).

    It is where the photographer aimed: the product.
    """
    centres = np.array([c.center for c in cameras], np.float64).reshape(-1, 3)
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for cam, centre in zip(cameras, centres, strict=True):
        axis = np.asarray(cam.R, np.float64)[2]
        proj = np.eye(3) - np.outer(axis, axis)
        a += proj
        b += proj @ centre
    if len(cameras) >= 2 and np.linalg.cond(a) < 1e6:
        return np.linalg.solve(a, b)
    return centres.mean(0) if len(centres) else np.zeros(3)


def _fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` unit vectors spread evenly over the sphere (deterministic)."""
    k = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _level_fits(
    xs: np.ndarray, ys: np.ndarray, starts: Sequence[np.ndarray]
) -> list[tuple[int, float, np.ndarray]]:
    """Ups that leave one image axis of many cameras horizontal, one per start that converges.

    Each camera takes the axis nearer horizontal and up is refitted, four times; the axes used
    must spread over the horizontal plane. Returns ``(cameras level, mean squared sine of their
    tilt, up)`` per converged start (unsigned ups, duplicates included).
    """
    tol = np.sin(np.radians(LEVEL_TOLERANCE_DEG))
    fits = []
    for up in starts:
        if np.linalg.norm(up) < 1e-9:
            continue
        up = up / np.linalg.norm(up)
        for _ in range(4):
            off = np.minimum(np.abs(xs @ up), np.abs(ys @ up))
            axes = np.where((np.abs(xs @ up) <= np.abs(ys @ up))[:, None], xs, ys)[off < tol]
            if len(axes) < 3:
                break
            values, vectors = np.linalg.eigh(axes.T @ axes / len(axes))
            if values[1] < 0.05 or values[0] > 0.25 * values[1]:
                break
            up = vectors[:, 0]
        else:
            off = np.minimum(np.abs(xs @ up), np.abs(ys @ up))
            fits.append((int((off < tol).sum()), float(np.mean(off**2)), up))
    return fits


def _level_axes_up(cameras: Sequence[CameraPose]) -> tuple[np.ndarray, np.ndarray] | None:
    """Up as the direction square to one image axis of every camera, and which axis.

    Photographers hold a camera level or on its side (a portrait photo without EXIF
    rotation), so either its image x or its image y axis is horizontal. From a few starting
    guesses (square to all x axes, to all y axes, the mean image up, the ring's axis, and
    directions spread over the sphere) each camera takes the axis nearer horizontal and up is
    refitted (:func:`_level_fits`); the one that leaves the most cameras level, then the least
    tilted, wins. Photos from one side only, looking down steeply with some held on their side
    (et), can be fitted about as well by ups far apart (:data:`AMBIGUOUS_APART_DEG`, within
    :data:`AMBIGUOUS_TILT_RATIO` or :data:`AMBIGUOUS_TILT_DEG` of the best tilt): then the up
    the cameras look down on least steeply is taken, since products are photographed from
    near their height or moderately above, not from straight overhead. Returns
    ``(up, uses_x)``, unsigned, or None when the cameras face too few directions to tell.
    """
    if len(cameras) < 3:
        return None
    xs = np.array([np.asarray(c.R, np.float64)[0] for c in cameras])
    ys = np.array([np.asarray(c.R, np.float64)[1] for c in cameras])
    zs = np.array([np.asarray(c.R, np.float64)[2] for c in cameras])
    starts = [np.linalg.eigh(a.T @ a)[1][:, 0] for a in (xs, ys)]
    starts.append(-ys.mean(axis=0))
    centres = np.array([c.center for c in cameras], np.float64)
    starts.append(np.linalg.svd(centres - centres.mean(0), full_matrices=False)[2][-1])
    starts.extend(_fibonacci_sphere(LEVEL_SPHERE_STARTS))
    fits = _level_fits(xs, ys, starts)
    if not fits:
        return None
    count, tilt, up = max(fits, key=lambda f: (f[0], -f[1]))
    rms = math.degrees(math.asin(min(1.0, math.sqrt(tilt))))
    cos_apart = math.cos(math.radians(AMBIGUOUS_APART_DEG))
    rivals = [up]
    for n, t, other in sorted(fits, key=lambda f: f[1]):  # each reading by its best fit
        other_rms = math.degrees(math.asin(min(1.0, math.sqrt(t))))
        close = other_rms <= max(AMBIGUOUS_TILT_RATIO * rms, rms + AMBIGUOUS_TILT_DEG)
        if n == count and close and all(abs(float(other @ r)) < cos_apart for r in rivals):
            rivals.append(other)
    if len(rivals) > 1:
        steepness = [float(np.median(np.abs(zs @ r))) for r in rivals]
        up = rivals[int(np.argmin(steepness))]
    return up, np.abs(xs @ up) <= np.abs(ys @ up)


def up_direction(cameras: Sequence[CameraPose], target: np.ndarray | None = None) -> np.ndarray:
    """The world's up direction (unit vector) seen from a set of cameras.

    Photographers hold a camera level or on its side (portrait photos without EXIF rotation,
    a rig mounted rolled: temple_sparse_ring), so one image axis of every camera is
    horizontal: up is the direction square to those axes (:func:`_level_axes_up`; exact where
    part of the way round is missing, where a ring-plane fit tilts). Its sign comes from the
    cameras standing above the product (``target``; by default where their optical axes
    meet) when they clearly do (:data:`SIGN_AGREEMENT`), since products are photographed from
    above; else from the level cameras' image up. When the cameras face too few directions to
    tell, a ring of cameras gives its plane's normal (the turntable's axis), and otherwise the
    cameras' mean image up is used; +z when there are no cameras.
    """
    if not cameras:
        return np.array([0.0, 0.0, 1.0])
    mean_up = -np.mean([np.asarray(c.R, np.float64)[1] for c in cameras], axis=0)
    norm = float(np.linalg.norm(mean_up))
    mean_up = mean_up / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])
    found = _level_axes_up(cameras)
    if found is not None:
        up, uses_x = found
    else:
        if len(cameras) < 6:
            return mean_up
        centres = np.array([c.center for c in cameras], np.float64)
        _, sv, vt = np.linalg.svd(centres - centres.mean(0), full_matrices=False)
        # a flat ring (or a few rings at close elevations): the plane normal is the axis
        if sv[1] <= 1e-9 or sv[2] >= 0.35 * sv[1]:
            return mean_up
        up, uses_x = vt[2], np.zeros(len(cameras), bool)
        if abs(up @ mean_up) > 0.5:
            return up * np.sign(up @ mean_up)
    ys = np.array([np.asarray(c.R, np.float64)[1] for c in cameras])
    centres = np.array([c.center for c in cameras], np.float64)
    aim = axes_meeting_point(cameras) if target is None else np.asarray(target, np.float64)
    rel = centres - aim
    elevation = np.degrees(np.arcsin(np.clip((rel @ up) / np.linalg.norm(rel, axis=1), -1, 1)))
    above = np.abs(elevation) >= MIN_SIGN_ELEVATION_DEG
    side = np.sign(elevation[above])
    # cameras (almost) all on one side of the product, clearly: products are shot from above
    if above.mean() >= 0.5 and abs(side.sum()) >= SIGN_AGREEMENT * len(side):
        return up * float(np.sign(side.sum()))
    if uses_x.any():  # level cameras: their image up
        vote = float(-ys[uses_x].sum(axis=0) @ up)
        if abs(vote) > 1e-9:
            return up * np.sign(vote)
    return up * (1.0 if float(mean_up @ up) >= 0 else -1.0)
