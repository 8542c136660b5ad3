// Hermes tool-call parser (vLLM's --tool-call-parser hermes, what Qwen2.5 / Qwen3 emit):
//   <tool_call>
//   {"name": "get_weather", "arguments": {"city": "Paris"}}
//   </tool_call>
// one or more times, after optional plain text.
//
// Non-streaming (as vLLM): no "<tool_call>" → all content. Otherwise every
// <tool_call>...</tool_call> (the last one may be unclosed) must hold a JSON object with "name"
// and "arguments"; content is the text before the first tag (none if empty) and each call's
// arguments are re-serialised like Python's json.dumps(arguments, ensure_ascii=False). Any call
// that does not parse makes the whole output plain content.
//
// Streaming: text before a tool call streams as content, holding back a possible partial
// "<tool_call>"; inside a call the name is sent once it is complete (with the call's id and
// type), then the arguments' JSON text as it arrives, never including the object's closing brace
// or a partial "</tool_call>". The concatenated argument fragments are the arguments exactly as
// the model wrote them (valid JSON once the call closed; spacing may differ from the
// non-streaming json.dumps form). Whitespace between and after calls is dropped.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace pagoda {

struct ToolCall {
  std::string id;         // "chatcmpl-tool-<32 hex>"
  std::string name;
  std::string arguments;  // JSON text
};

struct ExtractedToolCalls {
  bool tools_called = false;
  std::vector<ToolCall> tool_calls;
  std::optional<std::string> content;
};

// One streamed piece of a tool call (an OpenAI tool_calls delta entry).
struct ToolCallDelta {
  int index = 0;
  std::optional<std::string> id;    // with the name, on the call's first delta
  std::optional<std::string> name;  // first delta only
  std::string arguments;            // new argument text (may be empty)
};

struct ToolParserDelta {
  std::string content;
  std::vector<ToolCallDelta> tool_calls;
};

class HermesToolParser {
 public:
  static constexpr std::string_view kStart = "<tool_call>";
  static constexpr std::string_view kEnd = "</tool_call>";

  ToolParserDelta push(std::string_view text);
  // The end of the output: releases held-back content (not the inside of an unclosed call).
  ToolParserDelta finish();
  // Calls started so far (their name was sent).
  int num_tool_calls() const { return num_calls_; }

  static ExtractedToolCalls extract(std::string_view output);

 private:
  void scan_call(ToolParserDelta& d);
  // The call's text is pending_[0, end): sends what is left of it.
  void close_call(ToolParserDelta& d, size_t end);

  std::string pending_;     // outside a call: held-back text; inside: the call's text so far
  bool in_call_ = false;
  int num_calls_ = 0;       // calls whose name was sent
  bool name_sent_ = false;
  size_t name_end_ = 0;     // in pending_, after the name's closing quote (when name_sent_)
  size_t args_start_ = 0;   // in pending_, where the arguments value starts; npos: not yet
  size_t args_sent_ = 0;    // bytes of the arguments value sent
};

// A new tool call id: "chatcmpl-tool-" + 32 random hex digits (vLLM's format).
std::string make_tool_call_id();

// Python's json.dumps(value, ensure_ascii=False) with the default separators (", ", ": ").
std::string python_json_dumps(const nlohmann::ordered_json& value);

}  // namespace pagoda
