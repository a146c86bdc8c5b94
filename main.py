"""Vitrine entry point: no arguments start the desktop app; subcommands run the command line.

    python main.py                                   the desktop app
    python main.py reconstruct PHOTOS... --out DIR   photos -> run folder
    python main.py batch CATALOGUE --out SITE        a folder of product folders -> gallery
    python main.py sample DIR                        write a synthetic sample photo set
    python main.py demo                              sample + reconstruction, opens the viewer

This module parses arguments and configures logging; the commands themselves (progress text,
Ctrl-C, exit codes) are in :mod:`engine.cli`, the desktop app in :mod:`gui.app`.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import multiprocessing
import sys
from pathlib import Path

from engine.cli import (  # noqa: F401 - the commands' exit codes, named here for callers
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    cmd_batch,
    cmd_demo,
    cmd_reconstruct,
    cmd_sample,
)
from engine.cli import config_from_args as _config_from_args  # noqa: F401 - tests call it


def _configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # The console shows warnings only; run.log (added per run by the pipeline) gets INFO.
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    import pycolmap  # COLMAP's own (glog) chatter: errors only unless asked for details

    pycolmap.logging.minloglevel = 0 if verbose else 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of at least 1")
    return value


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
