// What the paged-attention kernels (cuda_attention.cu, attention_mma.cuh) share.
//
// Query tiles are numbered without a host-side table: a tile is up to tokens_per_tile query tokens of one sequence, and
// sequence s owns the tile indices from query_start_loc[s] / tokens_per_tile + s on (disjoint
// ranges: a sequence of n tokens needs at most n / tokens_per_tile + 1 tiles, and the few indices
// past its last tile are empty). So the grid is num_tokens / tokens_per_tile + num_seqs tiles,
// known from host scalars alone. Plain C++ apart from the CUDA keywords (see attention_mma.cuh).
#pragma once

#include <cstdint>

#include "backend/cuda/kernel_macros.cuh"

namespace pagoda::cuda {

// BF16 as raw 16-bit patterns: FP32 -> BF16 bits with round to nearest even (finite inputs), a
// pair packed low element first, and a packed pair back to two floats (exact).
__device__ __forceinline__ uint32_t bf16_bits(float f) {
  union {
    float f;
    uint32_t u;
  } v{f};
  return (v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16;
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) { return bf16_bits(lo) | (bf16_bits(hi) << 16); }
__device__ __forceinline__ float bits_float(uint32_t u) {
  union {
    uint32_t u;
    float f;
  } v{u};
  return v.f;
}
__device__ __forceinline__ float2 bf16x2_to_float2(uint32_t w) {
  return make_float2(bits_float(w << 16), bits_float(w & 0xffff0000u));
}

struct QueryTile {
  int seq = 0;    // the sequence
  int q0 = 0;     // its first token in the batch
  int qlen = 0;   // its query tokens this step
  int i0 = 0;     // the tile's first token within the chunk
  int ntok = 0;   // the tile's tokens; 0: an empty tile index (the whole block returns)
};

__device__ __forceinline__ QueryTile locate_tile(const int32_t* query_start_loc, int num_seqs, int tokens_per_tile,
                                                 int tile) {
  // The largest s with query_start_loc[s] / tpt + s <= tile.
  const int tpt = tokens_per_tile;
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (query_start_loc[mid] / tpt + mid <= tile) lo = mid;
    else hi = mid - 1;
  }
  QueryTile t;
  t.seq = lo;
  t.q0 = query_start_loc[lo];
  t.qlen = query_start_loc[lo + 1] - t.q0;
  t.i0 = (tile - (t.q0 / tpt + lo)) * tpt;
  if (t.i0 >= 0 && t.i0 < t.qlen) t.ntok = t.qlen - t.i0 < tpt ? t.qlen - t.i0 : tpt;
  return t;
}

// Chunk `part` (16 bytes: 8 BF16 values) of the K and V rows of key position `pos` for KV head hk,
// the cache laid out [num_blocks, block_size, Hk, D] and `table` the sequence's block table;
// zeros at or past kv_hi and for a block id outside the pool, so bad metadata never reads outside
// the cache.
__device__ __forceinline__ void load_kv_chunk(const uint16_t* k_cache, const uint16_t* v_cache, const int32_t* table,
                                              int pos, int kv_hi, int block_size, int num_blocks, int Hk, int hk, int D,
                                              int part, uint4& k, uint4& v) {
  k = make_uint4(0, 0, 0, 0);
  v = make_uint4(0, 0, 0, 0);
  if (pos >= kv_hi) return;
  const int blk = table[pos / block_size];
  if (blk < 0 || blk >= num_blocks) return;
  const int64_t off = ((static_cast<int64_t>(blk) * block_size + pos % block_size) * Hk + hk) * D + part * 8;
  k = *reinterpret_cast<const uint4*>(k_cache + off);
  v = *reinterpret_cast<const uint4*>(v_cache + off);
}

}  // namespace pagoda::cuda
