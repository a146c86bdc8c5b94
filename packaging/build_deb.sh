#!/usr/bin/env bash
# Build Vitrine's Linux packages: a .deb for Debian/Ubuntu and a portable .tar.gz.
#
#   packaging/build_deb.sh                       PyInstaller bundle (bench/build_bundle.sh,
#                                                CHECK=0), then the packages, into ./dist
#   packaging/build_deb.sh --bundle DIR          package an existing one-folder bundle DIR
#                                                (skips PyInstaller; the tests use a tiny one)
#   VENV=/opt/venv DIST=/tmp/d WORK=/tmp/w packaging/build_deb.sh
#
# Writes $DIST/vitrine_<version>_amd64.deb and $DIST/vitrine-<version>-linux-x86_64.tar.gz, the
# version read from engine/__init__.py (the one place it is kept). The .deb installs:
#
#   /opt/vitrine/                                   the bundle (vitrine executable, _internal/)
#   /usr/bin/vitrine -> /opt/vitrine/vitrine        the command (and the launcher's Exec)
#   /usr/share/applications/vitrine.desktop         launcher: folders can be dropped on it
#   /usr/share/icons/hicolor/256x256/apps/vitrine.png
#   /usr/share/doc/vitrine/copyright
#
# with maintainer scripts that refresh the desktop and icon caches where those tools exist, and
# remove /opt/vitrine entirely on `dpkg -r`/`dpkg -P`. The .tar.gz holds the same bundle as
# vitrine-<version>/ (run vitrine-<version>/vitrine; packaging/linux/vitrine.desktop beside it).
# bench/check_deb.sh builds, installs, runs and removes the package on this machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIST="${DIST:-$ROOT/dist}"
WORK="${WORK:-$ROOT/build}"
VENV="${VENV:-/tmp/venv}"
BUNDLE=""
# xz is Debian's default and the smallest download; COMPRESS=gzip packs several times faster.
COMPRESS="${COMPRESS:-xz}"
# Set MAINTAINER for a release: who answers for the package (Debian's control field).
MAINTAINER="${MAINTAINER:-Vitrine maintainers <maintainers@vitrine.invalid>}"

fail() { echo "build_deb: FAILED: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLE="${2:?--bundle needs a folder}"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) fail "unknown argument $1 (see --help)" ;;
    esac
done

command -v dpkg-deb >/dev/null || fail "dpkg-deb is needed (Debian/Ubuntu: apt install dpkg)"
PY="$VENV/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)" || fail "no Python to read the version with"
VERSION="$(cd "$ROOT" && "$PY" -c 'import engine; print(engine.__version__)')"
[[ "$VERSION" =~ ^[0-9][0-9A-Za-z.+~-]*$ ]] || fail "'$VERSION' is not a Debian version"
ARCH=amd64

if [ -z "$BUNDLE" ]; then
    DIST="$DIST" WORK="$WORK" VENV="$VENV" CHECK=0 "$ROOT/bench/build_bundle.sh" \
        || fail "the PyInstaller bundle did not build"
    BUNDLE="$DIST/vitrine"
fi
[ -x "$BUNDLE/vitrine" ] || fail "no executable at $BUNDLE/vitrine"

# --- the package tree -------------------------------------------------------------------------
STAGE="$WORK/deb/vitrine_${VERSION}_${ARCH}"
rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" \
    "$STAGE/usr/share/icons/hicolor/256x256/apps" "$STAGE/usr/share/doc/vitrine"
cp -a "$BUNDLE" "$STAGE/opt/vitrine"
find "$STAGE/opt/vitrine" -name __pycache__ -prune -exec rm -rf {} +
ln -s /opt/vitrine/vitrine "$STAGE/usr/bin/vitrine"
install -m 644 "$ROOT/packaging/linux/vitrine.desktop" "$STAGE/usr/share/applications/"
install -m 644 "$ROOT/resources/icons/vitrine.png" "$STAGE/usr/share/icons/hicolor/256x256/apps/"
{
    echo "Vitrine $VERSION: product photos to an accurate 3D model."
    echo
    echo "Vitrine is distributed under the MIT licence:"
    echo
    cat "$ROOT/LICENSE"
    echo
    echo "/opt/vitrine bundles Python and third-party libraries under their own licences"
    echo "(Help > About in the app lists them: PySide6/Qt LGPL-3.0, PyTorch BSD-3-Clause,"
    echo "COLMAP/pycolmap BSD-3-Clause, OpenCV Apache-2.0, ...)."
} >"$STAGE/usr/share/doc/vitrine/copyright"
install -m 755 "$ROOT/packaging/linux/postinst" "$ROOT/packaging/linux/postrm" "$STAGE/DEBIAN/"
chmod -R u+rwX,go+rX,go-w "$STAGE"

installed_kb=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
# System libraries the bundle does not carry: glibc (the build machine's, or newer), and for
# the window OpenGL/EGL, X11/xcb and fontconfig (Qt's xcb platform plugin loads them).
# bench/check_deb.sh checks with ldd that nothing else is missing on an installed copy.
glibc=$(ldd --version | sed -n '1s/.* \([0-9][0-9]*\.[0-9][0-9]*\)$/\1/p')
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@INSTALLED_KB@/$installed_kb/" \
    -e "s/@GLIBC@/${glibc:-2.31}/" -e "s|@MAINTAINER@|$MAINTAINER|" "$ROOT/packaging/linux/control.in" >"$STAGE/DEBIAN/control"

# --- the packages -------------------------------------------------------------------------------
mkdir -p "$DIST"
DEB="$DIST/vitrine_${VERSION}_${ARCH}.deb"
TARBALL="$DIST/vitrine-${VERSION}-linux-x86_64.tar.gz"
start=$(date +%s)
dpkg-deb --root-owner-group -Z"$COMPRESS" --build "$STAGE" "$DEB" >/dev/null \
    || fail "dpkg-deb could not build $DEB"
deb_s=$(( $(date +%s) - start ))
start=$(date +%s)
tar -C "$STAGE/opt" --owner=0 --group=0 --transform "s,^vitrine,vitrine-$VERSION," \
    -czf "$TARBALL" vitrine || fail "cannot write $TARBALL"
tar_s=$(( $(date +%s) - start ))

echo "== $DEB: $(du -m "$DEB" | cut -f1) MB ($COMPRESS, ${deb_s} s); installs $(( installed_kb / 1024 )) MB"
echo "== $TARBALL: $(du -m "$TARBALL" | cut -f1) MB (${tar_s} s)"
echo "build_deb: OK"
