// One paged-attention batch for the CUDA attention tests (cuda_attention_test.cc on a GPU,
// attention_mma_emu_test.cc everywhere): random q, K, V in [-1, 1] rounded to BF16, the caches in
// the CUDA layout [blocks, block_size, Hk, D], block tables a random permutation of the pool
// (unused slots random too: they must not matter), and the CPU backend's output on the same
// values (its cache filled in its own layout [blocks, Hk, block_size, D]) as the reference.
// check() applies the bound both tests share: |out - cpu| <= 1e-2 |cpu| + 4e-3, NaN never passes.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../backend/test_util.h"
#include "backend/backend.h"

namespace pagoda::testing {

struct AttnSeq {
  int ctx;   // context length after this step
  int qlen;  // query tokens this step (the last qlen positions)
};

struct AttentionCase {
  int D = 0, Hq = 0, Hk = 0, block_size = 0, window = -1;
  int S = 0, T = 0, num_blocks = 0, max_blocks = 1, max_q = 0, max_ctx = 0;
  std::vector<int32_t> qsl, seq_lens, tables, slots;
  std::vector<uint16_t> k, v;  // BF16 bits, CUDA layout
  std::vector<uint16_t> q;     // BF16 bits [T, Hq, D]
  float scale = 1.0f;
  std::vector<float> ref;      // the CPU backend's output [T, Hq, D]

  AttentionCase(int D_, int Hq_, int Hk_, int bs, int window_, const std::vector<AttnSeq>& seqs, uint32_t seed)
      : D(D_), Hq(Hq_), Hk(Hk_), block_size(bs), window(window_) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    auto rnd = [&](size_t n) {
      std::vector<uint16_t> x(n);
      for (uint16_t& e : x) e = f32_to_bf16(dist(rng));
      return x;
    };
    S = static_cast<int>(seqs.size());
    qsl.assign(S + 1, 0);
    seq_lens.resize(S);
    int total_blocks = 0;
    for (int s = 0; s < S; ++s) {
      qsl[s + 1] = qsl[s] + seqs[s].qlen;
      seq_lens[s] = seqs[s].ctx;
      const int nb = (seqs[s].ctx + bs - 1) / bs;
      max_blocks = std::max(max_blocks, nb);
      total_blocks += nb;
      max_q = std::max(max_q, seqs[s].qlen);
      max_ctx = std::max(max_ctx, seqs[s].ctx);
    }
    T = qsl[S];
    num_blocks = total_blocks + 3;  // a few blocks nobody uses
    std::vector<int32_t> perm(num_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    tables.resize(static_cast<size_t>(S) * max_blocks);
    int next = 0;
    for (int s = 0; s < S; ++s)
      for (int b = 0; b < max_blocks; ++b)
        tables[s * max_blocks + b] = b < (seqs[s].ctx + bs - 1) / bs ? perm[next++] : perm[num_blocks - 1];
    const size_t cache_elems = static_cast<size_t>(num_blocks) * bs * Hk * D;
    k = rnd(cache_elems);
    v = rnd(cache_elems);
    q = rnd(static_cast<size_t>(T) * Hq * D);
    slots.assign(T, -1);  // unused by paged_attention
    scale = 1.0f / std::sqrt(static_cast<float>(D));

    auto cpu = make_cpu_backend();
    KvCache kv = cpu->allocate_kv_cache(1, num_blocks, bs, Hk, D, DType::kBF16);
    uint16_t* ck = kv.layers[0].k.ptr<uint16_t>();
    uint16_t* cv = kv.layers[0].v.ptr<uint16_t>();
    for (int b = 0; b < num_blocks; ++b)
      for (int o = 0; o < bs; ++o)
        for (int h = 0; h < Hk; ++h)
          for (int d = 0; d < D; ++d) {
            const size_t g = ((static_cast<size_t>(b) * bs + o) * Hk + h) * D + d;
            const size_t c = ((static_cast<size_t>(b) * Hk + h) * bs + o) * D + d;
            ck[c] = k[g];
            cv[c] = v[g];
          }
    std::vector<float> qf(q.size());
    for (size_t i = 0; i < q.size(); ++i) qf[i] = bf16_to_f32(q[i]);
    ref.assign(q.size(), 0.0f);
    cpu->paged_attention(Tensor(qf.data(), DType::kF32, {T, Hq, D}), kv.layers[0], meta(), scale,
                         Tensor(ref.data(), DType::kF32, {T, Hq, D}));
  }

  // The metadata over this case's host vectors (a GPU test repoints the tensors at device copies).
  AttentionMetadata meta() const {
    AttentionMetadata m;
    m.query_start_loc = Tensor(const_cast<int32_t*>(qsl.data()), DType::kI32, {S + 1});
    m.seq_lens = Tensor(const_cast<int32_t*>(seq_lens.data()), DType::kI32, {S});
    m.block_tables = Tensor(const_cast<int32_t*>(tables.data()), DType::kI32, {S, max_blocks});
    m.slot_mapping = Tensor(const_cast<int32_t*>(slots.data()), DType::kI32, {T});
    m.num_seqs = S;
    m.num_tokens = T;
    m.max_query_len = max_q;
    m.max_seq_len = max_ctx;
    m.sliding_window = window;
    return m;
  }

  // Every element of out (BF16 bits [T, Hq, D]) within the bound; records the worst difference.
  void check(const std::vector<uint16_t>& out, const std::string& name) const {
    ASSERT_EQ(out.size(), ref.size());
    double worst = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      const double g = bf16_to_f32(out[i]), r = ref[i];
      ASSERT_TRUE(std::isfinite(g) && std::abs(g - r) <= 1e-2 * std::abs(r) + 4e-3)
          << name << ": element " << i << " (token " << i / (Hq * D) << ", head " << (i / D) % Hq << ", dim "
          << i % D << "): got " << g << ", cpu " << r;
      worst = std::max(worst, std::abs(g - r));
    }
    ::testing::Test::RecordProperty(name, std::to_string(worst));
  }
};

}  // namespace pagoda::testing
