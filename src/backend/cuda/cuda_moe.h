// Launchers of the CUDA backend's mixture-of-experts kernels (cuda_moe.cu). Contracts: backend.h
// (Backend::moe_route, Backend::moe_experts, MoeScratch). Shapes and dtypes are validated by the
// caller (cuda_backend.cc). Each launcher only enqueues work on `stream`: no allocation, no
// synchronisation, no device data read on the host.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/moe_limits.h"
#include "base/dtype.h"

namespace pagoda::cuda {

// p = softmax(logits[t, :]) in F32, ids[t, :] = the top_k experts by descending p (ties: lower id
// first), weights[t, :] = their p (divided by their sum when renormalize). logits F32 [T, E].
void launch_moe_route(const float* logits, int64_t T, int64_t E, int64_t top_k, bool renormalize, int32_t* ids,
                      float* weights, cudaStream_t stream);

// Everything moe_experts needs. x [T, H] and out [T, H] dtype act; ids I32 [T, top_k], weights F32
// [T, top_k]; expert_ptrs: device array of 3 E pointers (gate[0..E), up[0..E), down[0..E)), each a
// contiguous [I, H] (gate, up) or [H, I] (down) matrix of dtype weight_dtype (BF16 / F16 / F32);
// h_scratch [R, I] dtype act (MoeScratch::gate; R = T * top_k), y_scratch [R, H] dtype act
// (MoeScratch::y), row_of_pair / pair_of_row [R] and expert_offsets [E + 1] I32.
// An expert id outside [0, E) drops its pair: that token's output row becomes NaN (the host cannot
// check device ids without synchronising; NaN makes the bug visible downstream).
struct MoeExpertsArgs {
  const void* x = nullptr;
  const int32_t* ids = nullptr;
  const float* weights = nullptr;
  const void* const* expert_ptrs = nullptr;
  DType weight_dtype = DType::kBF16;
  int64_t T = 0, H = 0, I = 0, E = 0, top_k = 0;
  void* h_scratch = nullptr;
  void* y_scratch = nullptr;
  int32_t* row_of_pair = nullptr;
  int32_t* pair_of_row = nullptr;
  int32_t* expert_offsets = nullptr;
  void* out = nullptr;
  DType act = DType::kBF16;
};
void launch_moe_experts(const MoeExpertsArgs& args, cudaStream_t stream);

}  // namespace pagoda::cuda
