// Backend::sample_tokens on the GPU (cuda_sampling.cu; sampling_math.h defines the draw).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/sampling_math.h"

namespace pagoda::cuda {

// tokens[r] for r < R: one block per row of logits [R, V] (F32).
void launch_sample_tokens(const float* logits, int64_t R, int64_t V, const SamplingRow* rows, int32_t* tokens,
                          cudaStream_t stream);

// Backend::compute_logprobs over logits [N, V] (one block per row).
void launch_compute_logprobs(const float* logits, int64_t N, int64_t V, const int32_t* tokens, int K,
                             float* token_logprobs, int32_t* top_ids, float* top_logprobs, cudaStream_t stream);

// Row r's edits[offsets[r], offsets[r + 1]) applied to logits [R, V] in place (one block per row;
// a token outside [0, V) is skipped).
void launch_apply_logit_edits(float* logits, int64_t R, int64_t V, const SamplingRow* rows, const LogitEdit* edits,
                              const int32_t* offsets, cudaStream_t stream);

}  // namespace pagoda::cuda
