"""Single-photo mode: one synthetic photo -> a coloured relief, with the tiny network or a fake."""

from __future__ import annotations

import numpy as np
import pytest

from engine.io import ImageReadError, read_mask
from engine.io.depthmaps import load_depth_map
from engine.models import ModelUnavailable, load_depth_model
from engine.progress import Cancelled, CancelToken
from engine.stages import single_photo
from engine.stages.single_photo import SinglePhotoConfig, SinglePhotoInputs
from engine.synthetic import FOCAL_35MM, SENSOR_WIDTH_MM, depth_map, render_scene
from engine.types import ORIGIN_PRIOR
from tests.tiny_models import INPUT

W, H = 160, 120


@pytest.fixture(scope="module")
def estimator(tiny_depth_model):
    return load_depth_model(tiny_depth_model, input_size=INPUT)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    scene = render_scene(
        tmp_path_factory.mktemp("one_photo"),
        "bottle",
        n_azimuth=1,
        elevations_deg=(20.0,),
        width=W,
        height=H,
        n_surface_points=1000,
    )
    return scene


class TrueDepthEstimator:
    """A perfect network: the true inverse depth, backdrop far behind the product."""

    def __init__(self, truth: np.ndarray):
        on = np.isfinite(truth)
        far = 4.0 * float(truth[on].max())
        self.rel = (1.0 / np.where(on, truth, far)).astype(np.float32)

    def predict(self, rgb):
        assert rgb.shape[:2] == self.rel.shape
        return self.rel


def test_relief_from_the_tiny_network(photo, estimator, tmp_path):
    events = []
    res = single_photo.run(
        SinglePhotoInputs(photo.image_paths[0]),
        SinglePhotoConfig(max_size=None),
        tmp_path,
        estimator=estimator,
        progress=events.append,
    )
    cloud = res.cloud
    assert len(cloud) > 0.005 * W * H
    assert cloud.xyz.dtype == np.float32 and np.isfinite(cloud.xyz).all()
    assert cloud.rgb.dtype == np.uint8 and cloud.rgb.shape == cloud.xyz.shape
    assert cloud.normals is not None and np.isfinite(cloud.normals).all()
    np.testing.assert_allclose(np.linalg.norm(cloud.normals, axis=1), 1.0, atol=1e-4)
    # nearest part at depth 1, farthest at the relief's depth ratio
    z = cloud.xyz[:, 2]
    assert z.min() >= 1.0 - 1e-5 and z.max() <= single_photo.DEFAULT_DEPTH_RATIO + 1e-4
    assert res.note == single_photo.NOTE and "relative" in res.note
    assert res.camera.width == W and res.camera.height == H
    # the synthetic photo's EXIF says a 46 mm-equivalent lens
    assert res.focal_source == "exif_35mm"
    assert res.focal_px == pytest.approx(FOCAL_35MM / SENSOR_WIDTH_MM * W, rel=1e-3)
    assert res.model["name"] == "tiny-depth"
    assert [e.stage for e in events] == ["single_photo"] * 5
    assert events[-1].current == events[-1].total
    saved, meta = load_depth_map(res.depth_path)
    assert (saved.origin == ORIGIN_PRIOR).sum() == len(cloud)
    assert meta["note"] == single_photo.NOTE


def test_mask_decides_the_foreground(photo, estimator, tmp_path):
    mask = read_mask(photo.mask_paths[0]) > 127
    res = single_photo.run(
        SinglePhotoInputs(photo.image_paths[0], mask),
        SinglePhotoConfig(),
        tmp_path,
        estimator=estimator,
    )
    assert res.foreground_source == "mask"
    assert len(res.cloud) == int(mask.sum())
    res2 = single_photo.run(
        SinglePhotoInputs(photo.image_paths[0], photo.mask_paths[0]),
        SinglePhotoConfig(),
        tmp_path,
        estimator=estimator,
    )
    assert len(res2.cloud) == len(res.cloud)


def test_relief_geometry_with_a_perfect_network(photo, tmp_path):
    truth = depth_map("bottle", photo.cameras[0])
    on = np.isfinite(truth)
    res = single_photo.run(
        SinglePhotoInputs(photo.image_paths[0]),
        SinglePhotoConfig(focal_px=300.0),
        tmp_path,
        estimator=TrueDepthEstimator(truth),
    )
    assert res.focal_px == 300.0 and res.focal_source == "given"
    # without a mask the product is found by depth: the far backdrop is dropped
    fg = res.foreground
    assert res.foreground_source == "threshold"
    iou = (fg & on).sum() / (fg | on).sum()
    assert iou > 0.95
    # the relief is the true shape up to an affine map of inverse depth
    both = fg & on
    d = res.depth[both]
    inside = (d > 1.0 + 1e-4) & (d < single_photo.DEFAULT_DEPTH_RATIO - 1e-4)  # not clipped
    x, y = 1.0 / truth[both][inside], 1.0 / d[inside]
    a = np.stack([x, np.ones_like(x)], axis=1)
    (slope, icpt), *_ = np.linalg.lstsq(a, y, rcond=None)
    assert slope > 0
    assert np.abs(a @ [slope, icpt] - y).max() < 1e-4
    # normals face the camera
    xyz, n = res.cloud.xyz, res.cloud.normals
    assert (np.einsum("ij,ij->i", xyz, n) < 0).mean() > 0.99


def test_cancel_and_unreadable_photo(photo, estimator, tmp_path):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        single_photo.run(
            SinglePhotoInputs(photo.image_paths[0]),
            SinglePhotoConfig(),
            tmp_path,
            estimator=estimator,
            cancel=token,
        )
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    with pytest.raises(ImageReadError, match="notes.jpg"):
        single_photo.run(SinglePhotoInputs(bad), SinglePhotoConfig(), tmp_path, estimator=estimator)


def test_without_weights_the_message_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelUnavailable) as err:
        load_depth_model("depth-anything/Depth-Anything-V2-Small-hf")
    msg = str(err.value)
    assert "not found on this computer" in msg and "--depth-model FOLDER" in msg
    assert "--download-models" in msg


def test_relief_depth_mapping():
    u = np.array([1.0, 0.5, 0.0])
    d = single_photo.relief_depth(u, 2.0)
    np.testing.assert_allclose(d, [1.0, 4.0 / 3.0, 2.0], rtol=1e-6)
    with pytest.raises(ValueError):
        single_photo.relief_depth(u, 1.0)


def test_ingested_record_brings_its_focal_and_mask(photo, tmp_path):
    from engine.types import ImageRecord

    truth = depth_map("bottle", photo.cameras[0])
    record = ImageRecord(
        name="bottle.jpg",
        source=photo.image_paths[0],
        working_path=photo.image_paths[0],
        width=W // 2,  # the focal prior is in working-copy pixels: here half the photo's
        height=H // 2,
        original_width=W,
        original_height=H,
        camera_key="synthetic",
        focal_px=100.0,
        focal_source="exif_sensor",
        mask_path=photo.mask_paths[0],
    )
    res = single_photo.run(
        SinglePhotoInputs(record),
        SinglePhotoConfig(max_size=None),
        tmp_path,
        estimator=TrueDepthEstimator(truth),
    )
    assert res.image_name == "bottle.jpg"
    assert res.focal_source == "exif_sensor" and res.focal_px == pytest.approx(200.0)
    assert res.foreground_source == "mask"
