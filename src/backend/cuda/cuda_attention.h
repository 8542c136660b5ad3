// src/backend/cuda/cuda_attention.h
#pragma once
#include <cuda_runtime.h>
#include <cstddef>
#include "backend/backend.h"
namespace pagoda::cuda {
// KV cache layout on CUDA: k and v are [num_blocks, block_size, num_kv_heads, head_dim], BF16.
// q and out are [T, Hq, D] in BF16 (the CUDA activation dtype). D in {16, 32, 64, 128, 256}.
size_t paged_attention_workspace_bytes(int max_tokens, int num_q_heads, int head_dim);
void paged_attention(const Tensor& q, const KvCacheLayer& cache, const AttentionMetadata& meta, float scale,
                     Tensor out, void* workspace, size_t workspace_bytes, cudaStream_t stream);
}  // namespace pagoda::cuda
