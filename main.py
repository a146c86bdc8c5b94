"""Vitrine entry point: no arguments start the desktop app; subcommands run the command line.

    python main.py                                   the desktop app
    python main.py reconstruct PHOTOS... --out DIR   photos -> run folder
    python main.py batch CATALOGUE --out SITE        a folder of product folders -> gallery
    python main.py sample DIR                        write a synthetic sample photo set
    python main.py demo                              sample + reconstruction, opens the viewer

This module parses arguments, configures logging and adapts engine progress events to a text
progress bar. Everything else lives in ``engine`` (and ``gui``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import multiprocessing
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


def _configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # The console shows warnings only; run.log (added per run by the pipeline) gets INFO.
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    import pycolmap  # COLMAP's own (glog) chatter: errors only unless asked for details

    pycolmap.logging.minloglevel = 0 if verbose else 2


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


def _config_from_args(args: argparse.Namespace):  # noqa: ANN202 - engine.config.PipelineConfig
    """The run settings the options of ``reconstruct`` and ``batch`` ask for."""
    from engine.config import preset

    overrides = {"device": args.device}
    cfg = preset(args.preset, **overrides)
    if getattr(args, "name", ""):
        cfg = cfg.replace(export=dataclasses.replace(cfg.export, product_name=args.name))
    prior = cfg.depth_prior
    if getattr(args, "no_depth_prior", False):
        prior = dataclasses.replace(prior, enabled=False)
    if getattr(args, "depth_model", None):
        prior = dataclasses.replace(prior, model=str(args.depth_model))
    if getattr(args, "download_models", False):
        prior = dataclasses.replace(prior, allow_download=True)
    cfg = cfg.replace(depth_prior=prior)
    if getattr(args, "sparse_only", False):
        cfg = cfg.replace(stop_after="sparse")
    if getattr(args, "no_masks", False):
        cfg = cfg.replace(masks=dataclasses.replace(cfg.masks, enabled=False))
    if getattr(args, "mask_model", None):
        cfg = cfg.replace(
            masks=dataclasses.replace(
                cfg.masks,
                model=str(args.mask_model),
                allow_download=bool(getattr(args, "download_models", False)),
            )
        )
    mesh = cfg.mesh
    if getattr(args, "no_mesh", False):
        mesh = dataclasses.replace(mesh, enabled=False)
    if getattr(args, "max_triangles", None):
        mesh = dataclasses.replace(mesh, max_triangles=args.max_triangles)
    cfg = cfg.replace(mesh=mesh)
    scale = cfg.scale
    if getattr(args, "marker_size_mm", None):
        scale = dataclasses.replace(scale, marker_size_mm=args.marker_size_mm)
    if getattr(args, "known_dimension", None):
        which, mm = args.known_dimension
        scale = dataclasses.replace(scale, known_dimension=which, known_dimension_mm=mm)
    return cfg.replace(scale=scale)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """``reconstruct``: photos to a run folder."""
    from engine.errors import VitrineError
    from engine.pipeline import reconstruct
    from engine.progress import Cancelled

    cfg = _config_from_args(args)
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
    report = result.report
    if args.json:
        print(
            json.dumps(
                json.loads((Path(args.out) / "report.json").read_text(encoding="utf-8")), indent=2
            )
        )
    else:
        n = len(result.ingest.images)
        if result.sparse is not None:
            print(
                f"{report.stages['sfm']['registered']} of {n} photos placed; "
                f"{len(result.sparse.points)} sparse points."
            )
        if result.dense is not None:
            print(f"Dense cloud: {len(result.dense)} points ({Path(args.out) / 'dense.ply'}).")
        for warning in report.warnings:
            if (
                warning.startswith(("Single-photo", "Depth-Anything"))
                or "non-commercial" in warning
            ):
                print(f"  note: {warning}")
        if report.dimensions_mm:
            w, d, h = report.dimensions_mm
            source = report.stages.get("scale", {}).get("source", "")
            print(f"Dimensions: {w:.1f} x {d:.1f} x {h:.1f} mm (width x depth x height, {source}).")
        if result.mesh is not None:
            print(
                f"Mesh: {result.mesh.num_triangles} triangles "
                f"({Path(args.out) / 'mesh.glb'}, embed.html for storefronts)."
            )
        for note in report.notes:
            print(f"  note: {note}")
        for advice in report.advice:
            print(f"  advice: {advice}")
        for name, reason in report.unregistered.items():
            print(f"  not placed: {name}: {reason}")
        for skipped in report.skipped:
            print(f"  skipped: {skipped['file']}: {skipped['reason']}")
        print(f"Open {Path(args.out) / 'viewer.html'} in a browser to see the result.")
    return EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of at least 1")
    return value


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

    cfg = _config_from_args(args)
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
    summary = result.summary
    counts, verdicts = summary["counts"], summary["verdicts"]
    waiting = f", {counts['pending']} not done" if counts.get("pending") else ""
    print(
        f"{len(result.products)} products ({len(result.computed)} computed now{waiting}): "
        f"{verdicts.get('ready', 0)} ready, {verdicts.get('check', 0)} to check, "
        f"{verdicts.get('reshoot', 0)} to reshoot, {counts.get('failed', 0)} failed."
    )
    for entry in result.failed:
        print(f"  failed: {entry['folder']}: {entry.get('reason')} (exit {entry.get('exit_code')})")
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


def _known_dimension(text: str) -> tuple[str, float]:
    """``height=250`` (or ``width=120mm``) -> ``("height", 250.0)``."""
    from engine.config import parse_known_dimension

    try:
        return parse_known_dimension(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_preset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="standard", choices=["preview", "standard", "high"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _add_stage_options(parser: argparse.ArgumentParser) -> None:
    """Options of the stages, shared by ``reconstruct`` and ``batch``."""
    parser.add_argument(
        "--no-depth-prior",
        action="store_true",
        help="do not use the monocular depth network (Depth-Anything-V2)",
    )
    parser.add_argument(
        "--depth-model",
        metavar="PATH_OR_ID",
        help="depth network: a local folder with model.safetensors, or a Hugging Face id "
        "(default depth-anything/Depth-Anything-V2-Small-hf)",
    )
    parser.add_argument(
        "--download-models",
        action="store_true",
        help="download the depth (and mask) network when it is not on this computer "
        "(needs internet)",
    )
    parser.add_argument(
        "--no-masks", action="store_true", help="do not mask out the backdrop automatically"
    )
    parser.add_argument(
        "--mask-model",
        metavar="PATH_OR_ID",
        help="segmentation network for the masks (a transformers semantic-segmentation folder "
        "with model.safetensors, or a Hugging Face id); default: weight-free masks",
    )
    parser.add_argument("--no-mesh", action="store_true", help="stop at the point cloud (no mesh)")
    parser.add_argument(
        "--max-triangles", type=int, metavar="N", help="triangle budget of the mesh (100000)"
    )
    parser.add_argument(
        "--marker-size-mm",
        type=float,
        metavar="MM",
        help="side of the printed ArUco marker(s) in the photos, for true scale",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    import engine  # only zlib behind it: cheap enough for --help

    parser = argparse.ArgumentParser(prog="vitrine", description="Product photos to a 3D model.")
    parser.add_argument("--version", action="version", version=f"vitrine {engine.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--selftest",
        action="store_true",
        help="reconstruct a tiny synthetic scene, check it against its truth, exit 0 or 1",
    )
    app = parser.add_argument_group("desktop app (no command)")
    app.add_argument("--project", metavar="FOLDER", help="open this project folder")
    app.add_argument("--sample", action="store_true", help="open the built-in sample")
    app.add_argument(
        "--no-sample", action="store_true", help="start empty, even on the first start"
    )
    parser.set_defaults(paths=[])
    sub = parser.add_subparsers(dest="command")

    rec = sub.add_parser("reconstruct", help="reconstruct photos into a run folder")
    rec.add_argument("images", nargs="+", type=Path, help="photo files and/or folders")
    rec.add_argument("--out", required=True, type=Path, help="run folder to write")
    _add_preset_options(rec)
    rec.add_argument("--name", default="", help="product name shown in the viewer")
    rec.add_argument("--json", action="store_true", help="print report.json on success")
    rec.add_argument(
        "--sparse-only", action="store_true", help="stop after the cameras and sparse points"
    )
    _add_stage_options(rec)
    rec.add_argument(
        "--known-dimension",
        type=_known_dimension,
        metavar="WHICH=MM",
        help="a measured product dimension for true scale, e.g. height=250",
    )
    rec.set_defaults(func=cmd_reconstruct)

    bat = sub.add_parser(
        "batch",
        help="reconstruct a catalogue (a folder of product folders) into a gallery site",
        description="Each folder that holds photos is a product; an optional catalogue.csv "
        "(folder,name,sku,known dimension,marker size mm) names them. Writes "
        "SITE/products/<slug>/ (one run folder each), SITE/summary.json and SITE/index.html. "
        "Finished products are not computed again: run the same command to continue.",
    )
    bat.add_argument("catalogue", type=Path, help="folder of product folders")
    bat.add_argument("--out", required=True, type=Path, help="site folder to write")
    bat.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="products at once on this machine (default: from the cores and memory)",
    )
    bat.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run each product as a Ray task: 'local' starts Ray here, 'auto' or "
        'ray://host:port joins a cluster (needs pip install -e ".[cluster]")',
    )
    bat.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again products that failed on their photos although nothing changed",
    )
    _add_preset_options(bat)
    _add_stage_options(bat)
    bat.set_defaults(func=cmd_batch)

    sam = sub.add_parser("sample", help="write a synthetic sample photo set")
    sam.add_argument("dir", help="folder to write")
    sam.add_argument("--scene", default="bottle", choices=["bottle", "box", "lowtex"])
    sam.set_defaults(func=cmd_sample)

    demo = sub.add_parser("demo", help="reconstruct the built-in sample and open the result")
    demo.add_argument("--dir", default=str(Path.home() / "Vitrine"), help="where to write it")
    demo.add_argument("--no-browser", action="store_true", help="do not open the viewer")
    demo.set_defaults(func=cmd_demo)
    return parser


def _split_window_paths(
    argv: list[str], parser: argparse.ArgumentParser
) -> tuple[list[str], list[str]]:
    """Split off photo folders/files given without a command: ``vitrine FOLDER...``.

    A desktop launcher passes what is dropped on it as plain arguments (``Exec=vitrine %F``);
    they open the window with those photos added, as a drop on the window would. Only when the
    first such argument exists on disk: a mistyped command still gets argparse's message.
    Returns the arguments left for the parser and the paths.
    """
    commands: set[str] = set()
    for action in parser._actions:  # noqa: SLF001 - argparse keeps its subcommands here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            commands.update(action.choices)
    rest: list[str] = []
    paths: list[str] = []
    takes_value = False
    for token in argv:
        if takes_value or token.startswith("-"):
            rest.append(token)
            takes_value = token == "--project"
        elif not paths and (token in commands or not Path(token).exists()):
            return argv, []  # a command (everything after it is the command's), or a typo
        else:
            paths.append(token)
    return rest, paths


def main(argv: list[str] | None = None) -> int:
    """Run the app (no arguments) or a subcommand; return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    argv, paths = _split_window_paths(argv, parser)
    args = parser.parse_args(argv)
    args.paths = paths
    _configure_logging(args.verbose)
    if args.selftest:  # also what a packaged app is checked with (bench/build_bundle.sh)
        from engine.selftest import run_selftest

        return run_selftest()
    if args.command is None:
        if importlib.util.find_spec("gui.app") is not None:
            from gui.app import run_app

            app_argv = ["--project", args.project] if args.project else []
            app_argv += ["--sample"] if args.sample else []
            app_argv += ["--no-sample"] if args.no_sample else []
            return run_app(app_argv + args.paths)
        # Until the desktop window lands, the no-argument start shows the sample reconstruction.
        print("The desktop window is not part of this version yet: showing the sample instead.")
        return cmd_demo(argparse.Namespace(dir=str(Path.home() / "Vitrine"), no_browser=False))
    return args.func(args)


if __name__ == "__main__":
    # the mesh stage runs pycolmap's meshing in a child process; a frozen app must let it start
    multiprocessing.freeze_support()
    sys.exit(main())
