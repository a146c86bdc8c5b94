"""Projects: photos in sets, exclusions, atomic save/load, clear errors, last results."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from engine.errors import InputError, OutputError
from engine.export.ply import write_ply
from engine.types import PointCloud
from gui.project import FORMAT_VERSION, MANIFEST, Project


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff")  # extension decides here; ingest sniffs later
    return path


@pytest.fixture
def shoot(tmp_path):
    """A folder with photos, a sub-folder, masks, a hidden file and a text file."""
    root = tmp_path / "shoot"
    for name in ("img2.jpg", "img10.jpg", "img1.PNG", "sub/img3.jpeg", "raw/img4.dng"):
        _touch(root / name)
    for name in ("notes.txt", ".hidden.jpg", "img1_mask.png", "masks/img2.png", "Thumbs.db"):
        _touch(root / name)
    return root


def test_add_folder_and_files_deduplicated(qtbot, shoot):
    project = Project()
    changed = []
    project.set_changed.connect(changed.append)
    with qtbot.waitSignal(project.sets_changed, timeout=1000):
        image_set = project.add_set("Mug")
    assert image_set.run_dir == "runs/mug"
    assert project.add_set("Mug").name == "Mug 2"  # names stay unique

    added = project.add_paths("Mug", [shoot, shoot / "img2.jpg", shoot, shoot / "notes.txt"])
    assert added == [str(shoot), str(shoot / "img2.jpg")]
    assert project.add_paths("Mug", [shoot / "img2.jpg", str(shoot) + "/"]) == []
    assert changed == ["Mug"]

    files = project.image_files("Mug")
    # Natural order, recursive, once each; masks, hidden, clutter and non-photos left out.
    assert [p.relative_to(shoot).as_posix() for p in files] == [
        "img1.PNG",
        "img2.jpg",
        "img10.jpg",
        "raw/img4.dng",
        "sub/img3.jpeg",
    ]
    with pytest.raises(InputError, match="nowhere.jpg"):
        project.add_paths("Mug", [shoot / "nowhere.jpg"])


def test_excluded_images_are_left_out_of_the_run(shoot):
    project = Project()
    project.add_set("Mug")
    project.add_paths("Mug", [shoot])
    project.set_excluded("Mug", shoot / "img10.jpg", True)
    project.set_excluded("Mug", str(shoot / "sub" / "img3.jpeg"), True)
    inputs = project.inputs_for_run("Mug")
    assert shoot / "img10.jpg" not in inputs
    assert shoot / "sub" / "img3.jpeg" not in inputs
    assert len(inputs) == 3
    assert project.is_excluded("Mug", shoot / "img10.jpg")
    project.set_excluded("Mug", shoot / "img10.jpg", False)
    assert shoot / "img10.jpg" in project.inputs_for_run("Mug")


def test_rename_remove_and_settings(qtbot, shoot):
    project = Project()
    project.add_set("A")
    project.add_set("B")
    project.rename("A", "Teapot")
    assert project.set_names == ["Teapot", "B"]  # order kept
    with pytest.raises(ValueError, match="already called"):
        project.rename("B", "Teapot")
    project.update_set("Teapot", preset="high", device="cpu", no_depth_prior=True)
    cfg = project.config_for_run("Teapot")
    assert (cfg.preset, cfg.device, cfg.depth_prior.enabled) == ("high", "cpu", False)
    with pytest.raises(ValueError):
        project.update_set("Teapot", preset="ultra")
    project.remove_set("B")
    assert project.set_names == ["Teapot"]


def test_save_load_round_trip(qtbot, shoot, tmp_path):
    project = Project()
    project.add_set("Mug")
    project.add_paths("Mug", [shoot])
    project.set_excluded("Mug", shoot / "img2.jpg", True)
    project.update_set(
        "Mug",
        preset="preview",
        depth_model="/models/tiny",
        last_status="failed",
        last_message="Only 1 photo placed.",
    )
    project.add_set("Bottle")
    assert project.is_modified
    folder = tmp_path / "My project"
    manifest = project.save(folder)
    assert manifest == folder.resolve() / MANIFEST
    assert not project.is_modified
    data = json.loads(manifest.read_text(encoding="utf-8"))
    assert data["version"] == FORMAT_VERSION
    # The photos' own paths are kept (project.json is private, not an export).
    assert data["sets"][0]["sources"] == [str(shoot)]

    reopened = Project.load(folder)
    assert reopened.to_dict() == project.to_dict()
    assert reopened.inputs_for_run("Mug") == project.inputs_for_run("Mug")
    assert reopened.image_set("Mug").last_status == "failed"
    assert reopened.run_dir("Mug") == folder.resolve() / "runs" / "mug"


def test_failed_save_keeps_the_old_manifest(shoot, tmp_path, monkeypatch):
    project = Project()
    project.add_set("Mug")
    folder = tmp_path / "proj"
    manifest = project.save(folder)
    before = manifest.read_bytes()
    project.add_set("Bottle")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError, match="project.json"):
        project.save()
    monkeypatch.undo()
    assert manifest.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST]  # no temporary file left
    assert project.is_modified
    assert Project.load(folder).set_names == ["Mug"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"format": "vitrine-project", "version": 1, "sets": [', "damaged"),
        (b"\xff\xfe\x00garbage", "damaged"),
        (b'{"format": "something-else"}', "damaged"),
        (b'{"format": "vitrine-project", "version": 1, "sets": [{"name": 3}]}', "damaged"),
        (b'{"format": "vitrine-project", "version": 99, "sets": []}', "newer Vitrine"),
    ],
)
def test_bad_manifest_is_a_clear_input_error(tmp_path, content, expected):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / MANIFEST).write_bytes(content)
    with pytest.raises(InputError, match=expected) as info:
        Project.load(folder)
    assert MANIFEST in str(info.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(InputError, match="No project.json") as info:
        Project.load(tmp_path)
    assert "not a Vitrine project folder" in str(info.value)


def _fake_run(run: Path, shoot: Path) -> PointCloud:
    """A run folder written by hand: dense.ply and report.json."""
    run.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cloud = PointCloud(
        rng.random((50, 3)).astype(np.float32), rng.integers(0, 255, (50, 3)).astype(np.uint8)
    )
    write_ply(run / "dense.ply", cloud)
    report = {
        "status": "finished",
        "registered": ["img1.PNG", "img2.jpg"],
        "unregistered": {"img10.jpg": "too few matches with the placed photos"},
        "skipped": [{"file": "sub/img3.jpeg", "reason": "not an image (looks like a PDF)"}],
    }
    (run / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return cloud


def test_reopened_project_shows_last_result_and_badges(shoot, tmp_path):
    project = Project()
    project.add_set("Mug")
    project.add_paths("Mug", [shoot])
    project.update_set("Mug", last_status="finished")
    assert project.last_result("Mug") == (None, {}, None, None)
    # An unsaved project's runs live in the temporary folder; saving moves them.
    temp_run = project.run_dir("Mug")
    assert Path(os.environ["VITRINE_UNSAVED_DIR"]) in temp_run.parents
    cloud = _fake_run(temp_run, shoot)
    project.save(tmp_path / "proj")
    assert not temp_run.exists()

    reopened = Project.load(tmp_path / "proj")
    shown, cameras, kind, report = reopened.last_result("Mug")
    assert kind == "dense" and cameras == {}
    np.testing.assert_allclose(shown.xyz, cloud.xyz)
    assert report["status"] == "finished"

    status = reopened.image_status("Mug")
    assert status == {
        str(shoot / "img10.jpg"): ("not registered", "too few matches with the placed photos"),
        str(shoot / "sub" / "img3.jpeg"): ("skipped", "not an image (looks like a PDF)"),
    }


def test_last_result_survives_damaged_files(shoot, tmp_path):
    project = Project(tmp_path / "proj")
    project.add_set("Mug")
    run = project.run_dir("Mug")
    run.mkdir(parents=True)
    (run / "dense.ply").write_bytes(b"ply\nformat nonsense\n")
    (run / "report.json").write_text("{ not json", encoding="utf-8")
    assert project.last_result("Mug") == (None, {}, None, None)
    assert project.image_status("Mug") == {}


def test_removed_sets_run_folder_is_not_reused(tmp_path):
    project = Project(tmp_path / "proj")
    project.add_set("Mug")
    project.run_dir("Mug").mkdir(parents=True)
    project.remove_set("Mug")
    assert project.add_set("Mug").run_dir == "runs/mug-2"
