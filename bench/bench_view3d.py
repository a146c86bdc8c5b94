"""Benchmark: frame time of the 3D view (gui/view3d.py) at 200k, 1M and 3M points.

For each size, a synthetic coloured "bottle" cloud (points on a noisy surface of revolution, 36
cameras on a ring) is handed to a :class:`~gui.models.CloudModel` and the view:

- **apply ms**: ``model.set_cloud`` then ``view.flush()``: the view reads the snapshot, converts
  colours to float RGBA and estimates the robust bounds (CPU only, on the GUI thread).
- **to first frame ms**: ``model.set_cloud`` until the first frame with the new cloud is on
  screen (``flush``, ``update()``, then waiting for ``frameSwapped``; includes uploading the
  vertex buffers).
- **frame ms**: a slow orbit (2 degrees of azimuth per frame): ``setCameraPosition``,
  ``update()``, then the event loop runs until ``frameSwapped`` (rendered and composited on
  screen); wall time per frame, median and 90th percentile of ``--frames`` frames after 2
  warm-up frames.
- **moving frame ms**: the same orbit while the view is told the camera moves
  (``note_interaction``), so it draws its thinned preview when full frames exceed its 50 ms
  budget; with the points drawn per frame.
- **grab ms**: the orbit through ``grabFramebuffer()`` (render + read back, as the tests do).

Medians of ``--repeats`` runs for the upload columns. Needs an X display with OpenGL::

    xvfb-run -a -s "-screen 0 1280x800x24" python bench/bench_view3d.py [--sizes 200000 1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _machine import cpu_model  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from engine.types import CameraPose, PointCloud  # noqa: E402


def bottle_cloud(n: int, seed: int = 0) -> PointCloud:
    """``n`` points on a bottle-like surface of revolution (height 0.3, radius ~0.05), coloured."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.0, 0.3, n)
    theta = rng.uniform(0.0, 2 * np.pi, n)
    radius = 0.05 - 0.03 * np.clip((z - 0.18) / 0.08, 0, 1) + rng.normal(0, 0.0005, n)
    xyz = np.c_[radius * np.cos(theta), radius * np.sin(theta), z].astype(np.float32)
    rgb = np.empty((n, 3), np.uint8)
    rgb[:, 0] = (127 + 120 * np.sin(8 * theta)).astype(np.uint8)
    rgb[:, 1] = (z / 0.3 * 255).astype(np.uint8)
    rgb[:, 2] = 90
    return PointCloud(xyz, rgb)


def ring_cameras(n: int = 36, radius: float = 0.6) -> dict[str, CameraPose]:
    """Cameras on a ring around the bottle, looking at its middle, world +z up."""
    cams = {}
    up = np.array([0.0, 0.0, 1.0])
    target = np.array([0.0, 0.0, 0.15])
    for i in range(n):
        th = 2 * np.pi * i / n
        c = np.array([radius * np.cos(th), radius * np.sin(th), 0.35])
        zc = (target - c) / np.linalg.norm(target - c)
        xc = np.cross(zc, up)
        xc /= np.linalg.norm(xc)
        R = np.stack([xc, np.cross(zc, xc), zc])
        K = np.array([[900.0, 0, 400], [0, 900.0, 300], [0, 0, 1]])
        cams[f"img{i:03d}.jpg"] = CameraPose(f"img{i:03d}.jpg", R, -R @ c, K, 800, 600)
    return cams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000, 3_000_000])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--height", type=int, default=640)
    ap.add_argument("--point-size", type=float, default=2.0)
    args = ap.parse_args()

    app = QApplication.instance() or QApplication(sys.argv)
    from OpenGL import GL

    from gui.models import CloudModel
    from gui.view3d import PointCloudView, opengl_status

    ok, reason = opengl_status()
    if not ok:
        sys.exit(f"OpenGL unavailable: {reason}. Run under xvfb-run (see the module docstring).")

    model = CloudModel(max_points=max(args.sizes))
    view = PointCloudView(model, max_draw_points=max(args.sizes), point_size=args.point_size)
    view.resize(args.width, args.height)
    view.show()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)
    glv = view.gl_view
    glv.makeCurrent()
    renderer = GL.glGetString(GL.GL_RENDERER).decode()
    glv.doneCurrent()
    swapped = [0]
    glv.frameSwapped.connect(lambda: swapped.__setitem__(0, swapped[0] + 1))

    def draw() -> None:
        """Ask for a frame and run the event loop until it is on screen."""
        before = swapped[0]
        glv.update()
        while swapped[0] == before:
            app.processEvents()

    def orbit(frames: int, warmup: int, moving: bool) -> tuple[list[float], list[int]]:
        times, drawn = [], []
        azimuth = glv.opts["azimuth"]
        for i in range(frames + warmup):
            if moving:
                view.note_interaction()
            glv.setCameraPosition(azimuth=azimuth + 2.0 * i)
            t0 = time.perf_counter()
            draw()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                drawn.append(view.last_frame_points)
        return times, drawn

    cameras = ring_cameras()
    rows = []
    for n in args.sizes:
        clouds = [bottle_cloud(n, seed=s) for s in range(args.repeats)]
        apply_s, first_s = [], []
        for cloud in clouds:
            t0 = time.perf_counter()
            model.set_cloud(cloud, cameras)
            view.flush()
            t1 = time.perf_counter()
            draw()
            t2 = time.perf_counter()
            apply_s.append(t1 - t0)
            first_s.append(t2 - t0)
        assert view.point_count == n, (view.point_count, n)
        view.reset_view()

        frames, _ = orbit(args.frames, 2, moving=False)
        moving, drawn = orbit(args.frames, 2, moving=True)
        view._end_preview()  # do not wait for the settle timer between sizes
        grabs = []
        for i in range(args.frames // 2 + 1):
            glv.setCameraPosition(azimuth=glv.opts["azimuth"] - 2.0)
            t0 = time.perf_counter()
            glv.grabFramebuffer()
            if i >= 1:
                grabs.append(time.perf_counter() - t0)
        med = statistics.median(frames)
        row = {
            "points": n,
            "apply_ms": 1000 * statistics.median(apply_s),
            "first_frame_ms": 1000 * statistics.median(first_s),
            "frame_ms": 1000 * med,
            "frame_p90_ms": 1000 * float(np.percentile(frames, 90)),
            "fps": 1.0 / med,
            "moving_frame_ms": 1000 * statistics.median(moving),
            "moving_points": int(statistics.median(drawn)),
            "grab_ms": 1000 * statistics.median(grabs),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    print()
    print(
        f"Renderer: {renderer}; view {args.width} x {args.height} px, point size "
        f"{args.point_size:g} px, {len(cameras)} camera pyramids; CPU: {cpu_model()}"
    )
    print()
    print(
        "| points | apply ms | set_cloud -> on screen ms | frame ms (median) | frame ms (p90) | "
        "frames/s | moving: frame ms (points drawn) | grabFramebuffer ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['points']:,} | {r['apply_ms']:.0f} | {r['first_frame_ms']:.0f} | "
            f"{r['frame_ms']:.0f} | {r['frame_p90_ms']:.0f} | {r['fps']:.1f} | "
            f"{r['moving_frame_ms']:.0f} ({r['moving_points']:,}) | {r['grab_ms']:.0f} |"
        )
    view.close()


if __name__ == "__main__":
    main()
