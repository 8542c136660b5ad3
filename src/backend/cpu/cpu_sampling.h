// Backend::sample_tokens on the CPU (sampling_math.h has the definition): one row at a time.
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

}  // namespace pagoda::cpu
