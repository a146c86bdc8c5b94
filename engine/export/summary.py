"""What a run's report says about the result: dimensions, coverage, pre-flight advice, masks.

report.json is written by the engine and its keys may grow; every read of it that the window,
the project or the command line needs goes through this module, defensively (a missing or odd
key reads as "not known"), so a change of the report's layout is mended in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: How each scale source is named after the dimensions.
SCALE_SOURCES = {
    "aruco": "from ArUco markers",
    "known_distance": "from the distance you entered",
    "known_dimension": "from the size you entered",
}
#: Shown when the run measured no true scale.
NO_SCALE_TEXT = "No true scale: add a printed marker or set a known size"
#: Pre-flight kinds -> thumbnail badge.
PREFLIGHT_BADGES = {
    "blurry": "blurry",
    "duplicate": "duplicate",
    "underexposed": "too dark",
    "overexposed": "too bright",
    "dark": "too dark",
    "bright": "too bright",
    "exposure": "exposure",
}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _stage(report: dict[str, Any] | None, stage: str) -> dict[str, Any]:
    return _dict(_dict(_dict(report).get("stages")).get(stage))


def dimensions_mm(report: dict[str, Any] | None) -> tuple[float, float, float] | None:
    """``(width, depth, height)`` in millimetres from a report, or None when not measured."""
    dims = _list(_dict(report).get("dimensions_mm"))
    values = [_number(v) for v in dims]
    if len(values) != 3 or any(v is None or v <= 0 for v in values):
        return None
    return values[0], values[1], values[2]  # type: ignore[return-value]


def metres_per_unit(report: dict[str, Any] | None) -> float | None:
    """The run's scale (``stages.scale.metres_per_unit``), or None when it has none."""
    value = _number(_stage(report, "scale").get("metres_per_unit"))
    return value if value is not None and value > 0 else None


def _mm(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}".rstrip("0").rstrip(".")


def format_dimensions(dims: tuple[float, float, float]) -> str:
    """``(160, 100, 220)`` -> ``"160 x 100 x 220 mm"`` (one decimal under 100 mm)."""
    return " x ".join(_mm(v) for v in dims) + " mm"


def dimensions_text(report: dict[str, Any] | None) -> str:
    """The dimensions line of the window: size, where the scale came from and how sure it is.

    Returns
    -------
    str
        ``"160 x 100 x 220 mm (from ArUco markers, ±0.3%)"``, or :data:`NO_SCALE_TEXT` (with
        the engine's note when it gave one) when the run has no true scale, or ``""`` when there
        is no report.
    """
    if not report:
        return ""
    dims = dimensions_mm(report)
    scale = _stage(report, "scale")
    if dims is None:
        note = scale.get("note")
        if isinstance(note, str) and note.strip() and scale.get("source") not in (None, "none"):
            return f"{NO_SCALE_TEXT} ({note.strip()})"
        return NO_SCALE_TEXT
    parts = []
    source = SCALE_SOURCES.get(str(scale.get("source", "")))
    if source:
        parts.append(source)
    error = _number(scale.get("error_pct"))
    if error is not None:
        parts.append(f"±{error:.1f}%" if error >= 0.95 else f"±{error:.2g}%")
    text = format_dimensions(dims)
    return f"{text} ({', '.join(parts)})" if parts else text


@dataclass(frozen=True)
class Coverage:
    """The coverage map and advice of a run.

    Attributes
    ----------
    counts
        ``(elevation rows, azimuth columns)`` photo counts; row 0 is the lowest elevation.
    azimuth_edges, elevation_edges
        Bin edges in degrees (``columns + 1`` and ``rows + 1`` values).
    gaps
        The gaps in plain words.
    advice
        Reshoot advice, most useful first (coverage and pre-flight).
    preflight
        Pre-flight findings: ``{"kind", "images", "message"}`` dicts.
    gap_cells
        ``counts``-shaped bool array of the empty cells that belong to a gap the engine named,
        or None when the report does not say (the map then guesses from the elevation).
    notes
        Facts that are not problems (the underside is not seen ...).
    """

    counts: np.ndarray
    azimuth_edges: np.ndarray
    elevation_edges: np.ndarray
    gaps: tuple[str, ...] = ()
    advice: tuple[str, ...] = ()
    preflight: tuple[dict[str, Any], ...] = field(default=())
    gap_cells: np.ndarray | None = None
    notes: tuple[str, ...] = ()

    @property
    def has_map(self) -> bool:
        """Whether there is a grid to draw."""
        return self.counts.size > 0


def _edges(value: Any, n: int, lo: float, hi: float) -> np.ndarray:
    edges = np.array([v for v in (_number(x) for x in _list(value)) if v is not None], float)
    if len(edges) != n + 1:
        edges = np.linspace(lo, hi, n + 1)
    return edges


def _strings(value: Any) -> tuple[str, ...]:
    out = []
    for item in _list(value):
        if isinstance(item, str) and item.strip():
            out.append(item.strip())
        elif isinstance(item, dict) and isinstance(item.get("message"), str):
            out.append(item["message"].strip())
    return tuple(out)


def preflight_entries(report: dict[str, Any] | None) -> tuple[dict[str, Any], ...]:
    """Pre-flight findings of a report: ``{"kind": str, "images": [names], "message": str}``.

    Read from ``stages.coverage.preflight`` (else ``stages.preflight``, a list or a dict with
    an ``advice`` list).
    """
    coverage = _stage(report, "coverage")
    raw = coverage.get("preflight")
    if raw is None:
        raw = _stage(report, "preflight") or _dict(_dict(report).get("stages")).get("preflight")
    if isinstance(raw, dict):
        raw = raw.get("advice", raw.get("items"))
    entries = []
    for item in _list(raw):
        if not isinstance(item, dict):
            continue
        images = item.get("images")
        if isinstance(images, str):
            images = [images]
        elif not isinstance(images, (list, tuple)):
            images = []
        entries.append(
            {
                "kind": str(item.get("kind", "")),
                "images": [str(i) for i in images],
                "message": str(item.get("message", "")),
            }
        )
    return tuple(entries)


def read_coverage(report: dict[str, Any] | None) -> Coverage | None:
    """The coverage map and advice of a report, or None when the run has none."""
    if not report:
        return None
    info = _stage(report, "coverage")
    preflight = preflight_entries(report)
    counts_raw = info.get("counts")
    try:
        counts = np.asarray(counts_raw if counts_raw is not None else [], dtype=float)
    except (TypeError, ValueError):
        counts = np.zeros((0, 0))
    if counts.ndim != 2 or not np.all(np.isfinite(counts)):
        counts = np.zeros((0, 0))
    counts = np.clip(counts, 0, None)
    rows, cols = counts.shape
    az_edges = _edges(info.get("azimuth_edges"), cols, 0.0, 360.0)
    el_edges = _edges(info.get("elevation_edges"), rows, -90.0, 90.0)
    gaps = _strings(info.get("gaps"))
    advice = list(_strings(info.get("advice")))
    for line in _strings(_dict(report).get("advice")):
        if line not in advice:
            advice.append(line)
    for entry in preflight:
        if entry["message"] and entry["message"] not in advice:
            advice.append(entry["message"])
    gap_cells = None
    try:
        cells = np.asarray(info.get("gap_cells"), dtype=bool)
        if info.get("gap_cells") is not None and cells.shape == counts.shape:
            gap_cells = cells
    except (TypeError, ValueError):
        pass
    notes = _strings(info.get("notes"))
    if not counts.size and not gaps and not advice:
        return None
    return Coverage(counts, az_edges, el_edges, gaps, tuple(advice), preflight, gap_cells, notes)


def preflight_status(report: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    """Image name -> ``(badge, reason)`` from the pre-flight findings of a report."""
    status: dict[str, tuple[str, str]] = {}
    for entry in preflight_entries(report):
        badge = PREFLIGHT_BADGES.get(entry["kind"])
        if badge is None:
            continue  # 'too_few' and other set-wide advice name no single photo
        for name in entry["images"]:
            status.setdefault(name, (badge, entry["message"]))
    return status


def mask_summary(report: dict[str, Any] | None) -> str:
    """One line on the run's masks (``"36 masks: 30 automatic, 4 painted, 2 off"``), or ``""``."""
    info = _stage(report, "masks")
    if not info:
        return ""
    labels = (
        ("computed", "automatic"),
        ("from_files", "from files"),
        ("user", "painted"),
        ("disabled", "off"),
    )
    counts = []
    for key, label in labels:
        value = info.get(key)
        n = len(value) if isinstance(value, list) else _number(value)
        if n:
            counts.append(f"{int(n)} {label}")
    failed = _list(info.get("failed"))
    if failed:
        counts.append(f"{len(failed)} without a mask")
    text = "Masks: " + ", ".join(counts) if counts else ""
    turntable = _dict(info.get("turntable"))
    if turntable.get("detected") and isinstance(turntable.get("note"), str):
        text = f"{text}. {turntable['note']}" if text else turntable["note"]
    return text


def mask_failures(report: dict[str, Any] | None) -> dict[str, str]:
    """Image name -> why the run made no mask for it (``stages.masks.failed``)."""
    failures = {}
    for entry in _list(_stage(report, "masks").get("failed")):
        if isinstance(entry, dict) and isinstance(entry.get("image"), str):
            failures[entry["image"]] = str(entry.get("reason", ""))
        elif isinstance(entry, (list, tuple)) and len(entry) == 2:
            failures[str(entry[0])] = str(entry[1])
    return failures


def masks_disagreeing(report: dict[str, Any] | None) -> set[str]:
    """Image names whose mask disagrees with the product found in 3D.

    From ``stages.mesh.masks_disagreeing``.
    """
    return {str(n) for n in _list(_stage(report, "mesh").get("masks_disagreeing"))}


# --------------------------------------------------------------- the command line's summaries


def run_summary(result: Any, out_dir: Path) -> str:
    """What ``reconstruct`` prints after a finished run (``result``: a pipeline RunResult)."""
    report = result.report
    lines = []
    n = len(result.ingest.images)
    if result.sparse is not None:
        lines.append(
            f"{report.stages['sfm']['registered']} of {n} photos placed; "
            f"{len(result.sparse.points)} sparse points."
        )
    if result.dense is not None:
        lines.append(f"Dense cloud: {len(result.dense)} points ({out_dir / 'dense.ply'}).")
    for warning in report.warnings:
        if warning.startswith(("Single-photo", "Depth-Anything")) or "non-commercial" in warning:
            lines.append(f"  note: {warning}")
    if report.dimensions_mm:
        w, d, h = report.dimensions_mm
        source = report.stages.get("scale", {}).get("source", "")
        lines.append(
            f"Dimensions: {w:.1f} x {d:.1f} x {h:.1f} mm (width x depth x height, {source})."
        )
    if result.mesh is not None:
        lines.append(
            f"Mesh: {result.mesh.num_triangles} triangles "
            f"({out_dir / 'mesh.glb'}, embed.html for storefronts)."
        )
    lines.extend(f"  note: {note}" for note in report.notes)
    lines.extend(f"  advice: {advice}" for advice in report.advice)
    lines.extend(f"  not placed: {name}: {reason}" for name, reason in report.unregistered.items())
    lines.extend(f"  skipped: {s['file']}: {s['reason']}" for s in report.skipped)
    lines.append(f"Open {out_dir / 'viewer.html'} in a browser to see the result.")
    return "\n".join(lines)


def catalogue_summary(result: Any) -> str:
    """What ``batch`` prints when it ends (``result``: an engine.catalogue CatalogueResult)."""
    summary = result.summary
    counts, verdicts = summary["counts"], summary["verdicts"]
    waiting = f", {counts['pending']} not done" if counts.get("pending") else ""
    lines = [
        f"{len(result.products)} products ({len(result.computed)} computed now{waiting}): "
        f"{verdicts.get('ready', 0)} ready, {verdicts.get('check', 0)} to check, "
        f"{verdicts.get('reshoot', 0)} to reshoot, {counts.get('failed', 0)} failed."
    ]
    for entry in result.failed:
        lines.append(
            f"  failed: {entry['folder']}: {entry.get('reason')} (exit {entry.get('exit_code')})"
        )
    return "\n".join(lines)
