// Small-batch GEMM ("GEMV") of the CUDA backend (cuda_gemv.cu, kernel in gemv_kernels.cuh): for
// decode steps of at most kMaxGemvTokens tokens, out_g[T, n_g] = x[T, K] * W_g[n_g, K]^T (+ bias_g)
// for up to kMaxGemvGroups weights that share the input (q / k / v, gate / up) in ONE launch.
// BF16 x and W, FP32 accumulation, one rounding on store. The backend times it against cuBLASLt
// per shape and keeps the faster (cuda_backend.cc, PAGODA_CUDA_GEMV). Mode bits fold the small
// ops around a decode linear into the launch: the SwiGLU product, the RMSNorm of x, the residual
// add of the output (gemv_kernels.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "base/dtype.h"

namespace pagoda::cuda {

inline constexpr int kMaxGemvTokens = 8;
inline constexpr int kMaxGemvGroups = 4;

// Launch modes (bits; 0 is a plain linear):
// kGemvGated: the SwiGLU input half (Backend::gate_up_silu). Groups 0 and 1 are gate and up
//   [n, K] (no biases) and out[0] [T, n] receives silu(gate) * up, each product rounded to the
//   output dtype first as two linears and silu_and_mul would; out[1] is not written.
// kGemvNorm: x is normalised on the fly, out = linear(rms_norm(x) * norm_w) (norm_w BF16 [K],
//   eps): rms_norm's inverse RMS (FP32 over x as stored) scales the FP32 product, so the
//   normalised row is not rounded to BF16 as a separate rms_norm would store it.
// kGemvAdd: one group; out[0] is a residual [T, n] updated in place: out = out + linear(x),
//   the product rounded to the output dtype first, as linear then add() would.
inline constexpr int kGemvGated = 1;
inline constexpr int kGemvNorm = 2;
inline constexpr int kGemvAdd = 4;

// The weights of one launch. Rows of all groups are numbered one after another: group g owns
// rows [row_end[g - 1], row_end[g]).
struct GemvGroups {
  const void* w[kMaxGemvGroups];     // [n, K] BF16, 16-byte aligned
  const void* bias[kMaxGemvGroups];  // [n] (BF16 / F16 / F32) or null
  void* out[kMaxGemvGroups];         // [T, n], dtype out_dtype
  int64_t n[kMaxGemvGroups];
  int64_t row_end[kMaxGemvGroups];
  DType bias_dtype[kMaxGemvGroups];
  int count;
  const void* norm_w;  // kGemvNorm: [K] BF16, 16-byte aligned
  float eps;           // kGemvNorm
};

// Requirements (asserted): 1 <= T <= kMaxGemvTokens, K % 8 == 0, x and every W 16-byte aligned,
// 1 <= count <= kMaxGemvGroups, out dtype BF16 or F32 (BF16 with kGemvNorm or kGemvAdd). x [T, K]
// BF16 row-major. `num_sms` sizes the split of K across warps for small N. `mode`: kGemv* bits
// (kGemvAdd alone).
void launch_gemv(const void* x, int64_t T, int64_t K, const GemvGroups& groups, DType out_dtype, int num_sms,
                 cudaStream_t stream, int mode = 0);

// How many warps share one row's K range for this shape (1, 2, 4 or 8): what launch_gemv uses.
// units: rows of all groups, or (gated) the n of one.
int gemv_split(int64_t T, int64_t units, int64_t K, int num_sms, bool gated = false);

}  // namespace pagoda::cuda
