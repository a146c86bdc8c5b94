"""Reading photos: format detection, decoding (JPEG/PNG/TIFF/WebP/HEIC/RAW), EXIF, quality.

Stages use these thin helpers rather than Pillow or rawpy directly, so that every photo is
decoded the same way: oriented as viewed, 8-bit RGB, downscaled while decoding when asked.
"""

from engine.io.decode import (
    ImageReadError,
    binarize_mask,
    file_sha256,
    fit_size,
    probe,
    read_image,
    read_mask,
    resize_area,
    write_png,
)
from engine.io.exif import ExifInfo, camera_key, focal_prior, sensor_width_mm
from engine.io.formats import IMAGE_EXTENSIONS, RAW_EXTENSIONS, FileKind, classify, sniff
from engine.io.quality import clipped_fractions, sharpness

__all__ = [
    "IMAGE_EXTENSIONS",
    "RAW_EXTENSIONS",
    "ExifInfo",
    "FileKind",
    "ImageReadError",
    "binarize_mask",
    "camera_key",
    "classify",
    "clipped_fractions",
    "file_sha256",
    "fit_size",
    "focal_prior",
    "probe",
    "read_image",
    "read_mask",
    "resize_area",
    "sensor_width_mm",
    "sharpness",
    "sniff",
    "write_png",
]
