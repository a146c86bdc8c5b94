"""One error sink for the GUI, and a logging handler a log panel can listen to.

Every error the user should see goes through :meth:`ErrorSink.report` (napari routes worker
errors to one notification manager the same way): it is logged, then shown in a non-modal
message box with the details (a traceback) behind "Show Details...". Uncaught exceptions in Qt
slots reach it through :meth:`ErrorSink.install_excepthook`.

:class:`QtLogHandler` turns log records from any thread into a Qt signal, delivered on the GUI
thread, so a log panel can show engine and GUI log lines while a run works.
"""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QWidget
from shiboken6 import isValid

logger = logging.getLogger("vitrine.gui")

#: More error boxes than this open at once are only logged (a burst of one error).
MAX_OPEN_DIALOGS = 3


class ErrorSink(QObject):
    """Logs errors and shows them to the user, from any thread.

    Signals
    -------
    reported(str, str, str)
        ``(title, message, details)`` of every report, on the GUI thread (status bars).

    Attributes
    ----------
    last_dialog
        The message box of the last report (None before the first, or when too many were
        open); for tests.
    """

    reported = Signal(str, str, str)
    _requested = Signal(str, str, str, bool)

    def __init__(self, parent_window: QWidget | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self._window = parent_window
        self._open: list[QMessageBox] = []
        self._previous_hook = None
        self.last_dialog: QMessageBox | None = None
        self._requested.connect(self._show)

    def set_parent_window(self, window: QWidget | None) -> None:
        """Window the message boxes belong to (centred on it, closed with it)."""
        self._window = window

    def report(self, title: str, message: str, details: str = "", *, warning: bool = False) -> None:
        """Log an error and show it in a non-modal message box (callable from any thread).

        Parameters
        ----------
        title
            Window title ("Reconstruction failed").
        message
            What happened and what to do, in plain words.
        details
            Technical details (a traceback, a long list), behind "Show Details...".
        warning
            Something the user should know that did not stop anything (files left out, a
            setting not used): logged as a warning, shown with the warning icon.
        """
        level = logging.WARNING if warning else logging.ERROR
        if details:
            logger.log(level, "%s: %s\n%s", title, message, details)
        else:
            logger.log(level, "%s: %s", title, message)
        if QThread.currentThread() == self.thread():
            self._show(title, message, details, warning)
        else:
            self._requested.emit(title, message, details, warning)  # queued to the GUI thread

    def warn(self, title: str, message: str, details: str = "") -> None:
        """:meth:`report` with ``warning=True``."""
        self.report(title, message, details, warning=True)

    @Slot(str, str, str, bool)
    def _show(self, title: str, message: str, details: str, warning: bool = False) -> None:
        self.reported.emit(title, message, details)
        self._open = self.open_dialogs
        if len(self._open) >= MAX_OPEN_DIALOGS:
            self.last_dialog = None
            return
        box = QMessageBox(self._window)
        box.setIcon(QMessageBox.Icon.Warning if warning else QMessageBox.Icon.Critical)
        box.setWindowTitle(title)
        box.setText(message)
        if details:
            box.setDetailedText(details)
        box.setStandardButtons(QMessageBox.StandardButton.Ok)
        box.setWindowModality(Qt.WindowModality.NonModal)
        # A bound slot, not a lambda: a lambda holding the sink and the box would tie their
        # lifetimes to the connection and crash when the window deletes the box.
        box.finished.connect(self._on_box_finished)
        self._open.append(box)
        self.last_dialog = box
        box.show()

    @Slot(int)
    def _on_box_finished(self, _result: int) -> None:
        box = self.sender()
        self._open = [b for b in self._open if b is not box]
        if isinstance(box, QMessageBox):
            box.deleteLater()
        if self.last_dialog is box:
            self.last_dialog = None

    @property
    def open_dialogs(self) -> list[QMessageBox]:
        """Message boxes shown and not closed yet."""
        # isValid: the window may have deleted a box (closing with the window).
        return [box for box in self._open if isValid(box) and box.isVisible()]

    # ------------------------------------------------------------------ uncaught exceptions

    def install_excepthook(self) -> None:
        """Route uncaught exceptions (in Qt slots, the main thread) to :meth:`report`."""
        if self._previous_hook is None:
            self._previous_hook = sys.excepthook
            sys.excepthook = self._excepthook

    def uninstall_excepthook(self) -> None:
        """Give ``sys.excepthook`` back to what it was."""
        if self._previous_hook is not None:
            if sys.excepthook == self._excepthook:
                sys.excepthook = self._previous_hook
            self._previous_hook = None

    def _excepthook(
        self,
        exc_type: type[BaseException],
        exc: BaseException,
        tb: TracebackType | None,
    ) -> None:
        if issubclass(exc_type, KeyboardInterrupt) and self._previous_hook is not None:
            self._previous_hook(exc_type, exc, tb)
            return
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        try:
            self.report(
                "Unexpected error",
                f"Something went wrong inside Vitrine ({exc_type.__name__}: {exc}). Your "
                "photos and finished results are safe; please report this with the details "
                "below.",
                details,
            )
        except Exception:  # noqa: BLE001 - the hook must never raise
            sys.__excepthook__(exc_type, exc, tb)


class QtLogHandler(QObject, logging.Handler):
    """A logging handler emitting each formatted record as a Qt signal.

    Records may come from any thread; connected slots of GUI objects run on the GUI thread
    (queued connection). Attach it to the ``engine`` and ``gui``/``vitrine`` loggers.

    Parameters
    ----------
    level
        Least level handled.
    parent
        Qt parent.

    Signals
    -------
    record(str, str)
        ``(level name, formatted text)``.
    """

    record = Signal(str, str)

    def __init__(self, level: int = logging.INFO, parent: QObject | None = None) -> None:
        QObject.__init__(self, parent)
        logging.Handler.__init__(self, level)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:  # noqa: D102 - logging.Handler API
        try:
            text = self.format(record)
            self.record.emit(record.levelname, text)
        except RuntimeError:
            pass  # the Qt side is gone (application closing)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)
