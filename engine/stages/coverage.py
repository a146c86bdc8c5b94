"""Pre-flight checks on the photos and the coverage map of the placed cameras: reshoot advice.

Two steps, both cheap and both advisory (they never stop a run):

* :func:`preflight`, right after ingest: blurry, badly exposed and duplicated photos, and too few
  of them. Judged against the set itself where the measure depends on the subject (sharpness,
  brightness), so a plain white product on a white sweep is not flagged photo by photo; absolute
  limits catch what is wrong whatever the subject (a frame with no detail, a black frame).
* :func:`run`, after SfM: each registered camera's viewing direction from the product centre,
  counted in an azimuth x elevation grid (azimuth around the up direction, from the first
  photo, in shooting order), and the gaps a reshoot should fill, in plain words with the
  action to take. Views from below the product are never asked for: a product standing on
  something is not seen from underneath, which is said once as a note.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from engine.config import CoverageConfig
from engine.geometry import axes_meeting_point, up_direction
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.stages.ingest import natural_key
from engine.types import CameraPose, ImageRecord, IngestResult

logger = logging.getLogger(__name__)

STAGE = "coverage"
#: Progress stage name of :func:`preflight` (it runs before the other stages).
PREFLIGHT_STAGE = "preflight"

AdviceKind = Literal["blurry", "underexposed", "overexposed", "duplicate", "too_few"]

# -- pre-flight thresholds
#: A photo sharper than this fraction of the set's median is not called blurry by comparison.
BLUR_RELATIVE = 0.3
#: Sharpness (Laplacian variance at 800 px) under which a photo has almost no detail at all.
#: Deliberately low: a sharp photo of a plain product measures 8-12 on the synthetic scenes.
BLUR_FLOOR = 5.0
#: A photo whose brightest 1% is under this grey level is too dark whatever the set (a dark
#: backdrop lowers the mean, not the product's highlights) ...
DARK_TOP = 40.0
#: ... and one whose darkest 1% is over this is washed out.
BRIGHT_BOTTOM = 215.0
#: Mean level under this fraction of the set's median (over a stop darker) is too dark; the
#: same fraction of the median headroom (255 - level) is too bright.
LEVEL_RATIO = 0.5
#: Fraction of pixels clipped to black or white that is too much ... (high: a clipped white or
#: black backdrop is common, and it is the product that matters)
CLIP_LIMIT = 0.5
#: ... when it is also this much more than the set's median (a black or white backdrop clips
#: in every photo, by an amount that changes with the view, and is not a fault).
CLIP_EXCESS = 0.25
#: Width of the copy that grey levels are measured on.
LEVELS_WIDTH = 256
#: Width of the greyscale thumbnails compared for near duplicates.
THUMB_WIDTH = 64
#: RMS difference of two standardised thumbnails under which they show the same view
#: (sqrt(2 (1 - correlation)): 0.05 is a correlation of 0.99875). A re-encoded JPEG or fresh
#: sensor noise gives about 0.02 (as do the Middlebury temple's two exposures from one gantry
#: position); neighbouring views 30 degrees apart of a plain bottle on a turntable (identical
#: backdrop) 0.09 and more, of real shoots 0.35 and more.
DUPLICATE_DISTANCE = 0.05
#: Names listed in one message before "and N more".
MAX_NAMED = 6

# -- coverage thresholds (degrees, elevation measured from the product centre's horizon)
#: The highest camera should reach this elevation, or the top of the product is barely seen.
HIGH_ENOUGH_DEG = 45.0
#: Suggested elevation of a ring looking down on the product.
TOP_RING_DEG = 60.0
#: The lowest camera should be at most this high, or the sides are only seen from above.
LOW_ENOUGH_DEG = 30.0
#: Suggested elevation of a ring of low side views.
LOW_RING_DEG = 15.0
#: Cameras within this elevation of one another are one ring.
RING_SPREAD_DEG = 15.0
#: Cameras at least this high are the "views from above" checked for a partial top ring.
UPPER_DEG = 40.0
#: Cameras below this elevation see the underside (a product standing on something has none).
UNDERSIDE_DEG = -20.0
#: An azimuth gap wider than this many map columns between neighbouring cameras is a gap.
GAP_BINS = 1.5
#: Largest azimuth gap among the views from above before they only partly go round.
UPPER_GAP_DEG = 120.0
#: Step between neighbouring photos that messages ask for (12 a turn).
STEP_DEG = 30.0


@dataclass(frozen=True)
class Advice:
    """One pre-flight finding.

    Attributes
    ----------
    kind
        ``"blurry"``, ``"underexposed"``, ``"overexposed"``, ``"duplicate"`` or ``"too_few"``.
    images
        Names of the photos concerned (empty for set-wide advice such as ``too_few``).
    message
        Plain words naming the photos and what to do.
    """

    kind: AdviceKind
    images: tuple[str, ...]
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"kind", "images", "message"}``."""
        return {"kind": self.kind, "images": list(self.images), "message": self.message}


def _names(names: Sequence[str]) -> str:
    """``a.jpg``, ``a.jpg and b.jpg``, ``a.jpg, b.jpg and c.jpg``, ``... and 4 more``."""
    names = list(names)
    if len(names) > MAX_NAMED:
        shown = names[: MAX_NAMED - 1]
        return ", ".join(shown) + f" and {len(names) - len(shown)} more"
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + f" and {names[-1]}"


def _photos(n: int) -> str:
    return f"{n} photo{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class _Look:
    """What pre-flight reads from one working copy: grey levels and a thumbnail."""

    level: float
    """Mean grey level (0-255)."""
    low: float
    """1st percentile of the grey levels."""
    high: float
    """99th percentile of the grey levels."""
    thumb: np.ndarray | None
    """Standardised (zero mean, unit spread) thumbnail; None for a flat frame."""


def _look(record: ImageRecord) -> _Look | None:
    """Grey levels and a standardised thumbnail of a working copy (None if unreadable)."""
    try:
        data = np.fromfile(str(record.working_path), np.uint8)  # non-ASCII paths on Windows
    except OSError as exc:
        logger.warning("pre-flight: cannot read the working copy of %s (%s)", record.name, exc)
        return None
    gray = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if gray is None or gray.size == 0:
        logger.warning("pre-flight: cannot decode the working copy of %s", record.name)
        return None
    height, width = gray.shape
    if width > LEVELS_WIDTH:
        size = (LEVELS_WIDTH, max(1, round(LEVELS_WIDTH * height / width)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    cumulative = np.cumsum(np.bincount(gray.ravel(), minlength=256)) / gray.size
    low, high = float(np.searchsorted(cumulative, 0.01)), float(np.searchsorted(cumulative, 0.99))
    size = (THUMB_WIDTH, max(1, round(THUMB_WIDTH * height / width)))
    thumb = cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb -= thumb.mean()
    spread = float(thumb.std())
    # A flat frame has no view to compare: leave it out of the duplicate search.
    return _Look(float(gray.mean()), low, high, thumb / spread if spread > 1.0 else None)


def _blurry(images: Sequence[ImageRecord], skip: Collection[str] = ()) -> list[Advice]:
    sharp = np.array([r.sharpness for r in images], np.float64)
    median = float(np.median(sharp))
    flagged = [
        r
        for r, s in zip(images, sharp, strict=True)
        if (s < BLUR_FLOOR or s < BLUR_RELATIVE * median) and r.name not in skip
    ]
    if not flagged:
        return []
    names = [r.name for r in flagged]
    if len(flagged) == len(images):
        who = f"All {len(names)} photos look" if len(names) > 1 else f"{names[0]} looks"
        message = (
            f"{who} blurry or without detail (sharpness "
            f"{_values(r.sharpness for r in flagged)}, under {BLUR_FLOOR:g}): check the "
            "focus, hold the camera steady (a tripod, a faster shutter) and light the "
            "product so its surface shows."
        )
    else:
        verb = "looks" if len(flagged) == 1 else "look"
        message = (
            f"{_names(names)} {verb} blurry next to the other photos (sharpness "
            f"{_values(r.sharpness for r in flagged)}, typical {median:.0f}): reshoot "
            f"{'it' if len(flagged) == 1 else 'them'} steadier and in focus, or leave "
            f"{'it' if len(flagged) == 1 else 'them'} out."
        )
    return [Advice("blurry", tuple(names), message)]


def _values(values: Any) -> str:
    """``4``, ``4 and 7``, ``4, 5 and 7``, or ``3 to 9`` for more."""
    values = [float(v) for v in values]
    if len(values) <= 3:
        return _names([f"{v:.0f}" for v in values])
    return f"{min(values):.0f} to {max(values):.0f}"


def _exposure(images: Sequence[ImageRecord], looks: Mapping[str, _Look]) -> list[Advice]:
    levels = {name: look.level for name, look in looks.items()}
    median_level = float(np.median(list(levels.values()))) if levels else 128.0
    median_dark = float(np.median([r.dark_fraction for r in images]))
    median_bright = float(np.median([r.bright_fraction for r in images]))
    dark: list[ImageRecord] = []
    bright: list[ImageRecord] = []
    for r in images:
        too_dark = r.dark_fraction > CLIP_LIMIT and r.dark_fraction > median_dark + CLIP_EXCESS
        too_bright = (
            r.bright_fraction > CLIP_LIMIT and r.bright_fraction > median_bright + CLIP_EXCESS
        )
        look = looks.get(r.name)
        if look is not None:
            too_dark |= look.high < DARK_TOP or (
                look.level < LEVEL_RATIO * median_level and look.level < 100.0
            )
            too_bright |= look.low > BRIGHT_BOTTOM or (
                255.0 - look.level < LEVEL_RATIO * (255.0 - median_level) and look.level > 160.0
            )
        if too_dark and not too_bright:
            dark.append(r)
        elif too_bright and not too_dark:
            bright.append(r)
    advice = []
    for kind, flagged, what, fix, clip in (
        (
            "underexposed",
            dark,
            "too dark (detail is lost in the shadows)",
            "add light or open up the exposure (+1 stop)",
            lambda r: r.dark_fraction,
        ),
        (
            "overexposed",
            bright,
            "too bright (detail is lost in the highlights)",
            "reduce the exposure (-1 stop) or soften the light",
            lambda r: r.bright_fraction,
        ),
    ):
        if not flagged:
            continue
        names = [r.name for r in flagged]
        many = len(flagged) > 1
        detail = []
        if all(r.name in levels for r in flagged):
            typical = f", typical {median_level:.0f}" if len(flagged) < len(images) else ""
            detail.append(f"mean level {_values(levels[r.name] for r in flagged)} of 255{typical}")
        worst = max(clip(r) for r in flagged)
        if worst > CLIP_LIMIT:
            detail.append(f"up to {worst:.0%} of the pixels clipped")
        who = (
            f"All {len(names)} photos are"
            if many and len(flagged) == len(images)
            else f"{_names(names)} {'are' if many else 'is'}"
        )
        message = (
            f"{who} {what}{': ' + '; '.join(detail) if detail else ''}. {fix.capitalize()} "
            f"and reshoot {'them' if many else 'it'}."
        )
        advice.append(Advice(kind, tuple(names), message))  # type: ignore[arg-type]
    return advice


def _groups(pairs: list[tuple[int, int]], n: int) -> list[list[int]]:
    """Connected groups (union-find) of index pairs, each sorted, in order of first member."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _duplicates(ingest: IngestResult, thumbs: dict[str, np.ndarray]) -> tuple[list[Advice], int]:
    """Exact and near duplicates; also the number of photos that add no new view."""
    images = ingest.images
    advice: list[Advice] = []
    # exact copies ingest already left out ("identical to <name>"): say what to do once here
    for skipped in ingest.skipped:
        if skipped.reason.startswith("identical to "):
            first = skipped.reason.removeprefix("identical to ").strip()
            advice.append(
                Advice(
                    "duplicate",
                    (first, skipped.path),
                    f"{skipped.path} is an exact copy of {first}, so it was left out: nothing to "
                    "do, unless another view was meant to be there (then take that photo).",
                )
            )
    index = {r.name: i for i, r in enumerate(images)}
    exact: list[tuple[int, int]] = []
    by_hash: dict[str, int] = {}
    for i, r in enumerate(images):
        if r.sha256:
            if r.sha256 in by_hash:
                exact.append((by_hash[r.sha256], i))
            else:
                by_hash[r.sha256] = i
    near: list[tuple[int, int]] = []
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, thumb in thumbs.items():
        by_shape.setdefault(thumb.shape, []).append(name)
    for names in by_shape.values():
        if len(names) < 2:
            continue
        x = np.stack([thumbs[n].ravel() for n in names]).astype(np.float64)
        x /= math.sqrt(x.shape[1])
        sq = (x * x).sum(1)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0))
        a, b = np.nonzero(np.triu(dist < DUPLICATE_DISTANCE, k=1))
        near.extend((index[names[i]], index[names[j]]) for i, j in zip(a, b, strict=True))
    exact_set = {tuple(sorted(p)) for p in exact}
    for group in _groups(exact, len(images)):
        names = [images[i].name for i in group]
        advice.append(
            Advice(
                "duplicate",
                tuple(names),
                f"{_names(names)} are the same file: keep one and leave the "
                f"{'other' if len(names) == 2 else 'others'} out (they add nothing).",
            )
        )
    near = [p for p in near if tuple(sorted(p)) not in exact_set]
    for group in _groups(near, len(images)):
        names = [images[i].name for i in group]
        others = "other" if len(names) == 2 else "others"
        advice.append(
            Advice(
                "duplicate",
                tuple(names),
                f"{_names(names)} look like the same view taken twice: keep the "
                f"{'sharper' if len(names) == 2 else 'sharpest'} and leave the {others} out; next "
                f"time move the camera (or turn the product) about {STEP_DEG:.0f} deg between "
                "shots.",
            )
        )
    # each group of copies, exact or near, adds one view
    redundant = sum(len(g) - 1 for g in _groups(exact + near, len(images)))
    return advice, redundant


def _too_few(count: int, redundant: int, cfg: CoverageConfig) -> list[Advice]:
    distinct = count - redundant
    if distinct >= cfg.min_photos:
        return []
    more = cfg.min_photos - distinct
    per_turn = round(360.0 / STEP_DEG)
    what = (
        "No photos"
        if count == 0
        else f"Only {_photos(distinct)}"
        if not redundant
        else f"Only {distinct} different views ({_photos(count)}, {redundant} repeated)"
    )
    message = (
        f"{what}: take at least {more} more for a complete model. Go all the way round "
        f"the product in steps of about {STEP_DEG:.0f} deg ({per_turn} photos a round), "
        f"one round low (about {LOW_RING_DEG:.0f} deg) and one looking down (about "
        f"{HIGH_ENOUGH_DEG:.0f}-{TOP_RING_DEG:.0f} deg), each photo overlapping the "
        "last by more than half."
    )
    return [Advice("too_few", (), message)]


def preflight(
    ingest: IngestResult,
    cfg: CoverageConfig,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> list[Advice]:
    """Check the photos before reconstruction: blur, exposure, duplicates, count.

    Each photo's working copy is read once, in grey (5-15 ms for 800 x 600, 35 ms for
    1600 x 1200 on a busy 2-core machine); sharpness and clipped fractions come from ingest.

    Parameters
    ----------
    ingest
        The ingest result (its photos, and the files it left out as identical copies).
    cfg
        Coverage settings (``min_photos``).
    progress
        Called with a ``preflight`` :class:`ProgressEvent` after each photo.
    cancel
        Checked before each photo.

    Returns
    -------
    list of Advice
        At most one finding of each kind per problem, most serious first (duplicates, blur,
        exposure, then too few photos); empty when all is well.

    Raises
    ------
    Cancelled
        When ``cancel`` is cancelled.
    """
    images = ingest.images
    total = len(images)
    progress(ProgressEvent(PREFLIGHT_STAGE, 0, total, f"checking {_photos(total)}"))
    looks: dict[str, _Look] = {}
    thumbs: dict[str, np.ndarray] = {}
    for i, record in enumerate(images):
        if cancel is not None:
            cancel.raise_if_cancelled()
        look = _look(record)
        if look is not None:
            looks[record.name] = look
            if look.thumb is not None:
                thumbs[record.name] = look.thumb
        progress(ProgressEvent(PREFLIGHT_STAGE, i + 1, total, record.name))
    advice: list[Advice] = []
    duplicates, redundant = _duplicates(ingest, thumbs)
    advice += duplicates
    if images:
        exposure = _exposure(images, looks)
        # darker or washed-out photos lose contrast, so sharpness too: name the cause once
        badly_exposed = {name for a in exposure for name in a.images}
        advice += _blurry(images, skip=badly_exposed)
        advice += exposure
    advice += _too_few(total, redundant, cfg)
    logger.info("pre-flight: %d photos, %d findings", total, len(advice))
    return advice


# --------------------------------------------------------------------------------------------
# Coverage map
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CoverageResult:
    """Where the photos were taken from, and the gaps worth a reshoot.

    Attributes
    ----------
    counts
        ``(elevation_bins, azimuth_bins)`` int array of cameras per cell; row 0 is the lowest
        elevation (-90 deg), column 0 starts at the first photo's azimuth.
    azimuth_edges, elevation_edges
        Bin edges in degrees (``0..360`` and ``-90..90``).
    gaps
        Missing views in plain words, each with what to add.
    advice
        Reshoot advice, most useful first (the gaps, in order of importance).
    notes
        Facts that are not problems (the underside is not seen; photos that could not be
        placed and so are not on the map).
    gap_cells
        ``counts``-shaped bool array: empty cells that belong to a named gap.
    stats
        JSON-ready numbers: cameras used, elevation range, rings, largest azimuth gap, up,
        the reference photo and each camera's ``[azimuth, elevation]``.
    """

    counts: np.ndarray
    azimuth_edges: np.ndarray
    elevation_edges: np.ndarray
    gaps: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gap_cells: np.ndarray | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def to_report(self) -> dict[str, Any]:
        """JSON-ready summary for ``report.json`` (``stages.coverage``)."""
        gap_cells = (
            self.gap_cells if self.gap_cells is not None else np.zeros(self.counts.shape, bool)
        )
        return {
            "azimuth_edges": [round(float(v), 3) for v in self.azimuth_edges],
            "elevation_edges": [round(float(v), 3) for v in self.elevation_edges],
            "counts": self.counts.astype(int).tolist(),
            "gap_cells": gap_cells.astype(bool).tolist(),
            "gaps": list(self.gaps),
            "advice": list(self.advice),
            "notes": list(self.notes),
            "stats": dict(self.stats),
        }


def _horizontal(v: np.ndarray, up: np.ndarray) -> np.ndarray | None:
    h = v - (v @ up) * up
    norm = float(np.linalg.norm(h))
    return h / norm if norm > 1e-6 else None


def _wrap(deg: Any) -> Any:
    """Angles into [0, 360)."""
    return np.mod(deg, 360.0)


def _gaps_around(az: np.ndarray) -> list[tuple[float, float, int, int]]:
    """Circular gaps between azimuths: ``(start, width, index_before, index_after)``."""
    if len(az) == 0:
        return []
    order = np.argsort(az, kind="stable")
    s = az[order]
    widths = np.diff(np.append(s, s[0] + 360.0))
    return [
        (float(s[k]), float(widths[k]), int(order[k]), int(order[(k + 1) % len(s)]))
        for k in range(len(s))
    ]


def _arc_degrees(start: float, width: float) -> np.ndarray:
    """Whole degrees (0..359) strictly inside an arc."""
    return np.mod(np.floor(start) + np.arange(1, max(1, int(math.ceil(width)))), 360).astype(int)


def _rings(elev: np.ndarray) -> list[float]:
    """Mean elevations of height clusters (sorted gaps wider than 8 deg split rings)."""
    if len(elev) == 0:
        return []
    s = np.sort(elev)
    cuts = np.nonzero(np.diff(s) > 8.0)[0] + 1
    return [float(np.mean(part)) for part in np.split(s, cuts)]


def _column(az: Any, width: float, n: int) -> Any:
    # columns are centred on multiples of the width (the first photo in the middle of column 0)
    return np.mod(np.floor(np.asarray(az) / width + 0.5 + 1e-9).astype(int), n)


def _elevation_gaps(elev: np.ndarray, n_used: int) -> list[tuple[int, str]]:
    """Too low overall, too high overall, or a single ring: ``(importance, message)``."""
    top, bottom = float(elev.max()), float(elev.min())
    need_top, need_low = top < HIGH_ENOUGH_DEG, bottom > LOW_ENOUGH_DEG
    if not (need_top or need_low):
        return []
    if top - bottom < RING_SPREAD_DEG and n_used >= 3:
        parts = []
        if need_top:
            parts.append(
                f"nothing shows the product from above {top:.0f} deg: add a ring "
                f"looking down on it, at about {TOP_RING_DEG:.0f} deg"
            )
        if need_low:
            parts.append(
                f"{'and ' if parts else ''}nothing shows its sides from below "
                f"{bottom:.0f} deg: add a ring of low side views, at about "
                f"{LOW_RING_DEG:.0f} deg"
            )
        return [
            (
                1,
                f"All photos were taken from one height, about {np.median(elev):.0f} deg: "
                + "; ".join(parts)
                + ".",
            )
        ]
    gaps = []
    if need_top:
        gaps.append(
            (
                1,
                f"No photos from above {top:.0f} deg: add a ring looking down on the "
                f"product, at about {TOP_RING_DEG:.0f} deg.",
            )
        )
    if need_low:
        gaps.append(
            (
                2,
                f"No low side views: the lowest photo is at {bottom:.0f} deg; add a ring "
                f"at about {LOW_RING_DEG:.0f} deg, level with the product's middle.",
            )
        )
    return gaps


@dataclass(frozen=True)
class CoverageInputs:
    """What the coverage stage maps.

    Attributes
    ----------
    cameras
        Registered cameras by image name (the SfM model).
    centre
        The product centre in the same frame; None: the point nearest every camera's optical
        axis (where the photos were aimed).
    up
        World up; None: :func:`engine.geometry.up_direction` of the cameras, towards the
        centre.
    expected
        Names of all the photos meant to be placed (or the SfM's ``unregistered`` mapping);
        those not in ``cameras`` are named in a note, since the gaps may be where they were
        taken.
    """

    cameras: Mapping[str, CameraPose]
    centre: np.ndarray | Sequence[float] | None = None
    up: np.ndarray | Sequence[float] | None = None
    expected: Collection[str] | None = None


def run(
    inputs: CoverageInputs,
    cfg: CoverageConfig,
    out_dir: Path | None = None,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> CoverageResult:
    """Map the registered cameras' viewing directions around the product and name the gaps.

    Azimuth is measured around ``up`` from the first photo (natural name order), increasing in
    the direction the photos were taken; elevation from the horizon through ``centre``. Only
    cameras facing the product centre count. Results do not depend on the reconstruction's
    frame (rotation, scale, translation).

    Parameters
    ----------
    inputs
        The cameras, the product centre and up, the photos meant to be placed
        (:class:`CoverageInputs`).
    cfg
        Coverage settings (``azimuth_bins``, ``elevation_bins``).
    out_dir
        Unused: the stage writes nothing (None; the argument keeps every stage's ``run``
        alike).
    progress
        Not called: the map takes milliseconds.
    cancel
        Checked once, before mapping.

    Returns
    -------
    CoverageResult
        Counts, gaps, advice, notes and statistics.

    Raises
    ------
    ValueError
        When ``cfg`` asks for no bins.
    engine.progress.Cancelled
        When the run was cancelled.
    """
    if cancel is not None:
        cancel.raise_if_cancelled()
    cameras, centre, up, expected = inputs.cameras, inputs.centre, inputs.up, inputs.expected
    n_az, n_el = int(cfg.azimuth_bins), int(cfg.elevation_bins)
    if n_az < 1 or n_el < 1:
        raise ValueError("coverage needs at least one azimuth and one elevation bin")
    az_width, el_width = 360.0 / n_az, 180.0 / n_el
    az_edges = np.linspace(-az_width / 2, 360.0 - az_width / 2, n_az + 1)
    el_edges = np.linspace(-90.0, 90.0, n_el + 1)
    above = el_edges[1:] > 0  # rows reaching above the horizon
    counts = np.zeros((n_el, n_az), np.int64)
    gap_cells = np.zeros((n_el, n_az), bool)
    notes: list[str] = []
    unplaced = sorted((n for n in (expected or ()) if n not in cameras), key=natural_key)
    if unplaced:
        one = len(unplaced) == 1
        notes.append(
            f"{_photos(len(unplaced))} could not be placed and {'is' if one else 'are'} "
            f"not on the map: {_names(unplaced)}. Gaps may be where "
            f"{'it was' if one else 'they were'} taken; photos with more overlap "
            "there would fill them."
        )

    names = sorted(cameras, key=natural_key)
    poses = [cameras[n] for n in names]
    target = (
        np.asarray(centre, np.float64)
        if centre is not None
        else axes_meeting_point(poses)
        if poses
        else np.zeros(3)
    )
    if up is not None:
        up_vec, up_source = np.asarray(up, np.float64), "given"
    else:
        # the cameras' level image axes, else their ring's axis, signed by the cameras
        # standing above the product (one rule for the map, the mesh and the export)
        up_vec, up_source = up_direction(poses, target), "cameras"
    up_vec = up_vec / max(float(np.linalg.norm(up_vec)), 1e-12)

    used: list[str] = []
    dirs = []
    facing_away = []
    for name, cam in zip(names, poses, strict=True):
        offset = cam.center - target
        dist = float(np.linalg.norm(offset))
        depth = float((np.asarray(cam.R, np.float64) @ target + np.asarray(cam.t))[2])
        if dist <= 1e-12 or depth <= 0:
            facing_away.append(name)
        else:
            used.append(name)
            dirs.append(offset / dist)
    if facing_away:
        one = len(facing_away) == 1
        notes.append(
            f"{_names(facing_away)} {'does' if one else 'do'} not look at the product, "
            f"so {'it is' if one else 'they are'} not on the map."
        )
    stats: dict[str, Any] = {
        "cameras": len(cameras),
        "used": len(used),
        "facing_away": facing_away,
        "unplaced": unplaced,
        "up": [round(float(v), 6) for v in up_vec],
        "up_source": up_source,
        "centre": [float(v) for v in target],
    }
    if not used:
        message = (
            "No photo could be placed around the product, so its coverage is unknown: "
            "take photos all the way round, each overlapping the last by more than half."
        )
        gap_cells[above] = True
        return CoverageResult(
            counts, az_edges, el_edges, [message], [message], notes, gap_cells, stats
        )

    d = np.array(dirs)
    elev = np.degrees(np.arcsin(np.clip(d @ up_vec, -1.0, 1.0)))
    flat = [_horizontal(v, up_vec) for v in d]
    ref = next((i for i, h in enumerate(flat) if h is not None), None)
    e1 = flat[ref] if ref is not None else None
    if e1 is None:  # every camera straight above or below: azimuth means nothing
        ref = 0
        e1 = _horizontal(np.array([1.0, 0.0, 0.0]), up_vec)
        if e1 is None:
            e1 = _horizontal(np.array([0.0, 1.0, 0.0]), up_vec)
    e2 = np.cross(up_vec, e1)
    az = _wrap(np.degrees(np.arctan2(d @ e2, d @ e1)))
    az[ref] = 0.0
    # azimuth grows the way the photos were taken (photographers go either way round)
    steps = (np.diff(az) + 180.0) % 360.0 - 180.0
    clockwise = len(steps) > 0 and float(np.median(steps)) < 0
    if clockwise:
        az = _wrap(-az)
    col = _column(az, az_width, n_az)
    row = np.clip(np.floor((elev + 90.0) / el_width).astype(int), 0, n_el - 1)
    np.add.at(counts, (row, col), 1)

    # azimuth sectors with no camera at any height (views of the underside do not count)
    gaps: list[tuple[int, str]] = []  # (importance, message); lower is more useful
    sides = elev >= UNDERSIDE_DEG
    side_az = az[sides]
    side_names = [n for n, s in zip(used, sides, strict=True) if s]
    rings = _rings(elev)
    heights = len([r for r in rings if r >= UNDERSIDE_DEG])
    missing = np.zeros(360, bool)  # whole degrees inside a named azimuth gap
    around = _gaps_around(side_az)
    for start, width, before, after in around if len(side_az) >= 2 else []:
        if width <= GAP_BINS * az_width:
            continue
        add = max(1, round(width / STEP_DEG) - 1)
        gaps.append(
            (
                0,
                (
                    f"No photos between {start:.0f} and {_wrap(start + width):.0f} deg around the "
                    f"product (between {side_names[before]} and {side_names[after]}): "
                    f"add about {add} photo{'s' if add > 1 else ''} there"
                    f"{f' at each of the {heights} heights you shot from' if heights > 1 else ''}."
                ),
            )
        )
        inside = _arc_degrees(start, width)
        missing[inside] = True
        for c in set(_column(inside, az_width, n_az).tolist()):
            if counts[above, c].sum() == 0:
                gap_cells[above, c] = True

    gaps += _elevation_gaps(elev, len(used))
    top, bottom = float(elev.max()), float(elev.min())
    empty_rows = counts.sum(1) == 0
    if top < HIGH_ENOUGH_DEG:
        gap_cells[(el_edges[:-1] >= top) & above & empty_rows] = True
    if bottom > LOW_ENOUGH_DEG:
        gap_cells[(el_edges[1:] <= bottom) & (el_edges[:-1] >= 0) & empty_rows] = True

    # views from above that go only part of the way round (beyond the gaps named already)
    upper = elev >= UPPER_DEG
    if top >= HIGH_ENOUGH_DEG and len(side_az) >= 6:
        upper_names = [n for n, u in zip(used, upper, strict=True) if u]
        start, width, before, _ = max(_gaps_around(az[upper]), key=lambda g: g[1])
        inside = _arc_degrees(start, width)
        if int((~missing[inside]).sum()) > UPPER_GAP_DEG:
            add = max(1, round(width / STEP_DEG) - 1)
            where = (
                f"between {start:.0f} and {_wrap(start + width):.0f} deg (after "
                f"{upper_names[before]})"
                if upper.sum() > 1
                else f"except at {start:.0f} deg ({upper_names[before]})"
            )
            gaps.append(
                (
                    3,
                    f"The views from above (over {UPPER_DEG:.0f} deg) go only part of "
                    f"the way round: none {where}; add about {add} photos there looking "
                    f"down at about {TOP_RING_DEG:.0f} deg.",
                )
            )
            for c in set(_column(inside, az_width, n_az).tolist()):
                gap_cells[
                    (el_edges[:-1] >= UPPER_DEG - el_width) & above & (counts[:, c] == 0), c
                ] = True

    if not np.any(elev < UNDERSIDE_DEG):
        notes.append(
            "The underside is not seen (no photos from below): expected for a product "
            "standing on something; turn it over and add photos if the base matters."
        )
    gaps.sort(key=lambda g: g[0])
    gap_text = [g for _, g in gaps]
    stats.update(
        {
            "reference_photo": used[ref],
            "direction": "clockwise" if clockwise else "counterclockwise",
            "elevation_min": round(bottom, 2),
            "elevation_max": round(top, 2),
            "rings_deg": [round(r, 1) for r in rings],
            "largest_azimuth_gap_deg": round(max((w for _, w, _, _ in around), default=360.0), 1),
            "views": {
                n: [round(float(a), 1), round(float(e), 1)]
                for n, a, e in zip(used, az, elev, strict=True)
            },
        }
    )
    return CoverageResult(
        counts, az_edges, el_edges, gap_text, list(gap_text), notes, gap_cells, stats
    )


def coverage_text(result: CoverageResult) -> str:
    """A small ASCII map of the counts for the log (highest elevation on top).

    Digits count cameras per cell (``+`` for ten or more), ``!`` marks an empty cell that is
    part of a named gap, ``.`` another empty cell.

    Parameters
    ----------
    result
        A coverage result.

    Returns
    -------
    str
        The map, the gaps and the notes, one per line.
    """
    counts = result.counts
    n_el, n_az = counts.shape
    gap_cells = result.gap_cells if result.gap_cells is not None else np.zeros(counts.shape, bool)
    el, az = result.elevation_edges, result.azimuth_edges
    lines = [f"elevation | azimuth from the first photo ({360 / n_az:.0f} deg a column)"]
    for r in range(n_el - 1, -1, -1):
        cells = []
        for c in range(n_az):
            n = int(counts[r, c])
            cells.append("+" if n >= 10 else str(n) if n else "!" if gap_cells[r, c] else ".")
        lines.append(f"{el[r]:+4.0f}..{el[r + 1]:+3.0f} | {' '.join(cells)}")
    lines.append(f"{'':10}+{'-' * (2 * n_az)}")
    labels = [" "] * (2 * n_az + 4)
    for c in range(0, n_az, max(1, n_az // 4)):
        text = f"{(az[c] + az[c + 1]) / 2:.0f}"
        labels[2 * c : 2 * c + len(text)] = text
    lines.append(f"{'':12}{''.join(labels).rstrip()}")
    lines += [f"gap: {g}" for g in result.gaps]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
