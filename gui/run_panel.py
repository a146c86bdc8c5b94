"""The window's right side: the set's settings, Run / Cancel / Export…, progress, log, coverage.

:class:`RunPanel` lays these out so that the settings scroll on a short screen while the run
buttons stay in sight. It only shows: the window connects the buttons and the settings, and the
panels subscribe to the window's progress and result models.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from gui.coverage_widget import CoverageWidget
from gui.log_panel import LogPanel
from gui.models import ProgressModel
from gui.progress_panel import ProgressPanel
from gui.results import ResultModel
from gui.settings_panel import SettingsPanel


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


class RunPanel(QWidget):
    """Settings, the run buttons, the progress panel and the Log / Coverage tabs, top to bottom.

    Parameters
    ----------
    progress_model, result_model
        What the progress panel and the coverage map show.
    gpu_probe
        Finds the GPU's name for the settings panel (tests pass a stub).
    parent
        Parent widget.

    Attributes
    ----------
    settings, progress_panel, log_panel, coverage, tabs
        The panels.
    run_button, cancel_button, export_button
        The run buttons (the run button's object name is ``runButton``).
    """

    def __init__(
        self,
        progress_model: ProgressModel,
        result_model: ResultModel,
        gpu_probe: Callable[[], str] | None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = SettingsPanel(gpu_probe=gpu_probe)
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("runButton")
        self.run_button.setToolTip("Reconstruct the selected image set (Ctrl+R)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.export_button = QPushButton("Export…")
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button, 2)
        run_row.addWidget(self.cancel_button, 1)
        run_row.addWidget(self.export_button, 1)
        self.progress_panel = ProgressPanel(progress_model)
        self.log_panel = LogPanel()
        self.coverage = CoverageWidget(result_model)

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
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 6, 6)
        # the settings scroll on a short screen; the run buttons stay in sight
        settings_scroll = _FitScrollArea()
        settings_scroll.setWidget(settings_box)
        settings_scroll.setWidgetResizable(True)
        settings_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        settings_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        settings_scroll.setMinimumHeight(80)
        settings_scroll.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        settings_scroll.setMinimumWidth(settings_box.minimumSizeHint().width())
        layout.addWidget(settings_scroll)
        layout.addLayout(run_row)
        layout.addWidget(progress_box)
        layout.addWidget(self.tabs, 1)
