// Sampling on the GPU: the launches of sampling_kernels.cuh.
#include "backend/cuda/cuda_sampling.h"

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/sampling_kernels.cuh"

namespace pagoda::cuda {

using sampling_kernels::apply_edits_kernel;
using sampling_kernels::kLogprobThreads;
using sampling_kernels::kThreads;
using sampling_kernels::logprobs_kernel;
using sampling_kernels::sample_kernel;

void launch_apply_logit_edits(float* logits, int64_t R, int64_t V, const SamplingRow* rows, const LogitEdit* edits,
                              const int32_t* offsets, cudaStream_t stream) {
  if (R <= 0) return;
  PAGODA_LAUNCH(static_cast<unsigned>(R), 256, 0, stream, apply_edits_kernel)(logits, V, rows, edits, offsets);
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_sample_tokens(const float* logits, int64_t R, int64_t V, const SamplingRow* rows, int32_t* tokens,
                          cudaStream_t stream) {
  if (R <= 0) return;
  PAGODA_LAUNCH(static_cast<unsigned>(R), kThreads, 0, stream, sample_kernel)(logits, V, rows, tokens);
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_compute_logprobs(const float* logits, int64_t N, int64_t V, const int32_t* tokens, int K,
                             float* token_logprobs, int32_t* top_ids, float* top_logprobs, cudaStream_t stream) {
  if (N <= 0) return;
  PAGODA_LAUNCH(static_cast<unsigned>(N), kLogprobThreads, 0, stream, logprobs_kernel)
  (logits, V, tokens, K, token_logprobs, top_ids, top_logprobs);
  PAGODA_CUDA_CHECK_LAUNCH();
}

}  // namespace pagoda::cuda
