"""Dense surface accuracy end to end: SfM cameras -> depth maps -> fusion, against ground truth.

The fused cloud is mapped into the true world by the similarity that aligns the SfM cameras to
the true cameras (no fitting to the surface itself), then scored against surface samples.
"""

from __future__ import annotations

import pytest

from engine.config import preset
from engine.geometry import align_cameras, outside_box_fraction, surface_scores
from engine.stages import dense, fuse

#: F-score at 1% of the object's size asked for (textured scenes) and for the low-texture one.
MIN_FSCORE = {"bottle": 0.90, "box": 0.90, "lowtex": 0.75}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bottle", "box", "lowtex"])
def test_fused_cloud_matches_the_true_surface(solved, kind, tmp_path):
    scene, images, model, _ = solved(kind)
    cfg = preset("standard")
    events = []
    depth = dense.run(
        dense.DenseInputs(images, model), cfg.dense, tmp_path / "dense", progress=events.append
    )
    fused = fuse.run(list(depth.paths), cfg.fuse, tmp_path / "dense.ply")
    truth = scene.camera_dict()
    s, rot, t = align_cameras(model.cameras, truth, sorted(model.cameras))
    points = s * fused.cloud.xyz.astype(float) @ rot.T + t
    scores = surface_scores(points, scene.surface_points, 0.01 * scene.object_size)
    at_2mm = surface_scores(points, scene.surface_points, 0.002)
    floaters = outside_box_fraction(points, scene.bbox_min, scene.bbox_max, 0.10)
    summary = (kind, scores, at_2mm, floaters, len(points))
    assert scores.fscore >= MIN_FSCORE[kind], summary
    assert floaters <= 0.02, summary
    assert len(depth.paths) == model.num_registered
    # the live preview got points from every view while the depth maps were computed
    assert sum(1 for e in events if e.partial is not None and len(e.partial)) == len(depth.paths)
