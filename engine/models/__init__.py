"""The one place that loads neural networks: where weights come from, device, dtype, licence.

Importing this package is cheap (transformers is imported only when a model is loaded), so the
pipeline can catch :class:`ModelUnavailable` without paying for it.
"""

from engine.models._hub import ModelUnavailable, hub_cache_dir, resolve_model
from engine.models.depth_anything import (
    DEFAULT_DEPTH_MODEL,
    DepthEstimator,
    ModelInfo,
    licence_for,
    load_depth_model,
)
from engine.models.segmentation import (
    ProductSegmenter,
    SegmenterInfo,
    foreground_class,
    load_segmentation_model,
)

__all__ = [
    "DEFAULT_DEPTH_MODEL",
    "DepthEstimator",
    "ModelInfo",
    "ModelUnavailable",
    "ProductSegmenter",
    "SegmenterInfo",
    "foreground_class",
    "hub_cache_dir",
    "licence_for",
    "load_depth_model",
    "load_segmentation_model",
    "resolve_model",
]
