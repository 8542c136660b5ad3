// Backend::sample_tokens on the GPU (cuda_sampling.cu; sampling_math.h defines the draw).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/sampling_math.h"

namespace pagoda::cuda {

// tokens[r] for r < R: one block per row of logits [R, V] (F32).
void launch_sample_tokens(const float* logits, int64_t R, int64_t V, const SamplingRow* rows, int32_t* tokens,
                          cudaStream_t stream);

}  // namespace pagoda::cuda
