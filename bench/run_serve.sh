#!/usr/bin/env bash
# The serving benchmarks (issue 4), in one run on this machine:
#   1. load: 1,000 concurrent streaming clients (`pagoda bench serve --max-concurrency 1000`, one
#      socket and one thread each) against `pagoda serve` on a tiny random checkpoint; afterwards
#      /metrics must show no request running or waiting and no KV block held; the server's peak
#      RSS (VmHWM) is read from /proc; SIGTERM must give exit status 0.
#   2. HTTP overhead: 0.6B-shape checkpoint, 32 concurrent streams of (input 32, output 128)
#      through `pagoda serve` + `pagoda bench serve`, against `pagoda bench throughput` offline on
#      the same workload and concurrency, in the same run.
# Output: every tool's own lines under $OUT.
#   bench/run_serve.sh [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/qwen3-0.6b-random}
TOKENIZER=${TOKENIZER:-../shared/tokenizers/qwen3}
THREADS=${THREADS:-$(nproc)}
OUT=${OUT:-bench/out/serve}
CLIENTS=${CLIENTS:-1000}
PORT=${PORT:-18431}
mkdir -p "$OUT"
[ "${NO_BUILD:-0}" = 1 ] || cmake --build build --target pagoda make_random_checkpoint >/dev/null
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%F)"
export PAGODA_NUM_THREADS=$THREADS
ulimit -n "$(ulimit -Hn)"

SERVER_PID=
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID"
  local rc=0
  wait "$SERVER_PID" || rc=$?
  echo "server exit status after SIGTERM: $rc"
  SERVER_PID=
}
trap 'if [ -n "$SERVER_PID" ]; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi' EXIT

start_server() {  # MODEL_DIR LOG extra flags...
  local model=$1 log=$2
  shift 2
  build/bin/pagoda serve "$model" --port "$PORT" --host 127.0.0.1 --served-model-name m "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server did not come up; its log:" >&2
  cat "$log" >&2
  exit 1
}

metric() {  # NAME -> value from /metrics
  curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v n="pagoda:$1" '$1 ~ "^"n"[{]" {print $2}'
}

# 1. Load.
TINY="$OUT/tiny"
[ -f "$TINY/config.json" ] || build/bin/make_random_checkpoint "$TINY" --preset tiny --tokenizer-dir "$TOKENIZER" >/dev/null
start_server "$TINY" "$OUT/load_server.log" --max-num-seqs 256 --max-model-len 512
build/bin/pagoda bench serve "$TOKENIZER" --port "$PORT" --model m --num-prompts "$CLIENTS" \
  --max-concurrency "$CLIENTS" --random-input-len 64 --random-output-len 64 --ignore-eos \
  --save-result --result-filename "$OUT/load_result.json" 2>&1 | tee "$OUT/load_client.txt"
sleep 0.5
{
  echo "after the load: running $(metric num_requests_running), waiting $(metric num_requests_waiting)," \
       "kv_cache_usage_perc $(metric kv_cache_usage_perc)"
  grep -E 'VmHWM|VmRSS' "/proc/$SERVER_PID/status"
} | tee "$OUT/load_server_state.txt"
stop_server >>"$OUT/load_server_state.txt"; tail -n 1 "$OUT/load_server_state.txt"

# 2. HTTP against offline, 32 streams.
if [ "${SKIP_HTTP:-0}" = 1 ]; then exit 0; fi
build/bin/pagoda bench throughput "$MODEL" --input-len 32 --output-len 128 --num-prompts 64 --max-num-seqs 32 \
  | tee "$OUT/offline_32.txt"
start_server "$MODEL" "$OUT/http_server.log" --max-num-seqs 32 --max-model-len 1024
build/bin/pagoda bench serve "$TOKENIZER" --port "$PORT" --model m --num-prompts 64 --max-concurrency 32 \
  --random-input-len 32 --random-output-len 128 --ignore-eos \
  --save-result --result-filename "$OUT/http_32.json" 2>&1 | tee "$OUT/http_32.txt"
stop_server >>"$OUT/http_32.txt"; tail -n 1 "$OUT/http_32.txt"

python3 - "$OUT" <<'EOF'
import json, re, sys
out = sys.argv[1]
offline = float(re.search(r"([\d.]+) output tokens/s", open(f"{out}/offline_32.txt").read()).group(1))
http = json.load(open(f"{out}/http_32.json"))
load = json.load(open(f"{out}/load_result.json"))
key = "output_throughput"
print(f"load: {load['completed']} completed, {load['failed']} failed of {load.get('num_prompts', '?')} requests")
print(f"offline 32 streams: {offline:.2f} output tok/s; HTTP 32 streams: {http[key]:.2f} output tok/s "
      f"= {http[key] / offline:.3f} of offline")
EOF
