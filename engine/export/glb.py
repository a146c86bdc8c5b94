"""Mesh exports: ``mesh.glb`` (web), ``mesh.obj`` (editors) and ``mesh.usdz`` (iOS AR).

``mesh.obj`` comes with ``mesh.mtl`` and ``mesh_texture.png``; ``mesh.usdz`` (AR Quick Look) is
written when Pixar's ``usd-core`` is installed.

All three are in the product frame: ``transform`` (a 4x4 similarity, reconstruction coordinates
to the product frame: Z up, metres when the scale is known) is applied, then Z-up becomes the
Y-up that glTF, USDZ and most OBJ readers expect (``(x, y, z) -> (x, z, -y)``). The GLB is
written here byte by byte (about a hundred lines; no dependency can then change what ends up in
it): one mesh, positions, normals, UVs with a PBR metallic-roughness material whose
``baseColorTexture`` is a JPEG, or vertex colours (``COLOR_0``, linear as glTF says) when there
is no texture. The JPEG is re-encoded at lower quality, then shrunk, until the file fits
``max_mb``. No EXIF (Pillow writes none unless asked) and no local paths go into any file: the
OBJ references its material and texture by bare file name.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from engine import __version__
from engine.errors import InputError, OutputError
from engine.export._atomic import atomic_open, write_bytes_atomic
from engine.types import Mesh

logger = logging.getLogger(__name__)

#: Z-up (product frame) to Y-up (glTF, USDZ): (x, y, z) -> (x, z, -y).
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
#: JPEG qualities tried, best first, before the texture is shrunk.
JPEG_QUALITIES = (90, 80, 70)
#: Each shrink step scales the texture by this factor ...
SHRINK = 0.75
#: ... down to this side at the least.
MIN_TEXTURE = 256
GENERATOR = f"Vitrine {__version__}"
MATERIAL_NAME = "product"

_GLB_MAGIC = 0x46546C67
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942
_FLOAT, _UINT16, _UINT32, _UBYTE, _USHORT = 5126, 5123, 5125, 5121, 5123
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_DTYPES = {
    5120: np.int8,
    5121: np.uint8,
    5122: np.int16,
    5123: np.uint16,
    5125: np.uint32,
    5126: np.float32,
}


# --------------------------------------------------------------------------- shared geometry


def glb_from(transform: np.ndarray | None) -> np.ndarray:
    """4x4 from the mesh's coordinates to the GLB's (+y up): the product frame's Z-up turned."""
    m = np.eye(4) if transform is None else np.asarray(transform, np.float64)
    out = np.eye(4)
    out[:3, :3] = Z_UP_TO_Y_UP @ m[:3, :3]
    out[:3, 3] = Z_UP_TO_Y_UP @ m[:3, 3]
    return out


def _frame(mesh: Mesh, transform: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y-up positions (float64), unit vertex normals and faces (winding kept outward)."""
    v = np.asarray(mesh.vertices, np.float64).reshape(-1, 3)
    f = np.asarray(mesh.faces, np.int64).reshape(-1, 3)
    if len(v) == 0 or len(f) == 0:
        raise ValueError("the mesh has no triangles to export")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError("the mesh's faces index vertices that do not exist")
    m = np.eye(4)
    if transform is not None:
        m = np.asarray(transform, np.float64)
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise ValueError("transform must be a finite 4x4 matrix")
    lin = Z_UP_TO_Y_UP @ m[:3, :3]
    pos = np.einsum("ij,nj->ni", lin, v) + Z_UP_TO_Y_UP @ m[:3, 3]
    if np.linalg.det(lin) < 0:  # a mirror turns the faces inside out; turn them back
        f = f[:, [0, 2, 1]]
    p = pos[f]
    cross = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])  # area-weighted
    normals = np.zeros_like(pos)
    for k in range(3):
        np.add.at(normals, f[:, k], cross)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 0, normals / np.maximum(length, 1e-300), [0.0, 1.0, 0.0])
    return pos, normals, f


def _textured(mesh: Mesh) -> bool:
    return (
        mesh.texture is not None
        and mesh.uv is not None
        and len(mesh.uv) == len(mesh.vertices)
        and np.asarray(mesh.texture).ndim == 3
    )


def _jpeg(texture: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(texture[..., :3], np.uint8)).save(
        buf, "JPEG", quality=int(quality), optimize=True
    )
    return buf.getvalue()


def _fit_texture(texture: np.ndarray, budget: int) -> tuple[bytes, np.ndarray, int]:
    """JPEG bytes of ``texture`` within ``budget`` bytes: lower quality first, then shrink."""
    tex = np.asarray(texture, np.uint8)
    while True:
        for q in JPEG_QUALITIES:
            data = _jpeg(tex, q)
            if len(data) <= budget:
                return data, tex, q
        h, w = tex.shape[:2]
        if max(h, w) <= MIN_TEXTURE:
            return data, tex, q
        size = (max(1, round(w * SHRINK)), max(1, round(h * SHRINK)))
        tex = cv2.resize(tex, size, interpolation=cv2.INTER_AREA)


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    c = np.asarray(rgb, np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, np.float64), 0.0, 1.0)
    s = np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(s * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- GLB


class _Bin:
    """The GLB binary chunk under construction, with its buffer views and accessors."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def view(self, payload: bytes, target: int | None = None) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        entry: dict[str, Any] = {
            "buffer": 0,
            "byteOffset": len(self.data),
            "byteLength": len(payload),
        }
        if target is not None:
            entry["target"] = target
        self.data.extend(payload)
        self.views.append(entry)
        return len(self.views) - 1

    def accessor(
        self,
        array: np.ndarray,
        kind: str,
        component: int,
        *,
        target: int | None = None,
        normalized: bool = False,
        bounds: bool = False,
    ) -> int:
        arr = np.ascontiguousarray(array, _DTYPES[component])
        entry: dict[str, Any] = {
            "bufferView": self.view(arr.tobytes(), target),
            "componentType": component,
            "count": int(arr.shape[0]) if kind != "SCALAR" else int(arr.size),
            "type": kind,
        }
        if normalized:
            entry["normalized"] = True
        if bounds:
            flat = arr.reshape(len(arr), -1)
            entry["min"] = [float(x) for x in flat.min(axis=0)]
            entry["max"] = [float(x) for x in flat.max(axis=0)]
        self.accessors.append(entry)
        return len(self.accessors) - 1


def _glb_bytes(
    mesh: Mesh, pos: np.ndarray, normals: np.ndarray, faces: np.ndarray, jpeg: bytes | None
) -> bytes:
    b = _Bin()
    attributes = {
        "POSITION": b.accessor(
            pos.astype(np.float32), "VEC3", _FLOAT, target=_ARRAY_BUFFER, bounds=True
        ),
        "NORMAL": b.accessor(normals.astype(np.float32), "VEC3", _FLOAT, target=_ARRAY_BUFFER),
    }
    pbr: dict[str, Any] = {"metallicFactor": 0.0, "roughnessFactor": 0.85}
    doc: dict[str, Any] = {"asset": {"version": "2.0", "generator": GENERATOR}}
    if jpeg is not None:
        uv = np.asarray(mesh.uv, np.float64).copy()
        uv[:, 1] = 1.0 - uv[:, 1]  # glTF's UV origin is the image's top-left corner
        attributes["TEXCOORD_0"] = b.accessor(
            uv.astype(np.float32), "VEC2", _FLOAT, target=_ARRAY_BUFFER
        )
        doc["images"] = [{"bufferView": b.view(jpeg), "mimeType": "image/jpeg", "name": "texture"}]
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
        doc["textures"] = [{"sampler": 0, "source": 0}]
        pbr["baseColorTexture"] = {"index": 0}
    elif mesh.vertex_colors is not None:
        lin = _srgb_to_linear(np.asarray(mesh.vertex_colors).reshape(-1, 3))
        attributes["COLOR_0"] = b.accessor(
            lin.astype(np.float32), "VEC3", _FLOAT, target=_ARRAY_BUFFER
        )
    index_type = _UINT16 if len(pos) < 65535 else _UINT32
    indices = b.accessor(faces.ravel(), "SCALAR", index_type, target=_ELEMENT_ARRAY_BUFFER)
    doc.update(
        {
            "scene": 0,
            "scenes": [{"nodes": [0]}],
            "nodes": [{"mesh": 0, "name": MATERIAL_NAME}],
            "meshes": [
                {
                    "name": MATERIAL_NAME,
                    "primitives": [
                        {"attributes": attributes, "indices": indices, "material": 0, "mode": 4}
                    ],
                }
            ],
            # double-sided: the trimmed mesh is open where no photo saw the product (its base)
            "materials": [
                {"name": MATERIAL_NAME, "pbrMetallicRoughness": pbr, "doubleSided": True}
            ],
            "buffers": [{"byteLength": 0}],
            "bufferViews": b.views,
            "accessors": b.accessors,
        }
    )
    b.data.extend(b"\0" * (-len(b.data) % 4))
    doc["buffers"][0]["byteLength"] = len(b.data)
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(b.data)
    return b"".join(
        [
            struct.pack("<III", _GLB_MAGIC, 2, total),
            struct.pack("<II", len(text), _CHUNK_JSON),
            text,
            struct.pack("<II", len(b.data), _CHUNK_BIN),
            bytes(b.data),
        ]
    )


def write_glb(
    path: str | os.PathLike[str],
    mesh: Mesh,
    *,
    transform: np.ndarray | None = None,
    max_mb: float = 15.0,
) -> dict[str, Any]:
    """Write ``mesh`` as a binary glTF 2.0 file (atomically).

    Parameters
    ----------
    path
        Output file, usually ``OUT/mesh.glb``.
    mesh
        The mesh (reconstruction coordinates unless ``transform`` is None and it is already in
        the product frame).
    transform
        4x4 similarity from the mesh's coordinates to the product frame (Z up, metres when
        known); None: the mesh is already there.
    max_mb
        Size budget of the file in megabytes (10^6 bytes); the texture is re-encoded at lower
        JPEG quality, then shrunk, until the file fits.

    Returns
    -------
    dict
        ``bytes``, ``triangles``, ``vertices``, ``textured``, ``texture_size`` ([w, h] or
        None), ``jpeg_quality`` (or None).

    Raises
    ------
    ValueError
        For an empty mesh or a malformed transform.
    OutputError
        When the geometry alone exceeds ``max_mb`` or the file cannot be written.
    """
    pos, normals, faces = _frame(mesh, transform)
    budget = int(max_mb * 1e6)
    textured = _textured(mesh)
    # the file without its image: what the texture may add is the budget minus this
    bare = _glb_bytes(mesh, pos, normals, faces, b"" if textured else None)
    if len(bare) > budget:
        raise OutputError(
            f"{Path(path).name} would be {len(bare) / 1e6:.1f} MB without its texture, over "
            f"the {max_mb:g} MB budget: lower the mesh's triangle budget in the settings."
        )
    jpeg = tex = quality = None
    if textured:
        jpeg, tex, quality = _fit_texture(np.asarray(mesh.texture), budget - len(bare))
    data = _glb_bytes(mesh, pos, normals, faces, jpeg) if textured else bare
    write_bytes_atomic(path, data)
    info = {
        "bytes": len(data),
        "triangles": len(faces),
        "vertices": len(pos),
        "textured": textured,
        "texture_size": None if tex is None else [int(tex.shape[1]), int(tex.shape[0])],
        "jpeg_quality": quality,
    }
    logger.info(
        "glb: %d triangles, texture %s, %.1f MB", len(faces), info["texture_size"], len(data) / 1e6
    )
    return info


def read_glb(path: str | os.PathLike[str], *, z_up: bool = True) -> Mesh:
    """Read a binary glTF file's triangles, UVs, colours and base-colour texture.

    Every triangle primitive of every mesh in the default scene is merged (node transforms
    applied). Enough for the files :func:`write_glb` writes and for most simple models.

    Parameters
    ----------
    path
        A ``.glb`` file.
    z_up
        Turn glTF's Y-up back into the product frame's Z-up (the inverse of what
        :func:`write_glb` does).

    Returns
    -------
    Mesh
        Vertices, faces, and when present ``uv`` (origin bottom-left), ``texture`` (RGB) and
        ``vertex_colors`` (sRGB).

    Raises
    ------
    InputError
        When the file is missing, is not a GLB or uses what this reader does not support.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"Cannot read {path.name} in {path.parent}: {exc.strerror or exc}."
        ) from exc
    try:
        doc, blob = _parse_glb(data)
        return _glb_mesh(doc, blob, z_up)
    except (KeyError, IndexError, ValueError, TypeError, struct.error, OSError) as exc:
        raise InputError(
            f"{path.name} in {path.parent} is not a glTF binary this app can "
            f"read ({exc}). Export it again as .glb."
        ) from exc


def _parse_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC or version != 2 or length > len(data):
        raise ValueError("not a glTF 2.0 binary")
    offset, doc, blob = 12, None, b""
    while offset + 8 <= length:
        size, kind = struct.unpack_from("<II", data, offset)
        chunk = data[offset + 8 : offset + 8 + size]
        if kind == _CHUNK_JSON:
            doc = json.loads(chunk.decode("utf-8"))
        elif kind == _CHUNK_BIN and not blob:
            blob = chunk
        offset += 8 + size + (-size % 4)
    if doc is None:
        raise ValueError("no JSON chunk")
    if doc.get("extensionsRequired"):
        raise ValueError("needs " + ", ".join(doc["extensionsRequired"]))
    return doc, blob


def _accessor(doc: dict[str, Any], blob: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    n = _COMPONENTS[acc["type"]]
    dtype = np.dtype(_DTYPES[acc["componentType"]]).newbyteorder("<")
    count = int(acc["count"])
    if "bufferView" not in acc:
        return np.zeros((count, n), dtype)
    view = doc["bufferViews"][acc["bufferView"]]
    if view.get("buffer", 0) != 0:
        raise ValueError("external buffers are not supported")
    if count == 0:
        return np.zeros((0, n), dtype)
    start = int(view.get("byteOffset", 0)) + int(acc.get("byteOffset", 0))
    stride = int(view.get("byteStride", 0)) or dtype.itemsize * n
    raw = np.frombuffer(
        blob, np.uint8, count=(count - 1) * stride + dtype.itemsize * n, offset=start
    )
    rows = np.lib.stride_tricks.as_strided(raw, (count, dtype.itemsize * n), (stride, 1))
    out = np.ascontiguousarray(rows).view(dtype).reshape(count, n)
    if acc.get("normalized"):
        out = out.astype(np.float64) / np.iinfo(dtype).max
    return out


def _node_matrix(node: dict[str, Any]) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], np.float64).reshape(4, 4).T  # column-major
    m = np.eye(4)
    x, y, z, w = node.get("rotation", [0.0, 0.0, 0.0, 1.0])
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    m[:3, :3] = rot * np.asarray(node.get("scale", [1.0, 1.0, 1.0]))[None, :]
    m[:3, 3] = node.get("translation", [0.0, 0.0, 0.0])
    return m


def _glb_mesh(doc: dict[str, Any], blob: bytes, z_up: bool) -> Mesh:
    nodes = doc.get("nodes", [])
    scene = doc.get("scenes", [{"nodes": list(range(len(nodes)))}])[doc.get("scene", 0)]
    parts: list[tuple[np.ndarray, dict[str, Any]]] = []
    stack = [(i, np.eye(4)) for i in scene.get("nodes", [])]
    while stack:
        i, parent = stack.pop()
        m = parent @ _node_matrix(nodes[i])
        if "mesh" in nodes[i]:
            parts.extend((m, p) for p in doc["meshes"][nodes[i]["mesh"]]["primitives"])
        stack.extend((c, m) for c in nodes[i].get("children", []))
    verts, faces, uvs, cols = [], [], [], []
    texture = None
    base = 0
    for m, prim in parts:
        if prim.get("mode", 4) != 4:
            continue
        pos = _accessor(doc, blob, prim["attributes"]["POSITION"]).astype(np.float64)
        pos = pos @ m[:3, :3].T + m[:3, 3]
        idx = (
            _accessor(doc, blob, prim["indices"]).ravel().astype(np.int64)
            if "indices" in prim
            else np.arange(len(pos))
        )
        tri = idx.reshape(-1, 3)
        if np.linalg.det(m[:3, :3]) < 0:
            tri = tri[:, [0, 2, 1]]
        verts.append(pos)
        faces.append(tri + base)
        base += len(pos)
        attrs = prim["attributes"]
        uv = None
        if "TEXCOORD_0" in attrs:
            uv = _accessor(doc, blob, attrs["TEXCOORD_0"]).astype(np.float64)
            uv[:, 1] = 1.0 - uv[:, 1]
        uvs.append(uv)
        col = None
        if "COLOR_0" in attrs:
            col = _linear_to_srgb(_accessor(doc, blob, attrs["COLOR_0"])[:, :3])
        cols.append(col)
        if texture is None and "material" in prim:
            texture = _base_texture(doc, blob, doc["materials"][prim["material"]])
    if not verts:
        raise ValueError("no triangles")
    v = np.concatenate(verts)
    if z_up:
        v = v @ Z_UP_TO_Y_UP  # the inverse (transpose) of Z_UP_TO_Y_UP, row-wise
    uv_all = np.concatenate(uvs).astype(np.float32) if all(u is not None for u in uvs) else None
    col_all = np.concatenate(cols) if all(c is not None for c in cols) else None
    return Mesh(
        v,
        np.concatenate(faces).astype(np.int32),
        col_all,
        uv_all if texture is not None else None,
        texture if uv_all is not None else None,
    )


def _base_texture(doc: dict[str, Any], blob: bytes, material: dict[str, Any]) -> np.ndarray | None:
    ref = material.get("pbrMetallicRoughness", {}).get("baseColorTexture")
    if ref is None:
        return None
    image = doc["images"][doc["textures"][ref["index"]]["source"]]
    if "bufferView" not in image:
        raise ValueError("external images are not supported")
    view = doc["bufferViews"][image["bufferView"]]
    start = int(view.get("byteOffset", 0))
    raw = blob[start : start + int(view["byteLength"])]
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


# --------------------------------------------------------------------------- OBJ


def write_obj(
    path: str | os.PathLike[str], mesh: Mesh, *, transform: np.ndarray | None = None
) -> list[Path]:
    """Write ``mesh`` as Wavefront OBJ with its material (``.mtl``) and texture (``.png``).

    Parameters
    ----------
    path
        The ``.obj`` file (for example ``OUT/mesh.obj``); the material goes beside it as
        ``<stem>.mtl`` and the texture as ``<stem>_texture.png``, referenced by bare name.
    mesh
        The mesh; untextured meshes get per-vertex colours (``v x y z r g b``).
    transform
        As for :func:`write_glb`; positions are Y-up like glTF's.

    Returns
    -------
    list of Path
        The files written: OBJ, MTL and (when textured) PNG.

    Raises
    ------
    ValueError
        For an empty mesh or a malformed transform.
    OutputError
        When a file cannot be written.
    """
    path = Path(path)
    pos, normals, faces = _frame(mesh, transform)
    mtl = path.with_suffix(".mtl")
    tex_path = path.with_name(f"{path.stem}_texture.png")
    textured = _textured(mesh)
    out = io.StringIO()
    out.write(f"# {GENERATOR}\nmtllib {mtl.name}\no {MATERIAL_NAME}\n")
    if textured or mesh.vertex_colors is None:
        np.savetxt(out, pos, fmt="v %.6f %.6f %.6f")
    else:
        rgb = np.asarray(mesh.vertex_colors, np.float64).reshape(-1, 3) / 255.0
        np.savetxt(out, np.hstack([pos, rgb]), fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
    if textured:
        np.savetxt(out, np.asarray(mesh.uv, np.float64), fmt="vt %.6f %.6f")
    np.savetxt(out, normals, fmt="vn %.5f %.5f %.5f")
    out.write(f"usemtl {MATERIAL_NAME}\n")
    f1 = faces + 1
    if textured:
        np.savetxt(out, np.repeat(f1, 3, axis=1), fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    else:
        np.savetxt(out, np.repeat(f1, 2, axis=1), fmt="f %d//%d %d//%d %d//%d")
    material = [
        f"# {GENERATOR}",
        f"newmtl {MATERIAL_NAME}",
        "Ka 0 0 0",
        "Kd 1 1 1",
        "Ks 0 0 0",
        "d 1",
        "illum 1",
    ]
    written = []
    if textured:
        material.append(f"map_Kd {tex_path.name}")
        buf = io.BytesIO()
        Image.fromarray(np.asarray(mesh.texture, np.uint8)[..., :3]).save(buf, "PNG")
        written.append(write_bytes_atomic(tex_path, buf.getvalue()))
    else:  # an earlier textured export's image would pass for this mesh's
        tex_path.unlink(missing_ok=True)
    with atomic_open(mtl, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(material) + "\n")
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(out.getvalue())
    return [path, mtl, *written]


# --------------------------------------------------------------------------- USDZ


class UsdzUnavailable(ImportError):  # noqa: N818 - names the situation, like ImportError
    """``usd-core`` is not installed, so no ``mesh.usdz`` can be written (not an error)."""


def usdz_unavailable() -> str | None:
    """Why :func:`write_usdz` cannot run here, or None when it can."""
    try:
        from pxr import Usd, UsdGeom, UsdShade, UsdUtils  # noqa: F401
    except ImportError:
        return (
            "mesh.usdz (iOS AR Quick Look) needs Pixar's USD library: "
            "pip install usd-core (about 30 MB)"
        )
    return None


def write_usdz(
    path: str | os.PathLike[str],
    mesh: Mesh,
    *,
    transform: np.ndarray | None = None,
    max_mb: float = 15.0,
) -> dict[str, Any]:
    """Write ``mesh`` as a USDZ package for iOS AR Quick Look (atomically).

    Y-up, metres (``metersPerUnit`` 1), a ``UsdPreviewSurface`` material reading the JPEG
    texture through the ``st`` primvar, or ``displayColor`` vertex colours when untextured
    (AR Quick Look shows those grey: bake a texture for iOS).

    Parameters
    ----------
    path
        Output ``.usdz`` file.
    mesh, transform, max_mb
        As for :func:`write_glb`.

    Returns
    -------
    dict
        ``bytes``, ``triangles``, ``textured``, ``texture_size``.

    Raises
    ------
    UsdzUnavailable
        (an ``ImportError``) when ``usd-core`` is not installed; :func:`usdz_unavailable` says
        so beforehand.
    OutputError
        When the file cannot be written.
    """
    reason = usdz_unavailable()
    if reason is not None:
        raise UsdzUnavailable(reason)
    from pxr import Sdf, Usd, UsdGeom, UsdShade, UsdUtils, Vt

    pos, normals, faces = _frame(mesh, transform)
    textured = _textured(mesh)
    budget = int(max_mb * 1e6)
    geometry = len(faces) * 12 + len(pos) * 32
    jpeg = tex = None
    if textured:
        jpeg, tex, _ = _fit_texture(np.asarray(mesh.texture), max(budget - geometry, 1))
    stem = Path(path).stem
    with tempfile.TemporaryDirectory(prefix="vitrine-usdz-") as tmp:
        layer = Path(tmp) / f"{stem}.usdc"
        stage = Usd.Stage.CreateNew(str(layer))
        UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
        UsdGeom.SetStageMetersPerUnit(stage, 1.0)
        root = UsdGeom.Xform.Define(stage, "/Product")
        stage.SetDefaultPrim(root.GetPrim())
        geom = UsdGeom.Mesh.Define(stage, "/Product/Mesh")
        geom.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(pos.astype(np.float32)))
        geom.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(faces), 3, np.int32)))
        geom.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(faces.ravel().astype(np.int32)))
        geom.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(normals.astype(np.float32)))
        geom.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
        geom.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
        geom.CreateDoubleSidedAttr(True)
        geom.CreateExtentAttr(
            Vt.Vec3fArray.FromNumpy(np.stack([pos.min(axis=0), pos.max(axis=0)]).astype(np.float32))
        )
        primvars = UsdGeom.PrimvarsAPI(geom)
        material = UsdShade.Material.Define(stage, "/Product/Material")
        surface = UsdShade.Shader.Define(stage, "/Product/Material/Surface")
        surface.CreateIdAttr("UsdPreviewSurface")
        surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(0.85)
        surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
        material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
        if textured:
            assert jpeg is not None
            texture_name = f"{stem}_texture.jpg"
            (Path(tmp) / texture_name).write_bytes(jpeg)
            st = primvars.CreatePrimvar(
                "st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex
            )
            st.Set(Vt.Vec2fArray.FromNumpy(np.asarray(mesh.uv, np.float32)))
            reader = UsdShade.Shader.Define(stage, "/Product/Material/stReader")
            reader.CreateIdAttr("UsdPrimvarReader_float2")
            reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
            image = UsdShade.Shader.Define(stage, "/Product/Material/BaseColor")
            image.CreateIdAttr("UsdUVTexture")
            image.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(texture_name)
            image.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
            image.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("clamp")
            image.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("clamp")
            image.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(
                reader.ConnectableAPI(), "result"
            )
            image.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
            surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(
                image.ConnectableAPI(), "rgb"
            )
        elif mesh.vertex_colors is not None:
            colour = primvars.CreatePrimvar(
                "displayColor", Sdf.ValueTypeNames.Color3fArray, UsdGeom.Tokens.vertex
            )
            lin = _srgb_to_linear(np.asarray(mesh.vertex_colors).reshape(-1, 3))
            colour.Set(Vt.Vec3fArray.FromNumpy(lin.astype(np.float32)))
        UsdShade.MaterialBindingAPI.Apply(geom.GetPrim()).Bind(material)
        stage.GetRootLayer().Save()
        package = Path(tmp) / f"{stem}.usdz"
        if not UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(layer)), str(package)):
            raise OutputError(
                f"Could not package {Path(path).name}; the USD library refused it (see the log)."
            )
        data = package.read_bytes()
    write_bytes_atomic(path, data)
    return {
        "bytes": len(data),
        "triangles": len(faces),
        "textured": textured,
        "texture_size": None if tex is None else [int(tex.shape[1]), int(tex.shape[0])],
    }


def texture_colours(mesh: Mesh, uv: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Bilinear texture colours at ``uv`` (origin bottom-left), float (N, 3).

    Parameters
    ----------
    mesh
        A textured mesh.
    uv
        (N, 2) texture coordinates.

    Returns
    -------
    numpy.ndarray
        RGB in 0..255.
    """
    if mesh.texture is None:
        raise ValueError("the mesh has no texture")
    tex = np.asarray(mesh.texture, np.float32)
    h, w = tex.shape[:2]
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx
    bottom = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
    return top * (1 - fy) + bottom * fy
