// Batch-1 model benchmark (like llama-bench's pp/tg): prefill tokens/s for a P-token prompt and
// decode tokens/s for D tokens at batch 1, on the CPU backend. Prints one JSON line.
//   model_bench MODEL_DIR [--prompt-len 512] [--decode-tokens 128] [--repeats 3]
//               [--decode-prompt-len 16] [--kv-cache-dtype auto|float32] [--chunk 512]
// Decode is measured after a short prompt (as the peer scripts in bench/peers do).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "cli/args.h"
#include "engine/generator.h"
#include "engine/sampler.h"
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
  Args args(argc, argv, {"--prompt-len", "--decode-tokens", "--decode-prompt-len", "--repeats", "--kv-cache-dtype", "--chunk"}, {});
  PAGODA_CHECK(args.positionals().size() == 1, "usage: model_bench MODEL_DIR [--prompt-len N] [--decode-tokens N]");
  const std::string dir = args.positionals()[0];
  const int prompt_len = static_cast<int>(args.get_int("--prompt-len").value_or(512));
  const int decode_tokens = static_cast<int>(args.get_int("--decode-tokens").value_or(128));
  const int decode_prompt_len = static_cast<int>(args.get_int("--decode-prompt-len").value_or(16));
  const int repeats = static_cast<int>(args.get_int("--repeats").value_or(3));
  const int chunk = static_cast<int>(args.get_int("--chunk").value_or(512));
  const std::string kv = args.get_or("--kv-cache-dtype", "auto");

  auto backend = make_cpu_backend();
  ModelLoadOptions load;
  load.max_num_tokens = chunk;
  load.max_num_logits = 1;
  const double t_load = now();
  auto model = load_model(dir, *backend, load);
  const double load_seconds = now() - t_load;
  GeneratorOptions opt;
  opt.max_model_len = std::max(prompt_len, decode_prompt_len + decode_tokens) + 1;
  opt.max_num_tokens = chunk;
  opt.kv_cache_dtype = (kv == "float32" || kv == "fp32") ? DType::kF32 : DType::kBF16;
  Generator gen(*model, *backend, opt);

  const ModelConfig& cfg = model->config();
  std::mt19937 rng(0);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(std::min<int64_t>(cfg.vocab_size, 150000) - 1));
  std::vector<int32_t> tokens(static_cast<size_t>(prompt_len));
  for (auto& t : tokens) t = dist(rng);

  auto prefill = [&] {
    for (int s = 0; s < prompt_len; s += chunk) gen.forward_chunk(tokens, s, std::min(chunk, prompt_len - s));
  };
  prefill();  // warm-up (page in the weights)
  std::vector<double> prefill_times, decode_times;
  for (int r = 0; r < repeats; ++r) {
    const double t0 = now();
    prefill();
    prefill_times.push_back(now() - t0);
    std::vector<int32_t> seq(tokens.begin(), tokens.begin() + std::min(decode_prompt_len, prompt_len));
    const float* logits = gen.forward_chunk(seq, 0, static_cast<int>(seq.size()));
    const double t1 = now();
    for (int i = 0; i < decode_tokens; ++i) {
      seq.push_back(argmax(logits, cfg.vocab_size));
      logits = gen.forward_chunk(seq, static_cast<int>(seq.size()) - 1, 1);
    }
    decode_times.push_back(now() - t1);
  }

  // Bytes a decode step must stream: every weight once (the input embedding table contributes
  // one row, except when it is also the tied lm_head).
  Checkpoint ckpt(dir);
  double weight_bytes = static_cast<double>(ckpt.total_bytes());
  if (!cfg.tie_word_embeddings && ckpt.has("model.embed_tokens.weight"))
    weight_bytes -= static_cast<double>(ckpt.get("model.embed_tokens.weight").nbytes);

  // Plus the KV cache each step reads, at the mean context length of the decode run.
  const double kv_bytes = static_cast<double>(model->num_kv_layers()) * model->num_kv_heads() * model->head_dim() * 2.0 *
                          dtype_size(opt.kv_cache_dtype) * (decode_prompt_len + decode_tokens / 2.0);

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
                        {"kv_cache_dtype", kv}};
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
