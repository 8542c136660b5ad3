// The sampling kernels of the CUDA backend (launched by cuda_sampling.cu): one block of kThreads
// per logits row. Passes over the row (all reads of the same 4V bytes, L2-resident for a block):
// max / argmax; for top-k / top-p a level-1 histogram (count and mass per bucket, shared-memory
// atomics) and one or two level-2 histograms of the crossing bucket; then the Gumbel-max draw.
// Bucket walks use one warp: each lane sums kNB / 32 consecutive buckets, a warp scan finds the
// crossing lane, that lane walks its buckets. The arithmetic is sampling_math.h's, as the CPU
// backend's.
//
// Plain C++ apart from the CUDA keywords and intrinsics (shuffles, ballot, atomics), so
// tests/cuda/cuda_emu.h can run this same source on the host (tests/cuda/sampling_emu_test.cc).
#pragma once

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>

#include "backend/cuda/kernel_macros.cuh"
#include "backend/sampling_math.h"

// (Internal linkage: the host build of the emulation test defines these names too.)
namespace pagoda::cuda::sampling_kernels {
namespace {

constexpr int kThreads = 512;
constexpr int kNB = kSampleBuckets;
constexpr int kPerLane = kNB / 32;
static_assert(kNB % 32 == 0, "buckets split evenly over a warp");

// Block reductions' per-warp partials.
struct Reduce {
  float v[32];
  int i[32];
  double d[32];
};

struct Shared {
  int count1[kNB];
  float mass1[kNB];
  int count2[kNB];
  float mass2[kNB];
  Reduce red;
  int cross;      // walk result: the crossing index
  double before;  // and the sum before it
};

// Warp-wide (value desc, index asc) arg-max; every lane gets the result.
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) {
      v = ov;
      i = oi;
    }
  }
}

// Block-wide (value desc, index asc) arg-max; every thread gets the result.
__device__ void block_argmax(float& v, int& i, Reduce& red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  warp_argmax(v, i);
  __syncthreads();  // red may still be read by a previous call
  if (lane == 0) {
    red.v[warp] = v;
    red.i[warp] = i;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? red.v[lane] : -INFINITY;
    i = lane < warps ? red.i[lane] : INT_MAX;
    warp_argmax(v, i);
    if (lane == 0) {
      red.v[0] = v;
      red.i[0] = i;
    }
  }
  __syncthreads();
  v = red.v[0];
  i = red.i[0];
}

// Block-wide sum; every thread gets the result.
__device__ double block_sum(double x, Reduce& red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  __syncthreads();
  if (lane == 0) red.d[warp] = x;
  __syncthreads();
  if (warp == 0) {
    x = lane < warps ? red.d[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    if (lane == 0) red.d[0] = x;
  }
  __syncthreads();
  return red.d[0];
}

// Warp 0: the first c < limit with before + vals[c] >= target (sh.cross, sh.before = the sum of
// vals[0, c)); limit and the sum of vals[0, limit) when there is none. Call from every thread
// (it synchronises).
template <typename T>
__device__ void walk(const T* vals, int limit, double target, Shared& sh) {
  __syncthreads();
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    const int lo = lane * kPerLane;
    const int hi = min(lo + kPerLane, limit);
    double part = 0.0;
    for (int c = lo; c < hi; ++c) part += static_cast<double>(vals[c]);
    double incl = part;  // inclusive scan of the lane sums
    for (int o = 1; o < 32; o <<= 1) {
      const double other = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += other;
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, lo < hi && incl >= target);
    if (ballot == 0) {
      if (lane == 31) {
        sh.cross = limit;
        sh.before = incl;
      }
    } else if (lane == __ffs(ballot) - 1) {
      double acc = incl - part;
      int c = lo;
      for (; c < limit; ++c) {
        if (acc + static_cast<double>(vals[c]) >= target) break;
        acc += static_cast<double>(vals[c]);
      }
      sh.cross = c;
      sh.before = acc;
    }
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads) sample_kernel(const float* __restrict__ logits, int64_t V,
                                                          const SamplingRow* __restrict__ rows,
                                                          int32_t* __restrict__ tokens) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  __shared__ Shared sh;
  const int64_t r = blockIdx.x;
  const float* l = logits + r * V;
  const SamplingRow row = rows[r];

  float m = -INFINITY;
  int arg = INT_MAX;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    const float v = l[i];
    if (v > m) {
      m = v;
      arg = static_cast<int>(i);
    }
  }
  block_argmax(m, arg, sh.red);
  if (arg == INT_MAX) arg = 0;
  if (sample_greedy(row) || !(m > -INFINITY)) {
    if (threadIdx.x == 0) tokens[r] = arg;
    return;
  }

  const float inv_t = sample_inv_temperature(row);
  float floor = kSampleFloor;
  if (row.min_p > 0.0f) floor = fmaxf(floor, logf(row.min_p));
  const float scale = static_cast<float>(kNB) / -floor;
  const bool use_k = row.top_k > 0 && row.top_k < V;
  const bool use_p = row.top_p < 1.0f;
  int cut1 = kNB - 1, cut2 = kNB - 1;

  if (use_k || use_p) {
    // Count and mass per bucket of the candidates: level 1 (bucket < 0, by b1) or level 2 of one
    // level-1 bucket (by b2).
    auto histogram = [&](int* count, float* mass, int bucket) {
      __syncthreads();
      for (int b = threadIdx.x; b < kNB; b += kThreads) {
        count[b] = 0;
        mass[b] = 0.0f;
      }
      __syncthreads();
      for (int64_t i = threadIdx.x; i < V; i += kThreads) {
        const float s = (l[i] - m) * inv_t;
        if (!(s >= floor)) continue;
        const SampleBucket b = sample_bucket(s, scale);
        if (bucket >= 0 && b.b1 != bucket) continue;
        const int at = bucket < 0 ? b.b1 : b.b2;
        atomicAdd(&count[at], 1);
        atomicAdd(&mass[at], expf(s));
      }
    };
    histogram(sh.count1, sh.mass1, -1);
    int h2 = -1;  // the level-1 bucket count2 / mass2 hold
    auto hist2 = [&](int bucket) {
      histogram(sh.count2, sh.mass2, bucket);
      h2 = bucket;
    };
    bool partial = false;  // bucket cut1 is kept only up to cut2
    if (use_k) {
      // A cut only when there are more than k candidates (a crossing of k + 1 exists).
      walk(sh.count1, kNB, static_cast<double>(row.top_k) + 1.0, sh);
      if (sh.cross < kNB) {
        walk(sh.count1, kNB - 1, static_cast<double>(row.top_k), sh);
        const int bk = sh.cross;
        const double before = sh.before;
        hist2(bk);
        walk(sh.count2, kNB - 1, static_cast<double>(row.top_k) - before, sh);
        cut1 = bk;
        cut2 = sh.cross;
        partial = true;
      }
    }
    if (use_p) {
      float last;
      if (partial) {
        walk(sh.mass2, cut2 + 1, INFINITY, sh);
        last = static_cast<float>(sh.before);
      } else {
        __syncthreads();
        last = sh.mass1[cut1];
      }
      __syncthreads();
      const float saved = sh.mass1[cut1];
      __syncthreads();
      if (threadIdx.x == 0) sh.mass1[cut1] = last;
      walk(sh.mass1, cut1 + 1, INFINITY, sh);  // the kept mass
      const double target = static_cast<double>(row.top_p) * sh.before;
      walk(sh.mass1, cut1, target, sh);
      const int bp = sh.cross;
      const double before = sh.before;
      if (threadIdx.x == 0) sh.mass1[cut1] = saved;
      if (h2 != bp) hist2(bp);
      walk(sh.mass2, bp == cut1 ? cut2 : kNB - 1, target - before, sh);
      cut1 = bp;
      cut2 = sh.cross;
    }
  }

  const int64_t cut = static_cast<int64_t>(cut1) * kNB + cut2;
  float best = -INFINITY;
  int token = INT_MAX;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    const float s = (l[i] - m) * inv_t;
    if (!(s >= floor)) continue;
    const SampleBucket b = sample_bucket(s, scale);
    if (static_cast<int64_t>(b.b1) * kNB + b.b2 > cut) continue;
    const float u = sample_uniform(row.seed, row.offset, static_cast<uint32_t>(i));
    const float g = s - logf(-logf(u));
    if (g > best) {
      best = g;
      token = static_cast<int>(i);
    }
  }
  block_argmax(best, token, sh.red);
  if (threadIdx.x == 0) tokens[r] = token == INT_MAX ? arg : token;
}

constexpr int kLogprobThreads = 256;

// Backend::compute_logprobs, one block per row: max, the FP64 sum of exp, then the K best entries
// one block arg-max each (each pass takes the best entry ordered after the previous one).
__global__ void __launch_bounds__(kLogprobThreads) logprobs_kernel(const float* __restrict__ logits, int64_t V,
                                                                   const int32_t* __restrict__ tokens, int K,
                                                                   float* __restrict__ token_logprobs,
                                                                   int32_t* __restrict__ top_ids,
                                                                   float* __restrict__ top_logprobs) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  __shared__ Reduce red;
  const int64_t r = blockIdx.x;
  const float* l = logits + r * V;
  float m = -INFINITY;
  int arg = INT_MAX;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
    if (l[i] > m) {
      m = l[i];
      arg = static_cast<int>(i);
    }
  block_argmax(m, arg, red);
  double part = 0.0;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) part += static_cast<double>(expf(l[i] - m));
  const float lse = m + static_cast<float>(log(block_sum(part, red)));
  if (threadIdx.x == 0) token_logprobs[r] = l[tokens[r]] - lse;
  float pv = INFINITY;
  int pi = -1;
  for (int k = 0; k < K; ++k) {
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const float v = l[i];
      const bool after = v < pv || (v == pv && static_cast<int>(i) > pi);
      if (after && (v > bv || bi == INT_MAX)) {
        bv = v;
        bi = static_cast<int>(i);
      }
    }
    block_argmax(bv, bi, red);
    if (threadIdx.x == 0) {
      top_ids[r * K + k] = bi;
      top_logprobs[r * K + k] = bv - lse;
    }
    pv = bv;
    pi = bi;
  }
}

__global__ void apply_edits_kernel(float* __restrict__ logits, int64_t V, const SamplingRow* __restrict__ rows,
                                   const LogitEdit* __restrict__ edits, const int32_t* __restrict__ offsets) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t r = blockIdx.x;
  const SamplingRow row = rows[r];
  for (int j = offsets[r] + static_cast<int>(threadIdx.x); j < offsets[r + 1]; j += blockDim.x) {
    const LogitEdit e = edits[j];
    if (e.token < 0 || e.token >= V) continue;
    float& x = logits[r * V + e.token];
    x = apply_logit_edit(x, e, row);
  }
}

}  // namespace
}  // namespace pagoda::cuda::sampling_kernels
