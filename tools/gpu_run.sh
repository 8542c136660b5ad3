#!/usr/bin/env bash
# The GPU machine's whole run for the CUDA backend (issue 5), building nothing there: checks
# first, then benchmarks. Run from the repository root after tools/gpu_pack.sh made .gpu/ (the
# device tool carries it):  bash tools/gpu_run.sh
# Every step has its own time limit and log under $OUT (step.log); a failing step does not stop
# the others; a summary of every step's status and key lines ends the output.
# STEPS (default all): check invariance golden membw latency hf throughput serve
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
BIN=$PWD/.gpu/bin
STEPS=${STEPS:-"check invariance golden membw latency hf throughput serve"}
M=${M:-/tmp/models}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the script on this machine (tiny checkpoints in $M)
export PYTHONUNBUFFERED=1

# The test binaries find fixtures under the folder they were built in (/work/main) and
# checkpoints get tokenizers from /work/shared (tools/make_bench_checkpoint.py).
if [ ! -e /work/main/tests/model/data ]; then mkdir -p /work && ln -sfn "$PWD" /work/main; fi
if [ ! -e /work/shared/tokenizers/qwen3 ]; then mkdir -p /work && ln -sfn "$PWD/.gpu/shared" /work/shared; fi

want() { [[ " $STEPS " == *" $1 "* ]]; }
summary=()
step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2
  shift 2
  echo "== $name ($(date -u +%T))"
  local t0=$SECONDS
  timeout -k 10 "$secs" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-12}" "$OUT/$name.log"
  summary+=("$name: rc=$rc in $((SECONDS - t0)) s")
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
ldd "$BIN/pagoda" | grep -E "cublas|not found" || echo "ldd: no cuBLASLt?"

# Checkpoints, made here in the background while the checks run (random weights, real shapes).
mk() { [ -f "$M/$2/model.safetensors" ] || python3 tools/make_bench_checkpoint.py --preset "$1" --out "$M/$2" "${@:3}"; }
mkdir -p $M
(mk qwen3-0.6b qwen3-0.6b-golden --init golden && mk qwen2.5-0.5b qwen2.5-0.5b-golden --init golden &&
  mk qwen3-0.6b qwen3-0.6b-random && mk qwen3-8b qwen3-8b-random) >"$OUT/checkpoints.log" 2>&1 &
ckpt_pid=$!

want check && step cuda_tests 300 "$BIN/cuda_tests" --gtest_output=xml:"$OUT/cuda_tests.xml"
want invariance && PAGODA_TEST_DEVICE=cuda step invariance 300 "$BIN/engine_tests" \
  --gtest_filter='Fixtures/EngineInvariance.*'
wait $ckpt_pid
echo "checkpoints: $(tail -n 1 "$OUT/checkpoints.log")"; ls $M

if want golden; then
  step golden_qwen3 300 python3 tools/gpu_golden.py --model $M/qwen3-0.6b-golden --pagoda "$BIN/pagoda" --device "$DEVICE"
  step golden_qwen2 300 python3 tools/gpu_golden.py --model $M/qwen2.5-0.5b-golden --pagoda "$BIN/pagoda" --device "$DEVICE"
fi
want membw && step membw 120 python3 bench/gpu_membw.py
if want latency; then
  for m in qwen3-8b qwen3-0.6b; do
    step "latency_$m" 300 "$BIN/pagoda" bench latency $M/$m-random --device "$DEVICE" --input-len 8 --output-len 256 \
      --batch-size 1 --num-iters 3 --num-iters-warmup 1 --max-model-len 4096
  done
  # The same without CUDA graphs: what recording the decode step saves.
  step latency_qwen3-0.6b_eager 300 "$BIN/pagoda" bench latency $M/qwen3-0.6b-random --device "$DEVICE" --input-len 8 \
    --output-len 256 --batch-size 1 --num-iters 3 --num-iters-warmup 1 --max-model-len 4096 --enforce-eager
  # The same without async scheduling: what overlapping the host's step work with the GPU saves.
  step latency_qwen3-0.6b_sync 300 "$BIN/pagoda" bench latency $M/qwen3-0.6b-random --device "$DEVICE" --input-len 8 \
    --output-len 256 --batch-size 1 --num-iters 3 --num-iters-warmup 1 --max-model-len 4096 --no-async-scheduling
fi
want hf && step hf_qwen3-8b 300 python3 bench/peers/hf_bench.py --model $M/qwen3-8b-random --device "$DEVICE" --dtype bf16 \
  --skip-prefill --decode-prompt-len 8 --decode-tokens 128 --runs 2 --threads 16
if want throughput; then
  step throughput_qwen3-8b 420 "$BIN/pagoda" bench throughput $M/qwen3-8b-random --device "$DEVICE" --input-len 1024 \
    --output-len 128 --num-prompts 1000 --max-num-seqs 256 --max-num-batched-tokens 8192 --max-model-len 2048
  step throughput_qwen3-0.6b 300 "$BIN/pagoda" bench throughput $M/qwen3-0.6b-random --device "$DEVICE" --input-len 512 \
    --output-len 512 --num-prompts 256 --max-num-seqs 256 --max-num-batched-tokens 8192 --max-model-len 2048
  step throughput_qwen3-0.6b_sync 300 "$BIN/pagoda" bench throughput $M/qwen3-0.6b-random --device "$DEVICE" --input-len 512 \
    --output-len 512 --num-prompts 256 --max-num-seqs 256 --max-num-batched-tokens 8192 --max-model-len 2048 \
    --no-async-scheduling
fi
if want serve; then
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
  step serve 400 bash -c serve_run
fi

echo "== summary"
printf '%s\n' "${summary[@]}"
grep -h -E "Avg latency|Throughput:|serve start|copy_GBps|decode_tok_s|FAILED|PASSED|failures|Mean TTFT|Median TTFT|P99 TTFT|Mean TPOT|Median TPOT|P99 TPOT" "$OUT"/*.log | cut -c1-300
du -sh $M/* 2>/dev/null
