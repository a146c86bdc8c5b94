"""The catalogue's static gallery: a still of each model, a verdict, a page per product.

``SITE/index.html`` shows one card per product (still render, name and SKU, true dimensions
when known, and a verdict a studio can act on: ready / check / reshoot, with the reasons read
from the run's own report.json); failed products are listed with their reason. Each card opens
``SITE/products/<slug>/index.html`` with the GLB in Google's model-viewer (vendored into
``SITE/assets/`` from resources/web/, pinned, Apache-2.0), a link to the Plotly viewer and
downloads of the GLB and USDZ. Every link is relative and nothing is fetched from elsewhere, so
the folder works from file:// and from any static host.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.export._atomic import write_bytes_atomic

logger = logging.getLogger(__name__)


def _write_text(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


#: The vendored model-viewer (resources/web/fetch_model_viewer.sh pins the version).
MODEL_VIEWER_VERSION = "4.4.0"
MODEL_VIEWER_JS = "model-viewer-umd.min.js"
MODEL_VIEWER_LICENSE = "model-viewer-LICENSE.txt"
WEB_RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "web"
#: Where the gallery keeps its shared files, relative to SITE.
ASSETS = "assets"
STILL = "still.png"
PAGE = "index.html"
#: A GLB up to this size is also inlined (model-data.js) for pages opened from file://, where
#: browsers refuse to fetch mesh.glb next to the page.
INLINE_GLB_MAX_BYTES = 24 * 1024 * 1024

#: Verdict thresholds, from the run's report.json.
RESHOOT_COMPLETENESS = 0.8
"""Below this mesh completeness (fraction of the dense points the mesh covers) the model has
holes a customer would see: reshoot."""
CHECK_COMPLETENESS = 0.95
"""Below this, look at the model before publishing it."""
RESHOOT_PLACED = 0.75
"""Fewer than this fraction of the photos placed: the model is built from too few views."""


# --------------------------------------------------------------- still render


def render_still(
    mesh: Any,
    size: tuple[int, int] = (480, 360),
    *,
    azimuth_deg: float = 35.0,
    elevation_deg: float = 25.0,
    background: tuple[int, int, int] = (246, 246, 244),
    supersample: int = 2,
) -> np.ndarray:
    """A shaded 3/4 view of a mesh (orthographic), with its texture or vertex colours.

    The mesh is z-buffered with :func:`engine.stages.mesh.depth_buffer`; each visible pixel
    takes the colour of the nearest visible vertex, lit by a soft light from the upper left
    using normals from the depth buffer.

    Parameters
    ----------
    mesh
        An :class:`engine.types.Mesh` in the product frame (z up), as
        :func:`engine.export.glb.read_glb` returns it.
    size
        (width, height) of the picture in pixels.
    azimuth_deg, elevation_deg
        Viewing direction around and above the product.
    background
        RGB of the empty background.
    supersample
        Rendered this many times larger and averaged down (smooth edges).

    Returns
    -------
    numpy.ndarray
        (height, width, 3) uint8 RGB.
    """
    from scipy import ndimage

    from engine.stages.mesh import depth_buffer

    w, h = size[0] * supersample, size[1] * supersample
    v = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    img = np.empty((h, w, 3), np.float64)
    img[:] = background
    if len(v) == 0 or len(faces) == 0:
        return _downsample(img, supersample)
    colours = _vertex_colours(mesh)
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    to_camera = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    right = np.cross(-to_camera, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, -to_camera)
    x, y = v @ right, v @ up
    depth = (v @ to_camera).max() + 1.0 - v @ to_camera  # > 0, grows away from the camera
    span_x, span_y = np.ptp(x) or 1.0, np.ptp(y) or 1.0
    s = 0.86 * min(w / span_x, h / span_y)  # pixels per model unit
    px = w / 2 + (x - (x.min() + x.max()) / 2) * s
    py = h / 2 - (y - (y.min() + y.max()) / 2) * s
    zbuf = depth_buffer(np.column_stack([px, py]), depth, faces, w, h)
    covered = np.isfinite(zbuf)
    if not covered.any():
        return _downsample(img, supersample)

    # albedo: vertices on the visible surface splatted, the rest of the surface filled nearest
    ix = np.clip(np.floor(px).astype(np.int64), 0, w - 1)
    iy = np.clip(np.floor(py).astype(np.int64), 0, h - 1)
    visible = covered[iy, ix] & (depth <= zbuf[iy, ix] + 3.0 / s)
    acc = np.zeros((h, w, 3))
    count = np.zeros((h, w))
    np.add.at(acc, (iy[visible], ix[visible]), colours[visible])
    np.add.at(count, (iy[visible], ix[visible]), 1.0)
    seeded = count > 0
    albedo = np.full((h, w, 3), 170.0)
    if seeded.any():
        albedo = acc / np.maximum(count, 1.0)[..., None]
        _, (ny_idx, nx_idx) = ndimage.distance_transform_edt(~seeded, return_indices=True)
        albedo = albedo[ny_idx, nx_idx]

    # shading: normals of the depth buffer (camera looks along +depth; y up = -rows)
    zf = np.where(covered, zbuf, np.nan)
    dz_drow, dz_dcol = np.gradient(zf)
    fx, fy = dz_dcol * s, -dz_drow * s
    normal = np.dstack([fx, fy, -np.ones_like(fx)])
    normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    light = np.array([-0.45, 0.55, -1.0])
    light /= np.linalg.norm(light)
    lambert = np.nan_to_num(np.clip(normal @ light, 0.0, 1.0), nan=0.7)
    shade = 0.38 + 0.62 * lambert
    img[covered] = np.clip(albedo[covered] * shade[covered, None], 0, 255)
    return _downsample(img, supersample)


def _vertex_colours(mesh: Any) -> np.ndarray:
    """(N, 3) float RGB per vertex: the texture at the vertex's UV, or its colour, or grey."""
    n = len(mesh.vertices)
    if getattr(mesh, "texture", None) is not None and getattr(mesh, "uv", None) is not None:
        from engine.export.glb import texture_colours

        return np.asarray(texture_colours(mesh, mesh.uv), np.float64)
    if getattr(mesh, "vertex_colors", None) is not None:
        return np.asarray(mesh.vertex_colors, np.float64)[:, :3]
    return np.full((n, 3), 180.0)


def _downsample(img: np.ndarray, k: int) -> np.ndarray:
    h, w = img.shape[0] // k, img.shape[1] // k
    small = img[: h * k, : w * k].reshape(h, k, w, k, 3).mean(axis=(1, 3))
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def write_still(glb: Path, png: Path, size: tuple[int, int] = (480, 360)) -> Path:
    """Render ``glb`` (a run's mesh.glb) into ``png``; skipped when ``png`` is newer.

    Raises
    ------
    InputError
        When the GLB cannot be read.
    """
    from engine.export.glb import read_glb
    from engine.io import write_png

    if png.exists() and png.stat().st_mtime_ns >= glb.stat().st_mtime_ns:
        return png
    return write_png(png, render_still(read_glb(glb, z_up=True), size))


# --------------------------------------------------------------- verdict


def verdict(report: Mapping[str, Any], run_dir: Path | None = None) -> tuple[str, list[str]]:
    """``ready``, ``check`` or ``reshoot``, with the reasons, from a run's report.json.

    Parameters
    ----------
    report
        The parsed report.json of a run.
    run_dir
        The run folder (to see whether mesh.glb exists); default: trust ``report["outputs"]``.

    Returns
    -------
    tuple
        The verdict and the reasons (empty for ``ready``), each a sentence for the studio.
    """
    reshoot: list[str] = []
    check: list[str] = []
    if report.get("status") != "finished":
        reason = next(reversed(report.get("warnings") or []), "the run did not finish")
        return "reshoot", [f"The run did not finish: {reason}"]
    stages = report.get("stages") or {}
    outputs = report.get("outputs") or {}
    has_mesh = "mesh.glb" in outputs
    if run_dir is not None:
        has_mesh = (run_dir / "mesh.glb").is_file()
    mesh = stages.get("mesh") or {}
    if not has_mesh:
        why = mesh.get("reason") or "no surface was built"
        reshoot.append(f"No 3D model: {why}")
    completeness = mesh.get("completeness")
    if has_mesh and completeness is not None:
        pct = 100 * float(completeness)
        if completeness < RESHOOT_COMPLETENESS:
            reshoot.append(f"The model covers only {pct:.0f}% of the product (holes).")
        elif completeness < CHECK_COMPLETENESS:
            check.append(f"The model covers {pct:.0f}% of the product: look for holes.")
    unregistered = report.get("unregistered") or {}
    given = len(report.get("registered") or []) + len(unregistered)
    if unregistered and given:
        placed = 1 - len(unregistered) / given
        text = f"{len(unregistered)} of {given} photos could not be placed"
        (reshoot if placed < RESHOOT_PLACED else check).append(text + ".")
    coverage = stages.get("coverage") or {}
    for gap in coverage.get("gaps") or []:
        check.append(str(gap))
    for advice in report.get("advice") or []:
        if str(advice) not in check:
            check.append(str(advice))
    unplaced_note = "photos could not be placed"
    for warning in report.get("warnings") or []:
        if unplaced_note in str(warning) and unregistered:
            continue  # said above, with the count
        check.append(str(warning))
    if reshoot:
        return "reshoot", reshoot + check
    if check:
        return "check", check
    return "ready", []


# --------------------------------------------------------------- pages

_STYLE = """
body{font:15px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#fafaf8;
color:#222}
header{padding:18px 28px;border-bottom:1px solid #e4e4e0;background:#fff}
h1{font-size:22px;margin:0}
.counts{color:#666;margin:4px 0 0}
main{padding:20px 28px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:18px}
.card{background:#fff;border:1px solid #e4e4e0;border-radius:8px;overflow:hidden}
.card img{width:100%;display:block;background:#f6f6f4}
.card .body{padding:10px 14px 14px}
.card h2{font-size:16px;margin:0 0 2px}
.card a{color:inherit;text-decoration:none}
.sku,.dims{color:#555;margin:2px 0;font-size:13px}
.verdict{display:inline-block;border-radius:10px;padding:1px 10px;font-size:13px;
font-weight:600;margin:6px 0 4px}
.v-ready{background:#dff3e2;color:#17652a}.v-check{background:#fff1cc;color:#7a5600}
.v-reshoot,.v-failed{background:#fde0de;color:#8e1b12}
.reasons{margin:4px 0 0;padding-left:18px;font-size:13px;color:#444}
.failed li{margin:6px 0}
model-viewer{width:100%;height:70vh;background:#f6f6f4;border:1px solid #e4e4e0;
border-radius:8px}
.links a{margin-right:16px}
footer{color:#777;font-size:12px;padding:16px 28px}
"""


#: No favicon request (browsers ask the host for /favicon.ico otherwise: a 404 on most hosts).
_NO_ICON = '<link rel="icon" href="data:,">'


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _dimensions_text(dims: Sequence[float] | None) -> str:
    if not dims:
        return ""
    w, d, h = (float(x) for x in dims)
    return f"{w:.0f} × {d:.0f} × {h:.0f} mm (W × D × H)"


def vendor_model_viewer(site: Path) -> Path:
    """Copy the vendored model-viewer and its licence into ``SITE/assets`` (once).

    Raises
    ------
    OutputError
        When resources/web lacks the files (run resources/web/fetch_model_viewer.sh).
    """
    from engine.errors import OutputError

    assets = site / ASSETS
    assets.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_VIEWER_JS, MODEL_VIEWER_LICENSE):
        src = WEB_RESOURCES / name
        dst = assets / name
        if not src.is_file():
            raise OutputError(
                f"{name} is missing from {WEB_RESOURCES}: run "
                "resources/web/fetch_model_viewer.sh to vendor model-viewer."
            )
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)
    return assets / MODEL_VIEWER_JS


def write_product_page(run_dir: Path, record: Mapping[str, Any], site: Path) -> Path:
    """``products/<slug>/index.html``: the GLB in model-viewer, viewer link, downloads."""
    name = record.get("name") or record.get("slug", "Product")
    to_site = Path("..", "..").as_posix()
    assets = f"{to_site}/{ASSETS}"
    glb = run_dir / "mesh.glb"
    usdz = run_dir / "mesh.usdz"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        _NO_ICON,
        f"<title>{_e(name)}</title><style>{_STYLE}</style>",
        f'<script src="{assets}/{MODEL_VIEWER_JS}"></script>',
        "</head><body>",
        f'<header><p><a href="{to_site}/{PAGE}">← Catalogue</a></p><h1>{_e(name)}</h1>',
    ]
    if record.get("sku"):
        parts.append(f'<p class="sku">SKU {_e(record["sku"])}</p>')
    dims = _dimensions_text(record.get("dimensions_mm"))
    if dims:
        parts.append(f'<p class="dims">{_e(dims)}</p>')
    verdict_name = record.get("verdict", "")
    parts.append(f'<span class="verdict v-{_e(verdict_name)}">{_e(verdict_name.title())}</span>')
    reasons = record.get("reasons") or []
    if reasons:
        parts.append('<ul class="reasons">' + "".join(f"<li>{_e(r)}</li>" for r in reasons))
        parts.append("</ul>")
    parts.append("</header><main>")
    if glb.is_file():
        poster = f' poster="{STILL}"' if (run_dir / STILL).is_file() else ""
        ios = ' ios-src="mesh.usdz"' if usdz.is_file() else ""
        parts.append(
            f'<model-viewer id="model"{ios}{poster} alt="{_e(name)}" '
            'camera-controls auto-rotate shadow-intensity="1" '
            'interaction-prompt="none"></model-viewer>'
        )
        # Served over http the viewer fetches mesh.glb. Opened from a folder (file://) browsers
        # refuse that fetch, so model-data.js (the GLB inlined) sets the model instead. The
        # source is set here, not in the tag, so that the refused fetch is never tried.
        inline = glb.stat().st_size <= INLINE_GLB_MAX_BYTES
        if inline:
            _write_model_data(run_dir / "model-data.js", glb)
        from_folder = (
            "document.write('<script src=\"model-data.js\"><\\/script>')"
            if inline
            else "viewer.src = 'mesh.glb'"
        )
        parts.append(
            "<script>(function () {\n"
            "  var viewer = document.getElementById('model');\n"
            f"  if (location.protocol === 'file:') {from_folder};\n"
            "  else viewer.src = 'mesh.glb';\n"
            "})();</script>"
        )
    else:
        parts.append("<p>No 3D model was built for this product.</p>")
    links = []
    if (run_dir / "viewer.html").is_file():
        links.append('<a href="viewer.html">Point cloud and cameras (interactive viewer)</a>')
    if glb.is_file():
        links.append('<a href="mesh.glb" download>Download mesh.glb</a>')
    if usdz.is_file():
        links.append('<a href="mesh.usdz" download>Download mesh.usdz (iOS AR)</a>')
    if (run_dir / "report.json").is_file():
        links.append('<a href="report.json">Run report</a>')
    parts.append(f'<p class="links">{"".join(links)}</p></main>')
    parts.append(
        f"<footer>3D view: model-viewer {MODEL_VIEWER_VERSION} (Apache-2.0, "
        f'<a href="{assets}/{MODEL_VIEWER_LICENSE}">licence</a>).</footer></body></html>'
    )
    page = run_dir / PAGE
    _write_text(page, "\n".join(parts) + "\n")
    return page


def _write_model_data(path: Path, glb: Path) -> None:
    """model-data.js: the GLB inlined for pages opened from file:// (no fetch allowed there)."""
    if path.exists() and path.stat().st_mtime_ns >= glb.stat().st_mtime_ns:
        return
    payload = base64.b64encode(glb.read_bytes()).decode("ascii")
    script = (
        "// mesh.glb inlined: browsers do not let a page opened from a folder (file://) fetch\n"
        "// the file next to it; served over http the page uses mesh.glb itself.\n"
        "(function () {\n"
        "  if (location.protocol !== 'file:') return;\n"
        "  var viewer = document.getElementById('model');\n"
        f"  if (viewer) viewer.src = 'data:model/gltf-binary;base64,{payload}';\n"
        "})();\n"
    )
    _write_text(path, script)


def write_gallery(
    site: Path,
    records: Sequence[Mapping[str, Any]],
    *,
    title: str,
    products_dir: str = "products",
) -> Path:
    """``SITE/index.html``: a card per finished product, the failed and pending ones listed.

    ``records`` are summary.json's product entries (``slug``, ``name``, ``sku``, ``status``,
    ``verdict``, ``reasons``, ``dimensions_mm``, ``reason``, ``exit_code``, ``folder``); their
    run folders are ``SITE/<products_dir>/<slug>/``.
    """
    finished = [r for r in records if r.get("status") == "finished"]
    failed = [r for r in records if r.get("status") == "failed"]
    waiting = [r for r in records if r.get("status") not in ("finished", "failed")]
    counts = {v: sum(r.get("verdict") == v for r in finished) for v in ("ready", "check")}
    counts["reshoot"] = sum(r.get("verdict") == "reshoot" for r in finished)
    summary_line = (
        f"{len(records)} products: {counts['ready']} ready, {counts['check']} to check, "
        f"{counts['reshoot']} to reshoot, {len(failed)} failed"
        + (f", {len(waiting)} not run yet" if waiting else "")
    )
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        _NO_ICON,
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f'<header><h1>{_e(title)}</h1><p class="counts">{_e(summary_line)}</p></header>',
        '<main><div class="grid">',
    ]
    for r in finished:
        slug = r["slug"]
        href = f"{products_dir}/{slug}/{PAGE}"
        name = r.get("name") or slug
        still = f"{products_dir}/{slug}/{STILL}"
        has_still = (site / still).is_file()
        img = (
            f'<img src="{_e(still)}" alt="{_e(name)}" width="480" height="360">'
            if has_still
            else ""
        )
        v = r.get("verdict", "check")
        parts.append(f'<article class="card" data-slug="{_e(slug)}" data-verdict="{_e(v)}">')
        parts.append(f'<a href="{_e(href)}">{img}</a><div class="body">')
        parts.append(f'<h2><a href="{_e(href)}">{_e(name)}</a></h2>')
        if r.get("sku"):
            parts.append(f'<p class="sku">SKU {_e(r["sku"])}</p>')
        dims = _dimensions_text(r.get("dimensions_mm"))
        if dims:
            parts.append(f'<p class="dims">{_e(dims)}</p>')
        parts.append(f'<span class="verdict v-{_e(v)}">{_e(v.title())}</span>')
        reasons = r.get("reasons") or []
        if reasons:
            items = "".join(f"<li>{_e(x)}</li>" for x in reasons)
            parts.append(f'<ul class="reasons">{items}</ul>')
        parts.append("</div></article>")
    parts.append("</div>")
    parts += _list_section(
        "failed",
        "Failed",
        failed,
        lambda r: f"{r.get('reason', '')} (exit code {r.get('exit_code', '')})",
    )
    parts += _list_section("waiting", "Not run yet", waiting, lambda r: r.get("status", ""))
    parts.append(
        "</main><footer>Made with Vitrine. 3D views: model-viewer "
        f'{MODEL_VIEWER_VERSION} (Apache-2.0, <a href="{ASSETS}/{MODEL_VIEWER_LICENSE}">'
        "licence</a>).</footer></body></html>"
    )
    page = site / PAGE
    _write_text(page, "\n".join(parts) + "\n")
    return page


def _list_section(
    css: str,
    heading: str,
    records: Sequence[Mapping[str, Any]],
    why: Callable[[Mapping[str, Any]], str],
) -> list[str]:
    """A titled list of products without a card (failed, not run yet); nothing when empty."""
    if not records:
        return []
    parts = [f'<section class="{css}"><h2>{_e(heading)}</h2><ul>']
    for r in records:
        name = r.get("name") or r["slug"]
        folder = r.get("folder", "")
        where = f" ({_e(folder)})" if folder and folder != name else ""
        parts.append(
            f'<li data-slug="{_e(r["slug"])}"><strong>{_e(name)}</strong>{where}: {_e(why(r))}</li>'
        )
    parts.append("</ul></section>")
    return parts


def read_report(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's report.json, or None when missing or unreadable."""
    try:
        data = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
