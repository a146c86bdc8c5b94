"""SfM on the shared real/rendered datasets (skipped with a reason when they are absent)."""

from __future__ import annotations

import pytest

from engine.config import preset
from engine.geometry import pose_errors
from engine.pipeline import reconstruct
from engine.stages import ingest, sfm
from tests.conftest import dataset, read_ground_truth

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _run(name: str, tmp_path):
    root = dataset(name)
    result = reconstruct([root / "images"], tmp_path / "run", preset("preview"))
    n = len(list((root / "images").iterdir()))
    return root, result, n


# lego's cameras are checked the same way on its standard run, in
# tests/realdata/test_dense_realdata.py (one SfM of the set instead of two).
@pytest.mark.parametrize("name", ["temple_sparse_ring"])
def test_registers_and_matches_ground_truth(name, tmp_path):
    root, result, n = _run(name, tmp_path)
    cams = result.sparse.cameras
    assert len(cams) >= 0.9 * n, result.sparse.unregistered
    err = pose_errors(cams, read_ground_truth(root / "cameras.json"))
    assert err.median_rotation_deg <= 0.5, sorted(err.rotation_deg)


def test_socketed_axe_registers_on_the_first_attempt(tmp_path):
    """The standard preset's SfM (1,600 px working copies) on the axe and its own masks."""
    root = dataset("socketed_axe")
    cfg = preset("standard")
    images = ingest.run([root / "images"], cfg.ingest, tmp_path / "run" / "work")
    # Its masks (masks/<stem>.png beside images/) were found and are used by SfM.
    assert all(r.mask_path is not None and r.mask_source == "file" for r in images.images)
    model = sfm.run(images, cfg.sfm, tmp_path / "run")
    n = len(images.images)
    assert model.num_registered == n, model.unregistered
    # The axe is about 11% of each frame: the first attempt looks one octave finer, so the
    # masks leave it enough features and no stronger retry is needed (at octave 0 it placed
    # 26 of the 52 photos, and the retry cost 75 s).
    first = model.attempts[0]
    assert (first["first_octave"], first["extractor"]) == (-1, "opencv")
    assert {a["name"] for a in model.attempts} == {"standard"}, model.attempts
