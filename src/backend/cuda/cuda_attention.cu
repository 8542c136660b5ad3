// Paged attention on CUDA over one flattened batch of prefill chunks and decode tokens (the
// AttentionMetadata contract of backend.h), BF16 in and out, FP32 math, online softmax.
//
// Work decomposition. A thread block (4 warps) owns one KV head and a "tile" of up to 16 query
// rows of one sequence, a row being (query token, query head of that KV head's GQA group):
// tok_per_tile = max(1, 16 / G) tokens x G heads. The tiles of all sequences are numbered
// without any host-side table (attention_common.cuh), so the grid depends only on host scalars
// (num_tokens, num_seqs) and the kernel finds its sequence by binary search. The block streams
// the K/V of its key range through shared memory 32 keys at a time (16-byte loads, addresses from
// the block table); for each of its rows a warp scores the 32 keys lane-parallel (lane = key, q
// broadcast from shared memory, K rows padded against bank conflicts), updates the running max /
// sum, and accumulates p * V with each lane owning D / 32 output dims.
//
// Split-KV (flash-decoding). When the grid would leave most SMs idle (decode of few sequences)
// and contexts are long, the key range of every tile is cut into gridDim.z splits; each writes
// its normalised partial output and log-sum-exp (base 2) to the workspace and a second kernel
// merges them. Prefill chunks read their prior context from the pages like decode does.
//
// Bad metadata (a position past the block table, a block id outside the pool) never reads
// outside the cache: such keys read as zeros.
//
// Prefill-sized batches (chunks that fill 64-row tiles) at head_dim 64 / 128 run the tensor-core
// kernel of attention_mma.cuh instead (same tiling of sequences, same metadata contract).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "backend/cuda/attention_mma.cuh"
#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_attention.h"
#include "backend/cuda/cuda_common.h"
#include "base/error.h"

namespace pagoda::cuda {
namespace {

using bf16 = __nv_bfloat16;

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
  const bf16* q;
  bf16* out;
  const bf16* k_cache;
  const bf16* v_cache;
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
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int D>
__global__ void __launch_bounds__(kThreads) paged_attention_kernel(Params p) {
  static_assert(D % 16 == 0 && D <= 256, "head_dim must be a multiple of 16, at most 256");
  constexpr int kPad = 2;          // K rows padded by 4 bytes: lane-per-key reads hit distinct banks
  constexpr int kStride = D + kPad;
  // Each lane owns output dims 2 * (lane + 32 * i) and the next, i < kPairs; below D = 64 only the
  // first D / 2 lanes own a pair.
  constexpr int kPairs = D >= 64 ? D / 64 : 1;
  constexpr int kChunks = D / 8;   // 16-byte chunks per key row
  __shared__ __align__(16) bf16 k_s[kKeys * kStride];
  __shared__ __align__(16) bf16 v_s[kKeys * D];
  __shared__ __align__(16) bf16 q_s[kRows * D];  // q is BF16 in memory: exact, and it fits 48 KiB at D 256

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
#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    m[j] = -INFINITY;
    l[j] = 0.0f;
#pragma unroll
    for (int c = 0; c < 2 * kPairs; ++c) acc[j][c] = 0.0f;
  }

  const int32_t* table = p.block_tables + static_cast<int64_t>(s) * p.max_blocks_per_seq;
  for (int kt = k_begin; kt < k_end; kt += kKeys) {
    __syncthreads();  // previous tile consumed (and, the first time, q_s written)
    for (int c = tid; c < kKeys * kChunks; c += kThreads) {
      const int key = c / kChunks, part = c % kChunks;
      uint4 kv, vv;
      load_kv_chunk(reinterpret_cast<const uint16_t*>(p.k_cache), reinterpret_cast<const uint16_t*>(p.v_cache), table,
                    kt + key, k_end, p.block_size, p.num_blocks, p.Hk, hk, D, part, kv, vv);
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
#pragma unroll
    for (int j = 0; j < kRowsPerWarp; ++j) {
      const int r = warp + j * kWarps;
      if (r >= rows) break;  // uniform over the warp
      const int limit = first_limit + r / p.G;
      const bool valid = pos < k_end && pos <= limit && (p.window <= 0 || pos > limit - p.window);
      // Score of key `lane` for row r.
      const __nv_bfloat162* qr = reinterpret_cast<const __nv_bfloat162*>(q_s + r * D);
      const __nv_bfloat162* kr = reinterpret_cast<const __nv_bfloat162*>(k_s + lane * kStride);
      float dot = 0.0f;
#pragma unroll 16
      for (int d2 = 0; d2 < D / 2; ++d2) {
        const float2 kf = __bfloat1622float2(kr[d2]);
        const float2 qf = __bfloat1622float2(qr[d2]);
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
#pragma unroll
      for (int c = 0; c < 2 * kPairs; ++c) acc[j][c] *= corr;
      const int n_keys = min(kKeys, k_end - kt);
      for (int key = 0; key < n_keys; ++key) {
        const float w = __shfl_sync(0xffffffffu, pk, key);
        if (w == 0.0f) continue;  // uniform: the same broadcast value on every lane
        const __nv_bfloat162* vr = reinterpret_cast<const __nv_bfloat162*>(v_s + key * D);
        if (!owns) continue;
#pragma unroll
        for (int i = 0; i < kPairs; ++i) {
          const float2 vf = __bfloat1622float2(vr[lane + 32 * i]);
          acc[j][2 * i] = fmaf(w, vf.x, acc[j][2 * i]);
          acc[j][2 * i + 1] = fmaf(w, vf.y, acc[j][2 * i + 1]);
        }
      }
    }
  }

  // Results: normalised output (and, with splits, the log-sum-exp for the merge).
#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    const int r = warp + j * kWarps;
    if (r >= rows) break;
    const int64_t t = q0 + i0 + r / p.G, h = static_cast<int64_t>(hk) * p.G + r % p.G;
    const float inv = l[j] > 0.0f ? 1.0f / l[j] : 0.0f;
    if (owns && num_splits == 1) {
      __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(p.out + (t * p.Hq + h) * D);
#pragma unroll
      for (int i = 0; i < kPairs; ++i)
        o[lane + 32 * i] = __floats2bfloat162_rn(acc[j][2 * i] * inv, acc[j][2 * i + 1] * inv);
    } else if (num_splits > 1) {
      const int64_t row = (static_cast<int64_t>(split) * p.num_tokens + t) * p.Hq + h;
      float2* o = reinterpret_cast<float2*>(p.ws_out + row * D);
#pragma unroll
      for (int i = 0; i < kPairs && owns; ++i) o[lane + 32 * i] = make_float2(acc[j][2 * i] * inv, acc[j][2 * i + 1] * inv);
      if (lane == 0) p.ws_lse[row] = l[j] > 0.0f ? m[j] + log2f(l[j]) : -INFINITY;
    }
  }
}

// One warp per (token, query head): out = sum_z 2^(lse_z - M) o_z / sum_z 2^(lse_z - M).
template <int D>
__global__ void __launch_bounds__(kThreads) merge_splits_kernel(const float* ws_out, const float* ws_lse,
                                                                 int num_splits, int64_t rows, bf16* out) {
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
#pragma unroll
      for (int i = 0; i < kPairs && owns; ++i) {
        const float2 v = o[lane + 32 * i];
        acc[2 * i] = fmaf(w, v.x, acc[2 * i]);
        acc[2 * i + 1] = fmaf(w, v.y, acc[2 * i + 1]);
      }
    }
  }
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  if (!owns) return;
  __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(out + row * D);
#pragma unroll
  for (int i = 0; i < kPairs; ++i) o[lane + 32 * i] = __floats2bfloat162_rn(acc[2 * i] * inv, acc[2 * i + 1] * inv);
}

int sm_count() {
  int dev = 0, n = 0;
  PAGODA_CUDA_CHECK(cudaGetDevice(&dev));
  PAGODA_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return std::max(n, 1);
}

template <int D>
void launch(const Params& p, int num_tiles, int num_splits, cudaStream_t stream) {
  paged_attention_kernel<D><<<dim3(num_tiles, p.Hk, num_splits), kThreads, 0, stream>>>(p);
  PAGODA_CUDA_CHECK_LAUNCH();
  if (num_splits > 1) {
    const int64_t rows = static_cast<int64_t>(p.num_tokens) * p.Hq;
    const int blocks = static_cast<int>((rows + kWarps - 1) / kWarps);
    merge_splits_kernel<D><<<blocks, kThreads, 0, stream>>>(p.ws_out, p.ws_lse, num_splits, rows, p.out);
    PAGODA_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

size_t paged_attention_workspace_bytes(int max_tokens, int num_q_heads, int head_dim) {
  const int64_t rows = std::min<int64_t>(static_cast<int64_t>(max_tokens) * num_q_heads, kMaxSplitRows);
  return static_cast<size_t>(kMaxSplits) * rows * (head_dim + 1) * sizeof(float);
}

void paged_attention(const Tensor& q, const KvCacheLayer& cache, const AttentionMetadata& meta, float scale,
                     Tensor out, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const int64_t D = cache.head_dim, Hk = cache.num_kv_heads;
  const int64_t T = meta.num_tokens;
  PAGODA_CHECK(D == 16 || D == 32 || D == 64 || D == 128 || D == 256,
               "paged_attention (CUDA): head_dim must be 16, 32, 64, 128 or 256, got ", D);
  PAGODA_CHECK(T >= 0 && meta.num_seqs >= 0 && (T == 0 || meta.num_seqs > 0),
               "paged_attention (CUDA): bad metadata: num_tokens ", T, ", num_seqs ", meta.num_seqs);
  if (T == 0) return;
  PAGODA_CHECK(q.numel() % (T * D) == 0, "paged_attention (CUDA): q ", q.shape_string(), " is not [", T, ", Hq, ", D,
               "]");
  const int64_t Hq = q.numel() / (T * D);
  PAGODA_CHECK(Hq > 0 && Hk > 0 && Hq % Hk == 0, "paged_attention (CUDA): ", Hq, " query heads vs ", Hk,
               " KV heads (must divide)");
  const int64_t G = Hq / Hk;
  PAGODA_CHECK(G <= kRows, "paged_attention (CUDA): GQA group of ", G, " query heads per KV head (at most ", kRows,
               " supported)");
  PAGODA_CHECK(out.numel() == q.numel(), "paged_attention (CUDA): out ", out.shape_string(), " vs q ",
               q.shape_string());
  PAGODA_CHECK(meta.query_start_loc.dtype == DType::kI32 && meta.query_start_loc.numel() >= meta.num_seqs + 1 &&
                   meta.seq_lens.dtype == DType::kI32 && meta.seq_lens.numel() >= meta.num_seqs &&
                   meta.block_tables.dtype == DType::kI32 && meta.block_tables.ndim == 2 &&
                   meta.block_tables.rows() >= meta.num_seqs,
               "paged_attention (CUDA): metadata tensors: query_start_loc ", meta.query_start_loc.shape_string(),
               ", seq_lens ", meta.seq_lens.shape_string(), ", block_tables ", meta.block_tables.shape_string(),
               " for ", meta.num_seqs, " sequences");
  PAGODA_CHECK(cache.k.dtype == DType::kBF16 && cache.v.dtype == DType::kBF16 && cache.block_size > 0,
               "paged_attention (CUDA): the KV cache must be BF16");

  Params p{};
  p.q = static_cast<const bf16*>(q.data);
  p.out = static_cast<bf16*>(out.data);
  p.k_cache = static_cast<const bf16*>(cache.k.data);
  p.v_cache = static_cast<const bf16*>(cache.v.data);
  p.query_start_loc = meta.query_start_loc.ptr<int32_t>();
  p.seq_lens = meta.seq_lens.ptr<int32_t>();
  p.block_tables = meta.block_tables.ptr<int32_t>();
  p.num_seqs = meta.num_seqs;
  p.num_tokens = static_cast<int>(T);
  p.Hq = static_cast<int>(Hq);
  p.Hk = static_cast<int>(Hk);
  p.G = static_cast<int>(G);
  p.block_size = cache.block_size;
  p.num_blocks = cache.num_blocks;
  p.max_blocks_per_seq = static_cast<int>(meta.block_tables.cols());
  p.tok_per_tile = std::max<int>(1, kRows / static_cast<int>(G));
  p.window = meta.sliding_window;
  p.scale_log2 = scale * kLog2e;

  const int64_t num_tiles = T / p.tok_per_tile + meta.num_seqs;
  PAGODA_CHECK(num_tiles < (int64_t{1} << 31), "paged_attention (CUDA): batch too large");

  // Split-KV when the blocks would cover less than ~2 waves of SMs and contexts are long.
  int num_splits = 1;
  const int64_t blocks = num_tiles * Hk;
  const int64_t rows = T * Hq;
  static const int sms = sm_count();
  if (meta.max_seq_len >= 256 && blocks < 2 * sms && rows <= kMaxSplitRows) {
    const int64_t want = (2 * sms + blocks - 1) / blocks;
    const int64_t by_len = (meta.max_seq_len + 127) / 128;  // at least 128 keys per split
    const int64_t by_ws = static_cast<int64_t>(workspace_bytes / (static_cast<size_t>(rows) * (D + 1) * sizeof(float)));
    num_splits = static_cast<int>(std::max<int64_t>(1, std::min({want, by_len, by_ws, int64_t{kMaxSplits}})));
  }
  // Tensor cores when the chunks fill the 64-row tiles of the mma kernel (prefill); decode-sized
  // batches keep the CUDA-core kernel, whose 16-row tiles waste less and which splits long contexts.
  if (num_splits == 1 && (D == 64 || D == 128) &&
      static_cast<int64_t>(meta.max_query_len) * G >= mma_attention::kRows) {
    mma_attention::Params mp{};
    mp.q = static_cast<const uint16_t*>(q.data);
    mp.out = static_cast<uint16_t*>(out.data);
    mp.k_cache = static_cast<const uint16_t*>(cache.k.data);
    mp.v_cache = static_cast<const uint16_t*>(cache.v.data);
    mp.query_start_loc = p.query_start_loc;
    mp.seq_lens = p.seq_lens;
    mp.block_tables = p.block_tables;
    mp.num_seqs = p.num_seqs;
    mp.num_tokens = p.num_tokens;
    mp.Hq = p.Hq;
    mp.Hk = p.Hk;
    mp.G = p.G;
    mp.block_size = p.block_size;
    mp.num_blocks = p.num_blocks;
    mp.max_blocks_per_seq = p.max_blocks_per_seq;
    mp.tok_per_tile = std::max<int>(1, mma_attention::kRows / p.G);
    mp.window = p.window;
    mp.scale_log2 = p.scale_log2;
    const int64_t mma_tiles = T / mp.tok_per_tile + meta.num_seqs;
    const dim3 grid(static_cast<unsigned>(mma_tiles), static_cast<unsigned>(Hk));
    if (D == 64) {
      mma_attention::paged_attention_mma_kernel<64><<<grid, mma_attention::kThreads, 0, stream>>>(mp);
    } else {
      mma_attention::paged_attention_mma_kernel<128><<<grid, mma_attention::kThreads, 0, stream>>>(mp);
    }
    PAGODA_CUDA_CHECK_LAUNCH();
    return;
  }
  if (num_splits > 1) {
    p.ws_out = static_cast<float*>(workspace);
    p.ws_lse = p.ws_out + static_cast<int64_t>(num_splits) * rows * D;
  }
  switch (D) {
    case 16: launch<16>(p, static_cast<int>(num_tiles), num_splits, stream); break;
    case 32: launch<32>(p, static_cast<int>(num_tiles), num_splits, stream); break;
    case 64: launch<64>(p, static_cast<int>(num_tiles), num_splits, stream); break;
    case 128: launch<128>(p, static_cast<int>(num_tiles), num_splits, stream); break;
    default: launch<256>(p, static_cast<int>(num_tiles), num_splits, stream); break;
  }
}

}  // namespace pagoda::cuda
