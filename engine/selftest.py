"""``vitrine --selftest``: a tiny synthetic reconstruction, checked against its ground truth.

It renders the synthetic box (24 small views), runs the whole pipeline on it (SfM with pycolmap,
the torch dense stage, fusion, the mesh stage in its spawned child process, the exports) and
checks the result against the scene's truth: cameras placed, the cloud and the mesh within a few
millimetres of the true surface, every file of the run folder present, the GLB readable. It also
loads a tiny random-weight Depth-Anything network written on the spot, so the transformers model
code is exercised without any downloaded weights. Everything runs offline in a temporary folder.

It is what a packaged app is checked with (bench/build_bundle.sh): the parts most likely to break
when frozen are exactly these (pycolmap's libraries, the spawned mesh child, plotly.js data,
transformers' lazy imports).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import engine
from engine.config import PipelineConfig, preset

#: The synthetic scene: two rings of 12 views at 400x300. One ring does not register reliably;
#: at 320x240 the mappers place all 24 but the dense cloud swung between 66% and 100% of its
#: points within 5 mm with nothing but the run folder's path changed (2026-12-06); at 400x300:
#: 0.10 deg, 100% within 5 mm, 2 s more.
SCENE = {
    "kind": "box",
    "n_azimuth": 12,
    "elevations_deg": (20.0, 45.0),
    "width": 400,
    "height": 300,
    "supersample": 2,
    "n_surface_points": 60_000,
}
#: Fraction of the views that must be placed.
MIN_PLACED = 0.9
#: Median camera rotation error allowed (degrees).
MAX_ROTATION_DEG = 1.0
#: Median camera-centre error allowed (millimetres; the cameras stand about 45 cm away).
MAX_CENTRE_MM = 10.0
#: Median distance of cloud points and mesh vertices to the true surface allowed (millimetres).
MAX_MEDIAN_MM = 2.0
#: Fraction of cloud points / mesh vertices that must lie within ``NEAR_MM`` of the truth.
MIN_NEAR = 0.9
NEAR_MM = 5.0
#: Fraction of the true surface that must have a cloud point within ``NEAR_MM``.
MIN_COVERED = 0.6


@dataclass(frozen=True)
class Check:
    """One line of the selftest's report."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``PASS name: detail`` or ``FAIL name: detail``."""
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def selftest_config(device: str = "auto") -> PipelineConfig:
    """The standard preset shrunk to the tiny scene (same stages, fewer hypotheses).

    The depth prior is off: the selftest needs no model weights (the loader is checked apart).
    """
    cfg = preset("standard", device=device)
    return cfg.replace(
        dense=dataclasses.replace(
            cfg.dense, max_image_size=256, num_depths=24, levels=2, num_sources=3
        ),
        depth_prior=dataclasses.replace(cfg.depth_prior, enabled=False),
        mesh=dataclasses.replace(cfg.mesh, poisson_depth=7, max_triangles=20_000, texture_size=512),
        export=dataclasses.replace(cfg.export, point_budget=50_000, product_name="Selftest box"),
    )


def versions() -> str:
    """One line: vitrine, Python, torch, pycolmap, the device a run would use, frozen or not."""
    parts = [f"vitrine {engine.__version__}", f"python {platform.python_version()}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
    except Exception as exc:  # noqa: BLE001 - reported, the checks below then fail
        parts.append(f"torch unavailable ({type(exc).__name__}: {exc})")
    try:
        import pycolmap

        parts.append(f"pycolmap {pycolmap.__version__}")
    except Exception as exc:  # noqa: BLE001
        parts.append(f"pycolmap unavailable ({type(exc).__name__}: {exc})")
    try:
        from engine.device import resolve_device

        parts.append(f"device {resolve_device('auto')}")
    except Exception as exc:  # noqa: BLE001
        parts.append(f"device unknown ({type(exc).__name__}: {exc})")
    parts.append("packaged app" if getattr(sys, "frozen", False) else "from source")
    return "vitrine selftest: " + ", ".join(parts)


def _aligned(points: np.ndarray, similarity: tuple[float, np.ndarray, np.ndarray]) -> np.ndarray:
    s, rot, t = similarity
    return s * np.asarray(points, np.float64) @ rot.T + t


def _distances(points: np.ndarray, surface: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(surface).query(points, k=1)[0]


def _check_cameras(scene: Any, result: Any) -> tuple[Check, Any]:
    from engine.geometry import pose_errors

    n = len(scene.cameras)
    placed = 0 if result.sparse is None else len(result.sparse.cameras)
    if placed < 3:
        return Check("cameras", False, f"{placed}/{n} placed (at least 3 needed to compare)"), None
    err = pose_errors(result.sparse.cameras, scene.camera_dict())
    rot, centre = err.median_rotation_deg, 1000 * err.median_center_error
    ok = placed >= MIN_PLACED * n and rot <= MAX_ROTATION_DEG and centre <= MAX_CENTRE_MM
    detail = (
        f"{placed}/{n} placed (>= {MIN_PLACED:.0%}), median rotation error {rot:.2f} deg "
        f"(<= {MAX_ROTATION_DEG:g}), centre error {centre:.1f} mm (<= {MAX_CENTRE_MM:g})"
    )
    return Check("cameras", ok, detail), (err.scale, err.rotation, err.translation)


def _check_surface(name: str, points: np.ndarray | None, scene: Any, similarity: Any) -> Check:
    noun = "vertices" if name == "mesh" else "points"
    if points is None or len(points) == 0:
        return Check(name, False, "nothing was built")
    if similarity is None:
        return Check(name, False, f"{len(points)} {noun}, but no cameras to align them with")
    pts = _aligned(points, similarity)
    d = 1000 * _distances(pts, scene.surface_points)
    median, near = float(np.median(d)), float(np.mean(d <= NEAR_MM))
    ok = median <= MAX_MEDIAN_MM and near >= MIN_NEAR
    detail = (
        f"{len(pts)} {noun}, median distance to the true surface {median:.2f} mm "
        f"(<= {MAX_MEDIAN_MM:g}), {near:.0%} within {NEAR_MM:g} mm (>= {MIN_NEAR:.0%})"
    )
    if name == "dense cloud":
        covered = float(np.mean(1000 * _distances(scene.surface_points, pts) <= NEAR_MM))
        ok = ok and covered >= MIN_COVERED
        detail += f", {covered:.0%} of the surface covered (>= {MIN_COVERED:.0%})"
    return Check(name, ok, detail)


def _check_files(out: Path, result: Any) -> list[Check]:
    from engine.export.glb import read_glb
    from engine.export.ply import read_ply

    checks = []
    missing = [
        name
        for name in (
            "report.json",
            "config.json",
            "run.log",
            "sparse/0/cameras.bin",
            "sparse/0/images.bin",
            "sparse/0/points3D.bin",
            "dense.ply",
            "mesh.glb",
            "viewer.html",
        )
        if not (out / name).is_file() or (out / name).stat().st_size == 0
    ]
    report = {}
    if (out / "report.json").is_file():
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    status = report.get("status", "missing")
    checks.append(
        Check(
            "run folder",
            not missing and status == "finished",
            f"report.json says {status!r}; "
            + (f"missing or empty: {', '.join(missing)}" if missing else "every file present"),
        )
    )
    if (out / "dense.ply").is_file():
        n_ply = len(read_ply(out / "dense.ply"))
        n_run = 0 if result.dense is None else len(result.dense)
        checks.append(Check("dense.ply", n_ply == n_run > 0, f"{n_ply} points read back"))
    if (out / "viewer.html").is_file():
        page = (out / "viewer.html").read_text(encoding="utf-8")
        # plotly.min.js starts with its licence header "plotly.js vX.Y.Z"
        found = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", page)
        remote = re.search(r"<script[^>]+src=", page) is not None
        size = len(page.encode()) / 1e6
        checks.append(
            Check(
                "viewer.html",
                found is not None and not remote and size > 1.0,
                f"{size:.1f} MB, "
                + (f"plotly.js {found.group(1)} inlined" if found else "plotly.js NOT inlined")
                + (", loads a remote script" if remote else ", no remote scripts"),
            )
        )
    if (out / "mesh.glb").is_file():
        try:
            mesh = read_glb(out / "mesh.glb")
            tris = mesh.num_triangles
            textured = mesh.texture is not None
            expected = 0 if result.mesh is None else result.mesh.num_triangles
            checks.append(
                Check(
                    "mesh.glb",
                    tris == expected > 0 and textured,
                    f"parses: {tris} triangles (run: {expected}), "
                    + ("textured" if textured else "NO texture"),
                )
            )
        except Exception as exc:  # noqa: BLE001 - a file the app wrote and cannot read back
            checks.append(Check("mesh.glb", False, f"does not parse: {exc}"))
    return checks


def tiny_depth_anything_config(input_size: int) -> Any:
    """A Depth-Anything config small enough to build in a second (random weights, no download).

    The self-test and the test suite's tiny models (tests/tiny_models.py) both use it.
    ``input_size`` is the network input side in pixels (a multiple of the 14 px patch).
    """
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=input_size,
        patch_size=14,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )


def _check_depth_network(folder: Path, image: Path) -> Check:
    """Save a tiny random-weight Depth-Anything network, load it offline, predict one photo."""
    import torch
    from PIL import Image
    from transformers import DepthAnythingForDepthEstimation

    from engine.models._hub import quiet_transformers
    from engine.models.depth_anything import load_depth_model

    config = tiny_depth_anything_config(56)
    torch.manual_seed(0)
    with quiet_transformers():
        DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    estimator = load_depth_model(folder, device="cpu", input_size=56)
    with Image.open(image) as im:
        rgb = np.asarray(im.convert("RGB"))
    depth = estimator.predict(rgb)
    ok = depth.shape == rgb.shape[:2] and bool(np.isfinite(depth).all())
    return Check(
        "depth network",
        ok,
        f"tiny random-weight Depth-Anything saved and loaded offline through transformers "
        f"{_version('transformers')}, output {depth.shape[1]}x{depth.shape[0]}"
        + ("" if ok else " (expected the photo's size, finite values)"),
    )


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except Exception:  # noqa: BLE001
        return "?"


def _guarded(name: str, fn: Callable[[], Any], add: Callable[[Check], None]) -> Any:
    """Run ``fn``; an exception becomes a FAIL line named ``name`` (the selftest never raises)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none escapes
        add(Check(name, False, f"{type(exc).__name__}: {exc}"))
        return None


def run_selftest(workdir: Path | None = None, *, stream: TextIO | None = None) -> int:
    """Reconstruct a tiny synthetic scene, check it against its truth and print one line a check.

    Parameters
    ----------
    workdir
        Folder to work in (created; kept afterwards); default: a temporary folder, removed
        afterwards.
    stream
        Where the report goes (default: ``sys.stdout`` at the time of the call): the versions
        first, one ``PASS``/``FAIL`` line per check as it is made, then ``selftest: OK (N s)``
        or ``selftest: FAILED: <checks> (N s)``.

    Returns
    -------
    int
        0 when every check passed, 1 otherwise. Never raises.
    """
    start = time.monotonic()
    checks: list[Check] = []

    out = sys.stdout if stream is None else stream

    def emit(line: str) -> None:
        print(line, file=out, flush=True)

    def add(check: Check) -> None:
        checks.append(check)
        emit(check.line())

    temporary = workdir is None
    try:
        if temporary:
            root = Path(tempfile.mkdtemp(prefix="vitrine-selftest-"))
        else:
            root = Path(workdir)
            root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        emit(f"selftest: FAILED: no folder to work in ({exc}); set TMPDIR to a writable folder")
        return 1
    try:
        emit(versions())
        emit("note: depth prior off (the selftest needs no model weights and no network)")
        _steps(root, add)
    except Exception as exc:  # noqa: BLE001 - the selftest never raises
        add(Check("selftest", False, f"{type(exc).__name__}: {exc}"))
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    seconds = time.monotonic() - start
    failed = [c.name for c in checks if not c.ok]
    if failed or not checks:
        emit(f"selftest: FAILED: {', '.join(failed) or 'no checks ran'} ({seconds:.0f} s)")
        return 1
    emit(f"selftest: OK ({seconds:.0f} s)")
    return 0


def _steps(root: Path, add: Callable[[Check], None]) -> None:
    """Render, reconstruct, check; each check is handed to ``add`` as soon as it is made."""
    from engine.pipeline import reconstruct
    from engine.synthetic import render_scene

    params = dict(SCENE)
    kind = params.pop("kind")
    scene = _guarded("synthetic scene", lambda: render_scene(root / "scene", kind, **params), add)
    if scene is None:
        return
    size = f"{params['width']}x{params['height']}"
    add(Check("synthetic scene", True, f"{len(scene.image_paths)} {kind} views at {size}"))

    out = root / "run"
    t0 = time.monotonic()
    result = _guarded(
        "reconstruction", lambda: reconstruct([scene.image_dir], out, selftest_config()), add
    )
    if result is None:
        return
    seconds = ", ".join(f"{k} {v:.1f}" for k, v in result.report.stage_seconds.items())
    mesh_info = result.report.stages.get("mesh", {})
    detail = f"{time.monotonic() - t0:.0f} s on {result.report.device} ({seconds} s)"
    if not mesh_info.get("built"):
        detail += f"; no mesh: {mesh_info.get('reason', 'the mesh stage did not run')}"
    add(
        Check(
            "reconstruction",
            result.report.status == "finished" and bool(mesh_info.get("built")),
            detail,
        )
    )
    cams, similarity = _check_cameras(scene, result)
    add(cams)
    dense = None if result.dense is None else result.dense.xyz
    add(_check_surface("dense cloud", dense, scene, similarity))
    mesh = None if result.mesh is None else result.mesh.vertices
    add(_check_surface("mesh", mesh, scene, similarity))
    for check in _guarded("run folder", lambda: _check_files(out, result), add) or []:
        add(check)
    net = _guarded(
        "depth network",
        lambda: _check_depth_network(root / "tiny-depth-model", scene.image_paths[0]),
        add,
    )
    if net is not None:
        add(net)
