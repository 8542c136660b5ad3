// Token sampling from one row of logits: greedy, or temperature -> top-k -> top-p -> min-p
// filtering then a draw from the renormalised distribution (the order of HF's logits
// processors). Each request owns its generator, so a seed reproduces the same tokens whatever
// else runs.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/sampling_params.h"

namespace pagoda {

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks the next token from logits[0, vocab).
  int32_t sample(const float* logits, int64_t vocab);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<int32_t> candidates_;  // scratch, reused across steps
  std::vector<float> probs_;
};

// Index of the largest logit (lowest index on ties, like torch.argmax).
int32_t argmax(const float* logits, int64_t vocab);

}  // namespace pagoda
