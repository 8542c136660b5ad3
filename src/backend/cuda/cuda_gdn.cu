// Gated DeltaNet on CUDA: causal depthwise conv1d and the gated delta rule (contracts: backend.h,
// launchers: cuda_gdn.h). All math in FP32; activations are converted on load and rounded once
// on store; states stay F32 in device memory.
//
// causal_conv1d: one thread per (sequence, channel), blocks of 128 channels, grid (channel
// blocks, sequences). The thread walks the tokens of its sequence in order with the last K inputs
// in registers (a shift register), so every x[t, c] is read by the thread that writes out[t, c]
// before it is written (out may alias x), and the thread that read the slot's history is the one
// that writes it back (no race between chunks of one sequence). Decode (one token per sequence)
// is one step per thread; a long prefill chunk is sequential per channel (C >= a few thousand
// threads per sequence keep the GPU busy enough for this first version).
//
// gated_delta_rule: one block per (sequence, value head, tile of 32 value columns): grid
// (num_v_heads * ceil(d_v / 32), num_seqs), 8 warps. Lane l of every warp owns value column
// j = tile * 32 + l; warp w owns key rows i = w, w + 8, w + 16, ... of the state S [d_k, d_v], so
// the block holds its [d_k, 32] slice of S in registers (d_k / 8 floats per thread) for the
// whole chunk: the slice is read from the slot once and written back once, and each warp's
// loads / stores of one row are 128 contiguous bytes. Per token:
//   1. the block loads q, k of its key head into shared memory and reduces their squared norms;
//   2. kv[j] = sum_i S[i, j] k[i]: per-thread partial over its rows, summed over the 8 warps in
//      shared memory (every warp sums the 8 partials in the same order, so all agree on kv);
//   3. delta[j] = beta (v[j] - exp(g) kv[j]); S[i, j] = exp(g) S[i, j] + k[i] delta[j] and the
//      partial o[j] = sum_i S[i, j] q[i] in the same pass; warp 0 sums the partials and stores o.
// Decode therefore streams the whole recurrent state once (read + write) with
// num_seqs * n_v * d_v / 32 blocks. Prefill runs the same recurrence token by token (the state
// stays in registers across the tokens of the chunk; three block barriers per token): the
// chunked (WY) form of the contract (chunk_size > 0) gives the same result up to rounding, so
// chunk_size is ignored in this first version.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/convert.cuh"
#include "backend/cuda/cuda_gdn.h"
#include "backend/cuda/gdn_kernels.cuh"

namespace pagoda::cuda {
namespace {

using namespace gdn_kernels;  // NOLINT: the kernels and their constants

template <class F>
void dispatch_act(DType act, const char* op, F&& f) {
  switch (act) {
    case DType::kBF16: f(bf16{}); break;
    case DType::kF32: f(float{}); break;
    default: fail(op, ": activation dtype must be BF16 or F32, got ", dtype_name(act));
  }
}

}  // namespace

// ---- host launchers ----------------------------------------------------------------------------
namespace {

template <class T, int MAXR>
void launch_gdn_typed(const void* qkv, const void* a, const void* b, const float* A_log, const float* dt_bias,
                      const int32_t* qsl, const int32_t* seq_lens, const int32_t* slots, int num_seqs, int64_t tokens,
                      int nk, int nv, int dk, int dv, float* state, int64_t num_slots, void* out,
                      cudaStream_t stream) {
  const int64_t tiles = (dv + kGdnColumns - 1) / kGdnColumns;
  const int64_t gx = tiles * nv;
  PAGODA_CHECK(gx <= 0x7fffffff && num_seqs <= 65535, "gated_delta_rule: too many heads / sequences for one launch (",
               nv, " value heads, ", num_seqs, " sequences)");
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(num_seqs));
  PAGODA_LAUNCH(grid, kGdnWarps * 32, 0, stream, gated_delta_rule_kernel<T, MAXR>)
  (static_cast<const T*>(qkv), static_cast<const T*>(a), static_cast<const T*>(b), A_log, dt_bias, qsl, seq_lens, slots,
   tokens, nk, nv, dk, dv, state, num_slots, static_cast<T*>(out));
  PAGODA_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_causal_conv1d(const void* x, const void* weight, DType weight_dtype, const int32_t* query_start_loc,
                          const int32_t* seq_lens, const int32_t* state_slots, int num_seqs, int64_t T, int64_t C,
                          int K, float* conv_state, int64_t num_slots, void* out, DType act, cudaStream_t stream) {
  if (num_seqs == 0 || T == 0 || C == 0) return;
  PAGODA_CHECK(K >= 1 && K <= kMaxConvWidth, "causal_conv1d: kernel width ", K, " not supported (1 .. ",
               kMaxConvWidth, ")");
  const int64_t blocks = (C + kConvThreads - 1) / kConvThreads;
  PAGODA_CHECK(blocks <= 0x7fffffff && num_seqs <= 65535, "causal_conv1d: too many channels / sequences");
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(num_seqs));
  dispatch_act(act, "causal_conv1d", [&](auto tag) {
    using T_ = decltype(tag);
    const auto* xp = static_cast<const T_*>(x);
    auto* op = static_cast<T_*>(out);
    if (K <= 4) {
      PAGODA_LAUNCH(grid, kConvThreads, 0, stream, causal_conv1d_kernel<T_, 4>)
      (xp, weight, weight_dtype, query_start_loc, seq_lens, state_slots, T, C, K, conv_state, num_slots, op);
    } else {
      PAGODA_LAUNCH(grid, kConvThreads, 0, stream, causal_conv1d_kernel<T_, 8>)
      (xp, weight, weight_dtype, query_start_loc, seq_lens, state_slots, T, C, K, conv_state, num_slots, op);
    }
    PAGODA_CUDA_CHECK_LAUNCH();
  });
}

void launch_gated_delta_rule(const void* qkv, const void* a, const void* b, const float* A_log, const float* dt_bias,
                             const int32_t* query_start_loc, const int32_t* seq_lens, const int32_t* state_slots,
                             int num_seqs, int64_t T, int nk, int nv, int dk, int dv, float* state, int64_t num_slots,
                             void* out, DType act, cudaStream_t stream) {
  if (num_seqs == 0 || T == 0) return;
  PAGODA_CHECK(nk > 0 && nv > 0 && dk > 0 && dv > 0 && nv % nk == 0, "gated_delta_rule: bad head shape");
  PAGODA_CHECK(dk <= kMaxGdnKeyHeadDim, "gated_delta_rule: key head dim ", dk, " not supported (at most ",
               kMaxGdnKeyHeadDim, ")");
  dispatch_act(act, "gated_delta_rule", [&](auto tag) {
    using T_ = decltype(tag);
    const int rows = (dk + kGdnWarps - 1) / kGdnWarps;  // rows of S per thread
#define PAGODA_GDN_LAUNCH(R)                                                                                      \
  launch_gdn_typed<T_, R>(qkv, a, b, A_log, dt_bias, query_start_loc, seq_lens, state_slots, num_seqs, T, nk, nv, \
                          dk, dv, state, num_slots, out, stream)
    if (rows <= 4) {
      PAGODA_GDN_LAUNCH(4);
    } else if (rows <= 8) {
      PAGODA_GDN_LAUNCH(8);
    } else if (rows <= 16) {
      PAGODA_GDN_LAUNCH(16);
    } else {
      PAGODA_GDN_LAUNCH(32);
    }
#undef PAGODA_GDN_LAUNCH
  });
}

}  // namespace pagoda::cuda
