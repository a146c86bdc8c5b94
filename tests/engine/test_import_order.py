"""pycolmap's bundled zlib must not take over Python's: the engine loads zlib first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import engine  # first, as every entry point does
import pycolmap  # noqa: F401
import zlib
import numpy as np
from PIL import Image

data = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
for _ in range(20):
    assert zlib.decompress(zlib.compress(data.tobytes())) == data.tobytes()
    Image.fromarray(data).save(OUT)
print("ok")
"""


def test_zlib_and_png_work_after_pycolmap(tmp_path):
    code = f"OUT = {str(tmp_path / 'x.png')!r}\n" + SCRIPT
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
