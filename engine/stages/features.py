"""SIFT features for SfM: found once per photo, kept on disk, reused by every attempt.

Two extractors write COLMAP's conventions, so pycolmap's matchers and mappers use either:

- ``colmap``: pycolmap's own SIFT (``extract_features`` on all cores, into a scratch
  database). Used on small photos upsampled (``first_octave=-1``), where its precision shows:
  on the synthetic box its points scattered 0.32 mm about the true faces where OpenCV's
  scattered 0.56 mm, and a plain bottle's cameras came out 0.24 deg off against 0.41.
- ``opencv``: OpenCV's SIFT, 4 times faster on larger photos (0.09 s against 0.36 s per
  1.6 MP photo) with the same photos placed; also on larger photos upsampled for a small
  masked product (:func:`engine.stages.sfm.plan_attempts`). Keypoints are written as
  COLMAP's affine shapes ``x, y, a11, a12, a21, a22`` with pixel centres at ``+0.5``
  (COLMAP's origin is the corner of the first pixel, OpenCV's its centre), descriptors as
  COLMAP's ``L1_ROOT`` normalisation (RootSIFT) scaled by 512 into uint8. OpenCV's SIFT
  always upsamples, so ``first_octave=0`` runs it on the photo halved and scales the
  keypoints back.

``first_octave=-2`` looks one octave finer than COLMAP's upsampling: either extractor runs at
``-1`` on the photo upsampled twice (bicubic) and the keypoints are scaled back. A product a
quarter of a 640 x 480 frame gave 88 keypoints a photo at ``-1`` and about 700 at ``-2``; its
24 views went from a wrong model (14 placed, 41.6 deg off) to all 24 placed at 0.56 deg.

Features are found on the whole photo. A mask (when SfM may use one) only filters the
keypoints, so the same features serve an attempt with masks and one without. Each photo's
features live in ``<cache>/<photo>.<extractor><octave>.npz`` with a key of the photo's size and
time and of the settings; an attempt that needs them again reads them instead of extracting.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.export._atomic import atomic_open

logger = logging.getLogger(__name__)

#: Bump when what is stored changes (the keys of the cache).
CACHE_VERSION = 4
#: OpenCV's contrast threshold is divided by the layers per octave (3): 0.02 gives COLMAP's
#: default peak threshold of 0.02 / 3. OpenCV's default (0.04) found half the features on
#: 1.6 MP photos (2,775 against pycolmap's 5,161).
CONTRAST_THRESHOLD = 0.02
#: COLMAP's peak threshold at ``first_octave=-2`` (its default: 0.02 / 3). The finest look
#: is for plain, low-contrast surfaces: on dino_sparse_ring's white plaster (16 photos at
#: 640 x 480) a third of the default found 3.5 times the keypoints (600 to 1,150 a photo), and
#: with guided matching every pair of neighbours but one verified.
FINEST_PEAK_THRESHOLD = 0.02 / 9
#: Edge threshold, as COLMAP's default.
EDGE_THRESHOLD = 10.0
#: Photos up to this many pixels (after halving for octave 0) get descriptors for all their
#: keypoints in one pass; larger ones are detected, cut to the budget and then described, as
#: describing 22,000 keypoints of an upsampled 1.6 MP photo cost 1.08 s against 0.42 s.
ONE_PASS_PIXELS = 1_000_000
#: Photos per call of COLMAP's extractor (progress and cancellation between calls).
COLMAP_BATCH = 8
#: The octaves the extractors take (see the module's docstring).
OCTAVES = (-2, -1, 0)
#: Grow masks by this many pixels before filtering keypoints: a feature on the product's rim
#: has its centre just outside a tight mask.
MASK_GROW_PX = 8


@dataclass(frozen=True)
class Features:
    """Features of one photo in COLMAP's conventions.

    Attributes
    ----------
    keypoints
        (N, 6) float32: x, y (pixel centres at +0.5) and the affine shape a11, a12, a21, a22.
    descriptors
        (N, 128) uint8 RootSIFT descriptors scaled by 512.
    response
        (N,) float32 detector responses.

    Rows are sorted by the keypoints' scale, largest first: where a photo has more features
    than a budget, the budget keeps the largest, as COLMAP's extractor does. Keeping the
    strongest responses instead placed 7 of kitchen_lego's 25 photos where the largest placed
    19 (the same matcher and mapper): fine-scale features do not survive the change of
    viewpoint between photos.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    response: np.ndarray

    def __len__(self) -> int:
        return len(self.keypoints)

    def first(self, n: int) -> Features:
        """The first ``n`` features, the largest (all when there are fewer)."""
        return Features(self.keypoints[:n], self.descriptors[:n], self.response[:n])

    def inside(self, mask: np.ndarray) -> Features:
        """The features whose centres fall on non-zero pixels of ``mask`` (H, W)."""
        h, w = mask.shape
        x = np.clip(np.floor(self.keypoints[:, 0]).astype(int), 0, w - 1)
        y = np.clip(np.floor(self.keypoints[:, 1]).astype(int), 0, h - 1)
        keep = mask[y, x] > 0
        return Features(self.keypoints[keep], self.descriptors[keep], self.response[keep])


def root_sift_uint8(desc: np.ndarray) -> np.ndarray:
    """OpenCV SIFT descriptors as COLMAP stores them: L1-root normalised, x512, uint8."""
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-12)
    return np.minimum(255.0, np.round(512.0 * np.sqrt(d))).astype(np.uint8)


def sift(
    gray: np.ndarray,
    first_octave: int,
    max_features: int,
) -> Features:
    """SIFT features of a grey image (uint8, H x W) in COLMAP's conventions.

    At most ``max_features``, the largest first. ``first_octave`` is -2 (upsampled four
    times), -1 (upsampled twice) or 0.
    """
    if first_octave not in OCTAVES:
        raise ValueError(f"first_octave must be one of {OCTAVES}, not {first_octave}")
    if first_octave == -2:
        return _scaled(sift(_upsampled(gray), -1, max_features), 0.5)
    scale = 1.0
    img = gray
    if first_octave == 0 and min(gray.shape) >= 32:
        img = cv2.resize(
            gray, (gray.shape[1] // 2, gray.shape[0] // 2), interpolation=cv2.INTER_AREA
        )
        scale = gray.shape[1] / img.shape[1]
    detector = cv2.SIFT_create(
        contrastThreshold=CONTRAST_THRESHOLD,
        edgeThreshold=EDGE_THRESHOLD,
        enable_precise_upscale=True,
    )
    if img.size <= ONE_PASS_PIXELS:
        kps, desc = detector.detectAndCompute(img, None)
    else:
        kps = detector.detect(img, None)
        if len(kps) > max_features:
            kps = sorted(kps, key=lambda k: (-k.size, -k.response))[:max_features]
        kps, desc = detector.compute(img, kps) if kps else ((), None)
    if not kps or desc is None:
        return Features(
            np.zeros((0, 6), np.float32), np.zeros((0, 128), np.uint8), np.zeros(0, np.float32)
        )
    xy = np.array([k.pt for k in kps], np.float64)
    size = np.array([k.size for k in kps], np.float64)
    # OpenCV's angle is in degrees, counter-clockwise on screen (y down): COLMAP's orientation
    # is the clockwise angle in radians.
    theta = -np.deg2rad(np.array([k.angle for k in kps], np.float64))
    response = np.array([k.response for k in kps], np.float32)
    u = (xy + 0.5) * scale
    s = size / 2.0 * scale  # OpenCV's size is twice the keypoint's sigma
    c, sn = s * np.cos(theta), s * np.sin(theta)
    keypoints = np.column_stack([u, c, -sn, sn, c]).astype(np.float32)
    # the largest first; equal sizes by response (deterministic)
    order = np.lexsort((-response, -size))[:max_features]
    return Features(keypoints[order], root_sift_uint8(desc)[order], response[order])


def _upsampled(image: np.ndarray) -> np.ndarray:
    """An image twice as large (bicubic), for ``first_octave=-2``."""
    return cv2.resize(image, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)


def _scaled(feats: Features, factor: float) -> Features:
    """Features of an image resized by ``1 / factor``, in the original image's pixels.

    With pixel centres at +0.5 the corner is the origin, so positions and shapes scale alike.
    """
    kp = feats.keypoints.copy()
    kp[:, :6] *= factor
    return Features(kp, feats.descriptors, feats.response)


def _colmap_batch(
    images: Sequence[tuple[Path, str]],
    first_octave: int,
    max_features: int,
    folder: Path,
    num_octaves: int = 4,
    peak_threshold: float | None = None,
) -> dict[str, Features]:
    """Pycolmap's own SIFT (COLMAP's extractor, all cores) on several photos, largest first.

    Each photo must be ``<one folder>/<its name>`` (names may hold sub-folders). Run through
    ``pycolmap.extract_features`` into a scratch
    database (its threads run without Python's lock; pycolmap's per-image extractor holds it).
    """
    import pycolmap  # here: pycolmap before zlib breaks PNG writing (engine/__init__.py)

    if first_octave not in OCTAVES:
        raise ValueError(f"first_octave must be one of {OCTAVES}, not {first_octave}")
    if first_octave == -2:
        return _colmap_batch_finer(images, max_features, folder)
    folder.mkdir(parents=True, exist_ok=True)
    db_path = folder / f"colmap_sift_{os.getpid()}_{threading.get_ident()}.db"
    db_path.unlink(missing_ok=True)
    opts = pycolmap.FeatureExtractionOptions()
    opts.sift.first_octave = first_octave
    opts.sift.max_num_features = max_features
    opts.sift.num_octaves = num_octaves
    if peak_threshold is not None:
        opts.sift.peak_threshold = peak_threshold
    # names may hold sub-folders: COLMAP reads <root>/<name>
    roots = {Path(str(path)[: -len(name)]) for path, name in images}
    if len(roots) != 1 or any(Path(str(path)).name != Path(name).name for path, name in images):
        raise ValueError("COLMAP's extractor needs every photo at <one folder>/<its name>")
    try:
        pycolmap.extract_features(
            db_path,
            roots.pop(),
            image_names=[name for _, name in images],
            camera_mode=pycolmap.CameraMode.PER_IMAGE,
            extraction_options=opts,
            device=pycolmap.Device.cpu,
        )
        out: dict[str, Features] = {}
        with pycolmap.Database.open(str(db_path)) as db:
            for image in db.read_all_images():
                kp = np.asarray(db.read_keypoints(image.image_id), np.float32).reshape(-1, 6)
                desc = np.asarray(db.read_descriptors(image.image_id).data, np.uint8)
                size = np.hypot(kp[:, 2], kp[:, 4])
                order = np.argsort(-size, kind="stable")[:max_features]
                out[image.name] = Features(
                    kp[order], desc.reshape(-1, 128)[order], np.zeros(len(order), np.float32)
                )
    finally:
        db_path.unlink(missing_ok=True)
    missing = [name for _, name in images if name not in out]
    if missing:
        raise OSError(f"{', '.join(missing[:5])}: could not be read for feature extraction")
    return out


def _colmap_batch_finer(
    images: Sequence[tuple[Path, str]], max_features: int, folder: Path
) -> dict[str, Features]:
    """COLMAP's SIFT at ``first_octave=-2``: on copies upsampled twice, at ``-1``.

    (COLMAP's own ``first_octave=-2`` found fewer keypoints than ``-1``: 36 against 88 a photo
    on a small product at 640 x 480.)
    """
    scratch = folder / f"upsampled_{os.getpid()}_{threading.get_ident()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        copies = []
        for index, (path, _name) in enumerate(images):
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise OSError(f"{path}: could not be read for feature extraction")
            copy = scratch / f"{index}.png"
            copy.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(copy), _upsampled(img)):
                raise OSError(f"{copy}: could not write an upsampled copy (disk full?)")
            copies.append((copy, copy.name))
        # one octave more, so the coarsest features of -1 are still found
        found = _colmap_batch(
            copies, -1, max_features, folder, num_octaves=5, peak_threshold=FINEST_PEAK_THRESHOLD
        )
        return {
            name: _scaled(found[copy_name], 0.5)
            for (_, name), (_, copy_name) in zip(images, copies, strict=True)
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


#: Feature extractors by name (see :class:`FeatureStore`).
EXTRACTORS = ("opencv", "colmap")


def _cache_key(image: Path, first_octave: int, max_features: int, extractor: str) -> int:
    st = image.stat()
    text = (
        f"v{CACHE_VERSION}|{st.st_size}|{st.st_mtime_ns}|{first_octave}|{max_features}|"
        f"{extractor}|{CONTRAST_THRESHOLD}|{EDGE_THRESHOLD}|{cv2.__version__}"
    )
    return zlib.crc32(text.encode())


class FeatureStore:
    """Features of the photos of one run, found once and kept in ``folder``.

    Parameters
    ----------
    folder
        Cache folder (inside the run's work folder).
    max_features
        Features found per photo: the most any attempt asks for. An attempt that asks for
        fewer gets the largest (see :meth:`Features.first`).
    num_threads
        Photos processed at once (-1: all cores).
    """

    def __init__(self, folder: Path, max_features: int, num_threads: int = -1) -> None:
        self.folder = folder
        self.max_features = max_features
        self.num_threads = num_threads if num_threads > 0 else (os.cpu_count() or 1)
        #: Photos whose features were extracted (not read from the cache) by this store.
        self.extracted: list[str] = []

    def path(self, name: str, first_octave: int, extractor: str = "opencv") -> Path:
        """Cache file of one photo's features."""
        return self.folder / f"{name}.{extractor}{first_octave}.npz"

    def _load(self, image: Path, name: str, first_octave: int, extractor: str) -> Features | None:
        path = self.path(name, first_octave, extractor)
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                if int(data["key"]) != _cache_key(
                    image, first_octave, self.max_features, extractor
                ):
                    return None
                return Features(data["keypoints"], data["descriptors"], data["response"])
        except (OSError, ValueError, KeyError):
            logger.debug("feature cache %s unreadable; extracting again", path)
            return None

    def _extract_opencv(self, image: Path, name: str, first_octave: int) -> Features:
        gray = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise OSError(f"{image}: could not be read for feature extraction")
        feats = sift(gray, first_octave, self.max_features)
        self._save(image, name, first_octave, "opencv", feats)
        return feats

    def _save(
        self, image: Path, name: str, first_octave: int, extractor: str, feats: Features
    ) -> None:
        path = self.path(name, first_octave, extractor)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as fh:
            np.savez(
                fh,
                key=np.int64(_cache_key(image, first_octave, self.max_features, extractor)),
                keypoints=feats.keypoints,
                descriptors=feats.descriptors,
                response=feats.response,
            )

    def get(self, image: Path, name: str, first_octave: int, extractor: str = "opencv") -> Features:
        """Features of one photo: from the cache, or extracted and cached."""
        if extractor not in EXTRACTORS:
            raise ValueError(f"unknown feature extractor {extractor!r}; use one of {EXTRACTORS}")
        if extractor == "colmap":
            return self._get_many_colmap([(image, name)], first_octave, None)[name]
        feats = self._load(image, name, first_octave, "opencv")
        if feats is None:
            feats = self._extract_opencv(image, name, first_octave)
            self.extracted.append(name)
        return feats

    def get_many(
        self,
        images: Sequence[tuple[Path, str]],
        first_octave: int,
        on_done: Callable[[str], None] | None = None,
        extractor: str = "opencv",
    ) -> dict[str, Features]:
        """Features of several photos (image path, name), several at a time.

        ``on_done(name)`` is called on the caller's thread after each photo, in order, so it
        may report progress and raise to stop early (e.g. on cancellation).
        """
        if extractor not in EXTRACTORS:
            raise ValueError(f"unknown feature extractor {extractor!r}; use one of {EXTRACTORS}")
        if extractor == "colmap":
            return self._get_many_colmap(images, first_octave, on_done)
        threads = cv2.getNumThreads()
        # One OpenCV thread per photo, photos in parallel: SIFT's own threading scales poorly.
        cv2.setNumThreads(1)
        out: dict[str, Features] = {}
        try:
            with ThreadPoolExecutor(self.num_threads) as pool:
                futures = [
                    pool.submit(self.get, path, name, first_octave, extractor)
                    for path, name in images
                ]
                try:
                    for (_, name), fut in zip(images, futures, strict=True):
                        out[name] = fut.result()
                        if on_done is not None:
                            on_done(name)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
        finally:
            cv2.setNumThreads(threads)
        return out

    def _get_many_colmap(
        self,
        images: Sequence[tuple[Path, str]],
        first_octave: int,
        on_done: Callable[[str], None] | None,
    ) -> dict[str, Features]:
        out: dict[str, Features] = {}
        todo = []
        for path, name in images:
            feats = self._load(path, name, first_octave, "colmap")
            if feats is None:
                todo.append((path, name))
            else:
                out[name] = feats
                if on_done is not None:
                    on_done(name)
        # batches: the granularity of progress and cancellation
        for start in range(0, len(todo), COLMAP_BATCH):
            batch = todo[start : start + COLMAP_BATCH]
            found = _colmap_batch(batch, first_octave, self.max_features, self.folder)
            for path, name in batch:
                out[name] = found[name]
                self._save(path, name, first_octave, "colmap", found[name])
                self.extracted.append(name)
                if on_done is not None:
                    on_done(name)
        return {name: out[name] for _, name in images}
