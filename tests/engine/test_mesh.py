"""Mesh stage against ground truth: surface accuracy, trimming, budget, texture, save/load.

Fast tests mesh ground-truth surface samples of the synthetic box (with noise, a floor slab and
a floating blob to be trimmed) seen by the scene's true cameras and masks; the slow one meshes
the real dense + fuse output of the SfM-solved box and checks the GLB made from it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from engine.config import MeshConfig, preset
from engine.errors import InputError, ReconstructionError
from engine.export.glb import texture_colours, write_glb
from engine.geometry import align_cameras
from engine.progress import Cancelled, CancelToken, ProgressEvent
from engine.stages import dense, fuse
from engine.stages import mesh as mesh_stage
from engine.synthetic import MASK_DIR, depth_map
from engine.types import ImageRecord, Mesh, PointCloud

#: Fast settings: a coarse Poisson octree (as accurate as depth 9 on the flat-sided box, and 5x
#: faster), a triangle budget the decimation has to work for.
FAST = MeshConfig(poisson_depth=7, max_triangles=40_000, texture_size=1024)
RED, BLUE, GREY = (200, 40, 40), (40, 60, 200), (90, 90, 90)


def _records(scene, masks: bool = True) -> list[ImageRecord]:
    return [
        ImageRecord(
            c.name,
            p,
            p,
            c.width,
            c.height,
            c.width,
            c.height,
            "synthetic",
            mask_path=m if masks else None,
        )
        for c, p, m in zip(scene.cameras, scene.image_paths, scene.mask_paths, strict=True)
    ]


def _gt_cloud(scene, seed: int = 0, n: int = 60_000) -> PointCloud:
    """``n`` true surface samples with 0.5 mm noise, red for x > 0 and blue for x < 0, standing
    on a grey floor slab (0.5 m square), plus a floating blob 12 cm beside the box."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(scene.surface_points), n, replace=False)
    truth, truth_normals = scene.surface_points[pick], scene.surface_normals[pick]
    pts = truth + rng.normal(0, 0.0005, truth.shape)
    col = np.where(truth[:, :1] > 0, RED, BLUE)
    floor = np.column_stack([rng.uniform(-0.25, 0.25, (25_000, 2)), rng.normal(0, 0.0005, 25_000)])
    lo, hi = scene.bbox_min, scene.bbox_max
    under = (
        (floor[:, 0] > lo[0])
        & (floor[:, 0] < hi[0])
        & (floor[:, 1] > lo[1])
        & (floor[:, 1] < hi[1])
    )
    floor = floor[~under]
    blob = np.array([0.2, 0.0, 0.1]) + rng.normal(0, 0.004, (400, 3))
    normals = np.concatenate(
        [
            truth_normals,
            np.tile([0.0, 0.0, 1.0], (len(floor), 1)),
            np.tile([1.0, 0.0, 0.0], (len(blob), 1)),
        ]
    )
    return PointCloud(
        np.concatenate([pts, floor, blob]).astype(np.float32),
        np.concatenate([col, np.tile(GREY, (len(floor) + len(blob), 1))]).astype(np.uint8),
        normals.astype(np.float32),
    )


def _surface_errors(
    vertices: np.ndarray, faces: np.ndarray, scene, n: int = 200_000
) -> tuple[np.ndarray, np.ndarray]:
    """Distances mesh -> true surface (area samples) and true surface -> mesh."""
    tm = trimesh.Trimesh(vertices, faces, process=False)
    samples, _ = trimesh.sample.sample_surface(tm, n, seed=0)
    to_truth, _ = cKDTree(scene.surface_points).query(samples, workers=-1)
    to_mesh, _ = cKDTree(samples).query(scene.surface_points, workers=-1)
    return to_truth, to_mesh


def _components_outside(
    vertices: np.ndarray, faces: np.ndarray, scene, margin: float
) -> list[np.ndarray]:
    """Bounding boxes (min, max) of the connected components reaching outside the true box."""
    n = len(vertices)
    a = faces.ravel()
    b = faces[:, [1, 2, 0]].ravel()
    _, labels = connected_components(
        coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False
    )
    lo = scene.bbox_min - margin
    hi = scene.bbox_max + margin
    out = []
    for c in np.unique(labels[faces[:, 0]]):
        v = vertices[labels == c]
        if (v < lo).any() or (v > hi).any():
            out.append(np.stack([v.min(0), v.max(0)]))
    return out


def _texture_vs_photos(
    mesh: Mesh,
    scene,
    to_world,
    n: int = 3000,
    seed: int = 0,
    uv: np.ndarray | None = None,
    texture: np.ndarray | None = None,
) -> np.ndarray:
    """Per sample point on the mesh: mean |texture colour - photo colour| over RGB.

    Points are drawn uniformly on the surface; each is compared in the most frontal of a
    dozen true views where the true depth map shows it (not hidden).
    """
    rng = np.random.default_rng(seed)
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces, np.int64)
    uv = np.asarray(mesh.uv if uv is None else uv, np.float64)
    tex_mesh = Mesh(v, f, None, uv.astype(np.float32), mesh.texture if texture is None else texture)
    p = to_world(v)
    cross = np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]])
    area = np.linalg.norm(cross, axis=1)
    fid = rng.choice(len(f), n, p=area / area.sum())
    bary = rng.dirichlet([1.0, 1.0, 1.0], n)
    pts = np.einsum("nk,nkj->nj", bary, p[f[fid]])
    normals = cross[fid] / area[fid, None]
    tex = texture_colours(tex_mesh, np.einsum("nk,nkj->nj", bary, uv[f[fid]]))
    best = np.full(n, -1.0)
    photo = np.zeros((n, 3))
    for cam, path in list(zip(scene.cameras, scene.image_paths, strict=True))[12:24]:
        pc = pts @ cam.R.T + cam.t
        xy = pc @ cam.K.T
        xy = xy[:, :2] / xy[:, 2:]
        col = np.floor(xy[:, 0]).astype(int)
        row = np.floor(xy[:, 1]).astype(int)
        ok = (col >= 1) & (col < cam.width - 1) & (row >= 1) & (row < cam.height - 1)
        truth = depth_map(scene.name, cam)
        vis = ok.copy()
        vis[ok] = np.abs(truth[row[ok], col[ok]] - pc[ok, 2]) < 0.002
        cos = np.sum(normals * (cam.center - pts), axis=1) / np.linalg.norm(
            cam.center - pts, axis=1
        )
        better = vis & (np.abs(cos) > best)
        if better.any():
            img = np.asarray(Image.open(path).convert("RGB"), np.float64)
            m = Mesh(np.zeros((1, 3)), np.zeros((0, 3), np.int32), texture=img.astype(np.uint8))
            uvp = np.stack([xy[better, 0] / cam.width, 1 - xy[better, 1] / cam.height], axis=1)
            photo[better] = texture_colours(m, uvp)
            best[better] = np.abs(cos[better])
    seen = best > 0.3
    assert seen.mean() > 0.8
    return np.abs(tex[seen] - photo[seen]).mean(axis=1)


@pytest.fixture(scope="module")
def box(scene_factory):
    return scene_factory("box")


@pytest.fixture(scope="module")
def meshed(box, tmp_path_factory):
    """The box meshed from ground-truth samples, with masks, and its progress events."""
    events: list[ProgressEvent] = []
    work = tmp_path_factory.mktemp("mesh_work")
    result = mesh_stage.run(
        mesh_stage.MeshInputs(_gt_cloud(box), box.camera_dict(), _records(box)),
        FAST,
        work,
        progress=events.append,
    )
    return result, events, work


def test_mesh_matches_the_true_surface(box, meshed):
    result, _, _ = meshed
    m = result.mesh
    to_truth, to_mesh = _surface_errors(m.vertices, m.faces, box)
    size = box.object_size
    # measured: 0.50 mm mesh -> truth, 0.43 mm truth -> mesh (0.2% of the 290 mm size)
    assert to_truth.mean() <= 0.01 * size, (to_truth.mean(), result.stats)
    assert np.percentile(to_truth, 99) <= 0.02 * size
    assert to_mesh.mean() <= 0.01 * size
    assert np.mean(to_mesh <= 0.01 * size) >= 0.97  # complete: every visible side is there
    assert result.stats["masks"] == len(box.cameras)


def test_floor_and_blob_are_trimmed(box, meshed):
    result, _, _ = meshed
    m = result.mesh
    outside = _components_outside(m.vertices, m.faces, box, 0.02 * box.object_size)
    assert outside == [], outside
    assert result.stats["components_kept"] >= 1
    assert result.stats["points_used"] < result.stats["points_in"] - 20_000  # the floor went


def test_budget_colours_and_progress(box, meshed):
    result, events, work = meshed
    m = result.mesh
    assert 0.5 * FAST.max_triangles <= m.num_triangles <= FAST.max_triangles
    assert result.stats["poisson_faces"] > FAST.max_triangles  # the decimation had work to do
    assert m.faces.dtype == np.int32 and m.vertices.dtype == np.float64
    assert m.faces.min() >= 0 and m.faces.max() < len(m)
    # vertex colours from the nearest dense points: red for x > 1 cm, blue for x < -1 cm
    # (above the floor's last few millimetres, whose grey points survive beside the base)
    col = m.vertex_colors.astype(int)
    x, z = m.vertices[:, 0], m.vertices[:, 2]
    assert np.mean(np.abs(col[(x > 0.01) & (z > 0.01)] - RED).max(axis=1) <= 10) > 0.98
    assert np.mean(np.abs(col[(x < -0.01) & (z > 0.01)] - BLUE).max(axis=1) <= 10) > 0.98
    assert events and all(e.stage == "mesh" for e in events)
    assert [e.current for e in events] == sorted(e.current for e in events)
    assert events[-1].current == events[-1].total
    assert isinstance(events[-1].partial, Mesh)
    assert events[-1].partial.num_triangles == m.num_triangles
    assert not (work / "mesh_scratch").exists()  # scratch files removed


def test_texture_reproduces_the_photos(box, meshed):
    result, _, _ = meshed
    m = result.mesh
    assert result.stats["textured"]
    assert m.texture.shape[2] == 3 and max(m.texture.shape[:2]) <= FAST.texture_size
    assert m.uv.shape == (len(m), 2) and np.all((m.uv >= 0) & (m.uv <= 1))
    err = _texture_vs_photos(m, box, lambda v: v)
    # measured: median 4.7 levels (sensor noise, JPEG, resampling); shuffled UVs: 48
    assert np.median(err) <= 12, np.percentile(err, [50, 90])
    assert np.mean(err <= 40) >= 0.9
    # control: the same points with their texture coordinates shuffled are far off
    shuffled = np.random.default_rng(1).permutation(len(m.uv))
    bad = _texture_vs_photos(m, box, lambda v: v, uv=m.uv[shuffled])
    assert np.median(bad) > 3 * np.median(err)


def test_without_masks_or_normals(box, tmp_path):
    """No masks: the floor plane is found and cut. No normals: PCA normals, oriented towards
    the cameras that see each point. No texture asked: vertex colours only."""
    records = _records(box, masks=False)
    cfg = dataclasses.replace(FAST, texture_size=0)
    cloud = _gt_cloud(box)
    cloud = PointCloud(cloud.xyz, cloud.rgb, np.zeros_like(cloud.normals))  # saved without
    result = mesh_stage.run(mesh_stage.MeshInputs(cloud, box.camera_dict(), records), cfg, tmp_path)
    m = result.mesh
    assert result.stats["masks"] == 0 and result.stats["floor_cut"]
    assert m.uv is None and m.texture is None and m.vertex_colors is not None
    to_truth, _ = _surface_errors(m.vertices, m.faces, box, n=50_000)
    assert to_truth.mean() <= 0.01 * box.object_size
    # the floor ring is gone; the blob beside the box is a small island, dropped
    assert _components_outside(m.vertices, m.faces, box, 0.02 * box.object_size) == []


def test_save_and_load_mesh(meshed, tmp_path):
    m = meshed[0].mesh
    path = tmp_path / mesh_stage.MESH_FILE
    mesh_stage.save_mesh(path, m)
    back = mesh_stage.load_mesh(path)
    for name in ("vertices", "faces", "vertex_colors", "uv", "texture"):
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
    assert back.faces.dtype == np.int32
    assert sorted(p.name for p in path.parent.iterdir()) == ["mesh.npz"]  # no temporaries
    bare = Mesh(m.vertices, m.faces)
    mesh_stage.save_mesh(path, bare)
    assert mesh_stage.load_mesh(path).texture is None
    with pytest.raises(InputError, match="missing"):
        mesh_stage.load_mesh(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="damaged"):
        mesh_stage.load_mesh(tmp_path / "bad.npz")


def test_too_few_points_and_cancel(box, tmp_path):
    cloud = _gt_cloud(box)
    few = PointCloud(cloud.xyz[:50], cloud.rgb[:50], cloud.normals[:50])
    with pytest.raises(ReconstructionError, match="too few"):
        mesh_stage.run(mesh_stage.MeshInputs(few, box.camera_dict(), _records(box)), FAST, tmp_path)
    token = CancelToken()

    def cancel_on_first(event: ProgressEvent) -> None:
        token.cancel()

    with pytest.raises(Cancelled):
        mesh_stage.run(
            mesh_stage.MeshInputs(cloud, box.camera_dict(), _records(box)),
            FAST,
            tmp_path,
            progress=cancel_on_first,
            cancel=token,
        )


@pytest.mark.slow
def test_mesh_from_real_dense_output(solved, tmp_path):
    """SfM -> dense -> fuse -> mesh -> GLB on the box, scored in the true frame."""
    scene, images, model, _ = solved("box")
    masks = {Path(p).stem: p for p in sorted((scene.root / MASK_DIR).glob("*.png"))}
    images = dataclasses.replace(
        images,
        images=tuple(
            dataclasses.replace(r, mask_path=masks[Path(r.name).stem]) for r in images.images
        ),
    )
    cfg = preset("standard")  # on the CPU: 560 px depth maps, Poisson depth 8
    assert dense.for_device(cfg.dense, "cpu").max_image_size == 560
    depth = dense.run(dense.DenseInputs(images, model), cfg.dense, tmp_path / "dense", device="cpu")
    fused = fuse.run(list(depth.paths), cfg.fuse, tmp_path / "dense.ply")
    result = mesh_stage.run(
        mesh_stage.MeshInputs(fused.cloud, model.cameras, images), cfg.mesh, tmp_path / "work"
    )
    m = result.mesh
    assert 0.5 * cfg.mesh.max_triangles <= m.num_triangles <= cfg.mesh.max_triangles
    s, rot, t = align_cameras(model.cameras, scene.camera_dict(), sorted(model.cameras))

    def to_world(v: np.ndarray) -> np.ndarray:
        return s * np.asarray(v, np.float64) @ rot.T + t

    size = scene.object_size
    to_truth, to_mesh = _surface_errors(to_world(m.vertices), m.faces, scene)
    # measured: 0.54 mm mesh -> truth, 0.49 mm truth -> mesh on a 290 mm box
    assert to_truth.mean() <= 0.01 * size, (to_truth.mean(), result.stats)
    assert to_mesh.mean() <= 0.01 * size
    assert _components_outside(to_world(m.vertices), m.faces, scene, 0.02 * size) == []

    # the GLB in the true frame (Z up, metres) loads back with trimesh, texture included
    transform = np.eye(4)
    transform[:3, :3] = s * rot
    transform[:3, 3] = t
    info = write_glb(tmp_path / "mesh.glb", m, transform=transform, max_mb=cfg.mesh.max_glb_mb)
    assert (tmp_path / "mesh.glb").stat().st_size == info["bytes"] <= cfg.mesh.max_glb_mb * 1e6
    loaded = trimesh.load(tmp_path / "mesh.glb")
    (geom,) = loaded.geometry.values()
    image = geom.visual.material.baseColorTexture
    assert image is not None and min(image.size) >= 256
    yup = np.asarray(geom.vertices, np.float64)
    zup = np.stack([yup[:, 0], -yup[:, 2], yup[:, 1]], axis=1)
    np.testing.assert_allclose(zup, to_world(m.vertices), atol=1e-5)
    err = _texture_vs_photos(
        Mesh(zup, np.asarray(geom.faces)),
        scene,
        lambda v: v,
        uv=np.asarray(geom.visual.uv),
        texture=np.asarray(image.convert("RGB")),
    )
    # measured: median 6 levels (the texture was JPEG-compressed on the way)
    assert np.median(err) <= 15, np.percentile(err, [50, 90])


def test_gil_holding_meshing_runs_in_a_child_that_reports_errors_and_cancels(tmp_path):
    """pycolmap's Poisson holds the GIL for seconds: it runs in a child process, whose errors
    come back with pycolmap's message and which Cancel terminates."""
    import multiprocessing

    from engine.progress import Cancelled, CancelToken
    from engine.stages import _isolated

    with pytest.raises(RuntimeError) as info:
        _isolated.poisson_meshing(tmp_path / "missing.ply", tmp_path / "out.ply", 6)
    assert "missing.ply" in str(info.value) or "Error" in str(info.value)
    token = CancelToken()
    token.cancel()
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        _isolated.simplify_mesh(tmp_path / "missing.ply", tmp_path / "out.ply", 0.5, cancel=token)
    assert time.perf_counter() - t0 < 5.0
    assert multiprocessing.active_children() == []


# --------------------------------------------------------------------------- the support


def _table_scene(tilt_deg: float, rng: np.random.Generator):
    """A noisy table tilted about x, a 0.2 x 0.2 x 0.3 box on it, clutter at the table's edge
    (points, the table's normal, how many table and box points come first)."""
    a = np.radians(tilt_deg)
    normal = np.array([0.0, -np.sin(a), np.cos(a)])
    e1 = np.array([1.0, 0.0, 0.0])
    e2 = np.cross(normal, e1)
    uv = rng.uniform(-1.0, 1.0, (40_000, 2))
    table = uv[:, :1] * e1 + uv[:, 1:] * e2 + rng.normal(0, 0.004, (len(uv), 1)) * normal
    # the box's faces (no bottom), standing on the table
    f = rng.uniform(-0.1, 0.1, (8000, 2))
    h = rng.uniform(0.0, 0.3, (8000, 1))
    sides = [
        np.c_[f[:2000, :1], np.full((2000, 1), 0.1), h[:2000]],
        np.c_[f[2000:4000, :1], np.full((2000, 1), -0.1), h[2000:4000]],
        np.c_[np.full((2000, 1), 0.1), f[4000:6000, :1], h[4000:6000]],
        np.c_[f[6000:, :1], f[6000:, 1:], np.full((2000, 1), 0.3)],
    ]
    local = np.concatenate(sides)
    box = local[:, :1] * e1 + local[:, 1:2] * e2 + local[:, 2:] * normal + 0.001 * normal
    clutter = rng.uniform([0.8, 0.8, 0.0], [0.95, 0.95, 0.5], (3000, 3))
    clutter = clutter[:, :1] * e1 + clutter[:, 1:2] * e2 + clutter[:, 2:] * normal
    return np.concatenate([table, box, clutter]), normal, len(table), len(box)


@pytest.mark.parametrize("tilt", [0.0, 12.0])
def test_the_support_is_found_under_the_product_and_cut(tilt):
    """A table tilted against the cameras' up (a rig held askew), clutter at its edge: the
    plane is the table's, and the cut keeps the box whole."""
    rng = np.random.default_rng(5)
    xyz, normal, n_table, n_box = _table_scene(tilt, rng)
    from engine.synthetic import ring_cameras

    cams = ring_cameras("box", n_azimuth=12, elevations_deg=(30.0,))
    found = mesh_stage._find_floor(xyz, cams)
    assert found is not None and not found.bare
    n, height = found.normal, found.height
    assert np.degrees(np.arccos(min(1.0, float(n @ normal)))) < 1.0
    kept = xyz @ n > height
    assert kept[:n_table].mean() < 0.01  # the table goes
    box = kept[n_table : n_table + n_box]
    assert box.mean() > 0.93  # the box stays, all but its lowest centimetre or so


def test_a_raised_support_is_cut_although_the_room_around_it_lies_lower():
    """A table (or the book a plush sits on) with the floor around it half a metre lower:
    what lies beyond the support's edge is the room's, not the product's mass under it, so the
    table is still the support (et: 6% of its points lie lower, around the book)."""
    rng = np.random.default_rng(7)
    xyz, normal, n_table, n_box = _table_scene(0.0, rng)
    uv = rng.uniform(-3.0, 3.0, (30_000, 2))
    uv = uv[np.abs(uv).max(axis=1) > 1.05][:6000]
    floor = np.c_[uv, np.full(len(uv), -0.5)]
    edge = rng.uniform(-1.0, 1.0, 600)  # the table top's thickness along one edge
    rim = np.c_[edge, np.full(600, 1.0), rng.uniform(-0.03, 0.0, 600)]
    scene = np.concatenate([xyz, floor, rim])
    assert (scene[:, 2] < -0.01).mean() > 3 * mesh_stage.FLOOR_MAX_BELOW
    from engine.synthetic import ring_cameras

    cams = ring_cameras("box", n_azimuth=12, elevations_deg=(30.0,))
    found = mesh_stage._find_floor(scene, cams)
    assert found is not None and not found.bare
    assert np.degrees(np.arccos(min(1.0, float(found.normal @ normal)))) < 1.0
    assert abs(found.level) < 0.01  # the table's top, not the floor
    kept = scene @ found.normal > found.height
    assert kept[:n_table].mean() < 0.01
    assert kept[n_table : n_table + n_box].mean() > 0.93


def test_a_base_plate_inside_the_users_masks_is_the_products():
    """A model on its own base plate (lego): the plate passes for a support in 3D; the user's
    masks draw it as the product's, and only they can tell. Masks of the model alone leave it
    out: then it is a support."""
    import cv2

    from engine.synthetic import ring_cameras

    rng = np.random.default_rng(8)
    r = np.sqrt(rng.uniform(0, 1, 30_000)) * 0.3
    a = rng.uniform(0, 2 * np.pi, 30_000)
    plate = np.c_[r * np.cos(a), r * np.sin(a), rng.normal(0, 0.001, 30_000)]
    a = rng.uniform(0, 2 * np.pi, 300)
    sides = np.c_[0.3 * np.cos(a), 0.3 * np.sin(a), rng.uniform(-0.02, 0.0, 300)]
    _, _, n_table, _ = _table_scene(0.0, rng)
    model = _table_scene(0.0, rng)[0][n_table : n_table + 8000]
    xyz = np.concatenate([plate, sides, model])
    cams = ring_cameras("box", n_azimuth=12, elevations_deg=(30.0,))
    found = mesh_stage._find_floor(xyz, cams)
    assert found is not None and not found.bare  # in 3D alone, the plate is a support
    views = [mesh_stage._view(f"v{i}", cam, None) for i, cam in enumerate(cams)]

    def masks(pts):
        out = {}
        for v in views:
            m = np.zeros((v.cam.height, v.cam.width), np.uint8)
            xy, _ = v.project(pts)
            ok = np.isfinite(xy).all(axis=1)
            px = np.clip(xy[ok].astype(int), 0, [v.cam.width - 1, v.cam.height - 1])
            m[px[:, 1], px[:, 0]] = 1
            out[v.name] = cv2.dilate(m, np.ones((9, 9), np.uint8)).astype(bool)
        return out

    whole = mesh_stage._masks_claim(xyz, found, views, masks(xyz), CancelToken())
    model_only = mesh_stage._masks_claim(xyz, found, views, masks(model), CancelToken())
    assert whole > 0.9 and whole >= mesh_stage.FLOOR_IN_MASKS
    assert model_only < 0.35  # the plate under and just around the model's foot is in its outline


@pytest.mark.parametrize("source", ["file", "automatic"])
def test_the_stage_keeps_a_support_only_inside_the_users_own_masks(box, tmp_path, source):
    """The box on its slab, every photo's mask the whole frame. The user's own masks (a file
    beside the photo) draw the slab as the product's: the stage keeps it. An automatic mask
    as wide decides nothing: the slab is cut (no masks trim: the support was found)."""
    whole = np.full((box.cameras[0].height, box.cameras[0].width), 255, np.uint8)
    mask = tmp_path / "whole.png"
    Image.fromarray(whole).save(mask)
    records = [dataclasses.replace(r, mask_path=mask, mask_source=source) for r in _records(box)]
    cfg = dataclasses.replace(FAST, texture_size=0)
    result = mesh_stage.run(
        mesh_stage.MeshInputs(_gt_cloud(box), box.camera_dict(), records), cfg, tmp_path / "run"
    )
    slab = result.mesh.vertices[:, 2] < 0.01 * box.object_size
    if source == "file":
        assert result.stats["support_in_own_masks"] >= mesh_stage.FLOOR_IN_MASKS
        assert not result.stats["floor_cut"] and slab.mean() > 0.3
    else:
        assert "support_in_own_masks" not in result.stats
        assert result.stats["floor_cut"] and slab.mean() < 0.01


def test_a_product_without_a_support_keeps_its_flat_base():
    """Only the box (its flat top and sides, no table reconstructed): nothing is cut."""
    rng = np.random.default_rng(6)
    xyz, _, n_table, n_box = _table_scene(0.0, rng)
    from engine.synthetic import ring_cameras

    cams = ring_cameras("box", n_azimuth=12, elevations_deg=(30.0,))
    assert mesh_stage._find_floor(xyz[n_table : n_table + n_box], cams) is None


def _grid_mesh(x0, x1, y0, y1, n, depth):
    """A rectangle in pixel coordinates as an n x n grid of vertices (2 (n-1)^2 triangles)."""
    gx, gy = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    xy = np.column_stack([gx.ravel(), gy.ravel()])
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = (idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:])
    faces = np.concatenate(
        [np.c_[a.ravel(), b.ravel(), c.ravel()], np.c_[b.ravel(), d.ravel(), c.ravel()]]
    )
    return xy, depth(xy[:, 0], xy[:, 1]), faces


@pytest.mark.parametrize("cells", [2, 9, 60, 200])
def test_the_z_buffer_holds_the_nearest_surface_at_every_pixel_centre(cells):
    """A tilted rectangle meshed as 2 to 80,000 triangles (large ones, a few pixels each, under
    a pixel each), and a nearer triangle over part of it: every pixel centre inside gets the
    depth of the nearest surface (exact for faces of a pixel or more: depth is affine in the
    pixel plane), every one outside stays empty, and the coverage is the z-buffer's finite
    pixels."""
    w, h = 97, 71

    def plane(x, y):
        return 3.0 + 0.01 * x - 0.02 * y

    xy, z, faces = _grid_mesh(10.3, 80.7, 5.2, 60.6, cells, plane)
    front = np.array([[30.2, 20.1], [75.5, 33.3], [41.7, 66.9]])
    xy = np.concatenate([xy, front])
    z = np.concatenate([z, [1.0, 1.0, 1.0]])
    faces = np.concatenate([faces, [[len(xy) - 3, len(xy) - 2, len(xy) - 1]]])
    # a face behind the camera is left out
    xy = np.concatenate([xy, [[0.0, 0.0], [90.0, 0.0], [0.0, 70.0]]])
    z = np.concatenate([z, [-1.0, 1.0, 1.0]])
    faces = np.concatenate([faces, [[len(xy) - 3, len(xy) - 2, len(xy) - 1]]])

    zbuf = mesh_stage.depth_buffer(xy, z, faces, w, h)

    px, py = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    in_rect = (px >= 10.3) & (px <= 80.7) & (py >= 5.2) & (py <= 60.6)
    a, b, c = front
    edges = [
        (q[0] - p[0]) * (py - p[1]) - (q[1] - p[1]) * (px - p[0])
        for p, q in ((a, b), (b, c), (c, a))
    ]
    in_front = np.all([e >= 0 for e in edges], axis=0) | np.all([e <= 0 for e in edges], axis=0)
    expected = np.where(in_front, 1.0, np.where(in_rect, plane(px, py), np.inf))
    # pixel centres exactly on an edge may fall either way
    on_edge = np.isin(px, [10.5, 80.5]) | np.isin(py, [5.5, 60.5])
    sure = ~on_edge
    np.testing.assert_array_equal(np.isfinite(zbuf)[sure], np.isfinite(expected)[sure])
    hit = np.isfinite(zbuf) & np.isfinite(expected)
    # faces under a pixel mark the pixel their centroid falls in with their mean depth: within
    # the plane's change across one pixel
    exact = cells <= 9
    atol = 1e-9 if exact else float(np.hypot(0.01, 0.02) * np.sqrt(2))
    np.testing.assert_allclose(zbuf[hit], expected[hit], rtol=0, atol=atol)
    np.testing.assert_array_equal(mesh_stage._coverage(xy, z, faces, w, h), np.isfinite(zbuf))


def test_pinholes_in_the_clouds_coverage_stay_and_large_gaps_go():
    """A grid surface: an unsupported patch of 4 vertices is a pinhole (kept), one of a
    quarter of the grid is a gap (trimmed)."""
    n = 60
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:]
    faces = np.concatenate([np.c_[a, b, c], np.c_[b, d.ravel(), c]])
    bad = np.zeros(n * n, bool)
    bad[idx[10:12, 10:12].ravel()] = True  # 4 vertices: 0.11% of 3,600
    bad[idx[30:, 30:].ravel()] = True  # 900 vertices
    kept = mesh_stage._pinholes(faces, bad)
    assert kept[idx[10:12, 10:12].ravel()].all()
    assert not kept[idx[30:, 30:].ravel()].any()
    assert not kept[~bad].any()


def test_the_surface_is_made_again_only_around_a_product_small_in_the_cloud():
    """A product spanning a tenth of the cloud (a wall far behind it) gets the points in its
    grown box; one spanning the cloud gets none (no second Poisson)."""
    rng = np.random.default_rng(3)
    product = rng.uniform(-0.1, 0.1, (2000, 3))
    wall = rng.uniform([-2.0, 1.5, 0.0], [2.0, 1.6, 2.0], (4000, 3))
    xyz = np.concatenate([product, wall])
    inside = mesh_stage._product_neighbourhood(xyz, product)
    assert inside is not None
    assert inside[:2000].all() and not inside[2000:].any()
    assert mesh_stage._product_neighbourhood(product, product) is None


def _box(centre, extents) -> tuple[np.ndarray, np.ndarray]:
    """A box mesh (vertices, faces) subdivided to 1 cm edges: components of a trimmed surface."""
    m = trimesh.creation.box(extents=extents)
    m.apply_translation(centre)
    v, f = trimesh.remesh.subdivide_to_size(m.vertices, m.faces, max_edge=0.01)
    return np.asarray(v), np.asarray(f)


def test_the_component_the_cameras_aim_at_is_the_product():
    """A larger slab of background far from where the cameras aim goes; a part close to the
    product stays."""

    parts = [
        _box([0, 0, 0], [0.2] * 3),
        _box([0.0, 0.0, 0.165], [0.12] * 3),
        _box([3.0, 0, 0], [0.3] * 3),
    ]
    vertices, faces, offset = [], [], 0
    for v, f in parts:
        vertices.append(v)
        faces.append(f + offset)
        offset += len(v)
    vertices, faces = np.concatenate(vertices), np.concatenate(faces)
    kept, present, n_kept = mesh_stage._product_components(vertices, faces, np.zeros(3))
    assert present == 3 and n_kept == 2
    assert vertices[np.unique(kept)][:, 0].max() < 0.2
    # without an aim, the largest
    kept, _, _ = mesh_stage._product_components(vertices, faces, None)
    assert vertices[np.unique(kept)][:, 0].min() > 2.0


def test_a_small_part_the_cloud_holds_stays_and_crumbs_go():
    """Trimming cut a thin plate off the product (lego's bucket face): it is under the crumbs'
    share of faces but the only surface near the dense points it holds, so it stays. A crumb of
    the same size lying on the product's surface, and one far away, go."""

    body = _box([0, 0, 0], [0.4] * 3)  # faces at +-0.2; 1% of its diagonal: 7 mm
    cut_off = _box([0.0, 0.0, 0.215], [0.1, 0.1, 0.004])  # 1.3 cm above the top face
    crumb = _box([0.0, 0.205, 0.0], [0.1, 0.004, 0.1])  # 3 mm off a side face
    far = _box([2.0, 0.0, 0.0], [0.1, 0.1, 0.004])
    vertices, faces, labels, offset = [], [], [], 0
    for k, (v, f) in enumerate([body, cut_off, crumb, far]):
        vertices.append(v)
        faces.append(f + offset)
        labels.append(np.full(len(f), k))
        offset += len(v)
    vertices, faces = np.concatenate(vertices), np.concatenate(faces)
    labels = np.concatenate(labels)
    assert (labels == 1).sum() < mesh_stage.MIN_COMPONENT_FRACTION * (labels == 0).sum()
    # the dense cloud: the body's surface (the crumb's side included) and the cut-off plate's
    # (3% of the points); nothing near the far plate
    cloud = [trimesh.Trimesh(*body).sample(20_000, seed=1), trimesh.Trimesh(*cut_off).sample(600)]
    xyz = np.concatenate(cloud)
    kept, present, n_kept = mesh_stage._product_components(vertices, faces, np.zeros(3), xyz)
    kept_labels = set(labels[np.isin(faces, kept).all(axis=1)].tolist())
    assert present == 4 and n_kept == 2 and kept_labels == {0, 1}
    # without the cloud, only the crumbs' share decides
    _, _, n_kept = mesh_stage._product_components(vertices, faces, np.zeros(3))
    assert n_kept == 1


def test_nothing_reconstructed_where_the_cameras_aim_is_told_apart_from_a_flat_product():
    """A bare support under the aim (only the sheet the product stood on), or a kept part away
    from the aim (background), is no product; a flat product the cameras aim at, and a product
    around the aim, are."""
    from engine.synthetic import ring_cameras

    cams = ring_cameras("box", n_azimuth=12, elevations_deg=(30.0,))
    centres = np.array([c.center for c in cams])
    aim = np.array([0.0, 0.0, 0.05])
    reach = float(np.median(np.linalg.norm(centres - aim, axis=1)))
    up = np.array([0.0, 0.0, 1.0])
    # the aim 0.15 of the cameras' distance above a bare plane: only the support was fused
    bare = mesh_stage.Support(up, 0.05 - 0.15 * reach, bare=True)
    why = mesh_stage._nothing_aimed_at(cams, aim, bare)
    assert "only the surface the product stood on" in why
    # the cameras aim at the plane itself: a flat product (a rug, a print)
    flat = mesh_stage.Support(up, 0.05 - 0.01 * reach, bare=True)
    assert mesh_stage._nothing_aimed_at(cams, aim, flat) == ""
    # what was kept lies off to the side, 0.3 of the distance away: background
    rng = np.random.default_rng(1)
    blob = rng.normal(size=(500, 3)) * 0.02
    far = blob + aim + np.array([0.3 * reach + 0.1, 0.0, 0.0])
    assert "away from where the photos aim" in mesh_stage._nothing_aimed_at(cams, aim, None, far)
    # a product around the aim
    assert mesh_stage._nothing_aimed_at(cams, aim, None, blob + aim) == ""
    # cameras that converge on nothing give no verdict
    assert mesh_stage._nothing_aimed_at(cams, None, bare, far) == ""
