"""Draw Vitrine's icon and write it in the formats the installers need.

    python packaging/make_icons.py            writes resources/icons/vitrine.{png,ico,icns}

The icon is a product in a glass display case (a vitrine): an isometric box with three shaded
faces inside a light outline, on a dark rounded square. It is drawn with Pillow at 1024 px and
scaled down, so the script is the icon's source and the three files are its output:
``vitrine.png`` (256 px: the Linux desktop entry and the window), ``vitrine.ico`` (16-256 px:
the Windows executable and installer) and ``vitrine.icns`` (16-1024 px: the macOS app).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "resources" / "icons"
SIZE = 1024

BACKDROP = (32, 38, 48, 255)
GLASS = (170, 214, 235, 255)
TOP, LEFT, RIGHT = (245, 196, 120, 255), (214, 140, 64, 255), (168, 98, 40, 255)


def _iso(cx: float, cy: float, x: float, y: float, z: float, unit: float) -> tuple[float, float]:
    """Isometric projection of (x, y, z) (z up) around the centre (cx, cy)."""
    c = math.cos(math.radians(30))
    return cx + (x - y) * c * unit, cy + ((x + y) * 0.5 - z) * unit


def draw(size: int = SIZE) -> Image.Image:
    """The icon at ``size`` x ``size`` pixels (RGBA)."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    pad = size * 0.06
    d.rounded_rectangle((pad, pad, size - pad, size - pad), radius=size * 0.18, fill=BACKDROP)

    def box(half: float, height: float, cy: float):
        """Corner points of a box of side 2*half and the given height standing at cy."""
        cx, unit = size / 2, size * 0.22
        p = {}
        for name, (x, y, z) in {
            "a": (-half, -half, 0), "b": (half, -half, 0), "c": (half, half, 0),
            "d": (-half, half, 0), "e": (-half, -half, height), "f": (half, -half, height),
            "g": (half, half, height), "h": (-half, half, height),
        }.items():  # fmt: skip
            p[name] = _iso(cx, cy, x, y, z, unit)
        return p

    # The product: a solid box with a lit top and two shaded sides.
    p = box(0.55, 0.95, size * 0.665)
    d.polygon([p["e"], p["f"], p["g"], p["h"]], fill=TOP)
    d.polygon([p["d"], p["c"], p["g"], p["h"]], fill=LEFT)
    d.polygon([p["b"], p["c"], p["g"], p["f"]], fill=RIGHT)
    # The glass case around it: the visible edges of a larger box.
    g = box(0.95, 1.5, size * 0.665)
    width = max(2, round(size * 0.022))
    for a, b in ("dc", "cb", "hg", "gf", "fe", "eh", "dh", "cg", "bf"):
        d.line([g[a], g[b]], fill=GLASS, width=width, joint="curve")
    return img


def main(argv: list[str] | None = None) -> int:
    """Write the icon files; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder to write (default {OUT})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    big = draw()
    big.resize((256, 256), Image.Resampling.LANCZOS).save(args.out / "vitrine.png", optimize=True)
    big.save(args.out / "vitrine.ico", sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)])
    big.save(args.out / "vitrine.icns")
    for name in ("vitrine.png", "vitrine.ico", "vitrine.icns"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
