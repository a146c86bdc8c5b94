"""Benchmark: the dense stage (plane-sweep MVS, optional depth prior, fusion) on synthetic scenes.

For each scene: ingest + SfM once (standard preset; timed but not what is measured here), the
SfM cameras aligned to the ground truth once (similarity from ``align_cameras``), then each
variant repeated ``--repeats`` times with its work folders deleted before every repeat (nothing
is resumed):

- ``mvs``: dense.run, then fuse.run.
- ``mvs+tiny prior``: dense.run, depth_prior.run with the tiny random-weight Depth-Anything model
  of tests/tiny_models.py, fuse.run. Its depth is noise: this variant measures the prior's cost
  and that it does no harm, never what real weights would bring.
- ``mvs+prior (real weights)``: as above with the model folder given by ``--depth-model``.
- ``mvs, backdrop rim kept`` (``--variants mvs norim``): ``mvs`` with ``dense.backdrop_rim``
  off, to see what dropping the backdrop's fringe does to accuracy.

Seconds are medians over the repeats; accuracy is scored on the last repeat's cloud (the stages
are deterministic) after the similarity: precision, recall (completeness) and F-score against
the scene's surface samples at 2 mm, 5 mm and 1% of the object size, the fraction of points
outside the object's box grown by 10% (floaters), and the fraction of points fused from the prior.

With a CUDA GPU present and ``--device auto`` every variant runs on the GPU and on the CPU, side
by side in each repeat, and a GPU/CPU table follows.

    python bench/bench_dense.py --repeats 3 [--scenes bottle box lowtex] [--device auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pycolmap  # noqa: E402
import torch  # noqa: E402
from _machine import cpu_model  # noqa: E402

from engine.config import preset  # noqa: E402
from engine.device import resolve_device  # noqa: E402
from engine.geometry import (  # noqa: E402
    align_cameras,
    outside_box_fraction,
    pose_errors,
    surface_scores,
)
from engine.models import load_depth_model  # noqa: E402
from engine.stages import dense, depth_prior, fuse, ingest, sfm  # noqa: E402
from engine.synthetic import render_scene  # noqa: E402
from tests.tiny_models import INPUT, make_tiny_depth_model  # noqa: E402

SYNTHETIC = ("bottle", "box", "lowtex")
MVS, TINY, REAL = "mvs", "mvs+tiny prior", "mvs+prior (real weights)"
NO_RIM = "mvs, backdrop rim kept"
#: --variants names -> table labels (``norim``: DenseConfig.backdrop_rim off, for the side by side)
VARIANTS = {"mvs": MVS, "tiny": TINY, "norim": NO_RIM}
TINY_NOTE = (
    "mvs+tiny prior uses a tiny random-weight Depth-Anything model (tests/tiny_models.py): its "
    "depth is noise, so it cannot improve the cloud; the row measures the prior stage's cost and "
    "that it does no harm."
)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{cpu_model()}, {os.cpu_count()} logical cores"


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run_variant(images, model, cfg, work: Path, device: str, estimator) -> tuple[dict, object]:
    """One repeat of one variant from scratch; returns (timings and counts, fused cloud)."""
    shutil.rmtree(work, ignore_errors=True)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = dense.run(dense.DenseInputs(images, model), cfg.dense, work / "dense", device=device)
    t1 = time.perf_counter()
    maps = list(res.paths)
    prior_filled, prior_reasons = None, None
    if estimator is not None:
        prior = depth_prior.run(maps, cfg.depth_prior, work / "prior", estimator=estimator)
        maps = list(prior.paths)
        prior_filled = prior.views_used
        reasons = [r.split(" (")[0] for r in prior.skipped.values()]
        prior_reasons = {r: reasons.count(r) for r in sorted(set(reasons))}
    t2 = time.perf_counter()
    fused = fuse.run(maps, cfg.fuse, None)
    t3 = time.perf_counter()
    views = len(res.paths)
    return {
        "views": views,
        "skipped_views": len(res.skipped),
        "dense_s": t1 - t0,
        "dense_s_per_view": (t1 - t0) / views,
        "dense_median_view_s": res.seconds_per_view,
        "prior_s": t2 - t1,
        "prior_s_per_view": (t2 - t1) / views,
        "prior_views_filled": prior_filled,
        "prior_not_filled": prior_reasons,
        "fuse_s": t3 - t2,
        "fuse_s_per_view": (t3 - t2) / views,
        "total_s_per_view": (t3 - t0) / views,
        "points": len(fused.cloud),
        "prior_fraction": float(fused.stats.get("prior_fraction", 0.0)),
    }, fused.cloud


def accuracy(xyz: np.ndarray, scene, sim: tuple) -> dict:
    """Scores of a cloud (estimated world) against the scene's true surface."""
    s, rot, t = sim
    pts = s * (np.asarray(xyz, np.float64) @ rot.T) + t
    out = {}
    for label, tau in (("2mm", 0.002), ("5mm", 0.005), ("1pct", 0.01 * scene.object_size)):
        sc = surface_scores(pts, scene.surface_points, tau)
        out[f"f_{label}"] = sc.fscore
        out[f"precision_{label}"] = sc.precision
        out[f"recall_{label}"] = sc.recall
    out["tau_1pct_m"] = 0.01 * scene.object_size
    out["median_error_mm"] = 1000 * sc.median_error
    out["floaters"] = outside_box_fraction(pts, scene.bbox_min, scene.bbox_max, 0.10)
    if len(pts):
        sc = surface_scores(refit(pts, scene.surface_points), scene.surface_points, 0.002)
        out["f_2mm_refit"] = sc.fscore  # diagnostic: after an ICP refit of the alignment
    return out


def refit(pts: np.ndarray, surface: np.ndarray, iters: int = 5, radius: float = 0.005):
    """``pts`` moved by a similarity fitted to their nearest surface samples (trimmed ICP).

    Diagnostic only: how much of the 2 mm score is lost to the camera alignment rather than to
    the dense stage itself.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(surface)
    rng = np.random.default_rng(0)
    sample = pts[rng.choice(len(pts), min(len(pts), 50_000), replace=False)]
    s_tot, r_tot, t_tot = 1.0, np.eye(3), np.zeros(3)
    for _ in range(iters):
        cur = s_tot * sample @ r_tot.T + t_tot
        dist, idx = tree.query(cur, workers=-1)
        ok = dist <= radius
        if ok.sum() < 100:
            break
        src, dst = cur[ok], surface[idx[ok]]
        mu_s, mu_d = src.mean(0), dst.mean(0)
        u, sig, vt = np.linalg.svd((dst - mu_d).T @ (src - mu_s))
        d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
        rot = u @ d @ vt
        scale = float(np.trace(np.diag(sig) @ d) / ((src - mu_s) ** 2).sum())
        trans = mu_d - scale * rot @ mu_s
        s_tot, r_tot, t_tot = scale * s_tot, rot @ r_tot, scale * rot @ t_tot + trans
    return s_tot * pts @ r_tot.T + t_tot


def median_row(reps: list[dict]) -> dict:
    keys = [k for k, v in reps[0].items() if isinstance(v, (int, float)) and v is not None]
    return {k: statistics.median(r[k] for r in reps) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", nargs="+", default=list(SYNTHETIC), choices=SYNTHETIC)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="800x600", help="synthetic photo size, WxH")
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="auto: the CPU, and also the GPU when one is present (for the GPU/CPU ratio)",
    )
    parser.add_argument(
        "--depth-model", type=Path, help="folder of real Depth-Anything(-V2) weights (optional)"
    )
    parser.add_argument(
        "--depth-map-size",
        type=int,
        default=0,
        help="longest side of the depth maps on every device (0: the standard preset's, which "
        "is smaller on the CPU than on a GPU)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["mvs", "tiny"],
        choices=sorted(VARIANTS),
        help="variants run side by side (a real prior is added with --depth-model)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pycolmap.logging.minloglevel = 2

    resolved = resolve_device(args.device)
    if args.device == "cpu":
        devices = ["cpu"]
    elif args.device == "cuda":
        devices = ["cuda"]
    else:
        devices = ["cuda", "cpu"] if resolved == "cuda" else ["cpu"]
    w, h = (int(x) for x in args.size.split("x"))
    cfg = preset("standard")
    if args.depth_map_size:
        side = args.depth_map_size
        cfg = cfg.replace(
            dense=dataclasses.replace(cfg.dense, max_image_size=side, cpu_max_image_size=side)
        )
    start_load = load_avg()
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads; devices: "
        + "; ".join(f"{d} = {device_name(d)}" for d in devices)
        + f"; load average at start: {start_load}",
        flush=True,
    )
    print(f"# {TINY_NOTE}", flush=True)

    records, sfm_rows, raw = [], [], []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        tiny_folder = make_tiny_depth_model(tmp / "tiny-depth")
        estimators: dict[tuple[str, str], object] = {}
        for d in devices:
            if d == "cuda":  # first CUDA call (context creation) outside any timing
                torch.ones(1, device="cuda").sum().item()
            estimators[(TINY, d)] = load_depth_model(tiny_folder, device=d, input_size=INPUT)
            if args.depth_model:
                estimators[(REAL, d)] = load_depth_model(
                    args.depth_model, device=d, input_size=cfg.depth_prior.input_size
                )
        variants = [VARIANTS[v] for v in args.variants] + ([REAL] if args.depth_model else [])
        no_rim = cfg.replace(dense=dataclasses.replace(cfg.dense, backdrop_rim=False))

        for name in args.scenes:
            scene = render_scene(
                tmp / name, name, n_azimuth=12, elevations_deg=(15.0, 35.0, 55.0), width=w, height=h
            )
            run_dir = tmp / f"{name}_sfm"
            t0 = time.perf_counter()
            images = ingest.run([scene.root / "images"], cfg.ingest, run_dir / "work")
            t1 = time.perf_counter()
            model = sfm.run(images, cfg.sfm, run_dir)
            t2 = time.perf_counter()
            truth = scene.camera_dict()
            names = sorted(set(model.cameras) & set(truth))
            sim = align_cameras(model.cameras, truth, names)
            err = pose_errors(model.cameras, truth)
            sfm_row = {
                "scene": name,
                "kind": "sfm",
                "images": len(images.images),
                "masks": sum(1 for r in images.images if r.mask_path is not None),
                "registered": len(model.cameras),
                "ingest_s": round(t1 - t0, 2),
                "sfm_s": round(t2 - t1, 2),
                "rot_deg": round(err.median_rotation_deg, 3),
                "centre_pct": round(100 * err.median_center_error / scene.object_size, 3),
                "object_size_m": round(scene.object_size, 4),
            }
            sfm_rows.append(sfm_row)
            print(json.dumps(sfm_row), flush=True)

            reps: dict[tuple[str, str], list[dict]] = {}
            clouds: dict[tuple[str, str], object] = {}
            for rep in range(args.repeats):
                # Variants and devices side by side in each repeat: they see the same load.
                for number, variant in enumerate(variants):
                    for d in devices:
                        work = tmp / f"{name}_work" / f"variant{number}_{d}"
                        row, cloud = run_variant(
                            images,
                            model,
                            no_rim if variant == NO_RIM else cfg,
                            work,
                            d,
                            estimators.get((variant, d)),
                        )
                        shutil.rmtree(work, ignore_errors=True)
                        reps.setdefault((variant, d), []).append(row)
                        clouds[(variant, d)] = cloud
                        line = {"scene": name, "variant": variant, "device": d, "repeat": rep}
                        line.update(
                            {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                        )
                        raw.append(line)
                        print(json.dumps(line), flush=True)
            for (variant, d), rows in reps.items():
                acc = accuracy(clouds[(variant, d)].xyz, scene, sim)
                rec = {"scene": name, "variant": variant, "device": d, **median_row(rows), **acc}
                records.append(rec)
                out = {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}
                print(json.dumps({"kind": "median", **out}), flush=True)
            shutil.rmtree(scene.root, ignore_errors=True)
            shutil.rmtree(run_dir, ignore_errors=True)

    end_load = load_avg()
    print()
    print(
        f"Machine: {platform.node()}, {cpu_model()}, {os.cpu_count()} logical cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), "
        f"pycolmap {pycolmap.__version__}; "
        f"{args.repeats} runs, medians; load average start {start_load}, end {end_load}"
    )
    print()
    print("| scene | SfM s | placed | rot deg | centre % |")
    print("|---|---|---|---|---|")
    for r in sfm_rows:
        print(
            f"| {r['scene']} | {r['sfm_s']:.1f} | {r['registered']}/{r['images']} | "
            f"{r['rot_deg']} | {r['centre_pct']} |"
        )
    print()
    many = len(devices) > 1
    print(
        "| scene | variant | views | dense s/view | prior s/view | fuse s/view | total s/view "
        "| F@2mm | F@5mm | F@1% size | completeness@2mm | precision@2mm | floaters % "
        "| prior fraction | points |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in records:
        label = f"{r['variant']} [{r['device']}]" if many or r["device"] != "cpu" else r["variant"]
        if r["variant"] == TINY:
            label += " (random weights: cost only)"
        print(
            f"| {r['scene']} | {label} | {r['views']:.0f} | {r['dense_s_per_view']:.2f} | "
            f"{r['prior_s_per_view']:.3f} | {r['fuse_s_per_view']:.3f} | "
            f"{r['total_s_per_view']:.2f} | {r['f_2mm']:.3f} | {r['f_5mm']:.3f} | "
            f"{r['f_1pct']:.3f} | {r['recall_2mm']:.3f} | {r['precision_2mm']:.3f} | "
            f"{100 * r['floaters']:.2f} | {r['prior_fraction']:.3f} | {r['points']:.0f} |"
        )
    print()
    print(TINY_NOTE)
    if "cuda" in devices and "cpu" in devices:
        print()
        print(
            "| scene | variant | CPU total s/view | GPU total s/view | speed-up total (CPU/GPU) "
            "| speed-up dense only |"
        )
        print("|---|---|---|---|---|---|")
        by = {(r["scene"], r["variant"], r["device"]): r for r in records}
        for r in records:
            if r["device"] != "cuda":
                continue
            c = by[(r["scene"], r["variant"], "cpu")]
            ratio = c["total_s_per_view"] / r["total_s_per_view"]
            dense_ratio = c["dense_s_per_view"] / r["dense_s_per_view"]
            print(
                f"| {r['scene']} | {r['variant']} | {c['total_s_per_view']:.3f} | "
                f"{r['total_s_per_view']:.3f} | {ratio:.1f}x | {dense_ratio:.1f}x |"
            )
    if args.json:
        args.json.write_text(
            json.dumps({"sfm": sfm_rows, "runs": raw, "medians": records}, indent=2)
        )


if __name__ == "__main__":
    main()
