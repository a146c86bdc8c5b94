"""Mesh exports: GLB (read back by trimesh and by us), OBJ, USDZ and the embed page.

The test mesh is a cube whose six faces map to six differently coloured cells of a texture, so
every exported colour can be checked against the face it belongs to.
"""

from __future__ import annotations

import io
import json
import re
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import trimesh

from engine.errors import OutputError
from engine.export.embed import MODEL_VIEWER_SCRIPT, write_embed_html
from engine.export.glb import (
    UsdzUnavailable,
    read_glb,
    texture_colours,
    usdz_unavailable,
    write_glb,
    write_obj,
    write_usdz,
)
from engine.types import Mesh

#: One colour per cube face: +x, -x, +y, -y, +z, -z.
FACE_COLOURS = np.array(
    [[220, 40, 40], [40, 180, 60], [40, 70, 220], [230, 200, 40], [200, 60, 200], [40, 200, 210]]
)
CELL = 64


def _cube(size: float = 0.1, textured: bool = True) -> Mesh:
    """A cube on z = 0 (product frame), 4 vertices and 2 outward triangles per face; face k's
    UVs cover the inner part of cell k of a 3 x 2 texture grid of flat colours."""
    corners, faces, uvs, colours = [], [], [], []
    h = size / 2
    for k in range(6):
        axis, sign = k // 2, 1.0 if k % 2 == 0 else -1.0
        u_ax, v_ax = [a for a in range(3) if a != axis]
        quad = []
        for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            p = np.zeros(3)
            p[axis], p[u_ax], p[v_ax] = sign * h, du * h, dv * h
            quad.append(p + [0.0, 0.0, h])
        quad = np.array(quad)
        n = np.zeros(3)
        n[axis] = sign
        tri = [[0, 1, 2], [0, 2, 3]]
        if np.cross(quad[1] - quad[0], quad[2] - quad[0]) @ n < 0:
            tri = [[0, 2, 1], [0, 3, 2]]
        base = len(corners) * 4
        corners.append(quad)
        faces.extend([[base + a, base + b, base + c] for a, b, c in tri])
        cx, cy = k % 3, k // 3
        inset = 16
        uvs.extend(
            [
                (cx * CELL + inset + (du + 1) / 2 * (CELL - 2 * inset)) / (3 * CELL),
                1.0 - (cy * CELL + inset + (dv + 1) / 2 * (CELL - 2 * inset)) / (2 * CELL),
            ]
            for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        )
        colours.extend([FACE_COLOURS[k]] * 4)
    texture = np.zeros((2 * CELL, 3 * CELL, 3), np.uint8)
    for k in range(6):
        cx, cy = k % 3, k // 3
        texture[cy * CELL : (cy + 1) * CELL, cx * CELL : (cx + 1) * CELL] = FACE_COLOURS[k]
    return Mesh(
        np.concatenate(corners),
        np.array(faces, np.int32),
        np.array(colours, np.uint8),
        np.array(uvs, np.float32) if textured else None,
        texture if textured else None,
    )


def _similarity(
    scale: float = 2.0, degrees: float = 30.0, shift=(0.5, -0.2, 0.1), mirror: bool = False
) -> np.ndarray:
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    if mirror:
        rot = rot @ np.diag([1.0, -1.0, 1.0])
    m = np.eye(4)
    m[:3, :3] = scale * rot
    m[:3, 3] = shift
    return m


def _y_up(points: np.ndarray) -> np.ndarray:
    return np.stack([points[:, 0], points[:, 2], -points[:, 1]], axis=1)


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ m[:3, :3].T + m[:3, 3]


def _outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Cosine between each face normal and the direction from the mesh centre to the face."""
    p = vertices[faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    d = p.mean(axis=1) - vertices.mean(axis=0)
    return np.sum(n * d, axis=1) / np.linalg.norm(n, axis=1) / np.linalg.norm(d, axis=1)


def _glb_json(path: Path) -> dict:
    data = path.read_bytes()
    assert data[:4] == b"glTF" and struct.unpack_from("<I", data, 8)[0] == len(data)
    size = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20 : 20 + size])


@pytest.mark.parametrize("mirror", [False, True])
def test_glb_geometry_texture_and_frame(tmp_path: Path, mirror: bool) -> None:
    cube = _cube()
    transform = _similarity(mirror=mirror)
    info = write_glb(tmp_path / "mesh.glb", cube, transform=transform)
    assert info["textured"] and info["triangles"] == 12 and info["vertices"] == 24
    assert info["bytes"] == (tmp_path / "mesh.glb").stat().st_size
    expected = _y_up(_apply(transform, cube.vertices))

    scene = trimesh.load(tmp_path / "mesh.glb", process=False)
    (geom,) = scene.geometry.values()
    np.testing.assert_allclose(geom.vertices, expected, atol=1e-6)
    assert (_outward(np.asarray(geom.vertices), np.asarray(geom.faces)) > 0.5).all()
    image = geom.visual.material.baseColorTexture
    assert image.size == (3 * CELL, 2 * CELL)
    tex = Mesh(
        geom.vertices,
        geom.faces,
        uv=np.asarray(geom.visual.uv, np.float32),
        texture=np.asarray(image.convert("RGB")),
    )
    got = texture_colours(tex, tex.uv)
    # every vertex's texture colour is its face's colour (JPEG: within a few levels)
    assert np.abs(got - np.repeat(FACE_COLOURS, 4, axis=0)).max() <= 8

    doc = _glb_json(tmp_path / "mesh.glb")
    material = doc["materials"][0]
    assert material["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0}
    assert material["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert doc["images"][0]["mimeType"] == "image/jpeg"
    assert doc["asset"]["version"] == "2.0" and "Vitrine" in doc["asset"]["generator"]

    # our reader gives back the product frame (Z up), the UVs and the texture
    back = read_glb(tmp_path / "mesh.glb")
    np.testing.assert_allclose(back.vertices, _apply(transform, cube.vertices), atol=1e-6)
    np.testing.assert_allclose(back.uv, cube.uv, atol=1e-6)
    assert back.texture.shape == cube.texture.shape
    for cy in range(2):
        for cx in range(3):  # cell interiors (JPEG blurs the colour edges between cells)
            inner = (
                slice(cy * CELL + 8, (cy + 1) * CELL - 8),
                slice(cx * CELL + 8, (cx + 1) * CELL - 8),
            )
            diff = back.texture[inner].astype(int) - cube.texture[inner]
            assert np.abs(diff).max() <= 8
    assert (_outward(back.vertices, back.faces) > 0.5).all()


def test_glb_vertex_colours_when_untextured(tmp_path: Path) -> None:
    cube = _cube(textured=False)
    info = write_glb(tmp_path / "vc.glb", cube)
    assert not info["textured"] and info["texture_size"] is None
    doc = _glb_json(tmp_path / "vc.glb")
    assert "COLOR_0" in doc["meshes"][0]["primitives"][0]["attributes"]
    assert "images" not in doc
    scene = trimesh.load(tmp_path / "vc.glb", process=False)
    (geom,) = scene.geometry.values()
    # glTF vertex colours are linear: sRGB 220 is about 0.716 linear
    linear = np.asarray(geom.visual.vertex_attributes["color"], np.float64)
    assert abs(linear[0, 0] - 0.716) < 0.01
    back = read_glb(tmp_path / "vc.glb")
    assert np.abs(back.vertex_colors.astype(int) - cube.vertex_colors).max() <= 1
    assert back.texture is None


def test_glb_texture_shrinks_to_the_size_budget(tmp_path: Path) -> None:
    cube = _cube()
    noise = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    noisy = Mesh(cube.vertices, cube.faces, cube.vertex_colors, cube.uv, noise)
    info = write_glb(tmp_path / "big.glb", noisy, max_mb=1.0)
    data = (tmp_path / "big.glb").read_bytes()
    assert len(data) <= 1_000_000 and info["bytes"] == len(data)
    assert info["texture_size"][0] < 2048 and info["jpeg_quality"] == 70
    # no EXIF block, no local path
    assert b"Exif\x00\x00" not in data and str(tmp_path).encode() not in data
    back = read_glb(tmp_path / "big.glb")
    assert back.texture.shape[1] == info["texture_size"][0]
    with pytest.raises(OutputError, match="triangle budget"):
        write_glb(tmp_path / "tiny.glb", cube, max_mb=0.0001)
    assert not (tmp_path / "tiny.glb").exists()
    with pytest.raises(ValueError, match="4x4"):
        write_glb(tmp_path / "t.glb", cube, transform=np.eye(3))


def test_obj_mtl_and_texture(tmp_path: Path) -> None:
    cube = _cube()
    transform = _similarity()
    files = write_obj(tmp_path / "mesh.obj", cube, transform=transform)
    assert [p.name for p in files] == ["mesh.obj", "mesh.mtl", "mesh_texture.png"]
    text = (tmp_path / "mesh.obj").read_text(encoding="utf-8")
    assert "mtllib mesh.mtl" in text and "usemtl product" in text
    assert "map_Kd mesh_texture.png" in (tmp_path / "mesh.mtl").read_text(encoding="utf-8")
    for p in files:
        assert str(tmp_path).encode() not in p.read_bytes()
    loaded = trimesh.load(tmp_path / "mesh.obj", process=False, maintain_order=True)
    np.testing.assert_allclose(loaded.vertices, _y_up(_apply(transform, cube.vertices)), atol=1e-5)
    assert len(loaded.faces) == 12
    img = loaded.visual.material.image
    assert img is not None and img.size == (3 * CELL, 2 * CELL)
    got = texture_colours(
        Mesh(
            loaded.vertices,
            loaded.faces,
            uv=loaded.visual.uv,
            texture=np.asarray(img.convert("RGB")),
        ),
        loaded.visual.uv,
    )
    assert np.abs(got - np.repeat(FACE_COLOURS, 4, axis=0)).max() <= 1  # PNG: exact

    (tmp_path / "plain_texture.png").write_bytes(b"stale")  # from an earlier textured export
    files = write_obj(tmp_path / "plain.obj", _cube(textured=False))
    assert [p.name for p in files] == ["plain.obj", "plain.mtl"]
    assert not (tmp_path / "plain_texture.png").exists()
    first = next(
        line for line in (tmp_path / "plain.obj").read_text().splitlines() if line.startswith("v ")
    )
    assert np.allclose([float(x) for x in first.split()[4:]], FACE_COLOURS[0] / 255, atol=1e-3)


def test_usdz_says_what_to_install_without_usd_core(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pxr", None)  # as if usd-core were not installed
    reason = usdz_unavailable()
    assert reason is not None and "pip install usd-core" in reason
    with pytest.raises(UsdzUnavailable, match="usd-core"):
        write_usdz(tmp_path / "mesh.usdz", _cube())
    assert not (tmp_path / "mesh.usdz").exists()


def test_usdz_for_ar_quick_look(tmp_path: Path) -> None:
    cube = _cube()
    reason = usdz_unavailable()
    if reason is not None:
        # usd-core is optional (the test extra installs it); without it: the reason only
        with pytest.raises(UsdzUnavailable, match="usd-core"):
            write_usdz(tmp_path / "mesh.usdz", cube)
        return
    from pxr import Usd, UsdGeom

    transform = _similarity()
    info = write_usdz(tmp_path / "mesh.usdz", cube, transform=transform)
    data = (tmp_path / "mesh.usdz").read_bytes()
    assert info["bytes"] == len(data) and info["textured"]
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
    assert names[0] == "mesh.usdc" and any(n.endswith("mesh_texture.jpg") for n in names)
    assert str(tmp_path).encode() not in data and b"vitrine-usdz" not in data
    stage = Usd.Stage.Open(str(tmp_path / "mesh.usdz"))
    assert UsdGeom.GetStageUpAxis(stage) == "Y" and UsdGeom.GetStageMetersPerUnit(stage) == 1
    geom = UsdGeom.Mesh(stage.GetPrimAtPath("/Product/Mesh"))
    points = np.asarray(geom.GetPointsAttr().Get(), np.float64)
    np.testing.assert_allclose(points, _y_up(_apply(transform, cube.vertices)), atol=1e-6)
    st = np.asarray(UsdGeom.PrimvarsAPI(geom).GetPrimvar("st").Get(), np.float64)
    np.testing.assert_allclose(st, cube.uv, atol=1e-6)
    try:  # USD's own validators (usdz packaging, shaders, geometry), in USD 24.11 and later
        from pxr import UsdValidation
    except ImportError:
        return
    registry = UsdValidation.ValidationRegistry()
    context = UsdValidation.ValidationContext(registry.GetOrLoadAllValidators())
    assert [e.GetMessage() for e in context.Validate(stage)] == []


def test_embed_page(tmp_path: Path) -> None:
    path = write_embed_html(
        tmp_path / "embed.html",
        str(tmp_path / "out" / "mesh.glb"),
        title='Blue "Vase" <3>',
        usdz_name="mesh.usdz",
    )
    page = path.read_text(encoding="utf-8")
    tag = re.search(r"<model-viewer\b[^>]*>", page).group(0)
    assert 'src="mesh.glb"' in tag and 'ios-src="mesh.usdz"' in tag
    for attribute in ("ar", "camera-controls", "auto-rotate"):
        assert re.search(rf"\s{attribute}\s", tag), attribute
    assert 'alt="3D model of Blue &quot;Vase&quot; &lt;3&gt;"' in tag
    assert f'<script type="module" src="{MODEL_VIEWER_SCRIPT}"></script>' in page
    assert MODEL_VIEWER_SCRIPT.startswith("https://ajax.googleapis.com/ajax/libs/model-viewer/")
    assert "Upload mesh.glb and mesh.usdz" in page and "BEGIN" in page and "END" in page
    assert str(tmp_path) not in page
    page = write_embed_html(tmp_path / "plain.html").read_text(encoding="utf-8")
    tag = re.search(r"<model-viewer\b[^>]*>", page).group(0)
    assert 'src="mesh.glb"' in tag and "ios-src" not in tag and "usd-core" in page
