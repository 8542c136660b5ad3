// The OpenAI-compatible request side of the server (vLLM's protocol.py): JSON bodies of
// /v1/completions and /v1/chat/completions parsed into typed requests, with every field of
// ../shared/docs/API.md, and every error an ApiError that the route turns into the OpenAI error
// body {"error": {"message", "type", "param", "code"}} with the right HTTP status.
//
// Parsing is strict like vLLM's pydantic models: a field of the wrong JSON type is a 400 naming
// the field; unknown fields are ignored (OpenAI clients send extras). Sampling fields land in a
// SamplingParams that starts from the server's defaults (generation_config.json, as vLLM) and is
// validated with the engine's own checks (vLLM's messages).
#pragma once

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/sampling_params.h"

namespace pagoda::api {

using ordered_json = nlohmann::ordered_json;

class ApiError : public std::exception {
 public:
  ApiError(int status, std::string message, std::string param = {});
  const char* what() const noexcept override { return message_.c_str(); }
  int status() const { return status_; }
  const std::string& message() const { return message_; }
  const std::string& param() const { return param_; }
  // "BadRequestError", "NotFoundError", ... as vLLM names them by status.
  std::string type() const;
  // {"error": {"message", "type", "param", "code"}}
  nlohmann::json body() const;

 private:
  int status_;
  std::string message_;
  std::string param_;  // empty: null
};

// What every generation request shares.
struct GenerationRequest {
  std::string model;  // empty: not given
  SamplingParams params;
  bool stream = false;
  bool include_usage = false;           // stream_options.include_usage
  bool continuous_usage_stats = false;  // stream_options.continuous_usage_stats
  bool echo = false;
  bool add_special_tokens = true;
  std::optional<int> truncate_prompt_tokens;
  int priority = 0;
  std::string request_id;  // empty: the server makes one
  std::string user;
};

// A prompt: text, or token ids.
struct PromptInput {
  std::optional<std::string> text;
  std::vector<int32_t> token_ids;  // when text is unset
};

struct CompletionRequest : GenerationRequest {
  std::vector<PromptInput> prompts;  // one choice set (n choices) per prompt
};

enum class ToolChoiceMode { kNone, kAuto, kRequired, kNamed };

struct ChatRequest : GenerationRequest {
  ordered_json messages;  // validated: a non-empty list of {"role": str, ...}
  std::optional<ordered_json> tools;
  ToolChoiceMode tool_choice = ToolChoiceMode::kNone;  // default: auto when tools are given
  std::string tool_choice_name;                        // kNamed
  bool parallel_tool_calls = true;
  bool logprobs = false;
  int top_logprobs = 0;
  bool add_generation_prompt = true;
  bool continue_final_message = false;
  std::optional<std::string> chat_template;
  ordered_json chat_template_kwargs = ordered_json::object();
  std::string response_format = "text";  // text | json_object | json_schema
  std::optional<ordered_json> response_schema;  // response_format.json_schema.schema (json_schema)
  std::optional<ordered_json> guided_json;      // vLLM's structured_outputs.json / guided_json extra
};

struct ProtocolLimits {
  int64_t vocab_size = -1;  // > 0: token ids are checked against it
  int max_logprobs = 20;    // --max-logprobs
};

// JSON nested deeper than this is refused (400) before it is parsed: nlohmann::json copies,
// compares and prints values recursively, so a deeply nested body (the server takes 32 MiB)
// would overflow the stack and kill the server.
inline constexpr int kMaxJsonDepth = 512;
// Throws ApiError(400, ..., param) if `text` nests arrays / objects deeper than kMaxJsonDepth
// (brackets inside JSON strings do not count).
void check_json_depth(const std::string& text, const std::string& param = {});

// Throw ApiError(400) naming the field on a bad body (not JSON, not an object, wrong type, out of
// range). `defaults` holds the server's sampling defaults (generation_config.json).
CompletionRequest parse_completion_request(const std::string& body, const SamplingParams& defaults,
                                           const ProtocolLimits& limits);
ChatRequest parse_chat_request(const std::string& body, const SamplingParams& defaults, const ProtocolLimits& limits);

}  // namespace pagoda::api
