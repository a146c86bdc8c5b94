#!/usr/bin/env bash
# Run the masks tests against several OpenCV releases side by side, without touching the venv:
# each release is installed into its own folder under bench/out/opencv-<version> and put first
# on PYTHONPATH, so the synthetic scenes are rendered and masked by that release.
#
#   bash bench/check_opencv_versions.sh                    # 5.0.0.93 and 5.1.0.95
#   bash bench/check_opencv_versions.sh 5.1.0.95 5.2.0.0   # any releases
#   VENV=/path/to/venv TESTS="tests/engine/test_masks.py" bash bench/check_opencv_versions.sh
#
# Prints one line per release; exits non-zero when any release fails.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(5.0.0.93 5.1.0.95)
TESTS=${TESTS:-"tests/engine/test_masks.py::test_iou_against_ground_truth tests/engine/test_masks.py::test_run_masks_every_scene_kind tests/engine/test_masks.py::test_backdrop_flood_stops_at_a_pinhole_in_an_outline"}
status=0
for v in "${versions[@]}"; do
  dir="bench/out/opencv-$v"
  if [ ! -d "$dir/cv2" ]; then
    "$PY" -m pip install -q --no-deps --target "$dir" "opencv-python-headless==$v" >/dev/null 2>&1 ||
      { echo "opencv $v: could not install"; status=1; continue; }
  fi
  got=$(PYTHONPATH="$dir" "$PY" -c 'import cv2; print(cv2.__version__)')
  # shellcheck disable=SC2086
  out=$(PYTHONPATH="$dir" "$PY" -m pytest -q -p no:cacheprovider $TESTS 2>&1)
  rc=$?
  echo "opencv $v (imports as $got): $(echo "$out" | tail -n 1)"
  [ $rc -eq 0 ] || { echo "$out" | grep -E "^(FAILED|E  )" | head -n 20; status=1; }
done
exit $status
