"""Where model weights come from: a local folder, the Hugging Face cache, or a download.

The rules, in order:

1. ``spec`` names a folder that exists: use it as it is (``source="local"``).
2. ``spec`` is a Hugging Face model id found in the local Hugging Face cache
   (``source="cache"``). The cache is looked up with ``local_files_only=True``: no network.
3. Only when the user allowed it, download the id into that cache (``source="download"``),
   restricted to configuration and safetensors files, with progress events.

Nothing here touches the network unless ``allow_download`` is true, and nothing changes the
process environment: offline behaviour comes from ``local_files_only``, per call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download

from engine.errors import ModelError
from engine.progress import Cancelled, CancelToken, ProgressCallback, ProgressEvent, no_progress

logger = logging.getLogger(__name__)

#: Files fetched from the Hub: configuration and weights in safetensors (never pickles).
ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.txt")
#: Weight files refused because loading them runs pickle (arbitrary code).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: What a Hugging Face model id looks like: ``name`` or ``org/name``.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
#: Seconds between two download progress events (the bars update far more often).
_PROGRESS_INTERVAL = 0.25


class ModelUnavailable(ModelError):  # noqa: N818 - reads as a state, like Cancelled
    """A model cannot be used: not on this computer, corrupt, unsafe or not the right kind.

    The message names the folder or model id and says what to do; it is written to follow
    "Depth prior not used: " in a run's log, or to stand alone as a command-line error.
    """


#: What to tell the user to do when a model is missing (command-line options of main.py).
HOW_TO_PROVIDE = (
    "Put the model folder (config.json + model.safetensors) on this computer and pass "
    "--depth-model FOLDER, or allow the download with --download-models (needs internet)."
)

#: Licence text of a model whose licence is not known.
UNKNOWN_LICENCE = "unknown (check the model card)"


@dataclass(frozen=True)
class ResolvedModel:
    """A model folder on disk and where it was found.

    Attributes
    ----------
    folder
        Folder holding ``config.json`` and the weights.
    source
        ``"local"``, ``"cache"`` or ``"download"``.
    repo_id
        The Hugging Face id when the model came from the cache or a download, else ``""``.
    """

    folder: Path
    source: str
    repo_id: str = ""


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time.

    Same rules as ``huggingface_hub.constants`` (``HF_HUB_CACHE``, legacy
    ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME/hub``, ``XDG_CACHE_HOME/huggingface/hub``,
    ``~/.cache/huggingface/hub``), but evaluated now rather than when huggingface_hub was
    imported, so a changed environment (tests, the app's settings) is honoured.

    Returns
    -------
    pathlib.Path
        The folder (it may not exist).
    """
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(os.path.expandvars(env[key])).expanduser()
    if env.get("HF_HOME"):
        home = Path(os.path.expandvars(env["HF_HOME"])).expanduser()
    else:
        xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = Path(os.path.expandvars(xdg)).expanduser() / "huggingface"
    return home / "hub"


def looks_like_repo_id(spec: str | Path) -> bool:
    """Whether ``spec`` could be a Hugging Face model id (``org/name``) rather than a folder.

    A :class:`pathlib.Path`, an absolute path, or anything with a backslash, ``..``, ``~`` or
    more than one ``/`` is a folder.
    """
    if isinstance(spec, Path):
        return False
    text = str(spec)
    if os.path.isabs(text) or text.startswith((".", "~")) or "\\" in text or ".." in text:
        return False
    return bool(_REPO_ID.match(text))


def _weights_in(folder: Path) -> tuple[list[Path], list[Path]]:
    """Safetensors files and pickle weight files directly in ``folder``."""
    files = [p for p in folder.iterdir() if p.is_file()]
    safe = sorted(p for p in files if p.name.endswith(".safetensors"))
    pickles = sorted(p for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
    return safe, pickles


def check_model_folder(folder: Path, label: str, *, how_to: str = HOW_TO_PROVIDE) -> list[Path]:
    """Check that ``folder`` holds a configuration and safetensors weights.

    Parameters
    ----------
    folder
        The model folder.
    label
        How to name the model in messages (the folder or the model id).
    how_to
        What to tell the user to do, ending the messages (default: the depth model's options).

    Returns
    -------
    list of pathlib.Path
        The safetensors files.

    Raises
    ------
    ModelUnavailable
        When the folder is missing, has no ``config.json``, has only pickle weights
        (refused: loading them can run arbitrary code) or has no weights at all.
    """
    if not folder.is_dir():
        raise ModelUnavailable(f"Model folder '{folder}' does not exist. {how_to}")
    safe, pickles = _weights_in(folder)
    if not safe and pickles:
        names = ", ".join(p.name for p in pickles[:3])
        raise ModelUnavailable(
            f"Model {label} in '{folder}' has only pickle weights ({names}), which Vitrine "
            "refuses to load because they can run code: safetensors are required. Use the "
            "model's safetensors release (model.safetensors) instead."
        )
    if not (folder / "config.json").is_file():
        raise ModelUnavailable(
            f"Model {label} in '{folder}' has no config.json: it is not a complete model "
            f"folder. {how_to}"
        )
    if not safe:
        raise ModelUnavailable(
            f"Model {label} in '{folder}' has no weights (model.safetensors is missing). {how_to}"
        )
    return safe


class _ProgressBars:
    """Factory of tqdm look-alikes that turn huggingface_hub's download bars into events.

    ``snapshot_download(tqdm_class=...)`` creates a bar counting files and bars counting
    bytes; only the file bar and the bytes-written bar are reported (throttled). Any bar
    update checks the cancel token, so a cancelled download stops at the next chunk. The engine
    never imports tqdm: these classes only mimic the few methods huggingface_hub calls.
    """

    def __init__(
        self,
        label: str,
        progress: ProgressCallback,
        cancel: CancelToken | None,
        stage: str = "depth_prior",
    ):
        self.label = label
        self.stage = stage
        self.progress = progress
        self.cancel = cancel
        self.last = 0.0
        factory = self

        class Bar:
            def __init__(self, *args: object, **kwargs: object) -> None:
                self.desc = str(kwargs.get("desc") or "")
                self.total = kwargs.get("total") or 0
                self.n = kwargs.get("initial") or 0
                self.unit = str(kwargs.get("unit") or "it")
                self.format_dict: dict[str, object] = {"rate": None}

            def __enter__(self) -> Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                self.close()

            def __iter__(self):  # pragma: no cover - not used by snapshot_download
                return iter(())

            def update(self, n: float | None = 1) -> None:
                self.n += n or 0
                factory.report(self)

            def refresh(self, *args: object, **kwargs: object) -> None:
                pass

            def close(self) -> None:
                pass

            def clear(self, *args: object, **kwargs: object) -> None:
                pass

            def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
                self.desc = desc or ""

            set_description_str = set_description

            def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
                pass

            def set_postfix(self, *args: object, **kwargs: object) -> None:
                pass

        self.bar_class = Bar

    def report(self, bar: object) -> None:
        """Emit a throttled progress event for a file-count or bytes-written bar."""
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        desc = getattr(bar, "desc", "")
        if not (desc.startswith("Fetching") or desc.startswith("Reconstruct")):
            return
        now = time.monotonic()
        total = int(getattr(bar, "total", 0) or 0)
        done = int(getattr(bar, "n", 0) or 0)
        if now - self.last < _PROGRESS_INTERVAL and done < total:
            return
        self.last = now
        if getattr(bar, "unit", "") == "B":
            msg = f"Downloading {self.label}: {done / 1e6:.1f} of {total / 1e6:.1f} MB"
            self.progress(ProgressEvent(self.stage, done // 1024, total // 1024, msg))
        else:
            msg = f"Downloading {self.label}: {done} of {total} files"
            self.progress(ProgressEvent(self.stage, done, total, msg))


def resolve_model(
    spec: str | Path,
    *,
    allow_download: bool = False,
    cache_dir: Path | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    what: str = "Depth model",
    how_to: str = HOW_TO_PROVIDE,
    stage: str = "depth_prior",
) -> ResolvedModel:
    """Find a model's folder: local folder, then the Hugging Face cache, then a download.

    Parameters
    ----------
    spec
        A folder or a Hugging Face model id (``org/name``).
    allow_download
        Download the id when it is not cached. Without it no network call is ever made.
    cache_dir
        Hugging Face hub cache to use; default :func:`hub_cache_dir`.
    progress, cancel
        Progress events (stage ``stage``) during a download, and the run's token.
    what, how_to, stage
        How messages name the model (``"Depth model"``), what they tell the user to do
        (:data:`HOW_TO_PROVIDE`), and the stage of the download's progress events.

    Returns
    -------
    ResolvedModel
        The folder, checked by :func:`check_model_folder`, and where it came from.

    Raises
    ------
    ModelUnavailable
        When the model cannot be found (or downloaded), with what to do about it.
    engine.progress.Cancelled
        When ``cancel`` was cancelled during a download.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        check_model_folder(path, f"'{path.name}'", how_to=how_to)
        return ResolvedModel(path.resolve(), "local")
    if path.exists():
        raise ModelUnavailable(
            f"'{path}' is a file, not a model folder: pass the folder that holds config.json "
            "and model.safetensors."
        )
    if not looks_like_repo_id(spec):
        raise ModelUnavailable(f"Model folder '{spec}' does not exist. {how_to}")

    repo_id = str(spec)
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    label = f"'{repo_id}'"
    try:
        folder = snapshot_download(
            repo_id,
            cache_dir=str(cache),
            local_files_only=True,
            allow_patterns=list(ALLOW_PATTERNS),
        )
    except Exception as exc:  # noqa: BLE001 - any failure means "not in the cache"
        logger.debug("model %s not in the cache %s: %s", repo_id, cache, exc)
    else:
        try:
            check_model_folder(Path(folder), label, how_to=how_to)
        except ModelUnavailable as exc:
            if not allow_download:
                raise
            logger.info("cached copy of %s is incomplete (%s); downloading it", repo_id, exc)
        else:
            return ResolvedModel(Path(folder), "cache", repo_id)

    if not allow_download:
        raise ModelUnavailable(
            f"{what} {label} was not found on this computer (looked in the folder "
            f"'{spec}' and in the Hugging Face cache '{cache}'). {how_to}"
        )

    bars = _ProgressBars(label, progress, cancel, stage)
    progress(ProgressEvent(stage, 0, 0, f"Downloading {what.lower()} {label} ..."))
    logger.info("downloading model %s into %s", repo_id, cache)
    try:
        folder = snapshot_download(
            repo_id,
            cache_dir=str(cache),
            allow_patterns=list(ALLOW_PATTERNS),
            tqdm_class=bars.bar_class,  # type: ignore[arg-type]
        )
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - network, permissions, unknown id: one message
        if cancel is not None and cancel.cancelled:
            raise Cancelled() from exc
        raise ModelUnavailable(
            f"{what} {label} could not be downloaded ({exc.__class__.__name__}: "
            f"{_first_line(exc)}). Check the internet connection and the model id. {how_to}"
        ) from exc
    check_model_folder(Path(folder), label, how_to=how_to)
    progress(ProgressEvent(stage, 1, 1, f"Downloaded {what.lower()} {label}"))
    return ResolvedModel(Path(folder), "download", repo_id)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


# ------------------------------------------------------------------ shared by the model loaders


def cache_repo_id(folder: Path) -> str:
    """``org/name`` when ``folder`` lies in a Hugging Face cache (``models--org--name/...``)."""
    for part in (folder, *folder.parents):
        if part.name.startswith("models--"):
            return part.name[len("models--") :].replace("--", "/")
    return ""


def read_json(path: Path, label: str, how_to: str = HOW_TO_PROVIDE) -> dict[str, Any]:
    """A model folder's JSON file as a dict.

    Raises
    ------
    ModelUnavailable
        When it cannot be read or is not a JSON object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelUnavailable(
            f"Model {label}: '{path.name}' in '{path.parent}' cannot be read ({exc}). {how_to}"
        ) from exc
    if not isinstance(data, dict):
        raise ModelUnavailable(f"Model {label}: '{path}' is not a model configuration.")
    return data


def check_safetensors(files: Sequence[Path], label: str, what: str = "Model") -> None:
    """Open each safetensors file's header: a corrupt or truncated file fails here, clearly.

    Raises
    ------
    ModelUnavailable
        When a file cannot be opened as safetensors.
    """
    from safetensors import safe_open

    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                fh.keys()
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError ...: same advice
            raise ModelUnavailable(
                f"{what} {label}: the weights file '{f.name}' in '{f.parent}' is damaged or "
                f"incomplete ({short_reason(exc)}). Download or copy the model folder again."
            ) from exc


def short_reason(exc: BaseException) -> str:
    """First line of an exception's message (at most 160 characters), or its class name."""
    lines = str(exc).strip().splitlines()
    return (lines[0][:160] if lines else exc.__class__.__name__) or exc.__class__.__name__


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' own tqdm bars while loading (the engine reports progress as events)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@dataclass(frozen=True)
class ModelFolder:
    """A model folder found and checked, ready to load (see :func:`open_model_folder`)."""

    resolved: ResolvedModel
    label: str
    """How messages name the model (``'org/name'`` or ``'folder'``)."""
    config: dict[str, Any]
    """Its ``config.json``."""
    safe_files: list[Path]
    """Its safetensors weight files."""

    @property
    def folder(self) -> Path:
        """The folder holding the model."""
        return self.resolved.folder


def open_model_folder(
    spec: str | Path,
    *,
    device: str,
    allow_download: bool,
    cache_dir: Path | None,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    what: str,
    how_to: str,
    stage: str,
) -> ModelFolder:
    """Find a model (:func:`resolve_model`), check its folder and read its configuration.

    The first half of every loader: ``device`` must be resolved already (``cpu`` or ``cuda``).

    Raises
    ------
    ValueError
        For a device other than ``cpu`` or ``cuda``.
    ModelUnavailable
        When the model is not found, not allowed to be downloaded, or its folder lacks a
        configuration or safetensors weights.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda' (resolve 'auto' first), not {device!r}")
    resolved = resolve_model(
        spec,
        allow_download=allow_download,
        cache_dir=cache_dir,
        progress=progress,
        cancel=cancel,
        what=what,
        how_to=how_to,
        stage=stage,
    )
    folder = resolved.folder
    label = f"'{resolved.repo_id or folder.name}'"
    safe_files = check_model_folder(folder, label, how_to=how_to)
    config = read_json(folder / "config.json", label, how_to)
    return ModelFolder(resolved, label, config, safe_files)


def check_loading(loading: dict[str, Any], what: str, label: str, folder: Path) -> None:
    """Refuse weights ``from_pretrained`` loaded only in part (``output_loading_info``).

    transformers fills missing weights with random values and only warns: refuse instead.

    Raises
    ------
    ModelUnavailable
        When weights are missing or of the wrong shape.
    """
    missing = sorted(loading.get("missing_keys") or ())
    mismatched = list(loading.get("mismatched_keys") or ())
    if missing or mismatched:
        names = ", ".join((missing + [str(m) for m in mismatched])[:3])
        raise ModelUnavailable(
            f"{what} {label} in '{folder}' does not match its configuration "
            f"({len(missing) + len(mismatched)} weights missing or of the wrong shape: {names} "
            "...). Download or copy the model folder again."
        )
