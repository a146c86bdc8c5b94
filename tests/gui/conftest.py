"""Fixtures of the GUI tests: a tiny synthetic shoot for real runs, a fast config."""

from __future__ import annotations

import dataclasses

import pytest

# 16 views at 320x240: a whole standard run (SfM + dense + fuse) takes about 10 s on 2 cores.
TINY_SHOOT = {"n_azimuth": 8, "elevations_deg": (20.0, 45.0), "width": 320, "height": 240}


@pytest.fixture(scope="session")
def tiny_shoot(tmp_path_factory):
    """A tiny synthetic box shoot (rendered once per session); photos in ``.root / "images"``."""
    from engine.synthetic import render_scene

    return render_scene(tmp_path_factory.mktemp("tiny_shoot"), "box", **TINY_SHOOT)


@pytest.fixture(autouse=True)
def _partial_models_allowed(monkeypatch):
    """Runs from the window keep a model however few of the tiny shoot's photos are placed.

    The tiny box shoot (16 views at 320 x 240, 45 deg apart) is at the edge of what SfM
    solves: the first attempt places a few photos, the finer retry most (15 of 16 seen). A real
    run stops under half placed (``SfMConfig.min_placed_fraction``, tested in
    tests/engine/test_sfm.py and by the two-things set of tests/gui/test_fault_matrix_gui.py);
    these tests are about the window, not about that rule.
    """
    import engine.config
    from gui import settings_panel

    for module in (settings_panel, engine.config):
        real = module.preset

        def allowing(name, _real=real, **overrides):  # noqa: ANN001, ANN202
            cfg = _real(name, **overrides)
            return cfg.replace(sfm=dataclasses.replace(cfg.sfm, min_placed_fraction=0.0))

        monkeypatch.setattr(module, "preset", allowing)


@pytest.fixture(scope="session")
def fast_config():
    """The standard preset with the depth prior off (no weights here; no lookup warning)."""
    from engine.config import preset

    cfg = preset("standard")
    return cfg.replace(
        sfm=dataclasses.replace(cfg.sfm, min_placed_fraction=0.0),
        dense=dataclasses.replace(cfg.dense, max_image_size=320),
        depth_prior=dataclasses.replace(cfg.depth_prior, enabled=False),
    )


@pytest.fixture(autouse=True)
def _unsaved_projects_in_tmp(tmp_path, monkeypatch):
    """Unsaved projects keep their runs under the test's tmp folder, not the user's home."""
    monkeypatch.setenv("VITRINE_UNSAVED_DIR", str(tmp_path / "unsaved"))
