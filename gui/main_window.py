"""The main window: sets and photos left, the 3D view centre, settings, progress and log right.

The window holds the :class:`gui.project.Project`, a :class:`gui.models.CloudModel` the 3D view
subscribes to, a :class:`gui.results.ResultModel` (report and mesh: the mesh in the 3D view, the
dimensions line, the coverage map) and a :class:`gui.models.ProgressModel` the progress panel
subscribes to. It lays out the widgets, builds the menus and connects its collaborators:

- :class:`gui.set_panel.SetPanel` (left): the image sets, their photos, adding photos;
- :class:`gui.view_panel.ViewPanel` (centre): the 3D view and its bar;
- :class:`gui.project_files.ProjectFiles`: new, open, save, the last project, the sample;
- :mod:`gui.dialog_glue`: the mask inspector, "Set scale…" and the catalogue view;
- :class:`gui.run_controller.RunController`: runs (which set runs, its worker, how it ended,
  the live preview's bookkeeping).

The window holds no run state. Double-clicking a photo opens its mask inspector; "Set scale…"
takes a known size or two points picked in the 3D view; both only change the next run's
settings. Closing the window during a run asks first, then cancels and waits for the worker
while the event loop keeps running, so no thread outlives the window.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QApplication,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QWidget,
)

from engine.config import PipelineConfig
from engine.types import Mesh
from gui.about import AboutDialog
from gui.catalogue_view import CatalogueDialog
from gui.dialog_glue import CatalogueGlue, ExportGlue, InspectorGlue, ScaleGlue
from gui.errors import ErrorSink
from gui.export_dialog import ExportDialog
from gui.mask_inspector import MaskInspector
from gui.models import CloudModel, ProgressModel
from gui.project import Project
from gui.project_files import (  # noqa: F401 - the names the app and tests import from here
    HOME_ENV,
    SAMPLE_SET,
    ProjectFiles,
    last_project,
    remember_project,
    sample_folder,
    vitrine_home,
)
from gui.results import ResultModel
from gui.run_controller import CLOSE_WAIT_S, MAX_LISTED, RunController
from gui.run_panel import RunPanel
from gui.scale_dialog import SetScaleDialog
from gui.set_panel import SetPanel
from gui.settings_panel import detect_gpu
from gui.view_panel import ViewPanel
from gui.workers import RunWorker, ThumbnailLoader

logger = logging.getLogger(__name__)

#: Loggers whose records the log panel shows.
LOGGERS = ("engine", "gui", "vitrine")


class MainWindow(QMainWindow):
    """Vitrine's main window.

    Parameters
    ----------
    project
        The project to show; a new, unsaved one when None.
    errors
        The application's error sink; the window makes its own when None.
    gpu_probe
        Finds the GPU's name for the settings panel (tests pass a stub).
    parent
        Parent widget.

    Attributes
    ----------
    confirm
        ``confirm(question) -> bool`` asks the user a yes/no question (a message box);
        replaceable, for tests.
    worker
        The run in progress (None between runs).

    Signals
    -------
    run_ended(str)
        A run ended: ``finished``, ``failed`` or ``cancelled``.
    """

    run_ended = Signal(str)

    def __init__(
        self,
        project: Project | None = None,
        errors: ErrorSink | None = None,
        *,
        gpu_probe: Callable[[], str] | None = detect_gpu,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Vitrine")
        self.resize(1440, 900)
        self.setAcceptDrops(True)
        self.errors = errors if errors is not None else ErrorSink(self, parent=self)
        if errors is None:
            self.errors.set_parent_window(self)
        self.cloud_model = CloudModel(parent=self)
        self.result_model = ResultModel(self)
        self.progress_model = ProgressModel(self)
        self.confirm: Callable[[str], bool] = self._ask
        self._full_draw_points = 0  # the view's point budget outside runs (0: not yet saved)
        self.project: Project = Project()
        self._connected: Project | None = None
        self.closing = False
        """True while the window closes (waiting for a run to stop, then for good)."""
        self.files = ProjectFiles(self)
        self.export_glue = ExportGlue(self)
        self.inspector_glue = InspectorGlue(self)
        self.scale_glue = ScaleGlue(self)
        self.catalogue_glue = CatalogueGlue(self)

        self.runs = RunController(
            lambda: self.project,
            self.run_config,
            self.cloud_model,
            self.result_model,
            self.progress_model,
            self.errors,
            current_set=lambda: self.current_set,
            parent=self,
        )

        self.thumb_loader = ThumbnailLoader(parent=self)
        self._build_ui(gpu_probe)
        self._build_menus()
        self._connect_runs()
        self.log_handler = self.log_panel.follow(LOGGERS, parent=self)
        self.set_project(project if project is not None else Project())

    # ================================================================== building

    def _connect_runs(self) -> None:
        runs = self.runs
        runs.started.connect(self._on_run_started)
        runs.running_changed.connect(self._set_running)
        runs.status.connect(self.statusBar().showMessage)
        runs.panel_status.connect(self.progress_panel.set_status)
        runs.log_line.connect(self.log_panel.append)
        runs.mesh.connect(self._on_mesh)
        runs.refit.connect(self.view.reset_view)
        runs.shown.connect(lambda: self.hint.setVisible(False))
        runs.save_requested.connect(self.save_if_saved)
        runs.mesh_loaded.connect(lambda: self.view.set_display("mesh"))
        runs.ended.connect(self.run_ended)

    def _build_ui(self, gpu_probe: Callable[[], str] | None) -> None:
        # -- left: image sets and thumbnails
        self.set_panel = SetPanel(
            self.thumb_loader,
            self.errors,
            running_set=lambda: self.runs.run_set if self.worker is not None else None,
            max_listed=MAX_LISTED,
        )
        self.set_panel.selected.connect(self._on_set_selected)
        self.set_panel.images_shown.connect(self.update_set_info)
        self.set_panel.status.connect(self.statusBar().showMessage)
        self.thumbs = self.set_panel.thumbs
        self.thumbs.inspect_requested.connect(lambda path: self.inspect_photo(path))

        # -- centre: the 3D view, with a hint while there is nothing to show
        centre = ViewPanel(self.cloud_model, self.result_model)
        self.view_panel = centre
        self.view = centre.view
        self.view.point_picked.connect(self.scale_glue.on_point_picked)
        # Cloud / Mesh and Set scale: one action each, in the View menu and on the view's bar
        self.cloud_action, self.mesh_action = centre.cloud_action, centre.mesh_action
        self.scale_action = centre.scale_action
        self.scale_action.triggered.connect(lambda _c=False: self.show_set_scale())
        self.cloud_button, self.mesh_button = centre.cloud_button, centre.mesh_button
        self.scale_button, self.view_bar = centre.scale_button, centre.view_bar
        self.dimensions_label, self.hint = centre.dimensions_label, centre.hint

        # -- right: settings, run buttons, progress, log
        right = RunPanel(self.progress_model, self.result_model, gpu_probe)
        self.settings, self.progress_panel = right.settings, right.progress_panel
        self.log_panel, self.coverage, self.tabs = right.log_panel, right.coverage, right.tabs
        self.run_button, self.cancel_button = right.run_button, right.cancel_button
        self.export_button = right.export_button
        self.settings.settings_changed.connect(self._on_settings_changed)
        self.run_button.clicked.connect(lambda: self.start_run())
        self.cancel_button.clicked.connect(self.cancel_run)
        self.export_button.clicked.connect(lambda: self.show_export())

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.set_panel)
        self.splitter.addWidget(centre)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([340, 760, 360])
        self.setCentralWidget(self.splitter)

        self.statusBar().addPermanentWidget(self.files.sample_bar)
        self.set_info = QLabel()
        self.statusBar().addPermanentWidget(self.set_info)

    def _build_menus(self) -> None:
        bar = self.menuBar()

        def action(menu, text, slot, shortcut=None, tip=""):  # noqa: ANN001, ANN202
            act = QAction(text, self)
            if shortcut is not None:
                act.setShortcut(QKeySequence(shortcut))
            if tip:
                act.setStatusTip(tip)
            act.triggered.connect(lambda _checked=False: slot())
            menu.addAction(act)
            return act

        file_menu = bar.addMenu("&File")
        action(file_menu, "&New project", self.files.new_project, QKeySequence.StandardKey.New)
        action(file_menu, "&Open project…", self.open_project, QKeySequence.StandardKey.Open)
        action(file_menu, "&Save project", self.save_project, QKeySequence.StandardKey.Save)
        action(file_menu, "Save project &as…", self.save_project_as, "Ctrl+Shift+S")
        file_menu.addSeparator()
        action(file_menu, "Add &folder…", self.set_panel.add_folder_dialog, "Ctrl+Shift+O")
        action(file_menu, "Add &photos…", self.set_panel.add_photos_dialog)
        action(file_menu, "Open &sample", self.open_sample, tip="Reconstruct a sample bottle")
        file_menu.addSeparator()
        self.export_action = action(file_menu, "&Export…", self.show_export, "Ctrl+E")
        file_menu.addSeparator()
        action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        edit_menu = bar.addMenu("&Edit")
        self.paste_action = action(
            edit_menu,
            "&Paste photo paths",
            self.set_panel.paste_paths,
            QKeySequence.StandardKey.Paste,
            "Add the files or folders whose paths are on the clipboard",
        )

        run_menu = bar.addMenu("&Run")
        self.run_action = action(run_menu, "&Run", self.start_run, "Ctrl+R")
        self.cancel_action = action(run_menu, "&Cancel run", self.cancel_run, "Ctrl+.")
        run_menu.addSeparator()
        action(
            run_menu,
            "Run all sets (&catalogue)…",
            self.show_catalogue,
            tip="Run every image set one after another and make the gallery",
        )
        self.cancel_action.setEnabled(False)

        view_menu = bar.addMenu("&View")
        action(view_menu, "&Reset view", self.view.reset_view, "Ctrl+0")
        view_menu.addAction(self.cloud_action)
        view_menu.addAction(self.mesh_action)
        view_menu.addSeparator()
        self.cameras_action = self.view_panel.cameras_action
        view_menu.addAction(self.cameras_action)
        view_menu.addMenu("Point &size").addActions(self.view_panel.point_size_actions)
        action(view_menu, "&Background colour…", self.view_panel.choose_background)
        view_menu.addSeparator()
        view_menu.addAction(self.scale_action)

        help_menu = bar.addMenu("&Help")
        action(help_menu, "Open &sample", self.open_sample)
        action(help_menu, "&About Vitrine", self.show_about)

    # ================================================================== project and sets

    def set_project(self, project: Project) -> None:
        """Show ``project`` (the previous one is let go; an empty unsaved one is discarded)."""
        old = self._connected
        if old is not None and old is not project:
            old.sets_changed.disconnect(self.set_panel.refresh)
            old.set_changed.disconnect(self.set_panel.on_set_changed)
            old.modified_changed.disconnect(self.update_title)
            if not old.is_saved and not old.set_names:
                old.discard()
        self._connected = project
        self.project = project
        if old is not project:
            project.sets_changed.connect(self.set_panel.refresh)
            project.set_changed.connect(self.set_panel.on_set_changed)
            project.modified_changed.connect(self.update_title)
        self.cloud_model.clear()
        self.result_model.clear()
        self.progress_model.reset()
        self.progress_panel.set_status("")
        self.set_panel.set_project(project)
        if project.set_names:
            self.select_set(project.set_names[0])
        self.update_title()

    @property
    def current_set(self) -> str | None:
        """Name of the selected image set (None when there is none)."""
        return self.set_panel.current_set

    def select_set(self, name: str) -> None:
        """Select the image set called ``name``."""
        self.set_panel.select_set(name)

    def new_set(self, name: str | None = None) -> str:
        """Add an empty image set, select it and return its name."""
        return self.set_panel.new_set(name)

    def _on_set_selected(self, name: str | None) -> None:
        if name is None:
            self.settings.load(None)
            self.set_panel.clear_images()
            if self.worker is None:
                self.cloud_model.clear()
                self.result_model.clear()
            return
        self.settings.load(self.project.image_set(name))
        self.set_panel.show_images(name)
        if self.worker is None:
            self.show_last_result(name)

    def update_set_info(self) -> None:
        """The selected set's photo counts, and which actions its photos allow."""
        name = self.current_set
        n, left_out = self.set_panel.photo_counts()
        if name is None:
            self.set_info.setText("No image set")
        else:
            text = f"{name}: {n} photos" + (f", {left_out} left out" if left_out else "")
            self.set_info.setText(text)
        has_images = n > 0
        self.hint.setVisible(not has_images and len(self.cloud_model) == 0)
        self.scale_action.setEnabled(name is not None)
        self.run_button.setEnabled(self.worker is None and has_images)
        self.run_action.setEnabled(self.worker is None and has_images)

    def show_last_result(self, name: str) -> None:
        """Show what the set's last run left in its run folder (nothing is computed)."""
        self.runs.show_last_result(name)
        self.update_set_info()

    def _on_settings_changed(self) -> None:
        name = self.current_set
        if name is not None:
            self.project.update_set(name, **self.settings.values())

    def update_title(self, *_args: object) -> None:
        """The title: the project folder's name (or "Untitled project"), * when modified."""
        folder = self.project.folder
        name = folder.name if folder is not None else "Untitled project"
        star = "*" if self.project.is_modified else ""
        self.setWindowTitle(f"{name}{star} — Vitrine")

    # ================================================================== files and photos

    def open_project(self, folder: Path | str | None = None) -> bool:
        """Open a saved project and show its last results; True when opened."""
        return self.files.open_project(folder)

    def save_project(self) -> bool:
        """Save the project (asks for a folder the first time); True when saved."""
        return self.files.save_project()

    def save_project_as(self, folder: Path | str | None = None) -> bool:
        """Save the project into a new folder; True when saved."""
        return self.files.save_project_as(folder)

    def save_if_saved(self) -> None:
        """Write the manifest of a project that has a folder (nothing the user made is lost)."""
        self.files.save_if_saved()

    def open_sample(self, start: bool = True) -> None:
        """Write the sample shoot (once), add it as an image set and reconstruct it."""
        self.files.open_sample(start)

    def add_paths(self, paths: list[Path | str], set_name: str | None = None) -> list[str]:
        """Add photos and/or folders to a set (see :meth:`gui.set_panel.SetPanel.add_paths`)."""
        return self.set_panel.add_paths(paths, set_name)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: D102 - Qt override
        self.set_panel.drag_enter(event)

    def dragMoveEvent(self, event) -> None:  # noqa: ANN001, D102 - Qt override
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: D102 - Qt override
        self.set_panel.drop(event)

    # ================================================================== runs

    def start_run(self, set_name: str | None = None) -> bool:
        """Reconstruct a set (default: the selected one) in a worker thread; True if started.

        A set run before resumes from its last finished stage (the engine skips stages done
        with the same photos and settings). See :meth:`gui.run_controller.RunController.start`.
        """
        if self.catalogue_glue.running():
            self.statusBar().showMessage("A run is already going: the catalogue is running.")
            return False
        return self.runs.start(set_name or self.current_set)

    @property
    def worker(self) -> RunWorker | None:
        """The run in progress (None between runs)."""
        return self.runs.worker

    @worker.setter
    def worker(self, worker: RunWorker | None) -> None:
        self.runs.worker = worker

    @property
    def snapshot_counts(self) -> Counter[str]:
        """Live snapshots received in the current run, by kind."""
        return self.runs.snapshot_counts

    def _on_run_started(self, name: str) -> None:
        if name != self.current_set:
            self.select_set(name)

    def run_config(self, name: str | None = None) -> PipelineConfig:
        """The configuration a run of a set (default: the selected one) gets now.

        The settings panel's preset, device and depth network (the set's own when it is not
        the selected one), with the set's masks (automatic on/off, switched-off and painted
        masks) and scale (marker size, known size or distance).

        Raises
        ------
        KeyError
            When there is no such set.
        OutputError
            When a painted mask cannot be renamed for the run.
        """
        name = name or self.current_set
        if name is None:
            raise KeyError("No image set is selected.")
        base = self.settings.config() if name == self.current_set else None
        return self.project.config_for_run(name, base)

    def cancel_run(self) -> None:
        """Ask the run to stop (returns at once; the run ends at its next check)."""
        if self.runs.cancel():
            self.cancel_button.setEnabled(False)
            self.cancel_action.setEnabled(False)

    def _set_running(self, running: bool) -> None:
        # While the run computes, draw only what fits a short frame (software OpenGL on the
        # cores that compute stalled the window 270-330 ms per frame); everything after.
        if running:
            self._full_draw_points = self.view.max_draw_points
            self.view.max_draw_points = min(self._full_draw_points, self.view.live_budget())
        elif self._full_draw_points:
            self.view.max_draw_points = self._full_draw_points
        self.cancel_button.setEnabled(running)
        self.cancel_action.setEnabled(running)
        self.export_button.setEnabled(not running)
        self.export_action.setEnabled(not running)
        self.update_set_info()

    def _on_mesh(self, mesh: Mesh) -> None:
        self.result_model.set_mesh(mesh)
        if self.result_model.mesh is not None:
            self.view.set_display("mesh")
            self.hint.setVisible(False)

    # ================================================================== dialogs

    def show_export(self) -> ExportDialog | None:
        """File ▸ Export…: the selected set's exportable files."""
        return self.export_glue.show_export()

    @property
    def export_dialog(self) -> ExportDialog | None:
        """The export dialog open now (None before the first)."""
        return self.export_glue.dialog

    def inspect_photo(self, path: str | Path) -> MaskInspector | None:
        """Open the mask inspector of a photo of the selected set (double-click on a thumbnail)."""
        return self.inspector_glue.inspect_photo(path)

    def show_set_scale(self) -> SetScaleDialog | None:
        """View ▸ Set scale…: a known product size, or two picked points and their distance."""
        return self.scale_glue.show_set_scale()

    @property
    def scale_dialog(self) -> SetScaleDialog | None:
        """The scale dialog open now (None before the first)."""
        return self.scale_glue.dialog

    def show_catalogue(self) -> CatalogueDialog:
        """The catalogue view: all image sets run one after another, the gallery."""
        return self.catalogue_glue.show_catalogue()

    def show_about(self) -> AboutDialog:
        """Help ▸ About."""
        dialog = AboutDialog(self)
        dialog.open()
        return dialog

    def _ask(self, question: str) -> bool:
        answer = QMessageBox.question(
            self,
            "Vitrine",
            question,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    # ================================================================== closing

    def wait_for_run(self, timeout_s: float = CLOSE_WAIT_S) -> bool:
        """Process events until the run's thread has ended (or ``timeout_s``); True if ended."""
        return self.runs.wait(timeout_s)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: D102 - Qt override
        if self.closing:
            event.ignore()  # already closing: waiting for the run to stop
            return
        if self.worker is not None and self.worker.is_running():
            if not self.confirm("A reconstruction is running. Cancel it and quit?"):
                event.ignore()
                return
            self.closing = True
            self.cancel_run()
            stopped = self.runs.stop_for_close(CLOSE_WAIT_S)
            self.closing = False
            if not stopped:
                event.ignore()
                return
        if not self.catalogue_glue.stop_for_close(CLOSE_WAIT_S):
            event.ignore()
            return
        self.closing = True
        self.files.cancel_sample(CLOSE_WAIT_S)
        self.thumb_loader.cancel()
        self.thumb_loader.wait(5000)
        self.save_if_saved()
        self.log_panel.unfollow(self.log_handler, LOGGERS)
        glues = (self.export_glue, self.inspector_glue, self.scale_glue, self.catalogue_glue)
        for dialog in (glue.dialog for glue in glues):
            if dialog is not None:
                dialog.close()
        event.accept()
        app = QApplication.instance()
        if app is not None:
            for widget in app.topLevelWidgets():
                if isinstance(widget, QMessageBox) and widget.parent() is self:
                    widget.close()
