"""Ingest: photos and folders in, oriented and downscaled working copies out.

Every input file is either used, giving an :class:`~engine.types.ImageRecord` with its EXIF
focal prior, camera group, quality measures and mask, or listed as skipped with a reason in plain
words. Photos are processed one at a time, in natural name order (``img2`` before ``img10``), so
memory stays flat however many there are.

Working copies are fresh PNG files (no EXIF, no GPS) written to ``work_dir/images/<name>`` under
the photo's own name, extension included (``IMG_1.HEIC`` holds PNG data): COLMAP identifies images
by name and reads the content whatever the extension (checked with pycolmap 4.2.1). Masks go to
``work_dir/masks/<name>.png``, COLMAP's convention.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from engine.config import IngestConfig
from engine.errors import InputError, NotEnoughImagesError, OutputError
from engine.io import (
    ExifInfo,
    ImageReadError,
    binarize_mask,
    camera_key,
    clipped_fractions,
    file_sha256,
    focal_prior,
    read_image,
    read_mask,
    sharpness,
    write_png,
)
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.types import ImageRecord, IngestResult, SkippedFile

logger = logging.getLogger(__name__)

STAGE = "ingest"
#: Folders with this name hold masks, never photos.
MASKS_FOLDER = "masks"
#: Files with this stem suffix are masks of the photo with the rest of the stem.
MASK_SUFFIX = "_mask"
#: System clutter that is neither a photo nor worth reporting.
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db"})
#: Skipped files named in an error message before "and N more".
MAX_LISTED = 10
#: Relative tolerance on the mask's aspect ratio versus the photo's.
MASK_RATIO_TOLERANCE = 0.01


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders numbers by value: ``img2`` before ``img10``.

    Parameters
    ----------
    name
        Image name.

    Returns
    -------
    list
        Alternating text and integer parts (case-folded).
    """
    parts = re.split(r"(\d+)", name.casefold())
    return [int(part) if index % 2 else part for index, part in enumerate(parts)]


def is_mask_file(path: Path) -> bool:
    """Whether a file is a mask by its name (``<stem>_mask.<ext>``) or its folder (``masks``).

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    bool
        True for masks.
    """
    return path.stem.lower().endswith(MASK_SUFFIX) or path.parent.name.lower() == MASKS_FOLDER


def _is_hidden(path: Path) -> bool:
    if path.name.startswith("."):
        return True
    # Windows marks hidden files with an attribute instead of a dot.
    attributes = getattr(os.stat(path, follow_symlinks=False), "st_file_attributes", 0)
    return bool(attributes & 0x2)


def find_mask(photo: Path) -> Path | None:
    """Find the mask file of a photo, if there is one.

    Looked for, in order: ``<dir>/<stem>_mask.png``, ``<dir>/masks/<stem>.png``,
    ``<dir>/masks/<name>.png`` (COLMAP's convention), ``<dir>/../masks/<stem>.png`` and
    ``<dir>/../masks/<name>.png`` (``<set>/images/x.jpg`` with ``<set>/masks/x.png``).

    Parameters
    ----------
    photo
        The photo file.

    Returns
    -------
    Path or None
        The first existing candidate.
    """
    folder = photo.parent
    candidates = (
        folder / f"{photo.stem}{MASK_SUFFIX}.png",
        folder / MASKS_FOLDER / f"{photo.stem}.png",
        folder / MASKS_FOLDER / f"{photo.name}.png",
        folder.parent / MASKS_FOLDER / f"{photo.stem}.png",
        folder.parent / MASKS_FOLDER / f"{photo.name}.png",
    )
    return next((c for c in candidates if c.is_file()), None)


def _check_inputs(inputs: Sequence[Path | str], work_dir: Path) -> list[Path]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise InputError(
            "No photos given: choose a folder of product photos, or the photo files themselves."
        )
    owned = [Path(os.path.abspath(work_dir / "images")), Path(os.path.abspath(work_dir / "masks"))]
    paths = []
    for given in inputs:
        path = Path(os.path.abspath(os.path.expanduser(str(given))))
        if not path.exists():
            raise InputError(
                f"'{given}' does not exist: check the path, or choose the folder "
                "that holds the photos."
            )
        if any(path == d or d in path.parents for d in owned):
            raise InputError(
                f"'{given}' is inside the working folder {work_dir}, which Vitrine "
                "overwrites: choose the original photos, or another output folder."
            )
        paths.append(path)
    return paths


def _collect(
    paths: list[Path], recursive: bool, work_dir: Path
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Candidate files (deduplicated, masks and hidden files left out) and unreadable ones."""
    owned = {Path(os.path.abspath(work_dir / "images")), Path(os.path.abspath(work_dir / "masks"))}
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.normcase(str(path))
        if key not in seen:
            seen.add(key)
            files.append(path)

    def walk_error(exc: OSError) -> None:
        problems.append(
            (
                Path(exc.filename or "."),
                f"folder cannot be read ({exc.strerror or exc.__class__.__name__})",
            )
        )

    for path in paths:
        if not path.is_dir():
            if is_mask_file(path):
                logger.debug("%s is a mask; used with its photo", path.name)
            elif path.name.startswith("."):
                problems.append((path, "hidden file"))
            else:
                add(path)
            continue

        for dirpath, dirnames, filenames in os.walk(path, onerror=walk_error):
            folder = Path(dirpath)
            if recursive:
                dirnames[:] = sorted(
                    d
                    for d in dirnames
                    if not d.startswith(".")
                    and d.lower() != MASKS_FOLDER
                    and (folder / d) not in owned
                )
            else:
                dirnames[:] = []
            for filename in sorted(filenames):
                file = folder / filename
                if (
                    filename.lower() in IGNORED_NAMES
                    or filename.lower().startswith(".")
                    or is_mask_file(file)
                ):
                    continue
                try:
                    hidden = _is_hidden(file)
                except OSError:
                    hidden = False  # reported when it is read
                if not hidden:
                    add(file)
    return files, problems


def _common_root(paths: list[Path]) -> Path | None:
    bases = [p if p.is_dir() else p.parent for p in paths]
    try:
        return Path(os.path.commonpath([str(b) for b in bases]))
    except ValueError:  # inputs on different drives
        return None


def _name_files(files: list[Path], root: Path | None) -> list[tuple[str, Path]]:
    """Name files uniquely relative to the inputs' common root (POSIX), in natural order."""
    if root is not None and (root == Path(root.anchor) or root == Path.home()):
        root = None  # unrelated places: names would reveal folders, use file names instead
    named = []
    for file in files:
        name = Path(os.path.relpath(file, root)).as_posix() if root else file.name
        if name.startswith("../") or os.path.isabs(name):
            name = file.name
        named.append((name, file))
    named.sort(key=lambda item: (natural_key(item[0]), item[0]))
    # Collisions happen only case-insensitively or across drives; keep names unique anyway.
    used: set[str] = set()
    unique = []
    for name, file in named:
        candidate, counter = name, 1
        while candidate.casefold() in used:
            counter += 1
            stem, dot, ext = name.rpartition(".")
            candidate = f"{stem}_{counter}.{ext}" if dot and stem else f"{name}_{counter}"
        if candidate != name:
            logger.info("two inputs are named %s; the second is called %s", name, candidate)
        used.add(candidate.casefold())
        unique.append((candidate, file))
    return unique


def image_names(files: list[Path]) -> dict[str, Path]:
    """The names a run gives ``files`` when they are its inputs: name -> file.

    The project uses it to know each photo's name in the run folder before the run.
    """
    return dict(_name_files(list(files), _common_root(list(files)))) if files else {}


def _display_name(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name


def _attach_mask(
    photo: Path, name: str, info: ExifInfo, width: int, height: int, mask_dir: Path
) -> tuple[Path | None, str]:
    """Write the photo's mask at working size; return its path and a warning ("" if none)."""
    target = mask_dir / f"{name}.png"
    source = find_mask(photo)
    if source is None:
        # A mask left by an earlier run under this name would be applied by COLMAP.
        target.unlink(missing_ok=True)
        return None, ""
    label = f"{source.parent.name}/{source.name}"
    try:
        mask = read_mask(source)
    except ImageReadError as exc:
        target.unlink(missing_ok=True)
        return None, f"Mask {label} ignored: {exc.reason}."
    mask_h, mask_w = mask.shape
    photo_w, photo_h = info.original_width or width, info.original_height or height
    expected_h = mask_w * photo_h / photo_w
    if abs(mask_h - expected_h) > max(1.0, MASK_RATIO_TOLERANCE * mask_h):
        target.unlink(missing_ok=True)
        return None, (
            f"Mask {label} ignored: its shape ({mask_w} x {mask_h}) does not match "
            f"the photo {name} ({photo_w} x {photo_h})."
        )
    write_png(target, binarize_mask(mask, width, height), compress_level=6)
    return target, ""


def _ingest_one(
    path: Path, name: str, cfg: IngestConfig, work_dir: Path, first_by_hash: dict[str, str]
) -> tuple[ImageRecord, list[str]]:
    digest = file_sha256(path)
    if digest in first_by_hash:
        raise ImageReadError(path, f"identical to {first_by_hash[digest]}")
    rgb, info = read_image(path, cfg.max_image_size, max_pixels=cfg.max_pixels)
    height, width = rgb.shape[:2]
    longest = max(info.original_width or width, info.original_height or height)
    if cfg.min_side and longest < cfg.min_side:
        raise ImageReadError(
            path,
            f"too small ({info.original_width or width} x {info.original_height or height} "
            f"pixels): a photo needs at least {cfg.min_side} pixels on its longest side; use the "
            "camera's full-size photos, not thumbnails",
        )
    working = write_png(work_dir / "images" / name, rgb)
    sharp = sharpness(rgb)
    dark, bright = clipped_fractions(rgb)
    del rgb
    focal_px, focal_source = focal_prior(info, width, height)
    mask_path, mask_warning = _attach_mask(path, name, info, width, height, work_dir / "masks")
    first_by_hash[digest] = name
    record = ImageRecord(
        name=name,
        source=path,
        working_path=working,
        width=width,
        height=height,
        original_width=info.original_width or width,
        original_height=info.original_height or height,
        camera_key=camera_key(info, width, height),
        focal_px=focal_px,
        focal_source=focal_source,
        make=info.make,
        model=info.model,
        lens=info.lens,
        sharpness=sharp,
        dark_fraction=dark,
        bright_fraction=bright,
        sha256=digest,
        mask_path=mask_path,
        mask_source="file" if mask_path is not None else "",
    )
    # Blur and exposure are judged against the whole set by the pre-flight checks
    # (engine/stages/coverage.py), not photo by photo here.
    warnings: list[str] = []
    if mask_warning:
        warnings.append(mask_warning)
    return record, warnings


def _where(paths: list[Path]) -> str:
    if len(paths) == 1:
        path = paths[0]
        return f"in '{path.name}/'" if path.is_dir() else f"in '{path.name}'"
    return f"among the {len(paths)} inputs given"


def _not_enough(
    count: int, cfg: IngestConfig, paths: list[Path], skipped: list[SkippedFile]
) -> NotEnoughImagesError:
    where = _where(paths)
    if count == 0 and not skipped:
        message = (
            f"No photos found {where}: Vitrine reads JPEG, PNG, TIFF, WebP, HEIC and "
            "camera RAW files. Choose the folder that holds the product photos."
        )
    else:
        head = (
            "No usable photos"
            if count == 0
            else f"Only {count} usable photo{'' if count == 1 else 's'}"
        )
        # A single photo still makes a relief (pipeline); a model needs two or more.
        need = max(2, cfg.min_images)
        message = (
            f"{head} {where}: Vitrine needs at least {need} overlapping photos of the product."
        )
        if skipped:
            listed = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:MAX_LISTED])
            more = len(skipped) - MAX_LISTED
            message += f" Skipped: {listed}" + (f"; and {more} more." if more > 0 else ".")
        message += " Add photos taken all around the product and try again."
    error = NotEnoughImagesError(message)
    error.skipped = tuple(skipped)  # type: ignore[attr-defined]
    error.usable = count  # type: ignore[attr-defined]
    return error


def run(
    inputs: Sequence[Path | str],
    cfg: IngestConfig,
    work_dir: Path,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> IngestResult:
    """Read photos and folders into working copies with EXIF priors, quality and masks.

    Parameters
    ----------
    inputs
        Photo files and/or folders (searched recursively when ``cfg.recursive``). Hidden
        files, ``*_mask.*`` files and ``masks`` folders are not photos; masks are attached to
        their photos instead.
    cfg
        Ingest settings (working size, limits, warning thresholds).
    work_dir
        Folder receiving ``images/`` (working copies) and ``masks/``.
    progress
        Called with a :class:`ProgressEvent` after each file.
    cancel
        Checked before each file.

    Returns
    -------
    IngestResult
        Usable images in natural name order, skipped files with reasons, warnings.

    Raises
    ------
    InputError
        When no inputs are given or one does not exist.
    NotEnoughImagesError
        When fewer than ``cfg.min_images`` photos are usable; its ``skipped`` attribute holds
        the :class:`SkippedFile` list and ``usable`` the count.
    OutputError
        When ``work_dir`` cannot be written.
    Cancelled
        When ``cancel`` is cancelled.
    """
    work_dir = Path(work_dir)
    paths = _check_inputs(inputs, work_dir)
    files, problems = _collect(paths, cfg.recursive, work_dir)
    root = _common_root(paths)
    named = _name_files(files, root)
    skipped = [SkippedFile(_display_name(p, root), reason) for p, reason in problems]
    try:
        (work_dir / "images").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot create the working folder {work_dir / 'images'}: "
            f"{exc.strerror or exc}. Choose a folder you can write to."
        ) from exc

    total = len(named)
    progress(ProgressEvent(STAGE, 0, total, f"reading {total} files"))
    images: list[ImageRecord] = []
    warnings: list[str] = []
    first_by_hash: dict[str, str] = {}
    for index, (name, path) in enumerate(named):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            record, notes = _ingest_one(path, name, cfg, work_dir, first_by_hash)
        except ImageReadError as exc:
            logger.info("skipped %s: %s", name, exc.reason)
            skipped.append(SkippedFile(name, exc.reason))
        except MemoryError:
            logger.warning("skipped %s: out of memory while decoding", name)
            skipped.append(SkippedFile(name, "too large to decode in the memory available"))
        except (InputError, OutputError):
            raise
        except Exception as exc:  # noqa: BLE001 - one odd file must not end the whole run
            logger.exception("unexpected error reading %s", name)
            skipped.append(
                SkippedFile(name, f"could not be read ({exc.__class__.__name__}: {exc})")
            )
        else:
            images.append(record)
            warnings.extend(notes)
            for note in notes:
                logger.warning("%s", note)
            logger.debug(
                "%s: %dx%d, focal %s (%s), sharpness %.0f",
                name,
                record.width,
                record.height,
                record.focal_px,
                record.focal_source,
                record.sharpness,
            )
        progress(ProgressEvent(STAGE, index + 1, total, name))

    if len(images) < cfg.min_images:
        raise _not_enough(len(images), cfg, paths, skipped)
    logger.info("ingest: %d photos usable, %d files skipped", len(images), len(skipped))
    return IngestResult(tuple(images), tuple(skipped), work_dir / "images", tuple(warnings))
