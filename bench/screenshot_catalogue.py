"""Screenshot of the app's catalogue view (Run ▸ Run all sets…) after a real batch.

Run under a virtual display::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python bench/screenshot_catalogue.py \
        --out docs/screenshots

It makes a project with three image sets (a synthetic bottle, a synthetic box, and a set whose
photos are missing), runs them through the catalogue view (this workstation, one at a time,
the standard preset without the depth network) and saves the dialog as
``08-catalogue.png``. The gallery it wrote is ``<project>/index.html`` (printed at the end).
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

VIEWS = {"n_azimuth": 12, "elevations_deg": (20.0, 45.0), "width": 480, "height": 360}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vitrine-catalogue-"))
    os.environ["VITRINE_HOME"] = str(work / "home")

    from PySide6.QtCore import QCoreApplication, QEventLoop

    from engine.synthetic import render_scene
    from gui.app import make_application
    from gui.main_window import MainWindow

    app = make_application()  # noqa: F841 - kept alive for the whole script
    win = MainWindow(gpu_probe=None)
    win.resize(1200, 800)
    win.show()
    for kind, name in (("bottle", "Amber bottle"), ("box", "Gift box")):
        scene = render_scene(work / "shoots" / kind, kind, **VIEWS)
        win.new_set(name)
        win.add_paths([scene.root / "images"], set_name=name)
        win.project.update_set(name, no_depth_prior=True)
    missing = work / "shoots" / "moved"
    missing.mkdir(parents=True, exist_ok=True)
    win.new_set("Moved shoot")
    win.project.update_set(win.current_set, no_depth_prior=True)
    win.settings.load(win.project.image_set(win.current_set))
    if not win.save_project_as(work / "Spring catalogue"):
        print("could not save the project", file=sys.stderr)
        return 1

    dialog = win.show_catalogue()
    dialog.resize(900, 330)
    t0 = time.monotonic()
    dialog.start()
    while dialog.worker is not None and time.monotonic() - t0 < args.timeout:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 100)
        time.sleep(0.05)
    if dialog.worker is not None:
        print("the batch did not end in time", file=sys.stderr)
        return 1
    for _ in range(20):
        QCoreApplication.processEvents()
        time.sleep(0.05)
    args.out.mkdir(parents=True, exist_ok=True)
    shot = args.out / "08-catalogue.png"
    dialog.grab().save(str(shot))
    print(f"{shot} ({time.monotonic() - t0:.0f} s batch); gallery: {dialog.gallery_path()}")
    for row in range(dialog.table.rowCount()):
        cells = [dialog.table.item(row, c).text() for c in range(dialog.table.columnCount())]
        print("  " + " | ".join(cells))
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
