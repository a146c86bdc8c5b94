"""PLY point clouds: ``dense.ply`` as binary little-endian ``x y z nx ny nz red green blue``.

:func:`write_ply` writes exactly that layout in one vectorised write (atomically).
:func:`read_ply` reads it back (for tests and resume) and also the common simpler variants:
ASCII or big-endian files, any property order, xyz with or without normals and colours.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.errors import VitrineError
from engine.export._atomic import atomic_open
from engine.types import PointCloud

#: The vertex layout :func:`write_ply` writes, in order (little-endian).
VERTEX_DTYPE = np.dtype(
    [
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("nx", "<f4"),
        ("ny", "<f4"),
        ("nz", "<f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
    ]
)

#: PLY property type names -> numpy type codes (the mesh stage reads COLMAP's meshes with it).
PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_NP_TO_PLY = {"f4": "float", "u1": "uchar"}
_MAX_HEADER_BYTES = 64 * 1024


class PlyError(VitrineError, ValueError):
    """A PLY file is malformed or uses a layout this reader does not support."""


def write_ply(path: str | os.PathLike[str], cloud: PointCloud) -> Path:
    """Write ``cloud`` as a binary little-endian PLY (atomically).

    Parameters
    ----------
    path
        Output file (usually ``OUT/dense.ply``).
    cloud
        Points; ``normals`` None is written as zeros.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        When the arrays of ``cloud`` do not have matching (N, 3) shapes.
    OutputError
        When the file cannot be written.
    """
    n = len(cloud)
    _check_shape("xyz", cloud.xyz, n)
    _check_shape("rgb", cloud.rgb, n)
    if cloud.normals is not None:
        _check_shape("normals", cloud.normals, n)
    vertices = np.empty(n, dtype=VERTEX_DTYPE)
    for i, name in enumerate("xyz"):
        vertices[name] = cloud.xyz[:, i]
    normals = cloud.normals if cloud.normals is not None else None
    for i, name in enumerate(("nx", "ny", "nz")):
        vertices[name] = normals[:, i] if normals is not None else 0.0
    for i, name in enumerate(("red", "green", "blue")):
        vertices[name] = cloud.rgb[:, i]
    header = _header(n)
    with atomic_open(path, "wb") as fh:
        fh.write(header)
        fh.write(memoryview(vertices.view(np.uint8)))  # no copy of a large cloud
    return Path(path)


def _check_shape(name: str, array: np.ndarray, n: int) -> None:
    if array.ndim != 2 or array.shape != (n, 3):
        raise ValueError(f"PointCloud.{name} must have shape ({n}, 3), got {array.shape}")


def _header(n: int) -> bytes:
    lines = [
        "ply",
        "format binary_little_endian 1.0",
        "comment Vitrine dense point cloud",
        f"element vertex {n}",
    ]
    for name in VERTEX_DTYPE.names or ():
        kind = VERTEX_DTYPE[name].str.lstrip("<>|=")
        lines.append(f"property {_NP_TO_PLY[kind]} {name}")
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def read_ply(path: str | os.PathLike[str]) -> PointCloud:
    """Read the vertices of a PLY file as a :class:`PointCloud`.

    Supports ``ascii``, ``binary_little_endian`` and ``binary_big_endian`` files whose vertex
    element has scalar properties ``x y z`` and optionally ``nx ny nz`` and ``red green blue``
    (any order, any numeric type; float colours in [0, 1] are scaled to 0..255). Elements other
    than ``vertex`` are ignored when they come after it.

    Parameters
    ----------
    path
        PLY file.

    Returns
    -------
    PointCloud
        ``xyz`` float32, ``rgb`` uint8 (mid grey when the file has no colours), ``normals``
        float32 or None when the file has none or they are all zero (as written for a cloud
        without normals).

    Raises
    ------
    PlyError
        When the file is not a PLY this reader understands, or is truncated.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        fmt, elements, header_len = _parse_header(fh, path)
        fh.seek(header_len)
        payload = fh.read()
    if not elements or elements[0][0] != "vertex":
        raise PlyError(f"{path.name}: the first element is not 'vertex'; cannot read points.")
    _, count, props = elements[0]
    if any(kind == "list" for _, kind in props):
        raise PlyError(f"{path.name}: list properties in 'vertex' are not supported.")
    if fmt == "ascii":
        data = _read_ascii(payload, count, props, path)
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(name, order + kind) for name, kind in props])
        if len(payload) < dtype.itemsize * count:
            raise PlyError(
                f"{path.name}: file is truncated ({count} vertices announced, "
                f"{len(payload) // max(dtype.itemsize, 1)} present)."
            )
        data = np.frombuffer(payload, dtype=dtype, count=count)
    return _to_cloud(data, path)


def _parse_header(fh, path: Path) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    if fh.read(4) not in (b"ply\n", b"ply\r"):
        raise PlyError(f"{path.name} is not a PLY file.")
    fh.seek(0)
    raw = fh.read(_MAX_HEADER_BYTES)
    end = raw.find(b"end_header")
    if end < 0:
        raise PlyError(f"{path.name}: PLY header has no end_header.")
    newline = raw.find(b"\n", end)
    if newline < 0:
        raise PlyError(f"{path.name}: PLY header is truncated.")
    text = raw[:end].decode("ascii", errors="replace")
    fmt = ""
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format" and len(parts) >= 2:
            fmt = parts[1]
        elif parts[0] == "element" and len(parts) == 3:
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            if parts[1] == "list":
                elements[-1][2].append((parts[-1], "list"))
            elif len(parts) == 3 and parts[1] in PLY_TYPES:
                elements[-1][2].append((parts[2], PLY_TYPES[parts[1]]))
            else:
                raise PlyError(f"{path.name}: unsupported PLY property line {line!r}.")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PlyError(f"{path.name}: unsupported PLY format {fmt!r}.")
    return fmt, elements, newline + 1


def _read_ascii(payload: bytes, count: int, props: list[tuple[str, str]], path: Path) -> np.ndarray:
    lines = payload.decode("ascii", errors="replace").splitlines()
    rows = [line.split() for line in lines if line.strip()][:count]
    if len(rows) < count or any(len(r) < len(props) for r in rows):
        raise PlyError(f"{path.name}: file is truncated ({count} vertices announced).")
    values = np.array([r[: len(props)] for r in rows], dtype=np.float64).reshape(count, len(props))
    data = np.empty(count, dtype=[(name, kind) for name, kind in props])
    for i, (name, _) in enumerate(props):
        data[name] = values[:, i]
    return data


def _to_cloud(data: np.ndarray, path: Path) -> PointCloud:
    names = set(data.dtype.names or ())
    if not {"x", "y", "z"} <= names:
        raise PlyError(f"{path.name}: vertices have no x y z.")
    xyz = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float32)
    rgb_names = next(
        (
            c
            for c in (
                ("red", "green", "blue"),
                ("r", "g", "b"),
                ("diffuse_red", "diffuse_green", "diffuse_blue"),
            )
            if set(c) <= names
        ),
        None,
    )
    if rgb_names is None:
        rgb = np.full((len(data), 3), 128, np.uint8)
    else:
        colours = np.stack([data[c] for c in rgb_names], axis=1)
        if colours.dtype.kind == "f":
            if colours.size and float(np.nanmax(colours)) <= 1.0:
                colours = colours * 255.0
            colours = np.rint(np.nan_to_num(colours))
        rgb = np.clip(colours, 0, 255).astype(np.uint8)
    normals = None
    if {"nx", "ny", "nz"} <= names:
        normals = np.stack([data["nx"], data["ny"], data["nz"]], axis=1).astype(np.float32)
        if not normals.any():
            normals = None
    return PointCloud(np.ascontiguousarray(xyz), np.ascontiguousarray(rgb), normals)
