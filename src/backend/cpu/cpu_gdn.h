// CPU implementations of the hybrid-attention ops of Backend (Gated DeltaNet, gated norms); the
// CpuBackend overrides forward here. Contracts: backend.h.
#pragma once

#include "backend/backend.h"
#include "base/thread_pool.h"

namespace pagoda::cpu {

void sigmoid_mul(ThreadPool& pool, Tensor x, const Tensor& gate);
void rms_norm_gated(ThreadPool& pool, const Tensor& x, const Tensor& z, const Tensor& weight, float eps, Tensor out);
void causal_conv1d(ThreadPool& pool, const Tensor& x, const Tensor& weight, const AttentionMetadata& meta,
                   LinearAttnState& state, Tensor out);
void gated_delta_rule(ThreadPool& pool, const Tensor& qkv, const Tensor& a, const Tensor& b, const Tensor& A_log,
                      const Tensor& dt_bias, const GdnShape& shape, const AttentionMetadata& meta, int chunk_size,
                      LinearAttnState& state, Tensor out);

}  // namespace pagoda::cpu
