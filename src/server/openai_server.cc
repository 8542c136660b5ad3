#include "server/openai_server.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"
#include "chat/reasoning_parser.h"
#include "chat/tool_parser.h"
#include "engine/output_processor.h"
#include "engine/structured_output.h"
#include "server/openai_protocol.h"

namespace pagoda {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;
using api::ApiError;
using Clock = std::chrono::steady_clock;

namespace {

std::string random_hex(int n) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  static const char* hex = "0123456789abcdef";
  std::string s;
  uint64_t x = 0;
  for (int i = 0; i < n; ++i) {
    if (i % 16 == 0) x = rng();
    s.push_back(hex[x & 15]);
    x >>= 4;
  }
  return s;
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Constant-time comparison (the API key).
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::string& longer = a.size() >= b.size() ? a : b;
  for (size_t i = 0; i < longer.size(); ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

void send_json(const std::shared_ptr<HttpResponse>& r, int status, const json& body, HttpHeaders headers = {}) {
  r->send(status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace), std::move(headers));
}

void send_error(const std::shared_ptr<HttpResponse>& r, const ApiError& e, HttpHeaders headers = {}) {
  send_json(r, e.status(), e.body(), std::move(headers));
}

json stop_reason_json(const StopReason& s) {
  if (const auto* str = std::get_if<std::string>(&s)) return *str;
  if (const auto* id = std::get_if<int32_t>(&s)) return *id;
  return nullptr;
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

// tool_choice required output: a JSON array of {"name": str, "parameters": ...}; nullopt if it is
// not (a length cut).
std::optional<ordered_json> parse_forced_tool_calls(const std::string& text) {
  ordered_json j;
  try {
    j = ordered_json::parse(text);
  } catch (const ordered_json::parse_error&) {
    return std::nullopt;
  }
  if (!j.is_array()) return std::nullopt;
  for (const ordered_json& call : j)
    if (!call.is_object() || !call.contains("name") || !call["name"].is_string() || !call.contains("parameters"))
      return std::nullopt;
  return j;
}

std::string sse(const json& j) { return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"; }

}  // namespace

// ---- one request in flight -----------------------------------------------------------------

enum class JobKind { kCompletion, kChat };

struct Choice {
  int index = 0;
  std::string engine_id;
  std::shared_ptr<RequestStream> stream;
  std::vector<int32_t> prompt_ids;
  std::string prompt_text;  // for echo and the reasoning parser
  std::unique_ptr<RequestOutputState> state;
  std::optional<Qwen3ReasoningParser> reasoning;
  std::optional<HermesToolParser> tools;
  std::vector<SampledToken> logprobs;         // one per output token (when asked)
  std::vector<SampledToken> prompt_logprobs;  // prompt tokens 1.. (when asked)
  bool finished = false;        // no more tokens will be used
  bool final_sent = false;      // streaming: the finish_reason chunk went out
  int num_tool_calls = 0;       // streaming: calls sent
  bool forced_started = false;  // streaming, named tool_choice: the call's first delta went out
  std::string forced_text;      // streaming, tool_choice required: the JSON so far
  std::string finish_reason;
  StopReason stop_reason;
  Clock::time_point first_token{}, last_token{};
  int num_tokens = 0;
  size_t text_offset = 0;  // completions logprobs: characters before the next token's text
};

struct OpenAiServer::Job {
  JobKind kind = JobKind::kCompletion;
  std::string id;
  int64_t created = 0;
  std::string model;
  bool stream = false;
  bool include_usage = false;
  bool continuous_usage = false;
  bool echo = false;
  bool want_logprobs = false;
  int top_logprobs = 0;
  bool want_prompt_logprobs = false;
  bool parse_tools = false;
  // tool_choice named / required: the output is grammar-constrained JSON turned into tool calls.
  api::ToolChoiceMode forced_tools = api::ToolChoiceMode::kNone;
  std::string forced_name;
  std::shared_ptr<HttpResponse> response;
  std::vector<Choice> choices;
  int prompt_tokens = 0;  // over every prompt (each prompt once)
  Clock::time_point start = Clock::now();
  // One output thread at a time processes a job: `scheduled` is set from the moment it is queued
  // until its processing ends; a notification meanwhile sets `pending` and the processing thread
  // queues it again when it is done.
  std::atomic<bool> scheduled{false};
  std::atomic<bool> pending{false};
  bool done = false;
};

OpenAiServer::OpenAiServer(OpenAiServerConfig config, AsyncEngine& engine, const Tokenizer& tokenizer,
                           const ChatTemplate* chat_template, HttpServerOptions http)
    : config_(std::move(config)), engine_(engine), tokenizer_(tokenizer), chat_template_(chat_template) {
  PAGODA_CHECK(!config_.served_model_names.empty(), "the server needs a model name");
  PAGODA_CHECK(config_.tool_call_parser.empty() || config_.tool_call_parser == "hermes",
               "--tool-call-parser: only 'hermes' is supported, got '", config_.tool_call_parser, "'");
  PAGODA_CHECK(config_.reasoning_parser.empty() || config_.reasoning_parser == "qwen3",
               "--reasoning-parser: only 'qwen3' is supported, got '", config_.reasoning_parser, "'");
  http_ = std::make_unique<HttpServer>(std::move(http), [this](HttpRequest req, std::shared_ptr<HttpResponse> res) {
    handle(std::move(req), std::move(res));
  });
}

OpenAiServer::~OpenAiServer() { stop(std::chrono::milliseconds(0)); }

void OpenAiServer::start() {
  {
    std::lock_guard lock(mu_);
    stopping_ = false;
  }
  const int n = std::max(1, config_.num_output_threads);
  for (int i = 0; i < n; ++i) output_threads_.emplace_back([this] { output_loop(); });
  http_->start();
}

void OpenAiServer::stop(std::chrono::milliseconds grace) {
  if (output_threads_.empty()) return;
  http_->stop(grace);  // in-flight responses got `grace`; the rest were cut off (their jobs abort)
  std::vector<std::shared_ptr<Job>> live;
  {
    std::lock_guard lock(mu_);
    live = live_;
  }
  for (const auto& job : live)
    for (const Choice& c : job->choices) engine_.abort(c.engine_id);
  // Let the aborts come back through the output threads (bounded: a dead engine never answers).
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  {
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return live_.empty(); });
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : output_threads_) t.join();
  output_threads_.clear();
  std::lock_guard lock(mu_);
  live_.clear();
  ready_.clear();
}

HttpHeaders OpenAiServer::cors_headers(const HttpRequest& request) const {
  HttpHeaders h;
  if (config_.allowed_origins.empty()) return h;
  const std::string origin = request.header("origin");
  if (origin.empty()) return h;
  for (const std::string& allowed : config_.allowed_origins) {
    if (allowed == "*" || allowed == origin) {
      h.emplace_back("Access-Control-Allow-Origin", allowed == "*" ? "*" : origin);
      h.emplace_back("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      h.emplace_back("Access-Control-Allow-Headers", "Authorization, Content-Type");
      break;
    }
  }
  return h;
}

void OpenAiServer::check_model(const std::string& model) const {
  if (model.empty()) return;
  for (const std::string& name : config_.served_model_names)
    if (name == model) return;
  throw ApiError(404, "The model `" + model + "` does not exist.", "model");
}

void OpenAiServer::handle(HttpRequest request, std::shared_ptr<HttpResponse> response) {
  const std::string& path = request.path;
  const std::string& method = request.method;
  const HttpHeaders cors = cors_headers(request);
  try {
    if (method == "OPTIONS") {
      response->send(cors.empty() ? 400 : 200, "text/plain", "", cors);
      return;
    }
    if (path.rfind("/v1/", 0) == 0 && !config_.api_key.empty()) {
      const std::string auth = request.header("authorization");
      if (!same_secret(auth, "Bearer " + config_.api_key)) {
        send_json(response, 401, json{{"error", "Unauthorized"}}, cors);
        return;
      }
    }
    if ((path == "/health" && method == "GET") || (path == "/ping" && (method == "GET" || method == "POST"))) {
      response->send(engine_.is_dead() ? 503 : 200, "text/plain", "", cors);
      return;
    }
    if (path == "/version" && method == "GET") {
      send_json(response, 200, json{{"version", config_.version}}, cors);
      return;
    }
    if (path == "/v1/models" && method == "GET") {
      handle_models(response);
      return;
    }
    if (path == "/metrics" && method == "GET") {
      handle_metrics(response);
      return;
    }
    const bool known_post = path == "/v1/completions" || path == "/v1/chat/completions" || path == "/tokenize" ||
                            path == "/detokenize";
    if (!known_post) throw ApiError(404, "Not Found: " + method + " " + path);
    if (method != "POST") throw ApiError(405, "Method Not Allowed: " + method + " " + path);
    const std::string content_type = request.header("content-type");
    if (content_type.rfind("application/json", 0) != 0)
      throw ApiError(400, "Unsupported Media Type: Only 'application/json' is allowed");
    if (engine_.is_dead()) throw ApiError(503, "The engine is not running (it failed); see the server log.");
    if (path == "/v1/completions") {
      handle_completions(request, response);
    } else if (path == "/v1/chat/completions") {
      handle_chat(request, response);
    } else if (path == "/tokenize") {
      handle_tokenize(request, response);
    } else {
      handle_detokenize(request, response);
    }
  } catch (const ApiError& e) {
    send_error(response, e, cors);
  } catch (const std::exception& e) {
    send_error(response, ApiError(500, e.what()), cors);
  }
}

void OpenAiServer::handle_models(const std::shared_ptr<HttpResponse>& response) {
  json data = json::array();
  for (const std::string& name : config_.served_model_names) {
    data.push_back({{"id", name},
                    {"object", "model"},
                    {"created", unix_time()},
                    {"owned_by", "pagoda"},
                    {"root", config_.model_root},
                    {"parent", nullptr},
                    {"max_model_len", engine_.config().max_model_len}});
  }
  send_json(response, 200, json{{"object", "list"}, {"data", std::move(data)}});
}

void OpenAiServer::handle_metrics(const std::shared_ptr<HttpResponse>& response) {
  response->send(200, "text/plain; version=0.0.4; charset=utf-8",
                 metrics_.render(config_.served_model_names[0], engine_.stats(), engine_.metrics()));
}

namespace {

ordered_json parse_body(const std::string& body) {
  api::check_json_depth(body);
  ordered_json j;
  try {
    j = ordered_json::parse(body);
  } catch (const ordered_json::exception& e) {  // parse_error, or out_of_range for 1e999
    throw ApiError(400, std::string("Invalid JSON in the request body: ") + e.what());
  }
  if (!j.is_object()) throw ApiError(400, "The request body must be a JSON object");
  return j;
}

bool json_bool(const ordered_json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw ApiError(400, std::string("'") + key + "' must be a boolean", key);
  return it->get<bool>();
}

}  // namespace

void OpenAiServer::handle_tokenize(const HttpRequest& request, const std::shared_ptr<HttpResponse>& response) {
  const ordered_json j = parse_body(request.body);
  if (j.contains("model") && j["model"].is_string()) check_model(j["model"].get<std::string>());
  std::vector<int32_t> ids;
  if (j.contains("messages")) {
    if (!chat_template_) throw ApiError(400, "This model has no chat template; use 'prompt'.");
    if (!j["messages"].is_array()) throw ApiError(400, "'messages' must be a list", "messages");
    std::string prompt;
    try {
      prompt = chat_template_->apply(j["messages"], nullptr, json_bool(j, "add_generation_prompt", true),
                                     j.value("chat_template_kwargs", ordered_json::object()));
    } catch (const Error& e) {
      throw ApiError(400, e.what());
    }
    ids = tokenizer_.encode(prompt, json_bool(j, "add_special_tokens", false));
  } else if (j.contains("prompt") && j["prompt"].is_string()) {
    ids = tokenizer_.encode(j["prompt"].get<std::string>(), json_bool(j, "add_special_tokens", true));
  } else {
    throw ApiError(400, "/tokenize needs 'prompt' (a string) or 'messages'", "prompt");
  }
  json out{{"count", ids.size()}, {"max_model_len", engine_.config().max_model_len}, {"tokens", ids}};
  if (json_bool(j, "return_token_strs", false)) {
    json strs = json::array();
    for (int32_t id : ids) strs.push_back(tokenizer_.id_to_token(id));
    out["token_strs"] = std::move(strs);
  } else {
    out["token_strs"] = nullptr;
  }
  send_json(response, 200, out);
}

void OpenAiServer::handle_detokenize(const HttpRequest& request, const std::shared_ptr<HttpResponse>& response) {
  const ordered_json j = parse_body(request.body);
  if (j.contains("model") && j["model"].is_string()) check_model(j["model"].get<std::string>());
  if (!j.contains("tokens") || !j["tokens"].is_array()) throw ApiError(400, "'tokens' must be a list of ids", "tokens");
  std::vector<int32_t> ids;
  for (const ordered_json& t : j["tokens"]) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= engine_.vocab_size())
      throw ApiError(400, "'tokens' must hold token ids in [0, " + std::to_string(engine_.vocab_size()) + ")", "tokens");
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  send_json(response, 200, json{{"prompt", tokenizer_.decode(ids, false)}});
}

namespace {

// vLLM's length checks, with its messages.
void check_length(int prompt_len, const std::optional<int>& max_tokens, int max_model_len) {
  if (prompt_len >= max_model_len)
    throw ApiError(400, "This model's maximum context length is " + std::to_string(max_model_len) +
                            " tokens. However, your request has " + std::to_string(prompt_len) +
                            " input tokens. Please reduce the length of the input messages.");
  // In int64: max_tokens may be up to INT32_MAX, and the int sum overflowed (UB, and a wrapped sum let it through).
  if (max_tokens && static_cast<int64_t>(prompt_len) + *max_tokens > max_model_len)
    throw ApiError(400, "'max_tokens' or 'max_completion_tokens' is too large: " + std::to_string(*max_tokens) +
                            ". This model's maximum context length is " + std::to_string(max_model_len) +
                            " tokens and your request has " + std::to_string(prompt_len) + " input tokens (" +
                            std::to_string(*max_tokens) + " > " + std::to_string(max_model_len) + " - " +
                            std::to_string(prompt_len) + ").");
}

void truncate_prompt(std::vector<int32_t>& ids, const std::optional<int>& keep) {
  if (!keep || *keep < 0 || static_cast<size_t>(*keep) >= ids.size()) return;
  ids.erase(ids.begin(), ids.end() - *keep);
}

}  // namespace

api::ProtocolLimits OpenAiServer::limits() const {
  api::ProtocolLimits l;
  l.vocab_size = engine_.vocab_size();
  l.max_logprobs = config_.max_logprobs;
  return l;
}

std::shared_ptr<OpenAiServer::Job> OpenAiServer::new_job(bool chat, const api::GenerationRequest& req,
                                                         const std::shared_ptr<HttpResponse>& response) const {
  auto job = std::make_shared<Job>();
  job->kind = chat ? JobKind::kChat : JobKind::kCompletion;
  job->id = (chat ? "chatcmpl-" : "cmpl-") + (req.request_id.empty() ? random_hex(32) : req.request_id);
  job->created = unix_time();
  job->model = req.model.empty() ? config_.served_model_names[0] : req.model;
  job->stream = req.stream;
  job->include_usage = req.include_usage;
  job->continuous_usage = req.continuous_usage_stats;
  job->want_prompt_logprobs = req.params.prompt_logprobs.has_value();
  job->response = response;
  return job;
}

void OpenAiServer::handle_completions(const HttpRequest& request, const std::shared_ptr<HttpResponse>& response) {
  api::CompletionRequest req = api::parse_completion_request(request.body, config_.default_params, limits());
  check_model(req.model);
  std::shared_ptr<Job> job = new_job(false, req, response);
  job->echo = req.echo;
  job->want_logprobs = req.params.logprobs.has_value();
  job->top_logprobs = req.params.logprobs.value_or(0);
  const int max_model_len = engine_.config().max_model_len;
  const int n = req.params.n;
  for (size_t p = 0; p < req.prompts.size(); ++p) {
    const api::PromptInput& in = req.prompts[p];
    std::vector<int32_t> ids = in.text ? tokenizer_.encode(*in.text, req.add_special_tokens) : in.token_ids;
    truncate_prompt(ids, req.truncate_prompt_tokens);
    if (ids.empty()) throw ApiError(400, "The prompt is empty (it encodes to zero tokens).", "prompt");
    check_length(static_cast<int>(ids.size()), req.params.max_tokens, max_model_len);
    job->prompt_tokens += static_cast<int>(ids.size());
    const std::string text = in.text && !req.truncate_prompt_tokens ? *in.text : tokenizer_.decode(ids, false);
    for (int i = 0; i < n; ++i) {
      Choice c;
      c.index = static_cast<int>(p) * n + i;
      c.prompt_ids = ids;
      c.prompt_text = text;
      job->choices.push_back(std::move(c));
    }
  }
  launch(job, req.params, req.priority);
}

void OpenAiServer::handle_chat(const HttpRequest& request, const std::shared_ptr<HttpResponse>& response) {
  api::ChatRequest req = api::parse_chat_request(request.body, config_.default_params, limits());
  check_model(req.model);
  const bool has_parser = !config_.tool_call_parser.empty();
  if (req.tools && req.tool_choice == api::ToolChoiceMode::kAuto && !(config_.enable_auto_tool_choice && has_parser))
    throw ApiError(400, "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set",
                   "tool_choice");
  const std::shared_ptr<const JsonGrammar> grammar = structured_output_grammar(req);
  std::optional<ChatTemplate> custom;
  if (req.chat_template) {
    try {
      custom = ChatTemplate::from_string(*req.chat_template, chat_template_ ? chat_template_->special_tokens()
                                                                            : ordered_json::object());
    } catch (const Error& e) {
      throw ApiError(400, std::string("chat_template: ") + e.what(), "chat_template");
    }
  }
  const ChatTemplate* tmpl = custom ? &*custom : chat_template_;
  if (!tmpl)
    throw ApiError(400, "As of transformers v4.44, default chat template is no longer allowed, so you must provide "
                        "a chat template if the tokenizer does not define one.");
  std::string prompt;
  try {
    const ordered_json* tools = req.tools ? &*req.tools : nullptr;
    prompt = tmpl->apply(req.messages, tools, req.add_generation_prompt && !req.continue_final_message,
                         req.chat_template_kwargs);
  } catch (const Error& e) {
    throw ApiError(400, e.what());
  }
  if (req.continue_final_message) {
    // The prompt ends with the last message's content: drop what the template put after it.
    const ordered_json& last = req.messages.back();
    if (last.contains("content") && last["content"].is_string()) {
      const std::string content = last["content"].get<std::string>();
      const size_t at = prompt.rfind(content);
      if (!content.empty() && at != std::string::npos) prompt.resize(at + content.size());
    }
  }
  std::vector<int32_t> ids = tokenizer_.encode(prompt, req.add_special_tokens);
  truncate_prompt(ids, req.truncate_prompt_tokens);
  if (ids.empty()) throw ApiError(400, "The prompt is empty (it encodes to zero tokens).", "messages");
  check_length(static_cast<int>(ids.size()), req.params.max_tokens, engine_.config().max_model_len);

  std::shared_ptr<Job> job = new_job(true, req, response);
  job->want_logprobs = req.logprobs;
  job->top_logprobs = req.top_logprobs;
  job->parse_tools = req.tools && req.tool_choice == api::ToolChoiceMode::kAuto && has_parser;
  if (req.tool_choice == api::ToolChoiceMode::kNamed || req.tool_choice == api::ToolChoiceMode::kRequired) {
    job->forced_tools = req.tool_choice;
    job->forced_name = req.tool_choice_name;
  }
  if (grammar) {
    auto spec = std::make_shared<StructuredOutputSpec>();
    spec->grammar = grammar;
    // With a reasoning parser the grammar applies once the reasoning ends (vLLM): after the model
    // writes </think>, unless the prompt already closed the think block.
    if (config_.reasoning_parser == "qwen3") {
      const int32_t end_id = tokenizer_.token_to_id("</think>");
      const int32_t start_id = tokenizer_.token_to_id("<think>");
      if (end_id >= 0) {
        const auto last = [&](int32_t id) {
          for (size_t k = ids.size(); k-- > 0;)
            if (ids[k] == id) return static_cast<int64_t>(k);
          return int64_t{-1};
        };
        const int64_t last_end = last(end_id);
        if (!(last_end >= 0 && last_end > last(start_id))) spec->start_after_token = end_id;
      }
    }
    req.params.structured_output = std::move(spec);
  }
  job->prompt_tokens = static_cast<int>(ids.size());
  for (int i = 0; i < req.params.n; ++i) {
    Choice c;
    c.index = i;
    c.prompt_ids = ids;
    c.prompt_text = prompt;
    if (config_.reasoning_parser == "qwen3") c.reasoning.emplace(prompt);
    if (job->parse_tools) c.tools.emplace();
    job->choices.push_back(std::move(c));
  }
  launch(job, req.params, req.priority);
}

std::shared_ptr<const JsonGrammar> OpenAiServer::structured_output_grammar(const api::ChatRequest& req) const {
  // vLLM's order: a forcing tool_choice, then structured_outputs / guided_json, then response_format.
  std::string param = "response_format";
  try {
    if (req.tool_choice == api::ToolChoiceMode::kNamed) {
      param = "tools";
      for (const ordered_json& t : *req.tools) {
        const ordered_json& fn = t["function"];
        if (fn["name"] != req.tool_choice_name) continue;
        const auto p = fn.find("parameters");
        if (p == fn.end() || p->is_null()) return JsonGrammar::any_object();
        return JsonGrammar::from_schema(*p);
      }
      throw ApiError(400, "Tool '" + req.tool_choice_name + "' has not been passed in `tools`.", "tool_choice");
    }
    if (req.tool_choice == api::ToolChoiceMode::kRequired) {
      // vLLM's _get_json_schema_from_tool: a non-empty array of {"name", "parameters"} objects,
      // one alternative per tool; the tools' $defs are lifted to the top.
      param = "tools";
      ordered_json defs = ordered_json::object();
      ordered_json alts = ordered_json::array();
      for (const ordered_json& t : *req.tools) {
        const ordered_json& fn = t["function"];
        ordered_json params = ordered_json{{"type", "object"}, {"properties", ordered_json::object()}};
        if (const auto p = fn.find("parameters"); p != fn.end() && !p->is_null()) params = *p;
        if (params.is_object() && params.contains("$defs")) {
          if (!params["$defs"].is_object())
            throw ApiError(400, "a tool's parameters '$defs' must be an object", "tools");
          for (auto it = params["$defs"].begin(); it != params["$defs"].end(); ++it) {
            if (defs.contains(it.key()) && defs[it.key()] != it.value())
              throw ApiError(400, "Tool definition '" + it.key() + "' has multiple schemas, which is not supported.",
                             "tools");
            defs[it.key()] = it.value();
          }
          params.erase("$defs");
        }
        alts.push_back(ordered_json{
            {"properties",
             ordered_json{{"name", ordered_json{{"type", "string"}, {"enum", ordered_json::array({fn["name"]})}}},
                          {"parameters", params}}},
            {"required", ordered_json::array({"name", "parameters"})}});
      }
      ordered_json schema{{"type", "array"}, {"minItems", 1}, {"items", ordered_json{{"type", "object"}, {"anyOf", alts}}}};
      if (!defs.empty()) schema["$defs"] = defs;
      return JsonGrammar::from_schema(schema);
    }
    if (req.guided_json) {
      param = "structured_outputs";
      return JsonGrammar::from_schema(*req.guided_json);
    }
    if (req.response_format == "json_object") return JsonGrammar::any_object();
    if (req.response_format == "json_schema")
      return req.response_schema ? JsonGrammar::from_schema(*req.response_schema) : JsonGrammar::any_object();
  } catch (const Error& e) {
    throw ApiError(400, param + ": " + e.what(), param);
  }
  return nullptr;
}

namespace {

// The sampling parameters of a request for --enable-log-requests (vLLM logs its SamplingParams).
std::string describe(const SamplingParams& p) {
  std::ostringstream os;
  os << "SamplingParams(n=" << p.n << ", temperature=" << p.temperature << ", top_p=" << p.top_p
     << ", top_k=" << p.top_k << ", min_p=" << p.min_p << ", presence_penalty=" << p.presence_penalty
     << ", frequency_penalty=" << p.frequency_penalty << ", repetition_penalty=" << p.repetition_penalty
     << ", seed=";
  if (p.seed) os << *p.seed;
  else os << "None";
  os << ", max_tokens=";
  if (p.max_tokens) os << *p.max_tokens;
  else os << "None";
  os << ", min_tokens=" << p.min_tokens << ", stop=" << json(p.stop).dump() << ", stop_token_ids="
     << json(p.stop_token_ids).dump() << ", ignore_eos=" << (p.ignore_eos ? "True" : "False") << ", logprobs=";
  if (p.logprobs) os << *p.logprobs;
  else os << "None";
  os << ", structured_output=" << (p.structured_output ? "yes" : "None") << ")";
  return os.str();
}

}  // namespace

void OpenAiServer::launch(const std::shared_ptr<Job>& job, const SamplingParams& params, int priority) {
  if (config_.max_pending_requests > 0 && engine_.stats().num_waiting >= config_.max_pending_requests)
    throw ApiError(503, "The server is overloaded: " + std::to_string(config_.max_pending_requests) +
                            " requests are already waiting. Retry later.");
  // Every choice is its own engine request (n = 1), so that a stop string ends just that choice;
  // the choices of one prompt share its KV blocks through the prefix cache.
  const uint64_t serial = next_id_.fetch_add(1);
  for (size_t i = 0; i < job->choices.size(); ++i) {
    Choice& c = job->choices[i];
    SamplingParams p = params;
    p.n = 1;
    const int k = params.n > 0 ? c.index % params.n : 0;
    if (params.seed && k > 0) p.seed = *params.seed + static_cast<uint64_t>(k);
    if (k > 0) p.prompt_logprobs.reset();
    c.engine_id = job->id + "-" + std::to_string(serial) + "-" + std::to_string(c.index);
    c.state = std::make_unique<RequestOutputState>(tokenizer_, p, c.prompt_ids);
    try {
      c.stream = engine_.add_request(c.engine_id, c.prompt_ids, p, priority);
    } catch (const Error& e) {
      for (size_t j = 0; j < i; ++j) engine_.abort(job->choices[j].engine_id);
      throw ApiError(engine_.is_dead() ? 503 : 400, e.what());
    }
  }
  if (config_.log_requests)
    log_info("Received request ", job->id, ": ", job->prompt_tokens, " prompt tokens, ", job->choices.size(),
             job->choices.size() == 1 ? " choice, " : " choices, ", job->stream ? "streamed, " : "", describe(params));
  {
    std::lock_guard lock(mu_);
    live_.push_back(job);
  }
  if (job->stream) {
    job->response->start_stream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
    if (job->kind == JobKind::kChat) {  // the role chunk of every choice comes first, as vLLM's
      for (const Choice& c : job->choices) {
        json chunk{{"id", job->id},
                   {"object", "chat.completion.chunk"},
                   {"created", job->created},
                   {"model", job->model},
                   {"choices", json::array({json{{"index", c.index},
                                                 {"delta", json{{"role", "assistant"}, {"content", ""}}},
                                                 {"logprobs", nullptr},
                                                 {"finish_reason", nullptr}}})}};
        job->response->write(sse(chunk));
      }
    } else if (job->echo) {  // completions echo: the prompt comes first
      for (const Choice& c : job->choices) {
        json chunk{{"id", job->id},
                   {"object", "text_completion"},
                   {"created", job->created},
                   {"model", job->model},
                   {"choices", json::array({json{{"index", c.index},
                                                 {"text", c.prompt_text},
                                                 {"logprobs", nullptr},
                                                 {"finish_reason", nullptr},
                                                 {"stop_reason", nullptr}}})}};
        job->response->write(sse(chunk));
      }
    }
  }
  std::weak_ptr<Job> weak = job;
  job->response->on_disconnect([this, weak] {
    if (auto j = weak.lock()) {
      if (config_.log_requests) log_info("Aborted request ", j->id, ": the client went away");
      for (const Choice& c : j->choices) engine_.abort(c.engine_id);
    }
  });
  for (Choice& c : job->choices) c.stream->set_notify([this, weak] {
      if (auto j = weak.lock()) schedule(j);
    });
  schedule(job);  // outputs that arrived before set_notify
}

void OpenAiServer::schedule(const std::shared_ptr<Job>& job) {
  job->pending.store(true);
  if (job->scheduled.exchange(true)) return;  // queued or being processed: that thread sees `pending`
  {
    std::lock_guard lock(mu_);
    ready_.push_back(job);
  }
  cv_.notify_one();
}

void OpenAiServer::output_loop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !ready_.empty(); });
      if (ready_.empty()) return;
      job = std::move(ready_.front());
      ready_.pop_front();
    }
    job->pending.store(false);  // a notification from now on has this thread (or the next) look again
    try {
      process(*job);
    } catch (const std::exception& e) {
      log_error("request ", job->id, ": ", e.what());
      for (const Choice& c : job->choices) engine_.abort(c.engine_id);
      if (job->stream) {
        job->response->write(sse(ApiError(500, e.what()).body()));
        job->response->write("data: [DONE]\n\n");
        job->response->end();
      } else {
        send_error(job->response, ApiError(500, e.what()));
      }
      job->done = true;
    }
    if (job->done) {
      std::lock_guard lock(mu_);
      std::erase(live_, job);
      if (live_.empty()) cv_.notify_all();
      continue;  // stays `scheduled`: nothing processes a finished job again
    }
    job->scheduled.store(false);
    // An output that arrived while this thread was processing the job: queue it again (unless a
    // notifier got there first after the store above).
    if (job->pending.load() && !job->scheduled.exchange(true)) {
      std::lock_guard lock(mu_);
      ready_.push_back(std::move(job));
      cv_.notify_one();
    }
  }
}

namespace {

json usage_json(int prompt_tokens, int completion_tokens) {
  return json{{"prompt_tokens", prompt_tokens},
              {"total_tokens", prompt_tokens + completion_tokens},
              {"completion_tokens", completion_tokens},
              {"prompt_tokens_details", nullptr}};
}

}  // namespace

void OpenAiServer::process(Job& job) {
  if (job.done) return;
  const bool chat = job.kind == JobKind::kChat;
  auto token_text = [&](int32_t id) { return tokenizer_.decode(std::vector<int32_t>{id}, false); };
  auto chat_logprobs = [&](const std::vector<SampledToken>& lps) {
    json content = json::array();
    for (const SampledToken& t : lps) {
      const std::string s = token_text(t.token);
      json top = json::array();
      for (size_t k = 0; k < t.top_logprobs.size() && static_cast<int>(k) < job.top_logprobs; ++k) {
        const std::string ts = token_text(t.top_logprobs[k].first);
        top.push_back({{"token", ts}, {"logprob", t.top_logprobs[k].second}, {"bytes", bytes_of(ts)}});
      }
      content.push_back({{"token", s}, {"logprob", t.logprob}, {"bytes", bytes_of(s)}, {"top_logprobs", std::move(top)}});
    }
    return json{{"content", std::move(content)}};
  };
  auto completion_logprobs = [&](const std::vector<SampledToken>& lps, size_t& offset) {
    json tokens = json::array(), token_lps = json::array(), tops = json::array(), offsets = json::array();
    for (const SampledToken& t : lps) {
      const std::string s = token_text(t.token);
      tokens.push_back(s);
      token_lps.push_back(t.logprob);
      json top = json::object();
      top[s] = t.logprob;
      for (size_t k = 0; k < t.top_logprobs.size() && static_cast<int>(k) < job.top_logprobs; ++k)
        top[token_text(t.top_logprobs[k].first)] = t.top_logprobs[k].second;
      tops.push_back(std::move(top));
      offsets.push_back(offset);
      offset += s.size();
    }
    return json{{"text_offset", std::move(offsets)},
                {"token_logprobs", std::move(token_lps)},
                {"tokens", std::move(tokens)},
                {"top_logprobs", std::move(tops)}};
  };
  for (Choice& c : job.choices) {
    while (std::optional<RequestOutput> o = c.stream->try_next()) {
      c.prompt_logprobs.insert(c.prompt_logprobs.end(), o->new_prompt_logprobs.begin(), o->new_prompt_logprobs.end());
      if (c.finished) continue;  // ended by a stop string; this is the abort coming back
      std::string text;
      std::vector<SampledToken> new_lps;
      const auto now = Clock::now();
      for (size_t k = 0; k < o->new_token_ids.size() && !c.state->finished(); ++k) {
        const bool last = k + 1 == o->new_token_ids.size();
        const Delta d = c.state->push(o->new_token_ids[k], o->finished && last, o->finished && last ? o->finish_reason : "");
        text += d.text;
        if (k < o->new_logprobs.size() && job.want_logprobs) new_lps.push_back(o->new_logprobs[k]);
        if (c.num_tokens == 0) {
          c.first_token = now;
          metrics_.ttft.observe(std::chrono::duration<double>(now - job.start).count());
        } else {
          metrics_.itl.observe(std::chrono::duration<double>(now - c.last_token).count());
        }
        c.last_token = now;
        ++c.num_tokens;
      }
      if (o->finished && !c.state->finished()) text += c.state->finish(o->finish_reason).text;
      if (c.state->finished()) {
        c.finished = true;
        if (!o->finished) engine_.abort(c.engine_id);  // a stop string: end the engine request
      }
      c.logprobs.insert(c.logprobs.end(), new_lps.begin(), new_lps.end());
      if (!job.stream) continue;

      // Streaming: one chunk for what this output added.
      json delta = json::object();
      bool any = false;
      if (chat) {
        std::string reasoning, content = text;
        if (c.reasoning) {
          ReasoningDelta r = c.reasoning->push(text);
          if (c.finished) {
            ReasoningDelta f = c.reasoning->finish();
            r.reasoning += f.reasoning;
            r.content += f.content;
          }
          reasoning = std::move(r.reasoning);
          content = std::move(r.content);
        }
        json tool_deltas = json::array();
        if (job.forced_tools == api::ToolChoiceMode::kNamed && !content.empty()) {
          // Named tool_choice: the constrained JSON is the call's arguments, streamed as they come.
          json e{{"index", 0}};
          if (!c.forced_started) {
            c.forced_started = true;
            e["id"] = make_tool_call_id();
            e["type"] = "function";
            e["function"] = json{{"name", job.forced_name}, {"arguments", content}};
          } else {
            e["function"] = json{{"arguments", content}};
          }
          tool_deltas.push_back(std::move(e));
          content.clear();
        } else if (job.forced_tools == api::ToolChoiceMode::kRequired) {
          // tool_choice required: the calls go out whole once the array is complete.
          c.forced_text += content;
          content.clear();
          if (c.finished) {
            std::optional<ordered_json> calls = parse_forced_tool_calls(c.forced_text);
            if (calls) {
              for (size_t k = 0; k < calls->size(); ++k) {
                const ordered_json& call = (*calls)[k];
                tool_deltas.push_back(json{{"index", k},
                                           {"id", make_tool_call_id()},
                                           {"type", "function"},
                                           {"function", json{{"name", call["name"]},
                                                             {"arguments", python_json_dumps(call["parameters"])}}}});
              }
              c.num_tool_calls = static_cast<int>(calls->size());
            } else {
              content = c.forced_text;  // cut short (length): not a valid array, sent as content
            }
          }
        }
        if (c.tools) {
          ToolParserDelta t = c.tools->push(content);
          if (c.finished) {
            ToolParserDelta f = c.tools->finish();
            t.content += f.content;
            t.tool_calls.insert(t.tool_calls.end(), f.tool_calls.begin(), f.tool_calls.end());
          }
          content = std::move(t.content);
          for (const ToolCallDelta& td : t.tool_calls) {
            json e{{"index", td.index}};
            if (td.name) {
              e["id"] = *td.id;
              e["type"] = "function";
              e["function"] = json{{"name", *td.name}, {"arguments", td.arguments}};
            } else {
              e["function"] = json{{"arguments", td.arguments}};
            }
            tool_deltas.push_back(std::move(e));
          }
          c.num_tool_calls = c.tools->num_tool_calls();
        }
        if (!reasoning.empty()) {
          delta["reasoning_content"] = reasoning;
          any = true;
        }
        if (!content.empty()) {
          delta["content"] = content;
          any = true;
        }
        if (!tool_deltas.empty()) {
          delta["tool_calls"] = std::move(tool_deltas);
          any = true;
        }
      } else {
        any = !text.empty();
      }
      if (any || !new_lps.empty()) {
        json choice;
        if (chat) {
          choice = json{{"index", c.index},
                        {"delta", std::move(delta)},
                        {"logprobs", new_lps.empty() ? json(nullptr) : chat_logprobs(new_lps)},
                        {"finish_reason", nullptr}};
        } else {
          choice = json{{"index", c.index},
                        {"text", text},
                        {"logprobs", new_lps.empty() ? json(nullptr) : completion_logprobs(new_lps, c.text_offset)},
                        {"finish_reason", nullptr},
                        {"stop_reason", nullptr}};
        }
        json chunk{{"id", job.id},
                   {"object", chat ? "chat.completion.chunk" : "text_completion"},
                   {"created", job.created},
                   {"model", job.model},
                   {"choices", json::array({std::move(choice)})}};
        if (job.continuous_usage) chunk["usage"] = usage_json(job.prompt_tokens, c.state->num_output_tokens());
        job.response->write(sse(chunk));
      }
    }
    if (c.finished && job.stream && !c.final_sent) {
      c.final_sent = true;
      std::string reason = c.state->finish_reason();
      if (chat && c.num_tool_calls > 0 && reason == "stop") reason = "tool_calls";
      json choice = chat ? json{{"index", c.index}, {"delta", json::object()}, {"logprobs", nullptr},
                                {"finish_reason", reason}, {"stop_reason", stop_reason_json(c.state->stop_reason())}}
                         : json{{"index", c.index}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", reason},
                                {"stop_reason", stop_reason_json(c.state->stop_reason())}};
      json chunk{{"id", job.id},
                 {"object", chat ? "chat.completion.chunk" : "text_completion"},
                 {"created", job.created},
                 {"model", job.model},
                 {"choices", json::array({std::move(choice)})}};
      job.response->write(sse(chunk));
    }
    if (!c.finished && !c.stream->error().empty()) {
      // The engine died: end this request with the error.
      for (const Choice& x : job.choices) engine_.abort(x.engine_id);
      const ApiError e(500, c.stream->error());
      if (job.stream) {
        job.response->write(sse(e.body()));
        job.response->write("data: [DONE]\n\n");
        job.response->end();
      } else {
        send_error(job.response, e);
      }
      job.done = true;
      return;
    }
  }

  for (const Choice& c : job.choices)
    if (!c.finished) return;

  // Every choice finished.
  job.done = true;
  int completion_tokens = 0;
  for (const Choice& c : job.choices) {
    const int n = c.state->num_output_tokens();
    completion_tokens += n;
    metrics_.record_finish(c.state->finish_reason());
    if (c.num_tokens > 0) metrics_.e2e.observe(std::chrono::duration<double>(c.last_token - job.start).count());
    metrics_.generation_tokens.observe(n);
    if (n > 1) metrics_.tpot.observe(std::chrono::duration<double>(c.last_token - c.first_token).count() / (n - 1));
  }
  metrics_.prompt_tokens.observe(job.prompt_tokens);
  if (config_.log_requests) {
    std::string reasons;
    for (const Choice& c : job.choices) {
      if (!reasons.empty()) reasons += ',';
      reasons += c.state->finish_reason();
    }
    log_info("Finished request ", job.id, ": finish_reason ", reasons, ", ", job.prompt_tokens, " prompt + ",
             completion_tokens, " completion tokens, ",
             fixed(std::chrono::duration<double>(Clock::now() - job.start).count(), 3), " s");
  }
  if (job.stream) {
    if (job.include_usage) {
      json chunk{{"id", job.id},
                 {"object", chat ? "chat.completion.chunk" : "text_completion"},
                 {"created", job.created},
                 {"model", job.model},
                 {"choices", json::array()},
                 {"usage", usage_json(job.prompt_tokens, completion_tokens)}};
      job.response->write(sse(chunk));
    }
    job.response->write("data: [DONE]\n\n");
    job.response->end();
    return;
  }

  json choices = json::array();
  for (Choice& c : job.choices) {
    std::string reason = c.state->finish_reason();
    const std::string& text = c.state->text();
    // Tokens cut by a stop string are not part of the answer.
    if (c.logprobs.size() > c.state->token_ids().size()) c.logprobs.resize(c.state->token_ids().size());
    json prompt_lps = nullptr;
    if (job.want_prompt_logprobs && !c.prompt_logprobs.empty()) {
      prompt_lps = json::array({nullptr});
      for (const SampledToken& t : c.prompt_logprobs) {
        json e = json::object();
        e[std::to_string(t.token)] = json{{"logprob", t.logprob}, {"decoded_token", token_text(t.token)}};
        for (const auto& [id, lp] : t.top_logprobs)
          if (id != t.token) e[std::to_string(id)] = json{{"logprob", lp}, {"decoded_token", token_text(id)}};
        prompt_lps.push_back(std::move(e));
      }
    }
    if (chat) {
      json message{{"role", "assistant"}, {"content", nullptr}, {"reasoning_content", nullptr},
                   {"tool_calls", json::array()}};
      std::optional<std::string> content = text;
      if (c.reasoning) {
        auto [r, rest] = Qwen3ReasoningParser::extract(c.prompt_text, text);
        if (r) message["reasoning_content"] = *r;
        content = rest;
      }
      if (job.forced_tools == api::ToolChoiceMode::kNamed) {
        // vLLM: content "", one call named by tool_choice whose arguments are the output; finish
        // reason stays "stop" (OpenAI's choice for named calls).
        message["tool_calls"].push_back({{"id", make_tool_call_id()},
                                         {"type", "function"},
                                         {"function", {{"name", job.forced_name}, {"arguments", content.value_or("")}}}});
        content = "";
      } else if (job.forced_tools == api::ToolChoiceMode::kRequired && content) {
        if (std::optional<ordered_json> calls = parse_forced_tool_calls(*content)) {
          for (const ordered_json& call : *calls)
            message["tool_calls"].push_back(
                {{"id", make_tool_call_id()},
                 {"type", "function"},
                 {"function", {{"name", call["name"]}, {"arguments", python_json_dumps(call["parameters"])}}}});
          content = "";
          if (reason == "stop") reason = "tool_calls";
        }
      }
      if (c.tools && content) {
        ExtractedToolCalls x = HermesToolParser::extract(*content);
        if (x.tools_called) {
          for (const ToolCall& t : x.tool_calls)
            message["tool_calls"].push_back(
                {{"id", t.id}, {"type", "function"}, {"function", {{"name", t.name}, {"arguments", t.arguments}}}});
          content = x.content;
          if (reason == "stop") reason = "tool_calls";
        }
      }
      if (content) message["content"] = *content;
      choices.push_back({{"index", c.index},
                         {"message", std::move(message)},
                         {"logprobs", job.want_logprobs ? chat_logprobs(c.logprobs) : json(nullptr)},
                         {"finish_reason", reason},
                         {"stop_reason", stop_reason_json(c.state->stop_reason())}});
    } else {
      size_t offset = job.echo ? c.prompt_text.size() : 0;
      choices.push_back({{"index", c.index},
                         {"text", job.echo ? c.prompt_text + text : text},
                         {"logprobs", job.want_logprobs ? completion_logprobs(c.logprobs, offset) : json(nullptr)},
                         {"finish_reason", reason},
                         {"stop_reason", stop_reason_json(c.state->stop_reason())},
                         {"prompt_logprobs", prompt_lps}});
    }
  }
  json body{{"id", job.id},
            {"object", chat ? "chat.completion" : "text_completion"},
            {"created", job.created},
            {"model", job.model},
            {"choices", std::move(choices)},
            {"usage", usage_json(job.prompt_tokens, completion_tokens)}};
  send_json(job.response, 200, body);
}

}  // namespace pagoda
