// The CUDA backend's paged attention against the CPU backend's on the same inputs: q, K and V
// random and rounded to BF16 (both caches BF16, filled with identical values in each backend's
// own layout: CPU [blocks, Hk, block_size, D], CUDA [blocks, block_size, Hk, D]), block tables a
// random permutation of the pool. Batches mix prefill chunks from position 0, chunks continuing a
// prior context and decode tokens, over head_dim 16 / 32 (the test fixtures) / 64 / 128 / 256, GQA groups 1 / 4 / 7 / 16, block
// sizes 16 / 32, with and without a sliding window, and decode batches with long contexts (the
// split-KV path and its merge). Skipped without a CUDA device.
//
// Output is poisoned with NaN first; NaN never passes. Bound |gpu - cpu| <= 1e-2 |cpu| + 4e-3:
// the output is a convex combination of V values in [-1, 1]; both sides compute in FP32 from
// identical inputs, so only summation order (~1e-6), the GPU's final BF16 rounding (<= 2^-8
// relative) and, in the tensor-core kernel that batches with 64-row tiles of prefill take
// (attention_mma.cuh), the BF16 rounding of the probabilities before P V (<= 2^-8 each, so
// <= 2^-8 ~ 3.9e-3 absolute on the output at worst) separate them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../backend/test_util.h"
#include "backend/backend.h"
#include "base/dtype.h"
#include "base/error.h"

namespace pagoda::testing {
namespace {

struct Seq {
  int ctx;   // context length after this step
  int qlen;  // query tokens this step (the last qlen positions)
};

struct Case {
  int D, Hq, Hk, block_size, window;
  std::vector<Seq> seqs;
  std::string name;
};

std::vector<float> rand_bf16(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_to_f32(f32_to_bf16(dist(rng)));
  return v;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(v[i]);
  return h;
}

class CudaAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    gpu_ = make_cuda_backend(0);
    cpu_ = make_cpu_backend();
  }

  // Device buffer holding host bytes.
  DeviceBuffer up(const void* src, size_t bytes) {
    DeviceBuffer b = gpu_->allocate(bytes);
    gpu_->copy_from_host(b.data(), src, bytes);
    return b;
  }

  void run(const Case& c, uint32_t seed) {
    std::mt19937 rng(seed);
    const int S = static_cast<int>(c.seqs.size());
    const int D = c.D, Hq = c.Hq, Hk = c.Hk, bs = c.block_size;
    std::vector<int32_t> qsl(S + 1, 0), seq_lens(S);
    int max_blocks = 1, max_q = 0, max_ctx = 0, total_blocks = 0;
    for (int s = 0; s < S; ++s) {
      qsl[s + 1] = qsl[s] + c.seqs[s].qlen;
      seq_lens[s] = c.seqs[s].ctx;
      const int nb = (c.seqs[s].ctx + bs - 1) / bs;
      max_blocks = std::max(max_blocks, nb);
      total_blocks += nb;
      max_q = std::max(max_q, c.seqs[s].qlen);
      max_ctx = std::max(max_ctx, c.seqs[s].ctx);
    }
    const int T = qsl[S];
    const int num_blocks = total_blocks + 3;  // a few blocks nobody uses
    std::vector<int32_t> perm(num_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int32_t> tables(static_cast<size_t>(S) * max_blocks);
    int next = 0;
    for (int s = 0; s < S; ++s)
      for (int b = 0; b < max_blocks; ++b)
        tables[s * max_blocks + b] = b < (c.seqs[s].ctx + bs - 1) / bs ? perm[next++] : perm[num_blocks - 1];

    // Identical K/V values in both layouts; unused slots random too (they must not matter).
    const size_t cache_elems = static_cast<size_t>(num_blocks) * bs * Hk * D;
    const std::vector<float> kv_k = rand_bf16(cache_elems, rng), kv_v = rand_bf16(cache_elems, rng);
    KvCache ckv = cpu_->allocate_kv_cache(1, num_blocks, bs, Hk, D, DType::kBF16);
    KvCache gkv = gpu_->allocate_kv_cache(1, num_blocks, bs, Hk, D, DType::kBF16);
    std::vector<uint16_t> ck(cache_elems), cv(cache_elems), gk(cache_elems), gv(cache_elems);
    for (int b = 0; b < num_blocks; ++b)
      for (int o = 0; o < bs; ++o)
        for (int h = 0; h < Hk; ++h)
          for (int d = 0; d < D; ++d) {
            const size_t logical = ((static_cast<size_t>(b) * bs + o) * Hk + h) * D + d;  // = GPU layout
            const size_t cpu_idx = ((static_cast<size_t>(b) * Hk + h) * bs + o) * D + d;
            gk[logical] = f32_to_bf16(kv_k[logical]);
            gv[logical] = f32_to_bf16(kv_v[logical]);
            ck[cpu_idx] = gk[logical];
            cv[cpu_idx] = gv[logical];
          }
    std::copy(ck.begin(), ck.end(), ckv.layers[0].k.ptr<uint16_t>());
    std::copy(cv.begin(), cv.end(), ckv.layers[0].v.ptr<uint16_t>());
    gpu_->copy_from_host(gkv.layers[0].k.data, gk.data(), gk.size() * 2);
    gpu_->copy_from_host(gkv.layers[0].v.data, gv.data(), gv.size() * 2);

    std::vector<float> q = rand_bf16(static_cast<size_t>(T) * Hq * D, rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    std::vector<int32_t> slots(T, -1);  // unused by paged_attention

    // CPU.
    AttentionMetadata cm;
    cm.query_start_loc = Tensor(qsl.data(), DType::kI32, {S + 1});
    cm.seq_lens = Tensor(seq_lens.data(), DType::kI32, {S});
    cm.block_tables = Tensor(tables.data(), DType::kI32, {S, max_blocks});
    cm.slot_mapping = Tensor(slots.data(), DType::kI32, {T});
    cm.num_seqs = S;
    cm.num_tokens = T;
    cm.max_query_len = max_q;
    cm.max_seq_len = max_ctx;
    cm.sliding_window = c.window;
    std::vector<float> ref(static_cast<size_t>(T) * Hq * D, 0.0f);
    cpu_->paged_attention(Tensor(q.data(), DType::kF32, {T, Hq, D}), ckv.layers[0], cm, scale,
                          Tensor(ref.data(), DType::kF32, {T, Hq, D}));

    // GPU.
    const std::vector<uint16_t> qh = to_bf16(q);
    DeviceBuffer gq = up(qh.data(), qh.size() * 2);
    DeviceBuffer gqsl = up(qsl.data(), qsl.size() * 4), glens = up(seq_lens.data(), seq_lens.size() * 4);
    DeviceBuffer gtab = up(tables.data(), tables.size() * 4), gslots = up(slots.data(), slots.size() * 4);
    const std::vector<uint16_t> nan(static_cast<size_t>(T) * Hq * D, 0x7fc0);
    DeviceBuffer gout = up(nan.data(), nan.size() * 2);
    AttentionMetadata gm = cm;
    gm.query_start_loc.data = gqsl.data();
    gm.seq_lens.data = glens.data();
    gm.block_tables.data = gtab.data();
    gm.slot_mapping.data = gslots.data();
    gpu_->paged_attention(Tensor(gq.data(), DType::kBF16, {T, Hq, D}), gkv.layers[0], gm, scale,
                          Tensor(gout.data(), DType::kBF16, {T, Hq, D}));
    std::vector<uint16_t> got(nan.size());
    gpu_->copy_to_host(got.data(), gout.data(), got.size() * 2);

    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double g = bf16_to_f32(got[i]), r = ref[i];
      ASSERT_TRUE(std::isfinite(g) && std::abs(g - r) <= 1e-2 * std::abs(r) + 4e-3)
          << c.name << ": element " << i << " (token " << i / (Hq * D) << ", head " << (i / D) % Hq << ", dim "
          << i % D << "): gpu " << g << ", cpu " << r;
      worst = std::max(worst, std::abs(g - r));
    }
    RecordProperty(c.name, std::to_string(worst));
  }

  std::unique_ptr<Backend> gpu_, cpu_;
};

// "D128_Hq8_Hk2_bs16_w-1" (built by appending: GCC 12 warns falsely on "lit" + std::string chains).
std::string case_name(int D, int Hq, int Hk, int bs, int window) {
  std::string n = "D";
  n += std::to_string(D);
  n += "_Hq";
  n += std::to_string(Hq);
  n += "_Hk";
  n += std::to_string(Hk);
  n += "_bs";
  n += std::to_string(bs);
  n += "_w";
  n += std::to_string(window);
  return n;
}

// (Hq, Hk) pairs: GQA groups 1, 4, 7 (Qwen2.5-0.5B: 14 / 2), 16.
const std::pair<int, int> kHeads[] = {{4, 4}, {8, 2}, {14, 2}, {16, 1}};

TEST_F(CudaAttentionTest, MixedPrefillAndDecodeMatchesCpu) {
  uint32_t seed = 1;
  for (int D : {16, 32, 64, 128, 256})
    for (auto [Hq, Hk] : kHeads)
      for (int bs : {16, 32})
        for (int window : {-1, 48}) {
          Case c{D, Hq, Hk, bs, window,
                 {{37, 37}, {120, 20}, {700, 1}, {16, 1}, {1, 1}, {65, 33}},
                 case_name(D, Hq, Hk, bs, window)};
          run(c, seed++);
        }
}

// Few decode sequences with long contexts: the split-KV path (and its merge kernel).
TEST_F(CudaAttentionTest, LongContextDecodeSplitKvMatchesCpu) {
  uint32_t seed = 100;
  for (int D : {64, 128, 256})
    for (auto [Hq, Hk] : kHeads)
      for (int window : {-1, 300}) {
        Case c{D, Hq, Hk, 16, window, {{4000, 1}, {1537, 1}, {257, 1}},
               case_name(D, Hq, Hk, 16, window)};
        run(c, seed++);
        Case one{D, Hq, Hk, 16, window, {{8191, 1}}, c.name};
        one.name += "_single";
        run(one, seed++);
      }
}

// One long prefill chunk continuing a prior context (many tiles of one sequence).
TEST_F(CudaAttentionTest, LongPrefillChunkMatchesCpu) {
  uint32_t seed = 200;
  for (int D : {128, 256})
    for (auto [Hq, Hk] : kHeads) {
      Case c{D, Hq, Hk, 16, -1, {{700, 500}}, case_name(D, Hq, Hk, 16, -1)};
      run(c, seed++);
    }
}

TEST_F(CudaAttentionTest, RejectsUnsupportedShapes) {
  KvCache kv = gpu_->allocate_kv_cache(1, 4, 16, 1, 96, DType::kBF16);  // head_dim 96: unsupported
  DeviceBuffer q = gpu_->allocate(96 * 2), out = gpu_->allocate(96 * 2), i32 = gpu_->allocate(64);
  AttentionMetadata m;
  m.query_start_loc = Tensor(i32.data(), DType::kI32, {2});
  m.seq_lens = Tensor(i32.data(), DType::kI32, {1});
  m.block_tables = Tensor(i32.data(), DType::kI32, {1, 1});
  m.slot_mapping = Tensor(i32.data(), DType::kI32, {1});
  m.num_seqs = 1;
  m.num_tokens = 1;
  try {
    gpu_->paged_attention(Tensor(q.data(), DType::kBF16, {1, 1, 96}), kv.layers[0], m, 0.1f,
                          Tensor(out.data(), DType::kBF16, {1, 1, 96}));
    FAIL() << "head_dim 96 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pagoda::testing
