// `pagoda serve MODEL_DIR [flags]`: the OpenAI-compatible server (vLLM's `vllm serve`, same flag
// names). SIGINT / SIGTERM shut it down gracefully: stop accepting, give in-flight requests
// --shutdown-timeout seconds, abort the rest, exit 0.
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <pthread.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"
#include "base/system.h"
#include "chat/chat_template.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "engine/async_engine.h"
#include "engine/llm_engine.h"
#include "engine/structured_output.h"
#include "io/model_config.h"
#include "server/openai_server.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {
namespace {

// "32k", "1M", "4096" (vLLM accepts the suffixed forms for --max-model-len).
long long parse_len(const std::string& flag, std::string v) {
  long long mult = 1;
  if (!v.empty() && (v.back() == 'k' || v.back() == 'K')) {
    mult = 1000;
    v.pop_back();
  } else if (!v.empty() && (v.back() == 'm' || v.back() == 'M')) {
    mult = 1000000;
    v.pop_back();
  }
  size_t used = 0;
  long long x = -1;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  PAGODA_CHECK(used == v.size() && !v.empty() && x > 0, flag, " must be a positive integer (or like 32k), got '", v,
               "'");
  return x * mult;
}

std::vector<std::string> split_list(const std::string& v) {
  // A JSON list ('["http://a", "http://b"]', vLLM's form) or comma-separated values.
  std::vector<std::string> out;
  if (!v.empty() && v.front() == '[') {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(v);
    } catch (const nlohmann::json::exception&) {
      fail("expected a JSON list of strings, got '", v, "'");
    }
    PAGODA_CHECK(j.is_array(), "expected a JSON list of strings, got '", v, "'");
    for (const auto& e : j) {
      PAGODA_CHECK(e.is_string(), "expected a JSON list of strings, got '", v, "'");
      out.push_back(e.get<std::string>());
    }
    return out;
  }
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

int serve_command(int argc, char** argv) {
  const auto started = std::chrono::steady_clock::now();
  raise_open_file_limit();  // one socket per client
  std::set<std::string> value_flags = engine_value_flags();
  for (const char* f : {"--host", "--port", "--served-model-name", "--api-key", "--chat-template", "--generation-config",
                        "--tool-call-parser", "--reasoning-parser", "--allowed-origins", "--max-logprobs",
                        "--scheduling-policy", "--seed", "--max-pending-requests", "--shutdown-timeout",
                        "--http-threads"})
    value_flags.insert(f);
  value_flags.erase("--max-model-len");  // parsed here (accepts 32k)
  value_flags.insert("--max-model-len");
  Args args(argc, argv, value_flags,
            {"--no-enable-prefix-caching", "--enable-prefix-caching", "--enforce-eager", "--async-scheduling", "--no-async-scheduling", "--enable-auto-tool-choice",
             "--enable-chunked-prefill", "--disable-log-stats", "--enable-log-requests", "--disable-log-requests"},
            {"pagoda serve", "MODEL_DIR [options]",
             "Serves the model over vLLM's OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions, "
             "/v1/models,\n/tokenize, /detokenize, /health, /metrics (Prometheus)."});
  PAGODA_CHECK(args.positionals().size() == 1, "usage: pagoda serve MODEL_DIR [--host H] [--port P] [options]");
  const std::string model_dir = args.positionals()[0];
  check_checkpoint_dir(model_dir);

  // The engine flags; --max-model-len may be "32k". Server default budget: 2048 tokens/step.
  std::optional<long long> max_model_len;
  if (auto v = args.get("--max-model-len")) max_model_len = parse_len("--max-model-len", *v);
  EngineConfig ec;
  {
    // engine_config_from_args reads --max-model-len as a plain integer: hand it the parsed one.
    std::vector<std::string> rewritten;
    for (int i = 0; i < argc; ++i) rewritten.emplace_back(argv[i]);
    for (size_t i = 0; i < rewritten.size(); ++i) {
      if (rewritten[i] == "--max-model-len" && i + 1 < rewritten.size()) rewritten[i + 1] = std::to_string(*max_model_len);
      if (rewritten[i].rfind("--max-model-len=", 0) == 0) rewritten[i] = "--max-model-len=" + std::to_string(*max_model_len);
    }
    std::vector<char*> ptrs;
    for (std::string& s : rewritten) ptrs.push_back(s.data());
    ec = engine_config_from_args(Args(static_cast<int>(ptrs.size()), ptrs.data(), value_flags,
                                      {"--no-enable-prefix-caching", "--enable-prefix-caching", "--enforce-eager", "--async-scheduling", "--no-async-scheduling",
                                       "--enable-auto-tool-choice", "--enable-chunked-prefill", "--disable-log-stats",
                                       "--enable-log-requests", "--disable-log-requests"}));
  }
  const std::string policy = args.get_or("--scheduling-policy", "fcfs");
  PAGODA_CHECK(policy == "fcfs" || policy == "priority", "--scheduling-policy must be fcfs or priority, got '", policy,
               "'");
  ec.policy = policy == "priority" ? SchedulingPolicy::kPriority : SchedulingPolicy::kFcfs;

  OpenAiServerConfig sc;
  sc.model_root = model_dir;
  const std::string names = args.get_or("--served-model-name", model_dir);
  sc.served_model_names = split_list(names);
  PAGODA_CHECK(!sc.served_model_names.empty(), "--served-model-name must not be empty");
  sc.api_key = args.get_or("--api-key", "");
  const long long max_logprobs = args.get_int("--max-logprobs").value_or(20);
  PAGODA_CHECK(max_logprobs >= 0 && max_logprobs <= 1 << 20, "--max-logprobs must be non-negative");
  sc.max_logprobs = static_cast<int>(max_logprobs);
  ec.max_logprobs = sc.max_logprobs;
  sc.enable_auto_tool_choice = args.flag("--enable-auto-tool-choice");
  sc.tool_call_parser = args.get_or("--tool-call-parser", "");
  sc.reasoning_parser = args.get_or("--reasoning-parser", "");
  PAGODA_CHECK(sc.tool_call_parser.empty() || sc.tool_call_parser == "hermes",
               "--tool-call-parser: only 'hermes' is supported, got '", sc.tool_call_parser, "'");
  PAGODA_CHECK(sc.reasoning_parser.empty() || sc.reasoning_parser == "qwen3",
               "--reasoning-parser: only 'qwen3' is supported, got '", sc.reasoning_parser, "'");
  PAGODA_CHECK(!sc.enable_auto_tool_choice || !sc.tool_call_parser.empty(),
               "--enable-auto-tool-choice needs --tool-call-parser");
  if (auto v = args.get("--allowed-origins")) sc.allowed_origins = split_list(*v);
  const long long pending = args.get_int("--max-pending-requests").value_or(0);
  PAGODA_CHECK(pending >= 0, "--max-pending-requests must be non-negative");
  sc.max_pending_requests = static_cast<int>(pending);
  sc.log_requests = args.flag("--enable-log-requests") && !args.flag("--disable-log-requests");
  // vLLM logs engine stats every VLLM_LOG_STATS_INTERVAL (10) seconds unless --disable-log-stats.
  double stats_interval_s = 10.0;
  if (const char* v = std::getenv("PAGODA_LOG_STATS_INTERVAL")) {
    char* end = nullptr;
    stats_interval_s = std::strtod(v, &end);
    PAGODA_CHECK(*v && end && *end == '\0' && stats_interval_s > 0 && stats_interval_s <= 86400,
                 "PAGODA_LOG_STATS_INTERVAL must be a number of seconds in (0, 86400], got '", v, "'");
  }
  const bool log_stats = !args.flag("--disable-log-stats");

  // Sampling defaults: generation_config.json ("auto", vLLM's default), none ("vllm"), or a folder.
  const std::string gen = args.get_or("--generation-config", "auto");
  if (gen != "vllm") {
    const GenerationConfig g = load_generation_config(gen == "auto" ? model_dir : gen);
    if (g.temperature) sc.default_params.temperature = static_cast<float>(*g.temperature);
    if (g.top_p) sc.default_params.top_p = static_cast<float>(*g.top_p);
    if (g.top_k) sc.default_params.top_k = static_cast<int>(*g.top_k);
    if (g.min_p) sc.default_params.min_p = static_cast<float>(*g.min_p);
  }
  if (auto seed = args.get_int("--seed")) sc.default_params.seed = static_cast<uint64_t>(*seed);

  HttpServerOptions http;
  http.host = args.get_or("--host", "0.0.0.0");
  const long long port = args.get_int("--port").value_or(8000);
  PAGODA_CHECK(port >= 0 && port <= 65535, "--port must be in [0, 65535], got ", port);
  http.port = static_cast<int>(port);
  const long long http_threads = args.get_int("--http-threads").value_or(2);
  PAGODA_CHECK(http_threads >= 1 && http_threads <= 256, "--http-threads must be in [1, 256]");
  http.num_threads = static_cast<int>(http_threads);
  const double shutdown_s = args.get_double("--shutdown-timeout").value_or(5.0);
  PAGODA_CHECK(shutdown_s >= 0 && shutdown_s <= 3600, "--shutdown-timeout must be in [0, 3600] seconds");

  // Block the shutdown signals in every thread (the ones started below inherit the mask); the
  // main thread waits for them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const Tokenizer tokenizer = Tokenizer::from_dir(model_dir);
  ec.token_vocabulary = TokenVocabulary::from_tokenizer(tokenizer);  // structured output
  std::optional<ChatTemplate> chat_template;
  if (auto t = args.get("--chat-template")) {
    chat_template = ChatTemplate::from_flag(*t, model_dir);
  } else {
    try {
      chat_template = ChatTemplate::from_model_dir(model_dir);
    } catch (const Error& e) {
      log_warn("no chat template (", e.what(), "); /v1/chat/completions will answer 400");
    }
  }
  auto engine = std::make_unique<AsyncEngine>(LLMEngine::from_model_dir(model_dir, ec));
  OpenAiServer server(sc, *engine, tokenizer, chat_template ? &*chat_template : nullptr, http);
  server.start();
  log_info("serving ", sc.served_model_names[0], " on http://", http.host, ":", server.port(),
           " (max_model_len ", engine->config().max_model_len, ", ", engine->config().num_kv_blocks, " KV blocks of ",
           engine->config().block_size, " tokens), ready ",
           fixed(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), 2),
           " s after start");
  std::printf("pagoda: listening on %s:%d\n", http.host.c_str(), server.port());
  std::fflush(stdout);

  // Wait for SIGINT / SIGTERM; meanwhile log the engine's stats every interval.
  int sig = 0;
  EngineStats last = engine->stats();
  auto last_time = std::chrono::steady_clock::now();
  if (!log_stats) sigwait(&signals, &sig);
  while (log_stats) {
    const auto whole = static_cast<time_t>(stats_interval_s);
    timespec wait{whole, static_cast<long>((stats_interval_s - static_cast<double>(whole)) * 1e9)};
    sig = sigtimedwait(&signals, nullptr, &wait);
    if (sig > 0) break;
    const EngineStats now = engine->stats();
    const auto t = std::chrono::steady_clock::now();
    const std::string line = stats_log_line(last, now, std::chrono::duration<double>(t - last_time).count());
    if (!line.empty()) log_info(line);
    const std::string spec = spec_decoding_log_line(last, now, std::chrono::duration<double>(t - last_time).count());
    if (!spec.empty()) log_info(spec);
    last = now;
    last_time = t;
  }
  log_info("signal ", sig, ": shutting down");
  server.stop(std::chrono::milliseconds(static_cast<long long>(shutdown_s * 1000)));
  engine.reset();
  log_info("bye");
  return 0;
}

}  // namespace pagoda
