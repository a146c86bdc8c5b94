"""Project files for the window: new, open, save, save as, the last project, the built-in sample.

:class:`ProjectFiles` asks for folders, opens and saves :class:`gui.project.Project` files and
reports what went wrong in words a photographer understands; the window shows the project it
hands over. The sample shoot is written once into ``<home>/sample`` (in a thread, see
:class:`gui.workers.SampleWriter`) and opened as its own project. Vitrine's home folder and the
"last project" record live here too.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QProgressBar

from engine.errors import InputError, OutputError
from engine.export import write_bytes_atomic
from gui.project import MANIFEST, Project
from gui.workers import SampleWriter

if TYPE_CHECKING:
    from gui.main_window import MainWindow

logger = logging.getLogger(__name__)

#: Environment variable naming Vitrine's home folder (default ``~/Vitrine``).
HOME_ENV = "VITRINE_HOME"
#: Name of the sample's image set.
SAMPLE_SET = "Sample bottle"


def vitrine_home() -> Path:
    """Vitrine's own folder: ``$VITRINE_HOME``, else ``~/Vitrine``."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path.home() / "Vitrine"


def sample_folder() -> Path:
    """Where the sample shoot and its project live (``<home>/sample``)."""
    return vitrine_home() / "sample"


def _recent_file() -> Path:
    return vitrine_home() / "recent.json"


def last_project() -> Path | None:
    """The project folder opened or saved last, when it still holds a project."""
    try:
        data = json.loads(_recent_file().read_text(encoding="utf-8"))
        folder = Path(data["last_project"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder if (folder / MANIFEST).is_file() else None


def remember_project(folder: Path) -> None:
    """Record ``folder`` as the last project (best effort: a read-only home is not an error)."""
    path = _recent_file()
    text = json.dumps({"last_project": str(folder)}) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, text.encode("utf-8"))
    except (OSError, OutputError) as exc:
        logger.info("Could not record the last project in %s: %s", path, exc)


class ProjectFiles(QObject):
    """File ▸ New / Open / Save / Save as… and Open sample, for one window.

    Parameters
    ----------
    window
        The window whose project is opened and saved (its status bar, error sink and
        ``set_project``; a run or the catalogue going makes it refuse).

    Attributes
    ----------
    sample_writer
        The thread writing the sample shoot (None when none is writing).
    sample_bar
        How far the sample shoot is written (the window puts it in its status bar).
    """

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.sample_writer: SampleWriter | None = None
        self.sample_bar = QProgressBar()
        self.sample_bar.setMaximumWidth(200)
        self.sample_bar.setFormat("Sample %v/%m")
        self.sample_bar.hide()

    def _status(self, text: str, ms: int = 0) -> None:
        self.window.statusBar().showMessage(text, ms)

    def busy(self, what: str) -> bool:
        """True (and says so) when a run, the sample or the catalogue is going."""
        window = self.window
        if (
            window.worker is not None
            or self.sample_writer is not None
            or window.catalogue_glue.running()
        ):
            self._status(f"Cannot {what} while a run is going: cancel it first.")
            return True
        return False

    def new_project(self) -> None:
        """Start an empty, unsaved project."""
        if self.busy("start a new project"):
            return
        self.save_if_saved()
        self.window.set_project(Project())

    def open_project(self, folder: Path | str | None = None) -> bool:
        """Open a saved project and show its last results; True when opened."""
        if self.busy("open another project"):
            return False
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self.window, "Open a Vitrine project folder")
            if not folder:
                return False
        try:
            project = Project.load(folder)
        except InputError as exc:
            self.window.errors.report("Cannot open the project", str(exc))
            return False
        self.save_if_saved()
        self.window.set_project(project)
        remember_project(project.folder)
        self._status(f"Opened {project.folder}", 5000)
        return True

    def save_project(self) -> bool:
        """Save the project (asks for a folder the first time); True when saved."""
        if not self.window.project.is_saved:
            return self.save_project_as()
        return self.save(None)

    def save_project_as(self, folder: Path | str | None = None) -> bool:
        """Save the project into a new folder; True when saved."""
        if self.window.worker is not None:
            self._status("Save as… is available once the run has ended.")
            return False
        if folder is None:
            folder = QFileDialog.getExistingDirectory(
                self.window, "Save the project in this folder"
            )
            if not folder:
                return False
        return self.save(Path(folder))

    def save(self, folder: Path | None) -> bool:
        """Save the project (into ``folder``, or its own when None); True when saved.

        A failure is reported, saying the project file on disk was left as it was and that
        the changes are still open in the window.
        """
        project = self.window.project
        try:
            manifest = project.save(folder)
        except (OutputError, ValueError) as exc:
            message = str(exc)
            current = project.folder
            if isinstance(exc, OutputError) and current is not None:
                target = Path(folder).resolve() if folder is not None else current
                if (current / MANIFEST).is_file():
                    message += f"\n\nThe project file '{current / MANIFEST}' was left as it was."
                message += (
                    " Your changes are still open in this window: make "
                    f"'{target}' writable (or free some disk space) and save again, or use "
                    "File ▸ Save project as… to save them in another folder."
                )
            self.window.errors.report("Cannot save the project", message)
            return False
        remember_project(manifest.parent)
        self.window.update_title()
        self._status(f"Saved {manifest}", 5000)
        return True

    def save_if_saved(self) -> None:
        """Write the manifest of a project that has a folder (nothing the user made is lost)."""
        project = self.window.project
        if project.is_saved and project.is_modified:
            self.save(None)

    # ================================================================== the sample

    def open_sample(self, start: bool = True) -> None:
        """Write the sample shoot (once), add it as an image set and reconstruct it.

        With an empty, unsaved project the sample's own project (``<home>/sample``) is
        opened: its last result shows at once, and a run starts only if none finished yet.
        """
        window = self.window
        if self.busy("open the sample"):
            return
        photos = sample_folder() / "photos"
        if photos.is_dir() and any(photos.iterdir()):
            self._sample_ready(str(photos), "", start)
            return
        writer = SampleWriter(sample_folder(), self)
        writer.progress.connect(self._on_sample_progress)
        writer.finished.connect(lambda p, err: self._sample_ready(p, err, start))
        self.sample_writer = writer
        self.sample_bar.setRange(0, 36)
        self.sample_bar.setValue(0)
        self.sample_bar.show()
        window.run_button.setEnabled(False)
        self._status(f"Writing the sample photos into {sample_folder()}…")
        writer.start()

    def cancel_sample(self, timeout_s: float) -> None:
        """Stop writing the sample (the window closes) and wait up to ``timeout_s``."""
        writer = self.sample_writer
        if writer is not None:
            writer.cancel()
            writer.thread.join(timeout=timeout_s)

    def _on_sample_progress(self, current: int, total: int) -> None:
        self.sample_bar.setRange(0, max(1, total))
        self.sample_bar.setValue(current)

    def _sample_ready(self, photos: str, error: str, start: bool) -> None:
        window = self.window
        writer, self.sample_writer = self.sample_writer, None
        if writer is not None:
            writer.thread.join(timeout=5)
            writer.deleteLater()
            window.statusBar().clearMessage()
        self.sample_bar.hide()
        window.update_set_info()
        if error == "cancelled" or window.closing:
            return
        if error:
            window.errors.report("Cannot write the sample", error)
            return
        if not window.project.is_saved and not window.project.set_names:
            window.set_project(self._sample_project(photos))
        elif not window.project.has_set(SAMPLE_SET):
            window.project.add_set(SAMPLE_SET)
            window.project.add_paths(SAMPLE_SET, [photos])
        window.select_set(SAMPLE_SET)
        status = window.project.image_set(SAMPLE_SET).last_status
        if start and status != "finished":
            window.start_run(SAMPLE_SET)
        elif status == "finished":
            self._status(
                "The sample's last reconstruction is shown; press Run to compute it again "
                "(finished stages are reused).",
                10000,
            )

    def _sample_project(self, photos: str) -> Project:
        """The sample's own project in ``<home>/sample`` (made and saved the first time)."""
        folder = sample_folder()
        if (folder / MANIFEST).is_file():
            try:
                project = Project.load(folder)
            except InputError as exc:
                logger.warning("Sample project unreadable, making a new one: %s", exc)
                project = Project()
        else:
            project = Project()
        if not project.has_set(SAMPLE_SET):
            project.add_set(SAMPLE_SET)
            project.add_paths(SAMPLE_SET, [photos])
            try:
                project.save(folder)
            except OutputError as exc:
                self.window.errors.report("Cannot save the sample project", str(exc))
        return project
