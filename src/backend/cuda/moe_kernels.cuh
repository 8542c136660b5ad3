// The CUDA backend's mixture-of-experts kernels (launched by cuda_moe.cu, whose header describes
// them). Plain C++ apart from the CUDA keywords and intrinsics, so tests/cuda/cuda_emu.h can run
// this same source on the host (tests/cuda/moe_emu_test.cc).
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>

#include "backend/cuda/convert.cuh"
#include "backend/cuda/kernel_macros.cuh"
#include "backend/cuda/moe_limits.h"

// (Internal linkage: the host build of the emulation test defines these names too.)
namespace pagoda::cuda::moe_kernels {
namespace {

// ---- block reductions / scan (blockDim.x a multiple of 32, at most 1024) ---------------------
// Every thread gets the result. `buf` is shared scratch of 32 elements; the trailing barrier
// makes it reusable right away.
__device__ float block_max(float v, float* buf) {
PAGODA_UNROLL
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  float r = buf[0];
  for (int w = 1; w < nw; ++w) r = fmaxf(r, buf[w]);
  __syncthreads();
  return r;
}

__device__ float block_sum(float v, float* buf) {
PAGODA_UNROLL
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  float r = 0.0f;
  for (int w = 0; w < nw; ++w) r += buf[w];
  __syncthreads();
  return r;
}

// Exclusive prefix sum of v over the threads of the block; *total = sum of all v.
__device__ int block_exclusive_scan(int v, int* buf, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  int incl = v;
PAGODA_UNROLL
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += n;
  }
  if (lane == 31) buf[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int s = lane < nw ? buf[lane] : 0;
PAGODA_UNROLL
    for (int o = 1; o < 32; o <<= 1) {
      const int n = __shfl_up_sync(0xffffffffu, s, o);
      if (lane >= o) s += n;
    }
    if (lane < nw) buf[lane] = s;  // inclusive warp totals
  }
  __syncthreads();
  const int prefix = warp > 0 ? buf[warp - 1] : 0;
  *total = buf[nw - 1];
  __syncthreads();
  return prefix + incl - v;
}

// (v, i) beats (bv, bi): higher probability, ties to the lower id. NaN never wins.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

// ---- routing ------------------------------------------------------------------------------------
constexpr int kRouteThreads = 256;

__global__ void __launch_bounds__(kRouteThreads)
    moe_route_kernel(const float* logits, int64_t E, int top_k, bool renormalize, int32_t* ids, float* weights) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  PAGODA_DYNAMIC_SHARED(float, p);  // [E]
  __shared__ float fbuf[32];
  __shared__ float wv[32];
  __shared__ int wi[32];
  __shared__ float sel_w[kMoeMaxTopK];
  const int64_t t = blockIdx.x;
  const float* l = logits + t * E;
  float mx = -INFINITY;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) mx = fmaxf(mx, l[e]);
  mx = block_max(mx, fbuf);
  float sum = 0.0f;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    const float ex = expf(l[e] - mx);
    p[e] = ex;
    sum += ex;
  }
  sum = block_sum(sum, fbuf);
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) p[e] = p[e] / sum;
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int j = 0; j < top_k; ++j) {
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x)
      if (better(p[e], static_cast<int>(e), bv, bi)) {
        bv = p[e];
        bi = static_cast<int>(e);
      }
PAGODA_UNROLL
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      wv[warp] = bv;
      wi[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < nw; ++w)
        if (better(wv[w], wi[w], bv, bi)) {
          bv = wv[w];
          bi = wi[w];
        }
      if (bi == INT_MAX) {  // no candidate left (NaN logits): an invalid id, moe_experts gives NaN
        ids[t * top_k + j] = -1;
        sel_w[j] = nan_f();
      } else {
        ids[t * top_k + j] = bi;
        sel_w[j] = bv;
        p[bi] = nan_f();  // out of the running
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    float s = 1.0f;
    if (renormalize) {
      s = 0.0f;
      for (int j = 0; j < top_k; ++j) s += sel_w[j];
    }
    for (int j = 0; j < top_k; ++j) weights[t * top_k + j] = renormalize ? sel_w[j] / s : sel_w[j];
  }
}

// ---- counting sort of the (token, expert) pairs ------------------------------------------------
constexpr int kSortThreads = 1024;  // >= kMoeMaxExperts: one expert per thread in the scan

__global__ void __launch_bounds__(kSortThreads)
    moe_sort_kernel(const int32_t* ids, int64_t R, int E, int32_t* row_of_pair, int32_t* pair_of_row,
                    int32_t* offsets) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  PAGODA_DYNAMIC_SHARED(int, smem);
  int* cnt = smem;         // [E]
  int* cursor = smem + E;  // [E]
  __shared__ int buf[32];
  for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  for (int64_t p = threadIdx.x; p < R; p += blockDim.x) {
    const int32_t e = ids[p];
    if (e >= 0 && e < E) atomicAdd(&cnt[e], 1);
  }
  __syncthreads();
  const int e = threadIdx.x;
  int total = 0;
  const int excl = block_exclusive_scan(e < E ? cnt[e] : 0, buf, &total);
  if (e < E) {
    cursor[e] = excl;
    offsets[e] = excl;
  }
  if (threadIdx.x == 0) offsets[E] = total;
  __syncthreads();
  for (int64_t p = threadIdx.x; p < R; p += blockDim.x) {
    const int32_t id = ids[p];
    if (id >= 0 && id < E) {
      const int row = atomicAdd(&cursor[id], 1);
      row_of_pair[p] = row;
      pair_of_row[row] = static_cast<int32_t>(p);
    } else {
      row_of_pair[p] = -1;
    }
  }
}

// ---- grouped GEMM -------------------------------------------------------------------------------
constexpr int kBM = 32, kBN = 64, kBK = 32, kGemmThreads = 256;

// out[r, n] for the rows r of one expert tile: gate/up (kGateUp): A row r = x[pair_of_row[r] /
// top_k], w0 = gate_e, w1 = up_e, out = silu(A w0^T) * (A w1^T); down: A row r = A[r], w0 = down_e,
// out = A w0^T. wptrs[e] (and wptrs[E + e]) are the experts' [N, K] matrices.
template <class TA, class TW, bool kGateUp>
__global__ void __launch_bounds__(kGemmThreads)
    moe_gemm_kernel(const TA* A, const int32_t* pair_of_row, int top_k, const int32_t* offsets, int E,
                    const void* const* wptrs, int64_t N, int64_t K, TA* out) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  __shared__ int buf[32];
  __shared__ int s_expert, s_tile;
  __shared__ float As[kBM][kBK + 1];
  __shared__ float W0s[kBN][kBK + 1];
  __shared__ float W1s[kGateUp ? kBN : 1][kBK + 1];
  const int tid = threadIdx.x;

  // Which expert / row tile is this block? Tiles are numbered expert by expert.
  if (tid == 0) s_expert = -1;
  const int b = blockIdx.x;
  const int chunk = (E + kGemmThreads - 1) / kGemmThreads;
  const int e0 = min(E, tid * chunk), e1 = min(E, e0 + chunk);
  int local = 0;
  for (int e = e0; e < e1; ++e) local += (offsets[e + 1] - offsets[e] + kBM - 1) / kBM;
  int total = 0;
  int start = block_exclusive_scan(local, buf, &total);  // its barriers order s_expert's init
  for (int e = e0; e < e1; ++e) {
    const int nt = (offsets[e + 1] - offsets[e] + kBM - 1) / kBM;
    if (b >= start && b < start + nt) {
      s_expert = e;
      s_tile = b - start;
    }
    start += nt;
  }
  __syncthreads();
  const int expert = s_expert;
  if (expert < 0) return;  // past the last tile (uniform over the block)
  const int64_t row0 = offsets[expert] + static_cast<int64_t>(s_tile) * kBM;
  const int64_t row_end = min(static_cast<int64_t>(offsets[expert + 1]), row0 + kBM);
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const TW* w0 = static_cast<const TW*>(wptrs[expert]);
  const TW* w1 = kGateUp ? static_cast<const TW*>(wptrs[E + expert]) : nullptr;

  // Loader mapping: element idx = tid + 256 m of a tile with 32 columns: row idx / 32, column tid % 32.
  const int lk = tid % kBK, lr = tid / kBK;  // lr in [0, 8)
  const TA* arow[kBM * kBK / kGemmThreads];
PAGODA_UNROLL
  for (int m = 0; m < kBM * kBK / kGemmThreads; ++m) {
    const int64_t r = row0 + lr + 8 * m;
    arow[m] = nullptr;
    if (r < row_end) {
      const int64_t src = kGateUp ? pair_of_row[r] / top_k : r;
      arow[m] = A + src * K;
    }
  }

  const int tx = tid % 16, ty = tid / 16;
  float acc0[2][4] = {}, acc1[2][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
    const int64_t k = k0 + lk;
    const bool k_ok = k < K;
PAGODA_UNROLL
    for (int m = 0; m < kBM * kBK / kGemmThreads; ++m)
      As[lr + 8 * m][lk] = (arow[m] != nullptr && k_ok) ? to_f(arow[m][k]) : 0.0f;
PAGODA_UNROLL
    for (int m = 0; m < kBN * kBK / kGemmThreads; ++m) {
      const int64_t n = n0 + lr + 8 * m;
      const bool ok = k_ok && n < N;
      W0s[lr + 8 * m][lk] = ok ? to_f(w0[n * K + k]) : 0.0f;
      if constexpr (kGateUp) W1s[lr + 8 * m][lk] = ok ? to_f(w1[n * K + k]) : 0.0f;
    }
    __syncthreads();
PAGODA_UNROLL8
    for (int kk = 0; kk < kBK; ++kk) {
      const float a0 = As[ty][kk], a1 = As[ty + 16][kk];
PAGODA_UNROLL
      for (int c = 0; c < 4; ++c) {
        const float bw = W0s[tx + 16 * c][kk];
        acc0[0][c] += a0 * bw;
        acc0[1][c] += a1 * bw;
        if constexpr (kGateUp) {
          const float bu = W1s[tx + 16 * c][kk];
          acc1[0][c] += a0 * bu;
          acc1[1][c] += a1 * bu;
        }
      }
    }
    __syncthreads();
  }
PAGODA_UNROLL
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t r = row0 + ty + 16 * rr;
    if (r >= row_end) continue;
PAGODA_UNROLL
    for (int c = 0; c < 4; ++c) {
      const int64_t n = n0 + tx + 16 * c;
      if (n >= N) continue;
      const float v = kGateUp ? silu(acc0[rr][c]) * acc1[rr][c] : acc0[rr][c];
      out[r * N + n] = from_f<TA>(v);
    }
  }
}

// ---- weighted scatter ---------------------------------------------------------------------------
constexpr int kScatterThreads = 256;

template <class TA>
__global__ void __launch_bounds__(kScatterThreads)
    moe_scatter_kernel(const TA* y, const float* weights, const int32_t* row_of_pair, int top_k, int64_t H, TA* out) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t t = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kScatterThreads + threadIdx.x;
  if (c >= H) return;
  float acc = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    const int32_t row = row_of_pair[t * top_k + j];
    if (row < 0) {
      acc = nan_f();
      break;
    }
    const float w = weights[t * top_k + j];
    const float v = w * to_f(y[static_cast<int64_t>(row) * H + c]);
    acc = j == 0 ? v : acc + v;
  }
  out[t * H + c] = from_f<TA>(acc);
}

}  // namespace
}  // namespace pagoda::cuda::moe_kernels
