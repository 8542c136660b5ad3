// The Gated DeltaNet kernels of the CUDA backend (launched by cuda_gdn.cu, whose header describes
// them). Plain C++ apart from the CUDA keywords and intrinsics, so tests/cuda/cuda_emu.h can run
// this same source on the host (tests/cuda/gdn_emu_test.cc).
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/backend.h"
#include "backend/cuda/convert.cuh"
#include "base/dtype.h"

// (Internal linkage: the host build of the emulation test defines these names too.)
namespace pagoda::cuda::gdn_kernels {
namespace {

__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }  // torch's threshold

// ---- causal conv1d ---------------------------------------------------------------------------
constexpr int kConvThreads = 128;

// KMAX >= K: the window w[0 .. KMAX) holds inputs right-aligned (the newest at KMAX - 1), so all
// register indices are compile-time constants; entries left of KMAX - K are never used.
template <class T, int KMAX>
__global__ void __launch_bounds__(kConvThreads)
    causal_conv1d_kernel(const T* x, const void* weight, DType weight_dtype, const int32_t* qsl,
                         const int32_t* seq_lens, const int32_t* slots, int64_t T_total, int64_t C, int K,
                         float* conv_state, int64_t num_slots, T* out) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int s = blockIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kConvThreads + threadIdx.x;
  if (c >= C) return;
  const int64_t begin = qsl[s], end = qsl[s + 1];
  if (begin < 0 || end < begin || end > T_total || begin == end) return;
  const int64_t len = end - begin;
  const int64_t slot = slots[s];
  if (slot < 0 || slot >= num_slots) {  // a padding sequence: zeros; a bad slot: NaN
    const float v = slot == AttentionMetadata::kPaddingSlot ? 0.0f : nan_f();
    for (int64_t t = begin; t < end; ++t) out[t * C + c] = from_f<T>(v);
    return;
  }
  const bool fresh = seq_lens[s] == len;
  const int H = K - 1;
  float* hist = conv_state + (slot * C + c) * H;
  float wt[KMAX], win[KMAX];
PAGODA_UNROLL
  for (int j = 0; j < KMAX; ++j) {
    const int m = j - (KMAX - K);  // tap m of weight[c, :]
    wt[j] = m >= 0 ? load_any(weight, weight_dtype, c * K + m) : 0.0f;
    const int hm = j - (KMAX - H);  // history entry hm (oldest first)
    win[j] = (hm >= 0 && !fresh) ? hist[hm] : 0.0f;
  }
  for (int64_t t = begin; t < end; ++t) {
PAGODA_UNROLL
    for (int j = 0; j + 1 < KMAX; ++j) win[j] = win[j + 1];
    win[KMAX - 1] = to_f(x[t * C + c]);
    float acc = 0.0f;
PAGODA_UNROLL
    for (int j = 0; j < KMAX; ++j)
      if (j >= KMAX - K) acc += wt[j] * win[j];
    out[t * C + c] = from_f<T>(silu(acc));
  }
PAGODA_UNROLL
  for (int j = 0; j < KMAX; ++j) {
    const int hm = j - (KMAX - H);
    if (hm >= 0) hist[hm] = win[j];
  }
}

// ---- gated delta rule ------------------------------------------------------------------------
constexpr int kGdnWarps = 8;    // warps per block: the split of the d_k rows of S
constexpr int kGdnColumns = 32;  // value columns per block (one per lane)

template <class T, int MAXR>  // MAXR: rows of S per thread, d_k <= kGdnWarps * MAXR
__global__ void __launch_bounds__(kGdnWarps * 32)
    gated_delta_rule_kernel(const T* qkv, const T* a, const T* b, const float* A_log, const float* dt_bias,
                            const int32_t* qsl, const int32_t* seq_lens, const int32_t* slots, int64_t T_total,
                            int nk, int nv, int dk, int dv, float* states, int64_t num_slots, T* out) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  __shared__ float qs[kGdnWarps * MAXR], ks[kGdnWarps * MAXR];
  __shared__ float norm_part[2][kGdnWarps];
  __shared__ float kv_part[kGdnWarps][kGdnColumns];
  __shared__ float o_part[kGdnWarps][kGdnColumns];

  const int s = blockIdx.y;
  const int tiles = (dv + kGdnColumns - 1) / kGdnColumns;
  const int h = blockIdx.x / tiles, tile = blockIdx.x % tiles;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j = tile * kGdnColumns + lane;
  const bool col_ok = j < dv;
  const int64_t begin = qsl[s], end = qsl[s + 1];
  if (begin < 0 || end < begin || end > T_total || begin == end) return;  // uniform over the block
  const int64_t len = end - begin;
  const int64_t out_stride = static_cast<int64_t>(nv) * dv;
  const int64_t slot = slots[s];
  if (slot < 0 || slot >= num_slots) {  // a padding sequence: zeros; a bad slot: NaN
    const float v = slot == AttentionMetadata::kPaddingSlot ? 0.0f : nan_f();
    if (warp == 0 && col_ok)
      for (int64_t t = begin; t < end; ++t) out[t * out_stride + static_cast<int64_t>(h) * dv + j] = from_f<T>(v);
    return;
  }
  const bool fresh = seq_lens[s] == len;
  float* S = states + (slot * nv + h) * static_cast<int64_t>(dk) * dv;

  float st[MAXR];
PAGODA_UNROLL
  for (int r = 0; r < MAXR; ++r) {
    const int i = warp + kGdnWarps * r;
    st[r] = (!fresh && col_ok && i < dk) ? S[static_cast<int64_t>(i) * dv + j] : 0.0f;
  }

  const int kh = h / (nv / nk);
  const int64_t conv_dim = 2 * static_cast<int64_t>(nk) * dk + static_cast<int64_t>(nv) * dv;
  const float A = -expf(A_log[h]);
  const float bias = dt_bias[h];
  const float qscale = 1.0f / sqrtf(static_cast<float>(dk));

  for (int64_t t = begin; t < end; ++t) {
    const T* row = qkv + t * conv_dim;
    // 1. q, k of key head kh into shared memory, squared norms.
    float qq = 0.0f, kk = 0.0f;
    for (int i = threadIdx.x; i < dk; i += kGdnWarps * 32) {
      const float qv = to_f(row[static_cast<int64_t>(kh) * dk + i]);
      const float kv = to_f(row[static_cast<int64_t>(nk) * dk + static_cast<int64_t>(kh) * dk + i]);
      qs[i] = qv;
      ks[i] = kv;
      qq += qv * qv;
      kk += kv * kv;
    }
PAGODA_UNROLL
    for (int o = 16; o > 0; o >>= 1) {
      qq += __shfl_xor_sync(0xffffffffu, qq, o);
      kk += __shfl_xor_sync(0xffffffffu, kk, o);
    }
    if (lane == 0) {
      norm_part[0][warp] = qq;
      norm_part[1][warp] = kk;
    }
    __syncthreads();  // A
    qq = 0.0f;
    kk = 0.0f;
PAGODA_UNROLL
    for (int w = 0; w < kGdnWarps; ++w) {
      qq += norm_part[0][w];
      kk += norm_part[1][w];
    }
    const float qn = qscale / sqrtf(qq + 1e-6f), kn = 1.0f / sqrtf(kk + 1e-6f);
    const float g = A * softplus(to_f(a[t * nv + h]) + bias);
    const float decay = expf(g);
    const float beta = sigmoid(to_f(b[t * nv + h]));
    const float v = col_ok ? to_f(row[2 * static_cast<int64_t>(nk) * dk + static_cast<int64_t>(h) * dv + j]) : 0.0f;

    // 2. kv = S^T k (normalised k).
    float p = 0.0f;
PAGODA_UNROLL
    for (int r = 0; r < MAXR; ++r) {
      const int i = warp + kGdnWarps * r;
      if (i < dk) p += st[r] * (ks[i] * kn);
    }
    kv_part[warp][lane] = p;
    __syncthreads();  // B
    float kvs = 0.0f;
PAGODA_UNROLL
    for (int w = 0; w < kGdnWarps; ++w) kvs += kv_part[w][lane];

    // 3. Decay + rank-1 update, o = S^T q (scaled, normalised q) in the same pass.
    const float delta = (v - decay * kvs) * beta;
    float po = 0.0f;
PAGODA_UNROLL
    for (int r = 0; r < MAXR; ++r) {
      const int i = warp + kGdnWarps * r;
      if (i < dk) {
        st[r] = decay * st[r] + (ks[i] * kn) * delta;
        po += st[r] * (qs[i] * qn);
      }
    }
    o_part[warp][lane] = po;
    __syncthreads();  // C (also: every thread is done with qs / ks / norm_part of this token)
    if (warp == 0 && col_ok) {
      float o = 0.0f;
PAGODA_UNROLL
      for (int w = 0; w < kGdnWarps; ++w) o += o_part[w][lane];
      out[t * out_stride + static_cast<int64_t>(h) * dv + j] = from_f<T>(o);
    }
  }

  if (col_ok) {
PAGODA_UNROLL
    for (int r = 0; r < MAXR; ++r) {
      const int i = warp + kGdnWarps * r;
      if (i < dk) S[static_cast<int64_t>(i) * dv + j] = st[r];
    }
  }
}

}  // namespace
}  // namespace pagoda::cuda::gdn_kernels
