#!/usr/bin/env bash
# Install Vitrine's .deb on this machine, use it from the installed files, remove it, and check
# that nothing is left behind. Run by hand as root (too slow for the test suite: the build alone
# takes minutes); the output goes into bench/BENCHMARKS.md ("Installers").
#
#   bench/check_deb.sh                     build with packaging/build_deb.sh, then check
#   bench/check_deb.sh dist/vitrine_0.1.0_amd64.deb    check a package already built
#   VENV=/opt/venv bench/check_deb.sh      (the build's venv, as for build_deb.sh)
#
# Steps, each PASS or FAIL: dpkg -i; the files it put in place; every library the bundle links
# to is in the bundle or on this system (ldd); then, from a scratch folder with a clean
# environment (env -i: no venv, no PYTHONPATH, a scratch HOME), /usr/bin/vitrine --version,
# --selftest, `vitrine sample` + `vitrine reconstruct` of the built-in sample (timed: the first
# start's wait), the desktop window offscreen (first start: the CPU notice, then the sample) and
# again with a folder argument (as the launcher passes it); then dpkg -r and dpkg -P, after
# which no file of the package, nothing under /opt/vitrine, and no dpkg record may remain.
# Exits non-zero when any step fails. Refuses to run when a vitrine package is installed already.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GUI_SECONDS="${GUI_SECONDS:-25}"
status=0
pass() { echo "PASS $*"; }
failed() { echo "FAIL $*"; status=1; }
die() { echo "check_deb: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (dpkg -i / dpkg -P)"
if dpkg-query -W -f '${Status}' vitrine 2>/dev/null | grep -q "installed"; then
    die "a vitrine package is installed already: remove it first (dpkg -P vitrine)"
fi

DEB="${1:-}"
if [ -z "$DEB" ]; then
    echo "== building: packaging/build_deb.sh"
    "$ROOT/packaging/build_deb.sh" || die "build_deb.sh failed"
    DEB=$(ls -t "${DIST:-$ROOT/dist}"/vitrine_*_amd64.deb | head -1)
fi
[ -f "$DEB" ] || die "no package at $DEB"
VERSION=$(dpkg-deb -f "$DEB" Version)
echo "== package: $DEB ($(du -m "$DEB" | cut -f1) MB, version $VERSION, Installed-Size $(( $(dpkg-deb -f "$DEB" Installed-Size) / 1024 )) MB)"

SCRATCH=$(mktemp -d /tmp/vitrine-check.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's,^\./,/,; s,/$,,' | grep -v '^$' | grep -v '^/$' \
    >"$SCRATCH/contents.txt"

# --- install ----------------------------------------------------------------------------------
start=$(date +%s)
if dpkg -i "$DEB" >"$SCRATCH/dpkg-i.log" 2>&1; then
    pass "dpkg -i ($(( $(date +%s) - start )) s)"
else
    cat "$SCRATCH/dpkg-i.log"; failed "dpkg -i"
    dpkg -P vitrine >/dev/null 2>&1
    exit 1
fi
installed_mb=$(du -sm /opt/vitrine | cut -f1)
files=$(find /opt/vitrine -type f | wc -l)
echo "   /opt/vitrine: $installed_mb MB (du -sm), $files files"
size_note=""
if [ "$installed_mb" -le 800 ]; then
    pass "installed size $installed_mb MB <= 800 MB (the target)"
else
    size_note=" (size target missed: $installed_mb MB installed, target 800 MB)"
    echo "MISS installed size $installed_mb MB > 800 MB (the target; see bench/BENCHMARKS.md)"
fi

[ "$(readlink /usr/bin/vitrine)" = /opt/vitrine/vitrine ] && pass "/usr/bin/vitrine -> /opt/vitrine/vitrine" \
    || failed "/usr/bin/vitrine is not the link to /opt/vitrine/vitrine"
for f in /usr/share/applications/vitrine.desktop /usr/share/icons/hicolor/256x256/apps/vitrine.png \
         /usr/share/doc/vitrine/copyright; do
    [ -f "$f" ] && pass "$f" || failed "missing $f"
done
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate /usr/share/applications/vitrine.desktop && pass "desktop-file-validate" \
        || failed "desktop-file-validate"
else
    echo "   (desktop-file-validate not installed: the test suite checks the entry's keys)"
fi

# Libraries: what ldd cannot find must be in the bundle (found at run time through it) or
# nowhere needed; a library missing from both would fail on some start.
: >"$SCRATCH/missing.txt"
while IFS= read -r -d '' elf; do
    ldd "$elf" 2>/dev/null | awk '/not found/ {print $1}' >>"$SCRATCH/missing.txt"
done < <(find /opt/vitrine -type f \( -name '*.so*' -o -name vitrine \) -print0)
sort -u "$SCRATCH/missing.txt" -o "$SCRATCH/missing.txt"
absent=""
while read -r lib; do
    [ -n "$lib" ] || continue
    find /opt/vitrine -name "$lib" | grep -q . || absent="$absent $lib"
done <"$SCRATCH/missing.txt"
[ -z "$absent" ] && pass "every linked library is in the bundle or on this system" \
    || failed "linked libraries found nowhere:$absent"

# --- run from the installed files ---------------------------------------------------------------
mkdir -p "$SCRATCH/home" "$SCRATCH/cwd"
cd "$SCRATCH/cwd" || die "no scratch folder"
run() {  # a clean environment: nothing of the checkout or its venv can be imported
    env -i HOME="$SCRATCH/home" PATH=/usr/bin:/bin LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen "$@"
}
got=$(run vitrine --version 2>&1)
[ "$got" = "vitrine $VERSION" ] && pass "vitrine --version: $got" || failed "vitrine --version: $got"

start=$(date +%s)
if run /usr/bin/vitrine --selftest >"$SCRATCH/selftest.log" 2>&1; then
    pass "/usr/bin/vitrine --selftest ($(( $(date +%s) - start )) s): $(tail -1 "$SCRATCH/selftest.log")"
else
    cat "$SCRATCH/selftest.log"; failed "/usr/bin/vitrine --selftest"
fi
head -1 "$SCRATCH/selftest.log" | sed 's/^/   /'

start=$(date +%s)
run vitrine sample "$SCRATCH/sample" >"$SCRATCH/sample.log" 2>&1 || { cat "$SCRATCH/sample.log"; failed "vitrine sample"; }
sample_s=$(( $(date +%s) - start ))
start=$(date +%s)
if run vitrine reconstruct "$SCRATCH/sample/photos" --out "$SCRATCH/run" >"$SCRATCH/rec.log" 2>&1; then
    rec_s=$(( $(date +%s) - start ))
    pass "vitrine sample ($sample_s s) + vitrine reconstruct ($rec_s s): $(( sample_s + rec_s )) s for the first start's sample"
    grep -v '\] \|^ *$' "$SCRATCH/rec.log" | sed 's/^/   /' | head -12  # the summary, no bars
else
    cat "$SCRATCH/rec.log"; failed "vitrine reconstruct"
fi
for f in report.json dense.ply mesh.glb viewer.html sparse/0/images.bin; do
    [ -s "$SCRATCH/run/$f" ] || failed "the run folder lacks $f"
done
reported=$(sed -n 's/.*"vitrine_version": *"\([^"]*\)".*/\1/p' "$SCRATCH/run/report.json" | head -1)
[ "$reported" = "$VERSION" ] && pass "report.json: vitrine_version $reported" \
    || failed "report.json: vitrine_version '$reported', not $VERSION"

# The window, offscreen, first start in the scratch home: it must say it runs on the CPU (no GPU
# here), write the sample and keep running until stopped (timeout's exit code 124).
rm -rf "$SCRATCH/home/Vitrine"
run timeout "$GUI_SECONDS" vitrine -v >"$SCRATCH/gui.log" 2>&1
code=$?
if [ "$code" -eq 124 ] && ! grep -q Traceback "$SCRATCH/gui.log"; then
    pass "desktop window offscreen: running after $GUI_SECONDS s, no traceback"
else
    cat "$SCRATCH/gui.log"; failed "desktop window: exit $code (124 expected)"
fi
grep -m1 "No GPU found" "$SCRATCH/gui.log" | sed 's/^[A-Z]* [a-z.]*: /   first start says: /' \
    | grep . || failed "the first start did not say it runs on the CPU"
# A folder given as the launcher gives it (Exec=vitrine %F): a new set, no sample.
rm -rf "$SCRATCH/home/Vitrine"
run timeout 15 vitrine -v "$SCRATCH/sample/photos" >"$SCRATCH/gui2.log" 2>&1
code=$?
if [ "$code" -eq 124 ] && ! grep -q Traceback "$SCRATCH/gui2.log"; then
    pass "desktop window with a folder argument: running after 15 s, no traceback"
else
    cat "$SCRATCH/gui2.log"; failed "desktop window with a folder: exit $code"
fi
cd / || true

# --- remove -------------------------------------------------------------------------------------
dpkg -r vitrine >"$SCRATCH/dpkg-r.log" 2>&1 && pass "dpkg -r vitrine" || { cat "$SCRATCH/dpkg-r.log"; failed "dpkg -r"; }
[ ! -e /opt/vitrine ] && [ ! -e /usr/bin/vitrine ] && pass "after dpkg -r: no /opt/vitrine, no /usr/bin/vitrine" \
    || failed "after dpkg -r: $(ls -d /opt/vitrine /usr/bin/vitrine 2>/dev/null | tr '\n' ' ')left"
dpkg -P vitrine >"$SCRATCH/dpkg-p.log" 2>&1 && pass "dpkg -P vitrine" || { cat "$SCRATCH/dpkg-p.log"; failed "dpkg -P"; }
left=""
while read -r path; do
    case "$path" in /usr|/usr/bin|/usr/share|/usr/share/*/|/opt) continue ;; esac
    # shared folders (/usr/share/icons/hicolor/...) stay when other packages use them
    if [ -e "$path" ] && ! [ -d "$path" ]; then left="$left $path"; fi
done <"$SCRATCH/contents.txt"
[ -e /opt/vitrine ] && left="$left /opt/vitrine"
[ -z "$left" ] && pass "after dpkg -P: none of the package's $(wc -l <"$SCRATCH/contents.txt") paths is left" \
    || failed "after dpkg -P, left:$left"
dpkg-query -W vitrine >/dev/null 2>&1 && failed "dpkg still knows vitrine" || pass "dpkg has no record of vitrine"
ls /var/lib/dpkg/info/vitrine.* >/dev/null 2>&1 && failed "maintainer files left in /var/lib/dpkg/info" \
    || pass "no /var/lib/dpkg/info/vitrine.* left"

[ "$status" -eq 0 ] && echo "check_deb: OK$size_note" || echo "check_deb: FAILED$size_note"
exit "$status"
