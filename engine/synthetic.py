"""Deterministic renderer of textured product-like objects with known cameras and geometry.

The scenes feed the accuracy tests, the benchmarks and the app's "Open sample": a bottle with a
printed label, a printed box and a low-texture bottle, standing on the world ``z = 0`` plane
(``+z`` up, centred on the ``z`` axis) in front of a plain studio backdrop, seen from
turntable-style camera rings.

Everything is exact by construction: the bottle is a surface of revolution with a polyline
profile (every piece is an analytic cone frustum, cylinder or annulus), the box is analytic, rays
go through the sub-pixel positions of COLMAP's pixel convention, the texture is fixed on the
surface (view consistent) and the shading is Lambertian from fixed world lights (view
independent, no highlights). Same arguments give identical bytes.

A scene folder holds ``images/*.jpg`` (with EXIF focal length), ``masks_gt/*.png``
(ground-truth masks, which ingest does not pick up), ``cameras.json`` (ground-truth cameras in
the team's dataset format) and ``scene.npz`` (dense ground-truth surface samples with normals
and the object's bounding box).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin

from engine.progress import CancelToken, ProgressEvent
from engine.types import CameraPose

logger = logging.getLogger(__name__)

SCENES = ("bottle", "box", "lowtex")

CONVENTION = (
    "x_cam = R @ x_world + t; OpenCV camera axes (x right, y down, z forward); "
    "pixel centre of the top-left pixel at (0.5, 0.5) as in COLMAP"
)

#: 35 mm-equivalent focal length of every synthetic camera (horizontal FOV about 42.7 deg).
FOCAL_35MM = 46
#: Width of the simulated sensor in millimetres (a "full-frame" 36 mm wide sensor).
SENSOR_WIDTH_MM = 36.0
#: Texture resolution on the object, texels per metre (about 0.18 mm per texel).
_TEXELS_PER_M = 5400.0
#: Key and fill lights (world directions towards the light) and the ambient term.
_KEY = np.array([0.45, -0.55, 0.70]) / np.linalg.norm([0.45, -0.55, 0.70])
_FILL = np.array([-0.60, 0.55, 0.35]) / np.linalg.norm([-0.60, 0.55, 0.35])
_AMBIENT, _KEY_GAIN, _FILL_GAIN = 0.38, 0.55, 0.22

#: Ground-truth masks live here, not in ``masks/``: ingest honours ``masks/`` beside a photo
#: folder, and the tests must see what a photographer's shoot gives (photos only).
MASK_DIR = "masks_gt"


# --------------------------------------------------------------------------------------------
# Public data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SyntheticScene:
    """A rendered synthetic scene and its ground truth.

    Attributes
    ----------
    name
        Scene kind, one of :data:`SCENES`.
    root
        Output folder.
    image_paths
        Written JPEGs in capture order (ring by ring, azimuth increasing).
    mask_paths
        8-bit PNG masks (255 = object, 0 = backdrop), ``root/masks_gt/<stem>.png``, same order.
    cameras
        Ground-truth cameras (``name`` = image file name), same order.
    surface_points
        (N, 3) float64 samples on the visible object surface, uniform by area (metres).
    surface_normals
        (N, 3) float64 outward unit normals of ``surface_points``.
    bbox_min, bbox_max
        The object's axis-aligned bounding box (metres).
    marker_ids, marker_corners
        Printed ArUco markers on the floor (``render_scene(markers_mm=...)``): (M,) ids and
        (M, 4, 3) corners in metres in ArUco corner order; empty when there are none.
    """

    name: str
    root: Path
    image_paths: tuple[Path, ...]
    mask_paths: tuple[Path, ...]
    cameras: tuple[CameraPose, ...]
    surface_points: np.ndarray = field(repr=False)
    surface_normals: np.ndarray = field(repr=False)
    bbox_min: np.ndarray = field(repr=False)
    bbox_max: np.ndarray = field(repr=False)
    marker_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    marker_corners: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 3)), repr=False)

    @property
    def object_size(self) -> float:
        """Length of the bounding box diagonal (metres)."""
        return float(np.linalg.norm(np.asarray(self.bbox_max) - np.asarray(self.bbox_min)))

    @property
    def image_dir(self) -> Path:
        """Folder holding the images."""
        return self.root / "images"

    def camera_dict(self) -> dict[str, CameraPose]:
        """Ground-truth cameras by image name."""
        return {c.name: c for c in self.cameras}


# --------------------------------------------------------------------------------------------
# Shapes: exact ray casting, texture coordinates and surface sampling
# --------------------------------------------------------------------------------------------


@dataclass
class _Hit:
    """Ray-casting result for a batch of rays (only meaningful where ``hit``)."""

    hit: np.ndarray  # (N,) bool
    t: np.ndarray  # (N,) ray parameter (inf where no hit)
    normal: np.ndarray  # (N, 3) geometric outward normal
    shade_normal: np.ndarray  # (N, 3) smooth normal used for shading
    albedo: np.ndarray | None = None  # (N, 3) float in [0, 1]


class _Revolution:
    """Surface of revolution about the z axis with a closed polyline profile ``(z_k, r_k)``.

    The profile runs from the bottom centre ``(0, 0)`` up the side to the top centre, so every
    piece is a cone frustum, a cylinder or a flat annulus with an analytic ray intersection.
    """

    def __init__(self, profile: np.ndarray, atlas: np.ndarray, r_tex: float) -> None:
        self.z = profile[:, 0].astype(np.float64)
        self.r = profile[:, 1].astype(np.float64)
        dz, dr = np.diff(self.z), np.diff(self.r)
        self.length = np.hypot(dz, dr)
        # outward normal in the (rho, z) half-plane of a segment travelled bottom -> top
        self.seg_n = np.stack([dz, -dr], axis=1) / self.length[:, None]
        self.s0 = np.concatenate([[0.0], np.cumsum(self.length)])  # arc length at vertices
        # smooth vertex normals where neighbouring pieces meet at less than 35 degrees
        n_seg = len(dz)
        self.vn0 = self.seg_n.copy()
        self.vn1 = self.seg_n.copy()
        for k in range(n_seg - 1):
            a, b = self.seg_n[k], self.seg_n[k + 1]
            if float(a @ b) > math.cos(math.radians(35.0)):
                m = (a + b) / np.linalg.norm(a + b)
                self.vn1[k] = m
                self.vn0[k + 1] = m
        self.atlas = atlas
        self.r_tex = r_tex
        self.r_max = float(self.r.max())
        self.height = float(self.z.max())
        self.bbox_min = np.array([-self.r_max, -self.r_max, float(self.z.min())])
        self.bbox_max = np.array([self.r_max, self.r_max, self.height])

    def hull_points(self) -> np.ndarray:
        ang = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)
        pts = [
            np.stack([r * np.cos(ang), r * np.sin(ang), np.full_like(ang, z)], 1)
            for z, r in zip(self.z, self.r, strict=True)
        ]
        return np.concatenate(pts)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> _Hit:
        n = len(d)
        t_best = np.full(n, np.inf)
        seg_best = np.full(n, -1, dtype=np.int64)
        # cull with the bounding cylinder first: only rays that touch it are traced
        ox, oy, oz = o
        dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
        qa = dx * dx + dy * dy
        qb = ox * dx + oy * dy
        qc = ox * ox + oy * oy - (self.r_max * 1.001) ** 2
        disc = qb * qb - qa * qc
        cand = np.nonzero(disc > 0)[0]
        sq = np.sqrt(disc[cand])
        t_in = (-qb[cand] - sq) / qa[cand]
        t_out = (-qb[cand] + sq) / qa[cand]
        z_in, z_out = oz + t_in * dz[cand], oz + t_out * dz[cand]
        z_lo, z_hi = np.minimum(z_in, z_out), np.maximum(z_in, z_out)
        keep = (z_hi >= self.z.min() - 1e-9) & (z_lo <= self.height + 1e-9)
        cand, z_lo, z_hi = cand[keep], z_lo[keep], z_hi[keep]
        eps = 1e-9
        for k in range(len(self.length)):
            z0, z1, r0, r1 = self.z[k], self.z[k + 1], self.r[k], self.r[k + 1]
            zmin, zmax = min(z0, z1), max(z0, z1)
            sel = cand[(z_hi >= zmin - 1e-7) & (z_lo <= zmax + 1e-7)]
            if sel.size == 0:
                continue
            ddx, ddy, ddz = dx[sel], dy[sel], dz[sel]
            if abs(z1 - z0) < 1e-12:  # flat annulus (or disc)
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = (z0 - oz) / ddz
                px, py = ox + t * ddx, oy + t * ddy
                rho = np.sqrt(px * px + py * py)
                ok = (t > eps) & (rho >= min(r0, r1) - 1e-12) & (rho <= max(r0, r1) + 1e-12)
                t = np.where(ok, t, np.inf)
            else:
                slope = (r1 - r0) / (z1 - z0)
                a0 = r0 + slope * (oz - z0)
                b0 = slope * ddz
                qa = ddx * ddx + ddy * ddy - b0 * b0
                qb = ox * ddx + oy * ddy - a0 * b0
                qc = ox * ox + oy * oy - a0 * a0
                disc = qb * qb - qa * qc
                good = disc >= 0
                sq = np.sqrt(np.where(good, disc, 0.0))
                # numerically stable roots of qa t^2 + 2 qb t + qc = 0
                q = -(qb + np.copysign(sq, qb))
                with np.errstate(divide="ignore", invalid="ignore"):
                    t1 = np.where(np.abs(qa) > 1e-14, q / qa, -qc / (2 * qb))
                    t2 = np.where(np.abs(q) > 1e-300, qc / q, np.inf)
                t = np.full(sel.size, np.inf)
                for tr in (t1, t2):
                    zz = oz + tr * ddz
                    ok = good & (tr > eps) & (zz >= zmin - 1e-12) & (zz <= zmax + 1e-12)
                    ok &= (a0 + b0 * tr) >= -1e-12  # not the mirrored nappe of the cone
                    t = np.where(ok & (tr < t), tr, t)
            better = t < t_best[sel]
            t_best[sel[better]] = t[better]
            seg_best[sel[better]] = k
        hit = np.isfinite(t_best)
        p = o[None, :] + np.where(hit, t_best, 0.0)[:, None] * d
        normal = np.zeros((n, 3))
        shade = np.zeros((n, 3))
        albedo = np.zeros((n, 3))
        idx = np.nonzero(hit)[0]
        if idx.size:
            k = seg_best[idx]
            ph = p[idx]
            rho = np.hypot(ph[:, 0], ph[:, 1])
            theta = np.arctan2(ph[:, 1], ph[:, 0])
            # position along the piece from its first vertex, in [0, 1]
            frac = np.hypot(ph[:, 2] - self.z[k], rho - self.r[k]) / self.length[k]
            frac = np.clip(frac, 0.0, 1.0)
            c, s = np.cos(theta), np.sin(theta)
            ng = self.seg_n[k]
            normal[idx] = np.stack([ng[:, 0] * c, ng[:, 0] * s, ng[:, 1]], 1)
            ns = self.vn0[k] * (1 - frac)[:, None] + self.vn1[k] * frac[:, None]
            ns /= np.linalg.norm(ns, axis=1, keepdims=True)
            shade[idx] = np.stack([ns[:, 0] * c, ns[:, 0] * s, ns[:, 1]], 1)
            arc = self.s0[k] + frac * self.length[k]
            albedo[idx] = self.texture(theta, arc)
        return _Hit(hit, t_best, normal, shade, albedo)

    def texture(self, theta: np.ndarray, arc: np.ndarray) -> np.ndarray:
        h, w = self.atlas.shape[:2]
        x = (theta / (2 * np.pi) % 1.0) * w - 0.5
        y = (self.s0[-1] - arc) * _TEXELS_PER_M - 0.5
        return _bilinear(self.atlas, x, y, wrap_x=True)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        area = np.pi * (self.r[:-1] + self.r[1:]) * self.length
        # pieces nobody above the floor can see: the bottom and steep downward facets
        area = np.where(self.seg_n[:, 1] < -0.5, 0.0, area)
        seg = rng.choice(len(area), size=n, p=area / area.sum())
        r0, r1 = self.r[seg], self.r[seg + 1]
        u = rng.random(n)
        # inverse CDF of a density linear in r along the piece
        dr = r1 - r0
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(
                np.abs(dr) > 1e-12,
                (np.sqrt(r0 * r0 + u * (r1 * r1 - r0 * r0)) - r0) / dr,
                u,
            )
        f = np.clip(f, 0.0, 1.0)
        rho = r0 + f * dr
        z = self.z[seg] + f * (self.z[seg + 1] - self.z[seg])
        theta = rng.random(n) * 2 * np.pi
        c, s = np.cos(theta), np.sin(theta)
        pts = np.stack([rho * c, rho * s, z], 1)
        ng = self.seg_n[seg]
        nrm = np.stack([ng[:, 0] * c, ng[:, 0] * s, ng[:, 1]], 1)
        return pts, nrm

    def floor_distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.hypot(x, y) - self.r[1]


class _Box:
    """Axis-aligned box standing on ``z = 0``, centred on the z axis, one atlas per face."""

    # face order: +x, -x, +y, -y, +z (top), -z (bottom)
    def __init__(self, size: tuple[float, float, float], atlases: list[np.ndarray]) -> None:
        sx, sy, sz = size
        self.bbox_min = np.array([-sx / 2, -sy / 2, 0.0])
        self.bbox_max = np.array([sx / 2, sy / 2, sz])
        self.atlases = atlases
        self.size = np.array(size, dtype=np.float64)

    def hull_points(self) -> np.ndarray:
        lo, hi = self.bbox_min, self.bbox_max
        return np.array(
            [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )

    def _face_uv(self, face: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face coordinates in metres: u to the right, v downwards, seen from outside."""
        lo, hi = self.bbox_min, self.bbox_max
        u = np.zeros(len(p))
        v = np.zeros(len(p))
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        side_v = hi[2] - z
        for f, uu, vv in (
            (0, y - lo[1], side_v),  # +x: seen from +x, right is +y
            (1, hi[1] - y, side_v),  # -x
            (2, hi[0] - x, side_v),  # +y
            (3, x - lo[0], side_v),  # -y
            (4, x - lo[0], hi[1] - y),  # top
            (5, x - lo[0], y - lo[1]),  # bottom
        ):
            m = face == f
            u[m] = uu[m]
            v[m] = vv[m]
        return u, v

    def intersect(self, o: np.ndarray, d: np.ndarray) -> _Hit:
        n = len(d)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            ta = (self.bbox_min[None, :] - o[None, :]) * inv
            tb = (self.bbox_max[None, :] - o[None, :]) * inv
        tmin = np.minimum(ta, tb)
        tmax = np.maximum(ta, tb)
        tmin = np.where(np.isnan(tmin), -np.inf, tmin)
        tmax = np.where(np.isnan(tmax), np.inf, tmax)
        t_near = tmin.max(axis=1)
        axis = tmin.argmax(axis=1)
        t_far = tmax.min(axis=1)
        hit = (t_near <= t_far) & (t_near > 1e-9)
        t = np.where(hit, t_near, np.inf)
        # entering through the min side of an axis when the ray goes in +axis direction
        sign = -np.sign(d[np.arange(n), axis])
        face = axis * 2 + (sign < 0)
        normal = np.zeros((n, 3))
        normal[np.arange(n), axis] = sign
        albedo = np.zeros((n, 3))
        idx = np.nonzero(hit)[0]
        if idx.size:
            p = o[None, :] + t[idx, None] * d[idx]
            fc = face[idx]
            u, v = self._face_uv(fc, p)
            for f in range(6):
                m = fc == f
                if m.any():
                    albedo[idx[m]] = _bilinear(
                        self.atlases[f], u[m] * _TEXELS_PER_M - 0.5, v[m] * _TEXELS_PER_M - 0.5
                    )
        normal[~hit] = 0.0
        return _Hit(hit, t, normal, normal.copy(), albedo)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        sx, sy, sz = self.size
        # faces: +x, -x, +y, -y, top (the bottom stands on the floor and is never seen)
        area = np.array([sy * sz, sy * sz, sx * sz, sx * sz, sx * sy])
        face = rng.choice(5, size=n, p=area / area.sum())
        a, b = rng.random(n), rng.random(n)
        lo, hi = self.bbox_min, self.bbox_max
        pts = np.zeros((n, 3))
        nrm = np.zeros((n, 3))
        for f in range(5):
            m = face == f
            if f < 4:
                ax = f // 2
                other = 1 - ax
                pts[m, ax] = hi[ax] if f % 2 == 0 else lo[ax]
                pts[m, other] = lo[other] + a[m] * (hi[other] - lo[other])
                pts[m, 2] = lo[2] + b[m] * (hi[2] - lo[2])
                nrm[m, ax] = 1.0 if f % 2 == 0 else -1.0
            else:
                pts[m, 0] = lo[0] + a[m] * (hi[0] - lo[0])
                pts[m, 1] = lo[1] + b[m] * (hi[1] - lo[1])
                pts[m, 2] = hi[2]
                nrm[m, 2] = 1.0
        return pts, nrm

    def floor_distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        qx = np.abs(x) - self.bbox_max[0]
        qy = np.abs(y) - self.bbox_max[1]
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray, wrap_x: bool = False) -> np.ndarray:
    """Bilinear lookup of a uint8 (H, W, 3) texture at texel coordinates (centre of texel 0 = 0)."""
    h, w = img.shape[:2]
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[:, None].astype(np.float32)
    fy = (y - y0)[:, None].astype(np.float32)
    x0 = x0.astype(np.int64)
    y0 = y0.astype(np.int64)
    if wrap_x:
        xa, xb = x0 % w, (x0 + 1) % w
    else:
        xa, xb = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
    ya, yb = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    # gather first, convert after: the atlas itself stays uint8
    top = img[ya, xa].astype(np.float32) * (1 - fx) + img[ya, xb].astype(np.float32) * fx
    bot = img[yb, xa].astype(np.float32) * (1 - fx) + img[yb, xb].astype(np.float32) * fx
    return (top * (1 - fy) + bot * fy).astype(np.float64) * (1.0 / 255.0)


# --------------------------------------------------------------------------------------------
# Procedural textures (deterministic: numpy Generator + OpenCV drawing)
# --------------------------------------------------------------------------------------------


def _value_noise(
    rng: np.random.Generator, h: int, w: int, cell_px: float, wrap_x: bool
) -> np.ndarray:
    """One octave of smooth value noise in [-1, 1], (h, w) float32, optionally periodic in x."""
    if wrap_x:
        gw = max(2, int(round(w / cell_px)))
        xs = np.arange(w, dtype=np.float64) * gw / w
    else:
        gw = int(math.ceil(w / cell_px)) + 1
        xs = np.arange(w, dtype=np.float64) / cell_px
    gh = int(math.ceil(h / cell_px)) + 2
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw + 1)).astype(np.float32)
    if wrap_x:
        grid[:, gw] = grid[:, 0]
    ys = np.arange(h, dtype=np.float64) / cell_px
    xi = np.minimum(xs.astype(np.int64), gw - 1)
    yi = np.minimum(ys.astype(np.int64), gh - 2)
    fx = xs - xi
    fy = ys - yi
    sx = (fx * fx * (3 - 2 * fx)).astype(np.float32)[None, :]
    sy = (fy * fy * (3 - 2 * fy)).astype(np.float32)[:, None]
    r0, r1 = grid[yi], grid[yi + 1]
    top = r0[:, xi] * (1 - sx) + r0[:, xi + 1] * sx
    bot = r1[:, xi] * (1 - sx) + r1[:, xi + 1] * sx
    return top * (1 - sy) + bot * sy


def _noise(
    rng: np.random.Generator,
    h: int,
    w: int,
    octaves: Sequence[tuple[float, float]],
    wrap_x: bool,
) -> np.ndarray:
    """Sum of value-noise octaves ``(cell size in mm, amplitude)``."""
    out = np.zeros((h, w), np.float32)
    for cell_mm, amp in octaves:
        out += amp * _value_noise(rng, h, w, cell_mm * 1e-3 * _TEXELS_PER_M, wrap_x)
    return out


_GLYPHS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789abdefghkmnpqrtuy%&#"
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)


def _px(mm: float) -> int:
    return max(1, int(round(mm * 1e-3 * _TEXELS_PER_M)))


def _rand_colour(rng: np.random.Generator, lo: int = 0, hi: int = 255) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi + 1, size=3))  # type: ignore[return-value]


class _Painter:
    """Draws on a uint8 canvas, repeating every shape across the x seam when it wraps."""

    def __init__(self, canvas: np.ndarray, wrap_x: bool) -> None:
        self.c = canvas
        self.w = canvas.shape[1]
        self.shifts = (-self.w, 0, self.w) if wrap_x else (0,)

    def rect(self, x0: int, y0: int, x1: int, y1: int, colour, thickness: int = -1) -> None:
        for s in self.shifts:
            cv2.rectangle(self.c, (x0 + s, y0), (x1 + s, y1), colour, thickness, cv2.LINE_AA)

    def ellipse(
        self, cx: int, cy: int, ax: int, ay: int, ang: float, colour, thickness: int = -1
    ) -> None:
        for s in self.shifts:
            cv2.ellipse(self.c, (cx + s, cy), (ax, ay), ang, 0, 360, colour, thickness, cv2.LINE_AA)

    def line(self, x0: int, y0: int, x1: int, y1: int, colour, thickness: int) -> None:
        for s in self.shifts:
            cv2.line(self.c, (x0 + s, y0), (x1 + s, y1), colour, thickness, cv2.LINE_AA)

    def poly(self, pts: np.ndarray, colour) -> None:
        for s in self.shifts:
            cv2.fillPoly(self.c, [(pts + [s, 0]).astype(np.int32)], colour, cv2.LINE_AA)

    def text(
        self, txt: str, x: int, y: int, font: int, scale: float, colour, thickness: int
    ) -> None:
        for s in self.shifts:
            cv2.putText(self.c, txt, (x + s, y), font, scale, colour, thickness, cv2.LINE_AA)


def _text_height_px(font: int, scale: float, thickness: int) -> int:
    (_, h), _ = cv2.getTextSize("H", font, scale, thickness)
    return h


def _draw_text_lines(
    p: _Painter,
    rng: np.random.Generator,
    x0: int,
    y0: int,
    x1: int,
    y1: int,
    height_mm: tuple[float, float],
    colour,
    words: bool = True,
) -> None:
    """Fill a box with lines of random glyphs (pseudo small print)."""
    y = y0
    while True:
        hmm = rng.uniform(*height_mm)
        font = _FONTS[int(rng.integers(len(_FONTS)))]
        scale = _px(hmm) / _text_height_px(font, 1.0, 1)
        thick = max(1, int(round(_px(hmm) / 9)))
        line_h = _text_height_px(font, scale, thick)
        y += int(line_h * 1.6)
        if y > y1:
            break
        x = x0 + int(rng.integers(0, max(1, _px(4))))
        while x < x1 - _px(3):
            n = int(rng.integers(2, 9)) if words else int(rng.integers(6, 20))
            word = "".join(_GLYPHS[int(i)] for i in rng.integers(len(_GLYPHS), size=n))
            (tw, _), _ = cv2.getTextSize(word, font, scale, thick)
            if x + tw > x1:
                break
            p.text(word, x, y, font, scale, colour, thick)
            x += tw + int(line_h * rng.uniform(0.5, 1.2))


def _barcode(p: _Painter, rng: np.random.Generator, x0: int, y0: int, w: int, h: int) -> None:
    p.rect(x0 - _px(2), y0 - _px(2), x0 + w + _px(2), y0 + h + _px(6), (250, 250, 250))
    x = x0
    while x < x0 + w:
        bw = int(rng.integers(1, 4)) * _px(0.35)
        if rng.random() < 0.55:
            p.rect(x, y0, x + bw - 1, y0 + h, (20, 20, 20))
        x += bw
    digits = "".join(str(int(i)) for i in rng.integers(10, size=12))
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = _px(2.5) / _text_height_px(font, 1.0, 1)
    p.text(digits, x0, y0 + h + _px(4.5), font, scale, (20, 20, 20), 1)


def _print_design(
    p: _Painter,
    rng: np.random.Generator,
    x0: int,
    y0: int,
    x1: int,
    y1: int,
    palette: np.ndarray,
    density: float = 1.0,
) -> None:
    """Paint a busy printed design (label or carton face) inside a box of the canvas.

    Large colour panels and stripes for the coarse scales, rings, blobs, small print and a
    fine layer of small high-contrast marks, so SIFT finds corners at every scale.
    """
    w, h = x1 - x0, y1 - y0
    area_cm2 = w * h / (_px(10) ** 2)

    def col() -> tuple[int, int, int]:
        c = palette[int(rng.integers(len(palette)))].astype(np.float64)
        c = np.clip(c + rng.normal(0, 18, 3), 0, 255)
        return tuple(int(v) for v in c)  # type: ignore[return-value]

    def count(per_cm2: float, least: int) -> int:
        return int(area_cm2 * per_cm2 * density) + least

    for _ in range(count(0.04, 2)):  # colour panels and bands
        bx, by = int(x0 + rng.uniform(-0.1, 0.9) * w), int(y0 + rng.uniform(-0.1, 0.9) * h)
        bw, bh = int(rng.uniform(0.15, 0.5) * w), int(rng.uniform(0.05, 0.25) * h)
        p.rect(bx, by, min(bx + bw, x1), min(by + bh, y1), col())
    for _ in range(count(0.01, 1)):  # stripes
        by = int(y0 + rng.uniform(0, 0.95) * h)
        period = _px(rng.uniform(1.2, 3.0))
        c = col()
        for k in range(int(rng.integers(3, 7))):
            yy = by + k * period
            if yy < y1:
                p.rect(x0, yy, x1, yy + max(1, period // 2) - 1, c)
    for _ in range(count(0.15, 3)):  # blobs and rings
        cx, cy = int(x0 + rng.random() * w), int(y0 + rng.random() * h)
        ax, ay = _px(rng.uniform(1.0, 6.0)), _px(rng.uniform(1.0, 6.0))
        thick = -1 if rng.random() < 0.6 else _px(rng.uniform(0.4, 1.0))
        p.ellipse(cx, cy, ax, ay, float(rng.uniform(0, 180)), col(), thick)
    for _ in range(count(0.12, 2)):  # blocks of small print
        bx, by = int(x0 + rng.uniform(-0.1, 0.8) * w), int(y0 + rng.uniform(-0.05, 0.9) * h)
        bw, bh = int(rng.uniform(0.2, 0.5) * w), _px(rng.uniform(8, 25))
        dark = rng.random() < 0.7
        colour = _rand_colour(rng, 0, 60) if dark else _rand_colour(rng, 210, 255)
        _draw_text_lines(
            p, rng, max(bx, x0), by, min(bx + bw, x1), min(by + bh, y1), (2.5, 5.0), colour
        )
    for _ in range(count(10.0, 10)):  # fine layer: small polygons and dots
        cx, cy = x0 + rng.random() * w, y0 + rng.random() * h
        rad = _px(rng.uniform(1.0, 3.0))
        c = _rand_colour(rng, 0, 60) if rng.random() < 0.5 else col()
        if rng.random() < 0.35:
            p.ellipse(int(cx), int(cy), rad, rad, 0.0, c)
        else:
            k = int(rng.integers(3, 6))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rr = rad * rng.uniform(0.6, 1.0, k)
            p.poly(np.stack([cx + rr * np.cos(ang), cy + rr * np.sin(ang)], 1), c)
    font = _FONTS[int(rng.integers(len(_FONTS) - 1))]  # a headline
    word = "".join(_GLYPHS[int(i)] for i in rng.integers(23, size=int(rng.integers(4, 8))))
    scale = _px(rng.uniform(7, 11)) / _text_height_px(font, 1.0, 1)
    thick = max(2, _px(1.2))
    (tw, th), _ = cv2.getTextSize(word, font, scale, thick)
    if tw < w:
        tx = int(x0 + rng.uniform(0, 1) * (w - tw))
        ty = int(y0 + th + rng.uniform(0, 0.6) * (h - th))
        p.text(word, tx, ty, font, scale, col(), thick)


def _finish(canvas: np.ndarray, wrap_x: bool) -> np.ndarray:
    """Slight prefilter so the texture does not alias when minified (seamless when wrapping)."""
    if not wrap_x:
        return cv2.GaussianBlur(canvas, (0, 0), 0.7, borderType=cv2.BORDER_REFLECT)
    pad = 8
    wide = np.concatenate([canvas[:, -pad:], canvas, canvas[:, :pad]], axis=1)
    return np.ascontiguousarray(
        cv2.GaussianBlur(wide, (0, 0), 0.7, borderType=cv2.BORDER_REFLECT)[:, pad:-pad]
    )


def _tint(noise: np.ndarray, base: Sequence[float]) -> np.ndarray:
    out = np.asarray(base, np.float32)[None, None, :] * (1.0 + noise[..., None])
    return np.clip(out, 0, 255).astype(np.uint8)


def _bottle_profile() -> np.ndarray:
    """(z, r) polyline of the bottle, bottom centre to top centre (metres)."""
    r_body, r_neck, r_cap = 0.045, 0.0145, 0.0165
    prof = [(0.0, 0.0), (0.0, 0.0405)]
    # rounded foot
    for a in np.linspace(0, np.pi / 2, 5)[1:]:
        prof.append((0.0045 * (1 - np.cos(a)), 0.0405 + 0.0045 * np.sin(a)))
    prof.append((0.150, r_body))
    # shoulder: smooth cosine blend from body to neck
    for tau in np.linspace(0, 1, 15)[1:]:
        r = r_neck + (r_body - r_neck) * (1 + np.cos(np.pi * tau)) / 2
        prof.append((0.150 + 0.045 * tau, r))
    prof += [
        (0.212, r_neck),
        (0.214, r_neck),
        (0.214, r_cap),
        (0.2485, r_cap),
        (0.25, r_cap - 0.0015),
        (0.25, 0.0),
    ]
    # the foot's arc may repeat a vertex; drop zero-length pieces
    out = [prof[0]]
    for q in prof[1:]:
        if math.hypot(q[0] - out[-1][0], q[1] - out[-1][1]) > 1e-9:
            out.append(q)
    return np.array(out, dtype=np.float64)


def _bottle_atlas(
    rng: np.random.Generator, profile: np.ndarray, r_tex: float, low_texture: bool
) -> np.ndarray:
    """Texture over (arc length along the profile, angle), uint8 (H, W, 3), periodic in x.

    Row 0 is the top centre of the cap (arc length ``s_end``), so the print reads upright from
    outside; column ``x`` is the angle ``2 pi x / W`` about the z axis.
    """
    seg = np.hypot(np.diff(profile[:, 0]), np.diff(profile[:, 1]))
    s = np.concatenate([[0.0], np.cumsum(seg)])
    s_end = float(s[-1])
    h = int(math.ceil(s_end * _TEXELS_PER_M)) + 2
    w = int(round(2 * np.pi * r_tex * _TEXELS_PER_M))
    z = profile[:, 0]

    def s_at(zq: float) -> float:
        return float(s[int(np.argmin(np.abs(z - zq)))])

    def row(v: float) -> int:
        return int(round((s_end - v) * _TEXELS_PER_M))

    s_body0, s_body1 = s_at(0.0045), s_at(0.150)
    s_cap0 = float(s[np.nonzero(np.isclose(z, 0.214))[0][-1]])
    s_cap1 = s_at(0.2485)
    cap_top, cap_bot = row(s_cap1), row(s_cap0)
    if low_texture:
        base = (118, 160, 176)
        n = _noise(rng, h, w, [(30.0, 0.02), (8.0, 0.02), (2.5, 0.012)], True)
        canvas = _tint(n, base)
        p = _Painter(canvas, True)
        # ten small printed patches, two lines of small print and a scatter of marks: under
        # a tenth of the body, spread around so that neighbouring views share a few of them
        logo = np.array([[200, 40, 40], [30, 30, 30], [240, 190, 40], [40, 90, 170]])
        for k in range(10):
            lx = int((k + rng.uniform(0.0, 0.4)) * w / 10)
            ly = row(s_body0 + rng.uniform(0.035, 0.13))
            pw, ph = _px(rng.uniform(22, 28)), _px(rng.uniform(16, 20))
            p.rect(lx, ly, lx + pw, ly + ph, (236, 232, 220))
            _print_design(
                p,
                rng,
                lx + _px(1),
                ly + _px(1),
                lx + pw - _px(1),
                ly + ph - _px(1),
                np.roll(logo, k, axis=0),
                density=1.5,
            )
        for az, zc in ((0.58, 0.05), (0.25, 0.03)):
            tx, ty = int(az * w), row(s_body0 + zc)
            _draw_text_lines(p, rng, tx, ty, tx + _px(40), ty + _px(9), (2.0, 3.0), (35, 45, 55))
        for k in range(45):
            cx = int((k + rng.uniform(0.2, 0.8)) * w / 45)
            cy = row(s_body0 + rng.uniform(0.015, 0.135))
            c = _rand_colour(rng, 20, 90) if rng.random() < 0.7 else (235, 235, 225)
            if k % 3 == 0:
                p.ellipse(
                    cx,
                    cy,
                    _px(rng.uniform(2, 4)),
                    _px(rng.uniform(2, 4)),
                    float(rng.uniform(0, 180)),
                    c,
                )
            elif k % 3 == 1:
                ln = _px(rng.uniform(3, 6))
                p.line(cx - ln, cy - ln, cx + ln, cy + ln, c, _px(0.8))
                p.line(cx - ln, cy + ln, cx + ln, cy - ln, c, _px(0.8))
            else:
                font = cv2.FONT_HERSHEY_DUPLEX
                sc = _px(rng.uniform(4, 6)) / _text_height_px(font, 1.0, 1)
                p.text(
                    _GLYPHS[int(rng.integers(23))] + _GLYPHS[int(rng.integers(23, 33))],
                    cx,
                    cy,
                    font,
                    sc,
                    c,
                    _px(0.6),
                )
        # cap: plain with a few grip ridges
        canvas[:cap_top] = (228, 228, 224)
        canvas[cap_top : cap_bot + 1] = (232, 232, 228)
        # irregular ridges: a regular comb would look the same from every azimuth step
        for k in range(12):
            x = int((k + rng.uniform(-0.3, 0.3)) * w / 12)
            p.rect(
                x,
                cap_top + _px(rng.uniform(2, 6)),
                x + int(w * rng.uniform(0.01, 0.03)),
                cap_bot - _px(rng.uniform(2, 6)),
                (180, 180, 176),
            )
        return _finish(canvas, True)

    glass = np.array([60, 110, 70], np.float32)
    n = _noise(rng, h, w, [(40.0, 0.10), (12.0, 0.12), (4.0, 0.10), (1.5, 0.06)], True)
    canvas = _tint(n, glass)
    p = _Painter(canvas, True)
    # moulded speckle on the glass: dense, light and dark, so the glass is matchable too
    for _ in range(int(9 * w * (row(s_body0) - cap_bot) / _px(10) ** 2)):
        cx, cy = int(rng.random() * w), int(rng.uniform(cap_bot, row(s_body0)))
        c = tuple(int(v) for v in np.clip(glass * rng.choice([0.35, 1.9, 2.4]), 0, 255))
        r = _px(rng.uniform(1.0, 2.2))
        p.ellipse(cx, cy, r, r, 0.0, c)
    # the printed label: most of the body
    y0, y1 = row(s_body1 - 0.012), row(s_body0 + 0.020)
    paper = _tint(_noise(rng, y1 - y0, w, [(6.0, 0.04), (1.0, 0.03)], True), (238, 230, 210))
    canvas[y0:y1] = paper
    palette = np.array(
        [
            [200, 40, 40],
            [30, 60, 150],
            [20, 20, 20],
            [240, 190, 40],
            [40, 140, 80],
            [120, 60, 140],
            [250, 250, 250],
        ]
    )
    _print_design(p, rng, 0, y0, w, y1, palette, density=1.0)
    _barcode(p, rng, int(0.45 * w), y1 - _px(24), _px(28), _px(12))
    p.rect(0, y0, w, y0 + _px(1.5), (180, 150, 60))
    p.rect(0, y1 - _px(1.5), w, y1, (180, 150, 60))
    # neck ring label (the neck is about a third of the body's girth: coarse marks only)
    n0 = row(s_at(0.195))
    p.rect(0, n0 - _px(11), w, n0 - _px(3), (215, 190, 110))
    for k in range(10):
        x = int((k + rng.uniform(0.2, 0.8)) * w / 10)
        p.ellipse(x, n0 - _px(7), int(w * rng.uniform(0.01, 0.025)), _px(2.5), 0.0, (120, 40, 30))
    # cap: coloured with grip ridges and a printed band; top with rings
    capn = _noise(rng, cap_bot - cap_top + 1, w, [(6.0, 0.05)], True)
    canvas[cap_top : cap_bot + 1] = _tint(capn, (170, 35, 40))
    for k in range(24):
        x = int((k + rng.uniform(-0.3, 0.3)) * w / 24)
        p.rect(
            x,
            cap_top + _px(14),
            x + int(w * rng.uniform(0.006, 0.02)),
            cap_bot - _px(2),
            (120, 20, 25),
        )
    p.rect(0, cap_top + _px(4), w, cap_top + _px(11), (235, 215, 150))
    for k in range(8):
        x = int((k + rng.uniform(0.0, 0.6)) * w / 8)
        p.rect(
            x,
            cap_top + _px(5),
            x + int(w * rng.uniform(0.01, 0.04)),
            cap_top + _px(10),
            (60, 20, 20),
        )
    canvas[:cap_top] = (190, 40, 45)
    for k, rr in enumerate((2.0, 5.0, 8.0, 11.0)):
        y = cap_top - _px(rr)
        canvas[y - _px(1.0) : y] = (240, 220, 160) if k % 2 == 0 else (90, 20, 25)
    return _finish(canvas, True)


def _box_atlases(rng: np.random.Generator, size: tuple[float, float, float]) -> list[np.ndarray]:
    sx, sy, sz = size
    dims = [(sy, sz), (sy, sz), (sx, sz), (sx, sz), (sx, sy), (sx, sy)]
    palettes = [
        np.array([[20, 80, 160], [250, 250, 250], [240, 170, 30], [20, 20, 20]]),
        np.array([[200, 30, 60], [250, 240, 230], [30, 30, 30], [90, 160, 60]]),
    ]
    out = []
    for f, (fw, fh) in enumerate(dims):
        w, h = int(round(fw * _TEXELS_PER_M)), int(round(fh * _TEXELS_PER_M))
        base = (235, 236, 240) if f % 2 == 0 else (230, 222, 205)
        n = _noise(rng, h, w, [(20.0, 0.04), (3.0, 0.03), (0.8, 0.02)], False)
        canvas = _tint(n, base)
        p = _Painter(canvas, False)
        if f == 5:  # bottom: cardboard with a stamp
            canvas[:] = _tint(n, (170, 140, 100))
            _draw_text_lines(p, rng, _px(10), _px(10), w - _px(10), _px(40), (3, 5), (40, 30, 20))
        else:
            _print_design(p, rng, 0, 0, w, h, palettes[f % 2], density=1.0 if f < 4 else 1.3)
            if f == 3:
                _barcode(p, rng, _px(8), h - _px(30), _px(32), _px(14))
        # folded-carton edge band
        m = _px(1.5)
        p.rect(0, 0, w - 1, h - 1, (60, 60, 70), m)
        out.append(_finish(canvas, False))
    return out


BOX_SIZE = (0.16, 0.10, 0.22)


@lru_cache(maxsize=6)
def _make_shape(kind: str, seed: int) -> _Revolution | _Box:
    # one texture stream per (kind, seed); the shape itself never changes
    rng = np.random.default_rng([seed, SCENES.index(kind), 7])
    if kind in ("bottle", "lowtex"):
        prof = _bottle_profile()
        atlas = _bottle_atlas(rng, prof, 0.045, low_texture=kind == "lowtex")
        return _Revolution(prof, atlas, 0.045)
    if kind == "box":
        return _Box(BOX_SIZE, _box_atlases(rng, BOX_SIZE))
    raise ValueError(f"unknown synthetic scene {kind!r}; choose one of {', '.join(SCENES)}")


# --------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------


def look_at(
    center: np.ndarray, target: np.ndarray, up: Sequence[float] = (0.0, 0.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera rotation and translation of a camera at ``center`` looking at ``target``.

    Parameters
    ----------
    center, target
        Camera centre and the world point it looks at.
    up
        World direction that appears up in the image (no roll).

    Returns
    -------
    R, t
        ``x_cam = R @ x_world + t`` with OpenCV axes (x right, y down, z forward).
    """
    center = np.asarray(center, np.float64)
    fwd = np.asarray(target, np.float64) - center
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.asarray(up, np.float64))
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd])
    return rot, -rot @ center


def intrinsics(width: int, height: int, focal_35mm: float = FOCAL_35MM) -> np.ndarray:
    """Pinhole ``K`` (COLMAP convention) of the synthetic camera for an image size."""
    f = focal_35mm / SENSOR_WIDTH_MM * width
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def _project(K: np.ndarray, R: np.ndarray, t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pc = pts @ R.T + t
    uv = pc @ K.T
    return uv[:, :2] / uv[:, 2:3]


def ring_cameras(
    kind: str,
    *,
    n_azimuth: int = 12,
    elevations_deg: Sequence[float] = (15.0, 35.0, 55.0),
    width: int = 800,
    height: int = 600,
    seed: int = 0,
    fill: float = 0.72,
    roll_deg: float = 0.0,
) -> list[CameraPose]:
    """Ground-truth turntable cameras for a scene, in capture order.

    Rings at the given elevations, ``n_azimuth`` views each, azimuth increasing, looking at the
    object's centre with no roll; the distance per ring makes the object fill about ``fill``
    of the frame. Azimuth, elevation and distance carry a small seeded jitter.

    Parameters
    ----------
    kind
        Scene kind, one of :data:`SCENES`.
    n_azimuth, elevations_deg
        Views per ring and the rings' elevations (degrees above the floor).
    width, height
        Image size in pixels.
    seed
        Seed of the jitter.
    fill
        Fraction of the frame height (or 85% of the width if tighter) the object spans.
    roll_deg
        Roll of every camera about its optical axis (90: the camera held on its side, so the
        product lies sideways in the photos).

    Returns
    -------
    list of CameraPose
        Named ``<kind>_r<ring>_a<index>.jpg``.
    """
    if kind not in SCENES:
        raise ValueError(f"unknown synthetic scene {kind!r}; choose one of {', '.join(SCENES)}")
    if n_azimuth < 1 or n_azimuth > 999 or not elevations_deg:
        raise ValueError("need 1..999 views per ring and at least one elevation")
    shape = _make_shape(kind, seed)
    hull = shape.hull_points()
    centre = (shape.bbox_min + shape.bbox_max) / 2
    K = intrinsics(width, height)
    roll = math.radians(roll_deg)
    # the image turns by the roll: x_cam' = Rz(roll) x_cam
    rz = np.array(
        [[math.cos(roll), -math.sin(roll), 0.0], [math.sin(roll), math.cos(roll), 0.0], [0, 0, 1]]
    )

    def aim(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        R, t = look_at(c, centre)
        return rz @ R, rz @ t

    rng = np.random.default_rng([seed, 11])
    cams = []
    for ring, elev in enumerate(elevations_deg):
        if not 0.0 < float(elev) < 89.0:
            raise ValueError(f"elevation {elev} deg is outside (0, 89)")
        # distance at which the widest of a few azimuths fills the frame as asked
        dist = 1.0
        for _ in range(4):
            worst = 0.0
            for az in np.linspace(0, np.pi, 8, endpoint=False):
                c = centre + dist * _direction(az, math.radians(elev))
                R, t = aim(c)
                uv = _project(K, R, t, hull)
                ext = max(np.ptp(uv[:, 1]) / height, np.ptp(uv[:, 0]) / (width * 0.85 / fill))
                worst = max(worst, ext)
            dist *= worst / fill
        step = 2 * np.pi / n_azimuth
        offset = step * ((ring * 0.37) % 1.0)
        for k in range(n_azimuth):
            az = offset + k * step + rng.uniform(-0.1, 0.1) * step
            el = math.radians(float(elev) + rng.uniform(-1.0, 1.0))
            d = dist * (1.0 + rng.uniform(-0.02, 0.02))
            c = centre + d * _direction(az, el)
            R, t = aim(c)
            name = f"{kind}_r{ring}_a{k:03d}.jpg"
            cams.append(
                CameraPose(
                    name,
                    R,
                    t,
                    K.copy(),
                    width,
                    height,
                    "PINHOLE",
                    (K[0, 0], K[1, 1], K[0, 2], K[1, 2]),
                )
            )
    return cams


def _direction(az: float, el: float) -> np.ndarray:
    return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _camera_rays(cam: CameraPose, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
    """World ray directions (unnormalised) through image points in COLMAP pixel coordinates."""
    K = cam.K
    x = (us - K[0, 2]) / K[0, 0]
    y = (vs - K[1, 2]) / K[1, 1]
    dc = np.stack([x, y, np.ones_like(x)], -1)
    return dc @ cam.R  # R^T @ dc for each row


def _object_rect(shape, cam: CameraPose, pad: int = 3) -> tuple[int, int, int, int]:
    uv = _project(cam.K, cam.R, cam.t, shape.hull_points())
    x0 = max(0, int(math.floor(uv[:, 0].min())) - pad)
    y0 = max(0, int(math.floor(uv[:, 1].min())) - pad)
    x1 = min(cam.width, int(math.ceil(uv[:, 0].max())) + pad)
    y1 = min(cam.height, int(math.ceil(uv[:, 1].max())) + pad)
    return x0, y0, max(x0, x1), max(y0, y1)


def _shade(h: _Hit) -> np.ndarray:
    n = h.shade_normal
    light = (
        _AMBIENT + _KEY_GAIN * np.clip(n @ _KEY, 0, None) + _FILL_GAIN * np.clip(n @ _FILL, 0, None)
    )
    return h.albedo * light[:, None]


def _floor_rays(cam: CameraPose) -> tuple[np.ndarray, ...]:
    """Every pixel's unit ray and where it meets the floor ``z = 0``.

    Returns ``(us, vs, d, down, t, fx, fy)``: pixel centres, unit directions, whether the ray
    goes down, its length to the floor (inf when not) and the floor point's x, y.
    """
    w, h = cam.width, cam.height
    us, vs = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    d = _camera_rays(cam, us.ravel(), vs.ravel())
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    c = cam.center
    down = d[:, 2] < -1e-6
    t = np.where(down, -c[2] / np.where(down, d[:, 2], -1.0), np.inf)
    fx, fy = c[0] + t * d[:, 0], c[1] + t * d[:, 1]
    return us, vs, d, down, t, fx, fy


def _contact_shadow(shape, fx: np.ndarray, fy: np.ndarray, product: bool) -> np.ndarray:
    """Brightness factor of the floor at ``(fx, fy)`` under the object's soft contact shadow."""
    if not product:
        return np.ones_like(fx)
    dist = shape.floor_distance(fx, fy)
    return 1.0 - 0.45 * np.exp(-np.maximum(dist, 0.0) / 0.012)


def _backdrop(shape, cam: CameraPose, tone: float = 1.0, product: bool = True) -> np.ndarray:
    """Smooth studio sweep with a soft contact shadow, (H, W, 3) float in [0, 1].

    ``tone`` scales its brightness: 1.0 light grey, about 0.08 black cloth. Without the
    ``product`` there is no shadow.
    """
    w, h = cam.width, cam.height
    us, vs, d, down, t, fx, fy = _floor_rays(cam)
    # brighter towards the top of the sweep, smooth everywhere
    level = 0.80 + 0.07 * np.tanh(3.0 * d[:, 2])
    shadow = np.ones_like(level)
    shadow[down] = _contact_shadow(shape, fx[down], fy[down], product)
    level = level * np.where(down, shadow, 1.0)
    r2 = ((us.ravel() - w / 2) ** 2 + (vs.ravel() - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    level *= 1.0 - 0.10 * r2
    tint = np.array([0.985, 0.99, 1.0])
    return (tone * level[:, None] * tint[None, :]).reshape(h, w, 3)


#: Kinds of backdrop :func:`render_scene` can draw.
BACKDROPS = ("studio", "turntable", "dark", "sheet", "room", "card")
#: Radius of the ``room`` backdrop's wall (printed posters, shelves: clutter fixed in the
#: world), as a multiple of the object's footprint radius; its height is the same.
_ROOM_SCALE = 12.0
#: Brightness of the ``dark`` backdrop (black cloth) relative to the studio's.
_DARK_TONE = 0.08
#: Half the side of the ``sheet`` backdrop's printed sheet, as a multiple of the object's
#: footprint radius.
_SHEET_SCALE = 2.5
#: Texels along a side of the printed sheet.
_SHEET_TEXELS = 1536


#: The ``card`` backdrop's printed cards lying on the floor apart from the product (a scale card,
#: a colour chart, a price card), fixed in the world: centre's azimuth (deg) and distance, half
#: sides along and across that direction, in footprint radii. Every view sees one or two.
_CARDS = ((10.0, 1.7, 0.3, 0.55), (135.0, 1.75, 0.35, 0.5), (250.0, 1.7, 0.3, 0.55))
#: How far the product moves on its support when :func:`render_scene` turns it (``turn_deg``),
#: in footprint radii along x and y.
_TURN_SHIFT = (0.5, -0.3)


def _footprint_radius(shape) -> float:
    """The object's footprint radius: its farthest hull point from the vertical axis."""
    return float(np.max(np.hypot(*shape.hull_points()[:, :2].T)))


@lru_cache(maxsize=2)
def _sheet_texture(seed: int) -> np.ndarray:
    """A printed paper sheet (a turntable target, a catalogue page): (N, N, 3) in [0, 1]."""
    rng = np.random.default_rng([seed, 43])
    n = _SHEET_TEXELS
    paper = rng.uniform(200, 235, 3)
    canvas = _tint(_noise(rng, n, n, ((12.0, 0.08), (3.0, 0.04)), False), paper)
    palette = rng.integers(20, 236, size=(7, 3)).astype(np.float64)
    _print_design(_Painter(canvas, False), rng, 0, 0, n, n, palette, density=0.35)
    out = _finish(canvas, False).astype(np.float32) / 255.0
    out.flags.writeable = False
    return out


def _sheet_lookup(
    texture: np.ndarray, gx: np.ndarray, gy: np.ndarray, wrap_x: bool = False
) -> np.ndarray:
    """Bilinear lookup of a float (N, N, 3) texture at texel coordinates.

    Texel 0's centre is at 0; lookups are clamped at the texture's edges, or repeat across it
    with ``wrap_x``.
    """
    n = texture.shape[0]
    gx = np.mod(gx, n - 1.001) if wrap_x else np.clip(gx, 0.0, n - 1.001)
    gy = np.clip(gy, 0.0, n - 1.001)
    x0, y0 = gx.astype(np.intp), gy.astype(np.intp)
    ax, ay = (gx - x0)[:, None], (gy - y0)[:, None]
    return (
        texture[y0, x0] * (1 - ax) * (1 - ay)
        + texture[y0, x0 + 1] * ax * (1 - ay)
        + texture[y0 + 1, x0] * (1 - ax) * ay
        + texture[y0 + 1, x0 + 1] * ax * ay
    )


def _paint_sheet(
    img: np.ndarray, shape, cam: CameraPose, texture: np.ndarray, product: bool = True
) -> None:
    """A printed sheet lying on the floor under the object (fixed in the world), in place.

    Square, centred under the object, :data:`_SHEET_SCALE` footprint radii from the centre to
    a side; lit as the floor (the contact shadow darkens it).
    """
    _, _, _, down, _, fx, fy = _floor_rays(cam)
    half = _SHEET_SCALE * _footprint_radius(shape)
    on = down & (np.abs(fx) < half) & (np.abs(fy) < half)
    if not on.any():
        return
    n = texture.shape[0]
    # texel centres at +0.5
    gx = (fx[on] + half) / (2 * half) * n - 0.5
    gy = (half - fy[on]) / (2 * half) * n - 0.5
    texels = _sheet_lookup(texture, gx, gy)
    shade = 0.85 * _contact_shadow(shape, fx[on], fy[on], product)
    flat = img.reshape(-1, 3)
    flat[on] = texels * shade[:, None]


def _paint_cards(img: np.ndarray, shape, cam: CameraPose, texture: np.ndarray) -> None:
    """Printed cards lying flat on the floor apart from the product (:data:`_CARDS`), in place.

    Each card shows its own part of the printed ``texture`` with a white margin, lit as the
    floor; they lie beyond the product's contact shadow.
    """
    _, _, _, down, _, fx, fy = _floor_rays(cam)
    radius = _footprint_radius(shape)
    flat = img.reshape(-1, 3)
    n = texture.shape[0]
    for k, (az, dist, half_u, half_v) in enumerate(_CARDS):
        a = math.radians(az)
        e_u, e_v = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
        rel_x, rel_y = fx - dist * radius * e_u[0], fy - dist * radius * e_u[1]
        u = (rel_x * e_u[0] + rel_y * e_u[1]) / (half_u * radius)
        v = (rel_x * e_v[0] + rel_y * e_v[1]) / (half_v * radius)
        on = down & (np.abs(u) < 1.0) & (np.abs(v) < 1.0)
        if not on.any():
            continue
        # a third of the texture per card, the print inside a margin of a tenth
        gx = (0.5 + 0.5 * u[on] / 0.9) * (n / 3) + k * n / 3 - 0.5
        gy = (0.5 + 0.5 * v[on] / 0.9) * (n - 1)
        margin = (np.abs(u[on]) > 0.9) | (np.abs(v[on]) > 0.9)
        texels = _sheet_lookup(texture, gx, gy)
        texels[margin] = 0.97
        flat[on] = texels * 0.85


def _room_backdrop(shape, cam: CameraPose, seed: int, product: bool = True) -> np.ndarray:
    """A cluttered room fixed in the world, (H, W, 3) float in [0, 1].

    A plain white table top under the object reaching to a round wall of posters and shelves
    (:data:`_ROOM_SCALE` footprint radii away), so the background matches between views as a
    real room does: SfM finds features on it, and no plain backdrop can be modelled.
    """
    w, h = cam.width, cam.height
    _, _, d, down, t, fx, fy = _floor_rays(cam)
    radius = _ROOM_SCALE * _footprint_radius(shape)
    c = cam.center
    # the wall: |c_xy + s d_xy| = radius, the far root (the camera stands inside)
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (c[0] * d[:, 0] + c[1] * d[:, 1])
    q = c[0] ** 2 + c[1] ** 2 - radius**2
    s_wall = (-b + np.sqrt(np.maximum(b * b - 4 * a * q, 0.0))) / np.maximum(2 * a, 1e-12)
    floor = down & (t < s_wall)
    out = np.zeros((h * w, 3))
    table = _sheet_texture(seed + 101)
    posters = _sheet_texture(seed + 202)
    n = table.shape[0]

    if floor.any():
        # a plain white table top with a little grain, darker towards the wall
        gx, gy = (fx[floor] + radius) / radius * n, (radius - fy[floor]) / radius * n
        grain = _sheet_lookup(table, gx, gy, wrap_x=True)
        level = 0.85 * (1.0 - 0.15 * np.hypot(fx[floor], fy[floor]) / radius)
        shade = level * _contact_shadow(shape, fx[floor], fy[floor], product)
        out[floor] = (0.93 + 0.07 * grain.mean(axis=1, keepdims=True)) * shade[:, None]
    wall = ~floor
    if wall.any():
        px = c[0] + s_wall[wall] * d[wall, 0]
        py = c[1] + s_wall[wall] * d[wall, 1]
        pz = c[2] + s_wall[wall] * d[wall, 2]
        theta = np.arctan2(py, px)
        # the print once around the room (repeated posters would be look-alikes), one wall
        # height up
        gx = ((theta / (2 * np.pi)) % 1.0) * n - 0.5
        gy = (1.0 - np.clip(pz / radius, 0.0, 1.0)) * n - 0.5
        out[wall] = _sheet_lookup(posters, gx, gy, wrap_x=True) * 0.9
    return out.reshape(h, w, 3)


#: Turntable platter radius, as a multiple of the object's footprint radius.
_PLATTER_SCALE = 1.6


@lru_cache(maxsize=4)
def _turntable_plate(seed: int, ring: int, width: int, height: int) -> np.ndarray:
    """Busy printed studio backdrop of one turntable ring, fixed to the camera, (H, W, 3) [0, 1].

    Panels, small print, blobs and fine marks over paper noise (SIFT finds plenty on it), lit
    with the studio's vignette. It depends on ``(seed, ring, width, height)`` only, so every
    view of a ring shows the same pixels here before the sensor noise.
    """
    rng = np.random.default_rng([seed, 41, ring])
    cw, ch = int(width * 1.5), int(height * 1.5)  # texels: minified when resized, no aliasing
    paper = rng.uniform(150, 225, 3)
    canvas = _tint(_noise(rng, ch, cw, ((12.0, 0.10), (3.0, 0.05)), False), paper)
    palette = rng.integers(20, 236, size=(7, 3)).astype(np.float64)
    _print_design(_Painter(canvas, False), rng, 0, 0, cw, ch, palette, density=0.5)
    canvas = _finish(canvas, False)
    plate = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA)
    us, vs = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    r2 = ((us - width / 2) ** 2 + (vs - height / 2) ** 2) / ((width / 2) ** 2 + (height / 2) ** 2)
    out = plate.astype(np.float64) * (0.9 / 255.0) * (1.0 - 0.10 * r2)[..., None]
    out.flags.writeable = False  # shared by the ring's views through the cache
    return out


def _turntable_backdrop(shape, cam: CameraPose, plate: np.ndarray) -> np.ndarray:
    """A ring's fixed printed backdrop with the plain grey platter under the object.

    The platter turns with the object, so it is drawn in the object frame (a disc on ``z = 0``
    with a soft contact shadow); it is plain, so it looks alike from every azimuth.
    """
    w, h = cam.width, cam.height
    us, vs, d, down, t, fx, fy = _floor_rays(cam)
    radius = _PLATTER_SCALE * _footprint_radius(shape)
    # anti-aliased rim: the disc edge's distance in pixels on the floor
    footprint = t / cam.K[0, 0] / np.maximum(np.abs(d[:, 2]), 0.2)
    inside = np.where(down, (radius - np.hypot(fx, fy)) / np.where(down, footprint, 1.0), -1.0)
    alpha = np.clip(inside + 0.5, 0.0, 1.0)
    dist = np.where(down, shape.floor_distance(fx, fy), np.inf)
    grey = 0.60 * (1.0 - 0.45 * np.exp(-np.maximum(dist, 0.0) / 0.012))
    flat = plate.reshape(-1, 3)
    out = flat * (1.0 - alpha)[:, None] + (grey * alpha)[:, None] * np.array([1.0, 0.99, 0.97])
    return out.reshape(h, w, 3)


def _render_view(
    shape,
    cam: CameraPose,
    supersample: int,
    markers: tuple[np.ndarray, np.ndarray] | None = None,
    plate: np.ndarray | None = None,
    backdrop: str = "studio",
    seed: int = 0,
    product: bool = True,
    world: CameraPose | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Linear RGB image in [0, 1] (H, W, 3) and object coverage (H, W) of one camera.

    ``plate`` is a turntable ring's fixed backdrop (:func:`_turntable_plate`); None: the studio.
    Without the ``product`` only the backdrop is drawn (coverage all zero). ``cam`` is the
    camera in the product's frame; ``world``, when the product was moved on its support, the
    same camera in the frame of the support, where the ``card`` backdrop's cards lie (the plain
    sweep looks alike from both).
    """
    if backdrop == "room":
        img = _room_backdrop(shape, cam, seed, product)
    elif plate is None:
        img = _backdrop(shape, cam, _DARK_TONE if backdrop == "dark" else 1.0, product)
    else:
        img = _turntable_backdrop(shape, cam, plate)
    if backdrop == "sheet":
        _paint_sheet(img, shape, cam, _sheet_texture(seed), product)
    if backdrop == "card":
        _paint_cards(img, shape, cam if world is None else world, _sheet_texture(seed + 303))
    if markers is not None:
        _paint_markers(img, cam, markers[0], markers[1], supersample)
    cover = np.zeros((cam.height, cam.width))
    if not product:
        return img, cover
    x0, y0, x1, y1 = _object_rect(shape, cam)
    if x1 <= x0 or y1 <= y0:
        return img, cover
    s = supersample
    off = (np.arange(s) + 0.5) / s
    us = (np.arange(x0, x1)[:, None] + off[None, :]).ravel()
    vs = (np.arange(y0, y1)[:, None] + off[None, :]).ravel()
    uu, vv = np.meshgrid(us, vs)
    d = _camera_rays(cam, uu.ravel(), vv.ravel())
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    hit = shape.intersect(cam.center, d)
    col = _shade(hit)
    hh, ww = (y1 - y0), (x1 - x0)
    hit_f = hit.hit.astype(np.float64).reshape(hh, s, ww, s)
    col = col.reshape(hh, s, ww, s, 3)
    cov = hit_f.mean(axis=(1, 3))
    obj = col.sum(axis=(1, 3)) / (s * s)  # no-hit samples contribute zero colour
    bg = img[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = obj + (1.0 - cov)[..., None] * bg
    cover[y0:y1, x0:x1] = cov
    return img, cover


#: OpenCV ArUco dictionary of the printed markers :func:`render_scene` can lay on the floor.
MARKER_DICTIONARY = "DICT_4X4_50"
#: Reflectance of the marker's black and white print relative to the floor's.
_MARKER_BLACK, _MARKER_WHITE = 0.06, 1.12


def marker_layout(kind: str, markers_mm: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Where the printed ArUco markers of a scene lie: flat on the floor, one per side.

    Markers ``0..3`` lie on the ``+x``, ``+y``, ``-x`` and ``-y`` sides of the product, each
    turned to read upright from a camera on its side, with a 10 mm gap between the product's
    footprint and the marker's white quiet border (one marker cell wide).

    Parameters
    ----------
    kind
        Scene kind, one of :data:`SCENES`.
    markers_mm
        Side of each marker's black square in millimetres (> 0).
    seed
        Texture seed (the geometry does not depend on it).

    Returns
    -------
    ids, corners
        (4,) int marker ids and (4, 4, 3) float64 corners in metres, in OpenCV's ArUco corner
        order (the printed marker's top-left, top-right, bottom-right, bottom-left).
    """
    shape = _make_shape(kind, seed)
    m = float(markers_mm) * 1e-3
    if not m > 0:
        raise ValueError("markers_mm must be positive")
    ids, corners = [], []
    for i, phi in enumerate(np.radians([0.0, 90.0, 180.0, 270.0])):
        reach = float(abs(np.cos(phi)) * shape.bbox_max[0] + abs(np.sin(phi)) * shape.bbox_max[1])
        rho = reach + 0.010 + m / 6.0 + m / 2.0
        centre = np.array([rho * np.cos(phi), rho * np.sin(phi), 0.0])
        a = phi + np.pi / 2.0
        e_u = np.array([np.cos(a), np.sin(a), 0.0])  # the print's x (right)
        e_v = np.array([np.sin(a), -np.cos(a), 0.0])  # the print's y (down), seen from above
        o = centre - m / 2.0 * (e_u + e_v)
        corners.append([o, o + m * e_u, o + m * (e_u + e_v), o + m * e_v])
        ids.append(i)
    return np.array(ids), np.array(corners, np.float64)


def _paint_markers(
    img: np.ndarray, cam: CameraPose, ids: np.ndarray, corners: np.ndarray, supersample: int
) -> None:
    """Print ArUco markers (and their white quiet borders) on the floor of a backdrop image.

    The marker pixels are supersampled (at least 4x4 rays each), so the edges are anti-aliased
    as a camera would see them; the floor's shading multiplies the print.
    """
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, MARKER_DICTIONARY))
    s = max(4, supersample)
    off = (np.arange(s) + 0.5) / s
    c = cam.center
    for mid, quad in zip(ids, corners, strict=True):
        bits = cv2.aruco.generateImageMarker(dictionary, int(mid), 6, borderBits=1) > 127
        o, e_u, e_v = quad[0], quad[1] - quad[0], quad[3] - quad[0]
        side = float(np.linalg.norm(e_u))
        e_u, e_v = e_u / side, e_v / side
        q = 1.0 / 6.0  # quiet border: one cell, in marker sides
        ring = o + side * np.array([[-q, -q], [1 + q, -q], [1 + q, 1 + q], [-q, 1 + q]]) @ np.stack(
            [e_u, e_v]
        )
        pc = ring @ cam.R.T + cam.t
        if np.any(pc[:, 2] <= 1e-6):
            continue
        uv = _project(cam.K, cam.R, cam.t, ring)
        x0 = max(0, int(math.floor(uv[:, 0].min())) - 1)
        y0 = max(0, int(math.floor(uv[:, 1].min())) - 1)
        x1 = min(cam.width, int(math.ceil(uv[:, 0].max())) + 1)
        y1 = min(cam.height, int(math.ceil(uv[:, 1].max())) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        us = (np.arange(x0, x1)[:, None] + off[None, :]).ravel()
        vs = (np.arange(y0, y1)[:, None] + off[None, :]).ravel()
        uu, vv = np.meshgrid(us, vs)
        d = _camera_rays(cam, uu.ravel(), vv.ravel())
        down = d[:, 2] < -1e-9
        t = np.where(down, -c[2] / np.where(down, d[:, 2], -1.0), 0.0)
        rel = c[None, :] + t[:, None] * d - o[None, :]
        mu, mv = rel @ e_u / side, rel @ e_v / side
        in_quiet = down & (mu >= -q) & (mu < 1 + q) & (mv >= -q) & (mv < 1 + q)
        inside = in_quiet & (mu >= 0) & (mu < 1) & (mv >= 0) & (mv < 1)
        col = np.clip((mu * 6).astype(np.int64), 0, 5)
        row = np.clip((mv * 6).astype(np.int64), 0, 5)
        factor = np.ones(len(d))
        factor[in_quiet] = _MARKER_WHITE
        factor[inside] = np.where(bits[row[inside], col[inside]], _MARKER_WHITE, _MARKER_BLACK)
        hh, ww = y1 - y0, x1 - x0
        img[y0:y1, x0:x1] *= factor.reshape(hh, s, ww, s).mean(axis=(1, 3))[..., None]


def depth_map(kind: str, camera: CameraPose, *, seed: int = 0) -> np.ndarray:
    """Ground-truth depth (camera z, metres) through each pixel centre; ``inf`` off the object.

    Parameters
    ----------
    kind
        Scene kind, one of :data:`SCENES`.
    camera
        A camera (for example one of ``SyntheticScene.cameras``).
    seed
        Texture seed (the geometry does not depend on it).

    Returns
    -------
    numpy.ndarray
        (height, width) float64.
    """
    shape = _make_shape(kind, seed)
    out = np.full((camera.height, camera.width), np.inf)
    x0, y0, x1, y1 = _object_rect(shape, camera)
    if x1 <= x0 or y1 <= y0:
        return out
    uu, vv = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
    d = _camera_rays(camera, uu.ravel(), vv.ravel())  # camera z component is 1
    hit = shape.intersect(camera.center, d)
    out[y0:y1, x0:x1] = hit.t.reshape(y1 - y0, x1 - x0)
    return out


def _exif_bytes(cam: CameraPose) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Vitrine"
    exif[0x0110] = "Synthetic Camera"
    exif[0x0131] = "Vitrine synthetic renderer"
    ifd = exif.get_ifd(0x8769)
    focal_mm = cam.K[0, 0] / cam.width * SENSOR_WIDTH_MM
    ifd[0x920A] = TiffImagePlugin.IFDRational(int(round(focal_mm * 1000)), 1000)
    ifd[0xA405] = int(round(focal_mm))
    ifd[0xA002] = int(cam.width)
    ifd[0xA003] = int(cam.height)
    # focal-plane resolution (pixels per cm) describes the 36 mm wide sensor
    ifd[0xA20E] = TiffImagePlugin.IFDRational(int(round(cam.width / 3.6 * 1000)), 1000)
    ifd[0xA20F] = TiffImagePlugin.IFDRational(int(round(cam.width / 3.6 * 1000)), 1000)
    ifd[0xA210] = 3
    return exif.tobytes()


def _camera_entry(cam: CameraPose) -> dict[str, Any]:
    return {
        "name": cam.name,
        "width": int(cam.width),
        "height": int(cam.height),
        "K": np.asarray(cam.K, np.float64).tolist(),
        "R": np.asarray(cam.R, np.float64).tolist(),
        "t": np.asarray(cam.t, np.float64).tolist(),
        "center": np.asarray(cam.center, np.float64).tolist(),
    }


def write_cameras_json(cameras: Sequence[CameraPose], path: Path, **extra: Any) -> None:
    """Write cameras in the team's dataset format (``cameras.json``).

    Parameters
    ----------
    cameras
        Cameras in order.
    path
        File to write (atomically: written beside it, then renamed).
    **extra
        Further top-level keys (for example ``bbox`` and ``scene``); JSON-serialisable.
    """
    data: dict[str, Any] = {"convention": CONVENTION, "units": "metres", "distortion": "none"}
    data["images"] = [_camera_entry(c) for c in cameras]
    for key, value in extra.items():
        data[key] = value.tolist() if isinstance(value, np.ndarray) else value
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_cameras_json(path: Path) -> list[CameraPose]:
    """Read cameras written by :func:`write_cameras_json` (or a real dataset's cameras.json).

    Parameters
    ----------
    path
        The ``cameras.json`` file.

    Returns
    -------
    list of CameraPose
        PINHOLE cameras in file order, ``params = (fx, fy, cx, cy)``.

    Raises
    ------
    ValueError
        When the file does not follow the format.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    distortion = str(data.get("distortion", "none"))
    lens_models = any("distortion" in e for e in data.get("images", ()))
    if not distortion.startswith("none") or lens_models or "images" not in data:
        raise ValueError(f"{path}: not a distortion-free cameras.json with an 'images' list")
    cams = []
    for e in data["images"]:
        K = np.asarray(e["K"], np.float64).reshape(3, 3)
        R = np.asarray(e["R"], np.float64).reshape(3, 3)
        t = np.asarray(e["t"], np.float64).reshape(3)
        cams.append(
            CameraPose(
                str(e["name"]),
                R,
                t,
                K,
                int(e["width"]),
                int(e["height"]),
                "PINHOLE",
                (K[0, 0], K[1, 1], K[0, 2], K[1, 2]),
            )
        )
    return cams


_VIEW_NAME = re.compile(r"^(?:" + "|".join(SCENES) + r")_r\d+_a\d+$")


def _turned(shape, cams: list[CameraPose], turn_deg: float, first: int) -> list[CameraPose]:
    """``cams`` in the product's frame after it turned by ``turn_deg`` before view ``first``.

    The product is turned about the vertical axis through its centre and moved by
    :data:`_TURN_SHIFT` footprint radii; a camera ``x_cam = R x_world + t`` sees the product's
    point ``x`` at ``R (Q x + s) + t``.
    """
    a = math.radians(turn_deg)
    q = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0, 0, 1]])
    centre = (shape.bbox_min + shape.bbox_max) / 2
    radius = _footprint_radius(shape)
    shift = np.array([_TURN_SHIFT[0] * radius, _TURN_SHIFT[1] * radius, 0.0])
    s = centre - q @ centre + shift  # about the centre's vertical, then moved
    out = list(cams[:first])
    for c in cams[first:]:
        out.append(replace(c, R=c.R @ q, t=c.R @ s + c.t))
    return out


def _remove_stale_views(root: Path, keep: set[str]) -> None:
    """Delete views of an earlier render in the same folder, so the folder holds one scene."""
    for sub, ext in (("images", ".jpg"), (MASK_DIR, ".png")):
        for f in (root / sub).glob("*" + ext):
            if _VIEW_NAME.match(f.stem) and f.stem + ".jpg" not in keep:
                f.unlink()


def _write_view(
    root: Path,
    cam: CameraPose,
    img: np.ndarray,
    cover: np.ndarray,
    index: int,
    *,
    seed: int,
    noise_sigma: float,
    jpeg_quality: int,
) -> tuple[Path, Path]:
    """Add sensor noise, write the JPEG (with EXIF) and the mask of one view."""
    rng = np.random.default_rng([seed, 23, index])
    pix = img * 255.0
    if noise_sigma > 0:
        pix = pix + rng.normal(0.0, noise_sigma, size=pix.shape)
    pix8 = np.clip(np.rint(pix), 0, 255).astype(np.uint8)
    ipath = root / "images" / cam.name
    mpath = root / MASK_DIR / (Path(cam.name).stem + ".png")
    Image.fromarray(pix8).save(ipath, "JPEG", quality=int(jpeg_quality), exif=_exif_bytes(cam))
    Image.fromarray(np.where(cover > 0.5, 255, 0).astype(np.uint8)).save(mpath, "PNG")
    return ipath, mpath


def render_scene(
    out_dir: Path,
    kind: str = "bottle",
    *,
    n_azimuth: int = 12,
    elevations_deg: Sequence[float] = (15.0, 35.0, 55.0),
    width: int = 800,
    height: int = 600,
    seed: int = 0,
    jpeg_quality: int = 92,
    noise_sigma: float = 1.5,
    supersample: int = 3,
    n_surface_points: int = 150_000,
    markers_mm: float = 0.0,
    backdrop: str = "studio",
    fill: float = 0.72,
    roll_deg: float = 0.0,
    product: bool = True,
    turn_deg: float = 0.0,
    progress: Callable[[ProgressEvent], None] | None = None,
    cancel: CancelToken | None = None,
) -> SyntheticScene:
    """Render a synthetic scene with ground truth into ``out_dir``.

    Parameters
    ----------
    out_dir
        Output folder (created). Views of an earlier synthetic render there are replaced.
    kind
        ``"bottle"`` (printed label), ``"box"`` (printed carton) or ``"lowtex"`` (plain bottle
        with only a little detail).
    n_azimuth, elevations_deg
        Views per camera ring and the rings' elevations in degrees.
    width, height
        Image size in pixels.
    seed
        Seed of the textures, camera jitter, sensor noise and surface samples.
    jpeg_quality
        JPEG quality of the images.
    noise_sigma
        Standard deviation of the Gaussian sensor noise in 8-bit levels.
    supersample
        Rays per pixel along each axis (anti-aliasing).
    n_surface_points
        Number of ground-truth surface samples.
    markers_mm
        Side in millimetres of printed ArUco markers (:data:`MARKER_DICTIONARY`, ids 0..3,
        white quiet border) laid flat on the floor on the four sides of the product (see
        :func:`marker_layout`); their corners are recorded as ``markers`` in cameras.json and
        ``marker_ids``/``marker_corners`` in scene.npz. 0: no markers.
    backdrop
        ``"studio"``: a plain sweep, the camera goes round the product. ``"turntable"``: each
        ring's camera stands still in the studio while the product turns on a plain grey
        platter, so a busy printed backdrop fixed to the camera (the same pixels in every view
        of a ring, before sensor noise) moves with the cameras in the object's frame, where the
        ground-truth cameras are. The lights turn with the product (its shading is as in the
        studio) and the masks are the object's coverage, as in the studio. ``"dark"``: the
        studio sweep in black cloth (a white or bright product's masks and edges). ``"sheet"``:
        the studio with a printed paper sheet lying flat under the product, reaching well
        beyond it (a turntable target or catalogue page): dense stereo reconstructs it, so the
        mesh must cut it as the support. ``"room"``: a plain white table under the product and
        a round wall of posters behind it, fixed in the world (a product shot at home): no
        plain backdrop to mask against, and clutter that SfM matches between views.
        ``"card"``: the studio sweep with three small printed cards lying on it apart from the
        product (a scale card, a colour chart), fixed in the world.
    fill
        Fraction of the frame the product spans (see :func:`ring_cameras`); 0.25 is a small
        product far off in the frame.
    roll_deg
        Camera roll about the optical axis (90: held on its side, no EXIF says so).
    product
        False: the same shoot with nothing on the floor (no object, no contact shadow), as a
        shoot where only the background could be reconstructed. The ground truth (surface
        samples, box) still describes the object that is missing.
    turn_deg
        Before the last ring, the product is turned this many degrees about its vertical axis
        and moved a little on its support (:data:`_TURN_SHIFT`), as a photographer turns a
        product to show another side; the support and what lies on it stay (the ``studio``,
        ``dark`` and ``card`` backdrops only). The ground-truth cameras are in the product's
        frame, where its model must be solved; the cards then lie elsewhere in the last ring.
    progress
        Called with a :class:`~engine.progress.ProgressEvent` after each view.
    cancel
        Checked before each view.

    Returns
    -------
    SyntheticScene
        The scene as written.

    Raises
    ------
    ValueError
        For an unknown kind or impossible settings.
    engine.progress.Cancelled
        When ``cancel`` was cancelled.
    """
    if kind not in SCENES:
        raise ValueError(f"unknown synthetic scene {kind!r}; choose one of {', '.join(SCENES)}")
    if width < 16 or height < 16 or supersample < 1 or not 1 <= jpeg_quality <= 100:
        raise ValueError("image size must be at least 16 px, supersample >= 1, quality 1..100")
    if backdrop not in BACKDROPS:
        raise ValueError(f"unknown backdrop {backdrop!r}; choose one of {', '.join(BACKDROPS)}")
    if turn_deg and (backdrop not in ("studio", "dark", "card") or markers_mm > 0):
        raise ValueError("a turned product needs a studio, dark or card backdrop without markers")
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / MASK_DIR).mkdir(parents=True, exist_ok=True)
    shape = _make_shape(kind, seed)
    cams = ring_cameras(
        kind,
        n_azimuth=n_azimuth,
        elevations_deg=elevations_deg,
        width=width,
        height=height,
        seed=seed,
        fill=fill,
        roll_deg=roll_deg,
    )
    world = list(cams)  # the cameras in the support's frame
    if turn_deg:
        cams = _turned(shape, cams, turn_deg, (len(elevations_deg) - 1) * n_azimuth)
    _remove_stale_views(root, {c.name for c in cams})
    markers = marker_layout(kind, markers_mm, seed=seed) if markers_mm > 0 else None
    image_paths, mask_paths = [], []
    # two views in flight: numpy releases the GIL in the heavy loops, so 2 cores are used
    workers = max(1, min(2, os.cpu_count() or 1, len(cams)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: dict[int, Future] = {}

        def submit(j: int) -> None:
            if cancel is not None:
                cancel.raise_if_cancelled()
            plate = None
            if backdrop == "turntable":  # cameras come ring by ring, n_azimuth each
                plate = _turntable_plate(seed, j // n_azimuth, width, height)
            pending[j] = pool.submit(
                _render_view,
                shape,
                cams[j],
                supersample,
                markers,
                plate,
                backdrop,
                seed,
                product,
                world[j],
            )

        try:
            for j in range(workers):
                submit(j)
            for i, cam in enumerate(cams):
                img, cover = pending.pop(i).result()
                if i + workers < len(cams):
                    submit(i + workers)
                ipath, mpath = _write_view(
                    root,
                    cam,
                    img,
                    cover,
                    i,
                    seed=seed,
                    noise_sigma=noise_sigma,
                    jpeg_quality=jpeg_quality,
                )
                image_paths.append(ipath)
                mask_paths.append(mpath)
                if progress is not None:
                    progress(ProgressEvent("synthetic", i + 1, len(cams), f"Rendered {cam.name}"))
        finally:
            for fut in pending.values():
                fut.cancel()
    pts, nrm = shape.sample(n_surface_points, np.random.default_rng([seed, 31]))
    # stored as float32; hand back exactly what load_scene will read
    pts = pts.astype(np.float32).astype(np.float64)
    nrm = nrm.astype(np.float32).astype(np.float64)
    bmin, bmax = shape.bbox_min.copy(), shape.bbox_max.copy()
    extra: dict[str, Any] = {}
    if markers is not None:
        extra["markers"] = {
            "dictionary": MARKER_DICTIONARY,
            "size_mm": float(markers_mm),
            "ids": markers[0].tolist(),
            "corners": markers[1].tolist(),
        }
    write_cameras_json(
        cams,
        root / "cameras.json",
        bbox=[bmin.tolist(), bmax.tolist()],
        scene=kind,
        seed=seed,
        **extra,
    )
    tmp = root / "scene.tmp.npz"
    np.savez_compressed(
        tmp,
        surface_points=pts.astype(np.float32),
        surface_normals=nrm.astype(np.float32),
        bbox_min=bmin,
        bbox_max=bmax,
        scene=np.array(kind),
        **({} if markers is None else {"marker_ids": markers[0], "marker_corners": markers[1]}),
    )
    tmp.replace(root / "scene.npz")
    logger.info("rendered %d %s views into %s", len(cams), kind, root)
    scene = SyntheticScene(
        kind, root, tuple(image_paths), tuple(mask_paths), tuple(cams), pts, nrm, bmin, bmax
    )
    if markers is not None:
        scene = replace(scene, marker_ids=markers[0], marker_corners=markers[1])
    return scene


def load_scene(root: Path) -> SyntheticScene:
    """Read back a scene folder written by :func:`render_scene`.

    Parameters
    ----------
    root
        The scene folder (holding ``cameras.json``, ``scene.npz``, ``images/``, ``masks_gt/``).

    Returns
    -------
    SyntheticScene

    Raises
    ------
    FileNotFoundError
        When ``cameras.json`` or ``scene.npz`` is missing.
    """
    root = Path(root)
    meta = json.loads((root / "cameras.json").read_text(encoding="utf-8"))
    cams = read_cameras_json(root / "cameras.json")
    with np.load(root / "scene.npz") as z:
        pts = z["surface_points"].astype(np.float64)
        nrm = z["surface_normals"].astype(np.float64)
        bmin, bmax = z["bbox_min"].astype(np.float64), z["bbox_max"].astype(np.float64)
        kind = str(z["scene"]) if "scene" in z else str(meta.get("scene", ""))
        marker_ids = z["marker_ids"].astype(np.int64) if "marker_ids" in z else np.zeros(0, int)
        marker_corners = (
            z["marker_corners"].astype(np.float64) if "marker_corners" in z else np.zeros((0, 4, 3))
        )
    images = tuple(root / "images" / c.name for c in cams)
    masks = tuple(root / MASK_DIR / (Path(c.name).stem + ".png") for c in cams)
    return SyntheticScene(
        kind, root, images, masks, tuple(cams), pts, nrm, bmin, bmax, marker_ids, marker_corners
    )


def write_sample(
    folder: Path,
    kind: str = "bottle",
    *,
    progress: Callable[[ProgressEvent], None] | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Write a sample shoot a newcomer can reconstruct: 36 photos at 800x600 (3 rings of 12).

    The photos go to ``folder/photos``; the ground truth (cameras.json, scene.npz and masks) to
    ``folder/ground_truth``, out of the way of the photos so a reconstruction of the photo folder
    works from the photos alone, as a real shoot would.

    Returns
    -------
    Path
        The photo folder.
    """
    folder = Path(folder)
    truth = folder / "ground_truth"
    photos = folder / "photos"
    scene = render_scene(truth, kind, progress=progress, cancel=cancel)
    if photos.exists():
        shutil.rmtree(photos)
    shutil.move(str(scene.root / "images"), str(photos))
    return photos
