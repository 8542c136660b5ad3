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
#include "attention_case.h"
#include "backend/backend.h"
#include "base/dtype.h"
#include "base/error.h"

namespace pagoda::testing {
namespace {

struct Case {
  int D, Hq, Hk, block_size, window;
  std::vector<AttnSeq> seqs;
  std::string name;
};

class CudaAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    gpu_ = make_cuda_backend(0);
  }

  // Device buffer holding host bytes.
  DeviceBuffer up(const void* src, size_t bytes) {
    DeviceBuffer b = gpu_->allocate(bytes);
    gpu_->copy_from_host(b.data(), src, bytes);
    return b;
  }

  void run(const Case& c, uint32_t seed) {
    const AttentionCase a(c.D, c.Hq, c.Hk, c.block_size, c.window, c.seqs, seed);
    KvCache gkv = gpu_->allocate_kv_cache(1, a.num_blocks, a.block_size, a.Hk, a.D, DType::kBF16);
    gpu_->copy_from_host(gkv.layers[0].k.data, a.k.data(), a.k.size() * 2);
    gpu_->copy_from_host(gkv.layers[0].v.data, a.v.data(), a.v.size() * 2);
    DeviceBuffer gq = up(a.q.data(), a.q.size() * 2);
    DeviceBuffer gqsl = up(a.qsl.data(), a.qsl.size() * 4), glens = up(a.seq_lens.data(), a.seq_lens.size() * 4);
    DeviceBuffer gtab = up(a.tables.data(), a.tables.size() * 4), gslots = up(a.slots.data(), a.slots.size() * 4);
    const std::vector<uint16_t> nan(a.q.size(), 0x7fc0);
    DeviceBuffer gout = up(nan.data(), nan.size() * 2);
    AttentionMetadata gm = a.meta();
    gm.query_start_loc.data = gqsl.data();
    gm.seq_lens.data = glens.data();
    gm.block_tables.data = gtab.data();
    gm.slot_mapping.data = gslots.data();
    gpu_->paged_attention(Tensor(gq.data(), DType::kBF16, {a.T, a.Hq, a.D}), gkv.layers[0], gm, a.scale,
                          Tensor(gout.data(), DType::kBF16, {a.T, a.Hq, a.D}));
    std::vector<uint16_t> got(nan.size());
    gpu_->copy_to_host(got.data(), gout.data(), got.size() * 2);
    a.check(got, c.name);
  }

  std::unique_ptr<Backend> gpu_;
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
