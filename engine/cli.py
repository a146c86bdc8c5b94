"""The command line's commands: ``reconstruct``, ``batch``, ``sample`` and ``demo``.

Each takes the parsed arguments (main.py parses them), runs the engine in a worker thread so
Ctrl-C cancels at once, adapts progress events to text (:class:`ProgressBar`,
:class:`CatalogueLines`: no tqdm or rich in the engine) and returns the exit code. What a finished
run or batch prints comes from :mod:`engine.export.summary`. Engine modules are imported inside
the commands: starting the desktop app imports none of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import webbrowser
from pathlib import Path
from typing import TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 130

logger = logging.getLogger("vitrine")


class ProgressBar:
    """Turns engine ProgressEvents into one self-rewriting line (or plain lines off a TTY)."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 28) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.stage = ""
        self.stage_start = time.monotonic()
        self._last_plain = 0.0

    def __call__(self, event) -> None:  # noqa: ANN001 - engine.progress.ProgressEvent
        """Show one event."""
        if event.stage == "pipeline":
            self.finish_line()
            self.stage = event.message
            self.stage_start = time.monotonic()
            return
        frac = event.fraction
        elapsed = time.monotonic() - self.stage_start
        eta = ""
        if frac and 0.05 < frac < 1.0:
            eta = f" ~{elapsed * (1 - frac) / frac:.0f}s left"
        if frac is None:
            bar, pct = "", ""
        else:
            filled = int(round(frac * self.width))
            bar = "[" + "#" * filled + "-" * (self.width - filled) + "] "
            pct = f"{100 * frac:3.0f}% "
        text = f"{event.stage:<8} {bar}{pct}{event.message[:60]}{eta}"
        if self.tty:
            self.stream.write("\r" + text.ljust(110)[:110])
            self.stream.flush()
        elif time.monotonic() - self._last_plain > 2.0 or (frac is not None and frac >= 1.0):
            self._last_plain = time.monotonic()
            self.stream.write(text + "\n")
            self.stream.flush()

    def finish_line(self) -> None:
        """End the current bar line."""
        if self.tty and self.stage:
            self.stream.write("\n")
            self.stream.flush()


def _run_in_thread(target):  # noqa: ANN001, ANN202
    """Run ``target`` in a worker thread so Ctrl-C reaches the main thread at once.

    pycolmap releases the GIL inside long calls; a signal handler on the main thread would only
    run after such a call returns, so the main thread waits here and cancels on Ctrl-C.
    """
    from engine.progress import CancelToken

    token = CancelToken()
    box: dict[str, object] = {}
    # An Event, not Thread.join: a KeyboardInterrupt inside join() can leave the thread looking
    # finished while it still runs.
    done = threading.Event()

    def work() -> None:
        try:
            box["result"] = target(token)
        except BaseException as exc:  # handed to the main thread below
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=work, name="vitrine-run", daemon=True)
    thread.start()
    interrupted = False
    while not done.is_set():
        try:
            done.wait(0.2)
        except KeyboardInterrupt:
            if interrupted:
                print("\nStopping now.", file=sys.stderr)
                raise SystemExit(EXIT_CANCELLED) from None
            interrupted = True
            print("\nCancelling... (Ctrl-C again to stop at once)", file=sys.stderr)
            token.cancel()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("result")


def config_from_args(args: argparse.Namespace):  # noqa: ANN202 - engine.config.PipelineConfig
    """The run settings the options of ``reconstruct`` and ``batch`` ask for."""
    from engine.options import RunOptions, pipeline_config

    scale: dict[str, object] = {}
    if getattr(args, "marker_size_mm", None):
        scale["marker_size_mm"] = args.marker_size_mm
    if getattr(args, "known_dimension", None):
        scale["known_dimension"], scale["known_dimension_mm"] = args.known_dimension
    options = RunOptions(
        preset=args.preset,
        device=args.device,
        product_name=getattr(args, "name", ""),
        depth_prior=False if getattr(args, "no_depth_prior", False) else None,
        depth_model=getattr(args, "depth_model", None),
        download_models=bool(getattr(args, "download_models", False)),
        sparse_only=bool(getattr(args, "sparse_only", False)),
        auto_masks=False if getattr(args, "no_masks", False) else None,
        mask_model=getattr(args, "mask_model", None),
        mesh=False if getattr(args, "no_mesh", False) else None,
        max_triangles=getattr(args, "max_triangles", None),
        scale=scale,
    )
    return pipeline_config(options)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """``reconstruct``: photos to a run folder."""
    from engine.errors import VitrineError
    from engine.pipeline import reconstruct
    from engine.progress import Cancelled

    cfg = config_from_args(args)
    bar = ProgressBar()
    try:
        result = _run_in_thread(
            lambda token: reconstruct(args.images, args.out, cfg, progress=bar, cancel=token)
        )
    except Cancelled:
        bar.finish_line()
        print(
            f"Cancelled. Finished stages are kept in {args.out}; run again to resume.",
            file=sys.stderr,
        )
        return EXIT_CANCELLED
    except VitrineError as exc:
        bar.finish_line()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # an internal error: one line here, the traceback in run.log
        bar.finish_line()
        print(
            f"error: internal error ({type(exc).__name__}: {exc}); "
            f"see {Path(args.out) / 'run.log'}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    bar.finish_line()
    if args.json:
        print(
            json.dumps(
                json.loads((Path(args.out) / "report.json").read_text(encoding="utf-8")), indent=2
            )
        )
    else:
        from engine.export.summary import run_summary

        print(run_summary(result, Path(args.out)))
    return EXIT_OK


class CatalogueLines:
    """Turns the batch's ``catalogue`` events into lines.

    One line per finished product, with the count done and the time left.
    """

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream

    def __call__(self, event) -> None:  # noqa: ANN001 - engine.progress.ProgressEvent
        """Show one event."""
        info = event.partial or {}
        if info.get("started"):
            return  # one line per finished product, not per start
        if info.get("product") is None:
            self.stream.write(f"{event.message}\n")
        else:
            left = info.get("seconds_left")
            eta = f", about {_duration(left)} left" if left else ""
            self.stream.write(f"[{event.current}/{event.total}{eta}] {event.message}\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_batch(args: argparse.Namespace) -> int:
    """``batch``: a catalogue of product folders to run folders, summary.json and a gallery."""
    from engine.catalogue import SUMMARY_NAME, run_catalogue
    from engine.errors import VitrineError

    cfg = config_from_args(args)
    try:
        result = _run_in_thread(
            lambda token: run_catalogue(
                args.catalogue,
                args.out,
                cfg,
                workers=args.workers,
                ray_address=args.ray,
                retry_failed=args.retry_failed,
                progress=CatalogueLines(),
                cancel=token,
            )
        )
    except VitrineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # an internal error: one line, not a traceback
        logger.exception("The batch failed with an internal error")
        print(f"error: internal error ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_FAILED
    from engine.export.summary import catalogue_summary

    print(catalogue_summary(result))
    if result.cancelled:
        print(
            f"Cancelled. {Path(args.out) / SUMMARY_NAME} lists what is done; run the same "
            "command again to continue.",
            file=sys.stderr,
        )
        return EXIT_CANCELLED
    print(f"Open {Path(args.out) / 'index.html'} in a browser to see the gallery.")
    return EXIT_FAILED if result.failed else EXIT_OK


def cmd_sample(args: argparse.Namespace) -> int:
    """``sample``: write a synthetic sample photo set."""
    from engine.synthetic import write_sample

    folder = write_sample(Path(args.dir), kind=args.scene)
    print(f"Sample photos written to {folder}.")
    print(
        f"Reconstruct them with: python main.py reconstruct {folder} --out {Path(args.dir) / 'run'}"
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: write the sample, reconstruct it and open the viewer in the browser."""
    from engine.synthetic import write_sample

    root = Path(args.dir).expanduser()
    photos = write_sample(root / "sample", kind="bottle")
    ns = argparse.Namespace(
        images=[photos],
        out=root / "sample-run",
        preset="standard",
        device="auto",
        json=False,
        name="Sample bottle",
    )
    code = cmd_reconstruct(ns)
    if code == EXIT_OK and not args.no_browser:
        webbrowser.open((root / "sample-run" / "viewer.html").resolve().as_uri())
    return code
