"""House rules that a tool checks: the engine never imports Qt, superqt, pyqtgraph or gui.

The GUI never imports engine.stages (it reads runs through engine.run_folder), and the project
model and the run-folder contract import no Qt.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contract_holds():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    proc = subprocess.run(
        [exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


def test_engine_imports_without_qt():
    """Importing the whole engine must not pull in Qt (checked in a fresh interpreter)."""
    code = (
        "import sys, engine.pipeline, engine.synthetic, engine.geometry\n"
        "import engine.project, engine.run_folder, engine.options\n"
        "qt = ('PySide6', 'pyqtgraph', 'superqt', 'gui')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in qt]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
