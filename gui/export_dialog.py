"""File > Export…: the shareable files of a run folder, their sizes, and a copy to another folder.

Only the finished outputs are offered (viewer.html, mesh.glb, embed.html, mesh.usdz, mesh.obj,
dense.ply, sparse.ply); the run folder's private ``work/`` never leaves it. A file that needs
others beside it (the OBJ's material and texture) is copied with them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

MB = 1024 * 1024


@dataclass(frozen=True)
class ExportFile:
    """One file a run folder can export."""

    name: str
    description: str
    budget: int | None
    """Size a web storefront accepts in bytes, or None when the size is only informational."""
    companions: tuple[str, ...] = ()
    """Files that go with this one (copied with it; their sizes count in its size)."""


#: The exportable files, in the order shown.
EXPORT_FILES = (
    ExportFile("viewer.html", "Interactive 3D page (works offline)", 15 * MB),
    ExportFile("mesh.glb", "Web-ready mesh (glTF binary) for storefronts", 15 * MB),
    ExportFile(
        "embed.html", "<model-viewer> snippet page: upload mesh.glb beside it", None, ("mesh.glb",)
    ),
    ExportFile("mesh.usdz", "Mesh for AR Quick Look on iPhone and iPad", 15 * MB),
    ExportFile(
        "mesh.obj",
        "Mesh for 3D software (with mesh.mtl and mesh_texture.png)",
        None,
        ("mesh.mtl", "mesh_texture.png"),
    ),
    ExportFile("dense.ply", "Dense coloured point cloud", None),
    ExportFile("sparse.ply", "Sparse points from the cameras", None),
)


def human_size(size: int) -> str:
    """``1536`` -> ``"1.5 KB"``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def exportable(run_dir: Path) -> list[tuple[ExportFile, Path, int]]:
    """The exportable files present in ``run_dir``: ``(spec, path, size in bytes)``.

    A file's size includes its companions that are not listed on their own (the OBJ's
    material and texture count, the GLB beside ``embed.html`` does not).
    """
    listed = {spec.name for spec in EXPORT_FILES}
    found = []
    for spec in EXPORT_FILES:
        path = Path(run_dir) / spec.name
        if path.is_file():
            size = path.stat().st_size
            size += sum(
                p.stat().st_size for p in companion_paths(run_dir, spec) if p.name not in listed
            )
            found.append((spec, path, size))
    return found


def companion_paths(run_dir: Path, spec: ExportFile) -> list[Path]:
    """The companions of ``spec`` present in ``run_dir``."""
    paths = [Path(run_dir) / name for name in spec.companions]
    return [p for p in paths if p.is_file()]


def copy_files(paths: list[Path], destination: Path) -> list[Path]:
    """Copy ``paths`` into ``destination`` (created), replacing files of the same name.

    Returns
    -------
    list of Path
        The copies.
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in paths:
        target = destination / path.name
        tmp = target.with_name(f".{target.name}.part")
        # copy then rename: an interrupted copy never leaves a half file under the real name
        shutil.copyfile(path, tmp)
        tmp.replace(target)
        copies.append(target)
    return copies


class ExportDialog(QDialog):
    """The exportable files of one run folder.

    Parameters
    ----------
    run_dir
        The run folder.
    parent
        Parent widget.

    Attributes
    ----------
    choose_folder
        Asks for the destination folder and returns it (None when cancelled); replaceable
        (tests do).
    open_url
        Opens a URL in the system browser (``QDesktopServices.openUrl``); replaceable.
    """

    def __init__(self, run_dir: Path | str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir = Path(run_dir)
        self.setWindowTitle("Export")
        self.resize(640, 300)
        self.choose_folder: Callable[[], Path | None] = self._ask_folder
        self.open_url: Callable[[QUrl], object] = QDesktopServices.openUrl
        self.last_copied: list[Path] = []

        self.tree = QTreeWidget(self)
        self.tree.setRootIsDecorated(False)
        self.tree.setHeaderLabels(["File", "Size", "Budget", "What"])
        self.tree.setColumnWidth(0, 140)
        self.tree.setColumnWidth(1, 80)
        self.tree.setColumnWidth(2, 150)
        self.items: dict[str, QTreeWidgetItem] = {}
        for spec, _path, size in exportable(self.run_dir):
            if spec.budget is None:
                budget = "informational"
            elif size <= spec.budget:
                budget = f"within {human_size(spec.budget)}"
            else:
                budget = f"OVER {human_size(spec.budget)}"
            item = QTreeWidgetItem([spec.name, human_size(size), budget, spec.description])
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(0, Qt.CheckState.Checked)
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if spec.budget is not None and size > spec.budget:
                item.setForeground(2, Qt.GlobalColor.red)
                item.setToolTip(2, "Larger than most web storefronts accept.")
            self.tree.addTopLevelItem(item)
            self.items[spec.name] = item

        self.note = QLabel(self)
        self.note.setWordWrap(True)
        if not self.items:
            self.note.setText(f"Nothing to export yet in {self.run_dir}: run the set first.")
        else:
            self.note.setText(f"From {self.run_dir}")

        self.open_button = QPushButton("Open in browser", self)
        self.open_button.setEnabled("viewer.html" in self.items)
        self.open_button.clicked.connect(self.open_viewer)
        self.copy_button = QPushButton("Copy to folder…", self)
        self.copy_button.setEnabled(bool(self.items))
        self.copy_button.clicked.connect(self._copy_clicked)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)

        row = QHBoxLayout()
        row.addWidget(self.open_button)
        row.addWidget(self.copy_button)
        row.addStretch(1)
        row.addWidget(buttons)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree)
        layout.addWidget(self.note)
        layout.addLayout(row)

    # ------------------------------------------------------------------ API

    def files(self) -> list[str]:
        """Names of the files listed."""
        return list(self.items)

    def checked(self) -> list[str]:
        """Names of the files chosen for copying."""
        return [n for n, item in self.items.items() if item.checkState(0) == Qt.CheckState.Checked]

    def set_checked(self, names: list[str]) -> None:
        """Choose exactly ``names`` for copying."""
        for name, item in self.items.items():
            state = Qt.CheckState.Checked if name in names else Qt.CheckState.Unchecked
            item.setCheckState(0, state)

    def size_text(self, name: str) -> str:
        """The size shown for ``name``."""
        return self.items[name].text(1)

    def budget_text(self, name: str) -> str:
        """The budget column shown for ``name``."""
        return self.items[name].text(2)

    def copy_to(self, destination: Path | str) -> list[Path]:
        """Copy the chosen files (and their companions) into ``destination``; returns the copies."""
        specs = {spec.name: spec for spec in EXPORT_FILES}
        paths: list[Path] = []
        for name in self.checked():
            for path in [self.run_dir / name, *companion_paths(self.run_dir, specs[name])]:
                if path not in paths:
                    paths.append(path)
        self.last_copied = copy_files(paths, Path(destination))
        self.note.setText(f"Copied {len(self.last_copied)} file(s) to {destination}.")
        return self.last_copied

    def open_viewer(self) -> None:
        """Open viewer.html in the system's browser."""
        self.open_url(QUrl.fromLocalFile(str((self.run_dir / "viewer.html").resolve())))

    # ------------------------------------------------------------------ reactions

    def _ask_folder(self) -> Path | None:
        folder = QFileDialog.getExistingDirectory(self, "Copy the files to")
        return Path(folder) if folder else None

    def _copy_clicked(self) -> None:
        if not self.checked():
            self.note.setText("Tick the files to copy first.")
            return
        destination = self.choose_folder()
        if destination is None:
            return
        if Path(destination).resolve() == self.run_dir.resolve():
            self.note.setText("Choose another folder than the run folder.")
            return
        try:
            self.copy_to(destination)
        except OSError as exc:
            self.note.setText(
                f"Could not copy to {destination}: {exc.strerror or exc}. Check free disk space "
                "and that you can write there."
            )
