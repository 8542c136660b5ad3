// libFuzzer target for the OpenAI request side of the server: any byte string is taken as the HTTP
// body of /v1/completions and of /v1/chat/completions and parsed by api::parse_completion_request /
// api::parse_chat_request (server/openai_protocol.h) with Qwen3-like sampling defaults and limits.
// When a chat body parses, the route's next steps run too, as handle_chat does them: its JSON
// schemas (guided_json / structured_outputs, response_format json_schema, a named tool's
// parameters) are compiled with JsonGrammar::from_schema, and its messages, tools and
// chat_template_kwargs are rendered with the real Qwen3 chat template.
//
// Passing means no ASan/UBSan report, no hang, no runaway memory, only ApiError escaping the
// parsers and only pagoda::Error escaping the schema compiler and the template (anything else
// aborts the run as a bug), and a parsed request that satisfies what the server relies on.
// (The /tokenize and /detokenize bodies are parsed inside openai_server.cc, not reachable here.)
//
// The template comes from $PAGODA_QWEN3_DIR, else PAGODA_SHARED_DIR/tokenizers/qwen3.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <typeinfo>

#include "base/error.h"
#include "chat/chat_template.h"
#include "engine/sampling_params.h"
#include "engine/structured_output.h"
#include "server/openai_protocol.h"

#ifndef PAGODA_SHARED_DIR
#define PAGODA_SHARED_DIR "../shared"
#endif

namespace {

using pagoda::api::ApiError;
using pagoda::api::ordered_json;

const pagoda::SamplingParams& defaults() {
  static const pagoda::SamplingParams p = [] {
    pagoda::SamplingParams d;  // Qwen3's generation_config.json
    d.temperature = 0.6f;
    d.top_p = 0.95f;
    d.top_k = 20;
    return d;
  }();
  return p;
}

const pagoda::api::ProtocolLimits& limits() {
  static const pagoda::api::ProtocolLimits l{/*vocab_size=*/151936, /*max_logprobs=*/20};
  return l;
}

const pagoda::ChatTemplate& chat_template() {
  static const pagoda::ChatTemplate t = [] {
    const char* dir = std::getenv("PAGODA_QWEN3_DIR");
    return pagoda::ChatTemplate::from_model_dir(dir ? dir : PAGODA_SHARED_DIR "/tokenizers/qwen3");
  }();
  return t;
}

[[noreturn]] void bug() { std::abort(); }

void check_common(const pagoda::api::GenerationRequest& r) {
  // parse_* promise validated params; the engine re-validates them on add_request.
  try {
    r.params.validate(limits().vocab_size, limits().max_logprobs);
  } catch (const pagoda::Error&) {
    bug();
  }
  if (r.params.n < 1) bug();
  if (r.include_usage && !r.stream) bug();
}

void compile_schema(const ordered_json& schema) {
  try {
    volatile bool ok = pagoda::JsonGrammar::from_schema(schema) != nullptr;
    (void)ok;
  } catch (const pagoda::Error&) {
    // an unsupported or invalid schema: the server answers 400
  }
}

void completion(const std::string& body) {
  pagoda::api::CompletionRequest r;
  try {
    r = pagoda::api::parse_completion_request(body, defaults(), limits());
  } catch (const ApiError& e) {
    if (e.status() < 400 || e.status() > 599) bug();
    return;
  }
  check_common(r);
  if (r.prompts.empty()) bug();
  for (const pagoda::api::PromptInput& p : r.prompts)
    for (int32_t id : p.token_ids)
      if (id < 0 || id >= limits().vocab_size) bug();
}

void chat(const std::string& body) {
  pagoda::api::ChatRequest r;
  try {
    r = pagoda::api::parse_chat_request(body, defaults(), limits());
  } catch (const ApiError& e) {
    if (e.status() < 400 || e.status() > 599) bug();
    return;
  }
  check_common(r);
  // What handle_chat and the template rely on.
  if (!r.messages.is_array() || r.messages.empty()) bug();
  for (const ordered_json& m : r.messages)
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) bug();
  if (r.tools && !r.tools->is_array()) bug();
  if (!r.chat_template_kwargs.is_object()) bug();
  if ((r.tool_choice == pagoda::api::ToolChoiceMode::kNamed || r.tool_choice == pagoda::api::ToolChoiceMode::kRequired) &&
      !r.tools)
    bug();

  // structured_output_grammar's inputs.
  if (r.tool_choice == pagoda::api::ToolChoiceMode::kNamed) {
    bool found = false;
    for (const ordered_json& t : *r.tools) {
      const ordered_json& fn = t.at("function");
      if (fn.at("name") != r.tool_choice_name) continue;
      found = true;
      if (const auto p = fn.find("parameters"); p != fn.end() && !p->is_null()) compile_schema(*p);
      break;
    }
    if (!found) bug();
  } else if (r.guided_json) {
    compile_schema(*r.guided_json);
  } else if (r.response_schema) {
    compile_schema(*r.response_schema);
  }

  try {
    const ordered_json* tools = r.tools ? &*r.tools : nullptr;
    volatile size_t n = chat_template()
                            .apply(r.messages, tools, r.add_generation_prompt && !r.continue_final_message,
                                   r.chat_template_kwargs)
                            .size();
    (void)n;
  } catch (const pagoda::Error&) {
    // the template raised (e.g. a message it rejects): the server answers 400
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)chat_template();  // load once, outside the timed executions; fails loudly if missing
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  try {
    completion(body);
    chat(body);
  } catch (const std::exception& e) {
    // nlohmann::json, std::out_of_range, a stray pagoda::Error, ...: not an ApiError
    std::fprintf(stderr, "openai_request_fuzz: escaped %s: %s\n", typeid(e).name(), e.what());
    bug();
  }
  return 0;
}
