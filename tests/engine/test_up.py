"""Up from the cameras, whichever way the photographer held them (level or on their side)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from engine.geometry import up_direction
from engine.synthetic import ring_cameras
from engine.types import CameraPose

Z = np.array([0.0, 0.0, 1.0])


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip(u @ v, -1.0, 1.0))))


def _rolled(cam: CameraPose, deg: float) -> CameraPose:
    """The camera turned about its optical axis, standing where it stood."""
    a = math.radians(deg)
    roll = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    R = roll @ cam.R
    return dataclasses.replace(cam, R=R, t=-R @ cam.center)


@pytest.mark.parametrize("roll", [0.0, 90.0, -90.0])
def test_a_ring_held_level_or_on_its_side_gives_the_true_up(roll):
    cams = [_rolled(c, roll) for c in ring_cameras("box", n_azimuth=12, elevations_deg=(30.0,))]
    assert _angle(up_direction(cams), Z) < 0.5


def test_portrait_and_landscape_photos_mixed():
    """Photos turned either way without EXIF, among level ones, and part of the ring left out:
    the axis square to one image axis of every camera, signed by the level ones."""
    cams = ring_cameras("bottle", n_azimuth=12, elevations_deg=(20.0, 45.0))[:18]
    mixed = [_rolled(c, (0.0, 90.0, -90.0)[i % 3]) for i, c in enumerate(cams)]
    assert _angle(up_direction(mixed), Z) < 0.5


def test_all_on_their_side_the_cameras_above_the_product_sign_it():
    """Rolled either way at random (no image up to trust): the cameras stand above it."""
    rng = np.random.default_rng(0)
    cams = ring_cameras("box", n_azimuth=10, elevations_deg=(25.0,))
    rolled = [_rolled(c, float(rng.choice([90.0, -90.0]))) for c in cams]
    assert _angle(up_direction(rolled), Z) < 0.5
    # an arc of a third of the way round: no ring to fit, the image axes still tell
    assert _angle(up_direction(rolled[:4]), Z) < 0.5


def _arc(seed: int, n: int, elevations: tuple[float, ...]) -> list[CameraPose]:
    """``n`` of 36 azimuths (10 deg apart) at each elevation, each photo held level or on
    either side at random, with a few degrees of roll from the hand."""
    rng = np.random.default_rng(seed)
    ring = ring_cameras("box", n_azimuth=36, elevations_deg=elevations)
    keep = [c for i, c in enumerate(ring) if i % 36 < n]
    return [_rolled(c, float(rng.choice([0.0, 90.0, -90.0]) + rng.normal(0, 3.0))) for c in keep]


@pytest.mark.parametrize("n", [6, 10])
def test_photos_from_one_side_held_either_way_are_not_tipped(n):
    """An arc of 60 or 100 deg, photos held level or on their side (et: a toy shot from one
    side). Ups about 65 deg away also leave every camera's image axis level within a few
    degrees; the one the cameras look down on at 20-35 deg wins over the one they would look
    down on at about 70 (four guesses alone picked that one in 36 of 80 such sets)."""
    errors = [_angle(up_direction(_arc(seed, n, (20.0, 35.0))), Z) for seed in range(20)]
    # upright within the 10 deg asked of the real sets; what is left (seen: medians 1.3 and
    # 2.4 deg) is the hand's 3 deg of roll over a narrow arc, not a tipped model
    assert max(errors) < 10.0, errors


def test_photos_looking_down_steeply_keep_their_up():
    """The rule above must not tip a shoot that really looks down steeply (70-80 deg)."""
    errors = [_angle(up_direction(_arc(seed, 10, (70.0, 80.0))), Z) for seed in range(20)]
    assert max(errors) < 10.0, errors
