"""The product alone on a cluttered real shoot: et's plush sits on a phone book on a pile.

No ground truth: the checks are the support's cut and the mesh's shape. Before the support
finder looked only under the support's footprint, it refused the book's top because the room
around the book (6% of the points) lies lower, and the GLB kept the book as a slab.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.pipeline import reconstruct
from engine.stages import mesh as mesh_stage
from tests.conftest import dataset, standard_without_prior

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _largest_plane_share(vertices: np.ndarray, faces: np.ndarray, trials: int = 500) -> float:
    """The largest share of the mesh's area within 1% of its size of one plane (RANSAC)."""
    a = vertices[faces[:, 1]] - vertices[faces[:, 0]]
    b = vertices[faces[:, 2]] - vertices[faces[:, 0]]
    area = np.linalg.norm(np.cross(a, b), axis=1) / 2
    centres = vertices[faces].mean(axis=1)
    tol = 0.01 * float(np.linalg.norm(np.ptp(vertices, axis=0)))
    rng = np.random.default_rng(0)
    best = 0.0
    for _ in range(trials):
        q = centres[rng.choice(len(centres), 3, p=area / area.sum())]
        n = np.cross(q[1] - q[0], q[2] - q[0])
        if np.linalg.norm(n) < 1e-12:
            continue
        n /= np.linalg.norm(n)
        best = max(best, float(area[np.abs((centres - q[0]) @ n) <= tol].sum() / area.sum()))
    return best


def test_et_keeps_the_plush_and_cuts_the_book_it_sits_on(tmp_path):
    root = dataset("et")
    cfg = standard_without_prior()
    out = tmp_path / "run"
    result = reconstruct([root / "images"], out, cfg)
    assert result.report.status == "finished"
    assert len(result.sparse.cameras) == 9
    stats = result.report.stages["mesh"]
    assert stats["floor_cut"], stats
    # no slab: a plush has no flat face, the book's top was one plane holding 44% of the mesh's
    # area (seen after: 15%, as the synthetic products and temple: 12-16% within that band)
    mesh = mesh_stage.load_mesh(out / "work" / mesh_stage.MESH_FILE)
    vertices, faces = np.asarray(mesh.vertices, float), np.asarray(mesh.faces, np.int64)
    assert _largest_plane_share(vertices, faces) < 0.25
    # nothing below the support in the exported frame (+y up, base at y = 0), and the plush
    # whole where the photos saw it (seen: 0.972)
    m = np.asarray(result.report.frame["glb_from_sparse"])
    y = (vertices @ m[:3, :3].T + m[:3, 3])[:, 1]
    assert np.percentile(y, 0.5) > -0.01 * np.ptp(y)
    assert stats["completeness"] >= 0.95
