"""Structure from motion on pycolmap: SIFT features, matching fit for the set, then mappers.

The stage solves the cameras with settings fit for most product shoots: the incremental mapper
first and, when it leaves photos out, pycolmap's global mapper (GLOMAP) on the same features and
matches. When fewer than ``SfMConfig.min_registered_fraction`` of the photos are placed, it
retries with stronger features (more of them, one focal, guided matching, relaxed registration)
and both mappers again. Every model is checked against the photo pairs verified on their own
before mapping (:mod:`engine.stages.sfm_check`); the checked model with most photos placed is
kept, and when none passes the stage stops with a reason rather than hand on a wrong model.
When the kept model puts the product's points outside its automatic outlines (the product was
moved or turned over on its support between photos, and the support's features placed the
cameras), the attempts run again on the product's features alone (:func:`_product_alone`).
Every photo left out is reported with a reason in plain words.

pycolmap options are built here, from :class:`engine.config.SfMConfig`, and nowhere else.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycolmap

from engine import run_folder
from engine.config import SfMConfig
from engine.errors import ReconstructionError
from engine.messages import grouped, named
from engine.progress import Cancelled, CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.stages import features, sfm_merge
from engine.stages.pairs import capped_pairs, exhaustive_pairs, retrieval_pairs, sequential_pairs
from engine.stages.sfm_check import ModelCheck, check_model, rotation_disagreement
from engine.types import CameraPose, ImageRecord, IngestResult, PointCloud, SparseModel

logger = logging.getLogger(__name__)
#: Photos named in an error message before "and N more".
MAX_NAMED = 10

STAGE = "sfm"
#: Part of the resume key: a finished run's cameras are solved again when this changes (2: a
#: small masked product upsampled; a product that moved on its support solved from the product
#: alone; 3: from the product alone, models that leave it outside its outlines refused; 4: the
#: outline check on the worst tenth of photos, retrieval pairs from 31 photos up; 5: models
#: of one mapping that share a photo joined; 6: guided matching only on photos of few keypoints).
ALGORITHM_VERSION = 6
#: Sets up to this size are matched exhaustively by the strong retry, whatever the first
#: attempt's pairs were: a set the retrieval pairs could not solve gets every pair.
RETRY_EXHAUSTIVE_MAX_IMAGES = 60
#: Verified inliers under which two photos are considered not to overlap.
MIN_PAIR_INLIERS = 15
#: Scale (pixels) of the Cauchy loss of the final bundle adjustments.
ROBUST_LOSS_PX = 0.5
#: Relative cost change at which the final bundle adjustments stop. pycolmap's default (0)
#: runs all 100 iterations even when the model converged after a few: 3.6 s against 1.7 s on
#: the synthetic box (36 photos), with the same cameras to 1e-4 degrees.
BA_FUNCTION_TOLERANCE = 1e-6
#: Image pairs matched per pycolmap call. Every call sets up its matchers and reads the
#: features again (about 0.4 s), so small blocks cost time: 630 pairs in blocks of 64 took
#: 12.2 s against 8.8 s in one call. Blocks only pace the progress bar; Cancel reaches inside a
#: call through pycolmap's cancellation token.
MIN_MATCH_BLOCK = 256
#: A solved focal length further than this (relative) from the photos' own EXIF focal length
#: means a wrong model: a small product far off in the frame lets the mapper trade focal length
#: for distance (a synthetic bottle at a quarter of the frame: 535 px solved, 818 px true, the
#: cameras 2.6 deg off). Zoom lenses and crops stay well within it.
MAX_FOCAL_DRIFT = 0.2
#: Two right models turn no shared photo by more than this (degrees; see
#: :func:`engine.stages.sfm_check.rotation_disagreement`): when they do, the global mapper's
#: model is refused (see _judge).
MAX_MODEL_DISAGREEMENT_DEG = 2.0


@contextmanager
def _cancellable(cancel: CancelToken) -> Iterator[None]:
    """Turn pycolmap's InterruptedError after a cancellation into :class:`Cancelled`."""
    try:
        yield
    except InterruptedError:
        if cancel.cancelled:
            raise Cancelled() from None
        raise


#: Longest side of the image SIFT works on in the strong retry's finest octave (-2 upsamples
#: four times): the size COLMAP's upsampling already reaches on 1,600 px working copies.
FINEST_WORKING_SIDE = 3200


#: Guided matching (pairs matched again along their verified geometry) only where the median
#: photo has at most this many keypoints. There it finds the matches that the ratio test lost
#: among few features (dino_sparse_ring's plaster, 440 to 950 keypoints a photo: 8 photos
#: placed with it, 3 without). With thousands, the plain matches verify the pairs already and
#: guided matching costs 13 times as much: 16 photos of a bottle on black cloth at the strong
#: retry's finest look (5,300 keypoints a photo), 120 pairs: 65.3 s guided, 4.8 s not, 114
#: and 113 pairs verified (bench/BENCHMARKS.md, session 13).
GUIDED_MAX_KEYPOINTS = 2000


@dataclass(frozen=True)
class Attempt:
    """Settings of one SfM attempt (derived from SfMConfig; the retry strengthens them)."""

    name: str
    camera_model: str
    max_num_features: int
    first_octave: int
    matcher: str
    guided_matching: bool = False
    relaxed_mapper: bool = False
    extractor: str = "opencv"


def guided_matching(attempt: Attempt, keypoints: Sequence[int]) -> bool:
    """Whether ``attempt`` matches its photos (``keypoints``: each one's count) guided.

    When it asks to and the median photo has at most :data:`GUIDED_MAX_KEYPOINTS`.
    """
    if not attempt.guided_matching or not keypoints:
        return False
    return sorted(keypoints)[len(keypoints) // 2] <= GUIDED_MAX_KEYPOINTS


def plan_attempts(
    cfg: SfMConfig, num_images: int, long_side: int, product_side: float | None = None
) -> list[Attempt]:
    """The attempts to try in order: the first with ``cfg``, then stronger retries.

    ``long_side`` is the longest side of the working copies, which decides whether SIFT
    upsamples the photos (small photos give too few features otherwise). ``product_side``,
    when SfM sees only the product (masks it may use: :func:`product_side`), is the product's
    size in pixels: a small product in a large photo is upsampled too, so that the mask does
    not starve SfM of features.
    """
    octave = cfg.first_octave
    if octave is None:
        seen = long_side if product_side is None else min(long_side, product_side)
        octave = -1 if seen <= cfg.upsample_below else 0
    matcher = cfg.matcher
    if matcher == "auto":
        matcher = "exhaustive" if num_images <= cfg.exhaustive_max_images else "retrieval"
    model = "SIMPLE_RADIAL" if cfg.camera_model == "auto" else cfg.camera_model
    # Upsampled small photos: COLMAP's SIFT (its points on a box's faces scattered 0.32 mm
    # where OpenCV's scattered 0.56 mm; on temple_sparse_ring's 640 x 480 photos its global
    # model passed where OpenCV's was refused, 0.126 deg against 0.158 after a retry).
    # Larger photos, also upsampled for a small masked product: OpenCV's, 2.7 times faster
    # (socketed_axe at -1: 13.5 s against 36.0 s, the same 52 photos placed, both within
    # 0.01 deg of each other against the set's PhotoScan cameras).
    extractor = "colmap" if octave == -1 and long_side <= cfg.upsample_below else "opencv"
    first = Attempt("standard", model, cfg.max_num_features, octave, matcher, extractor=extractor)
    attempts = [first]
    if cfg.retry:
        # One focal for both axes: PINHOLE's separate fx, fy drift apart on narrow rings.
        strong_model = "SIMPLE_PINHOLE" if cfg.camera_model == "auto" else cfg.camera_model
        # The retry looks finer, not only harder: on small photos one octave below COLMAP's
        # upsampling (a product a quarter of a 640 x 480 frame: 88 keypoints a photo at -1,
        # about 700 at -2), as long as SIFT's working image stays within FINEST_WORKING_SIDE.
        strong_octave = -2 if 4 * long_side <= FINEST_WORKING_SIDE else -1
        attempts.append(
            Attempt(
                "strong",
                strong_model,
                max(2 * cfg.max_num_features, 8192),
                strong_octave,
                "exhaustive" if _retry_exhaustive(cfg, num_images) else matcher,
                guided_matching=True,
                relaxed_mapper=True,
                extractor="colmap",
            )
        )
    return attempts


# --------------------------------------------------------------------------- pairs


# --------------------------------------------------------------------------- helpers


def _camera_params(model: str, group: Sequence[ImageRecord]) -> str:
    """COLMAP parameter string for a camera group with a focal prior ("" when none)."""
    rec = group[0]
    if rec.focal_px is None:
        return ""
    f, cx, cy = rec.focal_px, rec.width / 2.0, rec.height / 2.0
    if model == "PINHOLE":
        return f"{f},{f},{cx},{cy}"
    if model == "SIMPLE_PINHOLE":
        return f"{f},{cx},{cy}"
    if model == "SIMPLE_RADIAL":
        return f"{f},{cx},{cy},0"
    if model == "OPENCV":
        return f"{f},{f},{cx},{cy},0,0,0,0"
    raise ValueError(f"unsupported camera model {model}")


def cameras_from_reconstruction(rec: pycolmap.Reconstruction) -> dict[str, CameraPose]:
    """Registered images of a reconstruction as :class:`CameraPose` by image name."""
    out: dict[str, CameraPose] = {}
    for image in rec.images.values():
        if not image.has_pose:
            continue
        cam = rec.camera(image.camera_id)
        pose = image.cam_from_world()
        out[image.name] = CameraPose(
            name=image.name,
            R=np.asarray(pose.rotation.matrix(), np.float64),
            t=np.asarray(pose.translation, np.float64),
            K=np.asarray(cam.calibration_matrix(), np.float64),
            width=int(cam.width),
            height=int(cam.height),
            model=cam.model.name,
            params=tuple(float(p) for p in cam.params),
        )
    return out


def points_from_reconstruction(rec: pycolmap.Reconstruction) -> PointCloud:
    """Sparse points and colours of a reconstruction."""
    pts = rec.points3D
    if not pts:
        return PointCloud.empty()
    xyz = np.array([p.xyz for p in pts.values()], np.float32)
    rgb = np.array([p.color for p in pts.values()], np.uint8)
    return PointCloud(xyz, rgb)


def visibility_from_reconstruction(rec: pycolmap.Reconstruction) -> dict[str, np.ndarray]:
    """Image name -> indices (into :func:`points_from_reconstruction`'s order) of its points."""
    index = {pid: i for i, pid in enumerate(rec.points3D)}
    seen: dict[int, list[int]] = {}
    for pid, point in rec.points3D.items():
        i = index[pid]
        for el in point.track.elements:
            seen.setdefault(el.image_id, []).append(i)
    out: dict[str, np.ndarray] = {}
    for image_id, idx in seen.items():
        image = rec.images[image_id]
        if image.has_pose:
            out[image.name] = np.unique(np.asarray(idx, np.int64))
    return out


def load_sparse(path: Path, unregistered: dict[str, str] | None = None) -> SparseModel:
    """Read a COLMAP model folder back as a :class:`SparseModel`."""
    rec = pycolmap.Reconstruction(str(path))
    return SparseModel(
        path=path,
        cameras=cameras_from_reconstruction(rec),
        points=points_from_reconstruction(rec),
        unregistered=dict(unregistered or {}),
        visibility=visibility_from_reconstruction(rec),
    )


# --------------------------------------------------------------------------- the stage


#: Masks that decide which features SfM sees: the user's (a mask file or a painted mask), and a
#: turntable's, whose backdrop turns with the camera and would place it wrongly. Automatic
#: masks of a studio shoot do not: the backdrop stands still with the product there, so its
#: features place cameras rightly, and a wrong mask (a shadow, a sliver of a cap) would starve
#: the photo of features (kitchen_lego: 19 of 25 photos placed with them, 23 without).
SFM_MASK_SOURCES = frozenset({"file", "painted", "turntable"})


def _sfm_masked(rec: ImageRecord, product_only: bool = False) -> bool:
    """Whether SfM uses only the features inside ``rec``'s mask.

    ``product_only``: every mask counts, automatic ones too (the product moved on its support
    between photos: see :func:`silhouette_agreement`).
    """
    if rec.mask_path is None:
        return False
    return product_only or rec.mask_source in SFM_MASK_SOURCES


def _grown_mask(path: Path) -> np.ndarray:
    """A mask file (0 / 255) grown by :data:`features.MASK_GROW_PX` pixels."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise OSError(f"{path}: the mask could not be read")
    k = 2 * features.MASK_GROW_PX + 1
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


#: Share of the photos whose masks SfM uses from which the product's size decides the octave.
MASKED_MAJORITY = 0.5


def product_side(records: Sequence[ImageRecord], product_only: bool = False) -> float | None:
    """The product's size in pixels when SfM sees only the product, else None.

    When most photos have a mask SfM uses (:func:`_sfm_masked`), features come only from the
    product: its size is the square root of its median mask area. socketed_axe (its own masks,
    the axe 11% of a 1,600 px frame: 530 px) kept about 500 features a photo at octave 0, and
    the first attempt placed 26 of its 52 photos; at -1 it keeps about 2,000 and places all 52.
    """
    masked = [r for r in records if _sfm_masked(r, product_only)]
    if not masked or len(masked) < MASKED_MAJORITY * len(records):
        return None
    areas = []
    for rec in masked:
        mask = cv2.imread(str(rec.mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise OSError(f"{rec.mask_path}: the mask could not be read")
        scale = (rec.width * rec.height) / mask.size  # masks at another size than the photo
        areas.append(np.count_nonzero(mask > 127) * scale)
    return float(np.sqrt(np.median(areas)))


class _AttemptRunner:
    """Runs one attempt in its own folder: database, features, matches, mapping."""

    def __init__(
        self,
        ingest: IngestResult,
        cfg: SfMConfig,
        attempt: Attempt,
        folder: Path,
        progress: ProgressCallback,
        cancel: CancelToken,
        n_attempts: int,
        index: int,
        store: features.FeatureStore,
        product_only: bool = False,
    ) -> None:
        self.ingest = ingest
        self.product_only = product_only
        self.store = store
        #: The features this attempt wrote to its database, by photo (after extract()).
        self.features: dict[str, features.Features] = {}
        #: Photo name -> its name in the matching database (no spaces; see extract()).
        self.alias: dict[str, str] = {}
        self.cfg = cfg
        self.attempt = attempt
        self.folder = folder
        self.progress = progress
        self.cancel = cancel
        self.db_path = folder / "database.db"
        #: Features and matching (a camera per photo; see _copy_matches).
        self.match_db = folder / "matching.db"
        self.names = [r.name for r in ingest.images]
        self.prefix = (
            f"attempt {index + 1}/{n_attempts} ({attempt.name}): " if n_attempts > 1 else ""
        )
        if product_only:
            self.prefix = "the product alone, " + self.prefix

    def _emit(self, current: int, total: int, message: str, partial: object = None) -> None:
        self.progress(ProgressEvent(STAGE, current, total, self.prefix + message, partial))

    # -- features
    def extract(self) -> None:
        """Cameras and photos into this attempt's database, with features from the store.

        Features are found once per photo and octave (:mod:`engine.stages.features`); a mask
        SfM may use (:data:`SFM_MASK_SOURCES`) filters them, and then the attempt's budget keeps
        the largest, so a small product keeps its whole budget.
        """
        a = self.attempt
        records = {r.name: r for r in self.ingest.images}
        total = len(records)
        done = [0]

        def on_done(name: str) -> None:
            done[0] += 1
            self.cancel.raise_if_cancelled()
            self._emit(done[0], total, f"finding features in {name}")

        self._emit(0, total, "finding features")
        feats = self.store.get_many(
            [(self.ingest.image_dir / n, n) for n in records],
            a.first_octave,
            on_done,
            a.extractor,
        )
        self._import(self.match_db, pycolmap.CameraMode.PER_IMAGE)
        self._import(self.db_path, pycolmap.CameraMode.SINGLE)
        for name, rec in records.items():
            f = feats[name]
            if _sfm_masked(rec, self.product_only):
                f = f.inside(_grown_mask(rec.mask_path))
            self.features[name] = f.first(a.max_num_features)
        for path, with_descriptors in ((self.match_db, True), (self.db_path, False)):
            with pycolmap.Database.open(str(path)) as db:
                for image in db.read_all_images():
                    f = self.features[image.name]
                    db.write_keypoints(image.image_id, f.keypoints)
                    if with_descriptors:
                        db.write_descriptors(
                            image.image_id,
                            pycolmap.FeatureDescriptors(
                                pycolmap.FeatureExtractorType.SIFT, f.descriptors
                            ),
                        )
                        # COLMAP's pair lists are "name1 name2" lines: a name with a space
                        # (a folder "Fotos für den Tisch") would be cut. The matching database
                        # knows the photos by their ids instead.
                        self.alias[image.name] = f"photo{image.image_id}"
                        image.name = self.alias[image.name]
                        db.update_image(image)
        self.cancel.raise_if_cancelled()
        self._emit(total, total, "features found")

    def _import(self, path: Path, mode: pycolmap.CameraMode) -> None:
        """Cameras and photos into a new database.

        ``SINGLE``: a camera per group of photos taken with the same lens; ``PER_IMAGE``: a
        camera per photo.
        """
        pycolmap.Database.open(str(path)).close()  # creates the tables
        groups: dict[str, list[ImageRecord]] = defaultdict(list)
        for rec in self.ingest.images:
            groups[rec.camera_key].append(rec)
        for group in groups.values():
            ro = pycolmap.ImageReaderOptions()
            ro.camera_model = self.attempt.camera_model
            ro.camera_params = _camera_params(self.attempt.camera_model, group)
            ro.default_focal_length_factor = self.cfg.default_focal_factor
            pycolmap.import_images(
                path,
                self.ingest.image_dir,
                camera_mode=mode,
                image_names=[r.name for r in group],
                options=ro,
            )

    # -- matching
    def pairs(self) -> list[tuple[str, str]]:
        if self.attempt.matcher == "sequential":
            pairs = sequential_pairs(self.names, self.cfg.sequential_overlap)
        elif self.attempt.matcher == "retrieval":
            pairs = retrieval_pairs(
                self.names,
                {n: f.descriptors for n, f in self.features.items()},
                self.cfg.retrieval_neighbours,
                overlap=self.cfg.retrieval_overlap,
                seed=self.cfg.seed,
            )
        else:
            pairs = exhaustive_pairs(self.names)
        return capped_pairs(pairs, self.cfg.max_pairs, self.cfg.seed)

    def guided(self) -> bool:
        """Whether this attempt's matching is guided (:func:`guided_matching`)."""
        return guided_matching(self.attempt, [len(f.keypoints) for f in self.features.values()])

    def match(self) -> int:
        pairs = self.pairs()
        mo = pycolmap.FeatureMatchingOptions()
        mo.num_threads = self.cfg.num_threads
        mo.guided_matching = self.guided()
        vo = pycolmap.TwoViewGeometryOptions()
        vo.ransac.random_seed = self.cfg.seed
        block = max(MIN_MATCH_BLOCK, len(pairs) // 8)
        pair_file = self.folder / "pairs.txt"
        for start in range(0, len(pairs), block):
            self.cancel.raise_if_cancelled()
            chunk = pairs[start : start + block]
            self._emit(start, len(pairs), f"matching photo pairs ({start}/{len(pairs)})")
            pair_file.write_text(
                "".join(f"{self.alias[a]} {self.alias[b]}\n" for a, b in chunk), encoding="utf-8"
            )
            po = pycolmap.ImportedPairingOptions()
            po.match_list_path = str(pair_file)
            with _cancellable(self.cancel):
                pycolmap.match_image_pairs(
                    self.match_db,
                    matching_options=mo,
                    pairing_options=po,
                    verification_options=vo,
                    device=pycolmap.Device.cpu,
                    cancellation_token=self.cancel.colmap,
                )
        self.cancel.raise_if_cancelled()
        self._copy_matches()
        self._emit(len(pairs), len(pairs), f"{len(pairs)} photo pairs matched")
        return len(pairs)

    def _copy_matches(self) -> None:
        """The matching database's matches and verified geometries into the mapping one.

        Matching runs on a database with a camera per photo: pycolmap 4.2.1 verified the pairs
        of one shared camera about 15 times slower (lego, 120 pairs: 2.4 s against 0.15 s, the
        same features and inliers). The mappers need the shared camera (one focal length for
        the set), so the results are copied over; both databases number the photos alike.
        """
        with (
            pycolmap.Database.open(str(self.match_db)) as src,
            pycolmap.Database.open(str(self.db_path)) as dst,
        ):
            ids = {im.name: im.image_id for im in src.read_all_images()}
            aliased = {self.alias[im.name]: im.image_id for im in dst.read_all_images()}
            if ids != aliased:
                raise RuntimeError("the SfM databases number the photos differently")
            pair_ids, matches = src.read_all_matches()
            for pair_id, m in zip(pair_ids, matches, strict=True):
                dst.write_matches(*pycolmap.pair_id_to_image_pair(pair_id), m)
            pair_ids, geometries = src.read_two_view_geometries()
            for pair_id, g in zip(pair_ids, geometries, strict=True):
                dst.write_two_view_geometry(*pycolmap.pair_id_to_image_pair(pair_id), g)

    # -- mapping
    def mapper_options(self) -> pycolmap.IncrementalPipelineOptions:
        n = len(self.names)
        opts = pycolmap.IncrementalPipelineOptions()
        opts.num_threads = self.cfg.num_threads
        opts.random_seed = self.cfg.seed
        opts.mapper.random_seed = self.cfg.seed
        opts.triangulation.random_seed = self.cfg.seed
        opts.min_model_size = max(2, min(10, n // 4))
        # Secondary models may share only 2 photos with earlier ones: they exist to show which
        # photos form a separate group, and re-solving placed photos cost up to half the time.
        opts.max_model_overlap = 2
        # Fewer global adjustments while growing: the final robust adjustment refines anyway.
        opts.ba_global_frames_ratio = 1.4
        opts.ba_global_points_ratio = 1.4
        opts.extract_colors = True
        if self.attempt.relaxed_mapper:
            opts.min_num_matches = 10
            opts.init_num_trials = 400
            opts.mapper.init_min_num_inliers = 50
            opts.mapper.init_min_tri_angle = 8.0
            opts.mapper.abs_pose_min_num_inliers = 15
            opts.mapper.abs_pose_min_inlier_ratio = 0.15
            opts.mapper.max_reg_trials = 5
        if self.cfg.snapshot_every > 0:
            snap = self.folder / "snapshots"
            snap.mkdir(exist_ok=True)
            opts.snapshot_path = str(snap)
            opts.snapshot_frames_freq = self.cfg.snapshot_every
        return opts

    def map(self, fixed_focal: bool = False) -> dict[int, pycolmap.Reconstruction]:
        self.cancel.raise_if_cancelled()
        opts = self.mapper_options()
        if fixed_focal:  # trust the EXIF focal lengths the cameras were created with
            opts.ba_refine_focal_length = False
            opts.ba_refine_extra_params = False
        total = len(self.names)
        registered = [2]  # the initial pair registers two images before the first callback
        seen_snapshots: set[str] = set()

        def on_next_image() -> None:
            # Runs on the mapper's thread with the GIL held: keep it short.
            registered[0] += 1
            partial = self._newest_snapshot(seen_snapshots)
            self._emit(min(registered[0], total), total, "placing cameras", partial)

        self._emit(0, total, "choosing the first pair of photos")
        out = self.folder / ("models_fixed_focal" if fixed_focal else "models")
        with _cancellable(self.cancel):
            recs = pycolmap.incremental_mapping(
                self.db_path,
                self.ingest.image_dir,
                out,
                options=opts,
                next_image_callback=on_next_image,
                cancellation_token=self.cancel.colmap,
            )
        self.cancel.raise_if_cancelled()
        return recs

    def map_global(self) -> dict[int, pycolmap.Reconstruction]:
        """All cameras at once from the same matches: pycolmap's global mapper (GLOMAP).

        It takes no cancellation token; cancellation is checked before and after.
        """
        self.cancel.raise_if_cancelled()
        opts = pycolmap.GlobalPipelineOptions()
        opts.num_threads = self.cfg.num_threads
        opts.random_seed = self.cfg.seed
        opts.min_num_matches = MIN_PAIR_INLIERS
        total = len(self.names)
        self._emit(0, total, "placing all cameras at once (global mapper)")
        out = self.folder / "global"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        recs = pycolmap.global_mapping(self.db_path, self.ingest.image_dir, out, opts)
        self.cancel.raise_if_cancelled()
        return recs

    def _newest_snapshot(self, seen: set[str]) -> SparseModel | None:
        snap = self.folder / "snapshots"
        if not snap.is_dir():
            return None
        fresh = sorted(p for p in snap.iterdir() if p.is_dir() and p.name not in seen)
        if not fresh:
            return None
        seen.update(p.name for p in fresh)
        try:
            model = load_sparse(fresh[-1])
        except Exception:  # a snapshot being written right now; the next one will do
            logger.debug("snapshot %s not readable yet", fresh[-1].name)
            return None
        for old in fresh[:-1]:
            shutil.rmtree(old, ignore_errors=True)
        return model


def _explain_unregistered(
    db_path: Path,
    names: Sequence[str],
    best: pycolmap.Reconstruction,
    others: list[pycolmap.Reconstruction],
) -> dict[str, str]:
    """A plain-words reason for every image missing from the kept model."""
    registered = {im.name for im in best.images.values() if im.has_pose}
    in_other: dict[str, int] = {}
    for rec in others:
        size = rec.num_reg_images()
        for im in rec.images.values():
            if im.has_pose and im.name not in registered:
                in_other[im.name] = size
    with pycolmap.Database.open(str(db_path)) as db:
        images = {im.name: im.image_id for im in db.read_all_images()}
        id_to_name = {v: k for k, v in images.items()}
        pair_ids, inliers = db.read_two_view_geometry_num_inliers()
        best_link: dict[str, int] = defaultdict(int)
        links: dict[str, int] = defaultdict(int)
        for pair_id, count in zip(pair_ids, inliers, strict=True):
            a, b = pycolmap.pair_id_to_image_pair(pair_id)
            na, nb = id_to_name.get(a), id_to_name.get(b)
            for me, other in ((na, nb), (nb, na)):
                if me is None:
                    continue
                if count >= MIN_PAIR_INLIERS:
                    links[me] += 1
                if other in registered:
                    best_link[me] = max(best_link[me], int(count))
        keypoints = {
            name: db.num_keypoints_for_image(image_id) for name, image_id in images.items()
        }
    reasons: dict[str, str] = {}
    for name in names:
        if name in registered:
            continue
        kp = keypoints.get(name, 0)
        if name in in_other:
            reasons[name] = (
                f"belongs to a separate group of {in_other[name]} photos that shares too little "
                "with the main model; add photos that bridge the two groups"
            )
        elif kp < 100:
            reasons[name] = (
                f"only {kp} distinctive points found (blurry, dark or plain surface?); "
                "reshoot it sharper or with more of the textured side in view"
            )
        elif links[name] == 0:
            reasons[name] = (
                "no other photo overlaps it enough (no reliable matches); add photos between "
                "it and its neighbours"
            )
        else:
            reasons[name] = (
                f"matched {links[name]} photos (at most {best_link[name]} matches with placed "
                "cameras) but its position could not be solved reliably; if it shows another "
                "object leave it out, otherwise add photos between it and its placed neighbours"
            )
    return reasons


def _summarise(
    attempt: Attempt,
    rec: pycolmap.Reconstruction | None,
    n: int,
    seconds: float,
    pairs: int,
    mapper: str = "incremental",
    check: ModelCheck | None = None,
) -> dict:
    registered = rec.num_reg_images() if rec is not None else 0
    return {
        **dataclasses.asdict(attempt),
        "mapper": mapper,
        "check": check.to_report() if check is not None else None,
        "registered": registered,
        "images": n,
        "pairs": pairs,
        "points": rec.num_points3D() if rec is not None else 0,
        "reprojection_error_px": round(rec.compute_mean_reprojection_error(), 4) if rec else None,
        "seconds": round(seconds, 2),
    }


def _needs_retry(
    kept: pycolmap.Reconstruction, others: list[pycolmap.Reconstruction], cfg: SfMConfig, n: int
) -> bool:
    """Too few photos placed, or a small set split into separate models (a fixable failure)."""
    if kept.num_reg_images() < cfg.min_registered_fraction * n:
        return True
    placed = {im.name for im in kept.images.values() if im.has_pose}
    # A split worth a retry: a separate model holding at least 10% of the photos (and 2) that
    # the main one lacks. Two stray photos in a set of 36 are not worth doubling the time.
    min_group = max(2, int(np.ceil(0.1 * n)))
    split = any(
        sum(1 for im in r.images.values() if im.has_pose and im.name not in placed) >= min_group
        for r in others
    )
    return split and _retry_exhaustive(cfg, n)


def _retry_exhaustive(cfg: SfMConfig, n: int) -> bool:
    """Whether the strong retry matches every pair of a set of ``n`` photos."""
    return n <= max(cfg.exhaustive_max_images, RETRY_EXHAUSTIVE_MAX_IMAGES)


@dataclass
class _Candidate:
    """A mapper's largest model, the rest, where it came from and its check."""

    rec: pycolmap.Reconstruction
    others: list[pycolmap.Reconstruction]
    db_path: Path
    check: ModelCheck
    mapper: str
    fixed_focal: bool = False
    focal_drift: float = 0.0
    #: Share of the product's points inside the photos' masks (silhouette_agreement).
    silhouette: float | None = None
    product_only: bool = False

    def better_than(self, other: _Candidate) -> bool:
        mine, theirs = self.rec.num_reg_images(), other.rec.num_reg_images()
        if mine != theirs:
            return mine > theirs
        return self.check.reprojection_error_px < other.check.reprojection_error_px


def _mappers(cfg: SfMConfig) -> tuple[str, ...]:
    """Mappers tried in turn on one attempt's matches.

    ``fixed-focal`` runs only after a model was refused for a focal length far from the
    photos' EXIF one (see :func:`_focal_drift`).
    """
    if cfg.global_mapper:
        return ("incremental", "global", "fixed-focal")
    return ("incremental", "fixed-focal")


def _focal_drift(rec: pycolmap.Reconstruction, records: Sequence[ImageRecord]) -> tuple[float, str]:
    """Largest relative distance of a solved focal length from its photos' EXIF focal length.

    Returns the drift (0.0 when no placed photo has an EXIF focal) and the name of a photo of
    the camera that drifted most.
    """
    by_name = {r.name: r for r in records}
    worst, name = 0.0, ""
    for image in rec.images.values():
        prior = by_name.get(image.name)
        if not image.has_pose or prior is None or prior.focal_px is None:
            continue
        if not prior.focal_source.startswith("exif"):
            continue
        cam = rec.cameras[image.camera_id]
        solved = 0.5 * (cam.focal_length_x + cam.focal_length_y)
        drift = abs(solved - prior.focal_px) / prior.focal_px
        if drift > worst:
            worst, name = drift, image.name
    return worst, name


def _judge(
    recs: dict[int, pycolmap.Reconstruction],
    db_path: Path,
    mapper: str,
    best: _Candidate | None,
    records: Sequence[ImageRecord],
) -> _Candidate | None:
    """The largest model of a mapping, checked.

    Against its database (:func:`check_model`), the photos' EXIF focal lengths, and, for the
    global mapper, the best model so far.
    """
    models = sorted(recs.values(), key=lambda r: r.num_reg_images(), reverse=True)
    if not models or models[0].num_reg_images() < 2:
        return None
    kept = models[0]
    check = check_model(kept, db_path)
    drift, drifted = _focal_drift(kept, records)
    if check.ok and drift > MAX_FOCAL_DRIFT:
        check = dataclasses.replace(
            check,
            ok=False,
            reason=(
                f"its focal length is {drift:.0%} off the photos' own (EXIF) focal length "
                f"({drifted}): a product small in the frame lets distance and zoom trade places"
            ),
        )
    if check.ok and best is not None and mapper == "global":
        # Two right models agree where they overlap. The global mapper places every camera at
        # once from pairwise geometry, without the incremental mapper's per-photo checks; it
        # can flip a look-alike cluster of views that agrees within itself (lego: 8 of 48
        # photos 160 deg off, overall pair agreement still 95%) or bend a narrow-lens ring
        # (dino_sparse_ring: 19 deg), so any photo it turns against a checked incremental
        # model refuses it.
        per_photo = rotation_disagreement(best.rec, kept)
        off = [n for n, deg in per_photo.items() if deg > MAX_MODEL_DISAGREEMENT_DEG]
        if len(per_photo) >= 3 and off:
            check = dataclasses.replace(
                check,
                ok=False,
                reason=(
                    f"it turns {len(off)} of the {len(per_photo)} photos both placed by more "
                    f"than {MAX_MODEL_DISAGREEMENT_DEG:g} deg against the {best.mapper} "
                    f"mapper's checked model (up to {max(per_photo.values()):.0f} deg)"
                ),
            )
    return _Candidate(kept, models[1:], db_path, check, mapper, mapper == "fixed-focal", drift)


def _judge_with_outlines(
    recs: dict[int, pycolmap.Reconstruction],
    db_path: Path,
    mapper: str,
    best: _Candidate | None,
    records: Sequence[ImageRecord],
    product_only: bool,
    outlines: Mapping[str, np.ndarray] | None,
) -> _Candidate | None:
    """:func:`_judge`, then, for a model that passed, the product's outlines."""
    candidate = _judge(recs, db_path, mapper, best, records)
    if candidate is not None:
        candidate.product_only = product_only
        if outlines is not None and candidate.check.ok:
            _check_outlines(candidate, outlines)
    return candidate


def _merged(
    recs: dict[int, pycolmap.Reconstruction],
    runner: _AttemptRunner,
    image_dir: Path,
    fixed_focal: bool,
) -> tuple[dict[int, pycolmap.Reconstruction], int]:
    """An incremental mapping's models joined where they share photos (:mod:`sfm_merge`).

    Returns the joined model first, then the models it did not absorb, and how many models
    were joined (0, with ``recs`` unchanged, when no join places more photos than the largest
    model). The caller checks the joined model like any other.
    """
    if len(recs) < 2:
        return recs, 0
    runner.cancel.raise_if_cancelled()
    joined = sfm_merge.merge_models(
        list(recs.values()),
        runner.db_path,
        image_dir,
        runner.folder / "merged",
        lambda rec: robust_bundle_adjustment(rec, refine_focal_length=not fixed_focal),
    )
    largest = max(r.num_reg_images() for r in recs.values())
    if joined is None or joined[0].num_reg_images() <= largest:
        return recs, 0
    merged, left = joined
    logger.info(
        "SfM: %d of the incremental mapper's %d models joined where they share photos: %d "
        "photos placed instead of %d",
        len(recs) - len(left),
        len(recs),
        merged.num_reg_images(),
        largest,
    )
    return dict(enumerate([merged, *left])), len(recs) - len(left)


def _no_model_message(names: Sequence[str], refused: list[_Candidate]) -> str:
    listed = named(list(names), MAX_NAMED)
    if refused:
        worst = max(refused, key=lambda c: c.rec.num_reg_images())
        return (
            f"The cameras of the {len(names)} photos ({listed}) could not be solved reliably: "
            f"the best solution placed {worst.rec.num_reg_images()} photos, but "
            f"{worst.check.reason}. A model like that gives a wrong shape, so nothing was "
            "exported. Reshoot with more overlap (a photo every 10 to 15 deg), the product "
            "larger in the frame, and a textured detail or a printed marker sheet that tells "
            "its sides apart in every photo."
        )
    return (
        f"Could not place the cameras of any two of the {len(names)} photos ({listed}): "
        "they do not overlap enough or show too little texture. Shoot the product with "
        "about 70% overlap between neighbouring photos, in sharp focus, against a plain "
        "background, and leave out photos of other objects."
    )


def _too_few_message(names: Sequence[str], placed: int, unregistered: dict[str, str]) -> str:
    missing = sorted(unregistered)
    listed = named(missing, MAX_NAMED)
    return (
        f"Only {placed} of the {len(names)} photos could be placed; {listed} could not. A model "
        "from fewer than half of the photos shows only part of the product, and on the "
        "hard shoots where this happens (a small or plain product, few photos) the part it "
        "shows was measured wrong, so nothing was exported. Reshoot with the product filling "
        "more of the frame, a photo every 10 to 15 deg, and a textured detail or a printed "
        "marker sheet in view. The log says why each photo was left out."
    )


def _drop_contradicted(rec: pycolmap.Reconstruction, check: ModelCheck) -> dict[str, str]:
    """Take photos whose placement contradicts their own verified pairs out of ``rec``.

    Only when the model as a whole is right and they are a minority: their reasons, by name.
    """
    if not check.ok or not check.contradicted:
        return {}
    if 2 * len(check.contradicted) >= rec.num_reg_images():
        return {}
    by_name = {im.name: im for im in rec.images.values() if im.has_pose}
    reasons = {}
    for name in check.contradicted:
        image = by_name.get(name)
        if image is None:
            continue
        rec.deregister_frame(image.frame_id)
        if name in check.facing_away:
            why = "it was placed facing away from the product"
        else:
            share = check.per_photo.get(name, 0.0)
            why = (
                f"it was placed, but only {share:.0%} of its verified matches with other "
                "photos agree with that place (it probably matched a look-alike side of the "
                "product)"
            )
        reasons[name] = (
            f"{why}; it was left out rather than bend the model. Add photos between it and "
            "its neighbours"
        )
    return reasons


def robust_bundle_adjustment(
    rec: pycolmap.Reconstruction,
    loss_scale: float = ROBUST_LOSS_PX,
    *,
    refine_focal_length: bool = True,
) -> None:
    """Final global bundle adjustment with a Cauchy loss, in place.

    COLMAP's own global adjustments use a plain squared loss. Observations that do not belong
    to a fixed 3D point (features on an object's silhouette, which slide as the view turns, or
    specular glints) then tilt the cameras slightly; a Cauchy loss of ``loss_scale`` pixels lets
    them weigh less. On the synthetic bottle this halves the median rotation error.
    """
    opts = _robust_ba_options(loss_scale, refine_principal_point=False)
    if not refine_focal_length:
        opts.refine_focal_length = False
        opts.refine_extra_params = False
    pycolmap.bundle_adjustment(rec, opts)


def _robust_ba_options(
    loss_scale: float, refine_principal_point: bool
) -> pycolmap.BundleAdjustmentOptions:
    opts = pycolmap.BundleAdjustmentOptions()
    opts.print_summary = False
    opts.refine_principal_point = refine_principal_point
    opts.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    opts.ceres.loss_function_scale = loss_scale
    opts.ceres.solver_options.function_tolerance = BA_FUNCTION_TOLERANCE
    return opts


def refine_principal_point(
    rec: pycolmap.Reconstruction,
    max_offset: float = 0.025,
    min_gain: float = 0.003,
    loss_scale: float = ROBUST_LOSS_PX,
) -> pycolmap.Reconstruction | None:
    """Refine the principal points in a final global bundle adjustment, when the data ask for it.

    Lenses and crops can put the optical centre off the image centre; a fixed centre then tilts
    every camera by the same small angle (0.9 degrees on the Middlebury temple). But on most
    shoots the centre is barely observable and refining it trades a tiny drop in reprojection
    error for a wrong centre (35 px off on a synthetic bottle). So the refined model is kept only
    when: at least 12 cameras see the object from directions at least 90 degrees apart, every
    principal point stays within ``max_offset`` x the image diagonal of the centre, and the mean
    reprojection error drops by at least ``min_gain`` (relative). The adjustment uses the same
    robust loss as :func:`robust_bundle_adjustment`, so the errors compare like with like.

    Returns
    -------
    pycolmap.Reconstruction or None
        The refined copy, or None when refinement was not justified (``rec`` is never changed).
    """
    if rec.num_reg_images() < 12:
        return None
    dirs = np.array([im.viewing_direction() for im in rec.images.values() if im.has_pose])
    if np.degrees(np.arccos(np.clip((dirs @ dirs.T).min(), -1.0, 1.0))) < 90.0:
        return None
    trial = pycolmap.Reconstruction(rec)
    pycolmap.bundle_adjustment(trial, _robust_ba_options(loss_scale, refine_principal_point=True))
    for cam in trial.cameras.values():
        offset = np.hypot(
            cam.principal_point_x - cam.width / 2, cam.principal_point_y - cam.height / 2
        )
        if offset > max_offset * np.hypot(cam.width, cam.height):
            logger.info("Lens centre refinement rejected (%.1f px from the image centre)", offset)
            return None
    before, after = rec.compute_mean_reprojection_error(), trial.compute_mean_reprojection_error()
    if after > (1.0 - min_gain) * before:
        logger.info("Lens centre refinement not justified (%.4f -> %.4f px)", before, after)
        return None
    logger.info("Lens centre refined (reprojection error %.4f -> %.4f px)", before, after)
    return trial


#: Below this share of the product's sparse points inside the photos' own outlines, in the
#: worst tenth of the photos (:data:`SILHOUETTE_QUANTILE`), the product moved on its support
#: between photos (a product turned over on its block: the block's features place the cameras,
#: and each group of photos sees the product somewhere else), or the masks are wrong. A right
#: model keeps a rigid product inside its outline in every photo; the quantile forgives a bad
#: mask in one photo of ten. socketed_axe without its masks, at the preview preset, 20 models
#: from 6 seeds (bench/BENCHMARKS.md, session 10): the 16 wrong ones (8 to 18 deg from the
#: set's PhotoScan cameras) 0.74 to 0.80, the 4 right ones (0.8 to 1.5 deg) 0.95 to 0.98; the
#: median photo does not part them as well (a wrong model scored 0.93 on CI); the synthetic
#: bottle: 0.997.
MIN_SILHOUETTE_AGREEMENT = 0.9
#: The photos' quantile of the share that :func:`silhouette_agreement` returns.
SILHOUETTE_QUANTILE = 0.1
#: Least product points (seen inside masks in two photos) and masked photos for the check.
MIN_SILHOUETTE_POINTS = 50
MIN_SILHOUETTE_PHOTOS = 6


def silhouette_agreement(
    rec: pycolmap.Reconstruction, masks: Mapping[str, np.ndarray]
) -> float | None:
    """How well the model's product stays inside the product's outline in every photo.

    The product's points are the sparse points seen inside the masks (``masks``: photo name ->
    boolean mask, grown a little, at the photo's size or scaled down) of at least two photos. A
    point of a rigid product projects inside the product's outline in every photo, hidden or
    not. Per placed photo with a mask, the share of the product's points in its frame that fall
    inside its mask; returns the :data:`SILHOUETTE_QUANTILE` quantile over those photos (the
    share that nine photos of ten reach), or None when there are too few points or photos to
    tell.
    """
    placed = [im for im in rec.images.values() if im.has_pose and im.name in masks]
    if len(placed) < MIN_SILHOUETTE_PHOTOS:
        return None

    def lookup(image: pycolmap.Image, xy: np.ndarray) -> np.ndarray:
        """Whether pixels ``xy`` (N, 2) of ``image`` lie inside its mask (outside: False)."""
        m = masks[image.name]
        cam = rec.cameras[image.camera_id]
        ij = np.floor(xy * [m.shape[1] / cam.width, m.shape[0] / cam.height]).astype(np.int64)
        ok = (ij[:, 0] >= 0) & (ij[:, 0] < m.shape[1]) & (ij[:, 1] >= 0) & (ij[:, 1] < m.shape[0])
        out = np.zeros(len(xy), bool)
        out[ok] = m[ij[ok, 1], ij[ok, 0]]
        return out

    inside: dict[int, int] = defaultdict(int)
    for image in placed:
        observed = [p for p in image.points2D if p.has_point3D()]
        if not observed:
            continue
        hits = lookup(image, np.array([p.xy for p in observed], np.float64))
        for p, hit in zip(observed, hits, strict=True):
            inside[p.point3D_id] += int(hit)
    product = [rec.points3D[pid].xyz for pid, count in inside.items() if count >= 2]
    if len(product) < MIN_SILHOUETTE_POINTS:
        return None
    xyz = np.c_[np.asarray(product), np.ones(len(product))]
    shares = []
    for image in placed:
        cam = rec.cameras[image.camera_id]
        cam_xyz = (np.asarray(image.cam_from_world().matrix()) @ xyz.T).T
        uv = np.asarray(cam.img_from_cam(cam_xyz[cam_xyz[:, 2] > 0]), np.float64).reshape(-1, 2)
        seen = (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
        if seen.sum() < 0.5 * len(xyz):  # the product mostly out of this photo
            continue
        shares.append(float(lookup(image, uv[seen]).mean()))
    if len(shares) < MIN_SILHOUETTE_PHOTOS:
        return None
    return float(np.quantile(shares, SILHOUETTE_QUANTILE))


#: Longest side of the masks the silhouette check holds (all photos' at once: 300 full-size
#: masks of 1,600 x 1,067 would hold 0.5 GB).
SILHOUETTE_MASK_SIDE = 480


def _automatic_masks(records: Sequence[ImageRecord]) -> dict[str, np.ndarray]:
    """Boolean masks of the photos whose masks SfM does not use, scaled down, then grown.

    Grown by :data:`features.MASK_GROW_PX` at the photo's scale, as SfM grows masks; growing
    after the downscale costs a fraction of growing the full-size mask.
    """
    out = {}
    for r in records:
        if r.mask_path is None or _sfm_masked(r):
            continue
        mask = cv2.imread(str(r.mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise OSError(f"{r.mask_path}: the mask could not be read")
        f = min(1.0, SILHOUETTE_MASK_SIDE / max(mask.shape))
        if f < 1.0:  # any of the product in a cell counts
            size = (max(1, round(mask.shape[1] * f)), max(1, round(mask.shape[0] * f)))
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        k = 2 * max(1, round(features.MASK_GROW_PX * f)) + 1
        grown = cv2.dilate(
            (mask > 0).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        )
        out[r.name] = grown > 0
    return out


def _check_outlines(candidate: _Candidate, outlines: Mapping[str, np.ndarray]) -> None:
    """Refuse ``candidate`` (in place) unless its product stays inside its outlines."""
    candidate.silhouette = silhouette_agreement(candidate.rec, outlines)
    if candidate.silhouette is None:
        reason = "too few of the product's points or photos to check it against its outlines"
    elif candidate.silhouette < MIN_SILHOUETTE_AGREEMENT:
        reason = (
            f"only {candidate.silhouette:.0%} of the product's points fall inside its outline "
            f"in one photo of ten"
        )
    else:
        return
    candidate.check = dataclasses.replace(candidate.check, ok=False, reason=reason)


def _product_alone(
    ingest: IngestResult,
    cfg: SfMConfig,
    work: Path,
    progress: ProgressCallback,
    cancel: CancelToken,
    solved: tuple[_Candidate | None, list[_Candidate], list[dict]],
) -> tuple[_Candidate | None, list[_Candidate], list[dict]]:
    """The cameras solved again from the product alone when the product moved on its support.

    When the kept model puts the product's points outside its automatic masks
    (:func:`silhouette_agreement` under :data:`MIN_SILHOUETTE_AGREEMENT`), the attempts run
    again with only the features inside each photo's mask; there a model that does not keep the
    product inside its outlines either is refused like one that fails its check, so the stronger
    attempt runs (socketed_axe without its masks at the preview preset, seed 0: the first
    attempt's models scored 0.80 and 0.77, the strong one's 0.96, 0.76 deg from the set's
    PhotoScan cameras). The best of them is kept when it places enough photos.

    Raises
    ------
    ReconstructionError
        When none does: the first model holds the product in two places, and a right model with
        automatic masks scores 0.95 or more.
    """
    best, refused, summaries = solved
    auto = _automatic_masks(ingest.images)
    n = len(ingest.images)
    if best is None or len(auto) < MASKED_MAJORITY * n:
        return solved
    best.silhouette = silhouette_agreement(best.rec, auto)
    if best.silhouette is None or best.silhouette >= MIN_SILHOUETTE_AGREEMENT:
        return solved
    logger.info(
        "Only %.0f%% of the product's points fall inside its outline in one photo of ten: the "
        "product may have been moved or turned over on its support between photos, or the "
        "cameras are imprecise. Solving the cameras again from the product alone.",
        100 * best.silhouette,
    )
    alone, refused_alone, summaries_alone = _solve(
        ingest, cfg, work, progress, cancel, product_only=True, outlines=auto
    )
    refused, summaries = refused + refused_alone, summaries + summaries_alone
    if alone is not None and alone.rec.num_reg_images() >= cfg.min_placed_fraction * n:
        # A product that moved leaves photos the support placed turned against the product's
        # own frame by the move; where the two agree the product stayed put and the first
        # model was only the less precise (a 320 x 240 box: 0.73 deg, its product alone 0.10)
        per_photo = rotation_disagreement(best.rec, alone.rec)
        turned = [name for name, deg in per_photo.items() if deg > MAX_MODEL_DISAGREEMENT_DEG]
        if turned:
            logger.warning(
                "Cameras solved from the product alone (%d of %d photos placed; %.0f%% of its "
                "points inside its outline): %d photos (%s) turn by more than %g deg against "
                "the cameras its support gave, so the product moved on its support between "
                "photos.",
                alone.rec.num_reg_images(),
                n,
                100 * alone.silhouette,
                len(turned),
                named(turned, MAX_NAMED),
                MAX_MODEL_DISAGREEMENT_DEG,
            )
        else:
            logger.info(
                "Cameras solved from the product alone (%d of %d photos placed; %.0f%% of its "
                "points inside its outline, %.0f%% before); they agree with the first cameras "
                "within %g deg, so the product stayed put and the first cameras were the less "
                "precise.",
                alone.rec.num_reg_images(),
                n,
                100 * alone.silhouette,
                100 * best.silhouette,
                MAX_MODEL_DISAGREEMENT_DEG,
            )
        return alone, refused, summaries
    outside = [c.silhouette for c in refused_alone if c.silhouette is not None]
    if alone is not None:
        why = f"placed only {alone.rec.num_reg_images()} of the {n} photos"
    elif outside:
        why = f"did not keep it inside its outline either (at best {max(outside):.0%})"
    else:
        why = "placed too few photos for a model"
    raise ReconstructionError(
        f"The product seems to have been moved or turned on its support between photos: in "
        f"one photo of ten only {best.silhouette:.0%} of the solved product's points fall inside "
        f"its outline (a product that stayed put: nearly all), so the model would hold it twice. "
        f"Solving the cameras again from the product alone {why}. Nothing was exported. Give "
        f"the photos masks (a masks folder beside them, or paint them in the mask inspector) "
        f"that hold the product alone, or photograph each position of the product as its own "
        f"set."
    )


def _solve(
    ingest: IngestResult,
    cfg: SfMConfig,
    work: Path,
    progress: ProgressCallback,
    cancel: CancelToken,
    *,
    product_only: bool,
    outlines: Mapping[str, np.ndarray] | None = None,
) -> tuple[_Candidate | None, list[_Candidate], list[dict]]:
    """The attempts in turn, each with its mappers.

    Returns the best checked model (None when none passed), the refused ones and a summary per
    mapping. ``product_only``: only the features inside every photo's mask are used.
    ``outlines`` (photo name -> grown automatic mask): a model must also keep the product's
    points inside them (:func:`silhouette_agreement`), or it is refused.
    """
    names = [r.name for r in ingest.images]
    long_side = max(max(r.width, r.height) for r in ingest.images)
    side = product_side(ingest.images, product_only)
    attempts = plan_attempts(cfg, len(names), long_side, side)
    store = features.FeatureStore(
        work / "features", max(a.max_num_features for a in attempts), cfg.num_threads
    )
    summaries: list[dict] = []
    best: _Candidate | None = None
    refused: list[_Candidate] = []
    for index, attempt in enumerate(attempts):
        folder = work / f"{'product_' if product_only else ''}attempt{index + 1}_{attempt.name}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        runner = _AttemptRunner(
            ingest,
            cfg,
            attempt,
            folder,
            progress,
            cancel,
            len(attempts),
            index,
            store,
            product_only,
        )
        t0 = time.perf_counter()
        runner.extract()
        t1 = time.perf_counter()
        n_pairs = runner.match()
        t2 = time.perf_counter()
        phases = {"features": round(t1 - t0, 2), "matching": round(t2 - t1, 2)}
        # the mappers share this attempt's features and matches
        drifted = False
        for mapper in _mappers(cfg):
            if mapper == "fixed-focal" and not drifted:
                continue
            t3 = time.perf_counter()
            joined = 0
            if mapper == "global":
                recs = runner.map_global()
            else:
                recs = runner.map(fixed_focal=mapper == "fixed-focal")
            candidate = None
            if mapper != "global":
                merged, joined = _merged(recs, runner, ingest.image_dir, mapper == "fixed-focal")
                if joined:
                    # the joined model is kept only when it passes its checks: a wrong join
                    # must not cost the mapper's own model, which is checked instead
                    alt = _judge_with_outlines(
                        merged, runner.db_path, mapper, best, ingest.images, product_only, outlines
                    )
                    if alt is not None and alt.check.ok:
                        candidate = alt
                    else:
                        logger.info(
                            "SfM: the joined model was refused (%s); the largest model stays",
                            alt.check.reason if alt is not None else "no model",
                        )
                        joined = 0
            if candidate is None:
                candidate = _judge_with_outlines(
                    recs, runner.db_path, mapper, best, ingest.images, product_only, outlines
                )
            t4 = time.perf_counter()
            drifted = drifted or (candidate is not None and candidate.focal_drift > MAX_FOCAL_DRIFT)
            kept = candidate.rec if candidate is not None else None
            summary = _summarise(
                attempt,
                kept,
                len(names),
                (t2 - t0 if mapper == "incremental" else 0.0) + t4 - t3,
                n_pairs,
                mapper,
                candidate.check if candidate is not None else None,
            )
            summary["phase_seconds"] = {**phases, "mapping": round(t4 - t3, 2)}
            summary["product_only"] = product_only
            summary["guided_matching"] = runner.guided()  # as matched (few keypoints only)
            if joined:
                summary["models_joined"] = joined
            if mapper != "incremental":
                summary["phase_seconds"].update(features=0.0, matching=0.0)
            summaries.append(summary)
            logger.info(
                "SfM %s (%s mapper): %d of %d photos placed in %.1f s%s",
                attempt.name,
                mapper,
                summary["registered"],
                len(names),
                summary["seconds"],
                ""
                if candidate is None or candidate.check.ok
                else "; refused: " + candidate.check.reason,
            )
            if candidate is None:
                continue
            if not candidate.check.ok:
                refused.append(candidate)
            elif best is None or candidate.better_than(best):
                best = candidate
            # the global mapper costs seconds on the same matches: worth it for any photo left
            if best is not None and best.rec.num_reg_images() == len(names):
                break
        if best is not None and not _needs_retry(best.rec, best.others, cfg, len(names)):
            break
        if index + 1 < len(attempts):
            if best is None and refused:
                logger.warning(
                    "No model passed its checks (%s); retrying with stronger settings.",
                    refused[-1].check.reason,
                )
            else:
                got = best.rec.num_reg_images() if best else 0
                logger.warning(
                    "Only %d of %d photos placed; retrying with stronger settings.",
                    got,
                    len(names),
                )
    return best, refused, summaries


def run(
    ingest: IngestResult,
    cfg: SfMConfig,
    run_dir: Path,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> SparseModel:
    """Solve the cameras and sparse points of the ingested photos.

    Parameters
    ----------
    ingest
        Output of the ingest stage (working copies, focal priors, masks).
    cfg
        SfM settings.
    run_dir
        Run folder: the model is written to ``run_dir/sparse/0``; databases and attempts live
        in ``run_dir/work/sfm``.
    progress, cancel
        Progress callback (partial results are :class:`SparseModel` snapshots) and token.

    Returns
    -------
    SparseModel
        The kept model, with a reason for every photo left out and a summary per attempt.

    Raises
    ------
    ReconstructionError
        When no attempt places at least two photos.
    Cancelled
        When ``cancel`` was set.
    """
    cancel = cancel or CancelToken()
    names = [r.name for r in ingest.images]
    work = run_folder.work_dir(run_dir) / STAGE
    best, refused, summaries = _product_alone(
        ingest,
        cfg,
        work,
        progress,
        cancel,
        _solve(ingest, cfg, work, progress, cancel, product_only=False),
    )
    if best is None or best.rec.num_reg_images() < 2:
        raise ReconstructionError(_no_model_message(names, refused))
    rec, others, db_path = best.rec, best.others, best.db_path
    cancel.raise_if_cancelled()
    progress(ProgressEvent(STAGE, len(names), len(names), "refining all cameras together"))
    robust_bundle_adjustment(rec, refine_focal_length=not best.fixed_focal)
    if cfg.refine_principal_point and not best.fixed_focal:
        refined = refine_principal_point(rec)
        if refined is not None:
            rec = refined
    check = check_model(rec, db_path)
    dropped = _drop_contradicted(rec, check)
    if dropped:
        logger.warning(
            "%d photos left out: their placement contradicts their own matches (%s)",
            len(dropped),
            ", ".join(sorted(dropped)[:MAX_NAMED]),
        )
        check = check_model(rec, db_path)
    unregistered = _explain_unregistered(db_path, names, rec, others)
    unregistered.update(dropped)
    placed = len(names) - len(unregistered)
    if placed < cfg.min_placed_fraction * len(names):
        for line in grouped(unregistered, MAX_NAMED):  # one line for many photos
            logger.warning("%s", line)
        raise ReconstructionError(_too_few_message(names, placed, unregistered))
    out = run_folder.sparse_model_dir(run_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rec.write_binary(str(out))
    model = SparseModel(
        path=out,
        cameras=cameras_from_reconstruction(rec),
        points=points_from_reconstruction(rec),
        unregistered=unregistered,
        attempts=tuple(summaries),
        visibility=visibility_from_reconstruction(rec),
        check={
            **check.to_report(),
            "mapper": best.mapper,
            "silhouette_agreement": None if best.silhouette is None else round(best.silhouette, 3),
            "product_only": best.product_only,
        },
    )
    progress(
        ProgressEvent(
            STAGE,
            len(names),
            len(names),
            f"{model.num_registered} of {len(names)} photos placed",
            model,
        )
    )
    return model
