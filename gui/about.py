"""Help > About: the versions of what Vitrine runs on and the licences of what it ships with.

Versions are read from the installed distributions' metadata, so opening the dialog does not
import torch, transformers or pycolmap on the GUI thread.
"""

from __future__ import annotations

import html
import platform
from importlib import metadata

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

import engine
from engine.models import DEFAULT_DEPTH_MODEL, licence_for

#: (shown name, distribution names to try in order).
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PySide6", ("PySide6-Essentials", "PySide6")),
    ("pyqtgraph", ("pyqtgraph",)),
    ("PyTorch", ("torch",)),
    ("transformers", ("transformers",)),
    ("pycolmap", ("pycolmap",)),
    ("NumPy", ("numpy",)),
    ("OpenCV", ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless")),
)

#: Licences of the libraries Vitrine depends on.
DEPENDENCY_LICENCES: tuple[tuple[str, str], ...] = (
    ("pycolmap / COLMAP", "BSD-3-Clause"),
    ("PyTorch", "BSD-3-Clause"),
    ("transformers", "Apache-2.0"),
    ("NumPy", "BSD-3-Clause"),
    ("SciPy", "BSD-3-Clause"),
    ("OpenCV", "Apache-2.0"),
    ("Plotly", "MIT"),
    ("PySide6 / Qt", "LGPL-3.0"),
    ("pyqtgraph", "MIT"),
    ("Pillow", "MIT-CMU"),
    ("pillow-heif", "BSD-3-Clause (libheif LGPL-3.0)"),
    ("rawpy", "MIT (LibRaw LGPL-2.1 / CDDL)"),
)

#: Depth networks Vitrine can use, by Hugging Face id.
DEPTH_MODELS: tuple[str, ...] = (
    DEFAULT_DEPTH_MODEL,
    "depth-anything/Depth-Anything-V2-Base-hf",
    "depth-anything/Depth-Anything-V2-Large-hf",
)


def versions() -> dict[str, str]:
    """Installed versions of Python, Vitrine and its main libraries ("not installed" if absent).

    Returns
    -------
    dict
        Component name -> version text.
    """
    found = {"Python": platform.python_version(), "Vitrine": engine.__version__}
    for name, dists in COMPONENTS:
        found[name] = "not installed"
        for dist in dists:
            try:
                found[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def model_licences() -> list[tuple[str, str, bool]]:
    """Licences of the depth networks: ``(model id, licence, commercial use allowed)``."""
    rows = []
    for model in DEPTH_MODELS:
        licence, commercial, _ = licence_for(model)
        rows.append((model, licence, commercial))
    return rows


def about_html() -> str:
    """The About text as HTML (versions, dependency licences, depth-model licences)."""
    esc = html.escape
    parts = [
        f"<h2>Vitrine {esc(engine.__version__)}</h2>",
        "<p>Product photos to an accurate, web-ready 3D model, on the CPU or a GPU. "
        "MIT licence.</p>",
        "<h3>Versions</h3><table>",
    ]
    for name, version in versions().items():
        parts.append(f"<tr><td>{esc(name)}</td><td>&nbsp;&nbsp;{esc(version)}</td></tr>")
    parts.append("</table><h3>Depth networks (Depth-Anything-V2)</h3><table>")
    for model, licence, commercial in model_licences():
        use = "commercial use allowed" if commercial else "<b>non-commercial use only</b>"
        parts.append(
            f"<tr><td>{esc(model.split('/')[-1])}</td><td>&nbsp;&nbsp;{esc(licence)}</td>"
            f"<td>&nbsp;&nbsp;{use}</td></tr>"
        )
    parts.append(
        "</table><p>Vitrine uses Depth-Anything-V2-Small by default. Base and Large are accepted "
        "and the run's log and report say that they are non-commercial.</p>"
        "<h3>Libraries</h3><table>"
    )
    for name, licence in DEPENDENCY_LICENCES:
        parts.append(f"<tr><td>{esc(name)}</td><td>&nbsp;&nbsp;{esc(licence)}</td></tr>")
    parts.append("</table>")
    return "".join(parts)


class AboutDialog(QDialog):
    """Help > About Vitrine."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About Vitrine")
        self.resize(560, 620)
        self.browser = QTextBrowser(self)
        self.browser.setOpenExternalLinks(True)
        self.browser.setHtml(about_html())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        layout.addWidget(buttons)
