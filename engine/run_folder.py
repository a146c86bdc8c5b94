"""The run-folder contract in one place: paths, resume state, fingerprints, staged writes, reading.

A run folder (ARCHITECTURE.md, "Run folder contract") holds the outputs a user shares
(``report.json``, ``config.json``, ``sparse/0``, ``dense.ply``, ``mesh.glb`` ...) and a private
``work/`` folder with each stage's intermediate files and ``work/state.json``, which records
which stages finished for which inputs and settings so a crashed or cancelled run resumes from
its last finished stage.

Everything that spells a path inside a run folder, decides whether a stage's earlier result
still holds, or reads a finished run back (the GUI reopening a project, the batch deciding a
product is up to date) lives here. The GUI reads runs only through this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import engine
from engine.config import PipelineConfig
from engine.errors import OutputError
from engine.export.report import scrub_paths, to_jsonable, write_json_atomic
from engine.types import CameraPose, ImageRecord, IngestResult, Mesh, PointCloud, SkippedFile

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- paths

REPORT = "report.json"
#: Where a failed or cancelled run's report goes when the folder holds a finished run: the
#: finished run's report.json (and its viewer, cloud and mesh) stay as they were.
ATTEMPT_REPORT = "report-last-attempt.json"
CONFIG = "config.json"
RUN_LOG = "run.log"
WORK = "work"
STATE_FILE = "state.json"
#: The COLMAP model, relative to the run folder.
SPARSE_MODEL = "sparse/0"
SPARSE_PLY = "sparse.ply"
DENSE_PLY = "dense.ply"
VIEWER = "viewer.html"
#: The mesh stage's own copy of its mesh (compressed arrays), relative to ``work/``.
MESH_FILE = "mesh/mesh.npz"
#: Where the mesh stage leaves the product found in 3D, seen from each photo, under
#: ``work/mesh``.
PRODUCT_MASKS_FOLDER = "product_masks"
#: Ingest's working copies of the photos and the masks stage's masks, under ``work/``.
WORK_IMAGES = "images"
WORK_MASKS = "masks"
#: Files the mesh export writes into the run folder.
MESH_OUTPUTS = (
    "mesh.glb",
    "mesh.obj",
    "mesh.mtl",
    "mesh_texture.png",
    "mesh.usdz",
    "embed.html",
)
#: The exported files report.json lists (with their sizes) when present.
OUTPUTS = (SPARSE_PLY, VIEWER, DENSE_PLY, *MESH_OUTPUTS)
#: Where the export stages its files before they replace the previous run's (under work/).
STAGING = "staging"


def work_dir(out_dir: Path | str) -> Path:
    """``out_dir/work``: the stages' intermediate files (private to the run)."""
    return Path(out_dir) / WORK


def sparse_model_dir(out_dir: Path | str) -> Path:
    """``out_dir/sparse/0``: the COLMAP binary model."""
    return Path(out_dir) / SPARSE_MODEL


def mesh_file(out_dir: Path | str) -> Path:
    """``out_dir/work/mesh/mesh.npz``: the mesh in reconstruction coordinates."""
    return work_dir(out_dir) / MESH_FILE


def working_copy(out_dir: Path | str, name: str) -> Path:
    """Ingest's working copy of the photo the run calls ``name``."""
    return work_dir(out_dir) / WORK_IMAGES / name


def run_masks_dir(out_dir: Path | str) -> Path:
    """The masks the run used, one ``<name>.png`` a photo."""
    return work_dir(out_dir) / WORK_MASKS


def run_mask(out_dir: Path | str, name: str) -> Path:
    """The mask the run used for photo ``name`` (0 / 255, working size)."""
    return run_masks_dir(out_dir) / f"{name}.png"


def product_mask(out_dir: Path | str, name: str) -> Path:
    """The product the run found in 3D (the mesh's silhouette), seen from photo ``name``."""
    return work_dir(out_dir) / "mesh" / PRODUCT_MASKS_FOLDER / f"{name}.png"


# --------------------------------------------------------------------------- fingerprints


def fingerprint(data: Any) -> str:
    """A short, stable hash of JSON-able ``data`` (dataclasses, paths go through ``str``)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def folder_listing(folder: str) -> list[Any]:
    """Relative names and content hashes of a folder's files, sub-folders included.

    A user's repainted masks: a changed stroke must redo the masks and what follows.
    """
    if not folder:
        return []
    root = Path(folder)
    listing = []
    try:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                listing.append([path.relative_to(root).as_posix(), digest])
    except OSError:
        return []
    return listing


def input_key(inputs: Sequence[Path]) -> str:
    """Fingerprint of the photos given (resolved paths, modification times, sizes)."""
    entries = []
    for p in inputs:
        try:
            st = p.stat()
            entries.append([str(p.resolve()), st.st_mtime_ns, st.st_size])
        except OSError:
            entries.append([str(p), None, None])
    return fingerprint(entries)


def run_fingerprint(inputs: Sequence[Path], config: PipelineConfig) -> str:
    """Fingerprint of a run's photos (paths, sizes, times), settings and engine version.

    Two runs with the same fingerprint compute the same thing; a batch uses it to leave
    alone a product that failed for reasons its unchanged photos would give again.
    """
    return fingerprint([input_key(inputs), config.to_dict(), engine.__version__])


def saved_config(config: PipelineConfig, out_dir: Path) -> Any:
    """The settings as config.json holds them (local paths made relative)."""
    clean = scrub_paths(to_jsonable(config.to_dict()), [out_dir.resolve()])
    return json.loads(json.dumps(clean))


def finished_before(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds the report.json of a finished run."""
    try:
        saved = json.loads((Path(out_dir) / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and saved.get("status") == "finished"


def up_to_date(out_dir: Path, inputs: Sequence[Path], config: PipelineConfig) -> bool:
    """Whether ``out_dir`` already holds a finished run of these photos and settings.

    True when report.json says ``finished``, every stage up to the export finished for
    these inputs with this engine version (work/state.json), and config.json equals this
    run's settings: running again would only rewrite the same files.
    """
    out_dir = Path(out_dir)
    if not finished_before(out_dir):
        return False
    try:
        state = json.loads((work_dir(out_dir) / STATE_FILE).read_text(encoding="utf-8"))
        saved = json.loads((out_dir / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    key = state.get("key", {}) if isinstance(state, dict) else {}
    return (
        key.get("inputs") == input_key(inputs)
        and key.get("engine") == engine.__version__
        and "export" in state.get("done", {})
        and saved == saved_config(config, out_dir)
    )


# --------------------------------------------------------------------------- resume state


class RunState:
    """work/state.json: which stages finished, for which inputs and settings.

    Parameters
    ----------
    path
        The state file.
    key
        What every finished stage depends on (inputs, engine version, ingest settings); a
        saved state with another key is ignored and every stage runs again.
    """

    def __init__(self, path: Path, key: dict[str, str]) -> None:
        self.path = path
        self.key = key
        self.done: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                logger.warning("Ignoring an unreadable %s; every stage runs again.", path.name)
                saved = {}
            if saved.get("key") == key:
                self.done = saved.get("done", {})
            elif saved:
                logger.info("Inputs or settings changed since the last run: starting afresh.")

    def get(self, stage: str) -> dict[str, Any] | None:
        """What ``stage`` recorded when it finished (None when it has not)."""
        return self.done.get(stage)

    def resumable(self, stage: str, key: str) -> dict[str, Any] | None:
        """What ``stage`` recorded, when it finished with this ``key`` (else None)."""
        done = self.done.get(stage)
        return done if done is not None and done.get("key") == key else None

    def finish(self, stage: str, info: dict[str, Any]) -> None:
        """Record ``stage`` as finished with ``info`` (written atomically)."""
        self.done[stage] = info
        write_json_atomic(self.path, {"key": self.key, "done": self.done})

    def forget_from(self, stage: str, order: Sequence[str]) -> None:
        """Forget ``stage`` and every stage after it in ``order``."""
        for name in order[order.index(stage) :]:
            self.done.pop(name, None)


def ingest_to_json(result: IngestResult, out_dir: Path) -> dict[str, Any]:
    """An ingest result as state.json keeps it (paths relative to the run folder)."""

    def rel(p: Path | None) -> str | None:
        return None if p is None else os.path.relpath(p, out_dir)

    images = []
    for rec in result.images:
        d = dataclasses.asdict(rec)
        d["source"] = str(rec.source)  # private to the run folder's work/, never exported
        d["working_path"] = rel(rec.working_path)
        d["mask_path"] = rel(rec.mask_path)
        images.append(d)
    return {
        "images": images,
        "skipped": [dataclasses.asdict(s) for s in result.skipped],
        "image_dir": rel(result.image_dir),
        "warnings": list(result.warnings),
    }


def ingest_from_json(data: dict[str, Any], out_dir: Path) -> IngestResult:
    """The ingest result :func:`ingest_to_json` saved."""
    images = []
    for d in data["images"]:
        d = dict(d)
        d["source"] = Path(d["source"])
        d["working_path"] = out_dir / d["working_path"]
        d["mask_path"] = out_dir / d["mask_path"] if d["mask_path"] else None
        images.append(ImageRecord(**d))
    return IngestResult(
        images=tuple(images),
        skipped=tuple(SkippedFile(**s) for s in data["skipped"]),
        image_dir=out_dir / data["image_dir"],
        warnings=tuple(data.get("warnings", ())),
    )


# --------------------------------------------------------------------------- staged writes


class StagedOutputs:
    """The export's files, written aside and put in place together.

    Each file is written into ``work/staging`` (:meth:`path`); :meth:`commit` moves them all
    into the run folder (each move atomic, files written with :mod:`engine.export._atomic`)
    and removes the ones marked with :meth:`remove`. A failed or cancelled export leaves the
    previous run's outputs as they were, never a mix of old and new ones.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.folder = work_dir(out_dir) / STAGING
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._removed: set[str] = set()

    def path(self, name: str) -> Path:
        """Where to write the output ``name`` now."""
        self._removed.discard(name)
        return self.folder / name

    def remove(self, name: str) -> None:
        """Mark the output ``name`` as not part of this run (an earlier run's is deleted)."""
        (self.folder / name).unlink(missing_ok=True)
        self._removed.add(name)

    def commit(self) -> None:
        """Move every staged file into the run folder; delete the removed ones."""
        try:
            for path in sorted(self.folder.iterdir()):
                os.replace(path, self.out_dir / path.name)
            for name in self._removed:
                (self.out_dir / name).unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(
                f"Cannot put the exported files into '{self.out_dir}' ({exc.strerror or exc}). "
                "Check free disk space and permissions, then run again: finished stages are kept."
            ) from exc
        self.discard()

    def discard(self) -> None:
        """Forget what was staged (the run folder is left as it was)."""
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def staged_outputs(out_dir: Path) -> Iterator[StagedOutputs]:
    """Stage the export's files; commit them when the block ends normally, else drop them."""
    staged = StagedOutputs(out_dir)
    try:
        yield staged
    except BaseException:
        staged.discard()
        raise
    staged.commit()


# --------------------------------------------------------------------------- reading a run back


def read_report(run: Path) -> dict[str, Any] | None:
    """A run folder's report.json (None when missing or unreadable; logged)."""
    path = Path(run) / REPORT
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("Cannot read %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def read_result(
    run: Path,
) -> tuple[PointCloud | None, dict[str, CameraPose], str | None, dict[str, Any] | None]:
    """What a run left in its run folder.

    Reads ``dense.ply`` (else ``sparse.ply``, else the points of ``sparse/0``), the cameras
    of ``sparse/0`` and ``report.json``. Files that are missing or unreadable are skipped
    (logged), never raised: a half-written run shows what there is.

    Returns
    -------
    tuple
        ``(cloud or None, cameras by image name, "dense" | "sparse" | None, report or None)``.
    """
    from engine.export.ply import read_ply

    run = Path(run)
    report = read_report(run)
    cameras: dict[str, CameraPose] = {}
    sparse_points: PointCloud | None = None
    model = sparse_model_dir(run)
    if (model / "images.bin").is_file() or (model / "images.txt").is_file():
        try:
            from engine.stages.sfm import load_sparse

            sparse = load_sparse(model)
            cameras, sparse_points = sparse.cameras, sparse.points
        except Exception as exc:  # noqa: BLE001 - a damaged model must not stop reopening
            logger.warning("Cannot read the sparse model in %s: %s", model, exc)
    for name, kind in ((DENSE_PLY, "dense"), (SPARSE_PLY, "sparse")):
        path = run / name
        if path.is_file():
            try:
                return read_ply(path), cameras, kind, report
            except Exception as exc:  # noqa: BLE001 - same: show what can be shown
                logger.warning("Cannot read %s: %s", path, exc)
    if sparse_points is not None and len(sparse_points):
        return sparse_points, cameras, "sparse", report
    return None, cameras, None, report


def read_mesh(run: Path) -> Mesh | None:
    """The mesh a run left (``work/mesh/mesh.npz``), or None.

    None too when the file is missing, empty or unreadable (logged).
    """
    from engine.stages.mesh import load_mesh

    path = mesh_file(run)
    if not path.is_file():
        return None
    try:
        mesh = load_mesh(path)
    except Exception as exc:  # noqa: BLE001 - a damaged mesh must not stop reopening
        logger.warning("Cannot read the mesh %s: %s", path, exc)
        return None
    return mesh if len(mesh) and mesh.num_triangles else None
