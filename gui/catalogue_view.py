"""The catalogue view: every image set of the project run one after another, and the gallery.

Run ▸ Run all sets… opens it. Each checked set becomes one product of
:func:`engine.catalogue.run_products`, with the set's own photos and settings (masks, scale,
preset), into the set's own run folder, so the main window shows each result as usual. The
project folder becomes the site: ``index.html`` (the gallery: a card per set with a still, its
verdict and reasons, a page with the GLB in model-viewer) and ``summary.json`` beside
``runs/``. Sets run on this workstation one at a time (each in a worker process), or as Ray
tasks on the cluster at the address given here (remembered in ``<home>/settings.json``). A set
already computed with the same photos and settings is not computed again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.catalogue import CatalogueResult, Product, run_products
from engine.config import PipelineConfig
from engine.errors import OutputError, VitrineError
from engine.export import write_bytes_atomic
from engine.progress import CancelToken, ProgressEvent

logger = logging.getLogger(__name__)

#: Where a set's run folder lies in the project folder: ``runs/<slug>`` (gui.project).
RUNS = "runs"
SETTINGS_FILE = "settings.json"
COLUMNS = ("Image set", "Photos", "Status", "Verdict / reason", "Time")
#: Shown for each status of a summary.json entry (and the view's own "queued").
STATUS_TEXT = {
    "queued": "Queued",
    "pending": "Not run",
    "running": "Running…",
    "finished": "Finished",
    "failed": "Failed",
    "up to date": "Up to date",
}


def read_ray_address(home: Path) -> str:
    """The Ray address last used in the catalogue view ("" for this workstation)."""
    try:
        data = json.loads((home / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    value = data.get("ray_address", "") if isinstance(data, dict) else ""
    return value if isinstance(value, str) else ""


def remember_ray_address(home: Path, address: str) -> None:
    """Record the Ray address (best effort: a read-only home is not an error)."""
    path = home / SETTINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data["ray_address"] = address
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))
    except (OSError, OutputError) as exc:
        logger.info("Could not record the Ray address in %s: %s", path, exc)


def set_products(
    project: Any, names: list[str], config_for: Callable[[str], PipelineConfig]
) -> tuple[Path, list[Product], dict[str, str]]:
    """The project's sets as catalogue products.

    Parameters
    ----------
    project
        The :class:`gui.project.Project`.
    names
        The sets to run, in order.
    config_for
        A set's run configuration (the main window's: the settings panel's for the selected
        set, the set's own for the others).

    Returns
    -------
    tuple
        ``(site, products, slug -> set name)``: the site is the project folder (the temporary
        one of an unsaved project). A set that cannot run (no photos, a painted mask that
        cannot be prepared) is a product with its ``problem``, listed as failed.
    """
    site: Path = project.base_folder()
    products: list[Product] = []
    by_slug: dict[str, str] = {}
    for name in names:
        run_dir = project.run_dir(name)
        slug = run_dir.name
        by_slug[slug] = name
        photos = tuple(project.inputs_for_run(name))
        problem = ""
        config = None
        if run_dir.parent != site / RUNS:
            problem = f"its run folder {run_dir} is not in the project's {RUNS} folder"
        elif not photos:
            problem = "it has no photos to use: add photos, or tick the ones left out"
        else:
            try:
                config = config_for(name)
            except (VitrineError, OSError) as exc:
                problem = f"its settings cannot be prepared ({exc})"
        products.append(
            Product(
                folder=name, slug=slug, photos=photos, name=name, problem=problem, config=config
            )
        )
    return site, products, by_slug


class CatalogueWorker(QObject):
    """Runs :func:`engine.catalogue.run_products` on a background thread.

    Signals
    -------
    product(dict)
        A summary.json entry when a product starts (status ``running``) or ends.
    finished(object)
        The :class:`engine.catalogue.CatalogueResult`.
    failed(str)
        Why the batch could not run at all (no Ray, the site not writable ...).
    """

    product = Signal(dict)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, run: Callable[..., CatalogueResult], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._run = run
        self.token = CancelToken()
        self.thread = threading.Thread(target=self._work, name="vitrine-catalogue", daemon=True)

    def start(self) -> None:
        """Start the batch (returns at once)."""
        self.thread.start()

    def cancel(self) -> None:
        """Stop starting sets; the running one stops at its next check (a rerun continues)."""
        self.token.cancel()

    def is_running(self) -> bool:
        """Whether the batch's thread is still going."""
        return self.thread.is_alive()

    def _progress(self, event: ProgressEvent) -> None:
        entry = (event.partial or {}).get("product")
        if entry is not None:
            self.product.emit(dict(entry))

    def _work(self) -> None:
        try:
            result = self._run(progress=self._progress, cancel=self.token)
        except VitrineError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - shown to the user
            logger.exception("The catalogue run failed with an internal error")
            self.failed.emit(f"Internal error: {type(exc).__name__}: {exc}")
        else:
            self.finished.emit(result)


class CatalogueDialog(QDialog):
    """The project's image sets as a queue: status per set, run all, open the gallery.

    Parameters
    ----------
    project
        The :class:`gui.project.Project`.
    config_for
        A set's run configuration (see :func:`set_products`).
    home
        Vitrine's own folder, where the Ray address is remembered.
    busy
        Why no batch may start now ("" when it may: the main window's own run).
    parent
        Qt parent (the main window).

    Signals
    -------
    set_finished(str, str, str)
        ``(set name, status, message)`` when a set's run ends (``finished`` or ``failed``).
    running_changed(bool)
        The batch started or ended.
    """

    set_finished = Signal(str, str, str)
    running_changed = Signal(bool)

    def __init__(
        self,
        project: Any,
        config_for: Callable[[str], PipelineConfig],
        home: Path,
        busy: Callable[[], str] = lambda: "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Catalogue: all image sets")
        self.project = project
        self.config_for = config_for
        self.home = home
        self.busy = busy
        self._told: set[str] = set()
        self.worker: CatalogueWorker | None = None
        self.result: CatalogueResult | None = None
        self._by_slug: dict[str, str] = {}
        self._rows: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._site: Path | None = None

        self.info = QLabel(wordWrap=True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)

        self.where = QComboBox()
        self.where.addItems(["This workstation, one set at a time", "Ray cluster"])
        self.address = QLineEdit(placeholderText="ray://head:10001, auto or local")
        saved = read_ray_address(home)
        self.address.setText(saved)
        self.where.setCurrentIndex(1 if saved else 0)
        self.address.setEnabled(bool(saved))
        self.where.currentIndexChanged.connect(lambda i: self.address.setEnabled(i == 1))
        where_row = QHBoxLayout()
        where_row.addWidget(QLabel("Run on:"))
        where_row.addWidget(self.where)
        where_row.addWidget(self.address, 1)

        self.bar = QProgressBar()
        self.bar.setFormat("%v of %m sets")
        self.state = QLabel()
        self.run_button = QPushButton("&Run all")
        self.cancel_button = QPushButton("&Cancel")
        self.gallery_button = QPushButton("Open &gallery")
        close = QPushButton("Close")
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.gallery_button.clicked.connect(self.open_gallery)
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        for b in (self.run_button, self.cancel_button, self.gallery_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(close)

        layout = QVBoxLayout(self)
        layout.addWidget(self.info)
        layout.addWidget(self.table, 1)
        layout.addLayout(where_row)
        layout.addWidget(self.bar)
        layout.addWidget(self.state)
        layout.addLayout(buttons)
        self.resize(760, 420)
        self.refresh()

    # ------------------------------------------------------------------ the table

    def refresh(self) -> None:
        """Fill the table from the project (not while a batch runs)."""
        if self.is_running():
            return
        names = self.project.set_names
        self.table.setRowCount(len(names))
        self._rows = {}
        for row, name in enumerate(names):
            image_set = self.project.image_set(name)
            self._rows[name] = row
            check = QTableWidgetItem(name)
            check.setFlags(check.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            check.setCheckState(Qt.CheckState.Checked)
            self.table.setItem(row, 0, check)
            n = len(self.project.inputs_for_run(name))
            self._cell(row, 1, str(n))
            self._cell(row, 2, STATUS_TEXT.get(image_set.last_status, image_set.last_status))
            self._cell(row, 3, image_set.last_message)
            self._cell(row, 4, "")
        site = self._site_folder()
        where = f"'{site}'" if self.project.is_saved else "a temporary folder (save the project)"
        self.info.setText(
            f"{len(names)} image set{'' if len(names) == 1 else 's'}. Checked sets run one "
            "after another, each with its own settings, into its own run folder; sets already "
            "computed with the same photos and settings are kept. The gallery (index.html: a "
            f"card per set with its verdict) is written into {where}."
        )
        self.gallery_button.setEnabled(self.gallery_path() is not None)
        self.cancel_button.setEnabled(False)
        self.run_button.setEnabled(bool(names))

    def _cell(self, row: int, column: int, text: str, tip: str = "") -> None:
        item = QTableWidgetItem(text)
        if tip:
            item.setToolTip(tip)
        self.table.setItem(row, column, item)

    def checked_sets(self) -> list[str]:
        """Names of the sets ticked to run, in table order."""
        names = []
        for name, row in self._rows.items():
            item = self.table.item(row, 0)
            if item is not None and item.checkState() == Qt.CheckState.Checked:
                names.append(name)
        return names

    def set_checked(self, name: str, checked: bool) -> None:
        """Tick or untick a set."""
        state = Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
        self.table.item(self._rows[name], 0).setCheckState(state)

    def status_of(self, name: str) -> tuple[str, str]:
        """``(status, verdict or reason)`` shown for a set."""
        row = self._rows[name]
        return self.table.item(row, 2).text(), self.table.item(row, 3).text()

    def _site_folder(self) -> Path | None:
        return self.project.base_folder() if self.project.set_names else None

    def gallery_path(self) -> Path | None:
        """The gallery's index.html when there is one."""
        site = self._site or self._site_folder()
        page = site / "index.html" if site is not None else None
        return page if page is not None and page.is_file() else None

    # ------------------------------------------------------------------ running

    def is_running(self) -> bool:
        """Whether a batch is going."""
        return self.worker is not None and self.worker.is_running()

    def ray_address(self) -> str | None:
        """The Ray address chosen (None: this workstation)."""
        if self.where.currentIndex() == 0:
            return None
        return self.address.text().strip() or "auto"

    def start(self) -> bool:
        """Run the checked sets; True when the batch started."""
        if self.worker is not None:
            return False
        why = self.busy()
        if why:
            self.state.setText(why)
            return False
        names = self.checked_sets()
        if not names:
            self.state.setText("Tick at least one image set.")
            return False
        site, products, self._by_slug = set_products(self.project, names, self.config_for)
        self._site = site
        address = self.ray_address()
        remember_ray_address(self.home, address or "")
        title = self.project.folder.name if self.project.is_saved else "Catalogue"

        def run(progress: Callable[[ProgressEvent], None], cancel: CancelToken):
            return run_products(
                products,
                site,
                PipelineConfig(),
                title=title,
                products_dir=RUNS,
                workers=1,
                ray_address=address,
                progress=progress,
                cancel=cancel,
            )

        for name in names:
            row = self._rows[name]
            self._cell(row, 2, STATUS_TEXT["queued"])
            self._cell(row, 3, "")
            self._cell(row, 4, "")
        self._started = {}
        self._told = set()
        self.bar.setRange(0, len(names))
        self.bar.setValue(0)
        on = f"the Ray cluster at {address}" if address else "this workstation"
        self.state.setText(f"Running {len(names)} set{'' if len(names) == 1 else 's'} on {on}…")
        worker = CatalogueWorker(run, parent=self)
        worker.product.connect(self._on_product)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.where.setEnabled(False)
        self.address.setEnabled(False)
        self.running_changed.emit(True)
        worker.start()
        return True

    def cancel(self) -> None:
        """Stop the batch: no further sets start, the running one stops at its next check."""
        if self.worker is not None:
            self.worker.cancel()
            self.state.setText("Stopping after the current step… (a rerun continues)")
            self.cancel_button.setEnabled(False)

    def wait(self, seconds: float = 120.0) -> bool:
        """Block until the batch ended (window close, tests); True when it did."""
        if self.worker is None:
            return True
        self.worker.thread.join(timeout=seconds)
        return not self.worker.is_running()

    def _on_product(self, entry: dict) -> None:
        name = self._by_slug.get(entry.get("slug", ""))
        if name is None or name not in self._rows:
            return
        row = self._rows[name]
        status = entry.get("status", "")
        if status == "running":
            self._started[name] = time.monotonic()
            self._cell(row, 2, STATUS_TEXT["running"])
            return
        self._show_entry(row, entry)
        if status in ("finished", "failed"):
            self.bar.setValue(self.bar.value() + 1)
            self._tell(name, status)

    def _tell(self, name: str, status: str) -> None:
        """Emit ``set_finished`` once per set and batch."""
        if name in self._told:
            return
        self._told.add(name)
        self.set_finished.emit(name, status, self.table.item(self._rows[name], 3).text())

    def _show_entry(self, row: int, entry: dict, up_to_date: bool = False) -> None:
        status = entry.get("status", "")
        if status == "finished":
            verdict = entry.get("verdict", "")
            reasons = entry.get("reasons") or []
            text = verdict.title() + (f": {reasons[0]}" if reasons else "")
            self._cell(row, 2, STATUS_TEXT["up to date" if up_to_date else "finished"])
            self._cell(row, 3, text, "\n".join(reasons))
        elif status == "failed":
            reason = str(entry.get("reason", ""))
            self._cell(row, 2, STATUS_TEXT["failed"])
            self._cell(row, 3, f"{reason} (exit code {entry.get('exit_code')})", reason)
        else:
            self._cell(row, 2, STATUS_TEXT.get(status, status))
        seconds = entry.get("seconds")
        if seconds is not None and not up_to_date:
            self._cell(row, 4, f"{float(seconds):.0f} s")

    def _on_finished(self, result: CatalogueResult) -> None:
        self.result = result
        computed = set(result.computed)
        for entry in result.products:
            name = self._by_slug.get(entry.get("slug", ""))
            if name is None or name not in self._rows:
                continue
            status = entry.get("status", "")
            fresh = entry.get("slug") in computed
            self._show_entry(self._rows[name], entry, up_to_date=status == "finished" and not fresh)
            if status == "failed":  # also the sets that could not start (no photos ...)
                self._tell(name, status)
        verdicts = result.summary.get("verdicts", {})
        counts = result.summary.get("counts", {})
        text = (
            f"{verdicts.get('ready', 0)} ready, {verdicts.get('check', 0)} to check, "
            f"{verdicts.get('reshoot', 0)} to reshoot, {counts.get('failed', 0)} failed"
        )
        if result.cancelled:
            text = f"Cancelled ({text}). Run all again to continue."
        else:
            self.bar.setValue(self.bar.maximum())
        self.state.setText(text + ". Open the gallery to see them.")
        self._end()

    def _on_failed(self, message: str) -> None:
        self.state.setText(f"The catalogue could not run: {message}")
        self._end()

    def _end(self) -> None:
        if self.worker is not None:
            self.worker.thread.join(timeout=5.0)
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.where.setEnabled(True)
        self.address.setEnabled(self.where.currentIndex() == 1)
        self.gallery_button.setEnabled(self.gallery_path() is not None)
        self.running_changed.emit(False)

    def open_gallery(self) -> bool:
        """Open index.html in the system's browser; False when there is none yet."""
        page = self.gallery_path()
        if page is None:
            self.state.setText("No gallery yet: run the sets first.")
            return False
        return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(page))))
