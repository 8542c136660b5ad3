// The OpenAI request parser: the field set and defaults of ../shared/docs/API.md (vLLM's
// protocol), strict JSON types with the field named in the error, vLLM's range messages, and the
// OpenAI error body.
#include "server/openai_protocol.h"

#include <gtest/gtest.h>

#include <string>

namespace pagoda::api {
namespace {

ProtocolLimits limits() {
  ProtocolLimits l;
  l.vocab_size = 1000;
  l.max_logprobs = 20;
  return l;
}

// The ApiError a body raises (status 0 when it parses).
ApiError completion_error(const std::string& body) {
  try {
    parse_completion_request(body, SamplingParams{}, limits());
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "");
}

ApiError chat_error(const std::string& body) {
  try {
    parse_chat_request(body, SamplingParams{}, limits());
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "");
}

TEST(OpenAiProtocol, CompletionPromptsInEveryShape) {
  CompletionRequest r = parse_completion_request(R"({"model": "m", "prompt": "hello"})", {}, limits());
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(*r.prompts[0].text, "hello");
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.params.max_tokens, 16);  // the completions default
  EXPECT_TRUE(r.add_special_tokens);

  r = parse_completion_request(R"({"prompt": ["a", "b"]})", {}, limits());
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(*r.prompts[1].text, "b");
  r = parse_completion_request(R"({"prompt": [1, 2, 3]})", {}, limits());
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_FALSE(r.prompts[0].text);
  EXPECT_EQ(r.prompts[0].token_ids, (std::vector<int32_t>{1, 2, 3}));
  r = parse_completion_request(R"({"prompt": [[1], [2, 3]]})", {}, limits());
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].token_ids, (std::vector<int32_t>{2, 3}));

  EXPECT_EQ(completion_error(R"({"max_tokens": 5})").param(), "prompt");
  EXPECT_EQ(completion_error(R"({"prompt": []})").status(), 400);
  EXPECT_EQ(completion_error(R"({"prompt": [[]]})").status(), 400);
  EXPECT_EQ(completion_error(R"({"prompt": 7})").param(), "prompt");
  EXPECT_EQ(completion_error(R"({"prompt": [1, "a"]})").param(), "prompt");
  EXPECT_EQ(completion_error(R"({"prompt": [5000]})").param(), "prompt");  // out of vocabulary
}

TEST(OpenAiProtocol, SamplingFieldsStartFromTheServerDefaults) {
  SamplingParams defaults;
  defaults.temperature = 0.6f;
  defaults.top_p = 0.95f;
  defaults.top_k = 20;
  CompletionRequest r = parse_completion_request(
      R"({"prompt": "x", "top_p": 0.5, "seed": 3, "n": 2, "stop": "END", "stop_token_ids": [7],
          "min_tokens": 1, "max_tokens": 9, "ignore_eos": true, "presence_penalty": 0.5,
          "frequency_penalty": -0.5, "repetition_penalty": 1.1, "min_p": 0.1, "logprobs": 2,
          "prompt_logprobs": 1, "logit_bias": {"5": 150, "6": -3}, "allowed_token_ids": [5, 6, 7],
          "include_stop_str_in_output": true, "skip_special_tokens": false, "priority": -2,
          "request_id": "abc", "top_k": -1, "temperature": null})",
      defaults, limits());
  const SamplingParams& p = r.params;
  EXPECT_FLOAT_EQ(p.temperature, 0.6f);  // null: unset, so the default stays
  EXPECT_FLOAT_EQ(p.top_p, 0.5f);
  EXPECT_EQ(p.top_k, 0);  // -1 means off
  EXPECT_EQ(p.seed, 3u);
  EXPECT_EQ(p.n, 2);
  EXPECT_EQ(p.stop, (std::vector<std::string>{"END"}));
  EXPECT_EQ(p.stop_token_ids, (std::vector<int32_t>{7}));
  EXPECT_EQ(p.max_tokens, 9);
  EXPECT_TRUE(p.ignore_eos);
  EXPECT_EQ(p.logprobs, 2);
  EXPECT_EQ(p.prompt_logprobs, 1);
  EXPECT_FLOAT_EQ(p.logit_bias.at(5), 100.0f);  // clamped to [-100, 100] as OpenAI
  EXPECT_FLOAT_EQ(p.logit_bias.at(6), -3.0f);
  EXPECT_TRUE(p.include_stop_str_in_output);
  EXPECT_FALSE(p.skip_special_tokens);
  EXPECT_EQ(r.priority, -2);
  EXPECT_EQ(r.request_id, "abc");
}

TEST(OpenAiProtocol, WrongTypesAndRangesNameTheField) {
  ApiError e = completion_error(R"({"prompt": "x", "temperature": "hot"})");
  EXPECT_EQ(e.status(), 400);
  EXPECT_EQ(e.param(), "temperature");
  EXPECT_EQ(completion_error(R"({"prompt": "x", "max_tokens": 1.5})").param(), "max_tokens");
  EXPECT_EQ(completion_error(R"({"prompt": "x", "stream": 1})").param(), "stream");
  EXPECT_EQ(completion_error(R"({"prompt": "x", "stop": [1]})").param(), "stop");
  EXPECT_EQ(completion_error(R"({"prompt": "x", "logit_bias": {"a": 1}})").param(), "logit_bias");
  EXPECT_EQ(completion_error(R"({"prompt": "x", "logit_bias": {"4000": 1}})").param(), "logit_bias");
  // Integral floats are integers (pydantic's lax mode).
  EXPECT_EQ(parse_completion_request(R"({"prompt": "x", "max_tokens": 4.0})", {}, limits()).params.max_tokens, 4);
  // Ranges: the engine's checks, with vLLM's messages.
  EXPECT_EQ(completion_error(R"({"prompt": "x", "top_p": 0})").message(), "top_p must be in (0, 1], got 0.");
  EXPECT_EQ(completion_error(R"({"prompt": "x", "temperature": -1})").message(),
            "temperature must be non-negative, got -1.");
  EXPECT_EQ(completion_error(R"({"prompt": "x", "max_tokens": 0})").message(), "max_tokens must be at least 1, got 0.");
  EXPECT_NE(completion_error(R"({"prompt": "x", "logprobs": 21})").message().find("21"), std::string::npos);
  EXPECT_EQ(completion_error(R"({"prompt": "x", "stream_options": {"include_usage": true}})").message(),
            "Stream options can only be defined when `stream=True`.");
  CompletionRequest r =
      parse_completion_request(R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": true}})", {},
                               limits());
  EXPECT_TRUE(r.stream && r.include_usage);
}

TEST(OpenAiProtocol, BodiesThatAreNotJsonObjects) {
  EXPECT_EQ(completion_error("{not json").status(), 400);
  EXPECT_EQ(completion_error("[1, 2]").status(), 400);
  EXPECT_EQ(completion_error("").status(), 400);
  EXPECT_EQ(chat_error("null").status(), 400);
}

TEST(OpenAiProtocol, ChatFields) {
  ChatRequest r = parse_chat_request(
      R"({"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
          "max_tokens": 5, "max_completion_tokens": 7, "logprobs": true, "top_logprobs": 3,
          "chat_template_kwargs": {"enable_thinking": false}})",
      {}, limits());
  EXPECT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.params.max_tokens, 7);  // max_completion_tokens wins
  EXPECT_EQ(r.params.logprobs, 3);
  EXPECT_FALSE(r.add_special_tokens);  // the template adds what the model needs
  EXPECT_TRUE(r.add_generation_prompt);
  EXPECT_EQ(r.chat_template_kwargs["enable_thinking"], false);
  EXPECT_FALSE(r.params.max_tokens == std::nullopt);
  EXPECT_EQ(r.tool_choice, ToolChoiceMode::kNone);

  ChatRequest d = parse_chat_request(R"({"messages": [{"role": "user", "content": "hi"}]})", {}, limits());
  EXPECT_FALSE(d.params.max_tokens.has_value());  // unset: whatever the context leaves
  EXPECT_FALSE(d.params.logprobs.has_value());

  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})").message(),
            "when using `top_logprobs`, `logprobs` must be set to true.");
  EXPECT_EQ(chat_error(R"({"messages": []})").param(), "messages");
  EXPECT_EQ(chat_error(R"({"messages": "hi"})").param(), "messages");
  EXPECT_EQ(chat_error(R"({"messages": [{"content": "x"}]})").param(), "messages");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": 5}]})").param(), "messages");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "continue_final_message": true})").param(),
            "continue_final_message");
}

// The messages the template sees are normalized as vLLM's chat_utils does before
// apply_chat_template: string content always, tool-call arguments as JSON objects.
TEST(OpenAiProtocol, MessagesNormalizedForTheTemplate) {
  ChatRequest r = parse_chat_request(R"({"messages": [
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1, \"a\": [true]}"}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "ok"},
      {"role": "assistant"}]})",
                                     {}, limits());
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0]["content"], "a\nb");
  EXPECT_EQ(r.messages[1]["content"], "");
  EXPECT_EQ(r.messages[1]["tool_calls"][0]["function"]["arguments"].dump(), R"({"x":1,"a":[true]})");  // key order kept
  EXPECT_TRUE(r.messages[1]["tool_calls"][1]["function"]["arguments"].is_object());
  EXPECT_TRUE(r.messages[1]["tool_calls"][1]["function"]["arguments"].empty());
  EXPECT_EQ(r.messages[2]["content"], "ok");
  EXPECT_EQ(r.messages[3]["content"], "");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]}]})")
                .param(),
            "messages");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})").param(),
            "messages");
}

TEST(OpenAiProtocol, ToolsAndToolChoice) {
  const std::string tools =
      R"("tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])";
  const std::string msgs = R"("messages": [{"role": "user", "content": "x"}])";
  ChatRequest r = parse_chat_request("{" + msgs + ", " + tools + "}", {}, limits());
  ASSERT_TRUE(r.tools.has_value());
  EXPECT_EQ(r.tool_choice, ToolChoiceMode::kAuto);  // tools given, no choice: auto
  r = parse_chat_request("{" + msgs + ", " + tools + R"(, "tool_choice": "required"})", {}, limits());
  EXPECT_EQ(r.tool_choice, ToolChoiceMode::kRequired);
  r = parse_chat_request(
      "{" + msgs + ", " + tools + R"(, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})", {},
      limits());
  EXPECT_EQ(r.tool_choice, ToolChoiceMode::kNamed);
  EXPECT_EQ(r.tool_choice_name, "get_weather");
  EXPECT_EQ(chat_error("{" + msgs + ", " + tools + R"(, "tool_choice": {"type": "function", "function": {"name": "f"}}})")
                .message(),
            "Tool 'f' has not been passed in `tools`.");
  EXPECT_EQ(chat_error("{" + msgs + R"(, "tool_choice": "required"})").message(),
            "When using `tool_choice`, `tools` must be set.");
  EXPECT_EQ(chat_error("{" + msgs + R"(, "tools": [{"type": "function"}]})").param(), "tools");
  EXPECT_EQ(chat_error("{" + msgs + ", " + tools + R"(, "tool_choice": "sometimes"})").param(), "tool_choice");
}

// Found by bench/fuzz/openai_request_fuzz: a number outside double's range is an out_of_range
// exception in nlohmann::json, not a parse_error, and escaped the parser as a non-ApiError (a 500).
TEST(OpenAiProtocol, NumberOverflowIsABadRequest) {
  ApiError e = completion_error(R"({"prompt": "x", "temperature": 1e309})");
  EXPECT_EQ(e.status(), 400);
  EXPECT_NE(e.message().find("Invalid JSON"), std::string::npos) << e.message();
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "seed": -1e999})").status(), 400);
  e = chat_error(R"({"messages": [{"role": "user", "content": "x"}], "guided_json": "{\"maximum\": 1e400}"})");
  EXPECT_EQ(e.status(), 400);
  EXPECT_EQ(e.param(), "guided_json");
}

// Found by bench/fuzz/openai_request_fuzz (with a long input): nlohmann::json copies values
// recursively, so a deeply nested field (messages, chat_template_kwargs, tools) overflowed the
// stack while the request was parsed, killing the server. Bodies past kMaxJsonDepth are a 400.
TEST(OpenAiProtocol, DeeplyNestedJsonIsABadRequest) {
  const std::string msgs = R"("messages": [{"role": "user", "content": "x"}])";
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  ApiError e = chat_error("{" + msgs + R"(, "chat_template_kwargs": {"a": )" + nested(200000) + "}}");
  EXPECT_EQ(e.status(), 400);
  EXPECT_NE(e.message().find("nested too deeply"), std::string::npos) << e.message();
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x", "x": )" + nested(200000) + "}]}").status(), 400);
  EXPECT_EQ(completion_error(R"({"prompt": "x", "extra": )" + nested(200000) + "}").status(), 400);
  // Depth counts the body's own object; brackets inside strings do not count.
  EXPECT_EQ(chat_error("{" + msgs + R"(, "x": )" + nested(kMaxJsonDepth - 1) + "}").status(), 0);
  EXPECT_EQ(chat_error("{" + msgs + R"(, "x": )" + nested(kMaxJsonDepth) + "}").status(), 400);
  EXPECT_EQ(chat_error("{" + msgs + R"(, "x": ")" + std::string(100000, '[') + R"(\"["})").status(), 0);
  // JSON carried inside strings is checked too.
  e = chat_error("{" + msgs + R"(, "guided_json": ")" + std::string(100000, '[') + "\"}");
  EXPECT_EQ(e.status(), 400);
  EXPECT_EQ(e.param(), "guided_json");
  e = chat_error(R"({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"type": "function", )"
                 R"("function": {"name": "f", "arguments": ")" +
                 nested(100000) + R"("}}]}]})");
  EXPECT_EQ(e.status(), 400);
  EXPECT_EQ(e.param(), "messages");
}

TEST(OpenAiProtocol, ErrorBodyHasTheOpenAiShape) {
  const ApiError e(404, "The model `x` does not exist.", "model");
  const nlohmann::json b = e.body();
  EXPECT_EQ(b["error"]["message"], "The model `x` does not exist.");
  EXPECT_EQ(b["error"]["type"], "NotFoundError");
  EXPECT_EQ(b["error"]["param"], "model");
  EXPECT_EQ(b["error"]["code"], 404);
  EXPECT_TRUE(ApiError(400, "m").body()["error"]["param"].is_null());
  EXPECT_EQ(ApiError(400, "m").type(), "BadRequestError");
  EXPECT_EQ(ApiError(503, "m").type(), "ServiceUnavailableError");
}

}  // namespace
}  // namespace pagoda::api
