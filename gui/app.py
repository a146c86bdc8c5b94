"""Start the desktop app: the Qt application, the error sink, the main window, the first run.

On the very first start (no project given, none opened before) the app writes the synthetic
sample into ``~/Vitrine/sample`` (``$VITRINE_HOME/sample``) and reconstructs it, so a newcomer
sees a model grow in the window within minutes. Later starts reopen the last project, or the
sample's finished result, without computing anything. On a machine without a CUDA GPU that first
start says the run uses the CPU and about how long the sample takes.

Photo folders or files given as plain arguments (what a desktop launcher passes for a folder
dropped on it, ``Exec=vitrine %F``) are added to a new image set, as a drop on the window would.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QLabel

from engine.device import resolve_device
from engine.errors import InputError
from gui.errors import ErrorSink
from gui.main_window import MainWindow, last_project, sample_folder
from gui.project import Project

logger = logging.getLogger(__name__)

#: The application's style sheet.
STYLE_SHEET = Path(__file__).resolve().parents[1] / "resources" / "style.qss"
#: The application's icon (made by packaging/make_icons.py).
ICON = Path(__file__).resolve().parents[1] / "resources" / "icons" / "vitrine.png"

#: Minutes the first start's sample (writing its 36 photos, then the standard run without a
#: depth network) takes on the CPU of a 2-core machine without a GPU: 261 s and 363 s measured
#: from the installed .deb on a shared, busy machine (bench/BENCHMARKS.md, "Installers").
SAMPLE_CPU_MINUTES = 4


def cpu_notice(device: str) -> str | None:
    """What the first start says about the device: None with a GPU, else the CPU and the time."""
    if device != "cpu":
        return None
    return (
        "No GPU found: the sample runs on the CPU and takes roughly "
        f"{SAMPLE_CPU_MINUTES} minutes (measured on 2 cores; faster with more)."
    )


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the desktop app."""
    parser = argparse.ArgumentParser(prog="vitrine", description="Vitrine desktop app.")
    parser.add_argument("--project", type=Path, help="open this project folder")
    parser.add_argument(
        "--sample", action="store_true", help="open (and if needed reconstruct) the sample"
    )
    parser.add_argument(
        "--no-sample", action="store_true", help="start empty, even on the first start"
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, help="photo folders or files to add to a new image set"
    )
    return parser


def make_application(argv: list[str] | None = None) -> QApplication:
    """The QApplication (the existing one when there is one), named and styled."""
    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else "vitrine", *(argv or [])])
    app.setApplicationName("Vitrine")
    app.setOrganizationName("Vitrine")
    app.setApplicationDisplayName("Vitrine")
    if STYLE_SHEET.is_file():
        app.setStyleSheet(STYLE_SHEET.read_text(encoding="utf-8"))
    if ICON.is_file():
        app.setWindowIcon(QIcon(str(ICON)))
    return app


def start_window(
    argv: list[str] | None = None, sample: bool | None = None
) -> tuple[MainWindow, ErrorSink]:
    """Create the error sink and the main window, show it and schedule the first action.

    Parameters
    ----------
    argv
        App arguments (``--project``, ``--sample``, ``--no-sample``); unknown ones are ignored.
    sample
        True opens the sample, False never does; None decides from the arguments and from
        whether a project was opened before.

    Returns
    -------
    tuple
        ``(window, error sink)``.
    """
    args, _unknown = build_parser().parse_known_args(argv or [])
    errors = ErrorSink()
    errors.install_excepthook()
    window = MainWindow(errors=errors)
    errors.set_parent_window(window)
    window.show()

    # Photos given on the command line go into a new set of a new project (or of --project).
    folder = args.project or (None if args.sample or args.paths else last_project())
    # The sample opens on the first start, and again while its own project is the last one
    # (an interrupted sample run then resumes; a finished one shows without computing).
    auto = True
    if folder is not None:
        try:
            window.set_project(Project.load(folder))
            auto = window.project.folder == sample_folder().resolve()
        except InputError as exc:
            errors.report("Cannot open the project", str(exc))
            auto = False  # no surprise reconstruction behind an error message
    if sample is None:
        sample = args.sample or (auto and not args.no_sample and not args.paths)
    if args.paths:
        QTimer.singleShot(0, lambda: window.add_paths(args.paths))
    if sample:
        if folder is None:  # a first start: say what the CPU means for the wait
            _show_cpu_notice(window)
        # After show(): the window paints first, then the sample starts.
        QTimer.singleShot(0, window.open_sample)
    return window, errors


def _show_cpu_notice(window: MainWindow) -> None:
    """On a machine without a GPU: a status-bar note until the run ends, and a log line."""
    notice = cpu_notice(resolve_device("auto"))
    if notice is None:
        return
    logger.info(notice)  # the window's log panel shows the gui loggers
    label = QLabel(notice)
    label.setObjectName("cpuNotice")
    window.statusBar().addPermanentWidget(label)
    window.cpu_notice = label
    window.run_ended.connect(lambda _outcome: label.hide())


def run_app(argv: list[str] | None = None, sample: bool | None = None) -> int:
    """Run the desktop app until its window closes; returns the exit code.

    Parameters
    ----------
    argv
        App arguments (default ``sys.argv[1:]``): ``--project FOLDER``, ``--sample``,
        ``--no-sample``.
    sample
        Force (True) or prevent (False) opening the sample; None: on the first start only.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    app = make_application()
    window, errors = start_window(argv, sample)
    try:
        return int(app.exec())
    finally:
        errors.uninstall_excepthook()
        del window
