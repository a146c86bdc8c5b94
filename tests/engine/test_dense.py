"""Plane-sweep MVS on synthetic scenes with exact cameras: depth accuracy in millimetres."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pycolmap
import pytest
import torch

from engine.config import DenseConfig, preset
from engine.io import write_png
from engine.io.depthmaps import load_depth_map
from engine.progress import Cancelled, CancelToken
from engine.stages import dense
from engine.synthetic import depth_map
from engine.types import CameraPose, ImageRecord, IngestResult, PointCloud, SparseModel

CFG = DenseConfig(max_image_size=400, levels=2, num_depths=32)


@pytest.fixture(
    params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)],
)
def device(request):
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    return request.param


def _records(scene, names=None):
    out = []
    for path, cam in zip(scene.image_paths, scene.cameras, strict=True):
        if names is not None and cam.name not in names:
            continue
        out.append(
            ImageRecord(
                name=cam.name,
                source=path,
                working_path=path,
                width=cam.width,
                height=cam.height,
                original_width=cam.width,
                original_height=cam.height,
                camera_key="synthetic",
                sha256=cam.name,
            )
        )
    return out


def _truth_model(scene, names=None, n_points=3000):
    """A sparse model with the true cameras and true surface points (no SfM tracks)."""
    rng = np.random.default_rng(0)
    idx = rng.choice(len(scene.surface_points), n_points, replace=False)
    xyz = scene.surface_points[idx].astype(np.float32)
    cams = {n: c for n, c in scene.camera_dict().items() if names is None or n in names}
    return SparseModel(
        path=scene.root, cameras=cams, points=PointCloud(xyz, np.zeros_like(xyz, np.uint8))
    )


def _depth_errors(dm, kind, min_conf=0.3):
    truth = depth_map(kind, dm.camera)
    obj = np.isfinite(truth)
    got = dm.depth > 0
    sure = got & (dm.confidence >= min_conf)
    both = obj & sure
    err = np.abs(dm.depth[both] - truth[both])
    return {
        "median_mm": 1000 * float(np.median(err)),
        "within_2mm": float(np.mean(err <= 0.002)),
        "coverage": float((obj & got).sum() / obj.sum()),
        "sure_coverage": float(both.sum() / obj.sum()),
    }


@pytest.mark.parametrize("kind", ["bottle", "box"])
def test_depth_maps_are_accurate_to_a_fraction_of_a_millimetre(scene_factory, kind, device):
    """Default settings (800x600 depth maps, a pixel spans about 0.6 mm on the product)."""
    cfg = DenseConfig()
    scene = scene_factory(kind)
    model = _truth_model(scene)
    records = {r.name: r for r in _records(scene)}
    sources = dense.select_sources(model, cfg)
    for name in (scene.cameras[13].name, scene.cameras[30].name):
        ref = dense.prepare_view(records[name], model.cameras[name], cfg.max_image_size)
        srcs = [
            dense.prepare_view(records[s], model.cameras[s], cfg.max_image_size)
            for s in sources[name]
        ]
        pts = dense._visible_points(model, name)
        d_range = dense.depth_range(pts, model.cameras[name], cfg.depth_margin)
        roi = dense.region_of_interest(ref, pts)
        with torch.inference_mode():
            depth, conf = dense.estimate_depth(ref, srcs, d_range, cfg, device, roi)
        dm = dense.DepthMap(name, ref.camera, depth, conf, ref.rgb)
        e = _depth_errors(dm, kind)
        # Confident depths (what fusion mostly keeps) are accurate ...
        assert e["median_mm"] <= 0.3, e
        assert e["within_2mm"] >= 0.85, e
        assert e["sure_coverage"] >= 0.7, e
        # ... and nearly every product pixel gets a depth for fusion to check.
        assert e["coverage"] >= 0.95, e
        assert ((conf > 0) == (depth > 0)).all()
        assert conf.max() <= 1.0


def test_sources_are_near_neighbours_under_a_useful_angle(scene_factory):
    scene = scene_factory("bottle")
    model = _truth_model(scene)
    cfg = DenseConfig()
    sources = dense.select_sources(model, cfg)
    centre = (scene.bbox_min + scene.bbox_max) / 2
    for ref, srcs in sources.items():
        assert len(srcs) == cfg.num_sources and ref not in srcs
        a = model.cameras[ref].center - centre
        for s in srcs:
            b = model.cameras[s].center - centre
            ang = np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
            assert cfg.min_angle_deg <= ang <= cfg.max_angle_deg + 10, (ref, s, ang)


def test_undistortion_follows_colmaps_camera_model(scene_factory, tmp_path):
    """A photo distorted with SIMPLE_RADIAL comes back as the pinhole photo it was made from."""
    scene = scene_factory("box")
    cam = scene.cameras[5]
    k1 = -0.12
    pinhole = cv2.cvtColor(cv2.imread(str(scene.image_paths[5])), cv2.COLOR_BGR2RGB)
    colmap_cam = pycolmap.Camera.create_from_model_name(
        0, "SIMPLE_RADIAL", cam.K[0, 0], cam.width, cam.height
    )
    colmap_cam.params = [cam.K[0, 0], cam.K[0, 2], cam.K[1, 2], k1]
    u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    rays = np.asarray(colmap_cam.cam_from_img(np.stack([u.ravel(), v.ravel()], 1)))
    # where each distorted pixel's ray lands in the pinhole photo (OpenCV pixel centres)
    mx = (rays[:, 0] * cam.K[0, 0] + cam.K[0, 2] - 0.5).reshape(u.shape).astype(np.float32)
    my = (rays[:, 1] * cam.K[1, 1] + cam.K[1, 2] - 0.5).reshape(u.shape).astype(np.float32)
    distorted = cv2.remap(pinhole, mx, my, cv2.INTER_LINEAR)
    path = tmp_path / "distorted.png"
    write_png(path, distorted)
    radial = dataclasses.replace(cam, model="SIMPLE_RADIAL", params=tuple(colmap_cam.params))
    rec = _records(scene, {cam.name})[0]
    rec = dataclasses.replace(rec, working_path=path)
    view = dense.prepare_view(rec, radial, 800)
    assert view.camera.model == "PINHOLE" and view.rgb.shape == pinhole.shape
    # compare at a scale where resampling blur does not count, away from the borders
    inner = (slice(20, -20), slice(20, -20))

    def diff(a):
        blur = [cv2.GaussianBlur(x.astype(np.float32), (0, 0), 2.0)[inner] for x in (a, pinhole)]
        return float(np.abs(blur[0] - blur[1]).mean())

    back, before = diff(view.rgb), diff(distorted)
    assert back < 0.5 and before > 4 * back, (back, before)


def _small_run_inputs(scene, n=6):
    names = {c.name for c in scene.cameras[12:24][:n]}
    recs = _records(scene, names)
    ingest = IngestResult(tuple(recs), (), scene.image_dir)
    return ingest, _truth_model(scene, names)


def test_run_writes_resumes_and_reports_progress(scene_factory, tmp_path, monkeypatch):
    scene = scene_factory("bottle")
    ingest, model = _small_run_inputs(scene)
    cfg = dataclasses.replace(CFG, num_sources=3)
    events = []
    res = dense.run(
        dense.DenseInputs(ingest, model), cfg, tmp_path / "dense", progress=events.append
    )
    assert len(res.paths) == 6 and not res.skipped
    assert [e.current for e in events] == list(range(7))
    assert all(len(e.partial) > 100 for e in events[1:]), "each view feeds the live preview"
    dm, meta = load_depth_map(res.paths[0])
    assert dm.camera.width == 400 and dm.depth.shape == (300, 400)
    assert set(np.unique(dm.origin)) <= {0, 1}
    assert res.seconds_per_view > 0

    def boom(*a, **k):
        raise AssertionError("recomputed a finished view")

    monkeypatch.setattr(dense, "estimate_depth", boom)
    again = dense.run(dense.DenseInputs(ingest, model), cfg, tmp_path / "dense")
    assert again.paths == res.paths
    assert all(v["resumed"] for v in again.views.values())


def test_the_cpu_caps_the_depth_map_size(scene_factory, tmp_path):
    """On the CPU the maps are at most ``cpu_max_image_size`` (a GPU keeps ``max_image_size``),
    ``levels=0`` picks the levels from the size, and another cap recomputes the cached maps."""
    assert [dense.auto_levels(s) for s in (100, 400, 800, 1600)] == [1, 2, 3, 4]
    standard = preset("standard").dense
    assert dense.for_device(standard, "cpu").max_image_size == 560
    assert dense.for_device(standard, "cuda").max_image_size == 800
    assert dense.for_device(preset("high").dense, "cpu").max_image_size == 1600
    scene = scene_factory("bottle")
    ingest, model = _small_run_inputs(scene, n=4)
    cfg = dataclasses.replace(
        CFG, max_image_size=800, cpu_max_image_size=200, levels=0, num_sources=2
    )
    res = dense.run(dense.DenseInputs(ingest, model), cfg, tmp_path / "dense", device="cpu")
    assert load_depth_map(res.paths[0])[0].depth.shape == (150, 200)
    bigger = dataclasses.replace(cfg, cpu_max_image_size=400)
    again = dense.run(dense.DenseInputs(ingest, model), bigger, tmp_path / "dense", device="cpu")
    assert not any(v.get("resumed") for v in again.views.values())
    assert load_depth_map(again.paths[0])[0].depth.shape == (300, 400)


def test_cancel_between_views(scene_factory, tmp_path):
    scene = scene_factory("bottle")
    ingest, model = _small_run_inputs(scene, 4)
    token = CancelToken()
    seen = []

    def progress(e):
        seen.append(e.current)
        if e.current == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        dense.run(
            dense.DenseInputs(ingest, model), CFG, tmp_path / "d", progress=progress, cancel=token
        )
    assert max(seen) == 1


def test_out_of_memory_shrinks_the_batch_and_gives_the_same_depths(scene_factory, monkeypatch):
    """Simulated GPU out-of-memory: batches over a cap fail; the sweep halves and carries on."""
    scene = scene_factory("box")
    model = _truth_model(scene)
    records = {r.name: r for r in _records(scene)}
    name = scene.cameras[14].name
    srcs = dense.select_sources(model, CFG)[name]
    ref = dense.prepare_view(records[name], model.cameras[name], 200)
    views = [dense.prepare_view(records[s], model.cameras[s], 200) for s in srcs]
    pts = dense._visible_points(model, name)
    d_range = dense.depth_range(pts, model.cameras[name], 0.15)
    cfg = dataclasses.replace(CFG, levels=1)
    with torch.inference_mode():
        want, _ = dense.estimate_depth(ref, views, d_range, cfg, "cpu")
    real = dense._Sweeper._score_batch
    batches = []

    def capped(self, depths):
        batches.append(depths.shape[0])
        if depths.shape[0] > 3:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return real(self, depths)

    monkeypatch.setattr(dense._Sweeper, "_score_batch", capped)
    with torch.inference_mode():
        got, _ = dense.estimate_depth(ref, views, d_range, cfg, "cpu", batch_elems=10**9)
    # each failure halves the batch; the view then finishes in batches that fit
    assert batches[:4] == [32, 16, 8, 4], batches
    assert all(b <= 2 for b in batches[4:]) and sum(batches[4:]) == cfg.num_depths
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_masks_restrict_the_work_to_the_product(scene_factory):
    scene = scene_factory("bottle")
    model = _truth_model(scene)
    records = {r.name: r for r in _records(scene)}
    name = scene.cameras[16].name
    mask_path = scene.mask_paths[16]
    rec = dataclasses.replace(records[name], mask_path=mask_path)
    ref = dense.prepare_view(rec, model.cameras[name], 400)
    assert ref.mask is not None and 0.05 < ref.mask.mean() < 0.6
    srcs = dense.select_sources(model, CFG)[name]
    views = [dense.prepare_view(records[s], model.cameras[s], 400) for s in srcs]
    pts = dense._visible_points(model, name)
    roi = dense.region_of_interest(ref, pts)
    ys, xs = np.nonzero(ref.mask)
    assert roi[0] <= xs.min() and roi[2] > xs.max() and roi[1] <= ys.min() and roi[3] > ys.max()
    with torch.inference_mode():
        depth, _ = dense.estimate_depth(
            ref, views, dense.depth_range(pts, model.cameras[name], 0.15), CFG, "cpu", roi
        )
    assert (depth[~ref.mask] == 0).all() and (depth[ref.mask] > 0).mean() > 0.8


def test_the_backdrops_fringe_loses_its_depth_and_the_product_keeps_its(scene_factory):
    """Windows straddling the outline give black cloth beside it the product's depth."""
    scene = scene_factory("bottle", backdrop="dark")
    model = _truth_model(scene)
    records = {r.name: r for r in _records(scene)}
    counts = {}
    for rim in (False, True):
        cfg = dataclasses.replace(CFG, backdrop_rim=rim)
        outside = covered = product = 0
        for name in (scene.cameras[13].name, scene.cameras[30].name):
            ref = dense.prepare_view(records[name], model.cameras[name], cfg.max_image_size)
            views = [
                dense.prepare_view(records[s], model.cameras[s], cfg.max_image_size)
                for s in dense.select_sources(model, cfg)[name]
            ]
            pts = dense._visible_points(model, name)
            d_range = dense.depth_range(pts, model.cameras[name], cfg.depth_margin)
            with torch.inference_mode():
                depth, _ = dense.estimate_depth(
                    ref, views, d_range, cfg, "cpu", dense.region_of_interest(ref, pts)
                )
            obj = np.isfinite(depth_map("bottle", ref.camera))
            outside += int(((depth > 0) & ~obj).sum())
            covered += int(((depth > 0) & obj).sum())
            product += int(obj.sum())
        counts[rim] = (outside, covered / product)
    (fringe_kept, coverage_kept), (fringe, coverage) = counts[False], counts[True]
    assert fringe_kept > 1000, counts  # the fringe is there without the check ...
    assert fringe <= 0.15 * fringe_kept, counts  # ... and mostly gone with it
    assert coverage >= 0.97 and coverage >= coverage_kept - 0.01, counts


def test_backdrop_rim_takes_the_backdrops_colour_at_the_outline_only():
    h, w = 120, 160
    rgb = np.full((h, w, 3), 12, np.uint8)  # black cloth
    rng = np.random.default_rng(1)
    product = np.zeros((h, w), bool)
    product[30:90, 40:120] = True
    rgb[product] = rng.integers(150, 230, (int(product.sum()), 3), dtype=np.uint8)
    rgb[55:65, 75:85] = 190  # a plain patch of the product: a small hole without depth
    fringe = cv2.dilate(product.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    valid = fringe.copy()
    valid[55:65, 75:85] = False
    drop = dense.backdrop_rim(rgb, valid, reach=8)
    assert drop[fringe & ~product].mean() > 0.95  # the cloth that took the product's depth
    assert drop[product].mean() < 0.01  # the product, also at its outline and round its hole
    assert not dense.backdrop_rim(rgb, np.ones((h, w), bool), reach=8).any()
    cluttered = rgb.copy()  # a room behind: no plain backdrop, so no such fringe to drop
    cluttered[~fringe] = rng.integers(0, 256, (int((~fringe).sum()), 3), dtype=np.uint8)
    assert not dense.backdrop_rim(cluttered, valid, reach=8).any()
    assert not dense.backdrop_rim(rgb, valid, reach=0).any()


def test_too_few_placed_photos_is_a_clear_error(scene_factory, tmp_path):
    from engine.errors import ReconstructionError

    scene = scene_factory("bottle")
    ingest, model = _small_run_inputs(scene, 1)
    with pytest.raises(ReconstructionError, match="at least two placed photos"):
        dense.run(dense.DenseInputs(ingest, model), CFG, tmp_path / "d")


def test_pinhole_camera_scales_intrinsics():
    cam = CameraPose(
        "a", np.eye(3), np.zeros(3), np.array([[800.0, 0, 400], [0, 800, 300], [0, 0, 1]]), 800, 600
    )
    small = dense.pinhole_camera(cam, 400, 300)
    np.testing.assert_allclose(small.K, [[400, 0, 200], [0, 400, 150], [0, 0, 1]])
    assert dense.depth_map_size(cam, 400) == (400, 300)
    assert dense.depth_map_size(cam, 1600) == (800, 600)


def _masked_records(scene):
    """The scene's photos with their true masks (the renderer's silhouettes)."""
    return {
        r.name: dataclasses.replace(r, mask_path=m)
        for r, m in zip(_records(scene), scene.mask_paths, strict=True)
    }


def test_the_masks_hull_bounds_each_pixels_ray_round_the_surface_it_sees(scene_factory):
    scene = scene_factory("bottle")
    model = _truth_model(scene)
    records = _masked_records(scene)
    hull = dense.Hull.of(records, model, sorted(model.cameras))
    assert hull is not None and len(hull.masks) == min(len(scene.cameras), dense.HULL_MAX_VIEWS)
    cam = scene.cameras[13]
    truth = depth_map("bottle", cam)
    product = np.isfinite(truth)
    own = dense.depth_range(dense._visible_points(model, cam.name), cam, 0.15)
    search = (1 / (2 * own[1]), 2 / own[0])
    lo, hi, hit = dense.hull_bounds(
        hull, cam.K, (cam.R, cam.t), (cam.width, cam.height), search, torch.device("cpu")
    )
    lo, hi, hit = lo.numpy(), hi.numpy(), hit.numpy()
    inv = 1 / np.where(product, truth, 1)
    assert hit[product].mean() >= 0.99
    assert ((inv >= lo) & (inv <= hi))[product].mean() >= 0.99
    # beside the product the rays miss it (the grown masks' margin aside)
    assert hit[~product].mean() <= 0.1
    # per pixel tighter than the product's depth seen from the photo
    assert np.median((hi - lo)[product]) < 0.8 * (1 / own[0] - 1 / own[1])


def _masked_bottle_view(scene_factory):
    """The bottle's true model with masks, one side view prepared with its sources, the hull."""
    scene = scene_factory("bottle")
    model = _truth_model(scene)
    records = _masked_records(scene)
    name = scene.cameras[13].name
    cam = model.cameras[name]
    ref = dense.prepare_view(records[name], cam, CFG.max_image_size)
    srcs = [
        dense.prepare_view(records[s], model.cameras[s], CFG.max_image_size)
        for s in dense.select_sources(model, CFG)[name]
    ]
    return model, cam, ref, srcs, dense.Hull.of(records, model, sorted(model.cameras))


def test_a_masked_view_sweeps_its_whole_surface_where_its_own_points_fall_short(scene_factory):
    """The photo's sparse points cover only its near third (a model of few tracks): the range
    they give loses the rest. Inside the masks' hull every pixel is swept where its ray meets
    the product: as many right depths as a range from the whole true surface gives."""
    model, cam, ref, srcs, hull = _masked_bottle_view(scene_factory)
    xyz = np.asarray(model.points.xyz, np.float64)
    z = xyz @ cam.R[2] + cam.t[2]
    near = xyz[z <= np.quantile(z, 0.3)]
    d_range = dense.depth_range(near, cam, CFG.depth_margin)
    roi = dense.region_of_interest(ref, near)
    truth = depth_map("bottle", ref.camera)
    product = np.isfinite(truth)
    full = dense.depth_range(xyz, cam, CFG.depth_margin)
    right = {}
    for label, h, r in (("range", None, d_range), ("hull", hull, d_range), ("full", None, full)):
        with torch.inference_mode():
            depth, _ = dense.estimate_depth(ref, srcs, r, CFG, "cpu", roi, hull=h)
        err = np.abs(depth - np.where(product, truth, 0))
        right[label] = float(((depth > 0) & product & (err <= 0.002)).sum() / product.sum())
    # seen: of the product's pixels, 0.68 within 2 mm from the short range, 0.86 in the hull
    # and 0.86 from the range of the whole true surface (these small maps' accuracy)
    assert right["range"] < 0.75, right
    assert right["hull"] >= max(0.8, right["full"] - 0.02), right


def test_the_hulls_coarse_sweep_in_tiles_gives_the_depths_of_one_sweep_over_the_crop(
    scene_factory, monkeypatch
):
    """Tiles of the coarse level are swept only over the planes their pixels' stretches of the
    hull reach, and not at all away from the mask: the same depths as one sweep over the whole
    crop with every plane."""
    model, cam, ref, srcs, hull = _masked_bottle_view(scene_factory)
    xyz = np.asarray(model.points.xyz, np.float64)
    d_range = dense.depth_range(xyz, cam, CFG.depth_margin)
    roi = dense.region_of_interest(ref, xyz)
    planes: list[list[int]] = []
    score = dense._Sweeper.score

    def counted(self, depths):
        if depths.shape[0] > CFG.refine_depths:  # the coarse level's planes
            planes[-1].append(depths.shape[0])
        return score(self, depths)

    monkeypatch.setattr(dense._Sweeper, "score", counted)
    depths = {}
    for tile in (10**6, 8):  # one tile: the whole crop; then tiles of 8 x 8 coarse pixels
        monkeypatch.setattr(dense, "HULL_TILE", tile)
        planes.append([])
        with torch.inference_mode():
            depths[tile], _ = dense.estimate_depth(ref, srcs, d_range, CFG, "cpu", roi, hull=hull)
    assert (depths[8] > 0).sum() > 0.5 * ref.mask.sum()
    np.testing.assert_array_equal(depths[8], depths[10**6])
    whole, tiles = planes
    assert len(whole) == 1 and len(tiles) > 20
    # a tile's pixels reach a part of the hull's depth: fewer planes than the whole crop
    assert np.mean(tiles) < 0.8 * whole[0], (whole, np.mean(tiles))
