"""Depth-map fusion against ground truth: exact and noisy synthetic depth maps of the bottle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from engine.config import FuseConfig
from engine.errors import ReconstructionError
from engine.export.ply import read_ply
from engine.geometry import outside_box_fraction, surface_scores
from engine.io.depthmaps import depth_map_path, save_depth_map
from engine.progress import Cancelled, CancelToken, ProgressEvent
from engine.stages import fuse
from engine.synthetic import depth_map
from engine.types import ORIGIN_MVS, ORIGIN_PRIOR, DepthMap, PointCloud

W, H = 400, 300
VIEWS = {"n_azimuth": 12, "elevations_deg": (20.0, 45.0), "width": W, "height": H}
CFG = FuseConfig()


@pytest.fixture(scope="module")
def scene(scene_factory):
    return scene_factory("bottle", **VIEWS)


@pytest.fixture(scope="module")
def truth(scene):
    """Per view: camera, exact depth (0 off the object) and the rendered colours."""
    views = []
    for cam, path in zip(scene.cameras, scene.image_paths, strict=True):
        depth = depth_map("bottle", cam)
        depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        views.append((cam, depth, rgb))
    return views


def _back_project(cam, depth: np.ndarray) -> np.ndarray:
    """World points of the pixels with depth > 0, (N, 3)."""
    rows, cols = np.nonzero(depth > 0)
    d = depth[rows, cols].astype(np.float64)
    x = (cols + 0.5 - cam.K[0, 2]) / cam.K[0, 0]
    y = (rows + 0.5 - cam.K[1, 2]) / cam.K[1, 1]
    pc = np.stack([x * d, y * d, d], axis=1)
    return (pc - cam.t) @ cam.R


def _write(folder: Path, truth, edit=None) -> list[Path]:
    """Save one depth map per view; ``edit(i, cam, depth, rgb)`` may return changed arrays."""
    paths = []
    for i, (cam, depth, rgb) in enumerate(truth):
        depth, rgb = depth.copy(), rgb.copy()
        conf = (depth > 0).astype(np.float32)
        origin = np.where(depth > 0, ORIGIN_MVS, 0).astype(np.uint8)
        mask = None
        if edit is not None:
            changed = edit(i, cam, depth, rgb)
            if changed is not None:
                depth = changed.get("depth", depth)
                conf = changed.get("confidence", conf)
                rgb = changed.get("rgb", rgb)
                origin = changed.get("origin", origin)
                mask = changed.get("mask")
        path = depth_map_path(folder, cam.name)
        save_depth_map(path, DepthMap(cam.name, cam, depth, conf, rgb, mask, origin))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def exact(scene, truth, tmp_path_factory):
    """Fusion of the exact depth maps, with its PLY and progress events."""
    folder = tmp_path_factory.mktemp("fuse_exact")
    maps = _write(folder / "maps", truth)
    events: list[ProgressEvent] = []
    result = fuse.run(maps, CFG, folder / "dense.ply", progress=events.append)
    return maps, result, events, folder / "dense.ply"


def test_exact_depths_give_an_accurate_complete_cloud(scene, exact):
    _, result, _, _ = exact
    cloud = result.cloud
    assert cloud.xyz.dtype == np.float32 and cloud.rgb.dtype == np.uint8
    assert cloud.normals is not None and cloud.normals.dtype == np.float32
    scores = surface_scores(cloud.xyz, scene.surface_points, 0.01 * scene.object_size)
    assert scores.fscore >= 0.95, scores
    # finer: most points within a quarter of a percent of the object size
    fine = surface_scores(cloud.xyz, scene.surface_points, 0.0025 * scene.object_size)
    assert fine.precision >= 0.9, fine
    assert outside_box_fraction(cloud.xyz, scene.bbox_min, scene.bbox_max, 0.10) <= 0.01
    stats = result.stats
    assert stats["views"] == len(scene.cameras)
    assert (
        stats["points_before_filter"]
        >= stats["pixels_tested"]
        >= stats["points_consistent"]
        >= stats["points_after_voxel"]
        >= stats["points_after_outliers"]
        == stats["points"]
        == len(cloud)
        > 10_000
    )
    assert stats["prior_fraction"] == 0.0
    assert 0 < stats["neighbours_mean"] <= fuse.MAX_NEIGHBOURS
    assert stats["seconds"] > 0


def test_normals_are_unit_outward_and_accurate(scene, exact):
    cloud = exact[1].cloud
    np.testing.assert_allclose(np.linalg.norm(cloud.normals, axis=1), 1.0, atol=1e-4)
    _, nearest = cKDTree(scene.surface_points).query(cloud.xyz)
    cos = np.sum(cloud.normals * scene.surface_normals[nearest], axis=1)
    assert np.mean(cos > 0) >= 0.99  # towards the cameras = outward on a closed object
    assert np.degrees(np.arccos(np.clip(np.median(cos), -1, 1))) <= 3.0


def test_duplicates_are_merged(scene, exact):
    """Views overlap about ten-fold; the cloud holds about one point per voxel of surface."""
    result = exact[1]
    voxel = result.stats["voxel_size"]
    # bottle side + top area / voxel area: the point count stays within a small factor of it
    area = 2 * np.pi * 0.045 * 0.25 + np.pi * 0.045**2
    assert len(result.cloud) <= 3 * area / voxel**2
    dist, _ = cKDTree(result.cloud.xyz).query(result.cloud.xyz, k=2)
    assert np.median(dist[:, 1]) >= 0.5 * voxel


def test_noise_and_gross_outliers(scene, truth, tmp_path):
    rng = np.random.default_rng(5)

    def corrupt(i, cam, depth, rgb):
        valid = depth > 0
        noisy = depth * (1.0 + 0.003 * rng.standard_normal(depth.shape)).astype(np.float32)
        bad = valid & (rng.random(depth.shape) < 0.03)
        lo, hi = depth[valid].min(), depth[valid].max()
        noisy[bad] = rng.uniform(lo, hi, int(bad.sum()))
        return {"depth": np.where(valid, noisy, 0).astype(np.float32)}

    result = fuse.run(_write(tmp_path, truth, corrupt), CFG, None)
    xyz = result.cloud.xyz
    assert outside_box_fraction(xyz, scene.bbox_min, scene.bbox_max, 0.10) <= 0.02
    scores = surface_scores(xyz, scene.surface_points, 0.01 * scene.object_size)
    assert scores.fscore >= 0.9, scores
    # one map's 0.3% noise is about 1.1 mm median error; averaging agreeing views beats it
    assert scores.median_error <= 0.0009, scores


def test_depth_seen_by_one_view_only_does_not_survive(scene, truth, tmp_path):
    blobs = []

    def inject(i, cam, depth, rgb):
        if i != 5:
            return None
        on = np.argwhere(depth > 0)
        r0, c0 = on.mean(axis=0).astype(int)
        fake = np.zeros_like(depth)
        # a patch floating 12% in front of the bottle, and one in the empty background
        fake[r0 - 15 : r0 + 15, c0 - 15 : c0 + 15] = 0.88 * depth[r0, c0]
        fake[20:50, 20:50] = depth[r0, c0]
        assert not (depth[20:50, 20:50] > 0).any()
        blobs.append(_back_project(cam, fake))
        depth = np.where(fake > 0, fake, depth)
        return {"depth": depth, "confidence": (depth > 0).astype(np.float32)}

    result = fuse.run(_write(tmp_path, truth, inject), CFG, None)
    dist, _ = cKDTree(result.cloud.xyz).query(blobs[0])
    assert dist.min() > 0.01 * scene.object_size
    scores = surface_scores(result.cloud.xyz, scene.surface_points, 0.01 * scene.object_size)
    assert scores.precision == 1.0 and scores.fscore >= 0.95


def test_partial_events_once_per_view_in_order(scene, exact):
    maps, result, events, _ = exact
    partial = [e for e in events if e.partial is not None]
    n = len(maps)
    assert [e.current for e in partial] == list(range(1, n + 1))
    assert all(e.stage == "fuse" and e.total == n for e in events)
    assert [e.message for e in partial] == [f"fused view {c.name}" for c in scene.cameras]
    assert all(isinstance(e.partial, PointCloud) for e in partial)
    assert sum(len(e.partial) for e in partial) == result.stats["points_consistent"]
    lo, hi = result.cloud.xyz.min(axis=0), result.cloud.xyz.max(axis=0)
    pad = 0.02 * (hi - lo)
    for e in partial:
        pc = e.partial
        assert pc.xyz.shape == pc.rgb.shape == pc.normals.shape == (len(pc), 3)
        inside = np.all((pc.xyz >= lo - pad) & (pc.xyz <= hi + pad), axis=1)
        assert inside.all()
    # the first views fuse most of the surface; later ones add what only they see
    assert len(partial[0].partial) > len(partial[-1].partial)


def test_cancel_between_views(truth, exact):
    maps = exact[0]
    token = CancelToken()
    seen: list[ProgressEvent] = []

    def on_event(event: ProgressEvent) -> None:
        seen.append(event)
        if event.current == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        fuse.run(maps, CFG, None, progress=on_event, cancel=token)
    assert [e.current for e in seen] == [1, 2, 3]

    early = CancelToken()
    early.cancel()
    with pytest.raises(Cancelled):
        fuse.run(maps, CFG, None, progress=seen.append, cancel=early)
    assert len(seen) == 3


def test_prior_fraction_tracks_prior_pixels(scene, truth, tmp_path):
    z_split = 0.12

    def mark(i, cam, depth, rgb):
        world_z = np.zeros(depth.shape)
        world_z[depth > 0] = _back_project(cam, depth)[:, 2]
        origin = np.where(depth > 0, ORIGIN_MVS, 0)
        origin[(depth > 0) & (world_z > z_split)] = ORIGIN_PRIOR
        return {"origin": origin.astype(np.uint8)}

    result = fuse.run(_write(tmp_path, truth, mark), CFG, None)
    expected = float(np.mean(result.cloud.xyz[:, 2] > z_split))
    assert 0.2 < expected < 0.8
    assert result.stats["prior_fraction"] == pytest.approx(expected, abs=0.01)

    def all_prior(i, cam, depth, rgb):
        return {"origin": np.full(depth.shape, ORIGIN_PRIOR, np.uint8)}

    assert fuse.run(_write(tmp_path / "all", truth, all_prior), CFG, None).stats[
        "prior_fraction"
    ] == pytest.approx(1.0)


def test_confidence_and_mask_limit_the_fused_pixels(scene, truth, tmp_path):
    """Pixels under min_confidence or outside the mask never become points."""

    def limit(i, cam, depth, rgb):
        world_z = np.zeros(depth.shape)
        world_z[depth > 0] = _back_project(cam, depth)[:, 2]
        conf = np.where(world_z > 0.20, 0.05, 1.0).astype(np.float32) * (depth > 0)
        return {"confidence": conf, "mask": (depth > 0) & (world_z > 0.03)}

    xyz = fuse.run(_write(tmp_path, truth, limit), CFG, None).cloud.xyz
    assert len(xyz) > 10_000
    assert xyz[:, 2].max() <= 0.20 + 0.002
    assert xyz[:, 2].min() >= 0.03 - 0.002


def test_ply_reads_back_with_unit_normals_and_colours(truth, tmp_path):
    colour = np.array([10, 120, 250], np.uint8)

    def paint(i, cam, depth, rgb):
        return {"rgb": np.broadcast_to(colour, rgb.shape).copy()}

    out = tmp_path / "dense.ply"
    result = fuse.run(_write(tmp_path / "maps", truth, paint), CFG, out)
    back = read_ply(out)
    assert len(back) == len(result.cloud)
    np.testing.assert_array_equal(back.xyz, result.cloud.xyz)
    np.testing.assert_array_equal(back.rgb, result.cloud.rgb)
    assert (back.rgb == colour).all()  # channel order survives packing and averaging
    assert back.normals is not None
    np.testing.assert_allclose(np.linalg.norm(back.normals, axis=1), 1.0, atol=1e-4)


def test_exact_ply_matches_result(exact):
    _, result, _, ply = exact
    back = read_ply(ply)
    np.testing.assert_array_equal(back.xyz, result.cloud.xyz)
    np.testing.assert_array_equal(back.normals, result.cloud.normals)


def test_max_points_caps_reproducibly(exact):
    maps = exact[0]
    cfg = FuseConfig(max_points=5000)
    a = fuse.run(maps, cfg, None).cloud
    b = fuse.run(maps, cfg, None).cloud
    assert len(a) == 5000
    np.testing.assert_array_equal(a.xyz, b.xyz)


def test_no_points_is_a_clear_error(truth, tmp_path):
    def erase(i, cam, depth, rgb):
        return {"depth": np.zeros_like(depth), "confidence": np.zeros_like(depth)}

    with pytest.raises(ReconstructionError, match="No dense points survived fusion"):
        fuse.run(_write(tmp_path, truth, erase), CFG, None)
    with pytest.raises(ReconstructionError, match="No dense points survived fusion"):
        fuse.run([], CFG, None)


def test_too_little_overlap_leaves_no_points(truth, tmp_path):
    """Only two views keep depth: no pixel can find the two agreeing views it needs."""

    def keep_two(i, cam, depth, rgb):
        return None if i in (0, 1) else {"depth": np.zeros_like(depth)}

    with pytest.raises(ReconstructionError, match="No dense points survived fusion"):
        fuse.run(_write(tmp_path, truth, keep_two), CFG, tmp_path / "dense.ply")
    assert not (tmp_path / "dense.ply").exists()


def test_mismatched_arrays_are_refused(truth, tmp_path):
    def shrink(i, cam, depth, rgb):
        return {"rgb": rgb[:-1]} if i == 2 else None

    with pytest.raises(ValueError, match="rgb"):
        fuse.run(_write(tmp_path, truth, shrink), CFG, None)


def test_any_model_units(truth, exact, tmp_path):
    """COLMAP worlds have an arbitrary scale: a world 100x smaller gives the same cloud, scaled."""
    scale = 0.01
    small = [
        (dataclasses.replace(cam, t=cam.t * scale), depth * np.float32(scale), rgb)
        for cam, depth, rgb in truth
    ]
    result = fuse.run(_write(tmp_path, small), CFG, None)
    reference = exact[1]
    assert len(result.cloud) == pytest.approx(len(reference.cloud), rel=0.01)
    dist, _ = cKDTree(reference.cloud.xyz * scale).query(result.cloud.xyz)
    assert np.quantile(dist, 0.99) <= 0.1 * reference.stats["voxel_size"] * scale
    _, nearest = cKDTree(reference.cloud.xyz * scale).query(result.cloud.xyz)
    cos = np.sum(result.cloud.normals * reference.cloud.normals[nearest], axis=1)
    assert np.median(cos) >= 0.999
