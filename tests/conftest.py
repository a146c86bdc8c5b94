"""Shared fixtures: synthetic scenes rendered once per session, the real datasets when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("VITRINE_DATASETS", ROOT.parent / "shared" / "datasets"))

# Test-scale synthetic scenes: 36 views (three rings of 12) at 800x600. With two rings at
# 640x480 a small object's camera tilt and height trade off, and poses stall near 0.2 degrees.
SCENE_VIEWS = {"n_azimuth": 12, "elevations_deg": (15.0, 35.0, 55.0), "width": 800, "height": 600}


@pytest.fixture(scope="session")
def scene_factory(tmp_path_factory):
    """Render (once per session) and return a synthetic scene by kind."""
    from engine.synthetic import render_scene

    cache = {}

    def make(kind: str, **kwargs):
        key = (kind, tuple(sorted(kwargs.items())))
        if key not in cache:
            args = {**SCENE_VIEWS, **kwargs}
            cache[key] = render_scene(tmp_path_factory.mktemp(f"scene_{kind}"), kind, **args)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def solved(scene_factory, tmp_path_factory):
    """Ingest + SfM (standard preset settings) once per scene kind.

    Returns ``(scene, ingest_result, sparse_model, progress_events)``.
    """
    from engine.config import preset
    from engine.stages import ingest, sfm

    cache = {}

    def solve(kind: str):
        if kind not in cache:
            scene = scene_factory(kind)
            run_dir = tmp_path_factory.mktemp(f"sfm_{kind}")
            cfg = preset("standard")
            events = []
            images = ingest.run([scene.root / "images"], cfg.ingest, run_dir / "work")
            model = sfm.run(images, cfg.sfm, run_dir, progress=events.append)
            cache[kind] = (scene, images, model, events)
        return cache[kind]

    return solve


@pytest.fixture(scope="session")
def tiny_depth_model(tmp_path_factory) -> Path:
    """Folder of a tiny random-weight Depth-Anything model (config + safetensors + processor)."""
    from tests.tiny_models import make_tiny_depth_model

    return make_tiny_depth_model(tmp_path_factory.mktemp("models") / "tiny-depth")


def dataset(name: str) -> Path:
    """Path of a shared dataset, or skip the test with the reason."""
    path = DATASETS / name
    if not (path / "images").is_dir():
        pytest.skip(f"dataset {name!r} not found at {path} (set VITRINE_DATASETS to its folder)")
    return path


def standard_without_prior():
    """The ``standard`` preset without the depth network (no weights on these machines)."""
    import dataclasses

    from engine.config import preset

    cfg = preset("standard")
    return cfg.replace(depth_prior=dataclasses.replace(cfg.depth_prior, enabled=False))


def read_ground_truth(path: Path) -> dict:
    """cameras.json -> {name: CameraPose}."""
    from engine.synthetic import read_cameras_json

    return {c.name: c for c in read_cameras_json(path)}


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every attempt to open a connection or resolve a host."""
    import socket

    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache for this test (``HF_HOME`` points at it)."""
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf" / "hub"
