#!/usr/bin/env bash
# Vendor Google's <model-viewer> for the offline catalogue gallery (engine/export/gallery.py).
#
# Takes the pinned version from npm and copies its UMD build (the ES-module build does not load
# from file:// pages) and its licence (Apache-2.0) next to this script. Both files are committed,
# so the app and every gallery it writes work offline; run this only to change the version.
#
#   resources/web/fetch_model_viewer.sh            # npm install into a scratch folder
#   MODEL_VIEWER_DIR=/path/to/node_modules/@google/model-viewer resources/web/fetch_model_viewer.sh
set -euo pipefail

VERSION="4.4.0"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PKG="${MODEL_VIEWER_DIR:-}"
SCRATCH=""
if [[ -z "$PKG" ]]; then
    SCRATCH="$(mktemp -d)"
    trap 'rm -rf "$SCRATCH"' EXIT
    npm install --prefix "$SCRATCH" --no-save --no-audit --no-fund "@google/model-viewer@${VERSION}" >&2
    PKG="$SCRATCH/node_modules/@google/model-viewer"
fi
FOUND="$(node -p "require('$PKG/package.json').version" 2>/dev/null || \
    python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['version'])" "$PKG/package.json")"
if [[ "$FOUND" != "$VERSION" ]]; then
    echo "error: $PKG holds model-viewer $FOUND, not the pinned $VERSION" >&2
    exit 1
fi
cp "$PKG/dist/model-viewer-umd.min.js" "$HERE/model-viewer-umd.min.js"
cp "$PKG/LICENSE" "$HERE/model-viewer-LICENSE.txt"
echo "model-viewer $VERSION (Apache-2.0) copied into $HERE" >&2
