"""The window's dialogs, opened on a set and wired back to the project.

Each helper opens one kind of dialog for the selected image set, keeps the open one, and writes
what the user decided into the project (which saves itself when it has a folder):

- :class:`ExportGlue`: File ▸ Export… (the set's exportable files);
- :class:`InspectorGlue`: a photo's mask inspector (switch the mask off, paint one, revert);
- :class:`ScaleGlue`: "Set scale…" (a known size, or two points picked in the 3D view);
- :class:`CatalogueGlue`: the catalogue view (every set run one after another, the gallery).

None of them holds run state or computes anything; they change only the next run's settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject

from engine.errors import OutputError
from engine.io import ImageReadError
from gui.catalogue_view import CatalogueDialog
from gui.export_dialog import ExportDialog
from gui.mask_inspector import MaskInspector, load_photo_and_mask, read_mask
from gui.project_files import vitrine_home
from gui.results import mask_failures, masks_disagreeing, metres_per_unit
from gui.scale_dialog import SetScaleDialog

if TYPE_CHECKING:
    from gui.main_window import MainWindow

logger = logging.getLogger(__name__)


class _Glue(QObject):
    """What the helpers share: the window, the dialog open now, saving, the status bar."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.dialog: Any = None

    def _status(self, text: str, ms: int = 0) -> None:
        self.window.statusBar().showMessage(text, ms)

    def _saved(self, text: str, ms: int) -> None:
        """Save a project that has a folder, then say what changed."""
        self.window.save_if_saved()
        self._status(text, ms)


class ExportGlue(_Glue):
    """Opens File ▸ Export… on the selected set's run folder.

    Attributes
    ----------
    dialog
        The export dialog open now (None before the first).
    """

    def show_export(self) -> ExportDialog | None:
        """File ▸ Export…: the selected set's exportable files."""
        name = self.window.current_set
        if name is None:
            self._status("Select an image set first.")
            return None
        dialog = ExportDialog(self.window.project.run_dir(name), self.window)
        dialog.setWindowTitle(f"Export — {name}")
        self.dialog = dialog
        dialog.open()
        return dialog


class InspectorGlue(_Glue):
    """Opens a photo's :class:`gui.mask_inspector.MaskInspector`; its changes go to the project.

    Attributes
    ----------
    dialog
        The inspector open now (None before the first).
    """

    def inspect_photo(self, path: str | Path) -> MaskInspector | None:
        """Open the mask inspector of a photo of the selected set (double-click on a thumbnail)."""
        window = self.window
        name = window.current_set
        if name is None:
            return None
        project = window.project
        painted = project.painted_mask_path(name, path)
        run_mask = project.run_mask_path(name, path)
        source = "painted" if painted is not None else "auto" if run_mask is not None else "none"
        max_size = window.settings.config().ingest.max_image_size
        try:
            rgb, mask = load_photo_and_mask(
                path, project.working_copy(name, path), painted or run_mask, max_size
            )
        except (ImageReadError, OSError) as exc:
            window.errors.report("Cannot show this photo", f"{path}: {exc}")
            return None
        if painted is None and mask is not None and mask.min() == 255:
            mask, source = None, "none"  # the engine's stand-in for "no mask" (COLMAP needs one)
        if self.dialog is not None:
            self.dialog.close()
        reason = ""
        report = project.last_report(name)
        if source == "none":
            reason = mask_failures(report).get(project.image_name(name, path), "")
        product = None
        product_file = project.product_mask_path(name, path)
        if product_file is not None:
            try:
                product = read_mask(product_file, (rgb.shape[1], rgb.shape[0]))
            except (ValueError, OSError) as exc:
                logger.warning("Cannot read the 3D product mask %s: %s", product_file, exc)
        disagrees = project.image_name(name, path) in masks_disagreeing(report)
        dialog = MaskInspector(
            path,
            rgb,
            mask,
            source,
            not project.is_mask_disabled(name, path),
            reason,
            product=product,
            disagrees=disagrees and source != "painted",
            parent=window,
        )
        dialog.use_mask_changed.connect(lambda photo, used: self.set_mask_used(name, photo, used))
        dialog.mask_saved.connect(lambda photo, m: self.save_painted_mask(name, photo, m))
        dialog.mask_reverted.connect(lambda photo: self.forget_painted_mask(name, photo))
        self.dialog = dialog
        dialog.show()
        return dialog

    def set_mask_used(self, name: str, photo: str, used: bool) -> None:
        """Use the photo's mask in the set's next run, or not."""
        project = self.window.project
        if not project.has_set(name):
            return
        project.set_mask_disabled(name, photo, not used)
        state = "used" if used else "switched off"
        self._saved(f"Mask of {Path(photo).name} {state} for the next run.", 6000)

    def save_painted_mask(self, name: str, photo: str, mask: np.ndarray) -> None:
        """Keep the user's painted mask of a photo for the set's next run."""
        project = self.window.project
        if not project.has_set(name):
            return
        try:
            target = project.save_painted_mask(name, photo, mask)
        except (OutputError, ValueError) as exc:
            self.window.errors.report("Cannot save the mask", str(exc))
            return
        self._saved(f"Mask saved in {target}: the next run uses it for {Path(photo).name}.", 8000)

    def forget_painted_mask(self, name: str, photo: str) -> None:
        """Drop the photo's painted mask (the next run makes its own again)."""
        project = self.window.project
        if project.has_set(name):
            project.remove_painted_mask(name, photo)
            self.window.save_if_saved()


class ScaleGlue(_Glue):
    """Opens View ▸ Set scale… and feeds it the points picked in the 3D view.

    Attributes
    ----------
    dialog
        The scale dialog open now (None before the first).
    """

    def show_set_scale(self) -> SetScaleDialog | None:
        """View ▸ Set scale…: a known product size, or two picked points and their distance."""
        window = self.window
        name = window.current_set
        if name is None:
            self._status("Select an image set first.")
            return None
        if self.dialog is not None:
            self.dialog.close()
        image_set = window.project.image_set(name)
        values = {
            "known_dimension": image_set.known_dimension,
            "known_dimension_mm": image_set.known_dimension_mm,
            "known_distance_mm": image_set.known_distance_mm,
            "known_points": image_set.known_points,
        }
        dialog = SetScaleDialog(values, metres_per_unit(window.result_model.report), window)
        dialog.setWindowTitle(f"Set scale — {name}")
        dialog.points_changed.connect(window.view.set_marked_points)
        dialog.accepted.connect(lambda: self._apply(name, dialog))
        dialog.finished.connect(lambda _r: window.view.set_marked_points([]))
        window.view.set_marked_points(dialog.points)
        self.dialog = dialog
        dialog.show()
        return dialog

    def _apply(self, name: str, dialog: SetScaleDialog) -> None:
        if not self.window.project.has_set(name):
            return
        self.window.project.update_set(name, **dialog.values())
        self._saved(
            "Scale set: run again to apply it (only the scale and the exports are recomputed).",
            10000,
        )

    def on_point_picked(self, point: np.ndarray) -> None:
        """A point picked in the 3D view: the open scale dialog's, else named in the status."""
        dialog = self.dialog
        if dialog is not None and dialog.isVisible():
            dialog.add_point(point)
        else:
            x, y, z = (float(v) for v in point)
            self._status(
                f"Point ({x:.4g}, {y:.4g}, {z:.4g}): open View ▸ Set scale… to use two points "
                "and their real distance.",
                8000,
            )


class CatalogueGlue(_Glue):
    """Opens the catalogue view on the window's project; each set it ran updates the project.

    Attributes
    ----------
    dialog
        The catalogue view (None before the first; one is kept while it runs).
    """

    def running(self) -> bool:
        """Whether the catalogue is running."""
        return self.dialog is not None and self.dialog.is_running()

    def show_catalogue(self) -> CatalogueDialog:
        """The catalogue view: all image sets run one after another, the gallery."""
        window = self.window
        dialog = self.dialog
        if dialog is None or (dialog.project is not window.project and not dialog.is_running()):
            if dialog is not None:
                dialog.close()
            dialog = CatalogueDialog(
                window.project,
                window.run_config,
                vitrine_home(),
                busy=lambda: (
                    "A run is going in the main window: wait for it or cancel it."
                    if window.worker is not None or window.files.sample_writer is not None
                    else ""
                ),
                parent=window,
            )
            dialog.set_finished.connect(self._on_set_finished)
            dialog.running_changed.connect(lambda on: window.run_action.setEnabled(not on))
            self.dialog = dialog
        else:
            dialog.refresh()
        dialog.show()
        dialog.raise_()
        return dialog

    def _on_set_finished(self, name: str, status: str, message: str) -> None:
        window = self.window
        if not window.project.has_set(name):
            return
        window.project.update_set(name, last_status=status, last_message=message)
        window.save_if_saved()
        level = "INFO" if status == "finished" else "WARNING"
        window.log_panel.append(level, f"— {name}: {message}")
        if name == window.current_set:
            window.show_last_result(name)

    def stop_for_close(self, timeout_s: float) -> bool:
        """Before the window closes: ask, cancel the running catalogue, wait; True to go on."""
        if not self.running():
            return True
        if not self.window.confirm("The catalogue is running. Cancel it and quit?"):
            return False
        self.dialog.cancel()
        self._status("Stopping the catalogue before closing…")
        if not self.dialog.wait(timeout_s):
            self.window.errors.report(
                "The catalogue is still stopping",
                "The running image set did not stop in time. Wait a moment and close again.",
            )
            return False
        return True
