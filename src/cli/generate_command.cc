// `pagoda generate MODEL_DIR --prompt TEXT`: one prompt, streamed to stdout. With --input FILE
// it hands over to batch_generate_command.
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "base/error.h"
#include "base/log.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "engine/generator.h"
#include "io/model_config.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {
namespace {

DType parse_kv_dtype(const std::string& s) {
  if (s == "auto" || s == "bf16" || s == "bfloat16") return DType::kBF16;
  if (s == "fp32" || s == "float32" || s == "float") return DType::kF32;
  fail("--kv-cache-dtype must be auto, bfloat16 or float32 on the CPU, got '", s, "'");
}

}  // namespace

int generate_command(int argc, char** argv) {
  // --input FILE: many prompts on one engine (batch_generate.cc).
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--input" || a.rfind("--input=", 0) == 0) return batch_generate_command(argc, argv);
  }
  Args args(argc, argv,
            {"--prompt", "--max-tokens", "--temperature", "--top-p", "--top-k", "--min-p", "--seed", "--output-format",
             "--max-model-len", "--kv-cache-dtype", "--block-size", "--max-num-batched-tokens"},
            {"--ignore-eos", "--no-add-special-tokens"});
  PAGODA_CHECK(args.positionals().size() == 1, "usage: pagoda generate MODEL_DIR --prompt TEXT [options]");
  const std::string model_dir = args.positionals()[0];
  PAGODA_CHECK(args.get("--prompt").has_value(), "generate needs --prompt TEXT");
  const std::string format = args.get_or("--output-format", "text");
  PAGODA_CHECK(format == "text" || format == "json", "--output-format must be text or json, got '", format, "'");

  check_checkpoint_dir(model_dir);
  const ModelConfig config = load_model_config(model_dir);
  const GenerationConfig gen_config = load_generation_config(model_dir);
  const Tokenizer tokenizer = Tokenizer::from_dir(model_dir);

  // Sampling defaults come from generation_config.json (as vLLM does), then flags override.
  SamplingParams params;
  if (gen_config.temperature) params.temperature = static_cast<float>(*gen_config.temperature);
  if (gen_config.top_p) params.top_p = static_cast<float>(*gen_config.top_p);
  if (gen_config.top_k) params.top_k = static_cast<int>(*gen_config.top_k);
  if (gen_config.min_p) params.min_p = static_cast<float>(*gen_config.min_p);
  params.max_tokens = static_cast<int>(args.get_int("--max-tokens").value_or(128));
  if (auto v = args.get_double("--temperature")) params.temperature = static_cast<float>(*v);
  if (auto v = args.get_double("--top-p")) params.top_p = static_cast<float>(*v);
  if (auto v = args.get_int("--top-k")) params.top_k = static_cast<int>(*v);
  if (auto v = args.get_double("--min-p")) params.min_p = static_cast<float>(*v);
  if (auto v = args.get_int("--seed")) params.seed = static_cast<uint64_t>(*v);
  params.ignore_eos = args.flag("--ignore-eos");
  params.validate();

  std::vector<int32_t> eos;
  for (int64_t id : gen_config.eos_token_ids.empty() ? config.eos_token_ids : gen_config.eos_token_ids)
    eos.push_back(static_cast<int32_t>(id));

  const std::vector<int32_t> prompt = tokenizer.encode(*args.get("--prompt"), !args.flag("--no-add-special-tokens"));
  PAGODA_CHECK(!prompt.empty(), "the prompt encodes to zero tokens");
  const int prompt_len = static_cast<int>(prompt.size());
  const long long needed = static_cast<long long>(prompt_len) + *params.max_tokens;
  const long long max_model_len =
      args.get_int("--max-model-len").value_or(std::min<long long>(needed, config.max_position_embeddings));
  PAGODA_CHECK(max_model_len > 0 && max_model_len <= (1 << 24), "--max-model-len out of range: ", max_model_len);
  PAGODA_CHECK(prompt_len < max_model_len, "This model's maximum context length is ", max_model_len,
               " tokens. However, your prompt has ", prompt_len, " tokens.");

  GeneratorOptions options;
  options.max_model_len = static_cast<int>(max_model_len);
  options.block_size = static_cast<int>(args.get_int("--block-size").value_or(16));
  options.max_num_tokens = static_cast<int>(args.get_int("--max-num-batched-tokens").value_or(512));
  PAGODA_CHECK(options.block_size >= 1 && options.block_size <= 1024, "--block-size must be in [1, 1024]");
  PAGODA_CHECK(options.max_num_tokens >= 1 && options.max_num_tokens <= (1 << 20),
               "--max-num-batched-tokens must be positive");
  options.kv_cache_dtype = parse_kv_dtype(args.get_or("--kv-cache-dtype", "auto"));

  auto backend = make_cpu_backend();
  ModelLoadOptions load;
  load.max_num_tokens = options.max_num_tokens;
  load.max_num_logits = 1;
  auto model = load_model(model_dir, *backend, load);
  Generator generator(*model, *backend, options);

  IncrementalDecoder decoder(tokenizer, /*skip_special_tokens=*/true);
  const bool stream = format == "text";
  const GenerationResult result = generator.generate(prompt, params, eos, [&](int32_t id) {
    const std::string piece = decoder.push(id);
    if (stream && !piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  });
  const std::string tail = decoder.flush();
  if (stream) {
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  } else {
    nlohmann::json out;
    out["text"] = tokenizer.decode(result.token_ids, /*skip_special_tokens=*/true);
    out["token_ids"] = result.token_ids;
    out["finish_reason"] = result.finish_reason;
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    std::fflush(stdout);
  }
  const size_t n = result.token_ids.size();
  log_info("prompt ", prompt_len, " tokens: ", prompt_len / std::max(result.prefill_seconds, 1e-9),
           " tokens/s prefill; generated ", n, " tokens: ",
           n > 1 ? static_cast<double>(n - 1) / std::max(result.decode_seconds, 1e-9) : 0.0, " tokens/s decode");
  return 0;
}

}  // namespace pagoda
