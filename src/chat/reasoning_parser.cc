#include "chat/reasoning_parser.h"

#include <algorithm>

namespace pagoda {
size_t partial_tag_suffix(std::string_view text, std::string_view tag) {
  for (size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n)
    if (text.substr(text.size() - n) == tag.substr(0, n)) return n;
  return 0;
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

}  // namespace

bool prompt_opens_think_block(std::string_view prompt) {
  const size_t open = prompt.rfind(Qwen3ReasoningParser::kStart);
  if (open == std::string_view::npos) return false;
  return prompt.find(Qwen3ReasoningParser::kEnd, open) == std::string_view::npos;
}

Qwen3ReasoningParser::Qwen3ReasoningParser(std::string_view prompt)
    : state_(prompt_opens_think_block(prompt) ? State::kReasoning : State::kStart) {}

ReasoningDelta Qwen3ReasoningParser::push(std::string_view text) {
  ReasoningDelta d;
  pending_.append(text);
  if (state_ == State::kStart) {
    const size_t first = std::find_if_not(pending_.begin(), pending_.end(), is_space) - pending_.begin();
    const std::string_view rest = std::string_view(pending_).substr(first);
    if (rest.substr(0, kStart.size()) == kStart) {
      pending_.erase(0, first + kStart.size());  // the tag and the whitespace before it
      state_ = State::kReasoning;
    } else if (rest.size() < kStart.size() && kStart.substr(0, rest.size()) == rest) {
      return d;  // still undecided: only whitespace and the start of "<think>" so far
    } else {
      state_ = State::kContent;
    }
  }
  if (state_ == State::kReasoning) {
    const size_t end = pending_.find(kEnd);
    if (end == std::string::npos) {
      const size_t hold = partial_tag_suffix(pending_, kEnd);
      d.reasoning = pending_.substr(0, pending_.size() - hold);
      pending_.erase(0, pending_.size() - hold);
      return d;
    }
    d.reasoning = pending_.substr(0, end);
    pending_.erase(0, end + kEnd.size());
    state_ = State::kContent;
  }
  d.content = std::move(pending_);
  pending_.clear();
  return d;
}

ReasoningDelta Qwen3ReasoningParser::finish() {
  ReasoningDelta d;
  if (state_ == State::kReasoning) {
    d.reasoning = std::move(pending_);
  } else {
    d.content = std::move(pending_);
  }
  pending_.clear();
  return d;
}

std::pair<std::optional<std::string>, std::optional<std::string>> Qwen3ReasoningParser::extract(
    std::string_view prompt, std::string_view output) {
  Qwen3ReasoningParser p(prompt);
  ReasoningDelta a = p.push(output);
  ReasoningDelta b = p.finish();
  std::string reasoning = a.reasoning + b.reasoning, content = a.content + b.content;
  std::optional<std::string> r, c;
  if (!reasoning.empty()) r = std::move(reasoning);
  if (!content.empty()) c = std::move(content);
  return {r, c};
}

}  // namespace pagoda
