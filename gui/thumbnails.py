"""The thumbnail grid of an image set: one icon per photo with a status badge and a checkbox.

Thumbnails are decoded off the GUI thread by :class:`gui.workers.ThumbnailLoader`, and only for
the photos on screen (plus a screenful around them), so a set of thousands of photos neither
waits nor fills the memory. Each icon carries a badge: ``ok``, ``excluded`` (the user left it
out), ``unreadable``, ``blurry``, ``not registered`` (the last run could not place it),
``skipped`` (the last run refused the file), or a pre-flight finding of the last run
(``duplicate``, ``too dark``, ``too bright``); the tooltip gives the reason. A small tag in the
top-right corner tells the photo's mask: ``M`` (the last run's mask), ``M✎`` (painted by the
user) or a struck-out ``M`` (switched off). Double-click opens the photo's mask inspector.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QModelIndex, QPoint, QRect, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QDesktopServices,
    QFont,
    QIcon,
    QImage,
    QPainter,
    QPixmap,
    QStandardItem,
    QStandardItemModel,
)
from PySide6.QtWidgets import QAbstractItemView, QListView, QMenu, QWidget

from gui.workers import ThumbnailLoader

PathRole = Qt.ItemDataRole.UserRole + 1
StatusRole = Qt.ItemDataRole.UserRole + 2
ReasonRole = Qt.ItemDataRole.UserRole + 3
MaskRole = Qt.ItemDataRole.UserRole + 4

#: Icon side in pixels.
ICON_SIZE = 128
#: Badge colours; ``ok`` gets a small green dot, ``loading`` no badge.
BADGE_COLOURS = {
    "ok": QColor(46, 160, 67),
    "excluded": QColor(110, 110, 110),
    "unreadable": QColor(200, 40, 40),
    "skipped": QColor(200, 40, 40),
    "not registered": QColor(150, 60, 170),
    "blurry": QColor(220, 130, 0),
    "duplicate": QColor(200, 110, 0),
    "too dark": QColor(200, 110, 0),
    "too bright": QColor(200, 110, 0),
    "exposure": QColor(200, 110, 0),
}
#: Mask tags: state -> (text, colour).
MASK_TAGS = {
    "auto": ("M", QColor(0, 150, 170)),
    "painted": ("M✎", QColor(190, 120, 0)),
    "off": ("M", QColor(110, 110, 110)),
}


def effective_status(
    excluded: bool, loader: tuple[str, str] | None, run: tuple[str, str] | None
) -> tuple[str, str]:
    """The badge of one photo from what the user, the thumbnail loader and the last run said.

    Parameters
    ----------
    excluded
        The user left the photo out.
    loader
        ``(status, reason)`` from the thumbnail loader, or None while it is loading.
    run
        ``(status, reason)`` from the last run's report, or None when it said nothing.

    Returns
    -------
    tuple of (str, str)
        ``(status, reason)``; ``loading`` while nothing is known yet.
    """
    if excluded:
        return "excluded", "left out of the next run (tick it to take it back)"
    if loader is not None and loader[0] == "unreadable":
        return loader
    if run is not None:
        return run
    if loader is not None:
        return loader
    return "loading", ""


def _placeholder() -> QPixmap:
    pix = QPixmap(ICON_SIZE, ICON_SIZE)
    pix.fill(QColor(70, 70, 76))
    return pix


def _draw_mask_tag(painter: QPainter, state: str) -> None:
    text, colour = MASK_TAGS[state]
    font = QFont()
    font.setPixelSize(11)
    font.setBold(True)
    painter.setFont(font)
    width = painter.fontMetrics().horizontalAdvance(text) + 10
    rect = QRect(ICON_SIZE - width - 4, 4, width, 16)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    painter.drawRoundedRect(rect, 4, 4)
    painter.setPen(QColor(255, 255, 255))
    painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
    if state == "off":
        painter.drawLine(rect.left() + 3, rect.bottom() - 3, rect.right() - 3, rect.top() + 3)


def badge_icon(image: QImage | None, status: str, mask_state: str | None = None) -> QIcon:
    """A square icon: the thumbnail (or a grey tile), the status badge and the mask tag.

    ``mask_state``: ``auto``, ``painted``, ``off`` or None (no mask: no tag).
    """
    canvas = QPixmap(ICON_SIZE, ICON_SIZE)
    canvas.fill(Qt.GlobalColor.transparent)
    painter = QPainter(canvas)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    if image is not None and not image.isNull():
        scaled = image.scaled(
            ICON_SIZE,
            ICON_SIZE,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        x = (ICON_SIZE - scaled.width()) // 2
        y = (ICON_SIZE - scaled.height()) // 2
        painter.drawImage(x, y, scaled)
    else:
        painter.fillRect(0, 16, ICON_SIZE, ICON_SIZE - 32, QColor(70, 70, 76))
        if status == "unreadable":
            painter.setPen(QColor(235, 235, 235))
            painter.drawText(QRect(0, 0, ICON_SIZE, ICON_SIZE), Qt.AlignmentFlag.AlignCenter, "?")
    if status == "excluded":
        painter.fillRect(0, 0, ICON_SIZE, ICON_SIZE, QColor(20, 20, 20, 150))
    colour = BADGE_COLOURS.get(status)
    if status == "ok":
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour)
        painter.drawEllipse(QPoint(ICON_SIZE - 12, ICON_SIZE - 12), 6, 6)
    elif colour is not None:
        font = QFont()
        font.setPixelSize(12)
        font.setBold(True)
        painter.setFont(font)
        width = painter.fontMetrics().horizontalAdvance(status) + 12
        rect = QRect(4, ICON_SIZE - 22, min(width, ICON_SIZE - 8), 18)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour)
        painter.drawRoundedRect(rect, 4, 4)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, status)
    if mask_state in MASK_TAGS:
        _draw_mask_tag(painter, mask_state)
    painter.end()
    return QIcon(canvas)


class ThumbnailGrid(QListView):
    """Icon grid of one image set's photos.

    Parameters
    ----------
    loader
        Decodes thumbnails off the GUI thread (a new one when None).
    parent
        Parent widget.

    Signals
    -------
    exclusion_requested(str, bool)
        ``(path, excluded)``: the user ticked or unticked a photo, or used the context menu.
    inspect_requested(str)
        The user double-clicked a photo (or chose "Check the mask…"): show its mask.
    """

    exclusion_requested = Signal(str, bool)
    inspect_requested = Signal(str)

    def __init__(self, loader: ThumbnailLoader | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.loader = loader or ThumbnailLoader(parent=self)
        self.store = QStandardItemModel(self)
        self.setModel(self.store)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(ICON_SIZE, ICON_SIZE))
        self.setGridSize(QSize(ICON_SIZE + 24, ICON_SIZE + 36))
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._context_menu)
        self.setAcceptDrops(False)  # drops go to the main window

        self._items: dict[str, QStandardItem] = {}
        self._thumbs: dict[str, QImage] = {}
        self._loader_status: dict[str, tuple[str, str]] = {}
        self._run_status: dict[str, tuple[str, str]] = {}
        self._excluded: set[str] = set()
        self._masks: dict[str, str] = {}
        self._requested: set[str] = set()
        self._looks: dict[str, tuple[str, bool, str | None]] = {}
        self._updating = False

        self.loader.loaded.connect(self._on_loaded)
        self.store.itemChanged.connect(self._on_item_changed)
        self.doubleClicked.connect(
            lambda index: self.inspect_requested.emit(str(index.data(PathRole)))
        )
        self._lazy = QTimer(self)
        self._lazy.setSingleShot(True)
        self._lazy.setInterval(60)
        self._lazy.timeout.connect(self.request_visible)
        self.verticalScrollBar().valueChanged.connect(lambda _v: self._lazy.start())

    # ------------------------------------------------------------------ content

    def paths(self) -> list[str]:
        """The photos shown, in order."""
        return list(self._items)

    def show_images(
        self,
        paths: list[Path | str],
        excluded: set[str] | None = None,
        run_status: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        """Show ``paths``; keeps already-loaded thumbnails of photos that stay.

        Parameters
        ----------
        paths
            The set's image files, in order.
        excluded
            Paths the user left out.
        run_status
            Path -> ``(status, reason)`` from the last run's report.
        """
        keys = [str(p) for p in paths]
        self._excluded = set(excluded or ())
        self._run_status = dict(run_status or {})
        if keys == list(self._items):
            self._refresh_all()
            return
        kept = set(keys)
        self._thumbs = {k: v for k, v in self._thumbs.items() if k in kept}
        self._loader_status = {k: v for k, v in self._loader_status.items() if k in kept}
        self._requested &= kept
        self._updating = True
        try:
            self.store.clear()
            self._items = {}
            self._looks = {}
            for key in keys:
                item = QStandardItem(Path(key).name)
                item.setEditable(False)
                item.setCheckable(True)
                item.setData(key, PathRole)
                self._items[key] = item
                self._decorate(key)
                self.store.appendRow(item)
        finally:
            self._updating = False
        self._lazy.start()

    def update_status(
        self, excluded: set[str], run_status: dict[str, tuple[str, str]] | None = None
    ) -> None:
        """New exclusions and/or run statuses for the photos shown."""
        self._excluded = set(excluded)
        if run_status is not None:
            self._run_status = dict(run_status)
        self._refresh_all()

    def set_mask_states(self, states: dict[str, str]) -> None:
        """Path -> mask state (``auto``, ``painted``, ``off``) of the photos shown."""
        self._masks = dict(states)
        self._refresh_all()

    def mask_states_shown(self) -> dict[str, str]:
        """Path -> mask tag shown (photos without a tag left out)."""
        return {k: str(i.data(MaskRole)) for k, i in self._items.items() if i.data(MaskRole)}

    def mask_state_of(self, path: Path | str) -> str | None:
        """The mask state shown for ``path`` (None: no mask)."""
        item = self._items[str(path)]
        value = item.data(MaskRole)
        return str(value) if value else None

    def clear_images(self) -> None:
        """Show nothing and drop pending thumbnail work."""
        self.loader.cancel()
        self.show_images([])

    def status_of(self, path: Path | str) -> tuple[str, str]:
        """``(status, reason)`` shown for ``path``."""
        item = self._items[str(path)]
        return str(item.data(StatusRole)), str(item.data(ReasonRole) or "")

    def statuses(self) -> dict[str, str]:
        """Path -> status shown."""
        return {k: str(item.data(StatusRole)) for k, item in self._items.items()}

    def loaded_count(self) -> int:
        """Photos whose thumbnail or verdict arrived."""
        return len(self._loader_status)

    # ------------------------------------------------------------------ lazy loading

    def request_visible(self) -> None:
        """Ask the loader for the thumbnails on screen (and a screenful around) not yet asked."""
        if not self._items:
            return
        wanted = self._visible_keys()
        missing = [k for k in wanted if k not in self._loader_status]
        todo = [k for k in missing if k not in self._requested]
        if not todo:
            return
        # A new request drops the loader's older one: ask again for everything still missing.
        self._requested.update(missing)
        self.loader.load(missing)

    def _visible_keys(self) -> list[str]:
        keys = list(self._items)
        viewport = self.viewport().rect()
        if not self.isVisible() or viewport.height() < 10:
            return keys[:64]
        margin = viewport.height()
        area = viewport.adjusted(0, -margin, 0, margin)
        first = self.indexAt(QPoint(area.left() + 4, max(0, area.top()) + 4))
        visible = []
        start = first.row() if first.isValid() else 0
        for row in range(start, len(keys)):
            rect = self.visualRect(self.store.index(row, 0))
            if rect.top() > area.bottom():
                break
            if rect.intersects(area):
                visible.append(keys[row])
        return visible or keys[:64]

    def resizeEvent(self, event) -> None:  # noqa: ANN001, D102 - Qt override
        super().resizeEvent(event)
        self._lazy.start()

    def showEvent(self, event) -> None:  # noqa: ANN001, D102 - Qt override
        super().showEvent(event)
        self._lazy.start()

    def _on_loaded(self, path: str, image: QImage, status: str, reason: str) -> None:
        if path not in self._items:
            return
        self._loader_status[path] = (status, reason)
        self._looks.pop(path, None)
        if not image.isNull():
            # Keep only what the icon needs: 256 px decodes would cost 4x the memory.
            self._thumbs[path] = image.scaled(
                ICON_SIZE,
                ICON_SIZE,
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        self._decorate(path)

    # ------------------------------------------------------------------ drawing

    def _refresh_all(self) -> None:
        for key in self._items:
            self._decorate(key)

    def _decorate(self, key: str) -> None:
        item = self._items[key]
        excluded = key in self._excluded
        status, reason = effective_status(
            excluded, self._loader_status.get(key), self._run_status.get(key)
        )
        was_updating, self._updating = self._updating, True
        try:
            mask = self._masks.get(key)
            look = (status, key in self._thumbs, mask)
            if self._looks.get(key) != look:
                self._looks[key] = look
                item.setIcon(badge_icon(self._thumbs.get(key), status, mask))
            item.setData(status, StatusRole)
            item.setData(reason, ReasonRole)
            item.setData(mask or "", MaskRole)
            item.setCheckState(Qt.CheckState.Unchecked if excluded else Qt.CheckState.Checked)
            tip = f"{key}\n{status}" + (f": {reason}" if reason else "")
            if mask:
                tip += "\nmask: " + {
                    "auto": "from the last run",
                    "painted": "painted by you",
                    "off": "switched off",
                }.get(mask, mask)
            tip += "\nDouble-click to check or paint the mask."
            item.setToolTip(tip)
        finally:
            self._updating = was_updating

    # ------------------------------------------------------------------ user actions

    def _on_item_changed(self, item: QStandardItem) -> None:
        if self._updating:
            return
        key = str(item.data(PathRole))
        excluded = item.checkState() != Qt.CheckState.Checked
        if excluded != (key in self._excluded):
            self.exclusion_requested.emit(key, excluded)

    def selected_paths(self) -> list[str]:
        """Paths of the selected photos."""
        return [str(i.data(PathRole)) for i in self.selectedIndexes()]

    def set_excluded(self, paths: list[str], excluded: bool) -> None:
        """Ask for ``paths`` to be left out (or taken back), as the context menu does."""
        for path in paths:
            if excluded != (path in self._excluded):
                self.exclusion_requested.emit(path, excluded)

    def _context_menu(self, pos: QPoint) -> None:
        index: QModelIndex = self.indexAt(pos)
        if not index.isValid():
            return
        paths = self.selected_paths() or [str(index.data(PathRole))]
        menu = QMenu(self)
        leave_out = QAction(f"Leave out of the run ({len(paths)})", menu)
        leave_out.triggered.connect(lambda: self.set_excluded(paths, True))
        take_back = QAction(f"Include in the run ({len(paths)})", menu)
        take_back.triggered.connect(lambda: self.set_excluded(paths, False))
        inspect = QAction("Check the mask…", menu)
        inspect.triggered.connect(lambda: self.inspect_requested.emit(paths[0]))
        show = QAction("Show in folder", menu)
        show.triggered.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(paths[0]).parent)))
        )
        menu.addAction(leave_out)
        menu.addAction(take_back)
        menu.addSeparator()
        menu.addAction(inspect)
        menu.addAction(show)
        menu.exec(self.viewport().mapToGlobal(pos))
