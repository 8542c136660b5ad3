#!/usr/bin/env bash
# The MoE / hybrid-attention benchmarks (issue 6), all in one run on this machine, same checkpoints
# and thread count for every engine:
#   1. memory bandwidth (membw), for the rooflines
#   2. the Gated DeltaNet recurrence alone (ops_bench --gdn): time per token vs its memory roofline
#   3. per model (Qwen3.5-0.8B-like hybrid; Qwen3-30B-A3B-like MoE, 8 of 48 layers): pagoda offline
#      throughput at 1, 8 and 32 concurrent sequences (bench throughput, --max-num-seqs = C), then
#      the same workloads on llama.cpp (llama-cpp-python, its own multi-sequence batching, BF16 GGUF)
#      and HF transformers (generate, static batches of C, BF16)
# Output: every tool's own lines under $OUT, then a summary (bench/summarize_hybrid.py).
#   bench/run_hybrid.sh
# Prerequisites: the checkpoints and GGUFs (bench/README.md, "MoE and hybrid models").
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
OUT=${OUT:-bench/out/hybrid}
SKIP_HF=${SKIP_HF:-0}
SKIP_LLAMACPP=${SKIP_LLAMACPP:-0}
MODELS=${MODELS:-"qwen3_5-0.8b qwen3-30b-a3b-8l"}
mkdir -p "$OUT"

[ "${NO_BUILD:-0}" = 1 ] || cmake --build build --target pagoda membw ops_bench >/dev/null
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%F)"
export PAGODA_NUM_THREADS=$THREADS

build/bin/membw | tee "$OUT/membw.json"
build/bin/ops_bench --gdn | tee "$OUT/gdn.txt"
for name in $MODELS; do
  model=models/$name-random
  gguf=models/$name-random-bf16.gguf
  case $name in
    qwen3-30b*) in_len=32; out_len=64 ;;
    *) in_len=32; out_len=128 ;;
  esac
  for c in 1 8 32; do
    n=$c; [ "$c" = 1 ] && n=2
    build/bin/pagoda bench throughput "$model" --input-len $in_len --output-len $out_len --num-prompts $n \
      --max-num-seqs $c --max-model-len 4096 | tee "$OUT/${name}_pagoda_c$c.txt"
    if [ "$SKIP_LLAMACPP" != 1 ] && [ -f "$gguf" ]; then
      python3 bench/peers/llamacpp_throughput.py --gguf "$gguf" --input-len $in_len --output-len $out_len \
        --num-prompts $n --max-concurrency $c --threads "$THREADS" | tail -n 1 | tee "$OUT/${name}_llamacpp_c$c.json"
    fi
    if [ "$SKIP_HF" != 1 ]; then
      python3 bench/peers/hf_throughput.py --model "$model" --dtype bf16 --input-len $in_len --output-len $out_len \
        --num-prompts $n --batch-size $c --threads "$THREADS" | tail -n 1 | tee "$OUT/${name}_hf_c$c.json"
    fi
  done
done
python3 bench/summarize_hybrid.py "$OUT"
