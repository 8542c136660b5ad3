#!/usr/bin/env bash
# The engine-core benchmarks (issue 3), all in one run on this machine, same checkpoint and thread
# count for every engine:
#   1. memory bandwidth (membw), for the roofline
#   2. pagoda batch-1 decode: bench throughput with one sequence at a time
#   3. pagoda offline throughput at 32 concurrent sequences (input 32, output 128)
#   4. the same workload on llama.cpp (its own multi-sequence batching, llama-cpp-python) and on
#      HF transformers generate (static batch of 32, BF16 and FP32)
#   5. shared prefix: 16 requests sharing a 1,024-token prefix, one after another: TTFT of the
#      later ones against the first's
#   6. KV memory lost to partly filled blocks at full load (a pool too small for the batch, so
#      the scheduler runs it full and preempts)
# Output: every tool's own lines under $OUT, then a summary.
#   bench/run_engine.sh [MODEL_DIR] [GGUF]
# Prerequisites: bench/README.md (checkpoint, llama-cpp-python, GGUF conversion).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/qwen3-0.6b-random}
GGUF=${2:-models/qwen3-0.6b-random-bf16.gguf}
THREADS=${THREADS:-$(nproc)}
OUT=${OUT:-bench/out/engine}
SKIP_HF=${SKIP_HF:-0}
mkdir -p "$OUT"

[ "${NO_BUILD:-0}" = 1 ] || cmake --build build --target pagoda membw >/dev/null
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%F)"
export PAGODA_NUM_THREADS=$THREADS

build/bin/membw | tee "$OUT/membw.json"
build/bin/pagoda bench throughput "$MODEL" --input-len 32 --output-len 128 --num-prompts 2 --max-num-seqs 1 \
  | tee "$OUT/pagoda_batch1.txt"
build/bin/pagoda bench throughput "$MODEL" --input-len 32 --output-len 128 --num-prompts 32 --max-num-seqs 32 \
  | tee "$OUT/pagoda_batch32.txt"
if [ -f "$GGUF" ]; then
  python3 bench/peers/llamacpp_throughput.py --gguf "$GGUF" --input-len 32 --output-len 128 --num-prompts 32 \
    --threads "$THREADS" | tail -n 1 | tee "$OUT/llamacpp_batch32.json"
  python3 bench/peers/llamacpp_throughput.py --gguf "$GGUF" --input-len 32 --output-len 128 --num-prompts 2 \
    --max-concurrency 1 --threads "$THREADS" | tail -n 1 | tee "$OUT/llamacpp_batch1.json"
fi
if [ "$SKIP_HF" != 1 ]; then
  python3 bench/peers/hf_throughput.py --model "$MODEL" --dtype bf16 fp32 --input-len 32 --output-len 128 \
    --num-prompts 32 --threads "$THREADS" | tee "$OUT/hf_batch32.json"
fi
build/bin/pagoda bench prefix-caching "$MODEL" --prefix-len 1024 --suffix-len 32 --num-prompts 16 --output-len 1 \
  | tee "$OUT/pagoda_prefix.txt"
build/bin/pagoda bench throughput "$MODEL" --input-len 256 --output-len 64 --num-prompts 32 --max-num-seqs 32 \
  --num-kv-blocks 320 | tee "$OUT/pagoda_fullkv.txt"
python3 bench/summarize_engine.py "$OUT"
