"""The progress panel: one row per stage (bar, message, elapsed and time left) and the total.

The panel subscribes to a :class:`gui.models.ProgressModel` and redraws from a 0.5 s timer, so a
burst of progress events costs one repaint and the clocks keep ticking between events.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import QGridLayout, QLabel, QSizePolicy, QWidget

from gui.models import STAGE_WEIGHTS, ProgressModel

#: What each stage is called on screen.
STAGE_TITLES = {
    "ingest": "Reading photos",
    "masks": "Product masks",
    "sfm": "Placing cameras",
    "dense": "Depth maps",
    "depth_prior": "Depth network",
    "fuse": "Fusing surface",
    "mesh": "Mesh",
    "scale": "Size, coverage",
    "export": "Writing files",
}


def format_seconds(seconds: float | None) -> str:
    """``75.2`` -> ``"1:15"``; None -> ``"–"``."""
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class StageBar(QWidget):
    """A thin progress bar that repaints only through ``update()``.

    ``QProgressBar.setValue`` repaints synchronously; next to an OpenGL view that means a
    composition of the whole window per call, which stalls the event loop on software GL.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._fraction = 0.0
        self.setFixedHeight(8)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: D102 - Qt override
        return QSize(120, 8)

    def value(self) -> int:
        """Progress in thousandths (0-1000)."""
        return int(round(1000 * self._fraction))

    def set_fraction(self, fraction: float) -> None:
        """Show ``fraction`` (0-1) done; repaints later, and only when it visibly changed."""
        fraction = min(1.0, max(0.0, float(fraction)))
        if abs(fraction - self._fraction) * max(self.width(), 1) >= 0.5 or (
            fraction in (0.0, 1.0) and fraction != self._fraction
        ):
            self._fraction = fraction
            self.update()

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: D102 - Qt override
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        painter.setBrush(self.palette().color(QPalette.ColorRole.Mid))
        painter.drawRoundedRect(rect, 3, 3)
        if self._fraction > 0:
            done = QRectF(rect.x(), rect.y(), rect.width() * self._fraction, rect.height())
            painter.setBrush(self.palette().color(QPalette.ColorRole.Highlight))
            painter.drawRoundedRect(done, 3, 3)


def _set_text(label: QLabel, text: str) -> None:
    # setText relayouts and repaints even when the text is the same
    if label.text() != text:
        label.setText(text)


class _StageRow:
    """The widgets of one stage."""

    def __init__(self, parent: QWidget, name: str) -> None:
        self.name = name
        self.title = QLabel(STAGE_TITLES.get(name, name.replace("_", " ").capitalize()), parent)
        self.bar = StageBar(parent)
        self.time = QLabel("", parent)
        self.time.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        # a fixed width: the clock changing every refresh must not relayout the panel
        self.time.setFixedWidth(self.time.fontMetrics().horizontalAdvance("0:00:00 / ~0:00:00"))
        self.message = QLabel("", parent)
        self.message.setStyleSheet("color: palette(mid); font-size: 11px;")
        self.message.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)


class ProgressPanel(QWidget):
    """Per-stage progress of the current run.

    Parameters
    ----------
    model
        The progress model the panel shows.
    refresh_ms
        Redraw period while a run is going on.
    parent
        Parent widget.
    """

    def __init__(
        self, model: ProgressModel, refresh_ms: int = 500, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.model = model
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(8)
        self._grid.setVerticalSpacing(2)
        self._grid.setColumnStretch(1, 1)
        self.rows: dict[str, _StageRow] = {}
        for name in STAGE_WEIGHTS:
            self._add_row(name)
        self.total = QLabel("No run yet.", self)
        self.total.setObjectName("progressTotal")
        self._grid.addWidget(self.total, 1000, 0, 1, 3)
        self.status = ""
        self.timer = QTimer(self)
        self.timer.setInterval(refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        model.changed.connect(self._on_changed)
        self._dirty = True
        self.refresh()

    def _add_row(self, name: str) -> _StageRow:
        row = _StageRow(self, name)
        r = 2 * len(self.rows)
        self._grid.addWidget(row.title, r, 0)
        self._grid.addWidget(row.bar, r, 1)
        self._grid.addWidget(row.time, r, 2)
        self._grid.addWidget(row.message, r + 1, 0, 1, 3)
        self.rows[name] = row
        return row

    def _on_changed(self) -> None:
        # Drawn by the timer: progress events can arrive hundreds of times a second.
        self._dirty = True

    def set_status(self, text: str) -> None:
        """Show how the run ended (or any other line) under the stages."""
        self.status = text
        self._dirty = True
        self.refresh()

    def started_order(self) -> list[str]:
        """Stages that have started, in the order they started."""
        started = [(st.started, name) for name, st in self.model.stages.items() if st.started]
        return [name for _, name in sorted(started)]

    def refresh(self) -> None:
        """Redraw every row from the model (called by the timer, cheap when nothing changed)."""
        model = self.model
        running = model.started is not None and model.finished is None
        if not (self._dirty or running):
            return
        self._dirty = False
        for name, st in model.stages.items():
            row = self.rows.get(name) or self._add_row(name)
            # A stage that never started (the depth network when off) counts as finished in
            # the model once a later stage runs; show it empty, not full.
            row.bar.set_fraction(st.fraction if st.started is not None else 0.0)
            if st.started is None:
                _set_text(row.time, "")
                _set_text(row.message, "skipped" if model.finished is not None else "")
                if row.title.isEnabled() != (model.started is None):
                    row.title.setEnabled(model.started is None)
                continue
            if not row.title.isEnabled():
                row.title.setEnabled(True)
            elapsed = format_seconds(model.stage_elapsed(name))
            if st.finished is not None or st.fraction >= 1.0:
                _set_text(row.time, elapsed)
            else:
                left = model.stage_time_left(name) if running else None
                _set_text(row.time, f"{elapsed} / ~{format_seconds(left)}" if left else elapsed)
            done = st.finished is not None
            count = f"{st.current}/{st.total} " if st.total > 0 and not done else ""
            _set_text(row.message, "done" if done and not st.message else f"{count}{st.message}")
        if model.started is None:
            _set_text(self.total, self.status or "No run yet.")
            return
        text = f"Total {format_seconds(model.elapsed)}"
        if running:
            left = model.time_left
            if left is not None:
                text += f", about {format_seconds(left)} left"
        if self.status:
            text += f" — {self.status}"
        _set_text(self.total, text)
