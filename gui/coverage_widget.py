"""The coverage map (azimuth x elevation, cells shaded by photo count, gaps in red) and advice.

Subscribes to a :class:`gui.results.ResultModel`: a new report redraws the map and the advice
lines (coverage gaps, pre-flight findings, the masks' summary and turntable note).

Empty cells of a gap the engine named (``gap_cells`` in the report) are red: views that a
reshoot should add; other empty cells are only dark (below a product standing on something, or
cells the engine does not count as a gap). A report without ``gap_cells`` gets red for every
empty cell above the horizon.
"""

from __future__ import annotations

import html

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from gui.results import Coverage, ResultModel, mask_summary

#: Empty cell where photos are expected (a gap).
GAP_COLOUR = QColor(196, 58, 48)
#: Empty cell below the horizon (not a gap).
EMPTY_COLOUR = QColor(46, 46, 52)
#: Cell colours for the fewest and the most photos.
LOW_COLOUR = QColor(38, 74, 120)
HIGH_COLOUR = QColor(110, 200, 255)


def cell_expected(elevation_low: float, elevation_high: float) -> bool:
    """Whether photos are expected in a row of cells: it reaches above the horizon."""
    return elevation_high > 0.0


def cell_colour(count: float, max_count: float, expected: bool = True) -> QColor:
    """Colour of one cell of the map.

    Parameters
    ----------
    count
        Photos in the cell.
    max_count
        Photos in the fullest cell.
    expected
        Whether the cell is above the horizon (an empty one is then a gap).

    Returns
    -------
    QColor
        :data:`GAP_COLOUR` or :data:`EMPTY_COLOUR` for an empty cell, else from
        :data:`LOW_COLOUR` (one photo) to :data:`HIGH_COLOUR` (the fullest cell).
    """
    if count <= 0:
        return QColor(GAP_COLOUR if expected else EMPTY_COLOUR)
    t = 1.0 if max_count <= 1 else min(1.0, (count - 1.0) / (max_count - 1.0))
    lo, hi = LOW_COLOUR, HIGH_COLOUR
    return QColor(
        round(lo.red() + t * (hi.red() - lo.red())),
        round(lo.green() + t * (hi.green() - lo.green())),
        round(lo.blue() + t * (hi.blue() - lo.blue())),
    )


def cell_colours(coverage: Coverage) -> np.ndarray:
    """``(rows, cols, 3)`` uint8 RGB of every cell (row 0: the lowest elevation)."""
    counts = coverage.counts
    rows, cols = counts.shape
    out = np.zeros((rows, cols, 3), np.uint8)
    peak = float(counts.max()) if counts.size else 0.0
    for r in range(rows):
        expected = cell_expected(coverage.elevation_edges[r], coverage.elevation_edges[r + 1])
        for c in range(cols):
            if coverage.gap_cells is not None:
                expected = bool(coverage.gap_cells[r, c])
            colour = cell_colour(float(counts[r, c]), peak, expected)
            out[r, c] = (colour.red(), colour.green(), colour.blue())
    return out


class CoverageMap(QWidget):
    """Paints the azimuth x elevation grid of a :class:`Coverage` (highest elevation on top)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._coverage: Coverage | None = None
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_coverage(self, coverage: Coverage | None) -> None:
        """Draw ``coverage`` (None: an empty frame)."""
        self._coverage = coverage if coverage is not None and coverage.has_map else None
        self.update()

    def sizeHint(self) -> QSize:  # noqa: D102 - Qt override
        return QSize(320, 150)

    def grid_rect(self) -> QRectF:
        """Where the cells are drawn (leaves room for the axis labels)."""
        return QRectF(34, 6, max(10, self.width() - 52), max(10, self.height() - 24))

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: D102 - Qt override
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        grid = self.grid_rect()
        coverage = self._coverage
        font = QFont(painter.font())
        font.setPixelSize(10)
        painter.setFont(font)
        if coverage is None:
            painter.setPen(QColor(140, 140, 140))
            painter.drawText(
                grid, Qt.AlignmentFlag.AlignCenter, "The coverage map appears after a run."
            )
            painter.end()
            return
        colours = cell_colours(coverage)
        rows, cols = coverage.counts.shape
        cw, ch = grid.width() / cols, grid.height() / rows
        painter.setPen(QPen(QColor(20, 20, 22), 1))
        for r in range(rows):
            y = grid.top() + (rows - 1 - r) * ch  # the highest elevation on top
            for c in range(cols):
                rgb = colours[r, c]
                painter.setBrush(QColor(int(rgb[0]), int(rgb[1]), int(rgb[2])))
                painter.drawRect(QRectF(grid.left() + c * cw, y, cw, ch))
                count = int(coverage.counts[r, c])
                if count and ch >= 12 and cw >= 14:
                    painter.setPen(QColor(10, 10, 12))
                    painter.drawText(
                        QRectF(grid.left() + c * cw, y, cw, ch),
                        Qt.AlignmentFlag.AlignCenter,
                        str(count),
                    )
                    painter.setPen(QPen(QColor(20, 20, 22), 1))
        painter.setPen(QColor(170, 170, 175))
        el = coverage.elevation_edges
        for r in range(rows + 1):
            y = grid.bottom() - r * ch
            if r % max(1, rows // 3) == 0 or r == rows:
                painter.drawText(
                    QRectF(0, y - 7, 30, 14),
                    Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                    f"{el[r]:.0f}°",
                )
        az = coverage.azimuth_edges
        step = max(1, cols // 4)
        for c in range(0, cols + 1, step):
            x = grid.left() + c * cw
            painter.drawText(
                QRectF(x - 20, grid.bottom() + 2, 40, 14),
                Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop,
                f"{az[c]:.0f}°",
            )
        painter.end()


class CoverageWidget(QWidget):
    """The coverage map of the result on show, with the advice below it.

    Parameters
    ----------
    model
        The result model; the widget subscribes to ``report_changed``.
    parent
        Parent widget.
    """

    def __init__(self, model: ResultModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model = model
        self.map = CoverageMap(self)
        self.caption = QLabel(self)
        self.caption.setObjectName("hint")
        self.caption.setWordWrap(True)
        self.advice = QLabel(self)
        self.advice.setWordWrap(True)
        self.advice.setTextFormat(Qt.TextFormat.RichText)
        self.advice.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.advice.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.map)
        layout.addWidget(self.caption)
        layout.addWidget(self.advice, 1)
        model.report_changed.connect(self.refresh)
        self.refresh()

    def advice_lines(self) -> list[str]:
        """The lines shown under the map (plain text)."""
        coverage = self._model.coverage
        lines = list(coverage.advice) if coverage is not None else []
        if coverage is not None:
            lines += [g for g in coverage.gaps if g not in lines]
            lines += [n for n in coverage.notes if n not in lines]
        report = self._model.report or {}
        masks = mask_summary(report)
        if masks:
            lines.append(masks)
        notes = report.get("notes") if isinstance(report, dict) else None
        for note in notes if isinstance(notes, list) else []:
            if isinstance(note, str) and note.strip() and note.strip() not in " ".join(lines):
                lines.append(note.strip())
        return lines

    def refresh(self) -> None:
        """Redraw from the model's report."""
        coverage = self._model.coverage
        self.map.set_coverage(coverage)
        if coverage is not None and coverage.has_map:
            rows, cols = coverage.counts.shape
            self.caption.setText(
                f"Photos per direction around the product ({cols} x {rows} cells; "
                "red: a gap worth a reshoot)."
            )
        else:
            self.caption.setText("")
        lines = self.advice_lines()
        if lines:
            items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
            self.advice.setText(f"<ul style='margin-left:-20px'>{items}</ul>")
        elif self._model.report is not None:
            self.advice.setText("No advice: the photos cover the product well.")
        else:
            self.advice.setText("")
