"""One model from the pieces an incremental mapping split into, where they share photos.

COLMAP's incremental mapper grows one model until no photo can be added, then starts another
from the photos left, and a photo it placed in the first model may be placed again in the
second. On a sparse ring of a plain product the weakest link between neighbours breaks the
ring in two: on dino_sparse_ring (16 photos, 22.5 deg apart, white plaster) the strong attempt
placed photos 6 to 13 in one model (0.27 deg from the set's cameras) and 13 to 16 and 1 to 5 in
another (0.36 deg), both right, sharing photo 13; the run stopped with 9 of 16 placed.

A shared photo has a pose in both models, so it gives the rotation and translation between
their frames; the points both models saw from it give the scale (their depths' ratio). The
second model's other photos are moved into the first's frame, every point is triangulated
again from the attempt's verified matches, and the cameras are adjusted together (on the dino:
16 of 16 placed, 0.25 deg). The merged model is only a candidate: it is checked like any
mapper's (:func:`engine.stages.sfm_check.check_model`), and a wrong merge contradicts the
verified pairs across the seam.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pycolmap

logger = logging.getLogger(__name__)

#: Points both models triangulated from a shared photo that the shared pose and scale must
#: bring within :data:`FIT_DEPTH_SHARE` of each other for the seam to count.
MIN_SEAM_POINTS = 5
#: A shared point fits the seam when the two models put it this close, as a share of its depth.
FIT_DEPTH_SHARE = 0.01


def _seam(
    a: pycolmap.Reconstruction, b: pycolmap.Reconstruction, image_id: int
) -> tuple[int, pycolmap.Sim3d] | None:
    """The similarity taking ``b``'s frame to ``a``'s through one photo placed in both.

    Returns the number of shared points it fits and the similarity, or None without enough
    shared points.
    """
    ia, ib = a.image(image_id), b.image(image_id)
    if len(ia.points2D) != len(ib.points2D):
        return None  # not the same photo's features
    xa, xb = [], []
    for pa, pb in zip(ia.points2D, ib.points2D, strict=True):
        if pa.has_point3D() and pb.has_point3D():
            xa.append(a.point3D(pa.point3D_id).xyz)
            xb.append(b.point3D(pb.point3D_id).xyz)
    if len(xa) < MIN_SEAM_POINTS:
        return None
    xa_, xb_ = np.array(xa), np.array(xb)
    ta, tb = ia.cam_from_world().matrix(), ib.cam_from_world().matrix()
    depth_a = xa_ @ ta[2, :3] + ta[2, 3]
    depth_b = xb_ @ tb[2, :3] + tb[2, 3]
    ahead = (depth_a > 0) & (depth_b > 0)
    if ahead.sum() < MIN_SEAM_POINTS:
        return None
    scale = float(np.median(depth_a[ahead] / depth_b[ahead]))
    # world_a = Ra^T (s (Rb x_b + tb) - ta): the shared photo sees the same thing in both
    rot = ta[:, :3].T @ tb[:, :3]
    shift = ta[:, :3].T @ (scale * tb[:, 3] - ta[:, 3])
    moved = scale * xb_ @ rot.T + shift
    fits = np.linalg.norm(moved - xa_, axis=1) <= FIT_DEPTH_SHARE * np.abs(depth_a)
    return int(fits.sum()), pycolmap.Sim3d(scale, pycolmap.Rotation3d(rot), shift)


def _best_seam(
    a: pycolmap.Reconstruction, b: pycolmap.Reconstruction
) -> tuple[int, pycolmap.Sim3d] | None:
    """The seam through the shared photo whose pose and scale fit most shared points."""
    shared = set(a.reg_image_ids()) & set(b.reg_image_ids())
    best = None
    for image_id in sorted(shared):
        if a.image(image_id).name != b.image(image_id).name:
            continue  # not from the same database
        seam = _seam(a, b, image_id)
        if seam is not None and (best is None or seam[0] > best[0]):
            best = seam
    if best is None or best[0] < MIN_SEAM_POINTS:
        return None
    return best


def _placed(rec: pycolmap.Reconstruction, image_id: int) -> bool:
    return rec.exists_image(image_id) and rec.image(image_id).has_pose


def merge_models(
    models: Sequence[pycolmap.Reconstruction],
    db_path: Path,
    image_dir: Path,
    folder: Path,
    adjust: Callable[[pycolmap.Reconstruction], None],
) -> tuple[pycolmap.Reconstruction, list[pycolmap.Reconstruction]] | None:
    """The largest model grown by the others that share photos with it, triangulated again.

    Parameters
    ----------
    models
        One mapping's models (the mapper's output, any order).
    db_path, image_dir
        The attempt's database (its verified matches) and the photos.
    folder
        Scratch folder for the triangulation (replaced).
    adjust
        Bundle adjustment applied to the merged model, in place.

    Returns
    -------
    The merged model and the models it did not absorb, or None when no model could be merged
    (no shared photo with enough shared points, or nothing new to add).
    """
    ordered = sorted(models, key=lambda r: r.num_reg_images(), reverse=True)
    if len(ordered) < 2:
        return None
    merged = pycolmap.Reconstruction(ordered[0])
    left = list(ordered[1:])
    absorbed = 0
    grew = True
    while grew:
        grew = False
        for other in list(left):
            new = [i for i in other.reg_image_ids() if not _placed(merged, i)]
            seam = _best_seam(merged, other) if new else None
            if seam is None:
                continue
            fitted, sim = seam
            moved = pycolmap.Reconstruction(other)
            moved.transform(sim)
            for image_id in new:
                image = moved.image(image_id)
                if merged.exists_image(image_id):  # in the model, not placed
                    frame_id = merged.image(image_id).frame_id
                    merged.frame(frame_id).rig_from_world = moved.frame(
                        image.frame_id
                    ).rig_from_world
                    merged.register_frame(frame_id)
                    continue
                if not merged.exists_camera(image.camera_id):
                    merged.add_camera_with_trivial_rig(moved.camera(image.camera_id))
                merged.add_image_with_trivial_frame(
                    pycolmap.Image(
                        name=image.name,
                        points2D=[pycolmap.Point2D(p.xy) for p in image.points2D],
                        camera_id=image.camera_id,
                        image_id=image_id,
                    ),
                    image.cam_from_world(),
                )
            logger.info(
                "SfM: a model of %d photos joined to one of %d through a shared photo "
                "(%d shared points fit)",
                other.num_reg_images(),
                merged.num_reg_images() - len(new),
                fitted,
            )
            left.remove(other)
            absorbed += 1
            grew = True
    if not absorbed:
        return None
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        tri = pycolmap.triangulate_points(merged, db_path, image_dir, folder, clear_points=True)
        adjust(tri)
    except (RuntimeError, ValueError) as exc:  # the mapper's own models stay usable
        logger.warning("SfM: the models sharing photos could not be joined (%s)", exc)
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return tri, left
