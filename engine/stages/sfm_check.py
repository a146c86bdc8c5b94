"""Is a solved SfM model right? Independent evidence, checked before the model is used.

A mapper can place photos wrongly and still report a low reprojection error: a symmetric product
seen from the far side looks like the near side, and a wrong camera that explains its own
matches passes every test COLMAP runs while it grows the model. What the mapper cannot hide is
the rest of the matching evidence. Every image pair was verified on its own, before mapping, by
RANSAC on its matches (a two-view geometry in the database); a right model agrees with nearly all
of those pairs, a wrong one contradicts many. :func:`check_model` measures that agreement, pair by
pair and photo by photo, with the reprojection error and the tracks as further evidence.

The check reads only the model and its database, so it judges any mapper's model alike
(incremental or global).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap

#: A verified pair is checked when it has at least this many inlier matches.
MIN_CHECK_INLIERS = 15
#: A match fits the model when its Sampson distance is under this many pixels (RANSAC verified
#: it at 4 px; bundle adjustment moves cameras by a fraction of a pixel).
FIT_PX = 4.0
#: A pair agrees with the model when at least this share of its verified matches fit.
PAIR_FIT_SHARE = 0.5
#: The model is right when at least this share of its checked pairs (weighted by inliers) agree.
MIN_AGREEMENT = 0.85
#: A placed photo is contradicted when under this share of its checked pairs' inliers agree.
MIN_PHOTO_AGREEMENT = 0.5
#: Mean reprojection error above which a model is not trusted, in pixels.
MAX_REPROJECTION_PX = 2.0
#: A placed camera must have the product (the sparse points' median) in front of it, within
#: this many times its half-diagonal field of view: photographers aim at the product, and a
#: camera placed facing away is wrong (a ring bent by the global mapper: one camera 105 deg
#: off on dino_sparse_ring, where right models stay within 1.1 deg and cluttered real shoots
#: within a third of the field of view).
MAX_AIM_FOV = 1.5
#: A model whose cameras surround the product (see :data:`MIN_SURROUND_DEG`) is depth-reversed
#: when the median placed photo sees under this share of its points nearer than the product's
#: centre. An opaque product shows each camera its near side: right models gave medians of
#: 0.68 (kitchen_lego, cluttered) to 0.98; the mirror-image models of small products at
#: 640 x 480 (their rings solved running the wrong way round, every pair's matches still
#: fitting) gave 0.10 to 0.32, at 71 to 110 deg off. One half is where the near and the far
#: side weigh the same.
MIN_NEAR_SIDE = 0.5
#: The near-side test needs cameras on different sides of the product: two of them at least
#: this far apart seen from its centre. From one side only (et: 9 photos of a plush toy on a
#: desk, a right model) every camera's near side is the same half of the points, and the share
#: sits near one half whether the model is right (0.49) or reversed.
MIN_SURROUND_DEG = 90.0
#: Fewer checked pairs than this give no verdict from agreement (too little evidence).
MIN_CHECKED_PAIRS = 3
#: Verified with a fundamental matrix only: COLMAP found that an essential matrix with the
#: set's intrinsics explains clearly fewer of the matches (under 95% of the fundamental
#: matrix's inliers). On a symmetric plain bottle these were the look-alike pairs: 70 of 127
#: between photos over 90 deg apart, against 2 of 94 calibrated pairs; a right model (36/36 at
#: 0.35 deg) contradicted 103 of them and 5 of the 94.
_UNCALIBRATED = int(pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED)
#: Such pairs are left out only when the calibrated ones carry at least this share of the
#: checked inliers (the plain bottle: 79%; lego's renders, whose focal prior is far off: 6
#: calibrated pairs of hundreds, where leaving the rest out refused a right model on 2 of 6).
MIN_CALIBRATED_SHARE = 0.5
_BAD_CONFIGS = {
    int(getattr(pycolmap.TwoViewGeometryConfiguration, name))
    for name in ("UNDEFINED", "DEGENERATE", "WATERMARK", "MULTIPLE")
}


@dataclass(frozen=True)
class ModelCheck:
    """Verdict on one SfM model and the evidence behind it.

    Attributes
    ----------
    ok
        True when the model may be used.
    reason
        Why it may not be used ("" when ``ok``), in plain words.
    pairs_checked, pairs_agreeing
        Verified image pairs with both photos placed that were checked, and those the model
        agrees with. Pairs verified with a fundamental matrix only are left out when at least
        :data:`MIN_CHECKED_PAIRS` calibrated pairs remain and carry
        :data:`MIN_CALIBRATED_SHARE` of the inliers (``pairs_uncalibrated`` of them).
    agreement
        Inlier-weighted share of checked pairs that agree (1.0 when nothing could be checked).
    contradicted
        Placed photos whose verified pairs the model mostly contradicts, or that it placed
        facing away from the product, by name.
    facing_away
        Those of ``contradicted`` placed facing away from the product.
    near_side
        Median over placed photos of the share of their points nearer than the product's
        centre (see :func:`near_side_shares`; 1.0 when it cannot be measured or the cameras
        do not surround the product).
    reprojection_error_px, mean_track_length
        The model's own statistics.
    """

    ok: bool
    reason: str
    pairs_checked: int
    pairs_agreeing: int
    agreement: float
    contradicted: tuple[str, ...] = ()
    facing_away: tuple[str, ...] = ()
    near_side: float = 1.0
    pairs_uncalibrated: int = 0
    reprojection_error_px: float = 0.0
    mean_track_length: float = 0.0
    per_photo: dict[str, float] = field(default_factory=dict, repr=False)

    def to_report(self) -> dict[str, Any]:
        """JSON-ready summary for ``report.json``."""
        return {
            "ok": self.ok,
            "reason": self.reason,
            "pairs_checked": self.pairs_checked,
            "pairs_agreeing": self.pairs_agreeing,
            "agreement": round(self.agreement, 4),
            "contradicted": list(self.contradicted),
            "facing_away": list(self.facing_away),
            "near_side": round(self.near_side, 3),
            "pairs_uncalibrated": self.pairs_uncalibrated,
            "reprojection_error_px": round(self.reprojection_error_px, 4),
            "mean_track_length": round(self.mean_track_length, 3),
        }


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def sampson_px(E: np.ndarray, x1: np.ndarray, x2: np.ndarray, focal: float) -> np.ndarray:
    """Sampson distances, in pixels, of normalised correspondences under an essential matrix.

    ``x1``, ``x2`` are ``(N, 2)`` normalised camera coordinates (distortion removed); the
    distance in normalised units is scaled by ``focal`` (pixels).
    """
    h1 = np.c_[x1, np.ones(len(x1))]
    h2 = np.c_[x2, np.ones(len(x2))]
    ex1 = h1 @ E.T  # E x1
    etx2 = h2 @ E  # E^T x2
    num = np.sum(h2 * ex1, axis=1) ** 2
    den = ex1[:, 0] ** 2 + ex1[:, 1] ** 2 + etx2[:, 0] ** 2 + etx2[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-300)) * focal


def _focal(camera: pycolmap.Camera) -> float:
    return float(np.mean([camera.focal_length_x, camera.focal_length_y]))


def check_model(
    rec: pycolmap.Reconstruction,
    database: Path,
    *,
    min_agreement: float = MIN_AGREEMENT,
) -> ModelCheck:
    """Check a model against the verified two-view geometries of its database.

    For every verified pair with both photos placed and at least :data:`MIN_CHECK_INLIERS`
    inlier matches, the model's relative pose gives an essential matrix; the pair agrees when
    at least :data:`PAIR_FIT_SHARE` of its inliers lie within :data:`FIT_PX` of their epipolar
    lines. The model is right when the inlier-weighted share of agreeing pairs reaches
    ``min_agreement`` and its mean reprojection error stays under :data:`MAX_REPROJECTION_PX`.
    Pairs only a fundamental matrix explains (look-alike sides of a symmetric product, see
    :data:`_UNCALIBRATED`) vouch for nothing when calibrated pairs carry most of the evidence.

    Parameters
    ----------
    rec
        The model (image ids as in ``database``).
    database
        The COLMAP database the model was solved from.
    min_agreement
        Least inlier-weighted share of agreeing pairs.

    Returns
    -------
    ModelCheck
    """
    placed = {iid: im for iid, im in rec.images.items() if im.has_pose}
    poses = {iid: im.cam_from_world() for iid, im in placed.items()}
    normalised: dict[int, np.ndarray] = {}
    evidence: list[tuple[int, int, float, bool, bool]] = []  # a, b, weight, agrees, calibrated
    with pycolmap.Database.open(str(database)) as db:
        pair_ids, geometries = db.read_two_view_geometries()
        for pair_id, tvg in zip(pair_ids, geometries, strict=True):
            a, b = pycolmap.pair_id_to_image_pair(pair_id)
            if a not in placed or b not in placed or int(tvg.config) in _BAD_CONFIGS:
                continue
            matches = np.asarray(tvg.inlier_matches)
            if len(matches) < MIN_CHECK_INLIERS:
                continue
            for iid in (a, b):
                if iid not in normalised:
                    kp = np.asarray(db.read_keypoints(iid))[:, :2].astype(np.float64)
                    cam = rec.cameras[placed[iid].camera_id]
                    normalised[iid] = np.asarray(cam.cam_from_img(kp), np.float64)
            rel = poses[b] * poses[a].inverse()
            R = np.asarray(rel.rotation.matrix(), np.float64)
            t = np.asarray(rel.translation, np.float64)
            if np.linalg.norm(t) < 1e-12:
                continue
            E = _skew(t / np.linalg.norm(t)) @ R
            focal = 0.5 * (
                _focal(rec.cameras[placed[a].camera_id]) + _focal(rec.cameras[placed[b].camera_id])
            )
            d = sampson_px(E, normalised[a][matches[:, 0]], normalised[b][matches[:, 1]], focal)
            agrees = float(np.mean(d < FIT_PX)) >= PAIR_FIT_SHARE
            calibrated = int(tvg.config) != _UNCALIBRATED
            evidence.append((a, b, float(len(matches)), agrees, calibrated))
    uncalibrated = sum(1 for e in evidence if not e[4])
    calibrated_weight = sum(e[2] for e in evidence if e[4])
    total_weight = sum(e[2] for e in evidence)
    # The set's intrinsics explain most of the evidence: the pairs they do not explain are the
    # exceptions, look-alike sides. Where they explain little (a focal prior far off: lego's
    # renders, 6 calibrated pairs of hundreds) the configuration says nothing: all pairs count.
    if (
        len(evidence) - uncalibrated >= MIN_CHECKED_PAIRS
        and calibrated_weight >= MIN_CALIBRATED_SHARE * total_weight
    ):
        evidence = [e for e in evidence if e[4]]
    else:
        uncalibrated = 0
    checked, agreeing = len(evidence), sum(1 for e in evidence if e[3])
    weight_all = sum(e[2] for e in evidence)
    weight_ok = sum(e[2] for e in evidence if e[3])
    photo_all: dict[int, float] = defaultdict(float)
    photo_ok: dict[int, float] = defaultdict(float)
    for a, b, w, agrees, _ in evidence:
        for iid in (a, b):
            photo_all[iid] += w
            photo_ok[iid] += w * agrees
    agreement = weight_ok / weight_all if weight_all > 0 else 1.0
    per_photo = {placed[i].name: photo_ok[i] / photo_all[i] for i in photo_all}
    centre = _centre(rec)
    away = set(facing_away(rec, centre))
    for name in away:  # its verified pairs cannot vouch for a camera facing away
        per_photo[name] = 0.0
    contradicted = tuple(
        sorted(name for name, share in per_photo.items() if share < MIN_PHOTO_AGREEMENT)
    )
    shares = near_side_shares(rec, centre)
    near = 1.0
    if len(shares) >= 3 and surround_deg(rec, centre) >= MIN_SURROUND_DEG:
        near = float(np.median(list(shares.values())))
    reproj = float(rec.compute_mean_reprojection_error()) if rec.num_points3D() else 0.0
    track = float(rec.compute_mean_track_length()) if rec.num_points3D() else 0.0
    reason = ""
    if checked >= MIN_CHECKED_PAIRS and agreement < min_agreement:
        reason = (
            f"the solved cameras contradict {checked - agreeing} of {checked} photo pairs "
            f"whose matches were verified on their own (agreement {agreement:.0%}, needs "
            f"{min_agreement:.0%}): the product probably looks alike from different sides"
        )
    elif placed and 3 * len(away) >= len(placed):
        reason = (
            f"{len(away)} of {len(placed)} placed cameras face away from the product, which "
            "photographers aim at"
        )
    elif near < MIN_NEAR_SIDE:
        reason = (
            f"the solved cameras see the product's far side (a median {near:.0%} of each "
            "photo's points lie nearer than the product's centre): the model is the product's "
            "depth-reversed mirror image, which a product small in the frame allows"
        )
    elif reproj > MAX_REPROJECTION_PX:
        reason = f"the mean reprojection error is {reproj:.2f} px (at most {MAX_REPROJECTION_PX})"
    return ModelCheck(
        ok=not reason,
        reason=reason,
        pairs_checked=checked,
        pairs_agreeing=agreeing,
        agreement=agreement,
        contradicted=contradicted,
        facing_away=tuple(sorted(away)),
        near_side=near,
        pairs_uncalibrated=uncalibrated,
        reprojection_error_px=reproj,
        mean_track_length=track,
        per_photo=per_photo,
    )


def _centre(rec: pycolmap.Reconstruction) -> np.ndarray | None:
    """The product's centre: the median of the sparse points (None without points)."""
    if rec.num_points3D() == 0:
        return None
    return np.median(np.array([p.xyz for p in rec.points3D.values()]), axis=0)


def near_side_shares(
    rec: pycolmap.Reconstruction, centre: np.ndarray | None = None
) -> dict[str, float]:
    """Per placed photo, the share of its 3D points nearer to it than the product's centre.

    The centre is the median of the sparse points. An opaque product shows a camera its near
    side, so a right model gives most photos a share above one half; the depth-reversed
    (Necker) mirror image of a model, which weak perspective on a small product cannot tell
    from the right one by reprojection alone, gives most photos a share below one half.
    """
    if rec.num_points3D() == 0:
        return {}
    ids = np.fromiter(rec.points3D.keys(), np.int64, rec.num_points3D())
    xyz = np.array([rec.points3D[i].xyz for i in ids.tolist()], np.float64)
    if centre is None:
        centre = np.median(xyz, axis=0)
    row = {int(i): k for k, i in enumerate(ids.tolist())}
    shares = {}
    for image in rec.images.values():
        if not image.has_pose:
            continue
        seen = [row[p.point3D_id] for p in image.points2D if p.has_point3D()]
        if not seen:
            continue
        pose = image.cam_from_world()
        R = np.asarray(pose.rotation.matrix(), np.float64)
        tz = float(np.asarray(pose.translation, np.float64)[2])
        depth = xyz[seen] @ R[2] + tz
        shares[image.name] = float(np.mean(depth < centre @ R[2] + tz))
    return shares


def surround_deg(rec: pycolmap.Reconstruction, centre: np.ndarray | None = None) -> float:
    """Largest angle between two placed cameras seen from the product's centre (degrees).

    The centre is the median of the sparse points; 0.0 without points or with one camera.
    """
    centre = _centre(rec) if centre is None else centre
    if centre is None:
        return 0.0
    dirs = np.array([im.projection_center() - centre for im in rec.images.values() if im.has_pose])
    if len(dirs) < 2:
        return 0.0
    dirs /= np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-12)
    return float(np.degrees(np.arccos(np.clip((dirs @ dirs.T).min(), -1.0, 1.0))))


def facing_away(rec: pycolmap.Reconstruction, centre: np.ndarray | None = None) -> list[str]:
    """Placed photos whose camera does not aim at the product (see :data:`MAX_AIM_FOV`).

    The product is taken to be at the median of the sparse points; a camera faces away when
    that point is behind it, or further from its optical axis than :data:`MAX_AIM_FOV` times
    its half-diagonal field of view.
    """
    centre = _centre(rec) if centre is None else centre
    if centre is None:
        return []
    away = []
    for image in rec.images.values():
        if not image.has_pose:
            continue
        cam = rec.cameras[image.camera_id]
        half_fov = np.arctan(0.5 * np.hypot(cam.width, cam.height) / _focal(cam))
        to_centre = centre - image.projection_center()
        cos = float(image.viewing_direction() @ to_centre) / max(np.linalg.norm(to_centre), 1e-12)
        if np.arccos(np.clip(cos, -1.0, 1.0)) > MAX_AIM_FOV * half_fov:
            away.append(image.name)
    return sorted(away)


def rotation_disagreement(
    a: pycolmap.Reconstruction, b: pycolmap.Reconstruction
) -> dict[str, float]:
    """Per photo placed in both models, how far the two models turn it (degrees).

    For each shared photo, the median over the other shared photos of the angle between the
    two models' relative rotations of the pair. Relative rotations do not depend on either
    model's frame; where two right models overlap they agree to a fraction of a degree
    (kitchen_lego: at most 0.26 deg), while a photo one of them misplaced stands out by its
    whole error (lego: 8 photos at 160 deg, the rest at 0.2).

    Returns
    -------
    dict
        Photo name -> degrees; empty when fewer than two photos are shared.
    """

    def rotations(rec: pycolmap.Reconstruction) -> dict[str, np.ndarray]:
        return {
            im.name: np.asarray(im.cam_from_world().rotation.matrix(), np.float64)
            for im in rec.images.values()
            if im.has_pose
        }

    ra, rb = rotations(a), rotations(b)
    shared = sorted(set(ra) & set(rb))
    if len(shared) < 2:
        return {}
    stack_a = np.stack([ra[n] for n in shared])
    stack_b = np.stack([rb[n] for n in shared])
    # relative rotations R_j R_i^T of every pair in each model, then their angle of difference
    rel_a = np.einsum("jab,icb->ijac", stack_a, stack_a)
    rel_b = np.einsum("jab,icb->ijac", stack_b, stack_b)
    trace = np.einsum("ijab,ijab->ij", rel_a, rel_b)
    angles = np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))
    np.fill_diagonal(angles, np.nan)
    return {n: float(v) for n, v in zip(shared, np.nanmedian(angles, axis=1), strict=True)}
