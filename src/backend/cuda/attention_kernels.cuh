// The CUDA-core paged attention kernels (launched by cuda_attention.cu; see its header for the
// work decomposition, split-KV and the merge). BF16 data is handled as raw 16-bit patterns
// (attention_common.cuh converts), so this source is plain C++ apart from the CUDA keywords and
// shuffles, and tests/cuda/cuda_emu.h runs it on the host (tests/cuda/attention_emu_test.cc).
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/cuda/attention_common.cuh"

namespace pagoda::cuda::core_attention {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 16;  // query rows per block
constexpr int kRowsPerWarp = kRows / kWarps;
constexpr int kKeys = 32;  // keys per shared-memory tile (one per lane when scoring)
constexpr int kMaxSplits = 16;
// Split-KV is used only while num_tokens * Hq stays at most this (decode-sized batches); it
// bounds the workspace.
constexpr int64_t kMaxSplitRows = 4096;
constexpr float kLog2e = 1.4426950408889634f;

struct Params {
  const uint16_t* q;
  uint16_t* out;
  const uint16_t* k_cache;
  const uint16_t* v_cache;
  const int32_t* query_start_loc;
  const int32_t* seq_lens;
  const int32_t* block_tables;
  float* ws_out;  // [splits, T, Hq, D]
  float* ws_lse;  // [splits, T, Hq]
  int num_seqs, num_tokens, Hq, Hk, G;
  int block_size, num_blocks, max_blocks_per_seq;
  int tok_per_tile, window;
  float scale_log2;  // softmax scale * log2(e): scores in base 2
};

__device__ __forceinline__ float warp_max(float v) {
PAGODA_UNROLL
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
PAGODA_UNROLL
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int D>
__global__ void __launch_bounds__(kThreads) paged_attention_kernel(Params p) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  static_assert(D % 16 == 0 && D <= 256, "head_dim must be a multiple of 16, at most 256");
  constexpr int kPad = 2;          // K rows padded by 4 bytes: lane-per-key reads hit distinct banks
  constexpr int kStride = D + kPad;
  // Each lane owns output dims 2 * (lane + 32 * i) and the next, i < kPairs; below D = 64 only the
  // first D / 2 lanes own a pair.
  constexpr int kPairs = D >= 64 ? D / 64 : 1;
  constexpr int kChunks = D / 8;   // 16-byte chunks per key row
  __shared__ __align__(16) uint16_t k_s[kKeys * kStride];
  __shared__ __align__(16) uint16_t v_s[kKeys * D];
  __shared__ __align__(16) uint16_t q_s[kRows * D];  // q is BF16 in memory: exact, and it fits 48 KiB at D 256

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const bool owns = D >= 64 || lane < D / 2;  // this lane owns output dims
  const int tile = blockIdx.x, hk = blockIdx.y, split = blockIdx.z, num_splits = gridDim.z;

  const QueryTile qt = locate_tile(p.query_start_loc, p.num_seqs, p.tok_per_tile, tile);
  if (qt.ntok == 0) return;  // uniform over the block
  const int s = qt.seq, q0 = qt.q0, qlen = qt.qlen, i0 = qt.i0, ntok = qt.ntok;
  const int rows = ntok * p.G;
  const int ctx = p.seq_lens[s];
  const int first_limit = ctx - qlen + i0;  // last key position the tile's first token may see

  // Key range of the tile, then this split's share of it (multiples of kKeys).
  const int kv_hi = min(first_limit + ntok, p.max_blocks_per_seq * p.block_size);  // exclusive
  const int kv_lo = p.window > 0 ? max(0, first_limit - p.window + 1) / kKeys * kKeys : 0;
  int chunk = (max(kv_hi - kv_lo, 0) + num_splits - 1) / num_splits;
  chunk = (chunk + kKeys - 1) / kKeys * kKeys;
  const int k_begin = kv_lo + split * chunk;
  const int k_end = min(kv_hi, k_begin + chunk);

  // Query rows in shared memory (row r: token i0 + r / G, head hk * G + r % G).
  for (int e = tid; e < rows * D; e += kThreads) {
    const int r = e / D, d = e % D;
    const int64_t t = q0 + i0 + r / p.G, h = static_cast<int64_t>(hk) * p.G + r % p.G;
    q_s[e] = p.q[(t * p.Hq + h) * D + d];
  }

  float acc[kRowsPerWarp][2 * kPairs];
  float m[kRowsPerWarp], l[kRowsPerWarp];
PAGODA_UNROLL
  for (int j = 0; j < kRowsPerWarp; ++j) {
    m[j] = -INFINITY;
    l[j] = 0.0f;
PAGODA_UNROLL
    for (int c = 0; c < 2 * kPairs; ++c) acc[j][c] = 0.0f;
  }

  const int32_t* table = p.block_tables + static_cast<int64_t>(s) * p.max_blocks_per_seq;
  for (int kt = k_begin; kt < k_end; kt += kKeys) {
    __syncthreads();  // previous tile consumed (and, the first time, q_s written)
    for (int c = tid; c < kKeys * kChunks; c += kThreads) {
      const int key = c / kChunks, part = c % kChunks;
      uint4 kv, vv;
      load_kv_chunk(p.k_cache, p.v_cache, table, kt + key, k_end, p.block_size, p.num_blocks, p.Hk, hk, D, part, kv, vv);
      // K rows are padded (4-byte aligned only): four 32-bit stores.
      uint32_t* kd = reinterpret_cast<uint32_t*>(k_s + key * kStride + part * 8);
      kd[0] = kv.x;
      kd[1] = kv.y;
      kd[2] = kv.z;
      kd[3] = kv.w;
      *reinterpret_cast<uint4*>(v_s + key * D + part * 8) = vv;
    }
    __syncthreads();

    const int pos = kt + lane;
PAGODA_UNROLL
    for (int j = 0; j < kRowsPerWarp; ++j) {
      const int r = warp + j * kWarps;
      if (r >= rows) break;  // uniform over the warp
      const int limit = first_limit + r / p.G;
      const bool valid = pos < k_end && pos <= limit && (p.window <= 0 || pos > limit - p.window);
      // Score of key `lane` for row r.
      const uint32_t* qr = reinterpret_cast<const uint32_t*>(q_s + r * D);
      const uint32_t* kr = reinterpret_cast<const uint32_t*>(k_s + lane * kStride);
      float dot = 0.0f;
PAGODA_UNROLL16
      for (int d2 = 0; d2 < D / 2; ++d2) {
        const float2 kf = bf16x2_to_float2(kr[d2]);
        const float2 qf = bf16x2_to_float2(qr[d2]);
        dot = fmaf(qf.x, kf.x, dot);
        dot = fmaf(qf.y, kf.y, dot);
      }
      const float sc = valid ? dot * p.scale_log2 : -INFINITY;
      const float m_new = fmaxf(m[j], warp_max(sc));
      if (m_new == -INFINITY) continue;  // every key masked so far (uniform)
      const float pk = valid ? exp2f(sc - m_new) : 0.0f;
      const float corr = exp2f(m[j] - m_new);  // 0 when m was -inf
      l[j] = l[j] * corr + warp_sum(pk);
      m[j] = m_new;
PAGODA_UNROLL
      for (int c = 0; c < 2 * kPairs; ++c) acc[j][c] *= corr;
      const int n_keys = min(kKeys, k_end - kt);
      for (int key = 0; key < n_keys; ++key) {
        const float w = __shfl_sync(0xffffffffu, pk, key);
        if (w == 0.0f) continue;  // uniform: the same broadcast value on every lane
        const uint32_t* vr = reinterpret_cast<const uint32_t*>(v_s + key * D);
        if (!owns) continue;
PAGODA_UNROLL
        for (int i = 0; i < kPairs; ++i) {
          const float2 vf = bf16x2_to_float2(vr[lane + 32 * i]);
          acc[j][2 * i] = fmaf(w, vf.x, acc[j][2 * i]);
          acc[j][2 * i + 1] = fmaf(w, vf.y, acc[j][2 * i + 1]);
        }
      }
    }
  }

  // Results: normalised output (and, with splits, the log-sum-exp for the merge).
PAGODA_UNROLL
  for (int j = 0; j < kRowsPerWarp; ++j) {
    const int r = warp + j * kWarps;
    if (r >= rows) break;
    const int64_t t = q0 + i0 + r / p.G, h = static_cast<int64_t>(hk) * p.G + r % p.G;
    const float inv = l[j] > 0.0f ? 1.0f / l[j] : 0.0f;
    if (owns && num_splits == 1) {
      uint32_t* o = reinterpret_cast<uint32_t*>(p.out + (t * p.Hq + h) * D);
PAGODA_UNROLL
      for (int i = 0; i < kPairs; ++i)
        o[lane + 32 * i] = pack_bf16(acc[j][2 * i] * inv, acc[j][2 * i + 1] * inv);
    } else if (num_splits > 1) {
      const int64_t row = (static_cast<int64_t>(split) * p.num_tokens + t) * p.Hq + h;
      float2* o = reinterpret_cast<float2*>(p.ws_out + row * D);
PAGODA_UNROLL
      for (int i = 0; i < kPairs && owns; ++i) o[lane + 32 * i] = make_float2(acc[j][2 * i] * inv, acc[j][2 * i + 1] * inv);
      if (lane == 0) p.ws_lse[row] = l[j] > 0.0f ? m[j] + log2f(l[j]) : -INFINITY;
    }
  }
}

// One warp per (token, query head): out = sum_z 2^(lse_z - M) o_z / sum_z 2^(lse_z - M).
template <int D>
__global__ void __launch_bounds__(kThreads) merge_splits_kernel(const float* ws_out, const float* ws_lse,
                                                                 int num_splits, int64_t rows, uint16_t* out) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  const bool owns = D >= 64 || lane < D / 2;
  float M = -INFINITY;
  for (int z = 0; z < num_splits; ++z) M = fmaxf(M, ws_lse[z * rows + row]);
  constexpr int kPairs = D >= 64 ? D / 64 : 1;
  float acc[2 * kPairs] = {};
  float total = 0.0f;
  if (M != -INFINITY) {
    for (int z = 0; z < num_splits; ++z) {
      const float w = exp2f(ws_lse[z * rows + row] - M);
      if (w == 0.0f) continue;
      total += w;
      const float2* o = reinterpret_cast<const float2*>(ws_out + (z * rows + row) * D);
PAGODA_UNROLL
      for (int i = 0; i < kPairs && owns; ++i) {
        const float2 v = o[lane + 32 * i];
        acc[2 * i] = fmaf(w, v.x, acc[2 * i]);
        acc[2 * i + 1] = fmaf(w, v.y, acc[2 * i + 1]);
      }
    }
  }
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  if (!owns) return;
  uint32_t* o = reinterpret_cast<uint32_t*>(out + row * D);
PAGODA_UNROLL
  for (int i = 0; i < kPairs; ++i) o[lane + 32 * i] = pack_bf16(acc[2 * i] * inv, acc[2 * i + 1] * inv);
}

}  // namespace pagoda::cuda::core_attention
