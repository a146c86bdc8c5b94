"""Small image operations shared by the stages (numpy and OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np


def nearest_index(source: np.ndarray) -> np.ndarray:
    """Flat index of the nearest ``source`` pixel, for every pixel (``(H, W)`` int).

    Parameters
    ----------
    source
        ``(H, W)`` bool; must hold at least one True pixel.
    """
    src = np.where(source, 0, 255).astype(np.uint8)
    _, labels = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    flat = np.flatnonzero(source.ravel())
    return flat[np.clip(labels - 1, 0, flat.size - 1)]


def nearest_colour(image: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Colour of the nearest ``source`` pixel, for every pixel.

    Parameters
    ----------
    image
        ``(H, W, C)`` array.
    source
        ``(H, W)`` bool; must hold at least one True pixel.
    """
    return image.reshape(-1, image.shape[-1])[nearest_index(source)]
