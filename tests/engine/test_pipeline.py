"""The run folder contract, the command line, resume, cancel and privacy of exports."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import Image

import main
from engine.config import SfMConfig, preset
from engine.errors import InputError, ModelError, OutputError
from engine.export.ply import read_ply
from engine.pipeline import reconstruct
from engine.progress import Cancelled, CancelToken

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"n_azimuth": 12, "elevations_deg": (20.0, 45.0), "width": 480, "height": 360}
GPS_LAT = (48.0, 51.0, 29.64)


@pytest.fixture(scope="module")
def small_scene(scene_factory):
    return scene_factory("box", **SMALL)


@pytest.fixture()
def gps_photos(small_scene, tmp_path):
    """The small scene's photos, with GPS and camera-owner tags added (in a folder with a space
    and non-ASCII characters)."""
    folder = tmp_path / "Shoot Café" / "photos"
    folder.mkdir(parents=True)
    for src in small_scene.image_paths:
        with Image.open(src) as im:
            exif = im.getexif()
            gps = exif.get_ifd(0x8825)
            gps.update({1: "N", 2: GPS_LAT, 3: "E", 4: (2.0, 17.0, 40.0)})
            exif[0x013B] = "Jane Photographer"  # Artist
            im.save(folder / src.name, exif=exif.tobytes(), quality=95)
    return folder


def _no_private_data(path: Path, tmp_path: Path) -> None:
    data = path.read_bytes()
    assert str(tmp_path).encode() not in data, f"{path.name} contains a local path"
    assert b"Jane Photographer" not in data, f"{path.name} contains EXIF"
    assert b"/photos/" not in data, f"{path.name} contains a folder path"


def test_cli_writes_every_file_of_the_contract(gps_photos, tmp_path, capsys):
    out = tmp_path / "run"
    code = main.main(
        ["reconstruct", str(gps_photos), "--out", str(out), "--preset", "preview", "--json"]
    )
    assert code == 0
    for name in ("report.json", "config.json", "viewer.html", "run.log", "sparse.ply"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        assert (out / "sparse" / "0" / name).is_file(), name

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    printed = json.loads(capsys.readouterr().out)
    assert printed == report
    assert report["status"] == "finished"
    assert report["preset"] == "preview" and report["device"] in ("cpu", "cuda")
    photos = sorted(p.name for p in gps_photos.iterdir())
    # Photos are named by their file names; each is either placed or has a reason.
    assert sorted(report["registered"] + list(report["unregistered"])) == photos
    assert len(report["registered"]) >= 0.9 * len(photos)
    assert set(report["stage_seconds"]) == {"ingest", "masks", "sfm", "scale", "coverage", "export"}
    assert report["outputs"]["viewer.html"] == (out / "viewer.html").stat().st_size

    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert sorted(im.name for im in rec.images.values()) == sorted(report["registered"])
    assert rec.num_points3D() > 100
    # The product is named after its folder ("photos" folders take their parent's name).
    assert report["stages"]["export"]["title"] == "Shoot Café"
    assert "<title>Shoot Café</title>" in (out / "viewer.html").read_text(encoding="utf-8")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["preset"] == "preview" and config["stop_after"] == "sparse"

    for name in ("report.json", "config.json", "viewer.html", "sparse.ply"):
        _no_private_data(out / name, tmp_path)
    for path in (out / "sparse" / "0").iterdir():
        _no_private_data(path, tmp_path)
    # Working copies are fresh PNGs: no EXIF, no GPS.
    for path in (out / "work" / "images").iterdir():
        with Image.open(path) as im:
            assert not im.getexif(), path.name


def test_resume_skips_finished_stages_and_gives_the_same_model(small_scene, tmp_path):
    out = tmp_path / "run"
    cfg = preset("preview")
    first = reconstruct([small_scene.image_dir], out, cfg)
    cheap = {"scale", "coverage", "export"}  # recomputed every run, from the stages before
    assert set(first.report.stage_seconds) == {"ingest", "masks", "sfm"} | cheap
    assert first.report.stages["masks"]["computed"] == len(small_scene.image_paths)
    assert first.report.dimensions_mm is None  # no marker, no known size
    assert first.report.stages["scale"]["source"] == "none"
    again = reconstruct([small_scene.image_dir], out, cfg)
    assert set(again.report.stage_seconds) == cheap  # ingest, masks and sfm resumed
    assert sorted(again.sparse.cameras) == sorted(first.sparse.cameras)
    assert len(again.sparse.points) == len(first.sparse.points)
    # A known height gives true dimensions without recomputing the model.
    sized = reconstruct(
        [small_scene.image_dir],
        out,
        cfg.replace(
            scale=dataclasses.replace(cfg.scale, known_dimension="height", known_dimension_mm=220.0)
        ),
    )
    assert set(sized.report.stage_seconds) == cheap
    assert sized.report.stages["scale"]["source"] == "known_dimension"
    width, depth, height = sized.report.dimensions_mm
    assert height == pytest.approx(220.0, abs=0.1)
    # sparse points of the box (160 x 100 x 220 mm): the footprint within a few percent
    assert width == pytest.approx(160.0, rel=0.05) and depth == pytest.approx(100.0, rel=0.05)
    # A changed setting reruns the stages it affects.
    changed = reconstruct(
        [small_scene.image_dir], out, cfg.replace(sfm=SfMConfig(max_num_features=1024))
    )
    assert "sfm" in changed.report.stage_seconds and "ingest" not in changed.report.stage_seconds


def test_cancel_mid_sfm_then_resume(small_scene, tmp_path):
    out = tmp_path / "run"
    token = CancelToken()
    stages = []

    def progress(event):
        stages.append(event.stage)
        if event.stage == "sfm" and event.current >= 4:
            token.cancel()

    with pytest.raises(Cancelled):
        reconstruct(
            [small_scene.image_dir], out, preset("preview"), progress=progress, cancel=token
        )
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "cancelled"
    assert "ingest" in stages and not (out / "viewer.html").exists()
    result = reconstruct([small_scene.image_dir], out, preset("preview"))
    assert result.report.status == "finished"
    assert "ingest" not in result.report.stage_seconds  # the finished stage was kept


def test_bad_inputs_get_clear_errors(tmp_path, capsys):
    missing = tmp_path / "no such folder"
    assert (
        main.main(["reconstruct", str(missing), "--out", str(tmp_path / "o1")])
        == InputError.exit_code
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0]

    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    for i in range(3):
        (pdfs / f"brochure{i}.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(200))
    assert (
        main.main(["reconstruct", str(pdfs), "--out", str(tmp_path / "o2")]) == InputError.exit_code
    )
    err = capsys.readouterr().err
    assert "brochure0.pdf" in err and "PDF" in err
    report = json.loads((tmp_path / "o2" / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "failed"


def test_unwritable_output_folder(small_scene, tmp_path, capsys):
    blocker = tmp_path / "out"
    blocker.write_text("a file where the run folder should be")
    code = main.main(["reconstruct", str(small_scene.image_dir), "--out", str(blocker / "run")])
    assert code == OutputError.exit_code
    err = capsys.readouterr().err
    assert "Cannot write to the output folder" in err
    assert blocker.read_text() == "a file where the run folder should be"  # nothing lost


def test_one_photo_without_depth_weights_says_how_to_provide_them(
    small_scene, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(small_scene.image_paths[0], single)
    with pytest.raises(ModelError) as info:
        reconstruct([single], tmp_path / "run", preset("preview"))
    message = str(info.value)
    assert message.startswith(f"Only one usable photo ({small_scene.image_paths[0].name})")
    assert "at least two overlapping photos" in message and "--depth-model FOLDER" in message
    report = json.loads((tmp_path / "run" / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "failed"


def test_one_photo_makes_a_relief_with_the_depth_network(small_scene, tiny_depth_model, tmp_path):
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(small_scene.image_paths[3], single)
    cfg = preset("standard")
    cfg = cfg.replace(depth_prior=dataclasses.replace(cfg.depth_prior, model=str(tiny_depth_model)))
    out = tmp_path / "run"
    result = reconstruct([single], out, cfg)
    assert result.sparse is None and len(result.dense) > 1000
    cloud = read_ply(out / "dense.ply")
    assert len(cloud) == len(result.dense) and np.isfinite(cloud.xyz).all()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "finished"
    assert any("depth is relative" in w for w in report["warnings"]), report["warnings"]
    assert report["model"]["depth_prior"]["source"] == "local"
    assert report["stages"]["export"]["viewer"]["cloud"] == "dense"
    assert (out / "viewer.html").stat().st_size > 10_000


def test_ctrl_c_cancels_cleanly(small_scene, tmp_path):
    """SIGINT during SfM: the process says so, exits 130 and keeps the finished stages."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "main.py"),
            "reconstruct",
            str(small_scene.image_dir),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background (`cmd &`) ignores SIGINT, and children inherit
        # that; the user's terminal does not. Give the child Ctrl-C's default behaviour.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    state = out / "work" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not state.exists():  # ingest finished: SfM is running
        time.sleep(0.05)
    assert state.exists(), "the run never reached SfM"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == main.EXIT_CANCELLED, err
    assert "Cancelled" in err
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "cancelled"
    assert json.loads(state.read_text())["done"].get("ingest") is not None


def test_sample_command_writes_a_shoot(tmp_path, capsys):
    assert main.main(["sample", str(tmp_path / "sample")]) == 0
    photos = sorted((tmp_path / "sample" / "photos").iterdir())
    assert len(photos) == 36 and all(p.suffix == ".jpg" for p in photos)
    assert (tmp_path / "sample" / "ground_truth" / "cameras.json").is_file()
    assert "reconstruct" in capsys.readouterr().out


def test_standard_run_with_the_depth_prior_writes_a_dense_cloud_and_resumes(
    small_scene, tiny_depth_model, tmp_path, monkeypatch
):
    """The tiny random-weight network goes through the real loader and stage; the report says
    what it is and how much of the cloud it gave; a second run recomputes nothing."""
    cfg = preset("standard")
    cfg = cfg.replace(depth_prior=dataclasses.replace(cfg.depth_prior, model=str(tiny_depth_model)))
    out = tmp_path / "run"
    events = []
    result = reconstruct([small_scene.image_dir], out, cfg, progress=events.append)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "finished"
    assert {"dense", "depth_prior", "fuse", "export"} <= set(report["stage_seconds"])
    prior = report["model"]["depth_prior"]
    assert prior["source"] == "local" and "fused_point_fraction" in prior
    assert 0.0 <= prior["fused_point_fraction"] <= 1.0
    assert report["stages"]["dense"]["views"] == len(report["registered"])
    # the CPU makes smaller depth maps than a GPU would (DenseConfig.cpu_max_image_size)
    side = 560 if report["device"] == "cpu" else 800
    assert report["stages"]["dense"]["depth_map_size"] == side
    assert report["stages"]["fuse"]["points"] == len(result.dense) > 10_000
    assert report["outputs"]["dense.ply"] == (out / "dense.ply").stat().st_size
    assert report["stages"]["export"]["viewer"]["cloud"] == "dense"
    assert len(read_ply(out / "dense.ply")) == len(result.dense)
    stages = [e.message for e in events if e.stage == "pipeline"]
    assert stages == [
        "ingest",
        "masks",
        "sfm",
        "dense",
        "depth_prior",
        "fuse",
        "mesh",
        "scale",
        "coverage",
        "export",
    ]
    # The web exports of the mesh, within their budgets.
    mesh = report["stages"]["mesh"]
    assert mesh["built"] and 0 < result.mesh.num_triangles <= cfg.mesh.max_triangles
    for name in ("mesh.glb", "mesh.obj", "mesh.mtl", "embed.html"):
        assert report["outputs"][name] == (out / name).stat().st_size > 0, name
    assert report["outputs"]["mesh.glb"] <= cfg.mesh.max_glb_mb * 1e6
    assert "<model-viewer" in (out / "embed.html").read_text(encoding="utf-8")
    assert "mesh3d" in (out / "viewer.html").read_text(encoding="utf-8")
    for name in ("mesh.glb", "mesh.obj", "embed.html", "viewer.html"):
        _no_private_data(out / name, tmp_path)
    assert report["stages"]["coverage"]["counts"] and "preflight" in report["stages"]["coverage"]

    from engine.stages import dense, fuse
    from engine.stages import mesh as mesh_stage

    def boom(*a, **k):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(dense, "estimate_depth", boom)
    monkeypatch.setattr(fuse, "run", boom)
    monkeypatch.setattr(mesh_stage, "run", boom)
    again = reconstruct([small_scene.image_dir], out, cfg)
    assert len(again.dense) == len(result.dense)
    assert again.mesh.num_triangles == result.mesh.num_triangles
    assert again.report.stages["dense"]["resumed_views"] == len(report["registered"])

    # Depth maps of a newer algorithm are computed again, and fused again: the cloud is never
    # the old maps' while the maps on disk are new.
    monkeypatch.undo()
    monkeypatch.setattr(dense, "ALGORITHM_VERSION", dense.ALGORITHM_VERSION + 1)
    newer = reconstruct([small_scene.image_dir], out, cfg)
    assert {"dense", "fuse"} <= set(newer.report.stage_seconds)
    assert newer.report.stages["dense"].get("resumed_views", 0) == 0
    # so is a mesh of a newer mesh algorithm, the depth maps and the cloud resumed
    monkeypatch.setattr(mesh_stage, "ALGORITHM_VERSION", mesh_stage.ALGORITHM_VERSION + 1)
    monkeypatch.setattr(dense, "estimate_depth", boom)
    monkeypatch.setattr(fuse, "run", boom)
    remeshed = reconstruct([small_scene.image_dir], out, cfg)
    assert "mesh" in remeshed.report.stage_seconds and "fuse" not in remeshed.report.stage_seconds

    # and cameras of a newer SfM algorithm are solved again
    from engine.stages import sfm as sfm_stage

    monkeypatch.undo()
    monkeypatch.setattr(sfm_stage, "ALGORITHM_VERSION", sfm_stage.ALGORITHM_VERSION + 1)
    resolved = reconstruct(
        [small_scene.image_dir], out, dataclasses.replace(cfg, stop_after="sparse")
    )
    assert "sfm" in resolved.report.stage_seconds


def test_no_depth_prior_flag_and_missing_weights_are_reported(small_scene, tmp_path, monkeypatch):
    import engine.config

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    real = engine.config.preset

    def small(name, **kw):
        """The messages are the subject, not the surface: small depth maps and mesh."""
        cfg = real(name, **kw)
        return cfg.replace(
            dense=dataclasses.replace(cfg.dense, max_image_size=240, num_depths=24),
            mesh=dataclasses.replace(cfg.mesh, poisson_depth=6, texture_size=256),
        )

    monkeypatch.setattr(engine.config, "preset", small)
    out = tmp_path / "run"
    code = main.main(["reconstruct", str(small_scene.image_dir), "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["model"]["depth_prior"].startswith("not used: Depth model")
    assert any("Depth prior not used" in w for w in report["warnings"])
    assert (out / "dense.ply").is_file()
    code = main.main(
        ["reconstruct", str(small_scene.image_dir), "--out", str(out), "--no-depth-prior"]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["model"]["depth_prior"] == "not used: turned off (--no-depth-prior)"
