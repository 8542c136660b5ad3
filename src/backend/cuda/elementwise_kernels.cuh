// The CUDA backend's elementwise and row-wise kernels (launched by cuda_kernels.cu, whose header
// gives the conventions). Plain C++ apart from the CUDA keywords and intrinsics, so
// tests/cuda/cuda_emu.h can run this same source on the host (tests/cuda/elementwise_emu_test.cc).
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/cuda/convert.cuh"
#include "base/dtype.h"

// (Internal linkage: the host build of the emulation test defines these names too.)
namespace pagoda::cuda::elementwise_kernels {
namespace {

// V consecutive elements at p as floats: one 16-byte load when V > 1 (p is then 16-byte aligned).
template <class T, int V>
__device__ __forceinline__ void load_vec(const T* p, float (&f)[V]) {
  if constexpr (V == 1) {
    f[0] = to_f(p[0]);
  } else {
    static_assert(sizeof(T) * V == 16, "a vector is 16 bytes");
    alignas(16) T tmp[V];
    *reinterpret_cast<uint4*>(tmp) = *reinterpret_cast<const uint4*>(p);
PAGODA_UNROLL
    for (int j = 0; j < V; ++j) f[j] = to_f(tmp[j]);
  }
}

template <class T, int V>
__device__ __forceinline__ void store_vec(T* p, const float (&f)[V]) {
  if constexpr (V == 1) {
    p[0] = from_f<T>(f[0]);
  } else {
    static_assert(sizeof(T) * V == 16, "a vector is 16 bytes");
    alignas(16) T tmp[V];
PAGODA_UNROLL
    for (int j = 0; j < V; ++j) tmp[j] = from_f<T>(f[j]);
    *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(tmp);
  }
}


// Sum of v over the block, returned to every thread. blockDim.x must be a multiple of 32.
// Called at most once per kernel (its shared memory is not reused).
__device__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  __shared__ float total;
PAGODA_UNROLL
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int num_warps = blockDim.x >> 5;
    float s = lane < num_warps ? warp_sums[lane] : 0.0f;
PAGODA_UNROLL
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

// ---- embedding ------------------------------------------------------------------------------
template <class TO>
__global__ void embedding_kernel(const int32_t* ids, const void* table, DType table_dtype, int64_t V, int64_t H,
                                 TO* out) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  TO* dst = out + t * H;
  if (id < 0 || id >= V) {
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) dst[h] = from_f<TO>(__int_as_float(0x7fc00000));  // NaN
    return;
  }
  const int64_t row = static_cast<int64_t>(id) * H;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) dst[h] = from_f<TO>(load_any(table, table_dtype, row + h));
}

// ---- RMSNorm (optionally fused with the residual add) -----------------------------------------
// One block per row. Pass 1: s = residual + x (or x), sum of squares (FP32, before rounding, as
// vLLM); residual stores s rounded to T. Pass 2: out = s_stored * inv_rms * weight.
template <class T, int V>
__global__ void rms_norm_kernel(T* residual, const T* x, const void* weight, DType weight_dtype, float eps,
                                int64_t H, T* out) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t row = blockIdx.x;
  const int64_t items = H / V;
  const T* xr = x + row * H;
  T* rr = residual != nullptr ? residual + row * H : nullptr;
  T* orow = out + row * H;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    float v[V];
    load_vec<T, V>(xr + i * V, v);
    if (rr != nullptr) {
      float r[V];
      load_vec<T, V>(rr + i * V, r);
PAGODA_UNROLL
      for (int j = 0; j < V; ++j) v[j] += r[j];
      store_vec<T, V>(rr + i * V, v);
    }
PAGODA_UNROLL
    for (int j = 0; j < V; ++j) ss += v[j] * v[j];
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(H) + eps);
  const T* src = rr != nullptr ? rr : xr;  // residual: the rounded sum this thread stored above
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    float v[V];
    load_vec<T, V>(src + i * V, v);
PAGODA_UNROLL
    for (int j = 0; j < V; ++j) v[j] = v[j] * inv * load_any(weight, weight_dtype, i * V + j);
    store_vec<T, V>(orow + i * V, v);
  }
}

// out = weight * (x * inv_rms) * silu(z), one block per row.
template <class T, int V>
__global__ void rms_norm_gated_kernel(const T* x, const T* z, const void* weight, DType weight_dtype, float eps,
                                      int64_t d, T* out) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t row = blockIdx.x;
  const int64_t items = d / V;
  const T* xr = x + row * d;
  const T* zr = z + row * d;
  T* orow = out + row * d;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    float v[V];
    load_vec<T, V>(xr + i * V, v);
PAGODA_UNROLL
    for (int j = 0; j < V; ++j) ss += v[j] * v[j];
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(d) + eps);
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    float v[V], g[V];
    load_vec<T, V>(xr + i * V, v);
    load_vec<T, V>(zr + i * V, g);
PAGODA_UNROLL
    for (int j = 0; j < V; ++j) v[j] = load_any(weight, weight_dtype, i * V + j) * (v[j] * inv) * silu(g[j]);
    store_vec<T, V>(orow + i * V, v);
  }
}

// ---- RoPE -----------------------------------------------------------------------------------
// One thread per (t, i < half). As in transformers (and the CPU backend): the angle is rounded to
// F32 first, then cos / sin of it in double precision.
__global__ void rope_cos_sin_kernel(const void* positions, bool positions_i64, int64_t T, const float* inv_freq,
                                    int64_t half, float attention_factor, float* cos_sin) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t n = T * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = idx / half, i = idx % half;
    const float pos = positions_i64 ? static_cast<float>(static_cast<const int64_t*>(positions)[t])
                                    : static_cast<float>(static_cast<const int32_t*>(positions)[t]);
    const double angle = static_cast<double>(__fmul_rn(pos, inv_freq[i]));
    cos_sin[t * 2 * half + i] = static_cast<float>(cos(angle)) * attention_factor;
    cos_sin[t * 2 * half + half + i] = static_cast<float>(sin(angle)) * attention_factor;
  }
}

// One warp per head of one token: blockIdx.x is the token t, and the warps of blockIdx.y take
// heads (the Hq query heads, then the Hk key heads) kHeadsPerBlock at a time. With norm weights
// (qk_norm_rope_and_cache) the head is first normalised like rms_norm_kernel: the sum of squares
// over all D dims in FP32, x * inv_rms * weight, rounded to T. Then lane l rotates the pairs
// (i, i + half) with i = l, l + 32, ... (NeoX), and dims past rotary_dim are kept (normalised).
// Each element is read and written by one lane only (the reduction's shuffles order the reads of
// the norm before any write), so the rotation is in place. Key heads are also written to the
// cache (the rounded, rotated values), with their v head copied beside them.
constexpr int kHeadsPerBlock = 8;

template <class T>
__global__ void rope_and_cache_kernel(T* q, T* k, const T* v, const void* q_norm, const void* k_norm,
                                      DType norm_dtype, float eps, const float* cos_sin, int rotary_dim,
                                      const int32_t* slot_mapping, int64_t Hq, int64_t Hk, int64_t D, bf16* k_cache,
                                      bf16* v_cache, int64_t num_slots) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t t = blockIdx.x;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t h = static_cast<int64_t>(blockIdx.y) * kHeadsPerBlock + (threadIdx.x >> 5);
  if (h >= Hq + Hk) return;
  const bool is_k = h >= Hq;
  const int64_t kh = h - Hq;  // key head (is_k only)
  T* x = is_k ? k + (t * Hk + kh) * D : q + (t * Hq + h) * D;
  const void* w = is_k ? k_norm : q_norm;
  float inv = 1.0f;
  if (w != nullptr) {
    float ss = 0.0f;
    for (int64_t d = lane; d < D; d += 32) {
      const float f = to_f(x[d]);
      ss += f * f;
    }
PAGODA_UNROLL
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    inv = rsqrtf(ss / static_cast<float>(D) + eps);
  }
  // Dim d of the head after the norm, as rms_norm stores it (unchanged without weights).
  const auto normed = [&](int64_t d) {
    const float f = to_f(x[d]);
    return w == nullptr ? f : to_f(from_f<T>(f * inv * load_any(w, norm_dtype, d)));
  };
  const int32_t slot = slot_mapping[t];
  const bool write = is_k && slot >= 0 && slot < num_slots;
  // Cache element of (t, key head kh, dim 0) is [slot / block_size, slot % block_size, kh, 0] of the
  // [num_blocks, block_size, Hk, D] cache: (block * block_size + offset) * Hk * D = slot * Hk * D.
  const int64_t base = write ? static_cast<int64_t>(slot) * Hk * D + kh * D : 0;
  const int64_t half = rotary_dim / 2;
  const float* c = cos_sin + t * rotary_dim;
  for (int64_t i = lane; i < half; i += 32) {
    const float x1 = normed(i), x2 = normed(i + half);
    const T r1 = from_f<T>(x1 * c[i] - x2 * c[half + i]);
    const T r2 = from_f<T>(x2 * c[i] + x1 * c[half + i]);
    x[i] = r1;
    x[i + half] = r2;
    if (write) {
      k_cache[base + i] = from_f<bf16>(to_f(r1));
      k_cache[base + i + half] = from_f<bf16>(to_f(r2));
    }
  }
  for (int64_t d = rotary_dim + lane; d < D; d += 32) {
    const T r = from_f<T>(normed(d));
    if (w != nullptr) x[d] = r;
    if (write) k_cache[base + d] = from_f<bf16>(to_f(r));
  }
  if (write) {
    const T* vh = v + (t * Hk + kh) * D;
    for (int64_t d = lane; d < D; d += 32) v_cache[base + d] = from_f<bf16>(to_f(vh[d]));
  }
}

// ---- elementwise ------------------------------------------------------------------------------
template <class T, int V>
__global__ void silu_and_mul_kernel(const T* gate, const T* up, T* out, int64_t items) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float g[V], u[V];
    load_vec<T, V>(gate + i * V, g);
    load_vec<T, V>(up + i * V, u);
PAGODA_UNROLL
    for (int j = 0; j < V; ++j) g[j] = silu(g[j]) * u[j];
    store_vec<T, V>(out + i * V, g);
  }
}

template <class T, int V>
__global__ void add_kernel(T* a, const T* b, int64_t items) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float x[V], y[V];
    load_vec<T, V>(a + i * V, x);
    load_vec<T, V>(b + i * V, y);
PAGODA_UNROLL
    for (int j = 0; j < V; ++j) x[j] += y[j];
    store_vec<T, V>(a + i * V, x);
  }
}

// One thread per element of x [R, N].
template <class T>
__global__ void sigmoid_mul_kernel(T* x, const void* gate, DType gate_dtype, bool broadcast, int64_t R, int64_t N) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t n = R * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = load_any(gate, gate_dtype, broadcast ? i / N : i);
    x[i] = from_f<T>(to_f(x[i]) * sigmoid(g));
  }
}

// One block per output row; U is the copy unit (uint4 when rows and pointers are 16-byte aligned,
// else unsigned char). row_units = row bytes / sizeof(U).
template <class U>
__global__ void gather_rows_kernel(const U* x, int64_t R, int64_t row_units, const int32_t* indices, U* out) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t i = blockIdx.x;
  const int32_t src = indices[i];
  U* dst = out + i * row_units;
  if (src < 0 || src >= R) {
    for (int64_t j = threadIdx.x; j < row_units; j += blockDim.x) dst[j] = U{};
    return;
  }
  const U* s = x + static_cast<int64_t>(src) * row_units;
  for (int64_t j = threadIdx.x; j < row_units; j += blockDim.x) dst[j] = s[j];
}

__global__ void feed_tokens_kernel(int32_t* ids, const int32_t* feed, int64_t n, const int32_t* sampled) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) ids[feed[2 * i]] = sampled[feed[2 * i + 1]];
}

template <class TO>
__global__ void fill_bias_rows_kernel(const void* bias, DType bias_dtype, int64_t T, int64_t N, TO* out) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t n = T * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = from_f<TO>(load_any(bias, bias_dtype, i % N));
}

// ---- fallback GEMM ------------------------------------------------------------------------------
// 16 x 16 output tile per block (threadIdx.y: token row, threadIdx.x: output column); the K loop
// stages a 16 x 16 tile of x and of w in shared memory. out[t, n] = sum_k x[t, k] * w[n, k].
constexpr int kTile = 16;

template <class TX, class TO>
__global__ void gemm_fallback_kernel(const TX* x, const void* w, DType w_dtype, const void* bias, DType bias_dtype,
                                     TO* out, int64_t T, int64_t N, int64_t K) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  __shared__ float xs[kTile][kTile + 1];  // xs[r][kk] = x[row0 + r, k0 + kk]
  __shared__ float ws[kTile][kTile + 1];  // ws[c][kk] = w[col0 + c, k0 + kk]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile, col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    const int64_t kk = k0 + tx;
    xs[ty][tx] = (row0 + ty < T && kk < K) ? to_f(x[(row0 + ty) * K + kk]) : 0.0f;
    ws[ty][tx] = (col0 + ty < N && kk < K) ? load_any(w, w_dtype, (col0 + ty) * K + kk) : 0.0f;
    __syncthreads();
PAGODA_UNROLL
    for (int j = 0; j < kTile; ++j) acc += xs[ty][j] * ws[tx][j];
    __syncthreads();
  }
  const int64_t row = row0 + ty, col = col0 + tx;
  if (row < T && col < N) {
    if (bias != nullptr) acc += load_any(bias, bias_dtype, col);
    out[row * N + col] = from_f<TO>(acc);
  }
}

}  // namespace
}  // namespace pagoda::cuda::elementwise_kernels
