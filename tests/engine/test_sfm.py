"""SfM on synthetic scenes with known cameras: registration and pose accuracy in degrees and %."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import IngestConfig, SfMConfig
from engine.geometry import pose_errors, umeyama
from engine.progress import Cancelled, CancelToken
from engine.stages import ingest, sfm


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 3))
    angle = np.radians(37.0)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    dst = 2.5 * src @ rot.T + np.array([1.0, -2.0, 0.5])
    s, r, t = umeyama(src, dst)
    assert s == pytest.approx(2.5, rel=1e-9)
    np.testing.assert_allclose(r, rot, atol=1e-9)
    np.testing.assert_allclose(t, [1.0, -2.0, 0.5], atol=1e-9)


@pytest.mark.parametrize("kind", ["bottle", "box"])
def test_textured_scene_registers_all_views_accurately(solved, kind):
    scene, images, model, _ = solved(kind)
    truth = {c.name: c for c in scene.cameras}
    assert model.num_registered == len(truth) == 36, model.unregistered
    err = pose_errors(model.cameras, truth)
    assert err.median_rotation_deg <= 0.1, err.rotation_deg
    assert err.median_center_error <= 0.005 * scene.object_size, (
        err.center_error / scene.object_size
    )
    # The model on disk is the one returned, with the input file names.
    back = sfm.load_sparse(model.path)
    assert set(back.cameras) == {p.name for p in scene.image_paths}


def test_low_texture_scene_registers_most_views(solved):
    scene, images, model, _ = solved("lowtex")
    assert model.num_registered >= 0.9 * len(scene.cameras), model.unregistered
    for name, reason in model.unregistered.items():
        assert name in {p.name for p in scene.image_paths}
        assert len(reason) > 20


def test_progress_events_and_snapshots(solved):
    _, _, model, events = solved("bottle")
    assert events and all(e.stage == "sfm" for e in events)
    snapshots = [e.partial for e in events if e.partial is not None]
    # Live preview: partial models arrive while mapping, growing, before the final model.
    assert len(snapshots) >= 3
    sizes = [s.num_registered for s in snapshots]
    assert sizes[0] < model.num_registered
    assert sizes[-1] == model.num_registered
    assert all(len(s.points) > 0 for s in snapshots)


def test_sequential_pairs_close_the_loop_and_link_rings():
    names = [f"img{i:02d}" for i in range(36)]
    pairs = set(sfm.sequential_pairs(names, overlap=5))
    assert ("img00", "img01") in pairs and ("img00", "img05") in pairs
    assert ("img00", "img35") in pairs  # loop closure
    assert ("img00", "img10") in pairs and ("img00", "img20") in pairs  # quadratic links
    assert len(pairs) < len(names) * (len(names) - 1) // 2


def test_plan_attempts_retry_is_stronger():
    first, strong = sfm.plan_attempts(SfMConfig(), 30, 800)
    assert first.first_octave == -1  # small photos are upsampled
    assert strong.max_num_features > first.max_num_features
    assert strong.camera_model == "SIMPLE_PINHOLE" and strong.guided_matching
    (only,) = sfm.plan_attempts(SfMConfig(retry=False, matcher="auto"), 500, 3000)
    assert only.matcher == "sequential" and only.first_octave == 0


def test_retry_keeps_the_best_and_explains_every_missing_photo(scene_factory, tmp_path):
    """A set with photos of two different scenes: the kept model explains the rest."""
    bottle = scene_factory("bottle")
    box = scene_factory("box")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in list(bottle.image_paths[:12]) + list(box.image_paths[:3]):
        (folder / p.name).write_bytes(p.read_bytes())
    images = ingest.run([folder], IngestConfig(), tmp_path / "run" / "work")
    model = sfm.run(images, SfMConfig(max_num_features=2048), tmp_path / "run")
    assert model.num_registered == 12
    assert set(model.unregistered) == {p.name for p in box.image_paths[:3]}
    for reason in model.unregistered.values():
        assert "overlaps" in reason or "separate group" in reason or "could not be solved" in reason


def test_cancel_stops_sfm(scene_factory, tmp_path):
    scene = scene_factory("box")
    images = ingest.run([scene.root / "images"], IngestConfig(), tmp_path / "work")
    token = CancelToken()

    def on_progress(event):
        if event.current >= 2:
            token.cancel()

    with pytest.raises(Cancelled):
        sfm.run(images, SfMConfig(), tmp_path, progress=on_progress, cancel=token)
    assert not (tmp_path / "sparse" / "0").exists()


def test_sfm_uses_only_the_users_and_turntable_masks(tmp_path, monkeypatch):
    """Automatic studio masks never decide which features SfM sees; user and turntable ones do."""
    from PIL import Image

    from engine.stages.masks import mask_path_for
    from engine.types import ImageRecord, IngestResult

    work = tmp_path / "work"
    (work / "images").mkdir(parents=True)
    rng = np.random.default_rng(3)
    sources = {"a.png": "automatic", "b.png": "file", "c.png": "turntable", "d.png": ""}
    sources |= {"e.png": "painted", "f.png": "model"}
    records = []
    for name, source in sources.items():
        path = work / "images" / name
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(path)
        mask = None
        if source:
            mask = mask_path_for(work, name)
            mask.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((96, 128), 255, np.uint8)).save(mask)
        records.append(
            ImageRecord(
                name, path, path, 128, 96, 128, 96, "cam", mask_path=mask, mask_source=source
            )
        )
    calls = []
    real = sfm.pycolmap.extract_features

    def recording(*args, image_names, reader_options, **kwargs):
        calls.append((tuple(image_names), str(reader_options.mask_path)))
        return real(*args, image_names=image_names, reader_options=reader_options, **kwargs)

    monkeypatch.setattr(sfm.pycolmap, "extract_features", recording)
    ingest_result = IngestResult(tuple(records), (), work / "images")
    folder = tmp_path / "attempt"
    folder.mkdir()
    cfg = SfMConfig(max_num_features=256)
    (attempt, *_) = sfm.plan_attempts(cfg, len(records), 128)
    sfm._AttemptRunner(
        ingest_result, cfg, attempt, folder, lambda e: None, CancelToken(), 1, 0
    ).extract()
    masked = {n for names, mask_dir in calls if mask_dir == str(work / "masks") for n in names}
    unmasked = {n for names, mask_dir in calls if mask_dir != str(work / "masks") for n in names}
    assert masked == {"b.png", "c.png", "e.png"}
    assert unmasked == {"a.png", "d.png", "f.png"}
