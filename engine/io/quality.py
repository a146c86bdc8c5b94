"""Cheap per-photo quality measures: sharpness and clipped exposure."""

from __future__ import annotations

import cv2
import numpy as np

#: Long side at which sharpness is measured, so values compare across photo sizes.
SHARPNESS_SIZE = 800
#: Grey levels at or below this count as clipped black.
DARK_LEVEL = 2
#: Grey levels at or above this count as clipped white.
BRIGHT_LEVEL = 253


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """Luma of an RGB image.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8.
    """
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def sharpness(rgb: np.ndarray, size: int = SHARPNESS_SIZE) -> float:
    """Variance of the Laplacian of the greyscale image scaled to ``size`` on its long side.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8.
    size
        Long side the image is resized to first (area averaging down, linear up).

    Returns
    -------
    float
        Higher is sharper; under about 30 a photo is usually visibly blurred.
    """
    gray = to_gray(rgb)
    height, width = gray.shape
    scale = size / max(height, width)
    if scale != 1.0:
        new = (max(1, round(width * scale)), max(1, round(height * scale)))
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        gray = cv2.resize(gray, new, interpolation=interp)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def clipped_fractions(rgb: np.ndarray) -> tuple[float, float]:
    """Fractions of pixels whose luma is clipped to black and to white.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8.

    Returns
    -------
    tuple of float
        ``(dark_fraction, bright_fraction)``: luma <= 2 and >= 253.
    """
    gray = to_gray(rgb)
    total = float(gray.size) or 1.0
    return (
        float(np.count_nonzero(gray <= DARK_LEVEL)) / total,
        float(np.count_nonzero(gray >= BRIGHT_LEVEL)) / total,
    )
