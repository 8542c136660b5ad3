// `pagoda generate MODEL_DIR --prompt TEXT`: one prompt on the LLMEngine, streamed to stdout
// (--stop STRING ends it at a stop string). With --input FILE it hands over to
// batch_generate_command.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "engine/llm_engine.h"
#include "backend/device.h"
#include "engine/output_processor.h"
#include "io/model_config.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {
int generate_command(int argc, char** argv) {
  // --input FILE: many prompts on one engine (batch_generate.cc).
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--input" || a.rfind("--input=", 0) == 0) return batch_generate_command(argc, argv);
  }
  Args args(argc, argv,
            {"--prompt", "--max-tokens", "--temperature", "--top-p", "--top-k", "--min-p", "--seed", "--output-format",
             "--max-model-len", "--kv-cache-dtype", "--block-size", "--max-num-batched-tokens", "--stop", "--device",
             "--input", "--speculative-config", "--quantization", "-q"},
            {"--ignore-eos", "--no-add-special-tokens"},
            {"pagoda generate", "MODEL_DIR --prompt TEXT [options]",
             "Generates one completion of one prompt. With --input FILE it runs many requests batched on one "
             "engine instead;\n`pagoda generate MODEL_DIR --input FILE --help` lists that mode's flags."});
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
  if (auto v = args.get("--stop")) {
    PAGODA_CHECK(!v->empty(), "--stop must not be empty");
    params.stop.push_back(*v);
  }
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

  // One request on the engine that serves batches too (so prefill is chunked, sampling and
  // stop handling are the engine's), with a KV pool just big enough for it.
  EngineConfig ec;
  ec.max_num_seqs = 1;
  ec.max_model_len = static_cast<int>(max_model_len);
  ec.block_size = static_cast<int>(args.get_int("--block-size").value_or(16));
  const long long chunk = args.get_int("--max-num-batched-tokens").value_or(2048);
  PAGODA_CHECK(ec.block_size >= 1 && ec.block_size <= 1024, "--block-size must be in [1, 1024]");
  PAGODA_CHECK(chunk >= 1 && chunk <= (1 << 20), "--max-num-batched-tokens must be in [1, ", 1 << 20, "]");
  ec.max_num_batched_tokens = static_cast<int>(chunk);
  ec.num_kv_blocks = (ec.max_model_len + ec.block_size - 1) / ec.block_size;
  ec.enable_prefix_caching = false;
  ec.device = args.get_or("--device", "cpu");
  check_device_name(ec.device);
  ec.kv_cache_dtype = parse_kv_cache_dtype(args.get_or("--kv-cache-dtype", "auto"), ec.device);
  ec.eos_token_ids = eos;
  if (auto spec = args.get("--speculative-config")) ec.speculative = parse_speculative_config(*spec);
  ec.quantization = parse_quantization_flag(args, ec.device);
  std::unique_ptr<LLMEngine> engine = LLMEngine::from_model_dir(model_dir, ec);

  RequestOutputState state(tokenizer, params, prompt);
  const bool stream = format == "text";
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  Clock::time_point first_token = start;
  engine->add_request("generate", prompt, params);
  while (engine->has_unfinished()) {
    for (const RequestOutput& o : engine->step()) {
      if (state.finished()) continue;
      for (size_t k = 0; k < o.new_token_ids.size() && !state.finished(); ++k) {
        if (state.num_output_tokens() == 0) first_token = Clock::now();
        const bool last = k + 1 == o.new_token_ids.size();
        const Delta d = state.push(o.new_token_ids[k], o.finished && last, o.finished && last ? o.finish_reason : "");
        if (stream && !d.text.empty()) {
          std::fwrite(d.text.data(), 1, d.text.size(), stdout);
          std::fflush(stdout);
        }
      }
      if (o.finished && !state.finished()) {
        const Delta d = state.finish(o.finish_reason);
        if (stream) std::fwrite(d.text.data(), 1, d.text.size(), stdout);
      }
      if (state.finished() && !o.finished) engine->abort("generate");  // a stop string
    }
  }
  const auto end = Clock::now();
  if (stream) {
    std::fputc('\n', stdout);
    std::fflush(stdout);
  } else {
    nlohmann::json out;
    out["text"] = state.text();
    out["token_ids"] = state.token_ids();
    out["finish_reason"] = state.finish_reason();
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    std::fflush(stdout);
  }
  const double prefill_s = std::chrono::duration<double>(first_token - start).count();
  const double decode_s = std::chrono::duration<double>(end - first_token).count();
  const int n = state.num_output_tokens();
  log_info("prompt ", prompt_len, " tokens: ", prompt_len / std::max(prefill_s, 1e-9), " tokens/s prefill; generated ",
           n, " tokens: ", n > 1 ? (n - 1) / std::max(decode_s, 1e-9) : 0.0, " tokens/s decode");
  if (const std::string spec = spec_decoding_summary(engine->stats().spec_decoding); !spec.empty()) log_info(spec);
  return 0;
}

}  // namespace pagoda
