// The small-batch GEMM kernel of cuda_gemv.cu (see cuda_gemv.h). Plain C++ apart from the CUDA
// keywords and intrinsics, so tests/cuda/cuda_emu.h can run it on the host.
//
// Decode streams every weight byte once per step: the kernel is a pure read of W at the memory's
// rate. A block is 8 warps. Each warp owns RW consecutive rows of W (rows of all groups numbered
// one after another) and `split` warps share those rows' K range (split-K inside the block, summed
// through shared memory): few rows (small N, large K) still fill the GPU. A lane reads 16 bytes
// (8 BF16) of each row per step, U steps unrolled so that U x RW loads are in flight, and the
// matching 16 bytes of every token's x (hot in L1 / L2: it is T x K x 2 bytes). A warp's partial
// sums are reduced by shuffles; lane r * T + t stores (row r, token t). FP32 throughout; the bias
// is added in FP32 before the single rounding to the output dtype.
//
// Mode bits (cuda_gemv.h), which fold the small ops around a decode linear into it:
//  - gated (SwiGLU): groups 0 and 1 are gate and up, both [n, K], and a warp owns kUnitsPerWarp
//    (half its RW rows, at least one) consecutive "pair rows" p, loading row p of gate and row p
//    of up together. The store is silu(g) * u into group 0's output, with g and u rounded to the
//    output dtype first: exactly what two linears followed by silu_and_mul store, in one launch
//    and without the [T, 2n] round trip.
//  - norm (RMSNorm of x folded in): x is the un-normalised row. Each lane multiplies its 8 values
//    of x by the norm weight's 8 as it loads them and also sums their squares; the sums of
//    squares are reduced with the products, and the epilogue scales each product by the token's
//    rsqrt(mean(x^2) + eps). That is W (x * gamma) * inv_rms = W rms_norm(x): the normalised row
//    is never stored (nor rounded to BF16), and the separate norm launch is gone.
//  - add (residual add folded in): out[0] is a residual stream, read and rewritten in place as
//    out = round(out + round(product)): what linear into a scratch followed by add() stores.
//    Each output element belongs to exactly one lane, so the in-place update is race-free.
#pragma once

#include <cstdint>

#include "backend/cuda/convert.cuh"
#include "backend/cuda/cuda_gemv.h"
#include "base/dtype.h"

// (Internal linkage: the host build of the emulation test defines these names too.)
namespace pagoda::cuda::gemv_kernels {
namespace {

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;

// Rows per warp and unrolled steps per token count: the x reads per W byte stay <= 2 and about
// four 16-byte W loads are in flight per lane.
template <int T>
constexpr int kRowsPerWarp = T == 1 ? 1 : (T == 2 ? 2 : 4);
template <int T>
constexpr int kUnroll = T == 1 ? 4 : (T == 2 ? 2 : 1);

// 8 BF16 of x as FP32; in norm mode multiplied by the norm weight's 8 (gamma), their squares
// (before the weight) added to ss.
template <bool kNorm>
__device__ __forceinline__ void load_x8(const uint4& x, const uint4& gamma, float& ss, float (&xf)[8]) {
  alignas(16) bf16 xa[8];
  *reinterpret_cast<uint4*>(xa) = x;
PAGODA_UNROLL
  for (int j = 0; j < 8; ++j) xf[j] = to_f(xa[j]);
  if constexpr (kNorm) {
    alignas(16) bf16 ga[8];
    *reinterpret_cast<uint4*>(ga) = gamma;
PAGODA_UNROLL
    for (int j = 0; j < 8; ++j) {
      ss += xf[j] * xf[j];
      xf[j] *= to_f(ga[j]);
    }
  } else {
    (void)gamma;
    (void)ss;
  }
}

__device__ __forceinline__ float dot8(const uint4& w, const float (&xf)[8]) {
  alignas(16) bf16 wa[8];
  *reinterpret_cast<uint4*>(wa) = w;
  float s = 0.0f;
PAGODA_UNROLL
  for (int j = 0; j < 8; ++j) s += to_f(wa[j]) * xf[j];
  return s;
}

// The group of global row `row` (< row_end[count - 1]) and its row inside the group.
__device__ __forceinline__ int group_of(const GemvGroups& g, int64_t row, int64_t& local) {
  int gi = 0;
  while (gi + 1 < g.count && row >= g.row_end[gi]) ++gi;
  local = row - (gi == 0 ? 0 : g.row_end[gi - 1]);
  return gi;
}

// Rows (plain) or pair rows (gated) a warp owns: kRowsPerWarp<T> weight rows either way.
template <int T, bool kGated>
constexpr int kUnitsPerWarp = kGated ? (kRowsPerWarp<T> + 1) / 2 : kRowsPerWarp<T>;

template <int T, class TO, int kMode>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const bf16* __restrict__ x, int64_t K, GemvGroups g,
                                                            int split) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  constexpr bool kGated = (kMode & kGemvGated) != 0, kNorm = (kMode & kGemvNorm) != 0;
  constexpr bool kAdd = (kMode & kGemvAdd) != 0;
  constexpr int RU = kUnitsPerWarp<T, kGated>;  // rows (plain) or pair rows (gated) of this warp
  constexpr int RW = kGated ? 2 * RU : RU;       // weight rows loaded: gated, gate rows then up rows
  constexpr int U = kUnroll<T>;
  // Per warp: RW x T partial products, then (norm) T partial sums of squares.
  __shared__ float partial[kGemvWarps][RW * T + T];
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t kv = K / 8;  // 16-byte vectors per row
  const int64_t total = kGated ? g.n[0] : g.row_end[g.count - 1];  // units
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * (kGemvWarps / split) + warp / split) * RU;
  const int part = warp % split;
  const int64_t chunk = (kv + split - 1) / split;
  const int64_t k0 = part * chunk;
  const int64_t k1 = k0 + chunk < kv ? k0 + chunk : kv;

  // Units past the end read the last one (never stored): every warp then runs the same loop.
  const uint4* wrow[RW];
PAGODA_UNROLL
  for (int r = 0; r < RU; ++r) {
    const int64_t row = row0 + r < total ? row0 + r : total - 1;
    if constexpr (kGated) {
      wrow[r] = static_cast<const uint4*>(g.w[0]) + row * kv;
      wrow[RU + r] = static_cast<const uint4*>(g.w[1]) + row * kv;
    } else {
      int64_t local = 0;
      const int gi = group_of(g, row, local);
      wrow[r] = static_cast<const uint4*>(g.w[gi]) + local * kv;
    }
  }
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const uint4* gv = static_cast<const uint4*>(g.norm_w);  // norm: gamma [K]

  float acc[RW][T];
  float ss[T];  // norm: sum of x^2 over this lane's part of K
PAGODA_UNROLL
  for (int t = 0; t < T; ++t) {
    ss[t] = 0.0f;
PAGODA_UNROLL
    for (int r = 0; r < RW; ++r) acc[r][t] = 0.0f;
  }

  int64_t i = k0 + lane;
  for (; i + (U - 1) * 32 < k1; i += U * 32) {
    uint4 wv[U][RW];
PAGODA_UNROLL
    for (int u = 0; u < U; ++u)
PAGODA_UNROLL
      for (int r = 0; r < RW; ++r) wv[u][r] = wrow[r][i + u * 32];
PAGODA_UNROLL
    for (int u = 0; u < U; ++u) {
      uint4 gamma{};
      if constexpr (kNorm) gamma = gv[i + u * 32];
PAGODA_UNROLL
      for (int t = 0; t < T; ++t) {
        float xf[8];
        load_x8<kNorm>(xv[t * kv + i + u * 32], gamma, ss[t], xf);
PAGODA_UNROLL
        for (int r = 0; r < RW; ++r) acc[r][t] += dot8(wv[u][r], xf);
      }
    }
  }
  for (; i < k1; i += 32) {
    uint4 wv[RW];
PAGODA_UNROLL
    for (int r = 0; r < RW; ++r) wv[r] = wrow[r][i];
    uint4 gamma{};
    if constexpr (kNorm) gamma = gv[i];
PAGODA_UNROLL
    for (int t = 0; t < T; ++t) {
      float xf[8];
      load_x8<kNorm>(xv[t * kv + i], gamma, ss[t], xf);
PAGODA_UNROLL
      for (int r = 0; r < RW; ++r) acc[r][t] += dot8(wv[r], xf);
    }
  }

PAGODA_UNROLL
  for (int r = 0; r < RW; ++r)
PAGODA_UNROLL
    for (int t = 0; t < T; ++t)
PAGODA_UNROLL
      for (int o = 16; o > 0; o >>= 1) acc[r][t] += __shfl_xor_sync(0xffffffffu, acc[r][t], o);
  if constexpr (kNorm)
PAGODA_UNROLL
    for (int t = 0; t < T; ++t)
PAGODA_UNROLL
      for (int o = 16; o > 0; o >>= 1) ss[t] += __shfl_xor_sync(0xffffffffu, ss[t], o);

  if (split > 1) {
    if (lane == 0)
PAGODA_UNROLL
      for (int t = 0; t < T; ++t) {
PAGODA_UNROLL
        for (int r = 0; r < RW; ++r) partial[warp][r * T + t] = acc[r][t];
        if constexpr (kNorm) partial[warp][RW * T + t] = ss[t];
      }
    __syncthreads();
    if (part != 0) return;
PAGODA_UNROLL
    for (int t = 0; t < T; ++t) {
PAGODA_UNROLL
      for (int r = 0; r < RW; ++r) {
        float s = 0.0f;
        for (int p = 0; p < split; ++p) s += partial[warp + p][r * T + t];
        acc[r][t] = s;
      }
      if constexpr (kNorm) {
        float s = 0.0f;
        for (int p = 0; p < split; ++p) s += partial[warp + p][RW * T + t];
        ss[t] = s;
      }
    }
  }
  if constexpr (kNorm) {
    // W (x * gamma) * rsqrt(mean(x^2) + eps) = W rms_norm(x).
PAGODA_UNROLL
    for (int t = 0; t < T; ++t) {
      const float inv = rsqrtf(ss[t] / static_cast<float>(K) + g.eps);
PAGODA_UNROLL
      for (int r = 0; r < RW; ++r) acc[r][t] *= inv;
    }
  }

  if constexpr (kGated) {
PAGODA_UNROLL
    for (int r = 0; r < RU; ++r)
PAGODA_UNROLL
      for (int t = 0; t < T; ++t)
        if (lane == r * T + t && row0 + r < total) {
          const float gate = to_f(from_f<TO>(acc[r][t])), up = to_f(from_f<TO>(acc[RU + r][t]));
          static_cast<TO*>(g.out[0])[t * g.n[0] + row0 + r] = from_f<TO>(silu(gate) * up);
        }
    return;
  }
PAGODA_UNROLL
  for (int r = 0; r < RW; ++r)
PAGODA_UNROLL
    for (int t = 0; t < T; ++t)
      if (lane == r * T + t && row0 + r < total) {
        int64_t local = 0;
        const int gi = group_of(g, row0 + r, local);
        float v = acc[r][t];
        if (g.bias[gi] != nullptr) v += load_any(g.bias[gi], g.bias_dtype[gi], local);
        TO* o = static_cast<TO*>(g.out[gi]) + t * g.n[gi] + local;
        if constexpr (kAdd)
          *o = from_f<TO>(to_f(*o) + to_f(from_f<TO>(v)));  // add(residual, linear(x)), as two ops round
        else
          *o = from_f<TO>(v);
      }
}

}  // namespace
}  // namespace pagoda::cuda::gemv_kernels
