"""Benchmark: the SfM stage on 36, 100 and 300 photos: time per photo, photos placed, memory.

For each ``--photos`` count, makes that many synthetic 12 MP photos (``bench_memory.make_photos``:
rendered at ``--render-size`` in 4 rings, upscaled, noise added, JPEG with EXIF), then runs
ingest + our SfM stage (``standard`` preset) in a child process whose process tree's resident
set is sampled (``bench_memory.run_sampled``). Reports seconds per photo (ingest and SfM), photos
placed, the median rotation error against the rendered cameras, the pairs matched and the peak
memory of the whole process tree.

    python bench/bench_sfm_scale.py --photos 36 100 300 --work /tmp/sfm_scale [--reuse]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib  # noqa: F401  (before pycolmap: see engine/__init__.py)
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def child(images: Path, run: Path, cameras: Path, result: Path) -> None:
    """Ingest + SfM on ``images`` into ``run``; write timings and accuracy to ``result``."""
    import logging
    import shutil

    import pycolmap

    from engine.config import preset
    from engine.errors import ReconstructionError
    from engine.geometry import pose_errors
    from engine.stages import ingest, sfm
    from engine.synthetic import read_cameras_json

    logging.basicConfig(level=logging.WARNING)
    pycolmap.logging.minloglevel = 2
    shutil.rmtree(run, ignore_errors=True)
    cfg = preset("standard")
    t0 = time.perf_counter()
    rec = ingest.run([images], cfg.ingest, run / "work")
    t1 = time.perf_counter()
    out: dict = {"photos": len(rec.images), "ingest_s": round(t1 - t0, 1)}
    try:
        model = sfm.run(rec, cfg.sfm, run)
    except ReconstructionError as err:
        out.update(sfm_s=round(time.perf_counter() - t1, 1), error=str(err)[:300])
    else:
        truth = {c.name: c for c in read_cameras_json(cameras)}
        err = pose_errors(model.cameras, truth)
        out.update(
            sfm_s=round(time.perf_counter() - t1, 1),
            placed=model.num_registered,
            rot_deg=round(err.median_rotation_deg, 3),
            pairs=sum(a.get("pairs", 0) for a in model.attempts[:1]),
            attempts=[f"{a['name']}/{a['mapper']}:{a['registered']}" for a in model.attempts],
            phases=model.attempts[0].get("phase_seconds"),
        )
    result.write_text(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, nargs="+", default=[36, 100, 300])
    parser.add_argument("--size", default="4000x3000", help="photo size, WxH (12 MP)")
    parser.add_argument("--render-size", default="1200x900")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sfm_scale"))
    parser.add_argument("--reuse", action="store_true", help="keep photos made by a former run")
    parser.add_argument("--child", nargs=4, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from bench_memory import make_photos, parse_size, run_sampled

    rows = []
    for n in args.photos:
        folder = args.work / f"n{n}"
        made = make_photos(
            folder, n, parse_size(args.size), parse_size(args.render_size), resume=args.reuse
        )
        result = folder / "result.json"
        result.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            made["images"],
            str(folder / "run"),
            str(folder / "render" / "cameras.json"),
            str(result),
        ]
        sampled = run_sampled(cmd, folder / "log.txt")
        row = {"n": n, "size": args.size, **json.loads(result.read_text()), **sampled}
        row["s_per_photo"] = round((row["ingest_s"] + row["sfm_s"]) / n, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| photos | placed | median rot deg | pairs | ingest s | SfM s | s per photo | peak GB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r.get('placed', 'exit 3')} | {r.get('rot_deg', '-')} | "
            f"{r.get('pairs', '-')} | {r['ingest_s']} | {r['sfm_s']} | {r['s_per_photo']} | "
            f"{r['peak_rss_gb']} |"
        )


if __name__ == "__main__":
    main()
