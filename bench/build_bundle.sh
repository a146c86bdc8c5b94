#!/usr/bin/env bash
# Build the one-folder app with PyInstaller (build.spec) and check the result.
#
#   bench/build_bundle.sh                  build into ./dist/vitrine (work files in ./build)
#   DIST=/tmp/d WORK=/tmp/w VENV=/opt/venv bench/build_bundle.sh
#   CHECK=0 bench/build_bundle.sh          build only (packaging/build_deb.sh checks afterwards)
#
# Steps: install PyInstaller into the build venv when it is missing, copy the sources to
# $WORK/src and build from there (timed), print the bundle's size and file count, then run the
# frozen app: `vitrine --selftest` (a tiny synthetic
# reconstruction checked against its truth, headless), `vitrine reconstruct --help`, and the
# desktop window started offscreen for a few seconds (it must still be running when stopped).
# Exits non-zero when any step fails. Linux only (see docs/PACKAGING.md for Windows and macOS).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-/tmp/venv}"
DIST="${DIST:-$ROOT/dist}"
WORK="${WORK:-$ROOT/build}"
GUI_SECONDS="${GUI_SECONDS:-20}"
CHECK="${CHECK:-1}"
PY="$VENV/bin/python"

fail() { echo "build_bundle: FAILED: $*" >&2; exit 1; }

[ -x "$PY" ] || fail "no Python at $PY: create the venv (python -m venv $VENV && $VENV/bin/pip install -e '$ROOT[dev]') or set VENV="
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    echo "== installing PyInstaller into $VENV"
    "$PY" -m pip install --quiet "pyinstaller>=6.5" || fail "pip could not install PyInstaller"
fi

# Build from a snapshot of the sources: the build takes minutes, and a file edited meanwhile
# would otherwise mix two versions of the code in one bundle.
SRC="$WORK/src"
rm -rf "$SRC" && mkdir -p "$SRC" || fail "cannot write $SRC"
(cd "$ROOT" && tar --exclude=__pycache__ -cf - main.py build.spec packaging engine gui resources) \
    | (cd "$SRC" && tar -xf -) || fail "cannot copy the sources to $SRC"
commit=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "not a git checkout")

echo "== building $commit: $("$PY" -m PyInstaller --version 2>/dev/null | sed 's/^/PyInstaller /'), $("$PY" -c 'import torch; print("torch", torch.__version__)')"
echo "   $PY -m PyInstaller --noconfirm --clean --distpath $DIST --workpath $WORK build.spec"
start=$(date +%s)
(cd "$SRC" && "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" build.spec) || fail "PyInstaller failed (see above)"
build_s=$(( $(date +%s) - start ))
APP="$DIST/vitrine/vitrine"
[ -x "$APP" ] || fail "no executable at $APP"

size=$(du -sh "$DIST/vitrine" | cut -f1)
size_mb=$(du -sm "$DIST/vitrine" | cut -f1)
files=$(find "$DIST/vitrine" -type f | wc -l)
echo "== bundle: $DIST/vitrine: $size ($size_mb MB), $files files, built in ${build_s} s"
if [ "$CHECK" = "0" ]; then
    echo "build_bundle: built (CHECK=0: the frozen app was not run)"
    exit 0
fi

status=0
echo "== frozen selftest: $APP --selftest"
start=$(date +%s)
QT_QPA_PLATFORM=offscreen "$APP" --selftest || { echo "build_bundle: selftest FAILED"; status=1; }
selftest_s=$(( $(date +%s) - start ))
echo "   (selftest took ${selftest_s} s including the app's start)"

echo "== frozen command line: $APP reconstruct --help"
if "$APP" reconstruct --help >/dev/null; then
    echo "PASS reconstruct --help"
else
    echo "FAIL reconstruct --help"; status=1
fi

# The desktop window: start it offscreen in a scratch home (a first start: it writes the sample
# and starts reconstructing it) and stop it after GUI_SECONDS. Exit code 124 from timeout means
# it was still running, with no traceback in its output: it started. (main.py does not pass app
# options such as --no-sample through, and the app has no quit-after-start option.)
echo "== frozen desktop app: offscreen for ${GUI_SECONDS} s"
gui_home=$(mktemp -d)
gui_log="$gui_home/gui.log"
HOME="$gui_home" VITRINE_HOME="$gui_home/Vitrine" QT_QPA_PLATFORM=offscreen \
    timeout "$GUI_SECONDS" "$APP" >"$gui_log" 2>&1
code=$?
if [ "$code" -eq 124 ] && ! grep -q "Traceback" "$gui_log"; then
    echo "PASS desktop app: still running after ${GUI_SECONDS} s, no traceback"
else
    echo "FAIL desktop app: exit code $code (124 expected); its output:"; cat "$gui_log"; status=1
fi
rm -rf "$gui_home"

echo "== summary: build ${build_s} s, bundle ${size_mb} MB / ${files} files, frozen selftest ${selftest_s} s"
[ "$status" -eq 0 ] && echo "build_bundle: OK" || echo "build_bundle: FAILED"
exit "$status"
