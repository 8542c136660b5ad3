// Tensor-core paged attention for prefill chunks (flash-attention 2 style), head_dim 64, 128 or 256,
// BF16 q / K / V / out, FP32 accumulation. cuda_attention.cu launches it for batches whose
// chunks fill its 64-row tiles; decode-sized batches keep the CUDA-core kernel (and split-KV).
//
// A thread block (4 warps) owns one KV head and a tile of 64 query rows of one sequence, a row
// being (query token, query head of the KV head's GQA group): max(1, 64 / G) tokens x G heads;
// tiles are numbered as attention_common.cuh describes. Each warp owns 16 rows and keeps their q in
// registers as mma A fragments (head_dim 256: read again from global memory, L1-cached, at each
// use: its fragments and the 16 x 256 output accumulator would not fit the registers together).
// The block streams K and V through shared memory 64 keys at a time (32 at head_dim 256, within
// the 48 KiB of static shared memory; addresses from the block table; rows padded by 16 bytes so
// fragment loads hit distinct banks). Per tile a warp computes S = q K^T with mma.sync m16n8k16 (BF16 in, FP32 out), masks it
// (causal, sliding window, the chunk's own key range), updates the running row max / sum (online
// softmax in base 2; the four lanes that share a row reduce by shuffles), rounds P to BF16 (as
// flash-attention does) and accumulates O += P V with mma again, P's accumulator fragments
// reused directly as A fragments. Keys past a warp's last visible position are skipped.
//
// Bad metadata (a position past the block table, a block id outside the pool) never reads
// outside the cache: such keys read as zeros (load_kv_chunk).
//
// The kernel is plain C++ apart from the CUDA keywords and two device primitives
// (mma_bf16_16816, __shfl_xor_sync), so tests/cuda/cuda_emu.h compiles this same source for the host
// against an emulation of those and checks it against the CPU backend without a GPU.
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/cuda/attention_common.cuh"

namespace pagoda::cuda::mma_attention {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 16 * kWarps;  // query rows per block
// Keys per shared-memory tile.
template <int D>
constexpr int kKeysPerTile = D > 128 ? 32 : 64;

struct Params {
  const uint16_t* q;  // BF16 bits [T, Hq, D]
  uint16_t* out;      // BF16 bits [T, Hq, D]
  const uint16_t* k_cache;  // BF16 bits [num_blocks, block_size, Hk, D]
  const uint16_t* v_cache;
  const int32_t* query_start_loc;
  const int32_t* seq_lens;
  const int32_t* block_tables;
  int num_seqs, num_tokens, Hq, Hk, G;
  int block_size, num_blocks, max_blocks_per_seq;
  int tok_per_tile, window;
  float scale_log2;  // softmax scale * log2(e): scores in base 2
};

#if defined(__CUDACC__)
// d += a (16 x 16, row-major fragments) * b (16 x 8, column fragments), BF16 inputs, FP32 accumulators.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

template <int D>
__global__ void __launch_bounds__(kThreads) paged_attention_mma_kernel(Params p) {
  PAGODA_GRID_DEPENDENCY_WAIT();
  static_assert(D == 64 || D == 128 || D == 256, "the tensor-core kernel handles head_dim 64, 128 and 256");
  constexpr int kKeys = kKeysPerTile<D>;
  constexpr bool kQInRegisters = D <= 128;
  constexpr int kStride = D + 8;  // BF16 elements per shared-memory row (16-byte pad)
  constexpr int kChunks = D / 8;  // 16-byte chunks per key row
  constexpr int kSteps = D / 16;  // mma k-steps over the head dim (q K^T)
  constexpr int kDimTiles = D / 8;  // mma n-tiles over the head dim (P V)
  __shared__ __align__(16) uint16_t k_s[kKeys * kStride];
  __shared__ __align__(16) uint16_t v_s[kKeys * kStride];

  const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int gid = lane >> 2, tig = lane & 3;  // fragment row group and column pair of this lane
  const int tile = static_cast<int>(blockIdx.x), hk = static_cast<int>(blockIdx.y);

  const QueryTile qt = locate_tile(p.query_start_loc, p.num_seqs, p.tok_per_tile, tile);
  if (qt.ntok == 0) return;  // uniform over the block
  const int s = qt.seq, q0 = qt.q0, qlen = qt.qlen, i0 = qt.i0, ntok = qt.ntok;
  const int rows = ntok * p.G;
  const int ctx = p.seq_lens[s];
  const int first_limit = ctx - qlen + i0;  // last key position the tile's first token may see
  const int table_keys = p.max_blocks_per_seq * p.block_size;
  const int kv_hi = first_limit + ntok < table_keys ? first_limit + ntok : table_keys;  // exclusive
  int kv_lo = 0;
  if (p.window > 0) {
    kv_lo = first_limit - p.window + 1;
    kv_lo = (kv_lo > 0 ? kv_lo : 0) / kKeys * kKeys;
  }

  // This lane's two rows (r0 = gid, r1 = gid + 8 of the warp's 16) and the last key each sees
  // (-1: a padding row past the tile, which sees nothing).
  const int r0 = warp * 16 + gid, r1 = r0 + 8;
  const int lim0 = r0 < rows ? first_limit + r0 / p.G : -1;
  const int lim1 = r1 < rows ? first_limit + r1 / p.G : -1;
  // The warp's visible key range, for skipping whole tiles (uniform over the warp).
  const int w_first = warp * 16, w_last = (rows < w_first + 16 ? rows : w_first + 16) - 1;
  const int w_hi = w_last >= w_first ? first_limit + w_last / p.G : -1;  // largest limit
  const int w_lo = first_limit + w_first / p.G;                          // smallest limit

  // q of the two rows as A fragments: register k of step kk holds row (k & 1 ? r1 : r0), columns
  // kk * 16 + tig * 2 (+ 8 for k >= 2) and the next.
  const int64_t t0 = q0 + i0 + r0 / p.G, h0 = static_cast<int64_t>(hk) * p.G + r0 % p.G;
  const int64_t t1 = q0 + i0 + r1 / p.G, h1 = static_cast<int64_t>(hk) * p.G + r1 % p.G;
  const uint32_t* q_r0 = reinterpret_cast<const uint32_t*>(p.q + (t0 * p.Hq + h0) * D);
  const uint32_t* q_r1 = reinterpret_cast<const uint32_t*>(p.q + (t1 * p.Hq + h1) * D);
  const auto load_q = [&](int kk, uint32_t (&f)[4]) {
    const int c = (kk * 16 + tig * 2) / 2;  // in 32-bit words
    f[0] = r0 < rows ? q_r0[c] : 0u;
    f[1] = r1 < rows ? q_r1[c] : 0u;
    f[2] = r0 < rows ? q_r0[c + 4] : 0u;
    f[3] = r1 < rows ? q_r1[c + 4] : 0u;
  };
  uint32_t qf[kQInRegisters ? kSteps : 1][4];
  if constexpr (kQInRegisters) {
PAGODA_UNROLL
    for (int kk = 0; kk < kSteps; ++kk) load_q(kk, qf[kk]);
  }

  float o[kDimTiles][4];
PAGODA_UNROLL
  for (int n = 0; n < kDimTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};  // running max of rows r0, r1 (base-2 scores)
  float l[2] = {0.0f, 0.0f};            // this lane's share of their running sums

  const int32_t* table = p.block_tables + static_cast<int64_t>(s) * p.max_blocks_per_seq;
  for (int kt = kv_lo; kt < kv_hi; kt += kKeys) {
    __syncthreads();  // the previous tile has been consumed
    for (int c = tid; c < kKeys * kChunks; c += kThreads) {
      const int key = c / kChunks, part = c % kChunks;
      uint4 kv, vv;
      load_kv_chunk(p.k_cache, p.v_cache, table, kt + key, kv_hi, p.block_size, p.num_blocks, p.Hk, hk, D, part, kv, vv);
      *reinterpret_cast<uint4*>(k_s + key * kStride + part * 8) = kv;
      *reinterpret_cast<uint4*>(v_s + key * kStride + part * 8) = vv;
    }
    __syncthreads();
    // Nothing in this tile is visible to the warp's rows: causal (keys after its last row's
    // limit) or sliding window (keys before its first row's window).
    if (kt > w_hi || (p.window > 0 && kt + kKeys - 1 <= w_lo - p.window)) continue;

    // S = q K^T for the tile's keys: n-tiles of 8 keys, each accumulated over the head dim in order.
    float sc[kKeys / 8][4];
PAGODA_UNROLL
    for (int n = 0; n < kKeys / 8; ++n) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
PAGODA_UNROLL
    for (int kk = 0; kk < kSteps; ++kk) {
      uint32_t qload[4];
      if constexpr (!kQInRegisters) load_q(kk, qload);
      const uint32_t(&a)[4] = kQInRegisters ? qf[kQInRegisters ? kk : 0] : qload;
PAGODA_UNROLL
      for (int n = 0; n < kKeys / 8; ++n) {
        const uint16_t* krow = k_s + (n * 8 + gid) * kStride + tig * 2 + kk * 16;
        const uint32_t b[2] = {*reinterpret_cast<const uint32_t*>(krow),
                               *reinterpret_cast<const uint32_t*>(krow + 8)};
        mma_bf16_16816(sc[n], a, b);
      }
    }
    // Mask and scale; element e of n-tile n is key kt + n * 8 + tig * 2 + (e & 1) of row e < 2 ? r0 : r1.
    float mx[2] = {-INFINITY, -INFINITY};
PAGODA_UNROLL
    for (int n = 0; n < kKeys / 8; ++n) {
PAGODA_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int key = kt + n * 8 + tig * 2 + (e & 1);
        const int lim = e < 2 ? lim0 : lim1;
        const bool valid = key < kv_hi && key <= lim && (p.window <= 0 || key > lim - p.window);
        sc[n][e] = valid ? sc[n][e] * p.scale_log2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], sc[n][e]);
      }
    }
    float base[2];
PAGODA_UNROLL
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      base[r] = m_new == -INFINITY ? 0.0f : m_new;  // a row that has seen no key yet stays empty
      const float corr = exp2f(m[r] - base[r]);     // 0 when m was -inf
      m[r] = m_new;
      l[r] *= corr;
PAGODA_UNROLL
      for (int n = 0; n < kDimTiles; ++n) {
        o[n][2 * r] *= corr;
        o[n][2 * r + 1] *= corr;
      }
    }
PAGODA_UNROLL
    for (int n = 0; n < kKeys / 8; ++n) {
PAGODA_UNROLL
      for (int e = 0; e < 4; ++e) {
        sc[n][e] = exp2f(sc[n][e] - base[e >> 1]);  // masked: exp2(-inf) = 0
        l[e >> 1] += sc[n][e];
      }
    }
    // O += P V, 16 keys per k-step; P's fragments of n-tiles 2kk and 2kk + 1 are the A fragment.
PAGODA_UNROLL
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16(sc[2 * kk][0], sc[2 * kk][1]), pack_bf16(sc[2 * kk][2], sc[2 * kk][3]),
                             pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                             pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
      const uint16_t* v0 = v_s + (kk * 16 + tig * 2) * kStride + gid;  // keys tig * 2, + 1, + 8, + 9
PAGODA_UNROLL
      for (int n = 0; n < kDimTiles; ++n) {
        const uint16_t* vc = v0 + n * 8;
        const uint32_t b[2] = {static_cast<uint32_t>(vc[0]) | (static_cast<uint32_t>(vc[kStride]) << 16),
                               static_cast<uint32_t>(vc[8 * kStride]) | (static_cast<uint32_t>(vc[9 * kStride]) << 16)};
        mma_bf16_16816(o[n], a, b);
      }
    }
  }

  // Row sums over the four lanes of each row, then the normalised output (rows past the tile
  // write nothing; a row that saw no key writes zeros).
PAGODA_UNROLL
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
PAGODA_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int row = r == 0 ? r0 : r1;
    if (row >= rows) continue;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    const int64_t t = q0 + i0 + row / p.G, h = static_cast<int64_t>(hk) * p.G + row % p.G;
    uint32_t* orow = reinterpret_cast<uint32_t*>(p.out + (t * p.Hq + h) * D);
PAGODA_UNROLL
    for (int n = 0; n < kDimTiles; ++n) orow[(n * 8 + tig * 2) / 2] = pack_bf16(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
  }
}

}  // namespace pagoda::cuda::mma_attention
