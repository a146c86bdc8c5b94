"""Ingest stage and engine.io: every fixture is generated in tmp_path."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from engine.config import IngestConfig
from engine.errors import InputError, NotEnoughImagesError
from engine.io import (
    classify,
    clipped_fractions,
    focal_prior,
    probe,
    read_image,
    sensor_width_mm,
    sharpness,
    sniff,
)
from engine.io import decode as decode_module
from engine.io.exif import ExifInfo
from engine.progress import Cancelled, CancelToken, ProgressEvent
from engine.stages import ingest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- fixtures helpers


def texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour texture with edges: SIFT-friendly and sharp."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    noise = rng.integers(-8, 9, (height, width, 3))
    return np.clip(big.astype(int) + noise, 0, 255).astype(np.uint8)


def make_exif(
    make: str = "",
    model: str = "",
    orientation: int | None = None,
    focal: float | None = None,
    focal35: int | None = None,
    lens: str = "",
    fp_xres: float | None = None,
    fp_unit: int | None = None,
    pixel_x: int | None = None,
    gps: bool = False,
) -> Image.Exif:
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    if orientation is not None:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    if focal is not None:
        sub[0x920A] = float(focal)
    if focal35 is not None:
        sub[0xA405] = int(focal35)
    if lens:
        sub[0xA434] = lens
    if fp_xres is not None:
        sub[0xA20E] = float(fp_xres)
        sub[0xA210] = int(fp_unit or 2)
    if pixel_x is not None:
        sub[0xA002] = int(pixel_x)
    if gps:
        exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)
    return exif


def save(path: Path, rgb: np.ndarray, exif: Image.Exif | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {
        ".jpg": "JPEG",
        ".jpeg": "JPEG",
        ".png": "PNG",
        ".tif": "TIFF",
        ".tiff": "TIFF",
        ".webp": "WEBP",
        ".heic": "HEIF",
    }[path.suffix.lower()]
    if exif is not None:
        kwargs["exif"] = exif.tobytes()
    if fmt in ("JPEG", "WEBP", "HEIF"):
        kwargs.setdefault("quality", 95)
    Image.fromarray(rgb).save(path, format=fmt, **kwargs)
    return path


def tiff_with_tags(ifd0: list, exif_ifd: list, pixels: bytes) -> bytes:
    """A little-endian TIFF with IFD0, an EXIF IFD and one strip (enough for a DNG)."""
    fmt = {1: "B", 3: "H", 4: "I"}

    def encode(typ: int, values) -> tuple[int, bytes]:
        if typ == 2:
            return len(values) + 1, values.encode() + b"\0"
        if typ in (5, 10):
            code = "I" if typ == 5 else "i"
            return len(values), b"".join(struct.pack("<" + code * 2, n, d) for n, d in values)
        return len(values), struct.pack(f"<{len(values)}{fmt[typ]}", *values)

    def build(entries: list, data_offset: int) -> tuple[bytes, bytes]:
        table = bytearray(struct.pack("<H", len(entries)))
        extra = bytearray()
        for tag, typ, values in sorted(entries, key=lambda e: e[0]):
            count, raw = encode(typ, values)
            table += struct.pack("<HHI", tag, typ, count)
            if len(raw) <= 4:
                table += raw.ljust(4, b"\0")
            else:
                table += struct.pack("<I", data_offset + len(extra))
                extra += raw + (b"\0" if len(raw) % 2 else b"")
        table += struct.pack("<I", 0)
        return bytes(table), bytes(extra)

    ifd0 = [e for e in ifd0 if e[0] not in (273, 34665)]
    n0 = len(ifd0) + 2
    exif_offset = 8 + 2 + 12 * n0 + 4
    exif_table, exif_extra = build(exif_ifd, exif_offset + 2 + 12 * len(exif_ifd) + 4)
    ifd0_data_offset = exif_offset + len(exif_table) + len(exif_extra)
    # Two passes: the strip follows IFD0's own out-of-line values.
    _, extra0 = build(ifd0 + [(273, 4, [0]), (34665, 4, [0])], ifd0_data_offset)
    strip = ifd0_data_offset + len(extra0)
    table0, extra0 = build(ifd0 + [(273, 4, [strip]), (34665, 4, [exif_offset])], ifd0_data_offset)
    return b"II*\0" + struct.pack("<I", 8) + table0 + exif_table + exif_extra + extra0 + pixels


def make_dng(
    path: Path,
    width: int = 96,
    height: int = 64,
    make: str = "Canon",
    model: str = "Canon EOS 5D Mark IV",
    focal: int = 50,
    focal35: int | None = None,
) -> Path:
    """Minimal uncompressed 16-bit RGGB DNG: left half red, right half blue."""
    rgb = np.zeros((height, width, 3))
    rgb[:, : width // 2] = [0.8, 0.2, 0.1]
    rgb[:, width // 2 :] = [0.1, 0.3, 0.8]
    cfa = np.zeros((height, width), np.uint16)
    cfa[0::2, 0::2] = rgb[0::2, 0::2, 0] * 4000
    cfa[0::2, 1::2] = rgb[0::2, 1::2, 1] * 4000
    cfa[1::2, 0::2] = rgb[1::2, 0::2, 1] * 4000
    cfa[1::2, 1::2] = rgb[1::2, 1::2, 2] * 4000
    pixels = cfa.astype("<u2").tobytes()
    identity = [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]
    ifd0 = [
        (254, 4, [0]),
        (256, 4, [width]),
        (257, 4, [height]),
        (258, 3, [16]),
        (259, 3, [1]),
        (262, 3, [32803]),
        (271, 2, make),
        (272, 2, model),
        (274, 3, [1]),
        (277, 3, [1]),
        (278, 4, [height]),
        (279, 4, [len(pixels)]),
        (284, 3, [1]),
        (33421, 3, [2, 2]),
        (33422, 1, [0, 1, 1, 2]),
        (50706, 1, [1, 4, 0, 0]),
        (50707, 1, [1, 1, 0, 0]),
        (50708, 2, model),
        (50714, 4, [0]),
        (50717, 4, [4095]),
        (50721, 10, identity),
        (50728, 5, [(1, 1), (1, 1), (1, 1)]),
        (50778, 3, [21]),
    ]
    exif = [(37386, 5, [(focal, 1)])]
    if focal35:
        exif.append((41989, 3, [focal35]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tiff_with_tags(ifd0, exif, pixels))
    return path


def working(result, name: str) -> np.ndarray:
    rec = next(r for r in result.images if r.name == name)
    return np.asarray(Image.open(rec.working_path).convert("RGB"))


def by_name(result) -> dict:
    return {r.name: r for r in result.images}


def skipped(result) -> dict[str, str]:
    return {s.path: s.reason for s in result.skipped}


CFG = IngestConfig(max_image_size=1600)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("ext", [".jpg", ".png", ".tif", ".webp", ".heic"])
def test_every_ordinary_format_decodes_to_png_working_copy(tmp_path, ext):
    shoot = tmp_path / "shoot"
    originals = {f"a{ext}": texture(160, 120, 1), f"b{ext}": texture(160, 120, 2)}
    for name, rgb in originals.items():
        save(shoot / name, rgb)
    result = ingest.run([shoot], CFG, tmp_path / "work")
    assert [r.name for r in result.images] == [f"a{ext}", f"b{ext}"]
    assert result.skipped == ()
    assert result.image_dir == tmp_path / "work" / "images"
    lossless = ext in (".png", ".tif")
    for name, rgb in originals.items():
        rec = by_name(result)[name]
        # The working copy keeps the photo's name (extension included) but holds PNG data.
        assert rec.working_path == tmp_path / "work" / "images" / name
        assert rec.working_path.read_bytes()[:8] == PNG_MAGIC
        assert (rec.width, rec.height) == (160, 120) == (rec.original_width, rec.original_height)
        out = working(result, name)
        with Image.open(shoot / name) as reference:  # Pillow's own decoding of the file
            assert np.array_equal(out, np.asarray(reference.convert("RGB")))
        diff = np.abs(out.astype(int) - rgb.astype(int))
        if lossless:
            assert diff.max() == 0
        else:
            assert diff.mean() < 12, f"{ext}: mean error {diff.mean():.1f}"


def test_heic_written_by_pillow_heif_reads_back_with_exif(tmp_path):
    path = save(
        tmp_path / "IMG_0001.HEIC",
        texture(128, 96),
        make_exif("Apple", "iPhone 12", focal=4.2, focal35=26),
    )
    rgb, info = read_image(path)
    assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
    assert (info.format, info.make, info.model) == ("HEIF", "Apple", "iPhone 12")
    assert info.focal_35mm == 26 and info.focal_mm == pytest.approx(4.2)


def test_raw_dng_is_decoded_by_libraw_with_exif(tmp_path):
    path = make_dng(tmp_path / "raw" / "IMG_1.dng")
    rgb, info = read_image(path)
    assert rgb.shape == (64, 96, 3) and rgb.dtype == np.uint8
    left, right = rgb[:, :40].reshape(-1, 3).mean(0), rgb[:, 56:].reshape(-1, 3).mean(0)
    assert left[0] > left[2] + 50  # red half stays red (camera white balance, no auto WB)
    assert right[2] > right[0] + 50
    assert (info.format, info.make, info.model, info.focal_mm) == (
        "RAW",
        "Canon",
        "Canon EOS 5D Mark IV",
        50.0,
    )
    assert (info.original_width, info.original_height) == (96, 64)
    probed = probe(path)
    assert (probed.format, probed.original_width, probed.original_height) == ("RAW", 96, 64)


def test_raw_focal_prior_from_known_sensor_and_35mm(tmp_path):
    make_dng(tmp_path / "raw" / "a.DNG", focal=50)
    make_dng(tmp_path / "raw" / "b.dng", focal=35, focal35=56, model="Odd Camera")
    result = ingest.run([tmp_path / "raw"], CFG, tmp_path / "work")
    a, b = by_name(result)["a.DNG"], by_name(result)["b.dng"]
    assert a.focal_source == "exif_sensor"
    assert a.focal_px == pytest.approx(50 / 36.0 * 96)
    assert b.focal_source == "exif_35mm"
    assert b.focal_px == pytest.approx(56 / 36 * 96)
    assert a.working_path.name == "a.DNG"
    assert a.working_path.read_bytes()[:8] == PNG_MAGIC


def test_corrupt_raw_gets_a_clear_reason(tmp_path):
    shoot = tmp_path / "shoot"
    save(shoot / "a.jpg", texture(64, 48, 1))
    save(shoot / "b.jpg", texture(64, 48, 2))
    (shoot / "c.CR2").write_bytes(os.urandom(4096))
    (shoot / "d.NEF").write_bytes(b"II*\x00" + os.urandom(2000))
    result = ingest.run([shoot], CFG, tmp_path / "work")
    reasons = skipped(result)
    assert reasons["c.CR2"].startswith(
        "not a readable camera RAW file (unsupported camera or damaged file: "
    )
    assert reasons["d.NEF"].startswith("not a readable camera RAW file")
    assert len(result.images) == 2


def test_content_beats_extension(tmp_path):
    shoot = tmp_path / "shoot"
    rgb = texture(80, 60, 3)
    save(shoot / "real_jpeg.png", rgb.copy())  # name says PNG
    (shoot / "real_jpeg.png").write_bytes(_jpeg_bytes(rgb))
    save(shoot / "b.jpg", texture(80, 60, 4))
    result = ingest.run([shoot], CFG, tmp_path / "work")
    assert sorted(by_name(result)) == ["b.jpg", "real_jpeg.png"]


def _jpeg_bytes(rgb: np.ndarray, exif: Image.Exif | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    if exif is not None:
        kw["exif"] = exif.tobytes()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xff\xd8\xff\xe0", "jpeg"),
        (PNG_MAGIC, "png"),
        (b"II*\x00\x08\x00\x00\x00CR\x02\x00", "cr2"),
        (b"MM\x00*", "tiff"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"\x00\x00\x00\x18ftypheic", "heif"),
        (b"\x00\x00\x00\x18ftypcrx ", "cr3"),
        (b"\x00\x00\x00\x18ftypisom", "video"),
        (b"FUJIFILMCCD-RAW 0201", "raf"),
        (b"%PDF-1.7", "pdf"),
        (b"hello, world\n", "text"),
        (b"", "empty"),
        (b"\x00\x01\x02", "unknown"),
    ],
)
def test_sniff(head, kind):
    assert sniff(head) == kind


def test_classify_uses_extension_for_tiff_based_raw():
    tiff = b"II*\x00\x08\x00\x00\x00"
    assert classify(Path("x.dng"), tiff).decoder == "raw"
    assert classify(Path("x.NEF"), tiff).decoder == "raw"
    assert classify(Path("x.tif"), tiff).decoder == "pillow"
    assert classify(Path("x.jpg"), b"%PDF-1.4").reason == "not an image (looks like a PDF document)"
    assert classify(Path("x.jpg"), b"\x00\x01garbage").reason.startswith(
        "not a readable image: the content is not JPEG"
    )


# --------------------------------------------------------------------------- orientation, EXIF


def test_exif_orientation_6_rotates_working_copy(tmp_path):
    rgb = np.zeros((80, 120, 3), np.uint8)  # stored landscape: left half red, right half blue
    rgb[:, :60] = (255, 0, 0)
    rgb[:, 60:] = (0, 0, 255)
    shoot = tmp_path / "shoot"
    save(shoot / "rot.jpg", rgb, make_exif(orientation=6))
    save(shoot / "other.jpg", texture(120, 80))
    result = ingest.run([shoot], CFG, tmp_path / "work")
    rec = by_name(result)["rot.jpg"]
    assert (rec.width, rec.height) == (80, 120)
    assert (rec.original_width, rec.original_height) == (80, 120)
    out = working(result, "rot.jpg").astype(int)
    # Orientation 6 = rotate 90 degrees clockwise to view: the stored left edge becomes the top.
    top, bottom = out[:50].reshape(-1, 3).mean(0), out[70:].reshape(-1, 3).mean(0)
    assert top[0] > 240 and top[2] < 15
    assert bottom[2] > 240 and bottom[0] < 15


def test_focal_prior_from_35mm_is_orientation_independent(tmp_path):
    shoot = tmp_path / "shoot"
    exif = make_exif("Apple", "iPhone 12", focal=4.2, focal35=26)
    save(shoot / "land.jpg", texture(400, 300, 1), exif)
    save(shoot / "port.jpg", texture(300, 400, 2), exif)
    result = ingest.run([shoot], IngestConfig(max_image_size=200), tmp_path / "work")
    land, port = by_name(result)["land.jpg"], by_name(result)["port.jpg"]
    assert (land.width, land.height, port.width, port.height) == (200, 150, 150, 200)
    for rec in (land, port):
        assert rec.focal_source == "exif_35mm"
        assert rec.focal_px == pytest.approx(26 / 36 * 200)
        assert (rec.make, rec.model) == ("Apple", "iPhone 12")


def test_focal_prior_from_known_sensor_and_focal_plane_resolution(tmp_path):
    shoot = tmp_path / "shoot"
    save(
        shoot / "nikon.jpg",
        texture(400, 300, 1),
        make_exif("NIKON CORPORATION", "NIKON D850", focal=35, lens="24-70mm f/2.8"),
    )
    # Unknown camera: 4000 px across a 20 mm sensor (200 px/mm).
    save(
        shoot / "fpr.jpg",
        texture(400, 300, 2),
        make_exif("Acme", "Cam 1", focal=10, fp_xres=200.0, fp_unit=4, pixel_x=4000),
    )
    save(shoot / "bare.jpg", texture(400, 300, 3))
    save(shoot / "mm_only.jpg", texture(400, 300, 4), make_exif("Acme", "Cam 2", focal=10))
    recs = by_name(ingest.run([shoot], CFG, tmp_path / "work"))
    assert recs["nikon.jpg"].focal_source == "exif_sensor"
    assert recs["nikon.jpg"].focal_px == pytest.approx(35 / 35.9 * 400)
    assert recs["nikon.jpg"].lens == "24-70mm f/2.8"
    assert recs["fpr.jpg"].focal_source == "exif_sensor"
    assert recs["fpr.jpg"].focal_px == pytest.approx(10 / 20 * 400)
    for name in ("bare.jpg", "mm_only.jpg"):
        assert (recs[name].focal_px, recs[name].focal_source) == (None, "none")


def test_focal_prior_and_sensor_table_units():
    assert sensor_width_mm("SONY", "ILCE-7M3") == 35.6
    assert sensor_width_mm("Canon", "Canon EOS 5D Mark IV") == 36.0
    assert sensor_width_mm("Canon", "Canon EOS R50") is None
    info = ExifInfo(
        focal_mm=10.0,
        focal_plane_x_res=1000.0,
        focal_plane_unit_mm=25.4,
        original_width=1000,
        original_height=750,
    )  # 1000 px per inch -> 25.4 mm
    f, src = focal_prior(info, 500, 375)
    assert src == "exif_sensor" and f == pytest.approx(10 / 25.4 * 500)


def test_camera_grouping(tmp_path):
    shoot = tmp_path / "shoot"
    cam = {"make": "Canon", "model": "Canon EOS 5D Mark IV", "lens": "EF50mm f/1.8 STM"}
    save(shoot / "1.jpg", texture(160, 120, 1), make_exif(**cam, focal=50))
    save(shoot / "2.jpg", texture(160, 120, 2), make_exif(**cam, focal=50))
    save(shoot / "3.jpg", texture(120, 160, 3), make_exif(**cam, focal=50))  # portrait
    save(shoot / "4.jpg", texture(160, 120, 4), make_exif(**cam, focal=85))
    save(shoot / "5.jpg", texture(160, 120, 5), make_exif("Sony", "ILCE-7M3", focal=50))
    recs = by_name(ingest.run([shoot], CFG, tmp_path / "work"))
    keys = {name: rec.camera_key for name, rec in recs.items()}
    expected = "Canon|Canon EOS 5D Mark IV|EF50mm f/1.8 STM|50|160x120"
    assert keys["1.jpg"] == keys["2.jpg"] == expected
    assert keys["3.jpg"].endswith("|50|120x160")
    assert len(set(keys.values())) == 4


def test_working_copy_has_no_exif(tmp_path):
    shoot = tmp_path / "shoot"
    save(
        shoot / "a.jpg", texture(100, 80, 1), make_exif("Canon", "Canon EOS R5", focal=50, gps=True)
    )
    save(shoot / "b.jpg", texture(100, 80, 2), make_exif("Canon", "Canon EOS R5", gps=True))
    result = ingest.run([shoot], CFG, tmp_path / "work")
    for rec in result.images:
        data = rec.working_path.read_bytes()
        assert data[:8] == PNG_MAGIC
        assert b"eXIf" not in data and b"Exif" not in data and b"Canon" not in data
        with Image.open(rec.working_path) as im:
            assert dict(im.getexif()) == {}
            assert "exif" not in im.info


# --------------------------------------------------------------------------- size, quality


def test_downscale_to_max_image_size(tmp_path):
    shoot = tmp_path / "shoot"
    save(shoot / "wide.png", texture(1000, 500, 1))
    save(shoot / "tall.png", texture(300, 900, 2))
    save(shoot / "small.png", texture(100, 80, 3))
    recs = by_name(ingest.run([shoot], IngestConfig(max_image_size=256), tmp_path / "work"))
    assert (recs["wide.png"].width, recs["wide.png"].height) == (256, 128)
    assert (recs["tall.png"].width, recs["tall.png"].height) == (85, 256)
    assert (recs["small.png"].width, recs["small.png"].height) == (100, 80)  # never upscaled
    assert recs["wide.png"].scale == pytest.approx(0.256)
    assert (recs["wide.png"].original_width, recs["wide.png"].original_height) == (1000, 500)
    with Image.open(recs["tall.png"].working_path) as im:
        assert im.size == (85, 256) and im.mode == "RGB"


def test_large_jpeg_is_decoded_in_draft_mode(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    sizes = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    rgb = cv2.resize(texture(400, 300, 1), (4000, 3000), interpolation=cv2.INTER_LINEAR)
    path = save(tmp_path / "big.jpg", rgb)
    out, info = read_image(path, max_size=500)
    assert out.shape == (375, 500, 3)
    assert (info.original_width, info.original_height) == (4000, 3000)
    assert sizes == [(500, 375)]  # libjpeg decoded at 1/8 scale, not 12 megapixels
    expected = cv2.resize(rgb, (500, 375), interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 6


def test_decompression_bomb_guard(tmp_path):
    shoot = tmp_path / "shoot"
    save(shoot / "a.png", texture(100, 100, 1))
    save(shoot / "b.png", texture(100, 100, 2))
    save(shoot / "huge.png", texture(300, 200, 3))
    result = ingest.run([shoot], IngestConfig(max_pixels=50_000), tmp_path / "work")
    assert skipped(result)["huge.png"] == (
        "too large (300 x 200 = 0 megapixels, the limit is 0): downscale it first"
    )
    assert len(result.images) == 2


def test_sharpness_is_lower_for_blurred_copy(tmp_path):
    shoot = tmp_path / "shoot"
    sharp_rgb = texture(640, 480, 1)
    save(shoot / "sharp.png", sharp_rgb)
    save(shoot / "blurred.png", cv2.GaussianBlur(sharp_rgb, (0, 0), 6))
    result = ingest.run([shoot], CFG, tmp_path / "work")
    recs = by_name(result)
    assert recs["sharp.png"].sharpness > 200
    assert recs["blurred.png"].sharpness < 10
    # judged against the whole set by the pre-flight checks (tests/engine/test_coverage.py)
    assert not [w for w in result.warnings if "blurry" in w]


def test_sharpness_is_measured_at_a_fixed_size():
    rgb = texture(1600, 1200, 5)
    half = cv2.resize(rgb, (800, 600), interpolation=cv2.INTER_AREA)
    assert sharpness(rgb) == pytest.approx(sharpness(half), rel=1e-4)


def test_clipping_fractions(tmp_path):
    rgb = texture(200, 100, 1)
    rgb = np.clip(rgb, 20, 230).astype(np.uint8)
    rgb[:, :80] = 0  # 40 % black
    rgb[:10, 180:] = 255  # 1 % white
    assert clipped_fractions(rgb) == pytest.approx((0.40, 0.01))
    shoot = tmp_path / "shoot"
    save(shoot / "dark.png", rgb)
    save(shoot / "ok.png", texture(200, 100, 2))
    result = ingest.run([shoot], CFG, tmp_path / "work")
    rec = by_name(result)["dark.png"]
    assert rec.dark_fraction == pytest.approx(0.40)
    assert rec.bright_fraction == pytest.approx(0.01)
    assert not [w for w in result.warnings if "clipped" in w]  # the pre-flight's job


# --------------------------------------------------------------------------- bad files


def test_bad_files_are_skipped_with_reasons(tmp_path, monkeypatch):
    shoot = tmp_path / "shoot"
    save(shoot / "a.jpg", texture(120, 90, 1))
    save(shoot / "b.jpg", texture(120, 90, 2))
    shutil.copy(shoot / "a.jpg", shoot / "copy of a.jpg")
    (shoot / "empty.jpg").write_bytes(b"")
    full = _jpeg_bytes(texture(120, 90, 3))
    (shoot / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (shoot / "invoice.jpg").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n")
    (shoot / "notes.txt").write_text("shot on a turntable, 36 photos\n", encoding="utf-8")
    (shoot / "locked.jpg").write_bytes(_jpeg_bytes(texture(120, 90, 4)))
    (shoot / "garbage.png").write_bytes(os.urandom(500))
    (shoot / ".hidden.jpg").write_bytes(_jpeg_bytes(texture(120, 90, 5)))
    (shoot / "folder.jpg").mkdir()  # a folder with an image name is just a (empty) folder

    real_open = open

    def fake_open(file, *args, **kwargs):
        if Path(file).name == "locked.jpg":
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(decode_module, "open", fake_open, raising=False)
    result = ingest.run([shoot], CFG, tmp_path / "work")
    assert [r.name for r in result.images] == ["a.jpg", "b.jpg"]
    assert skipped(result) == {
        "copy of a.jpg": "identical to a.jpg",
        "empty.jpg": "empty file (0 bytes)",
        "garbage.png": "not a readable image: the content is not PNG or any known image format "
        "(damaged file?)",
        "invoice.jpg": "not an image (looks like a PDF document)",
        "locked.jpg": "cannot be read (permission denied): check the file's permissions",
        "notes.txt": "not an image (looks like a text file)",
        "truncated.jpg": "damaged or incomplete file (the image data ends early)",
    }
    assert not (tmp_path / "work" / "images" / "copy of a.jpg").exists()


def test_truncated_png_is_not_accepted_partially(tmp_path):
    data = io.BytesIO()
    Image.fromarray(texture(200, 150, 1)).save(data, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) * 2 // 3])
    with pytest.raises(decode_module.ImageReadError) as info:
        read_image(path)
    assert info.value.reason.startswith("damaged")
    assert "cut.png" in str(info.value)


def test_one_photo_folder_is_not_enough(tmp_path):
    shoot = tmp_path / "shoot"
    save(shoot / "only.jpg", texture(64, 48, 1))
    (shoot / "notes.pdf").write_bytes(b"%PDF-1.5\n")
    with pytest.raises(NotEnoughImagesError) as info:
        ingest.run([shoot], CFG, tmp_path / "work")
    message = str(info.value)
    assert message == (
        "Only 1 usable photo in 'shoot/': Vitrine needs at least 2 overlapping "
        "photos of the product. Skipped: notes.pdf: not an image (looks like a "
        "PDF document). Add photos taken all around the product and try again."
    )
    assert [(s.path, s.reason) for s in info.value.skipped] == [
        ("notes.pdf", "not an image (looks like a PDF document)")
    ]
    assert info.value.usable == 1
    assert info.value.exit_code == 2


def test_empty_folder_and_missing_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotEnoughImagesError, match=r"^No photos found in 'empty/': "):
        ingest.run([tmp_path / "empty"], CFG, tmp_path / "work")
    missing = tmp_path / "nope" / "shoot"
    with pytest.raises(InputError) as info:
        ingest.run([missing], CFG, tmp_path / "work")
    assert str(info.value) == (
        f"'{missing}' does not exist: check the path, or choose the folder that holds the photos."
    )
    with pytest.raises(InputError, match="No photos given"):
        ingest.run([], CFG, tmp_path / "work")


def test_refuses_to_read_from_its_own_working_folder(tmp_path):
    work = tmp_path / "work"
    save(work / "images" / "a.jpg", texture(64, 48, 1))
    with pytest.raises(InputError, match="inside the working folder"):
        ingest.run([work / "images"], CFG, work)


# --------------------------------------------------------------------------- masks


def test_masks_beside_photos_and_in_masks_folders(tmp_path):
    dataset = tmp_path / "set"
    images = dataset / "images"
    for i, name in enumerate(["a.jpg", "b.jpg", "c.jpg", "d.jpg"]):
        save(images / name, texture(200, 100, i))
    mask_a = np.zeros((200, 400), np.uint8)  # twice the photo's size, grey levels
    mask_a[:, 200:] = 200
    mask_a[:, 100:200] = 100
    (dataset / "masks").mkdir()
    Image.fromarray(mask_a).save(dataset / "masks" / "a.png")
    mask_b = np.zeros((100, 200), np.uint8)
    mask_b[50:] = 255
    Image.fromarray(mask_b).save(images / "b_mask.png")
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(dataset / "masks" / "c.png")
    (images / "masks").mkdir()
    Image.fromarray(np.full((100, 200), 255, np.uint8)).save(images / "masks" / "d.jpg.png")

    result = ingest.run([images], IngestConfig(max_image_size=100), tmp_path / "work")
    recs = by_name(result)
    assert sorted(recs) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]  # masks are not photos
    assert result.skipped == ()
    work_masks = tmp_path / "work" / "masks"
    assert recs["a.jpg"].mask_path == work_masks / "a.jpg.png"
    assert recs["a.jpg"].mask_source == "file" and recs["c.jpg"].mask_source == ""
    a = np.asarray(Image.open(recs["a.jpg"].mask_path))
    assert a.shape == (50, 100) and set(np.unique(a)) == {0, 255}
    assert (a[:, :50] == 0).all() and (a[:, 50:] == 255).all()  # 100 -> 0, 200 -> 255
    b = np.asarray(Image.open(recs["b.jpg"].mask_path))
    assert (b[:25] == 0).all() and (b[25:] == 255).all()
    assert recs["c.jpg"].mask_path is None
    assert (
        "Mask masks/c.png ignored: its shape (100 x 100) does not match the photo c.jpg "
        "(200 x 100)." in result.warnings
    )
    assert recs["d.jpg"].mask_path == work_masks / "d.jpg.png"

    # Given the whole set, masks/ is still not read as photos.
    result = ingest.run([dataset], IngestConfig(max_image_size=100), tmp_path / "work2")
    assert [r.name for r in result.images] == [
        "images/a.jpg",
        "images/b.jpg",
        "images/c.jpg",
        "images/d.jpg",
    ]
    assert result.skipped == ()
    assert by_name(result)["images/a.jpg"].mask_path == (
        tmp_path / "work2" / "masks" / "images" / "a.jpg.png"
    )


# --------------------------------------------------------------------------- names, order


def test_natural_order_subfolders_and_unique_names(tmp_path):
    shoot = tmp_path / "shoot"
    for i, name in enumerate(
        ["img10.jpg", "img2.jpg", "img1.jpg", "sub/img3.jpg", "A.jpg", "a.jpg"]
    ):
        save(shoot / name, texture(64, 48, i))
    result = ingest.run([shoot], CFG, tmp_path / "work")
    assert [r.name for r in result.images] == [
        "A.jpg",
        "a_2.jpg",
        "img1.jpg",
        "img2.jpg",
        "img10.jpg",
        "sub/img3.jpg",
    ]
    assert all(not Path(r.name).is_absolute() for r in result.images)
    flat = ingest.run([shoot], IngestConfig(recursive=False), tmp_path / "work2")
    assert "sub/img3.jpg" not in by_name(flat)


def test_files_and_folders_named_from_common_root(tmp_path):
    save(tmp_path / "day1" / "x.jpg", texture(64, 48, 1))
    save(tmp_path / "day2" / "x.jpg", texture(64, 48, 2))
    save(tmp_path / "day2" / "y.jpg", texture(64, 48, 3))
    result = ingest.run([tmp_path / "day1", tmp_path / "day2" / "x.jpg"], CFG, tmp_path / "w")
    assert [r.name for r in result.images] == ["day1/x.jpg", "day2/x.jpg"]
    single = ingest.run(
        [str(tmp_path / "day2" / "y.jpg"), str(tmp_path / "day2" / "x.jpg")], CFG, tmp_path / "w2"
    )
    assert [r.name for r in single.images] == ["x.jpg", "y.jpg"]


def test_non_ascii_and_spaces_in_paths(tmp_path):
    shoot = tmp_path / "Produktfotos ü 2024"
    save(shoot / "größe 1.jpg", texture(64, 48, 1))
    save(shoot / "日本 2.png", texture(64, 48, 2))
    result = ingest.run([shoot], CFG, tmp_path / "wörk dir")
    assert [r.name for r in result.images] == ["größe 1.jpg", "日本 2.png"]
    for rec in result.images:
        assert rec.working_path.is_file()
        assert rec.source == shoot / rec.name


# --------------------------------------------------------------------------- progress, cancel


def test_progress_events_and_cancel(tmp_path):
    shoot = tmp_path / "shoot"
    for i in range(3):
        save(shoot / f"p{i}.jpg", texture(64, 48, i))
    (shoot / "readme.txt").write_text("x")
    events: list[ProgressEvent] = []
    ingest.run([shoot], CFG, tmp_path / "work", progress=events.append, cancel=CancelToken())
    assert [(e.stage, e.current, e.total) for e in events] == [
        ("ingest", 0, 4),
        ("ingest", 1, 4),
        ("ingest", 2, 4),
        ("ingest", 3, 4),
        ("ingest", 4, 4),
    ]
    assert [e.message for e in events[1:]] == ["p0.jpg", "p1.jpg", "p2.jpg", "readme.txt"]

    token = CancelToken()

    def cancel_after_first(event: ProgressEvent) -> None:
        if event.current == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        ingest.run([shoot], CFG, tmp_path / "work2", progress=cancel_after_first, cancel=token)
    assert sorted(p.name for p in (tmp_path / "work2" / "images").iterdir()) == ["p0.jpg"]


# --------------------------------------------------------------------------- COLMAP reads it


def test_pycolmap_reads_png_working_copies_under_photo_names(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    shoot = tmp_path / "shoot"
    base = texture(320, 240, 7)
    save(shoot / "x.jpg", base)
    save(shoot / "y.HEIC", np.roll(base, 8, axis=1))
    make_dng(shoot / "z.dng", 320, 240)
    result = ingest.run([shoot], CFG, tmp_path / "work")
    assert [r.name for r in result.images] == ["x.jpg", "y.HEIC", "z.dng"]
    database = tmp_path / "db.db"
    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = 1
    pycolmap.extract_features(
        database, result.image_dir, extraction_options=options, device=pycolmap.Device.cpu
    )
    with sqlite3.connect(database) as db:
        rows = dict(
            db.execute(
                "select images.name, keypoints.rows from images join keypoints using (image_id)"
            ).fetchall()
        )
        sizes = db.execute("select width, height from cameras").fetchall()
    assert sorted(rows) == ["x.jpg", "y.HEIC", "z.dng"]
    assert rows["x.jpg"] > 100 and rows["y.HEIC"] > 100
    assert set(sizes) == {(320, 240)}


@pytest.mark.slow
def test_100_megapixel_jpeg_is_read_within_the_default_limits(tmp_path):
    from PIL import ImageDraw

    big = Image.new("RGB", (12500, 8000), (40, 90, 160))
    draw = ImageDraw.Draw(big)
    for x in range(0, 12500, 400):
        draw.rectangle((x, 0, x + 150, 8000), fill=(230, 200, 20))
    path = tmp_path / "big.jpg"
    big.save(path, quality=85)
    del big, draw
    rgb, info = read_image(path, max_size=1600, max_pixels=IngestConfig().max_pixels)
    assert rgb.shape == (1024, 1600, 3)
    assert (info.original_width, info.original_height) == (12500, 8000)
    # Stripes survive: 150/400 of each period is yellow.
    yellow = (rgb[..., 2] < 100).mean()
    assert yellow == pytest.approx(150 / 400, abs=0.03)


def test_orientation_8_with_draft_downscale(tmp_path):
    rgb = np.zeros((400, 800, 3), np.uint8)
    rgb[:, :400] = (255, 0, 0)
    rgb[:, 400:] = (0, 0, 255)
    path = save(tmp_path / "r8.jpg", rgb, make_exif(orientation=8))
    out, info = read_image(path, max_size=100)
    assert out.shape == (100, 50, 3)
    assert (info.original_width, info.original_height, info.orientation) == (400, 800, 8)
    # Orientation 8 = rotate 90 degrees counter-clockwise to view: the stored left goes down.
    assert out[60:, :, 0].mean() > 240 and out[:40, :, 2].mean() > 240


def test_rerun_into_a_work_dir_inside_the_photo_folder(tmp_path):
    shoot = tmp_path / "shoot"
    save(shoot / "a.jpg", texture(64, 48, 1))
    save(shoot / "b.jpg", texture(64, 48, 2))
    Image.fromarray(np.full((48, 64), 255, np.uint8)).save(shoot / "a_mask.png")
    work = shoot / "vitrine-run"
    first = ingest.run([shoot], CFG, work)
    assert by_name(first)["a.jpg"].mask_path == work / "masks" / "a.jpg.png"
    (shoot / "a_mask.png").unlink()
    second = ingest.run([shoot], CFG, work)
    # Its own working copies are not photos, and the stale mask is gone.
    assert [r.name for r in second.images] == ["a.jpg", "b.jpg"]
    assert second.skipped == ()
    assert by_name(second)["a.jpg"].mask_path is None
    assert not (work / "masks" / "a.jpg.png").exists()
