"""Depth prior: robust alignment of a relative inverse depth, filling unsure stereo pixels."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from engine.config import DepthPriorConfig
from engine.io.depthmaps import depth_map_path, load_depth_map, save_depth_map
from engine.progress import Cancelled, CancelToken
from engine.stages import depth_prior
from engine.stages.depth_prior import align_inverse_depth
from engine.synthetic import depth_map, ring_cameras
from engine.types import ORIGIN_MVS, ORIGIN_NONE, ORIGIN_PRIOR, DepthMap

W, H = 160, 120
SCALE, SHIFT = 0.35, 0.12  # the "network" output r satisfies 1/depth = SCALE * r + SHIFT
FAR = 3.0  # backdrop depth relative to the object's, as a network would see it


@pytest.fixture(scope="module")
def views():
    """Two synthetic views of the bottle: camera, true depth (inf off the object)."""
    cams = ring_cameras("bottle", n_azimuth=2, elevations_deg=(20.0,), width=W, height=H)
    return [(cam, depth_map("bottle", cam)) for cam in cams]


def _rel_inv(truth: np.ndarray) -> np.ndarray:
    """What an ideal network would say: affine in inverse depth, backdrop far away."""
    on = np.isfinite(truth)
    far = FAR * float(np.max(truth[on]))
    d = np.where(on, truth, far)
    return ((1.0 / d - SHIFT) / SCALE).astype(np.float32)


class FakeInfo:
    def to_dict(self):
        return {"name": "fake-depth", "depth_type": "relative"}


class FakeEstimator:
    """Returns a prepared relative inverse depth for each image (looked up by its bytes)."""

    info = FakeInfo()

    def __init__(self):
        self.maps: dict[str, np.ndarray] = {}
        self.calls = 0

    def add(self, rgb: np.ndarray, rel: np.ndarray) -> None:
        self.maps[hashlib.sha1(rgb.tobytes()).hexdigest()] = rel

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.maps[hashlib.sha1(rgb.tobytes()).hexdigest()]


class ExplodingEstimator:
    info = FakeInfo()

    def predict(self, rgb):
        raise AssertionError("resumed views must not be predicted again")


def _mvs_map(name, cam, truth, *, with_mask: bool, seed: int) -> DepthMap:
    """An MVS-like depth map: good depths, a textureless band with none, a few unsure ones."""
    rng = np.random.default_rng(seed)
    on = np.isfinite(truth)
    depth = np.where(on, truth * (1.0 + 0.002 * rng.standard_normal(truth.shape)), 0.0)
    conf = np.where(on, 0.8, 0.0)
    rows = np.nonzero(on.any(axis=1))[0]
    band = np.zeros_like(on)
    mid = (rows.min() + rows.max()) // 2
    band[mid - 8 : mid + 8] = True
    hole = band & on  # a plain label: stereo finds nothing
    depth[hole] = 0.0
    conf[hole] = 0.0
    unsure = on & ~hole & (rng.random(on.shape) < 0.05)  # wrong and unsure: to be replaced
    depth[unsure] *= 1.3
    conf[unsure] = 0.2
    origin = np.where(depth > 0, ORIGIN_MVS, ORIGIN_NONE).astype(np.uint8)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return DepthMap(
        name,
        cam,
        depth.astype(np.float32),
        conf.astype(np.float32),
        rgb,
        on.copy() if with_mask else None,
        origin,
    )


@pytest.fixture(scope="module")
def scene(views):
    est = FakeEstimator()
    maps, truths = [], []
    for i, (cam, truth) in enumerate(views):
        dm = _mvs_map(cam.name, cam, truth, with_mask=(i == 0), seed=i)
        est.add(dm.rgb, _rel_inv(truth))
        maps.append(dm)
        truths.append(truth)
    return maps, truths, est


# --------------------------------------------------------------------------------------------


def _depth_field(h: int = 150, w: int = 200) -> np.ndarray:
    """A slanted, bumpy surface from 1 to about 3 units away (a floor seen at an angle)."""
    v, u = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    return 1.0 + 1.8 * v + 0.15 * np.sin(6.0 * u) * np.cos(4.0 * v)


def test_alignment_recovers_scale_and_shift_with_noise_and_outliers():
    truth = _depth_field()
    rng = np.random.default_rng(7)
    rel = (1.0 / truth - SHIFT) / SCALE
    noisy = truth * (1.0 + 0.01 * rng.standard_normal(truth.shape))
    outliers = rng.random(truth.shape) < 0.2
    noisy[outliers] *= rng.choice([0.6, 0.75, 1.4, 1.8], size=int(outliers.sum()))
    valid = rng.random(truth.shape) < 0.9  # and 10 % without depth
    depth = np.where(valid, noisy, 0.0)
    weight = np.ones(truth.shape, bool)

    al = align_inverse_depth(rel, depth, weight, rng=0)
    assert al.scale == pytest.approx(SCALE, rel=0.01)
    assert al.shift == pytest.approx(SHIFT, rel=0.01)
    assert al.n == int(valid.sum())
    assert 0.75 < al.inlier_fraction < 0.82
    assert al.median_rel_residual < 0.01
    assert 0.008 < al.mad < 0.012
    aligned = al.apply(rel)
    assert aligned.dtype == np.float32
    np.testing.assert_allclose(aligned, truth, rtol=0.005)
    # non-positive aligned inverse depth gives no depth
    assert al.apply(np.array([-1e6], np.float32))[0] == 0.0


def test_alignment_on_a_synthetic_view_predicts_depth_within_one_percent(views):
    _, truth = views[0]
    rng = np.random.default_rng(8)
    on = np.isfinite(truth)
    rel = _rel_inv(truth)
    noisy = truth * (1.0 + 0.01 * rng.standard_normal(truth.shape))
    outliers = on & (rng.random(truth.shape) < 0.2)
    noisy[outliers] *= rng.choice([0.6, 0.8, 1.3, 1.8], size=int(outliers.sum()))
    al = align_inverse_depth(rel, np.where(on, noisy, 0.0), on, rng=1)
    # the bottle spans little depth, so scale and shift trade off; the depths do not
    err = np.abs(al.apply(rel)[on] - truth[on]) / truth[on]
    assert err.max() < 0.01
    assert al.inlier_fraction > 0.75


def test_alignment_is_exact_without_noise(views):
    _, truth = views[1]
    on = np.isfinite(truth)
    rel = np.where(on, (1.0 / np.where(on, truth, 1.0) - SHIFT) / SCALE, 0.0)
    al = align_inverse_depth(rel, np.where(on, truth, 0.0), np.ones_like(on))
    assert al.scale == pytest.approx(SCALE, rel=1e-6)
    assert al.shift == pytest.approx(SHIFT, rel=1e-6)
    assert al.inlier_fraction > 0.99


def test_alignment_refuses_degenerate_input():
    depth = np.full((20, 20), 2.0, np.float32)
    with pytest.raises(ValueError, match="constant"):
        align_inverse_depth(np.ones((20, 20)), depth, np.ones((20, 20), bool))
    with pytest.raises(ValueError, match="pixels"):
        align_inverse_depth(np.ones((20, 20)), depth, np.zeros((20, 20), bool))
    with pytest.raises(ValueError, match="shape"):
        align_inverse_depth(np.ones((10, 20)), depth, np.ones((20, 20), bool))


def test_run_fills_unsure_pixels_with_true_depths(scene, tmp_path):
    maps, truths, est = scene
    cfg = DepthPriorConfig()
    events = []
    res = depth_prior.run(maps, cfg, tmp_path, estimator=est, progress=events.append)
    assert [p.name for p in res.paths] == [depth_map_path(tmp_path, m.name).name for m in maps]
    assert res.views_used == 2
    assert [(e.stage, e.current, e.total) for e in events] == [
        ("depth_prior", 1, 2),
        ("depth_prior", 2, 2),
    ]
    assert res.model["name"] == "fake-depth"
    total = 0
    for path, dm, truth in zip(res.paths, maps, truths, strict=True):
        merged, meta = load_depth_map(path)
        stats = res.alignments[dm.name]
        assert stats["status"] == "filled" and stats["resumed"] is False
        assert stats["median_rel_residual"] < 0.003
        assert meta["depth_prior"]["filled_pixels"] == stats["filled_pixels"]
        on = np.isfinite(truth)
        prior = merged.origin == ORIGIN_PRIOR
        assert prior.sum() == stats["filled_pixels"] > 0
        total += int(prior.sum())
        # filled depths are the true ones (within 1 %)
        rel_err = np.abs(merged.depth[prior] - truth[prior]) / truth[prior]
        assert rel_err.max() < 0.01
        # every unsure object pixel was filled; confident MVS pixels kept as they were
        unsure = on & (dm.confidence < cfg.fill_below)
        assert prior[unsure].mean() > 0.95
        kept = dm.confidence >= cfg.fill_below
        np.testing.assert_array_equal(merged.depth[kept], dm.depth[kept])
        assert (merged.origin[kept] == ORIGIN_MVS).all()
        # the backdrop is never filled, with a mask or without
        assert not prior[~on].any()
        conf = merged.confidence[prior]
        assert np.all(conf < cfg.fill_below) and np.all(conf >= 0.6 * cfg.fill_below)
        assert conf.min() > 0.15  # the fuse stage's default min_confidence
    assert res.filled_pixels == total


def test_run_resumes_from_files_and_reads_input_files(scene, tmp_path):
    maps, _, est = scene
    dense = tmp_path / "dense"
    for dm in maps:
        save_depth_map(depth_map_path(dense, dm.name), dm)
    paths = [depth_map_path(dense, dm.name) for dm in maps]
    out = tmp_path / "prior"
    first = depth_prior.run(paths, DepthPriorConfig(), out, estimator=est)
    before = [p.stat().st_mtime_ns for p in first.paths]
    again = depth_prior.run(paths, DepthPriorConfig(), out, estimator=ExplodingEstimator())
    assert again.paths == first.paths
    assert [p.stat().st_mtime_ns for p in again.paths] == before
    assert again.filled_pixels == first.filled_pixels and again.views_used == 2
    assert all(s["resumed"] for s in again.alignments.values())
    # a changed setting invalidates the stored views
    calls = est.calls
    depth_prior.run(paths, DepthPriorConfig(fill_below=0.4), out, estimator=est)
    assert est.calls == calls + 2
    # the output folder may not be the input folder
    with pytest.raises(ValueError, match="overwrite"):
        depth_prior.run(paths, DepthPriorConfig(), dense, estimator=est)


def test_run_is_cancellable_between_views(scene, tmp_path):
    maps, _, est = scene
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        depth_prior.run(maps, DepthPriorConfig(), tmp_path, estimator=est, cancel=token)
    token = CancelToken()
    with pytest.raises(Cancelled):
        depth_prior.run(
            maps,
            DepthPriorConfig(),
            tmp_path,
            estimator=est,
            cancel=token,
            progress=lambda e: token.cancel(),
        )
    assert depth_map_path(tmp_path, maps[0].name).is_file()
    assert not depth_map_path(tmp_path, maps[1].name).is_file()


def test_views_the_prior_cannot_help_are_written_unchanged(scene, tmp_path):
    maps, truths, _ = scene
    dm = maps[1]
    est = FakeEstimator()
    # a network that disagrees with stereo: its depth order is noise
    est.add(dm.rgb, np.random.default_rng(3).random((H, W)).astype(np.float32))
    # a view with almost no stereo depth
    sparse = DepthMap(
        "sparse.jpg",
        dm.camera,
        np.where(np.arange(W)[None, :] < 1, dm.depth, 0).astype(np.float32),
        np.where(np.arange(W)[None, :] < 1, dm.confidence, 0).astype(np.float32),
        np.roll(dm.rgb, 1, axis=0),
        None,
        None,
    )
    est.add(sparse.rgb, _rel_inv(truths[1]))
    res = depth_prior.run([dm, sparse], DepthPriorConfig(), tmp_path, estimator=est)
    assert res.views_used == 0 and res.filled_pixels == 0
    assert "does not follow the stereo depths" in res.skipped[dm.name]
    assert "stereo depths to align" in res.skipped["sparse.jpg"]
    merged, _ = load_depth_map(res.paths[0])
    np.testing.assert_array_equal(merged.depth, dm.depth)
    assert not (merged.origin == ORIGIN_PRIOR).any()
    assert len(res.paths) == 2 and res.paths[1].is_file()
