"""Benchmark: peak memory of a whole command-line run on many large photos.

Makes ``--photos`` synthetic photos of ``--size`` (default 100 photos of 6000 x 4000, 24 MP) of
one scene with known cameras, then runs ``python main.py reconstruct DIR --out RUN --preset
standard`` in a child process and samples the resident set of the child and all its children
(the mesh stage spawns one) every ``--interval`` seconds. Reports the peak of that sum, the peak
per stage (the stage is read from the child's progress lines), ``ru_maxrss`` of the largest
child, the wall time, ``report.json``'s stage seconds and the output sizes.

Rendering 24 MP views directly is slow (about 16x the rays of a 1500 x 1000 view), so the views
are rendered at ``--render-size`` with ``engine.synthetic.render_scene`` and upscaled with
``cv2.INTER_CUBIC``, with Gaussian noise (``--noise`` 8-bit levels) added after the upscale and
saved as JPEG quality 92 with the render's EXIF (pixel dimensions and focal-plane resolution
updated, so the 35 mm-equivalent focal length stays right).

    python bench/bench_memory.py --photos 100 --size 6000x4000 --work /tmp/h4/mem [--reuse]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, TiffImagePlugin  # noqa: E402

from engine.pipeline import Pipeline  # noqa: E402
from engine.synthetic import load_scene, render_scene  # noqa: E402

#: Files a finished run folder may hold, whose sizes the benchmarks report.
OUTPUTS = ("viewer.html", "dense.ply", "mesh.glb", "mesh.usdz", "mesh.obj", "embed.html")


def parse_size(text: str) -> tuple[int, int]:
    """``"6000x4000"`` -> ``(6000, 4000)``."""
    w, h = text.lower().split("x")
    return int(w), int(h)


def make_photos(
    out_dir: Path,
    n: int,
    size: tuple[int, int] = (6000, 4000),
    render_size: tuple[int, int] = (1500, 1000),
    *,
    kind: str = "bottle",
    noise: float = 2.0,
    quality: int = 92,
    seed: int = 0,
    resume: bool = False,
) -> dict:
    """Write ``n`` synthetic photos of ``size`` into ``out_dir/images``; return how it went.

    The views are rendered at ``render_size`` in rings around the object (4 rings from 40
    photos up, 2 from 4, else 1), upscaled to ``size`` (bicubic), given Gaussian noise and
    written as JPEG with EXIF. Ground-truth cameras (at the render size) and surface samples
    stay in ``out_dir/render``. With ``resume``, a finished render and photos already
    written there are kept (the output is deterministic).
    """
    rings = (15.0, 30.0, 45.0, 60.0)[: 4 if n >= 40 else 2 if n >= 4 else 1]
    t0 = time.perf_counter()
    render = out_dir / "render"
    if resume and (render / "scene.npz").is_file() and len(list(render.glob("images/*"))) >= n:
        scene = load_scene(render)
    else:
        scene = render_scene(
            render,
            kind,
            n_azimuth=math.ceil(n / len(rings)),
            elevations_deg=rings,
            width=render_size[0],
            height=render_size[1],
            supersample=2,
            seed=seed,
            jpeg_quality=98,
            n_surface_points=20_000,
        )
    t_render = time.perf_counter() - t0
    images = out_dir / "images"
    if not resume:
        shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True, exist_ok=True)
    sizes = []
    for i, src in enumerate(sorted(scene.image_dir.iterdir())[:n]):
        dst = images / src.name
        if resume and dst.is_file():
            sizes.append(dst.stat().st_size)
            continue
        with Image.open(src) as im:
            exif = im.getexif()
            rgb = np.asarray(im.convert("RGB"))
        big = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
        noisy = big.astype(np.float32)
        rng = np.random.default_rng([seed, i])  # per photo: resumable, same bytes
        noisy += rng.normal(0.0, noise, big.shape).astype(np.float32)
        big = np.clip(noisy, 0, 255).astype(np.uint8)
        del noisy
        ifd = exif.get_ifd(0x8769)
        ifd[0xA002], ifd[0xA003] = size
        # Pixels per cm on the focal plane scale with the width: keeps the 35 mm focal right.
        res = TiffImagePlugin.IFDRational(int(round(size[0] / 3.6 * 1000)), 1000)
        ifd[0xA20E] = ifd[0xA20F] = res
        Image.fromarray(big).save(dst, "JPEG", quality=quality, exif=exif.tobytes())
        sizes.append(dst.stat().st_size)
    return {
        "photos": len(sizes),
        "size": f"{size[0]}x{size[1]}",
        "render_size": f"{render_size[0]}x{render_size[1]}",
        "render_s": round(t_render, 1),
        "total_s": round(time.perf_counter() - t0, 1),
        "mean_file_mb": round(float(np.mean(sizes)) / 1e6, 2),
        "images": str(images),
    }


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def tree_rss(pid: int) -> int:
    """Resident set in bytes of ``pid`` and all its descendants (0 when it is gone)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
        todo.extend(_children(p))
    return total


def run_sampled(cmd: list[str], log_path: Path, *, interval: float = 0.2, cwd: Path = ROOT) -> dict:
    """Run ``cmd``, sampling its process tree's resident set; return peaks and seconds.

    The current stage is the first word of the child's latest progress line on stderr that
    names a pipeline stage (lines come at most every 2 s, so a stage's peak can be attributed
    to the stage before it for up to 2 s). Everything the child prints goes to ``log_path``.
    """
    stages = set(Pipeline.STAGES)
    state = {"stage": "start"}
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=log, stderr=subprocess.PIPE, text=True, bufsize=1
        )

        def read_stderr() -> None:
            for line in proc.stderr:
                log.write(line)
                word = line.split(" ", 1)[0].strip()
                if word in stages:
                    state["stage"] = word

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        peak, per_stage, samples = 0, {}, 0
        while proc.poll() is None:
            rss = tree_rss(proc.pid)
            samples += 1
            peak = max(peak, rss)
            stage = state["stage"]
            per_stage[stage] = max(per_stage.get(stage, 0), rss)
            time.sleep(interval)
        reader.join(timeout=5)
    wall = time.perf_counter() - t0
    # Linux: kilobytes; the largest of the (waited-for) children of this process.
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(peak / 1e9, 3),
        "peak_rss_by_stage_gb": {k: round(v / 1e9, 3) for k, v in per_stage.items()},
        "ru_maxrss_children_gb": round(maxrss / 1e9, 3),
        "samples": samples,
        "interval_s": interval,
    }


def output_sizes(run: Path) -> dict:
    """Sizes in MB of the run folder's exports that exist."""
    return {
        name: round((run / name).stat().st_size / 1e6, 3)
        for name in OUTPUTS
        if (run / name).is_file()
    }


def measure_run(
    images: Path, run: Path, *, preset: str = "standard", interval: float = 0.2
) -> dict:
    """``main.py reconstruct images --out run --preset preset`` with memory sampling."""
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    cmd = [sys.executable, str(ROOT / "main.py"), "reconstruct", str(images)]
    cmd += ["--out", str(run), "--preset", preset]
    res = run_sampled(cmd, run.parent / f"{run.name}.console.log", interval=interval)
    report_path = run / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    res.update(
        {
            "status": report.get("status"),
            "stage_seconds": report.get("stage_seconds", {}),
            "registered": len(report.get("registered", []) or []),
            "outputs_mb": output_sizes(run),
        }
    )
    return res


def markdown(row: dict) -> str:
    """A Markdown table of one measurement."""
    by_stage = ", ".join(f"{k} {v}" for k, v in row["peak_rss_by_stage_gb"].items())
    secs = ", ".join(f"{k} {v:.1f}" for k, v in row["stage_seconds"].items())
    outs = ", ".join(f"{k} {v}" for k, v in row["outputs_mb"].items())
    lines = [
        "| photos | size | status | wall s | peak RSS GB (tree) | ru_maxrss GB | peak by stage GB "
        "| stage seconds | outputs MB |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {row['photos']} | {row['size']} | {row['status']} | {row['wall_s']} | "
        f"{row['peak_rss_gb']} | {row['ru_maxrss_children_gb']} | {by_stage} | {secs} | {outs} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--size", default="6000x4000", help="photo size, WxH")
    parser.add_argument("--render-size", default="1500x1000", help="render size, WxH")
    parser.add_argument("--scene", default="bottle", choices=["bottle", "box", "lowtex"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/vitrine_bench_memory"))
    parser.add_argument(
        "--reuse", action="store_true", help="keep the render and photos already made there"
    )
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    images = args.work / "images"
    made = make_photos(
        args.work,
        args.photos,
        parse_size(args.size),
        parse_size(args.render_size),
        kind=args.scene,
        resume=args.reuse,
    )
    print(json.dumps({"made": made}), flush=True)
    row = measure_run(images, args.work / "run", preset=args.preset, interval=args.interval)
    row.update({"photos": args.photos, "size": args.size, "made": made, "cpus": os.cpu_count()})
    print(json.dumps(row), flush=True)
    print(markdown(row))
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
