"""Learned product segmentation: a semantic-segmentation network gives each pixel P(product).

Optional: the masks stage (:mod:`engine.stages.masks`) uses it only when the user names a model
(``MaskConfig.model``); without one, masks stay weight-free.

:func:`load_segmentation_model` finds the weights with the same rules as the depth model
(local folder, Hugging Face cache, or a download the user allowed; see :mod:`engine.models._hub`),
refuses pickle weights and models that need their own code (``trust_remote_code``: never run),
and loads any semantic-segmentation checkpoint that transformers knows
(``AutoModelForSemanticSegmentation``: SegFormer, DPT, BEiT, MobileViT, UPerNet ...) with its
``AutoImageProcessor``. The product's class is read from ``config.id2label``: a label naming the
foreground (``foreground``, ``product``, ``object``, ``salient``, ``subject``), else class 1 of a
two-class model. BiRefNet and U2-Net releases on the Hub ship their own code and are refused.

transformers is imported only when a model is loaded.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.models._hub import (
    UNKNOWN_LICENCE,
    ModelUnavailable,
    cache_repo_id,
    check_loading,
    check_safetensors,
    open_model_folder,
    quiet_transformers,
    short_reason,
)
from engine.progress import CancelToken, ProgressCallback, no_progress

logger = logging.getLogger(__name__)

#: What to tell the user when a segmentation model is missing.
HOW_TO_PROVIDE_SEGMENTATION = (
    "Put the segmentation model folder (config.json + model.safetensors + "
    "preprocessor_config.json) on this computer and name it as the mask model, or allow its "
    "download (needs internet); or leave the mask model empty for the weight-free masks."
)
#: Words in a class label that name the product (whole words, case-insensitive), by preference.
FOREGROUND_WORDS = ("product", "foreground", "salient", "object", "subject", "fg")
_WHAT = "Segmentation model"


@dataclass(frozen=True)
class SegmenterInfo:
    """What was loaded, from where, under which licence, and which class is the product.

    Attributes
    ----------
    name
        Model name (the Hugging Face id, or the folder's name for a local folder).
    source
        ``"local"``, ``"cache"`` or ``"download"``.
    path
        Folder the weights were read from.
    licence
        The ``license:`` of the folder's model card (README.md) when present, else
        ``"unknown (check the model card)"``.
    architecture
        The transformers class (``"SegformerForSemanticSegmentation"``).
    foreground_index, foreground_label
        The product's class and its label.
    dtype, device
        ``"float32"`` on the CPU, ``"float16"`` on CUDA; ``"cpu"`` or ``"cuda"``.
    """

    name: str
    source: str
    path: str
    licence: str
    architecture: str
    foreground_index: int
    foreground_label: str
    dtype: str
    device: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) for report.json."""
        return asdict(self)


def foreground_class(id2label: dict[Any, Any]) -> tuple[int, str]:
    """The product's class index and label from a model's ``id2label``.

    Parameters
    ----------
    id2label
        Class index (int or str) to label, as in a transformers configuration.

    Returns
    -------
    tuple
        ``(index, label)``: the first class whose label has a word of
        :data:`FOREGROUND_WORDS` (in that order of preference), else class 1 of a two-class model.

    Raises
    ------
    ModelUnavailable
        When no class can be taken for the product; the message lists the model's labels.
    """
    labels = {int(k): str(v) for k, v in id2label.items()}
    words = {i: set(re.findall(r"[a-z0-9]+", label.lower())) for i, label in labels.items()}
    for word in FOREGROUND_WORDS:
        for i in sorted(labels):
            if word in words[i]:
                return i, labels[i]
    if sorted(labels) == [0, 1]:
        return 1, labels[1]
    shown = ", ".join(f"{i}: {labels[i]!r}" for i in sorted(labels)[:12])
    more = f" and {len(labels) - 12} more" if len(labels) > 12 else ""
    raise ModelUnavailable(
        f"The segmentation model's classes ({shown}{more}) include none for the product: "
        f"Vitrine needs a label named like {', '.join(FOREGROUND_WORDS[:4])}, or a two-class "
        "model (background, product). Use a salient-object or background-removal model."
    )


def _card_licence(folder: Path) -> str:
    """The ``license:`` field of the folder's model card front matter, if any."""
    card = folder / "README.md"
    if not card.is_file():
        return UNKNOWN_LICENCE
    try:
        text = card.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return UNKNOWN_LICENCE
    if not text.startswith("---"):
        return UNKNOWN_LICENCE
    front = text[3:].split("\n---", 1)[0]
    found = re.search(r"^licen[cs]e:\s*['\"]?([^'\"\n]+)", front, re.MULTILINE)
    return found.group(1).strip() if found else UNKNOWN_LICENCE


class ProductSegmenter:
    """A loaded segmentation network: RGB photo in, per-pixel product probability out.

    Build it with :func:`load_segmentation_model`. Not thread-safe: use one per worker thread.

    Attributes
    ----------
    info
        What was loaded (name, licence, source, product class, device).
    """

    def __init__(self, model: torch.nn.Module, processor: Any, info: SegmenterInfo) -> None:
        self.model = model
        self.processor = processor
        self.info = info
        self._device = torch.device(info.device)
        self._dtype = torch.float16 if info.dtype == "float16" else torch.float32

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Probability that each pixel shows the product.

        Parameters
        ----------
        rgb
            ``(H, W, 3)`` uint8 RGB image.

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` float32 in [0, 1]: the softmax of the product's class, the logits
            resized (bilinear) to the photo's size first.

        Raises
        ------
        ValueError
            When ``rgb`` is not an ``(H, W, 3)`` uint8 image.
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        inputs = self.processor(images=rgb, return_tensors="pt")
        with torch.inference_mode():
            x = inputs["pixel_values"].to(self._device, self._dtype)
            logits = self.model(pixel_values=x).logits.float()
            logits = torch.nn.functional.interpolate(
                logits, size=(height, width), mode="bilinear", align_corners=False
            )
            prob = torch.softmax(logits, dim=1)[0, self.info.foreground_index]
            return np.ascontiguousarray(prob.cpu().numpy().astype(np.float32, copy=False))


def load_segmentation_model(
    spec: str | Path,
    *,
    device: str = "cpu",
    allow_download: bool = False,
    cache_dir: Path | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> ProductSegmenter:
    """Load a semantic-segmentation network from a folder, the cache, or (if allowed) the Hub.

    Parameters
    ----------
    spec
        A folder holding ``config.json``, ``model.safetensors`` and
        ``preprocessor_config.json``, or a Hugging Face model id.
    device
        ``"cpu"`` or ``"cuda"`` (resolved once per run); float16 on CUDA, float32 on the CPU.
    allow_download
        Download the weights when they are not on this computer. Without it no network call
        is made.
    cache_dir
        Hugging Face hub cache; default from the environment (``HF_HUB_CACHE``, ``HF_HOME``).
    progress, cancel
        Download progress events (stage ``masks``) and the run's token.

    Returns
    -------
    ProductSegmenter
        Ready to segment; ``info`` says what was loaded and which class is the product.

    Raises
    ------
    ModelUnavailable
        When the weights are not found, not allowed to be downloaded, refused (pickle only, or
        a model that needs its own code), damaged, not a semantic-segmentation model, or have no
        class for the product. The message names the folder or id and says what to do.
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
        what=_WHAT,
        how_to=HOW_TO_PROVIDE_SEGMENTATION,
        stage="masks",
    )
    resolved, folder, label, config = opened.resolved, opened.folder, opened.label, opened.config
    if config.get("auto_map"):
        raise ModelUnavailable(
            f"{_WHAT} {label} in '{folder}' needs its own Python code (remote code), which "
            "Vitrine never runs. Use a segmentation model that transformers supports as it is "
            "(for example a SegFormer checkpoint)."
        )
    index, fg_label = foreground_class(config.get("id2label") or {})
    if not (folder / "preprocessor_config.json").is_file():
        raise ModelUnavailable(
            f"{_WHAT} {label} in '{folder}' has no preprocessor_config.json (how to prepare "
            f"photos for it). {HOW_TO_PROVIDE_SEGMENTATION}"
        )
    check_safetensors(opened.safe_files, label, what=_WHAT)

    dtype = torch.float16 if device == "cuda" else torch.float32
    model, processor = _load_network(folder, label, dtype)
    model.to(device).eval()
    name = resolved.repo_id or cache_repo_id(folder) or folder.name
    info = SegmenterInfo(
        name=name,
        source=resolved.source,
        path=str(folder),
        licence=_card_licence(folder),
        architecture=type(model).__name__,
        foreground_index=index,
        foreground_label=fg_label,
        dtype=str(dtype).removeprefix("torch."),
        device=device,
    )
    logger.info(
        "Segmentation model %s loaded from %s (%s, %s, product class %d %r, %s on %s)",
        name,
        folder,
        resolved.source,
        info.licence,
        index,
        fg_label,
        info.dtype,
        device,
    )
    return ProductSegmenter(model, processor, info)


def _load_network(folder: Path, label: str, dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
    """The model and its image processor, safetensors only, offline, no remote code."""
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    try:
        with quiet_transformers():
            model, loading = AutoModelForSemanticSegmentation.from_pretrained(
                str(folder),
                use_safetensors=True,
                local_files_only=True,
                trust_remote_code=False,
                dtype=dtype,
                output_loading_info=True,
            )
            processor = AutoImageProcessor.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False
            )
    except Exception as exc:  # noqa: BLE001 - anything here means this model cannot be used
        raise ModelUnavailable(
            f"{_WHAT} {label} in '{folder}' could not be loaded as a semantic-segmentation model "
            f"({exc.__class__.__name__}: {short_reason(exc)}). Use a semantic-segmentation "
            "checkpoint that transformers supports (for example SegFormer), or copy the model "
            "folder again."
        ) from exc
    check_loading(loading, _WHAT, label, folder)
    return model, processor
