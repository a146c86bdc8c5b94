"""The photo inspector: one photo with its product mask overlaid, a switch and a rough repaint tool.

The backdrop (mask 0) is darkened and tinted and the outline drawn, so a mask that cuts into the
product or keeps a piece of turntable shows at a glance. "Use mask for this photo" switches the
mask off for the next run (the whole photo is used). The brush adds to the product or erases
back to backdrop; each stroke can be undone; "Save mask" stores the painted mask in the project
(``<project>/masks/<set>/<name>.png``), which the next run uses instead of its own.

The widgets here hold arrays, not pipeline state: the main window reads the photo and mask
(:func:`load_photo_and_mask`) and writes what the user saved through the project.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

logger = logging.getLogger(__name__)

#: Colour the backdrop is pulled towards (dark blue-grey).
BACKDROP_TINT = (18, 24, 48)
#: How far the backdrop is pulled towards the tint (0: unchanged, 1: flat tint).
BACKDROP_STRENGTH = 0.65
#: Colour of the mask's outline.
OUTLINE_RGB = (0, 220, 255)
#: Most strokes that can be undone.
UNDO_DEPTH = 30
#: How the mask shown came about -> the words the inspector uses.
MASK_SOURCES = {
    "painted": "Painted by you: the next run uses this mask.",
    "auto": "Mask from the last run (automatic, or a mask file beside the photo).",
    "none": "No mask yet: run the set once for an automatic mask, or paint one here "
    "(erase the backdrop).",
}


def overlay_mask(
    rgb: np.ndarray,
    mask: np.ndarray | None,
    *,
    tint: tuple[int, int, int] = BACKDROP_TINT,
    strength: float = BACKDROP_STRENGTH,
    outline: tuple[int, int, int] | None = OUTLINE_RGB,
) -> np.ndarray:
    """The photo with its backdrop darkened and tinted, and the mask's outline drawn.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8 photo.
    mask
        ``(H, W)`` mask, non-zero = product; None leaves the photo as it is.
    tint, strength
        Backdrop pixels become ``(1 - strength) * pixel + strength * tint``.
    outline
        Colour of the product pixels that touch the backdrop (None: no outline).

    Returns
    -------
    ndarray
        ``(H, W, 3)`` uint8, a new array.

    Raises
    ------
    ValueError
        When the mask's size is not the photo's.
    """
    out = np.array(rgb, dtype=np.uint8, copy=True)
    if mask is None:
        return out
    if mask.shape[:2] != out.shape[:2]:
        raise ValueError(f"mask is {mask.shape[:2]}, the photo {out.shape[:2]}: sizes differ")
    _blend(out, np.asarray(mask) > 0, tint, strength, outline)
    return out


def _blend(
    out: np.ndarray,
    product: np.ndarray,
    tint: tuple[int, int, int],
    strength: float,
    outline: tuple[int, int, int] | None,
) -> None:
    back = ~product
    if back.any():
        pixels = out[back].astype(np.float32)
        pixels = (1.0 - strength) * pixels + strength * np.asarray(tint, np.float32)
        out[back] = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
    if outline is not None:
        edge = product & ~_eroded(product)
        out[edge] = outline


def _eroded(product: np.ndarray) -> np.ndarray:
    """Product pixels whose four neighbours are product too (the image border counts as product)."""
    padded = np.pad(product, 1, mode="edge")
    return product & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def _resize_nearest(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)


def read_mask(path: Path | str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask PNG as ``(H, W)`` uint8 0 / 255 (non-zero = product), resized to ``size = (w, h)``.

    Raises
    ------
    ValueError
        When the file cannot be read as an image.
    """
    data = np.fromfile(str(path), dtype=np.uint8)
    mask = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if mask is None:
        raise ValueError(f"'{path}' is not a readable mask image")
    mask = np.where(mask > 127, 255, 0).astype(np.uint8)
    if size is not None and (mask.shape[1], mask.shape[0]) != tuple(size):
        mask = _resize_nearest(mask, int(size[0]), int(size[1]))
    return mask


def load_photo_and_mask(
    photo: Path | str,
    working_copy: Path | str | None,
    mask_file: Path | str | None,
    max_size: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The photo at the run's working size and its mask, for the inspector.

    Parameters
    ----------
    photo
        The user's photo.
    working_copy
        The last run's working copy (same pixels as the masks); None: decode ``photo``
        downscaled to ``max_size`` as ingest would.
    mask_file
        The mask to show (None: none); resized to the photo (nearest) when its size differs.
    max_size
        Ingest's longest side (``IngestConfig.max_image_size``).

    Returns
    -------
    tuple
        ``(rgb (H, W, 3) uint8, mask (H, W) uint8 0 / 255 or None)``.

    Raises
    ------
    engine.io.ImageReadError
        When the photo cannot be read.
    """
    from engine.io import ImageReadError, read_image

    rgb = None
    if working_copy is not None:
        try:
            rgb, _ = read_image(working_copy)
        except ImageReadError as exc:
            logger.info("Working copy unreadable, decoding the photo instead: %s", exc)
    if rgb is None:
        rgb, _ = read_image(photo, max_size=max_size)
    mask = None
    if mask_file is not None:
        try:
            mask = read_mask(mask_file, (rgb.shape[1], rgb.shape[0]))
        except (ValueError, OSError) as exc:
            logger.warning("Cannot read the mask %s: %s", mask_file, exc)
    return np.ascontiguousarray(rgb, dtype=np.uint8), mask


class MaskCanvas(QWidget):
    """The photo with its mask overlaid, scaled to fit; left-drag paints with the brush.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8 photo.
    mask
        ``(H, W)`` mask (non-zero = product), or None: painting starts from "all product".
    parent
        Parent widget.

    Signals
    -------
    edited
        A stroke was painted or undone.
    """

    edited = Signal()

    def __init__(
        self, rgb: np.ndarray, mask: np.ndarray | None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = self._rgb.shape[:2]
        self._has_mask = mask is not None
        start = np.full((h, w), 255, np.uint8) if mask is None else mask
        self._mask = np.where(np.asarray(start) > 0, 255, 0).astype(np.uint8)
        self._overlay = overlay_mask(self._rgb, self._mask if self._has_mask else None)
        self._undo: list[np.ndarray] = []
        self._stroke_last: tuple[int, int] | None = None
        self._cursor: QPointF | None = None
        self.brush_size = max(4, round(max(w, h) / 40))
        self.adding = False
        self._drag_add = False
        self.setMouseTracking(True)
        self.setMinimumSize(320, 240)
        self.setCursor(Qt.CursorShape.CrossCursor)

    # ------------------------------------------------------------------ state

    @property
    def mask(self) -> np.ndarray:
        """The mask as painted, ``(H, W)`` uint8 0 / 255 (a copy)."""
        return self._mask.copy()

    @property
    def has_mask(self) -> bool:
        """Whether a mask is shown (one was given, or a stroke was painted)."""
        return self._has_mask

    def overlay(self) -> np.ndarray:
        """The image shown: the photo with the backdrop tinted (a copy)."""
        return self._overlay.copy()

    @property
    def can_undo(self) -> bool:
        """Whether there is a stroke to undo."""
        return bool(self._undo)

    def undo(self) -> bool:
        """Undo the last stroke; False when there is none."""
        if not self._undo:
            return False
        self._mask = self._undo.pop()
        self._refresh()
        self.edited.emit()
        return True

    def replace(self, mask: np.ndarray) -> None:
        """Replace the whole mask (non-zero = product) as one stroke: undo brings it back."""
        mask = np.asarray(mask)
        if mask.shape != self._mask.shape:
            raise ValueError(f"mask of {mask.shape} for a photo of {self._mask.shape}")
        self._begin_stroke()
        self._mask = np.where(mask > 0, 255, 0).astype(np.uint8)
        self._has_mask = True
        self._refresh()
        self.edited.emit()

    def stroke(
        self, points: list[tuple[float, float]], add: bool | None = None, size: int | None = None
    ) -> None:
        """Paint one stroke through ``points`` (image pixels), as a mouse drag does.

        Parameters
        ----------
        points
            The stroke's path; one point paints a dot.
        add
            True paints product, False erases to backdrop; None: :attr:`adding`.
        size
            Brush diameter in image pixels; None: :attr:`brush_size`.
        """
        if not points:
            return
        self._begin_stroke()
        for x, y in points:
            self._paint_to(x, y, self.adding if add is None else add, size)
        self._stroke_last = None
        self.edited.emit()

    # ------------------------------------------------------------------ painting

    def _begin_stroke(self) -> None:
        self._undo.append(self._mask.copy())
        del self._undo[:-UNDO_DEPTH]
        self._stroke_last = None

    def _paint_to(self, x: float, y: float, add: bool, size: int | None = None) -> None:
        diameter = max(1, int(size if size is not None else self.brush_size))
        radius = max(0, diameter // 2)
        point = (int(round(x)), int(round(y)))
        last = self._stroke_last or point
        value = 255 if add else 0
        cv2.line(self._mask, last, point, value, thickness=max(1, diameter), lineType=cv2.LINE_8)
        cv2.circle(self._mask, point, radius, value, thickness=-1)
        self._stroke_last = point
        self._has_mask = True
        h, w = self._mask.shape
        pad = radius + 2
        x0, x1 = sorted((last[0], point[0]))
        y0, y1 = sorted((last[1], point[1]))
        self._refresh(
            max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad + 1), min(h, y1 + pad + 1)
        )

    def _refresh(
        self, x0: int = 0, y0: int = 0, x1: int | None = None, y1: int | None = None
    ) -> None:
        h, w = self._mask.shape
        x1 = w if x1 is None else x1
        y1 = h if y1 is None else y1
        if x1 <= x0 or y1 <= y0:
            return
        # one pixel more on each side: the outline depends on the neighbours
        ex0, ey0, ex1, ey1 = max(0, x0 - 1), max(0, y0 - 1), min(w, x1 + 1), min(h, y1 + 1)
        region = self._rgb[ey0:ey1, ex0:ex1].copy()
        if self._has_mask:
            _blend(
                region,
                self._mask[ey0:ey1, ex0:ex1] > 0,
                BACKDROP_TINT,
                BACKDROP_STRENGTH,
                OUTLINE_RGB,
            )
        self._overlay[y0:y1, x0:x1] = region[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]
        self.update()

    # ------------------------------------------------------------------ geometry

    def _image_rect(self) -> QRectF:
        h, w = self._rgb.shape[:2]
        scale = min(self.width() / w, self.height() / h)
        dw, dh = w * scale, h * scale
        return QRectF((self.width() - dw) / 2, (self.height() - dh) / 2, dw, dh)

    def to_image(self, point: QPointF) -> tuple[float, float]:
        """Widget coordinates -> image pixels."""
        rect = self._image_rect()
        scale = rect.width() / self._rgb.shape[1]
        return (point.x() - rect.left()) / scale, (point.y() - rect.top()) / scale

    def sizeHint(self) -> QSize:  # noqa: D102 - Qt override
        h, w = self._rgb.shape[:2]
        scale = min(1.0, 900 / w, 650 / h)
        return QSize(int(w * scale), int(h * scale))

    # ------------------------------------------------------------------ Qt events

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: D102 - Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(30, 30, 34))
        h, w = self._overlay.shape[:2]
        image = QImage(self._overlay.data, w, h, 3 * w, QImage.Format.Format_RGB888)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(self._image_rect(), image)
        if self._cursor is not None:
            rect = self._image_rect()
            radius = self.brush_size / 2 * rect.width() / w
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            colour = QColor(0, 220, 255) if self.adding else QColor(255, 90, 90)
            painter.setPen(QPen(colour, 1.5))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(self._cursor, radius, radius)
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: D102 - Qt override
        if event.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            # right button: the opposite of the chosen brush, for quick touch-ups
            self._drag_add = self.adding ^ (event.button() == Qt.MouseButton.RightButton)
            self._begin_stroke()
            self._paint_to(*self.to_image(event.position()), self._drag_add)
            event.accept()
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: D102 - Qt override
        self._cursor = event.position()
        if self._stroke_last is not None and event.buttons() & (
            Qt.MouseButton.LeftButton | Qt.MouseButton.RightButton
        ):
            self._paint_to(*self.to_image(event.position()), self._drag_add)
        self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: D102 - Qt override
        if self._stroke_last is not None:
            self._stroke_last = None
            self.edited.emit()
        super().mouseReleaseEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: ANN001, D102 - Qt override
        self._cursor = None
        self.update()
        super().leaveEvent(event)


class MaskInspector(QDialog):
    """One photo, its mask, the "use mask" switch and the repaint tool (non-modal).

    Parameters
    ----------
    photo
        The photo's path (shown in the title; the signals carry it).
    rgb, mask
        The photo at working size and its mask (None: none yet); see
        :func:`load_photo_and_mask`.
    source
        Where the mask comes from: ``painted``, ``auto`` or ``none`` (see :data:`MASK_SOURCES`).
    use_mask
        Whether the mask is used in the next run.
    reason
        Why the last run made no mask for this photo ("" when it did, or it is not known).
    product
        The product the last run found in 3D, seen from this photo (the mesh's silhouette, at
        the photo's size), or None: "Start from the 3D product" loads it into the brush's mask,
        to save as this photo's painted mask.
    disagrees
        Whether the last run found this photo's mask at odds with that product.
    parent
        Parent widget.

    Signals
    -------
    use_mask_changed(str, bool)
        ``(photo, used)``: the user ticked or unticked "Use mask for this photo".
    mask_saved(str, object)
        ``(photo, mask)``: "Save mask": an ``(H, W)`` uint8 0 / 255 array to store.
    mask_reverted(str)
        "Forget painted mask": the next run computes the mask again.
    """

    use_mask_changed = Signal(str, bool)
    mask_saved = Signal(str, object)
    mask_reverted = Signal(str)

    def __init__(
        self,
        photo: Path | str,
        rgb: np.ndarray,
        mask: np.ndarray | None,
        source: str = "auto",
        use_mask: bool = True,
        reason: str = "",
        product: np.ndarray | None = None,
        disagrees: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.photo = str(photo)
        self.setWindowTitle(f"Mask — {Path(self.photo).name}")
        self.setModal(False)
        self.resize(860, 700)
        self.canvas = MaskCanvas(rgb, mask, self)
        self.canvas.edited.connect(self._on_edited)
        self._dirty = False
        self._source = source if source in MASK_SOURCES else "auto"

        self.use_mask = QCheckBox("Use mask for this photo", self)
        self.use_mask.setChecked(use_mask)
        self.use_mask.setToolTip(
            "Untick when the mask cuts off part of the product: the next run uses the whole photo."
        )
        self.use_mask.toggled.connect(lambda on: self.use_mask_changed.emit(self.photo, on))

        self.erase_button = QRadioButton("Erase (backdrop)", self)
        self.add_button = QRadioButton("Add (product)", self)
        self.erase_button.setChecked(True)
        modes = QButtonGroup(self)
        modes.addButton(self.erase_button)
        modes.addButton(self.add_button)
        self.add_button.toggled.connect(self._set_adding)
        self.brush = QSpinBox(self)
        self.brush.setRange(1, 400)
        self.brush.setSuffix(" px")
        self.brush.setValue(self.canvas.brush_size)
        self.brush.setToolTip("Brush diameter in photo pixels")
        self.brush.valueChanged.connect(self._set_brush)
        self.undo_button = QPushButton("Undo stroke", self)
        self.undo_button.setShortcut("Ctrl+Z")
        self.undo_button.setEnabled(False)
        self.undo_button.clicked.connect(self.undo)
        self.save_button = QPushButton("Save mask", self)
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.save)
        self.revert_button = QPushButton("Forget painted mask", self)
        self.revert_button.setEnabled(self._source == "painted")
        self.revert_button.clicked.connect(self.revert)
        self._product = product
        self.product_button = QPushButton("Start from the 3D product", self)
        self.product_button.setEnabled(product is not None)
        self.product_button.setToolTip(
            "The product the last run found in 3D, seen from this photo: load it as the mask, "
            "touch it up and save it"
            if product is not None
            else "No product found in 3D yet: a finished run with a mesh makes one"
        )
        self.product_button.clicked.connect(self.use_product)

        note = MASK_SOURCES[self._source]
        if reason and self._source == "none":
            note = f"The last run made no mask for this photo: {reason}. " + note
        if disagrees:
            note = (
                "This mask disagrees with the product the last run found in 3D; "
                '"Start from the 3D product" loads that outline. ' + note
            )
        self.note = QLabel(note, self)
        self.note.setWordWrap(True)
        self.note.setObjectName("hint")

        tools = QHBoxLayout()
        tools.addWidget(self.erase_button)
        tools.addWidget(self.add_button)
        tools.addWidget(QLabel("Brush", self))
        tools.addWidget(self.brush)
        tools.addWidget(self.undo_button)
        tools.addStretch(1)
        tools.addWidget(self.product_button)
        tools.addWidget(self.revert_button)
        tools.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.use_mask)
        layout.addWidget(self.canvas, 1)
        layout.addLayout(tools)
        layout.addWidget(self.note)
        hint = QLabel(
            "Drag to paint; the right button paints the opposite. Dark, tinted areas are left "
            "out of the model.",
            self,
        )
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        layout.addWidget(hint)

    # ------------------------------------------------------------------ actions

    @property
    def source(self) -> str:
        """Where the mask shown comes from (``painted``, ``auto``, ``none``)."""
        return self._source

    @property
    def modified(self) -> bool:
        """Whether there are painted strokes not saved yet."""
        return self._dirty

    def use_product(self) -> bool:
        """Load the product found in 3D as the mask (one undoable step); False without one."""
        if self._product is None:
            return False
        self.canvas.replace(self._product)
        return True

    def undo(self) -> bool:
        """Undo the last stroke."""
        return self.canvas.undo()

    def save(self) -> np.ndarray:
        """Emit ``mask_saved`` with the painted mask and return it."""
        mask = self.canvas.mask
        self.mask_saved.emit(self.photo, mask)
        self._dirty = False
        self._source = "painted"
        self.note.setText(MASK_SOURCES["painted"])
        self.save_button.setEnabled(False)
        self.revert_button.setEnabled(True)
        return mask

    def revert(self) -> None:
        """Forget the painted mask (the dialog closes: the mask shown is no longer the one used)."""
        self.mask_reverted.emit(self.photo)
        self._source = "auto"
        self.note.setText("Painted mask forgotten: the next run computes one again.")
        self.revert_button.setEnabled(False)

    def _on_edited(self) -> None:
        self._dirty = True
        self.save_button.setEnabled(True)
        self.undo_button.setEnabled(self.canvas.can_undo)

    def _set_adding(self, adding: bool) -> None:
        self.canvas.adding = adding
        self.canvas.update()

    def _set_brush(self, size: int) -> None:
        self.canvas.brush_size = int(size)
        self.canvas.update()
