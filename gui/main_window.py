"""The main window: sets and photos left, the 3D view centre, settings, progress and log right.

The window holds the :class:`gui.project.Project`, a :class:`gui.models.CloudModel` the 3D view
subscribes to, a :class:`gui.results.ResultModel` (report and mesh: the mesh in the 3D view, the
dimensions line, the coverage map) and a :class:`gui.models.ProgressModel` the progress panel
subscribes to. Double-clicking a photo opens its mask inspector; "Set scale…" takes a known size
or two points picked in the 3D view; both only change the next run's settings. Runs belong to
a :class:`gui.run_controller.RunController` (which set runs, its worker, how it ended, the live
preview's bookkeeping); the window holds no run state, only lays out the widgets and connects
them. Closing the window during a run asks first, then cancels and waits for the worker while
the event loop keeps running, so no thread outlives the window.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import (
    QEvent,
    QMimeData,
    QObject,
    QSize,
    Qt,
    QUrl,
    Signal,
)
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QApplication,
    QColorDialog,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.config import PipelineConfig
from engine.errors import InputError, OutputError
from engine.export import write_bytes_atomic
from engine.io import ImageReadError
from engine.types import Mesh, PointCloud
from gui.about import AboutDialog
from gui.catalogue_view import CatalogueDialog
from gui.coverage_widget import CoverageWidget
from gui.errors import ErrorSink, QtLogHandler
from gui.export_dialog import ExportDialog
from gui.log_panel import LogPanel, PanelFormatter
from gui.mask_inspector import MaskInspector, load_photo_and_mask, read_mask
from gui.models import CloudModel, ProgressModel
from gui.progress_panel import ProgressPanel
from gui.project import MANIFEST, Project, Screening, screen_paths
from gui.results import ResultModel, mask_failures, masks_disagreeing, metres_per_unit
from gui.run_controller import CLOSE_WAIT_S, MAX_LISTED, RunController
from gui.scale_dialog import SetScaleDialog
from gui.settings_panel import SettingsPanel, detect_gpu
from gui.thumbnails import ThumbnailGrid
from gui.view3d import PointCloudView
from gui.workers import RunWorker, SampleWriter, ThumbnailLoader

logger = logging.getLogger(__name__)

#: Environment variable naming Vitrine's home folder (default ``~/Vitrine``).
HOME_ENV = "VITRINE_HOME"
#: Name of the sample's image set.
SAMPLE_SET = "Sample bottle"
#: Loggers whose records the log panel shows.
LOGGERS = ("engine", "gui", "vitrine")


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


def paths_from_mime(mime: QMimeData) -> tuple[list[Path], list[str]]:
    """Local paths in dropped or pasted data: file URLs, or text with one path per line.

    Returns
    -------
    tuple
        ``(existing paths, entries that are not existing local paths)``.
    """
    entries: list[str] = []
    if mime.hasUrls():
        for url in mime.urls():
            entries.append(url.toLocalFile() if url.isLocalFile() else url.toString())
    elif mime.hasText():
        for line in mime.text().splitlines():
            line = line.strip().strip('"').strip("'")
            if not line:
                continue
            if line.startswith("file:"):
                line = QUrl(line).toLocalFile()
            entries.append(line)
    found, missing = [], []
    for entry in entries:
        path = Path(entry).expanduser() if entry else None
        if path is not None and entry and path.exists():
            found.append(path)
        else:
            missing.append(entry)
    return found, missing


class _FitScrollArea(QScrollArea):
    """A scroll area that asks for all of its content's height: it scrolls only when short of room.

    QScrollArea caches its content's size hint and does not hear of its layout changes (a hint
    line that wraps once the GPU is known): the hint is the content's current one here.
    """

    def sizeHint(self) -> QSize:  # noqa: D102 - Qt override
        content = self.widget()
        if content is None:
            return super().sizeHint()
        frame = 2 * self.frameWidth()
        return content.sizeHint() + QSize(frame, frame)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: D102 - Qt override
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)


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
        self.export_dialog: ExportDialog | None = None
        self.inspector: MaskInspector | None = None
        self.scale_dialog: SetScaleDialog | None = None
        self.catalogue_dialog: CatalogueDialog | None = None
        self.sample_writer: SampleWriter | None = None
        self.last_screening: Screening | None = None
        self._closing = False
        self._start_after_sample = False

        self.runs = RunController(
            lambda: self.project,
            self.run_config,
            self.cloud_model,
            self.result_model,
            self.progress_model,
            self.errors,
            show_run_folder=self._show_run_folder,
            current_set=lambda: self.current_set,
            parent=self,
        )

        self.thumb_loader = ThumbnailLoader(parent=self)
        self._build_ui(gpu_probe)
        self._build_menus()
        self._connect_runs()
        self.log_handler = QtLogHandler(parent=self)
        self.log_handler.setFormatter(PanelFormatter())
        self.log_handler.record.connect(self.log_panel.append)
        for name in LOGGERS:
            logging.getLogger(name).addHandler(self.log_handler)
        if logging.getLogger("gui").level == logging.NOTSET:
            logging.getLogger("gui").setLevel(logging.INFO)
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
        runs.save_requested.connect(self._save_if_saved)
        runs.ended.connect(self.run_ended)

    def _build_ui(self, gpu_probe: Callable[[], str] | None) -> None:
        # -- left: image sets and thumbnails
        self.set_list = QListWidget()
        self.set_list.setObjectName("setList")
        self.set_list.setMaximumHeight(150)
        self.set_list.currentRowChanged.connect(self._on_set_selected)
        self.set_list.itemChanged.connect(self._on_set_item_edited)
        add_set = QToolButton(text="+", toolTip="New image set (one product)")
        add_set.clicked.connect(lambda: self.new_set())
        remove_set = QToolButton(text="−", toolTip="Remove the image set (results are kept)")
        remove_set.clicked.connect(lambda: self.remove_set())
        rename_set = QToolButton(text="Rename…", toolTip="Rename the image set")
        rename_set.clicked.connect(lambda: self.rename_set())
        set_buttons = QHBoxLayout()
        set_buttons.addWidget(QLabel("<b>Image sets</b>"))
        set_buttons.addStretch(1)
        for button in (add_set, remove_set, rename_set):
            set_buttons.addWidget(button)

        self.thumbs = ThumbnailGrid(self.thumb_loader)
        self.thumbs.exclusion_requested.connect(self._on_exclusion_requested)
        self.thumbs.inspect_requested.connect(lambda path: self.inspect_photo(path))
        self.photos_label = QLabel("Photos")
        self.photos_label.setObjectName("hint")
        add_folder = QPushButton("Add folder…")
        add_folder.clicked.connect(lambda: self.add_folder_dialog())
        add_photos = QPushButton("Add photos…")
        add_photos.clicked.connect(lambda: self.add_photos_dialog())
        add_row = QHBoxLayout()
        add_row.addWidget(add_folder)
        add_row.addWidget(add_photos)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(6, 6, 0, 6)
        left_layout.addLayout(set_buttons)
        left_layout.addWidget(self.set_list)
        left_layout.addWidget(self.photos_label)
        left_layout.addWidget(self.thumbs, 1)
        left_layout.addLayout(add_row)

        # -- centre: the 3D view, with a hint while there is nothing to show
        self.view = PointCloudView(self.cloud_model, results=self.result_model)
        self.view.point_picked.connect(self._on_point_picked)
        self.view.display_changed.connect(lambda _mode: self._sync_display_controls())
        # Cloud / Mesh and Set scale: one action each, in the View menu and on the view's bar
        display = QActionGroup(self)
        self.cloud_action = QAction("Point c&loud", self, checkable=True, checked=True)
        self.cloud_action.setShortcut(QKeySequence("Ctrl+1"))
        self.cloud_action.setToolTip("Show the point cloud (Ctrl+1)")
        self.cloud_action.triggered.connect(lambda _c=False: self.view.set_display("cloud"))
        self.mesh_action = QAction("&Mesh", self, checkable=True)
        self.mesh_action.setShortcut(QKeySequence("Ctrl+2"))
        self.mesh_action.setToolTip("Show the mesh, once a run has built one (Ctrl+2)")
        self.mesh_action.triggered.connect(lambda _c=False: self.view.set_display("mesh"))
        for act in (self.cloud_action, self.mesh_action):
            display.addAction(act)
        self.scale_action = QAction("Set &scale…", self)
        self.scale_action.setToolTip(
            "Give a size of the product you know, or the distance between two points"
        )
        self.scale_action.triggered.connect(lambda _c=False: self.show_set_scale())
        self.dimensions_label = QLabel()
        self.dimensions_label.setObjectName("dimensions")
        # may shrink below its text (the full line is in the tooltip), and fills the bar
        self.dimensions_label.setSizePolicy(
            QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred
        )
        self.dimensions_label.setMinimumWidth(10)
        self.dimensions_label.setContentsMargins(12, 0, 6, 0)
        view_bar = QToolBar("View")
        view_bar.setObjectName("viewBar")
        view_bar.setMovable(False)
        view_bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        view_bar.addAction(self.cloud_action)
        view_bar.addAction(self.mesh_action)
        view_bar.addWidget(self.dimensions_label)
        view_bar.addAction(self.scale_action)
        self.view_bar = view_bar
        self.cloud_button = view_bar.widgetForAction(self.cloud_action)
        self.mesh_button = view_bar.widgetForAction(self.mesh_action)
        self.scale_button = view_bar.widgetForAction(self.scale_action)
        self.result_model.report_changed.connect(self._on_report_changed)
        self.result_model.mesh_changed.connect(self._sync_display_controls)
        self.hint = QLabel(
            "Drop a folder of product photos here, paste their paths (Ctrl+V), or use "
            "File ▸ Add folder…  —  File ▸ Open sample shows a reconstruction in minutes."
        )
        self.hint.setObjectName("dropHint")
        self.hint.setWordWrap(True)
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        centre = QWidget()
        centre_layout = QVBoxLayout(centre)
        centre_layout.setContentsMargins(0, 6, 0, 6)
        centre_layout.addWidget(view_bar)
        centre_layout.addWidget(self.hint)
        centre_layout.addWidget(self.view, 1)

        # -- right: settings, run buttons, progress, log
        self.settings = SettingsPanel(gpu_probe=gpu_probe)
        self.settings.settings_changed.connect(self._on_settings_changed)
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("runButton")
        self.run_button.setToolTip("Reconstruct the selected image set (Ctrl+R)")
        self.run_button.clicked.connect(lambda: self.start_run())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_run)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(lambda: self.show_export())
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button, 2)
        run_row.addWidget(self.cancel_button, 1)
        run_row.addWidget(self.export_button, 1)
        self.progress_panel = ProgressPanel(self.progress_model)
        self.log_panel = LogPanel()
        self.coverage = CoverageWidget(self.result_model)

        settings_box = QGroupBox("Settings")
        QVBoxLayout(settings_box).addWidget(self.settings)
        progress_box = QGroupBox("Progress")
        QVBoxLayout(progress_box).addWidget(self.progress_panel)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.log_panel, "Log")
        coverage_scroll = QScrollArea()
        coverage_scroll.setWidget(self.coverage)
        coverage_scroll.setWidgetResizable(True)
        coverage_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.tabs.addTab(coverage_scroll, "Coverage && advice")
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 6, 6, 6)
        # the settings scroll on a short screen; the run buttons stay in sight
        settings_scroll = _FitScrollArea()
        settings_scroll.setWidget(settings_box)
        settings_scroll.setWidgetResizable(True)
        settings_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        settings_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        settings_scroll.setMinimumHeight(80)
        settings_scroll.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        settings_scroll.setMinimumWidth(settings_box.minimumSizeHint().width())
        right_layout.addWidget(settings_scroll)
        right_layout.addLayout(run_row)
        right_layout.addWidget(progress_box)
        right_layout.addWidget(self.tabs, 1)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(centre)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([340, 760, 360])
        self.setCentralWidget(self.splitter)

        self.sample_bar = QProgressBar()
        self.sample_bar.setMaximumWidth(200)
        self.sample_bar.setFormat("Sample %v/%m")
        self.sample_bar.hide()
        self.statusBar().addPermanentWidget(self.sample_bar)
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
        action(file_menu, "&New project", self.new_project, QKeySequence.StandardKey.New)
        action(file_menu, "&Open project…", self.open_project, QKeySequence.StandardKey.Open)
        action(file_menu, "&Save project", self.save_project, QKeySequence.StandardKey.Save)
        action(file_menu, "Save project &as…", self.save_project_as, "Ctrl+Shift+S")
        file_menu.addSeparator()
        action(file_menu, "Add &folder…", self.add_folder_dialog, "Ctrl+Shift+O")
        action(file_menu, "Add &photos…", self.add_photos_dialog)
        action(file_menu, "Open &sample", self.open_sample, tip="Reconstruct a sample bottle")
        file_menu.addSeparator()
        self.export_action = action(file_menu, "&Export…", self.show_export, "Ctrl+E")
        file_menu.addSeparator()
        action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        edit_menu = bar.addMenu("&Edit")
        self.paste_action = action(
            edit_menu,
            "&Paste photo paths",
            self.paste_paths,
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
        self.cameras_action = QAction("Show &cameras", self, checkable=True, checked=True)
        self.cameras_action.toggled.connect(self.view.set_cameras_visible)
        view_menu.addAction(self.cameras_action)
        size_menu = view_menu.addMenu("Point &size")
        group = QActionGroup(self)
        for px in (1, 2, 3, 4, 6):
            act = QAction(f"{px} px", self, checkable=True)
            act.setChecked(px == round(self.view.point_size))
            act.triggered.connect(lambda _c=False, px=px: self.view.set_point_size(px))
            group.addAction(act)
            size_menu.addAction(act)
        action(view_menu, "&Background colour…", self.choose_background)
        view_menu.addSeparator()
        view_menu.addAction(self.scale_action)

        help_menu = bar.addMenu("&Help")
        action(help_menu, "Open &sample", self.open_sample)
        action(help_menu, "&About Vitrine", self.show_about)

    # ================================================================== project

    def set_project(self, project: Project) -> None:
        """Show ``project`` (the previous one is let go; an empty unsaved one is discarded)."""
        old = self._connected
        if old is not None and old is not project:
            old.sets_changed.disconnect(self._refresh_set_list)
            old.set_changed.disconnect(self._on_set_changed)
            old.modified_changed.disconnect(self._update_title)
            if not old.is_saved and not old.set_names:
                old.discard()
        self._connected = project
        self.project = project
        if old is not project:
            project.sets_changed.connect(self._refresh_set_list)
            project.set_changed.connect(self._on_set_changed)
            project.modified_changed.connect(self._update_title)
        self.cloud_model.clear()
        self.result_model.clear()
        self.progress_model.reset()
        self.progress_panel.set_status("")
        self._refresh_set_list()
        if project.set_names:
            self.select_set(project.set_names[0])
        else:
            self._on_set_selected(-1)
        self._update_title()

    @property
    def current_set(self) -> str | None:
        """Name of the selected image set (None when there is none)."""
        item = self.set_list.currentItem()
        if item is None:
            return None
        name = item.data(Qt.ItemDataRole.UserRole)
        return name if self.project.has_set(name) else None

    def select_set(self, name: str) -> None:
        """Select the image set called ``name``."""
        for row in range(self.set_list.count()):
            if self.set_list.item(row).data(Qt.ItemDataRole.UserRole) == name:
                self.set_list.setCurrentRow(row)
                return

    def new_set(self, name: str | None = None) -> str:
        """Add an empty image set, select it and return its name."""
        image_set = self.project.add_set(name or "Product")
        self.select_set(image_set.name)
        return image_set.name

    def remove_set(self, name: str | None = None) -> None:
        """Remove an image set (its results stay on disk)."""
        name = name or self.current_set
        if name is None:
            return
        if self.worker is not None and name == self.runs.run_set:
            self.statusBar().showMessage("This set is being reconstructed: cancel the run first.")
            return
        self.project.remove_set(name)

    def rename_set(self, new: str | None = None, old: str | None = None) -> bool:
        """Rename a set (asks for the name when ``new`` is None); True when renamed."""
        old = old or self.current_set
        if old is None:
            return False
        if new is None:
            new, ok = QInputDialog.getText(self, "Rename image set", "Name:", text=old)
            if not ok:
                return False
        if self.worker is not None and old == self.runs.run_set:
            self.statusBar().showMessage("This set is being reconstructed: rename it afterwards.")
            self._refresh_set_list()
            return False
        try:
            self.project.rename(old, new)
        except ValueError as exc:
            self.statusBar().showMessage(str(exc), 8000)
            self._refresh_set_list()
            return False
        self.select_set(new.strip())
        return True

    def _refresh_set_list(self) -> None:
        current = self.current_set
        self.set_list.blockSignals(True)
        try:
            self.set_list.clear()
            for image_set in self.project.sets:
                item = QListWidgetItem(image_set.name)
                item.setData(Qt.ItemDataRole.UserRole, image_set.name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                item.setToolTip(self._set_tooltip(image_set))
                self.set_list.addItem(item)
        finally:
            self.set_list.blockSignals(False)
        names = self.project.set_names
        if current in names:
            self.select_set(current)
        elif names:
            self.select_set(names[0])
        else:
            self._on_set_selected(-1)

    @staticmethod
    def _set_tooltip(image_set) -> str:  # noqa: ANN001 - gui.project.ImageSet
        text = f"Last run: {image_set.last_status}"
        if image_set.last_message:
            text += f" — {image_set.last_message}"
        return text

    def _on_set_item_edited(self, item: QListWidgetItem) -> None:
        old = item.data(Qt.ItemDataRole.UserRole)
        if item.text() != old:
            self.rename_set(item.text(), old)

    def _on_set_selected(self, _row: int) -> None:
        name = self.current_set
        if name is None:
            self.settings.load(None)
            self.thumbs.clear_images()
            self._update_set_info()
            if self.worker is None:
                self.cloud_model.clear()
                self.result_model.clear()
            return
        self.settings.load(self.project.image_set(name))
        self._show_images(name)
        if self.worker is None:
            self.show_last_result(name)

    def _on_set_changed(self, name: str) -> None:
        for row in range(self.set_list.count()):
            item = self.set_list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == name:
                item.setToolTip(self._set_tooltip(self.project.image_set(name)))
        if name == self.current_set:
            self._show_images(name)

    def _show_images(self, name: str) -> None:
        files = self.project.image_files(name)
        excluded = set(self.project.image_set(name).excluded)
        self.thumbs.show_images(files, excluded, self.project.image_status(name))
        self.thumbs.set_mask_states(self.project.mask_states(name))
        self._update_set_info()

    def _update_set_info(self) -> None:
        name = self.current_set
        has_images = False
        if name is None:
            self.set_info.setText("No image set")
            self.photos_label.setText("Photos — drop a folder here to start")
        else:
            image_set = self.project.image_set(name)
            n = len(self.thumbs.paths())
            left_out = sum(1 for p in self.thumbs.paths() if p in image_set.excluded)
            has_images = n > 0
            text = f"{name}: {n} photos" + (f", {left_out} left out" if left_out else "")
            self.set_info.setText(text)
            self.photos_label.setText(
                f"Photos ({n})" + (f" — {left_out} left out" if left_out else "")
                if n
                else "Photos — drop a folder or photos here"
            )
        self.hint.setVisible(not has_images and len(self.cloud_model) == 0)
        self.scale_action.setEnabled(name is not None)
        self.run_button.setEnabled(self.worker is None and has_images)
        self.run_action.setEnabled(self.worker is None and has_images)

    def show_last_result(self, name: str) -> None:
        """Show what the set's last run left in its run folder (nothing is computed)."""
        self._show_run_folder(name)
        image_set = self.project.image_set(name)
        self.progress_model.reset()
        if image_set.last_status != "new":
            status = f"Last run {image_set.last_status}"
            if image_set.last_message:
                status += f": {image_set.last_message}"
            self.progress_panel.set_status(status)
        else:
            self.progress_panel.set_status("")
        self._update_set_info()

    def _show_run_folder(self, name: str) -> bool:
        """Put the cloud, cameras, report and mesh of the set's run folder on show.

        Returns
        -------
        bool
            Whether there was a cloud or a mesh to show.
        """
        cloud, cameras, kind, report = self.project.last_result(name)
        if cloud is not None:
            self.cloud_model.set_cloud(cloud, cameras, kind or "cloud")
        else:
            self.cloud_model.set_cloud(PointCloud.empty(), cameras, "none")
        self.result_model.set_report(report)
        mesh = self.project.last_mesh(name)
        self.result_model.set_mesh(mesh)
        if mesh is not None:
            self.view.set_display("mesh")
        return (cloud is not None and len(cloud) > 0) or mesh is not None

    def _on_settings_changed(self) -> None:
        name = self.current_set
        if name is not None:
            self.project.update_set(name, **self.settings.values())

    def _update_title(self, *_args: object) -> None:
        folder = self.project.folder
        name = folder.name if folder is not None else "Untitled project"
        star = "*" if self.project.is_modified else ""
        self.setWindowTitle(f"{name}{star} — Vitrine")

    def _busy(self, what: str) -> bool:
        if self.worker is not None or self.sample_writer is not None or self._catalogue_running():
            self.statusBar().showMessage(f"Cannot {what} while a run is going: cancel it first.")
            return True
        return False

    def _catalogue_running(self) -> bool:
        return self.catalogue_dialog is not None and self.catalogue_dialog.is_running()

    def show_catalogue(self) -> CatalogueDialog:
        """The catalogue view: all image sets run one after another, the gallery."""
        dialog = self.catalogue_dialog
        if dialog is None or (dialog.project is not self.project and not dialog.is_running()):
            if dialog is not None:
                dialog.close()
            dialog = CatalogueDialog(
                self.project,
                self.run_config,
                vitrine_home(),
                busy=lambda: (
                    "A run is going in the main window: wait for it or cancel it."
                    if self.worker is not None or self.sample_writer is not None
                    else ""
                ),
                parent=self,
            )
            dialog.set_finished.connect(self._on_catalogue_set)
            dialog.running_changed.connect(lambda on: self.run_action.setEnabled(not on))
            self.catalogue_dialog = dialog
        else:
            dialog.refresh()
        dialog.show()
        dialog.raise_()
        return dialog

    def _on_catalogue_set(self, name: str, status: str, message: str) -> None:
        if not self.project.has_set(name):
            return
        self.project.update_set(name, last_status=status, last_message=message)
        self._save_if_saved()
        self.log_panel.append("INFO" if status == "finished" else "WARNING", f"— {name}: {message}")
        if name == self.current_set:
            self.show_last_result(name)

    def new_project(self) -> None:
        """Start an empty, unsaved project."""
        if self._busy("start a new project"):
            return
        self._save_if_saved()
        self.set_project(Project())

    def open_project(self, folder: Path | str | None = None) -> bool:
        """Open a saved project and show its last results; True when opened."""
        if self._busy("open another project"):
            return False
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Open a Vitrine project folder")
            if not folder:
                return False
        try:
            project = Project.load(folder)
        except InputError as exc:
            self.errors.report("Cannot open the project", str(exc))
            return False
        self._save_if_saved()
        self.set_project(project)
        remember_project(project.folder)
        self.statusBar().showMessage(f"Opened {project.folder}", 5000)
        return True

    def save_project(self) -> bool:
        """Save the project (asks for a folder the first time); True when saved."""
        if not self.project.is_saved:
            return self.save_project_as()
        return self._save(None)

    def save_project_as(self, folder: Path | str | None = None) -> bool:
        """Save the project into a new folder; True when saved."""
        if self.worker is not None:
            self.statusBar().showMessage("Save as… is available once the run has ended.")
            return False
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save the project in this folder")
            if not folder:
                return False
        return self._save(Path(folder))

    def _save(self, folder: Path | None) -> bool:
        try:
            manifest = self.project.save(folder)
        except (OutputError, ValueError) as exc:
            message = str(exc)
            current = self.project.folder
            if isinstance(exc, OutputError) and current is not None:
                target = Path(folder).resolve() if folder is not None else current
                if (current / MANIFEST).is_file():
                    message += f"\n\nThe project file '{current / MANIFEST}' was left as it was."
                message += (
                    " Your changes are still open in this window: make "
                    f"'{target}' writable (or free some disk space) and save again, or use "
                    "File ▸ Save project as… to save them in another folder."
                )
            self.errors.report("Cannot save the project", message)
            return False
        remember_project(manifest.parent)
        self._update_title()
        self.statusBar().showMessage(f"Saved {manifest}", 5000)
        return True

    def _save_if_saved(self) -> None:
        """Write the manifest of a project that has a folder (nothing the user made is lost)."""
        if self.project.is_saved and self.project.is_modified:
            self._save(None)

    # ================================================================== adding photos

    def add_paths(self, paths: list[Path | str], set_name: str | None = None) -> list[str]:
        """Add photo files and/or folders to a set (a new set named after them if none).

        Each path is screened first (:func:`gui.project.screen_paths`): missing paths, files
        that are not photos, damaged photos and folders without photos are not added, and a
        non-modal message lists them with the reason and what to do; so are damaged files
        inside the folders added (a run skips them). No set is made when nothing is added.

        Returns
        -------
        list of str
            The sources added.
        """
        paths = [Path(p) for p in paths]
        if not paths:
            return []
        screening = screen_paths(paths)
        self.last_screening = screening
        name = set_name or self.current_set
        added: list[str] = []
        if screening.sources:
            if name is None:
                first = Path(screening.sources[0])
                base = first.name if first.is_dir() else first.parent.name
                if base.lower() in {"images", "photos", "jpg", "raw"} and first.parent.name:
                    base = (first if first.is_dir() else first.parent).parent.name
                name = self.new_set(base.replace("_", " ") or "Product")
            try:
                added = self.project.add_paths(name, screening.sources)
            except InputError as exc:  # a path vanished since it was screened
                self.errors.report("Cannot add these photos", str(exc))
                return []
            self.select_set(name)
            n = len(self.project.image_files(name))
            self.statusBar().showMessage(
                f"Added {len(added)} item(s) to '{name}': {n} photos in the set."
                if added
                else "These photos are already in the set.",
                6000,
            )
        if screening.refused or screening.skipped:
            self._report_screening(screening, name if screening.sources else None)
        return added

    def _report_screening(self, screening: Screening, name: str | None) -> None:
        """Tell which of the files just dropped or chosen cannot be used, why, and what to do."""
        message, details = screening.message(name, MAX_LISTED)
        for entry in [*screening.refused, *screening.skipped]:
            logger.warning("Not used: %s: %s", entry.path, entry.reason)
        self.errors.warn("Some files cannot be used", message, details)

    def add_folder_dialog(self) -> None:
        """File ▸ Add folder…."""
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of photos")
        if folder:
            self.add_paths([folder])

    def add_photos_dialog(self) -> None:
        """File ▸ Add photos…."""
        files, _ = QFileDialog.getOpenFileNames(
            self,
            "Add photos",
            "",
            "Photos (*.jpg *.jpeg *.png *.tif *.tiff *.webp *.heic *.heif *.dng *.cr2 *.cr3 "
            "*.nef *.arw *.raf *.orf *.rw2);;All files (*)",
        )
        if files:
            self.add_paths(files)

    def paste_paths(self, mime: QMimeData | None = None) -> list[str]:
        """Add the files and folders on the clipboard (file URLs or one path per line)."""
        mime = mime if mime is not None else QGuiApplication.clipboard().mimeData()
        if mime is None:
            return []
        found, missing = paths_from_mime(mime)
        added = self.add_paths(found) if found else []
        if missing:
            shown = ", ".join(m for m in missing[:3] if m)
            self.statusBar().showMessage(
                f"{len(missing)} pasted line(s) are not files or folders here: {shown}", 8000
            )
        return added

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: D102 - Qt override
        mime = event.mimeData()
        if mime.hasUrls() and any(u.isLocalFile() for u in mime.urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: ANN001, D102 - Qt override
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: D102 - Qt override
        found, _missing = paths_from_mime(event.mimeData())
        if found:
            event.acceptProposedAction()
            self.add_paths(found)
        else:
            event.ignore()

    def _on_exclusion_requested(self, path: str, excluded: bool) -> None:
        name = self.current_set
        if name is not None:
            self.project.set_excluded(name, path, excluded)

    # ================================================================== runs

    def start_run(self, set_name: str | None = None) -> bool:
        """Reconstruct a set (default: the selected one) in a worker thread; True if started.

        A set run before resumes from its last finished stage (the engine skips stages done
        with the same photos and settings). See :meth:`gui.run_controller.RunController.start`.
        """
        if self._catalogue_running():
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
        self._update_set_info()

    def _on_mesh(self, mesh: Mesh) -> None:
        self.result_model.set_mesh(mesh)
        if self.result_model.mesh is not None:
            self.view.set_display("mesh")
            self.hint.setVisible(False)

    # ================================================================== sample

    def open_sample(self, start: bool = True) -> None:
        """Write the sample shoot (once), add it as an image set and reconstruct it.

        With an empty, unsaved project the sample's own project (``<home>/sample``) is
        opened: its last result shows at once, and a run starts only if none finished yet.
        """
        if self._busy("open the sample"):
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
        self.run_button.setEnabled(False)
        self.statusBar().showMessage(f"Writing the sample photos into {sample_folder()}…")
        writer.start()

    def _on_sample_progress(self, current: int, total: int) -> None:
        self.sample_bar.setRange(0, max(1, total))
        self.sample_bar.setValue(current)

    def _sample_ready(self, photos: str, error: str, start: bool) -> None:
        writer, self.sample_writer = self.sample_writer, None
        if writer is not None:
            writer.thread.join(timeout=5)
            writer.deleteLater()
            self.statusBar().clearMessage()
        self.sample_bar.hide()
        self._update_set_info()
        if error == "cancelled" or self._closing:
            return
        if error:
            self.errors.report("Cannot write the sample", error)
            return
        folder = sample_folder()
        if not self.project.is_saved and not self.project.set_names:
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
                    self.errors.report("Cannot save the sample project", str(exc))
            self.set_project(project)
        elif not self.project.has_set(SAMPLE_SET):
            self.project.add_set(SAMPLE_SET)
            self.project.add_paths(SAMPLE_SET, [photos])
        self.select_set(SAMPLE_SET)
        status = self.project.image_set(SAMPLE_SET).last_status
        if start and status != "finished":
            self.start_run(SAMPLE_SET)
        elif status == "finished":
            self.statusBar().showMessage(
                "The sample's last reconstruction is shown; press Run to compute it again "
                "(finished stages are reused).",
                10000,
            )

    # ================================================================== other actions

    def show_export(self) -> ExportDialog | None:
        """File ▸ Export…: the selected set's exportable files."""
        name = self.current_set
        if name is None:
            self.statusBar().showMessage("Select an image set first.")
            return None
        dialog = ExportDialog(self.project.run_dir(name), self)
        dialog.setWindowTitle(f"Export — {name}")
        self.export_dialog = dialog
        dialog.open()
        return dialog

    def inspect_photo(self, path: str | Path) -> MaskInspector | None:
        """Open the mask inspector of a photo of the selected set (double-click on a thumbnail)."""
        name = self.current_set
        if name is None:
            return None
        project = self.project
        painted = project.painted_mask_path(name, path)
        run_mask = project.run_mask_path(name, path)
        source = "painted" if painted is not None else "auto" if run_mask is not None else "none"
        max_size = self.settings.config().ingest.max_image_size
        try:
            rgb, mask = load_photo_and_mask(
                path, project.working_copy(name, path), painted or run_mask, max_size
            )
        except (ImageReadError, OSError) as exc:
            self.errors.report("Cannot show this photo", f"{path}: {exc}")
            return None
        if painted is None and mask is not None and mask.min() == 255:
            mask, source = None, "none"  # the engine's stand-in for "no mask" (COLMAP needs one)
        if self.inspector is not None:
            self.inspector.close()
        reason = ""
        report = project.last_report(name)
        if source == "none":
            reason = mask_failures(report).get(project.image_name(name, path), "")
        product = None
        product_file = project.product_mask_path(name, path)
        if product_file is not None:
            try:
                product = read_mask(product_file, (rgb.shape[1], rgb.shape[0]))
            except (ValueError, OSError) as exc:
                logger.warning("Cannot read the 3D product mask %s: %s", product_file, exc)
        disagrees = project.image_name(name, path) in masks_disagreeing(report)
        dialog = MaskInspector(
            path,
            rgb,
            mask,
            source,
            not project.is_mask_disabled(name, path),
            reason,
            product=product,
            disagrees=disagrees and source != "painted",
            parent=self,
        )
        dialog.use_mask_changed.connect(lambda photo, used: self._set_mask_used(name, photo, used))
        dialog.mask_saved.connect(lambda photo, m: self._save_painted_mask(name, photo, m))
        dialog.mask_reverted.connect(lambda photo: self._forget_painted_mask(name, photo))
        self.inspector = dialog
        dialog.show()
        return dialog

    def _set_mask_used(self, name: str, photo: str, used: bool) -> None:
        if not self.project.has_set(name):
            return
        self.project.set_mask_disabled(name, photo, not used)
        self._save_if_saved()
        state = "used" if used else "switched off"
        self.statusBar().showMessage(f"Mask of {Path(photo).name} {state} for the next run.", 6000)

    def _save_painted_mask(self, name: str, photo: str, mask) -> None:  # noqa: ANN001
        if not self.project.has_set(name):
            return
        try:
            target = self.project.save_painted_mask(name, photo, mask)
        except (OutputError, ValueError) as exc:
            self.errors.report("Cannot save the mask", str(exc))
            return
        self._save_if_saved()
        self.statusBar().showMessage(
            f"Mask saved in {target}: the next run uses it for {Path(photo).name}.", 8000
        )

    def _forget_painted_mask(self, name: str, photo: str) -> None:
        if self.project.has_set(name):
            self.project.remove_painted_mask(name, photo)
            self._save_if_saved()

    def show_set_scale(self) -> SetScaleDialog | None:
        """View ▸ Set scale…: a known product size, or two picked points and their distance."""
        name = self.current_set
        if name is None:
            self.statusBar().showMessage("Select an image set first.")
            return None
        if self.scale_dialog is not None:
            self.scale_dialog.close()
        image_set = self.project.image_set(name)
        values = {
            "known_dimension": image_set.known_dimension,
            "known_dimension_mm": image_set.known_dimension_mm,
            "known_distance_mm": image_set.known_distance_mm,
            "known_points": image_set.known_points,
        }
        dialog = SetScaleDialog(values, metres_per_unit(self.result_model.report), self)
        dialog.setWindowTitle(f"Set scale — {name}")
        dialog.points_changed.connect(self.view.set_marked_points)
        dialog.accepted.connect(lambda: self._apply_scale(name, dialog))
        dialog.finished.connect(lambda _r: self.view.set_marked_points([]))
        self.view.set_marked_points(dialog.points)
        self.scale_dialog = dialog
        dialog.show()
        return dialog

    def _apply_scale(self, name: str, dialog: SetScaleDialog) -> None:
        if not self.project.has_set(name):
            return
        self.project.update_set(name, **dialog.values())
        self._save_if_saved()
        self.statusBar().showMessage(
            "Scale set: run again to apply it (only the scale and the exports are recomputed).",
            10000,
        )

    def _on_point_picked(self, point) -> None:  # noqa: ANN001 - (3,) array
        dialog = self.scale_dialog
        if dialog is not None and dialog.isVisible():
            dialog.add_point(point)
        else:
            x, y, z = (float(v) for v in point)
            self.statusBar().showMessage(
                f"Point ({x:.4g}, {y:.4g}, {z:.4g}): open View ▸ Set scale… to use two points "
                "and their real distance.",
                8000,
            )

    def _on_report_changed(self) -> None:
        text = self.result_model.dimensions_text
        self.dimensions_label.setText(text)
        self.dimensions_label.setToolTip(
            "Width x depth x height of the product" if text and "No true" not in text else text
        )

    def _sync_display_controls(self) -> None:
        has_mesh = self.result_model.mesh is not None
        mesh = has_mesh and self.view.display == "mesh"
        self.mesh_action.setEnabled(has_mesh)
        self.mesh_action.setChecked(mesh)
        self.cloud_action.setChecked(not mesh)

    def show_about(self) -> AboutDialog:
        """Help ▸ About."""
        dialog = AboutDialog(self)
        dialog.open()
        return dialog

    def choose_background(self) -> None:
        """View ▸ Background colour…."""
        colour = QColorDialog.getColor(self.view.background, self, "Background colour")
        if colour.isValid():
            self.view.set_background(colour)

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
        if self._closing:
            event.ignore()  # already closing: waiting for the run to stop
            return
        if self.worker is not None and self.worker.is_running():
            if not self.confirm("A reconstruction is running. Cancel it and quit?"):
                event.ignore()
                return
            self._closing = True
            self.cancel_run()
            self.statusBar().showMessage("Stopping the run before closing…")
            stopped = self.wait_for_run()
            self._closing = False
            if not stopped:
                self.errors.report(
                    "The run is still stopping",
                    "The reconstruction did not stop in time. Wait a moment and close again.",
                )
                event.ignore()
                return
        if self._catalogue_running():
            if not self.confirm("The catalogue is running. Cancel it and quit?"):
                event.ignore()
                return
            self.catalogue_dialog.cancel()
            self.statusBar().showMessage("Stopping the catalogue before closing…")
            if not self.catalogue_dialog.wait(CLOSE_WAIT_S):
                self.errors.report(
                    "The catalogue is still stopping",
                    "The running image set did not stop in time. Wait a moment and close again.",
                )
                event.ignore()
                return
        self._closing = True
        if self.sample_writer is not None:
            writer = self.sample_writer
            writer.cancel()
            writer.thread.join(timeout=CLOSE_WAIT_S)
        self.thumb_loader.cancel()
        self.thumb_loader.wait(5000)
        self._save_if_saved()
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(self.log_handler)
        dialogs = (self.export_dialog, self.inspector, self.scale_dialog, self.catalogue_dialog)
        for dialog in dialogs:
            if dialog is not None:
                dialog.close()
        event.accept()
        app = QApplication.instance()
        if app is not None:
            for widget in app.topLevelWidgets():
                if isinstance(widget, QMessageBox) and widget.parent() is self:
                    widget.close()
