"""Set scale…: a size of the product the user knows, or a distance between two picked points.

Photos alone give a model in arbitrary units. Without printed markers the user can give the
scale here: a product dimension (width, depth or height, in millimetres), or two points picked
in the 3D view (Shift+click) and the distance between them on the real product. The dialog only
edits settings; the next run applies them (it resumes, so only scale and export recompute).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from engine.config import ScaleConfig
from gui.project import DIMENSIONS, replace_known

#: Dialog modes.
MODES = ("none", "dimension", "points")


def _mm_box(parent: QWidget) -> QDoubleSpinBox:
    box = QDoubleSpinBox(parent)
    box.setRange(0.0, 100_000.0)
    box.setDecimals(1)
    box.setSuffix(" mm")
    box.setSingleStep(1.0)
    return box


class SetScaleDialog(QDialog):
    """The scale settings of one image set.

    Parameters
    ----------
    values
        The set's current settings: ``known_dimension``, ``known_dimension_mm``,
        ``known_distance_mm``, ``known_points`` (as :class:`gui.project.ImageSet` holds them).
    metres_per_unit
        The last run's scale, to show the picked distance in millimetres (None: unknown).
    parent
        Parent widget.

    Signals
    -------
    points_changed(object)
        The picked points changed: a ``(K, 3)`` array, K <= 2 (the view marks them).
    """

    points_changed = Signal(object)

    def __init__(
        self,
        values: dict[str, Any] | None = None,
        metres_per_unit: float | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Set scale")
        self.setModal(False)
        self.setMinimumWidth(440)
        values = dict(values or {})
        self.metres_per_unit = metres_per_unit
        self._points: list[np.ndarray] = [
            np.asarray(p, dtype=np.float64) for p in values.get("known_points") or []
        ][:2]

        self.none_button = QRadioButton("No known size (printed markers only, if any)", self)
        self.dimension_button = QRadioButton("A size of the product I know", self)
        self.points_button = QRadioButton("The distance between two points", self)
        group = QButtonGroup(self)
        for button in (self.none_button, self.dimension_button, self.points_button):
            group.addButton(button)
            button.toggled.connect(self._update)

        self.dimension = QComboBox(self)
        for name in DIMENSIONS:
            self.dimension.addItem(name.capitalize(), name)
        self.dimension_mm = _mm_box(self)
        dimension_row = QHBoxLayout()
        dimension_row.addWidget(self.dimension)
        dimension_row.addWidget(self.dimension_mm)
        dimension_row.addStretch(1)

        self.points_label = QLabel(self)
        self.points_label.setWordWrap(True)
        self.distance_mm = _mm_box(self)
        self.clear_button = QPushButton("Clear points", self)
        self.clear_button.clicked.connect(self.clear_points)
        distance_row = QHBoxLayout()
        distance_row.addWidget(QLabel("Distance", self))
        distance_row.addWidget(self.distance_mm)
        distance_row.addWidget(self.clear_button)
        distance_row.addStretch(1)

        hint = QLabel(
            "Width and depth are the sides of the product's footprint (width the longer), "
            "height from its base to its top. The next run applies the scale; only the scale "
            "and the exports are recomputed.",
            self,
        )
        hint.setWordWrap(True)
        hint.setObjectName("hint")

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow(self.none_button)
        form.addRow(self.dimension_button)
        form.addRow("", dimension_row)
        form.addRow(self.points_button)
        form.addRow("", self.points_label)
        form.addRow("", distance_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(hint)
        layout.addWidget(self.buttons)

        dim = values.get("known_dimension") or ""
        if dim in DIMENSIONS:
            self.dimension.setCurrentIndex(DIMENSIONS.index(dim))
        self.dimension_mm.setValue(float(values.get("known_dimension_mm") or 0.0))
        self.distance_mm.setValue(float(values.get("known_distance_mm") or 0.0))
        if len(self._points) == 2 and self.distance_mm.value() > 0:
            self.points_button.setChecked(True)
        elif dim and self.dimension_mm.value() > 0:
            self.dimension_button.setChecked(True)
        else:
            self.none_button.setChecked(True)
        for widget in (self.dimension_mm, self.distance_mm):
            widget.valueChanged.connect(self._update)
        self._update()

    # ------------------------------------------------------------------ API

    @property
    def mode(self) -> str:
        """``none``, ``dimension`` or ``points``."""
        if self.dimension_button.isChecked():
            return "dimension"
        if self.points_button.isChecked():
            return "points"
        return "none"

    def set_mode(self, mode: str) -> None:
        """Choose ``none``, ``dimension`` or ``points``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        button = {
            "none": self.none_button,
            "dimension": self.dimension_button,
            "points": self.points_button,
        }[mode]
        button.setChecked(True)

    @property
    def points(self) -> np.ndarray:
        """The picked points, ``(K, 3)``, K <= 2."""
        return np.array(self._points, dtype=np.float64).reshape(-1, 3)

    def add_point(self, point: np.ndarray | list[float]) -> None:
        """A point picked in the 3D view: the first two are kept, a third starts again."""
        p = np.asarray(point, dtype=np.float64).reshape(3)
        if len(self._points) >= 2:
            self._points = []
        self._points.append(p)
        self.points_button.setChecked(True)
        self._update()
        self.points_changed.emit(self.points)

    def clear_points(self) -> None:
        """Forget the picked points."""
        self._points = []
        self._update()
        self.points_changed.emit(self.points)

    def is_complete(self) -> bool:
        """Whether the chosen mode has all it needs (the OK button is enabled then)."""
        if self.mode == "dimension":
            return self.dimension_mm.value() > 0
        if self.mode == "points":
            return (
                len(self._points) == 2
                and float(np.linalg.norm(self._points[1] - self._points[0])) > 0
                and self.distance_mm.value() > 0
            )
        return True

    def values(self) -> dict[str, Any]:
        """The settings as :class:`gui.project.ImageSet` fields (unused ones cleared)."""
        out: dict[str, Any] = {
            "known_dimension": "",
            "known_dimension_mm": 0.0,
            "known_distance_mm": 0.0,
            "known_points": [],
        }
        if self.mode == "dimension" and self.is_complete():
            out["known_dimension"] = str(self.dimension.currentData())
            out["known_dimension_mm"] = float(self.dimension_mm.value())
        elif self.mode == "points" and self.is_complete():
            out["known_distance_mm"] = float(self.distance_mm.value())
            out["known_points"] = [[float(v) for v in p] for p in self._points]
        return out

    def scale_config(self, base: ScaleConfig | None = None) -> ScaleConfig:
        """``base`` (default: a plain ScaleConfig) with this dialog's known size or distance."""
        values = self.values()
        values["known_points"] = tuple(tuple(p) for p in values["known_points"])
        return replace_known(base if base is not None else ScaleConfig(), values)

    # ------------------------------------------------------------------ reactions

    def _update(self) -> None:
        dimension = self.mode == "dimension"
        points = self.mode == "points"
        self.dimension.setEnabled(dimension)
        self.dimension_mm.setEnabled(dimension)
        self.distance_mm.setEnabled(points)
        self.clear_button.setEnabled(points and bool(self._points))
        n = len(self._points)
        if n == 0:
            text = "Shift+click a point on the model in the 3D view, then a second one."
        elif n == 1:
            text = "First point picked: Shift+click the second one."
        else:
            units = float(np.linalg.norm(self._points[1] - self._points[0]))
            text = f"Two points picked, {units:.4g} units apart in the model"
            if self.metres_per_unit:
                text += f" ({units * self.metres_per_unit * 1000:.1f} mm by the last run's scale)"
            text += ". Enter their real distance:"
        self.points_label.setText(text)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(self.is_complete())
