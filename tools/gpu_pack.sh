#!/usr/bin/env bash
# Prepares what the GPU machine's run (tools/gpu_run.sh) needs, here, in .gpu/ (ignored through
# .git/info/exclude; the device tool carries it): stripped copies of the CUDA build's binaries
# and the Qwen3 tokenizer files that tools/make_bench_checkpoint.py copies into checkpoints.
# Then call the device tool with carry [".gpu"] and command "bash tools/gpu_run.sh".
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target pagoda cuda_tests engine_tests engine_overhead
grep -q '^/.gpu/$' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/bin .gpu/shared/tokenizers/qwen3
for b in pagoda cuda_tests engine_tests engine_overhead; do strip -o ".gpu/bin/$b" "build/bin/$b"; done
cp ../shared/tokenizers/qwen3/tokenizer.json ../shared/tokenizers/qwen3/tokenizer_config.json .gpu/shared/tokenizers/qwen3/
du -sh .gpu
