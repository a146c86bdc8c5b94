"""Depth-Anything(-V2) monocular depth: loading the network and predicting inverse depth.

:func:`load_depth_model` finds the weights (local folder, Hugging Face cache, or a download the
user allowed; see :mod:`engine.models._hub`), refuses pickle weights, checks the configuration
is a Depth-Anything model, notes the licence, and returns a :class:`DepthEstimator`.

The estimator does its own preprocessing, as the reference implementation does: the shorter side
is resized (bicubic) to the input size rounded to a multiple of the 14-pixel patch, keeping the
aspect ratio, then ImageNet normalisation (mean and std read from ``preprocessor_config.json``
when present). No torchvision is needed. The network's output is a relative inverse depth
(disparity-like: larger is nearer, up to an unknown scale and shift), resized back to the
photo's size.

transformers is imported only when a model is loaded: importing :mod:`engine.models` stays cheap.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from engine.models._hub import (
    HOW_TO_PROVIDE,
    UNKNOWN_LICENCE,
    ModelUnavailable,
    cache_repo_id,
    check_loading,
    check_safetensors,
    open_model_folder,
    quiet_transformers,
    read_json,
    short_reason,
)
from engine.progress import CancelToken, ProgressCallback, no_progress

logger = logging.getLogger(__name__)

#: The default checkpoint: Depth-Anything-V2 Small (Apache-2.0, about 100 MB).
DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
#: DINOv2 patch size: network input sides are multiples of it.
PATCH = 14
#: ImageNet normalisation used by Depth-Anything when the folder does not say otherwise.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Metric depths below this are treated as "no depth" when converted to inverse depth.
_MIN_METRIC_DEPTH = 1e-6


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, from where, under which licence, on which device.

    Attributes
    ----------
    name
        Model name (the Hugging Face id, or the folder's name for a local folder).
    source
        ``"local"``, ``"cache"`` or ``"download"``.
    path
        Folder the weights were read from.
    licence
        Licence identifier (``"Apache-2.0"``, ``"CC-BY-NC-4.0"``) or
        ``"unknown (check the model card)"``.
    commercial_use
        Whether the licence is known to allow commercial use.
    licence_warning
        Sentence to show the user when the licence restricts or is unknown; ``""`` otherwise.
    dtype
        Compute dtype (``"float32"`` on the CPU, ``"float16"`` on CUDA).
    device
        ``"cpu"`` or ``"cuda"``.
    depth_type
        ``"relative"`` (inverse depth up to scale and shift) or ``"metric"`` (a metric
        checkpoint; :meth:`DepthEstimator.predict` still returns inverse depth).
    input_size
        Shorter side of the network input in pixels (a multiple of 14).
    """

    name: str
    source: str
    path: str
    licence: str
    commercial_use: bool
    licence_warning: str
    dtype: str
    device: str
    depth_type: str = "relative"
    input_size: int = 518

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) for report.json."""
        return asdict(self)


def licence_for(name: str) -> tuple[str, bool, str]:
    """Licence of a Depth-Anything checkpoint from its name.

    Depth-Anything-V2 Small is Apache-2.0; V2 Base, Large and Giant are CC-BY-NC-4.0
    (non-commercial). Anything else is unknown.

    Parameters
    ----------
    name
        Model id or folder name (``depth-anything/Depth-Anything-V2-Large-hf``).

    Returns
    -------
    tuple
        ``(licence, commercial_use, warning)``; the warning is ``""`` for a permissive licence.
    """
    low = name.lower().replace("_", "-")
    if re.search(r"depth-?anything", low) and "v2" in low:
        if re.search(r"(base|large|giant)", low):
            return (
                "CC-BY-NC-4.0",
                False,
                f"Depth model '{name}' is licensed CC-BY-NC-4.0: non-commercial use only. "
                "For commercial work use Depth-Anything-V2-Small (Apache-2.0).",
            )
        if "small" in low:
            return "Apache-2.0", True, ""
    return (
        UNKNOWN_LICENCE,
        False,
        f"Depth model '{name}': licence unknown; check the model card before commercial use.",
    )


def _identify(folder: Path, repo_id: str, config: dict[str, Any]) -> tuple[str, tuple]:
    """Model name and licence triple ``(licence, commercial_use, warning)``.

    The name is the model id when known (given, or read from a cache path), else the folder's
    name. The licence comes from the first of id, cache id, config ``_name_or_path`` and
    folder name that is recognised.
    """
    cached = cache_repo_id(folder)
    name = repo_id or cached or folder.name
    candidates = [repo_id, cached, str(config.get("_name_or_path") or ""), folder.name]
    for cand in filter(None, candidates):
        found = licence_for(cand)
        if found[0] != UNKNOWN_LICENCE:
            return name, found
    return name, licence_for(name)


def round_to_patch(size: int) -> int:
    """``size`` rounded to the nearest multiple of 14 (at least 14)."""
    return max(PATCH, int(round(size / PATCH)) * PATCH)


class DepthEstimator:
    """A loaded Depth-Anything network: RGB photo in, relative inverse depth out.

    Build it with :func:`load_depth_model`. Not thread-safe: use one per worker thread.

    Attributes
    ----------
    info
        What was loaded (name, source, licence, device, dtype).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        info: ModelInfo,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.model = model
        self.info = info
        self._device = torch.device(info.device)
        self._dtype = torch.float16 if info.dtype == "float16" else torch.float32
        self._mean = np.asarray(mean, np.float32).reshape(1, 1, 3)
        self._std = np.asarray(std, np.float32).reshape(1, 1, 3)

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """Network input size for a photo: shorter side = ``info.input_size``, sides x14."""
        base = self.info.input_size
        scale = base / min(height, width)
        return round_to_patch(int(round(height * scale))), round_to_patch(int(round(width * scale)))

    def _prepare(self, rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        h, w = shape
        img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
        img = (img - self._mean) / self._std
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    def _to_inverse(self, out: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if self.info.depth_type == "metric":  # metric depth -> inverse depth, 0 where none
            return torch.where(out > _MIN_METRIC_DEPTH, 1.0 / out.clamp_min(_MIN_METRIC_DEPTH), 0)
        return out

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """Relative inverse depth of one photo.

        Parameters
        ----------
        rgb
            ``(H, W, 3)`` uint8 RGB image.

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` float32 relative inverse depth (larger is nearer; affine-invariant:
            true ``1/depth`` is ``scale * value + shift`` for unknown ``scale > 0`` and
            ``shift``), resized back to the photo's size (bilinear).
        """
        return self.predict_batch([rgb])[0]

    def predict_batch(self, images: Sequence[np.ndarray], max_batch: int = 4) -> list[np.ndarray]:
        """Relative inverse depth of several photos (batched when they share a size).

        Parameters
        ----------
        images
            ``(H, W, 3)`` uint8 RGB images.
        max_batch
            Most images run through the network at once (bounds memory).

        Returns
        -------
        list of numpy.ndarray
            One ``(H, W)`` float32 map per image, as :meth:`predict`.
        """
        results: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(tuple(np.asarray(img).shape[:2]), []).append(i)
        chunks = [
            (size, idx[k : k + max(1, max_batch)])
            for size, idx in groups.items()
            for k in range(0, len(idx), max(1, max_batch))
        ]
        for (h, w), idx in chunks:
            shape = self.input_shape(h, w)
            batch = np.stack([self._prepare(np.asarray(images[i]), shape) for i in idx])
            with torch.inference_mode():
                x = torch.from_numpy(batch).to(self._device, self._dtype)
                out = self.model(pixel_values=x).predicted_depth  # (B, h', w')
                out = self._to_inverse(out)[:, None]
                out = torch.nn.functional.interpolate(
                    out, size=(h, w), mode="bilinear", align_corners=False
                )[:, 0]
                arr = out.cpu().numpy().astype(np.float32, copy=False)
            for k, i in enumerate(idx):
                results[i] = np.ascontiguousarray(arr[k])
        return results  # type: ignore[return-value]


def load_depth_model(
    spec: str | Path = DEFAULT_DEPTH_MODEL,
    *,
    device: str = "cpu",
    allow_download: bool = False,
    input_size: int = 518,
    cache_dir: Path | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> DepthEstimator:
    """Load a Depth-Anything(-V2) network from a folder, the cache, or (if allowed) the Hub.

    Parameters
    ----------
    spec
        A folder holding ``config.json`` and ``model.safetensors``, or a Hugging Face model id
        (default :data:`DEFAULT_DEPTH_MODEL`).
    device
        ``"cpu"`` or ``"cuda"`` (resolved once per run by :func:`engine.device.resolve_device`);
        float16 on CUDA, float32 on the CPU.
    allow_download
        Download the weights when they are not on this computer. Without it no network call
        is made.
    input_size
        Shorter side of the network input (rounded to a multiple of 14).
    cache_dir
        Hugging Face hub cache; default from the environment (``HF_HUB_CACHE``, ``HF_HOME``).
    progress, cancel
        Download progress events (stage ``depth_prior``) and the run's token.

    Returns
    -------
    DepthEstimator
        Ready to predict; ``info`` says what was loaded and under which licence. A
        non-commercial licence is also logged as a warning.

    Raises
    ------
    ModelUnavailable
        When the weights are not found, not allowed to be downloaded, refused (pickle only),
        damaged, or not a Depth-Anything model. The message names the folder or id and says
        what to do.
    engine.progress.Cancelled
        When the run was cancelled during a download.
    """
    opened = open_model_folder(
        spec,
        device=device,
        allow_download=allow_download,
        cache_dir=cache_dir,
        progress=progress,
        cancel=cancel,
        what="Depth model",
        how_to=HOW_TO_PROVIDE,
        stage="depth_prior",
    )
    resolved, folder, label, config = opened.resolved, opened.folder, opened.label, opened.config
    if config.get("auto_map"):
        raise ModelUnavailable(
            f"Depth model {label} in '{folder}' needs its own Python code (remote code), which "
            f"Vitrine never runs. {HOW_TO_PROVIDE}"
        )
    if config.get("model_type") != "depth_anything":
        raise ModelUnavailable(
            f"The model in '{folder}' is not a Depth-Anything depth model (its config.json says "
            f"model_type={config.get('model_type')!r}). {HOW_TO_PROVIDE}"
        )
    depth_type = str(config.get("depth_estimation_type") or "relative")
    check_safetensors(opened.safe_files, label, what="Depth model")

    mean, std = IMAGENET_MEAN, IMAGENET_STD
    proc_file = folder / "preprocessor_config.json"
    if proc_file.is_file():
        proc = read_json(proc_file, label)
        if len(proc.get("image_mean") or ()) == 3 and len(proc.get("image_std") or ()) == 3:
            mean, std = tuple(proc["image_mean"]), tuple(proc["image_std"])

    dtype = torch.float16 if device == "cuda" else torch.float32
    model = _load_network(folder, label, dtype)
    model.to(device).eval()

    name, (licence, commercial, warning) = _identify(folder, resolved.repo_id, config)
    info = ModelInfo(
        name=name,
        source=resolved.source,
        path=str(folder),
        licence=licence,
        commercial_use=commercial,
        licence_warning=warning,
        dtype=str(dtype).removeprefix("torch."),
        device=device,
        depth_type=depth_type,
        input_size=round_to_patch(input_size),
    )
    if licence != UNKNOWN_LICENCE and not commercial:
        logger.warning("%s", warning)
    elif warning:
        logger.info("%s", warning)
    logger.info(
        "Depth model %s loaded from %s (%s, %s, %s on %s)",
        name,
        folder,
        resolved.source,
        licence,
        info.dtype,
        device,
    )
    return DepthEstimator(model, info, mean=mean, std=std)


def _load_network(folder: Path, label: str, dtype: torch.dtype) -> torch.nn.Module:
    """``DepthAnythingForDepthEstimation.from_pretrained`` with safetensors only, offline."""
    from transformers import DepthAnythingForDepthEstimation

    try:
        with quiet_transformers():
            model, loading = DepthAnythingForDepthEstimation.from_pretrained(
                str(folder),
                use_safetensors=True,
                local_files_only=True,
                dtype=dtype,
                output_loading_info=True,
            )
    except Exception as exc:  # noqa: BLE001 - anything here means these weights cannot be used
        raise ModelUnavailable(
            f"Depth model {label} in '{folder}' could not be loaded ({exc.__class__.__name__}: "
            f"{short_reason(exc)}). Download or copy the model folder again."
        ) from exc
    check_loading(loading, "Depth model", label, folder)
    return model
