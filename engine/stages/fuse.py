"""Fuse: every view's depth map in, one clean coloured point cloud out.

A pixel becomes a point only when its depth agrees with the depth maps of at least
``cfg.min_consistent_views`` other views (forward-backward reprojection, as COLMAP's
``StereoFusion`` and MVSNet's filter do), so a depth seen by one view alone never survives.

Steps, all vectorised (numpy; no per-pixel Python loops):

1. **Load** every depth map once, keeping only what fusion needs: the depth with unusable pixels
   (confidence below ``cfg.min_confidence``, outside the mask) set to 0, the colours and whether
   each pixel came from the monocular prior. Confidence and masks are dropped after loading.
2. **Neighbours** per view: up to :data:`MAX_NEIGHBOURS` views that see the same surface. A few
   thousand of the view's points are projected into every other view; the views whose own depth
   agrees with most of them are chosen. This needs no assumption about the camera layout
   (turntable rings, hand-held arcs, views from below) and ignores views that look at the back
   of the object from a similar direction.
3. **Consistency** per reference view, in input order: each unused valid pixel is back-projected,
   projected into each neighbour, the neighbour's depth at the nearest pixel is back-projected and
   projected back. A neighbour agrees when the round trip lands within ``cfg.max_reproj_px`` of the
   pixel and the depths differ by at most ``cfg.max_rel_depth``. A kept pixel's position is the
   mean of its own point and the agreeing neighbours' points (this averages depth noise away),
   its colour the mean of their colours, its normal comes from the reference depth map's
   gradients. Neighbour pixels that supported a kept point are *consumed*: they support later
   views still but never seed a point again (COLMAP-style), so each surface patch is fused about
   once instead of once per view.
4. **Voxel de-duplication** at ``cfg.voxel_px`` x the median pixel footprint (depth / focal):
   positions, colours and normals are averaged per voxel.
5. **Statistical outlier removal** (``cfg.outlier_neighbors`` nearest neighbours, mean + ``cfg.
   outlier_std`` x std of the mean neighbour distance) and a uniform cap at ``cfg.max_points``.

After each reference view a :class:`~engine.progress.ProgressEvent` carries that view's new
points (before steps 4-5) for the live preview. Whether each final point came from the prior is
tracked through every average (majority vote) and reported as ``prior_fraction``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.config import FuseConfig
from engine.errors import ReconstructionError
from engine.export.ply import write_ply
from engine.io.depthmaps import load_depth_map
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.types import ORIGIN_PRIOR, PointCloud

logger = logging.getLogger(__name__)

STAGE = "fuse"
#: Most neighbour views each reference view is checked against.
MAX_NEIGHBOURS = 10
#: Points per view projected into the other views to choose neighbours.
NEIGHBOUR_SAMPLES = 2000
#: A view is a neighbour only when its depth agrees with at least this fraction of the samples.
NEIGHBOUR_MIN_SHARED = 0.05
#: Relative depth tolerance of the neighbour choice (loose: it only ranks views).
NEIGHBOUR_REL_DEPTH = 0.02
#: Pixel step of the central differences that give normals (2 halves their noise against 1).
NORMAL_STEP = 2
#: Box (pixels) the depth is averaged over before the differences (9.8 instead of 18 degrees
#: median normal error under 0.3% depth noise on the synthetic bottle, 0.8 without noise).
NORMAL_WINDOW = 5
#: Relative depth jump beyond which a pixel is not used for its neighbour's normal (an edge).
NORMAL_MAX_JUMP = 0.05
#: Seed of the point cap's subsample and the neighbour choice's samples (reproducible runs).
SEED = 0
#: Points per nearest-neighbour query of the outlier removal (bounds its memory).
_QUERY_CHUNK = 1 << 18

NO_POINTS_MESSAGE = (
    "No dense points survived fusion: the photos may overlap too little or be too blurry; "
    "shoot the product with about 70% overlap between neighbouring photos, in sharp focus, "
    "with the product filling most of the frame."
)


@dataclass(frozen=True)
class FuseResult:
    """Output of the fuse stage.

    Attributes
    ----------
    cloud
        Fused points: ``xyz`` float32, ``rgb`` uint8, ``normals`` float32 unit vectors
        pointing away from the surface towards the cameras that saw it.
    stats
        ``views``; ``points_before_filter`` (usable depth pixels of all views),
        ``pixels_tested`` (those not already fused into a point when their view's turn came),
        ``points_consistent`` (pixels that passed the consistency check), ``points_after_voxel``,
        ``points_after_outliers``, ``points`` (final, after the ``max_points`` cap);
        ``prior_fraction`` (fraction of final points fused mostly from prior depths);
        ``voxel_size`` (model units), ``neighbours_mean``; ``seconds`` and the per-phase
        ``seconds_load``, ``seconds_fuse``, ``seconds_filter``.
    """

    cloud: PointCloud
    stats: dict[str, Any] = field(default_factory=dict)

    def to_report(self) -> dict[str, Any]:
        """report.json's ``stages.fuse``: the statistics."""
        return dict(self.stats)


@dataclass
class _View:
    """What fusion keeps of one depth map (confidence and mask already applied)."""

    name: str
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    depth: np.ndarray  # float32 (H, W), 0 = unusable
    rgb: np.ndarray  # uint32 (H x W,): r, g, b, 0 bytes of each pixel
    prior: np.ndarray | None  # bool (H x W,), None = no prior pixel
    consumed: np.ndarray  # bool (H, W): already fused into a point

    @property
    def shape(self) -> tuple[int, int]:
        return self.depth.shape  # type: ignore[return-value]


@dataclass
class _Points:
    """Fused points of one reference view (world frame) with their bookkeeping."""

    xyz: np.ndarray  # float32 (N, 3)
    rgb: np.ndarray  # float32 (N, 3), mean colour
    normals: np.ndarray  # float32 (N, 3), unit
    prior: np.ndarray  # float32 (N,), fraction of contributions from prior pixels
    footprint: np.ndarray  # float32 (N,), depth / focal of the reference pixel


def run(
    maps: Sequence[Path],
    cfg: FuseConfig,
    out_path: Path | None,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> FuseResult:
    """Fuse the depth maps of all views into one coloured, oriented point cloud.

    Parameters
    ----------
    maps
        Depth-map files (:mod:`engine.io.depthmaps` format) of all views; fused in this order.
    cfg
        Fusion settings.
    out_path
        Where to write the cloud as a binary PLY (``x y z nx ny nz red green blue``); None
        writes nothing.
    progress
        Called after each view with ``ProgressEvent("fuse", i + 1, n, "fused view NAME",
        partial=PointCloud)`` holding the points that view added (before de-duplication and
        outlier removal), then once with ``partial=None`` before the final clean-up.
    cancel
        Checked while loading, between views and before the clean-up.

    Returns
    -------
    FuseResult
        The cloud and its statistics.

    Raises
    ------
    ReconstructionError
        When there is no depth map or no point survives the consistency check.
    ValueError
        When a depth-map file is unreadable or its arrays do not match its camera.
    engine.progress.Cancelled
        When ``cancel`` was set.
    """
    cancel = cancel or CancelToken()
    t0 = time.perf_counter()
    if not maps:
        raise ReconstructionError(f"{NO_POINTS_MESSAGE} (No depth maps were computed.)")
    views = []
    for path in maps:
        cancel.raise_if_cancelled()
        views.append(_load_view(Path(path), cfg))
    usable = sum(int(np.count_nonzero(v.depth)) for v in views)
    t_load = time.perf_counter()
    neighbours = _select_neighbours(views)
    n = len(views)
    parts: list[_Points] = []
    tested = 0
    for i, view in enumerate(views):
        cancel.raise_if_cancelled()
        pts, n_tested = _fuse_view(view, [views[j] for j in neighbours[i]], cfg)
        tested += n_tested
        parts.append(pts)
        # the snapshot shares the view's arrays: nothing writes to them after this point
        pts.xyz.flags.writeable = pts.normals.flags.writeable = False
        partial = PointCloud(pts.xyz, _to_uint8(pts.rgb), pts.normals)
        progress(ProgressEvent(STAGE, i + 1, n, f"fused view {view.name}", partial=partial))
    t_fuse = time.perf_counter()
    views.clear()  # the depth maps are not needed any more; free them before the clean-up
    consistent = sum(len(p.xyz) for p in parts)
    if consistent == 0:
        raise ReconstructionError(
            f"{NO_POINTS_MESSAGE} (None of the {usable} depth pixels of {n} views was "
            f"confirmed by {cfg.min_consistent_views} other views.)"
        )
    cancel.raise_if_cancelled()
    progress(ProgressEvent(STAGE, n, n, "removing duplicate and stray points"))
    pts = _concatenate(parts)
    del parts
    voxel = float(cfg.voxel_px * np.median(pts.footprint))
    pts = _voxel_average(pts, voxel) if voxel > 0 else pts
    after_voxel = len(pts.xyz)
    keep = statistical_inliers(pts.xyz, cfg.outlier_neighbors, cfg.outlier_std)
    pts = _select(pts, keep)
    after_outliers = len(pts.xyz)
    if after_outliers > cfg.max_points:
        rng = np.random.default_rng(SEED)
        pts = _select(pts, np.sort(rng.choice(after_outliers, cfg.max_points, replace=False)))
    prior = pts.prior > 0.5
    cloud = PointCloud(
        np.ascontiguousarray(pts.xyz, np.float32),
        _to_uint8(pts.rgb),
        np.ascontiguousarray(pts.normals, np.float32),
    )
    t_end = time.perf_counter()
    stats: dict[str, Any] = {
        "views": n,
        "points_before_filter": usable,
        "pixels_tested": int(tested),
        "points_consistent": int(consistent),
        "points_after_voxel": int(after_voxel),
        "points_after_outliers": int(after_outliers),
        "points": len(cloud),
        "prior_fraction": float(prior.mean()) if len(prior) else 0.0,
        "voxel_size": voxel,
        "neighbours_mean": float(np.mean([len(nb) for nb in neighbours])),
        "seconds_load": round(t_load - t0, 3),
        "seconds_fuse": round(t_fuse - t_load, 3),
        "seconds_filter": round(t_end - t_fuse, 3),
        "seconds": round(t_end - t0, 3),
    }
    logger.info(
        "Fused %d views: %d depth pixels, %d consistent, %d after de-duplication, %d after "
        "outlier removal, %d kept (%.1f s)",
        n,
        usable,
        consistent,
        after_voxel,
        after_outliers,
        len(cloud),
        stats["seconds"],
    )
    if out_path is not None:
        write_ply(out_path, cloud)
    return FuseResult(cloud, stats)


# --------------------------------------------------------------------------------------------
# Loading and neighbour choice
# --------------------------------------------------------------------------------------------


def _load_view(path: Path, cfg: FuseConfig) -> _View:
    dm, _ = load_depth_map(path)
    cam = dm.camera
    shape = (int(cam.height), int(cam.width))
    arrays = {"depth": dm.depth, "confidence": dm.confidence, "rgb": dm.rgb}
    if dm.mask is not None:
        arrays["mask"] = dm.mask
    if dm.origin is not None:
        arrays["origin"] = dm.origin
    for key, array in arrays.items():
        if array.shape[:2] != shape or (key == "rgb" and array.shape != (*shape, 3)):
            raise ValueError(
                f"depth map {path.name}: {key} has shape {array.shape} but its camera is "
                f"{shape[1]}x{shape[0]} pixels"
            )
    depth = np.asarray(dm.depth, np.float32)
    usable = np.isfinite(depth) & (depth > 0) & (dm.confidence >= cfg.min_confidence)
    if dm.mask is not None:
        usable &= dm.mask.astype(bool)
    prior = None
    if dm.origin is not None:
        prior = (dm.origin == ORIGIN_PRIOR).reshape(-1)
        if not prior.any():
            prior = None
    # one 32-bit word per pixel: a colour is then one gather instead of three
    rgba = np.zeros((*shape, 4), np.uint8)
    rgba[..., :3] = dm.rgb
    return _View(
        name=dm.name,
        K=np.asarray(cam.K, np.float64),
        R=np.asarray(cam.R, np.float64),
        t=np.asarray(cam.t, np.float64).reshape(3),
        depth=np.where(usable, depth, np.float32(0.0)),
        rgb=rgba.view(np.uint32).reshape(-1),
        prior=prior,
        consumed=np.zeros(shape, bool),
    )


def _colours(packed: np.ndarray) -> np.ndarray:
    """(3, M) float32 colours of packed pixels."""
    return packed.view(np.uint8).reshape(-1, 4)[:, :3].T.astype(np.float32)


def _pixel_rays(K: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """Normalised image coordinates (camera x/z, y/z) of pixel centres, float32."""
    x = (cols.astype(np.float32) + np.float32(0.5 - K[0, 2])) * np.float32(1.0 / K[0, 0])
    y = (rows.astype(np.float32) + np.float32(0.5 - K[1, 2])) * np.float32(1.0 / K[1, 1])
    return x, y


def _camera_points(view: _View, flat: np.ndarray) -> np.ndarray:
    """(3, M) float32 camera-frame points of flat pixel indices, at the view's depth."""
    rows, cols = np.divmod(flat, view.shape[1])
    d = view.depth.reshape(-1)[flat]
    x, y = _pixel_rays(view.K, rows, cols)
    return np.stack([x * d, y * d, d])


def _to_world(view: _View, cam: np.ndarray) -> np.ndarray:
    """(N, 3) float64 world points of (3, N) camera-frame points."""
    return _rotate(view.R.T, cam.astype(np.float64) - view.t[:, None]).T


def _rotate(rot: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``rot @ pts`` for (3, N) points without BLAS.

    OpenBLAS wakes its threads for every such thin product, which cost 10x the arithmetic here.
    """
    return np.einsum("ij,jn->in", rot, pts)


def _relative(a: _View, b: _View) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation (float32, translation as a column) from a's frame to b's."""
    rot = b.R @ a.R.T
    return rot.astype(np.float32), (b.t - rot @ a.t).astype(np.float32)[:, None]


def _project(K: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates of (3, M) camera-frame points (NaN or inf behind the camera)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_z = np.float32(1.0) / q[2]
        return (
            np.float32(K[0, 0]) * q[0] * inv_z + np.float32(K[0, 2]),
            np.float32(K[1, 1]) * q[1] * inv_z + np.float32(K[1, 2]),
        )


def _select_neighbours(
    views: Sequence[_View], max_neighbours: int = MAX_NEIGHBOURS
) -> list[list[int]]:
    """Choose, for each view, the views whose depth agrees most with its own.

    Up to :data:`NEIGHBOUR_SAMPLES` valid pixels of each view are back-projected and projected
    into every other view; a sample is shared when it lands inside the other view, in front of
    it, on a pixel whose depth is within :data:`NEIGHBOUR_REL_DEPTH` of the sample's. Views
    sharing at least :data:`NEIGHBOUR_MIN_SHARED` of the samples are ranked by the count.

    Parameters
    ----------
    views
        Loaded views.
    max_neighbours
        Most neighbours per view.

    Returns
    -------
    list of list of int
        Neighbour indices per view, most shared first.
    """
    n = len(views)
    rng = np.random.default_rng(SEED)
    samples, owner = [], []
    for i, view in enumerate(views):
        flat = np.flatnonzero(view.depth > 0)
        if len(flat) > NEIGHBOUR_SAMPLES:
            flat = np.sort(rng.choice(flat, NEIGHBOUR_SAMPLES, replace=False))
        samples.append(_to_world(view, _camera_points(view, flat)))
        owner.append(np.full(len(flat), i))
    pts = np.ascontiguousarray(np.concatenate(samples).T)  # (3, V x samples) world
    own = np.concatenate(owner)
    counts = np.bincount(own, minlength=n)
    shared = np.zeros((n, n), np.int64)
    for j, view in enumerate(views):
        h, w = view.shape
        q = (_rotate(view.R, pts) + view.t[:, None]).astype(np.float32)
        u, v = _project(view.K, q)
        ok = (q[2] > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h) & (own != j)
        idx = np.flatnonzero(ok)
        d = view.depth.reshape(-1)[v[idx].astype(np.intp) * w + u[idx].astype(np.intp)]
        z = q[2, idx]
        agree = (d > 0) & (np.abs(d - z) <= np.float32(NEIGHBOUR_REL_DEPTH) * z)
        shared[:, j] = np.bincount(own[idx[agree]], minlength=n)
    result = []
    for i in range(n):
        order = np.argsort(-shared[i], kind="stable")
        least = max(1, int(np.ceil(NEIGHBOUR_MIN_SHARED * counts[i])))
        result.append([int(j) for j in order[:max_neighbours] if j != i and shared[i, j] >= least])
    return result


# --------------------------------------------------------------------------------------------
# Consistency check and fusion of one reference view
# --------------------------------------------------------------------------------------------


def _fuse_view(ref: _View, neighbours: Sequence[_View], cfg: FuseConfig) -> tuple[_Points, int]:
    """Consistency-check the unused pixels of ``ref``; return its fused points and the count.

    Arrays are (3, N) (one row per coordinate): masking and gathering whole rows is several
    times faster than on (N, 3).
    """
    w = ref.shape[1]
    seeds = np.flatnonzero((ref.depth > 0) & ~ref.consumed)
    n_seed = len(seeds)
    rows, cols = np.divmod(seeds, w)
    p = _camera_points(ref, seeds)  # reference camera frame
    d = p[2]
    u = cols.astype(np.float32) + np.float32(0.5)
    v = rows.astype(np.float32) + np.float32(0.5)
    count = np.zeros(n_seed, np.int32)
    sum_p = p.copy()
    need = cfg.min_consistent_views
    max_err2 = np.float32(cfg.max_reproj_px**2)
    max_rel = np.float32(cfg.max_rel_depth)
    supports = []
    for k, nb in enumerate(neighbours):
        # pixels that can no longer reach ``need`` agreeing views are not checked further
        short = need - (len(neighbours) - k)
        alive = np.flatnonzero(count >= short) if short > 0 else None
        pa = p if alive is None else np.take(p, alive, axis=1)
        h_n, w_n = nb.shape
        rot, tr = _relative(ref, nb)
        q = _rotate(rot, pa) + tr
        un, vn = _project(nb.K, q)
        idx = np.flatnonzero((q[2] > 0) & (un >= 0) & (un < w_n) & (vn >= 0) & (vn < h_n))
        # pixel (i, j) spans [i, i + 1): truncation of a non-negative coordinate is its pixel
        flat = vn[idx].astype(np.intp) * w_n + un[idx].astype(np.intp)
        dn = nb.depth.reshape(-1)[flat]
        has = np.flatnonzero(dn > 0)
        idx, flat = idx[has], flat[has]
        back_rot, back_t = _relative(nb, ref)
        qb = _rotate(back_rot, _camera_points(nb, flat)) + back_t
        ur, vr = _project(ref.K, qb)
        sel = idx if alive is None else alive[idx]
        dr = d[sel]
        err2 = (ur - u[sel]) ** 2 + (vr - v[sel]) ** 2
        good = np.flatnonzero(
            (qb[2] > 0) & (err2 <= max_err2) & (np.abs(qb[2] - dr) <= max_rel * dr)
        )
        sel, flat = sel[good], flat[good]
        count[sel] += 1  # each seed lands once per neighbour: no repeated indices
        qb = np.take(qb, good, axis=1)
        for axis in range(3):  # row by row: much faster than one 2-D fancy update
            sum_p[axis, sel] += qb[axis]
        supports.append((nb, sel, flat))
    keep = count >= need
    kept = np.flatnonzero(keep)
    slot = np.full(n_seed, -1, np.intp)
    slot[kept] = np.arange(len(kept))
    weight = (count[kept] + 1).astype(np.float32)
    sum_c = _colours(ref.rgb[seeds[kept]])
    sum_prior = (
        ref.prior[seeds[kept]].astype(np.float32)
        if ref.prior is not None
        else np.zeros(len(kept), np.float32)
    )
    for nb, sel, flat in supports:
        used = keep[sel]
        at, flat = slot[sel[used]], flat[used]
        nb.consumed.reshape(-1)[flat] = True
        colours = _colours(nb.rgb[flat])
        for axis in range(3):
            sum_c[axis, at] += colours[axis]
        if nb.prior is not None:
            sum_prior[at] += nb.prior[flat]
    ref.consumed.reshape(-1)[seeds[kept]] = True
    normals = _normals(ref, rows[kept], cols[kept], np.take(p, kept, axis=1))
    pts = _Points(
        xyz=np.ascontiguousarray(_to_world(ref, np.take(sum_p, kept, axis=1) / weight), np.float32),
        rgb=np.ascontiguousarray((sum_c / weight).T),
        normals=np.ascontiguousarray(_rotate(ref.R.T.astype(np.float32), normals).T),
        prior=sum_prior / weight,
        footprint=d[kept] * np.float32(2.0 / (ref.K[0, 0] + ref.K[1, 1])),
    )
    return pts, n_seed


def _normals(ref: _View, rows: np.ndarray, cols: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(3, N) unit normals (reference camera frame) from depth-map central differences.

    The depth is first averaged over a :data:`NORMAL_WINDOW` box (not across depth jumps);
    tangents come from the points :data:`NORMAL_STEP` pixels to either side (one-sided at edges
    and depth jumps); where a direction has no tangent the normal faces the camera. Normals
    are oriented towards the camera.
    """
    if len(rows) == 0:
        return np.zeros((3, 0), np.float32)
    h, w = ref.shape
    s = NORMAL_STEP
    depth = _smoothed_depth(ref.depth, NORMAL_WINDOW) if NORMAL_WINDOW > 1 else ref.depth
    flat = rows * w + cols
    d = depth.reshape(-1)[flat]
    x, y = _pixel_rays(ref.K, rows, cols)
    centre = np.stack([x * d, y * d, d])

    def offset(dr: int, dc: int) -> tuple[np.ndarray, np.ndarray]:
        r2, c2 = rows + dr, cols + dc
        inside = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
        r2, c2 = np.clip(r2, 0, h - 1), np.clip(c2, 0, w - 1)
        dd = depth.reshape(-1)[r2 * w + c2]
        ok = inside & (dd > 0) & (np.abs(dd - d) <= np.float32(NORMAL_MAX_JUMP) * d)
        x2, y2 = _pixel_rays(ref.K, r2, c2)
        return np.stack([x2 * dd, y2 * dd, dd]), ok

    def tangent(plus: tuple, minus: tuple) -> tuple[np.ndarray, np.ndarray]:
        (pp, okp), (pm, okm) = plus, minus
        tan = np.where(
            okp & okm,
            pp - pm,
            np.where(okp, pp - centre, np.where(okm, centre - pm, np.float32(0))),
        )
        return tan, okp | okm

    tu, oku = tangent(offset(0, s), offset(0, -s))
    tv, okv = tangent(offset(s, 0), offset(-s, 0))
    n = np.cross(tv, tu, axis=0)
    length = np.sqrt((n * n).sum(axis=0))
    scale = np.sqrt((tu * tu).sum(axis=0) * (tv * tv).sum(axis=0))
    bad = ~(oku & okv) | (length <= 1e-6 * scale)  # relative: any model units
    n = np.where(bad, -p, n)
    length = np.where(bad, np.sqrt((p * p).sum(axis=0)), length)
    n = n / np.maximum(length, np.float32(1e-30))
    n *= np.where((n * p).sum(axis=0) > 0, np.float32(-1), np.float32(1))  # face the camera
    return n.astype(np.float32)


def _smoothed_depth(depth: np.ndarray, window: int) -> np.ndarray:
    """Mean depth of the valid pixels in a ``window`` box; raw depth across depth jumps."""
    valid = (depth > 0).astype(np.float32)
    args = {"ksize": (window, window), "normalize": False, "borderType": cv2.BORDER_CONSTANT}
    num = cv2.boxFilter(depth, -1, **args)
    sq = cv2.boxFilter(depth * depth, -1, **args)
    den = cv2.boxFilter(valid, -1, **args)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = num / den
        std = np.sqrt(np.maximum(sq / den - mean * mean, 0.0))
    smooth = (depth > 0) & (std <= np.float32(NORMAL_MAX_JUMP / 4) * mean)
    return np.where(smooth, mean, depth).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Clean-up: voxel de-duplication, outliers
# --------------------------------------------------------------------------------------------


def _concatenate(parts: Sequence[_Points]) -> _Points:
    return _Points(
        *(
            np.concatenate([getattr(p, f) for p in parts])
            for f in ("xyz", "rgb", "normals", "prior", "footprint")
        )
    )


def _select(pts: _Points, index: np.ndarray) -> _Points:
    return _Points(
        pts.xyz[index], pts.rgb[index], pts.normals[index], pts.prior[index], pts.footprint[index]
    )


def _voxel_average(pts: _Points, size: float) -> _Points:
    """Merge the points falling in the same voxel of side ``size`` into their average.

    Parameters
    ----------
    pts
        Points with colours, normals and prior fractions.
    size
        Voxel side in model units (> 0).

    Returns
    -------
    _Points
        One point per occupied voxel: mean position, colour and prior fraction; normalised sum
        of the normals.
    """
    keys = np.floor((pts.xyz - pts.xyz.min(axis=0)) / size).astype(np.int64)
    dims = keys.max(axis=0) + 1
    if float(np.prod(dims.astype(np.float64))) < 2.0**62:
        flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    else:  # a stray point very far away: number the occupied voxels first
        flat = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
    # np.unique(flat, return_inverse=True) by hand: one argsort, half the time
    order = np.argsort(flat)
    sorted_keys = flat[order]
    starts = np.empty(len(flat), bool)
    starts[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
    inverse = np.empty(len(flat), np.intp)
    inverse[order] = np.cumsum(starts) - 1
    counts = np.bincount(inverse)
    m = len(counts)

    def mean(values: np.ndarray) -> np.ndarray:
        cols = values.reshape(len(values), -1)
        out = np.stack([np.bincount(inverse, cols[:, k], m) for k in range(cols.shape[1])], 1)
        return out / counts[:, None]

    normals = mean(pts.normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    # opposite normals in one voxel (a thin wall seen from both sides) cancel: keep one of them
    one = pts.normals[order[starts]]  # a member of each voxel, in voxel order
    normals = np.where(length > 1e-6, normals / np.maximum(length, 1e-12), one)
    return _Points(
        xyz=mean(pts.xyz).astype(np.float32),
        rgb=mean(pts.rgb).astype(np.float32),
        normals=normals.astype(np.float32),
        prior=mean(pts.prior)[:, 0].astype(np.float32),
        footprint=mean(pts.footprint)[:, 0].astype(np.float32),
    )


def statistical_inliers(xyz: np.ndarray, neighbours: int, std_ratio: float) -> np.ndarray:
    """Indices of the points whose mean distance to their neighbours is not unusually large.

    Parameters
    ----------
    xyz
        (N, 3) points.
    neighbours
        Neighbours per point (0 keeps every point).
    std_ratio
        Points whose mean neighbour distance exceeds the mean of all points' plus this times
        the standard deviation are outliers.

    Returns
    -------
    numpy.ndarray
        Sorted int indices of the inliers.
    """
    from scipy.spatial import cKDTree

    if neighbours <= 0 or len(xyz) <= neighbours:
        return np.arange(len(xyz))
    # an unbalanced tree builds 3x faster; querying in the tree's own order keeps the walk in
    # cache (2.5x faster than the input order on 3M points)
    tree = cKDTree(xyz, balanced_tree=False, compact_nodes=False)
    mean_d = np.empty(len(xyz))
    for start in range(0, len(xyz), _QUERY_CHUNK):  # chunks: distances + indices of 3M points
        part = tree.indices[start : start + _QUERY_CHUNK]  # at k=16 would take 800 MB at once
        dist, _ = tree.query(xyz[part], k=neighbours + 1, workers=-1)
        mean_d[part] = dist[:, 1:].mean(axis=1)
    threshold = mean_d.mean() + std_ratio * mean_d.std()
    return np.flatnonzero(mean_d <= threshold)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
