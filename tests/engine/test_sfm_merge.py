"""Joining an incremental mapping's models where they share photos (engine.stages.sfm_merge)."""

from __future__ import annotations

import numpy as np
import pycolmap

from engine import run_folder
from engine.geometry import pose_errors
from engine.stages import sfm, sfm_merge


def _part(whole: pycolmap.Reconstruction, keep: set[str]) -> pycolmap.Reconstruction:
    """A copy of ``whole`` with only the photos in ``keep`` placed."""
    part = pycolmap.Reconstruction(whole)
    for image in list(part.images.values()):
        if image.name not in keep:
            part.deregister_frame(image.frame_id)
    return part


def _split(whole: pycolmap.Reconstruction, overlap: float):
    """Two halves of the ring side by side (by camera centre), sharing a band of photos."""
    centres = {im.name: im.projection_center() for im in whole.images.values() if im.has_pose}
    x = np.array([c[0] for c in centres.values()])
    band = overlap * (x.max() - x.min())
    left = {n for n, c in centres.items() if c[0] <= band}
    right = {n for n, c in centres.items() if c[0] >= -band}
    return _part(whole, left), _part(whole, right)


def _moved(rec: pycolmap.Reconstruction) -> pycolmap.Reconstruction:
    """``rec`` in another frame: a mapper's second model has its own origin, axes and scale."""
    angle = np.radians(70.0)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1]]
    )
    out = pycolmap.Reconstruction(rec)
    out.transform(pycolmap.Sim3d(2.5, pycolmap.Rotation3d(rot), np.array([1.0, -3.0, 0.5])))
    return out


def test_two_models_that_share_photos_are_joined_into_the_whole_ring(solved, tmp_path):
    """The box's solved ring cut in two halves that share a band of photos, the second moved
    to another frame: the join places every photo where the whole model had it."""
    _, images, model, _ = solved("box")
    whole = pycolmap.Reconstruction(str(model.path))
    db = run_folder.work_dir(model.path.parent.parent) / "sfm" / "attempt1_standard" / "database.db"
    assert db.is_file()
    left, right = _split(whole, overlap=0.1)
    shared = {im.name for im in left.images.values() if im.has_pose} & {
        im.name for im in right.images.values() if im.has_pose
    }
    assert 2 <= len(shared) < whole.num_reg_images() // 3
    joined = sfm_merge.merge_models(
        [_moved(right), left],
        db,
        images.image_dir,
        tmp_path / "merge",
        sfm.robust_bundle_adjustment,
    )
    assert joined is not None
    merged, rest = joined
    assert rest == []
    assert merged.num_reg_images() == whole.num_reg_images()
    assert merged.num_points3D() >= 0.8 * whole.num_points3D()  # triangulated again
    err = pose_errors(sfm.cameras_from_reconstruction(merged), model.cameras)
    assert err.median_rotation_deg < 0.02, sorted(err.rotation_deg)
    assert max(err.rotation_deg) < 0.1, sorted(err.rotation_deg)
    assert merged.compute_mean_reprojection_error() < 1.0


def test_models_without_a_shared_photo_stay_apart(solved, tmp_path):
    _, images, model, _ = solved("box")
    whole = pycolmap.Reconstruction(str(model.path))
    db = run_folder.work_dir(model.path.parent.parent) / "sfm" / "attempt1_standard" / "database.db"
    left, right = _split(whole, overlap=-0.1)  # a gap between the halves
    assert not {im.name for im in left.images.values() if im.has_pose} & {
        im.name for im in right.images.values() if im.has_pose
    }
    merge = sfm_merge.merge_models(
        [left, _moved(right)], db, images.image_dir, tmp_path / "m", sfm.robust_bundle_adjustment
    )
    assert merge is None
    # joined, but the matches cannot be read to triangulate: the mapper's models stay
    left, right = _split(whole, overlap=0.1)
    missing = tmp_path / "gone.db"
    assert (
        sfm_merge.merge_models(
            [left, right], missing, images.image_dir, tmp_path / "m", sfm.robust_bundle_adjustment
        )
        is None
    )
    assert not missing.exists()
    # one model: nothing to join
    assert (
        sfm_merge.merge_models(
            [whole], db, images.image_dir, tmp_path / "m", sfm.robust_bundle_adjustment
        )
        is None
    )


def _scrambled(rec: pycolmap.Reconstruction) -> pycolmap.Reconstruction:
    """``rec`` with every camera turned at random: it contradicts every verified pair."""
    rng = np.random.default_rng(0)
    out = pycolmap.Reconstruction(rec)
    for image in out.images.values():
        if not image.has_pose:
            continue
        q = rng.normal(size=4)
        pose = out.frame(image.frame_id).rig_from_world
        out.frame(image.frame_id).rig_from_world = pycolmap.Rigid3d(
            pycolmap.Rotation3d(q / np.linalg.norm(q)), pose.translation
        )
    return out


def test_a_joined_model_that_fails_its_checks_does_not_cost_the_mappers_own(
    scene_factory, tmp_path, monkeypatch
):
    """The stage's wiring: a join is kept only when it passes the model checks; a wrong one is
    refused and the incremental mapper's largest model stays (not the refusal of both)."""
    from engine.config import IngestConfig, SfMConfig
    from engine.stages import ingest

    scene = scene_factory("box", n_azimuth=12, elevations_deg=(20.0, 45.0), width=480, height=360)
    cfg = SfMConfig(max_num_features=1024, retry=False, global_mapper=False)
    images = ingest.run([scene.root / "images"], IngestConfig(), tmp_path / "work")
    joins = []

    def wrong_join(recs, runner, image_dir, fixed_focal):
        largest = max(recs.values(), key=lambda r: r.num_reg_images())
        joins.append(largest.num_reg_images())
        return {0: _scrambled(largest)}, 2

    monkeypatch.setattr(sfm, "_merged", wrong_join)
    model = sfm.run(images, cfg, tmp_path)
    assert joins  # the join was tried
    assert model.num_registered == joins[0] >= 20
    assert model.check["ok"] and model.check["agreement"] >= 0.95
    assert all("models_joined" not in a for a in model.attempts)
    err = pose_errors(model.cameras, {c.name: c for c in scene.cameras})
    assert err.median_rotation_deg < 0.5
