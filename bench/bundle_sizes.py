"""Size of a PyInstaller bundle per component, or of two bundles side by side.

    python bench/bundle_sizes.py dist/vitrine                 one bundle
    python bench/bundle_sizes.py BEFORE/vitrine AFTER/vitrine  a before/after table (markdown)

A component is a group of top-level entries of the bundle's ``_internal/`` folder (torch,
OpenCV with its libraries, Qt, ...): see ``COMPONENTS``. Sizes are of the files as they lie on
disk (``st_blocks``, what ``du`` counts), in MiB as ``du -m`` prints them; symbolic links count
nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
from collections import Counter
from pathlib import Path

#: Component -> patterns of top-level names under _internal/ (first match wins).
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torch", ("torch", "torch-*", "functorch", "torchgen")),
    ("OpenCV", ("cv2", "opencv_python_headless*")),
    ("pycolmap", ("pycolmap*",)),
    ("Qt (PySide6, shiboken6)", ("PySide6*", "shiboken6*", "pyside6*", "libQt6*", "libpyside6*",
                                 "libshiboken6*")),
    ("SciPy", ("scipy*",)),
    ("NumPy", ("numpy*",)),
    ("transformers", ("transformers*", "tokenizers*", "safetensors*", "huggingface_hub*")),
    ("plotly", ("plotly*",)),
    ("images (Pillow, pillow-heif, rawpy)", ("PIL", "pillow*", "rawpy*")),
    ("Python (libpython, stdlib, PYZ of all modules)", ("libpython*", "base_library.zip",
                                                        "lib-dynload", "python3*")),
)  # fmt: skip


def _size(path: Path) -> int:
    st = path.lstat()
    return st.st_blocks * 512 if path.is_file() and not path.is_symlink() else 0


def component_sizes(bundle: Path) -> tuple[Counter, Counter]:
    """Bytes and files per component of a one-folder bundle (the executable counts as Python)."""
    sizes: Counter = Counter()
    files: Counter = Counter()
    internal = bundle / "_internal"
    for path in bundle.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(bundle)
        if rel.parts[0] != "_internal" or len(rel.parts) < 2:
            name = "Python (libpython, stdlib, PYZ of all modules)"
        elif path.parent == internal and path.suffix == "" and path.name.startswith("PYZ"):
            name = "Python (libpython, stdlib, PYZ of all modules)"
        else:
            top = rel.parts[1]
            name = next(
                (c for c, pats in COMPONENTS if any(fnmatch.fnmatch(top, p) for p in pats)),
                "other",
            )
        sizes[name] += _size(path)
        files[name] += 1
    return sizes, files


def main(argv: list[str] | None = None) -> int:
    """Print the table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="one or two bundle folders")
    args = parser.parse_args(argv)
    tables = [component_sizes(b) for b in args.bundles]
    names = [c for c, _ in COMPONENTS] + ["other"]
    mb = 1024 * 1024
    head = " | ".join(f"{b} MB | files" for b in ("before", "after")[: len(tables)])
    print(f"| component | {head} |")
    print("|---|" + "---|---|" * len(tables))
    for name in names:
        cells = " | ".join(f"{s[name] / mb:.0f} | {f[name]}" for s, f in tables)
        print(f"| {name} | {cells} |")
    cells = " | ".join(f"**{sum(s.values()) / mb:.0f}** | {sum(f.values())}" for s, f in tables)
    print(f"| **total** | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
