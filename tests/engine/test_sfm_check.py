"""The SfM model check: a right model agrees with its verified pairs, a wrong one is refused.

Wrong models are made from a right one by turning cameras the way a mapper misplaces them on a
product that looks alike from several sides: a block of the ring turned about the product's
vertical axis (the far side taken for the near side), or single cameras turned in place. The
check must see it although the model's own reprojection error stays low.
"""

from __future__ import annotations

import json

import numpy as np
import pycolmap
import pytest

import engine.stages.sfm as sfm_stage
import main
from engine.errors import ReconstructionError
from engine.stages.sfm_check import check_model, near_side_shares, rotation_disagreement


def _database(model) -> str:
    """The database of the attempt the session's solved model came from."""
    run_dir = model.path.parents[1]
    (db,) = sorted((run_dir / "work" / "sfm").glob("attempt1_*/database.db"))
    return str(db)


def _axis_rotation(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(angle_deg)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def turn_cameras(rec: pycolmap.Reconstruction, names: set[str], angle_deg: float, *, about: str):
    """Turn the cameras ``names`` in place: about the product's vertical axis, or their own."""
    placed = [im for im in rec.images.values() if im.has_pose]
    centre = np.mean([im.projection_center() for im in placed], axis=0)
    # cameras are held level: their mean image-up direction is the product's vertical
    up = np.mean([-np.asarray(im.cam_from_world().rotation.matrix())[1] for im in placed], 0)
    turn = _axis_rotation(up, angle_deg)
    for im in placed:
        if im.name not in names:
            continue
        frame = rec.frames[im.frame_id]
        if about == "product":
            moved = pycolmap.Rigid3d(pycolmap.Rotation3d(turn), centre - turn @ centre)
            frame.rig_from_world = frame.rig_from_world * moved.inverse()
        else:
            own = pycolmap.Rigid3d(pycolmap.Rotation3d(_axis_rotation(up, angle_deg)), np.zeros(3))
            frame.rig_from_world = own * frame.rig_from_world
    return rec


def _one_camera_turned(solved, index: int, angle_deg: float):
    """The solved box with its ``index``-th photo's camera turned in place, and its check."""
    _, _, model, _ = solved("box")
    rec = pycolmap.Reconstruction(str(model.path))
    name = sorted(im.name for im in rec.images.values())[index]
    turn_cameras(rec, {name}, angle_deg, about="own")
    return rec, name, check_model(rec, _database(model)), model


def test_a_right_model_agrees_with_its_verified_pairs(solved):
    _, _, model, _ = solved("bottle")
    check = model.check
    assert check["ok"] and check["reason"] == ""
    assert check["mapper"] == "incremental"
    assert check["pairs_checked"] >= 100
    # measured 0.987 on the bottle: a few pairs were verified on look-alike matches
    assert check["agreement"] >= 0.95
    assert check["contradicted"] == []
    assert 0 < check["reprojection_error_px"] < 1.0
    json.dumps(check)


@pytest.mark.parametrize("share", [0.3, 0.5])
def test_a_block_turned_about_the_product_is_refused(solved, share):
    _, _, model, _ = solved("bottle")
    rec = pycolmap.Reconstruction(str(model.path))
    names = sorted(im.name for im in rec.images.values())
    turned = set(names[: int(share * len(names))])
    right = check_model(rec, _database(model))
    wrong = check_model(turn_cameras(rec, turned, 180.0, about="product"), _database(model))
    assert right.ok
    assert not wrong.ok and "contradict" in wrong.reason
    # measured: 0.64 (30% turned) and 0.59 (half) against 0.987
    assert wrong.agreement < 0.75
    # the model's own error does not see it: the block is consistent within itself
    assert wrong.reprojection_error_px == pytest.approx(right.reprojection_error_px, rel=1e-6)
    assert wrong.contradicted


def test_single_wrong_cameras_are_named(solved):
    _, _, model, _ = solved("box")
    rec = pycolmap.Reconstruction(str(model.path))
    names = sorted(im.name for im in rec.images.values())
    turned = set(names[::4])
    wrong = check_model(turn_cameras(rec, turned, 30.0, about="own"), _database(model))
    assert not wrong.ok
    assert turned <= set(wrong.contradicted)
    # a right photo whose pairs are mostly with turned ones may be named too (seen: one)
    assert len(set(wrong.contradicted) - turned) <= 2, wrong.contradicted


def test_one_contradicted_photo_is_left_out_and_explained(solved):
    rec, name, check, model = _one_camera_turned(solved, 5, 30.0)
    assert check.ok and check.contradicted == (name,)
    before = rec.num_reg_images()
    reasons = sfm_stage._drop_contradicted(rec, check)
    assert set(reasons) == {name} and "look-alike" in reasons[name]
    assert rec.num_reg_images() == before - 1
    assert check_model(rec, _database(model)).contradicted == ()


def test_rotation_disagreement_between_models(solved):
    _, _, model, _ = solved("box")
    rec = pycolmap.Reconstruction(str(model.path))
    same = rotation_disagreement(rec, pycolmap.Reconstruction(str(model.path)))
    assert len(same) == model.num_registered and max(same.values()) < 1e-5
    name = sorted(im.name for im in rec.images.values())[3]
    turned = turn_cameras(pycolmap.Reconstruction(str(model.path)), {name}, 10.0, about="own")
    per_photo = rotation_disagreement(rec, turned)
    assert per_photo[name] == pytest.approx(10.0, abs=1e-6)
    assert max(v for n, v in per_photo.items() if n != name) < 1e-5


def test_no_model_that_passes_its_check_exits_3_and_exports_nothing(
    scene_factory, tmp_path, monkeypatch, capsys
):
    """Every mapper's model is misplaced (half the ring turned): exit 3, a reason, no mesh."""
    scene = scene_factory("box", n_azimuth=10, elevations_deg=(20.0, 45.0), width=400, height=300)
    real_check = sfm_stage.check_model

    def misplacing_mapper(rec, database, **kwargs):
        names = sorted(im.name for im in rec.images.values() if im.has_pose)
        turn_cameras(rec, set(names[: len(names) // 2]), 180.0, about="product")
        return real_check(rec, database, **kwargs)

    monkeypatch.setattr(sfm_stage, "check_model", misplacing_mapper)
    out = tmp_path / "run"
    code = main.main(
        ["reconstruct", str(scene.root / "images"), "--out", str(out), "--no-depth-prior"]
    )
    assert code == ReconstructionError.exit_code == 3
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error: ")]
    assert "could not be solved reliably" in line and "contradict" in line
    assert "Reshoot" in line and "Traceback" not in err
    for name in ("mesh.glb", "dense.ply", "viewer.html", "sparse"):
        assert not (out / name).exists(), name
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "failed"
    assert any("could not be solved reliably" in w for w in report["warnings"])


def test_a_camera_facing_away_from_the_product_is_named_and_left_out(solved):
    """The global mapper's bent ring on dino_sparse_ring placed cameras facing away."""
    rec, name, check, _ = _one_camera_turned(solved, 7, 180.0)
    assert check.facing_away == (name,) and name in check.contradicted
    assert check.to_report()["facing_away"] == [name]
    reasons = sfm_stage._drop_contradicted(rec, check)
    assert "facing away from the product" in reasons[name]


def test_a_depth_reversed_model_is_refused(solved):
    """Weak perspective lets a small product's model come out as its depth-reversed mirror
    image (small_lowtex at 640 x 480: 110 deg off, every pair's matches still fitting). Its
    cameras then see the far side of the product: the check refuses it."""
    _, _, model, _ = solved("bottle")
    rec = pycolmap.Reconstruction(str(model.path))
    right = check_model(rec, _database(model))
    assert right.ok and right.near_side > 0.8
    shares = near_side_shares(rec)
    assert len(shares) == model.num_registered and min(shares.values()) > 0.5
    # the points mirrored through the product's centre, the cameras where they were
    centre = np.median([p.xyz for p in rec.points3D.values()], axis=0)
    for point in rec.points3D.values():
        point.xyz = 2.0 * centre - point.xyz
    reversed_ = check_model(rec, _database(model))
    assert not reversed_.ok and "far side" in reversed_.reason
    assert reversed_.near_side < 0.2
    assert reversed_.to_report()["near_side"] == pytest.approx(reversed_.near_side, abs=1e-3)
