// Per-request token sampling from one row of logits, in vLLM V1's order:
//   structured-output grammar mask (when set) -> raw logprobs (log_softmax of the model's logits, when requested)
//   -> allowed_token_ids mask -> min_tokens mask (eos + stop ids) -> logit_bias
//   -> repetition / frequency / presence penalties
//   -> greedy argmax, or temperature -> min-p -> top-k -> top-p -> a draw from what is left.
// Penalty state is kept incrementally: the distinct prompt tokens are collected once, and each
// sampled token updates a sparse count, so a step touches only tokens the request has seen.
// Each Sampler owns its random generator: a seed reproduces the same tokens whatever other
// requests are sampled in between.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "backend/sampling_math.h"
#include "engine/sampling_params.h"
#include "engine/structured_output.h"

namespace pagoda {

struct SampledToken {
  int32_t token = 0;
  // Raw logprob of `token` and the top-k (token, logprob) pairs, best first; only filled when
  // params.logprobs is set (top_logprobs has params.logprobs entries).
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top_logprobs;
};

class Sampler {  // one per request
 public:
  // vocabulary: token bytes for params.structured_output (required when that is set).
  Sampler(const SamplingParams& params, std::span<const int32_t> prompt_token_ids, int64_t vocab_size,
          std::vector<int32_t> eos_token_ids, std::shared_ptr<const TokenVocabulary> vocabulary = nullptr);

  // Applies this request's processors to logits[0, vocab_size) in place, samples, records the
  // token (for penalties and min_tokens) and returns it, with raw logprobs if requested.
  SampledToken sample(float* logits);
  int num_output_tokens() const { return num_output_; }

  const SamplingParams& params() const { return params_; }

  // The processing step alone (no sampling, no recording); exposed for tests.
  void apply_processors(float* logits) const;

  // For Backend::apply_logit_edits: what apply_processors would do to this row now, except
  // allowed_token_ids and structured output (requests with those are sampled here), as one
  // LogitEdit per affected token appended to `out`; the penalties go in `row`.
  // in_flight: tokens already drawn elsewhere for this request but not accept()ed yet (async
  // scheduling); they count for min_tokens. (Penalties need the tokens themselves: see
  // uses_penalties.)
  void append_edits(std::vector<LogitEdit>& out, SamplingRow& row, int in_flight = 0);
  // Whether the edits depend on which tokens were drawn (repetition / presence / frequency).
  bool uses_penalties() const { return use_penalties_; }
  // A token drawn elsewhere (Backend::sample_tokens): recorded for penalties and min_tokens.
  void accept(int32_t token) { record(token); }

 private:
  int32_t sample_random(const float* logits);
  int64_t draw_position(const float* weights, int64_t n);
  void record(int32_t token);

  SamplingParams params_;
  int64_t vocab_;
  std::vector<int32_t> eos_;
  std::mt19937_64 rng_;
  int num_output_ = 0;

  // Structured output: the grammar masks the row (before everything else, logprobs included, as
  // vLLM applies its bitmask to the logits) once active, and follows the sampled tokens.
  std::shared_ptr<const TokenVocabulary> vocabulary_;
  std::unique_ptr<GrammarMatcher> matcher_;
  bool grammar_active_ = false;

  bool use_penalties_ = false;  // any of repetition / frequency / presence is active
  bool use_repetition_ = false;
  std::vector<int32_t> allowed_;     // sorted, distinct (when allowed_token_ids is set)
  std::vector<int32_t> min_tokens_masked_;  // eos + stop_token_ids, distinct
  std::vector<std::pair<int32_t, float>> bias_;  // logit_bias as a flat list
  // Distinct tokens of prompt + output (repetition penalty); rep_set_ is the membership index.
  std::vector<int32_t> rep_tokens_;
  std::unordered_set<int32_t> rep_set_;
  // Output token counts (frequency / presence): parallel arrays plus an index.
  std::vector<int32_t> out_tokens_;
  std::vector<int32_t> out_counts_;
  std::unordered_map<int32_t, int32_t> out_index_;
  std::unordered_map<int32_t, size_t> edit_index_;  // append_edits scratch

  // Scratch reused across steps.
  std::vector<float> probs_;
  std::vector<int32_t> candidates_;
  std::vector<float> weights_;
  std::vector<uint16_t> bucket_;
  std::vector<int32_t> edge_;
  std::vector<float> raw_;
};

// Index of the largest logit (lowest index on ties, like torch.argmax).
int32_t argmax(const float* logits, int64_t vocab);

// log(sum(exp(logits))) over [0, vocab).
float log_sum_exp(const float* logits, int64_t vocab);

// Raw logprobs of one row: the logprob of `token` and the top_k best (token, logprob), best first.
SampledToken raw_logprobs(const float* logits, int64_t vocab, int32_t token, int top_k);

// Prompt logprobs for one prompt position: raw log_softmax of `logits` (the row computed at
// position i), the logprob of `next_token` (prompt token i + 1) and the top-k.
SampledToken prompt_logprob(const float* logits, int64_t vocab, int32_t next_token, int top_k);

}  // namespace pagoda
