// The Qwen3 reasoning parser and the Hermes tool-call parser (API.md "Qwen parsers"):
// non-streaming splits as vLLM's parsers make them, and streaming (fed in pieces of every size)
// that adds up to the same result without ever emitting part of a tag.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chat/reasoning_parser.h"
#include "chat/tool_parser.h"

namespace pagoda {
namespace {

using Split = std::pair<std::optional<std::string>, std::optional<std::string>>;

Split stream_reasoning(const std::string& prompt, const std::string& output, size_t piece) {
  Qwen3ReasoningParser p(prompt);
  std::string r, c;
  auto take = [&](const ReasoningDelta& d) {
    r += d.reasoning;
    c += d.content;
    for (const std::string* s : {&d.reasoning, &d.content})
      EXPECT_TRUE(s->find("<think>") == std::string::npos && s->find("</think>") == std::string::npos) << *s;
  };
  for (size_t i = 0; i < output.size(); i += piece) take(p.push(output.substr(i, piece)));
  take(p.finish());
  Split s;
  if (!r.empty()) s.first = r;
  if (!c.empty()) s.second = c;
  return s;
}

TEST(Qwen3ReasoningParser, SplitsThinkBlockFromContent) {
  struct Case {
    std::string prompt, output;
    std::optional<std::string> reasoning, content;
  };
  const std::vector<Case> cases = {
      {"<|im_start|>assistant\n", "<think>\nLet me think.\n</think>\n\nHello!", "\nLet me think.\n", "\n\nHello!"},
      {"<|im_start|>assistant\n", "Hello!", std::nullopt, "Hello!"},
      {"<|im_start|>assistant\n", "\n<think>x</think>y", "x", "y"},
      // The template opened the block (thinking-2507 checkpoints): the output only closes it.
      {"<|im_start|>assistant\n<think>\n", "step 1</think>\n\nAnswer", "step 1", "\n\nAnswer"},
      // enable_thinking=false: the template closed an empty block; everything is content.
      {"<|im_start|>assistant\n<think>\n\n</think>\n\n", "Answer", std::nullopt, "Answer"},
      // A thought cut off by max_tokens stays reasoning.
      {"", "<think>still thinking", "still thinking", std::nullopt},
      {"", "<think></think>", std::nullopt, std::nullopt},
      {"", "a < b <th", std::nullopt, "a < b <th"},
      {"", "<thin", std::nullopt, "<thin"},
  };
  for (const Case& c : cases) {
    const Split got = Qwen3ReasoningParser::extract(c.prompt, c.output);
    EXPECT_EQ(got.first, c.reasoning) << c.output;
    EXPECT_EQ(got.second, c.content) << c.output;
    for (size_t piece : {1, 2, 3, 5, 100}) EXPECT_EQ(stream_reasoning(c.prompt, c.output, piece), got) << c.output;
  }
}

struct Streamed {
  std::string content;
  std::vector<std::string> names, ids, arguments;
};

Streamed stream_tools(const std::string& output, std::mt19937& rng) {
  HermesToolParser p;
  Streamed s;
  auto take = [&](const ToolParserDelta& d) {
    s.content += d.content;
    for (const ToolCallDelta& t : d.tool_calls) {
      if (t.name) {
        EXPECT_EQ(t.index, static_cast<int>(s.names.size()));
        ASSERT_TRUE(t.id.has_value());
        s.names.push_back(*t.name);
        s.ids.push_back(*t.id);
        s.arguments.emplace_back();
      }
      ASSERT_EQ(t.index, static_cast<int>(s.names.size()) - 1) << "arguments for a call that was never named";
      s.arguments.back() += t.arguments;
      EXPECT_EQ(t.arguments.find("</tool"), std::string::npos);
    }
    EXPECT_EQ(d.content.find("<tool_call"), std::string::npos) << d.content;
  };
  for (size_t i = 0; i < output.size();) {
    const size_t n = 1 + rng() % 7;
    take(p.push(output.substr(i, n)));
    i += n;
  }
  take(p.finish());
  return s;
}

TEST(HermesToolParser, ExtractsCallsLikeVllm) {
  const std::string out =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}\n"
      "</tool_call>\n<tool_call>\n{\"name\":\"echo\",\"arguments\":{\"s\":\"\xC3\xA9\\n\\\"q\\\"\",\"l\":[1,2.5,true,null]}}\n"
      "</tool_call>";
  const ExtractedToolCalls x = HermesToolParser::extract(out);
  ASSERT_TRUE(x.tools_called);
  ASSERT_EQ(x.tool_calls.size(), 2u);
  EXPECT_EQ(x.content, "Let me check.\n");
  EXPECT_EQ(x.tool_calls[0].name, "get_weather");
  EXPECT_EQ(x.tool_calls[0].arguments, "{\"city\": \"Paris\", \"days\": 3}");
  // json.dumps(..., ensure_ascii=False): ", " and ": " separators, non-ASCII kept, escapes as Python.
  EXPECT_EQ(x.tool_calls[1].arguments, "{\"s\": \"\xC3\xA9\\n\\\"q\\\"\", \"l\": [1, 2.5, true, null]}");
  EXPECT_EQ(x.tool_calls[0].id.rfind("chatcmpl-tool-", 0), 0u);
  EXPECT_EQ(x.tool_calls[0].id.size(), std::string("chatcmpl-tool-").size() + 32);
  EXPECT_NE(x.tool_calls[0].id, x.tool_calls[1].id);

  // No content before the call: None.
  EXPECT_FALSE(HermesToolParser::extract("<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>").content);
  // An unclosed last call still parses (vLLM's regex allows it).
  EXPECT_TRUE(HermesToolParser::extract("<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}").tools_called);
  // No tag, invalid JSON, or a call without arguments: everything is content.
  for (const std::string bad : {"plain text", "<tool_call>{\"name\": \"f\", \"arguments\": {</tool_call>",
                                "<tool_call>{\"name\": \"f\"}</tool_call>", "ok <tool_call>[1]</tool_call>"}) {
    const ExtractedToolCalls b = HermesToolParser::extract(bad);
    EXPECT_FALSE(b.tools_called) << bad;
    EXPECT_TRUE(b.tool_calls.empty()) << bad;
    EXPECT_EQ(b.content, bad);
  }
}

TEST(HermesToolParser, StreamingSendsNameOnceThenArgumentTextThatAddsUpToTheCall) {
  const std::vector<std::string> outputs = {
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"nested\": {\"a\": {}}}}\n"
      "</tool_call>",
      "Checking both.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": \"}\"}}\n</tool_call>\n<tool_call>\n"
      "{\"name\": \"b\", \"arguments\": {}}\n</tool_call>\n",
      "<tool_call>{\"arguments\": {\"k\": [1, 2]}, \"name\": \"late_name\"}</tool_call>",
      "no tools here, just < and <tool text",
      "<tool_call>\n{\"name\": \"cut\", \"arguments\": {\"q\": \"abc\"}}",
  };
  std::mt19937 rng(11);
  for (const std::string& out : outputs) {
    for (int rep = 0; rep < 20; ++rep) {
      const Streamed s = stream_tools(out, rng);
      const ExtractedToolCalls x = HermesToolParser::extract(out);
      EXPECT_EQ(s.content, x.content.value_or("")) << out;
      ASSERT_EQ(s.names.size(), x.tool_calls.size()) << out;
      for (size_t i = 0; i < s.names.size(); ++i) {
        EXPECT_EQ(s.names[i], x.tool_calls[i].name);
        // The streamed text is the model's own JSON; it must mean the same arguments.
        EXPECT_EQ(nlohmann::json::parse(s.arguments[i]), nlohmann::json::parse(x.tool_calls[i].arguments))
            << out << "\nstreamed: " << s.arguments[i];
      }
    }
  }
}

TEST(Parsers, ToolCallsAreParsedAfterReasoningEnds) {
  const std::string out =
      "<think>I need the weather: <tool_call> is how I call it.</think>\n\n<tool_call>\n"
      "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
  const Split r = Qwen3ReasoningParser::extract("", out);
  ASSERT_TRUE(r.first && r.second);
  EXPECT_NE(r.first->find("<tool_call>"), std::string::npos);  // inside reasoning it is just text
  const ExtractedToolCalls x = HermesToolParser::extract(*r.second);
  ASSERT_EQ(x.tool_calls.size(), 1u);
  EXPECT_EQ(x.tool_calls[0].arguments, "{\"city\": \"Oslo\"}");
  EXPECT_EQ(x.content, "\n\n");
}

}  // namespace
}  // namespace pagoda
