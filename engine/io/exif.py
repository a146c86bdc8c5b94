"""Camera metadata (EXIF) and the focal-length prior it gives.

Only what structure from motion needs is read: camera make and model, lens, focal length in mm,
its 35 mm equivalent and the focal-plane resolution. GPS and everything else is ignored here and
never written to a working copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from PIL import Image

logger = logging.getLogger(__name__)

# EXIF tag numbers (CIPA DC-008).
TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
TAG_ORIENTATION = 0x0112
TAG_EXIF_IFD = 0x8769
TAG_FOCAL_LENGTH = 0x920A
TAG_PIXEL_X = 0xA002
TAG_PIXEL_Y = 0xA003
TAG_FOCAL_PLANE_X_RES = 0xA20E
TAG_FOCAL_PLANE_UNIT = 0xA210
TAG_FOCAL_35MM = 0xA405
TAG_LENS_MAKE = 0xA433
TAG_LENS_MODEL = 0xA434

#: Millimetres per FocalPlaneResolutionUnit (2 inch, 3 cm, 4 mm, 5 micrometre).
_UNIT_MM = {1: 25.4, 2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}

#: Full-frame width that defines the 35 mm equivalent focal length.
FULL_FRAME_WIDTH_MM = 36.0

#: Sensor width in mm (the long side) of common cameras, by "<first word of make> <model>" in
#: lower case. Used when EXIF gives the focal length in mm but no 35 mm equivalent.
SENSOR_WIDTH_MM: dict[str, float] = {
    "canon eos 5d mark iii": 36.0,
    "canon eos 5d mark iv": 36.0,
    "canon eos 6d": 35.8,
    "canon eos 6d mark ii": 35.9,
    "canon eos r": 36.0,
    "canon eos r5": 36.0,
    "canon eos r6": 35.9,
    "canon eos 80d": 22.5,
    "canon eos 90d": 22.3,
    "canon eos 2000d": 22.3,
    "canon eos rebel t7": 22.3,
    "canon eos m50": 22.3,
    "canon powershot g7 x mark ii": 13.2,
    "nikon d750": 35.9,
    "nikon d850": 35.9,
    "nikon d5600": 23.5,
    "nikon d7500": 23.5,
    "nikon z 6": 35.9,
    "nikon z 7": 35.9,
    "nikon z 50": 23.5,
    "sony ilce-7m3": 35.6,
    "sony ilce-7m4": 35.9,
    "sony ilce-7rm4": 35.7,
    "sony ilce-6000": 23.5,
    "sony ilce-6400": 23.5,
    "sony dsc-rx100m7": 13.2,
    "fujifilm x-t3": 23.5,
    "fujifilm x-t4": 23.5,
    "fujifilm x-t30": 23.5,
    "fujifilm x100v": 23.5,
    "fujifilm gfx100s": 43.8,
    "olympus e-m10markiii": 17.3,
    "olympus e-m1markii": 17.3,
    "panasonic dc-g9": 17.3,
    "panasonic dc-gh5": 17.3,
}


@dataclass(frozen=True)
class ExifInfo:
    """What a photo says about itself, plus its decoded size.

    Attributes
    ----------
    make, model, lens
        Camera and lens description ("" when absent).
    focal_mm
        Focal length in millimetres.
    focal_35mm
        35 mm equivalent focal length in millimetres.
    focal_plane_x_res
        FocalPlaneXResolution: sensor pixels per ``focal_plane_unit_mm``.
    focal_plane_unit_mm
        Millimetres per focal-plane resolution unit.
    exif_width, exif_height
        PixelXDimension / PixelYDimension: the image size the focal-plane resolution refers to.
    orientation
        EXIF orientation (1-8) of the file; the decoded pixels already have it applied.
    format
        Decoded format (``JPEG``, ``PNG``, ``TIFF``, ``WEBP``, ``HEIF``, ``RAW`` ...).
    original_width, original_height
        Full decoded size after orientation, before any downscaling (0 when unknown).
    """

    make: str = ""
    model: str = ""
    lens: str = ""
    focal_mm: float | None = None
    focal_35mm: float | None = None
    focal_plane_x_res: float | None = None
    focal_plane_unit_mm: float | None = None
    exif_width: int | None = None
    exif_height: int | None = None
    orientation: int = 1
    format: str = ""
    original_width: int = 0
    original_height: int = 0

    def with_size(self, width: int, height: int, fmt: str | None = None) -> ExifInfo:
        """Copy with the original (oriented) size and optionally the format set."""
        return replace(
            self,
            original_width=int(width),
            original_height=int(height),
            format=self.format if fmt is None else fmt,
        )


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return ""
    return " ".join(value.replace("\x00", " ").split())


def _number(value: object) -> float | None:
    if isinstance(value, tuple) and len(value) == 2:  # an un-reduced (num, den) pair
        num, den = value
        value = num / den if den else 0.0
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if number != number or number <= 0 or number == float("inf"):
        return None
    return number


def _int(value: object) -> int | None:
    number = _number(value)
    return int(round(number)) if number is not None else None


def exif_from_pillow(exif: Image.Exif) -> ExifInfo:
    """Read the fields Vitrine uses from a Pillow :class:`PIL.Image.Exif`.

    Parameters
    ----------
    exif
        From ``Image.getexif()`` or ``Image.Exif().load(data)``.

    Returns
    -------
    ExifInfo
        Sizes and format are left unset.
    """
    try:
        sub = exif.get_ifd(TAG_EXIF_IFD)
    except Exception:  # noqa: BLE001 - a broken EXIF sub-directory must not lose the photo
        logger.debug("unreadable EXIF sub-IFD", exc_info=True)
        sub = {}

    def get(tag: int) -> object:
        value = sub.get(tag)
        return exif.get(tag) if value is None else value

    unit = _int(get(TAG_FOCAL_PLANE_UNIT))
    x_res = _number(get(TAG_FOCAL_PLANE_X_RES))
    lens = _text(get(TAG_LENS_MODEL))
    orientation = _int(exif.get(TAG_ORIENTATION)) or 1
    return ExifInfo(
        make=_text(exif.get(TAG_MAKE)),
        model=_text(exif.get(TAG_MODEL)),
        lens=lens,
        focal_mm=_number(get(TAG_FOCAL_LENGTH)),
        focal_35mm=_number(get(TAG_FOCAL_35MM)),
        focal_plane_x_res=x_res,
        focal_plane_unit_mm=_UNIT_MM.get(unit or 2) if x_res else None,
        exif_width=_int(get(TAG_PIXEL_X)),
        exif_height=_int(get(TAG_PIXEL_Y)),
        orientation=orientation if 1 <= orientation <= 8 else 1,
    )


def exif_from_bytes(data: bytes) -> ExifInfo:
    """Parse a TIFF-structured blob (a TIFF-based RAW file, or an EXIF block).

    Parameters
    ----------
    data
        The bytes; IFD offsets are relative to their start.

    Returns
    -------
    ExifInfo
        Empty when the blob cannot be parsed.
    """
    exif = Image.Exif()
    try:
        exif.load(data)
    except Exception:  # noqa: BLE001 - metadata is optional, the pixels matter
        logger.debug("unparseable EXIF block", exc_info=True)
        return ExifInfo()
    return exif_from_pillow(exif)


def sensor_width_mm(make: str, model: str) -> float | None:
    """Sensor width (long side) in mm of a camera in the built-in table.

    Parameters
    ----------
    make, model
        EXIF Make and Model.

    Returns
    -------
    float or None
        None for cameras not in :data:`SENSOR_WIDTH_MM`.
    """
    model_key = " ".join(model.lower().split())
    brand = (make.lower().split() or [""])[0]
    keys = [model_key]
    if brand and not model_key.startswith(brand):
        keys.append(f"{brand} {model_key}")
    for key in keys:
        if key in SENSOR_WIDTH_MM:
            return SENSOR_WIDTH_MM[key]
    return None


def focal_prior(info: ExifInfo, width: int, height: int) -> tuple[float | None, str]:
    """Focal length in pixels of an image of ``width`` x ``height``, from its EXIF.

    The 35 mm equivalent is defined on the 36 mm width of a landscape full frame, and a sensor's
    width lies along the image's long side, so both priors scale with the long side and hold for
    portrait and landscape shots alike.

    Parameters
    ----------
    info
        The photo's EXIF.
    width, height
        Size of the image the prior is for (the working copy).

    Returns
    -------
    tuple
        ``(focal_px, source)`` with source ``"exif_35mm"``, ``"exif_sensor"`` or
        ``(None, "none")`` when EXIF does not say enough.
    """
    long_side = float(max(width, height))
    if info.focal_35mm:
        return info.focal_35mm / FULL_FRAME_WIDTH_MM * long_side, "exif_35mm"
    if info.focal_mm:
        sensor = sensor_width_mm(info.make, info.model)
        if sensor:
            return info.focal_mm / sensor * long_side, "exif_sensor"
        if info.focal_plane_x_res and info.focal_plane_unit_mm:
            recorded = max(info.exif_width or 0, info.exif_height or 0)
            recorded = recorded or max(info.original_width, info.original_height)
            if recorded:
                px_per_mm = info.focal_plane_x_res / info.focal_plane_unit_mm
                sensor = recorded / px_per_mm
                # A FocalPlaneXResolution giving an implausible sensor is a known firmware bug.
                if 1.0 <= sensor <= 60.0:
                    return info.focal_mm / sensor * long_side, "exif_sensor"
                logger.debug("ignoring focal-plane resolution: sensor %.1f mm", sensor)
    return None, "none"


def camera_key(info: ExifInfo, width: int, height: int) -> str:
    """Key shared by images that should share intrinsics.

    Parameters
    ----------
    info
        The photo's EXIF.
    width, height
        Working-copy size after orientation (portrait and landscape shots differ).

    Returns
    -------
    str
        ``make|model|lens|focal_mm|WxH``.
    """
    focal = f"{info.focal_mm:g}" if info.focal_mm else ""
    return f"{info.make}|{info.model}|{info.lens}|{focal}|{width}x{height}"
