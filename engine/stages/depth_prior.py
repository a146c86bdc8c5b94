"""Depth prior: a monocular network's depth, aligned to stereo, fills where stereo is unsure.

For each view the network (Depth-Anything-V2, :mod:`engine.models`) predicts a relative inverse
depth ``r`` from the colour image. It is tied to the view's multi-view-stereo (MVS) depths by a
robust affine fit in inverse depth, ``1 / depth = scale * r + shift``
(:func:`align_inverse_depth`), and the aligned depth replaces pixels whose MVS confidence is below
``DepthPriorConfig.fill_below``: textureless labels, glossy caps, the plain sides of a box.

Where it fills
    Inside the product mask when one is known. Without a mask, only where the aligned depth lies
    within the view's MVS depth range (1st to 99th percentile) widened by 10 % on each side, and
    within the region the MVS depths cover: the convex hull of their pixels (specks left out),
    dilated by 2 % of the image's longer side. The plain backdrop is therefore not filled.

Confidence of filled pixels
    ``fill_below * (0.6 + 0.3 * q)`` with ``q = 1 - median_rel_residual / max_residual``
    clipped to [0, 1]: always below ``fill_below`` (so every MVS depth kept as it is outranks a
    prior depth) and, with the defaults (0.3), between 0.18 and 0.27, above the fuse stage's
    default ``min_confidence`` of 0.15.

When it does not fill a view
    Fewer than :data:`MIN_ALIGN_PIXELS` MVS depths to align on; an alignment whose median
    relative residual exceeds ``max_residual``; or one that does not follow the stereo depths
    (residual above :data:`MAX_UNEXPLAINED` of the residual a flat depth would leave, in a view
    whose depths vary by at least :data:`MIN_SPREAD`): the view is written unchanged, with the
    reason logged and kept in the file's meta and in :class:`PriorResult`.

Every view's merged map is written to ``out_dir`` (one ``.npz`` per view, as the dense stage);
a view whose file exists with the same fingerprint (input map, settings, model) is reused, so an
interrupted run resumes view by view.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from engine.config import DepthPriorConfig
from engine.io.depthmaps import depth_map_path, load_depth_map, save_depth_map
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.types import ORIGIN_MVS, ORIGIN_NONE, ORIGIN_PRIOR, DepthMap

logger = logging.getLogger(__name__)

STAGE = "depth_prior"
#: Bumped when the stage's output changes for the same inputs (invalidates resumed files).
STAGE_VERSION = 1
#: MVS confidence from which a depth is trusted for the alignment.
ALIGN_CONFIDENCE = 0.5
#: Fewer MVS depths than this and the view is not aligned.
MIN_ALIGN_PIXELS = 200
#: Relative widening of the MVS depth range inside which a maskless view is filled.
RANGE_MARGIN = 0.10
#: Radius (fraction of the longer image side) of the dilation of the MVS-covered region.
SUPPORT_DILATION = 0.02
#: A prior must explain the view's depth variation: its residual may be at most this fraction
#: of the depth spread (the residual of a constant depth) ...
MAX_UNEXPLAINED = 0.75
#: ... when that spread is at least this large (flatter views are filled whatever the ratio).
MIN_SPREAD = 0.01


class Estimator(Protocol):
    """What the stage needs from a depth network (see :class:`engine.models.DepthEstimator`)."""

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """Relative inverse depth, float32 (H, W), of an (H, W, 3) uint8 image."""
        ...


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------

#: Robust-fit settings: 2-point hypotheses, scored by their median residual (LMedS).
_HYPOTHESES = 256
_SCORE_POINTS = 3000
_MAX_FIT_POINTS = 50_000
#: Tukey biweight constant (in robust sigmas) of the reweighted refinement.
_TUKEY = 4.685
#: Residuals beyond this many robust sigmas are outliers in the final fit.
_INLIER_SIGMAS = 3.0
#: Floor of the robust sigma of relative residuals (exact synthetic data has none).
_SIGMA_FLOOR = 1e-6


@dataclass(frozen=True)
class Alignment:
    """Affine map from a network's relative inverse depth to depth: ``1/d = scale*r + shift``.

    Attributes
    ----------
    scale, shift
        The fitted map (``scale > 0``).
    n
        Pixels the fit was given (mask, depth > 0, finite).
    n_inliers
        Pixels within :data:`_INLIER_SIGMAS` robust sigmas of the fit.
    inlier_fraction
        ``n_inliers / n``.
    median_rel_residual
        Median of ``|d_aligned - d| / d`` over the inliers.
    mad
        Robust sigma (1.4826 x median absolute deviation) of the signed relative depth
        residual ``(d_aligned - d) / d`` over the inliers.
    depth_spread
        Median of ``|d - median(d)| / median(d)`` over the pixels fit: the relative residual
        of the best constant depth, against which the fit's residual is judged.
    """

    scale: float
    shift: float
    n: int
    n_inliers: int
    inlier_fraction: float
    median_rel_residual: float
    mad: float
    depth_spread: float = 0.0

    def apply(self, rel_inv: np.ndarray, *, min_inverse: float = 1e-9) -> np.ndarray:
        """Depth from relative inverse depth; 0 where the aligned inverse depth is too small.

        Parameters
        ----------
        rel_inv
            Relative inverse depth (any shape).
        min_inverse
            Aligned inverse depths at or below this give no depth (behind the camera or at
            infinity).

        Returns
        -------
        numpy.ndarray
            float32 depth, same shape.
        """
        inv = self.scale * np.asarray(rel_inv, np.float64) + self.shift
        ok = np.isfinite(inv) & (inv > min_inverse)
        out = np.zeros(inv.shape, np.float32)
        out[ok] = 1.0 / inv[ok]
        return out

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)


def _weighted_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Least squares of ``s*x + b = y`` minimising ``sum w * ((s*x + b - y) / y)^2``."""
    sw = np.sqrt(w) / y
    a = np.stack([x * sw, sw], axis=1)
    sol, *_ = np.linalg.lstsq(a, y * sw, rcond=None)
    return float(sol[0]), float(sol[1])


def align_inverse_depth(
    rel_inv: np.ndarray,
    depth: np.ndarray,
    weight_mask: np.ndarray,
    *,
    rng: np.random.Generator | int | None = None,
) -> Alignment:
    """Robustly fit ``1/depth = scale * rel_inv + shift`` over the masked pixels with depth.

    Least median of squares over random 2-pixel hypotheses finds the fit whatever the outliers
    (up to half of the pixels), then iteratively reweighted least squares (Tukey biweight) on
    relative residuals refines it, and a final least-squares fit uses only the inliers. Relative
    residuals weigh near and far pixels alike.

    Parameters
    ----------
    rel_inv
        (H, W) relative inverse depth from the network.
    depth
        (H, W) depth (MVS); pixels with ``depth <= 0`` are ignored.
    weight_mask
        (H, W) bool (or anything non-zero where used): pixels to fit on.
    rng
        Random generator or seed of the hypothesis sampling (default seed 0: reproducible).

    Returns
    -------
    Alignment
        The fit and its statistics.

    Raises
    ------
    ValueError
        Fewer than 10 usable pixels, a constant ``rel_inv`` over them, or no fit with a
        positive scale (the network's depth order contradicts the MVS depths).
    """
    rel = np.asarray(rel_inv, np.float64)
    d = np.asarray(depth, np.float64)
    if rel.shape != d.shape:
        raise ValueError(f"rel_inv {rel.shape} and depth {d.shape} differ in shape")
    sel = np.asarray(weight_mask).astype(bool) & (d > 0) & np.isfinite(d) & np.isfinite(rel)
    x_all, y_all = rel[sel], 1.0 / d[sel]
    n = int(x_all.size)
    if n < 10:
        raise ValueError(f"only {n} pixels with depth to align on")
    spread = float(np.ptp(x_all))
    if not spread > 0:
        raise ValueError("the network's depth is constant over the pixels to align on")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng or 0)

    if n > _MAX_FIT_POINTS:
        idx = gen.choice(n, _MAX_FIT_POINTS, replace=False)
        x, y = x_all[idx], y_all[idx]
    else:
        x, y = x_all, y_all
    m = x.size

    # LMedS: each hypothesis through two pixels, scored by its median |relative residual|
    pairs = gen.integers(0, m, size=(_HYPOTHESES, 2))
    x1, x2 = x[pairs[:, 0]], x[pairs[:, 1]]
    y1, y2 = y[pairs[:, 0]], y[pairs[:, 1]]
    dx = x2 - x1
    ok = np.abs(dx) > 1e-6 * spread
    s_h = np.where(ok, (y2 - y1) / np.where(ok, dx, 1.0), 0.0)
    b_h = y1 - s_h * x1
    ok &= s_h > 0
    if not ok.any():
        s, b = _weighted_fit(x, y, np.ones_like(x))
        if s <= 0:
            raise ValueError("no alignment with a positive scale: the depth orders disagree")
    else:
        sub = gen.choice(m, min(m, _SCORE_POINTS), replace=False)
        xs, ys = x[sub], y[sub]
        res = np.abs((s_h[ok, None] * xs[None, :] + b_h[ok, None] - ys[None, :]) / ys[None, :])
        best = int(np.argmin(np.median(res, axis=1)))
        s, b = float(s_h[ok][best]), float(b_h[ok][best])

    # IRLS with Tukey's biweight on relative residuals
    for _ in range(20):
        e = (s * x + b - y) / y
        sigma = max(1.4826 * float(np.median(np.abs(e))), _SIGMA_FLOOR)
        u = e / (_TUKEY * sigma)
        w = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)
        if np.count_nonzero(w) < 2:
            break
        s_new, b_new = _weighted_fit(x, y, w)
        done = abs(s_new - s) <= 1e-10 * abs(s) and abs(b_new - b) <= 1e-10 * (abs(b) + abs(s))
        s, b = s_new, b_new
        if done:
            break

    # final: plain least squares on the inliers among all pixels
    e = (s * x_all + b - y_all) / y_all
    sigma = max(1.4826 * float(np.median(np.abs(e))), _SIGMA_FLOOR)
    inl = np.abs(e) <= _INLIER_SIGMAS * sigma
    if np.count_nonzero(inl) >= 2 and np.ptp(x_all[inl]) > 0:
        s, b = _weighted_fit(x_all[inl], y_all[inl], np.ones(int(inl.sum())))
    if s <= 0:
        raise ValueError("no alignment with a positive scale: the depth orders disagree")
    inv = s * x_all + b
    e = (s * x_all + b - y_all) / y_all
    sigma = max(1.4826 * float(np.median(np.abs(e))), _SIGMA_FLOOR)
    inl = (np.abs(e) <= _INLIER_SIGMAS * sigma) & (inv > 0)
    n_in = int(inl.sum())
    if n_in:
        d_in = 1.0 / y_all[inl]
        rel_res = (1.0 / inv[inl] - d_in) / d_in
        med = float(np.median(np.abs(rel_res)))
        mad = 1.4826 * float(np.median(np.abs(rel_res - np.median(rel_res))))
    else:
        med = mad = float("inf")
    d_all = 1.0 / y_all
    d_med = float(np.median(d_all))
    spread = float(np.median(np.abs(d_all - d_med))) / d_med
    return Alignment(
        scale=s,
        shift=b,
        n=n,
        n_inliers=n_in,
        inlier_fraction=n_in / n,
        median_rel_residual=med,
        mad=mad,
        depth_spread=spread,
    )


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


@dataclass
class PriorResult:
    """Output of the depth-prior stage.

    Attributes
    ----------
    paths
        One merged depth-map file per view, in input order (views whose input could not be
        read are missing).
    alignments
        Image name -> statistics of the view: ``status`` (``"filled"`` or ``"not_filled"``),
        ``reason`` when not filled, ``resumed``, ``filled_pixels``, ``align_pixels``
        (``"confident"`` or ``"all_mvs"``) and the :class:`Alignment` fields when one was fit.
    filled_pixels
        Pixels given a prior depth, all views together.
    views_used
        Views in which the prior filled at least one pixel.
    model
        What the estimator is (:meth:`engine.models.ModelInfo.to_dict`, or its class name).
    skipped
        Image name -> reason, for views not filled (also in ``alignments``).
    """

    paths: list[Path] = field(default_factory=list)
    alignments: dict[str, dict[str, Any]] = field(default_factory=dict)
    filled_pixels: int = 0
    views_used: int = 0
    model: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_report(self) -> dict[str, Any]:
        """report.json's ``stages.depth_prior``."""
        return {
            "views_filled": self.views_used,
            "filled_pixels": self.filled_pixels,
            "not_filled": self.skipped,
        }


def model_info_dict(estimator: Any) -> dict[str, Any]:
    """The estimator's :class:`~engine.models.ModelInfo` as a dict, or its class name."""
    info = getattr(estimator, "info", None)
    if info is not None and hasattr(info, "to_dict"):
        return dict(info.to_dict())
    return {"name": type(estimator).__name__}


def _fingerprint(dm: DepthMap, cfg: DepthPriorConfig, model: dict[str, Any]) -> str:
    """Hash of everything a view's output depends on: input map, settings, model."""
    h = hashlib.sha1()
    key = {
        "version": STAGE_VERSION,
        "fill_below": cfg.fill_below,
        "max_residual": cfg.max_residual,
        "input_size": cfg.input_size,
        "model": {k: model.get(k) for k in ("name", "depth_type", "input_size", "dtype")},
        "name": dm.name,
    }
    h.update(json.dumps(key, sort_keys=True).encode("utf-8"))
    for arr in (dm.depth, dm.confidence, dm.rgb, dm.mask, dm.origin, dm.camera.K):
        if arr is None:
            h.update(b"-")
            continue
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _origin(dm: DepthMap) -> np.ndarray:
    if dm.origin is not None:
        return np.asarray(dm.origin, np.uint8)
    return np.where(dm.depth > 0, ORIGIN_MVS, ORIGIN_NONE).astype(np.uint8)


def _align_selection(dm: DepthMap, mvs: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Pixels to align on: confident MVS depths (in the mask when known), else all of them."""
    confident = mvs & (dm.confidence >= ALIGN_CONFIDENCE)
    tries = [(confident, "confident"), (mvs, "all_mvs")]
    if dm.mask is not None:
        mask = np.asarray(dm.mask, bool)
        tries = [(confident & mask, "confident"), (mvs & mask, "all_mvs"), *tries]
    for sel, label in tries:
        if int(sel.sum()) >= MIN_ALIGN_PIXELS:
            return sel, label
    return None, ""


def fill_region(
    dm: DepthMap, aligned: np.ndarray, mvs: np.ndarray, fill_below: float
) -> np.ndarray:
    """Pixels the aligned prior may fill (see the module's docstring), bool (H, W).

    Parameters
    ----------
    dm
        The view's MVS depth map.
    aligned
        The prior's aligned depth, 0 where none.
    mvs
        Pixels with an MVS depth.
    fill_below
        Pixels with a confidence below this are candidates.

    Returns
    -------
    numpy.ndarray
        bool (H, W).
    """
    region = (dm.confidence < fill_below) & (aligned > 0)
    if dm.mask is not None:
        return region & np.asarray(dm.mask, bool)
    depths = dm.depth[mvs]
    if depths.size == 0:
        return np.zeros_like(region)
    lo, hi = np.percentile(depths, [1.0, 99.0])
    region &= (aligned >= lo / (1.0 + RANGE_MARGIN)) & (aligned <= hi * (1.0 + RANGE_MARGIN))
    return region & support_region(mvs)


def support_region(mvs: np.ndarray) -> np.ndarray:
    """Region the MVS depths cover: convex hull of their pixels, dilated, specks ignored.

    Parameters
    ----------
    mvs
        bool (H, W) pixels with an MVS depth.

    Returns
    -------
    numpy.ndarray
        bool (H, W): the convex hull of the MVS pixels (connected pieces smaller than 0.1 % of
        the image left out), dilated by :data:`SUPPORT_DILATION` of the longer side.
    """
    h, w = mvs.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mvs.astype(np.uint8), 8)
    big = np.nonzero(stats[1:, cv2.CC_STAT_AREA] >= max(20, 0.001 * h * w))[0] + 1
    out = np.zeros((h, w), np.uint8)
    if big.size:
        ys, xs = np.nonzero(np.isin(labels, big))
        hull = cv2.convexHull(np.stack([xs, ys], axis=1).astype(np.int32))
        cv2.fillConvexPoly(out, hull, 1)
    radius = max(2, int(round(SUPPORT_DILATION * max(h, w))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(out, kernel) > 0


def prior_confidence(alignment: Alignment, cfg: DepthPriorConfig) -> float:
    """Confidence given to filled pixels: ``fill_below * (0.6 + 0.3 * quality)``.

    ``quality = 1 - median_rel_residual / max_residual`` clipped to [0, 1].
    """
    if cfg.max_residual > 0:
        q = 1.0 - alignment.median_rel_residual / cfg.max_residual
    else:
        q = 0.0
    return float(cfg.fill_below * (0.6 + 0.3 * min(1.0, max(0.0, q))))


def merge_view(
    dm: DepthMap,
    rel_inv: np.ndarray,
    cfg: DepthPriorConfig,
    *,
    rng: np.random.Generator | int | None = None,
) -> tuple[DepthMap, dict[str, Any]]:
    """Align one view's prior to its MVS depths and fill its unsure pixels.

    Parameters
    ----------
    dm
        The view's MVS depth map.
    rel_inv
        The network's relative inverse depth at the depth map's size.
    cfg
        Fill threshold and residual limit.
    rng
        Seed or generator of the robust fit.

    Returns
    -------
    tuple
        ``(merged, stats)``: the merged map (``dm`` itself when nothing was filled) and the
        view's statistics (see :class:`PriorResult`).
    """
    origin = _origin(dm)
    mvs = (dm.depth > 0) & (origin == ORIGIN_MVS)
    stats: dict[str, Any] = {"status": "not_filled", "filled_pixels": 0}
    sel, label = _align_selection(dm, mvs)
    if sel is None:
        stats["reason"] = (
            f"only {int(mvs.sum())} stereo depths to align the prior on "
            f"(at least {MIN_ALIGN_PIXELS} needed)"
        )
        return dm, stats
    stats["align_pixels"] = label
    try:
        alignment = align_inverse_depth(rel_inv, dm.depth, sel, rng=rng)
    except ValueError as exc:
        stats["reason"] = f"the prior could not be aligned: {exc}"
        return dm, stats
    stats.update(alignment.to_dict())
    if alignment.median_rel_residual > cfg.max_residual:
        stats["reason"] = (
            f"the prior disagrees with stereo (median depth difference "
            f"{alignment.median_rel_residual:.1%} > {cfg.max_residual:.1%})"
        )
        return dm, stats
    spread = alignment.depth_spread
    if spread >= MIN_SPREAD and alignment.median_rel_residual > MAX_UNEXPLAINED * spread:
        stats["reason"] = (
            f"the prior does not follow the stereo depths (median depth difference "
            f"{alignment.median_rel_residual:.1%}, about that of a flat depth: {spread:.1%})"
        )
        return dm, stats
    aligned = alignment.apply(rel_inv)
    region = fill_region(dm, aligned, mvs, cfg.fill_below)
    filled = int(region.sum())
    stats["filled_pixels"] = filled
    if not filled:
        stats["reason"] = "no unsure pixel to fill"
        return dm, stats
    conf = prior_confidence(alignment, cfg)
    stats["status"] = "filled"
    stats["prior_confidence"] = conf
    depth = np.array(dm.depth, np.float32)
    confidence = np.array(dm.confidence, np.float32)
    origin = origin.copy()
    depth[region] = aligned[region]
    confidence[region] = conf
    origin[region] = ORIGIN_PRIOR
    merged = DepthMap(dm.name, dm.camera, depth, confidence, dm.rgb, dm.mask, origin)
    return merged, stats


def _load_input(item: DepthMap | Path | str) -> tuple[DepthMap, Path | None]:
    if isinstance(item, DepthMap):
        return item, None
    path = Path(item)
    dm, _ = load_depth_map(path)
    return dm, path


def run(
    maps: Iterable[DepthMap | Path | str],
    cfg: DepthPriorConfig,
    out_dir: Path,
    *,
    estimator: Estimator,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> PriorResult:
    """Fill each view's unsure depths with the network's depth aligned to its stereo depths.

    Parameters
    ----------
    maps
        The dense stage's depth maps, in memory or as files written by
        :func:`engine.io.depthmaps.save_depth_map` (read one at a time).
    cfg
        Depth-prior settings (``fill_below``, ``max_residual``; ``enabled`` is the caller's).
    out_dir
        Folder of the merged maps (``depth_map_path(out_dir, name)``); must not be the folder
        the input files are in.
    estimator
        The depth network (:func:`engine.models.load_depth_model`), or anything with
        ``predict(rgb) -> inverse depth``.
    progress, cancel
        One ``depth_prior`` event per view; the token is checked before each view.

    Returns
    -------
    PriorResult
        Files in input order and per-view statistics.

    Raises
    ------
    ValueError
        When an input file would be overwritten by its output.
    engine.progress.Cancelled
        When the run was cancelled.
    """
    items = list(maps)
    out_dir = Path(out_dir)
    model = model_info_dict(estimator)
    result = PriorResult(model=model)
    total = len(items)
    for i, item in enumerate(items):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            dm, in_path = _load_input(item)
        except ValueError as exc:
            logger.warning("Depth prior: skipping an unreadable depth map: %s", exc)
            progress(ProgressEvent(STAGE, i + 1, total, f"Skipped unreadable {item}"))
            continue
        out_path = depth_map_path(out_dir, dm.name)
        if in_path is not None and in_path.resolve() == out_path.resolve():
            raise ValueError(f"depth prior output would overwrite its input {in_path}")
        fp = _fingerprint(dm, cfg, model)
        stats = _resume(out_path, fp)
        if stats is None:
            rel = np.asarray(estimator.predict(dm.rgb), np.float32)
            h, w = dm.depth.shape
            if rel.shape != (h, w):
                rel = cv2.resize(rel, (w, h), interpolation=cv2.INTER_LINEAR)
            seed = zlib.crc32(dm.name.encode("utf-8"))
            merged, stats = merge_view(dm, rel, cfg, rng=seed)
            stats["resumed"] = False
            save_depth_map(out_path, merged, {"fingerprint": fp, "depth_prior": stats})
        result.paths.append(out_path)
        result.alignments[dm.name] = stats
        filled = int(stats.get("filled_pixels", 0))
        if stats.get("status") == "filled":
            result.filled_pixels += filled
            result.views_used += 1
            msg = f"Depth prior: {dm.name}: {filled} pixels filled"
        else:
            reason = str(stats.get("reason", ""))
            result.skipped[dm.name] = reason
            if not stats.get("resumed"):
                logger.info("Depth prior not used for %s: %s", dm.name, reason)
            msg = f"Depth prior: {dm.name}: not used ({reason})"
        progress(ProgressEvent(STAGE, i + 1, total, msg))
    logger.info(
        "Depth prior filled %d pixels in %d of %d views",
        result.filled_pixels,
        result.views_used,
        total,
    )
    return result


def _resume(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The stored statistics of a finished view with this fingerprint, or None to recompute."""
    if not path.is_file():
        return None
    try:
        _, meta = load_depth_map(path)
    except ValueError:
        return None
    if meta.get("fingerprint") != fingerprint:
        return None
    stats = dict(meta.get("depth_prior") or {})
    stats["resumed"] = True
    return stats
