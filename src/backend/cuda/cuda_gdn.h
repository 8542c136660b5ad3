// Launchers of the CUDA backend's Gated DeltaNet kernels (cuda_gdn.cu): the causal depthwise
// conv1d and the gated delta rule of hybrid (Qwen3-Next / Qwen3.5) models. Contracts: backend.h
// (Backend::causal_conv1d, Backend::gated_delta_rule, LinearAttnState). Shapes and dtypes are
// validated by the caller (cuda_backend.cc). Each launcher only enqueues work on `stream`: no
// allocation, no synchronisation, no device data read on the host.
//
// Per-sequence metadata (query_start_loc [num_seqs + 1], seq_lens [num_seqs], state_slots
// [num_seqs], all I32) is read on the device. What the host cannot check:
//  - a sequence whose query range is malformed (begin < 0, end < begin or end > T) is skipped;
//  - a sequence whose state slot is outside [0, num_slots) gets NaN outputs and no state update,
//    except AttentionMetadata::kPaddingSlot (-1, a padding sequence): zero outputs;
//  - two sequences sharing a slot race (the CPU backend rejects that; here it is undefined).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "base/dtype.h"

namespace pagoda::cuda {

// Largest conv kernel width / key head dim the kernels support (the caller checks).
constexpr int kMaxConvWidth = 8;
constexpr int kMaxGdnKeyHeadDim = 256;

// out[t, c] = silu(sum_j weight[c, j] * x[t - (K-1) + j, c]) per sequence, history from
// conv_state [num_slots, C, K - 1] (F32), which is then updated. x and out [T, C] have dtype act
// (BF16 or F32; out may alias x); weight [C, K] is BF16 / F16 / F32. 1 <= K <= kMaxConvWidth.
void launch_causal_conv1d(const void* x, const void* weight, DType weight_dtype, const int32_t* query_start_loc,
                          const int32_t* seq_lens, const int32_t* state_slots, int num_seqs, int64_t T, int64_t C,
                          int K, float* conv_state, int64_t num_slots, void* out, DType act, cudaStream_t stream);

// The gated delta rule, token by token. qkv [T, 2 nk dk + nv dv], a, b [T, nv] and out [T, nv dv]
// have dtype act; A_log, dt_bias [nv] and state [num_slots, nv, dk, dv] are F32.
// dk <= kMaxGdnKeyHeadDim, nv % nk == 0.
void launch_gated_delta_rule(const void* qkv, const void* a, const void* b, const float* A_log, const float* dt_bias,
                             const int32_t* query_start_loc, const int32_t* seq_lens, const int32_t* state_slots,
                             int num_seqs, int64_t T, int nk, int nv, int dk, int dv, float* state, int64_t num_slots,
                             void* out, DType act, cudaStream_t stream);

}  // namespace pagoda::cuda
