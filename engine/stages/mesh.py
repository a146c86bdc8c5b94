"""Mesh: the fused dense cloud in, a trimmed, decimated, textured triangle mesh out.

Steps (numpy-vectorised; the heavy lifting is COLMAP's C++ through pycolmap):

1. **Clean the cloud.** The support the product stands on (floor, table, turntable, a printed
   sheet) is found as a plane (:func:`_find_floor`) and cut, with or without masks. When there
   is no support to cut, masks trim: points outside the product's silhouette in more than
   ``1 - cfg.trim_min_views`` of the views whose frame they fall in are dropped (a visual hull
   test; masks are dilated by :data:`MASK_TOLERANCE` of the image diagonal for calibration and
   mask-edge error). With the support cut, masks do not trim (automatic masks that failed on
   some photos ate most of kitchen_lego's bulldozer: 58% of its points kept against 95%); the
   product is then the part the cameras aim at (step 3). Normals come from fusion, already
   oriented towards the cameras that saw each point; a cloud without normals gets PCA normals
   oriented towards the cameras that see each point (a coarse z-buffer of the points per view
   decides who sees what).
2. **Screened Poisson** (:func:`pycolmap.poisson_meshing`, octree depth
   ``cfg.poisson_depth``, COLMAP's own density trimming off: its default ``trim=10`` can return
   an empty mesh). Poisson closes the surface everywhere, including where nothing was seen.
3. **Trim** what the photos do not support: vertices farther than :data:`DENSITY_SPACINGS`
   point spacings (or :data:`DENSITY_CELLS` octree cells) from the nearest dense point are
   Poisson's extrapolation; with masks, vertices failing the visual hull test of step 1 are
   backdrop, turntable or floor. A face with such a vertex goes; then the connected component
   the cameras aim at stays, with the parts lying close to it (:func:`_product_components`;
   a small one when the dense cloud holds it and nothing else covers those points):
   background the photos happened to show goes, however large.
4. **Decimate** to ``cfg.max_triangles`` with COLMAP's quadric edge collapse
   (:func:`pycolmap.simplify_mesh`; open boundaries are kept in place).
5. **Vertex colours**: inverse-distance mean of the :data:`COLOUR_NEIGHBOURS` nearest dense
   points.
6. **Texture atlas** (``cfg.texture_size`` > 0), the "one photo per patch" scheme of
   MVS-Texturing (Waechter et al. 2014): every face is scored in every view (projected area
   times the cosine of the viewing angle; zero when back-facing, outside the frame or the mask,
   or hidden: a z-buffer of the mesh per view decides), labels are smoothed over the face
   adjacency so that neighbours share a view, and each connected patch of faces with one view
   becomes a rectangle cut out of that photo (with :data:`PATCH_PAD` pixels of margin). The
   rectangles are shelf-packed into the atlas at the photos' own resolution, shrunk only when
   they do not fit; the UVs are the vertices' projections into the chosen photo (lens
   distortion included). Faces no photo sees get small cells of their vertex colours. Empty
   atlas texels are filled by pull-push so that mipmaps and JPEG blocks do not bleed black.
   (xatlas charts were tried first: 40-50 s for 80-100k triangles on two busy cores, more than
   this whole stage; the patches also copy photo pixels 1:1 instead of resampling them.)
"""

from __future__ import annotations

import io
import logging
import math
import shutil
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pycolmap
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from engine import run_folder
from engine.config import MeshConfig
from engine.errors import InputError, NoProductError, ReconstructionError
from engine.export._atomic import write_bytes_atomic
from engine.export.ply import PLY_TYPES, write_ply
from engine.geometry import axes_meeting_point, up_direction
from engine.io import read_image, read_mask
from engine.messages import named
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.stages import _isolated as isolated
from engine.types import CameraPose, ImageRecord, IngestResult, Mesh, PointCloud

logger = logging.getLogger(__name__)

STAGE = "mesh"

#: Part of the resume key: a finished run's mesh is made again when this changes (2: the
#: support judged under its footprint and by the user's masks; the surface made again around a
#: product that spans a small part of the cloud; pinholes kept; 3: a small part near the
#: product kept when the cloud holds it).
ALGORITHM_VERSION = 3
#: Where the pipeline keeps the mesh (reconstruction coordinates), relative to the work folder.
MESH_FILE = run_folder.MESH_FILE
#: A vertex farther than this many point spacings from every dense point is extrapolation.
DENSITY_SPACINGS = 4.0
#: ... or than this many Poisson octree cells (whichever is larger).
DENSITY_CELLS = 2.0
#: Connected components with fewer faces than this fraction of the largest one are crumbs,
#: dropped ...
MIN_COMPONENT_FRACTION = 0.1
#: ... unless one lies within :data:`PART_GAP` of the product and is the only surface near
#: this share of the cloud's points (those within :data:`COMPLETENESS_TOLERANCE` of it and of
#: nothing kept): a part of the product that trimming cut off (lego's bucket face, 3% of the
#: product's faces, held 2.9% of the cloud; dropped, the mesh covered 94.3% of the cloud's
#: product, under :data:`MIN_COMPLETENESS`). A crumb beside the surface covers points the
#: surface covers already.
MIN_PART_POINTS = 0.005
#: A component lying within this share of the product's size (its bounding diagonal) of the
#: product stays as one of its parts.
PART_GAP = 0.05
#: Unsupported patches of at most this share of the surface's vertices are pinholes: kept.
PINHOLE_SHARE = 0.002
#: The surface is made again on the product's neighbourhood when the kept product spans less
#: than this share of the fused cloud (a wall behind it stretched Poisson's octree).
REFIT_SHARE = 0.5
#: Silhouette tolerance of the visual hull test, as a fraction of the image diagonal.
MASK_TOLERANCE = 0.004
#: Masks and z-buffers are tested at most at this long side (pixels).
TEST_MAX_SIZE = 1024
#: Long side (cells) of the coarse point z-buffer that decides which views see a point.
SPLAT_GRID = 256
#: Faces whose box is at most this many pixels a side are rasterized together, by box size.
RASTER_BLOCK = 8
#: Relative depth within which a point counts as the nearest in its cell.
SPLAT_DEPTH_TOLERANCE = 0.03
#: The product's silhouettes (the mesh seen from every photo) are written here, inside the
#: mesh stage's work folder.
PRODUCT_MASK_DIR = run_folder.PRODUCT_MASKS_FOLDER
#: A photo's mask agrees with the product found in 3D when their IoU reaches this.
MIN_MASK_AGREEMENT = 0.8
#: Mesh completeness: a product's dense point is covered when the mesh passes within this
#: share of the product's size (bounding diagonal) of it ...
COMPLETENESS_TOLERANCE = 0.01
#: ... and the run warns when the mesh covers less than this share of them.
MIN_COMPLETENESS = 0.95
#: Points sampled on the mesh's surface to measure completeness.
COMPLETENESS_SAMPLES = 200_000
#: A plane is the support (floor, table, sheet) when it holds this fraction of the points ...
FLOOR_MIN_FRACTION = 0.05
#: ... and reaches this many times wider than the points above it.
FLOOR_MIN_REACH = 1.3
#: The support's normal lies within this angle of the cameras' up.
FLOOR_MAX_TILT_DEG = 30.0
#: Points within this share of the cloud's height (or 3 point spacings) of the plane are on it.
FLOOR_TOLERANCE = 0.01
#: At most this share of the points may lie below the support, under its footprint (within
#: :data:`FLOOR_UNDER_REACH` of its points, across): a product's own flat top or base has the
#: product's sides there. What lies lower beyond the support's edge (the floor around a table,
#: the books a plush sits on) is the room's, and does not count.
FLOOR_MAX_BELOW = 0.02
#: ... that reach: this share of the cloud's size (its 2-98% diagonal), or 3 point spacings.
FLOOR_UNDER_REACH = 0.01
#: The user's own masks (beside the photos, or painted) that claim this share of the
#: support's visible points make it part of the product (a model's base plate): it is kept.
FLOOR_IN_MASKS = 0.5
#: Mask sources that are the user's word on what the product is (``ImageRecord.mask_source``).
OWN_MASK_SOURCES = frozenset({"file", "painted"})
#: RANSAC trials for the support plane.
FLOOR_RANSAC_TRIALS = 400
#: Where the cameras aim lies this share of their distance (median) above a support that
#: nothing stands on, or outside the product's extent: the product was not reconstructed, only
#: what was around it (the run stops). On the real and synthetic shoots where the product was
#: reconstructed the aim lay inside the product's extent (0.0); with the product left out of a
#: synthetic sheet shoot it lay 0.2 of the distance above the sheet.
NOTHING_AIMED = 0.08
#: A point is a stray when its ISOLATED_NEIGHBOURS-th neighbour is farther than
#: ISOLATED_FACTOR times the median of that distance.
ISOLATED_NEIGHBOURS = 6
ISOLATED_FACTOR = 5.0
#: Nearest dense points averaged into a vertex colour.
COLOUR_NEIGHBOURS = 4
#: Relative depth tolerance of the occlusion test.
DEPTH_TOLERANCE = 0.01
#: A view within this fraction of a face's best score is good enough to texture it.
GOOD_VIEW_FRACTION = 0.7
#: Views considered per face when smoothing the texture labels (besides the greedy choice).
LABEL_CANDIDATES = 4
#: Weight of one agreeing neighbour against a face's own (normalised) view score.
LABEL_SMOOTHNESS = 0.35
LABEL_ITERATIONS = 6
#: Margin in photo pixels around every texture patch (real image content: no seams at mip 0).
PATCH_PAD = 2
#: Fewest dense points a surface can be built from.
MIN_POINTS = 200
#: Poisson gets at most this many points (voxel-averaged above it). On the synthetic box's real
#: dense cloud (446k points) 250k gave the same surface error (0.53 mm) in 14 s instead of 19 s.
POISSON_MAX_POINTS = 250_000
#: Nearest neighbours of the PCA normals of a cloud without normals.
NORMAL_NEIGHBOURS = 12
_SEED = 0

NOTHING_AIMED_MESSAGE = (
    "Nothing was reconstructed where the photos aim: {what}. Exporting that would show the "
    "background, not the product, so nothing was exported. The product itself gave no depth: "
    "it may be too plain, shiny or transparent, or too small in the photos. Fill more of the "
    "frame with it, light it evenly (a polarising filter for shine), or give it texture "
    "(a strip of masking tape), and shoot it all around."
)
NO_SURFACE_MESSAGE = (
    "No surface could be built from the dense points: the photos may show too little of the "
    "product. Shoot it all around with about 70% overlap between neighbouring photos, or turn "
    "off the mesh in the settings to keep the point cloud only."
)


@dataclass(frozen=True)
class MeshResult:
    """Output of the mesh stage.

    Attributes
    ----------
    mesh
        The web mesh in reconstruction coordinates, with vertex colours and, when
        ``cfg.texture_size`` > 0, UVs and a texture atlas.
    stats
        ``points_in``, ``points_used`` (after the silhouette test), ``completeness`` (share of
        the product's dense points within 1% of its size of the mesh, see
        :func:`_completeness`) and ``completeness_points``, ``masks`` (views with a
        mask), ``poisson_vertices``, ``poisson_faces``, ``trimmed_density``, ``trimmed_hull``
        (vertices cut by each test), ``components``, ``components_kept``, ``faces_trimmed``,
        ``triangles``, ``vertices``, ``textured``, ``texture_size`` ([w, h]),
        ``texture_scale`` (atlas texels per photo pixel), ``patches``, ``faces_unseen``,
        ``seconds`` and the per-phase ``seconds_*``.
    """

    mesh: Mesh
    stats: dict[str, Any] = field(default_factory=dict)

    def to_report(self) -> dict[str, Any]:
        """report.json's ``stages.mesh``: ``built`` and the statistics."""
        return {"built": True, **self.stats}


@dataclass(frozen=True)
class MeshInputs:
    """What the mesh stage builds from.

    Attributes
    ----------
    cloud
        Fused points with colours and (preferably) normals, reconstruction coordinates.
    cameras
        Registered cameras by image name.
    images
        The ingested photos (their working copies give the texture, their masks the trim).
    """

    cloud: PointCloud
    cameras: Mapping[str, CameraPose]
    images: Sequence[ImageRecord] | IngestResult


@dataclass
class _View:
    """A registered photo: its camera and, when known, its files."""

    name: str
    cam: CameraPose
    record: ImageRecord | None
    colmap: pycolmap.Camera | None = None

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (COLMAP convention, distortion applied) and camera depth."""
        # einsum, not matmul: (N, 3) x (3, 3) through a threaded BLAS on busy cores took
        # 65 ms for 170k points against 5 ms here
        pc = np.einsum("ij,nj->ni", np.asarray(self.cam.R, np.float64), pts)
        pc += np.asarray(self.cam.t, np.float64)
        z = pc[:, 2]
        front = z > 1e-9
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(front, 1.0 / z, np.nan)
        x, y = pc[:, 0] * inv, pc[:, 1] * inv
        if self.colmap is None:
            k = np.asarray(self.cam.K, np.float64)
            xy = np.stack([k[0, 0] * x + k[0, 1] * y + k[0, 2], k[1, 1] * y + k[1, 2]], axis=1)
        else:
            xy = np.full((len(pts), 2), np.nan)
            if front.any():
                rays = np.stack([x[front], y[front], np.ones(int(front.sum()))], axis=1)
                xy[front] = np.asarray(self.colmap.img_from_cam(rays, False), np.float64)
        return xy, z


# --------------------------------------------------------------------------- public API


def run(
    inputs: MeshInputs,
    cfg: MeshConfig,
    out_dir: Path,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> MeshResult:
    """Build the product's web mesh from the fused dense cloud.

    Parameters
    ----------
    inputs
        The fused cloud, the registered cameras and the ingested photos (:class:`MeshInputs`).
    cfg
        Mesh settings.
    out_dir
        The stage's folder: scratch files (``out_dir/mesh_scratch``, removed afterwards) and
        the product's outline in each photo (``out_dir/product_masks``). The mesh itself is
        returned; the caller saves it (:func:`save_mesh`).
    progress
        Receives :class:`~engine.progress.ProgressEvent` objects (stage ``"mesh"``); the last
        one carries the finished :class:`~engine.types.Mesh` as ``partial``.
    cancel
        Checked between steps and between views.

    Returns
    -------
    MeshResult

    Raises
    ------
    ReconstructionError
        When the cloud is too small or no surface survives the trimming.
    Cancelled
        When ``cancel`` was cancelled.
    """
    cancel = cancel or CancelToken()
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    cloud, cameras, work_dir = inputs.cloud, inputs.cameras, out_dir
    records = _records(inputs.images)
    views = [_view(name, cam, records.get(name)) for name, cam in sorted(cameras.items())]
    total = 6 + (len(views) + 1 if cfg.texture_size > 0 else 0)
    step = 0

    def report(message: str, partial: Any = None) -> None:
        nonlocal step
        step += 1
        progress(ProgressEvent(STAGE, min(step, total), total, message, partial))
        cancel.raise_if_cancelled()

    if len(cloud) < MIN_POINTS:
        raise ReconstructionError(
            f"Only {len(cloud)} dense points: too few for a surface. " + NO_SURFACE_MESSAGE
        )
    stats: dict[str, Any] = {"points_in": len(cloud)}
    cancel.raise_if_cancelled()

    # 1. clean the cloud
    t = time.perf_counter()
    xyz = np.asarray(cloud.xyz, np.float64)
    rgb = np.asarray(cloud.rgb, np.uint8)
    finite = np.isfinite(xyz).all(axis=1)
    normals = None if cloud.normals is None else np.asarray(cloud.normals, np.float64)
    if normals is not None:
        usable = np.isfinite(normals).all(axis=1) & (np.linalg.norm(normals, axis=1) > 1e-9)
        if usable[finite].mean() < 0.9:  # a cloud saved without normals has zeros there
            normals = None
        else:
            finite &= usable
    xyz, rgb = xyz[finite], rgb[finite]
    normals = None if normals is None else normals[finite]
    masks = _load_masks(views, cancel)
    stats["masks"] = len(masks)
    aim = _aim([v.cam for v in views])
    # the support (floor, table, printed sheet) is cut with or without masks: masks that
    # failed on some photos leave it in the cloud
    floor = _find_floor(xyz, [v.cam for v in views])
    if floor is not None and floor.bare:
        why = _nothing_aimed_at([v.cam for v in views], aim, floor)
        if why:
            raise NoProductError(NOTHING_AIMED_MESSAGE.format(what=why))
        floor = None  # a flat product: nothing stands on the plane, the cameras aim at it
    own = {
        name: m
        for name, m in masks.items()
        if (rec := records.get(name)) is not None and rec.mask_source in OWN_MASK_SOURCES
    }
    if floor is not None and own:
        claimed = _masks_claim(xyz, floor, views, own, cancel)
        stats["support_in_own_masks"] = round(claimed, 3)
        if claimed >= FLOOR_IN_MASKS:
            logger.info(
                "mesh: the plane under the product lies inside your masks (%.0f%% of it): it "
                "is kept as part of the product",
                100 * claimed,
            )
            floor = None
    keep = np.ones(len(xyz), bool)
    if floor is not None:
        keep = np.einsum("nj,j->n", xyz, floor[0]) > floor[1]
    # what the mesh must cover: the cloud above the support, before the masks' verdict
    reference = xyz[keep]
    if floor is not None and masks:
        # the support is cut and the product is what the cameras aim at (see the trim): masks
        # that failed on some photos would only eat into it
        logger.info("mesh: support found; masks are not used to trim the surface")
        masks_trim: Mapping[str, np.ndarray] = {}
    else:
        masks_trim = masks
    if masks_trim:
        keep &= _hull_keep(xyz, views, masks_trim, cfg.trim_min_views, cancel)
    stats["floor_cut"] = floor is not None
    if floor is not None:
        stats["support"] = floor.to_report()
    # stray points left by the cuts would stretch Poisson's octree and coarsen the surface
    keep[keep] = _not_isolated(xyz[keep])
    xyz, rgb = xyz[keep], rgb[keep]
    normals = None if normals is None else normals[keep]
    if len(xyz) < MIN_POINTS:
        raise ReconstructionError(
            f"Only {len(xyz)} dense points lie inside the product's outline in the photos. "
            "The masks may be wrong: check them in the mask inspector, or turn masks off. "
            + NO_SURFACE_MESSAGE
        )
    if normals is None:
        normals = _estimate_normals(xyz, views, cancel)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    stats["points_used"] = len(xyz)
    tree = cKDTree(xyz)
    spacing = _point_spacing(tree, xyz)
    seconds["prepare"] = time.perf_counter() - t
    report(f"Cleaned the cloud: {len(xyz):,} points")

    scratch = Path(work_dir) / "mesh_scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        # 2. Poisson, 3. trim: again on the product's neighbourhood when what else was fused
        # (a room's wall behind the product) stretched the octree over the scene
        selection: np.ndarray | None = None
        first: tuple[np.ndarray, np.ndarray] | None = None
        for refit in (False, True):
            t = time.perf_counter()
            sel = slice(None) if selection is None else selection
            vertices, faces, cell = _poisson(
                xyz[sel], normals[sel], rgb[sel], cfg.poisson_depth, scratch, cancel
            )
            stats["poisson_vertices"], stats["poisson_faces"] = len(vertices), len(faces)
            seconds["poisson"] = seconds.get("poisson", 0.0) + time.perf_counter() - t
            if not refit:
                report(f"Surface: {len(faces):,} triangles")

            t = time.perf_counter()
            dist, _ = tree.query(vertices, k=1, workers=-1)
            bad_density = dist > max(DENSITY_SPACINGS * spacing, DENSITY_CELLS * cell)
            bad_density &= ~_pinholes(faces, bad_density)
            bad = bad_density.copy()
            if masks_trim:
                bad |= ~_hull_keep(vertices, views, masks_trim, cfg.trim_min_views, cancel)
            if floor is not None:
                bad |= np.einsum("nj,j->n", vertices, floor[0]) <= floor[1]
            stats["trimmed_density"] = int(bad_density.sum())
            stats["trimmed_hull"] = int((bad & ~bad_density).sum())
            faces = faces[~bad[faces].any(axis=1)]
            faces, n_comp, n_kept = _product_components(vertices, faces, aim, xyz[sel])
            vertices, faces = _compact(vertices, faces)
            seconds["trim"] = seconds.get("trim", 0.0) + time.perf_counter() - t
            if first is not None and len(faces) == 0:  # never worse than the first surface
                logger.warning("mesh: the product's surface made again was empty; kept the first")
                vertices, faces = first
                break
            stats.update(components=n_comp, components_kept=n_kept, faces_trimmed=len(faces))
            if len(faces) == 0:
                raise ReconstructionError(NO_SURFACE_MESSAGE)
            if refit or (selection := _product_neighbourhood(xyz, vertices)) is None:
                break
            first = (vertices, faces)
            stats["refit_points"] = int(selection.sum())
            logger.info(
                "mesh: the product spans a small part of the fused scene; its surface is "
                "made again from the %d points around it",
                int(selection.sum()),
            )
        why = _nothing_aimed_at([v.cam for v in views], aim, floor, vertices)
        if why:
            raise NoProductError(NOTHING_AIMED_MESSAGE.format(what=why))
        report(f"Trimmed to the product: {len(faces):,} triangles")

        # 4. decimate
        t = time.perf_counter()
        if len(faces) > cfg.max_triangles:
            vertices, faces = _decimate(vertices, faces, cfg.max_triangles, scratch, cancel)
        vertices, faces = _clean(vertices, faces)
        if len(faces) == 0:
            raise ReconstructionError(NO_SURFACE_MESSAGE)
        seconds["decimate"] = time.perf_counter() - t
        report(f"Decimated to {len(faces):,} triangles")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    # 4b. the product seen from every photo: the mesh's silhouette, against the photo's mask
    t = time.perf_counter()
    silhouettes = _silhouettes(vertices, faces, views, cancel)
    stats.update(_mask_agreement(silhouettes, masks, Path(work_dir) / PRODUCT_MASK_DIR))
    seconds["silhouettes"] = time.perf_counter() - t

    # 5. vertex colours
    t = time.perf_counter()
    colours = _vertex_colours(tree, rgb, vertices)
    seconds["colours"] = time.perf_counter() - t
    report("Coloured the vertices")

    # 6. texture
    mesh = Mesh(vertices, faces.astype(np.int32), colours)
    stats["textured"] = False
    if cfg.texture_size > 0:
        t = time.perf_counter()
        usable = [v for v in views if v.record is not None and Path(v.record.working_path).exists()]
        if usable:
            mesh, tex_stats = _texture(mesh, usable, masks, cfg.texture_size, report, cancel)
            stats.update(tex_stats)
            stats["textured"] = True
        else:
            logger.warning("mesh: no photo is readable; vertex colours only")
        seconds["texture"] = time.perf_counter() - t
    stats.update(triangles=mesh.num_triangles, vertices=len(mesh))
    stats["completeness"], stats["completeness_points"] = _completeness(
        np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64), reference
    )
    if stats["completeness"] < MIN_COMPLETENESS:
        logger.warning(
            "mesh: it covers only %.0f%% of the product's dense points (within %.0f%% of its "
            "size): part of the surface the photos support was trimmed away",
            100 * stats["completeness"],
            100 * COMPLETENESS_TOLERANCE,
        )
    seconds["total"] = time.perf_counter() - t_start
    stats["seconds"] = seconds["total"]
    stats.update({f"seconds_{k}": round(v, 3) for k, v in seconds.items() if k != "total"})
    step = total - 1
    report(f"Mesh ready: {mesh.num_triangles:,} triangles", mesh)
    logger.info(
        "mesh: %d triangles, %d vertices, textured=%s, %.1f s",
        mesh.num_triangles,
        len(mesh),
        stats["textured"],
        seconds["total"],
    )
    return MeshResult(mesh, stats)


def save_mesh(path: str | Path, mesh: Mesh) -> Path:
    """Save ``mesh`` as a compressed ``.npz`` (atomically).

    Parameters
    ----------
    path
        Output file (usually ``work_dir / MESH_FILE``); its folder is created.
    mesh
        The mesh.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        When the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "vertices": np.asarray(mesh.vertices, np.float64),
        "faces": np.asarray(mesh.faces, np.int32),
    }
    for name in ("vertex_colors", "uv", "texture"):
        value = getattr(mesh, name)
        if value is not None:
            arrays[name] = np.asarray(value)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_bytes_atomic(path, buf.getvalue())


def load_mesh(path: str | Path) -> Mesh:
    """Read a mesh written by :func:`save_mesh`.

    Raises
    ------
    InputError
        When the file is missing or is not a saved mesh.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            parts = {k: z[k] for k in z.files}
    except FileNotFoundError as exc:
        raise InputError(
            f"The mesh file {path.name} is missing in {path.parent}; run the mesh stage again."
        ) from exc
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(
            f"The mesh file {path.name} in {path.parent} is damaged ({exc}); "
            "delete it and run the mesh stage again."
        ) from exc
    if "vertices" not in parts or "faces" not in parts:
        raise InputError(
            f"{path.name} in {path.parent} is not a Vitrine mesh; delete it and "
            "run the mesh stage again."
        )
    return Mesh(
        parts["vertices"].astype(np.float64),
        parts["faces"].astype(np.int32),
        parts["vertex_colors"].astype(np.uint8) if "vertex_colors" in parts else None,
        parts["uv"].astype(np.float32) if "uv" in parts else None,
        parts["texture"].astype(np.uint8) if "texture" in parts else None,
    )


# --------------------------------------------------------------------------- views and masks


def _records(images: Sequence[ImageRecord] | IngestResult) -> dict[str, ImageRecord]:
    items = images.images if isinstance(images, IngestResult) else images
    return {r.name: r for r in items}


def _view(name: str, cam: CameraPose, record: ImageRecord | None) -> _View:
    colmap = None
    if cam.model not in ("SIMPLE_PINHOLE", "PINHOLE") and cam.params:
        colmap = pycolmap.Camera.create_from_model_name(
            0, cam.model, float(cam.K[0, 0]), int(cam.width), int(cam.height)
        )
        colmap.params = list(cam.params)
    return _View(name, cam, record, colmap)


def _test_scale(cam: CameraPose) -> float:
    return min(1.0, TEST_MAX_SIZE / max(cam.width, cam.height))


def _load_masks(views: Sequence[_View], cancel: CancelToken) -> dict[str, np.ndarray]:
    """Dilated product masks at test scale, by view name (views without a mask left out)."""
    masks = {}
    for v in views:
        cancel.raise_if_cancelled()
        if v.record is None or v.record.mask_path is None:
            continue
        path = Path(v.record.mask_path)
        if not path.exists():
            logger.warning("mesh: mask %s is missing; %s is not used to trim", path.name, v.name)
            continue
        s = _test_scale(v.cam)
        w, h = max(1, round(v.cam.width * s)), max(1, round(v.cam.height * s))
        m = read_mask(path)
        if m.shape != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
        m = (m > 127).astype(np.uint8)
        r = max(1, round(MASK_TOLERANCE * math.hypot(w, h)))
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        masks[v.name] = m.astype(bool)
    return masks


def _hull_keep(
    pts: np.ndarray,
    views: Sequence[_View],
    masks: Mapping[str, np.ndarray],
    min_fraction: float,
    cancel: CancelToken,
) -> np.ndarray:
    """Points inside the masks of at least ``min_fraction`` of the views that see them.

    A view sees a point when it falls in its frame and no nearer point covers it (a coarse
    z-buffer of the points themselves): the floor behind the product lies inside the product's
    silhouette but is hidden, so only the views that show it outside the silhouette count.
    """
    seen = np.zeros(len(pts), np.int32)
    inside = np.zeros(len(pts), np.int32)
    for v in views:
        mask = masks.get(v.name)
        if mask is None:
            continue
        cancel.raise_if_cancelled()
        xy, z = v.project(pts)
        idx = np.nonzero(_splat_visible(xy, z, v.cam))[0]
        s = _test_scale(v.cam)
        h, w = mask.shape
        px = np.clip(np.floor(xy[idx, 0] * s), 0, w - 1).astype(np.intp)
        py = np.clip(np.floor(xy[idx, 1] * s), 0, h - 1).astype(np.intp)
        seen[idx] += 1
        inside[idx] += mask[py, px]
    return (seen == 0) | (inside >= min_fraction * seen - 1e-9)


def _splat_visible(
    xy: np.ndarray, z: np.ndarray, cam: CameraPose, size: int = SPLAT_GRID
) -> np.ndarray:
    """Points in the frame and nearest to the camera (within tolerance) in their grid cell."""
    s = size / max(cam.width, cam.height)
    w, h = max(1, math.ceil(cam.width * s)), max(1, math.ceil(cam.height * s))
    with np.errstate(invalid="ignore"):
        px, py = np.floor(xy[:, 0] * s), np.floor(xy[:, 1] * s)
        ok = (z > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    idx = np.nonzero(ok)[0]
    pix = py[idx].astype(np.int64) * w + px[idx].astype(np.int64)
    zbuf = np.full(w * h, np.inf)
    np.minimum.at(zbuf, pix, z[idx])
    visible = np.zeros(len(xy), bool)
    visible[idx] = z[idx] <= zbuf[pix] * (1 + SPLAT_DEPTH_TOLERANCE)
    return visible


# --------------------------------------------------------------------------- cloud helpers


class Support(NamedTuple):
    """A plane the product stands on: points at ``p @ normal <= height`` belong to it."""

    normal: np.ndarray
    height: float
    #: nothing stands on it (too few points above): the whole cloud is that plane
    bare: bool = False
    #: the plane's own level (``p @ normal``), below ``height`` by its noise band
    level: float = 0.0

    def to_report(self) -> dict[str, Any]:
        """JSON-ready: the normal (the product's up) and the level its base stands at."""
        return {"normal": [round(float(v), 6) for v in self.normal], "level": float(self.level)}


def _find_floor(xyz: np.ndarray, cams: Sequence[CameraPose]) -> Support | None:
    """The support under the product (floor, table, turntable, printed sheet), if fused.

    A plane found by RANSAC among the cloud's points, its normal within
    :data:`FLOOR_MAX_TILT_DEG` of the cameras' up (:func:`engine.geometry.up_direction`; the
    support may be tilted against it, a table against a camera held askew), holding at least
    :data:`FLOOR_MIN_FRACTION` of the points, with the cameras on its upper side, hardly any
    point under it (:func:`_under_share`; the floor beyond a table's edge may lie lower), and
    reaching :data:`FLOOR_MIN_REACH` times wider than what stands on it (a
    product's own flat base or top is not a support; half of each, around the middle of what
    stands on it). Returns the :class:`Support`: points at ``p @ normal <= height`` belong to
    it (its thickness of noise included). A plane with hardly anything above it comes back
    ``bare``: a flat product, or only the surface the product stood on (see
    :func:`_nothing_aimed_at`).
    """
    if len(xyz) < MIN_POINTS or not cams:
        return None
    up = up_direction(cams)
    rng = np.random.default_rng(_SEED)
    sample = xyz if len(xyz) <= 20_000 else xyz[rng.choice(len(xyz), 20_000, replace=False)]
    d, _ = cKDTree(sample).query(sample, k=2, workers=-1)
    spacing = max(float(np.median(d[:, 1])), 1e-9)
    extent = float(np.ptp(sample @ up))
    tol = max(3.0 * spacing, FLOOR_TOLERANCE * extent)
    size = float(
        np.linalg.norm(np.percentile(sample, 98, axis=0) - np.percentile(sample, 2, axis=0))
    )
    reach = max(3.0 * spacing, FLOOR_UNDER_REACH * size)
    centres = np.array([c.center for c in cams], np.float64)
    cos_tilt = math.cos(math.radians(FLOOR_MAX_TILT_DEG))
    best: tuple[int, np.ndarray, float] | None = None
    for _ in range(FLOOR_RANSAC_TRIALS):
        p = sample[rng.choice(len(sample), 3, replace=False)]
        n = np.cross(p[1] - p[0], p[2] - p[0])
        norm = float(np.linalg.norm(n))
        if norm < 1e-12:
            continue
        n /= norm
        if n @ up < 0:
            n = -n
        if n @ up < cos_tilt:
            continue
        h = sample @ n - float(p[0] @ n)
        on = np.abs(h) <= tol
        inliers = int(on.sum())
        if best is not None and inliers <= best[0]:
            continue
        # the support carries the product: the cameras above it, hardly anything under it
        if np.mean(centres @ n - p[0] @ n > 0) < 0.8:
            continue
        if _under_share(sample, h, n, on, tol, reach) > FLOOR_MAX_BELOW:
            continue
        best = (inliers, n, float(p[0] @ n))
    if best is None or best[0] < FLOOR_MIN_FRACTION * len(sample):
        return None
    _, n, level = best
    # least squares on the inliers, then the cut just above the support's noise
    for _ in range(2):
        on = sample[np.abs(sample @ n - level) <= tol]
        centre = on.mean(axis=0)
        n = np.linalg.svd(on - centre, full_matrices=False)[2][-1]
        n = n if n @ up > 0 else -n
        level = float(centre @ n)
    h = xyz @ n - level
    slab = np.abs(h) <= tol
    above = h > tol
    if above.sum() < MIN_POINTS:
        return Support(n, level + 3 * spacing, bare=True, level=level)
    flat = xyz - np.outer(h, n)
    mid = np.median(flat[above], axis=0)
    # medians: clutter at the edges of the scene (kitchen_lego) widens what stands on the
    # support far less than the product sitting in the middle narrows it
    reach_above = np.median(np.linalg.norm(flat[above] - mid, axis=1))
    reach_slab = np.median(np.linalg.norm(flat[slab] - mid, axis=1))
    if reach_slab < FLOOR_MIN_REACH * reach_above:
        return None
    noise = float(np.std(h[slab]))
    return Support(n, level + max(3 * spacing, 3 * noise), level=level)


def _under_share(
    xyz: np.ndarray, h: np.ndarray, n: np.ndarray, on: np.ndarray, tol: float, reach: float
) -> float:
    """The share of ``xyz`` below a plane and under its footprint.

    Below: ``h < -tol``; under: within ``reach`` of one of the plane's points (``on``) across
    the plane.
    """
    below = h < -tol
    if not below.any() or not on.any():
        return 0.0
    e1 = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    across = xyz @ np.c_[e1, e2]
    d, _ = cKDTree(across[on]).query(across[below], k=1, distance_upper_bound=reach, workers=-1)
    return float(np.isfinite(d).sum()) / len(xyz)


def _masks_claim(
    xyz: np.ndarray,
    support: Support,
    views: Sequence[_View],
    masks: Mapping[str, np.ndarray],
    cancel: CancelToken,
) -> float:
    """The share of the support's points that the masks hold (see :func:`_hull_keep`).

    Near 1 when the masks draw the plane as the product's (a model's base plate), near 0 when
    they leave it out as the floor it is.
    """
    h = xyz @ support.normal
    on = xyz[(h <= support.height) & (h >= 2 * support.level - support.height)]
    if len(on) > 20_000:
        on = on[np.random.default_rng(_SEED).choice(len(on), 20_000, replace=False)]
    if not len(on):
        return 0.0
    return float(_hull_keep(on, views, masks, 0.5, cancel).mean())


def _nothing_aimed_at(
    cams: Sequence[CameraPose],
    aim: np.ndarray | None,
    support: Support | None,
    product: np.ndarray | None = None,
) -> str:
    """Why the product was not reconstructed where the cameras aim, or "" when it was.

    ``support`` is the plane found in the cloud; ``product`` the points kept as the product
    (None before the surface is built). Two cases: a bare support (nothing stands on it) with
    the aim above it, and a product whose extent the aim lies outside (only background was
    kept). Either by more than :data:`NOTHING_AIMED` of the cameras' median distance to the
    aim. A flat product (the aim on the plane) passes. Cameras that converge on nothing
    (``aim`` None) give no verdict.
    """
    if aim is None or not cams:
        return ""
    reach = float(np.median([np.linalg.norm(np.asarray(c.center) - aim) for c in cams]))
    if reach <= 0:
        return ""
    if support is not None and support.bare:
        above = float(aim @ support.normal - support.height)
        if above > NOTHING_AIMED * reach:
            return (
                "only the surface the product stood on (a floor, table or sheet) was "
                f"reconstructed; the photos aim {above / reach:.0%} of their distance above it"
            )
    if product is not None and len(product):
        up = support.normal if support is not None else up_direction(cams)
        e1 = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
        e1 /= np.linalg.norm(e1)
        axes = np.stack([e1, np.cross(up, e1), up])
        local, at = product @ axes.T, axes @ aim
        outside = np.maximum(0.0, np.maximum(local.min(0) - at, at - local.max(0)))
        gap = float(np.linalg.norm(outside))
        if gap > NOTHING_AIMED * reach:
            return (
                "what was kept lies away from where the photos aim "
                f"({gap / reach:.0%} of their distance), so it is background"
            )
    return ""


def _silhouettes(
    vertices: np.ndarray, faces: np.ndarray, views: Sequence[_View], cancel: CancelToken
) -> dict[str, np.ndarray]:
    """The mesh's silhouette in every view, at test scale (bool, H x W).

    The product isolated in 3D, projected into each photo: its mask from the geometry, whatever
    the photo's backdrop. Small holes of the open mesh are closed.
    """
    out = {}
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    for v in views:
        cancel.raise_if_cancelled()
        s = _test_scale(v.cam)
        w, h = max(1, round(v.cam.width * s)), max(1, round(v.cam.height * s))
        xy, z = v.project(vertices)
        covered = _coverage(xy * s, z, faces, w, h).astype(np.uint8)
        out[v.name] = cv2.morphologyEx(covered, cv2.MORPH_CLOSE, kernel) > 0
    return out


def _mask_agreement(
    silhouettes: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], folder: Path
) -> dict[str, Any]:
    """Write the product's silhouettes as masks and compare them with the photos' masks.

    ``folder/<photo>.png`` (0 / 255 at test scale) holds each silhouette. Returns stats: how
    many were written, the median IoU with the photos' own masks, and the photos whose mask
    disagrees with the product in 3D (IoU under :data:`MIN_MASK_AGREEMENT`), by name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ious = {}
    for name, sil in silhouettes.items():
        target = folder / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), np.where(sil, 255, 0).astype(np.uint8))
        mask = masks.get(name)
        if mask is None:
            continue
        m = (
            mask > 0
            if mask.shape == sil.shape
            else cv2.resize(mask.astype(np.uint8), sil.shape[::-1], interpolation=cv2.INTER_NEAREST)
            > 0
        )
        union = int((m | sil).sum())
        ious[name] = float((m & sil).sum()) / union if union else 1.0
    disagree = sorted(n for n, v in ious.items() if v < MIN_MASK_AGREEMENT)
    if disagree:
        logger.warning(
            "mesh: the masks of %d photos disagree with the product found in 3D (%s)",
            len(disagree),
            named(disagree),
        )
    return {
        "product_masks": len(silhouettes),
        "mask_iou_median": round(float(np.median(list(ious.values()))), 4) if ious else None,
        "masks_disagreeing": disagree,
    }


def _completeness(vertices: np.ndarray, faces: np.ndarray, xyz: np.ndarray) -> tuple[float, int]:
    """Share of the product's dense points the mesh covers, and how many points that is.

    The product's points are the cloud's points (above the support, whatever the masks say)
    inside the mesh's bounding box (grown by
    :data:`COMPLETENESS_TOLERANCE` of its diagonal); one is covered when the mesh's surface
    (sampled densely) passes within that tolerance of it. A mesh that trimming ate into leaves
    points of the product uncovered.
    """
    if len(faces) == 0 or len(xyz) == 0:
        return 0.0, 0
    diagonal = float(np.linalg.norm(np.ptp(vertices, axis=0)))
    tol = COMPLETENESS_TOLERANCE * diagonal
    lo, hi = vertices.min(axis=0) - tol, vertices.max(axis=0) + tol
    points = xyz[np.all((xyz >= lo) & (xyz <= hi), axis=1)]
    if len(points) == 0:
        return 0.0, 0
    rng = np.random.default_rng(_SEED)
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    pick = rng.choice(len(faces), COMPLETENESS_SAMPLES, p=area / area.sum())
    r1, r2 = rng.random((2, COMPLETENESS_SAMPLES, 1))
    s1 = np.sqrt(r1)
    samples = (1 - s1) * tri[pick, 0] + s1 * (1 - r2) * tri[pick, 1] + s1 * r2 * tri[pick, 2]
    d, _ = cKDTree(np.concatenate([vertices, samples])).query(points, k=1, workers=-1)
    return round(float(np.mean(d <= tol)), 4), int(len(points))


def _aim(cams: Sequence[CameraPose]) -> np.ndarray | None:
    """Where the cameras aim: their optical axes' meeting point.

    None when that point is not in front of most of them (parallel axes: nothing to converge
    on).
    """
    if len(cams) < 2:
        return None
    aim = axes_meeting_point(cams)
    depth = [float(np.asarray(c.R, np.float64)[2] @ (aim - c.center)) for c in cams]
    return aim if np.mean(np.asarray(depth) > 0) > 0.5 else None


def _not_isolated(xyz: np.ndarray) -> np.ndarray:
    """Points whose :data:`ISOLATED_NEIGHBOURS`-th neighbour is not far beyond the usual."""
    if len(xyz) <= ISOLATED_NEIGHBOURS:
        return np.ones(len(xyz), bool)
    d, _ = cKDTree(xyz).query(xyz, k=ISOLATED_NEIGHBOURS + 1, workers=-1)
    far = d[:, -1]
    return far <= ISOLATED_FACTOR * float(np.median(far))


def _point_spacing(tree: cKDTree, xyz: np.ndarray) -> float:
    """Median distance from a point to its nearest neighbour (on a sample)."""
    rng = np.random.default_rng(_SEED)
    sample = xyz if len(xyz) <= 20_000 else xyz[rng.choice(len(xyz), 20_000, replace=False)]
    d, _ = tree.query(sample, k=2, workers=-1)
    spacing = float(np.median(d[:, 1]))
    return spacing if spacing > 0 else float(np.ptp(xyz, axis=0).max()) * 1e-3


def _estimate_normals(xyz: np.ndarray, views: Sequence[_View], cancel: CancelToken) -> np.ndarray:
    """PCA normals oriented towards the cameras that see each point."""
    tree = cKDTree(xyz)
    k = min(NORMAL_NEIGHBOURS, len(xyz))
    _, nb = tree.query(xyz, k=k, workers=-1)
    normals = np.empty_like(xyz)
    for lo in range(0, len(xyz), 200_000):
        cancel.raise_if_cancelled()
        p = xyz[nb[lo : lo + 200_000]]
        p = p - p.mean(axis=1, keepdims=True)
        cov = np.einsum("nki,nkj->nij", p, p)
        _, vec = np.linalg.eigh(cov)
        normals[lo : lo + 200_000] = vec[:, :, 0]
    towards = np.zeros_like(xyz)
    for v in views:
        cancel.raise_if_cancelled()
        xy, z = v.project(xyz)
        visible = _splat_visible(xy, z, v.cam)
        d = v.cam.center[None, :] - xyz[visible]
        towards[visible] += d / np.linalg.norm(d, axis=1, keepdims=True)
    flip = np.sum(normals * towards, axis=1) < 0
    normals[flip] *= -1
    return normals


def _vertex_colours(tree: cKDTree, rgb: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    k = min(COLOUR_NEIGHBOURS, tree.n)
    d, idx = tree.query(vertices, k=k, workers=-1)
    d, idx = d.reshape(len(vertices), k), idx.reshape(len(vertices), k)
    w = 1.0 / np.maximum(d, 1e-12)
    w /= w.sum(axis=1, keepdims=True)
    col = np.einsum("nk,nkc->nc", w, rgb[idx].astype(np.float64))
    return np.clip(np.rint(col), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- surface


def _poisson(
    xyz: np.ndarray,
    normals: np.ndarray,
    rgb: np.ndarray,
    depth: int,
    scratch: Path,
    cancel: CancelToken,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Screened Poisson surface; returns vertices, faces and the octree's finest cell size."""
    if len(xyz) > POISSON_MAX_POINTS:
        xyz, normals, rgb = _voxel_average(xyz, normals, rgb, POISSON_MAX_POINTS)
    src, dst = scratch / "points.ply", scratch / "poisson.ply"
    write_ply(src, PointCloud(xyz.astype(np.float32), rgb, normals.astype(np.float32)))
    try:
        isolated.poisson_meshing(src, dst, int(depth), cancel=cancel)
    except RuntimeError as exc:
        raise ReconstructionError(
            f"The surface reconstruction failed ({exc}). " + NO_SURFACE_MESSAGE
        ) from exc
    if not dst.exists():
        raise ReconstructionError(NO_SURFACE_MESSAGE)
    vertices, faces = _read_ply_mesh(dst)
    if len(faces) == 0:
        raise ReconstructionError(NO_SURFACE_MESSAGE)
    # PoissonRecon's octree spans the points' bounding cube grown by 10%
    cell = float(np.ptp(xyz, axis=0).max()) * 1.1 / 2 ** int(depth)
    return vertices, faces, cell


def _voxel_average(
    xyz: np.ndarray, normals: np.ndarray, rgb: np.ndarray, target: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average points per voxel, the voxel chosen so that about ``target`` points remain."""
    extent = np.ptp(xyz, axis=0)
    area = 2 * (extent[0] * extent[1] + extent[1] * extent[2] + extent[0] * extent[2])
    voxel = math.sqrt(max(area, 1e-18) / target)
    for _ in range(8):
        cells = np.floor((xyz - xyz.min(axis=0)) / voxel).astype(np.int64)
        dims = cells.max(axis=0) + 1
        keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
        _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
        if len(counts) <= target * 1.2:
            break
        voxel *= 1.3
    inv = inv.ravel()
    n = len(counts)

    def mean(a: np.ndarray) -> np.ndarray:
        cols = [np.bincount(inv, weights=a[:, k], minlength=n) for k in range(a.shape[1])]
        return np.stack(cols, axis=1) / counts[:, None]

    nrm = mean(normals)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    return mean(xyz), nrm, np.clip(np.rint(mean(rgb.astype(np.float64))), 0, 255).astype(np.uint8)


def _read_ply_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of a binary little-endian PLY mesh (what COLMAP writes)."""
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise ReconstructionError(f"The surface file {path.name} is malformed.")
    header = data[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ReconstructionError(f"The surface file {path.name} has an unexpected format.")
    elements: list[tuple[str, int, list[list[str]]]] = []
    for line in header:
        parts = line.split()
        if parts[:1] == ["element"]:
            elements.append((parts[1], int(parts[2]), []))
        elif parts[:1] == ["property"] and elements:
            elements[-1][2].append(parts[1:])
    offset = end + len(b"end_header\n")
    vertices = np.zeros((0, 3))
    faces = np.zeros((0, 3), np.int64)
    for name, count, props in elements:
        if name == "vertex":
            dtype = np.dtype([(p[-1], "<" + PLY_TYPES[p[0]]) for p in props])
            arr = np.frombuffer(data, dtype, count, offset)
            offset += dtype.itemsize * count
            vertices = np.stack([arr["x"], arr["y"], arr["z"]], axis=1).astype(np.float64)
        elif name == "face":
            if len(props) != 1 or props[0][0] != "list":
                raise ReconstructionError(f"The surface file {path.name} has odd faces.")
            ctype, itype = PLY_TYPES[props[0][1]], PLY_TYPES[props[0][2]]
            dtype = np.dtype([("n", "<" + ctype), ("i", "<" + itype, (3,))])
            if count and int(np.frombuffer(data, "<" + ctype, 1, offset)[0]) != 3:
                raise ReconstructionError(f"The surface file {path.name} is not triangles.")
            arr = np.frombuffer(data, dtype, count, offset)
            if count and not np.all(arr["n"] == 3):
                raise ReconstructionError(f"The surface file {path.name} is not triangles.")
            offset += dtype.itemsize * count
            faces = arr["i"].astype(np.int64)
        else:
            raise ReconstructionError(f"The surface file {path.name} has an unexpected {name}.")
    return vertices, faces


def _write_ply_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    head = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    tri = np.zeros(len(faces), np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
    tri["n"] = 3
    tri["i"] = faces
    with open(path, "wb") as fh:
        fh.write(head.encode("ascii"))
        fh.write(np.ascontiguousarray(vertices, "<f4").tobytes())
        fh.write(tri.tobytes())


def _product_components(
    vertices: np.ndarray,
    faces: np.ndarray,
    aim: np.ndarray | None,
    xyz: np.ndarray | None = None,
) -> tuple[np.ndarray, int, int]:
    """Faces of the product's connected components: the one aimed at, and parts close to it.

    Components under :data:`MIN_COMPONENT_FRACTION` of the largest one's faces are crumbs.
    Of the rest, the product is the one nearest ``aim`` (where the cameras' optical axes meet;
    the largest when None), and another stays when it lies within :data:`PART_GAP` of the
    product's size from it (a handle cut off by a hole). Background the photos happened to
    show (a bookshelf behind a toy on a desk) lies further and goes, however large. A smaller
    component within :data:`PART_GAP` stays too when it alone covers
    :data:`MIN_PART_POINTS` of the dense points ``xyz`` (the cloud the surface was made from):
    the fused cloud supports it, so it is a part of the product the trimming cut off.
    Returns the kept faces, the components present and the components kept.
    """
    if len(faces) == 0:
        return faces, 0, 0
    n_vertices = len(vertices)
    a = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    b = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    n, labels = _linked(n_vertices, a, b)
    face_label = labels[faces[:, 0]]
    counts = np.bincount(face_label, minlength=n)
    present = int((counts > 0).sum())
    candidates = np.nonzero(counts >= MIN_COMPONENT_FRACTION * counts.max())[0]
    if len(candidates) == 1 or aim is None:
        main = int(candidates[np.argmax(counts[candidates])])
    else:
        gaps = []
        for c in candidates:
            pts = vertices[np.unique(faces[face_label == c])]
            gaps.append(float(np.min(np.linalg.norm(pts - aim, axis=1))))
        main = int(candidates[int(np.argmin(gaps))])
    main_pts = vertices[np.unique(faces[face_label == main])]
    tree = cKDTree(main_pts)
    reach = PART_GAP * float(np.linalg.norm(np.ptp(main_pts, axis=0)))
    keep = np.zeros(n, bool)
    keep[main] = True
    for c in candidates:
        if c != main:
            pts = vertices[np.unique(faces[face_label == c])]
            keep[c] = float(tree.query(pts, k=1)[0].min()) <= reach
    small = np.nonzero((counts > 0) & (counts < MIN_COMPONENT_FRACTION * counts.max()))[0]
    if xyz is not None and len(xyz) and len(small):
        tol = COMPLETENESS_TOLERANCE * float(np.linalg.norm(np.ptp(main_pts, axis=0)))
        kept_pts = vertices[np.unique(faces[keep[face_label]])]
        uncovered = xyz[cKDTree(kept_pts).query(xyz, k=1, distance_upper_bound=tol)[0] > tol]
        need = MIN_PART_POINTS * len(xyz)
        for c in small[np.argsort(-counts[small])]:
            if len(uncovered) < need:
                break
            pts = vertices[np.unique(faces[face_label == c])]
            if float(tree.query(pts, k=1)[0].min()) > reach:
                continue
            near = cKDTree(pts).query(uncovered, k=1, distance_upper_bound=tol)[0] <= tol
            if near.sum() >= need:
                keep[c] = True
                uncovered = uncovered[~near]
    return faces[keep[face_label]], present, int(keep.sum())


def _linked(n: int, a: np.ndarray, b: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected groups of ``n`` items joined by the links ``a[i] - b[i]``: count and labels."""
    graph = coo_matrix((np.ones(len(a), np.float32), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)


def _pinholes(faces: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Vertices of ``bad`` patches too small to be trimmed: pinholes in the cloud's coverage.

    A patch is a connected group of unsupported vertices; it is a pinhole when it holds at most
    :data:`PINHOLE_SHARE` of the surface's vertices. Poisson bridges such gaps (a busy label's
    patchy matches, a few views short of a ring) as the surface they lie on; cutting them
    out left the product riddled with holes once the octree was fine. What is trimmed for
    real is large: the balloon over an open bottom, a sheet of surface over the background.
    """
    if not bad.any():
        return np.zeros_like(bad)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = e[bad[e[:, 0]] & bad[e[:, 1]]]
    n = len(bad)
    _, labels = _linked(n, e[:, 0], e[:, 1])
    sizes = np.bincount(labels[bad], minlength=labels.max() + 1)
    return bad & (sizes[labels] <= max(1, PINHOLE_SHARE * n))


def _product_neighbourhood(xyz: np.ndarray, product: np.ndarray) -> np.ndarray | None:
    """The cloud's points around the product's surface, when the cloud spans far more.

    Poisson's octree spans the whole cloud: with a room's wall fused behind a small product
    its finest cells are several times coarser on the product than they would be on the
    product alone. When the product (``product``: its kept vertices) spans less than
    :data:`REFIT_SHARE` of the cloud, returns the points inside its box grown by twice
    :data:`PART_GAP` of its diagonal (its parts stay inside); else None.
    """
    lo, hi = product.min(axis=0), product.max(axis=0)
    if float(np.max(hi - lo)) >= REFIT_SHARE * float(np.ptp(xyz, axis=0).max()):
        return None
    margin = 2 * PART_GAP * float(np.linalg.norm(hi - lo))
    inside = np.all((xyz >= lo - margin) & (xyz <= hi + margin), axis=1)
    return inside if inside.sum() >= MIN_POINTS else None


def _compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used, inverse = np.unique(faces.ravel(), return_inverse=True)
    return vertices[used], inverse.reshape(-1, 3).astype(np.int64)


def _clean(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop degenerate faces (repeated or coincident corners) and unused vertices."""
    f = faces
    ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    f = f[ok]
    cross = np.cross(vertices[f[:, 1]] - vertices[f[:, 0]], vertices[f[:, 2]] - vertices[f[:, 0]])
    f = f[np.linalg.norm(cross, axis=1) > 0]
    if len(f) == 0:
        return vertices[:0], f
    return _compact(vertices, f)


def _decimate(
    vertices: np.ndarray, faces: np.ndarray, budget: int, scratch: Path, cancel: CancelToken
) -> tuple[np.ndarray, np.ndarray]:
    """Quadric edge-collapse decimation to at most ``budget`` faces."""
    src, dst = scratch / "trimmed.ply", scratch / "decimated.ply"
    for _ in range(3):
        if len(faces) <= budget:
            break
        _write_ply_mesh(src, vertices, faces)
        # a hair under the budget: the collapse stops at or just above its target
        ratio = min(1.0, 0.995 * budget / len(faces))
        try:
            isolated.simplify_mesh(src, dst, ratio, cancel=cancel)
        except RuntimeError as exc:
            raise ReconstructionError(f"Simplifying the mesh failed ({exc}).") from exc
        vertices, faces = _read_ply_mesh(dst)
    if len(faces) > budget:  # never seen; a safe last resort
        faces = faces[np.random.default_rng(_SEED).choice(len(faces), budget, replace=False)]
        vertices, faces = _compact(vertices, faces)
    return vertices, faces


# --------------------------------------------------------------------------- texture


def _face_neighbours(faces: np.ndarray) -> np.ndarray:
    """(M, 3) the face across each edge (edge k joins corners k and k+1), -1 on boundaries."""
    m = len(faces)
    a = faces.ravel()
    b = faces[:, [1, 2, 0]].ravel()
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo.astype(np.int64) * (int(faces.max()) + 1) + hi
    order = np.argsort(key, kind="stable")
    ks = key[order]
    nb = np.full(3 * m, -1, np.int64)
    same = ks[1:] == ks[:-1]
    # only manifold edges (exactly two faces)
    first = np.nonzero(same)[0]
    if len(first):
        single = np.ones(len(first), bool)
        single &= (first + 2 >= len(ks)) | (ks[np.minimum(first + 2, len(ks) - 1)] != ks[first])
        single &= (first == 0) | (ks[np.maximum(first - 1, 0)] != ks[first])
        first = first[single]
        i, j = order[first], order[first + 1]
        nb[i] = j // 3
        nb[j] = i // 3
    return nb.reshape(m, 3)


def depth_buffer(xy: np.ndarray, z: np.ndarray, faces: np.ndarray, w: int, h: int) -> np.ndarray:
    """Nearest depth per pixel of a triangle mesh seen by a camera (a numpy z-buffer).

    Parameters
    ----------
    xy
        (N, 2) pixel coordinates of the vertices (x right, y down; pixel centres at +0.5).
    z
        (N,) depth of the vertices; faces with a vertex at z <= 0 are left out.
    faces
        (M, 3) vertex indices.
    w, h
        Image size in pixels.

    Returns
    -------
    numpy.ndarray
        (h, w) float depths, ``inf`` where no face covers the pixel.
    """
    return _zbuffer(np.asarray(xy, np.float64), np.asarray(z, np.float64), faces, w, h)


def _zbuffer(xy: np.ndarray, z: np.ndarray, faces: np.ndarray, w: int, h: int) -> np.ndarray:
    """Nearest depth per pixel of ``faces`` (pixel coordinates ``xy`` of the vertices)."""
    zbuf = np.full(w * h, np.inf)
    for pix, depth in _raster(xy, z, faces, w, h, depth=True):
        np.minimum.at(zbuf, pix, depth)
    return zbuf.reshape(h, w)


def _coverage(xy: np.ndarray, z: np.ndarray, faces: np.ndarray, w: int, h: int) -> np.ndarray:
    """Pixels (h, w bool) some face of ``faces`` covers: :func:`_zbuffer`'s finite pixels."""
    cover = np.zeros(w * h, bool)
    for pix, _ in _raster(xy, z, faces, w, h, depth=False):
        cover[pix] = True
    return cover.reshape(h, w)


def _raster(
    xy: np.ndarray, z: np.ndarray, faces: np.ndarray, w: int, h: int, depth: bool
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The pixels each face covers, in batches: (flat pixel index, depth there or None).

    A pixel is covered when its centre lies inside the triangle (barycentric coordinates, in
    the pixel plane, of at least -1e-9); faces smaller than a pixel mark the pixel their
    centroid falls in, at their mean depth. Faces with a vertex at z <= 0 are left out.
    Barycentric coordinates and depth are planes in the pixel coordinates (relative to each
    face's box), so faces of the same box size are rasterized together by broadcasting.
    """
    tri = xy[faces]
    tz = z[faces]
    ok = np.isfinite(tri).all(axis=(1, 2)) & (tz > 0).all(axis=1)
    tri, tz = tri[ok], tz[ok]
    x0 = np.maximum(np.ceil(tri[:, :, 0].min(axis=1) - 0.5), 0).astype(np.int64)
    x1 = np.minimum(np.floor(tri[:, :, 0].max(axis=1) - 0.5), w - 1).astype(np.int64)
    y0 = np.maximum(np.ceil(tri[:, :, 1].min(axis=1) - 0.5), 0).astype(np.int64)
    y1 = np.minimum(np.floor(tri[:, :, 1].max(axis=1) - 0.5), h - 1).astype(np.int64)
    nx, ny = x1 - x0 + 1, y1 - y0 + 1
    n = np.where((nx > 0) & (ny > 0), nx * ny, 0)
    # faces smaller than a pixel: their centroid's depth marks the pixel it falls in
    cx, cy = tri[:, :, 0].mean(axis=1), tri[:, :, 1].mean(axis=1)
    small = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h) & (n <= 1)
    yield (
        np.floor(cy[small]).astype(np.int64) * w + np.floor(cx[small]).astype(np.int64),
        tz[small].mean(axis=1) if depth else None,
    )
    # barycentric planes l_k = a_k * u + b_k * v + c_k in the face's box (u, v: pixel centre
    # minus the box's corner), with l_2 = 1 - l_0 - l_1, and the depth plane
    use = n > 0
    tri = tri[use] - np.stack([x0[use], y0[use]], axis=1)[:, None, :].astype(np.float64)
    tz, x0, y0, nx, ny = tz[use], x0[use], y0[use], nx[use], ny[use]
    p, q, r = tri[:, 0], tri[:, 1], tri[:, 2]
    area = (q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0])
    good = np.abs(area) > 1e-12
    tri, tz, x0, y0, nx, ny, area = (a[good] for a in (tri, tz, x0, y0, nx, ny, area))
    p, q, r = tri[:, 0], tri[:, 1], tri[:, 2]
    a0, b0 = (q[:, 1] - r[:, 1]) / area, (r[:, 0] - q[:, 0]) / area
    c0 = (q[:, 0] * r[:, 1] - q[:, 1] * r[:, 0]) / area
    a1, b1 = (r[:, 1] - p[:, 1]) / area, (p[:, 0] - r[:, 0]) / area
    c1 = (r[:, 0] * p[:, 1] - r[:, 1] * p[:, 0]) / area
    a2, b2, c2 = -a0 - a1, -b0 - b1, 1.0 - c0 - c1
    coef = np.stack([a0, b0, c0, a1, b1, c1, a2, b2, c2], axis=1)
    plane = np.stack(
        [
            a0 * tz[:, 0] + a1 * tz[:, 1] + a2 * tz[:, 2],
            b0 * tz[:, 0] + b1 * tz[:, 1] + b2 * tz[:, 2],
            c0 * tz[:, 0] + c1 * tz[:, 1] + c2 * tz[:, 2],
        ],
        axis=1,
    )

    def covered(
        f: np.ndarray, u: np.ndarray, v: np.ndarray, pix: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """f, u, v, pix broadcast to the candidates: faces, box offsets, pixel indices."""
        k = coef[f]
        hit = np.ones(np.broadcast_shapes(f.shape, u.shape, v.shape), bool)
        for j in range(3):
            hit &= k[..., 3 * j] * u + k[..., 3 * j + 1] * v + k[..., 3 * j + 2] >= -1e-9
        pix = np.broadcast_to(pix, hit.shape)[hit]
        if not depth:
            return pix, None
        pl = plane[f]
        zc = pl[..., 0] * u + pl[..., 1] * v + pl[..., 2]
        return pix, np.broadcast_to(zc, hit.shape)[hit]

    block = (nx <= RASTER_BLOCK) & (ny <= RASTER_BLOCK)
    key = ny * (RASTER_BLOCK + 1) + nx
    for k in np.unique(key[block]):
        f = np.nonzero(block & (key == k))[0]
        bw, bh = int(nx[f[0]]), int(ny[f[0]])
        du, dv = np.arange(bw), np.arange(bh)
        fb = f[:, None, None]
        u, v = du[None, None, :] + 0.5, dv[None, :, None] + 0.5
        pix = (y0[fb] + dv[None, :, None]) * w + x0[fb] + du[None, None, :]
        yield covered(fb, u, v, pix)
    # the larger faces, pixel by pixel in chunks
    big = np.nonzero(~block)[0]
    cnt_all = nx[big] * ny[big]
    cum = np.cumsum(cnt_all)
    chunk, start = 4_000_000, 0
    while start < len(big):
        stop = int(np.searchsorted(cum, (cum[start - 1] if start else 0) + chunk, "right"))
        stop = max(stop, start + 1)
        f = big[start:stop]
        cnt = cnt_all[start:stop]
        rep = np.repeat(f, cnt)
        local = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        du, dv = local % nx[rep], local // nx[rep]
        pix = (y0[rep] + dv) * w + x0[rep] + du
        yield covered(rep, du + 0.5, dv + 0.5, pix)
        start = stop


def _view_scores(
    mesh_v: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray,
    centroids: np.ndarray,
    v: _View,
    mask: np.ndarray | None,
) -> np.ndarray:
    """Texture score of every face in one view (0: unusable)."""
    xy, z = v.project(mesh_v)
    tri = xy[faces]
    to_cam = v.cam.center[None, :] - centroids
    dist = np.linalg.norm(to_cam, axis=1)
    cos = np.sum(normals * to_cam, axis=1) / np.maximum(dist, 1e-12)
    w, h = v.cam.width, v.cam.height
    with np.errstate(invalid="ignore"):
        in_frame = (
            (tri[:, :, 0] >= 1)
            & (tri[:, :, 0] <= w - 1)
            & (tri[:, :, 1] >= 1)
            & (tri[:, :, 1] <= h - 1)
        ).all(axis=1)
    front = (cos > 0) & (z[faces] > 0).all(axis=1)
    ok = in_frame & front & (cos > 0.05)
    area = 0.5 * np.abs(
        (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
        - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0])
    )
    # occlusion: depth test of the centroid against the mesh's z-buffer at test scale
    s = _test_scale(v.cam)
    zw, zh = max(1, round(w * s)), max(1, round(h * s))
    zbuf = _zbuffer(xy * s, z, faces[front], zw, zh)
    cxy, cz = v.project(centroids)
    with np.errstate(invalid="ignore"):
        px = np.clip(np.floor(cxy[:, 0] * s), 0, zw - 1)
        py = np.clip(np.floor(cxy[:, 1] * s), 0, zh - 1)
    px = np.where(np.isfinite(px), px, 0).astype(np.intp)
    py = np.where(np.isfinite(py), py, 0).astype(np.intp)
    ok &= cz <= zbuf[py, px] * (1 + DEPTH_TOLERANCE)
    if mask is not None:
        ok &= mask[np.minimum(py, mask.shape[0] - 1), np.minimum(px, mask.shape[1] - 1)]
    return np.where(ok, area * np.clip(cos, 0, 1), 0.0).astype(np.float32)


def _choose_views(scores: np.ndarray, areas: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """One view per face (-1: none), in large patches.

    Greedy cover first: the view that is good (within :data:`GOOD_VIEW_FRACTION` of the best
    score) for the most unassigned surface takes all of it, and so on; so a flat side that a
    dozen photos see about equally well comes from one photo, not from a dozen. Then a few ICM
    sweeps trade a face's own score against its neighbours' views (Potts smoothing).
    """
    m, n_views = scores.shape
    best = scores.max(axis=1)
    labels = np.full(m, -1, np.int64)
    good = (scores >= GOOD_VIEW_FRACTION * best[:, None]) & (scores > 0)
    todo = best > 0
    while todo.any():
        gain = np.einsum("n,nv->v", areas[todo], good[todo])
        v = int(gain.argmax())
        if gain[v] <= 0:
            break
        sel = todo & good[:, v]
        labels[sel] = v
        todo &= ~sel
    k = min(LABEL_CANDIDATES, n_views)
    cand = np.concatenate([labels[:, None], np.argsort(-scores, axis=1)[:, :k]], axis=1)
    cand = np.maximum(cand, 0)
    cand_score = np.take_along_axis(scores, cand, axis=1)
    data = np.where(cand_score > 0, cand_score / np.maximum(best[:, None], 1e-30), -np.inf)
    rng = np.random.default_rng(_SEED)
    has_nb = neighbours >= 0
    for it in range(LABEL_ITERATIONS):
        nb_lab = np.where(has_nb, labels[np.maximum(neighbours, 0)], -2)
        agree = (nb_lab[:, :, None] == cand[:, None, :]).sum(axis=1)
        energy = data + LABEL_SMOOTHNESS * agree
        new = np.where(best > 0, cand[np.arange(m), energy.argmax(axis=1)], -1)
        # half of the faces per sweep: simultaneous updates of neighbours can oscillate
        update = rng.random(m) < 0.5 if it < LABEL_ITERATIONS - 1 else np.ones(m, bool)
        labels = np.where(update, new, labels)
    return labels


def _pack(sizes: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """Shelf packing of (w, h) rectangles into ``width``; positions and the height used."""
    pos = np.zeros((len(sizes), 2), np.int64)
    order = np.lexsort((-sizes[:, 0], -sizes[:, 1]))
    x = y = row = 0
    for i in order:
        w, h = int(sizes[i, 0]), int(sizes[i, 1])
        if x + w > width:
            y += row
            x = row = 0
        pos[i] = (x, y)
        x += w
        row = max(row, h)
    return pos, y + row


def _pow2(n: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _merge_rects(rects: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """Merge overlapping [x0, y0, x1, y1] rectangles when the union costs no extra area."""
    owner = list(range(len(rects)))
    boxes = [list(r) for r in rects]
    alive = [True] * len(rects)
    changed = True
    while changed:
        changed = False
        for i in range(len(boxes)):
            if not alive[i]:
                continue
            for j in range(i + 1, len(boxes)):
                if not alive[j]:
                    continue
                a, b = boxes[i], boxes[j]
                if a[0] >= b[2] or b[0] >= a[2] or a[1] >= b[3] or b[1] >= a[3]:
                    continue
                u = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                area = (u[2] - u[0]) * (u[3] - u[1])
                if area <= (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]):
                    boxes[i] = u
                    alive[j] = False
                    owner = [i if o == j else o for o in owner]
                    changed = True
    index = {old: new for new, old in enumerate(i for i in range(len(boxes)) if alive[i])}
    return [boxes[i] for i in range(len(boxes)) if alive[i]], [index[o] for o in owner]


def _fill_empty(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill texels outside ``valid`` by pull-push (smooth colours bled outwards)."""
    if valid.all() or not valid.any():
        return img
    levels = [(img.astype(np.float32) * valid[..., None], valid.astype(np.float32))]
    while min(levels[-1][1].shape) > 1:
        c, w = levels[-1]
        size = (max(1, c.shape[1] // 2), max(1, c.shape[0] // 2))
        levels.append(
            (
                cv2.resize(c, size, interpolation=cv2.INTER_AREA),
                cv2.resize(w, size, interpolation=cv2.INTER_AREA),
            )
        )
    c, w = levels[-1]
    filled = c / np.maximum(w, 1e-8)[..., None]
    for c, w in reversed(levels[:-1]):
        up = cv2.resize(filled, (c.shape[1], c.shape[0]), interpolation=cv2.INTER_LINEAR)
        own = c / np.maximum(w, 1e-8)[..., None]
        filled = np.where((w > 1e-6)[..., None], own, up)
    out = img.copy()
    out[~valid] = np.clip(np.rint(filled[~valid]), 0, 255).astype(np.uint8)
    return out


def _texture(
    mesh: Mesh,
    views: Sequence[_View],
    masks: Mapping[str, np.ndarray],
    size: int,
    report: Any,
    cancel: CancelToken,
) -> tuple[Mesh, dict[str, Any]]:
    """Texture atlas from the photos; vertices are split along patch borders."""
    vertices = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    colours = np.asarray(mesh.vertex_colors, np.uint8)
    m = len(faces)
    p = vertices[faces]
    cross = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    normals = cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-30)
    centroids = p.mean(axis=1)
    scores = np.zeros((m, len(views)), np.float32)
    for j, v in enumerate(views):
        scores[:, j] = _view_scores(vertices, faces, normals, centroids, v, masks.get(v.name))
        report(f"Texture: scored view {j + 1} of {len(views)}")
    nb = _face_neighbours(faces)
    labels = _choose_views(scores, np.linalg.norm(cross, axis=1), nb)

    # patches: connected faces with one view
    fi = np.repeat(np.arange(m), 3)
    fj = nb.ravel()
    link = (fj >= 0) & (labels[fi] == labels[np.maximum(fj, 0)]) & (labels[fi] >= 0)
    _, patch = _linked(m, fi[link], fj[link])
    seen = labels >= 0
    # per view: the projection of every vertex of its faces, patch rectangles, merged
    corner_xy = np.zeros((m, 3, 2))
    rects: list[list[int]] = []
    rect_view: list[int] = []
    face_rect = np.full(m, -1, np.int64)
    for j, v in enumerate(views):
        sel = np.nonzero(labels == j)[0]
        if not len(sel):
            continue
        xy, _ = v.project(vertices[np.unique(faces[sel])])
        lookup = np.searchsorted(np.unique(faces[sel]), faces[sel])
        corner_xy[sel] = xy[lookup]
        pids, inv = np.unique(patch[sel], return_inverse=True)
        lo = np.full((len(pids), 2), np.inf)
        hi = np.full((len(pids), 2), -np.inf)
        np.minimum.at(lo, inv, corner_xy[sel].min(axis=1))
        np.maximum.at(hi, inv, corner_xy[sel].max(axis=1))
        boxes = np.concatenate([np.floor(lo) - PATCH_PAD, np.ceil(hi) + PATCH_PAD], axis=1)
        boxes = np.clip(boxes, 0, [v.cam.width, v.cam.height, v.cam.width, v.cam.height])
        merged, owner = _merge_rects(boxes.astype(np.int64).tolist())
        face_rect[sel] = len(rects) + np.asarray(owner, np.int64)[inv]
        rects.extend(merged)
        rect_view.extend([j] * len(merged))
    rect_arr = np.asarray(rects, np.int64).reshape(-1, 4)
    dims = rect_arr[:, 2:] - rect_arr[:, :2]
    unseen = np.nonzero(~seen)[0]
    cols = min(math.ceil(math.sqrt(len(unseen))), size // 2) if len(unseen) else 0
    cell_block = np.array(
        [[2 * cols, 2 * math.ceil(len(unseen) / cols)]] if cols else [], np.int64
    ).reshape(-1, 2)

    # atlas size and scale: photo resolution when it fits, else shrink the patches
    scale = 1.0
    area = float((dims[:, 0] * dims[:, 1]).sum())
    if area > 0.75 * size * size:
        scale = math.sqrt(0.75 * size * size / area)
    while True:
        scaled = np.maximum(np.ceil(dims * scale).astype(np.int64), 1)
        sizes = np.concatenate([scaled, cell_block]) if len(cell_block) else scaled
        need = float((sizes[:, 0] * sizes[:, 1]).sum())
        width = min(size, max(_pow2(math.sqrt(need / 0.7)), _pow2(sizes[:, 0].max())))
        pos, used = _pack(sizes, width)
        while used > width and width < size:
            width *= 2
            pos, used = _pack(sizes, width)
        if used <= size and sizes[:, 0].max() <= width:
            break
        scale *= 0.9
        if scale < 1e-3:
            raise ReconstructionError(
                "The texture atlas could not be packed; lower the mesh's "
                "triangle budget or raise the texture size."
            )
    height = min(size, _pow2(used))
    atlas = np.zeros((height, width, 3), np.uint8)
    filled = np.zeros((height, width), bool)

    # cut the rectangles out of the photos
    rect_scale = np.zeros((len(rects), 2))
    by_view: dict[int, list[int]] = {}
    for r, j in enumerate(rect_view):
        by_view.setdefault(j, []).append(r)
    for j, rs in by_view.items():
        cancel.raise_if_cancelled()
        v = views[j]
        assert v.record is not None
        img, _ = read_image(v.record.working_path)
        if img.shape[1] != v.cam.width or img.shape[0] != v.cam.height:
            img = cv2.resize(img, (v.cam.width, v.cam.height), interpolation=cv2.INTER_AREA)
        for r in rs:
            x0, y0, x1, y1 = (int(c) for c in rect_arr[r])
            tw, th = int(scaled[r, 0]), int(scaled[r, 1])
            crop = img[y0:y1, x0:x1]
            if (tw, th) != (x1 - x0, y1 - y0):
                crop = cv2.resize(crop, (tw, th), interpolation=cv2.INTER_AREA)
            ox, oy = int(pos[r, 0]), int(pos[r, 1])
            atlas[oy : oy + th, ox : ox + tw] = crop
            filled[oy : oy + th, ox : ox + tw] = True
            rect_scale[r] = (tw / max(x1 - x0, 1), th / max(y1 - y0, 1))
    report("Texture: packed the atlas")

    # corners: atlas pixel coordinates
    corner_uv = np.zeros((m, 3, 2))
    sf = np.nonzero(seen)[0]
    if len(sf):
        r = face_rect[sf]
        corner_uv[sf] = (
            pos[r][:, None, :]
            + (corner_xy[sf] - rect_arr[r][:, None, :2]) * rect_scale[r][:, None, :]
        )
    if len(unseen):
        ox, oy = pos[-1]
        k = np.arange(len(unseen))
        cx, cy = ox + 2 * (k % cols) + 1.0, oy + 2 * (k // cols) + 1.0
        corner_uv[unseen] = np.stack([cx, cy], axis=1)[:, None, :]
        face_col = colours[faces[unseen]].astype(np.float64).mean(axis=1)
        for dy in (0, 1):
            for dx in (0, 1):
                yy, xx = (cy - 1 + dy).astype(np.intp), (cx - 1 + dx).astype(np.intp)
                atlas[yy, xx] = np.rint(face_col).astype(np.uint8)
                filled[yy, xx] = True
    atlas = _fill_empty(atlas, filled)

    # split vertices: one per (vertex, rectangle); unseen faces get their own corners
    n_rect = len(rects) + 1
    key = faces * n_rect + np.where(seen, face_rect, len(rects))[:, None]
    if len(unseen):
        key[unseen] = (faces.max() + 1) * n_rect + 3 * unseen[:, None] + np.arange(3)
    uniq, first, inverse = np.unique(key.ravel(), return_index=True, return_inverse=True)
    src_vertex = faces.ravel()[first]
    uv_px = corner_uv.reshape(-1, 2)[first]
    uv = np.stack([uv_px[:, 0] / width, 1.0 - uv_px[:, 1] / height], axis=1).astype(np.float32)
    new_faces = inverse.reshape(-1, 3).astype(np.int32)
    out = Mesh(vertices[src_vertex], new_faces, colours[src_vertex], uv, atlas)
    stats = {
        "texture_size": [width, height],
        "texture_scale": round(scale, 4),
        "patches": len(rects),
        "faces_unseen": len(unseen),
        "atlas_fill": round(float(filled.mean()), 3),
    }
    return out, stats
