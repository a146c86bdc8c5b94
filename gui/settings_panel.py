"""Settings of the selected image set: preset, device, depth network, masks and marker size.

The panel edits what a run will use; :meth:`SettingsPanel.config` turns it into a
:class:`engine.config.PipelineConfig`. Which GPU is present is found out on a short-lived
background thread (importing torch takes seconds, too long for the GUI thread).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QWidget,
)

from engine.config import PRESETS, PipelineConfig, preset
from engine.models import DEFAULT_DEPTH_MODEL, licence_for

#: What each preset does, shown under the choice.
PRESET_HINTS = {
    "preview": "Cameras and sparse points only: fastest, for checking a shoot.",
    "standard": "Dense surface from 800 px depth maps with a GPU, 560 px on the CPU "
    "(1600 px photos).",
    "high": "Dense surface from 1600 px depth maps (3200 px photos): slow on a CPU.",
}

#: Depth-network choices: (key, label).
DEPTH_CHOICES = (
    ("none", "None (stereo only)"),
    ("default", "Depth-Anything-V2-Small (from this computer's cache)"),
    ("local", "Local folder…"),
    ("download", "Download Depth-Anything-V2-Small (needs internet)"),
)


def detect_gpu() -> str:
    """Name of the CUDA GPU torch sees, or ``"no CUDA GPU"`` (also when torch is missing)."""
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:  # noqa: BLE001 - a broken CUDA setup is "no GPU" for this label
        pass
    return "no CUDA GPU"


class _Probe(QObject):
    """Carries the GPU name from the probe thread to the GUI thread (a queued signal)."""

    found = Signal(str)


class SettingsPanel(QWidget):
    """Preset, device and depth-network choices of one image set.

    Parameters
    ----------
    gpu_probe
        Returns the GPU's name (default :func:`detect_gpu`, run on a background thread);
        tests pass a stub.
    parent
        Parent widget.

    Signals
    -------
    settings_changed
        The user changed a setting (read :meth:`values` or :meth:`config`).
    """

    settings_changed = Signal()

    def __init__(
        self,
        gpu_probe: Callable[[], str] | None = detect_gpu,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._local_folder = ""
        self._loading = False
        self.gpu_name: str | None = None

        self.preset = QComboBox(self)
        for name in PRESETS:
            self.preset.addItem(name.capitalize(), name)
        self.preset_hint = QLabel(self)
        self.preset_hint.setWordWrap(True)
        self.preset_hint.setObjectName("hint")

        self.device = QComboBox(self)
        self.device.addItem("Automatic", "auto")
        self.device.addItem("CPU", "cpu")
        self.device.addItem("CUDA GPU", "cuda")
        self.gpu_label = QLabel("Looking for a GPU…", self)
        self.gpu_label.setObjectName("hint")
        self.gpu_label.setWordWrap(True)

        self.depth = QComboBox(self)
        for key, label in DEPTH_CHOICES:
            self.depth.addItem(label, key)
        self.depth_hint = QLabel(self)
        self.depth_hint.setWordWrap(True)
        self.depth_hint.setObjectName("hint")

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Quality", self.preset)
        form.addRow("", self.preset_hint)
        form.addRow("Device", self.device)
        form.addRow("", self.gpu_label)
        form.addRow("Depth network", self.depth)
        form.addRow("", self.depth_hint)

        self.auto_masks = QCheckBox("Automatic masks", self)
        self.auto_masks.setChecked(True)
        self.auto_masks.setToolTip(
            "Leave the backdrop, turntable and floor out of the model. Photos with a painted "
            "mask or a mask file keep theirs; double-click a photo to check or paint its mask."
        )
        self.marker_size = QDoubleSpinBox(self)
        self.marker_size.setRange(0.0, 1000.0)
        self.marker_size.setDecimals(1)
        self.marker_size.setSingleStep(5.0)
        self.marker_size.setSuffix(" mm")
        self.marker_size.setSpecialValueText("none")
        self.marker_size.setToolTip(
            "Side of the printed ArUco markers (DICT_4X4_50) lying beside the product, measured "
            "on the print: the run then gives true dimensions. 'none': no markers."
        )
        product_row = QHBoxLayout()
        product_row.setContentsMargins(0, 0, 0, 0)
        product_row.addWidget(self.auto_masks)
        product_row.addStretch(1)
        product_row.addWidget(QLabel("Markers", self))
        product_row.addWidget(self.marker_size)
        form.addRow("Product", product_row)

        self.preset.setCurrentIndex(PRESETS.index("standard"))
        self.depth.setCurrentIndex(1)
        self.preset.currentIndexChanged.connect(self._changed)
        self.device.currentIndexChanged.connect(self._changed)
        self.auto_masks.toggled.connect(self._changed)
        self.marker_size.valueChanged.connect(self._changed)
        self.depth.activated.connect(self._depth_activated)
        self._update_hints()

        self._probe = _Probe(self)
        self._probe.found.connect(self._gpu_found)
        if gpu_probe is not None:
            threading.Thread(
                target=lambda: self._probe.found.emit(gpu_probe()),
                name="gpu-probe",
                daemon=True,
            ).start()

    # ------------------------------------------------------------------ reading

    @property
    def depth_mode(self) -> str:
        """``none``, ``default``, ``local`` or ``download``."""
        return str(self.depth.currentData())

    def values(self) -> dict[str, Any]:
        """The settings as :class:`gui.project.ImageSet` fields."""
        mode = self.depth_mode
        return {
            "preset": str(self.preset.currentData()),
            "device": str(self.device.currentData()),
            "depth_model": self._local_folder if mode == "local" else None,
            "no_depth_prior": mode == "none",
            "auto_masks": self.auto_masks.isChecked(),
            "marker_size_mm": float(self.marker_size.value()),
        }

    def config(self) -> PipelineConfig:
        """The pipeline configuration of a run with these settings."""
        values = self.values()
        cfg = preset(values["preset"], device=values["device"])
        prior = dataclasses.replace(
            cfg.depth_prior,
            enabled=not values["no_depth_prior"],
            model=values["depth_model"] or DEFAULT_DEPTH_MODEL,
            allow_download=self.depth_mode == "download",
        )
        masks = dataclasses.replace(cfg.masks, enabled=values["auto_masks"])
        scale = dataclasses.replace(cfg.scale, marker_size_mm=values["marker_size_mm"])
        return cfg.replace(depth_prior=prior, masks=masks, scale=scale)

    # ------------------------------------------------------------------ writing

    def load(self, image_set: Any | None) -> None:
        """Show the settings of ``image_set`` (an ImageSet; None shows the defaults)."""
        self._loading = True
        try:
            name = getattr(image_set, "preset", "standard")
            self.preset.setCurrentIndex(PRESETS.index(name) if name in PRESETS else 1)
            index = self.device.findData(getattr(image_set, "device", "auto"))
            self.device.setCurrentIndex(max(0, index))
            model = getattr(image_set, "depth_model", None)
            if getattr(image_set, "no_depth_prior", False):
                mode = "none"
            elif model and model != DEFAULT_DEPTH_MODEL:
                mode = "local"
                self._local_folder = str(model)
            else:
                mode = "default"
            self._set_depth_mode(mode)
            self.auto_masks.setChecked(bool(getattr(image_set, "auto_masks", True)))
            self.marker_size.setValue(float(getattr(image_set, "marker_size_mm", 0.0)))
            self.setEnabled(image_set is not None)
        finally:
            self._loading = False
        self._update_hints()

    def set_depth_folder(self, folder: str | Path) -> None:
        """Use the depth network in ``folder`` (what "Local folder…" does after the dialog)."""
        self._local_folder = str(folder)
        self._set_depth_mode("local")
        self._changed()

    def _set_depth_mode(self, mode: str) -> None:
        index = self.depth.findData(mode)
        self.depth.setCurrentIndex(index)
        if mode == "local" and self._local_folder:
            self.depth.setItemText(index, f"Local: {Path(self._local_folder).name}")
        else:
            self.depth.setItemText(self.depth.findData("local"), "Local folder…")

    # ------------------------------------------------------------------ reactions

    def _depth_activated(self, index: int) -> None:
        if self.depth.itemData(index) == "local":
            folder = QFileDialog.getExistingDirectory(
                self, "Folder of the depth network (config.json + model.safetensors)"
            )
            if folder:
                self.set_depth_folder(folder)
                return
            # Dialog cancelled: go back to what was chosen before.
            self._set_depth_mode("local" if self._local_folder else "default")
        else:
            self._set_depth_mode(str(self.depth.itemData(index)))
        self._changed()

    def _changed(self) -> None:
        self._update_hints()
        if not self._loading:
            self.settings_changed.emit()

    def _gpu_found(self, name: str) -> None:
        self.gpu_name = name
        self._update_hints()

    def _update_hints(self) -> None:
        self.preset_hint.setText(PRESET_HINTS.get(str(self.preset.currentData()), ""))
        gpu = self.gpu_name
        if gpu is None:
            self.gpu_label.setText("Looking for a GPU…")
        elif gpu == "no CUDA GPU":
            self.gpu_label.setText("No CUDA GPU: runs use the CPU.")
        else:
            self.gpu_label.setText(f"GPU: {gpu}")
        mode = self.depth_mode
        if mode == "none":
            text = "Plain or shiny surfaces may have holes."
        elif mode == "local":
            licence, commercial, _ = licence_for(Path(self._local_folder).name)
            note = "" if commercial else " — check the licence before commercial use"
            text = f"{self._local_folder} ({licence}{note})"
        else:
            licence, _, _ = licence_for(DEFAULT_DEPTH_MODEL)
            text = f"Fills plain surfaces where stereo is unsure. {licence}."
            if mode == "default":
                text += " Skipped (and said so) when not on this computer."
        self.depth_hint.setText(text)
