#!/usr/bin/env bash
# The foundation benchmark, all engines in one run on this machine (same checkpoint, same
# thread count): memory bandwidth, pagoda prefill/decode, llama.cpp (llama-cpp-python, BF16
# GGUF) and HF transformers. Prints one JSON line per engine and a summary with ratios and the
# decode fraction of the bandwidth roofline.
#   bench/run_foundation.sh [MODEL_DIR] [GGUF]
# Prerequisites: see bench/README.md (checkpoint, llama-cpp-python, GGUF conversion).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/qwen3-0.6b-random}
GGUF=${2:-models/qwen3-0.6b-random-bf16.gguf}
THREADS=${THREADS:-$(nproc)}
PROMPT_LEN=${PROMPT_LEN:-512}
DECODE=${DECODE:-128}
OUT=${OUT:-bench/out}
mkdir -p "$OUT"

[ "${NO_BUILD:-0}" = 1 ] || cmake --build build --target model_bench membw >/dev/null
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%F)"

build/bin/membw | tee "$OUT/membw.json"
PAGODA_NUM_THREADS=$THREADS build/bin/model_bench "$MODEL" --prompt-len "$PROMPT_LEN" --decode-tokens "$DECODE" \
  | tee "$OUT/pagoda.json"
if [ -f "$GGUF" ]; then
  python3 bench/peers/llamacpp_bench.py --gguf "$GGUF" --threads "$THREADS" --prompt-len "$PROMPT_LEN" \
    --decode-tokens "$DECODE" | tail -n 1 | tee "$OUT/llamacpp.json"
fi
python3 bench/peers/hf_bench.py --model "$MODEL" --threads "$THREADS" --prompt-len "$PROMPT_LEN" \
  --decode-tokens "$DECODE" | tee "$OUT/hf.json"
python3 bench/summarize_foundation.py "$OUT"
