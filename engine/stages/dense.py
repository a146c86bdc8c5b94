"""Dense stage: coarse-to-fine plane-sweep multi-view stereo in torch (CUDA or CPU, same code).

For every registered view (the *reference*):

1. The photo is undistorted to a pinhole camera (COLMAP's camera model) and downscaled to the
   preset's depth-map size; the view's mask, when known, is warped alongside.
2. Source views come from the sparse model: those sharing the most SfM points with the
   reference under a useful triangulation angle (:func:`select_sources`).
3. The depth range is that of the sparse points the view sees, widened by a margin; the work is
   restricted to the image region those points (or the mask) cover. In a masked view, when
   at least three photos have masks, each pixel's coarse hypotheses are those where its ray
   lies inside the masks' visual hull (:func:`hull_bounds`), swept over the hull's depth as
   seen from the view: the photo's own sparse points can miss part of the surface it sees
   (a base on black cloth), and one wide range for all pixels lets repeated texture (lego's
   studs) find false matches.
4. Depth hypotheses are swept from coarse to fine: at the coarsest level a fixed set spaced
   evenly in inverse depth, then at each finer level a few hypotheses per pixel around the
   upsampled estimate of the level below. Each hypothesis warps every source into the reference
   (a per-pixel homography of a fronto-parallel plane) and scores it with windowed normalised
   cross-correlation (NCC). Scores are averaged over the best ``top_k`` sources per pixel, so
   a source that is occluded there does not poison the cost.
5. The best hypothesis is refined to sub-hypothesis precision with a parabola through its
   neighbours' scores; its NCC is the pixel's confidence.

Depth maps are written to ``work/dense/`` (one ``.npz`` per view, see engine/io/depthmaps.py)
so a run resumes view by view. Batches are sized to the device's memory (or
``DenseConfig.memory_budget_mb``); on an out-of-memory error the batch is halved and the view
continues with the same result. When not even one hypothesis fits, a CUDA view is computed on
the CPU instead, and on the CPU the stage stops with a :class:`ReconstructionError` saying what
to do.

Testing without a GPU: the environment variable ``VITRINE_SIMULATE_MEMORY_CAP_MB`` makes every
batch whose estimated memory exceeds that many MB raise ``torch.OutOfMemoryError``, on any
device, as a GPU with that little free memory would. It is read by this module only and is
meant for tests and benchmarks.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pycolmap
import torch
import torch.nn.functional as F  # noqa: N812 - the universal torch idiom

from engine.config import DenseConfig
from engine.errors import ReconstructionError
from engine.imageops import nearest_colour, nearest_index
from engine.io import read_image, read_mask
from engine.io.depthmaps import depth_map_path, load_depth_map, save_depth_map
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.types import (
    ORIGIN_MVS,
    ORIGIN_NONE,
    CameraPose,
    DepthMap,
    ImageRecord,
    IngestResult,
    PointCloud,
    SparseModel,
)

logger = logging.getLogger(__name__)

STAGE = "dense"
#: Points per view sent to the live preview while depth maps are computed.
PREVIEW_POINTS = 20_000
#: Bump when the algorithm changes so cached depth maps are recomputed (5: masked views swept
#: inside the masks' visual hull).
ALGORITHM_VERSION = 5
#: Bytes of memory one evaluated element (pixel x hypothesis x source) needs in the sweep:
#: about 14 float32 temporaries.
BYTES_PER_ELEMENT = 4 * 14
#: Elements per batch on the CPU (about 14 MB): batches that stay in the processor's caches.
#: The coarse sweep of the synthetic bottle took 8.3 s at 250,000 against 11.7 s at 6,000,000
#: (36 views, 2-core EPYC); 40,000 to 250,000 were the same.
CPU_BATCH_ELEMS = 250_000
#: Environment variable simulating a memory cap in MB (tests; see the module docstring).
SIMULATE_CAP_ENV = "VITRINE_SIMULATE_MEMORY_CAP_MB"
#: Settings that change how fast depths are computed, never the depths themselves.
SPEED_ONLY_SETTINGS = ("max_batch_pixels", "memory_budget_mb")

#: ``DenseConfig.levels == 0`` picks as many levels as bring the coarsest one to about this
#: longest side in pixels: coarse enough for 48 planes to cover the depth range cheaply, fine
#: enough that thin parts of the product are still seen.
COARSEST_SIDE = 200


def auto_levels(side: int) -> int:
    """Coarse-to-fine levels for depth maps whose longest side is ``side`` pixels."""
    return max(1, 1 + round(math.log2(max(side, 1) / COARSEST_SIDE)))


def for_device(cfg: DenseConfig, device: str | torch.device) -> DenseConfig:
    """The settings the dense stage really uses on ``device``.

    On the CPU the depth maps are capped at ``cfg.cpu_max_image_size``
    (``DenseConfig.max_image_size`` applies on a GPU).
    """
    kind = torch.device(device).type
    if kind == "cpu" and 0 < cfg.cpu_max_image_size < cfg.max_image_size:
        return dataclasses.replace(cfg, max_image_size=cfg.cpu_max_image_size)
    return cfg


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DenseInputs:
    """What the dense stage computes depth maps from.

    Attributes
    ----------
    ingest
        The ingested photos (working copies and masks).
    sparse
        The SfM model: registered cameras and sparse points (they bound each view's depths).
    """

    ingest: IngestResult
    sparse: SparseModel


@dataclass(frozen=True)
class DenseResult:
    """Output of the dense stage.

    Attributes
    ----------
    folder
        Folder holding one depth-map file per view.
    paths
        Depth-map files, in view order.
    views
        Per-view statistics (seconds, sources, depth range, valid fraction) by image name.
    device
        Device the depth maps were computed on.
    skipped
        Image name -> why no depth map was computed for it.
    memory_note
        What was done when memory ran short ("" when it did not).
    keys
        Image name -> fingerprint of its depth map (settings, algorithm version, photo, mask,
        pose, sources, range): what fusion downstream is keyed on.
    """

    folder: Path
    paths: tuple[Path, ...]
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "cpu"
    skipped: dict[str, str] = field(default_factory=dict)
    memory_note: str = ""
    """Empty, or what the stage did when memory ran short (smaller batches, CPU fallback)."""
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def seconds_per_view(self) -> float:
        """Median compute seconds per view (resumed views excluded), 0 when none ran."""
        secs = [v["seconds"] for v in self.views.values() if not v.get("resumed")]
        return float(np.median(secs)) if secs else 0.0

    def to_report(self, depth_map_size: int) -> dict[str, Any]:
        """report.json's ``stages.dense`` (``depth_map_size``: the long side really used)."""
        fractions = [v.get("valid_fraction", 0.0) for v in self.views.values()]
        info: dict[str, Any] = {
            "views": len(self.paths),
            "device": self.device,
            "depth_map_size": depth_map_size,
            "seconds_per_view": round(self.seconds_per_view, 3),
            "resumed_views": sum(1 for v in self.views.values() if v.get("resumed")),
            "median_valid_fraction": round(float(np.median(fractions)), 4) if fractions else 0,
            "skipped": self.skipped,
        }
        if self.memory_note:
            info["memory"] = self.memory_note
        return info


@dataclass(frozen=True, eq=False)
class View:
    """A view prepared for stereo: undistorted, downscaled, greyscale and colour."""

    name: str
    camera: CameraPose
    gray: np.ndarray = field(repr=False)  # float32 (H, W), 0..255
    rgb: np.ndarray = field(repr=False)  # uint8 (H, W, 3)
    mask: np.ndarray | None = field(default=None, repr=False)  # bool (H, W)


# --------------------------------------------------------------------------- view preparation


def pinhole_camera(cam: CameraPose, width: int, height: int) -> CameraPose:
    """The undistorted pinhole camera of ``cam`` resampled to ``width`` x ``height``."""
    sx, sy = width / cam.width, height / cam.height
    k = np.array(cam.K, np.float64)
    k = np.diag([sx, sy, 1.0]) @ k
    return CameraPose(
        cam.name, cam.R, cam.t, k, width, height, "PINHOLE", (k[0, 0], k[1, 1], k[0, 2], k[1, 2])
    )


def _distortion_maps(cam: CameraPose, target: CameraPose) -> tuple[np.ndarray, np.ndarray] | None:
    """cv2.remap maps from ``target`` (pinhole) pixels to ``cam``'s distorted pixels."""
    if cam.model in ("SIMPLE_PINHOLE", "PINHOLE") or not cam.params:
        return None
    colmap_cam = pycolmap.Camera.create_from_model_name(
        0, cam.model, float(cam.K[0, 0]), cam.width, cam.height
    )
    colmap_cam.params = list(cam.params)
    u, v = np.meshgrid(np.arange(target.width) + 0.5, np.arange(target.height) + 0.5)
    k = target.K
    x = (u - k[0, 2]) / k[0, 0]
    y = (v - k[1, 2]) / k[1, 1]
    rays = np.stack([x.ravel(), y.ravel(), np.ones(x.size)], axis=1)
    img = np.asarray(colmap_cam.img_from_cam(rays), np.float64)
    # COLMAP pixel coordinates have the top-left pixel's centre at 0.5; OpenCV's at 0.
    map_x = (img[:, 0] - 0.5).reshape(u.shape).astype(np.float32)
    map_y = (img[:, 1] - 0.5).reshape(u.shape).astype(np.float32)
    return map_x, map_y


def depth_map_size(cam: CameraPose, max_size: int) -> tuple[int, int]:
    """Depth-map width and height: the photo's, downscaled so the long side <= ``max_size``."""
    s = min(1.0, max_size / max(cam.width, cam.height))
    return max(8, round(cam.width * s)), max(8, round(cam.height * s))


def photo_mask(rec: ImageRecord, cam: CameraPose) -> np.ndarray | None:
    """The photo's product mask at the camera's size (bool), or None when it has none."""
    if rec.mask_path is None or not Path(rec.mask_path).exists():
        return None
    m = read_mask(rec.mask_path)
    if m.shape != (cam.height, cam.width):
        m = cv2.resize(m, (cam.width, cam.height), interpolation=cv2.INTER_NEAREST)
    return m > 127


#: Masks of the visual hull are kept at most this size (long side), grown by 1% of it.
HULL_MASK_SIDE = 480
#: At most this many masked photos carve the hull (every pixel's ray is checked in each).
HULL_MAX_VIEWS = 32
#: Rays are traced through the hull on a grid of at most this many pixels a side.
HULL_GRID = 64
#: Depths sampled along each ray to find where it enters and leaves the hull.
HULL_SAMPLES = 64
#: The hull is searched between the photo's own depth range divided and multiplied by this.
HULL_REACH = 2.0
#: The coarse sweep over the hull's depth keeps the spacing of the photo's own range, with at
#: most this many times the preset's hypotheses.
HULL_MAX_HYPOTHESES = 2.0


@dataclass(frozen=True)
class Hull:
    """The masked photos' grown product masks with their cameras: the product's visual hull.

    A point is inside when at least half of the photos have it in their frame and at most
    ``slack`` of those see it outside their mask (a mask that misses a sliver of the product
    in one photo does not cut it).
    """

    masks: tuple[np.ndarray, ...]
    cameras: tuple[CameraPose, ...]
    slack: int = 1

    @staticmethod
    def of(
        records: dict[str, ImageRecord], sparse: SparseModel, names: Sequence[str]
    ) -> Hull | None:
        """The hull of the photos in ``names`` that have a mask (None with fewer than 3)."""
        masks, cams = [], []
        masked = [n for n in names if records[n].mask_path is not None]
        if len(masked) > HULL_MAX_VIEWS:  # evenly through the set: a looser hull, as cheap
            masked = [masked[round(i)] for i in np.linspace(0, len(masked) - 1, HULL_MAX_VIEWS)]
        for name in masked:
            cam = sparse.cameras[name]
            mask = photo_mask(records[name], cam)
            if mask is None or not mask.any():
                continue
            h, w = mask.shape
            sc = min(1.0, HULL_MASK_SIDE / max(w, h))
            size = (max(1, round(w * sc)), max(1, round(h * sc)))
            small = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_AREA) > 0
            grow = max(1, round(0.01 * max(size)))
            small = cv2.dilate(small.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)) > 0
            masks.append(small)
            cams.append(cam)
        if len(masks) < 3:
            return None
        return Hull(tuple(masks), tuple(cams), 1 if len(masks) >= 8 else 0)


def hull_bounds(
    hull: Hull,
    k: np.ndarray,
    pose: tuple[np.ndarray, np.ndarray],
    size: tuple[int, int],
    inv_range: tuple[float, float],
    dev: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each pixel's ray enters and leaves the hull, in inverse depth.

    ``k``, ``pose`` (R, t) and ``size`` (w, h) are the reference crop's at the coarse level;
    ``inv_range`` (far, near) is sampled with :data:`HULL_SAMPLES` depths. Returns
    ``(inv_far, inv_near, hit)`` each (h, w): the interval widened by one sample, and which
    pixels' rays meet the hull at all (the others get ``inv_range``). The rays are traced on a
    grid of at most :data:`HULL_GRID` pixels a side; each pixel takes its grid cell's.
    """
    w, h = size
    g = min(1.0, HULL_GRID / max(w, h))
    if g < 1.0:
        gw, gh = max(2, round(w * g)), max(2, round(h * g))
        kg = np.diag([gw / w, gh / h, 1.0]) @ k
        lo, hi, hit = hull_bounds(hull, kg, pose, (gw, gh), inv_range, dev)
        lo, hi, hit = (
            F.interpolate(a[None, None].float(), size=(h, w), mode="nearest")[0, 0]
            for a in (lo, hi, hit)
        )
        return lo, hi, hit > 0
    r, t = (torch.as_tensor(a, dtype=torch.float32, device=dev) for a in pose)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=dev, dtype=torch.float32) + 0.5,
        torch.arange(w, device=dev, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    kinv = torch.as_tensor(np.linalg.inv(k), dtype=torch.float32, device=dev)
    rays = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3) @ kinv.T  # z = 1
    inv = torch.linspace(inv_range[0], inv_range[1], HULL_SAMPLES, device=dev)
    cam_pts = (1.0 / inv)[:, None, None] * rays[None]  # (S, P, 3) in the reference camera
    world = ((cam_pts - t) @ r).reshape(-1, 3)  # R^T (x - t), (S * P, 3)
    # the samples still inside (outside at most ``slack`` masks so far): each mask tests only
    # those, so the sweep's long reach before and behind the hull is dropped after a few masks
    alive = torch.arange(world.shape[0], device=dev)
    outside = torch.zeros(world.shape[0], dtype=torch.int16, device=dev)
    seen = torch.zeros(world.shape[0], dtype=torch.int16, device=dev)
    for mask, cam in zip(hull.masks, hull.cameras, strict=True):
        keep = outside <= hull.slack
        if 4 * int(keep.sum()) <= 3 * len(keep):  # a quarter or more are out: drop them
            alive, world, outside, seen = alive[keep], world[keep], outside[keep], seen[keep]
        mh, mw = mask.shape
        ks = np.diag([mw / cam.width, mh / cam.height, 1.0]) @ cam.K
        rc = torch.as_tensor(cam.R, dtype=torch.float32, device=dev)
        tc = torch.as_tensor(cam.t, dtype=torch.float32, device=dev)
        pc = world @ rc.T + tc
        kt = torch.as_tensor(ks, dtype=torch.float32, device=dev)
        z = pc[..., 2]
        u = (pc[..., 0] * kt[0, 0] + pc[..., 2] * kt[0, 2]) / z.clamp_min(1e-9)
        v = (pc[..., 1] * kt[1, 1] + pc[..., 2] * kt[1, 2]) / z.clamp_min(1e-9)
        ok = (z > 1e-9) & (u >= 0) & (u < mw) & (v >= 0) & (v < mh)
        m = torch.from_numpy(mask).to(dev)
        ui = u.clamp(0, mw - 1).long()
        vi = v.clamp(0, mh - 1).long()
        outside += (ok & ~m[vi, ui]).to(torch.int16)
        seen += ok.to(torch.int16)
    # inside: in most photos' frames (not a ghost near this camera that the others do not
    # see) and inside all their masks but ``slack``; (S, P), increasing inverse depth
    inside = torch.zeros(HULL_SAMPLES * h * w, dtype=torch.bool, device=dev)
    inside[alive] = (outside <= hull.slack) & (2 * seen >= len(hull.masks))
    inside = inside.reshape(HULL_SAMPLES, h * w)
    hit = inside.any(0)
    idx = torch.arange(HULL_SAMPLES, device=dev)[:, None].expand_as(inside)
    first = torch.where(inside, idx, HULL_SAMPLES).amin(0)  # the farthest inside
    last = torch.where(inside, idx, -1).amax(0)  # the nearest inside
    spacing = float(inv[1] - inv[0])
    lo = torch.where(hit, inv[first.clamp(0, HULL_SAMPLES - 1)] - spacing, inv[0])
    hi = torch.where(hit, inv[last.clamp(0, HULL_SAMPLES - 1)] + spacing, inv[-1])
    lo = lo.clamp(min=float(inv[0]))
    hi = hi.clamp(max=float(inv[-1]))
    return lo.reshape(h, w), hi.reshape(h, w), hit.reshape(h, w)


def prepare_view(rec: ImageRecord, cam: CameraPose, max_size: int) -> View:
    """Read a registered photo's working copy; undistort and downscale it (and its mask)."""
    img, _info = read_image(rec.working_path)
    if img.shape[1] != cam.width or img.shape[0] != cam.height:
        img = cv2.resize(img, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
    mask = photo_mask(rec, cam)
    w, h = depth_map_size(cam, max_size)
    target = pinhole_camera(cam, w, h)
    maps = _distortion_maps(cam, target)
    if maps is None:
        rgb = (
            img
            if (w, h) == (cam.width, cam.height)
            else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        )
        if mask is not None and (w, h) != (cam.width, cam.height):
            mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    else:
        # Blur before resampling when shrinking (anti-aliasing), then remap.
        s = w / cam.width
        src = img
        if s < 0.8:
            sigma = 0.5 / s
            src = cv2.GaussianBlur(img, (0, 0), sigma)
        rgb = cv2.remap(src, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if mask is not None:
            mask = cv2.remap(mask.astype(np.uint8), maps[0], maps[1], cv2.INTER_NEAREST) > 0
    rgb = np.ascontiguousarray(rgb, np.uint8)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return View(rec.name, target, gray, rgb, mask)


# --------------------------------------------------------------------------- geometry helpers


def _visible_points(sparse: SparseModel, name: str) -> np.ndarray:
    """World points the view observes (SfM tracks), else those projecting into it."""
    xyz = np.asarray(sparse.points.xyz, np.float64)
    if name in sparse.visibility and len(sparse.visibility[name]):
        return xyz[sparse.visibility[name]]
    cam = sparse.cameras[name]
    pc = xyz @ cam.R.T + cam.t
    front = pc[:, 2] > 1e-9
    uv = pc[front, :2] / pc[front, 2:3] * np.diag(cam.K)[:2] + cam.K[:2, 2]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
    return xyz[front][inside]


def select_sources(sparse: SparseModel, cfg: DenseConfig) -> dict[str, list[str]]:
    """Source views per reference view, best first.

    A pair scores the number of sparse points both views observe whose triangulation angle
    lies in ``[min_angle_deg, max_angle_deg]``, weighted towards 5-25 degrees (COLMAP's view
    selection idea). Without SfM tracks the points projecting into both views count.
    """
    names = sorted(sparse.cameras)
    xyz = np.asarray(sparse.points.xyz, np.float64)
    centers = {n: sparse.cameras[n].center for n in names}
    seen: dict[str, np.ndarray] = {}
    for n in names:
        if n in sparse.visibility and len(sparse.visibility[n]):
            seen[n] = np.asarray(sparse.visibility[n], np.int64)
        else:
            cam = sparse.cameras[n]
            pc = xyz @ cam.R.T + cam.t
            with np.errstate(divide="ignore", invalid="ignore"):
                uv = pc[:, :2] / pc[:, 2:3] * np.diag(cam.K)[:2] + cam.K[:2, 2]
            ok = (pc[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width)
            ok &= (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
            seen[n] = np.flatnonzero(ok)
    lo, hi = math.radians(cfg.min_angle_deg), math.radians(cfg.max_angle_deg)
    out: dict[str, list[str]] = {}
    for ref in names:
        scores = []
        for src in names:
            if src == ref:
                continue
            common = np.intersect1d(seen[ref], seen[src], assume_unique=True)
            if len(common) < 5:
                continue
            p = xyz[common]
            a = p - centers[ref]
            b = p - centers[src]
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            ang = np.arccos(np.clip(cos, -1.0, 1.0))
            med = float(np.median(ang))
            if not lo <= med <= hi:
                continue
            # weight: rises to 1 at 5 degrees, stays to 25, falls off above
            deg = np.degrees(ang)
            w = np.clip(deg / 5.0, 0, 1) * np.where(deg > 25, np.exp(-(((deg - 25) / 15) ** 2)), 1)
            scores.append((float(w.sum()), src))
        scores.sort(reverse=True)
        out[ref] = [s for _, s in scores[: cfg.num_sources]]
    return out


def depth_range(points: np.ndarray, cam: CameraPose, margin: float) -> tuple[float, float] | None:
    """Robust depth range of ``points`` in ``cam``, widened by ``margin`` on each side."""
    if len(points) < 3:
        return None
    z = points @ cam.R[2] + cam.t[2]
    z = z[z > 0]
    if len(z) < 3:
        return None
    lo, hi = np.percentile(z, [1, 99])
    span = hi - lo
    lo = max(lo - margin * span - margin * 0.1 * lo, 1e-3 * hi)
    hi = hi + margin * span + margin * 0.1 * hi
    return float(lo), float(hi)


def region_of_interest(
    view: View, points: np.ndarray, pad: float = 0.06
) -> tuple[int, int, int, int]:
    """Pixel box ``(x0, y0, x1, y1)`` the work is restricted to: the mask's or the points'."""
    h, w = view.gray.shape
    if view.mask is not None and view.mask.any():
        ys, xs = np.nonzero(view.mask)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    else:
        cam = view.camera
        pc = points @ cam.R.T + cam.t
        pc = pc[pc[:, 2] > 0]
        if len(pc) < 3:
            return 0, 0, w, h
        uv = pc[:, :2] / pc[:, 2:3] * np.diag(cam.K)[:2] + cam.K[:2, 2]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        uv = uv[inside]
        if len(uv) < 3:
            return 0, 0, w, h
        (x0, y0), (x1, y1) = np.percentile(uv, 0.5, axis=0), np.percentile(uv, 99.5, axis=0)
    px, py = pad * w, pad * h
    x0 = int(max(0, math.floor(x0 - px)))
    y0 = int(max(0, math.floor(y0 - py)))
    x1 = int(min(w, math.ceil(x1 + px)))
    y1 = int(min(h, math.ceil(y1 + py)))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return 0, 0, w, h
    return x0, y0, x1, y1


# --------------------------------------------------------------------------- the sweep


def _box(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a ``window`` x ``window`` neighbourhood (separable, borders averaged in)."""
    r = window // 2
    x = F.avg_pool2d(x, (1, window), stride=1, padding=(0, r), count_include_pad=False)
    return F.avg_pool2d(x, (window, 1), stride=1, padding=(r, 0), count_include_pad=False)


class _Sweeper:
    """Scores depth hypotheses for one reference view at one pyramid level."""

    def __init__(
        self,
        ref_gray: torch.Tensor,  # (H, W)
        ref_k: np.ndarray,
        ref_pose: tuple[np.ndarray, np.ndarray],
        srcs: Sequence[tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]],  # gray, K, R, t
        window: int,
        top_k: int,
        batch_elems: int,
        cancel: CancelToken | None = None,
    ) -> None:
        dev = ref_gray.device
        self.cancel = cancel
        self.h, self.w = ref_gray.shape
        self.window = window
        self.top_k = min(top_k, len(srcs))
        self.batch_elems = batch_elems
        self.reductions = 0
        self.cap_bytes = _simulated_cap_bytes()
        r = ref_gray[None, None]
        self.ref = r
        self.ref_mean = _box(r, window)
        var = (_box(r * r, window) - self.ref_mean**2).clamp_min(0)
        self.ref_std = var.sqrt()
        # per-source images stacked (sources may differ in size: pad to the largest)
        hs = max(s[0].shape[0] for s in srcs)
        ws = max(s[0].shape[1] for s in srcs)
        self.src = torch.zeros((len(srcs), 1, hs, ws), device=dev)
        self.src_size = torch.zeros((len(srcs), 2), device=dev)
        a_rows, b_rows = [], []
        u, v = np.meshgrid(np.arange(self.w) + 0.5, np.arange(self.h) + 0.5)
        pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)])  # (3, HW)
        r_ref, t_ref = ref_pose
        k_inv = np.linalg.inv(ref_k)
        for i, (g, k, rot, t) in enumerate(srcs):
            self.src[i, 0, : g.shape[0], : g.shape[1]] = g
            self.src_size[i, 0] = g.shape[1]
            self.src_size[i, 1] = g.shape[0]
            r_rel = rot @ r_ref.T
            t_rel = t - r_rel @ t_ref
            a_rows.append(k @ r_rel @ k_inv @ pix)
            b_rows.append(k @ t_rel)
        # x_src ~ d * A p + b  (homogeneous), A p: (S, 3, H*W), b: (S, 3)
        self.ap = torch.from_numpy(np.stack(a_rows)).float().to(dev)
        self.b = torch.from_numpy(np.stack(b_rows)).float().to(dev)
        # normalised grid_sample coordinates: x_norm = 2 u / W_padded - 1
        self.norm = torch.tensor([2.0 / ws, 2.0 / hs], device=dev)

    def score(self, depths: torch.Tensor) -> torch.Tensor:
        """Aggregated NCC (D, H, W) for per-pixel depth hypotheses ``depths`` (D, H, W)."""
        d_total = depths.shape[0]
        n_src = self.src.shape[0]
        per_hyp = n_src * self.h * self.w
        step = max(1, min(d_total, self.batch_elems // max(1, per_hyp)))
        out = []
        start = 0
        while start < d_total:
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            stop = min(d_total, start + step)
            try:
                out.append(self._score_batch(depths[start:stop]))
            except torch.OutOfMemoryError:
                if step == 1:
                    raise
                step = max(1, step // 2)
                self.batch_elems = max(per_hyp, self.batch_elems // 2)
                self.reductions += 1
                if depths.is_cuda:
                    torch.cuda.empty_cache()
                logger.warning("Out of GPU memory: continuing with %d hypotheses per batch.", step)
                continue
            start = stop
        return torch.cat(out, 0)

    def _score_batch(self, depths: torch.Tensor) -> torch.Tensor:
        b_n = depths.shape[0]
        s_n = self.src.shape[0]
        h, w = self.h, self.w
        if self.cap_bytes and b_n * s_n * h * w * BYTES_PER_ELEMENT > self.cap_bytes:
            raise torch.OutOfMemoryError(
                f"simulated memory cap: {b_n * s_n * h * w * BYTES_PER_ELEMENT / 2**20:.1f} MB "
                f"asked, {self.cap_bytes / 2**20:.1f} MB allowed ({SIMULATE_CAP_ENV})"
            )
        d = depths.reshape(1, b_n, 1, h * w)
        xyz = d * self.ap[:, None] + self.b[:, None, :, None]  # (S, B, 3, HW)
        z = xyz[:, :, 2]
        zc = z.clamp_min(1e-6)
        u = xyz[:, :, 0] / zc
        v = xyz[:, :, 1] / zc
        valid = (z > 1e-6) & (u >= 0) & (v >= 0)
        valid &= (u <= self.src_size[:, 0, None, None]) & (v <= self.src_size[:, 1, None, None])
        grid = torch.stack([u * self.norm[0] - 1, v * self.norm[1] - 1], -1)  # (S, B, HW, 2)
        grid = grid.reshape(s_n, b_n * h, w, 2)
        warped = F.grid_sample(
            self.src, grid, mode="bilinear", padding_mode="border", align_corners=False
        )  # (S, 1, B*H, W)
        warped = warped.reshape(s_n * b_n, 1, h, w)
        mean_w = _box(warped, self.window)
        var_w = (_box(warped * warped, self.window) - mean_w * mean_w).clamp_min(0)
        cross = _box(warped * self.ref, self.window) - mean_w * self.ref_mean
        ncc = cross / (var_w.sqrt() * self.ref_std + 1e-3)
        ncc = ncc.reshape(s_n, b_n, h, w)
        ncc = torch.where(valid.reshape(s_n, b_n, h, w), ncc, torch.full_like(ncc, -1.0))
        if self.top_k < s_n:
            ncc = ncc.topk(self.top_k, dim=0).values
        return ncc.mean(0)


def _crop_sweeper(
    gray: np.ndarray,
    k: np.ndarray,
    pose: tuple[np.ndarray, np.ndarray],
    srcs: Sequence[tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]],
    cfg: DenseConfig,
    dev: torch.device,
    cancel: CancelToken | None,
    box: tuple[int, int, int, int],
    batch_elems: int,
) -> _Sweeper:
    """A sweeper on the box (x0, y0, x1, y1) of a reference crop (``gray``, its ``k``)."""
    bx0, by0, bx1, by1 = box
    kb = k.copy()
    kb[0, 2] -= bx0
    kb[1, 2] -= by0
    crop = torch.from_numpy(np.ascontiguousarray(gray[by0:by1, bx0:bx1])).to(dev)
    return _Sweeper(crop, kb, pose, srcs, cfg.window, cfg.top_k, batch_elems, cancel)


#: On the CPU, the coarse sweep inside the hull runs in tiles of this side (pixels at the
#: coarse level): each is swept over only the planes its pixels' stretches of the hull reach,
#: and tiles away from the photo's mask are skipped. Small tiles also stay in the caches.
HULL_TILE = 32


def _sweep_in_tiles(
    sweeper_for: Callable[[tuple[int, int, int, int], int], _Sweeper],
    budget: dict[str, int],
    window: int,
    hyps: torch.Tensor,
    allowed: tuple[torch.Tensor, torch.Tensor] | None,
    focus: np.ndarray | None,
) -> torch.Tensor:
    """Costs (D, H, W) of the hypotheses ``hyps`` (inverse depths, D x H x W) where they count.

    Without ``focus`` and ``allowed``, one sweep over the whole crop. Tiles without a pixel of
    ``focus`` (H, W bool; None: all) are not swept: their costs are -1. With ``allowed``, each
    pixel's stretch (inverse depth lo, hi; each H, W) of fronto-parallel planes (``hyps[d]``
    constant), a pixel's costs outside its stretch do not count, so a tile is swept only over
    the planes inside the union of its stretches (the others -1 too). Each tile is swept with
    a margin of half the NCC ``window``, so every cost swept is that of one sweep over the
    whole crop. ``budget`` (``batch_elems``: what to start with, ``reductions``) is updated
    with what fitted in memory.
    """
    d_n, h, w = hyps.shape
    whole = focus is None and allowed is None
    tile = max(h, w) if whole else HULL_TILE
    cost = None if whole else torch.full((d_n, h, w), -1.0, device=hyps.device)
    r = window // 2
    every = torch.arange(d_n, device=hyps.device)  # every hypothesis, for every tile
    for ty in range(0, h, tile):
        for tx in range(0, w, tile):
            cy1, cx1 = min(h, ty + tile), min(w, tx + tile)
            if focus is not None and not focus[ty:cy1, tx:cx1].any():
                continue
            sel = every
            if allowed is not None:
                lo = float(allowed[0][ty:cy1, tx:cx1].min())
                hi = float(allowed[1][ty:cy1, tx:cx1].max())
                planes = hyps[:, 0, 0]
                sel = torch.nonzero((planes >= lo) & (planes <= hi)).flatten()
                if len(sel) == 0:
                    continue
            ex0, ey0 = max(0, tx - r), max(0, ty - r)
            ex1, ey1 = min(w, cx1 + r), min(h, cy1 + r)
            sweeper = sweeper_for((ex0, ey0, ex1, ey1), budget["batch_elems"])
            try:
                sub = hyps[:, ey0:ey1, ex0:ex1] if allowed is None else hyps[sel, ey0:ey1, ex0:ex1]
                part = sweeper.score(1.0 / sub.contiguous())
            finally:
                budget["batch_elems"] = sweeper.batch_elems
                budget["reductions"] += sweeper.reductions
            if cost is None:  # one sweep over the whole crop
                return part
            cost[sel, ty:cy1, tx:cx1] = part[:, ty - ey0 : cy1 - ey0, tx - ex0 : cx1 - ex0]
    assert cost is not None
    return cost


def _median3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median filter of an (H, W) tensor (borders replicated)."""
    p = F.pad(x[None, None], (1, 1, 1, 1), mode="replicate")
    patches = F.unfold(p, 3)  # (1, 9, H*W)
    return patches.median(dim=1).values.reshape(x.shape)


def _refine_parabola(cost: torch.Tensor, inv: torch.Tensor, step: torch.Tensor | float):
    """Best hypothesis per pixel with sub-step parabola refinement in inverse depth.

    ``cost`` and ``inv`` are (D, H, W); returns (inverse depth, score) each (H, W).
    """
    d_n = cost.shape[0]
    best = cost.argmax(0)
    score = cost.gather(0, best[None])[0]
    inv_best = inv.gather(0, best[None])[0]
    lo = (best - 1).clamp(0, d_n - 1)
    hi = (best + 1).clamp(0, d_n - 1)
    c_lo = cost.gather(0, lo[None])[0]
    c_hi = cost.gather(0, hi[None])[0]
    denom = c_lo - 2 * score + c_hi
    interior = (best > 0) & (best < d_n - 1) & (denom < -1e-6)
    offset = torch.where(interior, 0.5 * (c_lo - c_hi) / denom.where(interior, -1.0), 0.0)
    offset = offset.clamp(-0.5, 0.5)
    return inv_best + offset * step, score


def estimate_depth(
    ref: View,
    sources: Sequence[View],
    d_range: tuple[float, float],
    cfg: DenseConfig,
    device: torch.device | str,
    roi: tuple[int, int, int, int] | None = None,
    batch_elems: int = 8_000_000,
    cancel: CancelToken | None = None,
    memory: dict[str, int] | None = None,
    hull: Hull | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Depth and confidence (each float32 (H, W), 0 where unknown) of ``ref``.

    Parameters
    ----------
    ref, sources
        Prepared views; ``sources`` are compared with ``ref``.
    d_range
        Depth range searched (model units).
    cfg
        Sweep settings (levels, hypotheses, window, top-k, thresholds).
    device
        Torch device the sweep runs on.
    roi
        Pixel box ``(x0, y0, x1, y1)`` to work in; None for the whole image.
    batch_elems
        Pixels x hypotheses x sources evaluated at once (memory bound).
    cancel
        Checked between batches of hypotheses.
    memory
        Optional, updated in place: ``batch_elems`` (the batch size that fitted, for the next
        view) and ``reductions`` (how many times a batch was halved for lack of memory).
    hull
        The masks' visual hull (:class:`Hull`) for a masked ``ref``: the coarse planes span
        the hull's depth seen from ``ref`` (``d_range`` at least), and each pixel keeps only
        those inside its ray's stretch of the hull (:func:`hull_bounds`); a pixel whose ray
        misses it keeps ``d_range``. None: ``d_range`` for every pixel.

    Raises
    ------
    torch.OutOfMemoryError
        When not even one depth hypothesis at a time fits in memory.
    """
    dev = torch.device(device)
    h_full, w_full = ref.gray.shape
    x0, y0, x1, y1 = roi or (0, 0, w_full, h_full)
    levels = cfg.levels if cfg.levels > 0 else auto_levels(max(h_full, w_full))
    inv_far, inv_near = 1.0 / d_range[1], 1.0 / d_range[0]
    own_far, own_near = inv_far, inv_near
    if hull is not None:
        # each pixel sweeps where its ray lies inside the hull, searched over a wider range
        inv_far, inv_near = 1.0 / (HULL_REACH * d_range[1]), HULL_REACH / d_range[0]
    inv = None
    step = 0.0
    allowed = None
    score = None
    for level in reversed(range(levels)):
        s = 0.5**level
        # reference crop at this level
        rw, rh = max(8, round((x1 - x0) * s)), max(8, round((y1 - y0) * s))
        sx, sy = rw / (x1 - x0), rh / (y1 - y0)
        crop = ref.gray[y0:y1, x0:x1]
        g = (
            crop
            if (sx, sy) == (1.0, 1.0)
            else cv2.resize(crop, (rw, rh), interpolation=cv2.INTER_AREA)
        )
        k = ref.camera.K.copy()
        k[0, 2] -= x0
        k[1, 2] -= y0
        k = np.diag([sx, sy, 1.0]) @ k
        srcs = []
        for src in sources:
            sw, sh = max(8, round(src.camera.width * s)), max(8, round(src.camera.height * s))
            sg = (
                src.gray
                if s == 1.0
                else cv2.resize(src.gray, (sw, sh), interpolation=cv2.INTER_AREA)
            )
            ks = np.diag([sw / src.camera.width, sh / src.camera.height, 1.0]) @ src.camera.K
            srcs.append((torch.from_numpy(sg).to(dev), ks, src.camera.R, src.camera.t))
        sweeper_for = functools.partial(
            _crop_sweeper, g, k, (ref.camera.R, ref.camera.t), srcs, cfg, dev, cancel
        )
        if inv is None:
            n = cfg.num_depths
            if hull is not None:
                # planes over the hull's depth seen from here; each pixel keeps only those
                # inside its own ray's stretch of the hull (its own range where it misses)
                pose = (ref.camera.R, ref.camera.t)
                lo, hi, hit = hull_bounds(hull, k, pose, (rw, rh), (inv_far, inv_near), dev)
                lo = torch.where(hit, lo, own_far)
                hi = torch.where(hit, hi, own_near)
                if hit.any():
                    inv_far = min(own_far, float(torch.quantile(lo[hit], 0.01)))
                    inv_near = max(own_near, float(torch.quantile(hi[hit], 0.99)))
                else:
                    inv_far, inv_near = own_far, own_near
                span = (inv_near - inv_far) / (own_near - own_far)
                n = min(math.ceil(n * span), math.ceil(HULL_MAX_HYPOTHESES * n))
                allowed = (lo, hi)
            step = (inv_near - inv_far) / (n - 1)
            hyps = torch.linspace(inv_far, inv_near, n, device=dev)[:, None, None]
            hyps = hyps.expand(n, rh, rw)
        else:
            inv = F.interpolate(
                inv[None, None], size=(rh, rw), mode="bilinear", align_corners=False
            )[0, 0]
            n = cfg.refine_depths
            new_step = 3.0 * step / (n - 1)
            offs = (torch.arange(n, device=dev, dtype=torch.float32) - (n - 1) / 2) * new_step
            hyps = (inv[None] + offs[:, None, None]).clamp(inv_far * 0.5, inv_near * 2.0)
            step = new_step
        hyps = hyps.contiguous()
        coarse_hull = allowed is not None and level == levels - 1
        # tiles on the CPU only: a GPU sweeps the whole crop at once faster
        tiled = coarse_hull and dev.type == "cpu"
        focus = None
        if tiled and ref.mask is not None:
            # what the finest level keeps, with the reach of the finer levels' upsampling,
            # medians and NCC windows: about 1 + (window // 2 + 1) pixels of this level
            m = ref.mask[y0:y1, x0:x1].astype(np.uint8)
            m = cv2.resize(m, (rw, rh), interpolation=cv2.INTER_AREA) > 0
            grow = np.ones((2 * (cfg.window // 2 + 3) + 1,) * 2, np.uint8)
            focus = cv2.dilate(m.astype(np.uint8), grow) > 0
        budget = {"batch_elems": batch_elems, "reductions": 0}
        try:
            cost = _sweep_in_tiles(
                sweeper_for, budget, cfg.window, hyps, allowed if tiled else None, focus
            )
        finally:
            batch_elems = budget["batch_elems"]  # what fitted: the finer levels start there
            if memory is not None:
                memory["batch_elems"] = batch_elems
                memory["reductions"] = memory.get("reductions", 0) + budget["reductions"]
        if coarse_hull:
            assert allowed is not None
            outside = (hyps < allowed[0][None]) | (hyps > allowed[1][None])
            cost = cost.masked_fill(outside, -1.0)
        inv, score = _refine_parabola(cost, hyps, step)
        if level > 0:
            inv = _median3(inv)
        del cost, hyps
    assert score is not None and inv is not None
    depth_c = (1.0 / inv.clamp_min(1e-9)).cpu().numpy()
    conf_c = score.clamp(0, 1).cpu().numpy()
    # texture gate at the finest level
    r = torch.from_numpy(np.ascontiguousarray(ref.gray[y0:y1, x0:x1])).to(dev)[None, None]
    mean = _box(r, cfg.window)
    std = (_box(r * r, cfg.window) - mean**2).clamp_min(0).sqrt()[0, 0].cpu().numpy()
    in_range = (depth_c >= 1.0 / inv_near) & (depth_c <= 1.0 / inv_far)
    keep = (conf_c >= cfg.min_confidence) & (std >= cfg.min_texture) & in_range
    if ref.mask is not None:
        keep &= ref.mask[y0:y1, x0:x1]
    if cfg.backdrop_rim and ref.mask is None:  # a mask already bounds the product
        reach = 2 * (cfg.window // 2) * 2 ** (levels - 1)
        keep &= ~backdrop_rim(ref.rgb[y0:y1, x0:x1], keep, reach)
    depth = np.zeros((h_full, w_full), np.float32)
    conf = np.zeros((h_full, w_full), np.float32)
    depth[y0:y1, x0:x1] = np.where(keep, depth_c, 0)
    conf[y0:y1, x0:x1] = np.where(keep, conf_c, 0)
    return depth, conf


#: A rim pixel is the backdrop's when its colour is this much closer (RGB levels, 0..441) to
#: the backdrop beside it than to the product near it: clearly, not within JPEG noise.
RIM_MARGIN = 20.0
#: The backdrop is plain when the robust spread (RGB levels) of its colours along the region's
#: frame is at most this. Plain cloth, paper or a studio sweep under uneven light spread 2 to
#: 22 on the dev sets; cluttered rooms and tables 30 to 180.
RIM_PLAIN_SPREAD = 25.0


def backdrop_rim(rgb: np.ndarray, valid: np.ndarray, reach: int) -> np.ndarray:
    """Pixels with depth that are the backdrop's colour beside the backdrop.

    NCC windows straddling the product's outline give the plain backdrop beside it the
    product's depth, up to the coarsest level's window reach outside the outline; fusion keeps
    such a fringe, as it is consistent between nearby views (a dark skirt round a product on
    black cloth). The backdrop is what the region's frame shows without depth; when it is
    plain (:data:`RIM_PLAIN_SPREAD`) its colour is the median of those frame pixels, and every
    pixel without depth within three robust spreads of it (at least :data:`RIM_MARGIN`) is
    backdrop, also where it shows through a gap of the product. A plain patch of the product
    has no depth either but keeps its own colour, so its edge is left alone. A pixel with
    depth within ``reach`` of backdrop is dropped when its colour is clearly
    (:data:`RIM_MARGIN`) closer to the nearest backdrop pixel's than to the product's around it
    (the depth pixels farther in, averaged over ``reach``) and it passes for backdrop itself
    (within the spread that made the backdrop). A shaded edge of the product (the dark green
    foot of a bottle on black cloth) keeps its depth; surface of the backdrop's own colour
    right at the outline goes with the fringe: the windows cannot tell the two apart.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8 colour of the region.
    valid
        ``(H, W)`` bool: pixels with depth.
    reach
        Width of the rim in pixels.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool: the pixels to drop.
    """
    none = np.zeros_like(valid)
    if reach <= 0 or valid.all() or not valid.any():
        return none
    raw = rgb.astype(np.float32)
    image = cv2.GaussianBlur(raw, (0, 0), 1.0)
    frame = np.zeros_like(valid)
    frame[[0, -1], :] = frame[:, [0, -1]] = True
    frame &= ~valid
    if frame.sum() < 0.25 * 2 * sum(valid.shape):  # the frame is mostly product or surface
        return none
    colours = image[frame]
    centre = np.median(colours, axis=0)
    spread = np.linalg.norm(colours - centre, axis=1)
    sigma = 1.4826 * float(np.median(spread))
    if sigma > RIM_PLAIN_SPREAD:  # clutter or print, not a plain backdrop: no such fringe
        return none
    limit = max(RIM_MARGIN, 3.0 * sigma)
    backdrop = ~valid & (np.linalg.norm(image - centre, axis=-1) <= limit)
    distance = cv2.distanceTransform((~backdrop).astype(np.uint8), cv2.DIST_L2, 3)
    rim = valid & (distance <= reach)
    inner = valid & ~rim
    if not rim.any() or not inner.any():
        return none
    weight = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), reach)
    local = cv2.GaussianBlur(image * inner[..., None], (0, 0), reach)
    product = np.where(
        (weight > 0.05)[..., None],
        local / np.maximum(weight, 1e-6)[..., None],
        nearest_colour(image, inner),
    )
    nearest = nearest_index(backdrop)  # one distance transform for both colours below
    to_product = np.linalg.norm(image - product, axis=-1)
    to_backdrop = np.linalg.norm(image - image.reshape(-1, 3)[nearest], axis=-1)
    # and the pixel itself passes for backdrop (unblurred: right at the outline too)
    like_backdrop = np.linalg.norm(raw - raw.reshape(-1, 3)[nearest], axis=-1) <= limit
    return rim & like_backdrop & (to_backdrop + RIM_MARGIN < to_product)


# --------------------------------------------------------------------------- the stage


def _simulated_cap_bytes() -> int:
    """The simulated memory cap in bytes (0: none); see the module docstring."""
    text = os.environ.get(SIMULATE_CAP_ENV, "").strip()
    try:
        return int(float(text) * 2**20) if text else 0
    except ValueError:
        logger.warning("Ignoring %s=%r: not a number of MB.", SIMULATE_CAP_ENV, text)
        return 0


def _batch_elems(cfg: DenseConfig, device: torch.device) -> int:
    if cfg.max_batch_pixels > 0:
        return cfg.max_batch_pixels
    if cfg.memory_budget_mb > 0:
        return max(1, int(cfg.memory_budget_mb * 2**20 / BYTES_PER_ELEMENT))
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # about 14 float32 temporaries per evaluated element; keep half the free memory spare
        return int(max(1_000_000, min(free * 0.5 / (4 * 14), 400_000_000)))
    return CPU_BATCH_ELEMS


def _file_digest(path: Path | None) -> str | None:
    """Content hash of a mask file: a repainted mask must recompute the view's depths."""
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def _fingerprint(
    cfg: DenseConfig,
    rec: ImageRecord,
    cam: CameraPose,
    srcs: list[str],
    d_range: tuple[float, float],
) -> str:
    settings = dataclasses.asdict(cfg)
    for name in SPEED_ONLY_SETTINGS:  # a smaller batch gives the same depths
        settings.pop(name, None)
    data = {
        "v": ALGORITHM_VERSION,
        "cfg": settings,
        "image": rec.sha256 or str(rec.working_path),
        "mask": _file_digest(rec.mask_path),
        "pose": [np.round(cam.R, 9).tolist(), np.round(cam.t, 9).tolist(), list(cam.params)],
        "sources": srcs,
        "range": [round(d_range[0], 9), round(d_range[1], 9)],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _preview_points(dm: DepthMap, limit: int = PREVIEW_POINTS, min_conf: float = 0.5) -> PointCloud:
    """A subsample of a depth map's confident pixels as world points (live preview only)."""
    ok = (dm.depth > 0) & (dm.confidence >= min_conf)
    ys, xs = np.nonzero(ok)
    if len(xs) == 0:
        return PointCloud.empty()
    if len(xs) > limit:
        idx = np.random.default_rng(0).choice(len(xs), limit, replace=False)
        ys, xs = ys[idx], xs[idx]
    k = dm.camera.K
    z = dm.depth[ys, xs].astype(np.float64)
    pc = np.stack([(xs + 0.5 - k[0, 2]) / k[0, 0] * z, (ys + 0.5 - k[1, 2]) / k[1, 1] * z, z], 1)
    world = (pc - dm.camera.t) @ dm.camera.R
    return PointCloud(world.astype(np.float32), dm.rgb[ys, xs])


def run(
    inputs: DenseInputs,
    cfg: DenseConfig,
    out_dir: Path,
    *,
    device: str = "cpu",
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> DenseResult:
    """Compute a depth map for every registered view into ``out_dir`` (resumable).

    Parameters
    ----------
    inputs
        The ingested photos and the SfM model (:class:`DenseInputs`).
    cfg
        Dense settings (:func:`for_device` applies the CPU's working size).
    out_dir
        Folder of the depth maps, one file per view; a view whose file is there with the same
        settings is not computed again.
    device
        ``"cpu"`` or ``"cuda"`` (resolved once by the caller).
    progress, cancel
        ``dense`` events per view; the token is checked between views and batches.

    Raises
    ------
    ReconstructionError
        When no view could get a depth map (too few placed photos or sparse points).
    Cancelled
        Between views and between batches of depth hypotheses when the user cancels.
    """
    cancel = cancel or CancelToken()
    ingest, sparse = inputs.ingest, inputs.sparse
    dev = torch.device(device)
    cfg = for_device(cfg, dev)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = {r.name: r for r in ingest.images}
    names = [n for n in sorted(sparse.cameras) if n in records]
    if len(names) < 2:
        raise ReconstructionError(
            "Dense surface needs at least two placed photos that overlap; only "
            f"{len(names)} could be placed. Add photos taken from nearby angles."
        )
    sources = select_sources(sparse, cfg)
    memory = {"batch_elems": _batch_elems(cfg, dev), "reductions": 0}
    cpu_views: list[str] = []
    cache: OrderedDict[str, View] = OrderedDict()
    cache_size = max(8, 2 * cfg.num_sources + 2)

    def view(name: str) -> View:
        if name in cache:
            cache.move_to_end(name)
            return cache[name]
        v = prepare_view(records[name], sparse.cameras[name], cfg.max_image_size)
        cache[name] = v
        while len(cache) > cache_size:
            cache.popitem(last=False)
        return v

    paths: list[Path] = []
    stats: dict[str, dict[str, Any]] = {}
    keys: dict[str, str] = {}
    skipped: dict[str, str] = {}
    n = len(names)
    progress(ProgressEvent(STAGE, 0, n, f"depth maps on {dev.type.upper()}"))
    hull = Hull.of(records, sparse, names)
    for i, name in enumerate(names):
        cancel.raise_if_cancelled()
        srcs = sources.get(name, [])
        cam = sparse.cameras[name]
        pts = _visible_points(sparse, name)
        d_range = depth_range(pts, cam, cfg.depth_margin)
        if not srcs or d_range is None:
            reason = (
                "no other photo sees the same part of the product at a useful angle"
                if not srcs
                else "too few sparse points seen by this photo"
            )
            skipped[name] = reason
            logger.info("No depth map for %s: %s.", name, reason)
            progress(ProgressEvent(STAGE, i + 1, n, f"skipped {name}"))
            continue
        path = depth_map_path(out_dir, name)
        key = _fingerprint(cfg, records[name], cam, srcs, d_range)
        keys[name] = key
        if path.exists():
            try:
                dm, meta = load_depth_map(path)
                if meta.get("key") == key:
                    paths.append(path)
                    stats[name] = {**meta.get("stats", {}), "resumed": True}
                    progress(
                        ProgressEvent(STAGE, i + 1, n, f"{name} (resumed)", _preview_points(dm))
                    )
                    continue
            except ValueError as exc:
                logger.info("Recomputing %s: %s", name, exc)
        t0 = time.perf_counter()
        ref = view(name)
        src_views = [view(s) for s in srcs]
        roi = region_of_interest(ref, pts)
        try:
            with torch.inference_mode():
                depth, conf = estimate_depth(
                    ref,
                    src_views,
                    d_range,
                    cfg,
                    dev,
                    roi,
                    memory["batch_elems"],
                    cancel,
                    memory,
                    hull if ref.mask is not None else None,
                )
        except torch.OutOfMemoryError as exc:
            if dev.type != "cuda":
                raise _not_enough_memory(name, ref, len(srcs), roi) from exc
            # Not even one hypothesis fits on the GPU: this view goes to the CPU (slower).
            torch.cuda.empty_cache()
            logger.warning("Out of GPU memory for %s: computing this depth map on the CPU.", name)
            cpu_views.append(name)
            with torch.inference_mode():
                depth, conf = estimate_depth(
                    ref,
                    src_views,
                    d_range,
                    cfg,
                    "cpu",
                    roi,
                    _batch_elems(cfg, _CPU),
                    cancel,
                    hull=hull if ref.mask is not None else None,
                )
        origin = np.where(depth > 0, ORIGIN_MVS, ORIGIN_NONE).astype(np.uint8)
        dm = DepthMap(name, ref.camera, depth, conf, ref.rgb, ref.mask, origin)
        secs = time.perf_counter() - t0
        valid = float((depth > 0).mean())
        view_stats = {
            "seconds": round(secs, 3),
            "sources": srcs,
            "depth_range": [round(d_range[0], 6), round(d_range[1], 6)],
            "valid_fraction": round(valid, 4),
            "size": [ref.camera.width, ref.camera.height],
            "roi": list(roi),
        }
        save_depth_map(path, dm, {"key": key, "stats": view_stats})
        paths.append(path)
        stats[name] = view_stats
        logger.info(
            "Depth map %s: %.1f%% of pixels, %.2f s (%d sources).",
            name,
            100 * valid,
            secs,
            len(srcs),
        )
        progress(ProgressEvent(STAGE, i + 1, n, f"depth map {name}", _preview_points(dm)))
    if not paths:
        raise ReconstructionError(
            "No depth map could be computed: no two placed photos see the product from angles "
            "that differ enough. Add photos taken while walking around the product."
        )
    notes = []
    if memory["reductions"]:
        notes.append(
            f"Memory ran short during the depth maps: continued with smaller batches "
            f"({memory['reductions']} times halved; same result, only slower)."
        )
    if cpu_views:
        notes.append(
            f"{len(cpu_views)} depth maps did not fit in GPU memory and were computed on the "
            f"CPU ({', '.join(cpu_views[:5])}{' ...' if len(cpu_views) > 5 else ''})."
        )
    for note in notes:
        logger.warning("%s", note)
    return DenseResult(out_dir, tuple(paths), stats, dev.type, skipped, " ".join(notes), keys)


_CPU = torch.device("cpu")


def _not_enough_memory(
    name: str, ref: View, n_sources: int, roi: tuple[int, int, int, int]
) -> ReconstructionError:
    """The error when not even one depth hypothesis of view ``name`` fits in memory."""
    x0, y0, x1, y1 = roi
    need = (x1 - x0) * (y1 - y0) * max(1, n_sources) * BYTES_PER_ELEMENT / 2**20
    width, height = ref.camera.width, ref.camera.height
    return ReconstructionError(
        f"Not enough memory for the depth map of {name} ({width} x {height} px): even one depth "
        f"hypothesis at a time needs about {need:.0f} MB. Close other programs or use the preview "
        "preset (smaller depth maps); finished stages are kept."
    )
