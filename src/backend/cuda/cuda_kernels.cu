// The CUDA backend's elementwise and row-wise kernels. Conventions:
//  - all math in FP32; values are converted on load and rounded once on store;
//  - row-wise ops run one thread block per row (blockDim a multiple of 32, at most 1024) and
//    reduce with warp shuffles;
//  - where a row / array is 16-byte aligned and its length a multiple of 16 / sizeof(T), each
//    thread moves 16 bytes at a time (V elements); otherwise one element at a time (V = 1).
//    Both take the same code path, templated on V;
//  - a thread always writes only the elements it read itself, so in-place use (out aliasing an
//    input) is safe.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/convert.cuh"
#include "backend/cuda/cuda_kernels.h"

namespace pagoda::cuda {
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
#pragma unroll
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
#pragma unroll
    for (int j = 0; j < V; ++j) tmp[j] = from_f<T>(f[j]);
    *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(tmp);
  }
}


// Sum of v over the block, returned to every thread. blockDim.x must be a multiple of 32.
// Called at most once per kernel (its shared memory is not reused).
__device__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  __shared__ float total;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int num_warps = blockDim.x >> 5;
    float s = lane < num_warps ? warp_sums[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

// ---- launch helpers ---------------------------------------------------------------------------
constexpr int kThreads = 256;
// Grid-stride kernels never need more blocks than this to fill a GPU.
constexpr int64_t kMaxBlocks = 65536;

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Threads per row-block: enough for `items` vector items, a multiple of 32, within [32, 1024].
int row_threads(int64_t items) {
  const int64_t t = (items + 31) / 32 * 32;
  return static_cast<int>(std::clamp<int64_t>(t, 32, 1024));
}

int grid_for(int64_t items) {
  return static_cast<int>(std::clamp<int64_t>((items + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

// Calls f.template operator()<T>() for act in {BF16, F32}.
template <class F>
void dispatch_act(DType act, const char* op, F&& f) {
  switch (act) {
    case DType::kBF16: f(bf16{}); break;
    case DType::kF32: f(float{}); break;
    default: fail(op, ": activation dtype must be BF16 or F32, got ", dtype_name(act));
  }
}

// ---- embedding ------------------------------------------------------------------------------
template <class TO>
__global__ void embedding_kernel(const int32_t* ids, const void* table, DType table_dtype, int64_t V, int64_t H,
                                 TO* out) {
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
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] += r[j];
      store_vec<T, V>(rr + i * V, v);
    }
#pragma unroll
    for (int j = 0; j < V; ++j) ss += v[j] * v[j];
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(H) + eps);
  const T* src = rr != nullptr ? rr : xr;  // residual: the rounded sum this thread stored above
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    float v[V];
    load_vec<T, V>(src + i * V, v);
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = v[j] * inv * load_any(weight, weight_dtype, i * V + j);
    store_vec<T, V>(orow + i * V, v);
  }
}

// out = weight * (x * inv_rms) * silu(z), one block per row.
template <class T, int V>
__global__ void rms_norm_gated_kernel(const T* x, const T* z, const void* weight, DType weight_dtype, float eps,
                                      int64_t d, T* out) {
  const int64_t row = blockIdx.x;
  const int64_t items = d / V;
  const T* xr = x + row * d;
  const T* zr = z + row * d;
  T* orow = out + row * d;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    float v[V];
    load_vec<T, V>(xr + i * V, v);
#pragma unroll
    for (int j = 0; j < V; ++j) ss += v[j] * v[j];
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(d) + eps);
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    float v[V], g[V];
    load_vec<T, V>(xr + i * V, v);
    load_vec<T, V>(zr + i * V, g);
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = load_any(weight, weight_dtype, i * V + j) * (v[j] * inv) * silu(g[j]);
    store_vec<T, V>(orow + i * V, v);
  }
}

// ---- RoPE -----------------------------------------------------------------------------------
// One thread per (t, i < half). As in transformers (and the CPU backend): the angle is rounded to
// F32 first, then cos / sin of it in double precision.
__global__ void rope_cos_sin_kernel(const void* positions, bool positions_i64, int64_t T, const float* inv_freq,
                                    int64_t half, float attention_factor, float* cos_sin) {
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

// One block per token t. Each (head, i < half) pair is rotated by one thread, which writes both
// rotated elements back (and, for k, into the cache). Elements past rotary_dim are copied as is.
template <class T>
__global__ void rope_and_cache_kernel(T* q, T* k, const T* v, const float* cos_sin, int rotary_dim,
                                      const int32_t* slot_mapping, int64_t Hq, int64_t Hk, int64_t D, bf16* k_cache,
                                      bf16* v_cache, int64_t num_slots, int64_t block_size) {
  const int64_t t = blockIdx.x;
  const int64_t half = rotary_dim / 2;
  const float* c = cos_sin + t * rotary_dim;
  // q: rotate in place.
  for (int64_t idx = threadIdx.x; idx < Hq * half; idx += blockDim.x) {
    T* x = q + (t * Hq + idx / half) * D;
    const int64_t i = idx % half;
    const float x1 = to_f(x[i]), x2 = to_f(x[i + half]);
    x[i] = from_f<T>(x1 * c[i] - x2 * c[half + i]);
    x[i + half] = from_f<T>(x2 * c[i] + x1 * c[half + i]);
  }
  const int32_t slot = slot_mapping[t];
  const bool write = slot >= 0 && slot < num_slots;
  // Cache element of (t, head h, dim 0) is [slot / block_size, slot % block_size, h, 0] of the
  // [num_blocks, block_size, Hk, D] cache: (block * block_size + offset) * Hk * D = slot * Hk * D.
  const int64_t base = write ? static_cast<int64_t>(slot) * Hk * D : 0;
  // k: rotate in place and write the rotated (rounded) values to the cache; v: copy.
  for (int64_t idx = threadIdx.x; idx < Hk * D; idx += blockDim.x) {
    const int64_t h = idx / D, d = idx % D;
    T* x = k + (t * Hk + h) * D;
    bf16* kc = k_cache + base + h * D;
    if (d < half) {
      const float x1 = to_f(x[d]), x2 = to_f(x[d + half]);
      const T r1 = from_f<T>(x1 * c[d] - x2 * c[half + d]);
      const T r2 = from_f<T>(x2 * c[d] + x1 * c[half + d]);
      x[d] = r1;
      x[d + half] = r2;
      if (write) {
        kc[d] = from_f<bf16>(to_f(r1));
        kc[d + half] = from_f<bf16>(to_f(r2));
      }
    } else if (d >= rotary_dim && write) {  // d in [half, rotary_dim) is written by its partner d - half
      kc[d] = from_f<bf16>(to_f(x[d]));
    }
    if (write) v_cache[base + h * D + d] = from_f<bf16>(to_f(v[(t * Hk + h) * D + d]));
  }
}

// ---- elementwise ------------------------------------------------------------------------------
template <class T, int V>
__global__ void silu_and_mul_kernel(const T* gate, const T* up, T* out, int64_t items) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float g[V], u[V];
    load_vec<T, V>(gate + i * V, g);
    load_vec<T, V>(up + i * V, u);
#pragma unroll
    for (int j = 0; j < V; ++j) g[j] = silu(g[j]) * u[j];
    store_vec<T, V>(out + i * V, g);
  }
}

template <class T, int V>
__global__ void add_kernel(T* a, const T* b, int64_t items) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float x[V], y[V];
    load_vec<T, V>(a + i * V, x);
    load_vec<T, V>(b + i * V, y);
#pragma unroll
    for (int j = 0; j < V; ++j) x[j] += y[j];
    store_vec<T, V>(a + i * V, x);
  }
}

// One thread per element of x [R, N].
template <class T>
__global__ void sigmoid_mul_kernel(T* x, const void* gate, DType gate_dtype, bool broadcast, int64_t R, int64_t N) {
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
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) ids[feed[2 * i]] = sampled[feed[2 * i + 1]];
}

template <class TO>
__global__ void fill_bias_rows_kernel(const void* bias, DType bias_dtype, int64_t T, int64_t N, TO* out) {
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
#pragma unroll
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

// ---- launchers --------------------------------------------------------------------------------

void launch_embedding(const int32_t* ids, int64_t T, const void* table, DType table_dtype, int64_t V, int64_t H,
                      void* out, DType out_dtype, cudaStream_t stream) {
  if (T == 0 || H == 0) return;
  dispatch_act(out_dtype, "embedding", [&](auto tag) {
    using TO = decltype(tag);
    embedding_kernel<TO><<<static_cast<unsigned>(T), row_threads(H), 0, stream>>>(ids, table, table_dtype, V, H,
                                                                                  static_cast<TO*>(out));
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_rms_norm(void* residual, const void* x, const void* weight, DType weight_dtype, float eps, int64_t rows,
                     int64_t H, void* out, DType act, cudaStream_t stream) {
  if (rows == 0 || H == 0) return;
  dispatch_act(act, "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    constexpr int VV = 16 / sizeof(T);
    const bool vec = H % VV == 0 && aligned16(residual) && aligned16(x) && aligned16(out);  // rows stay aligned
    T* r = static_cast<T*>(residual);
    const T* xp = static_cast<const T*>(x);
    T* o = static_cast<T*>(out);
    const unsigned grid = static_cast<unsigned>(rows);
    if (vec) {
      rms_norm_kernel<T, VV><<<grid, row_threads(H / VV), 0, stream>>>(r, xp, weight, weight_dtype, eps, H, o);
    } else {
      rms_norm_kernel<T, 1><<<grid, row_threads(H), 0, stream>>>(r, xp, weight, weight_dtype, eps, H, o);
    }
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_rms_norm_gated(const void* x, const void* z, const void* weight, DType weight_dtype, float eps,
                           int64_t rows, int64_t d, void* out, DType act, cudaStream_t stream) {
  if (rows == 0 || d == 0) return;
  dispatch_act(act, "rms_norm_gated", [&](auto tag) {
    using T = decltype(tag);
    constexpr int VV = 16 / sizeof(T);
    const bool vec = d % VV == 0 && aligned16(x) && aligned16(z) && aligned16(out);
    const T* xp = static_cast<const T*>(x);
    const T* zp = static_cast<const T*>(z);
    T* o = static_cast<T*>(out);
    const unsigned grid = static_cast<unsigned>(rows);
    if (vec) {
      rms_norm_gated_kernel<T, VV><<<grid, row_threads(d / VV), 0, stream>>>(xp, zp, weight, weight_dtype, eps, d, o);
    } else {
      rms_norm_gated_kernel<T, 1><<<grid, row_threads(d), 0, stream>>>(xp, zp, weight, weight_dtype, eps, d, o);
    }
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_rope_cos_sin(const void* positions, bool positions_i64, int64_t T, const float* inv_freq, int64_t half,
                         float attention_factor, float* cos_sin, cudaStream_t stream) {
  if (T == 0 || half == 0) return;
  rope_cos_sin_kernel<<<grid_for(T * half), kThreads, 0, stream>>>(positions, positions_i64, T, inv_freq, half,
                                                                   attention_factor, cos_sin);
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_rope_and_cache(void* q, void* k, const void* v, DType act, const float* cos_sin, int rotary_dim,
                           const int32_t* slot_mapping, int64_t T, int64_t Hq, int64_t Hk, int64_t D,
                           void* k_cache, void* v_cache, int64_t num_blocks, int64_t block_size,
                           cudaStream_t stream) {
  if (T == 0) return;
  dispatch_act(act, "rope_and_cache", [&](auto tag) {
    using T_ = decltype(tag);
    rope_and_cache_kernel<T_><<<static_cast<unsigned>(T), kThreads, 0, stream>>>(
        static_cast<T_*>(q), static_cast<T_*>(k), static_cast<const T_*>(v), cos_sin, rotary_dim, slot_mapping, Hq, Hk,
        D, static_cast<bf16*>(k_cache), static_cast<bf16*>(v_cache), num_blocks * block_size, block_size);
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_silu_and_mul(const void* gate, const void* up, void* out, int64_t n, DType act, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_act(act, "silu_and_mul", [&](auto tag) {
    using T = decltype(tag);
    constexpr int VV = 16 / sizeof(T);
    const T* g = static_cast<const T*>(gate);
    const T* u = static_cast<const T*>(up);
    T* o = static_cast<T*>(out);
    if (n % VV == 0 && aligned16(gate) && aligned16(up) && aligned16(out)) {
      silu_and_mul_kernel<T, VV><<<grid_for(n / VV), kThreads, 0, stream>>>(g, u, o, n / VV);
    } else {
      silu_and_mul_kernel<T, 1><<<grid_for(n), kThreads, 0, stream>>>(g, u, o, n);
    }
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_add(void* a, const void* b, int64_t n, DType act, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_act(act, "add", [&](auto tag) {
    using T = decltype(tag);
    constexpr int VV = 16 / sizeof(T);
    T* ap = static_cast<T*>(a);
    const T* bp = static_cast<const T*>(b);
    if (n % VV == 0 && aligned16(a) && aligned16(b)) {
      add_kernel<T, VV><<<grid_for(n / VV), kThreads, 0, stream>>>(ap, bp, n / VV);
    } else {
      add_kernel<T, 1><<<grid_for(n), kThreads, 0, stream>>>(ap, bp, n);
    }
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_sigmoid_mul(void* x, const void* gate, DType gate_dtype, bool gate_broadcast, int64_t R, int64_t N,
                        DType act, cudaStream_t stream) {
  if (R == 0 || N == 0) return;
  dispatch_act(act, "sigmoid_mul", [&](auto tag) {
    using T = decltype(tag);
    sigmoid_mul_kernel<T><<<grid_for(R * N), kThreads, 0, stream>>>(static_cast<T*>(x), gate, gate_dtype,
                                                                    gate_broadcast, R, N);
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_gather_rows(const void* x, int64_t R, size_t row_bytes, const int32_t* indices, int64_t n, void* out,
                        cudaStream_t stream) {
  if (n == 0 || row_bytes == 0) return;
  const unsigned grid = static_cast<unsigned>(n);
  if (row_bytes % 16 == 0 && aligned16(x) && aligned16(out)) {
    const int64_t units = static_cast<int64_t>(row_bytes / 16);
    gather_rows_kernel<uint4><<<grid, row_threads(units), 0, stream>>>(static_cast<const uint4*>(x), R, units, indices,
                                                                       static_cast<uint4*>(out));
  } else {
    const int64_t units = static_cast<int64_t>(row_bytes);
    gather_rows_kernel<unsigned char><<<grid, row_threads(units), 0, stream>>>(
        static_cast<const unsigned char*>(x), R, units, indices, static_cast<unsigned char*>(out));
  }
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_feed_tokens(int32_t* ids, const int32_t* feed, int64_t n, const int32_t* sampled, cudaStream_t stream) {
  if (n == 0) return;
  feed_tokens_kernel<<<grid_for(n), kThreads, 0, stream>>>(ids, feed, n, sampled);
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_fill_bias_rows(const void* bias, DType bias_dtype, int64_t T, int64_t N, void* out, DType out_dtype,
                           cudaStream_t stream) {
  if (T == 0 || N == 0) return;
  dispatch_act(out_dtype, "linear", [&](auto tag) {
    using TO = decltype(tag);
    fill_bias_rows_kernel<TO><<<grid_for(T * N), kThreads, 0, stream>>>(bias, bias_dtype, T, N, static_cast<TO*>(out));
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_gemm_fallback(const void* x, DType x_dtype, const void* w, DType w_dtype, const void* bias,
                          DType bias_dtype, void* out, DType out_dtype, int64_t T, int64_t N, int64_t K,
                          cudaStream_t stream) {
  if (T == 0 || N == 0) return;
  PAGODA_CHECK((T + kTile - 1) / kTile <= 65535, "linear: ", T, " rows are too many for the fallback GEMM");
  const dim3 block(kTile, kTile);
  const dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>((T + kTile - 1) / kTile));
  dispatch_act(x_dtype, "linear", [&](auto xtag) {
    using TX = decltype(xtag);
    dispatch_act(out_dtype, "linear", [&](auto otag) {
      using TO = decltype(otag);
      gemm_fallback_kernel<TX, TO><<<grid, block, 0, stream>>>(static_cast<const TX*>(x), w, w_dtype, bias, bias_dtype,
                                                               static_cast<TO*>(out), T, N, K);
    });
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

}  // namespace pagoda::cuda
