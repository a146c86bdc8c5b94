"""Turntable shoots: a fixed camera and a busy backdrop mislead SfM unless masks take it out.

The scenes are rendered with ``backdrop="turntable"``: per ring the camera stands still and the
product turns, so in the object's frame (where the ground-truth cameras are) a printed backdrop
moves with the camera. Its features never move in the photos of a ring.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.config import MaskConfig, preset
from engine.errors import ReconstructionError
from engine.geometry import pose_errors
from engine.io import read_image, read_mask
from engine.stages import ingest, masks, sfm

TURNTABLE = {"backdrop": "turntable"}
VIEWS = 36


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.fixture(scope="module")
def shoot(scene_factory, tmp_path_factory):
    """Per kind: the turntable scene, its ingest (standard preset), masks and run folder."""
    cache: dict[str, tuple] = {}

    def get(kind: str):
        if kind not in cache:
            scene = scene_factory(kind, **TURNTABLE)
            run_dir = tmp_path_factory.mktemp(f"turntable_{kind}")
            cfg = preset("standard")
            images = ingest.run([scene.image_dir], cfg.ingest, run_dir / "work")
            result = masks.run(images, cfg.masks, run_dir / "work")
            cache[kind] = (scene, images, result, run_dir)
        return cache[kind]

    return get


def mask_scores(scene, result) -> np.ndarray:
    """IoU of each view's automatic mask against the ground truth (same size: 800 x 600)."""
    names = [p.name for p in scene.image_paths]
    scores = []
    for rec in result.images:
        gt = read_mask(scene.mask_paths[names.index(rec.name)]) > 127
        assert rec.mask_path is not None, rec.name
        scores.append(iou(read_mask(rec.mask_path) > 127, gt))
    return np.array(scores)


@pytest.mark.slow
def test_backdrop_is_still_within_a_ring_and_differs_between_rings(scene_factory):
    scene = scene_factory("box", **TURNTABLE)
    top = [read_image(scene.image_paths[i])[0][:60].astype(np.float64) for i in (0, 5, 12)]
    # above the object: only the printed backdrop, the same before sensor noise and JPEG
    assert np.abs(top[0] - top[1]).mean() < 3.0
    assert np.abs(top[0] - top[2]).mean() > 20.0
    assert read_mask(scene.mask_paths[0])[:60].max() == 0


@pytest.mark.slow
def test_box_turntable_is_detected_and_masked(shoot):
    scene, images, result, _ = shoot("box")
    report = result.to_report()
    assert report["computed"] == VIEWS and not report["failed"]
    turntable = report["turntable"]
    assert turntable["detected"] and turntable["groups"] == 3 and turntable["photos"] == VIEWS
    assert 0.6 < turntable["static_fraction"] < 0.95
    assert "Turntable shoot detected: 36 photos" in turntable["note"]
    assert all(s["method"] == "static" for s in result.stats.values())
    scores = mask_scores(scene, result)
    summary = f"IoU min {scores.min():.4f}, median {np.median(scores):.4f}"
    # measured: min 0.962, median 0.971 (the dark box edge at the contact shadow is the miss)
    assert scores.min() >= 0.95, summary
    assert np.median(scores) >= 0.96, summary


@pytest.mark.slow
def test_box_turntable_sfm_is_wrong_without_masks(shoot, tmp_path):
    scene, images, _, _ = shoot("box")
    assert all(rec.mask_path is None for rec in images.images)
    # One attempt with 1024 features, to keep it short: the busy backdrop's features match in
    # every pair. Measured with the standard 4096: 4 of 36 placed, 7 degrees (3 minutes, and the
    # stronger retry takes many more); with 1024: 3 of 36 placed, 9 degrees (45 s).
    cfg = dataclasses.replace(preset("standard").sfm, retry=False, max_num_features=1024)
    try:
        model = sfm.run(images, cfg, tmp_path)
    except ReconstructionError:
        return  # nothing placed at all is wrong too
    truth = scene.camera_dict()
    registered = model.num_registered
    median = pose_errors(model.cameras, truth).median_rotation_deg if registered >= 3 else 180.0
    assert registered < 0.95 * VIEWS or median > 5.0, (registered, median)


@pytest.mark.slow
def test_box_turntable_sfm_with_automatic_masks(shoot):
    scene, images, result, run_dir = shoot("box")
    masked = dataclasses.replace(images, images=result.images)
    model = sfm.run(masked, preset("standard").sfm, run_dir)
    assert model.num_registered >= 0.95 * VIEWS, model.unregistered
    err = pose_errors(model.cameras, scene.camera_dict())
    # measured: 36 of 36 placed, median rotation error 0.031 degrees
    assert err.median_rotation_deg <= 0.2, err.rotation_deg


@pytest.mark.slow
def test_bottle_turntable_masks_miss_only_still_parts(shoot):
    """A plain part that turns into itself (the bottle's cap) stays still: it is missed.

    The label turns, so the bottle is found; its cap and shoulders look alike from every
    azimuth and cannot be told from a still backdrop by motion. What is masked is the bottle.
    """
    scene, _, result, _ = shoot("bottle")
    assert result.turntable["detected"] and result.turntable["photos"] == VIEWS
    names = [p.name for p in scene.image_paths]
    scores, precision = [], []
    for rec in result.images:
        gt = read_mask(scene.mask_paths[names.index(rec.name)]) > 127
        mask = read_mask(rec.mask_path) > 127
        scores.append(iou(mask, gt))
        precision.append((mask & gt).sum() / max(1, mask.sum()))
    summary = f"IoU min {min(scores):.3f}, median {np.median(scores):.3f}; precision min " + (
        f"{min(precision):.3f}"
    )
    # measured: IoU min 0.81, median 0.87; what is masked lies on the bottle
    assert np.median(scores) >= 0.85 and min(scores) >= 0.78, summary
    assert min(precision) >= 0.97, summary


@pytest.mark.slow
def test_turntable_detection_can_be_switched_off(shoot, tmp_path):
    scene, images, _, _ = shoot("box")
    few = dataclasses.replace(images, images=images.images[:6])
    out = masks.run(few, MaskConfig(static_background=False), tmp_path / "work")
    assert not out.turntable["detected"]
    assert all(s["method"] == "border" for s in out.stats.values())
