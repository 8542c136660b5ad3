#!/usr/bin/env bash
# Fresh machine -> running pagoda: installs dependencies, builds, writes a tiny RANDOM-WEIGHT
# Qwen3 checkpoint (real Qwen3 tokenizer) and generates from it. The text is gibberish by
# design: the weights are random; this shows the whole path works.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
build/bin/make_random_checkpoint build/models/tiny-random --preset tiny --tokenizer-dir ../shared/tokenizers/qwen3
echo "== pagoda generate (random weights) =="
build/bin/pagoda generate build/models/tiny-random --prompt "The capital of France is" --max-tokens 32 --seed 0
