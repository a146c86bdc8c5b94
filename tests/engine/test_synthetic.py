"""The synthetic renderer is exact: masks, cameras, depth and surface samples agree."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from engine import synthetic as S
from engine.progress import Cancelled, CancelToken

W, H = 240, 180
ELEV = (20.0, 50.0)
N_AZ = 4


@pytest.fixture(scope="module", params=S.SCENES)
def scene(request, tmp_path_factory) -> S.SyntheticScene:
    root = tmp_path_factory.mktemp(request.param)
    return S.render_scene(
        root,
        request.param,
        n_azimuth=N_AZ,
        elevations_deg=ELEV,
        width=W,
        height=H,
        n_surface_points=60_000,
    )


def _project(cam, pts):
    pc = pts @ cam.R.T + cam.t
    uv = pc @ cam.K.T
    return uv[:, :2] / uv[:, 2:3], pc[:, 2]


def test_files_names_and_order(scene):
    assert len(scene.image_paths) == N_AZ * len(ELEV) == len(scene.cameras)
    names = [p.name for p in scene.image_paths]
    assert names == sorted(names) == [c.name for c in scene.cameras]
    assert names[0] == f"{scene.name}_r0_a000.jpg"
    for ip, mp in zip(scene.image_paths, scene.mask_paths, strict=True):
        assert mp == scene.root / "masks_gt" / (ip.stem + ".png")
        with Image.open(ip) as im, Image.open(mp) as m:
            assert im.size == m.size == (W, H)
            assert im.mode == "RGB" and m.mode == "L"
            assert set(np.unique(np.asarray(m))) <= {0, 255}


def test_exif_focal_matches_K(scene):
    cam = scene.cameras[0]
    with Image.open(scene.image_paths[0]) as im:
        exif = im.getexif()
    ifd = exif.get_ifd(0x8769)
    assert exif[0x010F] == "Vitrine" and exif[0x0110] == "Synthetic Camera"
    assert 0x8825 not in exif  # no GPS
    focal_mm = float(ifd[0x920A])
    assert focal_mm == pytest.approx(cam.K[0, 0] / W * 36.0, abs=1e-3)
    assert ifd[0xA405] == round(focal_mm) == S.FOCAL_35MM
    hfov = 2 * np.degrees(np.arctan(W / 2 / cam.K[0, 0]))
    assert 40.0 <= hfov <= 45.0


def test_cameras_are_rigid_level_and_aimed(scene):
    centre = (scene.bbox_min + scene.bbox_max) / 2
    for i, cam in enumerate(scene.cameras):
        assert np.allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(cam.R) == pytest.approx(1.0, abs=1e-12)
        assert abs(cam.R[0] @ [0, 0, 1]) < 1e-12  # no roll: image x axis is horizontal
        assert cam.R[1] @ [0, 0, 1] < 0  # image y points down the world
        (uv,), (z,) = _project(cam, centre[None])
        assert z > 0 and np.allclose(uv, [W / 2, H / 2], atol=1e-9)
        assert cam.model == "PINHOLE" and cam.params == pytest.approx(
            [cam.K[0, 0], cam.K[1, 1], cam.K[0, 2], cam.K[1, 2]]
        )
        elev = np.degrees(np.arcsin((cam.center - centre)[2] / np.linalg.norm(cam.center - centre)))
        assert abs(elev - ELEV[i // N_AZ]) <= 1.0 + 1e-9
    az = [np.arctan2(c.center[1], c.center[0]) for c in scene.cameras[:N_AZ]]
    assert np.all(np.diff(np.unwrap(az)) > 0)  # azimuth increasing within a ring


def test_small_product_and_rolled_camera(tmp_path):
    """``fill`` shrinks the product in the frame; ``roll_deg=90`` lays it on its side."""
    kw = {"n_azimuth": 2, "elevations_deg": (20.0,), "width": 160, "height": 120}
    kw["supersample"] = 1
    small = S.render_scene(tmp_path / "small", "bottle", fill=0.25, **kw)
    rolled = S.render_scene(tmp_path / "rolled", "bottle", roll_deg=90.0, **kw)
    for mp in small.mask_paths:
        rows = np.nonzero(np.asarray(Image.open(mp)).any(axis=1))[0]
        assert 0.18 <= (rows[-1] - rows[0] + 1) / 120 <= 0.32
    for cam, mp in zip(rolled.cameras, rolled.mask_paths, strict=True):
        assert abs(cam.R[1] @ [0, 0, 1]) < 1e-12  # image y is horizontal in the world
        assert abs(cam.R[0] @ [0, 0, 1]) > 0.9  # image x runs along the world's up
        m = np.asarray(Image.open(mp)) > 127
        width = np.ptp(np.nonzero(m.any(axis=0))[0]) + 1
        height = np.ptp(np.nonzero(m.any(axis=1))[0]) + 1
        assert width > 1.5 * height  # the upright bottle lies sideways in the photo
        assert width <= 160 - 2 and height <= 120 - 2


def test_a_turned_product_keeps_its_frame_and_the_cards_stay_in_the_world(tmp_path):
    """``turn_deg`` turns the product before the last ring; the support's printed cards stay.

    The ground-truth cameras are the product's: the box's corners outline every mask. Away
    from the product, the turned ring's photos are the unturned ones' to the pixel (the same
    noise): the cards did not move in the world.
    """
    kw = {"n_azimuth": 3, "elevations_deg": (20.0, 45.0), "width": W, "height": H}
    kw.update(supersample=1, backdrop="card", n_surface_points=1000)
    still = S.render_scene(tmp_path / "still", "box", **kw)
    turned = S.render_scene(tmp_path / "turned", "box", turn_deg=90.0, **kw)
    lo, hi = turned.bbox_min, turned.bbox_max
    corners = np.array(
        [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    for k, (cam, mp) in enumerate(zip(turned.cameras, turned.mask_paths, strict=True)):
        mask = np.asarray(Image.open(mp)) > 0
        hull = cv2.convexHull(_project(cam, corners)[0].astype(np.float32))
        assert mask.sum() == pytest.approx(cv2.contourArea(hull), rel=0.01)
        before = np.asarray(Image.open(still.mask_paths[k])) > 0
        a = np.asarray(Image.open(turned.image_paths[k]), np.int16)
        b = np.asarray(Image.open(still.image_paths[k]), np.int16)
        if k < 3:  # the first ring: the same photos
            assert (mask == before).all() and np.abs(a - b).max() <= 2
            continue
        assert (mask & before).sum() / (mask | before).sum() < 0.9  # the box turned
        # away from both boxes: the same within the JPEG's noise (the shadow, faint that far,
        # flips the odd quantisation step of a block that holds a card's edge)
        near = cv2.dilate((mask | before).astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
        diff = np.abs(a - b).max(axis=2)[~near]
        assert np.mean(diff > 2) < 0.02 and diff.max() <= 12
    # the cards are in view and printed: the turned ring's photos are busy away from the box
    grey = cv2.cvtColor(np.asarray(Image.open(turned.image_paths[4])), cv2.COLOR_RGB2GRAY)
    assert np.abs(cv2.Laplacian(grey, cv2.CV_32F))[~near].max() > 60
    with pytest.raises(ValueError, match="turned product"):
        S.render_scene(tmp_path / "sheet", "box", **{**kw, "backdrop": "sheet"}, turn_deg=90.0)


def test_object_fills_the_frame(scene):
    for mp in scene.mask_paths:
        rows = np.nonzero(np.asarray(Image.open(mp)).any(axis=1))[0]
        assert 0.5 <= (rows[-1] - rows[0] + 1) / H <= 0.8
        assert rows[0] > 0 and rows[-1] < H - 1  # never cut by the frame


def test_surface_points_project_into_masks(scene):
    pts, nrm = scene.surface_points, scene.surface_normals
    for cam, mp in zip(scene.cameras, scene.mask_paths, strict=True):
        mask = np.asarray(Image.open(mp)) > 0
        uv, _ = _project(cam, pts)
        ij = np.floor(uv).astype(int)  # COLMAP convention: pixel i covers [i, i + 1)
        assert ij.min() >= 0 and ij[:, 0].max() < W and ij[:, 1].max() < H
        view = cam.center - pts
        cos = np.einsum("ij,ij->i", nrm, view) / np.linalg.norm(view, axis=1)
        # facing the camera (not grazing): inside the mask; any front-facing point lies
        # within half a pixel of it (coverage > 0.5 is the mask's edge)
        front = cos > 0.3
        assert mask[ij[front, 1], ij[front, 0]].mean() >= 0.99
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert grown[ij[cos > 0, 1], ij[cos > 0, 0]].mean() >= 0.999
        # the pixels the samples touch and the mask agree (up to the touched edge ring)
        sil = np.zeros((H, W), bool)
        sil[ij[:, 1], ij[:, 0]] = True
        # random samples leave the odd pixel empty: close those holes first
        sil = cv2.morphologyEx(sil.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3))) > 0
        assert (mask & ~sil).sum() <= 0.005 * mask.sum()
        assert (sil & mask).sum() / (sil | mask).sum() >= 0.9
        if scene.name == "box":  # convex: the silhouette is the hull of the 8 corners
            lo, hi = scene.bbox_min, scene.bbox_max
            corners = np.array(
                [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
            )
            hull = cv2.convexHull(_project(cam, corners)[0].astype(np.float32))
            assert mask.sum() == pytest.approx(cv2.contourArea(hull), rel=0.01)


def test_depth_maps_lie_on_the_surface_and_match_masks(scene):
    for cam, mp in list(zip(scene.cameras, scene.mask_paths, strict=True))[::3]:
        depth = S.depth_map(scene.name, cam)
        hit = np.isfinite(depth)
        mask = np.asarray(Image.open(mp)) > 0
        assert (hit == mask).mean() >= 0.99
        v, u = np.nonzero(hit)
        ray = np.stack(
            [
                (u + 0.5 - cam.K[0, 2]) / cam.K[0, 0],
                (v + 0.5 - cam.K[1, 2]) / cam.K[1, 1],
                np.ones(u.size),
            ],
            1,
        )
        world = (ray * depth[v, u][:, None] - cam.t) @ cam.R
        # every hit is on the object's exact surface
        if scene.name == "box":
            lo, hi = scene.bbox_min, scene.bbox_max
            gap = np.minimum(np.abs(world - lo), np.abs(world - hi)).min(axis=1)
            assert gap.max() < 1e-9
            assert np.all((world >= lo - 1e-9) & (world <= hi + 1e-9))
        else:
            side = (world[:, 2] > 0.005) & (world[:, 2] < 0.1499)  # the straight body
            rho = np.hypot(world[side, 0], world[side, 1])
            assert np.abs(rho - 0.045).max() < 1e-9
            assert _bottle_distance(world).max() < 1e-9


def _bottle_distance(world):
    """Distance of points to the bottle's surface of revolution (its polyline profile)."""
    prof = S._bottle_profile()
    seg = np.diff(prof, axis=0)
    q = np.stack([world[:, 2], np.hypot(world[:, 0], world[:, 1])], 1)
    rel = q[:, None, :] - prof[None, :-1, :]
    f = np.clip((rel * seg).sum(-1) / (seg**2).sum(-1), 0, 1)
    return np.linalg.norm(rel - f[..., None] * seg, axis=-1).min(axis=1)


def test_surface_samples_uniform_by_area(scene):
    pts, nrm = scene.surface_points, scene.surface_normals
    assert pts.shape == nrm.shape == (60_000, 3) and pts.dtype == np.float64
    assert np.allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=1e-6)
    assert np.all(pts >= scene.bbox_min - 1e-6) and np.all(pts <= scene.bbox_max + 1e-6)
    assert np.allclose(pts.min(0), scene.bbox_min, atol=5e-3)  # the bottle's foot is unseen
    assert np.allclose(pts.max(0), scene.bbox_max, atol=1e-6)
    if scene.name == "box":
        sx, sy, sz = scene.bbox_max - scene.bbox_min
        top = np.isclose(pts[:, 2], scene.bbox_max[2]) & (nrm[:, 2] > 0.5)
        share = sx * sy / (2 * (sx + sy) * sz + sx * sy)
        assert top.mean() == pytest.approx(share, abs=0.01)
    else:
        body = (pts[:, 2] > 0.005) & (pts[:, 2] < 0.15)
        # 2 pi r h of the body over the whole visible area (numerically, from the profile)
        prof = S._bottle_profile()
        ln = np.hypot(*np.diff(prof, axis=0).T)
        area = np.pi * (prof[:-1, 1] + prof[1:, 1]) * ln
        n_z = -np.diff(prof[:, 1]) / ln
        share = 2 * np.pi * 0.045 * (0.15 - 0.0045) / area[n_z >= -0.5].sum()
        assert body.mean() == pytest.approx(share, abs=0.01)
    # outward: normals point away from the z axis on the sides
    side = np.abs(nrm[:, 2]) < 0.1
    radial = np.einsum("ij,ij->i", nrm[side, :2], pts[side, :2])
    assert np.all(radial > 0)


def test_cameras_json_round_trip(scene):
    data = json.loads((scene.root / "cameras.json").read_text())
    assert data["units"] == "metres" and data["distortion"] == "none"
    assert data["convention"].startswith("x_cam = R @ x_world + t")
    assert data["scene"] == scene.name
    assert np.allclose(data["bbox"], [scene.bbox_min, scene.bbox_max])
    entry = data["images"][0]
    assert set(entry) == {"name", "width", "height", "K", "R", "t", "center"}
    assert np.allclose(entry["center"], scene.cameras[0].center)
    cams = S.read_cameras_json(scene.root / "cameras.json")
    loaded = S.load_scene(scene.root)
    for a, b, c in zip(scene.cameras, cams, loaded.cameras, strict=True):
        assert a.name == b.name == c.name
        for x in (b, c):
            assert np.array_equal(a.R, x.R) and np.array_equal(a.t, x.t)
            assert np.array_equal(a.K, x.K) and (a.width, a.height) == (x.width, x.height)
    assert loaded.name == scene.name
    assert loaded.image_paths == scene.image_paths and loaded.mask_paths == scene.mask_paths
    assert np.array_equal(loaded.surface_points, scene.surface_points)
    assert np.array_equal(loaded.surface_normals, scene.surface_normals)
    assert loaded.object_size == pytest.approx(scene.object_size)
    assert 0.2 < scene.object_size < 0.4


def test_write_cameras_json_extra_keys(tmp_path):
    cams = S.ring_cameras("box", n_azimuth=3, elevations_deg=(30.0,), width=64, height=48)
    S.write_cameras_json(cams, tmp_path / "c.json", scene="box", note=np.arange(2))
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["note"] == [0, 1] and len(data["images"]) == 3
    assert [c.name for c in S.read_cameras_json(tmp_path / "c.json")] == [c.name for c in cams]


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_deterministic_bytes_and_seed_matters(tmp_path):
    kw = dict(n_azimuth=2, elevations_deg=(30.0,), width=96, height=72, n_surface_points=5000)
    S.render_scene(tmp_path / "a", "bottle", **kw)
    S.render_scene(tmp_path / "b", "bottle", **kw)
    S.render_scene(tmp_path / "c", "bottle", seed=1, **kw)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(da) == 2 + 2 + 2 and da == db
    assert da["images/bottle_r0_a000.jpg"] != dc["images/bottle_r0_a000.jpg"]


def test_progress_and_cancel(tmp_path):
    events = []
    S.render_scene(
        tmp_path / "p",
        "box",
        n_azimuth=3,
        elevations_deg=(30.0,),
        width=64,
        height=48,
        n_surface_points=1000,
        progress=events.append,
    )
    assert [(e.stage, e.current, e.total) for e in events] == [
        ("synthetic", i, 3) for i in (1, 2, 3)
    ]
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        S.render_scene(tmp_path / "q", "box", width=64, height=48, cancel=token)
    with pytest.raises(ValueError, match="unknown synthetic scene"):
        S.render_scene(tmp_path / "r", "teapot")


def test_textured_scenes_have_many_keypoints_lowtex_few(tmp_path):
    counts = {}
    sift = cv2.SIFT_create()
    for kind in S.SCENES:
        sc = S.render_scene(
            tmp_path / kind,
            kind,
            n_azimuth=1,
            elevations_deg=(35.0,),
            width=640,
            height=480,
            n_surface_points=1000,
        )
        gray = cv2.imread(str(sc.image_paths[0]), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(sc.mask_paths[0]), cv2.IMREAD_GRAYSCALE)
        kps = sift.detect(gray)
        on_object = [k for k in kps if mask[int(k.pt[1]), int(k.pt[0])]]
        counts[kind] = len(on_object)
        # the backdrop is featureless: nearly all keypoints are on or at the object
        assert len(kps) - len(on_object) <= 0.25 * len(kps) + 10
    assert counts["bottle"] >= 500 and counts["box"] >= 800, counts
    assert 10 <= counts["lowtex"] <= 0.25 * counts["bottle"], counts


@pytest.mark.slow
def test_sift_features_fit_ground_truth_cameras(tmp_path):
    """Triangulating COLMAP's own SIFT matches with the true cameras leaves no bias."""
    pycolmap = pytest.importorskip("pycolmap")
    sc = S.render_scene(
        tmp_path / "s",
        "bottle",
        n_azimuth=12,
        elevations_deg=(20.0, 45.0),
        width=480,
        height=360,
        n_surface_points=1000,
    )
    db = tmp_path / "db.db"
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    reader.camera_params = ",".join(str(v) for v in sc.cameras[0].params)
    pycolmap.extract_features(
        db, sc.image_dir, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader
    )
    pycolmap.match_exhaustive(db)
    rec = pycolmap.Reconstruction()
    with pycolmap.Database.open(db) as d:
        images = {im.name: im for im in d.read_all_images()}
        for cam in d.read_all_cameras():
            rec.add_camera_with_trivial_rig(cam)
        for gt in sc.cameras:
            im = images[gt.name]
            kps = np.asarray(d.read_keypoints(im.image_id)[:, :2], np.float64)
            rec.add_image_with_trivial_frame(
                pycolmap.Image(
                    name=gt.name, keypoints=kps, camera_id=im.camera_id, image_id=im.image_id
                ),
                pycolmap.Rigid3d(pycolmap.Rotation3d(gt.R), gt.t),
            )
    (tmp_path / "tri").mkdir()
    tri = pycolmap.triangulate_points(rec, db, sc.image_dir, tmp_path / "tri")
    assert tri.num_points3D() >= 500
    assert tri.compute_mean_reprojection_error() < 0.4
    res = []
    for p in tri.points3D.values():
        for el in p.track.elements:
            im = tri.images[el.image_id]
            uv = tri.cameras[im.camera_id].img_from_cam(im.cam_from_world() * p.xyz)
            res.append(im.points2D[el.point2D_idx].xy - uv)
    assert np.all(np.abs(np.mean(res, axis=0)) < 0.02)  # no half-pixel convention slip
    # the points lie on the object's true surface
    dist = _bottle_distance(np.array([p.xyz for p in tri.points3D.values()]))
    assert np.median(dist) < 0.3e-3 and np.mean(dist < 2e-3) > 0.95
