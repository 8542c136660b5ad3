// `pagoda generate MODEL_DIR --input prompts.jsonl --output out.jsonl`: offline batch inference
// (vLLM's LLM.generate over a list of prompts). Every valid line becomes one request on a single
// LLMEngine, so the requests are continuously batched together.
//
// Input: one JSON object per line, {"prompt": "..."} or {"prompt_token_ids": [...]}, plus any of
// the SamplingParams fields (temperature, top_p, top_k, min_p, max_tokens, seed, n, stop,
// stop_token_ids, ignore_eos, min_tokens, presence_penalty, frequency_penalty,
// repetition_penalty, logit_bias, include_stop_str_in_output, skip_special_tokens, logprobs,
// prompt_logprobs). Blank lines
// are skipped. A bad line (invalid JSON, unknown field, wrong type, out-of-range value) is
// reported on stderr with its line number and gets an {"index", "line", "error"} output line.
//
// Output: one line per request, in input order: {"index", "prompt", "text", "token_ids",
// "finish_reason", "stop_reason", "num_cached_tokens"} (text .. stop_reason of the first
// completion); with n > 1 also "outputs": a list of every completion ({"index", "text",
// "token_ids", "finish_reason", "stop_reason"}), as vLLM's RequestOutput.outputs. With
// "logprobs": k, each completion also has "logprobs": one object per output token mapping token
// ids (as strings) to {"logprob", "decoded_token"}, the sampled token and the k best; with
// "prompt_logprobs": k, the line has "prompt_logprobs": null for the first prompt token, then
// such an object for every later one (vLLM's layout). The exit code
// is 0 even when some lines were skipped (their output lines carry the error).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "engine/llm_engine.h"
#include "backend/device.h"
#include "base/log.h"
#include "engine/output_processor.h"
#include "io/model_config.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {

using nlohmann::json;

const std::set<std::string>& engine_value_flags() {
  static const std::set<std::string> flags = {"--max-num-seqs",  "--max-num-batched-tokens", "--max-model-len",
                                              "--block-size",    "--num-kv-blocks",          "--kv-cache-memory",
                                              "--kv-cache-dtype", "--device", "--gpu-memory-utilization",
                                              "--max-cudagraph-capture-size", "--speculative-config",
                                              "--quantization", "-q"};
  return flags;
}

DType parse_kv_cache_dtype(const std::string& v, const std::string& device) {
  DType d;
  if (v == "auto" || v == "bf16" || v == "bfloat16") {
    d = DType::kBF16;
  } else if (v == "fp32" || v == "float32" || v == "float") {
    d = DType::kF32;
  } else if (v == "fp8" || v == "fp8_e4m3") {  // vLLM's names; "fp8" is E4M3
    d = DType::kF8E4M3;
  } else if (v == "fp8_e5m2") {
    d = DType::kF8E5M2;
  } else {
    fail("--kv-cache-dtype must be auto, bfloat16, fp8, fp8_e4m3, fp8_e5m2 or float32, got '", v, "'");
  }
  PAGODA_CHECK(device == "cpu" || d == DType::kBF16, "--kv-cache-dtype ", v,
               " is CPU-only for now; the CUDA backend keeps its KV cache in bfloat16 (auto)");
  return d;
}

std::string parse_quantization_flag(const Args& args, const std::string& device) {
  const auto q = args.get("--quantization"), short_q = args.get("-q");
  PAGODA_CHECK(!(q && short_q), "--quantization and -q both given; pass one");
  const std::string v = q ? *q : short_q.value_or("");
  if (v.empty() || v == "none") return "";
  PAGODA_CHECK(v == "fp8" || v == "compressed-tensors", "--quantization ", v,
               " is not supported (supported: fp8; compressed-tensors for such checkpoints)");
  PAGODA_CHECK(device == "cpu", "--quantization ", v, " is CPU-only for now (FP8 weights have no CUDA kernels yet)");
  return v;
}

std::string spec_decoding_summary(const SpecDecodingStats& sd) {
  if (sd.num_drafts <= 0 || sd.num_draft_tokens <= 0) return "";
  const auto accepted = static_cast<double>(sd.num_accepted_tokens);
  std::string s = "speculative decoding: ";
  s.append(std::to_string(sd.num_accepted_tokens))
      .append(" of ")
      .append(std::to_string(sd.num_draft_tokens))
      .append(" draft tokens accepted (")
      .append(fixed(100.0 * accepted / static_cast<double>(sd.num_draft_tokens), 1))
      .append("%) over ")
      .append(std::to_string(sd.num_drafts))
      .append(" steps; mean acceptance length ")
      .append(fixed(1.0 + accepted / static_cast<double>(sd.num_drafts), 2));
  return s;
}

void check_checkpoint_dir(const std::string& dir) {
  struct stat st {};
  PAGODA_CHECK(::stat(dir.c_str(), &st) == 0, dir, ": no such directory");
  PAGODA_CHECK(S_ISDIR(st.st_mode), dir, ": not a directory (expected a Hugging Face checkpoint folder)");
  PAGODA_CHECK(::stat((dir + "/config.json").c_str(), &st) == 0, dir,
               ": not a checkpoint folder (no config.json; expected config.json, *.safetensors, tokenizer.json)");
}

EngineConfig engine_config_from_args(const Args& args) {
  EngineConfig c;
  c.device = args.get_or("--device", "cpu");
  check_device_name(c.device);
  auto int_in = [&](const char* flag, long long lo, long long hi, int fallback) {
    const long long v = args.get_int(flag).value_or(fallback);
    PAGODA_CHECK(v >= lo && v <= hi, flag, " must be in [", lo, ", ", hi, "], got ", v);
    return static_cast<int>(v);
  };
  c.max_num_seqs = int_in("--max-num-seqs", 1, 1 << 20, c.max_num_seqs);
  c.max_num_batched_tokens = int_in("--max-num-batched-tokens", 1, 1 << 24, c.max_num_batched_tokens);
  c.max_model_len = int_in("--max-model-len", 0, 1 << 24, c.max_model_len);
  c.block_size = int_in("--block-size", 1, 1024, c.block_size);
  c.num_kv_blocks = int_in("--num-kv-blocks", 0, 1 << 30, c.num_kv_blocks);
  if (auto gib = args.get_double("--kv-cache-memory")) {
    PAGODA_CHECK(*gib > 0 && *gib <= 4096, "--kv-cache-memory must be in (0, 4096] GiB, got ", *gib);
    c.kv_cache_memory_bytes = static_cast<size_t>(*gib * static_cast<double>(size_t{1} << 30));
  }
  if (auto u = args.get_double("--gpu-memory-utilization")) {
    PAGODA_CHECK(*u > 0 && *u <= 1, "--gpu-memory-utilization must be in (0, 1], got ", *u);
    c.gpu_memory_utilization = *u;
  }
  c.kv_cache_dtype = parse_kv_cache_dtype(args.get_or("--kv-cache-dtype", "auto"), c.device);
  c.enable_prefix_caching = !args.flag("--no-enable-prefix-caching");
  if (args.flag("--enforce-eager")) c.cuda_graphs = 0;
  c.max_cudagraph_capture_size = int_in("--max-cudagraph-capture-size", 1, 8192, c.max_cudagraph_capture_size);
  PAGODA_CHECK(!(args.flag("--async-scheduling") && args.flag("--no-async-scheduling")),
               "--async-scheduling and --no-async-scheduling contradict each other");
  if (args.flag("--async-scheduling")) c.async_scheduling = 1;
  if (args.flag("--no-async-scheduling")) c.async_scheduling = 0;
  if (auto spec = args.get("--speculative-config")) c.speculative = parse_speculative_config(*spec);
  c.quantization = parse_quantization_flag(args, c.device);
  return c;
}

namespace {

// --- typed field readers: errors name the field -----------------------------------------------

double get_number(const json& j, const char* key) {
  PAGODA_CHECK(j.at(key).is_number(), "'", key, "' must be a number, got ", j.at(key).type_name());
  const double v = j.at(key).get<double>();
  PAGODA_CHECK(std::isfinite(v), "'", key, "' must be finite");
  return v;
}

long long get_integer(const json& j, const char* key, long long lo, long long hi) {
  const json& v = j.at(key);
  PAGODA_CHECK(v.is_number_integer(), "'", key, "' must be an integer, got ", v.type_name());
  if (v.is_number_unsigned()) {
    PAGODA_CHECK(v.get<unsigned long long>() <= static_cast<unsigned long long>(hi), "'", key, "' must be in [", lo,
                 ", ", hi, "], got ", v.dump());
    return static_cast<long long>(v.get<unsigned long long>());
  }
  const long long x = v.get<long long>();
  PAGODA_CHECK(x >= lo && x <= hi, "'", key, "' must be in [", lo, ", ", hi, "], got ", x);
  return x;
}

bool get_bool(const json& j, const char* key) {
  PAGODA_CHECK(j.at(key).is_boolean(), "'", key, "' must be true or false, got ", j.at(key).type_name());
  return j.at(key).get<bool>();
}

std::vector<int32_t> get_token_ids(const json& j, const char* key, int64_t vocab_size) {
  PAGODA_CHECK(j.at(key).is_array(), "'", key, "' must be a list of token ids, got ", j.at(key).type_name());
  std::vector<int32_t> ids;
  for (const json& e : j.at(key)) {
    PAGODA_CHECK(e.is_number_integer(), "'", key, "' must hold integers, got ", e.type_name());
    const long long id = e.get<long long>();
    PAGODA_CHECK(id >= 0 && id < vocab_size, "'", key, "' token id ", e.dump(), " out of range [0, ", vocab_size,
                 ")");
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

constexpr long long kIntMax = std::numeric_limits<int>::max();

struct ParsedLine {
  std::string prompt;  // as given, or decoded from prompt_token_ids
  std::vector<int32_t> prompt_token_ids;
  SamplingParams params;
};

ParsedLine parse_line(const std::string& line, const SamplingParams& defaults, const Tokenizer& tokenizer,
                      bool add_special_tokens, int64_t vocab_size) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::parse_error& e) {
    fail("invalid JSON: ", e.what());
  }
  PAGODA_CHECK(j.is_object(), "expected a JSON object, got ", j.type_name());
  static const std::set<std::string> known = {
      "prompt",           "prompt_token_ids",  "temperature",       "top_p",
      "top_k",            "min_p",             "max_tokens",        "seed",
      "n",                "stop",              "stop_token_ids",    "ignore_eos",
      "min_tokens",       "presence_penalty",  "frequency_penalty", "repetition_penalty",
      "logit_bias",       "include_stop_str_in_output",              "skip_special_tokens",
      "logprobs",         "prompt_logprobs"};
  for (const auto& [key, value] : j.items())
    PAGODA_CHECK(known.count(key), "unknown field '", key, "'");

  ParsedLine p;
  const bool has_text = j.contains("prompt"), has_ids = j.contains("prompt_token_ids");
  PAGODA_CHECK(has_text != has_ids, "each line needs exactly one of 'prompt' or 'prompt_token_ids'");
  if (has_text) {
    PAGODA_CHECK(j["prompt"].is_string(), "'prompt' must be a string, got ", j["prompt"].type_name());
    p.prompt = j["prompt"].get<std::string>();
    p.prompt_token_ids = tokenizer.encode(p.prompt, add_special_tokens);
  } else {
    p.prompt_token_ids = get_token_ids(j, "prompt_token_ids", vocab_size);
    p.prompt = tokenizer.decode(p.prompt_token_ids, /*skip_special_tokens=*/false);
  }
  PAGODA_CHECK(!p.prompt_token_ids.empty(), "the prompt is empty (zero tokens)");

  SamplingParams& s = p.params;
  s = defaults;
  if (j.contains("temperature")) s.temperature = static_cast<float>(get_number(j, "temperature"));
  if (j.contains("top_p")) s.top_p = static_cast<float>(get_number(j, "top_p"));
  if (j.contains("top_k")) s.top_k = static_cast<int>(get_integer(j, "top_k", -1, kIntMax));
  if (j.contains("min_p")) s.min_p = static_cast<float>(get_number(j, "min_p"));
  if (j.contains("max_tokens")) s.max_tokens = static_cast<int>(get_integer(j, "max_tokens", 1, kIntMax));
  if (j.contains("seed"))
    s.seed = static_cast<uint64_t>(get_integer(j, "seed", 0, std::numeric_limits<long long>::max()));
  if (j.contains("n")) s.n = static_cast<int>(get_integer(j, "n", 1, 1024));
  if (j.contains("stop")) {
    const json& st = j["stop"];
    s.stop.clear();
    if (st.is_string()) {
      s.stop.push_back(st.get<std::string>());
    } else {
      PAGODA_CHECK(st.is_array(), "'stop' must be a string or a list of strings, got ", st.type_name());
      for (const json& e : st) {
        PAGODA_CHECK(e.is_string(), "'stop' must hold strings, got ", e.type_name());
        s.stop.push_back(e.get<std::string>());
      }
    }
    for (const std::string& x : s.stop) PAGODA_CHECK(!x.empty(), "'stop' strings must not be empty");
  }
  if (j.contains("stop_token_ids")) s.stop_token_ids = get_token_ids(j, "stop_token_ids", vocab_size);
  if (j.contains("ignore_eos")) s.ignore_eos = get_bool(j, "ignore_eos");
  if (j.contains("min_tokens")) s.min_tokens = static_cast<int>(get_integer(j, "min_tokens", 0, kIntMax));
  if (j.contains("presence_penalty")) s.presence_penalty = static_cast<float>(get_number(j, "presence_penalty"));
  if (j.contains("frequency_penalty")) s.frequency_penalty = static_cast<float>(get_number(j, "frequency_penalty"));
  if (j.contains("repetition_penalty"))
    s.repetition_penalty = static_cast<float>(get_number(j, "repetition_penalty"));
  if (j.contains("logit_bias")) {
    const json& lb = j["logit_bias"];
    PAGODA_CHECK(lb.is_object(), "'logit_bias' must be an object {\"token id\": bias}, got ", lb.type_name());
    for (const auto& [key, value] : lb.items()) {
      size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      PAGODA_CHECK(used == key.size() && !key.empty(), "'logit_bias' key '", key, "' is not a token id");
      PAGODA_CHECK(id >= 0 && id < vocab_size, "'logit_bias' token id ", id, " out of range [0, ", vocab_size, ")");
      PAGODA_CHECK(value.is_number(), "'logit_bias' values must be numbers, got ", value.type_name());
      const double bias = value.get<double>();
      PAGODA_CHECK(std::isfinite(bias), "'logit_bias' values must be finite");
      s.logit_bias[static_cast<int32_t>(id)] = static_cast<float>(bias);
    }
  }
  if (j.contains("include_stop_str_in_output"))
    s.include_stop_str_in_output = get_bool(j, "include_stop_str_in_output");
  if (j.contains("skip_special_tokens")) s.skip_special_tokens = get_bool(j, "skip_special_tokens");
  if (j.contains("logprobs") && !j["logprobs"].is_null())
    s.logprobs = static_cast<int>(get_integer(j, "logprobs", -1, kIntMax));
  if (j.contains("prompt_logprobs") && !j["prompt_logprobs"].is_null())
    s.prompt_logprobs = static_cast<int>(get_integer(j, "prompt_logprobs", -1, kIntMax));
  s.validate(vocab_size);
  return p;
}

json stop_reason_json(const StopReason& r) {
  if (const auto* s = std::get_if<std::string>(&r)) return *s;
  if (const auto* id = std::get_if<int32_t>(&r)) return *id;
  return nullptr;
}

// One completion (of one request) in flight: its own engine request, so that a stop string ends
// just this completion (LLMEngine::abort ends every completion of a request).
struct Completion {
  size_t request = 0;  // index into the requests
  int index = 0;       // which of the n
  std::unique_ptr<RequestOutputState> state;
  int num_cached_tokens = 0;
  std::vector<SampledToken> logprobs;         // per output token, when asked for
  std::vector<SampledToken> prompt_logprobs;  // prompt tokens 1.., when asked for (completion 0)
};

// {"<token id>": {"logprob": x, "decoded_token": "..."}} for the token and its top-k.
json logprob_entry(const SampledToken& t, const Tokenizer& tokenizer) {
  json e = json::object();
  auto add = [&](int32_t id, float lp) {
    json v;
    v["logprob"] = lp;
    v["decoded_token"] = tokenizer.decode(std::vector<int32_t>{id}, /*skip_special_tokens=*/false);
    e[std::to_string(id)] = std::move(v);
  };
  add(t.token, t.logprob);
  for (const auto& [id, lp] : t.top_logprobs)
    if (id != t.token) add(id, lp);
  return e;
}

struct BatchItem {
  ParsedLine parsed;
  std::string error;  // non-empty: the line was rejected
  int line_number = 0;
  std::vector<size_t> completions;  // indices into the completions
};

class Progress {
 public:
  explicit Progress(size_t total) : total_(total), start_(Clock::now()), last_(start_) {}
  void update(size_t done, int64_t prompt_tokens, int64_t output_tokens, bool final) {
    const auto now = Clock::now();
    if (!final && now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    const double elapsed = std::max(std::chrono::duration<double>(now - start_).count(), 1e-9);
    const int width = 30;
    const int filled = total_ ? static_cast<int>(static_cast<double>(width) * static_cast<double>(done) /
                                                 static_cast<double>(total_))
                              : width;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, ' ');
    std::fprintf(stderr, "\rProcessed prompts: %zu/%zu [%s] %.1fs, input: %.2f toks/s, output: %.2f toks/s", done,
                 total_, bar.c_str(), elapsed, static_cast<double>(prompt_tokens) / elapsed,
                 static_cast<double>(output_tokens) / elapsed);
    if (final) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  size_t total_;
  Clock::time_point start_, last_;
};

}  // namespace

int batch_generate_command(int argc, char** argv) {
  std::set<std::string> value_flags = engine_value_flags();
  for (const char* f : {"--input", "--output", "--max-tokens", "--temperature", "--top-p", "--top-k", "--min-p",
                        "--seed"})
    value_flags.insert(f);
  Args args(argc, argv, value_flags,
            {"--no-enable-prefix-caching", "--enforce-eager", "--async-scheduling", "--no-async-scheduling",
             "--ignore-eos", "--no-add-special-tokens"},
            {"pagoda generate", "MODEL_DIR --input FILE [--output FILE] [options]",
             "Runs the requests of a JSON-lines FILE ({\"prompt\": ..., sampling fields} per line) batched on one "
             "engine,\nas vLLM's offline LLM.generate, and writes one JSON line per request in input order."});
  PAGODA_CHECK(args.positionals().size() == 1,
               "usage: pagoda generate MODEL_DIR --input prompts.jsonl [--output out.jsonl] [options]");
  const std::string model_dir = args.positionals()[0];
  check_checkpoint_dir(model_dir);
  const std::string input_path = *args.get("--input");
  std::ifstream in(input_path);
  PAGODA_CHECK(in.good(), input_path, ": cannot open the input file");
  const std::string output_path = args.get_or("--output", "-");
  std::FILE* out = stdout;
  if (output_path != "-") {
    out = std::fopen(output_path.c_str(), "w");
    PAGODA_CHECK(out != nullptr, output_path, ": cannot open the output file for writing");
  }

  // Defaults: generation_config.json (as vLLM), then the flags; each line overrides.
  const GenerationConfig gen_config = load_generation_config(model_dir);
  SamplingParams defaults;
  if (gen_config.temperature) defaults.temperature = static_cast<float>(*gen_config.temperature);
  if (gen_config.top_p) defaults.top_p = static_cast<float>(*gen_config.top_p);
  if (gen_config.top_k) defaults.top_k = static_cast<int>(*gen_config.top_k);
  if (gen_config.min_p) defaults.min_p = static_cast<float>(*gen_config.min_p);
  const long long max_tokens = args.get_int("--max-tokens").value_or(128);
  PAGODA_CHECK(max_tokens >= 1 && max_tokens <= kIntMax, "--max-tokens must be positive");
  defaults.max_tokens = static_cast<int>(max_tokens);
  if (auto v = args.get_double("--temperature")) defaults.temperature = static_cast<float>(*v);
  if (auto v = args.get_double("--top-p")) defaults.top_p = static_cast<float>(*v);
  if (auto v = args.get_int("--top-k")) defaults.top_k = static_cast<int>(*v);
  if (auto v = args.get_double("--min-p")) defaults.min_p = static_cast<float>(*v);
  if (auto v = args.get_int("--seed")) defaults.seed = static_cast<uint64_t>(*v);
  defaults.ignore_eos = args.flag("--ignore-eos");
  defaults.validate();

  const Tokenizer tokenizer = Tokenizer::from_dir(model_dir);
  std::unique_ptr<LLMEngine> engine = LLMEngine::from_model_dir(model_dir, engine_config_from_args(args));
  const int64_t vocab_size = engine->core().vocab_size();
  const bool add_special = !args.flag("--no-add-special-tokens");

  // Read, validate and submit every line.
  std::vector<BatchItem> requests;
  std::vector<Completion> completions;
  std::string line;
  int line_number = 0;
  int num_errors = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    BatchItem r;
    r.line_number = line_number;
    const size_t ri = requests.size();
    try {
      r.parsed = parse_line(line, defaults, tokenizer, add_special, vocab_size);
      const SamplingParams& p = r.parsed.params;
      SamplingParams child = p;
      child.n = 1;
      int added = 0;
      try {
        for (int i = 0; i < p.n; ++i, ++added) {
          if (p.seed && i > 0) child.seed = *p.seed + static_cast<uint64_t>(i);  // as LLMEngine
          if (i > 0) child.prompt_logprobs.reset();  // the prompt's are the same for every completion
          engine->add_request(std::to_string(ri) + "_" + std::to_string(i), r.parsed.prompt_token_ids, child);
        }
      } catch (...) {
        for (int i = 0; i < added; ++i) engine->abort(std::to_string(ri) + "_" + std::to_string(i));
        throw;
      }
      for (int i = 0; i < p.n; ++i) {
        Completion c;
        c.request = ri;
        c.index = i;
        c.state = std::make_unique<RequestOutputState>(tokenizer, child, r.parsed.prompt_token_ids);
        r.completions.push_back(completions.size());
        completions.push_back(std::move(c));
      }
    } catch (const std::exception& e) {
      r.error = e.what();
      r.completions.clear();
      ++num_errors;
      std::fprintf(stderr, "%s:%d: skipped: %s\n", input_path.c_str(), line_number, e.what());
    }
    requests.push_back(std::move(r));
  }

  // Run the engine until every request is done, feeding tokens through the output states.
  Progress progress(completions.size());
  size_t done = 0;
  int64_t output_tokens = 0;
  // Engine request "<request>_<completion>" -> its Completion; null for the partly added
  // completions of a rejected line (aborted, their outputs are dropped).
  auto completion_of = [&](const std::string& id) -> Completion* {
    const size_t us = id.find('_');
    const size_t ri = std::stoul(id.substr(0, us));
    const size_t ci = std::stoul(id.substr(us + 1));
    if (ri >= requests.size() || ci >= requests[ri].completions.size()) return nullptr;
    return &completions[requests[ri].completions[ci]];
  };
  while (engine->has_unfinished()) {
    for (const RequestOutput& o : engine->step()) {
      Completion* cp = completion_of(o.request_id);
      if (!cp) continue;
      Completion& c = *cp;
      c.num_cached_tokens = std::max(c.num_cached_tokens, o.num_cached_tokens);
      c.prompt_logprobs.insert(c.prompt_logprobs.end(), o.new_prompt_logprobs.begin(), o.new_prompt_logprobs.end());
      if (c.state->finished()) continue;  // already ended by a stop string; this is the abort
      c.logprobs.insert(c.logprobs.end(), o.new_logprobs.begin(), o.new_logprobs.end());
      output_tokens += static_cast<int64_t>(o.new_token_ids.size());
      for (size_t k = 0; k < o.new_token_ids.size() && !c.state->finished(); ++k) {
        const bool last = k + 1 == o.new_token_ids.size();
        c.state->push(o.new_token_ids[k], o.finished && last, o.finished && last ? o.finish_reason : std::string());
      }
      if (o.finished && !c.state->finished()) c.state->finish(o.finish_reason);
      if (c.state->finished()) {
        ++done;
        if (!o.finished) engine->abort(o.request_id);  // a stop string: end the engine request
      }
    }
    const EngineStats st = engine->stats();
    progress.update(done, st.num_prompt_tokens, output_tokens, false);
  }
  const EngineStats st = engine->stats();
  progress.update(done, st.num_prompt_tokens, output_tokens, true);

  // One line per request, in input order.
  for (size_t ri = 0; ri < requests.size(); ++ri) {
    const BatchItem& r = requests[ri];
    json j;
    j["index"] = ri;
    if (!r.error.empty()) {
      j["line"] = r.line_number;
      j["error"] = r.error;
    } else {
      j["prompt"] = r.parsed.prompt;
      json outputs = json::array();
      for (size_t ci : r.completions) {
        const Completion& c = completions[ci];
        json o;
        o["index"] = c.index;
        o["text"] = c.state->text();
        o["token_ids"] = c.state->token_ids();
        o["finish_reason"] = c.state->finish_reason();
        o["stop_reason"] = stop_reason_json(c.state->stop_reason());
        if (r.parsed.params.logprobs) {
          json lps = json::array();
          // Tokens after a stop string was found are not part of the completion.
          const size_t n = std::min(c.logprobs.size(), c.state->token_ids().size());
          for (size_t k = 0; k < n; ++k) lps.push_back(logprob_entry(c.logprobs[k], tokenizer));
          o["logprobs"] = std::move(lps);
        }
        outputs.push_back(std::move(o));
      }
      const Completion& first = completions[r.completions.front()];
      j["text"] = outputs[0]["text"];
      j["token_ids"] = outputs[0]["token_ids"];
      j["finish_reason"] = outputs[0]["finish_reason"];
      j["stop_reason"] = outputs[0]["stop_reason"];
      j["num_cached_tokens"] = first.num_cached_tokens;
      if (r.parsed.params.prompt_logprobs) {
        json pl = json::array({nullptr});
        for (const SampledToken& t : first.prompt_logprobs) pl.push_back(logprob_entry(t, tokenizer));
        j["prompt_logprobs"] = std::move(pl);
      }
      if (r.parsed.params.logprobs) j["logprobs"] = outputs[0]["logprobs"];
      if (r.completions.size() > 1) j["outputs"] = std::move(outputs);
    }
    const std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
    std::fprintf(out, "%s\n", s.c_str());
  }
  std::fflush(out);
  if (out != stdout) std::fclose(out);
  if (num_errors > 0)
    std::fprintf(stderr, "%d of %zu lines skipped (see the messages above)\n", num_errors, requests.size());
  return 0;
}

}  // namespace pagoda
