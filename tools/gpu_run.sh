#!/usr/bin/env bash
# The GPU machine's whole run for the CUDA backend (issue 5), building nothing there: checks
# first, then benchmarks. Run from the repository root after tools/gpu_pack.sh made .gpu/ (the
# device tool carries it):  bash tools/gpu_run.sh
# Every step has its own time limit and log under $OUT (step.log); a failing step does not stop
# the others; a summary of every step's status and key lines ends the output.
# STEPS (default all): check golden invariance membw latency throughput serve hf (in this order)
# BUDGET (default 550): seconds the whole run may take; later steps are skipped when it is spent.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
BIN=$PWD/.gpu/bin
STEPS=${STEPS:-"check golden invariance membw latency throughput serve hf"}
M=${M:-/tmp/models}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the script on this machine (tiny checkpoints in $M)
export PYTHONUNBUFFERED=1

# The test binaries find fixtures under the folder they were built in (/work/main) and
# checkpoints get tokenizers from /work/shared (tools/make_bench_checkpoint.py).
if [ ! -e /work/main/tests/model/data ]; then mkdir -p /work && ln -sfn "$PWD" /work/main; fi
if [ ! -e /work/shared/tokenizers/qwen3 ]; then mkdir -p /work && ln -sfn "$PWD/.gpu/shared" /work/shared; fi

want() { [[ " $STEPS " == *" $1 "* ]]; }
summary=()
# The whole run must end (summary printed, logs written) inside the device tool's 600 s per call:
# each step's limit is cut to what is left of BUDGET, and steps are skipped once it is spent, so
# the steps come in order of importance (correctness first, then the headline figures).
BUDGET=${BUDGET:-550}
step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2
  shift 2
  local left=$((BUDGET - SECONDS - 15))
  if [ "$left" -lt 20 ]; then
    echo "== $name: skipped, the run's budget ($BUDGET s) is spent"
    summary+=("$name: skipped (budget)")
    return 1
  fi
  [ "$secs" -gt "$left" ] && secs=$left
  echo "== $name ($(date -u +%T), limit $secs s)"
  local t0=$SECONDS
  timeout -k 10 "$secs" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-12}" "$OUT/$name.log"
  summary+=("$name: rc=$rc in $((SECONDS - t0)) s")
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
# cuBLASLt comes from the toolkit's folder (the binaries' RPATH); if that is missing, from the
# pip wheel PyTorch uses (nvidia-cublas, same major version).
if ldd "$BIN/pagoda" | grep -q "libcublasLt.*not found"; then
  lt=$(python3 -c "import glob, os, site; print(next(iter(sorted(os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + '/nvidia/**/libcublasLt.so.13', recursive=True))), ''))" 2>/dev/null)
  [ -n "$lt" ] && export LD_LIBRARY_PATH="$lt${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" && echo "cuBLASLt from $lt"
fi
ldd "$BIN/pagoda" | grep -E "cublas|not found" || echo "ldd: no cuBLASLt?"

# Checkpoints, made here in the background while the checks run (random weights, real shapes):
# the small ones first (golden, 0.6B), the 8B one (16 GB) apart.
mk() { [ -f "$M/$2/model.safetensors" ] || python3 tools/make_bench_checkpoint.py --preset "$1" --out "$M/$2" "${@:3}"; }
mkdir -p $M
(mk qwen3-0.6b qwen3-0.6b-golden --init golden && mk qwen2.5-0.5b qwen2.5-0.5b-golden --init golden &&
  mk qwen3-0.6b qwen3-0.6b-random) >"$OUT/checkpoints.log" 2>&1 &
small_pid=$!
(mk qwen3-8b qwen3-8b-random) >"$OUT/checkpoints_8b.log" 2>&1 &
big_pid=$!

# Waits for a background job, but not past the run's budget.
wait_for() {
  while kill -0 "$1" 2>/dev/null && [ $((BUDGET - SECONDS)) -gt 20 ]; do sleep 1; done
}

want check && step cuda_tests 150 "$BIN/cuda_tests" --gtest_output=xml:"$OUT/cuda_tests.xml"
# Again with programmatic dependent launches (off by default until measured here).
want check && PAGODA_CUDA_PDL=on step cuda_tests_pdl 100 "$BIN/cuda_tests"
wait_for $small_pid
echo "checkpoints: $(tail -n 1 "$OUT/checkpoints.log")"; ls $M
if want golden; then
  step golden_qwen3 120 python3 tools/gpu_golden.py --model $M/qwen3-0.6b-golden --pagoda "$BIN/pagoda" --device "$DEVICE"
  step golden_qwen2 120 python3 tools/gpu_golden.py --model $M/qwen2.5-0.5b-golden --pagoda "$BIN/pagoda" --device "$DEVICE"
fi
want invariance && PAGODA_TEST_DEVICE=cuda step invariance 150 "$BIN/engine_tests" \
  --gtest_filter='Fixtures/EngineInvariance.*'
want membw && step membw 60 python3 bench/gpu_membw.py
# The engine's host time per step on this machine's CPU (no device work; bench/engine_overhead.cc),
# to set against the GPU's step times below.
want latency && step engine_overhead 30 "$BIN/engine_overhead" $M/qwen3-0.6b-random --batch 256 --input-len 1024 \
  --output-len 128
latency() {  # latency NAME MODEL [FLAGS...]; GEMV=off|on|auto: PAGODA_CUDA_GEMV, PDL=on|off: PAGODA_CUDA_PDL
  local name=$1 model=$2
  shift 2
  # Debug logging: the small-batch GEMM vs cuBLASLt timing of every decode linear shape.
  # --max-num-seqs 8: graphs for batch 1, 2, 4 and 8 only (all recorded at start).
  step "$name" 150 env PAGODA_LOG_LEVEL=debug PAGODA_CUDA_GEMV="${GEMV:-auto}" PAGODA_CUDA_PDL="${PDL:-off}" \
    "$BIN/pagoda" bench latency \
    "$M/$model" --device "$DEVICE" --input-len 8 --output-len 256 --batch-size 1 --num-iters 3 --num-iters-warmup 1 \
    --max-model-len 4096 --max-num-seqs 8 "$@"
}
if want latency; then
  latency latency_qwen3-0.6b qwen3-0.6b-random
  # Without async scheduling, then without CUDA graphs: what each saves.
  latency latency_qwen3-0.6b_sync qwen3-0.6b-random --no-async-scheduling
  latency latency_qwen3-0.6b_eager qwen3-0.6b-random --enforce-eager
  wait_for $big_pid
  echo "checkpoints: $(tail -n 1 "$OUT/checkpoints_8b.log")"
  latency latency_qwen3-8b qwen3-8b-random
  # cuBLASLt for every linear: what the small-batch GEMM saves.
  GEMV=off latency latency_qwen3-8b_cublaslt qwen3-8b-random
  # Programmatic dependent launches: what overlapping each kernel's launch with the previous saves.
  PDL=on latency latency_qwen3-8b_pdl qwen3-8b-random
fi
if want throughput; then
  # nano-vllm's workload shape on 0.6B (256 sequences), then the issue's 1,000 x (1,024 in, 128 out) on 8B.
  step throughput_qwen3-0.6b 200 "$BIN/pagoda" bench throughput $M/qwen3-0.6b-random --device "$DEVICE" --input-len 512 \
    --output-len 512 --num-prompts 256 --max-num-seqs 256 --max-num-batched-tokens 8192 --max-model-len 2048
  wait_for $big_pid
  step throughput_qwen3-8b 300 "$BIN/pagoda" bench throughput $M/qwen3-8b-random --device "$DEVICE" --input-len 1024 \
    --output-len 128 --num-prompts 1000 --max-num-seqs 256 --max-num-batched-tokens 8192 --max-model-len 2048
fi
if want serve; then
  wait_for $big_pid
  # Time from `pagoda serve` start to the first completion answered, then 64 concurrent streams.
  serve_run() {
    local t0 rc
    t0=$(date +%s.%N)
    "$BIN/pagoda" serve $M/qwen3-8b-random --device "$DEVICE" --port 8011 --max-model-len 4096 \
      --served-model-name m >"$OUT/server.log" 2>&1 &
    local pid=$!
    python3 - "$t0" <<'PY'
import json, sys, time, urllib.error, urllib.request
t0 = float(sys.argv[1])
body = json.dumps({"model": "m", "prompt": [1, 2, 3], "max_tokens": 1}).encode()
while True:
    try:
        req = urllib.request.Request("http://127.0.0.1:8011/v1/completions", body, {"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).read()
        print(f"serve start to first answer: {time.time() - t0:.2f} s")
        break
    except urllib.error.HTTPError as e:
        print(f"server answered {e.code}: {e.read()[:300]}"); sys.exit(1)
    except Exception:
        if time.time() - t0 > 120:
            print("server did not answer within 120 s"); sys.exit(1)
        time.sleep(0.05)
PY
    rc=$?
    "$BIN/pagoda" bench serve $M/qwen3-8b-random --port 8011 --model m --num-prompts 256 --max-concurrency 64 \
      --random-input-len 1024 --random-output-len 128 --ignore-eos --disable-tqdm || rc=1
    kill -TERM $pid
    wait $pid
    return $rc
  }
  export -f serve_run
  export BIN M OUT DEVICE
  step serve 300 bash -c serve_run
fi
want hf && step hf_qwen3-8b 200 python3 bench/peers/hf_bench.py --model $M/qwen3-8b-random --device "$DEVICE" --dtype bf16 \
  --skip-prefill --decode-prompt-len 8 --decode-tokens 128 --runs 2 --threads 16

echo "== summary"
printf '%s\n' "${summary[@]}"
grep -h -E "Avg latency|Throughput:|serve start|GB of tensors in|CUDA graphs? \(decode|s after start|copy_GBps|decode_tok_s|decode_step_us_p50|FAILED|PASSED|failures|Mean TTFT|Median TTFT|P99 TTFT|Mean TPOT|Median TPOT|P99 TPOT" "$OUT"/*.log | cut -c1-300
echo "== decode linears (8B): small-batch GEMM vs cuBLASLt"
grep -h "CUDA linear" "$OUT"/latency_qwen3-8b.log 2>/dev/null | sed 's/.*CUDA linear/CUDA linear/' | sort -u | cut -c1-220
echo "== decode graphs (8B): nodes (recorded largest first: the last is batch 1: 6 per layer + 5 expected with the norms and residual adds folded into the small-batch GEMM, 8 per layer unfolded)"
grep -h "CUDA graph [0-9]* captured" "$OUT"/latency_qwen3-8b.log 2>/dev/null | sed "s/.*CUDA graph/CUDA graph/" | tail -n 4
du -sh $M/* 2>/dev/null
