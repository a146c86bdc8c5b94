"""Tiny random-weight networks saved with ``save_pretrained``, for tests and benchmarks.

They exercise the real loading code (engine.models) offline; their output is meaningless.
"""

from __future__ import annotations

from pathlib import Path

INPUT = 56  # network input size of the tiny depth model (4 patches of 14)


def make_tiny_depth_model(folder: Path) -> Path:
    """Save a tiny random-weight DepthAnythingForDepthEstimation and its image processor."""
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessorPil,
    )

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=INPUT,
        patch_size=14,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )
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
