"""Screenshots of the desktop app on the built-in sample, for the README.

Run under a virtual display (the 3D view needs OpenGL, which Xvfb + Mesa provide)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python bench/screenshots.py \
        --out docs/screenshots

It starts the app with an empty project, opens the sample (written with
``engine.synthetic.write_sample``), reconstructs it with the standard preset through the real
worker and saves: the empty window, the photos loaded, the run half way with the partial dense
cloud, the finished result (the mesh when the run built one), the mask inspector of one photo,
the "Set scale" dialog with the bottle's true height entered, and the result after the run
again (it resumes: only scale and export recompute) with its dimensions and the coverage map.
``--home`` chooses Vitrine's folder (default a temporary one, so ``~/Vitrine`` is not touched).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_BYTES = 400_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--home", type=Path, help="Vitrine home (default: a temporary folder)")
    parser.add_argument("--size", default="1440x900", help="window size WxH")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed for the run")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="vitrine-shots-"))
    os.environ["VITRINE_HOME"] = str(home)
    os.environ.setdefault("VITRINE_UNSAVED_DIR", str(home / "unsaved"))
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # runs raise the engine's level to INFO
        handler.setLevel(logging.WARNING)

    from PySide6.QtCore import QCoreApplication, QEventLoop, QPoint, Qt
    from PySide6.QtGui import QImage, QPainter

    from gui.app import make_application
    from gui.errors import ErrorSink
    from gui.main_window import SAMPLE_SET, MainWindow

    app = make_application()  # noqa: F841 - kept alive for the whole script
    errors = ErrorSink()
    window = MainWindow(errors=errors)
    errors.set_parent_window(window)
    width, height = (int(v) for v in args.size.split("x"))
    window.resize(width, height)
    window.move(0, 0)
    window.show()
    args.out.mkdir(parents=True, exist_ok=True)

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
            time.sleep(0.01)

    def wait_until(condition, timeout: float, what: str) -> None:  # noqa: ANN001
        end = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > end:
                raise SystemExit(f"timed out waiting for {what}")
            pump(0.05)

    def save(image: QImage, name: str) -> Path:
        path = args.out / f"{name}.png"
        image = image.convertToFormat(QImage.Format.Format_RGB32)
        image.save(str(path), "PNG", 0)
        if path.stat().st_size > MAX_BYTES:
            # a palette image keeps UI text crisp at a fraction of the size
            image.convertToFormat(QImage.Format.Format_Indexed8).save(str(path), "PNG", 0)
        if path.stat().st_size > MAX_BYTES:
            scaled = image.scaledToWidth(
                int(image.width() * 0.8), Qt.TransformationMode.SmoothTransformation
            )
            scaled.convertToFormat(QImage.Format.Format_Indexed8).save(str(path), "PNG", 0)
        return path

    def shot(name: str) -> Path:
        window.view.flush()
        pump(0.4)
        image = window.grab().toImage()
        view = window.view
        if view.available:
            # QWidget.grab() may leave the OpenGL area black: paint the view's own frame there.
            frame = view.grab_frame()
            if not frame.isNull():
                painter = QPainter(image)
                dpr = image.devicePixelRatio() or 1.0
                top_left = view.mapTo(window, QPoint(0, 0))
                target = frame.scaled(
                    int(view.width() * dpr),
                    int(view.height() * dpr),
                    Qt.AspectRatioMode.IgnoreAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
                painter.drawImage(QPoint(top_left.x(), top_left.y()), target)
                painter.end()
        path = save(image, name)
        print(
            f"{path} {path.stat().st_size // 1024} KB: model {len(window.cloud_model):,} points "
            f"({window.cloud_model.kind}), view {view.point_count:,} points, "
            f"{view.frustum_count} cameras, display {view.display} "
            f"({view.mesh_triangles:,} mesh triangles); "
            f"dimensions: {window.dimensions_label.text()!r}",
            flush=True,
        )
        return path

    def dialog_shot(dialog, name: str) -> Path:  # noqa: ANN001 - a QDialog
        pump(0.4)
        path = save(dialog.grab().toImage(), name)
        print(f"{path} {path.stat().st_size // 1024} KB", flush=True)
        return path

    pump(1.5)  # the GPU probe, the first paint
    print(f"OpenGL view: {window.view.available} {window.view.unavailable_reason}", flush=True)
    shot("01-empty")

    t0 = time.monotonic()
    window.open_sample(start=False)
    wait_until(lambda: window.project.has_set(SAMPLE_SET), 600, "the sample photos")
    print(f"sample written in {time.monotonic() - t0:.0f} s", flush=True)
    wait_until(
        lambda: window.thumbs.loaded_count() >= min(12, len(window.thumbs.paths())),
        120,
        "the thumbnails",
    )
    shot("02-photos-loaded")

    t0 = time.monotonic()
    window.start_run(SAMPLE_SET)
    stages = window.progress_model.stages

    def half_dense() -> bool:
        st = stages.get("dense")
        return window.worker is None or (st is not None and st.fraction >= 0.5)

    wait_until(half_dense, args.timeout, "the dense stage")
    if window.worker is not None:
        shot("03-running")
    wait_until(lambda: window.worker is None, args.timeout, "the end of the run")
    print(
        f"run ended in {time.monotonic() - t0:.0f} s: "
        f"{window.project.image_set(SAMPLE_SET).last_status}, "
        f"{len(window.cloud_model):,} points ({window.cloud_model.kind})",
        flush=True,
    )
    window.view.reset_view()
    shot("04-finished")

    # the mask of one photo, as double-clicking its thumbnail shows it
    photos = window.thumbs.paths()
    inspector = window.inspect_photo(photos[len(photos) // 3]) if photos else None
    if inspector is not None:
        inspector.resize(820, 700)
        dialog_shot(inspector, "05-mask-inspector")
        inspector.close()

    # the bottle's true height (from the sample's ground truth) as a known size
    from engine.synthetic import load_scene

    scene = load_scene(home / "sample" / "ground_truth")
    height_mm = 1000.0 * float(scene.bbox_max[2] - scene.bbox_min[2])
    dialog = window.show_set_scale()
    dialog.set_mode("dimension")
    dialog.dimension.setCurrentIndex(dialog.dimension.findData("height"))
    dialog.dimension_mm.setValue(round(height_mm, 1))
    dialog_shot(dialog, "06-set-scale")
    dialog.accept()
    t0 = time.monotonic()
    window.start_run(SAMPLE_SET)
    wait_until(lambda: window.worker is None, args.timeout, "the end of the second run")
    print(
        f"second run (resumed, known height {height_mm:.1f} mm) ended in "
        f"{time.monotonic() - t0:.0f} s: {window.dimensions_label.text()!r}",
        flush=True,
    )
    window.tabs.setCurrentIndex(1)  # Coverage & advice
    window.view.reset_view()
    shot("07-dimensions-coverage")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
