"""Benchmark: products per hour of ``main.py batch``, the local worker pool against Ray local.

Renders a catalogue of small synthetic products (bottles with different seeds), then for each
mode runs :func:`engine.catalogue.run_catalogue` into a fresh site and times it: the local pool
(worker processes, ``--workers`` or the default from cores and memory) and a Ray instance
started on this machine (``--ray local``; needs Ray). Recorded: wall seconds, products per hour,
the seconds of each product's run, the load average before the run, and a second run of the
same command (nothing to do: how fast a finished catalogue is checked).

    python bench/bench_catalogue.py --products 4 [--views tiny|test] [--modes local ray] \
        [--workers N] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model  # noqa: E402

from engine.catalogue import run_catalogue, usable_cpus  # noqa: E402
from engine.config import preset  # noqa: E402
from engine.synthetic import render_scene  # noqa: E402

VIEWS = {
    # 16 photos of 320x240: about half a minute a product on 2 cores
    "tiny": {"n_azimuth": 8, "elevations_deg": (20.0, 45.0), "width": 320, "height": 240},
    # the test suite's scenes: 36 photos of 800x600
    "test": {"n_azimuth": 12, "elevations_deg": (15.0, 35.0, 55.0), "width": 800, "height": 600},
}


def make_catalogue(root: Path, n: int, views: dict) -> Path:
    """``n`` bottles, one folder each, different textures and camera jitter (seeds)."""
    for i in range(n):
        scene = render_scene(root / "_render" / str(i), "bottle", seed=i, **views)
        dst = root / "catalogue" / f"bottle-{i:03d}"
        dst.mkdir(parents=True)
        for photo in scene.image_dir.iterdir():
            shutil.copy(photo, dst / photo.name)
    shutil.rmtree(root / "_render")
    return root / "catalogue"


def run_mode(catalogue: Path, site: Path, mode: str, workers: int | None) -> dict:
    """One timed batch and its no-op rerun."""
    cfg = preset("standard")
    cfg = cfg.replace(depth_prior=dataclasses.replace(cfg.depth_prior, enabled=False))
    ray = "local" if mode == "ray" else None
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = run_catalogue(catalogue, site, cfg, workers=workers, ray_address=ray)
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = run_catalogue(catalogue, site, cfg, workers=workers, ray_address=ray)
    rerun = time.perf_counter() - t0
    finished = [p for p in result.products if p["status"] == "finished"]
    return {
        "mode": mode,
        "products": len(result.products),
        "finished": len(finished),
        "wall_s": round(wall, 1),
        "products_per_hour": round(len(finished) / wall * 3600, 1),
        "product_s": [p.get("seconds") for p in result.products],
        "rerun_s": round(rerun, 2),
        "rerun_computed": len(again.computed),
        "load_before": round(load, 2),
    }


def markdown(rows: list[dict]) -> str:
    """The table for BENCHMARKS.md."""
    lines = [
        "| mode | products | finished | wall s | products/hour | per product s | rerun s | "
        "load before |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = ", ".join(f"{s:.0f}" for s in r["product_s"] if s is not None)
        lines.append(
            f"| {r['mode']} | {r['products']} | {r['finished']} | {r['wall_s']} | "
            f"{r['products_per_hour']} | {per} | {r['rerun_s']} | {r['load_before']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=4)
    parser.add_argument("--views", choices=sorted(VIEWS), default="tiny")
    parser.add_argument("--modes", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import pycolmap

    pycolmap.logging.minloglevel = 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_catalogue_") as tmp:
        catalogue = make_catalogue(Path(tmp), args.products, VIEWS[args.views])
        for mode in args.modes:
            rows.append(run_mode(catalogue, Path(tmp) / f"site-{mode}", mode, args.workers))
            print(json.dumps(rows[-1]), flush=True)
    machine = f"{cpu_model()}, {usable_cpus()} cores, Python {platform.python_version()}"
    print(f"\n{machine}; views {args.views}\n")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
