// Batch-1 model benchmark (like llama-bench's pp/tg): prefill tokens/s for a P-token prompt and
// decode tokens/s for D tokens at batch 1, on the CPU backend. Prints one JSON line.
//   model_bench MODEL_DIR [--prompt-len 512] [--decode-tokens 128] [--repeats 3]
//               [--decode-prompt-len 16] [--kv-cache-dtype auto|float32] [--chunk 512]
//               [--quantization fp8]
// Decode is measured after a short prompt (as the peer scripts in bench/peers do).
#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "cli/args.h"
#include "engine/engine_core.h"
#include "engine/llm_engine.h"
#include "io/checkpoint.h"
#include "io/model_config.h"
#include "model/model.h"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run(int argc, char** argv) {
  using namespace pagoda;
  Args args(argc, argv, {"--prompt-len", "--decode-tokens", "--decode-prompt-len", "--repeats", "--kv-cache-dtype", "--chunk",
                          "--quantization"}, {});
  PAGODA_CHECK(args.positionals().size() == 1, "usage: model_bench MODEL_DIR [--prompt-len N] [--decode-tokens N]");
  const std::string dir = args.positionals()[0];
  const int prompt_len = static_cast<int>(args.get_int("--prompt-len").value_or(512));
  const int decode_tokens = static_cast<int>(args.get_int("--decode-tokens").value_or(128));
  const int decode_prompt_len = static_cast<int>(args.get_int("--decode-prompt-len").value_or(16));
  const int repeats = static_cast<int>(args.get_int("--repeats").value_or(3));
  const int chunk = static_cast<int>(args.get_int("--chunk").value_or(512));
  const std::string kv = args.get_or("--kv-cache-dtype", "auto");

  EngineConfig ec;
  ec.max_num_seqs = 1;
  ec.max_num_batched_tokens = chunk;
  ec.max_model_len = std::max(prompt_len, decode_prompt_len + decode_tokens) + 1;
  ec.enable_prefix_caching = false;  // every repeat computes its prompt
  ec.kv_cache_dtype = (kv == "float32" || kv == "fp32") ? DType::kF32 : DType::kBF16;
  ec.num_kv_blocks = (ec.max_model_len + ec.block_size - 1) / ec.block_size + 1;
  ec.quantization = args.get_or("--quantization", "");

  auto backend = make_cpu_backend();
  const double t_load = now();
  auto model = load_model(dir, *backend, engine_load_options(ec));
  const double load_seconds = now() - t_load;
  LLMEngine engine(*model, *backend, ec);

  const ModelConfig& cfg = model->config();
  std::mt19937 rng(0);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(std::min<int64_t>(cfg.vocab_size, 150000) - 1));
  std::vector<int32_t> tokens(static_cast<size_t>(prompt_len));
  for (auto& t : tokens) t = dist(rng);

  // Runs one greedy request (EOS ignored) to the end; returns the time its first token arrived
  // and the time it finished.
  int next_id = 0;
  auto run_request = [&](const std::vector<int32_t>& prompt, int max_tokens) {
    SamplingParams sp;
    sp.temperature = 0.0f;
    sp.ignore_eos = true;
    sp.max_tokens = max_tokens;
    const double t0 = now();
    engine.add_request(std::to_string(next_id++), prompt, sp);
    double first = -1.0;
    while (engine.has_unfinished())
      for (const RequestOutput& o : engine.step())
        if (first < 0 && !o.new_token_ids.empty()) first = now();
    return std::pair<double, double>{first - t0, now() - t0};
  };

  run_request(tokens, 1);  // warm-up (page in the weights)
  std::vector<double> prefill_times, decode_times;
  const std::vector<int32_t> short_prompt(tokens.begin(), tokens.begin() + std::min(decode_prompt_len, prompt_len));
  for (int r = 0; r < repeats; ++r) {
    prefill_times.push_back(run_request(tokens, 1).first);
    // Decode: the time from the first token to the last covers decode_tokens forward steps.
    const auto [first, total] = run_request(short_prompt, decode_tokens + 1);
    decode_times.push_back(total - first);
  }

  // Bytes a decode step must stream: every weight once (the input embedding table contributes
  // one row, except when it is also the tied lm_head).
  Checkpoint ckpt(dir);
  double weight_bytes = static_cast<double>(ckpt.total_bytes());
  if (!cfg.tie_word_embeddings && ckpt.has("model.embed_tokens.weight"))
    weight_bytes -= static_cast<double>(ckpt.get("model.embed_tokens.weight").nbytes);
  // Quantized at load (--quantization fp8): every 2-D *_proj.weight of the layer stack becomes
  // one byte per element plus one F32 scale per 128 x 128 block.
  if (!ec.quantization.empty() && !cfg.raw.contains("quantization_config")) {
    for (const std::string& n : ckpt.names()) {
      const TensorInfo& t = ckpt.get(n);
      const bool linear = n.size() > 12 && n.compare(n.size() - 12, 12, "_proj.weight") == 0 && t.shape.size() == 2;
      if (!linear || t.dtype == DType::kF8E4M3) continue;
      const double elems = static_cast<double>(t.shape[0]) * static_cast<double>(t.shape[1]);
      weight_bytes -= static_cast<double>(t.nbytes) - elems - 4.0 * std::ceil(t.shape[0] / 128.0) * std::ceil(t.shape[1] / 128.0);
    }
  }

  // Plus the KV cache each step reads, at the mean context length of the decode run.
  const double kv_bytes = static_cast<double>(model->num_kv_layers()) * model->num_kv_heads() * model->head_dim() * 2.0 *
                          dtype_size(ec.kv_cache_dtype) * (decode_prompt_len + decode_tokens / 2.0);

  const double pp = prompt_len / median(prefill_times);
  const double tg = decode_tokens / median(decode_times);
  nlohmann::json out = {{"engine", "pagoda"},
                        {"model", dir},
                        {"threads", ThreadPool::global().num_threads()},
                        {"prompt_len", prompt_len},
                        {"decode_tokens", decode_tokens},
                        {"decode_prompt_len", decode_prompt_len},
                        {"prefill_tokens_per_s", pp},
                        {"decode_tokens_per_s", tg},
                        {"decode_weight_bytes_per_token", weight_bytes},
                        {"decode_kv_bytes_per_token", kv_bytes},
                        {"decode_GBps", (weight_bytes + kv_bytes) * tg / 1e9},
                        {"load_seconds", load_seconds},
                        {"kv_cache_dtype", kv},
                        {"quantization", ec.quantization}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc - 1, argv + 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
