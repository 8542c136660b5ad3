// Per-request output state (vLLM's detokenizer + stop checker): turns sampled tokens into text to
// stream, applies stop strings and settles finish_reason / stop_reason.
//
// Division of labour with the engine (as in vLLM V1): the engine stops a request on eos, a stop
// token id, max_tokens / max_model_len or an abort, and passes that along with the last token;
// stop strings are found here, and then the engine must abort the request (Delta::finished).
//
// Streaming: text that could still be the start of a stop string is held back until it is
// disambiguated; on a match the output is cut before the stop string (after it with
// include_stop_str_in_output). Text is never split inside a UTF-8 character.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "engine/sampler.h"
#include "engine/sampling_params.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {

// Why a request stopped with finish_reason "stop": the stop string, the stop token id, or none
// (eos, or not stopped).
using StopReason = std::variant<std::monostate, std::string, int32_t>;

struct Delta {
  std::string text;           // new text to stream (complete UTF-8; may be empty)
  bool finished = false;      // this push finished the request
  std::string finish_reason;  // when finished: "stop" | "length" | "abort"
  StopReason stop_reason;
};

class RequestOutputState {
 public:
  RequestOutputState(const Tokenizer& tokenizer, const SamplingParams& params, std::vector<int32_t> prompt_token_ids);

  // Adds one sampled token. engine_finished / engine_finish_reason say whether the engine stopped
  // the request with this token ("stop" for eos or a stop token id, "length", "abort"). With
  // "stop" the token's own text is left out unless include_stop_str_in_output (as vLLM).
  // After the request has finished further pushes are ignored (an empty Delta).
  Delta push(int32_t token, bool engine_finished = false, const std::string& engine_finish_reason = {});
  // The same, also accumulating the token's logprob (when the request asked for logprobs).
  Delta push(const SampledToken& sampled, bool engine_finished = false,
             const std::string& engine_finish_reason = {});
  // Finishes without a new token (an abort, or a length limit found before sampling): releases
  // any held-back text.
  Delta finish(const std::string& finish_reason);

  const std::string& text() const { return text_; }  // the whole output text so far
  const std::vector<int32_t>& token_ids() const { return token_ids_; }
  const std::vector<int32_t>& prompt_token_ids() const { return prompt_token_ids_; }
  int num_output_tokens() const { return static_cast<int>(token_ids_.size()); }
  double cumulative_logprob() const { return cumulative_logprob_; }
  bool finished() const { return finished_; }
  const std::string& finish_reason() const { return finish_reason_; }
  const StopReason& stop_reason() const { return stop_reason_; }
  const SamplingParams& params() const { return params_; }

 private:
  Delta push_impl(int32_t token, bool engine_finished, const std::string& engine_finish_reason);
  // Length of the longest suffix of text_ that is a proper prefix of a stop string.
  size_t held_back() const;
  Delta emit(bool all);

  SamplingParams params_;
  IncrementalDecoder decoder_;
  std::vector<int32_t> prompt_token_ids_;
  std::vector<int32_t> token_ids_;
  std::string text_;
  size_t emitted_ = 0;  // bytes of text_ already returned in deltas
  double cumulative_logprob_ = 0.0;
  bool finished_ = false;
  std::string finish_reason_;
  StopReason stop_reason_;
};

}  // namespace pagoda
