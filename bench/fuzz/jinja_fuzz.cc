// libFuzzer target for the Jinja chat-template interpreter: any byte string is parsed as a
// template and, if it parses, rendered against a small chat context (messages with tool calls and
// reasoning, tools, special tokens). Passing means no ASan/UBSan report, no hang, no runaway
// memory, and nothing but pagoda::Error escaping (anything else aborts the run as a bug).
// Tighter render limits than the server's keep each execution fast.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string_view>

#include "base/error.h"
#include "chat/jinja.h"

namespace {

const nlohmann::ordered_json& context() {
  static const nlohmann::ordered_json ctx = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "Hi \u00e9\u4e2d\ud83d\ude00 \"q\" \\ \n"},
      {"role": "assistant", "content": "", "reasoning_content": "think",
       "tool_calls": [{"type": "function", "id": "c1",
                       "function": {"name": "get_weather", "arguments": {"city": "Paris", "n": [1, 2.5, null, true]}}}]},
      {"role": "tool", "content": "{\"temp\": 20}"},
      {"role": "user", "content": ["a", {"type": "text", "text": "part"}]}
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "add_generation_prompt": true,
    "bos_token": "<s>", "eos_token": "</s>", "enable_thinking": false, "documents": null, "n": 3, "f": 1.5
  })");
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  pagoda::jinja::RenderLimits limits;
  limits.max_output_bytes = 1 << 20;
  limits.max_string_bytes = 1 << 20;
  limits.max_list_items = 1 << 16;
  limits.max_work = 50'000;
  try {
    const pagoda::jinja::Template t = pagoda::jinja::Template::parse(source);
    volatile size_t n = t.render(context(), limits).size();
    (void)n;
  } catch (const pagoda::Error&) {
    // a syntax or runtime error: the expected outcome for most inputs
  } catch (const std::exception&) {
    std::abort();
  }
  return 0;
}
