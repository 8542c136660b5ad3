// Launchers of the CUDA backend's elementwise / row-wise kernels (cuda_kernels.cu). Each one
// enqueues work on `stream` and checks the launch; none allocates or synchronises. Shapes and
// dtypes are validated by the caller (cuda_backend.cc); the launchers only assert what they
// rely on. `act` is the dtype of activations (BF16 or F32); weights may be BF16, F16 or F32.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "base/dtype.h"

namespace pagoda::cuda {

// out[t, :] = table[ids[t], :]. An id outside [0, V) gives a row of NaN (the host cannot check
// device ids without synchronising; NaN makes the bug visible downstream).
void launch_embedding(const int32_t* ids, int64_t T, const void* table, DType table_dtype, int64_t V, int64_t H,
                      void* out, DType out_dtype, cudaStream_t stream);

// residual == nullptr: out = rms_norm(x) * weight row-wise.
// residual != nullptr: residual += x (rounded to act, like vLLM's fused_add_rms_norm);
// out = rms_norm(residual) * weight. x, residual and out have dtype act; out may alias x.
void launch_rms_norm(void* residual, const void* x, const void* weight, DType weight_dtype, float eps, int64_t rows,
                     int64_t H, void* out, DType act, cudaStream_t stream);

// out = weight * rms_norm(x) * silu(z) row-wise (x, z, out dtype act).
void launch_rms_norm_gated(const void* x, const void* z, const void* weight, DType weight_dtype, float eps,
                           int64_t rows, int64_t d, void* out, DType act, cudaStream_t stream);

// cos_sin[t, i] = cos(pos_t * inv_freq[i]) * factor, cos_sin[t, half + i] = sin(...) * factor.
void launch_rope_cos_sin(const void* positions, bool positions_i64, int64_t T, const float* inv_freq, int64_t half,
                         float attention_factor, float* cos_sin, cudaStream_t stream);

// NeoX RoPE on the first rotary_dim dims of q [T, Hq, D] and k [T, Hk, D] (in place, dtype act),
// then k and v written to the BF16 cache [num_blocks, block_size, Hk, D] at slot_mapping[t]
// (slot < 0 or beyond the cache: not written). With q_norm and k_norm ([D], norm_dtype; both or
// neither), every head is first rms-normalised in place (eps) as launch_rms_norm would: Qwen3's
// q / k norm fused into the same launch.
void launch_rope_and_cache(void* q, void* k, const void* v, DType act, const void* q_norm, const void* k_norm,
                           DType norm_dtype, float eps, const float* cos_sin, int rotary_dim,
                           const int32_t* slot_mapping, int64_t T, int64_t Hq, int64_t Hk, int64_t D,
                           void* k_cache, void* v_cache, int64_t num_blocks, int64_t block_size,
                           cudaStream_t stream);

// out = silu(gate) * up elementwise (n elements, dtype act; out may alias gate or up).
void launch_silu_and_mul(const void* gate, const void* up, void* out, int64_t n, DType act, cudaStream_t stream);

// a += b elementwise (n elements, dtype act).
void launch_add(void* a, const void* b, int64_t n, DType act, cudaStream_t stream);

// x [R, N] (dtype act) *= sigmoid(gate); gate [R, N] or, when gate_broadcast, [R, 1]; gate dtype
// BF16, F16 or F32.
void launch_sigmoid_mul(void* x, const void* gate, DType gate_dtype, bool gate_broadcast, int64_t R, int64_t N,
                        DType act, cudaStream_t stream);

// out[i, :] = x[indices[i], :] for rows of row_bytes bytes. An index outside [0, R) gives a row of
// zero bytes.
void launch_gather_rows(const void* x, int64_t R, size_t row_bytes, const int32_t* indices, int64_t n, void* out,
                        cudaStream_t stream);

// ids[feed[2i]] = sampled[feed[2i + 1]] for i < n.
void launch_feed_tokens(int32_t* ids, const int32_t* feed, int64_t n, const int32_t* sampled, cudaStream_t stream);

// out[t, n] = bias[n] for every row t (bias dtype BF16/F16/F32, out dtype BF16/F32): the C
// operand of a GEMM with beta = 1, so that the bias is added before the single final rounding.
void launch_fill_bias_rows(const void* bias, DType bias_dtype, int64_t T, int64_t N, void* out, DType out_dtype,
                           cudaStream_t stream);

// Plain shared-memory tiled GEMM with FP32 accumulation: out[T, N] = x[T, K] * w[N, K]^T (+ bias).
// x BF16/F32, w and bias BF16/F16/F32, out BF16/F32. The path for non-BF16 weights and for
// shapes cuBLASLt has no algorithm for; correct, not fast.
void launch_gemm_fallback(const void* x, DType x_dtype, const void* w, DType w_dtype, const void* bias,
                          DType bias_dtype, void* out, DType out_dtype, int64_t T, int64_t N, int64_t K,
                          cudaStream_t stream);

}  // namespace pagoda::cuda
