// Sampler behaviour: greedy is argmax, filters never let an excluded token through, a seed
// reproduces the sequence, and unfiltered sampling follows softmax(logits / T).
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "base/error.h"

namespace pagoda {
namespace {

std::vector<float> ramp_logits(int vocab) {
  std::vector<float> l(vocab);
  for (int i = 0; i < vocab; ++i) l[i] = std::sin(i * 0.37f) * 3.0f;
  return l;
}

TEST(Sampler, GreedyIsArgmaxWithLowestIndexOnTies) {
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f};
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s(p);
  EXPECT_EQ(s.sample(l.data(), 4), 1);
}

TEST(Sampler, TopKOneIsGreedy) {
  auto l = ramp_logits(5000);
  SamplingParams p;
  p.temperature = 1.3f;
  p.top_k = 1;
  p.seed = 7;
  Sampler s(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(l.data(), 5000), argmax(l.data(), 5000));
}

TEST(Sampler, SeedReproducesTokens) {
  auto l = ramp_logits(3000);
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  p.seed = 1234;
  Sampler a(p), b(p);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(l.data(), 3000), b.sample(l.data(), 3000));
}

TEST(Sampler, FollowsSoftmaxDistribution) {
  std::vector<float> l = {1.0f, 0.0f, -1.0f, 0.5f};
  SamplingParams p;
  p.temperature = 0.7f;
  p.seed = 42;
  Sampler s(p);
  std::vector<int> counts(4, 0);
  const int n = 200000;
  for (int i = 0; i < n; ++i) counts[s.sample(l.data(), 4)]++;
  double z = 0;
  for (float x : l) z += std::exp(x / 0.7);
  for (int i = 0; i < 4; ++i) {
    const double expected = std::exp(l[i] / 0.7) / z;
    // 5 standard deviations of a binomial proportion.
    const double sd = std::sqrt(expected * (1 - expected) / n);
    EXPECT_NEAR(counts[i] / double(n), expected, 5 * sd) << "token " << i;
  }
}

TEST(Sampler, TopPKeepsSmallestNucleus) {
  // probabilities 0.5, 0.3, 0.15, 0.05 -> top_p 0.75 keeps the first two only.
  std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.top_p = 0.75f;
  p.seed = 3;
  Sampler s(p);
  std::map<int, int> seen;
  for (int i = 0; i < 20000; ++i) seen[s.sample(l.data(), 4)]++;
  EXPECT_EQ(seen.count(2), 0u);
  EXPECT_EQ(seen.count(3), 0u);
  EXPECT_NEAR(seen[0] / 20000.0, 0.5 / 0.8, 0.02);
}

TEST(Sampler, TopPOnLargeVocabularyNeverLeavesTheNucleus) {
  const int vocab = 50000;
  std::vector<float> l(vocab, -10.0f);
  for (int i = 0; i < 2000; ++i) l[(i * 7919) % vocab] = 5.0f - i * 0.001f;  // a flat top of 2000 tokens
  SamplingParams p;
  p.top_p = 0.9f;
  p.seed = 5;
  Sampler s(p);
  for (int i = 0; i < 2000; ++i) EXPECT_GT(l[s.sample(l.data(), vocab)], 0.0f);
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  std::vector<float> l = {std::log(0.6f), std::log(0.3f), std::log(0.05f), std::log(0.05f)};
  SamplingParams p;
  p.min_p = 0.2f;  // threshold 0.12: drops tokens 2 and 3
  p.seed = 9;
  Sampler s(p);
  for (int i = 0; i < 5000; ++i) EXPECT_LT(s.sample(l.data(), 4), 2);
}

TEST(Sampler, TopKLimitsCandidates) {
  auto l = ramp_logits(4000);
  std::vector<float> sorted = l;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  SamplingParams p;
  p.top_k = 20;
  p.temperature = 2.0f;
  p.seed = 11;
  Sampler s(p);
  for (int i = 0; i < 3000; ++i) EXPECT_GE(l[s.sample(l.data(), 4000)], sorted[19]);
}

TEST(SamplingParams, RejectsOutOfRangeValues) {
  SamplingParams p;
  p.top_p = 0.0f;
  EXPECT_THROW(p.validate(), Error);
  p = SamplingParams{};
  p.temperature = -1.0f;
  EXPECT_THROW(p.validate(), Error);
  p = SamplingParams{};
  p.min_p = 1.5f;
  EXPECT_THROW(p.validate(), Error);
  p = SamplingParams{};
  p.top_k = -2;
  EXPECT_THROW(p.validate(), Error);
}

}  // namespace
}  // namespace pagoda
