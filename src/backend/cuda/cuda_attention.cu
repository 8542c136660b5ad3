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
// Prefill-sized batches (chunks that fill 64-row tiles) at head_dim 64 / 128 / 256 run the tensor-core
// kernel of attention_mma.cuh instead (same tiling of sequences, same metadata contract).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "backend/cuda/attention_kernels.cuh"
#include "backend/cuda/attention_mma.cuh"
#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_attention.h"
#include "backend/cuda/cuda_common.h"
#include "base/error.h"

namespace pagoda::cuda {
namespace {

using namespace core_attention;  // NOLINT: the kernels and their Params

int sm_count() {
  int dev = 0, n = 0;
  PAGODA_CUDA_CHECK(cudaGetDevice(&dev));
  PAGODA_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return std::max(n, 1);
}

template <int D>
void launch(const Params& p, int num_tiles, int num_splits, cudaStream_t stream) {
  PAGODA_LAUNCH(dim3(num_tiles, p.Hk, num_splits), kThreads, 0, stream, paged_attention_kernel<D>)(p);
  PAGODA_CUDA_CHECK_LAUNCH();
  if (num_splits > 1) {
    const int64_t rows = static_cast<int64_t>(p.num_tokens) * p.Hq;
    const int blocks = static_cast<int>((rows + kWarps - 1) / kWarps);
    PAGODA_LAUNCH(blocks, kThreads, 0, stream, merge_splits_kernel<D>)(p.ws_out, p.ws_lse, num_splits, rows, p.out);
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
  p.q = static_cast<const uint16_t*>(q.data);
  p.out = static_cast<uint16_t*>(out.data);
  p.k_cache = static_cast<const uint16_t*>(cache.k.data);
  p.v_cache = static_cast<const uint16_t*>(cache.v.data);
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
  if (num_splits == 1 && (D == 64 || D == 128 || D == 256) &&
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
      PAGODA_LAUNCH(grid, mma_attention::kThreads, 0, stream, mma_attention::paged_attention_mma_kernel<64>)(mp);
    } else if (D == 128) {
      PAGODA_LAUNCH(grid, mma_attention::kThreads, 0, stream, mma_attention::paged_attention_mma_kernel<128>)(mp);
    } else {
      PAGODA_LAUNCH(grid, mma_attention::kThreads, 0, stream, mma_attention::paged_attention_mma_kernel<256>)(mp);
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
