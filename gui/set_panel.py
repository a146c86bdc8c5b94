"""The window's left side: the project's image sets, the selected set's photos, adding photos.

:class:`SetPanel` shows the :class:`gui.project.Project` it is given (its sets in a list, the
selected set's photos as thumbnails) and changes it on the user's word: new, removed and renamed
sets, photos added by dialog, drop or paste (screened first, see
:func:`engine.project.screen_paths`), photos left out. It holds no run state: whether a set is
being reconstructed it asks ``running_set()``. Status lines go out through :attr:`status`; the
window shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QMimeData, Qt, QUrl, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.errors import InputError
from gui.errors import ErrorSink
from gui.project import ImageSet, Project, Screening, screen_paths
from gui.thumbnails import ThumbnailGrid
from gui.workers import ThumbnailLoader

logger = logging.getLogger(__name__)

#: Folder names that say nothing about the product: a set is named after their parent.
_GENERIC_FOLDERS = {"images", "photos", "jpg", "raw"}
#: The file filter of "Add photos…".
PHOTO_FILTER = (
    "Photos (*.jpg *.jpeg *.png *.tif *.tiff *.webp *.heic *.heif *.dng *.cr2 *.cr3 "
    "*.nef *.arw *.raf *.orf *.rw2);;All files (*)"
)


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


def set_tooltip(image_set: ImageSet) -> str:
    """The set list's tooltip of a set: how its last run went."""
    text = f"Last run: {image_set.last_status}"
    if image_set.last_message:
        text += f" — {image_set.last_message}"
    return text


class SetPanel(QWidget):
    """The project's image sets and the selected set's photos.

    Parameters
    ----------
    thumb_loader
        Loads the thumbnails (in a thread).
    errors
        The application's error sink (photos that cannot be added are reported there).
    running_set
        Returns the set being reconstructed (None between runs): it is not removed or renamed.
    max_listed
        At most this many refused files are named in a message (the rest in its details).
    parent
        Parent widget.

    Attributes
    ----------
    set_list
        The list of sets (object name ``setList``); each item's user data is the set's name.
    thumbs
        The selected set's photos.
    last_screening
        What the last photos added were found to be (None before any).

    Signals
    -------
    selected(object)
        Another set was selected: its name, or None when there is none.
    images_shown()
        The thumbnails were shown again (the counts of photos may have changed).
    status(str, int)
        A line for the window's status bar and how long to show it (ms; 0: until replaced).
    """

    selected = Signal(object)
    images_shown = Signal()
    status = Signal(str, int)

    def __init__(
        self,
        thumb_loader: ThumbnailLoader,
        errors: ErrorSink,
        *,
        running_set: Callable[[], str | None],
        max_listed: int = 10,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.errors = errors
        self.running_set = running_set
        self.max_listed = max_listed
        self.project: Project = Project()
        self.last_screening: Screening | None = None

        self.set_list = QListWidget()
        self.set_list.setObjectName("setList")
        self.set_list.setMaximumHeight(150)
        self.set_list.currentRowChanged.connect(lambda _row: self.selected.emit(self.current_set))
        self.set_list.itemChanged.connect(self._on_item_edited)
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

        self.thumbs = ThumbnailGrid(thumb_loader)
        self.thumbs.exclusion_requested.connect(self._on_exclusion_requested)
        self.photos_label = QLabel("Photos")
        self.photos_label.setObjectName("hint")
        add_folder = QPushButton("Add folder…")
        add_folder.clicked.connect(lambda: self.add_folder_dialog())
        add_photos = QPushButton("Add photos…")
        add_photos.clicked.connect(lambda: self.add_photos_dialog())
        add_row = QHBoxLayout()
        add_row.addWidget(add_folder)
        add_row.addWidget(add_photos)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 0, 6)
        layout.addLayout(set_buttons)
        layout.addWidget(self.set_list)
        layout.addWidget(self.photos_label)
        layout.addWidget(self.thumbs, 1)
        layout.addLayout(add_row)

    # ================================================================== the sets

    def set_project(self, project: Project) -> None:
        """Show ``project``'s sets (the caller connects and disconnects its signals)."""
        self.project = project
        self.refresh()

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
        if name == self.running_set():
            self.status.emit("This set is being reconstructed: cancel the run first.", 0)
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
        if old == self.running_set():
            self.status.emit("This set is being reconstructed: rename it afterwards.", 0)
            self.refresh()
            return False
        try:
            self.project.rename(old, new)
        except ValueError as exc:
            self.status.emit(str(exc), 8000)
            self.refresh()
            return False
        self.select_set(new.strip())
        return True

    def refresh(self) -> None:
        """List the project's sets again, keeping the selection where the set still exists."""
        current = self.current_set
        self.set_list.blockSignals(True)
        try:
            self.set_list.clear()
            for image_set in self.project.sets:
                item = QListWidgetItem(image_set.name)
                item.setData(Qt.ItemDataRole.UserRole, image_set.name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                item.setToolTip(set_tooltip(image_set))
                self.set_list.addItem(item)
        finally:
            self.set_list.blockSignals(False)
        names = self.project.set_names
        if current in names:
            self.select_set(current)
        elif names:
            self.select_set(names[0])
        else:
            self.selected.emit(None)

    def _on_item_edited(self, item: QListWidgetItem) -> None:
        old = item.data(Qt.ItemDataRole.UserRole)
        if item.text() != old:
            self.rename_set(item.text(), old)

    def on_set_changed(self, name: str) -> None:
        """The named set changed: its tooltip, and its photos when it is the selected one."""
        for row in range(self.set_list.count()):
            item = self.set_list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == name:
                item.setToolTip(set_tooltip(self.project.image_set(name)))
        if name == self.current_set:
            self.show_images(name)

    # ================================================================== the photos

    def show_images(self, name: str) -> None:
        """Show the set's photos, which are left out, how far the last run got with each."""
        files = self.project.image_files(name)
        excluded = set(self.project.image_set(name).excluded)
        self.thumbs.show_images(files, excluded, self.project.image_status(name))
        self.thumbs.set_mask_states(self.project.mask_states(name))
        self.images_shown.emit()

    def clear_images(self) -> None:
        """Show no photos (no set is selected)."""
        self.thumbs.clear_images()
        self.images_shown.emit()

    def photo_counts(self) -> tuple[int, int]:
        """``(photos shown, photos of them left out)`` of the selected set; also sets the label."""
        name = self.current_set
        if name is None:
            self.photos_label.setText("Photos — drop a folder here to start")
            return 0, 0
        excluded = self.project.image_set(name).excluded
        paths = self.thumbs.paths()
        n, left_out = len(paths), sum(1 for p in paths if p in excluded)
        self.photos_label.setText(
            f"Photos ({n})" + (f" — {left_out} left out" if left_out else "")
            if n
            else "Photos — drop a folder or photos here"
        )
        return n, left_out

    def _on_exclusion_requested(self, path: str, excluded: bool) -> None:
        name = self.current_set
        if name is not None:
            self.project.set_excluded(name, path, excluded)

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
                if base.lower() in _GENERIC_FOLDERS and first.parent.name:
                    base = (first if first.is_dir() else first.parent).parent.name
                name = self.new_set(base.replace("_", " ") or "Product")
            try:
                added = self.project.add_paths(name, screening.sources)
            except InputError as exc:  # a path vanished since it was screened
                self.errors.report("Cannot add these photos", str(exc))
                return []
            self.select_set(name)
            n = len(self.project.image_files(name))
            self.status.emit(
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
        message, details = screening.message(name, self.max_listed)
        for entry in [*screening.refused, *screening.skipped]:
            logger.warning("Not used: %s: %s", entry.path, entry.reason)
        self.errors.warn("Some files cannot be used", message, details)

    def add_folder_dialog(self) -> None:
        """File ▸ Add folder…."""
        folder = QFileDialog.getExistingDirectory(self.window(), "Add a folder of photos")
        if folder:
            self.add_paths([folder])

    def add_photos_dialog(self) -> None:
        """File ▸ Add photos…."""
        files, _ = QFileDialog.getOpenFileNames(self.window(), "Add photos", "", PHOTO_FILTER)
        if files:
            self.add_paths(files)

    def drag_enter(self, event: QDragEnterEvent) -> None:
        """Accept a drag of local files or folders (the window hands on the drags it gets)."""
        mime = event.mimeData()
        if mime.hasUrls() and any(u.isLocalFile() for u in mime.urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def drop(self, event: QDropEvent) -> None:
        """Add the dropped files and folders (see :meth:`add_paths`)."""
        found, _missing = paths_from_mime(event.mimeData())
        if found:
            event.acceptProposedAction()
            self.add_paths(found)
        else:
            event.ignore()

    def paste_paths(self, mime: QMimeData | None = None) -> list[str]:
        """Add the files and folders on the clipboard (file URLs or one path per line)."""
        mime = mime if mime is not None else QGuiApplication.clipboard().mimeData()
        if mime is None:
            return []
        found, missing = paths_from_mime(mime)
        added = self.add_paths(found) if found else []
        if missing:
            shown = ", ".join(m for m in missing[:3] if m)
            self.status.emit(
                f"{len(missing)} pasted line(s) are not files or folders here: {shown}", 8000
            )
        return added
