"""Automatic product masks without model weights: backdrop model from the borders, GrabCut edges.

A product photo's borders show the backdrop (studio sweep, table, turntable). The backdrop is
modelled from a band along the four borders:

- its chroma, made independent of shading (Lab ``a, b`` divided by ``L + 16``, which a change of
  illumination scales alike), as one to three modes (a small k-means);
- its lightness as a smooth quadratic surface in ``(x, y)`` of ``log(L + 16)``, so that a
  gradient or a vignette is part of the backdrop.

Pixels far from every mode, brighter than the surface, or far darker than any soft shadow are
foreground; textured pixels are probable foreground. Pixels that are only darker, with the
backdrop's chroma, are shadow-like: they stay backdrop when a smooth path (no strong edge) joins
them to the backdrop, as a contact shadow's does, and become foreground otherwise (a grey part of
the product, outlined by its edges). GrabCut then settles a narrow band along the outline at up to
640 pixels, the mask is brought back to full size and each edge pixel is snapped to the side whose
colour it is closer to (a two-colour matting test), so the outline is right to a fraction of a
pixel. Finally the main object is kept (the large, central part, and parts at least a fifth
of its size right beside it: not a scale card lying apart) and its holes are filled, except large
holes that show the backdrop (a mug's handle).

Masks computed here are written like masks from files (``work_dir/masks/<name>.png``, 255 =
product, working size); masks the user supplied always take precedence.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.io import ImageReadError, read_image, write_png
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.types import ImageRecord, IngestResult

logger = logging.getLogger(__name__)

STAGE = "masks"
#: Folder (under the work folder) of the masks, as written by ingest: COLMAP's convention.
MASKS_FOLDER = "masks"
#: Masks with a lower confidence than this are not used by :func:`run` by default.
MIN_CONFIDENCE = 0.5

# Thresholds in units of the backdrop's own robust spread (noise-adaptive), see _classify.
_SURE = 9.0  # colour distance of sure foreground
_FG = 5.0  # colour distance of foreground
_TEX = 6.0  # texture of probable foreground
#: How far (working pixels) texture evidence spreads past an outline; thinner shadow strips.
_TEX_REACH, _THIN = 4, 3.0
#: Deepest shadow, as log((L+16) ratio): 0.6 is a linear-light ratio of about 0.17.
_SHADOW_DEPTH = 0.6
#: Share of the border band a backdrop colour mode must cover (less is a product or clutter).
_MODE_SHARE = 0.25
#: Floors of the robust spreads: JPEG noise never looks cleaner than this.
_FLOOR_LIGHT, _FLOOR_CHROMA, _FLOOR_TEX = 0.01, 0.5, 0.15


@dataclass(frozen=True, eq=False)
class MaskResult:
    """Result of :func:`estimate_mask` for one photo.

    Attributes
    ----------
    mask
        ``(H, W)`` bool, True on the product.
    confidence
        In [0, 1]: 0 when no mask could be found, low when the mask is doubtful.
    reason
        Why the mask failed or is doubtful, in plain words ("" when all looks well).
    stats
        Measures behind the decision (foreground fraction, backdrop spreads, seconds ...).
    """

    mask: np.ndarray
    confidence: float
    reason: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the mask is worth using at the default :data:`MIN_CONFIDENCE`."""
        return self.confidence >= MIN_CONFIDENCE and bool(self.mask.any())


@dataclass(frozen=True)
class MaskStageResult:
    """Output of the masks stage.

    Attributes
    ----------
    images
        The input records in order, with ``mask_path`` set where a mask was computed.
    computed
        Names of the images given an automatic mask.
    from_files
        Names of the images whose mask came from a file (left untouched).
    failed
        ``(name, reason)`` of the images left without a mask.
    stats
        Per image name, the :attr:`MaskResult.stats` of the computed masks (plus confidence).
    """

    images: tuple[ImageRecord, ...]
    computed: tuple[str, ...] = ()
    from_files: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def warnings(self) -> tuple[str, ...]:
        """One plain-words line per image left without a mask."""
        return tuple(f"No automatic mask for {name}: {reason}" for name, reason in self.failed)


# ------------------------------------------------------------------------------ backdrop model


def _border_band(height: int, width: int, border: float) -> np.ndarray:
    by = max(2, int(round(border * height)))
    bx = max(2, int(round(border * width)))
    band = np.zeros((height, width), bool)
    band[:by] = band[-by:] = True
    band[:, :bx] = band[:, -bx:] = True
    return band


def _robust_sigma(values: np.ndarray, floor: float) -> float:
    if values.size == 0:
        return floor
    med = np.median(values)
    return max(floor, 1.4826 * float(np.median(np.abs(values - med))))


def _spread(distances: np.ndarray) -> float:
    """Spread of backdrop chroma distances: 8-bit chroma is quantised, so MAD alone is too small."""
    if distances.size == 0:
        return _FLOOR_CHROMA
    core = _robust_sigma(distances, _FLOOR_CHROMA)
    # the tail of the backdrop's own pixels, not of a product reaching into the band
    inliers = distances[distances <= np.median(distances) + 10.0 * core]
    tail = float(np.percentile(inliers, 99)) / 3.0 if inliers.size else 0.0
    return max(core, tail)


def _quadratic_basis(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=-1)


def _fit_trend(lam: np.ndarray, band: np.ndarray) -> tuple[np.ndarray, float]:
    """Robust quadratic fit of log-lightness over the band; the surface and its spread."""
    h, w = lam.shape
    ys, xs = np.nonzero(band)
    step = max(1, ys.size // 20000)
    ys, xs = ys[::step], xs[::step]
    xn = (xs.astype(np.float64) + 0.5) / w * 2 - 1
    yn = (ys.astype(np.float64) + 0.5) / h * 2 - 1
    basis = _quadratic_basis(xn, yn)
    values = lam[ys, xs].astype(np.float64)
    keep = np.ones(values.size, bool)
    coef = np.zeros(6)
    sigma = _FLOOR_LIGHT
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(basis[keep], values[keep], rcond=None)
        residual = values - basis @ coef
        sigma = _robust_sigma(residual[keep], _FLOOR_LIGHT)
        keep = np.abs(residual) < 3.0 * sigma
        if keep.sum() < 12:
            keep[:] = True
            break
    gx = (np.arange(w, dtype=np.float64) + 0.5) / w * 2 - 1
    gy = (np.arange(h, dtype=np.float64) + 0.5) / h * 2 - 1
    xx, yy = np.meshgrid(gx, gy)
    surface = _quadratic_basis(xx, yy) @ coef
    return surface.astype(np.float32), sigma


def _kmeans(samples: np.ndarray, k: int, iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means (farthest-point start); centres and labels."""
    centres = [np.median(samples, axis=0)]
    for _ in range(1, k):
        d = np.min([np.sum((samples - c) ** 2, axis=1) for c in centres], axis=0)
        centres.append(samples[int(np.argmax(d))])
    c = np.array(centres)
    labels = np.zeros(len(samples), int)
    for _ in range(iterations):
        d = np.sum((samples[:, None, :] - c[None]) ** 2, axis=2)
        labels = np.argmin(d, axis=1)
        for j in range(k):
            if np.any(labels == j):
                c[j] = np.median(samples[labels == j], axis=0)
    return c, labels


def _chroma_modes(samples: np.ndarray) -> tuple[np.ndarray, float]:
    """One to three backdrop chroma modes and the pooled robust spread around them.

    A further mode is accepted only when it halves the spread: one noisy mode split in two
    would look tighter than it is.
    """
    step = max(1, len(samples) // 8000)
    samples = samples[::step].astype(np.float64)
    best = np.median(samples, axis=0, keepdims=True)
    best_sigma = _spread(np.linalg.norm(samples - best, axis=1))
    for k in (2, 3):
        centres, labels = _kmeans(samples, k)
        weights = np.bincount(labels, minlength=k) / len(samples)
        centres = centres[weights >= _MODE_SHARE]
        if len(centres) <= len(best):
            continue
        d = np.min(np.linalg.norm(samples[:, None, :] - centres[None], axis=2), axis=1)
        sigma = _spread(d)
        if sigma < 0.5 * best_sigma:
            best, best_sigma = centres, sigma
    return best, best_sigma


# ------------------------------------------------------------------------------ features


@dataclass
class _Features:
    colour: np.ndarray  # foreground colour evidence (backdrop spreads)
    shadow_like: np.ndarray  # darker than the backdrop, its chroma, within shadow depth
    texture: np.ndarray  # local texture (backdrop spreads)
    gradient: np.ndarray  # lightness gradient magnitude (L units per pixel)
    stats: dict[str, Any]


def _features(rgb: np.ndarray, band: np.ndarray) -> _Features:
    lab = cv2.cvtColor(rgb.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab)
    lp = lab[..., 0] + np.float32(16.0)
    lam = np.log(lp)
    chroma = lab[..., 1:] * (np.float32(100.0) / lp)[..., None]

    trend, sigma_l = _fit_trend(lam, band)
    residual = lam - trend
    modes, sigma_c = _chroma_modes(chroma[band])
    dist = np.min([np.linalg.norm(chroma - m.astype(np.float32), axis=-1) for m in modes], axis=0)
    # normalised chroma is noisier in the dark: weigh it by the lightness ratio to the backdrop
    dist_c = dist * np.minimum(np.float32(1.0), np.exp(residual)) / np.float32(sigma_c)
    light = residual / np.float32(sigma_l)
    darker = light < -_FG
    dark_beyond = (-residual - np.float32(_SHADOW_DEPTH)) / np.float32(sigma_l)
    # brighter and off-chroma add up; a darker pixel is a shadow unless its chroma is off too
    colour = np.where(
        darker, np.maximum(dist_c, dark_beyond), np.sqrt(dist_c**2 + np.maximum(light, 0) ** 2)
    )
    shadow_like = darker & (colour <= _FG)

    blurred = cv2.GaussianBlur(lab[..., 0], (0, 0), 1.0)
    dog = np.abs(blurred - cv2.GaussianBlur(lab[..., 0], (0, 0), 2.5))
    tex = cv2.blur(dog, (5, 5))
    tex_band = tex[band]
    tex_med = float(np.median(tex_band))
    sigma_t = _robust_sigma(tex_band, _FLOOR_TEX)
    texture = (tex - np.float32(tex_med)) / np.float32(sigma_t)
    # little smoothing: an outline stays a step, a soft shadow stays a gentle slope
    sharp = cv2.GaussianBlur(lab[..., 0], (0, 0), 0.7)
    gx = cv2.Sobel(sharp, cv2.CV_32F, 1, 0, ksize=3) * np.float32(0.125)
    gy = cv2.Sobel(sharp, cv2.CV_32F, 0, 1, ksize=3) * np.float32(0.125)
    gradient = cv2.magnitude(gx, gy)
    stats = {
        "backdrop_modes": int(len(modes)),
        "backdrop_light_sigma": round(float(sigma_l), 4),
        "backdrop_chroma_sigma": round(float(sigma_c), 3),
        "backdrop_texture_sigma": round(float(sigma_t), 3),
    }
    return _Features(colour, shadow_like, texture, gradient, stats)


# ------------------------------------------------------------------------------ segmentation


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _backdrop_connected(candidate: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Pixels of ``candidate`` connected to the border band's candidate pixels."""
    n, labels = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros_like(candidate)
    seeds = np.unique(labels[band & candidate])
    seeds = seeds[seeds > 0]
    keep = np.zeros(n, bool)
    keep[seeds] = True
    return keep[labels]


def _classify(feat: _Features, band: np.ndarray, edge_step: float) -> tuple[np.ndarray, np.ndarray]:
    """Initial foreground and sure foreground at working size.

    ``edge_step`` is the lightness gradient (L per pixel) that a soft shadow does not reach and
    an object's outline does: shadow-like pixels behind such an edge are not a shadow.
    """
    colour_fg = feat.colour > _FG
    # texture spreads a few pixels past an outline: trust it only where it is wider than that
    textured = feat.texture > _TEX
    fg = colour_fg | cv2.erode(textured.astype(np.uint8), _disk(_TEX_REACH)).astype(bool)
    passable = ~fg & (feat.gradient < edge_step)
    backdrop = _backdrop_connected(passable, band)
    # what is neither: the steep penumbra at a base (thin) or a grey part of the product (wide)
    rest = (~backdrop & ~fg).astype(np.uint8)
    n, labels = cv2.connectedComponents(rest, connectivity=8)
    if n > 1:
        inscribed = cv2.distanceTransform(rest, cv2.DIST_L2, 3)
        widest = np.zeros(n, np.float32)
        np.maximum.at(widest, labels.ravel(), inscribed.ravel())
        thin = widest <= _THIN
        thin[0] = False
        backdrop |= thin[labels]
    initial = ~backdrop
    sure = feat.colour > _SURE
    return initial, sure & initial


def _keep_main(mask: np.ndarray, share: float = 0.2, near: float = 0.01) -> np.ndarray:
    """Keep the main object: the part that is large and central, and large parts beside it.

    Products are framed in the middle; a colour chart or scale bar lies to the side. A part is
    kept with the main one when it has ``share`` of its area and lies within ``near`` x the
    image diagonal of it.
    """
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    if n <= 1:
        return np.zeros_like(mask, bool)
    h, w = mask.shape
    diagonal = float(np.hypot(h, w))
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    offset = np.hypot(centroids[1:, 0] - w / 2, centroids[1:, 1] - h / 2) / diagonal
    main = int(np.argmax(areas * np.exp(-((offset / 0.25) ** 2))))
    x, y, bw, bh = stats[main + 1, :4]
    keep = np.zeros(n, bool)
    for j in range(n - 1):
        jx, jy, jw, jh = stats[j + 1, :4]
        gap = max(0, max(x, jx) - min(x + bw, jx + jw), max(y, jy) - min(y + bh, jy + jh))
        keep[j + 1] = j == main or (areas[j] >= share * areas[main] and gap <= near * diagonal)
    return keep[labels]


def _overlapping(mask: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Parts of ``mask`` that lie mostly inside ``reference``."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    total = np.bincount(labels.ravel(), minlength=n)
    inside = np.bincount(labels.ravel(), weights=reference.ravel().astype(np.float64), minlength=n)
    keep = inside >= 0.5 * np.maximum(total, 1)
    keep[0] = False
    return keep[labels]


def _fill_holes(
    mask: np.ndarray, backdrop_like: np.ndarray | None, min_open: float = 0.02
) -> np.ndarray:
    """Fill the holes of a mask, except large holes that show the backdrop (a handle's gap)."""
    inverse = (~mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inverse, connectivity=4)
    if n <= 1:
        return mask
    h, w = mask.shape
    outer = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = np.ones(n, bool)
    fill[0] = False
    fill[outer] = False
    if backdrop_like is not None:
        limit = min_open * mask.sum()
        for j in np.nonzero(fill)[0]:
            if stats[j, cv2.CC_STAT_AREA] > max(limit, 16):
                hole = labels == j
                if backdrop_like[hole].mean() > 0.9:
                    fill[j] = False
    return mask | fill[labels]


def _grabcut_band(
    rgb: np.ndarray, initial: np.ndarray, sure: np.ndarray, radius: int
) -> np.ndarray:
    """Let GrabCut settle a band of ``radius`` pixels along the outline (cropped for speed)."""
    inner = cv2.erode(initial.astype(np.uint8), _disk(radius)).astype(bool)
    outer = cv2.dilate(initial.astype(np.uint8), _disk(radius)).astype(bool)
    gc = np.full(initial.shape, cv2.GC_BGD, np.uint8)
    gc[outer] = cv2.GC_PR_BGD
    gc[initial] = cv2.GC_PR_FGD
    gc[inner] = cv2.GC_FGD
    gc[sure & inner] = cv2.GC_FGD
    ys, xs = np.nonzero(outer)
    if ys.size == 0 or not inner.any():
        return initial
    margin = radius + 8
    h, w = initial.shape
    y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + margin + 1)
    x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + margin + 1)
    crop = np.ascontiguousarray(gc[y0:y1, x0:x1])
    if not np.any(crop == cv2.GC_BGD) and not np.any(crop == cv2.GC_PR_BGD):
        return initial
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    image = np.ascontiguousarray(rgb[y0:y1, x0:x1, ::-1])
    try:
        cv2.grabCut(image, crop, None, bgd, fgd, 2, cv2.GC_INIT_WITH_MASK)
    except cv2.error as exc:  # degenerate colour models: keep the threshold's answer
        logger.debug("grabCut skipped: %s", exc)
        return initial
    out = np.zeros_like(initial)
    out[y0:y1, x0:x1] = (crop == cv2.GC_FGD) | (crop == cv2.GC_PR_FGD)
    return out


def _nearest_colour(image: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Colour of the nearest ``source`` pixel, for every pixel."""
    src = np.where(source, 0, 255).astype(np.uint8)
    _, labels = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    flat = np.flatnonzero(source.ravel())
    index = flat[np.clip(labels.ravel() - 1, 0, flat.size - 1)]
    return image.reshape(-1, image.shape[-1])[index].reshape(image.shape)


def _snap_once(
    rgb: np.ndarray, mask: np.ndarray, radius: int, gap: int, smooth: float
) -> tuple[np.ndarray, float]:
    m8 = mask.astype(np.uint8)
    band = cv2.dilate(m8, _disk(radius)).astype(bool) & ~cv2.erode(m8, _disk(radius)).astype(bool)
    if not band.any():
        return mask, 0.0
    ys, xs = np.nonzero(band)
    pad = radius + gap + 4
    h, w = mask.shape
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
    sub = m8[y0:y1, x0:x1]
    inside = cv2.erode(sub, _disk(gap)).astype(bool)
    outside = ~cv2.dilate(sub, _disk(gap)).astype(bool)
    if not inside.any() or not outside.any():
        return mask, 0.0
    pixel = rgb[y0:y1, x0:x1].astype(np.float32)
    image = cv2.GaussianBlur(pixel, (0, 0), smooth) if smooth > 0 else pixel
    fg = _nearest_colour(image, inside)
    bg = _nearest_colour(image, outside)
    diff = fg - bg
    denom = np.sum(diff * diff, axis=-1)
    alpha = np.sum((pixel - bg) * diff, axis=-1) / np.maximum(denom, 1e-6)
    sub_band = band[y0:y1, x0:x1]
    # contrast under about 12 levels is noise and JPEG: keep the segmentation's answer there
    valid = sub_band & (denom > 144.0)
    out = mask.copy()
    region = out[y0:y1, x0:x1]
    region[valid] = alpha[valid] > 0.5
    return out, float(valid.sum()) / max(1, int(sub_band.sum()))


def _snap_edges(rgb: np.ndarray, mask: np.ndarray, radius: int) -> tuple[np.ndarray, float]:
    """Two-colour matting test along the outline; the snapped mask and its edge contrast.

    Each pixel near the outline is compared with the colours of the nearest pixels inside the
    object and outside it; it is foreground when it is more than half-way to the object's
    colour. A coarse pass over ``radius`` pixels is followed by fine passes that take the two
    colours one pixel from the outline, where thin dark rims and deep contact shadows are.
    """
    mask, contrast = _snap_once(rgb, mask, radius, radius + 1, 0.6)
    for _ in range(2):
        mask, _ = _snap_once(rgb, mask, 1, 1, 0.0)
    return mask, contrast


# ------------------------------------------------------------------------------ public API


def _failed(
    shape: tuple[int, int],
    reason: str,
    stats: dict[str, Any],
    mask: np.ndarray | None = None,
    confidence: float = 0.0,
) -> MaskResult:
    if mask is None:
        mask = np.zeros(shape, bool)
    return MaskResult(mask, confidence, reason, stats)


def estimate_mask(
    rgb: np.ndarray,
    *,
    border: float = 0.04,
    max_side: int = 640,
    edge_radius: int = 2,
) -> MaskResult:
    """Estimate the product's mask in a photo taken against a plain backdrop.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8 RGB photo.
    border
        Width of the band along each border, as a fraction of the image's height (top and
        bottom) or width (left and right), from which the backdrop is modelled. The product
        should stay out of it.
    max_side
        Longest side at which the segmentation and GrabCut run; the outline is then snapped
        at full size.
    edge_radius
        Half-width in working pixels of the band GrabCut settles along the outline.

    Returns
    -------
    MaskResult
        Mask at the photo's size, confidence, the reason when it failed or is doubtful, and
        stats.

    Raises
    ------
    ValueError
        When ``rgb`` is not an ``(H, W, 3)`` uint8 image of at least 16 x 16 pixels, or
        ``border`` is outside (0, 0.25].
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    if min(height, width) < 16:
        raise ValueError(f"image of {width} x {height} pixels is too small to mask")
    if not 0.0 < border <= 0.25:
        raise ValueError(f"border must be in (0, 0.25], got {border}")
    start = time.perf_counter()

    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(16, int(round(width * scale))), max(16, int(round(height * scale))))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    else:
        small = rgb
    h, w = small.shape[:2]
    band = _border_band(h, w, border)
    feat = _features(small, band)
    stats: dict[str, Any] = dict(feat.stats)
    stats["working_size"] = [w, h]

    # a soft shadow's lightness changes by at most ~2% of L per pixel at this size
    edge_step = 4.0 * max(1.0, 640.0 / max(h, w)) ** 0.5
    initial, sure = _classify(feat, band, edge_step)
    stats["band_foreground"] = round(float(initial[band].mean()), 4)
    if not sure.any() or sure.sum() < 0.0005 * h * w:
        stats["seconds"] = round(time.perf_counter() - start, 3)
        return _failed(
            (height, width),
            "no clear foreground: the photo looks like plain "
            "backdrop, or the product has the backdrop's colour",
            stats,
        )

    mask = _keep_main(
        cv2.morphologyEx(initial.astype(np.uint8), cv2.MORPH_OPEN, _disk(1)).astype(bool)
    )
    backdrop_like = (feat.colour <= _FG) & (feat.texture <= _TEX) & ~feat.shadow_like
    mask = _fill_holes(mask, backdrop_like)
    mask = _grabcut_band(small, mask, sure, edge_radius)
    mask = _fill_holes(_keep_main(mask), backdrop_like)

    if scale < 1.0:
        up = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        mask = up > 0.5
        radius = int(np.ceil(edge_radius / scale))
    else:
        radius = edge_radius
    snapped, contrast = _snap_edges(rgb, mask, radius)
    # snapping may pinch a faint part (a grey cap) off: keep the parts the object had
    mask = _fill_holes(_overlapping(snapped, mask), None if scale < 1.0 else backdrop_like)

    fraction = float(mask.mean())
    frame = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    touching = float(frame.mean())
    stats.update(
        {
            "foreground_fraction": round(fraction, 4),
            "edge_contrast": round(contrast, 3),
            "frame_touching": round(touching, 4),
            "seconds": round(time.perf_counter() - start, 3),
        }
    )
    if fraction == 0.0:
        return _failed(
            (height, width), "no clear foreground: the photo looks like plain backdrop", stats
        )
    if fraction > 0.9:
        return _failed(
            (height, width),
            f"the foreground covers {fraction:.0%} of the photo: "
            "the backdrop cannot be told from the product; leave some backdrop "
            "around the product",
            stats,
            mask,
            0.05,
        )
    confidence = 0.4 + 0.6 * contrast
    reason = ""
    if touching > 0.01 or stats["band_foreground"] > 0.05:
        confidence *= 0.3
        reason = (
            "the product touches the edge of the photo, where the backdrop is "
            "modelled: the mask is unreliable; leave space around the product"
        )
    elif contrast < 0.5:
        reason = "the product's outline is faint against the backdrop: check the mask"
    return MaskResult(mask, round(float(confidence), 3), reason, stats)


def mask_path_for(work_dir: Path, name: str) -> Path:
    """Where the mask of image ``name`` is written (as ingest writes masks from files).

    Parameters
    ----------
    work_dir
        The run's work folder.
    name
        Image name (may contain ``/``).

    Returns
    -------
    Path
        ``work_dir/masks/<name>.png``.
    """
    return Path(work_dir) / MASKS_FOLDER / f"{name}.png"


def run(
    ingest: IngestResult,
    work_dir: Path,
    *,
    border: float = 0.04,
    max_side: int = 640,
    min_confidence: float = MIN_CONFIDENCE,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> MaskStageResult:
    """Compute a mask for every image that has none from a file.

    Parameters
    ----------
    ingest
        Output of the ingest stage; images with a ``mask_path`` (from a file) are left as they
        are.
    work_dir
        The work folder; masks are written to ``work_dir/masks/<name>.png`` (0 / 255, working
        size).
    border, max_side
        Passed to :func:`estimate_mask`.
    min_confidence
        Masks less confident than this are not used: the image keeps no mask (all of it is
        used), and the reason is returned in ``failed``.
    progress
        Called with a :class:`ProgressEvent` (stage ``"masks"``) after each image.
    cancel
        Checked before each image.

    Returns
    -------
    MaskStageResult
        Updated records, what was computed, what failed and why, per-image stats.

    Raises
    ------
    Cancelled
        When ``cancel`` is cancelled.
    OutputError
        When a mask cannot be written.
    """
    work_dir = Path(work_dir)
    total = len(ingest.images)
    progress(ProgressEvent(STAGE, 0, total, f"masking {total} photos"))
    images: list[ImageRecord] = []
    computed: list[str] = []
    from_files: list[str] = []
    failed: list[tuple[str, str]] = []
    stats: dict[str, dict[str, Any]] = {}
    for index, rec in enumerate(ingest.images):
        if cancel is not None:
            cancel.raise_if_cancelled()
        if rec.mask_path is not None:
            images.append(rec)
            from_files.append(rec.name)
            progress(ProgressEvent(STAGE, index + 1, total, f"{rec.name}: mask from file"))
            continue
        target = mask_path_for(work_dir, rec.name)
        try:
            rgb, _ = read_image(rec.working_path)
            result = estimate_mask(rgb, border=border, max_side=max_side)
        except (ImageReadError, ValueError) as exc:
            result = MaskResult(
                np.zeros((rec.height, rec.width), bool), 0.0, f"could not be masked ({exc})"
            )
        stats[rec.name] = {**result.stats, "confidence": result.confidence}
        if result.confidence >= min_confidence and result.mask.any():
            if result.mask.shape != (rec.height, rec.width):
                result = dataclasses.replace(
                    result,
                    mask=cv2.resize(
                        result.mask.astype(np.uint8),
                        (rec.width, rec.height),
                        interpolation=cv2.INTER_NEAREST,
                    ).astype(bool),
                )
            write_png(target, np.where(result.mask, 255, 0).astype(np.uint8), compress_level=6)
            images.append(dataclasses.replace(rec, mask_path=target))
            computed.append(rec.name)
            if result.reason:
                logger.info(
                    "%s: mask kept (confidence %.2f): %s",
                    rec.name,
                    result.confidence,
                    result.reason,
                )
            message = f"{rec.name}: masked ({result.mask.mean():.0%} of the photo)"
        else:
            # a stale automatic mask would be applied by COLMAP
            target.unlink(missing_ok=True)
            images.append(rec)
            reason = result.reason or f"confidence {result.confidence:.2f} is too low"
            failed.append((rec.name, reason))
            logger.warning("%s: no automatic mask: %s", rec.name, reason)
            message = f"{rec.name}: no mask"
        progress(ProgressEvent(STAGE, index + 1, total, message))
    logger.info(
        "masks: %d computed, %d from files, %d without a mask",
        len(computed),
        len(from_files),
        len(failed),
    )
    return MaskStageResult(tuple(images), tuple(computed), tuple(from_files), tuple(failed), stats)
