"""SfM on synthetic scenes with known cameras: registration and pose accuracy in degrees and %."""

from __future__ import annotations

import logging

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


@pytest.mark.slow
def test_a_symmetric_plain_product_keeps_its_right_model(scene_factory, tmp_path):
    """The plain bottle (a ribbed cap, a thin printed band) without the global mapper: the
    strong retry's incremental model is right (36/36 at 0.13 deg), but many of its verified
    pairs are look-alike sides, matched with a fundamental matrix only. They used to count
    against it (agreement 84.6%, needs 85%: refused, exit 3; the suite failed whenever the
    global mapper also failed on this scene). Only calibrated pairs vouch now."""
    import dataclasses

    from engine.config import preset

    scene = scene_factory("lowtex")
    cfg = preset("standard")
    images = ingest.run([scene.root / "images"], cfg.ingest, tmp_path / "work")
    model = sfm.run(images, dataclasses.replace(cfg.sfm, global_mapper=False), tmp_path)
    truth = {c.name: c for c in scene.cameras}
    assert model.num_registered == len(truth)
    assert pose_errors(model.cameras, truth).median_rotation_deg <= 0.2
    check = model.attempts[-1]["check"]
    assert check["ok"] and check["pairs_uncalibrated"] > 50, check


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


def test_the_strong_retry_matches_guided_only_photos_of_few_keypoints():
    """Guided matching finds the matches a plain surface's few keypoints lost (dino's plaster:
    440 to 950 a photo); with thousands it costs 13 times the plain matching for the same
    verified pairs (a bottle on black cloth at the finest look: 5,300 a photo)."""
    first, strong = sfm.plan_attempts(SfMConfig(), 16, 480)
    assert strong.guided_matching and not first.guided_matching
    assert sfm.guided_matching(strong, [440, 700, 950] * 5 + [12_000])
    assert not sfm.guided_matching(strong, [5_059, 5_326, 5_691] * 5 + [300])
    assert not sfm.guided_matching(first, [500] * 16)
    assert not sfm.guided_matching(strong, [])


def test_plan_attempts_retry_is_stronger():
    first, strong = sfm.plan_attempts(SfMConfig(), 30, 800)
    assert first.first_octave == -1  # small photos are upsampled
    assert strong.max_num_features > first.max_num_features
    assert strong.camera_model == "SIMPLE_PINHOLE" and strong.guided_matching
    # the retry looks one octave finer, as far as SIFT's working image allows
    assert strong.first_octave == -2 and strong.extractor == "colmap"
    assert sfm.plan_attempts(SfMConfig(), 30, 1600)[1].first_octave == -1
    assert sfm.plan_attempts(SfMConfig(), 30, 3000)[0].first_octave == 0
    (only,) = sfm.plan_attempts(SfMConfig(retry=False, matcher="auto"), 500, 3000)
    assert only.matcher == "retrieval" and only.first_octave == 0


def test_mid_size_sets_match_retrieval_pairs_and_a_retry_matches_every_pair():
    def matchers(n, **kw):
        return [a.matcher for a in sfm.plan_attempts(SfMConfig(**kw), n, 800)]

    assert matchers(24) == ["exhaustive", "exhaustive"]
    assert matchers(36) == ["retrieval", "exhaustive"]
    assert matchers(61) == ["retrieval", "retrieval"]
    # a preset that asks for every pair of larger sets gets them on both attempts
    assert matchers(80, exhaustive_max_images=100) == ["exhaustive", "exhaustive"]


def test_a_small_masked_product_is_upsampled_in_a_large_photo():
    """Masks SfM uses keep features only on the product: its size decides the octave."""
    (plain,) = sfm.plan_attempts(SfMConfig(retry=False), 52, 1600)
    assert (plain.first_octave, plain.extractor) == (0, "opencv")
    # socketed_axe: the axe is 11% of a 1,600 px frame, about 530 px
    (small,) = sfm.plan_attempts(SfMConfig(retry=False), 52, 1600, product_side=530.0)
    assert (small.first_octave, small.extractor) == (-1, "opencv")
    (large,) = sfm.plan_attempts(SfMConfig(retry=False), 52, 1600, product_side=1400.0)
    assert large.first_octave == 0
    # small photos keep COLMAP's extractor, with or without masks
    (tiny,) = sfm.plan_attempts(SfMConfig(retry=False), 16, 640, product_side=300.0)
    assert (tiny.first_octave, tiny.extractor) == (-1, "colmap")
    # a fixed octave is kept
    (fixed,) = sfm.plan_attempts(SfMConfig(retry=False, first_octave=0), 52, 1600, 530.0)
    assert fixed.first_octave == 0


def test_product_side_comes_from_the_masks_sfm_uses(tmp_path):
    import dataclasses

    from PIL import Image

    from engine.types import ImageRecord

    w, h = 400, 300
    small = np.zeros((h, w), np.uint8)
    small[100:160, 100:180] = 255  # 60 x 80 = 4,800 pixels
    records = []
    for i, source in enumerate(["file", "file", "painted", "automatic"]):
        mask = tmp_path / f"m{i}.png"
        Image.fromarray(small).save(mask)
        records.append(
            ImageRecord(
                f"p{i}.png", mask, mask, w, h, w, h, "cam", mask_path=mask, mask_source=source
            )
        )
    assert sfm.product_side(records) == pytest.approx(np.sqrt(4800))
    # a mask at half the photo's size counts at the photo's size
    half = tmp_path / "half.png"
    Image.fromarray(small[::2, ::2]).save(half)
    scaled = [dataclasses.replace(r, mask_path=half) for r in records]
    assert sfm.product_side(scaled) == pytest.approx(np.sqrt(4800))
    # automatic masks do not limit SfM's features: no product size
    auto = [dataclasses.replace(r, mask_source="automatic") for r in records]
    assert sfm.product_side(auto) is None
    # nor does a minority of masked photos
    assert sfm.product_side(records[:1] + auto * 2) is None


def test_retry_keeps_the_best_and_explains_every_missing_photo(
    scene_factory, tmp_path, monkeypatch
):
    """A set with photos of two different scenes: the kept model explains the rest. The global
    mapper, run for the photos left out, reuses the attempt's features and matches."""
    bottle = scene_factory("bottle")
    box = scene_factory("box")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in list(bottle.image_paths[:12]) + list(box.image_paths[:3]):
        (folder / p.name).write_bytes(p.read_bytes())
    images = ingest.run([folder], IngestConfig(), tmp_path / "run" / "work")
    calls = {"extract": 0, "match": 0}
    for step in calls:
        real = getattr(sfm._AttemptRunner, step)

        def counted(self, _real=real, _step=step):
            calls[_step] += 1
            return _real(self)

        monkeypatch.setattr(sfm._AttemptRunner, step, counted)
    model = sfm.run(images, SfMConfig(max_num_features=2048), tmp_path / "run")
    mappers = [a["mapper"] for a in model.attempts]
    assert mappers[:2] == ["incremental", "global"]
    assert calls == {"extract": 1, "match": 1}  # one attempt's features and matches, two mappers
    assert model.attempts[1]["phase_seconds"]["matching"] == 0.0
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


def test_sfm_uses_only_the_users_and_turntable_masks(tmp_path):
    """Automatic studio masks never decide which features SfM sees; user and turntable ones do."""
    from PIL import Image

    from engine.stages import features
    from engine.stages.masks import mask_path_for
    from engine.types import ImageRecord, IngestResult

    work = tmp_path / "work"
    (work / "images").mkdir(parents=True)
    rng = np.random.default_rng(3)
    sources = {"a.png": "automatic", "b.png": "file", "c.png": "turntable", "d.png": ""}
    sources |= {"e.png": "painted", "f.png": "model"}
    w, h = 256, 192
    half = np.zeros((h, w), np.uint8)
    half[:, : w // 2] = 255  # every mask keeps only the left half
    records = []
    for name, source in sources.items():
        path = work / "images" / name
        noise = rng.integers(0, 255, (h // 4, w // 4, 3), dtype=np.uint8)
        Image.fromarray(noise).resize((w, h), Image.NEAREST).save(path)
        mask = None
        if source:
            mask = mask_path_for(work, name)
            mask.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(half).save(mask)
        records.append(
            ImageRecord(name, path, path, w, h, w, h, "cam", mask_path=mask, mask_source=source)
        )
    ingest_result = IngestResult(tuple(records), (), work / "images")
    folder = tmp_path / "attempt"
    folder.mkdir()
    cfg = SfMConfig(max_num_features=2048)
    (attempt, *_) = sfm.plan_attempts(cfg, len(records), w)
    store = features.FeatureStore(tmp_path / "features", 2048)
    sfm._AttemptRunner(
        ingest_result, cfg, attempt, folder, lambda e: None, CancelToken(), 1, 0, store
    ).extract()
    right_edge = {}
    with sfm.pycolmap.Database.open(str(folder / "database.db")) as db:
        for image in db.read_all_images():
            kp = db.read_keypoints(image.image_id)
            assert len(kp) > 100, image.name
            right_edge[image.name] = kp[:, 0].max()
    limit = w // 2 + features.MASK_GROW_PX + 1
    assert {n for n, x in right_edge.items() if x <= limit} == {"b.png", "c.png", "e.png"}
    assert all(right_edge[n] > w * 0.8 for n in ("a.png", "d.png", "f.png"))


def test_retrieval_pairs_link_rings_whatever_the_photo_order(tmp_path):
    """100-photo shoots are matched by retrieval, not exhaustively: each photo is paired with
    photos that see the same side, in its own ring and in the rings above and below, even when
    the file names do not follow the shoot."""
    from engine.stages import features, pairs
    from engine.synthetic import render_scene

    scene = render_scene(
        tmp_path / "rings",
        "box",
        n_azimuth=12,
        elevations_deg=(10.0, 30.0, 50.0, 70.0),
        width=320,
        height=240,
        supersample=1,
        n_surface_points=40_000,
    )
    store = features.FeatureStore(tmp_path / "features", 1500)
    feats = store.get_many([(p, p.name) for p in scene.image_paths], -1)
    rng = np.random.default_rng(0)
    names = list(rng.permutation([p.name for p in scene.image_paths]))  # no capture order
    k = 12  # a quarter of the 48 photos; each has about 8 photos a step away
    got = pairs.retrieval_pairs(names, {n: f.descriptors for n, f in feats.items()}, k)
    n = len(names)
    assert len(got) < 0.3 * n * (n - 1) / 2
    cams = {c.name: c for c in scene.cameras}

    def view_dir(name):  # the camera's optical axis in the world
        return np.asarray(cams[name].R)[2]

    def ring(name):
        elevation = np.degrees(np.arcsin(-view_dir(name)[2]))
        return int(np.argmin(np.abs(elevation - np.array([10.0, 30.0, 50.0, 70.0]))))

    angles = np.array(
        [np.degrees(np.arccos(np.clip(view_dir(a) @ view_dir(b), -1, 1))) for a, b in got]
    )
    # the pairs found mostly look at the same side of the product, and they hold most of the
    # pairs of photos taken a step apart (30 deg around, or one ring up or down)
    close = {
        (a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if view_dir(a) @ view_dir(b) > np.cos(np.radians(32))
    }
    found = {tuple(sorted(p)) for p in got}
    recall = len({tuple(sorted(p)) for p in close} & found) / len(close)
    print(f"median angle {np.median(angles):.1f}, recall {recall:.2f}, {len(got)} pairs")
    # measured: median 31-39 deg (random pairs: about 90), recall 0.80-0.84 for any vocabulary
    # of 32-128 words and 300-1500 descriptors per photo
    assert np.median(angles) < 45
    assert recall > 0.75
    # as the SfM stage calls it: capture order known, its neighbours added; every photo is
    # linked to a near photo of its own ring and of a ring above or below
    cfg = SfMConfig()
    ordered = [p.name for p in scene.image_paths]
    got = pairs.retrieval_pairs(
        ordered,
        {n: f.descriptors for n, f in feats.items()},
        k,
        overlap=cfg.retrieval_overlap,
    )
    assert len(got) < 0.5 * n * (n - 1) / 2
    partners: dict[str, set[str]] = {name: set() for name in names}
    for a, b in got:
        partners[a].add(b)
        partners[b].add(a)
    for name in names:
        near = [p for p in partners[name] if view_dir(p) @ view_dir(name) > np.cos(np.radians(45))]
        assert any(ring(p) == ring(name) for p in near), name
        assert any(abs(ring(p) - ring(name)) == 1 for p in near), name


def test_fewer_than_half_placed_stops_with_a_reason(scene_factory, tmp_path):
    """A model of a small part of the set is not handed on: exit 3 names the photos left out."""
    import cv2

    from engine.errors import ReconstructionError

    bottle = scene_factory("bottle")
    folder = tmp_path / "mostly_unrelated"
    folder.mkdir()
    for p in bottle.image_paths[:5]:
        (folder / p.name).write_bytes(p.read_bytes())
    rng = np.random.default_rng(5)
    h, w = cv2.imread(str(bottle.image_paths[0])).shape[:2]
    for i in range(7):  # photos of something else, each different
        other = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"other_{i}.jpg"), cv2.resize(other, (w, h)))
    images = ingest.run([folder], IngestConfig(), tmp_path / "run" / "work")
    with pytest.raises(ReconstructionError) as err:
        sfm.run(images, SfMConfig(max_num_features=2048, retry=False), tmp_path / "run")
    message = str(err.value)
    assert "of the 12 photos could be placed" in message
    assert "other_0.jpg" in message and "nothing was exported" in message
    assert not (tmp_path / "run" / "sparse" / "0").exists()


def test_photo_names_with_spaces_and_accents_are_matched(scene_factory, tmp_path):
    """Photos in a sub-folder "Fotos für den Tisch – 2 é ☕" are named with it; COLMAP's pair
    lists split names at spaces, so every pair was lost before the matching database named the
    photos by id: "could not place any two" on a set that places all."""
    bottle = scene_factory("bottle")
    top = tmp_path / "shoot"
    sub = top / "Fotos für den Tisch – 2 é ☕"
    sub.mkdir(parents=True)
    for p in bottle.image_paths[:12]:
        (sub / p.name).write_bytes(p.read_bytes())
    images = ingest.run([top], IngestConfig(), tmp_path / "run" / "work")
    assert all(" " in r.name for r in images.images)
    model = sfm.run(images, SfMConfig(max_num_features=2048, retry=False), tmp_path / "run")
    assert model.num_registered == 12


def _outlines(scene, grow: int = 8) -> dict:
    """The scene's true product masks, grown as SfM grows masks, by photo name."""
    import cv2

    k = 2 * grow + 1
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    return {
        c.name: cv2.dilate(cv2.imread(str(m), cv2.IMREAD_GRAYSCALE), disk) > 127
        for c, m in zip(scene.cameras, scene.mask_paths, strict=True)
    }


def test_silhouette_agreement_tells_a_product_that_moved_on_its_support(solved):
    """The product's sparse points project inside its outline in every photo of a right model;
    outlines of a product that moved between photos (drawn elsewhere in two photos of three)
    leave them outside."""
    scene, _, model, _ = solved("box")
    rec = sfm.pycolmap.Reconstruction(str(model.path))
    outlines = _outlines(scene)
    assert sfm.silhouette_agreement(rec, outlines) >= 0.97
    shift = scene.cameras[0].width // 4
    moved = {
        name: np.roll(m, shift, axis=1) if i % 3 else m
        for i, (name, m) in enumerate(outlines.items())
    }
    assert sfm.silhouette_agreement(rec, moved) < sfm.MIN_SILHOUETTE_AGREEMENT
    few = dict(list(outlines.items())[: sfm.MIN_SILHOUETTE_PHOTOS - 1])
    assert sfm.silhouette_agreement(rec, few) is None  # too few photos to tell


@pytest.mark.parametrize("alone_agrees", [True, False])
def test_a_model_whose_product_left_its_outline_is_solved_again_from_the_product_alone(
    scene_factory, tmp_path, monkeypatch, caplog, alone_agrees
):
    """Automatic masks do not limit SfM's features, until the kept model puts the product
    outside them (a product turned over on its block): then every attempt runs again on the
    features inside the masks. That model is kept when it agrees with them; when it does not
    either, the stage stops with the reason (the model would hold the product twice)."""
    import dataclasses

    from engine.errors import ReconstructionError

    # a small shoot: only the stage's wiring is tested here (the agreement is given)
    scene = scene_factory("box", n_azimuth=12, elevations_deg=(20.0, 45.0), width=480, height=360)
    cfg = SfMConfig(max_num_features=1024, retry=False)
    images = ingest.run([scene.root / "images"], IngestConfig(), tmp_path / "work")
    by_name = dict(zip((c.name for c in scene.cameras), scene.mask_paths, strict=True))
    records = tuple(
        dataclasses.replace(r, mask_path=by_name[r.name], mask_source="automatic")
        for r in images.images
    )
    images = dataclasses.replace(images, images=records)
    seen = []

    def agreement(rec, masks):
        seen.append(len(masks))
        return 0.6 if len(seen) == 1 else 0.99 if alone_agrees else 0.7

    monkeypatch.setattr(sfm, "silhouette_agreement", agreement)
    if not alone_agrees:
        with pytest.raises(ReconstructionError, match="moved or turned") as err:
            sfm.run(images, cfg, tmp_path)
        assert "only 60% of the solved product's points" in str(err.value)
        assert "did not keep it inside its outline either (at best 70%)" in str(err.value)
        assert "masks folder" in str(err.value)
        assert err.value.exit_code == 3
        # the first model, then each of the product alone's models (the incremental one was
        # refused for its outlines, so the global mapper ran on the same matches)
        assert seen == [len(records)] * 3
        assert not (tmp_path / "sparse" / "0").exists()
        return
    with caplog.at_level(logging.INFO, logger="engine.stages.sfm"):
        model = sfm.run(images, cfg, tmp_path)
    assert seen == [len(records), len(records)]
    # the box stood still: both models place the cameras alike, and the log says so rather
    # than warn of a product that moved
    assert "so the product stayed put" in caplog.text
    assert "moved on its support" not in caplog.text
    alone = [a for a in model.attempts if a["product_only"]]
    assert alone and all(not a["product_only"] for a in model.attempts[: -len(alone)])
    assert model.check["product_only"] is True
    assert model.check["silhouette_agreement"] == 0.99
    assert model.num_registered == len(records)


def test_a_product_turned_between_rings_is_solved_in_its_own_frame(scene_factory, tmp_path):
    """The box turned by 90 deg and moved on its support before the second ring, with printed
    cards lying on the support apart from it (fixed in the world, so their features disagree
    with the box's). The model must be the box's: a camera placed by the cards would be 90 deg
    off. Here the box's print outweighs the cards; socketed_axe without its masks is the real
    set where the support wins (tests/realdata/test_sfm_realdata.py)."""
    import dataclasses

    from engine.config import preset
    from engine.stages import masks

    scene = scene_factory(
        "box",
        n_azimuth=12,
        elevations_deg=(20.0, 45.0),
        width=480,
        height=360,
        fill=0.6,
        backdrop="card",
        turn_deg=90.0,
    )
    cfg = preset("standard")
    images = ingest.run([scene.root / "images"], cfg.ingest, tmp_path / "work")
    images = dataclasses.replace(
        images, images=masks.run(images, cfg.masks, tmp_path / "work").images
    )
    model = sfm.run(images, cfg.sfm, tmp_path)
    n = len(images.images)
    # seen: 21 of 24 placed at a median 0.091 deg (the global mapper placed 24, but turned 2 of
    # them by up to 5 deg against the incremental model: refused)
    assert model.num_registered >= 0.8 * n, model.unregistered
    err = pose_errors(model.cameras, {c.name: c for c in scene.cameras}, robust=False)
    assert err.rotation_deg.max() <= 1.0, sorted(err.rotation_deg)
    assert model.check["silhouette_agreement"] >= sfm.MIN_SILHOUETTE_AGREEMENT
    assert model.check["product_only"] is False
