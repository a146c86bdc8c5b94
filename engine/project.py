"""Projects: named image sets, their settings and their run folders, saved as ``project.json``.

A project is a folder holding ``project.json`` and one run folder per image set
(``runs/<slug>/``, the run folder contract of ARCHITECTURE.md). The manifest keeps the photos'
own paths (they are never copied or changed), the images left out of each set, each set's
settings and how its last run ended. Reopening a project shows each set's last result straight
from its run folder (:meth:`Project.last_result`) without computing anything.

An unsaved project keeps its run folders in a temporary folder: ``~/Vitrine/unsaved/project-*``
(or ``$VITRINE_UNSAVED_DIR/project-*``; the system temporary folder when neither can be
created). Saving it moves the run folders into the chosen folder; :meth:`Project.discard`
deletes the temporary folder when the user closes the project without saving.

Everything here is plain, fast Python for the GUI thread; listing folders goes by file
extension only (ingest sniffs the content later, in the run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import run_folder as rf
from engine.config import PRESETS, IngestConfig, PipelineConfig
from engine.errors import InputError, OutputError
from engine.export import write_bytes_atomic
from engine.export.summary import mask_failures, preflight_status
from engine.io import (
    IMAGE_EXTENSIONS,
    RAW_EXTENSIONS,
    ImageReadError,
    classify,
    probe,
    read_image,
    write_png,
)
from engine.io.decode import read_head
from engine.options import RunOptions, pipeline_config
from engine.stages.ingest import IGNORED_NAMES, MASKS_FOLDER, image_names, is_mask_file, natural_key
from engine.types import CameraPose, Mesh, PointCloud

logger = logging.getLogger(__name__)

#: Name of the manifest inside a project folder.
MANIFEST = "project.json"
#: Version of the manifest format this code writes; newer manifests are refused.
FORMAT_VERSION = 1
#: Extensions listed as photos when a folder is expanded (content is checked by ingest).
PHOTO_EXTENSIONS = IMAGE_EXTENSIONS | RAW_EXTENSIONS
#: How an image set's last run may have ended.
STATUSES = ("new", "running", "finished", "failed", "cancelled")
#: Environment variable overriding where unsaved projects keep their run folders.
UNSAVED_ENV = "VITRINE_UNSAVED_DIR"

_MASK_SCALE_FIELDS = (
    "auto_masks",
    "marker_size_mm",
    "known_dimension",
    "known_dimension_mm",
    "known_distance_mm",
    "known_points",
)
_SET_FIELDS = (
    "preset",
    "device",
    "depth_model",
    "no_depth_prior",
    *_MASK_SCALE_FIELDS,
    "last_status",
    "last_message",
)
#: Product dimensions a known size can name (``ScaleConfig.known_dimension``).
DIMENSIONS = ("width", "depth", "height")
#: Folder of a project holding the masks the user painted, one subfolder per image set.
PAINTED_MASKS = "masks"


@dataclass
class ImageSet:
    """One product's photos and settings inside a project.

    Attributes
    ----------
    name
        Unique name within the project (shown in the sets list).
    sources
        Photo files and folders as given (absolute path strings), in the order added.
    excluded
        Image files (absolute path strings) left out of the next run.
    preset
        Preset name (``preview``, ``standard``, ``high``).
    device
        ``auto``, ``cpu`` or ``cuda``.
    depth_model
        Depth network (Hugging Face id or local folder); None uses the preset's default.
    no_depth_prior
        True turns the depth prior off.
    auto_masks
        Compute automatic product masks (``MaskConfig.enabled``).
    mask_disabled
        Image files (absolute path strings) whose mask is switched off.
    painted_masks
        Image file (absolute path string) -> file of the mask the user painted, relative to
        the set's painted-mask folder (:meth:`Project.mask_dir`).
    marker_size_mm
        Side of the printed ArUco markers in the photos (0: none).
    known_dimension, known_dimension_mm
        A product size the user entered (``width``, ``depth`` or ``height``; "" for none).
    known_distance_mm, known_points
        A distance the user entered between two points picked in the 3D view (reconstruction
        coordinates; no points for none).
    run_dir
        The set's run folder, relative to the project folder (``runs/<slug>``).
    last_status
        How the last run ended: one of :data:`STATUSES`.
    last_message
        The last run's message (error text, "12 of 14 photos placed" ...).
    """

    name: str
    sources: list[str] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)
    preset: str = "standard"
    device: str = "auto"
    depth_model: str | None = None
    no_depth_prior: bool = False
    auto_masks: bool = True
    mask_disabled: set[str] = field(default_factory=set)
    painted_masks: dict[str, str] = field(default_factory=dict)
    marker_size_mm: float = 0.0
    known_dimension: str = ""
    known_dimension_mm: float = 0.0
    known_distance_mm: float = 0.0
    known_points: list[list[float]] = field(default_factory=list)
    run_dir: str = ""
    last_status: str = "new"
    last_message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (``excluded`` sorted)."""
        data = dataclasses.asdict(self)
        data["excluded"] = sorted(self.excluded)
        data["mask_disabled"] = sorted(self.mask_disabled)
        data["painted_masks"] = dict(sorted(self.painted_masks.items()))
        return data

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ImageSet:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, missing ones take defaults.

        Raises
        ------
        ValueError
            When a field has the wrong type.
        """
        known = {f.name for f in dataclasses.fields(ImageSet)}
        values = {k: v for k, v in data.items() if k in known}
        if not isinstance(values.get("name"), str) or not values["name"]:
            raise ValueError("an image set has no name")
        for key in ("sources", "excluded", "mask_disabled"):
            if not isinstance(values.get(key, []), list) or not all(
                isinstance(v, str) for v in values.get(key, [])
            ):
                raise ValueError(f"image set {values['name']!r}: '{key}' is not a list of paths")
        values["sources"] = list(values.get("sources", []))
        values["excluded"] = set(values.get("excluded", []))
        values["mask_disabled"] = set(values.get("mask_disabled", []))
        painted = values.get("painted_masks", {})
        if not isinstance(painted, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _safe_relative(v)
            for k, v in painted.items()
        ):
            raise ValueError(f"image set {values['name']!r}: 'painted_masks' is damaged")
        values["painted_masks"] = dict(painted)
        try:
            _check_settings({k: values[k] for k in _MASK_SCALE_FIELDS if k in values})
        except ValueError as exc:
            raise ValueError(f"image set {values['name']!r}: {exc}") from exc
        for key in ("marker_size_mm", "known_dimension_mm", "known_distance_mm"):
            if key in values:
                values[key] = float(values[key])
        if "known_points" in values:
            values["known_points"] = [[float(v) for v in p] for p in values["known_points"]]
        if values.get("last_status", "new") not in STATUSES:
            values["last_status"] = "new"
        # A run cannot still be going in a project that was just opened.
        if values.get("last_status") == "running":
            values["last_status"] = "cancelled"
            values["last_message"] = "Interrupted: the app closed during the run."
        return ImageSet(**values)


def _safe_relative(path: str) -> bool:
    parts = Path(path).parts
    return bool(parts) and not Path(path).is_absolute() and ".." not in parts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_settings(settings: dict[str, Any]) -> None:
    """Raise ValueError for a setting of the wrong type or out of range."""
    if "preset" in settings and settings["preset"] not in PRESETS:
        raise ValueError(f"Unknown preset {settings['preset']!r}.")
    if "last_status" in settings and settings["last_status"] not in STATUSES:
        raise ValueError(f"Unknown status {settings['last_status']!r}.")
    for key in ("auto_masks", "no_depth_prior"):
        if key in settings and not isinstance(settings[key], bool):
            raise ValueError(f"'{key}' must be true or false.")
    for key in ("marker_size_mm", "known_dimension_mm", "known_distance_mm"):
        if key in settings and (not _is_number(settings[key]) or settings[key] < 0):
            raise ValueError(f"'{key}' must be a length in millimetres (0 or more).")
    if "known_dimension" in settings and settings["known_dimension"] not in ("", *DIMENSIONS):
        raise ValueError(
            f"Unknown dimension {settings['known_dimension']!r}: width, depth or height."
        )
    if "known_points" in settings:
        points = settings["known_points"]
        if (
            not isinstance(points, (list, tuple))
            or len(points) not in (0, 2)
            or not all(
                isinstance(p, (list, tuple)) and len(p) == 3 and all(_is_number(v) for v in p)
                for p in points
            )
        ):
            raise ValueError("'known_points' must be two points of three coordinates, or none.")


def unsaved_root() -> Path:
    """Folder where unsaved projects keep their run folders (see the module docstring)."""
    env = os.environ.get(UNSAVED_ENV)
    return Path(env) if env else Path.home() / "Vitrine" / "unsaved"


def _make_temp_folder() -> Path:
    root = unsaved_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="project-", dir=root))
    except OSError:
        logger.info("Cannot create %s; unsaved runs go to the system temporary folder.", root)
        return Path(tempfile.mkdtemp(prefix="vitrine-project-"))


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.").lower()
    return slug[:60] or "set"


def _abs(path: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _is_photo_name(path: Path) -> bool:
    name = path.name.lower()
    return (
        path.suffix.lower() in PHOTO_EXTENSIONS
        and not name.startswith(".")
        and name not in IGNORED_NAMES
        and not is_mask_file(path)
    )


def _list_folder(folder: Path) -> list[Path]:
    """Photo-named files under ``folder`` (recursive; hidden and ``masks`` folders skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d.lower() != MASKS_FOLDER]
        found.extend(Path(dirpath) / f for f in filenames if _is_photo_name(Path(dirpath) / f))
    return found


# ---------------------------------------------------------------------- screening new photos

#: Photo formats named when a file is refused.
READABLE_FORMATS = "JPEG, PNG, TIFF, WebP, HEIC and camera RAW"
#: Trailer of a complete PNG file (the IEND chunk with its CRC).
_PNG_END = b"IEND\xaeB`\x82"


@dataclass(frozen=True)
class Refused:
    """A file or folder that was not added, or a file in an added folder a run will skip.

    Attributes
    ----------
    path
        Absolute path (as given when it does not exist).
    reason
        Why, in plain words (the engine's reasons where it has one).
    """

    path: str
    reason: str


@dataclass
class Screening:
    """What :func:`screen_paths` made of files and folders about to be added.

    Attributes
    ----------
    sources
        Absolute paths to add: photos that look usable, and folders holding photo files.
    refused
        Paths given that are not added (missing, not photos, damaged, folders without photos).
    skipped
        Files inside the folders added that cannot be used: a run skips them.
    """

    sources: list[str] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    skipped: list[Refused] = field(default_factory=list)

    def message(self, name: str | None, max_listed: int = 10) -> tuple[str, str]:
        """What cannot be used, why, and what to do: ``(message, details)`` for the user.

        ``name``: the set the other photos went to (None when none was added); the message
        names at most ``max_listed`` files, the details all of them.
        """
        lines = []
        listed = [*self.refused, *self.skipped]
        for entry in listed[:max_listed]:
            lines.append(f"• {Path(entry.path).name} — {entry.reason}")
        if len(listed) > max_listed:
            lines.append(f"• … and {len(listed) - max_listed} more (see the details).")
        details = [f"{entry.path}: {entry.reason}" for entry in listed]
        parts = []
        if self.refused:
            n = len(self.refused)
            where = f" to '{name}'" if name else ""
            parts.append(f"{n} of the {n + len(self.sources)} item(s) were not added{where}.")
        if self.skipped:
            parts.append(
                f"{len(self.skipped)} file(s) in the folder(s) added cannot be used: a run "
                "skips them."
            )
        if not self.sources:
            parts.append("Nothing was added.")
        advice = (
            f"Vitrine reads {READABLE_FORMATS} photos. Replace damaged or incomplete files "
            "with the originals from the camera (or export them again as JPEG), and leave out "
            "files that are not photos."
        )
        if self.sources:
            advice += " The other photos were added."
        message = " ".join(parts) + "\n\n" + "\n".join(lines) + "\n\n" + advice
        return message, "\n".join(details)


def _ends_early(path: Path, kind: str) -> bool:
    """Whether a JPEG or PNG lacks its end marker (a hint of a truncated copy; cheap)."""
    if kind not in ("jpeg", "png"):
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 64))
            tail = fh.read().rstrip(b"\x00")  # some cameras pad after the end marker
    except OSError:
        return True
    return not tail.endswith(b"\xff\xd9" if kind == "jpeg" else _PNG_END)


def photo_problem(path: Path | str, max_pixels: int = IngestConfig().max_pixels) -> str:
    """Why a photo file cannot be used, or ``""`` when it looks usable.

    Fast enough for the GUI thread: the first bytes, the header and the last bytes are read;
    only a JPEG or PNG without its end marker is decoded (small, to tell a truncated copy from
    one with data after the image). RAW files are checked by their first bytes only.

    Parameters
    ----------
    path
        The file.
    max_pixels
        Photos with more pixels are refused (ingest's decompression-bomb limit).

    Returns
    -------
    str
        The reason (ingest's wording), or ``""``.
    """
    path = Path(path)
    try:
        kind = classify(path, read_head(path))
        if not kind.decoder:
            return kind.reason
        if kind.decoder == "raw":
            return ""
        info = probe(path)
        width, height = info.original_width or 0, info.original_height or 0
        if width * height > max_pixels:
            return (
                f"too large ({width} x {height} = {width * height / 1e6:.0f} megapixels, "
                f"the limit is {max_pixels / 1e6:.0f}): downscale it first"
            )
        if _ends_early(path, kind.kind):
            read_image(path, max_size=64, max_pixels=max_pixels)
    except ImageReadError as exc:
        return exc.reason
    except MemoryError:
        return "too large to decode in the memory available"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return ""


def _other_files(folder: Path, limit: int = 3) -> tuple[int, list[str]]:
    """Number of visible files under ``folder`` and the names of the first ``limit``."""
    count, names = 0, []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in sorted(filenames):
            if name.startswith(".") or name.lower() in IGNORED_NAMES:
                continue
            count += 1
            if len(names) < limit:
                names.append(os.path.relpath(os.path.join(dirpath, name), folder))
    return count, names


def screen_paths(
    paths: list[str | os.PathLike[str]], max_pixels: int = IngestConfig().max_pixels
) -> Screening:
    """Sort files and folders about to be added into what to add and what to refuse.

    A file is added when it is a photo that looks usable (:func:`photo_problem`); a folder
    when it holds photo files, even if some are damaged (they are listed in ``skipped``: the
    photos stay the user's, and a run skips them with the same reason). Missing paths,
    non-photo files, damaged photos and folders without photos are refused with a reason.

    Parameters
    ----------
    paths
        Files and folders (dropped, pasted or chosen).
    max_pixels
        Ingest's pixel limit.

    Returns
    -------
    Screening
        In the order given; nothing is raised.
    """
    result = Screening()
    for given in paths:
        path = Path(_abs(given))
        if not path.exists():
            result.refused.append(Refused(str(given), "does not exist (moved or renamed?)"))
        elif path.is_dir():
            files = _list_folder(path)
            if not files:
                count, names = _other_files(path)
                reason = f"holds no photos ({READABLE_FORMATS} files)"
                if count:
                    shown = ", ".join(names) + (", …" if count > len(names) else "")
                    reason += f"; it holds {count} other file(s): {shown}"
                result.refused.append(Refused(str(path), reason))
                continue
            result.sources.append(str(path))
            for file in sorted(files, key=lambda p: natural_key(str(p))):
                problem = photo_problem(file, max_pixels)
                if problem:
                    result.skipped.append(Refused(str(file), problem))
        elif path.suffix.lower() not in PHOTO_EXTENSIONS:
            label = path.suffix.lower() or "no extension"
            reason = f"not a photo file ({label})"
            problem = photo_problem(path, max_pixels)
            if problem.startswith("not an image") or problem.startswith("empty"):
                reason = f"{problem} — {reason}"
            result.refused.append(Refused(str(path), reason))
        else:
            problem = photo_problem(path, max_pixels)
            if problem:
                result.refused.append(Refused(str(path), problem))
            else:
                result.sources.append(str(path))
    return result


class ProjectMasks:
    """The masks of a project's photos: painted by the user, switched off, or the last run's.

    Part of :class:`Project` (which provides ``image_set``, ``inputs_for_run``, ``run_dir``,
    ``last_report``, ``_base``, ``_touch`` and ``_set_changed``); painted masks live in the
    project folder under ``masks/<run folder name>/``, named as the run names the photos.
    """

    def run_names(self, set_name: str, extra: Path | str | None = None) -> dict[str, str]:
        """Image path -> the name the engine gives it in the next run (see ingest).

        ``extra``: a photo to name as if it were one of the inputs (a photo left out).
        """
        files = self.inputs_for_run(set_name)
        if extra is not None:
            key = os.path.normcase(_abs(extra))
            if all(os.path.normcase(str(f)) != key for f in files):
                files.append(Path(_abs(extra)))
        return {str(path): name for name, path in image_names(files).items()}

    def image_name(self, set_name: str, path: Path | str) -> str:
        """The engine's name of an image of the set (``IMG_1.jpg``, ``left/IMG_1.jpg`` ...)."""
        return self.run_names(set_name, path)[_abs(path)]

    def mask_dir(self, set_name: str) -> Path:
        """Folder of the masks painted for a set: ``<project>/masks/<run folder name>``.

        Named after the set's run folder, which keeps its name when the set is renamed.
        """
        return self.base_folder() / PAINTED_MASKS / Path(self.image_set(set_name).run_dir).name

    def painted_mask_path(self, set_name: str, path: Path | str) -> Path | None:
        """The mask painted for a photo, when there is one on disk."""
        rel = self.image_set(set_name).painted_masks.get(_abs(path))
        if rel is None:
            return None
        file = self.mask_dir(set_name) / rel
        return file if file.is_file() else None

    def save_painted_mask(self, set_name: str, path: Path | str, mask: np.ndarray) -> Path:
        """Store a mask painted for a photo (atomically); the next run uses it.

        Parameters
        ----------
        set_name
            The image set.
        path
            The photo.
        mask
            ``(H, W)`` bool or uint8 (non-zero = product) at the photo's working size.

        Returns
        -------
        Path
            ``mask_dir/<image name>.png`` (0 / 255).

        Raises
        ------
        ValueError
            When ``mask`` is not a 2-D array.
        OutputError
            When the file cannot be written.
        """
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.size == 0:
            raise ValueError(f"A mask is a 2-D array, got shape {mask.shape}.")
        image_set = self.image_set(set_name)
        key = _abs(path)
        rel = f"{self.image_name(set_name, key)}.png"
        old = image_set.painted_masks.get(key)
        target = write_png(
            self.mask_dir(set_name) / rel, np.where(mask > 0, 255, 0).astype(np.uint8)
        )
        if old is not None and old != rel:
            (self.mask_dir(set_name) / old).unlink(missing_ok=True)
        image_set.painted_masks[key] = rel
        self._touch()
        self._set_changed(set_name)
        return target

    def remove_painted_mask(self, set_name: str, path: Path | str) -> None:
        """Forget the mask painted for a photo (the next run computes one again)."""
        image_set = self.image_set(set_name)
        rel = image_set.painted_masks.pop(_abs(path), None)
        if rel is None:
            return
        (self.mask_dir(set_name) / rel).unlink(missing_ok=True)
        self._touch()
        self._set_changed(set_name)

    def set_mask_disabled(self, set_name: str, path: Path | str, disabled: bool) -> None:
        """Switch a photo's mask off (``disabled``: the whole photo is used) or on again."""
        self._set_member(set_name, self.image_set(set_name).mask_disabled, path, disabled)

    def _set_member(
        self, set_name: str, members: set[str], path: Path | str | os.PathLike[str], on: bool
    ) -> None:
        key = _abs(path)
        if on == (key in members):
            return
        if on:
            members.add(key)
        else:
            members.discard(key)
        self._touch()
        self._set_changed(set_name)

    def is_mask_disabled(self, set_name: str, path: Path | str) -> bool:
        """Whether a photo's mask is switched off."""
        return _abs(path) in self.image_set(set_name).mask_disabled

    def run_mask_path(self, set_name: str, path: Path | str) -> Path | None:
        """The mask the last run used for a photo (``work/masks/<name>.png``), when there is one."""
        return self._run_file(set_name, path, rf.run_mask)

    def product_mask_path(self, set_name: str, path: Path | str) -> Path | None:
        """The product the last run found in 3D, seen from a photo, when there is one.

        That is the mesh's silhouette, ``work/mesh/product_masks/<name>.png``.
        """
        return self._run_file(set_name, path, rf.product_mask)

    def working_copy(self, set_name: str, path: Path | str) -> Path | None:
        """The last run's working copy of a photo (``work/images/<name>``), when there is one."""
        return self._run_file(set_name, path, rf.working_copy)

    def _run_file(
        self, set_name: str, path: Path | str, where: Callable[[Path, str], Path]
    ) -> Path | None:
        """``where(run folder, the photo's name in the run)`` when that file exists."""
        try:
            name = self.image_name(set_name, path)
        except KeyError:
            return None
        file = where(self.run_dir(set_name), name)
        return file if file.is_file() else None

    def mask_states(self, set_name: str) -> dict[str, str]:
        """Image path -> ``"painted"``, ``"auto"`` (the last run's mask) or ``"off"``.

        Photos with no mask at all are not listed, nor those the last run could not mask (the
        engine writes an all-white mask file for them: COLMAP needs one per photo).
        """
        image_set = self.image_set(set_name)
        names = self.run_names(set_name)
        run_masks = rf.run_masks_dir(self.run_dir(set_name))
        listed = run_masks.is_dir()
        failed = set(mask_failures(self.last_report(set_name))) if listed else set()
        states = {}
        for path, name in names.items():
            if path in image_set.mask_disabled:
                states[path] = "off"
            elif (
                path in image_set.painted_masks
                and (self.mask_dir(set_name) / image_set.painted_masks[path]).is_file()
            ):
                states[path] = "painted"
            elif listed and name not in failed and (run_masks / f"{name}.png").is_file():
                states[path] = "auto"
        return states

    def _sync_painted(self, set_name: str, names: dict[str, str]) -> bool:
        """Rename painted masks whose photo's engine name changed; True when any is in use.

        A photo's name depends on the inputs' common folder, so adding a folder from elsewhere
        can rename every photo; the painted masks follow.
        """
        image_set = self.image_set(set_name)
        folder = self.mask_dir(set_name)
        in_use = False
        for path, rel in list(image_set.painted_masks.items()):
            if path not in names or not (folder / rel).is_file():
                continue
            want = f"{names[path]}.png"
            if rel != want:
                target = folder / want
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(folder / rel, target)
                except OSError as exc:
                    raise OutputError(
                        f"Cannot rename the painted mask '{folder / rel}' to '{target}' "
                        f"({exc.strerror or exc}). Check that the project folder is writable."
                    ) from exc
                image_set.painted_masks[path] = want
                self._touch()
            in_use = True
        return in_use


class Project(ProjectMasks):
    """Image sets, their settings and run folders; saved as ``folder/project.json``.

    Parameters
    ----------
    folder
        The project folder, or None for a new unsaved project (see the module docstring).

    Changes are announced through three hooks, no-ops here, that :class:`gui.project.Project`
    turns into Qt signals: :meth:`_sets_changed` (a set was added, removed or renamed),
    :meth:`_set_changed` (the named set's photos, exclusions, settings or status changed) and
    :meth:`_modified_changed` (the project got unsaved changes, or was saved).
    """

    def __init__(self, folder: Path | str | None = None) -> None:
        self.folder: Path | None = Path(folder).resolve() if folder is not None else None
        self._sets: dict[str, ImageSet] = {}
        self._temp_folder: Path | None = None
        self._modified = False

    # ------------------------------------------------------------------ change hooks

    def _sets_changed(self) -> None:
        """Hook: the list of sets changed."""

    def _set_changed(self, name: str) -> None:
        """Hook: the set called ``name`` changed."""

    def _modified_changed(self, modified: bool) -> None:
        """Hook: the project got unsaved changes (True) or was saved (False)."""

    # ------------------------------------------------------------------ sets

    @property
    def sets(self) -> list[ImageSet]:
        """The image sets, in order."""
        return list(self._sets.values())

    @property
    def set_names(self) -> list[str]:
        """Names of the image sets, in order."""
        return list(self._sets)

    def has_set(self, name: str) -> bool:
        """Whether a set is called ``name``."""
        return name in self._sets

    def image_set(self, name: str) -> ImageSet:
        """The set called ``name``.

        Raises
        ------
        KeyError
            When there is none.
        """
        try:
            return self._sets[name]
        except KeyError:
            raise KeyError(f"No image set called {name!r} in this project.") from None

    def unique_name(self, base: str = "Product") -> str:
        """``base``, or ``base 2``, ``base 3`` ... whichever no set uses yet."""
        base = base.strip() or "Product"
        if base not in self._sets:
            return base
        n = 2
        while f"{base} {n}" in self._sets:
            n += 1
        return f"{base} {n}"

    def add_set(self, name: str | None = None, **settings: Any) -> ImageSet:
        """Add an empty image set and return it.

        Parameters
        ----------
        name
            Wanted name; made unique (``name 2`` ...) when taken. None: ``Product``.
        **settings
            Initial values of ImageSet settings (``preset``, ``device`` ...).
        """
        name = self.unique_name(name or "Product")
        used = {s.run_dir for s in self._sets.values()}
        slug, run_dir, n = _slug(name), "", 1
        while not run_dir or run_dir in used or self._run_dir_taken(run_dir):
            run_dir = f"runs/{slug}" if n == 1 else f"runs/{slug}-{n}"
            n += 1
        image_set = ImageSet(name=name, run_dir=run_dir)
        self._sets[name] = image_set
        if settings:
            self._apply(image_set, settings)
        self._touch()
        self._sets_changed()
        return image_set

    new_set = add_set

    def _run_dir_taken(self, run_dir: str) -> bool:
        # A folder left by a removed set is not reused: its results belong to that set.
        base = self.folder or self._temp_folder
        return base is not None and (base / run_dir).exists()

    def remove_set(self, name: str, delete_results: bool = False) -> None:
        """Remove a set; its run folder is kept unless ``delete_results``."""
        image_set = self.image_set(name)
        del self._sets[name]
        if delete_results:
            shutil.rmtree(self.base_folder() / image_set.run_dir, ignore_errors=True)
            shutil.rmtree(
                self.base_folder() / PAINTED_MASKS / Path(image_set.run_dir).name,
                ignore_errors=True,
            )
        self._touch()
        self._sets_changed()

    def rename(self, old: str, new: str) -> None:
        """Rename a set (its run folder keeps its path).

        Raises
        ------
        ValueError
            When ``new`` is empty or another set has that name.
        """
        new = new.strip()
        image_set = self.image_set(old)
        if new == old:
            return
        if not new:
            raise ValueError("A set needs a name.")
        if new in self._sets:
            raise ValueError(f"Another set is already called '{new}': choose another name.")
        self._sets = {(new if k == old else k): v for k, v in self._sets.items()}
        image_set.name = new
        self._touch()
        self._sets_changed()

    def update_set(self, name: str, **settings: Any) -> None:
        """Change settings or status of a set.

        Fields: ``preset``, ``device``, ``depth_model``, ``no_depth_prior``, ``last_status``,
        ``last_message``.

        Raises
        ------
        ValueError
            For an unknown field, preset or status.
        """
        self._apply(self.image_set(name), settings)
        self._touch()
        self._set_changed(name)

    @staticmethod
    def _apply(image_set: ImageSet, settings: dict[str, Any]) -> None:
        unknown = set(settings) - set(_SET_FIELDS)
        if unknown:
            raise ValueError(f"Unknown image-set setting(s): {', '.join(sorted(unknown))}.")
        settings = dict(settings)
        for key in ("marker_size_mm", "known_dimension_mm", "known_distance_mm"):
            if _is_number(settings.get(key)):
                settings[key] = float(settings[key])
        _check_settings(settings)
        if "known_points" in settings:
            settings["known_points"] = [[float(v) for v in p] for p in settings["known_points"]]
        for key, value in settings.items():
            setattr(image_set, key, value)

    # ------------------------------------------------------------------ photos

    def add_paths(self, set_name: str, paths: list[str | os.PathLike[str]]) -> list[str]:
        """Add photo files and/or folders to a set.

        Paths already in the set are ignored, and so are files whose extension is not a photo
        format (folders are listed by extension when the set's images are listed).

        Returns
        -------
        list of str
            The sources actually added (absolute paths).

        Raises
        ------
        InputError
            When a path does not exist.
        """
        image_set = self.image_set(set_name)
        known = {os.path.normcase(s) for s in image_set.sources}
        added = []
        for given in paths:
            path = _abs(given)
            if not os.path.exists(path):
                raise InputError(
                    f"'{given}' does not exist: check the path, or choose the folder that holds "
                    "the photos."
                )
            if os.path.normcase(path) in known:
                continue
            if not os.path.isdir(path) and Path(path).suffix.lower() not in PHOTO_EXTENSIONS:
                logger.info("Not added (not a photo by its extension): %s", path)
                continue
            known.add(os.path.normcase(path))
            image_set.sources.append(path)
            added.append(path)
        if added:
            self._touch()
            self._set_changed(set_name)
        return added

    def remove_source(self, set_name: str, source: str) -> None:
        """Remove one file or folder from a set's sources."""
        image_set = self.image_set(set_name)
        key = os.path.normcase(_abs(source))
        image_set.sources = [s for s in image_set.sources if os.path.normcase(s) != key]
        self._touch()
        self._set_changed(set_name)

    def image_files(self, set_name: str) -> list[Path]:
        """The set's image files: folders expanded recursively, de-duplicated, in natural order.

        Folders are listed by file extension only; missing sources are left out (a moved
        folder shows as an empty set rather than an error here; the run names it).
        """
        seen: dict[str, Path] = {}
        for source in self.image_set(set_name).sources:
            path = Path(source)
            if path.is_dir():
                files = _list_folder(path)
            elif path.is_file():
                files = [path]
            else:
                continue
            for file in files:
                seen.setdefault(os.path.normcase(str(file)), file)
        return sorted(seen.values(), key=lambda p: (natural_key(str(p)), str(p)))

    def set_excluded(self, set_name: str, path: str | os.PathLike[str], excluded: bool) -> None:
        """Leave an image file out of the next run (``excluded`` True) or take it back."""
        self._set_member(set_name, self.image_set(set_name).excluded, path, excluded)

    def is_excluded(self, set_name: str, path: str | os.PathLike[str]) -> bool:
        """Whether an image file is left out of the next run."""
        return _abs(path) in self.image_set(set_name).excluded

    def inputs_for_run(self, set_name: str) -> list[Path]:
        """Image files a run of this set gets: :meth:`image_files` minus the excluded ones."""
        excluded = {os.path.normcase(p) for p in self.image_set(set_name).excluded}
        return [p for p in self.image_files(set_name) if os.path.normcase(str(p)) not in excluded]

    def config_for_run(self, set_name: str, base: PipelineConfig | None = None) -> PipelineConfig:
        """The set's settings as a pipeline configuration.

        Parameters
        ----------
        set_name
            The image set.
        base
            Configuration whose preset, device and depth prior are used (the settings panel's);
            None builds them from the set's settings.

        Returns
        -------
        PipelineConfig
            ``base`` (or the set's preset) with the set's masks (automatic on/off, switched-off
            masks, painted masks) and scale (marker size, known size or distance).
        """
        image_set = self.image_set(set_name)
        names = self.run_names(set_name)
        painted = self._sync_painted(set_name, names)
        scale: dict[str, Any] = {"marker_size_mm": float(image_set.marker_size_mm)}
        if len(image_set.known_points) == 2 and image_set.known_distance_mm > 0:
            scale["known_points"] = tuple(
                tuple(float(v) for v in p) for p in image_set.known_points
            )
            scale["known_distance_mm"] = float(image_set.known_distance_mm)
        else:
            scale["known_points"] = ()
            scale["known_distance_mm"] = 0.0
        if image_set.known_dimension and image_set.known_dimension_mm > 0:
            scale["known_dimension"] = image_set.known_dimension
            scale["known_dimension_mm"] = float(image_set.known_dimension_mm)
        else:
            scale["known_dimension"] = ""
            scale["known_dimension_mm"] = 0.0
        own = base is None  # the set's preset, device and depth prior; else the base's
        options = RunOptions(
            preset=image_set.preset,
            device=image_set.device,
            depth_prior=False if own and image_set.no_depth_prior else None,
            depth_model=image_set.depth_model if own else None,
            auto_masks=image_set.auto_masks,
            painted_masks_dir=str(self.mask_dir(set_name)) if painted else "",
            masks_disabled=tuple(sorted(names[p] for p in image_set.mask_disabled if p in names)),
            scale=scale,
        )
        return pipeline_config(options, base)

    # ------------------------------------------------------------------ run folders

    def base_folder(self) -> Path:
        """The folder runs go into: the project's, or a temporary one while it is unsaved."""
        if self.folder is not None:
            return self.folder
        if self._temp_folder is None:
            self._temp_folder = _make_temp_folder()
            logger.info("Unsaved project: runs go to %s until it is saved.", self._temp_folder)
        return self._temp_folder

    @property
    def is_saved(self) -> bool:
        """Whether the project has a folder of its own."""
        return self.folder is not None

    @property
    def is_modified(self) -> bool:
        """Whether there are changes not saved yet."""
        return self._modified

    def run_dir(self, set_name: str) -> Path:
        """Absolute run folder of a set (inside the project folder, or the temporary one)."""
        return self.base_folder() / self.image_set(set_name).run_dir

    def last_result(
        self, set_name: str
    ) -> tuple[PointCloud | None, dict[str, CameraPose], str | None, dict[str, Any] | None]:
        """What the set's last run left in its run folder (:func:`engine.run_folder.read_result`).

        ``(cloud or None, cameras by image name, "dense" | "sparse" | None, report or None)``;
        never raises: a half-written run shows what there is.
        """
        return rf.read_result(self.run_dir(set_name))

    def last_report(self, set_name: str) -> dict[str, Any] | None:
        """The set's last ``report.json`` (None when missing or unreadable)."""
        return rf.read_report(self.run_dir(set_name))

    def last_mesh(self, set_name: str) -> Mesh | None:
        """The mesh the set's last run left (``work/mesh/mesh.npz``), or None.

        None too when the engine has no mesh stage or the file is unreadable (logged).
        """
        return rf.read_mesh(self.run_dir(set_name))

    def image_status(self, set_name: str) -> dict[str, tuple[str, str]]:
        """Badges from the last run's report: image path -> (status, reason).

        ``"not registered"`` for photos SfM could not place and ``"skipped"`` for files ingest
        refused, each with the report's reason; pre-flight findings (``blurry``,
        ``duplicate``, ``too dark``, ``too bright``) for the others. Images not listed are
        unknown here (the thumbnail loader tells ``ok`` / ``blurry`` / ``unreadable``).
        """
        report = rf.read_report(self.run_dir(set_name))
        if not report:
            return {}
        files = self.inputs_for_run(set_name)
        by_name = image_names(files)
        by_base: dict[str, list[Path]] = {}
        for file in files:
            by_base.setdefault(file.name, []).append(file)

        def find(name: str) -> Path | None:
            if name in by_name:
                return by_name[name]
            same = by_base.get(Path(name).name, [])
            return same[0] if len(same) == 1 else None

        status: dict[str, tuple[str, str]] = {}
        for name, badge in preflight_status(report).items():
            path = find(name)
            if path is not None:
                status[str(path)] = badge
        unregistered = report.get("unregistered") or {}
        if isinstance(unregistered, dict):
            for name, reason in unregistered.items():
                path = find(str(name))
                if path is not None:
                    status[str(path)] = ("not registered", str(reason))
        for entry in report.get("skipped") or []:
            if not isinstance(entry, dict):
                continue
            path = find(str(entry.get("file", "")))
            if path is not None:
                status[str(path)] = ("skipped", str(entry.get("reason", "")))
        return status

    # ------------------------------------------------------------------ saving

    def to_dict(self) -> dict[str, Any]:
        """The manifest's content."""
        return {
            "format": "vitrine-project",
            "version": FORMAT_VERSION,
            "sets": [s.to_dict() for s in self._sets.values()],
        }

    def save(self, folder: Path | str | None = None) -> Path:
        """Write ``project.json`` atomically; a new ``folder`` saves the project there.

        Saving an unsaved project moves its run folders out of the temporary folder; saving
        into another folder ("save as") copies them. Do not save to another folder while a
        run is writing (the GUI disables "save as" during runs).

        Returns
        -------
        Path
            The manifest written.

        Raises
        ------
        ValueError
            When the project has no folder yet and none is given.
        OutputError
            When the folder or the manifest cannot be written (the old manifest is kept).
        """
        if folder is None:
            if self.folder is None:
                raise ValueError("This project has not been saved yet: choose a folder.")
            folder = self.folder
        target = Path(folder).resolve()
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"Cannot create the project folder '{target}' ({exc.strerror or exc}). "
                "Choose a folder you can write to."
            ) from exc
        old_base = self.folder or self._temp_folder
        if old_base is not None and old_base != target:
            self._carry_runs(old_base, target, move=self.folder is None)
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        manifest = write_bytes_atomic(target / MANIFEST, text.encode("utf-8"))
        if self.folder is None and self._temp_folder is not None:
            shutil.rmtree(self._temp_folder, ignore_errors=True)
            self._temp_folder = None
        self.folder = target
        self._modified = False
        self._modified_changed(False)
        return manifest

    def _carry_runs(self, old_base: Path, new_base: Path, move: bool) -> None:
        for image_set in self._sets.values():
            masks = f"{PAINTED_MASKS}/{Path(image_set.run_dir).name}"
            for rel in (image_set.run_dir, masks):
                self._carry(image_set, old_base / rel, new_base / rel, move)

    @staticmethod
    def _carry(image_set: ImageSet, src: Path, dst: Path, move: bool) -> None:
        if not src.is_dir() or dst.exists():
            return
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if move:
                shutil.move(str(src), str(dst))
            else:
                shutil.copytree(src, dst)
        except OSError as exc:
            raise OutputError(
                f"Cannot put the results of '{image_set.name}' into '{dst}' "
                f"({exc.strerror or exc}). Check free disk space and permissions."
            ) from exc

    def discard(self) -> None:
        """Forget an unsaved project's temporary run folders (on close without saving)."""
        if self._temp_folder is not None:
            shutil.rmtree(self._temp_folder, ignore_errors=True)
            self._temp_folder = None

    @classmethod
    def load(cls, folder: Path | str, **kwargs: Any) -> Project:
        """Open the project saved in ``folder`` (``kwargs`` go to the constructor).

        Raises
        ------
        InputError
            When ``project.json`` is missing, damaged or written by a newer Vitrine; the
            message names the file and says what to do.
        """
        folder = Path(folder).resolve()
        project = cls(folder, **kwargs)
        for image_set in read_manifest(folder):
            project._sets[image_set.name] = image_set
        return project

    def _touch(self) -> None:
        if not self._modified:
            self._modified = True
            self._modified_changed(True)


def read_manifest(folder: Path) -> list[ImageSet]:
    """The image sets ``folder/project.json`` holds, checked.

    Raises
    ------
    InputError
        When ``project.json`` is missing, damaged or written by a newer Vitrine; the message
        names the file and says what to do.
    """
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise InputError(
            f"No {MANIFEST} in '{folder}': this is not a Vitrine project folder. Choose the "
            f"folder that holds {MANIFEST}, or create a new project."
        )
    damaged = f"The project file '{manifest}' is damaged"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{damaged} (not text: {exc.reason}). Restore it from a backup, or create a new "
            "project and add the photos again (the photos themselves are untouched)."
        ) from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{damaged} ({exc.msg} at line {exc.lineno}). Restore it from a backup, or "
            "create a new project and add the photos again (the photos themselves are "
            "untouched)."
        ) from exc
    except OSError as exc:
        raise InputError(
            f"Cannot read the project file '{manifest}' ({exc.strerror or exc}). Check "
            "that the folder is still there and readable."
        ) from exc
    if not isinstance(data, dict) or data.get("format") != "vitrine-project":
        raise InputError(
            f"{damaged} (it is not a Vitrine project manifest). Restore it from a backup, "
            "or create a new project."
        )
    version = data.get("version")
    if not isinstance(version, int):
        raise InputError(f"{damaged} (no format version). Restore it from a backup.")
    if version > FORMAT_VERSION:
        raise InputError(
            f"The project file '{manifest}' was saved by a newer Vitrine (format {version}; "
            f"this version reads up to {FORMAT_VERSION}). Update Vitrine to open it."
        )
    image_sets: dict[str, ImageSet] = {}
    sets = data.get("sets", [])
    if not isinstance(sets, list):
        raise InputError(f"{damaged} ('sets' is not a list). Restore it from a backup.")
    for entry in sets:
        try:
            image_set = ImageSet.from_dict(entry if isinstance(entry, dict) else {})
        except (TypeError, ValueError) as exc:
            raise InputError(f"{damaged} ({exc}). Restore it from a backup.") from exc
        if image_set.name in image_sets:
            raise InputError(
                f"{damaged} (two sets are called '{image_set.name}'). Restore it from a backup."
            )
        if (
            not image_set.run_dir
            or Path(image_set.run_dir).is_absolute()
            or (".." in Path(image_set.run_dir).parts)
        ):
            image_set.run_dir = f"runs/{_slug(image_set.name)}"
        image_sets[image_set.name] = image_set
    return list(image_sets.values())
