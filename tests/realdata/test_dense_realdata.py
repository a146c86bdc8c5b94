"""Dense surface on the rendered LEGO set: fused points must stay inside its silhouettes.

The set has exact cameras and object masks but no ground-truth surface, so the check is
silhouette consistency: mapped into the true world (similarity of the SfM cameras to the true
ones), the fused points are projected into every photo and must fall inside its mask.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from engine.geometry import align_cameras, pose_errors
from engine.pipeline import reconstruct
from engine.stages import mesh as mesh_stage
from tests.conftest import dataset, read_ground_truth, standard_without_prior

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_lego_dense_cloud_stays_inside_every_silhouette(tmp_path):
    root = dataset("lego")
    cfg = standard_without_prior()
    result = reconstruct([root / "images"], tmp_path / "run", cfg)
    truth = read_ground_truth(root / "cameras.json")
    names = sorted(set(result.sparse.cameras) & set(truth))
    assert len(names) >= 43, result.sparse.unregistered
    # the cameras as tests/realdata/test_sfm_realdata.py checks temple's: 90% placed, right
    err = pose_errors(result.sparse.cameras, truth)
    assert len(result.sparse.cameras) >= 0.9 * len(list((root / "images").iterdir()))
    assert err.median_rotation_deg <= 0.5, sorted(err.rotation_deg)
    s, rot, t = align_cameras(result.sparse.cameras, truth, names)
    points = s * result.dense.xyz.astype(float) @ rot.T + t
    assert len(points) > 50_000
    inside_all, per_view = _inside_silhouettes(points, root, truth, names)
    # Seen: 97.3% inside all 47 silhouettes, 99.2% per view (median).
    assert inside_all.mean() >= 0.95, (inside_all.mean(), min(per_view))
    assert np.median(per_view) >= 0.98, per_view
    # the mesh is the product only: no backdrop or floor around it. In every photo its
    # vertices fall inside the silhouette (seen: at least 98.9% in each of 45 photos); a skirt
    # or a slab would put a large share outside in the photos that see it. Inside all of them
    # at once is stricter for a smooth surface over thin parts (seen: 93.4%).
    mesh = mesh_stage.load_mesh(tmp_path / "run" / "work" / mesh_stage.MESH_FILE)
    vertices = s * np.asarray(mesh.vertices, float) @ rot.T + t
    inside_mesh, per_view_mesh = _inside_silhouettes(vertices, root, truth, names)
    assert min(per_view_mesh) >= 0.97, per_view_mesh
    assert inside_mesh.mean() >= 0.90, inside_mesh.mean()
    # the base plate is the model's own: in 3D it passes for a support, but the set's masks
    # hold it (seen: 100% of it), so it is not cut; the mesh covers the product's dense points
    # (seen: 0.957)
    assert result.report.stages["mesh"]["support_in_own_masks"] >= mesh_stage.FLOOR_IN_MASKS
    assert not result.report.stages["mesh"]["floor_cut"]
    assert result.report.stages["mesh"]["completeness"] >= 0.95
    # the export stands upright: the model's up within 10 deg of the set's true up
    up = np.asarray(result.report.frame["up"])
    true_up = np.asarray(json.loads((root / "cameras.json").read_text())["up"], float)
    assert np.degrees(np.arccos(np.clip(rot @ up @ true_up, -1, 1))) < 10.0


def _inside_silhouettes(points, root, truth, names):
    """Which points fall inside the set's mask in every photo that sees them (2 px slack),
    and the share inside per photo."""
    inside_all = np.ones(len(points), bool)
    per_view = []
    for name in names:
        cam = truth[name]
        mask = cv2.imread(str(root / "masks" / f"{name.rsplit('.', 1)[0]}.png"), 0) > 127
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        pc = points @ cam.R.T + cam.t
        uv = pc[:, :2] / pc[:, 2:3] * np.diag(cam.K)[:2] + cam.K[:2, 2]
        seen = (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0)
        seen &= uv[:, 1] < cam.height
        px = np.clip(uv.astype(int), 0, [cam.width - 1, cam.height - 1])
        hit = mask[px[:, 1], px[:, 0]]
        per_view.append(hit[seen].mean())
        inside_all &= ~seen | hit
    return inside_all, per_view
