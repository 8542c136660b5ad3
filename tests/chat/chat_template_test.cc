// Byte-for-byte comparison with transformers' apply_chat_template on the real chat templates of
// shared/tokenizers/{qwen3,llama3,deepseek_v3}: the fixtures (tests/chat/data/<name>.jsonl) come
// from tools/make_chat_template_fixtures.py.
#include "chat/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"

namespace pagoda {
namespace {

using json = nlohmann::ordered_json;

std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  std::vector<json> out;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

std::string escaped(const std::string& s) {
  json j = s;
  return j.dump();
}

// Where two strings first differ, for readable failures on long prompts.
std::string first_difference(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  const size_t from = i > 40 ? i - 40 : 0;
  return "at byte " + std::to_string(i) + ": expected ..." + escaped(a.substr(from, 80)) + "... got ..." +
         escaped(b.substr(from, 80)) + "...";
}

class RealTemplate : public ::testing::TestWithParam<std::string> {};

TEST_P(RealTemplate, MatchesTransformersFixtures) {
  const std::string name = GetParam();
  const ChatTemplate ct = ChatTemplate::from_model_dir(std::string(PAGODA_SHARED_DIR) + "/tokenizers/" + name);
  const auto cases = read_jsonl(std::string(PAGODA_SOURCE_DIR) + "/tests/chat/data/" + name + ".jsonl");
  ASSERT_GE(cases.size(), 300u);
  int passed = 0, errors = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    const json* tools = c.contains("tools") ? &c["tools"] : nullptr;
    const bool cont = c.value("continue_final_message", false);
    SCOPED_TRACE(name + " case " + std::to_string(i) + ": " + c["messages"].dump().substr(0, 300));
    if (c.contains("expected")) {
      std::string got;
      try {
        got = ct.apply(c["messages"], tools, c["add_generation_prompt"].get<bool>(), c["kwargs"], cont);
      } catch (const Error& e) {
        ADD_FAILURE() << "unexpected error: " << e.what();
        continue;
      }
      const std::string want = c["expected"].get<std::string>();
      if (got == want) {
        ++passed;
      } else {
        ADD_FAILURE() << first_difference(want, got);
      }
    } else {
      try {
        const std::string got =
            ct.apply(c["messages"], tools, c["add_generation_prompt"].get<bool>(), c["kwargs"], cont);
        ADD_FAILURE() << "expected error " << c["error"] << ", got " << escaped(got.substr(0, 200));
      } catch (const jinja::TemplateError& e) {
        EXPECT_EQ(e.detail(), c["error"].get<std::string>()) << e.what();
        ++errors;
        ++passed;
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), c["error"].get<std::string>());
        ++errors;
        ++passed;
      }
    }
  }
  EXPECT_EQ(passed, static_cast<int>(cases.size()));
  std::printf("[ %s ] %d/%zu fixtures match transformers (%d expected errors)\n", name.c_str(), passed, cases.size(),
              errors);
}

INSTANTIATE_TEST_SUITE_P(Chat, RealTemplate, ::testing::Values("qwen3", "llama3", "deepseek_v3"));

TEST(ChatTemplate, ListFormAndToolUseSelection) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("pagoda_chat_template_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "tokenizer_config.json");
    f << R"({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "unk_token": null,
            "chat_template": [{"name": "default", "template": "D{{ bos_token }}{{ messages|length }}"},
                              {"name": "tool_use", "template": "T{{ tools|length }}{{ eos_token }}"}]})";
  }
  const json msgs = json::parse(R"([{"role": "user", "content": "hi"}])");
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "f"}}])");
  const ChatTemplate ct = ChatTemplate::from_model_dir(dir.string());
  EXPECT_EQ(ct.apply(msgs, nullptr, false), "D<s>1");
  EXPECT_EQ(ct.apply(msgs, &tools, false), "T1</s>");
  EXPECT_EQ(ChatTemplate::from_model_dir(dir.string(), "default").apply(msgs, &tools, false), "D<s>1");
  EXPECT_THROW(ChatTemplate::from_model_dir(dir.string(), "nope"), Error);

  // chat_template.jinja takes precedence over tokenizer_config.json.
  {
    std::ofstream f(dir / "chat_template.jinja");
    f << "J{{ messages[0].content }}{{ eos_token }}\n";
  }
  EXPECT_EQ(ChatTemplate::from_model_dir(dir.string()).apply(msgs, &tools, true), "Jhi</s>");

  // --chat-template: a path or the template itself.
  EXPECT_EQ(ChatTemplate::from_flag((dir / "chat_template.jinja").string(), dir.string()).apply(msgs, nullptr, false),
            "Jhi</s>");
  EXPECT_EQ(ChatTemplate::from_flag("inline {{ bos_token }}", dir.string()).apply(msgs, nullptr, false), "inline <s>");
  fs::remove_all(dir);
}

TEST(ChatTemplate, MessagePreprocessingLikeTransformers) {
  const ChatTemplate ct = ChatTemplate::from_string(
      "{% for m in messages %}{% for k, v in m.items() %}{{ k }}={{ v }};{% endfor %}|{% endfor %}"
      "{{ enable_thinking }}{{ documents }}");
  const json msgs = json::parse(R"([
      {"role": "assistant", "content": null, "reasoning": "why", "tool_calls": null},
      {"role": "assistant", "content": "a", "thinking": "t", "reasoning_content": "r"}])");
  EXPECT_EQ(ct.apply(msgs, nullptr, false, json::parse(R"({"enable_thinking": false})")),
            "thinking=why;role=assistant;reasoning=why;reasoning_content=why;|"
            "thinking=t;role=assistant;content=a;reasoning_content=r;|FalseNone");
  EXPECT_THROW(ct.apply(json::array(), nullptr, false), Error);
  EXPECT_THROW(ct.apply(msgs, nullptr, false, json::parse(R"({"messages": []})")), Error);
}

TEST(ChatTemplate, ErrorsNameTheTemplateLine) {
  try {
    ChatTemplate::from_string("ok\n{% if x %}\n{{ x | bogus }}\n{% endif %}x{{ y|nofilter }}");
    FAIL() << "expected a syntax error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("chat template line 4: No filter named 'nofilter'."), std::string::npos)
        << e.what();
  }
  const ChatTemplate ct = ChatTemplate::from_string(
      "{% for m in messages %}\n{% if m.role not in ['user', 'assistant'] %}\n"
      "{{ raise_exception('Conversation roles must be user or assistant') }}\n{% endif %}{% endfor %}");
  try {
    ct.apply(json::parse(R"([{"role": "tool", "content": "x"}])"), nullptr, false);
    FAIL() << "expected raise_exception";
  } catch (const jinja::TemplateError& e) {
    EXPECT_TRUE(e.raised_by_template());
    EXPECT_EQ(e.detail(), "Conversation roles must be user or assistant");
    EXPECT_EQ(e.line(), 3);
    EXPECT_EQ(std::string(e.what()), "chat template line 3: Conversation roles must be user or assistant");
  }
}

}  // namespace
}  // namespace pagoda
