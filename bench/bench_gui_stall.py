"""Benchmark: the desktop app's longest event-loop stall during a full run of the sample.

Run under a virtual display (the 3D view needs OpenGL, which Xvfb + Mesa provide)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python bench/bench_gui_stall.py --repeats 2

The main window reconstructs the built-in sample (36 photos, the window's default settings:
``standard`` preset; the depth network is skipped when its weights are absent) through the real
worker while a 10 ms QTimer records when the GUI thread gets to run. A gap between two ticks is
time the window could not repaint or react. Prints, per run and per stage,
the longest gap, the 99th percentile and the number of gaps over 100 ms, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", default="1440x900", help="window size WxH")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="vitrine-stall-"))
    os.environ["VITRINE_HOME"] = str(home)
    os.environ.setdefault("VITRINE_UNSAVED_DIR", str(home / "unsaved"))

    import logging

    logging.basicConfig(level=logging.WARNING)
    from PySide6.QtCore import QEventLoop, QTimer

    from engine.synthetic import write_sample
    from gui.app import make_application
    from gui.errors import ErrorSink
    from gui.main_window import MainWindow

    app = make_application()  # noqa: F841 - kept alive for the whole script
    photos = write_sample(home / "sample", kind="bottle")
    rows = []
    for repeat in range(args.repeats):
        errors = ErrorSink()
        window = MainWindow(errors=errors)
        errors.set_parent_window(window)
        width, height = (int(v) for v in args.size.split("x"))
        window.resize(width, height)
        window.show()
        name = window.project.add_set("Sample").name
        window.project.add_paths(name, [photos])
        ticks: list[tuple[float, str]] = []
        timer = QTimer()
        timer.setInterval(10)
        stages = window.progress_model

        def tick() -> None:
            ticks.append((time.perf_counter(), stages.current or "start"))  # noqa: B023

        timer.timeout.connect(tick)
        loop = QEventLoop()
        window.run_ended.connect(lambda _outcome: loop.quit())  # noqa: B023
        timer.start()
        t0 = time.perf_counter()
        if not window.start_run(name):
            raise SystemExit("the run did not start")
        loop.exec()
        seconds = time.perf_counter() - t0
        timer.stop()
        gaps: dict[str, list[float]] = {}
        for (a, _), (b, stage) in zip(ticks, ticks[1:], strict=False):
            gaps.setdefault(stage, []).append(1000 * (b - a))
        all_gaps = [g for v in gaps.values() for g in v]
        row = {
            "repeat": repeat,
            "seconds": round(seconds, 1),
            "status": window.project.image_set(name).last_status,
            "points": len(window.cloud_model),
            "max_gap_ms": round(max(all_gaps), 1),
            "p99_gap_ms": round(statistics.quantiles(all_gaps, n=100)[98], 1),
            "gaps_over_100ms": sum(g > 100 for g in all_gaps),
            "per_stage_max_ms": {k: round(max(v), 1) for k, v in gaps.items()},
            "load": [round(x, 2) for x in os.getloadavg()],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        window.close()
    print()
    print(
        "| run | seconds | status | points | longest gap ms | p99 gap ms | gaps > 100 ms "
        "| longest gap by stage (ms) | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        by_stage = ", ".join(f"{k} {v:.0f}" for k, v in r["per_stage_max_ms"].items())
        print(
            f"| {r['repeat'] + 1} | {r['seconds']} | {r['status']} | {r['points']:,} | "
            f"{r['max_gap_ms']} | {r['p99_gap_ms']} | {r['gaps_over_100ms']} | {by_stage} | "
            f"{' / '.join(map(str, r['load']))} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
