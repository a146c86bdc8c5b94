"""SIFT features in COLMAP's conventions, found once per photo and reused."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pycolmap
import pytest

from engine.stages import features


def _blob_image(cx: float, cy: float, size=(120, 160), sigma=3.0) -> np.ndarray:
    """A dark Gaussian blob centred at OpenCV pixel coordinates (cx, cy) on grey."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
    return np.clip(200 - 150 * blob, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("octave", [-2, -1, 0])
def test_keypoints_use_colmaps_pixel_centres(octave):
    """COLMAP's first pixel spans 0..1 (its centre is 0.5): a blob at OpenCV (70.3, 50.6) is a
    keypoint at (70.8, 51.1), whichever octave finds it."""
    img = _blob_image(70.3, 50.6)
    f = features.sift(img, octave, 100)
    assert len(f) >= 1
    d = np.hypot(f.keypoints[:, 0] - 70.8, f.keypoints[:, 1] - 51.1)
    assert d.min() < 0.25
    # the affine shape is a rotation times the blob's scale: a few pixels
    best = f.keypoints[np.argmin(d)]
    scale = np.hypot(best[2], best[4])
    assert 1.5 < scale < 8.0
    assert np.isclose(np.linalg.det(best[2:].reshape(2, 2)), scale**2, rtol=1e-4)


def test_descriptors_are_root_sift_scaled_like_colmaps():
    """Unit-length RootSIFT times 512 in uint8, the largest features first, at most the cap."""
    rng = np.random.default_rng(0)
    img = cv2.resize(
        rng.integers(0, 255, (40, 50), dtype=np.uint8), (400, 320), interpolation=cv2.INTER_CUBIC
    )
    f = features.sift(img, -1, 300)
    assert len(f) == 300
    assert f.descriptors.dtype == np.uint8 and f.descriptors.shape == (300, 128)
    norms = np.linalg.norm(f.descriptors.astype(np.float64) / 512.0, axis=1)
    assert np.all(np.abs(norms - 1.0) < 0.02)
    # the largest keypoints first, as COLMAP keeps them under a budget
    scale = np.hypot(f.keypoints[:, 2], f.keypoints[:, 4])
    assert np.all(np.diff(scale) <= 1e-4)
    everything = features.sift(img, -1, 100_000)
    assert np.median(scale) > np.median(
        np.hypot(everything.keypoints[:, 2], everything.keypoints[:, 4])
    )
    assert len(f.first(10)) == 10 and np.array_equal(f.first(10).keypoints, f.keypoints[:10])


def test_features_are_found_once_and_read_back(tmp_path):
    """The store extracts a photo once per octave; a changed photo is extracted again."""
    rng = np.random.default_rng(1)
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), cv2.resize(rng.integers(0, 255, (30, 40), np.uint8), (320, 240)))
    store = features.FeatureStore(tmp_path / "cache", 500)
    first = store.get(photo, "a.png", -1)
    again = store.get(photo, "a.png", -1)
    assert store.extracted == ["a.png"]
    assert np.array_equal(first.keypoints, again.keypoints)
    assert np.array_equal(first.descriptors, again.descriptors)
    # a new store (the next attempt, or a resumed run) reads the same file
    other = features.FeatureStore(tmp_path / "cache", 500)
    other.get_many([(photo, "a.png")], -1)
    assert other.extracted == []
    # the other octave is another set of features
    other.get(photo, "a.png", 0)
    assert other.extracted == ["a.png"]
    # a photo replaced under the same name is not served stale features
    cv2.imwrite(str(photo), cv2.resize(rng.integers(0, 255, (30, 40), np.uint8), (320, 240)))
    st = photo.stat()
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    fresh = features.FeatureStore(tmp_path / "cache", 500)
    fresh.get(photo, "a.png", -1)
    assert fresh.extracted == ["a.png"]


def test_each_extractor_is_cached_under_its_own_name(tmp_path):
    """Asking one photo for COLMAP's features runs COLMAP's extractor (not OpenCV's under
    COLMAP's name), and the two extractors' features are kept apart."""
    rng = np.random.default_rng(3)
    photo = tmp_path / "photos" / "a.png"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), cv2.resize(rng.integers(0, 255, (30, 40), np.uint8), (320, 240)))
    store = features.FeatureStore(tmp_path / "cache", 400)
    colmap = store.get(photo, "a.png", -1, "colmap")
    direct = features._colmap_batch([(photo, "a.png")], -1, 400, tmp_path / "scratch")["a.png"]
    assert np.array_equal(colmap.keypoints, direct.keypoints)
    assert store.path("a.png", -1, "colmap").is_file()
    assert not store.path("a.png", -1, "opencv").exists()
    opencv = store.get(photo, "a.png", -1, "opencv")
    assert not np.array_equal(opencv.keypoints[:50], colmap.keypoints[:50])
    assert store.extracted == ["a.png", "a.png"]
    with pytest.raises(ValueError, match="unknown feature extractor"):
        store.get(photo, "a.png", -1, "orb")


def test_the_finer_octave_finds_a_small_products_detail_where_it_is(tmp_path):
    """``first_octave=-2`` (the strong retry on small photos) runs on a copy upsampled twice:
    more keypoints on fine texture, at the same places in the photo's own pixels."""
    rng = np.random.default_rng(4)
    img = np.full((240, 320), 128, np.uint8)
    img[90:150, 130:190] = rng.integers(0, 255, (60, 60), dtype=np.uint8)  # a small product
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    photo = tmp_path / "photos" / "a.png"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), img)
    for extract in (
        lambda octave: features.sift(img, octave, 8192),
        lambda octave: features._colmap_batch([(photo, "a.png")], octave, 8192, tmp_path)["a.png"],
    ):
        coarse, fine = extract(-1), extract(-2)
        assert len(fine) > 1.5 * len(coarse)
        # every keypoint on the product (grown by a few pixels), none beyond the photo
        for f in (coarse, fine):
            x, y = f.keypoints[:, 0], f.keypoints[:, 1]
            assert x.min() > 125 and x.max() < 195 and y.min() > 85 and y.max() < 155
        # the coarse octave's keypoints are found again by the fine one, at the same place
        d = np.hypot(
            coarse.keypoints[:, None, 0] - fine.keypoints[None, :, 0],
            coarse.keypoints[:, None, 1] - fine.keypoints[None, :, 1],
        ).min(axis=1)
        assert np.median(d) < 0.3
    assert not list(tmp_path.glob("upsampled_*")), "the upsampled copies are removed"


def test_mask_filters_keypoints_after_extraction():
    rng = np.random.default_rng(2)
    img = cv2.resize(rng.integers(0, 255, (30, 40), np.uint8), (320, 240))
    f = features.sift(img, -1, 2000)
    mask = np.zeros((240, 320), np.uint8)
    mask[:, :100] = 255
    inside = f.inside(mask)
    assert 0 < len(inside) < len(f)
    assert inside.keypoints[:, 0].max() < 101


def test_pycolmap_matches_and_verifies_our_features(tmp_path):
    """Two views of a textured plane: pycolmap's matcher and verification accept our features
    (RootSIFT scaled as COLMAP's) and find the homography's inliers."""
    rng = np.random.default_rng(4)
    base = cv2.resize(rng.integers(0, 255, (60, 80, 3), np.uint8), (640, 480), cv2.INTER_CUBIC)
    h = np.array([[0.95, 0.05, 10], [-0.04, 0.97, 6], [1e-5, 2e-5, 1]])
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), base)
    cv2.imwrite(str(images / "b.png"), cv2.warpPerspective(base, h, (640, 480)))
    db_path = tmp_path / "db.db"
    pycolmap.Database.open(str(db_path)).close()
    pycolmap.import_images(db_path, images, camera_mode=pycolmap.CameraMode.SINGLE)
    with pycolmap.Database.open(str(db_path)) as db:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        for name, image_id in ids.items():
            gray = cv2.imread(str(images / name), cv2.IMREAD_GRAYSCALE)
            f = features.sift(gray, 0, 2000)
            db.write_keypoints(image_id, f.keypoints)
            db.write_descriptors(
                image_id,
                pycolmap.FeatureDescriptors(pycolmap.FeatureExtractorType.SIFT, f.descriptors),
            )
    pycolmap.match_exhaustive(db_path, device=pycolmap.Device.cpu)
    with pycolmap.Database.open(str(db_path)) as db:
        tvg = db.read_two_view_geometry(ids["a.png"], ids["b.png"])
        kp_a = db.read_keypoints(ids["a.png"])[:, :2]
        kp_b = db.read_keypoints(ids["b.png"])[:, :2]
    assert len(tvg.inlier_matches) > 200
    # inliers obey the true homography (in OpenCV's pixel centres: COLMAP's minus 0.5)
    a = kp_a[tvg.inlier_matches[:, 0]] - 0.5
    b = kp_b[tvg.inlier_matches[:, 1]] - 0.5
    proj = cv2.perspectiveTransform(a[None].astype(np.float64), h)[0]
    assert np.median(np.linalg.norm(proj - b, axis=1)) < 0.5
