// Mixture-of-experts kernels of the CUDA backend (launchers: cuda_moe.h). All math in FP32;
// activations and weights are converted on load and results rounded once on store.
//
// moe_route: one block (256 threads) per token. The block computes the softmax of the token's
// logits into shared memory (block max, block sum, p = exp(l - max) / sum), then picks the top k
// in k rounds of a block-wide argmax (ties: lower id), removing each winner from the candidates.
// Thread 0 writes ids / weights (renormalised in j order when asked).
//
// moe_experts, four kernels, no host loop over experts and no host-side counts:
//  1. sort (one block of 1024 threads): counting sort of the R = T * top_k (token, expert) pairs
//     by expert: per-expert counts (shared-memory atomics), exclusive scan -> expert_offsets,
//     then every pair takes the next row of its expert (row_of_pair / pair_of_row). Rows of one
//     expert are in arbitrary order (atomics), which changes nothing in the result: each row's
//     outputs are computed on their own, always with the same summation order.
//  2. gate/up grouped GEMM: grid (row tiles, I / 64 column tiles). The row tiles of all experts
//     are numbered expert by expert; a block finds its expert and tile from expert_offsets on
//     the device (a block scan of per-expert tile counts) and exits when the tile number is past
//     the last tile (the grid is sized for the worst case, ceil(R / 32) + min(E, R) tiles). The
//     A tile is gathered directly from x through pair_of_row (no separate gather pass; scratch.x
//     is not used). Both gate and up accumulate in the same block (FP32) and the epilogue stores
//     silu(gate) * up into MoeScratch::gate.
//  3. down grouped GEMM, same tiling over MoeScratch::gate -> MoeScratch::y.
//  4. weighted scatter: one thread per (token, column), out[t] = sum_j w[t, j] * y[row(t, j)]
//     summed in j order (deterministic).
// The GEMM tile is 32 rows x 64 columns x 32 k (256 threads, 2 x 4 outputs each; both operands
// staged in shared memory as FP32). Plain FMA, no tensor cores: correct and reasonably parallel;
// for decode (a few rows per expert) it streams each selected expert's weights once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/convert.cuh"
#include "backend/cuda/cuda_moe.h"

namespace pagoda::cuda {
namespace {


// ---- block reductions / scan (blockDim.x a multiple of 32, at most 1024) ---------------------
// Every thread gets the result. `buf` is shared scratch of 32 elements; the trailing barrier
// makes it reusable right away.
__device__ float block_max(float v, float* buf) {
#pragma unroll
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
#pragma unroll
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
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += n;
  }
  if (lane == 31) buf[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int s = lane < nw ? buf[lane] : 0;
#pragma unroll
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
  extern __shared__ float p[];  // [E]
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
#pragma unroll
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
  extern __shared__ int smem[];
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
#pragma unroll
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
#pragma unroll
    for (int m = 0; m < kBM * kBK / kGemmThreads; ++m)
      As[lr + 8 * m][lk] = (arow[m] != nullptr && k_ok) ? to_f(arow[m][k]) : 0.0f;
#pragma unroll
    for (int m = 0; m < kBN * kBK / kGemmThreads; ++m) {
      const int64_t n = n0 + lr + 8 * m;
      const bool ok = k_ok && n < N;
      W0s[lr + 8 * m][lk] = ok ? to_f(w0[n * K + k]) : 0.0f;
      if constexpr (kGateUp) W1s[lr + 8 * m][lk] = ok ? to_f(w1[n * K + k]) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kBK; ++kk) {
      const float a0 = As[ty][kk], a1 = As[ty + 16][kk];
#pragma unroll
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
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t r = row0 + ty + 16 * rr;
    if (r >= row_end) continue;
#pragma unroll
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

// ---- host launchers ----------------------------------------------------------------------------
namespace {

template <class TA, class TW>
void launch_experts_typed(const MoeExpertsArgs& g, cudaStream_t stream) {
  const int64_t R = g.T * g.top_k;
  const int E = static_cast<int>(g.E), k = static_cast<int>(g.top_k);
  // Upper bound on the row tiles: sum_e ceil(c_e / BM) <= R / BM + (number of non-empty experts).
  const int64_t tiles = (R + kBM - 1) / kBM + std::min<int64_t>(g.E, R);
  const int64_t col_tiles_i = (g.I + kBN - 1) / kBN, col_tiles_h = (g.H + kBN - 1) / kBN;
  const int64_t sblocks = (g.H + kScatterThreads - 1) / kScatterThreads;
  PAGODA_CHECK(tiles <= 0x7fffffff && col_tiles_i <= 65535 && col_tiles_h <= 65535 && g.T <= 0x7fffffff &&
                   sblocks <= 65535,
               "moe_experts: problem too large for one launch (R ", R, ", H ", g.H, ", I ", g.I, ")");
  moe_sort_kernel<<<1, kSortThreads, 2 * static_cast<size_t>(E) * sizeof(int), stream>>>(
      g.ids, R, E, g.row_of_pair, g.pair_of_row, g.expert_offsets);
  PAGODA_CUDA_CHECK_LAUNCH();
  const auto* const* wp = g.expert_ptrs;
  moe_gemm_kernel<TA, TW, true>
      <<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(col_tiles_i)), kGemmThreads, 0, stream>>>(
          static_cast<const TA*>(g.x), g.pair_of_row, k, g.expert_offsets, E, wp, g.I, g.H,
          static_cast<TA*>(g.h_scratch));
  PAGODA_CUDA_CHECK_LAUNCH();
  moe_gemm_kernel<TA, TW, false>
      <<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(col_tiles_h)), kGemmThreads, 0, stream>>>(
          static_cast<const TA*>(g.h_scratch), nullptr, k, g.expert_offsets, E, wp + 2 * g.E, g.H, g.I,
          static_cast<TA*>(g.y_scratch));
  PAGODA_CUDA_CHECK_LAUNCH();
  moe_scatter_kernel<TA><<<dim3(static_cast<unsigned>(g.T), static_cast<unsigned>(sblocks)), kScatterThreads, 0,
                           stream>>>(static_cast<const TA*>(g.y_scratch), g.weights, g.row_of_pair, k, g.H,
                                     static_cast<TA*>(g.out));
  PAGODA_CUDA_CHECK_LAUNCH();
}

template <class TA>
void dispatch_weight(const MoeExpertsArgs& g, cudaStream_t stream) {
  switch (g.weight_dtype) {
    case DType::kBF16: launch_experts_typed<TA, bf16>(g, stream); break;
    case DType::kF16: launch_experts_typed<TA, __half>(g, stream); break;
    case DType::kF32: launch_experts_typed<TA, float>(g, stream); break;
    default: fail("moe_experts: expert weights must be BF16, F16 or F32, got ", dtype_name(g.weight_dtype));
  }
}

}  // namespace

void launch_moe_route(const float* logits, int64_t T, int64_t E, int64_t top_k, bool renormalize, int32_t* ids,
                      float* weights, cudaStream_t stream) {
  if (T == 0) return;
  PAGODA_CHECK(E > 0 && E <= kMoeRouteMaxExperts && top_k > 0 && top_k <= kMoeMaxTopK && top_k <= E,
               "moe_route: ", E, " experts / top-", top_k, " not supported (at most ", kMoeRouteMaxExperts,
               " experts, top-", kMoeMaxTopK, ")");
  PAGODA_CHECK(T <= 0x7fffffff, "moe_route: too many tokens");
  moe_route_kernel<<<static_cast<unsigned>(T), kRouteThreads, static_cast<size_t>(E) * sizeof(float), stream>>>(
      logits, E, static_cast<int>(top_k), renormalize, ids, weights);
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_moe_experts(const MoeExpertsArgs& args, cudaStream_t stream) {
  if (args.T == 0 || args.H == 0) return;
  PAGODA_CHECK(args.E > 0 && args.E <= kMoeMaxExperts && args.top_k > 0 && args.top_k <= kMoeMaxTopK &&
                   args.I > 0,
               "moe_experts: ", args.E, " experts / top-", args.top_k, " / I ", args.I, " not supported (at most ",
               kMoeMaxExperts, " experts, top-", kMoeMaxTopK, ")");
  PAGODA_CHECK(args.T * args.top_k <= INT_MAX, "moe_experts: too many (token, expert) pairs");
  switch (args.act) {
    case DType::kBF16: dispatch_weight<bf16>(args, stream); break;
    case DType::kF32: dispatch_weight<float>(args, stream); break;
    default: fail("moe_experts: activation dtype must be BF16 or F32, got ", dtype_name(args.act));
  }
}

}  // namespace pagoda::cuda
