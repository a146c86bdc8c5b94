"""Exports: dense.ply, viewer.html (parsed, and rendered in headless Chromium), report.json."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import OutputError
from engine.export import (
    PlyError,
    decimate,
    read_ply,
    scrub_paths,
    write_json_atomic,
    write_ply,
    write_report,
    write_viewer,
)
from engine.export.plotly_html import CAMERA_BUTTON_LABEL, EMPTY_NOTE, MESH_BUTTON_LABEL
from engine.export.ply import VERTEX_DTYPE
from engine.types import CameraPose, Mesh, PointCloud, RunReport

EXPECTED_HEADER = [
    "ply",
    "format binary_little_endian 1.0",
    "comment Vitrine dense point cloud",
    "element vertex {n}",
    "property float x",
    "property float y",
    "property float z",
    "property float nx",
    "property float ny",
    "property float nz",
    "property uchar red",
    "property uchar green",
    "property uchar blue",
    "end_header",
]


# --------------------------------------------------------------------------- helpers


def _random_cloud(n: int, seed: int = 0, normals: bool = True) -> PointCloud:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    nrm = None
    if normals:
        nrm = rng.normal(size=(n, 3)).astype(np.float32)
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    return PointCloud(xyz, rgb, nrm)


def _coded_rgb(index: np.ndarray) -> np.ndarray:
    index = index.astype(np.int64)
    return np.stack([index * 7 % 256, index * 13 % 256, index // 256 % 256], 1).astype(np.uint8)


def _coded_cloud(n: int, seed: int = 0) -> PointCloud:
    """Point i has x = i and colour _coded_rgb(i), so any drawn point can be checked."""
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([np.arange(n), rng.normal(size=(n, 2))]).astype(np.float32)
    return PointCloud(xyz, _coded_rgb(np.arange(n)))


def _look_at(centre: np.ndarray, target: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, ...]:
    forward = target - centre
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return R, -R @ centre


def _ring_cameras(
    n: int = 12,
    radius: float = 3.0,
    height: float = 1.5,
    target: tuple[float, float, float] = (0.0, 0.0, 0.0),
    up: tuple[float, float, float] = (0.0, 0.0, 1.0),
    arc: float = 2 * np.pi,
) -> list[CameraPose]:
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    up_v = np.asarray(up, dtype=float)
    # An orthonormal basis with up_v as third axis, so tilted worlds can be tested too.
    a = np.cross(up_v, [1.0, 0, 0] if abs(up_v[0]) < 0.9 else [0, 1.0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(up_v, a)
    cams = []
    for i in range(n):
        ang = arc * i / n
        c = np.asarray(target) + radius * (np.cos(ang) * a + np.sin(ang) * b) + height * up_v
        R, t = _look_at(c, np.asarray(target, dtype=float), up_v)
        cams.append(CameraPose(f"img_{i:03d}.jpg", R, t, K, 640, 480))
    return cams


def _bottle(n: int, seed: int = 0) -> PointCloud:
    """A red/green banded cylinder with a blue stripe (for the screenshot)."""
    rng = np.random.default_rng(seed)
    th = rng.uniform(0, 2 * np.pi, n)
    z = rng.uniform(-0.5, 0.5, n)
    xyz = np.stack([0.3 * np.cos(th), 0.3 * np.sin(th), z], axis=1).astype(np.float32)
    rgb = np.where(((z + 0.5) * 8).astype(int)[:, None] % 2 == 0, [[220, 30, 30]], [[30, 200, 60]])
    rgb[th < 0.3] = [40, 80, 230]
    return PointCloud(xyz, rgb.astype(np.uint8))


def _two_tone_sphere(radius: float = 0.45) -> Mesh:
    """A sphere, red above z = 0 and green below (vertex colours), centred on the origin."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    v = np.asarray(sphere.vertices, np.float64)
    colours = np.where(v[:, 2:] > 0, [[220, 30, 30]], [[30, 200, 60]]).astype(np.uint8)
    return Mesh(v, np.asarray(sphere.faces, np.int32), colours)


def _blue_cloud(n: int) -> PointCloud:
    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(n, 3)) * 0.25
    return PointCloud(xyz.astype(np.float32), np.tile([[40, 80, 230]], (n, 1)).astype(np.uint8))


def _figure_from_html(page: str) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """The (data, layout, config) arguments of ``Plotly.newPlot`` in the page."""
    start = page.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    decoder = json.JSONDecoder()
    pos = start
    args = []
    for _ in range(4):
        while page[pos] in " \t\r\n,":
            pos += 1
        value, pos = decoder.raw_decode(page, pos)
        args.append(value)
    assert args[0] == "vitrine-viewer"
    return args[1], args[2], args[3]


def _array(value: Any) -> np.ndarray:
    """Decode a plotly typed-array spec (``{"dtype", "bdata"}``) or a plain list."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype="<" + value["dtype"])
    return np.array([np.nan if v is None else v for v in value], dtype=np.float64)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- PLY


def _split_header(raw: bytes) -> tuple[list[str], bytes]:
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    return raw[:end].decode("ascii").splitlines(), raw[end:]


def test_ply_round_trip_exact_layout(tmp_path: Path) -> None:
    cloud = _random_cloud(1000)
    out = write_ply(tmp_path / "dense.ply", cloud)
    assert out == tmp_path / "dense.ply"
    lines, body = _split_header(out.read_bytes())
    assert lines == [line.format(n=1000) for line in EXPECTED_HEADER]
    assert "/" not in "\n".join(lines)  # no paths in the comment
    assert VERTEX_DTYPE.itemsize == 27 and len(body) == 27 * 1000
    raw = np.frombuffer(body, dtype=VERTEX_DTYPE)
    np.testing.assert_array_equal(raw["x"], cloud.xyz[:, 0])
    np.testing.assert_array_equal(raw["nz"], cloud.normals[:, 2])
    np.testing.assert_array_equal(raw["blue"], cloud.rgb[:, 2])

    back = read_ply(out)
    assert back.xyz.dtype == np.float32 and back.rgb.dtype == np.uint8
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.rgb, cloud.rgb)
    np.testing.assert_array_equal(back.normals, cloud.normals)
    assert _leftovers(tmp_path) == []


def test_ply_without_normals_writes_zeros(tmp_path: Path) -> None:
    cloud = _random_cloud(50, normals=False)
    out = write_ply(tmp_path / "n.ply", cloud)
    _, body = _split_header(out.read_bytes())
    raw = np.frombuffer(body, dtype=VERTEX_DTYPE)
    assert (
        np.count_nonzero(raw["nx"]) + np.count_nonzero(raw["ny"]) + np.count_nonzero(raw["nz"]) == 0
    )
    back = read_ply(out)
    assert back.normals is None
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.rgb, cloud.rgb)


def test_ply_empty_cloud(tmp_path: Path) -> None:
    out = write_ply(tmp_path / "e.ply", PointCloud.empty())
    lines, body = _split_header(out.read_bytes())
    assert lines[3] == "element vertex 0" and body == b""
    back = read_ply(out)
    assert len(back) == 0 and back.xyz.shape == (0, 3) and back.rgb.shape == (0, 3)


def test_ply_reads_ascii_and_other_orders(tmp_path: Path) -> None:
    ascii_ply = tmp_path / "a.ply"
    ascii_ply.write_text(
        "ply\nformat ascii 1.0\ncomment from elsewhere\nelement vertex 2\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        "property float x\nproperty float y\nproperty float z\n"
        "element face 0\nproperty list uchar int vertex_indices\nend_header\n"
        "255 0 10 1.5 -2 3\n0 128 255 0 0.25 -1\n"
    )
    cloud = read_ply(ascii_ply)
    np.testing.assert_array_equal(cloud.xyz, [[1.5, -2, 3], [0, 0.25, -1]])
    np.testing.assert_array_equal(cloud.rgb, [[255, 0, 10], [0, 128, 255]])
    assert cloud.normals is None

    # Big-endian doubles, xyz only: colours default to grey.
    big = tmp_path / "b.ply"
    pts = np.array(
        [(1.0, 2.0, 3.0), (-1.0, 0.5, 9.0)], dtype=[("x", ">f8"), ("y", ">f8"), ("z", ">f8")]
    )
    big.write_bytes(
        b"ply\nformat binary_big_endian 1.0\nelement vertex 2\nproperty double x\n"
        b"property double y\nproperty double z\nend_header\n" + pts.tobytes()
    )
    cloud = read_ply(big)
    np.testing.assert_array_equal(cloud.xyz, [[1, 2, 3], [-1, 0.5, 9]])
    assert (cloud.rgb == 128).all()


def test_ply_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply at all")
    with pytest.raises(PlyError, match="bad.ply"):
        read_ply(bad)
    full = write_ply(tmp_path / "t.ply", _random_cloud(10))
    truncated = tmp_path / "trunc.ply"
    truncated.write_bytes(full.read_bytes()[:-5])
    with pytest.raises(PlyError, match="truncated"):
        read_ply(truncated)
    with pytest.raises(ValueError, match="shape"):
        write_ply(
            tmp_path / "x.ply", PointCloud(np.zeros((3, 3), np.float32), np.zeros((2, 3), np.uint8))
        )


def test_ply_write_to_missing_folder_is_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="missing"):
        write_ply(tmp_path / "missing" / "dense.ply", _random_cloud(3))


# --------------------------------------------------------------------------- decimation


def test_decimate_budget_seed_and_subset() -> None:
    cloud = _coded_cloud(10_000)
    a = decimate(cloud, 1234, seed=7)
    b = decimate(cloud, 1234, seed=7)
    c = decimate(cloud, 1234, seed=8)
    assert len(a) == 1234
    np.testing.assert_array_equal(a.xyz, b.xyz)
    assert not np.array_equal(a.xyz, c.xyz)
    # Every kept point is an original row, colour still attached to its position.
    index = a.xyz[:, 0].astype(np.int64)
    assert (np.diff(index) > 0).all()  # distinct, in the original order
    np.testing.assert_array_equal(a.rgb, _coded_rgb(index))
    assert decimate(cloud, 10_000) is cloud
    assert len(decimate(cloud, 0)) == 0
    with pytest.raises(ValueError):
        decimate(cloud, -1)


# --------------------------------------------------------------------------- viewer


@pytest.fixture(scope="module")
def big_viewer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int], str]:
    folder = tmp_path_factory.mktemp("viewer_big")
    path = folder / "viewer.html"
    info = write_viewer(
        path, _coded_cloud(1_000_000), _ring_cameras(12), title="Blue Vase #3", point_budget=300_000
    )
    return path, info, path.read_text(encoding="utf-8")


def test_viewer_is_self_contained(big_viewer: tuple[Path, dict[str, int], str]) -> None:
    path, info, page = big_viewer
    assert info["bytes"] == path.stat().st_size
    tags = re.findall(r"<script\b[^>]*>", page, flags=re.IGNORECASE)
    assert tags and all("src" not in tag.lower() for tag in tags), tags
    assert not re.search(r"<(link|iframe|img|embed|object)\b", page, flags=re.IGNORECASE)
    assert not re.search(r"""src\s*=\s*["']?https?:""", page, flags=re.IGNORECASE)
    # plotly.js itself is inline: its banner and a multi-megabyte script body.
    assert re.search(r"plotly\.js v\d+\.\d+\.\d+", page)
    bodies = re.findall(r"<script[^>]*>(.*?)</script>", page, flags=re.DOTALL)
    library = next(b for b in bodies if "plotly.js v" in b[:200])
    assert len(library) > 3_000_000
    # Everything but the library (page, figure, MathJax stub) names no URL at all.
    rest = page.replace(library, "")
    assert "http://" not in rest and "https://" not in rest
    assert str(path.parent) not in page and "/tmp/" not in page


def test_viewer_budget_cameras_title(big_viewer: tuple[Path, dict[str, int], str]) -> None:
    path, info, page = big_viewer
    assert info["points_total"] == 1_000_000 and info["points_drawn"] == 300_000
    assert info["cameras"] == 12
    # Measured on the reference machine: 300k points + 12 cameras is about 13 MB.
    assert info["bytes"] < 20_000_000
    data, layout, config = _figure_from_html(page)
    pts = data[0]
    x, y, z = (_array(pts[k]) for k in "xyz")
    assert len(x) == len(y) == len(z) == len(pts["marker"]["color"]) == 300_000
    # Colours travel with their points (point i has x = i), and no point is drawn twice.
    colours = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in pts["marker"]["color"]])
    index = x.astype(np.int64)
    np.testing.assert_array_equal(colours, _coded_rgb(index))
    assert len(np.unique(index)) == 300_000

    cams = [t for t in data if t.get("legendgroup") == "cameras"]
    assert len(cams) == 2 and data[1]["name"] == "Cameras (12)"
    assert len(_array(data[1]["x"])) == 12
    assert data[1]["text"][0] == "img_000.jpg"
    frusta = _array(data[2]["x"])
    assert np.isnan(frusta).sum() == 2 * 12  # two polylines per camera
    menu = layout["updatemenus"][0]
    button = menu["buttons"][0]
    assert button["label"] == CAMERA_BUTTON_LABEL and button["method"] == "restyle"
    assert menu["active"] == -1  # so the first click applies "args"
    assert button["args"] == [{"visible": "legendonly"}, [1, 2]]
    assert button["args2"] == [{"visible": True}, [1, 2]]
    assert layout["title"]["text"] == "Blue Vase #3"
    assert "<title>Blue Vase #3</title>" in page
    scene = layout["scene"]
    assert scene["aspectmode"] == "data"
    assert not scene["xaxis"]["visible"] and not scene["zaxis"]["visible"]
    assert config["displaylogo"] is False


def test_viewer_initial_view_follows_cameras(tmp_path: Path) -> None:
    # Tilted world "up", level cameras all on one side (a 90 degree arc): the eye looks from
    # their mean direction and the screen's up is the cameras' up (minus their image y axis).
    up = np.array([0.0, -0.6, 0.8])
    cams = _ring_cameras(9, radius=3.0, height=0.0, up=tuple(up), arc=np.pi / 2)
    cloud = _random_cloud(5000)
    write_viewer(tmp_path / "v.html", cloud, {c.name: c for c in cams}, title="t")
    _, layout, _ = _figure_from_html((tmp_path / "v.html").read_text(encoding="utf-8"))
    camera = layout["scene"]["camera"]
    got_up = np.array([camera["up"][k] for k in "xyz"])
    np.testing.assert_allclose(got_up, up, atol=1e-6)
    eye = np.array([camera["eye"][k] for k in "xyz"])
    centre = np.median(cloud.xyz, axis=0)
    mean_dir = np.mean(
        [(c.center - centre) / np.linalg.norm(c.center - centre) for c in cams], axis=0
    )
    cosine = eye @ mean_dir / np.linalg.norm(eye) / np.linalg.norm(mean_dir)
    assert cosine > 0.999
    assert camera["center"] == {"x": 0.0, "y": 0.0, "z": 0.0}
    # Axis ranges are centred on the cloud, so the scene centre is the cloud centre.
    for i, k in enumerate("xyz"):
        lo, hi = layout["scene"][f"{k}axis"]["range"]
        assert math.isclose((lo + hi) / 2, centre[i], abs_tol=1e-6)


def test_viewer_turntable_and_no_cameras(tmp_path: Path) -> None:
    # Cameras all around at 26.6 degrees elevation: a 3/4 view at that elevation.
    cams = _ring_cameras(24, radius=2.0, height=1.0)
    write_viewer(tmp_path / "a.html", _random_cloud(2000), cams, title="t", show_cameras=False)
    data, layout, _ = _figure_from_html((tmp_path / "a.html").read_text(encoding="utf-8"))
    eye = np.array([layout["scene"]["camera"]["eye"][k] for k in "xyz"])
    elevation = math.degrees(math.asin(eye[2] / np.linalg.norm(eye)))
    assert 20 < elevation < 33
    assert data[1]["visible"] == "legendonly" and data[2]["visible"] == "legendonly"
    assert layout["updatemenus"][0]["buttons"][0]["args"][0] == {"visible": True}

    info = write_viewer(tmp_path / "b.html", _random_cloud(2000), (), title="t")
    data, layout, _ = _figure_from_html((tmp_path / "b.html").read_text(encoding="utf-8"))
    assert info["cameras"] == 0 and len(data) == 1 and "updatemenus" not in layout
    camera = layout["scene"]["camera"]
    assert camera["up"] == {"x": 0.0, "y": 0.0, "z": 1.0} and camera["eye"]["z"] > 0


def test_viewer_empty_cloud(tmp_path: Path) -> None:
    info = write_viewer(
        tmp_path / "viewer.html", PointCloud.empty(), _ring_cameras(4), title="Nothing yet"
    )
    assert info["points_drawn"] == 0 and info["points_total"] == 0 and info["cameras"] == 4
    data, layout, _ = _figure_from_html((tmp_path / "viewer.html").read_text(encoding="utf-8"))
    assert len(_array(data[0]["x"])) == 0
    assert layout["annotations"][0]["text"] == EMPTY_NOTE
    info = write_viewer(tmp_path / "none.html", PointCloud.empty(), title="Nothing")
    assert info["points_drawn"] == 0 and info["bytes"] > 1_000_000
    assert _leftovers(tmp_path) == []


def test_viewer_escapes_title_and_strips_paths(tmp_path: Path) -> None:
    cams = _ring_cameras(3)
    cams[0] = CameraPose(
        str(tmp_path / "secret" / "IMG_1.JPG"), cams[0].R, cams[0].t, cams[0].K, 640, 480
    )
    write_viewer(tmp_path / "v.html", _random_cloud(100), cams, title="<b>Mug</b> & co")
    page = (tmp_path / "v.html").read_text(encoding="utf-8")
    assert str(tmp_path) not in page and "secret" not in page
    assert "<title>&lt;b&gt;Mug&lt;/b&gt; &amp; co</title>" in page
    data, _, _ = _figure_from_html(page)
    assert data[1]["text"][0] == "IMG_1.JPG"


def test_viewer_with_mesh_and_dimensions(tmp_path: Path) -> None:
    mesh = _two_tone_sphere()
    info = write_viewer(
        tmp_path / "v.html",
        _blue_cloud(3000),
        _ring_cameras(6),
        title="Ball",
        mesh=mesh,
        dimensions_mm=(90.4, 90.0, 90.2),
    )
    assert info["mesh_triangles"] == mesh.num_triangles
    page = (tmp_path / "v.html").read_text(encoding="utf-8")
    assert not re.search(r"""src\s*=\s*["']?https?:""", page, flags=re.IGNORECASE)
    data, layout, _ = _figure_from_html(page)
    assert len(data) == 4 and data[3]["type"] == "mesh3d"
    faces = np.stack([_array(data[3][k]) for k in "ijk"], axis=1)
    np.testing.assert_array_equal(faces, mesh.faces)
    np.testing.assert_allclose(_array(data[3]["x"]), mesh.vertices[:, 0])
    colours = data[3]["vertexcolor"]
    assert len(colours) == len(mesh) and colours[0] in ("#dc1e1e", "#1ec83c")
    # the page opens on the mesh; the points wait behind the toggle
    assert data[0]["visible"] == "legendonly" and data[3].get("visible", True) is True
    camera_menu, mesh_menu = layout["updatemenus"]
    assert camera_menu["buttons"][0]["label"] == CAMERA_BUTTON_LABEL
    button = mesh_menu["buttons"][0]
    assert button["label"] == MESH_BUTTON_LABEL and mesh_menu["active"] == -1
    assert button["args"] == [{"visible": [True, "legendonly"]}, [0, 3]]
    assert button["args2"] == [{"visible": ["legendonly", True]}, [0, 3]]
    assert "Ball" in layout["title"]["text"] and "90 × 90 × 90 mm" in layout["title"]["text"]

    # an empty cloud with a mesh: the view frames the mesh, no "no points" note
    write_viewer(tmp_path / "e.html", PointCloud.empty(), (), title="t", mesh=mesh)
    _, layout, _ = _figure_from_html((tmp_path / "e.html").read_text(encoding="utf-8"))
    assert "annotations" not in layout
    lo, hi = layout["scene"]["xaxis"]["range"]
    assert lo < -0.4 and hi > 0.4


# --------------------------------------------------------------------------- Chromium

CHROMIUM = (
    next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(n)
        ),
        None,
    )
    if os.name == "posix"
    else None
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
)


class _Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (stdlib only)."""

    def __init__(self, exe: str, width: int = 1280, height: int = 800) -> None:
        import fcntl  # POSIX only; imported here so the module still collects on Windows

        cmd_r, cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        res_r, res_w = os.pipe()  # Chromium writes replies and events on fd 4
        # Park the child's ends on high numbers so the dup2 onto 3 and 4 cannot clobber them.
        hi_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
        hi_w = fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
        os.close(cmd_r)
        os.close(res_w)
        self.profile = tempfile.mkdtemp(prefix="vitrine-chromium-")

        def child_fds() -> None:
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        args = [
            exe,
            *CHROMIUM_FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            close_fds=False,
            preexec_fn=child_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(hi_r)
        os.close(hi_w)
        self._w = os.fdopen(cmd_w, "wb", buffering=0)
        self._r = os.fdopen(res_r, "rb", buffering=0)
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._id = 0
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while chunk := self._r.read(1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for m in messages:
                self._q.put(json.loads(m))
        self._q.put(None)

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError("Chromium exited")
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # best effort; the kill below is the fallback
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._w.close()
        shutil.rmtree(self.profile, ignore_errors=True)


_STATE_JS = """(() => {
  const gd = document.getElementById('vitrine-viewer');
  const scene = gd && gd._fullLayout && gd._fullLayout.scene && gd._fullLayout.scene._scene;
  const canvas = gd ? gd.querySelector('canvas') : null;
  const gl = canvas ? (canvas.getContext('webgl') || canvas.getContext('experimental-webgl'))
                    : null;
  return {
    plot: !!(gd && gd.classList.contains('js-plotly-plot')),
    glplot: !!(scene && scene.glplot),
    webgl: gl ? gl.getParameter(gl.VERSION) : null,
    points: gd && gd._fullData ? gd._fullData[0].x.length : -1,
    cameras: gd && gd._fullData && gd._fullData[1] ? gd._fullData[1].x.length : -1,
    cameraVisible: gd && gd.data[1] ? gd.data[1].visible : null,
    text: document.body ? document.body.innerText : '',
  };
})()"""


def _evaluate(chrome: _Chromium, session: str, expression: str) -> Any:
    result = chrome.send(
        "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
    )
    return result["result"].get("value")


def _count_near(img: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> int:
    return int((np.abs(img.astype(int) - colour).max(axis=2) <= tol).sum())


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)
def test_viewer_renders_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "viewer.html"
    info = write_viewer(
        path, _bottle(20_000), _ring_cameras(12, radius=2.0, height=0.8), title="Banded Bottle"
    )
    assert CHROMIUM is not None
    chrome = _Chromium(CHROMIUM)
    try:
        target = chrome.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = chrome.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page", "Network"):
            chrome.send(f"{domain}.enable", session=session)
        chrome.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        chrome.send("Page.navigate", {"url": path.as_uri()}, session=session)
        deadline = time.monotonic() + 90
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = _evaluate(chrome, session, _STATE_JS) or {}
            if state.get("glplot") and state.get("points") == info["points_drawn"]:
                break
            time.sleep(0.2)
        assert state.get("plot") and state.get("glplot"), state
        assert state["webgl"] and "WebGL" in state["webgl"]
        assert "WebGL is not supported" not in state["text"]
        assert state["points"] == 20_000 and state["cameras"] == 12
        assert "Banded Bottle" in state["text"] and CAMERA_BUTTON_LABEL in state["text"]
        time.sleep(0.5)  # let the WebGL frame land before the screenshot
        shot = chrome.send("Page.captureScreenshot", {"format": "png"}, session=session)
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB"))
        assert img.shape == (800, 1280, 3)
        red, green = _count_near(img, (220, 30, 30)), _count_near(img, (30, 200, 60))
        camera_px = _count_near(img, (255, 176, 0))
        assert red > 5_000 and green > 5_000 and camera_px > 50, (red, green, camera_px)

        # The "Cameras on/off" button hides the camera traces.
        box = _evaluate(
            chrome,
            session,
            "(() => { const r = document.querySelector("
            "'.updatemenu-button').getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()",
        )
        for expected in ("legendonly", True):  # the same button shows them again
            for kind in ("mousePressed", "mouseReleased"):
                chrome.send(
                    "Input.dispatchMouseEvent",
                    {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
                    session=session,
                )
            time.sleep(0.5)
            assert _evaluate(chrome, session, _STATE_JS)["cameraVisible"] == expected
    finally:
        chrome.close()

    errors = []
    requests = []
    for event in chrome.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text"))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append(str([a.get("value") for a in params["args"]]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            requests.append(params["request"]["url"])
    assert errors == []
    assert requests and all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)
def test_viewer_mesh_renders_and_toggles_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "viewer.html"
    write_viewer(
        path,
        _blue_cloud(20_000),
        _ring_cameras(8, radius=2.0, height=0.8),
        title="Ball",
        mesh=_two_tone_sphere(),
        show_cameras=False,
    )
    assert CHROMIUM is not None
    chrome = _Chromium(CHROMIUM)
    state_js = """(() => {
      const gd = document.getElementById('vitrine-viewer');
      const scene = gd && gd._fullLayout && gd._fullLayout.scene && gd._fullLayout.scene._scene;
      return {glplot: !!(scene && scene.glplot),
              meshType: gd && gd._fullData && gd._fullData[3] ? gd._fullData[3].type : null,
              pointsVisible: gd && gd.data ? gd.data[0].visible : null,
              meshVisible: gd && gd.data && gd.data[3] ? gd.data[3].visible : null};
    })()"""

    def shot() -> np.ndarray:
        time.sleep(0.7)
        png = chrome.send("Page.captureScreenshot", {"format": "png"}, session=session)
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(png["data"]))).convert("RGB"))

    try:
        target = chrome.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = chrome.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        chrome.send("Runtime.enable", session=session)
        chrome.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        chrome.send("Page.navigate", {"url": path.as_uri()}, session=session)
        deadline = time.monotonic() + 90
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = _evaluate(chrome, session, state_js) or {}
            if state.get("glplot") and state.get("meshType"):
                break
            time.sleep(0.2)
        assert state.get("meshType") == "mesh3d" and state["pointsVisible"] == "legendonly"
        img = shot()
        # shaded, so loosely: reddish and greenish pixels of the sphere, no blue points
        r, g, b = (img[..., i].astype(int) for i in range(3))
        red = int(((r > 120) & (g < 90) & (b < 90)).sum())
        green = int(((g > 110) & (r < 90) & (b < 110)).sum())
        blue = int(((b > 150) & (r < 90) & (g < 130)).sum())
        assert red > 5_000 and green > 5_000 and blue < 200, (red, green, blue)

        # the "Mesh / points" button swaps them
        box = _evaluate(
            chrome,
            session,
            "(() => { const b = [...document.querySelectorAll('.updatemenu-button')].find("
            f"e => e.textContent.includes('{MESH_BUTTON_LABEL}'));"
            " const r = b.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2];"
            " })()",
        )
        for kind in ("mousePressed", "mouseReleased"):
            chrome.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
                session=session,
            )
        img = shot()
        state = _evaluate(chrome, session, state_js)
        assert state["pointsVisible"] is True and state["meshVisible"] == "legendonly"
        r, g, b = (img[..., i].astype(int) for i in range(3))
        assert int(((b > 150) & (r < 90) & (g < 130)).sum()) > 5_000
        assert int(((r > 120) & (g < 90) & (b < 90)).sum()) < 200
    finally:
        chrome.close()


# --------------------------------------------------------------------------- report


def test_scrub_paths(tmp_path: Path) -> None:
    run = tmp_path / "run"
    photos = tmp_path / "photos dir"
    data = {
        "out": str(run),
        "ply": run / "dense.ply",
        "nested": [str(photos / "a" / "IMG_1.JPG"), ("/etc/elsewhere/other.png", 3)],
        str(photos / "b.jpg"): "key scrubbed too",
        "warning": f"Could not read {photos / 'c.heic'}: bad header; also /home/u/x/y.jpg.",
        "similar": str(tmp_path / "run2" / "z.jpg"),
        "relative": "images/d.jpg",
        "number": 1.5,
        "flag": True,
        "windows": r"C:\Users\me\Pictures\e.jpg",
    }
    clean = scrub_paths(data, [run, photos])
    assert clean["out"] == "."
    assert clean["ply"] == "dense.ply"
    assert clean["nested"] == ["a/IMG_1.JPG", ["other.png", 3]]
    assert clean["b.jpg"] == "key scrubbed too"
    assert clean["warning"] == "Could not read c.heic: bad header; also y.jpg."
    assert clean["similar"] == "z.jpg"
    assert clean["relative"] == "images/d.jpg"
    assert clean["number"] == 1.5 and clean["flag"] is True
    assert clean["windows"] == "e.jpg"
    assert str(tmp_path) not in json.dumps(clean)


def test_write_json_atomic_converts_and_leaves_nothing(tmp_path: Path) -> None:
    data = {
        "count": np.int64(7),
        "seconds": np.float32(1.5),
        "ok": np.bool_(True),
        "arr": np.arange(3, dtype=np.uint8),
        "nan": float("nan"),
        "name": "Vase \u00e9t\u00e9",
        "file": tmp_path / "sub" / "x.ply",
        "tags": ("a", "b"),
    }
    out = write_json_atomic(tmp_path / "data.json", data)
    text = out.read_text(encoding="utf-8")
    loaded = json.loads(text)
    assert loaded == {
        "count": 7,
        "seconds": 1.5,
        "ok": True,
        "arr": [0, 1, 2],
        "nan": None,
        "name": "Vase \u00e9t\u00e9",
        "file": "sub/x.ply",
        "tags": ["a", "b"],
    }
    assert "\u00e9t\u00e9" in text and text.startswith("{\n  ")
    assert str(tmp_path) not in text
    assert _leftovers(tmp_path) == []
    # Overwrite keeps one file and no temporaries; a failed write leaves the old file intact.
    write_json_atomic(out, {"v": 2})
    with pytest.raises(TypeError):
        write_json_atomic(out, {"v": object()})
    assert json.loads(out.read_text(encoding="utf-8")) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]
    with pytest.raises(OutputError):
        write_json_atomic(tmp_path / "missing" / "x.json", {})


def test_write_report(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    report = RunReport(vitrine_version="0.1.0", preset="standard", device="cpu")
    report.inputs = {"folder": str(photos), "count": np.int32(2)}
    report.registered = ["a.jpg"]
    report.unregistered = {"b.jpg": "too few matches"}
    report.warnings = [f"{photos / 'c.jpg'} looks blurry"]
    report.stage_seconds = {"sfm": np.float64(3.25)}
    report.outputs = {"dense.ply": 1234}
    report.dimensions_mm = [np.float64(100.0), 50.0, 20.0]
    (tmp_path / "run").mkdir()
    out = write_report(tmp_path / "run" / "report.json", report, roots=[photos])
    loaded = json.loads(out.read_text(encoding="utf-8"))
    assert loaded["inputs"] == {"folder": ".", "count": 2}
    assert loaded["warnings"] == ["c.jpg looks blurry"]
    assert loaded["stage_seconds"] == {"sfm": 3.25}
    assert loaded["dimensions_mm"] == [100.0, 50.0, 20.0]
    assert loaded["status"] == "running" and loaded["unregistered"] == {"b.jpg": "too few matches"}
    assert str(tmp_path) not in out.read_text(encoding="utf-8")
