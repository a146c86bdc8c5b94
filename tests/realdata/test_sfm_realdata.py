"""SfM on the shared real/rendered datasets (skipped with a reason when they are absent)."""

from __future__ import annotations

import pytest

from engine.config import preset
from engine.geometry import pose_errors
from engine.pipeline import reconstruct
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


def test_socketed_axe_registers(tmp_path):
    _, result, n = _run("socketed_axe", tmp_path)
    assert len(result.sparse.cameras) >= 0.9 * n, result.sparse.unregistered
    # Its masks (masks/<stem>.png beside images/) were found and used for every photo.
    assert all(r.mask_path is not None for r in result.ingest.images)
