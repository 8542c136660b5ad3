// Backend::sample_tokens on the CPU backend against the definition it implements
// (sampling_math.h): Philox4x32-10 against Random123's published known-answer vectors; greedy
// rows against argmax; the draws' empirical distribution against the exact truncated softmax
// (temperature, top-k, min-p, top-p computed here by sorting, in double); and the noise keyed
// only by (seed, offset, token): a row draws the same token whatever the other rows are.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "backend/backend.h"
#include "backend/sampling_math.h"

namespace pagoda {
namespace {

TEST(Philox, Random123KnownAnswers) {
  const Philox4 a = philox4x32_10(Philox4{{0, 0, 0, 0}}, 0, 0);
  EXPECT_EQ(a.v[0], 0x6627e8d5u);
  EXPECT_EQ(a.v[1], 0xe169c58du);
  EXPECT_EQ(a.v[2], 0xbc57ac4cu);
  EXPECT_EQ(a.v[3], 0x9b00dbd8u);
  const Philox4 b = philox4x32_10(Philox4{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu,
                                  0xffffffffu);
  EXPECT_EQ(b.v[0], 0x408f276du);
  EXPECT_EQ(b.v[1], 0x41c83b0eu);
  EXPECT_EQ(b.v[2], 0xa20bc7c6u);
  EXPECT_EQ(b.v[3], 0x6d5451fdu);
  const Philox4 c = philox4x32_10(Philox4{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u,
                                  0x299f31d0u);
  EXPECT_EQ(c.v[0], 0xd16cfe09u);
  EXPECT_EQ(c.v[1], 0x94fdccebu);
  EXPECT_EQ(c.v[2], 0x5001e420u);
  EXPECT_EQ(c.v[3], 0x24126ea1u);
}

TEST(Philox, UniformIsInsideTheOpenInterval) {
  for (uint32_t i = 0; i < 100000; ++i) {
    const float u = sample_uniform(7, i / 100, i);
    ASSERT_GT(u, 0.0f);
    ASSERT_LT(u, 1.0f);
  }
}

// Runs sample_tokens over rows (one logits row each, V wide).
std::vector<int32_t> sample(Backend& b, const std::vector<float>& logits, int64_t V, std::vector<SamplingRow> rows) {
  const int64_t R = static_cast<int64_t>(rows.size());
  std::vector<int32_t> out(static_cast<size_t>(R), -1);
  b.sample_tokens(Tensor(const_cast<float*>(logits.data()), DType::kF32, {R, V}),
                  Tensor(rows.data(), DType::kI32, {R, kSamplingRowWords}), Tensor(out.data(), DType::kI32, {R}));
  return out;
}

// The exact distribution of one row: vLLM's order (temperature, top-k, min-p, then top-p as the
// smallest best-first prefix whose mass reaches top_p of the kept mass).
std::vector<double> expected_probs(const std::vector<float>& l, const SamplingRow& r) {
  const size_t V = l.size();
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
  const double t = std::max(static_cast<double>(r.temperature), 0.01);
  const double lmax = l[static_cast<size_t>(order[0])];
  std::vector<double> w(V, 0.0);
  size_t n = V;
  if (r.top_k > 0 && static_cast<size_t>(r.top_k) < V) n = static_cast<size_t>(r.top_k);
  std::vector<int> kept;
  for (size_t j = 0; j < n; ++j) {
    const double s = (l[static_cast<size_t>(order[j])] - lmax) / t;
    if (s < -87.0 || (r.min_p > 0 && std::exp(s) < r.min_p)) continue;
    kept.push_back(order[j]);
  }
  double total = 0.0;
  for (int id : kept) total += std::exp((l[static_cast<size_t>(id)] - lmax) / t);
  double before = 0.0;
  for (int id : kept) {
    if (r.top_p < 1.0f && before >= r.top_p * total) break;
    const double e = std::exp((l[static_cast<size_t>(id)] - lmax) / t);
    w[static_cast<size_t>(id)] = e;
    before += e;
  }
  const double sum = std::accumulate(w.begin(), w.end(), 0.0);
  for (double& x : w) x /= sum;
  return w;
}

TEST(SampleTokens, GreedyIsTheArgmax) {
  auto b = make_cpu_backend();
  const int64_t V = 1000;
  std::mt19937 g(1);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> logits(static_cast<size_t>(4 * V));
  for (float& x : logits) x = nd(g);
  logits[static_cast<size_t>(2 * V + 17)] = 100.0f;
  logits[static_cast<size_t>(2 * V + 900)] = 100.0f;  // a tie: the lower id wins
  for (int64_t i = 0; i < V; ++i) logits[static_cast<size_t>(3 * V + i)] = -INFINITY;  // nothing finite
  std::vector<SamplingRow> rows(4);
  rows[1].temperature = 1e-6f;
  const auto out = sample(*b, logits, V, rows);
  for (int r = 0; r < 2; ++r) {
    const auto* row = logits.data() + r * V;
    EXPECT_EQ(out[static_cast<size_t>(r)], std::max_element(row, row + V) - row);
  }
  EXPECT_EQ(out[2], 17);
  EXPECT_EQ(out[3], 0);
}

TEST(SampleTokens, DrawsFollowTheTruncatedSoftmax) {
  auto b = make_cpu_backend();
  const int64_t V = 64;
  std::mt19937 g(2);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  std::vector<float> base(static_cast<size_t>(V));
  for (float& x : base) x = nd(g);
  struct Case {
    float t;
    int k;
    float p, min_p;
  };
  const Case cases[] = {{1.0f, 0, 1.0f, 0.0f},  {0.7f, 5, 1.0f, 0.0f},  {1.0f, 0, 0.8f, 0.0f},
                        {1.0f, 0, 1.0f, 0.1f},  {1.3f, 20, 0.9f, 0.05f}, {0.5f, 40, 0.95f, 0.0f},
                        {2.0f, 63, 0.5f, 0.0f}, {1.0f, 1, 1.0f, 0.0f}};
  const int N = 40000;
  std::vector<float> logits;
  logits.reserve(static_cast<size_t>(N * V));
  for (int i = 0; i < N; ++i) logits.insert(logits.end(), base.begin(), base.end());
  for (const Case& c : cases) {
    std::vector<SamplingRow> rows(static_cast<size_t>(N));
    for (int i = 0; i < N; ++i) {
      rows[static_cast<size_t>(i)] = sampling_row(c.t, c.k, c.p, c.min_p, 12345, static_cast<uint64_t>(i));
    }
    const auto out = sample(*b, logits, V, rows);
    const std::vector<double> want = expected_probs(base, rows[0]);
    std::vector<double> got(static_cast<size_t>(V), 0.0);
    for (int32_t t : out) {
      ASSERT_GE(t, 0);
      ASSERT_LT(t, V);
      ASSERT_GT(want[static_cast<size_t>(t)], 0.0) << "token " << t << " is outside the kept set (T " << c.t
                                                    << " k " << c.k << " p " << c.p << " min_p " << c.min_p << ")";
      got[static_cast<size_t>(t)] += 1.0 / N;
    }
    double tv = 0.0;
    for (int64_t i = 0; i < V; ++i) tv += std::abs(got[static_cast<size_t>(i)] - want[static_cast<size_t>(i)]) / 2;
    EXPECT_LT(tv, 0.02) << "T " << c.t << " k " << c.k << " p " << c.p << " min_p " << c.min_p;
  }
}

TEST(SampleTokens, EachRowDependsOnlyOnItsOwnLogitsSeedAndOffset) {
  auto b = make_cpu_backend();
  const int64_t V = 151936;  // a real vocabulary width
  std::mt19937 g(3);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> row(static_cast<size_t>(V));
  for (float& x : row) x = nd(g);
  const SamplingRow mine = sampling_row(0.8f, 20, 0.8f, 0.0f, 99, 5);
  // Alone, then at position 3 of a batch of rows with other logits and settings.
  const int32_t alone = sample(*b, row, V, {mine})[0];
  std::vector<float> batch;
  std::vector<SamplingRow> rows;
  for (int r = 0; r < 6; ++r) {
    if (r == 3) {
      batch.insert(batch.end(), row.begin(), row.end());
      rows.push_back(mine);
      continue;
    }
    for (int64_t i = 0; i < V; ++i) batch.push_back(nd(g));
    rows.push_back(sampling_row(1.0f, 0, r % 2 ? 0.9f : 1.0f, 0.0f, static_cast<uint64_t>(r), 5));
  }
  EXPECT_EQ(sample(*b, batch, V, rows)[3], alone);
  // The kept set of top-k 20 is the 20 best logits; offsets draw different members of it.
  std::vector<int> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + 20, order.end(), [&](int a, int c) { return row[a] > row[c]; });
  const std::set<int> top(order.begin(), order.begin() + 20);
  std::set<int32_t> seen;
  for (uint64_t off = 0; off < 64; ++off) {
    SamplingRow r = mine;
    r.offset = off;
    const int32_t t = sample(*b, row, V, {r})[0];
    EXPECT_TRUE(top.contains(t)) << t;
    seen.insert(t);
    EXPECT_EQ(sample(*b, row, V, {r})[0], t) << "the same seed and offset draw the same token";
  }
  EXPECT_GE(seen.size(), 3u);
}

}  // namespace
}  // namespace pagoda
