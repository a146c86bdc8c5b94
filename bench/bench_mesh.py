"""Benchmark: mesh accuracy against the synthetic box's true surface (the tests' two cases).

- ``gt samples``: the mesh stage on 60k true surface samples (0.5 mm noise) standing on a floor
  slab with a floating blob beside the box, the true cameras and masks, the tests' fast settings
  (Poisson depth 7, 40k triangles): what the stage itself adds.
- ``real dense``: ingest, SfM, dense and fusion of the ``standard`` preset on the CPU, then the
  mesh stage with the scene's masks, scored in the true frame after the similarity that aligns
  the SfM cameras to the true ones: the whole chain.

Both report mean and 99th-percentile distances mesh -> truth and truth -> mesh (mm), the share
of the true surface within 1% of the box's size of the mesh, and the stage's seconds.

    python bench/bench_mesh.py [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import zlib  # noqa: F401  (before pycolmap: see engine/__init__.py)
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from _machine import cpu_model  # noqa: E402

from engine.config import preset  # noqa: E402
from engine.geometry import align_cameras  # noqa: E402
from engine.stages import dense, fuse, ingest, sfm  # noqa: E402
from engine.stages import mesh as mesh_stage  # noqa: E402
from engine.synthetic import MASK_DIR, render_scene  # noqa: E402
from tests.conftest import SCENE_VIEWS  # noqa: E402
from tests.engine.test_mesh import FAST, _gt_cloud, _records, _surface_errors  # noqa: E402


def _row(case: str, scene, vertices, faces, seconds: float, stats: dict) -> dict:
    to_truth, to_mesh = _surface_errors(vertices, faces, scene)
    size = scene.object_size
    return {
        "case": case,
        "mesh_to_truth_mm": round(1000 * float(to_truth.mean()), 3),
        "mesh_to_truth_p99_mm": round(1000 * float(np.percentile(to_truth, 99)), 3),
        "truth_to_mesh_mm": round(1000 * float(to_mesh.mean()), 3),
        "truth_within_1pct": round(float(np.mean(to_mesh <= 0.01 * size)), 4),
        "object_size_mm": round(1000 * size, 1),
        "triangles": int(len(faces)),
        "mesh_s": round(seconds, 2),
        "floor_cut": stats.get("floor_cut"),
        "completeness": stats.get("completeness"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_mesh_"))
    print(f"# {cpu_model()}, {os.cpu_count()} logical cores; load average {os.getloadavg()}")
    scene = render_scene(out / "box", "box", **SCENE_VIEWS)
    rows = []

    t = time.perf_counter()
    res = mesh_stage.run(
        mesh_stage.MeshInputs(_gt_cloud(scene), scene.camera_dict(), _records(scene)),
        FAST,
        out / "gt_work",
    )
    rows.append(
        _row(
            "gt samples",
            scene,
            res.mesh.vertices,
            res.mesh.faces,
            time.perf_counter() - t,
            res.stats,
        )
    )
    print(json.dumps(rows[-1]), flush=True)

    cfg = preset("standard")
    images = ingest.run([scene.root / "images"], cfg.ingest, out / "run" / "work")
    model = sfm.run(images, cfg.sfm, out / "run")
    masks = {Path(p).stem: p for p in sorted((scene.root / MASK_DIR).glob("*.png"))}
    images = dataclasses.replace(
        images,
        images=tuple(
            dataclasses.replace(r, mask_path=masks[Path(r.name).stem]) for r in images.images
        ),
    )
    depth = dense.run(dense.DenseInputs(images, model), cfg.dense, out / "dense", device="cpu")
    fused = fuse.run(list(depth.paths), cfg.fuse, out / "dense.ply")
    t = time.perf_counter()
    res = mesh_stage.run(
        mesh_stage.MeshInputs(fused.cloud, model.cameras, images), cfg.mesh, out / "mesh_work"
    )
    seconds = time.perf_counter() - t
    s, rot, tr = align_cameras(model.cameras, scene.camera_dict(), sorted(model.cameras))
    world = s * np.asarray(res.mesh.vertices, np.float64) @ rot.T + tr
    rows.append(
        _row("real dense (standard, CPU)", scene, world, res.mesh.faces, seconds, res.stats)
    )
    print(json.dumps(rows[-1]), flush=True)

    print()
    print(
        "| case | mesh->truth mm | p99 mm | truth->mesh mm | truth within 1% | triangles | "
        "mesh s | floor cut | completeness |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['mesh_to_truth_mm']} | {r['mesh_to_truth_p99_mm']} | "
            f"{r['truth_to_mesh_mm']} | {r['truth_within_1pct']} | {r['triangles']} | "
            f"{r['mesh_s']} | {r['floor_cut']} | {r['completeness']} |"
        )


if __name__ == "__main__":
    main()
