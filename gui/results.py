"""The report and mesh of the result on show (:class:`ResultModel`).

The dimensions label, the coverage widget and the 3D view's mesh subscribe to it. What a report
says in words (dimensions, coverage, pre-flight, masks) is read by :mod:`engine.export.summary`,
re-exported here for the window's widgets.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.export.summary import (  # noqa: F401 - the widgets' names for them
    NO_SCALE_TEXT,
    PREFLIGHT_BADGES,
    SCALE_SOURCES,
    Coverage,
    dimensions_mm,
    dimensions_text,
    format_dimensions,
    mask_failures,
    mask_summary,
    masks_disagreeing,
    metres_per_unit,
    preflight_entries,
    preflight_status,
    read_coverage,
)
from engine.types import Mesh


class ResultModel(QObject):
    """The report and mesh of the result on show (napari style: widgets subscribe).

    Signals
    -------
    report_changed
        :attr:`report` changed (read :attr:`coverage`, :attr:`dimensions_text` ...).
    mesh_changed
        :attr:`mesh` changed.
    """

    report_changed = Signal()
    mesh_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._report: dict[str, Any] | None = None
        self._mesh: Mesh | None = None
        self._coverage: Coverage | None = None

    @property
    def report(self) -> dict[str, Any] | None:
        """The report.json content on show (None: no finished run)."""
        return self._report

    @property
    def mesh(self) -> Mesh | None:
        """The mesh on show (None: no mesh)."""
        return self._mesh

    @property
    def coverage(self) -> Coverage | None:
        """The coverage map and advice of :attr:`report`."""
        return self._coverage

    @property
    def dimensions_text(self) -> str:
        """The dimensions line (see :func:`dimensions_text`)."""
        return dimensions_text(self._report)

    def set_report(self, report: dict[str, Any] | None) -> None:
        """Show ``report`` (a report.json dict, or None)."""
        self._report = report if isinstance(report, dict) else None
        self._coverage = read_coverage(self._report)
        self.report_changed.emit()

    def set_mesh(self, mesh: Mesh | None) -> None:
        """Show ``mesh`` (None: none)."""
        if mesh is not None and (len(mesh) == 0 or mesh.num_triangles == 0):
            mesh = None
        self._mesh = mesh
        self.mesh_changed.emit()

    def clear(self) -> None:
        """Show no report and no mesh."""
        self.set_report(None)
        self.set_mesh(None)
