// Helpers shared by the CUDA op tests (cuda_ops_test.cc, cuda_hybrid_test.cc): random inputs
// exactly representable in BF16, device tensors that own their buffers, uploads / downloads
// through the Backend interface, NaN poisoning of outputs, and the element-wise closeness check.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../backend/test_util.h"
#include "backend/backend.h"
#include "base/dtype.h"

namespace pagoda::testing {

inline constexpr uint16_t kBf16NaN = 0x7fc0;

// Random floats in [lo, hi] rounded to BF16 (exactly representable in both backends).
inline std::vector<float> rand_bf16(int64_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_to_f32(f32_to_bf16(dist(rng)));
  return v;
}

inline std::vector<float> rand_f32(int64_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A device tensor that owns its buffer.
struct Dev {
  DeviceBuffer buf;
  Tensor t;
};

inline Dev dev_alloc(Backend& b, DType dtype, std::initializer_list<int64_t> dims) {
  Tensor shape(nullptr, dtype, dims);
  Dev d;
  d.buf = b.allocate(shape.nbytes());
  d.t = shape;
  d.t.data = d.buf.data();
  return d;
}

// Uploads float values as dtype (BF16 / F32).
inline Dev upload(Backend& b, const std::vector<float>& v, DType dtype, std::initializer_list<int64_t> dims) {
  Dev d = dev_alloc(b, dtype, dims);
  EXPECT_EQ(static_cast<size_t>(d.t.numel()), v.size());
  if (dtype == DType::kBF16) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(v[i]);
    b.copy_from_host(d.t.data, h.data(), h.size() * 2);
  } else {
    b.copy_from_host(d.t.data, v.data(), v.size() * 4);
  }
  return d;
}

inline Dev upload_i32(Backend& b, const std::vector<int32_t>& v, std::initializer_list<int64_t> dims) {
  Dev d = dev_alloc(b, DType::kI32, dims);
  EXPECT_EQ(static_cast<size_t>(d.t.numel()), v.size());
  b.copy_from_host(d.t.data, v.data(), v.size() * 4);
  return d;
}

inline Dev upload_i32(Backend& b, const std::vector<int32_t>& v) {
  return upload_i32(b, v, {static_cast<int64_t>(v.size())});
}

// Fills a BF16 / F32 / I32 device tensor with NaN (I32: the bit pattern of an F32 NaN).
inline void poison(Backend& b, const Tensor& t) {
  if (t.dtype == DType::kBF16) {
    std::vector<uint16_t> h(t.numel(), kBf16NaN);
    b.copy_from_host(t.data, h.data(), h.size() * 2);
  } else {
    std::vector<float> h(t.numel(), std::numeric_limits<float>::quiet_NaN());
    b.copy_from_host(t.data, h.data(), h.size() * 4);
  }
}

inline std::vector<float> download(Backend& b, const Tensor& t) {
  std::vector<float> out(t.numel());
  if (t.dtype == DType::kBF16) {
    std::vector<uint16_t> h(t.numel());
    b.copy_to_host(h.data(), t.data, h.size() * 2);
    for (size_t i = 0; i < h.size(); ++i) out[i] = bf16_to_f32(h[i]);
  } else {
    b.copy_to_host(out.data(), t.data, out.size() * 4);
  }
  return out;
}

inline std::vector<int32_t> download_i32(Backend& b, const Tensor& t) {
  std::vector<int32_t> out(t.numel());
  b.copy_to_host(out.data(), t.data, out.size() * 4);
  return out;
}

// |got - ref| <= rel * |ref| + abs everywhere; NaN / Inf in got never pass.
inline ::testing::AssertionResult close(const std::vector<float>& got, const std::vector<float>& ref, double rel, double abs) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << ref.size();
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = got[i], r = ref[i];
    if (!std::isfinite(g) || !(std::abs(g - r) <= rel * std::abs(r) + abs))
      return ::testing::AssertionFailure() << "at " << i << ": got " << g << ", expected " << r << " (rel " << rel
                                           << ", abs " << abs << ")";
  }
  return ::testing::AssertionSuccess();
}

// close() with abs = abs_of_scale * max |ref|.
inline ::testing::AssertionResult close_scaled(const std::vector<float>& got, const std::vector<float>& ref, double rel,
                                        double abs_of_scale) {
  double scale = 0.0;
  for (float r : ref) scale = std::max(scale, static_cast<double>(std::abs(r)));
  return close(got, ref, rel, abs_of_scale * scale);
}

// "k1=v1 k2=v2 ..." labels for failure messages (built by appending: GCC 12 warns falsely on
// "literal" + std::to_string chains in some builds).
inline std::string label(std::initializer_list<std::pair<const char*, int64_t>> parts) {
  std::string s;
  for (const auto& [k, v] : parts) {
    if (!s.empty()) s += ' ';
    s += k;
    s += '=';
    s += std::to_string(v);
  }
  return s;
}

// One sequence of a linear-attention batch: qlen query tokens, seq_len tokens of context after the
// step (seq_len == qlen: starts at position 0, from a zero state), its state slot.
struct GdnSeq {
  int32_t qlen, seq_len, slot;
};

// The host metadata of such a batch (tests repoint the tensors at device copies as needed).
struct GdnBatch {
  std::vector<int32_t> qsl, lens, slots;
  AttentionMetadata meta;
  int64_t T = 0;
  explicit GdnBatch(const std::vector<GdnSeq>& seqs) {
    const int32_t n = static_cast<int32_t>(seqs.size());
    qsl.assign(static_cast<size_t>(n) + 1, 0);
    int32_t max_q = 0, max_len = 0;
    for (int32_t s = 0; s < n; ++s) {
      qsl[s + 1] = qsl[s] + seqs[s].qlen;
      lens.push_back(seqs[s].seq_len);
      slots.push_back(seqs[s].slot);
      max_q = std::max(max_q, seqs[s].qlen);
      max_len = std::max(max_len, seqs[s].seq_len);
    }
    T = qsl[n];
    meta.query_start_loc = Tensor(qsl.data(), DType::kI32, {n + 1});
    meta.seq_lens = Tensor(lens.data(), DType::kI32, {n});
    meta.state_slots = Tensor(slots.data(), DType::kI32, {n});
    meta.num_seqs = n;
    meta.num_tokens = static_cast<int32_t>(T);
    meta.max_query_len = max_q;
    meta.max_seq_len = max_len;
  }
  GdnBatch(const GdnBatch&) = delete;
  GdnBatch& operator=(const GdnBatch&) = delete;
};

// Gated DeltaNet layer shapes the GPU and emulated tests run (the real Qwen3.5 / Qwen3-Next head
// layouts and odd ones).
struct GdnConfig {
  GdnShape shape;
  int K;
  const char* name;
};
inline constexpr GdnConfig kGdnConfigs[] = {
    {{16, 16, 128, 128}, 4, "qwen3.5-0.8b 16/16x128"},
    {{16, 32, 128, 128}, 4, "qwen3-next 16/32x128"},
    {{2, 4, 64, 32}, 2, "2/4 x 64/32"},
    {{1, 2, 48, 40}, 6, "1/2 x 48/40 (odd dims)"},
    {{1, 1, 256, 64}, 3, "1/1 x 256/64"},
};

// Router logits whose probabilities are distinct with a margin: per token a random permutation of
// E values spaced 8 / E apart (so the top-k set and order cannot flip on a 1-ulp difference of
// exp / sum).
inline std::vector<float> distinct_logits(int64_t T, int64_t E, std::mt19937& rng) {
  std::vector<float> l(T * E);
  std::vector<int> perm(E);
  std::uniform_real_distribution<float> shift(-2.0f, 2.0f);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t e = 0; e < E; ++e) perm[e] = static_cast<int>(e);
    std::shuffle(perm.begin(), perm.end(), rng);
    const float s = shift(rng);
    for (int64_t e = 0; e < E; ++e) l[t * E + e] = s + (perm[e] - E / 2.0f) * (8.0f / static_cast<float>(E));
  }
  return l;
}

// Rows of penalties and LogitEdits for apply_logit_edits tests: row r has r * 3000 random distinct
// tokens (row 0 none) with counts, biases, repetition and min_tokens-mask flags.
struct RandomEdits {
  std::vector<SamplingRow> rows;
  std::vector<LogitEdit> edits;
  std::vector<int32_t> offsets = {0};
  RandomEdits(int64_t R, int64_t V, std::mt19937& rng) : rows(static_cast<size_t>(R)) {
    std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(V) - 1);
    for (int64_t r = 0; r < R; ++r) {
      rows[static_cast<size_t>(r)].repetition_penalty = 1.0f + 0.15f * static_cast<float>(r);
      rows[static_cast<size_t>(r)].presence_penalty = 0.1f * static_cast<float>(r);
      rows[static_cast<size_t>(r)].frequency_penalty = 0.05f * static_cast<float>(r % 3);
      std::set<int32_t> used;
      for (int j = 0; j < 3000 * static_cast<int>(r); ++j) {
        const int32_t t = tok(rng);
        if (!used.insert(t).second) continue;
        LogitEdit e;
        e.token = t;
        e.count = j % 4;
        e.bias = j % 5 == 0 ? 1.5f : 0.0f;
        e.flags = (j % 2 ? kEditRepeat : 0u) | (j % 97 == 0 ? kEditMask : 0u);
        edits.push_back(e);
      }
      offsets.push_back(static_cast<int32_t>(edits.size()));
    }
  }
};

// MoeScratch for R (token, expert) pairs on the CPU backend (F32 activations).
struct CpuMoeScratch {
  std::vector<float> x, y, gate, up;
  std::vector<int32_t> row_of_pair, pair_of_row, offsets;
  MoeScratch scratch;
  CpuMoeScratch(int64_t R, int64_t H, int64_t I, int64_t E)
      : x(R * H), y(R * H), gate(R * I), up(R * I), row_of_pair(R), pair_of_row(R), offsets(E + 1) {
    scratch.x = Tensor(x.data(), DType::kF32, {R, H});
    scratch.y = Tensor(y.data(), DType::kF32, {R, H});
    scratch.gate = Tensor(gate.data(), DType::kF32, {R, I});
    scratch.up = Tensor(up.data(), DType::kF32, {R, I});
    scratch.row_of_pair = Tensor(row_of_pair.data(), DType::kI32, {R});
    scratch.pair_of_row = Tensor(pair_of_row.data(), DType::kI32, {R});
    scratch.expert_offsets = Tensor(offsets.data(), DType::kI32, {E + 1});
  }
  CpuMoeScratch(const CpuMoeScratch&) = delete;
  CpuMoeScratch& operator=(const CpuMoeScratch&) = delete;
};

// Sets PAGODA_CUDA_GEMV for one scope (the CUDA backend reads it when constructed).
class ScopedGemvMode {
 public:
  explicit ScopedGemvMode(const char* mode) {
    const char* old = std::getenv("PAGODA_CUDA_GEMV");
    if (old != nullptr) old_ = old;
    had_ = old != nullptr;
    setenv("PAGODA_CUDA_GEMV", mode, 1);
  }
  ~ScopedGemvMode() {
    if (had_)
      setenv("PAGODA_CUDA_GEMV", old_.c_str(), 1);
    else
      unsetenv("PAGODA_CUDA_GEMV");
  }
  ScopedGemvMode(const ScopedGemvMode&) = delete;
  ScopedGemvMode& operator=(const ScopedGemvMode&) = delete;

 private:
  std::string old_;
  bool had_ = false;
};

}  // namespace pagoda::testing
