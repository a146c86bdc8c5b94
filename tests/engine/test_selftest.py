"""``vitrine --selftest``: passes on a healthy install; else exit 1 and the failed check named."""

from __future__ import annotations

import re
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest

import main
from engine import selftest
from engine.errors import ReconstructionError
from engine.stages import sfm as sfm_stage

#: Every check a healthy selftest reports.
CHECKS = (
    "synthetic scene",
    "reconstruction",
    "cameras",
    "dense cloud",
    "mesh",
    "run folder",
    "dense.ply",
    "viewer.html",
    "mesh.glb",
    "depth network",
)


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch):
    """Send the selftest's temporary folder into ``tmp_path`` (to see that it is removed)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.mark.slow
def test_selftest_passes_from_the_command_line(private_tmp, capsys):
    code = main.main(["--selftest"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0, "\n".join(lines)
    first = lines[0]
    assert first.startswith("vitrine selftest: vitrine ")
    for part in ("torch ", "pycolmap 4.", "device ", "from source"):
        assert part in first, first
    passed = {line[5:].split(":")[0] for line in lines if line.startswith("PASS ")}
    assert passed == set(CHECKS), lines
    assert not [line for line in lines if line.startswith("FAIL")]
    # the numbers are printed: all 24 views placed, cloud and mesh within millimetres of the truth
    text = "\n".join(lines)
    placed = re.search(r"PASS cameras: (\d+)/24 placed", text)
    assert placed and int(placed.group(1)) >= 22, text
    for what in ("dense cloud", "mesh"):
        median = re.search(
            rf"PASS {what}: \d+ \w+, median distance to the true surface ([\d.]+) mm", text
        )
        assert median and float(median.group(1)) <= selftest.MAX_MEDIAN_MM, text
    assert re.fullmatch(r"selftest: OK \(\d+ s\)", lines[-1]), lines[-1]
    # the temporary run folder is gone
    assert not list(private_tmp.glob("vitrine-selftest-*"))


def test_a_failing_stage_fails_the_selftest_with_its_reason(private_tmp, monkeypatch, capsys):
    # a smaller scene: SfM is replaced by a failure, so only rendering and masks run
    monkeypatch.setattr(
        selftest, "SCENE", {**selftest.SCENE, "n_azimuth": 6, "width": 160, "height": 120}
    )

    def no_cameras(*args, **kwargs):
        raise ReconstructionError("Only 2 of 12 photos could be placed.")

    monkeypatch.setattr(sfm_stage, "run", no_cameras)
    code = main.main(["--selftest"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1
    assert "PASS synthetic scene: 12 box views at 160x120" in lines
    fails = [line for line in lines if line.startswith("FAIL")]
    assert fails == [
        "FAIL reconstruction: ReconstructionError: Only 2 of 12 photos could be placed."
    ]
    assert re.fullmatch(r"selftest: FAILED: reconstruction \(\d+ s\)", lines[-1]), lines[-1]
    assert not list(private_tmp.glob("vitrine-selftest-*"))


def test_an_unexpected_error_is_reported_not_raised(tmp_path, monkeypatch, capsys):
    import engine.synthetic

    def broken(*args, **kwargs):
        raise MemoryError("cannot allocate the image buffer")

    monkeypatch.setattr(engine.synthetic, "render_scene", broken)
    work = tmp_path / "kept"
    code = selftest.run_selftest(work)
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1
    assert lines[-2] == "FAIL synthetic scene: MemoryError: cannot allocate the image buffer"
    assert re.fullmatch(r"selftest: FAILED: synthetic scene \(\d+ s\)", lines[-1])
    assert work.is_dir()  # a folder the caller gave is kept


def _sphere(n: int, radius: float = 0.05, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return radius * p / np.linalg.norm(p, axis=1, keepdims=True)


def test_surface_check_measures_the_distance_to_the_truth():
    truth = _sphere(20_000)  # samples about 1.3 mm apart on a 5 cm sphere
    scene = SimpleNamespace(surface_points=truth)
    identity = (1.0, np.eye(3), np.zeros(3))
    close = truth[:5_000] * 1.01  # 0.5 mm outside the true sphere
    good = selftest._check_surface("dense cloud", close, scene, identity)
    assert good.ok, good.line()
    assert "median distance to the true surface 0.50 mm" in good.line()
    far = truth[:5_000] * 1.16  # 8 mm outside
    bad = selftest._check_surface("mesh", far, scene, identity)
    assert not bad.ok
    assert bad.line().startswith(
        "FAIL mesh: 5000 vertices, median distance to the true surface 8.00 mm"
    )
    assert "0% within 5 mm" in bad.line()
    # the similarity found from the cameras is applied first (here: scale 2 maps it back)
    halved = selftest._check_surface("dense cloud", close / 2, scene, (2.0, np.eye(3), np.zeros(3)))
    assert halved.ok, halved.line()
    assert not selftest._check_surface("mesh", None, scene, identity).ok
