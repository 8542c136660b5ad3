#!/usr/bin/env bash
# Runs every test: the release build's full ctest suite, then the unit tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer (with the openai-client integration tests after the
# release suite), then the engine's threaded parts (AsyncEngine
# and the CPU backend's thread pool under it) under ThreadSanitizer. Assumes
# tools/install_deps.sh has run.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"
# The server against the official openai client (tests/integration).
python3 -m pytest tests/integration -q

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPAGODA_SANITIZE=ON -DPAGODA_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs"

cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPAGODA_TSAN=ON -DPAGODA_BUILD_BENCH=OFF >/dev/null
cmake --build build-tsan -j "$jobs" --target engine_tests
TSAN_OPTIONS=halt_on_error=1 ./build-tsan/bin/engine_tests --gtest_filter='AsyncEngine*:LLMEngine*:PromptLogprobs*'
