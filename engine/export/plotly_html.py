"""``viewer.html``: a self-contained interactive Plotly page of the coloured cloud and cameras.

plotly.js is embedded inline (no CDN, no MathJax), so the page opens offline and fetches
nothing. Points are decimated to a budget; colours are per-point ``#rrggbb`` strings (the most
compact per-point RGB form plotly accepts: about 10 bytes a point against 16-19 for
``rgb(r,g,b)``); coordinates travel as base64 float32 arrays (16 bytes a point).
"""

from __future__ import annotations

import html
import logging
import ntpath
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from engine.export._atomic import atomic_open
from engine.types import CameraPose, Mesh, PointCloud

logger = logging.getLogger(__name__)

BACKGROUND = "#1e1f22"
FOREGROUND = "#e8e8e8"
CAMERA_COLOUR = "#ffb000"
#: Label of the button that shows and hides the cameras.
CAMERA_BUTTON_LABEL = "Cameras on/off"
EMPTY_NOTE = "No points to show yet"
#: Label of the button that switches between the mesh and the point cloud.
MESH_BUTTON_LABEL = "Mesh / points"
MESH_GREY = "#b4b4b4"
_HEX = np.array([f"{i:02x}" for i in range(256)], dtype=object)


def decimate(cloud: PointCloud, budget: int, seed: int = 0) -> PointCloud:
    """Uniform random subset of at most ``budget`` points, reproducible for a given ``seed``.

    Parameters
    ----------
    cloud
        Input points.
    budget
        Maximum number of points kept (0 keeps none).
    seed
        Random seed; the same cloud, budget and seed give the same subset.

    Returns
    -------
    PointCloud
        ``cloud`` itself when it already fits, else the subset in the original order.

    Raises
    ------
    ValueError
        When ``budget`` is negative.
    """
    if budget < 0:
        raise ValueError(f"point budget must be >= 0, got {budget}")
    n = len(cloud)
    if n <= budget:
        return cloud
    keep = np.sort(np.random.default_rng(seed).choice(n, size=budget, replace=False))
    normals = cloud.normals[keep] if cloud.normals is not None else None
    return PointCloud(cloud.xyz[keep], cloud.rgb[keep], normals)


def write_viewer(
    path: str | os.PathLike[str],
    cloud: PointCloud,
    cameras: Mapping[str, CameraPose] | Sequence[CameraPose] = (),
    *,
    title: str,
    point_budget: int = 300_000,
    show_cameras: bool = True,
    seed: int = 0,
    mesh: Mesh | None = None,
    dimensions_mm: Sequence[float] | None = None,
) -> dict[str, int]:
    """Write a self-contained, offline Plotly page showing ``cloud`` and ``cameras``.

    Parameters
    ----------
    path
        Output HTML file (usually ``OUT/viewer.html``), written atomically.
    cloud
        Coloured points; decimated to ``point_budget`` with :func:`decimate`.
    cameras
        Registered cameras (by name or as a sequence), drawn as centres and small frusta in a
        trace that the legend and a "Cameras on/off" button toggle.
    title
        Product name, shown as the page and plot title.
    point_budget
        Maximum number of points drawn.
    show_cameras
        Whether the cameras are visible when the page opens.
    seed
        Seed of the decimation.
    mesh
        The product's mesh in the cloud's coordinates, drawn with its vertex colours (or its
        texture sampled at the vertices); the page then opens on the mesh, with the points
        hidden, and a "Mesh / points" button switches between the two.
    dimensions_mm
        Width, depth and height in millimetres, shown under the title.

    Returns
    -------
    dict
        ``points_drawn``, ``points_total``, ``cameras`` (number drawn), ``mesh_triangles``,
        ``bytes`` (file size).

    Raises
    ------
    OutputError
        When the file cannot be written.
    """
    poses = list(cameras.values()) if isinstance(cameras, Mapping) else list(cameras)
    shown = decimate(cloud, point_budget, seed)
    fig = build_figure(
        shown,
        poses,
        title=title,
        show_cameras=show_cameras,
        points_total=len(cloud),
        mesh=mesh,
        dimensions_mm=dimensions_mm,
    )
    page = pio.to_html(
        fig,
        validate=False,  # validated in build_figure, except the colours (see there)
        include_plotlyjs=True,
        include_mathjax=False,
        full_html=True,
        div_id="vitrine-viewer",
        config={
            "displaylogo": False,
            "responsive": True,
            "scrollZoom": True,
            "toImageButtonOptions": {"filename": "vitrine"},
        },
    )
    head = f'<meta charset="utf-8" />\n    <title>{html.escape(title)}</title>'
    page = page.replace('<meta charset="utf-8" />', head, 1)
    page = page.replace(
        "<style>html, body {height: 100%;}</style>",
        f"<style>html, body {{height: 100%; margin: 0; background: {BACKGROUND};}}</style>",
        1,
    )
    data = page.encode("utf-8")
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    info = {
        "points_drawn": len(shown),
        "points_total": len(cloud),
        "cameras": len(poses),
        "mesh_triangles": 0 if mesh is None else mesh.num_triangles,
        "bytes": len(data),
    }
    logger.info(
        "viewer: %d of %d points, %d cameras, %.1f MB",
        info["points_drawn"],
        info["points_total"],
        info["cameras"],
        info["bytes"] / 1e6,
    )
    return info


def build_figure(
    cloud: PointCloud,
    cameras: Sequence[CameraPose] = (),
    *,
    title: str,
    show_cameras: bool = True,
    points_total: int | None = None,
    mesh: Mesh | None = None,
    dimensions_mm: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Build the viewer's figure, as a plotly figure dict, from already-decimated points.

    Parameters
    ----------
    cloud
        Points to draw (all of them).
    cameras
        Cameras to draw.
    title
        Plot title.
    show_cameras
        Whether the camera traces start visible (else ``"legendonly"``).
    points_total
        Size of the full cloud, for the legend label (defaults to ``len(cloud)``).
    mesh
        Optional mesh, drawn as a ``mesh3d`` trace after the others (see :func:`write_viewer`).
    dimensions_mm
        Optional width, depth, height in millimetres for the subtitle.

    Returns
    -------
    dict
        Plotly figure dict (``data``, ``layout``), ready for
        ``plotly.io.to_html(..., validate=False)``. Trace 0 holds the points, traces 1-2
        (when there are cameras) the camera centres and frusta, the last one the mesh (when
        given).
    """
    total = len(cloud) if points_total is None else points_total
    xyz = np.asarray(cloud.xyz, dtype=np.float32).reshape(-1, 3)
    centres = np.array([c.center for c in cameras], dtype=np.float64).reshape(-1, 3)
    has_mesh = mesh is not None and mesh.num_triangles > 0
    mesh_xyz = np.asarray(mesh.vertices, np.float64).reshape(-1, 3) if has_mesh else None
    view_xyz = xyz if len(xyz) or mesh_xyz is None else mesh_xyz.astype(np.float32)
    centre, radius = _cloud_centre_radius(view_xyz, centres)
    label = f"Points ({len(xyz):,} of {total:,})" if total > len(xyz) else f"Points ({total:,})"
    traces: list[Any] = [
        go.Scatter3d(
            x=xyz[:, 0],
            y=xyz[:, 1],
            z=xyz[:, 2],
            mode="markers",
            name=label,
            hoverinfo="skip",
            marker={"size": 1.5, "opacity": 1.0},
            visible="legendonly" if has_mesh else True,
        )
    ]
    if len(cameras):
        visible: bool | str = True if show_cameras else "legendonly"
        lines = _frustum_lines(cameras, 0.12 * radius)
        names = [_display_name(c.name) for c in cameras]
        traces.append(
            go.Scatter3d(
                x=centres[:, 0],
                y=centres[:, 1],
                z=centres[:, 2],
                mode="markers",
                name=f"Cameras ({len(cameras)})",
                legendgroup="cameras",
                visible=visible,
                text=names,
                hovertemplate="%{text}<extra></extra>",
                marker={"size": 3, "color": CAMERA_COLOUR, "symbol": "diamond"},
            )
        )
        # Plain lists: None separates the polylines (plotly's gap marker).
        lx, ly, lz = ([None if np.isnan(v) else float(v) for v in lines[:, i]] for i in range(3))
        traces.append(
            go.Scatter3d(
                x=lx,
                y=ly,
                z=lz,
                mode="lines",
                name="Camera frusta",
                legendgroup="cameras",
                showlegend=False,
                visible=visible,
                hoverinfo="skip",
                line={"color": CAMERA_COLOUR, "width": 2},
            )
        )
    mesh_index = len(traces)
    if has_mesh:
        assert mesh is not None and mesh_xyz is not None
        faces = np.asarray(mesh.faces, np.int32).reshape(-1, 3)
        traces.append(
            go.Mesh3d(
                x=mesh_xyz[:, 0],
                y=mesh_xyz[:, 1],
                z=mesh_xyz[:, 2],
                i=faces[:, 0],
                j=faces[:, 1],
                k=faces[:, 2],
                name=f"Mesh ({len(faces):,} triangles)",
                showlegend=True,
                hoverinfo="skip",
                flatshading=False,
                lighting={
                    "ambient": 0.65,
                    "diffuse": 0.5,
                    "specular": 0.05,
                    "roughness": 0.9,
                    "fresnel": 0.05,
                },
                lightposition={"x": 1000, "y": 1000, "z": 2000},
            )
        )
    fig = go.Figure(data=traces)
    layout = _layout(title, view_xyz, centres, cameras, centre, radius)
    if dimensions_mm is not None and len(dimensions_mm) == 3:
        w, d, h = (float(v) for v in dimensions_mm)
        layout["title"]["text"] += (
            f'<br><span style="font-size: 14px">{w:.0f} × {d:.0f} × '
            f"{h:.0f} mm (width × depth × height)</span>"
        )
    if len(cameras):
        on, off = {"visible": True}, {"visible": "legendonly"}
        first, second = (off, on) if show_cameras else (on, off)
        layout["updatemenus"] = [
            {
                # active=-1: the first click applies "args"; plotly's default (0) would start
                # the toggle with "args2", making the first click do nothing.
                "type": "buttons",
                "direction": "left",
                "showactive": False,
                "active": -1,
                "x": 0.0,
                "y": 0.0,
                "xanchor": "left",
                "yanchor": "bottom",
                "bgcolor": "#33353a",
                "bordercolor": "#55575c",
                "font": {"color": FOREGROUND},
                "buttons": [
                    {
                        "label": CAMERA_BUTTON_LABEL,
                        "method": "restyle",
                        "args": [first, [1, 2]],
                        "args2": [second, [1, 2]],
                    }
                ],
            }
        ]
    if has_mesh:
        layout.setdefault("updatemenus", []).append(
            {
                "type": "buttons",
                "direction": "left",
                "showactive": False,
                "active": -1,
                "x": 1.0,
                "y": 0.0,
                "xanchor": "right",
                "yanchor": "bottom",
                "bgcolor": "#33353a",
                "bordercolor": "#55575c",
                "font": {"color": FOREGROUND},
                "buttons": [
                    {
                        "label": MESH_BUTTON_LABEL,
                        "method": "restyle",
                        "args": [{"visible": [True, "legendonly"]}, [0, mesh_index]],
                        "args2": [{"visible": ["legendonly", True]}, [0, mesh_index]],
                    }
                ],
            }
        )
    if len(xyz) == 0 and not has_mesh:
        layout["annotations"] = [
            {
                "text": EMPTY_NOTE,
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "font": {"size": 18, "color": FOREGROUND},
            }
        ]
    fig.update_layout(layout)
    out = fig.to_plotly_json()
    # plotly validates colour strings one by one in Python (about 20 s per million points):
    # the "#rrggbb" strings built here are valid by construction, so they go in afterwards.
    out["data"][0]["marker"]["color"] = _hex_colours(cloud.rgb)
    if has_mesh:
        assert mesh is not None
        out["data"][mesh_index]["vertexcolor"] = _mesh_colours(mesh)
    return out


def _mesh_colours(mesh: Mesh) -> list[str]:
    n = len(mesh.vertices)
    if mesh.vertex_colors is not None and len(mesh.vertex_colors) == n:
        return _hex_colours(np.asarray(mesh.vertex_colors))
    if mesh.texture is not None and mesh.uv is not None and len(mesh.uv) == n:
        from engine.export.glb import texture_colours

        rgb = np.clip(np.rint(texture_colours(mesh, mesh.uv)), 0, 255).astype(np.uint8)
        return _hex_colours(rgb)
    return [MESH_GREY] * n


def _hex_colours(rgb: np.ndarray) -> list[str]:
    rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    if len(rgb) == 0:
        return []
    # Vectorised "#rrggbb" via a 256-entry lookup; far faster than per-point formatting.
    return list("#" + _HEX[rgb[:, 0]] + _HEX[rgb[:, 1]] + _HEX[rgb[:, 2]])


def _display_name(name: str) -> str:
    # Image names are relative already; never let an absolute path slip into the page.
    if "\\" in name:
        name = ntpath.basename(name)
    elif os.path.isabs(name):
        name = Path(name).name
    return html.escape(name)  # plotly renders hover text as HTML


def _cloud_centre_radius(xyz: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, float]:
    finite = xyz[np.isfinite(xyz).all(axis=1)]
    if len(finite):
        # Median and a high percentile: a few stray points must not move the view.
        centre = np.median(finite, axis=0).astype(np.float64)
        dist = np.linalg.norm(finite - centre, axis=1)
        radius = float(np.percentile(dist, 98))
    elif len(centres):
        centre = centres.mean(axis=0)
        radius = float(np.linalg.norm(centres - centre, axis=1).max(initial=0.0)) * 0.3
    else:
        centre, radius = np.zeros(3), 1.0
    return centre, radius if radius > 0 and np.isfinite(radius) else 1.0


def _frustum_lines(cameras: Sequence[CameraPose], depth: float) -> np.ndarray:
    # Polylines of a small pyramid per camera, separated by NaN rows.
    segments = []
    gap = np.full((1, 3), np.nan)
    for cam in cameras:
        R = np.asarray(cam.R, dtype=np.float64)
        C = cam.center.astype(np.float64)
        try:
            kinv = np.linalg.inv(np.asarray(cam.K, dtype=np.float64))
        except np.linalg.LinAlgError:
            continue
        w, h = float(cam.width), float(cam.height)
        pix = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=np.float64)
        rays = pix @ kinv.T
        rays = rays / rays[:, 2:3] * depth
        corners = rays @ R + C  # R.T @ x_cam + C, row-wise
        a, b, c, d = corners
        # Apex to each corner, then the image rectangle; a tick on the top edge marks "up".
        top_mid = (a + b) / 2
        tick = top_mid - R[1] * depth * 0.25
        segments.append(np.stack([C, a, b, C, c, d, C, d, a, b, c, d, a]))
        segments.append(gap)
        segments.append(np.stack([top_mid, tick]))
        segments.append(gap)
    if not segments:
        return np.zeros((0, 3))
    return np.concatenate(segments)


def _layout(
    title: str,
    xyz: np.ndarray,
    centres: np.ndarray,
    cameras: Sequence[CameraPose],
    centre: np.ndarray,
    radius: float,
) -> dict[str, Any]:
    up = _up_vector(cameras)
    # Symmetric axis ranges about the cloud centre, so the scene's centre is the cloud's.
    pts = [xyz[np.isfinite(xyz).all(axis=1)].astype(np.float64), centres]
    pts = [p for p in pts if len(p)]
    if pts:
        allp = np.concatenate(pts)
        half = np.abs(allp - centre).max(axis=0)
    else:
        half = np.zeros(3)
    half = np.maximum(half, radius) * 1.05
    ranges = [[float(centre[i] - half[i]), float(centre[i] + half[i])] for i in range(3)]
    # With aspectmode "data", plotly scales every axis by the same factor: scene units are
    # data units divided by the geometric mean of the ranges.
    scale = 1.0 / float(np.prod(2 * half) ** (1 / 3))
    direction = _view_direction(cameras, centre, up)
    eye = direction * radius * 2.6 * scale
    axis = {"visible": False, "showbackground": False, "showspikes": False}
    return {
        "title": {"text": html.escape(title), "x": 0.5, "font": {"color": FOREGROUND, "size": 20}},
        "template": "none",
        "paper_bgcolor": BACKGROUND,
        "plot_bgcolor": BACKGROUND,
        "font": {"color": FOREGROUND},
        "margin": {"l": 0, "r": 0, "t": 48, "b": 0},
        "showlegend": True,
        "legend": {"x": 0.01, "y": 0.98, "bgcolor": "rgba(0,0,0,0)", "itemsizing": "constant"},
        "scene": {
            "aspectmode": "data",
            "bgcolor": BACKGROUND,
            "dragmode": "orbit",
            "xaxis": {**axis, "range": ranges[0]},
            "yaxis": {**axis, "range": ranges[1]},
            "zaxis": {**axis, "range": ranges[2]},
            "camera": {
                "center": {"x": 0.0, "y": 0.0, "z": 0.0},
                "eye": _xyz(eye),
                "up": _xyz(up),
                "projection": {"type": "perspective"},
            },
        },
    }


def _xyz(v: np.ndarray) -> dict[str, float]:
    return {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}


def _up_vector(cameras: Sequence[CameraPose]) -> np.ndarray:
    # R's second row is the camera's y axis (image down) in world coordinates.
    if cameras:
        up = -np.mean([np.asarray(c.R, dtype=np.float64)[1] for c in cameras], axis=0)
        norm = np.linalg.norm(up)
        if norm > 1e-6 and np.isfinite(norm):
            return up / norm
    return np.array([0.0, 0.0, 1.0])


def _view_direction(
    cameras: Sequence[CameraPose], centre: np.ndarray, up: np.ndarray
) -> np.ndarray:
    # Unit vector from the cloud centre towards the initial eye position.
    if cameras:
        dirs = np.array([c.center for c in cameras], dtype=np.float64) - centre
        norms = np.linalg.norm(dirs, axis=1)
        dirs = dirs[norms > 1e-9] / norms[norms > 1e-9, None]
        if len(dirs):
            mean = dirs.mean(axis=0)
            if np.linalg.norm(mean) > 0.6:  # cameras on one side: look from where they were
                return mean / np.linalg.norm(mean)
            # Cameras all around (a turntable): a 3/4 view at their mean elevation, from the
            # side of the first camera.
            elevation = float(
                np.clip(np.degrees(np.arcsin(np.clip(dirs @ up, -1, 1))).mean(), 15.0, 60.0)
            )
            horizontal = dirs[0] - (dirs[0] @ up) * up
            if np.linalg.norm(horizontal) < 1e-6:
                horizontal = _any_perpendicular(up)
            return _elevated(horizontal / np.linalg.norm(horizontal), up, elevation)
    # No cameras: a 3/4 view from above.
    horizontal = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
    return _elevated(horizontal, up, 30.0)


def _elevated(horizontal: np.ndarray, up: np.ndarray, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    v = np.cos(a) * horizontal + np.sin(a) * up
    return v / np.linalg.norm(v)


def _any_perpendicular(v: np.ndarray) -> np.ndarray:
    other = np.array([1.0, 0.0, 0.0]) if abs(v[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    p = np.cross(v, other)
    return p / np.linalg.norm(p)
