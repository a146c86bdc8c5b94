"""Recognising what a file holds from its first bytes and its extension.

Content decides, the extension only breaks ties: a JPEG named ``.png`` is read as a JPEG, and a
PDF named ``.jpg`` is refused as a PDF. TIFF-structured camera RAW files (DNG, CR2, NEF, ARW ...)
share the TIFF signature, so for those the extension says whether LibRaw or Pillow reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Extensions of the ordinary image formats Pillow (with pillow-heif) reads.
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".tif",
        ".tiff",
        ".webp",
        ".heic",
        ".heif",
        ".hif",
        ".avif",
        ".bmp",
    }
)
#: Extensions of camera RAW formats, decoded with LibRaw (rawpy).
RAW_EXTENSIONS = frozenset(
    {
        ".dng",
        ".cr2",
        ".cr3",
        ".crw",
        ".nef",
        ".nrw",
        ".arw",
        ".srf",
        ".sr2",
        ".raf",
        ".orf",
        ".rw2",
        ".pef",
        ".srw",
        ".x3f",
        ".3fr",
        ".iiq",
        ".erf",
        ".mrw",
        ".rwl",
        ".raw",
    }
)

#: Content kinds that are images Pillow decodes.
PILLOW_KINDS = frozenset({"jpeg", "png", "tiff", "webp", "heif", "bmp"})
#: Content kinds that only LibRaw decodes.
RAW_KINDS = frozenset({"cr2", "cr3", "orf", "rw2", "raf"})

_HEIF_BRANDS = frozenset(
    {
        b"heic",
        b"heix",
        b"hevc",
        b"hevx",
        b"heim",
        b"heis",
        b"hevm",
        b"hevs",
        b"mif1",
        b"msf1",
        b"avif",
        b"avis",
    }
)
_VIDEO_BRANDS = frozenset({b"isom", b"iso2", b"mp41", b"mp42", b"qt  ", b"M4V ", b"3gp4", b"3gp5"})

#: How a non-image file is described to the user ("not an image (looks like ...)").
NON_IMAGE_DESCRIPTIONS = {
    "pdf": "a PDF document",
    "zip": "a ZIP archive or office document",
    "video": "a video",
    "psd": "a Photoshop document",
    "svg": "an SVG drawing",
    "html": "a web page",
    "text": "a text file",
    "gzip": "a compressed archive",
    "rar": "a RAR archive",
    "7z": "a 7-Zip archive",
    "sqlite": "a database file",
    "exe": "a program",
    "elf": "a program",
    "mp3": "an audio file",
    "wav": "an audio file",
}

_FORMAT_NAMES = {
    ".jpg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".tif": "TIFF",
    ".heic": "HEIC",
    ".hif": "HEIF",
}

#: Number of leading bytes :func:`sniff` looks at.
HEAD_BYTES = 64


def sniff(head: bytes) -> str:
    """Name the kind of data from a file's first bytes.

    Parameters
    ----------
    head
        The file's first :data:`HEAD_BYTES` bytes (fewer for short files).

    Returns
    -------
    str
        ``"empty"``, an image kind (``jpeg png tiff webp heif bmp gif``), a RAW kind
        (``cr2 cr3 orf rw2 raf``), a non-image kind (keys of :data:`NON_IMAGE_DESCRIPTIONS`)
        or ``"unknown"``.
    """
    if not head:
        return "empty"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "cr2" if head[8:10] == b"CR" else "tiff"
    if head.startswith((b"IIRO", b"IIRS", b"MMOR")):
        return "orf"
    if head.startswith(b"IIU\x00"):
        return "rw2"
    if head.startswith(b"FUJIFILMCCD-RAW"):
        return "raf"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "heif"
        if brand == b"crx ":
            return "cr3"
        return "video"
    if head.startswith(b"BM") and len(head) >= 14:
        return "bmp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    return _sniff_other(head)


def _sniff_other(head: bytes) -> str:
    signatures = (
        (b"%PDF", "pdf"),
        (b"PK\x03\x04", "zip"),
        (b"8BPS", "psd"),
        (b"\x1f\x8b", "gzip"),
        (b"Rar!", "rar"),
        (b"7z\xbc\xaf", "7z"),
        (b"SQLite format 3", "sqlite"),
        (b"MZ", "exe"),
        (b"\x7fELF", "elf"),
        (b"ID3", "mp3"),
        (b"\x1aE\xdf\xa3", "video"),
    )
    for magic, kind in signatures:
        if head.startswith(magic):
            return kind
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "svg"
    if text.startswith((b"<!doctype html", b"<html")):
        return "html"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            # A multi-byte character cut at the end of the head is still text.
            try:
                head[:-3].decode("utf-8")
            except UnicodeDecodeError:
                return "unknown"
        return "text"
    return "unknown"


@dataclass(frozen=True)
class FileKind:
    """What a file is and which decoder reads it.

    Attributes
    ----------
    kind
        Content kind from :func:`sniff`.
    decoder
        ``"pillow"``, ``"raw"``, or ``""`` when the file is not a usable image.
    reason
        Why the file is not usable (``""`` when it is).
    """

    kind: str
    decoder: str
    reason: str = ""


def classify(path: Path, head: bytes) -> FileKind:
    """Decide how to read a file from its first bytes and its extension.

    Parameters
    ----------
    path
        The file (only its extension is used).
    head
        Its first bytes (see :func:`sniff`).

    Returns
    -------
    FileKind
        The decoder to use, or the reason the file is not a usable image.
    """
    ext = path.suffix.lower()
    kind = sniff(head)
    if kind == "empty":
        return FileKind(kind, "", "empty file (0 bytes)")
    if kind == "tiff":
        # DNG, NEF, ARW, PEF ... are TIFF inside; only the extension tells them apart.
        return FileKind(kind, "raw" if ext in RAW_EXTENSIONS else "pillow")
    if kind in PILLOW_KINDS:
        return FileKind(kind, "pillow")
    if kind in RAW_KINDS:
        return FileKind(kind, "raw")
    if kind == "gif":
        return FileKind(kind, "", "GIF images are not supported (save the photo as JPEG or PNG)")
    if kind in NON_IMAGE_DESCRIPTIONS:
        return FileKind(kind, "", f"not an image (looks like {NON_IMAGE_DESCRIPTIONS[kind]})")
    if ext in RAW_EXTENSIONS:
        # Less common RAW containers (X3F, MRW, IIQ ...) have signatures of their own.
        return FileKind(kind, "raw")
    if ext in IMAGE_EXTENSIONS:
        label = _FORMAT_NAMES.get(ext, ext.lstrip(".").upper())
        return FileKind(
            kind,
            "",
            f"not a readable image: the content is not {label} "
            "or any known image format (damaged file?)",
        )
    return FileKind(kind, "", "not an image (unrecognised file type)")
