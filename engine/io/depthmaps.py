"""Depth maps on disk: one compressed ``.npz`` per view, written atomically.

The dense, depth-prior and fuse stages exchange :class:`engine.types.DepthMap` objects through
these files, so a run resumes view by view and the fuse stage can stream views from disk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from engine.export._atomic import atomic_open
from engine.types import CameraPose, DepthMap

FORMAT_VERSION = 1


def depth_map_path(folder: Path, name: str) -> Path:
    """File of image ``name``'s depth map in ``folder`` (safe for names with sub-folders)."""
    stem = Path(name).name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return folder / f"{stem}.{digest}.npz"


def save_depth_map(path: Path, dm: DepthMap, meta: dict | None = None) -> None:
    """Write ``dm`` (and a JSON-serialisable ``meta`` dict) to ``path`` atomically."""
    cam = dm.camera
    header = {
        "version": FORMAT_VERSION,
        "name": dm.name,
        "camera": {
            "name": cam.name,
            "width": cam.width,
            "height": cam.height,
            "model": cam.model,
            "params": list(cam.params),
        },
        "meta": meta or {},
    }
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8),
        "R": np.asarray(cam.R, np.float64),
        "t": np.asarray(cam.t, np.float64),
        "K": np.asarray(cam.K, np.float64),
        "depth": np.asarray(dm.depth, np.float32),
        "confidence": np.asarray(dm.confidence, np.float32),
        "rgb": np.asarray(dm.rgb, np.uint8),
    }
    if dm.mask is not None:
        arrays["mask"] = np.asarray(dm.mask, bool)
    if dm.origin is not None:
        arrays["origin"] = np.asarray(dm.origin, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def load_depth_map(path: Path) -> tuple[DepthMap, dict]:
    """Read a file written by :func:`save_depth_map`; returns the map and its ``meta`` dict.

    Raises
    ------
    ValueError
        When the file is not a readable depth map of this format version (callers recompute).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode("utf-8"))
            if header.get("version") != FORMAT_VERSION:
                raise ValueError(f"{path.name}: depth map format {header.get('version')}")
            c = header["camera"]
            cam = CameraPose(
                name=c["name"],
                R=data["R"],
                t=data["t"],
                K=data["K"],
                width=int(c["width"]),
                height=int(c["height"]),
                model=c["model"],
                params=tuple(c["params"]),
            )
            dm = DepthMap(
                name=header["name"],
                camera=cam,
                depth=data["depth"],
                confidence=data["confidence"],
                rgb=data["rgb"],
                mask=data["mask"] if "mask" in data else None,
                origin=data["origin"] if "origin" in data else None,
            )
            return dm, dict(header.get("meta", {}))
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise ValueError(f"unreadable depth map {path.name}: {exc}") from exc
