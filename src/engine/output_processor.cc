#include "engine/output_processor.h"

#include <algorithm>
#include <string_view>
#include <utility>

namespace pagoda {

RequestOutputState::RequestOutputState(const Tokenizer& tokenizer, const SamplingParams& params,
                                       std::vector<int32_t> prompt_token_ids)
    : params_(params),
      decoder_(tokenizer, params.skip_special_tokens),
      prompt_token_ids_(std::move(prompt_token_ids)) {}

Delta RequestOutputState::push(int32_t token, bool engine_finished, const std::string& engine_finish_reason) {
  return push_impl(token, engine_finished, engine_finish_reason);
}

Delta RequestOutputState::push(const SampledToken& sampled, bool engine_finished,
                               const std::string& engine_finish_reason) {
  if (!finished_ && params_.logprobs) cumulative_logprob_ += sampled.logprob;
  return push_impl(sampled.token, engine_finished, engine_finish_reason);
}

Delta RequestOutputState::finish(const std::string& finish_reason) {
  if (finished_) return {};
  text_ += decoder_.flush();
  finished_ = true;
  finish_reason_ = finish_reason;
  return emit(true);
}

Delta RequestOutputState::push_impl(int32_t token, bool engine_finished, const std::string& engine_finish_reason) {
  if (finished_) return {};
  token_ids_.push_back(token);
  const bool stop_terminated = engine_finished && engine_finish_reason == "stop";

  // 1) Detokenize. A token that stopped the request (eos / stop token id) adds no text unless
  //    include_stop_str_in_output.
  size_t check_from = text_.size();
  if (!stop_terminated || params_.include_stop_str_in_output) text_ += decoder_.push(token);
  if (engine_finished) text_ += decoder_.flush();
  // Text produced within the first min_tokens outputs is not searched for stop strings (vLLM).
  if (num_output_tokens() <= params_.min_tokens) check_from = text_.size();

  // 2) Stop strings, searched in the new text plus the len(stop) - 1 bytes before it; the first
  //    stop string in the list that matches wins.
  if (!params_.stop.empty() && text_.size() > check_from) {
    for (const std::string& stop : params_.stop) {
      if (stop.empty()) continue;
      const size_t start = check_from + 1 > stop.size() ? check_from + 1 - stop.size() : 0;
      const size_t pos = text_.find(stop, start);
      if (pos == std::string::npos) continue;
      const size_t cut = params_.include_stop_str_in_output ? pos + stop.size() : pos;
      if (cut < text_.size()) text_.resize(cut);
      emitted_ = std::min(emitted_, text_.size());
      finished_ = true;
      finish_reason_ = "stop";
      stop_reason_ = stop;
      return emit(true);
    }
  }

  // 3) Finished by the engine.
  if (engine_finished) {
    finished_ = true;
    finish_reason_ = engine_finish_reason;
    if (stop_terminated && std::find(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), token) !=
                               params_.stop_token_ids.end())
      stop_reason_ = token;
    return emit(true);
  }
  return emit(false);
}

size_t RequestOutputState::held_back() const {
  if (params_.include_stop_str_in_output) return 0;
  size_t hold = 0;
  const std::string_view text(text_);
  for (const std::string& stop : params_.stop) {
    if (stop.empty()) continue;
    for (size_t len = std::min(stop.size() - 1, text.size()); len > hold; --len) {
      if (text.substr(text.size() - len) == std::string_view(stop).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  return hold;
}

Delta RequestOutputState::emit(bool all) {
  Delta d;
  const size_t end = all ? text_.size() : text_.size() - held_back();
  if (end > emitted_) {
    d.text = text_.substr(emitted_, end - emitted_);
    emitted_ = end;
  }
  if (finished_) {
    d.finished = true;
    d.finish_reason = finish_reason_;
    d.stop_reason = stop_reason_;
  }
  return d;
}

}  // namespace pagoda
