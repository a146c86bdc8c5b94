"""Benchmark: our SfM stage against plain pycolmap defaults on the same images, in one run.

For each scene: ingest + our SfM stage (standard preset), and plain pycolmap defaults
(extract_features + match_exhaustive + incremental_mapping at full resolution, nothing else),
each repeated ``--repeats`` times; medians of the seconds, and both scored against ground truth
(median rotation error in degrees, median camera-centre error in % of the object size).

    python bench/bench_sfm.py --repeats 3 [--scenes bottle box lowtex temple_sparse_ring ...]

Real sets without ground-truth cameras (kitchen_lego, et) are scored by photos placed only.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import statistics
import sys
import tempfile
import time
import zlib  # noqa: F401  (before pycolmap: see engine/__init__.py)
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pycolmap  # noqa: E402

from engine.config import preset  # noqa: E402
from engine.geometry import pose_errors  # noqa: E402
from engine.stages import ingest, sfm  # noqa: E402
from engine.synthetic import read_cameras_json, render_scene  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
SYNTHETIC = ("bottle", "box", "lowtex")


def available(name: str) -> bool:
    """Whether scene ``name`` can run here (synthetic, or a dataset present in DATASETS); says
    why not on stderr."""
    if name in SYNTHETIC or (DATASETS / name / "images").is_dir():
        return True
    print(f"skip {name}: not found in {DATASETS}", file=sys.stderr)
    return False


def scene_inputs(name: str, tmp: Path, size: tuple[int, int]) -> tuple[Path, dict, float]:
    """(image folder, ground-truth cameras by name, object size) of a scene."""
    if name in SYNTHETIC:
        w, h = size
        scene = render_scene(
            tmp / name, name, n_azimuth=12, elevations_deg=(15.0, 35.0, 55.0), width=w, height=h
        )
        return scene.root / "images", {c.name: c for c in scene.cameras}, scene.object_size
    root = DATASETS / name
    if not (root / "cameras.json").is_file():  # kitchen_lego, et: photos placed only
        return root / "images", {}, 1.0
    data = json.loads((root / "cameras.json").read_text())
    box = data.get("bbox") or data.get("object_bbox_estimate")
    size = float(np.linalg.norm(np.subtract(box[1], box[0]))) if box else 1.0
    truth = {c.name: c for c in read_cameras_json(root / "cameras.json")}
    return root / "images", truth, size


def score(cameras: dict, truth: dict, size: float, n: int) -> dict:
    if len(cameras) < 3 or not truth:
        return {"registered": f"{len(cameras)}/{n}", "rot_deg": None, "centre_pct": None}
    err = pose_errors(cameras, truth)
    return {
        "registered": f"{len(cameras)}/{n}",
        "rot_deg": round(err.median_rotation_deg, 3),
        "centre_pct": round(100 * err.median_center_error / size, 3),
    }


def run_ours(images: Path, work: Path) -> tuple[float, dict, dict]:
    shutil.rmtree(work, ignore_errors=True)
    cfg = preset("standard")
    t0 = time.perf_counter()
    rec = ingest.run([images], cfg.ingest, work / "work")
    t1 = time.perf_counter()
    model = sfm.run(rec, cfg.sfm, work)
    t2 = time.perf_counter()
    mappings = [f"{a['name']}/{a['mapper']}:{a['registered']}" for a in model.attempts]
    return (
        t2 - t0,
        {
            "ingest": t1 - t0,
            "sfm": t2 - t1,
            "attempts": " ".join(mappings),
            "kept": model.check.get("mapper"),
            "agreement": model.check.get("agreement"),
        },
        model.cameras,
    )


def run_defaults(images: Path, work: Path) -> tuple[float, dict]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db = work / "database.db"
    t0 = time.perf_counter()
    pycolmap.extract_features(db, images)
    pycolmap.match_exhaustive(db)
    recs = pycolmap.incremental_mapping(db, images, work / "sparse")
    elapsed = time.perf_counter() - t0
    best = max(recs.values(), key=lambda r: r.num_reg_images()) if recs else None
    return elapsed, sfm.cameras_from_reconstruction(best) if best else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--scenes",
        nargs="+",
        default=[
            *SYNTHETIC,
            "temple_sparse_ring",
            "dino_sparse_ring",
            "lego",
            "kitchen_lego",
            "et",
            "socketed_axe",
        ],
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="800x600", help="synthetic photo size, WxH")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pycolmap.logging.minloglevel = 2
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name in args.scenes:
            if not available(name):
                continue
            wh = (int(args.size.split("x")[0]), int(args.size.split("x")[1]))
            images, truth, size = scene_inputs(name, tmp, wh)
            n = len(list(images.iterdir()))
            ours_t, defaults_t, ratio = [], [], []
            for _ in range(args.repeats):
                # Side by side in one loop, so both see the same machine load.
                t_ours, phases, cams_ours = run_ours(images, tmp / "ours")
                t_def, cams_def = run_defaults(images, tmp / "defaults")
                ours_t.append(t_ours)
                defaults_t.append(t_def)
                ratio.append(t_ours / t_def)
            row = {
                "scene": name,
                "images": n,
                "ours_s": round(statistics.median(ours_t), 1),
                "defaults_s": round(statistics.median(defaults_t), 1),
                "ratio": round(statistics.median(ratio), 2),
                "ours": score(cams_ours, truth, size, n),
                "defaults": score(cams_def, truth, size, n),
                "ours_attempts": phases["attempts"],
                "ours_kept": phases["kept"],
                "ours_agreement": phases["agreement"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(
        f"Machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"pycolmap {pycolmap.__version__}, {args.repeats} runs, medians"
    )
    print(
        "| scene | images | ours s | pycolmap defaults s | ratio | ours reg / rot deg / centre % "
        "| defaults reg / rot deg / centre % | our mappings (kept; agreement) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        o, d = r["ours"], r["defaults"]
        print(
            f"| {r['scene']} | {r['images']} | {r['ours_s']} | {r['defaults_s']} | {r['ratio']} | "
            f"{o['registered']} / {o['rot_deg']} / {o['centre_pct']} | "
            f"{d['registered']} / {d['rot_deg']} / {d['centre_pct']} | "
            f"{r['ours_attempts']} ({r['ours_kept']}; {r['ours_agreement']}) |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
