"""The project as the window sees it: :class:`engine.project.Project` with Qt signals.

The model itself (image sets, photo screening, run naming, painted masks, saving) is Qt-free and
lives in :mod:`engine.project`; this wrapper only turns its change hooks into signals the
widgets subscribe to. Names the window imports from here are re-exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine import project as model
from engine.options import replace_known  # noqa: F401 - the scale dialog's name for it
from engine.project import (  # noqa: F401 - the window's names for them
    DIMENSIONS,
    FORMAT_VERSION,
    MANIFEST,
    PAINTED_MASKS,
    PHOTO_EXTENSIONS,
    READABLE_FORMATS,
    STATUSES,
    UNSAVED_ENV,
    ImageSet,
    Refused,
    Screening,
    photo_problem,
    screen_paths,
    unsaved_root,
)


class Project(QObject, model.Project):
    """Image sets, their settings and run folders (:class:`engine.project.Project`), with signals.

    Parameters
    ----------
    folder
        The project folder, or None for a new unsaved project.
    parent
        Qt parent.

    Signals
    -------
    sets_changed
        A set was added, removed or renamed (the list of sets changed).
    set_changed(str)
        The named set's photos, exclusions, settings or status changed.
    modified_changed(bool)
        The project got unsaved changes (True) or was saved (False).
    """

    sets_changed = Signal()
    set_changed = Signal(str)
    modified_changed = Signal(bool)

    def __init__(self, folder: Path | str | None = None, parent: QObject | None = None) -> None:
        QObject.__init__(self, parent)
        model.Project.__init__(self, folder)

    def _sets_changed(self) -> None:
        self.sets_changed.emit()

    def _set_changed(self, name: str) -> None:
        self.set_changed.emit(name)

    def _modified_changed(self, modified: bool) -> None:
        self.modified_changed.emit(modified)

    @classmethod
    def load(cls, folder: Path | str, parent: QObject | None = None, **kwargs: Any) -> Project:
        """Open the project saved in ``folder`` (see :meth:`engine.project.Project.load`)."""
        return super().load(folder, parent=parent, **kwargs)
