"""House rules that a tool checks: the engine never imports Qt, superqt, pyqtgraph or gui.

The GUI never imports engine.stages (it reads runs through engine.run_folder), and the project
model and the run-folder contract import no Qt. No class in engine/ or gui/ is over 500 lines,
and every stage is called ``run(inputs, cfg, out_dir, *, progress, cancel)``.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contract_holds():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    proc = subprocess.run(
        [exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 kept, 0 broken" in proc.stdout


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


#: No class in engine/ or gui/ grows past this many lines (issue 18: one room, one job).
MAX_CLASS_LINES = 500


def test_no_class_is_over_500_lines():
    import ast

    long = []
    for folder in ("engine", "gui"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_CLASS_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.name} ({lines} lines)")
    assert not long, long


STAGES = ("ingest", "masks", "sfm", "dense", "depth_prior", "fuse", "mesh", "scale", "coverage")


@pytest.mark.parametrize("name", [*STAGES, "single_photo"])
def test_every_stage_is_called_the_same_way(name):
    """``run(inputs, cfg, out_dir, *, progress, cancel)``; more keyword-only arguments allowed."""
    import importlib
    import inspect

    run = importlib.import_module(f"engine.stages.{name}").run
    params = list(inspect.signature(run).parameters.values())
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    assert len(positional) == 3 and positional[1] == "cfg", positional
    assert {"progress", "cancel"} <= keyword, keyword
