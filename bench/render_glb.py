"""Look at exported GLBs the way a shop shows them, and check them with the glTF validator.

For each GLB (or run folder holding ``mesh.glb``): a picture from four sides (front, right,
back, left; a little above the horizon, glTF +y up) rendered by Google's model-viewer in
headless Chromium (WebGL through SwiftShader: no GPU needed), and the Khronos glTF validator's
report. A product that stands upright stands on the grid's floor in all four views; one lying on
its side, a skirt of backdrop or a slab of table shows at once.

    python bench/render_glb.py RUN_OR_GLB [...] --out docs/renders [--npm-cache DIR]

model-viewer (Apache-2.0) and gltf-validator (Apache-2.0) are installed from npm into
``--npm-cache`` (default ``~/.cache/vitrine-bench/npm``) at pinned versions on first use and run
offline after that. Prints one JSON line per GLB: the picture, the validator's error and
warning counts, and the model's size and base (from the GLB's bounds: an upright, centred
export has its base at y = 0 and its centre over x = z = 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MODEL_VIEWER = "@google/model-viewer@4.4.0"
VALIDATOR = "gltf-validator@2.0.0-dev.3.10"
#: Drives the system's Chromium (waits for every model to load, then takes the picture).
PUPPETEER = "puppeteer-core@25.19.0"
#: Camera orbits of the four views: azimuth about +y, polar angle from +y.
VIEWS = (("front", "0deg"), ("right", "90deg"), ("back", "180deg"), ("left", "270deg"))
POLAR = "72deg"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<script src="model-viewer-umd.min.js"></script>
<style>body{{margin:0;background:#fff;font:14px sans-serif}}
.grid{{display:grid;grid-template-columns:repeat(2,{size}px)}}
.cell{{position:relative;width:{size}px;height:{size}px;border:1px solid #ddd;
box-sizing:border-box}}
.cell span{{position:absolute;left:6px;top:4px;z-index:2;color:#444}}
model-viewer{{width:100%;height:100%;--poster-color:transparent;--progress-bar-height:0px}}</style></head><body>
<div class="grid">{cells}</div><script>
window.loaded = 0; window.failed = [];
document.querySelectorAll('model-viewer').forEach((m) => {{
  m.addEventListener('load', () => {{ window.loaded += 1; }});
  m.addEventListener('error', (e) => {{ window.failed.push(JSON.stringify(e.detail)); }});
}});
</script></body></html>"""
CELL = """<div class="cell"><span>{label}</span><model-viewer src="model.glb" loading="eager"
reveal="auto" camera-orbit="{azimuth} {polar} auto" field-of-view="30deg" shadow-intensity="1"
exposure="1" interaction-prompt="none" environment-image="neutral"></model-viewer></div>"""

SHOOT_JS = """
const puppeteer = require('puppeteer-core');
const [browserPath, page_, out, width, height] = process.argv.slice(2);
(async () => {
  const browser = await puppeteer.launch({executablePath: browserPath, headless: true,
    args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
           '--allow-file-access-from-files']});
  try {
    const page = await browser.newPage();
    await page.setViewport({width: Number(width), height: Number(height)});
    await page.goto(page_);
    await page.waitForFunction(() => window.loaded + window.failed.length >= 4,
                               {timeout: 240000});
    const failed = await page.evaluate(() => window.failed);
    if (failed.length) throw new Error('model-viewer could not load the model: ' + failed[0]);
    await new Promise((r) => setTimeout(r, 1500));  // the first frames after loading
    await page.screenshot({path: out});
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(String(e)); process.exit(1); });
"""

VALIDATE_JS = """
const fs = require('fs');
const validator = require('gltf-validator');
const bytes = new Uint8Array(fs.readFileSync(process.argv[2]));
validator.validateBytes(bytes, {maxIssues: 50}).then((r) => {
  console.log(JSON.stringify({errors: r.issues.numErrors, warnings: r.issues.numWarnings,
    messages: r.issues.messages.slice(0, 10).map((m) => m.code + ': ' + m.message)}));
}).catch((e) => { console.log(JSON.stringify({errors: -1, messages: [String(e)]})); });
"""


def npm_packages(cache: Path) -> Path:
    """``node_modules`` with model-viewer, the validator and puppeteer-core (npm, once)."""
    modules = cache / "node_modules"
    want = [
        modules / "@google" / "model-viewer" / "dist" / "model-viewer-umd.min.js",
        modules / "gltf-validator",
        modules / "puppeteer-core",
    ]
    if not all(p.exists() for p in want):
        cache.mkdir(parents=True, exist_ok=True)
        if not (cache / "package.json").is_file():
            (cache / "package.json").write_text('{"private": true}\n', encoding="utf-8")
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", MODEL_VIEWER, VALIDATOR, PUPPETEER],
            cwd=cache,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return modules


def _node(script: str, args: list[str], modules: Path) -> subprocess.CompletedProcess:
    with tempfile.NamedTemporaryFile("w", suffix=".js", delete=False) as f:
        f.write(script)
    try:
        env = {**os.environ, "NODE_PATH": str(modules)}
        return subprocess.run(
            ["node", f.name, *args], capture_output=True, text=True, env=env, timeout=400
        )
    finally:
        os.unlink(f.name)


def glb_bounds(path: Path) -> dict:
    """Bounds of the GLB's positions (its first mesh's POSITION min/max), in its own units."""
    data = path.read_bytes()
    length = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20 : 20 + length])
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for mesh in doc.get("meshes", []):
        for prim in mesh.get("primitives", []):
            acc = doc["accessors"][prim["attributes"]["POSITION"]]
            lo = np.minimum(lo, acc["min"])
            hi = np.maximum(hi, acc["max"])
    size = hi - lo
    return {
        "size": [round(float(v), 4) for v in size],
        "base_y": round(float(lo[1]), 4),
        "centre_xz": [round(float((lo[0] + hi[0]) / 2), 4), round(float((lo[2] + hi[2]) / 2), 4)],
    }


def render(glb: Path, out_png: Path, modules: Path, size: int = 480) -> None:
    """The four-view picture of ``glb`` written to ``out_png``."""
    browser = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    if browser is None:
        raise SystemExit("no Chromium found: apt install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dist = modules / "@google" / "model-viewer" / "dist"
        shutil.copy(dist / "model-viewer-umd.min.js", folder)
        shutil.copy(glb, folder / "model.glb")
        cells = "".join(
            CELL.format(label=label, azimuth=azimuth, polar=POLAR) for label, azimuth in VIEWS
        )
        (folder / "index.html").write_text(PAGE.format(size=size, cells=cells), encoding="utf-8")
        out_png.parent.mkdir(parents=True, exist_ok=True)
        done = _node(
            SHOOT_JS,
            [
                browser,
                (folder / "index.html").as_uri(),
                str(out_png.resolve()),
                str(2 * size),
                str(2 * size),
            ],
            modules,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{glb}: rendering failed: {done.stderr.strip()[-500:]}")


def validate(glb: Path, modules: Path) -> dict:
    """The Khronos glTF validator's counts and first messages."""
    done = _node(VALIDATE_JS, [str(glb)], modules)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"errors": -1, "messages": [done.stderr.strip()[-500:]]}
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="GLB files or run folders")
    parser.add_argument("--out", type=Path, default=Path("bench/out/renders"))
    parser.add_argument(
        "--npm-cache", type=Path, default=Path.home() / ".cache" / "vitrine-bench" / "npm"
    )
    parser.add_argument("--size", type=int, default=480, help="pixels per view")
    args = parser.parse_args()
    modules = npm_packages(args.npm_cache)
    for item in args.inputs:
        glb = item / "mesh.glb" if item.is_dir() else item
        name = item.name if item.is_dir() else item.stem
        if not glb.is_file():
            print(json.dumps({"input": str(item), "error": "no mesh.glb"}))
            continue
        png = args.out / f"{name}.png"
        render(glb, png, modules, args.size)
        print(
            json.dumps(
                {
                    "input": str(item),
                    "picture": str(png),
                    **glb_bounds(glb),
                    **validate(glb, modules),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
