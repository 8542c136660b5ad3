// Backend::sample_tokens (sampling_math.h has the definition) and Backend::compute_logprobs on the
// CPU: one row at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/sampling_math.h"

namespace pagoda::cpu {

// Scratch reused between rows of one thread.
struct SampleScratch {
  std::vector<float> s;
  std::vector<int32_t> count1, count2;
  std::vector<float> mass1, mass2;
};

int32_t sample_row(const float* logits, int64_t vocab, const SamplingRow& row, SampleScratch& scratch);

// Backend::compute_logprobs for one row (k top entries).
void logprobs_row(const float* logits, int64_t vocab, int32_t token, int k, float* token_logprob, int32_t* top_ids,
                  float* top_logprobs);

}  // namespace pagoda::cpu
