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
the product, outlined by its edges). A second plain surface that the backdrop runs into without an
outline (the top of a white pedestal, lit differently) joins the backdrop too, when it is wide and
its colour is not far off. GrabCut then settles a narrow band along the outline at up to
640 pixels, the mask is brought back to full size and each edge pixel is snapped to the side whose
colour it is closer to (a two-colour matting test), so the outline is right to a fraction of a
pixel. Finally the main object is kept (the large, central part, and parts at least a fifth
of its size right beside it: not a scale card lying apart; a thick off-centre part that only
touches it, like a card laid against it, is cut off) and its holes are filled, except large
holes that show the backdrop (a mug's handle).

Turntable shoots (the camera stands still, the product turns) often have a busy backdrop that no
border model describes, and whose features never move: SfM then solves a still camera. Photos of
one fixed camera are grouped by their near-identical borders; in a group of four or more, each
pixel's backdrop is the colour most photos agree on (:func:`static_backdrop`), and what differs
from it is the product (:func:`estimate_mask_static`, refined as above). A plain part of the
product that turns into itself (a bottle's cap) stays still too and is missed.

Optionally, a learned segmentation network the user names (``MaskConfig.model``, loaded by
:func:`engine.models.load_segmentation_model`) replaces both methods: its product probability is
thresholded at one half and cleaned up as above (:func:`estimate_mask_model`).

The stage (:func:`run`) gives each photo the mask the user switched off, painted, supplied as a
file, or else an automatic one, and writes them like masks from files
(``work_dir/masks/<name>.png``, 255 = product, working size). An automatic mask that the first
segmentation already shows cannot be used (the product or clutter reaches into the border band)
is refused then, without refining its outline: on temple_sparse_ring, whose masks are all
refused, that is two thirds of the stage's time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.config import MaskConfig
from engine.errors import InputError
from engine.imageops import nearest_colour
from engine.io import ImageReadError, binarize_mask, read_image, read_mask, write_png
from engine.messages import grouped
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.types import ImageRecord, IngestResult

logger = logging.getLogger(__name__)

STAGE = "masks"
#: Folder (under the work folder) of the masks, as written by ingest: COLMAP's convention.
MASKS_FOLDER = "masks"
#: Masks with a lower confidence than this are not used by :func:`run` by default.
MIN_CONFIDENCE = 0.5
#: The ``model`` entry of a run's report when no segmentation model was asked for.
NO_MODEL = "not used: no segmentation model set (weight-free masks)"
#: A segmentation network's probability between these bounds counts as undecided.
_UNDECIDED = (0.2, 0.8)

# Thresholds in units of the backdrop's own robust spread (noise-adaptive), see _classify.
_SURE = 9.0  # colour distance of sure foreground
_FG = 5.0  # colour distance of foreground
_TEX = 6.0  # texture of probable foreground
_SMOOTH = 10.0  # colour distance up to which a smooth surface joined to the backdrop is backdrop
_SURFACE = 0.005  # least share of the frame of such a surface
#: Largest share of the frame of a pocket behind pinholes that is still backdrop (measured:
#: gaps in a scale card's print 0.05%, the side of a grey cap 0.6%), see _plain_parts.
_POCKET = 0.002
#: How far (working pixels) texture evidence spreads past an outline; thinner shadow strips.
_TEX_REACH, _THIN = 4, 3.0
#: Deepest shadow, as log((L+16) ratio): 0.6 is a linear-light ratio of about 0.17.
_SHADOW_DEPTH = 0.6
#: Share of the border band a backdrop colour mode must cover (less is a product or clutter).
_MODE_SHARE = 0.25
#: A further backdrop colour mode must cut the spread to this fraction of it.
_SPLIT_GAIN = 0.65
#: Band pixels further than this many core spreads from the backdrop's colour are not its tail.
_INLIER_CORES = 8.0
#: Floors of the robust spreads: JPEG noise never looks cleaner than this.
_FLOOR_LIGHT, _FLOOR_CHROMA, _FLOOR_TEX = 0.01, 0.5, 0.15
#: The lightness spread is at least this many 8-bit grey levels at the backdrop's own level:
#: a black cloth clipped to 0 in the band shows no spread at all, while its folds a few levels
#: up are still cloth (dino_sparse_ring). Three levels are the floor above at white (0.0104 in
#: log lightness) and 0.050 at black.
_NOISE_LEVELS = 3.0


#: A mask whose product (or clutter behind it) reaches into the border band, where the backdrop
#: is modelled, keeps this share of its confidence: at most 0.3, under :data:`MIN_CONFIDENCE`.
_EDGE_PENALTY = 0.3
#: ... when its first segmentation covers more than this share of the border band,
_BAND_FOREGROUND_MAX = 0.05
#: ... or its final outline more than this share of the frame's edge.
_TOUCHING_MAX = 0.01
#: A foreground covering more than this share of the photo cannot be told from the backdrop.
_FILLS_FRAME = 0.9
_EDGE_REASON = (
    "the product or something behind it (a room, clutter) reaches the edge of the photo, where "
    "the backdrop is modelled: the mask is unreliable; leave plain backdrop all round the "
    "product"
)


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


def no_turntable() -> dict[str, Any]:
    """The ``turntable`` entry of a run where no still backdrop was found."""
    return {"detected": False, "groups": 0, "photos": 0, "static_fraction": 0.0, "note": ""}


@dataclass(frozen=True)
class MaskStageResult:
    """Output of the masks stage.

    Attributes
    ----------
    images
        The input records in order, with ``mask_path`` set where the photo has a mask.
    computed
        Names of the images given an automatic mask.
    from_files
        Names of the images whose mask came from a file beside the photo (left untouched).
    user
        Names of the images whose mask the user painted (``MaskConfig.override_dir``).
    disabled
        Names of the images whose mask the user switched off (``MaskConfig.disabled``).
    whole
        Names of the images used whole: no mask, but an all-255 mask file is written for them
        because COLMAP leaves out a photo without a mask file once any photo has one.
    failed
        ``(name, reason)`` of the images for which no automatic mask could be made.
    turntable
        Whether a turntable shoot was found (a fixed camera and a still, textured backdrop):
        ``detected``, ``groups`` (cameras), ``photos``, ``static_fraction`` (share of their
        frame that stays still) and a plain-words ``note`` ("" when not detected).
    stats
        Per image name, the :attr:`MaskResult.stats` of the computed masks (plus confidence).
    model
        The segmentation network used (``SegmenterInfo.to_dict()``: name, licence, source ...),
        or ``"not used: <reason>"``.
    """

    images: tuple[ImageRecord, ...]
    computed: tuple[str, ...] = ()
    from_files: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    user: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    whole: tuple[str, ...] = ()
    turntable: dict[str, Any] = field(default_factory=no_turntable)
    model: dict[str, Any] | str = NO_MODEL

    @property
    def warnings(self) -> tuple[str, ...]:
        """One plain-words line per kind of reason for the images left without a mask."""
        return tuple(f"No automatic mask for {line}" for line in grouped(dict(self.failed)))

    def to_report(self) -> dict[str, Any]:
        """The stage's entry in report.json (counts, failures with reasons, turntable).

        Returns
        -------
        dict
            ``computed``, ``from_files``, ``user``, ``disabled``, ``whole`` (counts),
            ``failed`` (``[{"image", "reason"}]``), ``turntable`` and ``model`` (the
            segmentation network's name, licence and source, or ``"not used: <reason>"``);
            JSON-serialisable.
        """
        return {
            "computed": len(self.computed),
            "from_files": len(self.from_files),
            "user": len(self.user),
            "disabled": len(self.disabled),
            "whole": len(self.whole),
            "failed": [{"image": name, "reason": reason} for name, reason in self.failed],
            "turntable": dict(self.turntable),
            "model": dict(self.model) if isinstance(self.model, dict) else self.model,
        }


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
    inliers = distances[distances <= np.median(distances) + _INLIER_CORES * core]
    tail = float(np.percentile(inliers, 99)) / 3.0 if inliers.size else 0.0
    return max(core, tail)


def _quadratic_basis(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=-1)


def _light_floor(lightness: float) -> float:
    """The log-lightness step of :data:`_NOISE_LEVELS` grey levels at a grey of ``lightness``.

    At least :data:`_FLOOR_LIGHT`. The grey's sRGB level and the lightness of a level
    :data:`_NOISE_LEVELS` above it (below it at white) come from OpenCV's Lab conversion, the
    one the masks' features use.
    """
    lab = np.array([[[np.clip(lightness, 0.0, 100.0), 0.0, 0.0]]], np.float32)
    v = 255.0 * float(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)[0, 0, 0])
    other = v + _NOISE_LEVELS if v + _NOISE_LEVELS <= 255 else v - _NOISE_LEVELS
    # both greys through the forward conversion, as the features see them
    greys = np.array([[[v] * 3, [other] * 3]], np.float32).clip(0.0, 255.0) / np.float32(255)
    l_here, l_other = cv2.cvtColor(greys, cv2.COLOR_RGB2Lab)[0, :, 0].astype(float)
    return max(_FLOOR_LIGHT, abs(math.log(l_other + 16) - math.log(l_here + 16)))


def _fit_trend(lam: np.ndarray, band: np.ndarray) -> tuple[np.ndarray, float]:
    """Robust quadratic fit of log-lightness over the band; the surface and its spread.

    The spread is at least :func:`_light_floor` at the band's median lightness.
    """
    h, w = lam.shape
    ys, xs = np.nonzero(band)
    step = max(1, ys.size // 20000)
    ys, xs = ys[::step], xs[::step]
    xn = (xs.astype(np.float64) + 0.5) / w * 2 - 1
    yn = (ys.astype(np.float64) + 0.5) / h * 2 - 1
    basis = _quadratic_basis(xn, yn)
    values = lam[ys, xs].astype(np.float64)
    floor = _light_floor(math.exp(float(np.median(values))) - 16.0)
    keep = np.ones(values.size, bool)
    coef = np.zeros(6)
    sigma = floor
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(basis[keep], values[keep], rcond=None)
        residual = values - basis @ coef
        sigma = _robust_sigma(residual[keep], floor)
        keep = np.abs(residual) < 3.0 * sigma
        if keep.sum() < 12:
            keep[:] = True
            break
    gx = (np.arange(w, dtype=np.float64) + 0.5) / w * 2 - 1
    gy = (np.arange(h, dtype=np.float64) + 0.5) / h * 2 - 1
    # the quadratic over the whole image, term by term (no H x W x 6 basis)
    c0, cx, cy, cxx, cxy, cyy = coef
    across = (cx + cxx * gx).astype(np.float32)
    down = (c0 + cy * gy + cyy * gy * gy).astype(np.float32)
    surface = down[:, None] + gx.astype(np.float32)[None, :] * (
        across[None, :] + np.float32(cxy) * gy.astype(np.float32)[:, None]
    )
    return surface, sigma


def _kmeans(samples: np.ndarray, k: int, iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means (farthest-point start); centres and labels."""
    centres = [np.median(samples, axis=0)]
    for _ in range(1, k):
        d = np.min([np.sum((samples - c) ** 2, axis=1) for c in centres], axis=0)
        centres.append(samples[int(np.argmax(d))])
    c = np.array(centres)
    labels = np.full(len(samples), -1)
    for _ in range(iterations):
        d = np.sum((samples[:, None, :] - c[None]) ** 2, axis=2)
        previous, labels = labels, np.argmin(d, axis=1)
        if np.array_equal(labels, previous):  # converged: the medians would not move
            break
        for j in range(k):
            if np.any(labels == j):
                c[j] = np.median(samples[labels == j], axis=0)
    return c, labels


def _chroma_modes(samples: np.ndarray) -> tuple[np.ndarray, float]:
    """One to three backdrop chroma modes and the pooled robust spread around them.

    A further mode is accepted only when it cuts the spread to :data:`_SPLIT_GAIN`: one noisy
    mode split in two would look tighter than it is (by about a sixth). The modes are sought
    without the farthest 5% of the band (a product or a colour chart reaching into it), which
    would otherwise seed a mode of their own.
    """
    step = max(1, len(samples) // 8000)
    samples = samples[::step].astype(np.float64)
    best = np.median(samples, axis=0, keepdims=True)
    dist = np.linalg.norm(samples - best, axis=1)
    best_sigma = _spread(dist)
    core = samples[dist <= np.percentile(dist, 95)]
    for k in (2, 3):
        centres, labels = _kmeans(core, k)
        weights = np.bincount(labels, minlength=k) / len(core)
        centres = centres[weights >= _MODE_SHARE]
        if len(centres) <= len(best):
            continue
        d = np.min(np.linalg.norm(samples[:, None, :] - centres[None], axis=2), axis=1)
        sigma = _spread(d)
        if sigma < _SPLIT_GAIN * best_sigma:
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


def _backdrop_flood(passable: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Backdrop reached from the band through ``passable`` pixels, but not through pinholes.

    An outline of a grey part against a grey backdrop can lose its step for a pixel or two
    (anti-aliasing, JPEG, a glyph's rasterisation); a plain flood then pours through that gap
    and takes the whole part. The flood runs on the passable pixels eroded by one pixel, so a
    gap narrower than three pixels stops it, and is then grown back by that pixel inside the
    passable set: the backdrop keeps its exact outline.
    """
    core = cv2.erode(passable.astype(np.uint8), _disk(1)).astype(bool)
    reached = _backdrop_connected(core, band)
    return cv2.dilate(reached.astype(np.uint8), _disk(1)).astype(bool) & passable


def _plain_parts(candidate: np.ndarray, plain: np.ndarray) -> np.ndarray:
    """Parts of ``candidate`` that are backdrop: mostly ``plain``, or too small to be a part.

    ``candidate`` is what the backdrop reaches only through pinholes. Such a part is an
    outlined piece of the product (a ridged grey cap's side) unless half of it is plain
    backdrop-coloured surface (the white of a scale card inside its print) or it is smaller
    than :data:`_POCKET` of the frame (a gap between printed marks).
    """
    n, labels = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros_like(candidate, bool)
    area = np.bincount(labels.ravel(), minlength=n)
    count = np.bincount(labels.ravel(), weights=plain.ravel().astype(np.float64), minlength=n)
    keep = (count >= 0.5 * area) | (area < _POCKET * candidate.size)
    keep[0] = False
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
    passable = ~fg & ((feat.gradient < edge_step) | ~feat.shadow_like)
    backdrop = _backdrop_flood(passable, band)
    rough = (textured | (feat.gradient >= edge_step)).astype(np.uint8)
    smooth = (feat.colour <= _SMOOTH) & ~cv2.dilate(rough, _disk(_TEX_REACH)).astype(bool)
    # pockets behind pinholes: the backdrop when plain or tiny, else an outlined part
    backdrop |= _plain_parts(_backdrop_connected(passable, band) & ~backdrop, smooth)
    # a second plain surface (a pedestal, a sweep's floor in other light) joins the backdrop
    # smoothly: no outline, no texture, and not the sure colour of a product
    added = (_backdrop_connected(backdrop | smooth, backdrop) & ~backdrop).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(added, connectivity=4)
    if n > 1:
        # a surface, not the faint top of a light cap whose outline fades into the backdrop
        wide = stats[:, cv2.CC_STAT_AREA] >= _SURFACE * added.size
        wide[0] = False
        backdrop |= wide[labels]
    # what is neither: the steep penumbra at a base (thin) or a grey part of the product (wide)
    backdrop = _absorb_thin(backdrop, fg)
    initial = ~backdrop
    sure = feat.colour > _SURE
    return initial, sure & initial


def _absorb_thin(backdrop: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """Thin leftovers join the backdrop.

    Regions that are neither backdrop nor foreground and no wider than ``_THIN`` pixels are
    the steep penumbra at a product's base.
    """
    rest = (~backdrop & ~fg).astype(np.uint8)
    n, labels = cv2.connectedComponents(rest, connectivity=8)
    if n <= 1:
        return backdrop
    inscribed = cv2.distanceTransform(rest, cv2.DIST_L2, 3)
    widest = np.zeros(n, np.float32)
    np.maximum.at(widest, labels.ravel(), inscribed.ravel())
    thin = widest <= _THIN
    thin[0] = False
    return backdrop | thin[labels]


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


def _detach(mask: np.ndarray) -> np.ndarray:
    """Cut off a thick part that only touches the main object, off-centre (a scale card).

    An opening as wide as a twentieth of the object's size separates parts joined by a thin
    contact; a part with 2% to half of the main part's area that lies further from the centre
    is cut away with what lies within the opening's reach of it. Thin parts of the object (a
    handle) vanish in the opening without being cut, and two like halves are both kept.
    """
    area = int(mask.sum())
    if area == 0:
        return mask
    r = int(np.clip(round(0.06 * np.sqrt(area)), 3, 15))
    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, _disk(r))
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n <= 2:
        return mask
    h, w = mask.shape
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    offset = np.hypot(centroids[1:, 0] - w / 2, centroids[1:, 1] - h / 2) / float(np.hypot(h, w))
    main = int(np.argmax(areas * np.exp(-((offset / 0.25) ** 2))))
    cut = np.zeros(n, bool)
    for j in range(n - 1):
        share = areas[j] / areas[main]
        cut[j + 1] = j != main and 0.12 <= share <= 0.5 and offset[j] > offset[main] + 0.02
    if not cut.any():
        return mask
    reach = cv2.dilate(cut[labels].astype(np.uint8), _disk(r + 1)).astype(bool)
    kept = mask & ~(reach & ~(labels == main + 1))
    n, parts = cv2.connectedComponents(kept.astype(np.uint8), connectivity=8)
    core = np.unique(parts[(labels == main + 1) & kept])
    core = core[core > 0]
    return np.isin(parts, core) if core.size else mask


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
    # GrabCut's colour models start from k-means on OpenCV's random generator (one a thread,
    # running on from call to call): seeded, a photo gets the same mask whichever thread and
    # turn it has (unseeded, dinoSR0011's confidence came out 0.753 to 0.758)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(image, crop, None, bgd, fgd, 2, cv2.GC_INIT_WITH_MASK)
    except cv2.error as exc:  # degenerate colour models: keep the threshold's answer
        logger.debug("grabCut skipped: %s", exc)
        return initial
    out = np.zeros_like(initial)
    out[y0:y1, x0:x1] = (crop == cv2.GC_FGD) | (crop == cv2.GC_PR_FGD)
    return out


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
    fg = nearest_colour(image, inside)
    bg = nearest_colour(image, outside)
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
    give_up_below: float | None = None,
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
    give_up_below
        The confidence a mask needs to be used. When the first segmentation already shows
        that the mask cannot reach it (the foreground reaches into the border band), the
        outline is not refined: the result is the refusal, with its reason, and an empty
        mask (``stats["refined"]`` False). None: always refine.

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
    rgb = _check_rgb(rgb)
    if not 0.0 < border <= 0.25:
        raise ValueError(f"border must be in (0, 0.25], got {border}")
    start = time.perf_counter()
    small, scale = _working_copy(rgb, max_side)
    h, w = small.shape[:2]
    band = _border_band(h, w, border)
    feat = _features(small, band)
    stats: dict[str, Any] = {"method": "border", **feat.stats, "working_size": [w, h]}
    initial, sure = _classify(feat, band, _edge_step(h, w))
    backdrop_like = (feat.colour <= _FG) & (feat.texture <= _TEX) & ~feat.shadow_like
    return _refine(
        rgb,
        small,
        scale,
        initial,
        sure,
        backdrop_like,
        band,
        stats,
        start,
        edge_radius,
        give_up_below,
    )


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    if min(height, width) < 16:
        raise ValueError(f"image of {width} x {height} pixels is too small to mask")
    return rgb


def _working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(width, height)`` at which a photo is segmented."""
    scale = min(1.0, max_side / max(height, width))
    if scale >= 1.0:
        return width, height
    return max(16, int(round(width * scale))), max(16, int(round(height * scale)))


def _working_copy(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    height, width = rgb.shape[:2]
    size = _working_size(width, height, max_side)
    if size == (width, height):
        return rgb, 1.0
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), size[0] / width


def _edge_step(h: int, w: int) -> float:
    # a soft shadow's lightness changes by at most ~2% of L per pixel at this size
    return 4.0 * max(1.0, 640.0 / max(h, w)) ** 0.5


def _refine(
    rgb: np.ndarray,
    small: np.ndarray,
    scale: float,
    initial: np.ndarray,
    sure: np.ndarray,
    backdrop_like: np.ndarray,
    band: np.ndarray,
    stats: dict[str, Any],
    start: float,
    edge_radius: int,
    give_up_below: float | None = None,
) -> MaskResult:
    """From a first segmentation at working size to the final mask, its confidence and reason.

    Keeps the main object, fills its holes, lets GrabCut settle the outline, brings the mask to
    full size and snaps its edges; then judges the result. A mask that cannot reach
    ``give_up_below`` is refused before that work (see :func:`estimate_mask`).
    """
    height, width = rgb.shape[:2]
    h, w = small.shape[:2]
    stats["band_foreground"] = round(float(initial[band].mean()), 4)
    if not sure.any() or sure.sum() < 0.0005 * h * w:
        stats["seconds"] = round(time.perf_counter() - start, 3)
        return _failed(
            (height, width),
            "no clear foreground: the photo looks like plain "
            "backdrop, or the product has the backdrop's colour",
            stats,
        )
    edge = stats["band_foreground"] > _BAND_FOREGROUND_MAX
    hopeless = edge and give_up_below is not None and _EDGE_PENALTY < give_up_below
    # a product filling the frame is refined, for its own message (leave some backdrop)
    stats["refined"] = not hopeless or float(initial.mean()) > _FILLS_FRAME
    if not stats["refined"]:
        # at most 0.3 of a perfect outline's confidence: settling the outline (GrabCut, the
        # full-size snap: most of the time) would be spent on a mask that is not used
        stats["seconds"] = round(time.perf_counter() - start, 3)
        return _failed((height, width), _EDGE_REASON, stats)

    mask = _keep_main(
        cv2.morphologyEx(initial.astype(np.uint8), cv2.MORPH_OPEN, _disk(1)).astype(bool)
    )
    mask = _fill_holes(_detach(mask), backdrop_like)
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
    if fraction > _FILLS_FRAME:
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
    if touching > _TOUCHING_MAX or edge:
        confidence *= _EDGE_PENALTY
        reason = _EDGE_REASON
    elif contrast < 0.5:
        reason = "the product's outline is faint against the backdrop: check the mask"
    return MaskResult(mask, round(float(confidence), 3), reason, stats)


def estimate_mask_model(
    rgb: np.ndarray, segmenter: Callable[[np.ndarray], np.ndarray], *, edge_radius: int = 2
) -> MaskResult:
    """The product's mask from a segmentation network's probability.

    The probability is thresholded at 0.5; the main object is kept, its holes filled and its
    outline snapped to the photo's edges (as :func:`estimate_mask` does). The confidence says
    how decisive the network was: one minus the undecided pixels (probability between 0.2 and
    0.8) per product pixel.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8 RGB photo.
    segmenter
        Maps ``rgb`` to an ``(H, W)`` float product probability
        (:class:`engine.models.ProductSegmenter`).
    edge_radius
        Half-width in pixels of the band along the outline that is snapped.

    Returns
    -------
    MaskResult
        As :func:`estimate_mask`; ``stats["method"]`` is ``"model"``.

    Raises
    ------
    ValueError
        When ``rgb`` is not an ``(H, W, 3)`` uint8 image of at least 16 x 16 pixels, or the
        probability does not have the photo's size.
    """
    rgb = _check_rgb(rgb)
    start = time.perf_counter()
    height, width = rgb.shape[:2]
    prob = np.asarray(segmenter(rgb), np.float32)
    if prob.shape != (height, width):
        raise ValueError(f"probability of shape {prob.shape} for a {width} x {height} photo")
    raw = prob > 0.5
    undecided = int(((prob > _UNDECIDED[0]) & (prob < _UNDECIDED[1])).sum())
    decisive = 1.0 - undecided / max(1, int(raw.sum()))
    stats: dict[str, Any] = {"method": "model", "raw_fraction": round(float(raw.mean()), 4)}
    mask = _keep_main(cv2.morphologyEx(raw.astype(np.uint8), cv2.MORPH_OPEN, _disk(1)).astype(bool))
    mask = _fill_holes(mask, None)
    if mask.any():
        snapped, contrast = _snap_edges(rgb, mask, edge_radius)
        mask = _fill_holes(_overlapping(snapped, mask), None)
    else:
        contrast = 0.0
    fraction = float(mask.mean())
    stats.update(
        {
            "foreground_fraction": round(fraction, 4),
            "decisiveness": round(decisive, 3),
            "edge_contrast": round(contrast, 3),
            "seconds": round(time.perf_counter() - start, 3),
        }
    )
    if fraction == 0.0:
        return _failed((height, width), "the segmentation model found no product", stats)
    if fraction > _FILLS_FRAME:
        return _failed(
            (height, width),
            f"the segmentation model marks {fraction:.0%} of the photo as product",
            stats,
            mask,
            0.05,
        )
    confidence = float(np.clip(decisive, 0.0, 1.0))
    reason = "" if confidence >= MIN_CONFIDENCE else "the segmentation model is undecided"
    return MaskResult(mask, round(confidence, 3), reason, stats)


# ------------------------------------------------------------------------------ still backdrops

#: A camera group needs this many photos before what stays still in them is called backdrop.
STATIC_MIN_PHOTOS = 4
#: At most this many photos of a group build its backdrop (spread evenly over the group).
_STATIC_MAX_FRAMES = 24
#: A still backdrop matters (is "detected") when its textured part covers this much of the frame.
_STATIC_TEXTURED = 0.12
#: Least local spread of L (5 x 5 pixels) of a textured still backdrop.
_STATIC_MIN_SD = 2.0
#: Photos of a camera group first checked for texture that could stay still.
_STATIC_PROBE = 4
#: Misalignment (working pixels) tolerated between a photo and its still backdrop.
_STATIC_SHIFT = 2
#: Side of the thumbnails photos are grouped by, and the share of their border that must agree.
_THUMB_SIDE, _THUMB_AGREE = 96, 0.7


@dataclass(frozen=True, eq=False)
class StaticBackdrop:
    """What stays still in the photos of one fixed camera (a turntable shoot's ring).

    Attributes
    ----------
    plate
        ``(h, w, 3)`` float32 CIE Lab of the still backdrop at working size.
    known
        ``(h, w)`` bool: where the backdrop was seen still in enough photos to be known (not
        where the product always stands).
    sigma_light, sigma_chroma
        Noise of a still pixel from photo to photo: of ``log(L + 16)`` and of the shading-free
        chroma (see :func:`estimate_mask`).
    still_fraction
        Fraction of the frame that is known, still backdrop.
    textured_fraction
        Fraction of the frame that is still, known and textured (where SIFT finds features
        that never move).
    photos
        Number of photos it was estimated from.
    frames
        ``(n, h, w, 3)`` float32 Lab of the photos (at most :data:`_STATIC_MAX_FRAMES`) it was
        estimated from: a pixel another photo shows alike is backdrop too, where the product
        stands in most photos and the backdrop is not known.
    """

    plate: np.ndarray = field(repr=False)
    known: np.ndarray = field(repr=False)
    sigma_light: float
    sigma_chroma: float
    still_fraction: float
    textured_fraction: float
    photos: int
    frames: np.ndarray = field(repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the working size."""
        return int(self.plate.shape[1]), int(self.plate.shape[0])

    @property
    def detected(self) -> bool:
        """Whether the still backdrop is textured enough to mislead SfM (a turntable shoot)."""
        return self.textured_fraction >= _STATIC_TEXTURED


def _lab(rgb: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(rgb.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab)
    return cv2.GaussianBlur(lab, (0, 0), 0.7)


def _log_chroma(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log(L + 16)`` and the shading-free chroma of a Lab image (as :func:`_features`)."""
    lp = lab[..., 0] + np.float32(16.0)
    return np.log(lp), lab[..., 1:] * (np.float32(100.0) / lp)[..., None]


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """Small greyscale copy of a photo that :func:`group_by_camera` compares.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8 photo.

    Returns
    -------
    numpy.ndarray
        float32 grey, longest side :data:`_THUMB_SIDE` pixels.
    """
    rgb = _check_rgb(rgb)
    height, width = rgb.shape[:2]
    size = _working_size(width, height, _THUMB_SIDE)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def group_by_camera(
    thumbs: list[np.ndarray], sizes: list[tuple[int, int]], *, border: float = 0.12
) -> list[list[int]]:
    """Group photos taken by a camera that did not move: same size, near-identical borders.

    Parameters
    ----------
    thumbs
        :func:`thumbnail` of each photo.
    sizes
        ``(width, height)`` of each photo.
    border
        Width of the compared border band (fraction of each side); the product may reach into
        it in some photos, so :data:`_THUMB_AGREE` of it must agree, within 12 grey levels.

    Returns
    -------
    list of list of int
        Photo indices per group, in input order; every photo is in exactly one group.
    """
    groups: list[list[int]] = []
    for i, (thumb, size) in enumerate(zip(thumbs, sizes, strict=True)):
        band = _border_band(thumb.shape[0], thumb.shape[1], border)
        for group in groups:
            j = group[0]
            if sizes[j] != size or thumbs[j].shape != thumb.shape:
                continue
            diff = cv2.blur(np.abs(thumb - thumbs[j]), (3, 3))
            if float((diff[band] < 12.0).mean()) >= _THUMB_AGREE:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _local_sd(lightness: np.ndarray) -> np.ndarray:
    """Standard deviation of L over 5 x 5 pixels: where a backdrop is textured."""
    mean = cv2.blur(lightness, (5, 5))
    return np.sqrt(np.maximum(cv2.blur(lightness**2, (5, 5)) - mean**2, 0.0))


def _still_tolerance(planes: np.ndarray) -> float:
    """Colour distance (Lab) within which two photos show the same still pixel.

    ``planes`` is ``(3, n, h, w)``: the photos' Lab channel planes. The noise between photos
    comes from the pixels that match another photo best (mostly backdrop).
    """
    n = planes.shape[1]
    nearest = np.min([_sq_dist(planes, 0, j) for j in range(1, n)], axis=0)
    return float(np.clip(3.0 * np.sqrt(np.median(nearest)), 1.5, 8.0))


def _sq_dist(planes: np.ndarray, i: int, j: int) -> np.ndarray:
    return sum((planes[c, i] - planes[c, j]) ** 2 for c in range(3))


def may_hold_still_texture(frames: list[np.ndarray]) -> bool:
    """Whether photos could hold a still, textured backdrop (:attr:`StaticBackdrop.detected`).

    ``frames`` are a few of the group's photos, spread over it, at working size. A pixel that
    is textured and shows the same colour in two of them is still texture; when such pixels
    cover less than half of :data:`_STATIC_TEXTURED` of the frame, no still backdrop can be
    detected and the all-pairs comparison of up to :data:`_STATIC_MAX_FRAMES`
    photos of :func:`static_backdrop` is skipped (on the 36-photo sample, a studio sweep, it
    took 5 of the masks stage's 10 s). A still pixel the product hides in all but one of the
    frames is missed, hence the margin.
    """
    if len(frames) < 2:
        return True
    stack = np.stack([_lab(_check_rgb(f)) for f in frames])
    planes = np.ascontiguousarray(stack.transpose(3, 0, 1, 2))
    tol = _still_tolerance(planes)
    n = len(frames)
    rough = [_local_sd(lab[..., 0]) > _STATIC_MIN_SD for lab in stack]
    textured = np.zeros(stack.shape[1:3], bool)
    for i in range(n):
        for j in range(i + 1, n):
            # alike and textured in both: not the rim of a product that moved on
            textured |= (_sq_dist(planes, i, j) < tol * tol) & rough[i] & rough[j]
    return float(textured.mean()) >= 0.5 * _STATIC_TEXTURED


def static_backdrop(frames: list[np.ndarray]) -> StaticBackdrop:
    """Estimate the still backdrop of photos from a camera that did not move.

    Each pixel's backdrop is the colour that most photos agree on (a mode, not a median: the
    product turns through a pixel in front of the backdrop, and a plain part of a turning
    product agrees with itself). Where fewer than a quarter of the photos (and three) agree,
    the backdrop is unknown there: the product always stands there.

    Parameters
    ----------
    frames
        At least :data:`STATIC_MIN_PHOTOS` ``(h, w, 3)`` uint8 photos of one size, at the working
        size the masks are computed at.

    Returns
    -------
    StaticBackdrop

    Raises
    ------
    ValueError
        With too few photos or photos of different sizes.
    """
    if len(frames) < STATIC_MIN_PHOTOS:
        raise ValueError(f"need at least {STATIC_MIN_PHOTOS} photos, got {len(frames)}")
    if len({f.shape for f in frames}) != 1:
        raise ValueError("the photos of a still backdrop must all have the same size")
    step = len(frames) / min(len(frames), _STATIC_MAX_FRAMES)
    picked = [frames[int(k * step)] for k in range(min(len(frames), _STATIC_MAX_FRAMES))]
    stack = np.stack([_lab(_check_rgb(f)) for f in picked])
    n, h, w, _ = stack.shape
    planes = np.ascontiguousarray(stack.transpose(3, 0, 1, 2))  # channel planes: faster

    tol = _still_tolerance(planes)
    support = np.ones((n, h, w), np.int16)
    for i in range(n):
        for j in range(i + 1, n):
            close = _sq_dist(planes, i, j) < tol * tol
            support[i] += close
            support[j] += close
    best = np.argmax(support, axis=0)
    best_support = np.take_along_axis(support, best[None], axis=0)[0]
    mode = np.take_along_axis(stack, best[None, :, :, None], axis=0)[0]
    agree = np.linalg.norm(stack - mode[None], axis=-1) < tol
    count = np.maximum(agree.sum(axis=0), 1).astype(np.float32)
    plate = (stack * agree[..., None]).sum(axis=0) / count[..., None]
    known = best_support >= max(3, int(np.ceil(0.25 * n)))

    lam_p, chroma_p = _log_chroma(plate)
    dl, dc = [], []
    for k in range(n):
        lam, chroma = _log_chroma(stack[k])
        use = agree[k] & known
        dl.append((lam - lam_p)[use][::97])
        dc.append(np.linalg.norm(chroma - chroma_p, axis=-1)[use][::97])
    light = np.concatenate(dl) if dl else np.zeros(0)
    sigma_light = _robust_sigma(light, _FLOOR_LIGHT)
    sigma_chroma = _spread(np.concatenate(dc)) if dc else _FLOOR_CHROMA

    textured = known & (_local_sd(plate[..., 0]) > max(_STATIC_MIN_SD, 4.0 * tol / 3.0))
    return StaticBackdrop(
        plate.astype(np.float32),
        known,
        round(float(sigma_light), 5),
        round(float(sigma_chroma), 4),
        round(float(known.mean()), 4),
        round(float(textured.mean()), 4),
        len(frames),
        stack,
    )


def _static_features(small: np.ndarray, backdrop: StaticBackdrop) -> _Features:
    """Evidence that a photo differs from its still backdrop, as :class:`_Features`.

    A photo is compared with the range of the backdrop's values within :data:`_STATIC_SHIFT`
    pixels (3 x 3 patches), so a camera nudged a little, or a backdrop a pixel off, is still
    backdrop;
    and with each other photo of the camera unshifted, so that backdrop the product hides in
    most photos is still recognised where one other photo shows it alike. A pixel that is
    only darker than the backdrop, with its chroma, is shadow-like.
    """
    lab = _lab(small)
    lam, chroma = _log_chroma(lab)
    sl, sc = np.float32(backdrop.sigma_light), np.float32(backdrop.sigma_chroma)

    def evidence(residual: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Any difference, and the difference a shadow does not explain (backdrop spreads)."""
        dist_c = dist * np.exp(np.minimum(residual, np.float32(0.0))) / sc
        light = residual / sl
        anyway = np.sqrt(dist_c**2 + light**2)
        beyond = (-residual - np.float32(_SHADOW_DEPTH)) / sl
        shadowed = np.where(light < -_FG, np.maximum(dist_c, beyond), anyway)
        return cv2.blur(anyway, (3, 3)), cv2.blur(shadowed, (3, 3))

    def outside(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        return np.where(value > high, value - high, np.where(value < low, value - low, 0.0))

    # the backdrop's range of values within the shift window, over the known pixels only
    kernel = np.ones((2 * _STATIC_SHIFT + 1,) * 2, np.uint8)
    big = np.float32(1e6)
    lam_p, chroma_p = _log_chroma(backdrop.plate)
    channels = [lam_p, chroma_p[..., 0], chroma_p[..., 1]]
    values = [lam, chroma[..., 0], chroma[..., 1]]
    excess = []
    for value, plate in zip(values, channels, strict=True):
        high = cv2.dilate(np.where(backdrop.known, plate, -big), kernel)
        low = cv2.erode(np.where(backdrop.known, plate, big), kernel)
        excess.append(outside(value, low, high).astype(np.float32))
    full, colour = evidence(excess[0], np.hypot(excess[1], excess[2]))
    # where the backdrop is unknown the product stands in most photos: probable foreground
    unknown = ~cv2.dilate(backdrop.known.astype(np.uint8), kernel).astype(bool)
    full[unknown] = colour[unknown] = np.float32(0.5 * (_FG + _SURE))

    ys, xs = np.nonzero(full > _FG)
    if ys.size:
        h, w = lam.shape
        y0, y1 = max(0, ys.min() - 2), min(h, ys.max() + 3)
        x0, x1 = max(0, xs.min() - 2), min(w, xs.max() + 3)
        crop = (slice(y0, y1), slice(x0, x1))
        for other in backdrop.frames:
            if np.array_equal(other, lab):
                continue  # the photo itself
            lam_o, chroma_o = _log_chroma(other[crop])
            dist = np.linalg.norm(chroma[crop] - chroma_o, axis=-1)
            anyway, _ = evidence(lam[crop] - lam_o, dist)
            np.minimum(full[crop], anyway, out=full[crop])
            np.minimum(colour[crop], anyway, out=colour[crop])
    shadow_like = (full > _FG) & (colour <= _FG)
    sharp = cv2.GaussianBlur(lab[..., 0], (0, 0), 0.5)
    gx = cv2.Sobel(sharp, cv2.CV_32F, 1, 0, ksize=3) * np.float32(0.125)
    gy = cv2.Sobel(sharp, cv2.CV_32F, 0, 1, ksize=3) * np.float32(0.125)
    stats = {
        "still_fraction": backdrop.still_fraction,
        "still_textured_fraction": backdrop.textured_fraction,
    }
    return _Features(colour, shadow_like, np.zeros_like(colour), cv2.magnitude(gx, gy), stats)


def _classify_static(feat: _Features, edge_step: float) -> tuple[np.ndarray, np.ndarray]:
    """Initial and sure foreground against a still backdrop.

    What matches the backdrop is backdrop, however busy; a shadow-like pixel is backdrop when a
    smooth path joins it to backdrop that matches outright (as in :func:`_classify`).
    """
    fg = feat.colour > _FG
    matches = ~fg & ~feat.shadow_like
    passable = matches | (feat.shadow_like & (feat.gradient < edge_step))
    backdrop = _backdrop_connected(passable, matches)
    backdrop = _absorb_thin(backdrop, fg)
    initial = ~backdrop
    return initial, (feat.colour > _SURE) & initial


def estimate_mask_static(
    rgb: np.ndarray,
    backdrop: StaticBackdrop,
    *,
    max_side: int = 640,
    edge_radius: int = 2,
    give_up_below: float | None = None,
) -> MaskResult:
    """Estimate the product's mask in a photo whose camera and backdrop stood still.

    What differs from the still backdrop (:func:`static_backdrop`) is the product; a soft
    shadow on the backdrop is not. The outline is then settled as in :func:`estimate_mask`.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8 RGB photo, one of those the backdrop was estimated from (or another
        photo from the same camera).
    backdrop
        The still backdrop of the photo's camera.
    max_side
        Longest side of the working size: the backdrop's size must be this photo's.
    edge_radius
        Half-width in working pixels of the band GrabCut settles along the outline.
    give_up_below
        As :func:`estimate_mask`.

    Returns
    -------
    MaskResult
        As :func:`estimate_mask`; ``stats["method"]`` is ``"static"``.

    Raises
    ------
    ValueError
        When ``rgb`` is not an ``(H, W, 3)`` uint8 image, or its working size is not the
        backdrop's.
    """
    rgb = _check_rgb(rgb)
    start = time.perf_counter()
    small, scale = _working_copy(rgb, max_side)
    h, w = small.shape[:2]
    if (w, h) != backdrop.size:
        raise ValueError(
            f"photo of working size {w} x {h} does not fit a still backdrop of "
            f"{backdrop.size[0]} x {backdrop.size[1]}"
        )
    feat = _static_features(small, backdrop)
    stats: dict[str, Any] = {"method": "static", **feat.stats, "working_size": [w, h]}
    initial, sure = _classify_static(feat, _edge_step(h, w))
    backdrop_like = (feat.colour <= _FG) & ~feat.shadow_like
    band = _border_band(h, w, 0.02)
    return _refine(
        rgb,
        small,
        scale,
        initial,
        sure,
        backdrop_like,
        band,
        stats,
        start,
        edge_radius,
        give_up_below,
    )


# ------------------------------------------------------------------------------ the stage


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


def _overrides(cfg: MaskConfig, images: tuple[ImageRecord, ...]) -> dict[str, Path]:
    """Painted masks by image name; the folder must exist when one is configured."""
    if not cfg.override_dir:
        return {}
    folder = Path(cfg.override_dir)
    if not folder.is_dir():
        raise InputError(
            f"The folder of painted masks '{folder}' does not exist: choose it again, or clear "
            "the painted-masks setting."
        )
    found = {}
    for rec in images:
        path = folder / f"{rec.name}.png"
        if path.is_file():
            found[rec.name] = path
    return found


def _read_override(path: Path, rec: ImageRecord) -> np.ndarray:
    """A painted mask at the photo's working size, 0 / 255."""
    try:
        mask = read_mask(path)
    except ImageReadError as exc:
        raise InputError(
            f"The painted mask '{path}' cannot be read ({exc.reason}): paint it again or delete it."
        ) from exc
    mh, mw = mask.shape
    if abs(mh * rec.width - mw * rec.height) > 0.02 * mw * rec.height:
        raise InputError(
            f"The painted mask '{path}' is {mw} x {mh} pixels, not the shape of photo "
            f"{rec.name} ({rec.width} x {rec.height}): paint it again on that photo or delete it."
        )
    return binarize_mask(mask, rec.width, rec.height)


def _turntables(
    images: tuple[ImageRecord, ...],
    wanted: set[str],
    max_side: int,
    cancel: CancelToken | None,
) -> tuple[dict[str, StaticBackdrop], dict[str, Any]]:
    """Still backdrops of fixed cameras, by the name of each photo they cover; the report."""
    readable, thumbs, sizes = [], [], []
    for rec in images:
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            rgb, _ = read_image(rec.working_path)
            thumbs.append(thumbnail(rgb))
        except (ImageReadError, ValueError):
            continue
        readable.append(rec)
        sizes.append((rgb.shape[1], rgb.shape[0]))
    found: dict[str, StaticBackdrop] = {}
    groups, photos, still = 0, 0, []
    for group in group_by_camera(thumbs, sizes):
        members = [readable[i] for i in group]
        if len(members) < STATIC_MIN_PHOTOS or not any(r.name in wanted for r in members):
            continue

        def read(recs: list[ImageRecord]) -> list[np.ndarray]:
            out = []
            for rec in recs:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                out.append(_working_copy(read_image(rec.working_path)[0], max_side)[0])
            return out

        probe = len(members) / _STATIC_PROBE
        if not may_hold_still_texture(
            read([members[int(k * probe)] for k in range(_STATIC_PROBE)])
        ):
            logger.info(
                "camera group of %d photos (%s ...): too little texture to stay still",
                len(members),
                members[0].name,
            )
            continue
        step = len(members) / min(len(members), _STATIC_MAX_FRAMES)
        picked = [members[int(k * step)] for k in range(min(len(members), _STATIC_MAX_FRAMES))]
        backdrop = static_backdrop(read(picked))
        logger.info(
            "camera group of %d photos (%s ...): %.0f%% of the frame still, %.0f%% still and "
            "textured",
            len(members),
            members[0].name,
            100 * backdrop.still_fraction,
            100 * backdrop.textured_fraction,
        )
        if backdrop.detected:
            groups += 1
            photos += len(members)
            still.append(backdrop.still_fraction)
            found.update({r.name: backdrop for r in members})
    if not groups:
        return found, no_turntable()
    report = {
        "detected": True,
        "groups": groups,
        "photos": photos,
        "static_fraction": round(float(np.mean(still)), 3),
        "note": (
            f"Turntable shoot detected: {photos} photos share a fixed background"
            + (f" ({groups} camera positions)" if groups > 1 else "")
            + "; it was masked out so the cameras are solved from the product."
        ),
    }
    return found, report


def run(
    ingest: IngestResult,
    cfg: MaskConfig,
    work_dir: Path,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    device: str = "cpu",
) -> MaskStageResult:
    """Give every photo its mask: switched off, painted by the user, from a file, or automatic.

    Per photo, the first that applies:

    1. its name is in ``cfg.disabled``: no mask (the whole photo is used);
    2. ``cfg.override_dir/<name>.png`` exists: the user's painted mask (255 = product, resized
       nearest to the working copy);
    3. ingest found a mask file for it (``mask_path`` set): kept as it is;
    4. ``cfg.enabled``: an automatic mask, from the still backdrop of its camera when the
       photos are a turntable shoot (``cfg.static_background``, :func:`static_backdrop`),
       else from the backdrop along its borders (:func:`estimate_mask`); a mask less confident
       than ``cfg.min_confidence`` is not used. When ``cfg.model`` names a segmentation
       network it is loaded once and used instead (:func:`estimate_mask_model`); one that
       cannot be loaded is logged and the weight-free methods are used, with the reason in
       the result's ``model``.

    COLMAP 4.2.1 (pycolmap ``extract_features`` with ``ImageReaderOptions.mask_path``) leaves
    out every photo whose mask file is missing ("MASK_ERROR: Failed to read the mask file").
    So once any photo has a mask, each photo without one gets an all-255 mask file (it keeps
    ``mask_path = None``: nothing is masked out of it) and is listed in ``whole``.

    Parameters
    ----------
    ingest
        Output of the ingest stage.
    cfg
        The masks stage's settings.
    work_dir
        The work folder; masks are written to ``work_dir/masks/<name>.png`` (0 / 255, working
        size).
    progress
        Called with a :class:`ProgressEvent` (stage ``"masks"``) at the start and after each
        image.
    cancel
        Checked before each image (and each photo read for a turntable's backdrop).
    device
        ``"cpu"`` or ``"cuda"``, where a segmentation network runs (``cfg.model``).

    Returns
    -------
    MaskStageResult
        Updated records, where each mask came from, what failed and why, the turntable report
        and per-image stats.

    Raises
    ------
    Cancelled
        When ``cancel`` is cancelled.
    InputError
        When the painted-masks folder is missing, or a painted mask is unreadable or does not
        fit its photo.
    OutputError
        When a mask cannot be written.
    """
    work_dir = Path(work_dir)
    total = len(ingest.images)
    progress(ProgressEvent(STAGE, 0, total, f"masking {total} photos"))
    overrides = _overrides(cfg, ingest.images)
    switched_off = set(cfg.disabled)
    wanted = {
        rec.name
        for rec in ingest.images
        if rec.name not in switched_off and rec.name not in overrides and rec.mask_path is None
    }
    segmenter, model_report = None, NO_MODEL
    if cfg.enabled and cfg.model and wanted:
        segmenter, model_report = _load_segmenter(cfg, device, progress, cancel)
    backdrops: dict[str, StaticBackdrop] = {}
    turntable = no_turntable()
    if (
        segmenter is None
        and cfg.enabled
        and cfg.static_background
        and wanted
        and total >= STATIC_MIN_PHOTOS
    ):
        backdrops, turntable = _turntables(ingest.images, wanted, cfg.max_side, cancel)
        if turntable["detected"]:
            logger.info("%s", turntable["note"])

    automatic = [
        rec
        for rec in ingest.images
        if cfg.enabled
        and rec.name not in switched_off
        and rec.name not in overrides
        and rec.mask_path is None
    ]
    # OpenCV and numpy release the GIL: photos are masked side by side (a network runs alone)
    workers = 1 if segmenter is not None else mask_workers()
    results = _in_order(
        lambda rec: _automatic(rec, backdrops.get(rec.name), cfg, segmenter),
        automatic,
        workers,
        cancel,
    )
    images: list[ImageRecord] = []
    computed: list[str] = []
    from_files: list[str] = []
    user: list[str] = []
    disabled: list[str] = []
    failed: list[tuple[str, str]] = []
    stats: dict[str, dict[str, Any]] = {}
    try:
        for index, rec in enumerate(ingest.images):
            if cancel is not None:
                cancel.raise_if_cancelled()
            target = mask_path_for(work_dir, rec.name)
            if rec.name in switched_off:
                target.unlink(missing_ok=True)
                images.append(dataclasses.replace(rec, mask_path=None, mask_source=""))
                disabled.append(rec.name)
                message = f"{rec.name}: mask switched off"
            elif rec.name in overrides:
                write_png(target, _read_override(overrides[rec.name], rec), compress_level=6)
                images.append(dataclasses.replace(rec, mask_path=target, mask_source="painted"))
                user.append(rec.name)
                message = f"{rec.name}: painted mask"
            elif rec.mask_path is not None:
                images.append(rec)
                from_files.append(rec.name)
                message = f"{rec.name}: mask from file"
            elif not cfg.enabled:
                target.unlink(missing_ok=True)  # a stale automatic mask would be applied by COLMAP
                images.append(rec)
                message = f"{rec.name}: no mask"
            else:
                result = next(results)
                stats[rec.name] = {**result.stats, "confidence": result.confidence}
                if result.confidence >= cfg.min_confidence and result.mask.any():
                    write_png(
                        target, np.where(result.mask, 255, 0).astype(np.uint8), compress_level=6
                    )
                    source = _source(rec.name, backdrops, segmenter)
                    images.append(dataclasses.replace(rec, mask_path=target, mask_source=source))
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
                    target.unlink(missing_ok=True)
                    images.append(rec)
                    reason = result.reason or f"confidence {result.confidence:.2f} is too low"
                    failed.append((rec.name, reason))
                    logger.info("%s: no automatic mask: %s", rec.name, reason)
                    message = f"{rec.name}: no mask"
            progress(ProgressEvent(STAGE, index + 1, total, message))
    finally:
        results.close()  # stops the masking threads when cancelled or failed

    whole: list[str] = []
    if any(rec.mask_path is not None for rec in images):
        for rec in images:
            if rec.mask_path is None:
                full = np.full((rec.height, rec.width), 255, np.uint8)
                write_png(mask_path_for(work_dir, rec.name), full, compress_level=6)
                whole.append(rec.name)
    for line in grouped(dict(failed)):  # one line for many photos
        logger.warning("No automatic mask for %s", line)
    logger.info(
        "masks: %d computed, %d from files, %d painted, %d switched off, %d without a mask",
        len(computed),
        len(from_files),
        len(user),
        len(disabled),
        len(failed),
    )
    return MaskStageResult(
        tuple(images),
        tuple(computed),
        tuple(from_files),
        tuple(failed),
        stats,
        tuple(user),
        tuple(disabled),
        tuple(whole),
        turntable,
        model_report,
    )


def _load_segmenter(
    cfg: MaskConfig, device: str, progress: ProgressCallback, cancel: CancelToken | None
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, dict[str, Any] | str]:
    """The segmentation network of ``cfg.model`` and its report entry, or why it is not used."""
    from engine.models import ModelUnavailable, load_segmentation_model  # imports torch

    try:
        segmenter = load_segmentation_model(
            cfg.model,
            device=device,
            allow_download=cfg.allow_download,
            progress=progress,
            cancel=cancel,
        )
    except ModelUnavailable as exc:
        logger.warning("Segmentation model not used (weight-free masks instead): %s", exc)
        return None, f"not used: {exc}"
    return segmenter, segmenter.info.to_dict()


def _source(name: str, backdrops: dict[str, StaticBackdrop], segmenter: Callable | None) -> str:
    """The ``ImageRecord.mask_source`` of an automatic mask (as :func:`_automatic` chose)."""
    if segmenter is not None:
        return "model"
    return "turntable" if name in backdrops else "automatic"


def mask_workers() -> int:
    """Photos masked at once: one per core, at most 4 (each holds a full-size photo)."""
    return max(1, min(4, os.cpu_count() or 1))


def _in_order(
    fn: Callable[[ImageRecord], MaskResult],
    recs: list[ImageRecord],
    workers: int,
    cancel: CancelToken | None,
) -> Iterator[MaskResult]:
    """``fn`` of every record, in order, computed by ``workers`` threads a few photos ahead.

    Cancellation is checked before each photo is started; photos not started when the
    iterator is closed are dropped.
    """
    if workers <= 1:
        for rec in recs:
            if cancel is not None:
                cancel.raise_if_cancelled()
            yield fn(rec)
        return
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="masks") as pool:
        try:
            ahead = iter(recs)
            for rec in ahead:
                pending.append(pool.submit(fn, rec))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                result = pending.pop(0).result()
                nxt = next(ahead, None)
                if nxt is not None:
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    pending.append(pool.submit(fn, nxt))
                yield result
        finally:
            for future in pending:
                future.cancel()


def _automatic(
    rec: ImageRecord,
    backdrop: StaticBackdrop | None,
    cfg: MaskConfig,
    segmenter: Callable[[np.ndarray], np.ndarray] | None = None,
) -> MaskResult:
    """The automatic mask of one photo at its working size (a failed result if unreadable)."""
    try:
        rgb, _ = read_image(rec.working_path)
        if segmenter is not None:
            result = estimate_mask_model(rgb, segmenter)
        elif backdrop is not None:
            result = estimate_mask_static(
                rgb, backdrop, max_side=cfg.max_side, give_up_below=cfg.min_confidence
            )
        else:
            result = estimate_mask(
                rgb, border=cfg.border, max_side=cfg.max_side, give_up_below=cfg.min_confidence
            )
    except (ImageReadError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, ImageReadError) else str(exc)
        return MaskResult(
            np.zeros((rec.height, rec.width), bool), 0.0, f"could not be masked ({reason})"
        )
    if result.mask.shape != (rec.height, rec.width):
        mask = cv2.resize(
            result.mask.astype(np.uint8), (rec.width, rec.height), interpolation=cv2.INTER_NEAREST
        ).astype(bool)
        result = dataclasses.replace(result, mask=mask)
    return result
