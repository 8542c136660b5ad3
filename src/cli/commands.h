// The `pagoda` subcommands. Each takes the arguments after the subcommand name and returns the
// process exit code; errors are printed to stderr.
#pragma once

#include <set>
#include <string>

#include "base/dtype.h"

namespace pagoda {

class Args;
struct EngineConfig;
struct SpecDecodingStats;

int tokenize_command(int argc, char** argv);  // pagoda tokenize MODEL_DIR TEXT [--decode]
int generate_command(int argc, char** argv);  // pagoda generate MODEL_DIR --prompt TEXT ...
// pagoda generate MODEL_DIR --input prompts.jsonl [--output out.jsonl] ... (batch_generate.cc;
// generate_command hands over when --input is given)
int batch_generate_command(int argc, char** argv);
// pagoda bench throughput|latency|prefix-caching MODEL_DIR ... (bench_command.cc)
int bench_command(int argc, char** argv);
// pagoda bench serve [MODEL_DIR] --model NAME ... (bench_serve.cc; bench_command hands over)
int bench_serve(int argc, char** argv);
// pagoda serve MODEL_DIR ... (serve_command.cc)
int serve_command(int argc, char** argv);

// Shared by the engine-backed commands (batch_generate.cc): the EngineConfig flags
// (--max-num-seqs, --max-num-batched-tokens, --max-model-len, --block-size, --num-kv-blocks,
// --kv-cache-memory GiB, --kv-cache-dtype, --device, --gpu-memory-utilization,
// --max-cudagraph-capture-size; bool --no-enable-prefix-caching, --enforce-eager, ...).
const std::set<std::string>& engine_value_flags();
// --quantization / -q: "" (the checkpoint's own), "fp8" or "compressed-tensors"; errors name the value.
std::string parse_quantization_flag(const Args& args, const std::string& device);
EngineConfig engine_config_from_args(const Args& args);
// --kv-cache-dtype: auto / bfloat16, float32, fp8 (= fp8_e4m3), fp8_e5m2 (FP8 and float32 on the
// CPU only: the CUDA backend keeps BF16). Throws pagoda::Error naming the flag.
DType parse_kv_cache_dtype(const std::string& value, const std::string& device);
// "speculative decoding: A of D draft tokens accepted (P%) over S steps; mean acceptance length
// L" (what the bench and generate commands print), or "" when no draft was verified.
std::string spec_decoding_summary(const SpecDecodingStats& stats);
// Throws pagoda::Error unless dir is a checkpoint folder (has config.json).
void check_checkpoint_dir(const std::string& dir);

}  // namespace pagoda
