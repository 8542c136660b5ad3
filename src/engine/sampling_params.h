// Per-request sampling settings: vLLM's SamplingParams. Unset optional fields mean "off" (or,
// for max_tokens, "whatever the context leaves": the engine fills max_model_len - prompt_len).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pagoda {

struct StructuredOutputSpec;  // engine/structured_output.h

struct SamplingParams {
  int n = 1;                  // completions per prompt (the engine fans out; the Sampler ignores it)
  float temperature = 1.0f;   // < 1e-5: greedy
  float top_p = 1.0f;         // (0, 1]
  int top_k = 0;              // 0 or -1: off
  float min_p = 0.0f;         // [0, 1]
  float presence_penalty = 0.0f;    // [-2, 2], output tokens only
  float frequency_penalty = 0.0f;   // [-2, 2], output tokens only
  float repetition_penalty = 1.0f;  // > 0, prompt and output tokens
  std::map<int32_t, float> logit_bias;                   // token id -> added to its logit
  std::optional<std::vector<int32_t>> allowed_token_ids;  // when set, every other token is masked
  std::optional<uint64_t> seed;                          // per-request generator
  std::vector<std::string> stop;                         // stop strings (OutputProcessor)
  std::vector<int32_t> stop_token_ids;
  bool include_stop_str_in_output = false;
  bool ignore_eos = false;
  int min_tokens = 0;                 // eos and stop_token_ids are masked until this many outputs
  std::optional<int> max_tokens;      // unset: max_model_len - prompt_len
  std::optional<int> logprobs;        // top-k logprobs per sampled token (0: the sampled one only)
  std::optional<int> prompt_logprobs;  // top-k logprobs per prompt token
  bool skip_special_tokens = true;
  bool spaces_between_special_tokens = true;
  // Guided decoding: the output must match this grammar (needs EngineConfig::token_vocabulary).
  std::shared_ptr<const StructuredOutputSpec> structured_output;

  static constexpr float kGreedyEpsilon = 1e-5f;
  bool greedy() const { return temperature < kGreedyEpsilon; }

  // Throws pagoda::Error naming the field if a value is out of range (vLLM's messages). With a
  // vocab_size > 0 the token ids in logit_bias and allowed_token_ids are checked
  // against it too; logprobs and prompt_logprobs may not exceed max_logprobs.
  void validate(int64_t vocab_size = -1, int max_logprobs = 20) const;
};

}  // namespace pagoda
