"""The error sink, the excepthook and the Qt log handler."""

from __future__ import annotations

import logging
import sys
import threading

import pytest
from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QWidget

from gui.errors import MAX_OPEN_DIALOGS, ErrorSink, QtLogHandler


def test_report_shows_a_non_modal_dialog_with_details(qtbot, caplog):
    window = QWidget()
    qtbot.addWidget(window)
    sink = ErrorSink()
    sink.set_parent_window(window)
    with caplog.at_level(logging.ERROR, logger="vitrine.gui"):
        with qtbot.waitSignal(sink.reported, timeout=1000) as blocker:
            sink.report("Reconstruction failed", "Only 1 of 12 photos placed.", "trace here")
    assert blocker.args == ["Reconstruction failed", "Only 1 of 12 photos placed.", "trace here"]
    box = sink.last_dialog
    assert isinstance(box, QMessageBox)
    assert box.isVisible() and not box.isModal()
    assert box.windowModality() == Qt.WindowModality.NonModal
    assert box.icon() == QMessageBox.Icon.Critical
    assert box.windowTitle() == "Reconstruction failed"
    assert box.text() == "Only 1 of 12 photos placed."
    assert box.detailedText() == "trace here"
    assert box.parent() is window
    assert "Only 1 of 12 photos placed." in caplog.text and "trace here" in caplog.text
    box.close()
    qtbot.waitUntil(lambda: sink.open_dialogs == [], timeout=1000)


def test_report_without_details_and_burst_limit(qtbot):
    sink = ErrorSink()
    for i in range(MAX_OPEN_DIALOGS + 2):
        sink.report("Oops", f"error {i}")
    assert len(sink.open_dialogs) == MAX_OPEN_DIALOGS
    assert sink.open_dialogs[0].detailedText() == ""
    for box in sink.open_dialogs:
        box.close()


def test_report_from_a_worker_thread_shows_on_the_gui_thread(qtbot):
    sink = ErrorSink()
    gui_thread = threading.get_ident()
    shown_on = []
    sink.reported.connect(lambda *args: shown_on.append(threading.get_ident()))
    worker = threading.Thread(target=sink.report, args=("Export failed", "Disk full.", ""))
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: sink.last_dialog is not None, timeout=2000)
    assert shown_on == [gui_thread]
    assert sink.last_dialog.text() == "Disk full."
    sink.last_dialog.close()


class _Emitter(QObject):
    fire = Signal()


class _Receiver(QObject):
    @Slot()
    def explode(self) -> None:
        raise ZeroDivisionError("slot went wrong")


@pytest.mark.qt_no_exception_capture
def test_excepthook_routes_exceptions_raised_in_slots(qtbot):
    sink = ErrorSink()
    previous = sys.excepthook
    sink.install_excepthook()
    try:
        emitter, receiver = _Emitter(), _Receiver()
        emitter.fire.connect(receiver.explode)
        emitter.fire.emit()
        qtbot.waitUntil(lambda: sink.last_dialog is not None, timeout=2000)
    finally:
        sink.uninstall_excepthook()
    assert sys.excepthook is previous
    box = sink.last_dialog
    assert "ZeroDivisionError: slot went wrong" in box.text()
    assert "Traceback" in box.detailedText() and "explode" in box.detailedText()
    box.close()


class _LogPanel(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str, int]] = []

    @Slot(str, str)
    def add(self, level: str, text: str) -> None:
        self.lines.append((level, text, threading.get_ident()))


def test_log_handler_delivers_worker_thread_records_on_the_gui_thread(qtbot):
    handler = QtLogHandler(logging.INFO)
    panel = _LogPanel()
    handler.record.connect(panel.add)
    log = logging.getLogger("engine.test_errors")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        worker = threading.Thread(
            target=lambda: [log.warning("view %d has few points", i) for i in range(3)]
        )
        worker.start()
        worker.join()
        log.debug("below the handler's level")
        qtbot.waitUntil(lambda: len(panel.lines) == 3, timeout=2000)
    finally:
        log.removeHandler(handler)
    assert [level for level, _, _ in panel.lines] == ["WARNING"] * 3
    assert panel.lines[2][1].endswith("engine.test_errors: view 2 has few points")
    assert {ident for _, _, ident in panel.lines} == {threading.get_ident()}
