// Qwen3 reasoning parser (vLLM's --reasoning-parser qwen3): splits generated text into
// reasoning_content (between <think> and </think>) and content (the rest), streaming and not.
//
// Where the reasoning starts: Qwen3 models write "<think>" themselves, but some templates put it
// at the end of the prompt (Qwen3 thinking-2507 checkpoints) and with enable_thinking=false the
// template closes an empty think block in the prompt. So the parser starts in reasoning mode when
// the prompt ends inside an open think block, or when the output begins with "<think>"
// (whitespace before it allowed); otherwise everything is content. In reasoning mode the text up
// to "</think>" is reasoning (all of it if the output ends first: a truncated thought stays
// reasoning), and what follows is content.
//
// The streaming parser never emits a partial tag: text that could be the start of "<think>" or
// "</think>" is held back until it is decided. Non-streaming parsing is the streaming parser fed
// everything at once, so both give the same split.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pagoda {

struct ReasoningDelta {
  std::string reasoning;  // new reasoning text (may be empty)
  std::string content;    // new content text (may be empty)
};

class Qwen3ReasoningParser {
 public:
  static constexpr std::string_view kStart = "<think>";
  static constexpr std::string_view kEnd = "</think>";

  // prompt: the rendered prompt (to know whether it leaves a think block open).
  explicit Qwen3ReasoningParser(std::string_view prompt = {});

  // Feeds new output text; returns what can be emitted now.
  ReasoningDelta push(std::string_view text);
  // The end of the output: releases anything held back.
  ReasoningDelta finish();
  bool reasoning_ended() const { return state_ == State::kContent; }

  // Non-streaming: (reasoning_content, content); each nullopt when empty (as vLLM's None).
  static std::pair<std::optional<std::string>, std::optional<std::string>> extract(std::string_view prompt,
                                                                                  std::string_view output);

 private:
  enum class State { kStart, kReasoning, kContent };
  State state_;
  std::string pending_;  // text held back (a possible partial tag, or leading whitespace)
};

// Length of the longest suffix of text that is a proper prefix of tag: text a streaming parser
// must hold back because it may still become the tag.
size_t partial_tag_suffix(std::string_view text, std::string_view tag);

// True if the prompt ends inside an open <think> block (its last "<think>" has no "</think>"
// after it).
bool prompt_opens_think_block(std::string_view prompt);

}  // namespace pagoda
