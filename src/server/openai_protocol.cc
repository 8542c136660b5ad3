#include "server/openai_protocol.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "base/error.h"

namespace pagoda::api {
namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

const char* type_name(const ordered_json& v) {
  switch (v.type()) {
    case ordered_json::value_t::null: return "null";
    case ordered_json::value_t::boolean: return "boolean";
    case ordered_json::value_t::string: return "string";
    case ordered_json::value_t::array: return "array";
    case ordered_json::value_t::object: return "object";
    case ordered_json::value_t::number_float: return "number";
    default: return "integer";
  }
}

// A field that is present and not null (clients send null for "unset").
const ordered_json* field(const ordered_json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

double get_number(const ordered_json& v, const char* key) {
  if (!v.is_number()) bad(key, std::string("'") + key + "' must be a number, got " + type_name(v));
  const double x = v.get<double>();
  if (!std::isfinite(x)) bad(key, std::string("'") + key + "' must be finite");
  return x;
}

// Integers, and floats with no fractional part (pydantic's lax mode accepts 2.0).
int64_t get_integer(const ordered_json& v, const char* key, int64_t lo = std::numeric_limits<int32_t>::min(),
                    int64_t hi = std::numeric_limits<int32_t>::max()) {
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    x = u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max()
                                                                       : static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else if (v.is_number_float() && std::isfinite(v.get<double>()) && std::floor(v.get<double>()) == v.get<double>() &&
             std::fabs(v.get<double>()) < 9e18) {
    x = static_cast<int64_t>(v.get<double>());
  } else {
    bad(key, std::string("'") + key + "' must be an integer, got " + type_name(v));
  }
  if (x < lo || x > hi)
    bad(key, std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                 std::to_string(x));
  return x;
}

bool get_bool(const ordered_json& v, const char* key) {
  if (!v.is_boolean()) bad(key, std::string("'") + key + "' must be a boolean, got " + type_name(v));
  return v.get<bool>();
}

std::string get_string(const ordered_json& v, const char* key) {
  if (!v.is_string()) bad(key, std::string("'") + key + "' must be a string, got " + type_name(v));
  return v.get<std::string>();
}

std::vector<int32_t> get_token_ids(const ordered_json& v, const char* key, int64_t vocab_size) {
  if (!v.is_array()) bad(key, std::string("'") + key + "' must be a list of token ids, got " + type_name(v));
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (const ordered_json& e : v) {
    const int64_t id = get_integer(e, key, 0, std::numeric_limits<int32_t>::max());
    if (vocab_size > 0 && id >= vocab_size)
      bad(key, "Token id " + std::to_string(id) + " is out of vocabulary (size " + std::to_string(vocab_size) + ")");
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

ordered_json parse_object(const std::string& body) {
  check_json_depth(body);
  ordered_json j;
  try {
    j = ordered_json::parse(body);
  } catch (const ordered_json::exception& e) {  // parse_error, or out_of_range for 1e999
    bad("", std::string("Invalid JSON in the request body: ") + e.what());
  }
  if (!j.is_object()) bad("", std::string("The request body must be a JSON object, got ") + type_name(j));
  return j;
}

// The fields both endpoints share. max_tokens is read by the caller (the endpoints differ).
void parse_common(const ordered_json& j, GenerationRequest& r, const ProtocolLimits& limits) {
  SamplingParams& p = r.params;
  if (auto* v = field(j, "model")) r.model = get_string(*v, "model");
  if (auto* v = field(j, "n")) p.n = static_cast<int>(get_integer(*v, "n", 1, 1024));
  if (auto* v = field(j, "temperature")) p.temperature = static_cast<float>(get_number(*v, "temperature"));
  if (auto* v = field(j, "top_p")) p.top_p = static_cast<float>(get_number(*v, "top_p"));
  if (auto* v = field(j, "top_k")) p.top_k = static_cast<int>(get_integer(*v, "top_k"));
  if (auto* v = field(j, "min_p")) p.min_p = static_cast<float>(get_number(*v, "min_p"));
  if (auto* v = field(j, "presence_penalty")) p.presence_penalty = static_cast<float>(get_number(*v, "presence_penalty"));
  if (auto* v = field(j, "frequency_penalty"))
    p.frequency_penalty = static_cast<float>(get_number(*v, "frequency_penalty"));
  if (auto* v = field(j, "repetition_penalty"))
    p.repetition_penalty = static_cast<float>(get_number(*v, "repetition_penalty"));
  if (auto* v = field(j, "seed"))
    p.seed = static_cast<uint64_t>(get_integer(*v, "seed", std::numeric_limits<int64_t>::min(),
                                               std::numeric_limits<int64_t>::max()));
  if (auto* v = field(j, "stop")) {
    p.stop.clear();
    if (v->is_string()) {
      p.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      for (const ordered_json& s : *v) p.stop.push_back(get_string(s, "stop"));
    } else {
      bad("stop", std::string("'stop' must be a string or a list of strings, got ") + type_name(*v));
    }
  }
  if (auto* v = field(j, "stop_token_ids")) p.stop_token_ids = get_token_ids(*v, "stop_token_ids", limits.vocab_size);
  if (auto* v = field(j, "min_tokens")) p.min_tokens = static_cast<int>(get_integer(*v, "min_tokens"));
  if (auto* v = field(j, "ignore_eos")) p.ignore_eos = get_bool(*v, "ignore_eos");
  if (auto* v = field(j, "include_stop_str_in_output"))
    p.include_stop_str_in_output = get_bool(*v, "include_stop_str_in_output");
  if (auto* v = field(j, "skip_special_tokens")) p.skip_special_tokens = get_bool(*v, "skip_special_tokens");
  if (auto* v = field(j, "spaces_between_special_tokens"))
    p.spaces_between_special_tokens = get_bool(*v, "spaces_between_special_tokens");
  if (auto* v = field(j, "allowed_token_ids"))
    p.allowed_token_ids = get_token_ids(*v, "allowed_token_ids", limits.vocab_size);
  if (auto* v = field(j, "prompt_logprobs")) p.prompt_logprobs = static_cast<int>(get_integer(*v, "prompt_logprobs"));
  if (auto* v = field(j, "logit_bias")) {
    if (!v->is_object()) bad("logit_bias", std::string("'logit_bias' must be an object, got ") + type_name(*v));
    for (const auto& [key, value] : v->items()) {
      size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != key.size() || key.empty()) bad("logit_bias", "'logit_bias' key '" + key + "' is not a token id");
      if (id < 0 || (limits.vocab_size > 0 && id >= limits.vocab_size) || id > std::numeric_limits<int32_t>::max())
        bad("logit_bias", "token_id(s) [" + key + "] in logit_bias contain out-of-vocab token ids. Vocabulary size: " +
                              std::to_string(limits.vocab_size));
      // OpenAI clamps biases to [-100, 100].
      const double b = std::clamp(get_number(value, "logit_bias"), -100.0, 100.0);
      p.logit_bias[static_cast<int32_t>(id)] = static_cast<float>(b);
    }
  }
  if (auto* v = field(j, "stream")) r.stream = get_bool(*v, "stream");
  if (auto* v = field(j, "stream_options")) {
    if (!r.stream) bad("stream_options", "Stream options can only be defined when `stream=True`.");
    if (!v->is_object()) bad("stream_options", std::string("'stream_options' must be an object, got ") + type_name(*v));
    if (auto* u = field(*v, "include_usage")) r.include_usage = get_bool(*u, "include_usage");
    if (auto* u = field(*v, "continuous_usage_stats"))
      r.continuous_usage_stats = get_bool(*u, "continuous_usage_stats");
  }
  if (auto* v = field(j, "echo")) r.echo = get_bool(*v, "echo");
  if (auto* v = field(j, "add_special_tokens")) r.add_special_tokens = get_bool(*v, "add_special_tokens");
  if (auto* v = field(j, "truncate_prompt_tokens"))
    r.truncate_prompt_tokens = static_cast<int>(get_integer(*v, "truncate_prompt_tokens", -1));
  if (auto* v = field(j, "priority")) r.priority = static_cast<int>(get_integer(*v, "priority"));
  if (auto* v = field(j, "request_id")) r.request_id = get_string(*v, "request_id");
  if (auto* v = field(j, "user")) r.user = get_string(*v, "user");
}

void validate(GenerationRequest& r, const ProtocolLimits& limits) {
  try {
    r.params.validate(limits.vocab_size, limits.max_logprobs);
  } catch (const Error& e) {
    bad("", e.what());
  }
  if (r.params.top_k == -1) r.params.top_k = 0;
}

}  // namespace

void check_json_depth(const std::string& text, const std::string& param) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        bad(param, "The JSON " + std::string(param.empty() ? "request body" : "'" + param + "'") +
                       " is nested too deeply (more than " + std::to_string(kMaxJsonDepth) + " levels)");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

ApiError::ApiError(int status, std::string message, std::string param)
    : status_(status), message_(std::move(message)), param_(std::move(param)) {}

std::string ApiError::type() const {
  switch (status_) {
    case 400: return "BadRequestError";
    case 401: return "AuthenticationError";
    case 403: return "PermissionDeniedError";
    case 404: return "NotFoundError";
    case 408: return "RequestTimeoutError";
    case 413: return "RequestEntityTooLargeError";
    case 422: return "UnprocessableEntityError";
    case 429: return "RateLimitError";
    case 501: return "NotImplementedError";
    case 503: return "ServiceUnavailableError";
    default: return status_ >= 500 ? "InternalServerError" : "BadRequestError";
  }
}

nlohmann::json ApiError::body() const {
  nlohmann::json e;
  e["message"] = message_;
  e["type"] = type();
  e["param"] = param_.empty() ? nlohmann::json(nullptr) : nlohmann::json(param_);
  e["code"] = status_;
  return nlohmann::json{{"error", std::move(e)}};
}

CompletionRequest parse_completion_request(const std::string& body, const SamplingParams& defaults,
                                           const ProtocolLimits& limits) {
  const ordered_json j = parse_object(body);
  CompletionRequest r;
  r.params = defaults;
  r.params.max_tokens = 16;  // the OpenAI completions default
  parse_common(j, r, limits);
  if (auto* v = field(j, "max_tokens")) r.params.max_tokens = static_cast<int>(get_integer(*v, "max_tokens"));
  if (auto* v = field(j, "logprobs")) r.params.logprobs = static_cast<int>(get_integer(*v, "logprobs"));

  const ordered_json* prompt = field(j, "prompt");
  if (!prompt) bad("prompt", "'prompt' is required");
  auto bad_prompt = [&] {
    bad("prompt", std::string("'prompt' must be a string, a list of strings, a list of token ids or a list of token-id "
                              "lists, got ") +
                      type_name(*prompt));
  };
  if (prompt->is_string()) {
    r.prompts.push_back({prompt->get<std::string>(), {}});
  } else if (prompt->is_array()) {
    if (prompt->empty()) bad("prompt", "'prompt' must not be an empty list");
    const ordered_json& first = prompt->front();
    if (first.is_number()) {
      r.prompts.push_back({std::nullopt, get_token_ids(*prompt, "prompt", limits.vocab_size)});
    } else {
      for (const ordered_json& e : *prompt) {
        if (e.is_string()) {
          r.prompts.push_back({e.get<std::string>(), {}});
        } else if (e.is_array()) {
          r.prompts.push_back({std::nullopt, get_token_ids(e, "prompt", limits.vocab_size)});
        } else {
          bad_prompt();
        }
      }
    }
  } else {
    bad_prompt();
  }
  for (const PromptInput& p : r.prompts)
    if (!p.text && p.token_ids.empty()) bad("prompt", "a prompt of token ids must not be empty");
  validate(r, limits);
  return r;
}

// What the chat template sees, as vLLM hands it over: content is always a string (missing or
// null becomes "", a list of parts becomes its text parts joined by newlines), and an assistant
// message's tool-call arguments are JSON objects rather than the JSON text OpenAI clients send
// (templates write them with tojson; missing or empty arguments become {}).
static ordered_json normalize_messages(const ordered_json& messages) {
  ordered_json out = ordered_json::array();
  for (const ordered_json& m : messages) {
    ordered_json n = m;
    const ordered_json* c = field(m, "content");
    if (!c) {
      n["content"] = "";
    } else if (c->is_array()) {
      std::string text;
      bool first = true;
      for (const ordered_json& part : *c) {
        const ordered_json* type = part.is_object() ? field(part, "type") : nullptr;
        if (!first) text += '\n';
        if (part.is_string()) {
          text += part.get_ref<const std::string&>();
        } else if (type && type->is_string() && *type == "text") {
          const ordered_json* t = field(part, "text");
          if (!t || !t->is_string()) bad("messages", "a text content part needs a string 'text'");
          text += t->get_ref<const std::string&>();
        } else {
          std::string what = "only text content parts are supported, got a part of type ";
          what += type && type->is_string() ? type->get_ref<const std::string&>() : std::string("(none)");
          bad("messages", what);
        }
        first = false;
      }
      n["content"] = text;
    }
    if (const ordered_json* calls = field(m, "tool_calls"); calls && m["role"] == "assistant") {
      if (!calls->is_array()) bad("messages", "an assistant message's 'tool_calls' must be a list");
      ordered_json fixed = ordered_json::array();
      for (ordered_json call : *calls) {
        if (!call.is_object() || !field(call, "function") || !call["function"].is_object())
          bad("messages", "each tool call needs a 'function' object");
        ordered_json& fn = call["function"];
        const ordered_json* args = field(fn, "arguments");
        if (!args || (args->is_string() && args->get<std::string>().empty())) {
          fn["arguments"] = ordered_json::object();
        } else if (args->is_string()) {
          check_json_depth(args->get_ref<const std::string&>(), "messages");
          ordered_json parsed = ordered_json::parse(args->get<std::string>(), nullptr, false);
          if (parsed.is_discarded()) bad("messages", "a tool call's 'arguments' is not valid JSON");
          fn["arguments"] = std::move(parsed);
        }
        fixed.push_back(std::move(call));
      }
      n["tool_calls"] = std::move(fixed);
    }
    out.push_back(std::move(n));
  }
  return out;
}

ChatRequest parse_chat_request(const std::string& body, const SamplingParams& defaults, const ProtocolLimits& limits) {
  const ordered_json j = parse_object(body);
  ChatRequest r;
  r.params = defaults;
  r.add_special_tokens = false;  // the chat template adds what the model needs
  parse_common(j, r, limits);
  // max_completion_tokens (the newer OpenAI name) wins over max_tokens.
  if (auto* v = field(j, "max_tokens")) r.params.max_tokens = static_cast<int>(get_integer(*v, "max_tokens"));
  if (auto* v = field(j, "max_completion_tokens"))
    r.params.max_tokens = static_cast<int>(get_integer(*v, "max_completion_tokens"));
  if (auto* v = field(j, "logprobs")) r.logprobs = get_bool(*v, "logprobs");
  if (auto* v = field(j, "top_logprobs")) {
    r.top_logprobs = static_cast<int>(get_integer(*v, "top_logprobs"));
    if (!r.logprobs) bad("top_logprobs", "when using `top_logprobs`, `logprobs` must be set to true.");
    if (r.top_logprobs < 0) bad("top_logprobs", "`top_logprobs` must be a positive value.");
  }
  if (r.logprobs) r.params.logprobs = r.top_logprobs;

  const ordered_json* messages = field(j, "messages");
  if (!messages) bad("messages", "'messages' is required");
  if (!messages->is_array()) bad("messages", std::string("'messages' must be a list, got ") + type_name(*messages));
  if (messages->empty()) bad("messages", "'messages' must not be empty");
  for (const ordered_json& m : *messages) {
    if (!m.is_object()) bad("messages", std::string("each message must be an object, got ") + type_name(m));
    const ordered_json* role = field(m, "role");
    if (!role || !role->is_string()) bad("messages", "each message needs a string 'role'");
    if (auto* c = field(m, "content"); c && !c->is_string() && !c->is_array())
      bad("messages", std::string("a message's 'content' must be a string or a list of parts, got ") + type_name(*c));
  }
  r.messages = normalize_messages(*messages);

  if (auto* v = field(j, "tools")) {
    if (!v->is_array()) bad("tools", std::string("'tools' must be a list, got ") + type_name(*v));
    for (const ordered_json& t : *v) {
      const ordered_json* fn = t.is_object() ? field(t, "function") : nullptr;
      if (!fn || !fn->is_object() || !field(*fn, "name") || !(*fn)["name"].is_string())
        bad("tools", "each tool must be {\"type\": \"function\", \"function\": {\"name\": ..., ...}}");
    }
    if (!v->empty()) {
      r.tools = *v;
      r.tool_choice = ToolChoiceMode::kAuto;
    }
  }
  if (auto* v = field(j, "tool_choice")) {
    if (v->is_string()) {
      const std::string s = v->get<std::string>();
      if (s == "none") {
        r.tool_choice = ToolChoiceMode::kNone;
      } else if (s == "auto") {
        r.tool_choice = ToolChoiceMode::kAuto;
      } else if (s == "required") {
        r.tool_choice = ToolChoiceMode::kRequired;
      } else {
        bad("tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or a named function, got \"" + s +
                               "\"");
      }
    } else if (v->is_object()) {
      const ordered_json* fn = field(*v, "function");
      const ordered_json* name = fn && fn->is_object() ? field(*fn, "name") : nullptr;
      if (!name || !name->is_string())
        bad("tool_choice", "a named tool_choice must be {\"type\": \"function\", \"function\": {\"name\": ...}}");
      r.tool_choice = ToolChoiceMode::kNamed;
      r.tool_choice_name = name->get<std::string>();
    } else {
      bad("tool_choice", std::string("'tool_choice' must be a string or an object, got ") + type_name(*v));
    }
    if ((r.tool_choice == ToolChoiceMode::kRequired || r.tool_choice == ToolChoiceMode::kNamed) && !r.tools)
      bad("tool_choice", "When using `tool_choice`, `tools` must be set.");
    if (r.tool_choice == ToolChoiceMode::kNamed) {
      bool found = false;
      for (const ordered_json& t : *r.tools) found = found || t["function"]["name"] == r.tool_choice_name;
      if (!found) bad("tool_choice", "Tool '" + r.tool_choice_name + "' has not been passed in `tools`.");
    }
  }
  if (auto* v = field(j, "parallel_tool_calls")) r.parallel_tool_calls = get_bool(*v, "parallel_tool_calls");
  if (auto* v = field(j, "add_generation_prompt")) r.add_generation_prompt = get_bool(*v, "add_generation_prompt");
  if (auto* v = field(j, "continue_final_message"))
    r.continue_final_message = get_bool(*v, "continue_final_message");
  if (r.continue_final_message && r.add_generation_prompt)
    bad("continue_final_message", "Cannot set both `continue_final_message` and `add_generation_prompt` to True.");
  if (auto* v = field(j, "chat_template")) r.chat_template = get_string(*v, "chat_template");
  if (auto* v = field(j, "chat_template_kwargs")) {
    if (!v->is_object())
      bad("chat_template_kwargs", std::string("'chat_template_kwargs' must be an object, got ") + type_name(*v));
    r.chat_template_kwargs = *v;
  }
  if (auto* v = field(j, "response_format")) {
    const ordered_json* type = v->is_object() ? field(*v, "type") : nullptr;
    if (!type || !type->is_string()) bad("response_format", "'response_format' must be an object with a string 'type'");
    r.response_format = type->get<std::string>();
    if (r.response_format != "text" && r.response_format != "json_object" && r.response_format != "json_schema")
      bad("response_format", "'response_format.type' must be text, json_object or json_schema, got '" +
                                 r.response_format + "'");
    if (r.response_format == "json_schema") {
      const ordered_json* js = field(*v, "json_schema");
      if (!js || !js->is_object())
        bad("response_format", "response_format of type json_schema needs a 'json_schema' object");
      const ordered_json* schema = field(*js, "schema");
      if (!schema) schema = field(*js, "json_schema");
      if (schema) {
        if (!schema->is_object() && !schema->is_boolean())
          bad("response_format", "'response_format.json_schema.schema' must be an object");
        r.response_schema.emplace(*schema);
      }
    }
  }
  // vLLM extras: structured_outputs {"json": schema} and the older guided_json.
  for (const char* key : {"structured_outputs", "guided_json"}) {
    const ordered_json* v = field(j, key);
    if (!v) continue;
    const ordered_json* schema = v;
    if (std::string(key) == "structured_outputs") {
      if (!v->is_object()) bad(key, "'structured_outputs' must be an object");
      schema = field(*v, "json");
      if (!schema) {
        for (auto it = v->begin(); it != v->end(); ++it)
          if (!it->is_null() && it.key() != "json" && it.key() != "disable_any_whitespace" &&
              it.key() != "disable_additional_properties" && it.key() != "whitespace_pattern")
            bad(key, "only structured_outputs.json is supported, got '" + it.key() + "'");
        continue;
      }
    }
    ordered_json parsed = *schema;
    if (parsed.is_string()) {
      check_json_depth(schema->get_ref<const std::string&>(), key);
      try {
        parsed = ordered_json::parse(schema->get<std::string>());
      } catch (const ordered_json::exception& e) {  // parse_error, or out_of_range for 1e999
        bad(key, std::string("the JSON schema is not valid JSON: ") + e.what());
      }
    }
    if (!parsed.is_object() && !parsed.is_boolean()) bad(key, "the JSON schema must be an object");
    r.guided_json.emplace(std::move(parsed));
  }
  validate(r, limits);
  return r;
}

}  // namespace pagoda::api
