"""Pre-flight checks on rendered photos and the coverage map of ground-truth cameras."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil

import cv2
import numpy as np
import pytest

from engine.config import CoverageConfig, IngestConfig
from engine.geometry import up_direction
from engine.stages import coverage, ingest
from engine.stages.coverage import CoverageInputs
from engine.synthetic import render_scene, ring_cameras
from engine.types import CameraPose
from tests.conftest import dataset, read_ground_truth

CFG = CoverageConfig()
SMALL = {"width": 320, "height": 240, "supersample": 1, "n_surface_points": 1000}


def world_azimuth(cam: CameraPose) -> float:
    """Azimuth (deg) of a synthetic camera around the world z axis (the objects sit near it)."""
    c = cam.center
    return math.degrees(math.atan2(c[1], c[0])) % 360.0


def ring_set(els=(15.0, 35.0, 55.0), kind="bottle", drop=None):
    cams = ring_cameras(kind, n_azimuth=12, elevations_deg=els)
    if drop is not None:
        cams = [c for c in cams if not drop(c)]
    return {c.name: c for c in cams}


# -- coverage map ----------------------------------------------------------------------------


def test_full_three_ring_set_has_no_gap_and_counts_every_camera():
    cams = ring_set()
    result = coverage.run(CoverageInputs(cams), CFG)
    assert result.gaps == [] and result.advice == []
    assert result.counts.shape == (CFG.elevation_bins, CFG.azimuth_bins)
    assert result.counts.sum() == 36
    # rows of 30 deg from -90: the 15 deg ring in row 3, the 35 and 55 deg rings in row 4
    np.testing.assert_array_equal(result.counts.sum(1), [0, 0, 0, 12, 24, 0])
    # one camera of the low ring in every 30 deg column (columns centred on the first photo)
    np.testing.assert_array_equal(result.counts[3], np.ones(12))
    assert result.stats["rings_deg"] == pytest.approx([15.0, 35.0, 55.0], abs=1.0)
    assert result.stats["up_source"] == "cameras"
    np.testing.assert_allclose(result.stats["up"], [0, 0, 1], atol=1e-6)
    # the underside is mentioned once, as a note, not as a gap
    assert len(result.notes) == 1 and "underside is not seen" in result.notes[0]
    assert not result.gap_cells.any()


def test_missing_top_ring_names_the_highest_elevation():
    result = coverage.run(CoverageInputs(ring_set((15.0, 35.0))), CFG)
    assert len(result.gaps) == 1 and result.advice == result.gaps
    gap = result.gaps[0]
    deg = float(re.search(r"above (\d+) deg", gap).group(1))
    top = max(e for _, e in result.stats["views"].values())
    assert deg == pytest.approx(top, abs=0.5) and abs(deg - 35.0) <= 2.0
    assert "looking down" in gap and f"{coverage.TOP_RING_DEG:.0f} deg" in gap
    assert result.gap_cells[5].all() and not result.gap_cells[:3].any()


@pytest.mark.parametrize(
    ("els", "words"),
    [
        ((15.0,), ["one height, about 15 deg", "above 16 deg"]),
        ((55.0,), ["one height, about 55 deg", "low side views"]),
        ((60.0, 75.0), ["No low side views", "lowest photo is at 59 deg"]),
    ],
)
def test_height_gaps(els, words):
    result = coverage.run(CoverageInputs(ring_set(els)), CFG)
    assert len(result.gaps) == 1, result.gaps
    for w in words:
        assert w in result.gaps[0]


@pytest.mark.parametrize(("lo", "hi"), [(120.0, 210.0), (300.0, 30.0)])
def test_missing_azimuth_sector_is_named_within_a_bin(lo, hi):
    def dropped(c):
        a = world_azimuth(c)
        return lo <= a < hi if lo < hi else (a >= lo or a < hi)

    full = ring_set()
    cams = ring_set(drop=dropped)
    assert 26 <= len(cams) <= 30
    result = coverage.run(CoverageInputs(cams), CFG)
    sector = [g for g in result.gaps if g.startswith("No photos between")]
    assert len(sector) == 1, result.gaps
    start, end = (float(v) for v in re.search(r"between (\d+) and (\d+) deg", sector[0]).groups())
    ref = result.stats["reference_photo"]
    assert result.stats["direction"] == "counterclockwise"
    # azimuths count from the reference photo: the removed sector in those terms
    ref_az = world_azimuth(full[ref])
    lo_rel, hi_rel = (lo - ref_az) % 360, (hi - ref_az) % 360
    width = 360 / CFG.azimuth_bins
    # the gap runs from the last camera before the sector to the first one after it
    assert 0 <= (lo_rel - start) % 360 <= width, (start, lo_rel)
    assert 0 <= (end - hi_rel) % 360 <= width, (end, hi_rel)
    # the two bordering photos are named, and the map marks the emptied columns
    assert sector[0].count(".jpg") == 2
    emptied = result.counts[3:].sum(0) == 0
    assert emptied.sum() >= 2 and np.all(result.gap_cells[3:, emptied])
    # no second message about the views from above for the same hole
    assert len(result.gaps) == 1


def test_partial_top_ring_is_named_separately():
    cams = ring_set(drop=lambda c: "_r2_" in c.name and 90 <= world_azimuth(c) < 300)
    names = [c.name for c in ring_cameras("bottle", n_azimuth=12)]
    result = coverage.run(CoverageInputs(cams, expected=names), CFG)
    assert len(result.gaps) == 1 and "views from above" in result.gaps[0]
    found = re.search(r"between (\d+) and (\d+) deg", result.gaps[0])
    start, end = float(found.group(1)), float(found.group(2))
    assert (end - start) % 360 >= 200
    # the photos that were not placed are named in a note
    unplaced = [n for n in names if n not in cams]
    assert result.stats["unplaced"] == unplaced
    assert any(f"{len(unplaced)} photos could not be placed" in n for n in result.notes)


def similarity(cams, s, rot, t):
    out = {}
    for name, c in cams.items():
        centre = s * rot @ c.center + t
        R = c.R @ rot.T
        out[name] = dataclasses.replace(c, R=R, t=-R @ centre)
    return out


@pytest.mark.parametrize("els", [(15.0, 35.0, 55.0), (15.0, 35.0)])
def test_same_result_in_any_frame(els):
    cams = ring_set(els, drop=lambda c: 200 <= world_azimuth(c) < 280)
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))
    moved = similarity(cams, 0.037, rot, np.array([4.0, -7.0, 2.5]))
    centre = np.mean([c.center for c in cams.values()], axis=0)
    centre[2] = 0.1
    a = coverage.run(CoverageInputs(cams, centre), CFG)
    b = coverage.run(CoverageInputs(moved, 0.037 * rot @ centre + np.array([4.0, -7.0, 2.5])), CFG)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.gaps == b.gaps and a.notes == b.notes and a.gaps
    np.testing.assert_allclose(b.stats["up"], rot @ np.array(a.stats["up"]), atol=1e-6)
    views_a, views_b = a.stats["views"], b.stats["views"]
    for name in views_a:
        assert views_b[name] == pytest.approx(views_a[name], abs=0.11)
    # with no centre given, the point the cameras aim at is found in both frames alike
    c = coverage.run(CoverageInputs(moved), CFG)
    assert c.gaps == coverage.run(CoverageInputs(cams), CFG).gaps


def test_level_up_survives_a_missing_sector_where_the_ring_fit_tilts():
    cams = list(ring_set(drop=lambda c: 120 <= world_azimuth(c) < 200).values())
    # up_direction fits the level image axes first (a ring-plane fit tilts by 12 deg here)
    assert math.degrees(math.acos(up_direction(cams)[2])) < 0.1
    result = coverage.run(CoverageInputs({c.name: c for c in cams}), CFG)
    assert result.stats["up_source"] == "cameras"
    assert math.degrees(math.acos(min(1.0, result.stats["up"][2]))) < 0.1
    # a given up is used as is
    given = coverage.run(CoverageInputs({c.name: c for c in cams}, up=[0, 0, 2.0]), CFG)
    assert given.stats["up_source"] == "given" and given.stats["up"] == [0, 0, 1]


def test_report_and_text_map():
    result = coverage.run(CoverageInputs(ring_set((15.0, 35.0))), CFG)
    report = json.loads(json.dumps(result.to_report()))
    assert report["azimuth_edges"] == pytest.approx(np.arange(-15, 360, 30))
    assert report["elevation_edges"] == pytest.approx(np.arange(-90, 91, 30))
    assert np.array(report["counts"]).sum() == 24 and len(report["counts"]) == 6
    assert report["gaps"] == result.gaps and report["advice"] == result.advice
    assert np.array(report["gap_cells"]).sum() == 12
    text = coverage.coverage_text(result)
    rows = [line for line in text.splitlines() if line.count("|") == 1 and ".." in line]
    assert len(rows) == 6 and rows[0].startswith(" +60..+90")
    assert rows[0].count("!") == 12
    assert sum(int(ch) for row in rows for ch in row.split("|")[1] if ch.isdigit()) == 24
    assert "gap: No photos from above" in text


def test_no_cameras_is_a_gap_not_an_error():
    result = coverage.run(CoverageInputs({}, expected=["a.jpg", "b.jpg"]), CFG)
    assert result.counts.sum() == 0 and len(result.gaps) == 1
    assert "No photo could be placed" in result.gaps[0]
    assert result.stats["unplaced"] == ["a.jpg", "b.jpg"]
    json.dumps(result.to_report())


# -- pre-flight ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shoot(tmp_path_factory):
    """Eight distinct 320x240 views of the bottle, and a copy with faults added."""
    scene = render_scene(
        tmp_path_factory.mktemp("pf_scene"), "bottle", n_azimuth=8, elevations_deg=(25.0,), **SMALL
    )
    photos = tmp_path_factory.mktemp("pf_photos")
    for p in scene.image_paths:
        shutil.copy(p, photos / p.name)
    names = [p.name for p in scene.image_paths]
    blurred, dark, bright, near, exact = names[1], names[3], names[5], names[6], names[7]
    img = cv2.imread(str(photos / blurred))
    cv2.imwrite(
        str(photos / blurred), cv2.GaussianBlur(img, (0, 0), 2.0), [cv2.IMWRITE_JPEG_QUALITY, 92]
    )
    img = cv2.imread(str(photos / dark))
    cv2.imwrite(str(photos / dark), (img * 0.3).astype(np.uint8))
    img = cv2.imread(str(photos / bright)).astype(np.float32)
    cv2.imwrite(str(photos / bright), np.clip(img * 1.6 + 40, 0, 255).astype(np.uint8))
    img = cv2.imread(str(photos / near))
    cv2.imwrite(str(photos / "zz_near_again.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 75])
    shutil.copy(photos / exact, photos / "zz_exact_copy.jpg")
    result = ingest.run([photos], IngestConfig(), tmp_path_factory.mktemp("pf_work"))
    faults = {"blurred": blurred, "dark": dark, "bright": bright, "near": near, "exact": exact}
    return scene, result, faults


def by_kind(advice):
    out = {}
    for a in advice:
        out.setdefault(a.kind, []).append(a)
    return out


def test_preflight_names_each_fault(shoot):
    _, result, f = shoot
    assert len(result.images) == 9  # the exact copy is left out by ingest
    events = []
    advice = coverage.preflight(result, CFG, progress=events.append)
    kinds = by_kind(advice)
    assert set(kinds) == {"blurry", "underexposed", "overexposed", "duplicate", "too_few"}
    assert [a.images for a in kinds["blurry"]] == [(f["blurred"],)]
    assert [a.images for a in kinds["underexposed"]] == [(f["dark"],)]
    assert [a.images for a in kinds["overexposed"]] == [(f["bright"],)]
    dups = sorted(a.images for a in kinds["duplicate"])
    assert dups == sorted([(f["exact"], "zz_exact_copy.jpg"), (f["near"], "zz_near_again.jpg")])
    for a in advice:
        for name in a.images:
            assert name in a.message  # every finding names its photos
    sharp = {r.name: r.sharpness for r in result.images}
    median = np.median(list(sharp.values()))
    assert sharp[f["blurred"]] < coverage.BLUR_RELATIVE * median
    # 9 photos, one of them a second shot of a view: 8 different views, 12 short of 20
    (few,) = kinds["too_few"]
    assert few.images == () and "Only 8 different views" in few.message
    assert "at least 12 more" in few.message
    assert [e.current for e in events] == list(range(10))
    assert {e.stage for e in events} == {"preflight"}
    assert json.loads(json.dumps([a.to_dict() for a in advice]))[0].keys() == {
        "kind",
        "images",
        "message",
    }


def test_preflight_is_quiet_on_a_clean_shoot(shoot):
    scene, _, _ = shoot
    clean = ingest.run([scene.image_dir], IngestConfig(), scene.root / "work")
    assert coverage.preflight(clean, dataclasses.replace(CFG, min_photos=8)) == []
    (few,) = coverage.preflight(clean, CFG)
    assert few.kind == "too_few" and "Only 8 photos" in few.message
    assert "at least 12 more" in few.message


def test_exact_duplicates_among_images_by_hash(shoot):
    scene, _, _ = shoot
    clean = ingest.run([scene.image_dir], IngestConfig(), scene.root / "work_hash")
    images = list(clean.images)
    images[4] = dataclasses.replace(images[4], sha256=images[2].sha256)
    advice = coverage.preflight(
        dataclasses.replace(clean, images=tuple(images)), dataclasses.replace(CFG, min_photos=8)
    )
    (dup,) = advice[:1]
    assert dup.kind == "duplicate" and dup.images == (images[2].name, images[4].name)
    assert "same file" in dup.message
    assert [a.kind for a in advice[1:]] == ["too_few"]  # 7 different views


def test_turntable_views_are_not_duplicates(tmp_path):
    """A busy backdrop identical in every photo and a plain bottle: distinct views all the same."""
    scene = render_scene(
        tmp_path / "tt",
        "lowtex",
        n_azimuth=12,
        elevations_deg=(20.0,),
        backdrop="turntable",
        **SMALL,
    )
    result = ingest.run([scene.image_dir], IngestConfig(), tmp_path / "work")
    advice = coverage.preflight(result, dataclasses.replace(CFG, min_photos=12))
    assert advice == []
    # and the margin: the closest two views are well above the duplicate distance
    looks = [coverage._look(r).thumb for r in result.images]
    x = np.stack([t.ravel() for t in looks]) / math.sqrt(looks[0].size)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1) + np.eye(len(x)) * 9
    assert d.min() > 1.5 * coverage.DUPLICATE_DISTANCE


def test_set_wide_conditions_are_not_flagged_photo_by_photo(shoot):
    """A plain product (low sharpness everywhere) on a blown-out white sweep is no fault."""
    scene, _, _ = shoot
    clean = ingest.run([scene.image_dir], IngestConfig(), scene.root / "work_set")
    cfg = dataclasses.replace(CFG, min_photos=8)
    plain = [
        dataclasses.replace(r, sharpness=8.0 + i, bright_fraction=0.45 + 0.01 * i)
        for i, r in enumerate(clean.images)
    ]
    assert coverage.preflight(dataclasses.replace(clean, images=tuple(plain)), cfg) == []
    # ... while one photo far more clipped than the rest, or one without any detail, is
    odd = list(plain)
    odd[2] = dataclasses.replace(odd[2], bright_fraction=0.8)
    odd[5] = dataclasses.replace(odd[5], sharpness=2.0)
    kinds = {
        a.kind: a.images
        for a in coverage.preflight(dataclasses.replace(clean, images=tuple(odd)), cfg)
    }
    assert kinds == {"overexposed": (odd[2].name,), "blurry": (odd[5].name,)}


def test_preflight_stops_when_cancelled(shoot):
    from engine.progress import Cancelled, CancelToken

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        coverage.preflight(shoot[1], CFG, cancel=token)


# -- real photos -----------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_gantry_ring_duplicate_and_height(tmp_path):
    """Middlebury temple: one repeated gantry position, one ring, cameras rolled 90 degrees."""
    root = dataset("temple_sparse_ring")
    result = ingest.run([root / "images"], IngestConfig(), tmp_path)
    advice = coverage.preflight(result, CFG)
    # the documented repeat (same pose, two exposures), and nothing about the black cloth
    assert [(a.kind, a.images) for a in advice] == [
        ("duplicate", ("templeSR0001.png", "templeSR0011.png")),
        ("too_few", ()),
    ]
    assert "Only 15 different views" in advice[1].message
    cams = read_ground_truth(root / "cameras.json")
    bbox = json.loads((root / "cameras.json").read_text())["bbox"]
    cover = coverage.run(CoverageInputs(cams, np.mean(bbox, axis=0)), CFG)
    # the ring's axis (SOURCE.md: normal 0.012, 0.999, -0.037), the box centre 60 mm below
    # the ring plane at 0.56 m: about 6 degrees of elevation
    assert cover.stats["up_source"] == "cameras"  # square to the level (rolled) image axes
    axis = np.array([0.012, 0.999, -0.037]) / np.linalg.norm([0.012, 0.999, -0.037])
    assert math.degrees(math.acos(min(1.0, np.dot(cover.stats["up"], axis)))) < 0.2
    assert cover.stats["elevation_min"] > 4 and cover.stats["elevation_max"] < 8
    assert len(cover.gaps) == 1 and "one height, about 6 deg" in cover.gaps[0]
    assert cover.stats["largest_azimuth_gap_deg"] == pytest.approx(42, abs=1)


@pytest.mark.realdata
def test_real_photos_on_a_white_block_get_no_exposure_nagging(tmp_path):
    """Socketed axe: a clipped white block fills a quarter of some frames; the axe is fine."""
    photos = sorted((dataset("socketed_axe") / "images").glob("*.jpg"))[::2]
    result = ingest.run(photos, IngestConfig(max_image_size=800), tmp_path)
    assert len(result.images) == 26
    # IMG_8835 (26% clipped, its neighbours under 1%) was flagged by the old 25% limit
    assert max(r.bright_fraction for r in result.images) > 0.25
    assert coverage.preflight(result, CFG) == []


def test_a_camera_looking_away_is_not_counted():
    cams = ring_set()
    name = "bottle_r1_a004.jpg"
    c = cams[name]
    turned = np.diag([-1.0, 1.0, -1.0]) @ c.R  # turned round to face away from the product
    cams[name] = dataclasses.replace(c, R=turned, t=-turned @ c.center)
    result = coverage.run(CoverageInputs(cams), CFG)
    assert result.counts.sum() == 35 and result.stats["facing_away"] == [name]
    assert any(n.startswith(f"{name} does not look at the product") for n in result.notes)


def test_coverage_takes_the_uniform_stage_arguments_and_honours_cancel(tmp_path):
    from engine.progress import Cancelled, CancelToken

    cams = ring_set((15.0, 35.0))
    events = []
    result = coverage.run(CoverageInputs(cams), CFG, None, progress=events.append)
    assert result.counts.sum() == len(cams) and events == []  # it writes and reports nothing
    again = coverage.run(CoverageInputs(cams), CFG, tmp_path)
    assert again.gaps == result.gaps and list(tmp_path.iterdir()) == []
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        coverage.run(CoverageInputs(cams), CFG, None, cancel=token)
