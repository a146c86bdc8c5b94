"""Tiny random-weight networks saved with ``save_pretrained``, for tests and benchmarks.

They exercise the real loading code (engine.models) offline; their output is meaningless.
"""

from __future__ import annotations

from pathlib import Path

INPUT = 56  # network input size of the tiny depth model (4 patches of 14)


def make_tiny_depth_model(folder: Path) -> Path:
    """Save a tiny random-weight DepthAnythingForDepthEstimation and its image processor."""
    import torch
    from transformers import DepthAnythingForDepthEstimation, DPTImageProcessorPil

    from engine.selftest import tiny_depth_anything_config

    config = tiny_depth_anything_config(INPUT)
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():  # a visibly varying output (random init gives ~1e-7 everywhere)
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    DPTImageProcessorPil(
        size={"height": INPUT, "width": INPUT},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return folder


#: Network input (height, width) of the tiny segmentation model (4:3, like the test photos).
SEG_INPUT = (120, 160)


def make_tiny_segmentation_model(
    folder: Path, labels: tuple[str, ...] = ("background", "product"), seed: int = 0
):
    """Save a tiny random-weight SegformerForSemanticSegmentation and its image processor.

    Parameters
    ----------
    folder
        Where to save (config.json, model.safetensors, preprocessor_config.json).
    labels
        Class labels, in order (``id2label``).
    seed
        Seed of the random weights.

    Returns
    -------
    SegformerForSemanticSegmentation
        The model (train it and ``save_pretrained`` again to get a useful one).
    """
    import torch
    from transformers import (
        SegformerConfig,
        SegformerForSemanticSegmentation,
        SegformerImageProcessorPil,
    )

    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[4, 2],
        hidden_sizes=[16, 32],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=32,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(config).eval()
    model.save_pretrained(folder)
    SegformerImageProcessorPil(
        size={"height": SEG_INPUT[0], "width": SEG_INPUT[1]},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return model


#: The commit id tests give a model laid out in a Hugging Face cache.
CACHE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def place_in_cache(src: Path, cache: Path, repo_id: str) -> Path:
    """Copy a model folder into ``cache`` laid out as the Hugging Face hub cache does."""
    import shutil

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / CACHE_COMMIT
    shutil.copytree(src, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(CACHE_COMMIT)
    return snap
