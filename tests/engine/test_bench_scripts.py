"""Smoke tests of the benchmark scripts' core functions on tiny inputs (bench/bench_memory.py,
bench/bench_e2e.py, bench/render_glb.py): the numbers they report come from what they measure."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from engine.pipeline import Pipeline
from engine.synthetic import render_scene
from engine.types import CameraPose, Mesh

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_memory():
    return _load("bench_memory")


@pytest.fixture(scope="module")
def bench_e2e():
    return _load("bench_e2e")


@pytest.fixture(scope="module")
def tiny_box(tmp_path_factory):
    """6 views of the box at 200 x 150 (one ring)."""
    return render_scene(
        tmp_path_factory.mktemp("bench_box"),
        "box",
        n_azimuth=6,
        elevations_deg=(30.0,),
        width=200,
        height=150,
        supersample=1,
    )


def test_make_photos_upscales_with_exif(bench_memory, tmp_path):
    made = bench_memory.make_photos(tmp_path, 2, (1732, 1155), (433, 289))
    photos = sorted((tmp_path / "images").glob("*.jpg"))
    assert made["photos"] == len(photos) == 2
    assert made["size"] == "1732x1155" and made["mean_file_mb"] > 0.1
    for p in photos:
        with Image.open(p) as im:
            assert im.size == (1732, 1155)
            ifd = im.getexif().get_ifd(0x8769)
        # 35 mm-equivalent focal length kept, pixel dimensions updated to the upscaled size
        assert ifd[0xA405] == 46
        assert (ifd[0xA002], ifd[0xA003]) == (1732, 1155)
        assert float(ifd[0xA20E]) == pytest.approx(1732 / 3.6, rel=1e-3)


CHILD = """
import subprocess, sys, time
import numpy as np
grand = subprocess.Popen([sys.executable, "-c",
    "import numpy as np, time; a = np.ones(250_000_000 // 8); time.sleep(2.5)"])
time.sleep(0.5)
print("ingest [--] 0% reading", file=sys.stderr, flush=True)
time.sleep(0.6)
a = np.ones(150_000_000 // 8)
print("dense [#-] 50% view 1 of 2", file=sys.stderr, flush=True)
time.sleep(1.2)
grand.wait()
"""


def test_run_sampled_sums_the_process_tree_by_stage(bench_memory, tmp_path):
    log = tmp_path / "child.log"
    res = bench_memory.run_sampled([sys.executable, "-c", CHILD], log, interval=0.1)
    assert res["returncode"] == 0 and res["samples"] >= 10
    # child (150 MB) and grandchild (250 MB) at the same time: only the sum reaches 0.4 GB
    assert res["peak_rss_gb"] >= 0.40, res
    assert res["peak_rss_by_stage_gb"]["dense"] >= 0.40
    assert res["peak_rss_by_stage_gb"]["ingest"] < res["peak_rss_by_stage_gb"]["dense"]
    assert "dense [#-] 50%" in log.read_text()
    row = {**res, "photos": 2, "size": "1x1", "status": "done", "stage_seconds": {"dense": 1.5}}
    row["outputs_mb"] = {"mesh.glb": 2.5}
    table = bench_memory.markdown(row)
    assert f"| {res['peak_rss_gb']} |" in table and "dense 1.5" in table
    assert "mesh.glb 2.5" in table


def _moved(cam: CameraPose, s: float, rot: np.ndarray, t: np.ndarray) -> CameraPose:
    """The same camera in a world where x_est = s * rot @ x_true + t."""
    r_est = cam.R @ rot.T
    t_est = s * cam.t - r_est @ t
    return dataclasses.replace(cam, R=r_est, t=t_est)


def test_mesh_errors_align_and_measure_in_mm(bench_e2e, tiny_box):
    lo, hi = np.asarray(tiny_box.bbox_min), np.asarray(tiny_box.bbox_max)
    box = trimesh.creation.box(extents=hi - lo)
    box.apply_translation((hi + lo) / 2)
    # the true surface samples leave out the unseen bottom face
    keep = box.face_normals[:, 2] > -0.9
    faces = box.faces[keep]
    truth = tiny_box.camera_dict()
    ang = 0.7
    rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    s, t = 2.5, np.array([0.3, -1.0, 2.0])
    est = {n: _moved(c, s, rot, t) for n, c in truth.items()}
    verts_est = s * np.asarray(box.vertices) @ rot.T + t
    err = bench_e2e.mesh_errors_mm(Mesh(verts_est, faces), est, truth, tiny_box)
    assert err["mesh_to_truth_mean_mm"] < 0.8 and err["truth_to_mesh_mean_mm"] < 0.8, err
    assert err["size_mm"] == pytest.approx(1000 * tiny_box.object_size, abs=0.1)
    # a box 5 mm too large on every side (in the true frame) is measured as 5 mm off
    grown = trimesh.creation.box(extents=hi - lo + 0.010)
    grown.apply_translation((hi + lo) / 2)
    faces_grown = grown.faces[grown.face_normals[:, 2] > -0.9]
    verts_off = s * np.asarray(grown.vertices) @ rot.T + t
    off = bench_e2e.mesh_errors_mm(Mesh(verts_off, faces_grown), est, truth, tiny_box)
    assert 4.5 < off["mesh_to_truth_mean_mm"] < 6.0, off
    assert 4.5 < off["truth_to_mesh_mean_mm"] < 6.0, off


def test_bench_scene_row_and_tables(bench_e2e, tiny_box, tmp_path):
    import pycolmap

    pycolmap.logging.minloglevel = 2
    truth = tiny_box.camera_dict()
    row = bench_e2e.bench_scene(
        "box",
        tiny_box.image_dir,
        truth,
        tiny_box.object_size,
        tmp_path,
        scene=tiny_box,
        preset_name="preview",  # sparse only: the smoke test, not the measurement
    )
    json.dumps(row)  # the JSON line the script prints
    assert row["images"] == 6 and row["repeats"] == 1
    assert row["ratio"] == pytest.approx(row["ours_s"] / row["defaults_s"], rel=0.06)
    assert row["target_met"] == (row["ratio"] <= bench_e2e.TARGET_RATIO)
    assert "ingest" in row["stage_seconds"] and row["stage_seconds"]["ingest"] > 0
    assert row["peak_rss_gb"] >= row["rss_before_gb"] > 0.05
    by_stage = row["peak_rss_by_stage_gb"]
    # booked to the pipeline's stages (those shorter than a 0.2 s sample may be missing)
    assert set(by_stage) - {"start"} and set(by_stage) <= {"start", *Pipeline.STAGES}
    assert max(by_stage.values()) == row["peak_rss_gb"]
    for side in ("ours", "defaults"):
        assert row[side]["registered"].endswith("/6")
        assert set(row[side]) == {"registered", "rot_deg", "centre_pct"}
    table = bench_e2e.markdown([row])
    assert f"| box | 6 | {row['ours_s']} | {row['defaults_s']} | {row['ratio']} |" in table
    assert "| scene | ingest" in table and "viewer.html MB" in table


def test_render_glb_reads_the_models_bounds(tmp_path):
    """bench/render_glb.py's numbers: an upright export of a 2 x 3 x 4 box standing on the
    origin has its base at y = 0, its centre over x = z = 0 and its height along +y."""
    from engine.export.glb import write_glb

    box = trimesh.creation.box(extents=[2.0, 3.0, 4.0])
    box.apply_translation([0.0, 0.0, 2.0])  # the product frame: Z up, base on z = 0
    mesh = Mesh(
        np.asarray(box.vertices, np.float32),
        np.asarray(box.faces, np.int32),
        np.full((len(box.vertices), 3), 200, np.uint8),
    )
    write_glb(tmp_path / "box.glb", mesh)  # no transform: Z up becomes glTF's +y
    bounds = _load("render_glb").glb_bounds(tmp_path / "box.glb")
    assert bounds["size"] == pytest.approx([2.0, 4.0, 3.0])
    assert bounds["base_y"] == pytest.approx(0.0)
    assert bounds["centre_xz"] == pytest.approx([0.0, 0.0])
