// paged_attention on every ISA against a double-precision reference that reads the same paged
// cache: a varlen batch mixing decode tokens, a whole prefill and prefill chunks with prior
// context, over head_dim 64/128, GQA ratios 1/2/4, block sizes 1/16, F32, BF16 and FP8 (E4M3,
// E5M2; codecs checked against torch in base/fp8_test.cc) caches, with and without a sliding
// window. Physical blocks are shuffled so that paging is exercised.
// Bound: max|out - ref| <= 2e-5 * max(1, max|ref|) (the reference uses the cache's stored
// values, so BF16 / FP8 storage adds no error of its own).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "test_util.h"

namespace pagoda::testing {
namespace {

struct SeqSpec {
  int32_t seq_len;    // context length after this step
  int32_t query_len;  // tokens of this step (the last query_len positions)
};

struct Config {
  int64_t head_dim, group, kv_heads, block_size;
  DType cache_dtype;
  int32_t sliding_window;
};

std::string describe(const Config& c) {
  return "D=" + std::to_string(c.head_dim) + " G=" + std::to_string(c.group) + " Hk=" + std::to_string(c.kv_heads) +
         " bs=" + std::to_string(c.block_size) + " cache=" + dtype_str(c.cache_dtype) +
         " window=" + std::to_string(c.sliding_window);
}

void check_attention(Backend& backend, const Config& c, const std::vector<SeqSpec>& seqs, std::mt19937& rng) {
  const int64_t D = c.head_dim, Hk = c.kv_heads, Hq = Hk * c.group, bs = c.block_size;
  const int64_t S = static_cast<int64_t>(seqs.size());
  int64_t T = 0, max_blocks = 0, total_blocks = 0;
  for (const auto& s : seqs) {
    T += s.query_len;
    const int64_t nb = (s.seq_len + bs - 1) / bs;
    max_blocks = std::max(max_blocks, nb);
    total_blocks += nb;
  }
  const int64_t num_blocks = total_blocks + 3;
  KvCache kv = backend.allocate_kv_cache(1, static_cast<int>(num_blocks), static_cast<int>(bs), static_cast<int>(Hk),
                                         static_cast<int>(D), c.cache_dtype);
  KvCacheLayer& layer = kv.layers[0];
  // Random cache contents; kval/vval hold the stored values exactly.
  const int64_t cache_elems = num_blocks * Hk * bs * D;
  std::vector<double> kval(cache_elems), vval(cache_elems);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int64_t i = 0; i < cache_elems; ++i) {
    const float kf = dist(rng), vf = dist(rng);
    if (c.cache_dtype == DType::kF8E4M3 || c.cache_dtype == DType::kF8E5M2) {
      // Values up to 8: E4M3's and E5M2's normal ranges, and their subnormals near 0.
      const bool e4m3 = c.cache_dtype == DType::kF8E4M3;
      uint8_t* kc = static_cast<uint8_t*>(layer.k.data) + i;
      uint8_t* vc = static_cast<uint8_t*>(layer.v.data) + i;
      *kc = e4m3 ? f32_to_fp8_e4m3(8 * kf) : f32_to_fp8_e5m2(8 * kf);
      *vc = e4m3 ? f32_to_fp8_e4m3(8 * vf) : f32_to_fp8_e5m2(8 * vf);
      kval[i] = e4m3 ? fp8_e4m3_to_f32(*kc) : fp8_e5m2_to_f32(*kc);
      vval[i] = e4m3 ? fp8_e4m3_to_f32(*vc) : fp8_e5m2_to_f32(*vc);
    } else if (c.cache_dtype == DType::kBF16) {
      layer.k.ptr<uint16_t>()[i] = f32_to_bf16(kf);
      layer.v.ptr<uint16_t>()[i] = f32_to_bf16(vf);
      kval[i] = bf16_to_f32(layer.k.ptr<uint16_t>()[i]);
      vval[i] = bf16_to_f32(layer.v.ptr<uint16_t>()[i]);
    } else {
      layer.k.ptr<float>()[i] = kf;
      layer.v.ptr<float>()[i] = vf;
      kval[i] = kf;
      vval[i] = vf;
    }
  }
  std::vector<int32_t> physical(num_blocks);
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  std::vector<int32_t> qsl(S + 1, 0), lens(S), tables(S * max_blocks, -1);
  int64_t next_block = 0;
  for (int64_t s = 0; s < S; ++s) {
    qsl[s + 1] = qsl[s] + seqs[s].query_len;
    lens[s] = seqs[s].seq_len;
    for (int64_t b = 0; b < (seqs[s].seq_len + bs - 1) / bs; ++b) tables[s * max_blocks + b] = physical[next_block++];
  }
  RandomTensor q(DType::kF32, {T, Hq, D}, rng, -2.0f, 2.0f);
  std::vector<float> out = nan_filled(T * Hq * D);
  AttentionMetadata meta;
  meta.query_start_loc = Tensor(qsl.data(), DType::kI32, {S + 1});
  meta.seq_lens = Tensor(lens.data(), DType::kI32, {S});
  meta.block_tables = Tensor(tables.data(), DType::kI32, {S, max_blocks});
  meta.num_seqs = static_cast<int32_t>(S);
  meta.num_tokens = static_cast<int32_t>(T);
  meta.sliding_window = c.sliding_window;
  for (const auto& s : seqs) {
    meta.max_query_len = std::max(meta.max_query_len, s.query_len);
    meta.max_seq_len = std::max(meta.max_seq_len, s.seq_len);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  backend.paged_attention(q.tensor(), layer, meta, scale, Tensor(out.data(), DType::kF32, {T, Hq, D}));

  std::vector<double> ref(T * Hq * D);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t i = 0; i < seqs[s].query_len; ++i) {
      const int64_t t = qsl[s] + i;
      const int64_t pos = seqs[s].seq_len - seqs[s].query_len + i;
      const int64_t lo = c.sliding_window > 0 ? std::max<int64_t>(0, pos - c.sliding_window + 1) : 0;
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t g = h / c.group;
        std::vector<double> score;
        std::vector<int64_t> base;
        double mx = -1e300;
        for (int64_t p = lo; p <= pos; ++p) {
          const int64_t blk = tables[s * max_blocks + p / bs];
          const int64_t off = ((blk * Hk + g) * bs + p % bs) * D;
          double d = 0.0;
          for (int64_t e = 0; e < D; ++e) d += q[(t * Hq + h) * D + e] * kval[off + e];
          score.push_back(d * scale);
          base.push_back(off);
          mx = std::max(mx, score.back());
        }
        double sum = 0.0;
        for (double& sc : score) sum += (sc = std::exp(sc - mx));
        for (int64_t e = 0; e < D; ++e) {
          double acc = 0.0;
          for (size_t j = 0; j < score.size(); ++j) acc += score[j] * vval[base[j] + e];
          ref[(t * Hq + h) * D + e] = acc / sum;
        }
      }
    }
  }
  EXPECT_LE(scaled_error(out, ref), 2e-5) << describe(c);
}

class AttentionTest : public ::testing::TestWithParam<cpu::Isa> {
 protected:
  void SetUp() override { backend_ = make_cpu_backend(GetParam()); }
  std::unique_ptr<Backend> backend_;
};

TEST_P(AttentionTest, MixedBatchOverHeadsBlocksDtypesAndWindows) {
  std::mt19937 rng(42);
  // Decode tokens at several context lengths, a whole prefill, prefill chunks after prior
  // context (one long enough to span several query tiles).
  const std::vector<SeqSpec> seqs = {{1, 1}, {37, 1}, {20, 20}, {50, 13}, {70, 1}, {100, 45}};
  for (int64_t D : {64, 128})
    for (int64_t G : {1, 2, 4})
      for (int64_t Hk : {1, 2})
        for (int64_t bs : {1, 16})
          for (DType cd : {DType::kF32, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2})
            for (int32_t window : {-1, 7}) check_attention(*backend_, {D, G, Hk, bs, cd, window}, seqs, rng);
}

TEST_P(AttentionTest, SingleDecodeLongContext) {
  std::mt19937 rng(5);
  for (DType cd : {DType::kF32, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2})
    for (int32_t window : {-1, 100}) check_attention(*backend_, {128, 2, 8, 16, cd, window}, {{777, 1}}, rng);
}

TEST_P(AttentionTest, SplitContextDecodeMatchesUnsplit) {
  // One KV head and one or two decode sequences leave threads idle, so the backend splits long
  // contexts into partitions (flash-decoding) and merges their softmax states.
  std::mt19937 rng(8);
  for (DType cd : {DType::kF32, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2}) {
    for (int32_t window : {-1, 300, 700}) {
      check_attention(*backend_, {128, 4, 1, 16, cd, window}, {{1000, 1}}, rng);
      check_attention(*backend_, {64, 2, 1, 1, cd, window}, {{1500, 1}, {600, 1}}, rng);
    }
  }
}

TEST_P(AttentionTest, OddHeadDim) {
  // Not a multiple of any vector width: exercises every tail loop.
  std::mt19937 rng(6);
  check_attention(*backend_, {40, 3, 1, 5, DType::kF32, -1}, {{9, 9}, {23, 4}}, rng);
  check_attention(*backend_, {17, 1, 2, 16, DType::kBF16, 3}, {{30, 30}}, rng);
  check_attention(*backend_, {17, 2, 1, 16, DType::kF8E4M3, -1}, {{30, 2}, {9, 9}}, rng);
}

TEST_P(AttentionTest, Fp8NanCodeReadsAsNan) {
  // A NaN written into an FP8 cache (code 0x7f / 0xff) must come out NaN, never a finite value.
  for (DType cd : {DType::kF8E4M3, DType::kF8E5M2}) {
    const int64_t D = 64, bs = 16, ctx = 20;
    for (bool in_v : {false, true}) {
      KvCache kv = backend_->allocate_kv_cache(1, 2, static_cast<int>(bs), 1, static_cast<int>(D), cd);
      KvCacheLayer& layer = kv.layers[0];
      std::memset(layer.k.data, 0x30, layer.k.nbytes());  // 0.5 (E4M3) / 0.125 (E5M2)
      std::memset(layer.v.data, 0x30, layer.v.nbytes());
      const uint8_t nan = cd == DType::kF8E4M3 ? f32_to_fp8_e4m3(NAN) : f32_to_fp8_e5m2(NAN);
      static_cast<uint8_t*>(in_v ? layer.v.data : layer.k.data)[5 * D + 17] = nan;  // position 5, dim 17
      std::vector<int32_t> qsl = {0, 1}, lens = {ctx}, table = {0, 1};
      AttentionMetadata meta;
      meta.query_start_loc = Tensor(qsl.data(), DType::kI32, {2});
      meta.seq_lens = Tensor(lens.data(), DType::kI32, {1});
      meta.block_tables = Tensor(table.data(), DType::kI32, {1, 2});
      meta.num_seqs = 1;
      meta.num_tokens = 1;
      meta.max_query_len = 1;
      meta.max_seq_len = ctx;
      std::vector<float> q(2 * D, 0.25f), out(2 * D, 0.0f);
      backend_->paged_attention(Tensor(q.data(), DType::kF32, {1, 2, D}), layer, meta, 0.125f,
                                Tensor(out.data(), DType::kF32, {1, 2, D}));
      EXPECT_TRUE(std::isnan(out[17])) << dtype_str(cd) << (in_v ? " V" : " K") << ": " << out[17];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, AttentionTest, ::testing::ValuesIn(supported_isas()),
                         [](const auto& info) { return cpu::isa_name(info.param); });

}  // namespace
}  // namespace pagoda::testing
