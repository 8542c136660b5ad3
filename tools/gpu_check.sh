#!/usr/bin/env bash
# The GPU machine's check (builds nothing there): shows the GPU and which CUDA libraries the
# test binary resolves, then runs the CUDA test suite. Run from the repository root after the
# build folder (build/ by default, or $BUILD_DIR) was carried over. With $OUT set, the GoogleTest
# XML report goes to $OUT/cuda_tests.xml. Exits non-zero when any test fails.
set -uo pipefail
BUILD_DIR=${BUILD_DIR:-build}
BIN="$BUILD_DIR/bin/cuda_tests"

echo "== nvidia-smi"
nvidia-smi || echo "(nvidia-smi failed)"
echo "== ldd $BIN (cuda / cublas)"
ldd "$BIN" | grep -i -E "cuda|cublas" || echo "(no CUDA shared libraries listed: cudart is static)"
if ! ldd "$BIN" | grep -q libcublasLt; then
  echo "ERROR: $BIN does not load cuBLASLt: it was built without the CUDA backend"
  exit 1
fi
if ldd "$BIN" | grep -q "not found"; then
  echo "ERROR: unresolved shared libraries:"
  ldd "$BIN" | grep "not found"
  exit 1
fi

echo "== $BIN"
args=()
[ -n "${OUT:-}" ] && args+=("--gtest_output=xml:$OUT/cuda_tests.xml")
"$BIN" "${args[@]}" "$@"
rc=$?
echo "== cuda_tests exit code $rc"
exit $rc
