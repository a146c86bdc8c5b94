"""The log panel: log records of the app and the engine, newest at the bottom, capped in size."""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable

from PySide6.QtCore import QObject
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QVBoxLayout, QWidget

from gui.errors import QtLogHandler

#: Colours of the levels that deserve attention (others use the default text colour).
LEVEL_COLOURS = {"WARNING": "#b36b00", "ERROR": "#c0392b", "CRITICAL": "#c0392b"}


class PanelFormatter(logging.Formatter):
    """Short lines for the panel: ``12:04:31 message``; the level is named from warnings up."""

    def __init__(self) -> None:
        super().__init__("%(message)s")

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102 - logging API
        text = super().format(record)
        stamp = self.formatTime(record, "%H:%M:%S")
        if record.levelno >= logging.WARNING:
            return f"{stamp} {record.levelname.capitalize()}: {text}"
        return f"{stamp} {text}"


class LogPanel(QWidget):
    """Read-only view of log lines, keeping at most ``max_lines`` (older lines are dropped).

    Parameters
    ----------
    max_lines
        Lines kept; a long run logs a lot and a text widget slows down past a few thousand.
    parent
        Parent widget.
    """

    def __init__(self, max_lines: int = 2000, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(max_lines)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        size = self.font().pointSizeF()
        if size > 0:
            font.setPointSizeF(max(7.0, size - 1))
        self.text.setFont(font)
        self.text.setPlaceholderText("The run's log appears here.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text)

    def append(self, level: str, text: str) -> None:
        """Add one record (``level`` is a logging level name such as ``WARNING``)."""
        colour = LEVEL_COLOURS.get(level.upper())
        if colour is None:
            self.text.appendPlainText(text)
        else:
            body = html.escape(text).replace("\n", "<br>")
            self.text.appendHtml(f'<span style="color:{colour}">{body}</span>')

    def clear(self) -> None:
        """Remove every line."""
        self.text.clear()

    def lines(self) -> list[str]:
        """The lines shown (for tests and copying)."""
        return self.text.toPlainText().splitlines()

    def follow(self, loggers: Iterable[str], parent: QObject | None = None) -> QtLogHandler:
        """Show the records of the named loggers from now on (``gui`` at INFO if it is unset).

        Returns
        -------
        QtLogHandler
            The handler attached to them (give it to :meth:`unfollow`).
        """
        handler = QtLogHandler(parent=parent)
        handler.setFormatter(PanelFormatter())
        handler.record.connect(self.append)
        for name in loggers:
            logging.getLogger(name).addHandler(handler)
        if logging.getLogger("gui").level == logging.NOTSET:
            logging.getLogger("gui").setLevel(logging.INFO)
        return handler

    @staticmethod
    def unfollow(handler: QtLogHandler, loggers: Iterable[str]) -> None:
        """Detach ``handler`` (from :meth:`follow`) from the named loggers."""
        for name in loggers:
            logging.getLogger(name).removeHandler(handler)
