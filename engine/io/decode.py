"""Decoding photos into 8-bit RGB arrays: JPEG, PNG, TIFF, WebP, HEIC/HEIF and camera RAW.

Every reader applies the EXIF orientation, so pixels come out the way the photo is viewed, and
can downscale while decoding (JPEG draft mode, LibRaw half size, ``Image.reduce``) so that a
100-megapixel photo never needs its full size in memory. Failures raise :class:`ImageReadError`
with a short reason in plain words, fit for a list of skipped files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pillow_heif
from PIL import Image, ImageFile, ImageOps

from engine.config import IngestConfig
from engine.errors import InputError, OutputError, disk_full_error, is_disk_full
from engine.io.exif import ExifInfo, exif_from_bytes, exif_from_pillow
from engine.io.formats import HEAD_BYTES, classify

logger = logging.getLogger(__name__)

pillow_heif.register_heif_opener()

#: Pillow formats accepted; everything else is refused rather than half-supported.
PILLOW_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "HEIF", "AVIF", "BMP")
#: Default decompression-bomb limit (pixels), the same as :class:`IngestConfig`'s.
DEFAULT_MAX_PIXELS = IngestConfig().max_pixels

#: EXIF orientation -> the transpose that shows the photo upright (as ImageOps.exif_transpose).
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Pillow's bomb guard and truncated-image switch are process globals; they are set around our
# own decoding only, under a lock, so that the configured limit (not Pillow's) applies.
_PILLOW_LOCK = threading.RLock()


class ImageReadError(InputError):
    """A file cannot be used as a photo.

    Attributes
    ----------
    path
        The file.
    reason
        Short reason in plain words (for lists of skipped files).
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"Cannot use '{self.path.name}': {reason}.")


@contextlib.contextmanager
def _pillow_limits() -> Iterator[None]:
    with _PILLOW_LOCK:
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        # Each reader checks its own max_pixels from the header right after opening, before any
        # pixel is decoded; Pillow's guard (a warning at 89 MP, an error at 179 MP) would refuse
        # photos the configuration allows.
        Image.MAX_IMAGE_PIXELS = None
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _unreadable(path: Path, exc: OSError) -> ImageReadError:
    if isinstance(exc, PermissionError):
        return ImageReadError(
            path, "cannot be read (permission denied): check the file's permissions"
        )
    if isinstance(exc, IsADirectoryError):
        return ImageReadError(path, "is a folder, not a photo")
    return ImageReadError(path, f"cannot be read ({exc.strerror or exc.__class__.__name__})")


def read_head(path: Path | str, size: int = HEAD_BYTES) -> bytes:
    """First bytes of a file.

    Parameters
    ----------
    path
        The file.
    size
        How many bytes.

    Returns
    -------
    bytes
        Fewer than ``size`` for short files.

    Raises
    ------
    ImageReadError
        When the file cannot be read (permissions, a folder ...).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes, read in chunks.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    str
        Hex digest.

    Raises
    ------
    ImageReadError
        When the file cannot be read.
    """
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    return digest.hexdigest()


def fit_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """Size after downscaling so that the longest side is at most ``max_size``.

    Parameters
    ----------
    width, height
        Original size.
    max_size
        Longest side allowed; None keeps the size.

    Returns
    -------
    tuple of int
        ``(width, height)``; never upscaled, never below 1.
    """
    if not max_size or max(width, height) <= max_size:
        return width, height
    scale = max_size / max(width, height)
    if width >= height:
        return max_size, max(1, round(height * scale))
    return max(1, round(width * scale)), max_size


def resize_area(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with pixel-area averaging (no aliasing when shrinking).

    Parameters
    ----------
    image
        ``(H, W)`` or ``(H, W, C)`` array.
    width, height
        Target size.

    Returns
    -------
    numpy.ndarray
        The resized array (the input itself when the size already matches).
    """
    if image.shape[1] == width and image.shape[0] == height:
        return image
    interp = cv2.INTER_AREA if width <= image.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            path,
            f"too large ({width} x {height} = {width * height / 1e6:.0f} megapixels, "
            f"the limit is {max_pixels / 1e6:.0f}): downscale it first",
        )


def _damaged(path: Path, exc: BaseException) -> ImageReadError:
    text = str(exc).replace(str(path), path.name)
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return ImageReadError(path, "damaged or incomplete file (the image data ends early)")
    if "cannot identify image file" in text:
        return ImageReadError(path, "not a readable image (damaged file or unsupported variant)")
    return ImageReadError(path, f"damaged or unsupported image ({text or exc.__class__.__name__})")


def _to_rgb8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit / float greyscale (scientific TIFF, 16-bit PNG): map the range to 8 bits.
        values = np.asarray(im, dtype=np.float32)
        peak = float(values.max()) if values.size else 0.0
        scale = 255.0 if (mode == "F" and peak <= 1.0) else (255.0 / 65535.0 if peak > 255 else 1.0)
        gray = np.clip(values * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if "A" in mode or (mode == "P" and "transparency" in im.info):
        # Cut-out product shots: put transparent areas on white, not on undefined colour.
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        return (rgba[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _read_pillow(path: Path, max_size: int | None, max_pixels: int) -> tuple[np.ndarray, ExifInfo]:
    try:
        with _pillow_limits(), Image.open(path, formats=PILLOW_FORMATS) as im:
            fmt = im.format or ""
            width, height = im.size
            _check_pixels(path, width, height, max_pixels)
            info = exif_from_pillow(im.getexif())
            if info.orientation in (5, 6, 7, 8):
                width, height = height, width
            target = fit_size(width, height, max_size)
            if fmt in ("JPEG", "MPO") and target != (width, height):
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, still at least the target size.
                scale = max(target) / max(width, height)
                im.draft("RGB", (math.ceil(im.size[0] * scale), math.ceil(im.size[1] * scale)))
            im.load()
            # Shrink by whole factors before rotating: the full-size copy is never made twice.
            stored_target = target[::-1] if info.orientation in (5, 6, 7, 8) else target
            factor = min(im.size[0] // stored_target[0], im.size[1] // stored_target[1])
            image = im.reduce(factor) if factor >= 2 else im
            method = EXIF_TRANSPOSE.get(info.orientation)
            if method is not None:
                image = image.transpose(method)
            rgb = _to_rgb8(image)
    except ImageReadError:
        raise
    except PermissionError as exc:
        raise _unreadable(path, exc) from exc
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        TypeError,
        RuntimeError,
        MemoryError,
    ) as exc:
        # Pillow and pillow-heif signal damaged data with all of these.
        raise _damaged(path, exc) from exc
    rgb = resize_area(rgb, *target)
    return np.ascontiguousarray(rgb), info.with_size(width, height, fmt)


def _raw_error(path: Path, exc: BaseException) -> ImageReadError:
    text = exc.args[0] if exc.args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text).strip() or exc.__class__.__name__
    return ImageReadError(
        path, f"not a readable camera RAW file (unsupported camera or damaged file: {text})"
    )


def _raw_metadata(raw: object, data: bytes) -> ExifInfo:
    info = ExifInfo()
    if data.startswith((b"II*\x00", b"MM\x00*")):
        # DNG, CR2, NEF, ARW ...: the file itself is a TIFF whose IFD0 holds the EXIF.
        info = exif_from_bytes(data)
    if not (info.make or info.focal_mm):
        try:
            thumb = raw.extract_thumb()  # type: ignore[attr-defined]
            if str(thumb.format).endswith("JPEG"):
                with Image.open(io.BytesIO(thumb.data)) as im:
                    info = exif_from_pillow(im.getexif())
        except Exception:  # noqa: BLE001 - a missing preview only costs the metadata
            logger.debug("no EXIF from the RAW preview", exc_info=True)
    other = getattr(raw, "other", None)
    lens = getattr(raw, "lens", None)
    if info.focal_mm is None and other is not None and other.focal_length > 0:
        info = dataclasses.replace(info, focal_mm=float(other.focal_length))
    if not info.lens and lens is not None and lens.model:
        info = dataclasses.replace(info, lens=" ".join(str(lens.model).split()))
    # LibRaw applies the orientation itself; report the file's but never apply it twice.
    return info


def _open_raw(path: Path) -> tuple[object, bytes]:
    import rawpy  # local: LibRaw is only loaded when a RAW file comes along

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    try:
        return rawpy.imread(io.BytesIO(data)), data
    except rawpy.LibRawError as exc:
        raise _raw_error(path, exc) from exc


def _raw_size(raw: object) -> tuple[int, int]:
    sizes = raw.sizes  # type: ignore[attr-defined]
    width, height = int(sizes.width), int(sizes.height)
    if sizes.flip in (5, 6):  # LibRaw's 90-degree rotations
        width, height = height, width
    return width, height


def _read_raw(path: Path, max_size: int | None, max_pixels: int) -> tuple[np.ndarray, ExifInfo]:
    import rawpy

    raw, data = _open_raw(path)
    try:
        with raw:  # type: ignore[attr-defined]
            sizes = raw.sizes  # type: ignore[attr-defined]
            _check_pixels(path, int(sizes.raw_width), int(sizes.raw_height), max_pixels)
            width, height = _raw_size(raw)
            info = _raw_metadata(raw, data)
            del data
            half = bool(max_size) and max(width, height) // 2 >= max_size  # type: ignore[operator]
            rgb = raw.postprocess(  # type: ignore[attr-defined]
                use_camera_wb=True,
                use_auto_wb=False,
                output_bps=8,
                half_size=half,
                no_auto_bright=False,
            )
    except rawpy.LibRawError as exc:
        raise _raw_error(path, exc) from exc
    if not half:
        height, width = rgb.shape[:2]
    target = fit_size(width, height, max_size)
    rgb = resize_area(np.asarray(rgb, dtype=np.uint8), *target)
    return np.ascontiguousarray(rgb), info.with_size(width, height, "RAW")


def read_image(
    path: Path | str, max_size: int | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, ExifInfo]:
    """Decode a photo to 8-bit RGB, oriented as viewed, optionally downscaled.

    Parameters
    ----------
    path
        JPEG, PNG, TIFF, WebP, HEIC/HEIF or camera RAW file (content decides the format).
    max_size
        Longest side of the result; larger photos are downscaled (area averaging), smaller ones
        are left as they are. None decodes the full size.
    max_pixels
        Photos with more pixels than this are refused (decompression-bomb guard).

    Returns
    -------
    tuple
        ``(rgb, info)``: a ``(H, W, 3)`` uint8 array and the photo's :class:`ExifInfo`, whose
        ``original_width`` / ``original_height`` give the full oriented size.

    Raises
    ------
    ImageReadError
        When the file is not a usable image; ``reason`` says why.
    """
    path = Path(path)
    kind = classify(path, read_head(path))
    if not kind.decoder:
        raise ImageReadError(path, kind.reason)
    if kind.decoder == "raw":
        return _read_raw(path, max_size, max_pixels)
    return _read_pillow(path, max_size, max_pixels)


def probe(path: Path | str) -> ExifInfo:
    """Read a photo's size, format and EXIF without decoding its pixels (RAW: metadata only).

    Parameters
    ----------
    path
        The photo.

    Returns
    -------
    ExifInfo
        With ``format`` and the oriented ``original_width`` / ``original_height``.

    Raises
    ------
    ImageReadError
        When the file is not an image or its header cannot be parsed.
    """
    path = Path(path)
    kind = classify(path, read_head(path))
    if not kind.decoder:
        raise ImageReadError(path, kind.reason)
    if kind.decoder == "raw":
        import rawpy

        raw, data = _open_raw(path)
        try:
            with raw:  # type: ignore[attr-defined]
                return _raw_metadata(raw, data).with_size(*_raw_size(raw), "RAW")
        except rawpy.LibRawError as exc:
            raise _raw_error(path, exc) from exc
    try:
        with _pillow_limits(), Image.open(path, formats=PILLOW_FORMATS) as im:
            info = exif_from_pillow(im.getexif())
            width, height = im.size
            if info.orientation in (5, 6, 7, 8):
                width, height = height, width
            return info.with_size(width, height, im.format or "")
    except PermissionError as exc:
        raise _unreadable(path, exc) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, RuntimeError) as exc:
        raise _damaged(path, exc) from exc


def read_mask(path: Path | str) -> np.ndarray:
    """Read a mask image as 8-bit greyscale, EXIF orientation applied.

    A mask whose colour channels are constant but which has transparency (a cut-out) is read
    from its alpha channel.

    Parameters
    ----------
    path
        PNG (or any format Pillow reads).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8, not yet binarised.

    Raises
    ------
    ImageReadError
        When the file is not a readable image.
    """
    path = Path(path)
    try:
        with _pillow_limits(), Image.open(path) as im:
            _check_pixels(path, im.size[0], im.size[1], DEFAULT_MAX_PIXELS)
            im.load()
            oriented = ImageOps.exif_transpose(im)
            gray = np.asarray(oriented.convert("L"), dtype=np.uint8)
            if "A" in oriented.mode or "transparency" in oriented.info:
                alpha = np.asarray(oriented.convert("RGBA"), dtype=np.uint8)[..., 3]
                if gray.min() == gray.max() and alpha.min() != alpha.max():
                    gray = alpha
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise _unreadable(path, exc) from exc
        raise _damaged(path, exc) from exc
    except (SyntaxError, ValueError, EOFError) as exc:
        raise _damaged(path, exc) from exc
    return np.ascontiguousarray(gray)


def binarize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a mask to ``width`` x ``height`` (nearest neighbour) and make it 0 / 255.

    Parameters
    ----------
    mask
        ``(H, W)`` uint8 greyscale.
    width, height
        Target size.

    Returns
    -------
    numpy.ndarray
        ``(height, width)`` uint8 with 255 where ``mask > 127``.
    """
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.where(mask > 127, 255, 0).astype(np.uint8)


def write_png(path: Path | str, image: np.ndarray, *, compress_level: int = 3) -> Path:
    """Write an array as a fresh PNG (no metadata at all), atomically.

    The file name may end in any extension (``a.jpg``, ``IMG_1.HEIC``): the content is PNG
    either way, which COLMAP detects from the bytes.

    Parameters
    ----------
    path
        Target file; its folder is created.
    image
        ``(H, W, 3)`` RGB or ``(H, W)`` greyscale uint8.
    compress_level
        zlib level (1 fast ... 9 small).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        When the folder cannot be written.
    """
    from engine.export._atomic import atomic_open

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path.parent, path.name) from exc
        raise OutputError(
            f"Cannot write {path.name} in {path.parent}: "
            f"{exc.strerror or exc}. Check free disk space and permissions."
        ) from exc
    with atomic_open(path, "wb") as fh:
        Image.fromarray(np.ascontiguousarray(image)).save(
            fh, format="PNG", compress_level=compress_level
        )
    return path
