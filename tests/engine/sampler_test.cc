// Sampler behaviour: greedy is argmax, filters never let an excluded token through, a seed
// reproduces the sequence whatever else is sampled, sampling follows the filtered softmax, the
// incremental penalties equal a brute-force computation from the whole history, and logprobs are
// the raw log_softmax of the model's logits.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "base/error.h"

namespace pagoda {
namespace {

std::vector<float> ramp_logits(int vocab) {
  std::vector<float> l(vocab);
  for (int i = 0; i < vocab; ++i) l[i] = std::sin(i * 0.37f) * 3.0f;
  return l;
}

std::vector<float> random_logits(std::mt19937& rng, int vocab, float scale = 3.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> l(vocab);
  for (float& x : l) x = normal(rng);
  return l;
}

// Samples from a copy (sample() modifies its row).
int32_t draw(Sampler& s, const std::vector<float>& logits) {
  std::vector<float> row = logits;
  return s.sample(row.data()).token;
}

Sampler make(const SamplingParams& p, int vocab, std::vector<int32_t> prompt = {}, std::vector<int32_t> eos = {}) {
  return Sampler(p, prompt, vocab, std::move(eos));
}

std::vector<double> log_softmax(const std::vector<float>& l) {
  double m = -INFINITY;
  for (float x : l) m = std::max<double>(m, x);
  double z = 0;
  for (float x : l) z += std::exp(x - m);
  std::vector<double> out(l.size());
  for (size_t i = 0; i < l.size(); ++i) out[i] = l[i] - m - std::log(z);
  return out;
}

TEST(Sampler, GreedyIsArgmaxWithLowestIndexOnTies) {
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f};
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s = make(p, 4);
  EXPECT_EQ(draw(s, l), 1);
  EXPECT_EQ(s.num_output_tokens(), 1);
}

TEST(Sampler, TopKOneIsGreedy) {
  auto l = ramp_logits(5000);
  SamplingParams p;
  p.temperature = 1.3f;
  p.top_k = 1;
  p.seed = 7;
  Sampler s = make(p, 5000);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(draw(s, l), argmax(l.data(), 5000));
}

TEST(Sampler, SeedReproducesTokens) {
  auto l = ramp_logits(3000);
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  p.seed = 1234;
  Sampler a = make(p, 3000), b = make(p, 3000);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(draw(a, l), draw(b, l));
}

TEST(Sampler, SeedIsIndependentOfOtherRequests) {
  std::mt19937 rng(1);
  const int vocab = 2000;
  std::vector<std::vector<float>> rows;
  for (int i = 0; i < 60; ++i) rows.push_back(random_logits(rng, vocab));
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 50;
  p.seed = 77;
  std::vector<int32_t> alone;
  {
    Sampler s = make(p, vocab);
    for (const auto& r : rows) alone.push_back(draw(s, r));
  }
  // The same request in a "batch" with other seeded and unseeded requests sampled in between.
  SamplingParams other = p;
  other.seed = 78;
  SamplingParams unseeded;
  unseeded.top_p = 0.8f;
  Sampler s = make(p, vocab), o = make(other, vocab), u = make(unseeded, vocab);
  std::vector<int32_t> batched;
  for (const auto& r : rows) {
    draw(o, r);
    draw(u, r);
    batched.push_back(draw(s, r));
    draw(o, r);
  }
  EXPECT_EQ(alone, batched);
  // A different seed gives a different sequence.
  Sampler d = make(other, vocab);
  std::vector<int32_t> diff;
  for (const auto& r : rows) diff.push_back(draw(d, r));
  EXPECT_NE(alone, diff);
}

TEST(Sampler, FollowsSoftmaxDistribution) {
  std::vector<float> l = {1.0f, 0.0f, -1.0f, 0.5f};
  SamplingParams p;
  p.temperature = 0.7f;
  p.seed = 42;
  Sampler s = make(p, 4);
  std::vector<int> counts(4, 0);
  const int n = 200000;
  for (int i = 0; i < n; ++i) counts[draw(s, l)]++;
  double z = 0;
  for (float x : l) z += std::exp(x / 0.7);
  for (int i = 0; i < 4; ++i) {
    const double expected = std::exp(l[i] / 0.7) / z;
    // 5 standard deviations of a binomial proportion.
    const double sd = std::sqrt(expected * (1 - expected) / n);
    EXPECT_NEAR(counts[i] / double(n), expected, 5 * sd) << "token " << i;
  }
}

// vLLM's order: temperature -> min-p (relative to the best token) -> top-k -> top-p on the
// renormalised survivors.
std::vector<double> reference_distribution(const std::vector<float>& l, const SamplingParams& p) {
  const size_t n = l.size();
  std::vector<double> prob(n);
  double m = -INFINITY;
  for (float x : l) m = std::max<double>(m, x / p.temperature);
  double z = 0;
  for (size_t i = 0; i < n; ++i) z += prob[i] = std::exp(l[i] / p.temperature - m);
  for (double& x : prob) x /= z;
  const double pmax = *std::max_element(prob.begin(), prob.end());
  for (double& x : prob)
    if (x < p.min_p * pmax) x = 0;
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return l[a] > l[b]; });
  if (p.top_k > 0)
    for (size_t r = p.top_k; r < n; ++r) prob[order[r]] = 0;
  double total = std::accumulate(prob.begin(), prob.end(), 0.0);
  double before = 0;
  for (size_t r = 0; r < n; ++r) {
    const double x = prob[order[r]];
    if (before >= p.top_p * total) prob[order[r]] = 0;
    before += x;
  }
  total = std::accumulate(prob.begin(), prob.end(), 0.0);
  for (double& x : prob) x /= total;
  return prob;
}

TEST(Sampler, CombinedFiltersFollowReference) {
  {
    const std::vector<float> l = {2.0f, 1.6f, 1.5f, 1.0f, 0.2f, -0.5f, -3.0f, 1.55f};
    SamplingParams p;
    p.temperature = 0.8f;
    p.min_p = 0.05f;
    p.top_k = 5;
    p.top_p = 0.8f;
    p.seed = 21;
    const auto expected = reference_distribution(l, p);
    Sampler s = make(p, static_cast<int>(l.size()));
    std::vector<int> counts(l.size(), 0);
    const int n = 100000;
    for (int i = 0; i < n; ++i) counts[draw(s, l)]++;
    for (size_t i = 0; i < l.size(); ++i) {
      if (expected[i] == 0) {
        EXPECT_EQ(counts[i], 0) << "token " << i;
        continue;
      }
      const double sd = std::sqrt(expected[i] * (1 - expected[i]) / n);
      EXPECT_NEAR(counts[i] / double(n), expected[i], 5 * sd + 1e-9) << "token " << i;
    }
  }
  // Every code path (small top-k, large top-k, bucketed top-p, min-p floors) on a wider row.
  std::mt19937 rng(31);
  const int vocab = 600;
  const auto l = random_logits(rng, vocab, 1.5f);
  struct Config {
    float t, min_p, top_p;
    int top_k;
  };
  for (const Config& c : {Config{0.8f, 0.05f, 0.8f, 5}, Config{1.0f, 0.0f, 0.7f, 0}, Config{1.2f, 0.02f, 0.9f, 0},
                         Config{1.0f, 0.0f, 0.9f, 300}, Config{0.7f, 0.1f, 1.0f, 0}, Config{1.0f, 0.0f, 1.0f, 280},
                         Config{1.0f, 0.0f, 0.5f, 40}}) {
    SamplingParams p;
    p.temperature = c.t;
    p.min_p = c.min_p;
    p.top_p = c.top_p;
    p.top_k = c.top_k;
    p.seed = 99;
    const auto expected = reference_distribution(l, p);
    Sampler s = make(p, vocab);
    std::vector<int> counts(vocab, 0);
    const int n = 40000;
    for (int i = 0; i < n; ++i) counts[draw(s, l)]++;
    for (int i = 0; i < vocab; ++i) {
      if (expected[i] == 0) {
        EXPECT_EQ(counts[i], 0) << "token " << i << " top_k " << c.top_k << " top_p " << c.top_p;
        continue;
      }
      const double sd = std::sqrt(expected[i] * (1 - expected[i]) / n);
      EXPECT_NEAR(counts[i] / double(n), expected[i], 5 * sd + 1e-4)
          << "token " << i << " top_k " << c.top_k << " top_p " << c.top_p;
    }
  }
}

TEST(Sampler, TopPKeepsSmallestNucleus) {
  // probabilities 0.5, 0.3, 0.15, 0.05 -> top_p 0.75 keeps the first two only.
  std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.top_p = 0.75f;
  p.seed = 3;
  Sampler s = make(p, 4);
  std::map<int, int> seen;
  for (int i = 0; i < 20000; ++i) seen[draw(s, l)]++;
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
  Sampler s = make(p, vocab);
  for (int i = 0; i < 2000; ++i) EXPECT_GT(l[draw(s, l)], 0.0f);
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  std::vector<float> l = {std::log(0.6f), std::log(0.3f), std::log(0.05f), std::log(0.05f)};
  SamplingParams p;
  p.min_p = 0.2f;  // threshold 0.12: drops tokens 2 and 3
  p.seed = 9;
  Sampler s = make(p, 4);
  for (int i = 0; i < 5000; ++i) EXPECT_LT(draw(s, l), 2);
}

TEST(Sampler, TopKLimitsCandidates) {
  auto l = ramp_logits(4000);
  std::vector<float> sorted = l;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  SamplingParams p;
  p.top_k = 20;
  p.temperature = 2.0f;
  p.seed = 11;
  Sampler s = make(p, 4000);
  for (int i = 0; i < 3000; ++i) EXPECT_GE(l[draw(s, l)], sorted[19]);
}

// Penalties from a brute-force pass over the whole history, exactly as vLLM's apply_penalties.
std::vector<float> reference_penalties(std::vector<float> l, const SamplingParams& p,
                                       const std::vector<int32_t>& prompt, const std::vector<int32_t>& output) {
  for (size_t t = 0; t < l.size(); ++t) {
    const bool in_prompt = std::count(prompt.begin(), prompt.end(), static_cast<int32_t>(t)) > 0;
    const int count = static_cast<int>(std::count(output.begin(), output.end(), static_cast<int32_t>(t)));
    if (in_prompt || count > 0) l[t] = l[t] > 0 ? l[t] / p.repetition_penalty : l[t] * p.repetition_penalty;
    l[t] -= p.frequency_penalty * count;
    l[t] -= p.presence_penalty * (count > 0 ? 1.0f : 0.0f);
  }
  return l;
}

TEST(Sampler, PenaltiesMatchBruteForceOverRandomSequences) {
  std::mt19937 rng(2024);
  for (int trial = 0; trial < 6; ++trial) {
    const int vocab = 40 + trial * 30;
    SamplingParams p;
    p.temperature = 1.0f;
    p.seed = 100 + trial;
    p.repetition_penalty = trial % 3 == 0 ? 1.0f : 1.0f + 0.25f * trial;
    p.frequency_penalty = trial % 2 == 0 ? 0.4f : -0.3f;
    p.presence_penalty = trial == 4 ? 0.0f : 0.6f;
    std::vector<int32_t> prompt;
    std::uniform_int_distribution<int> tok(0, vocab - 1);
    for (int i = 0; i < 25; ++i) prompt.push_back(tok(rng));
    Sampler s = make(p, vocab, prompt);
    std::vector<int32_t> output;
    for (int step = 0; step < 120; ++step) {
      const auto logits = random_logits(rng, vocab, 1.0f);
      std::vector<float> processed = logits;
      s.apply_processors(processed.data());
      const auto expected = reference_penalties(logits, p, prompt, output);
      for (int t = 0; t < vocab; ++t)
        ASSERT_NEAR(processed[t], expected[t], 1e-5f) << "trial " << trial << " step " << step << " token " << t;
      output.push_back(draw(s, logits));
      ASSERT_EQ(s.num_output_tokens(), static_cast<int>(output.size()));
    }
    // The sequence repeats tokens, so counts above 1 were exercised.
    EXPECT_LT(std::set<int32_t>(output.begin(), output.end()).size(), output.size());
  }
}

TEST(Sampler, LogitBiasAndAllowedTokenIds) {
  const int vocab = 100;
  std::vector<float> l(vocab, 0.0f);
  l[5] = 3.0f;
  SamplingParams p;
  p.temperature = 0.0f;
  p.logit_bias = {{7, 5.0f}, {5, -1.0f}};
  Sampler s = make(p, vocab);
  std::vector<float> row = l;
  s.apply_processors(row.data());
  EXPECT_FLOAT_EQ(row[7], 5.0f);
  EXPECT_FLOAT_EQ(row[5], 2.0f);
  EXPECT_FLOAT_EQ(row[6], 0.0f);
  EXPECT_EQ(draw(s, l), 7);

  SamplingParams a;
  a.temperature = 1.5f;
  a.seed = 4;
  a.allowed_token_ids = std::vector<int32_t>{3, 50, 99, 50};
  Sampler sa = make(a, vocab);
  row = l;
  sa.apply_processors(row.data());
  for (int t = 0; t < vocab; ++t) {
    if (t == 3 || t == 50 || t == 99)
      EXPECT_EQ(row[t], l[t]);
    else
      EXPECT_TRUE(std::isinf(row[t]) && row[t] < 0) << t;
  }
  std::set<int32_t> seen;
  for (int i = 0; i < 500; ++i) seen.insert(draw(sa, l));
  EXPECT_EQ(seen, (std::set<int32_t>{3, 50, 99}));
  // Greedy respects the mask too (token 5 has the best raw logit).
  a.temperature = 0.0f;
  Sampler g = make(a, vocab);
  const int32_t t = draw(g, l);
  EXPECT_TRUE(t == 3 || t == 50 || t == 99);
}

TEST(Sampler, MinTokensMasksEosAndStopIds) {
  const int vocab = 50;
  std::vector<float> l(vocab, 0.0f);
  l[2] = 10.0f;  // eos
  l[9] = 9.0f;   // a stop token id
  l[20] = 8.0f;
  SamplingParams p;
  p.temperature = 0.0f;
  p.min_tokens = 3;
  p.stop_token_ids = {9};
  Sampler s = make(p, vocab, {}, {2});
  EXPECT_EQ(draw(s, l), 20);
  EXPECT_EQ(draw(s, l), 20);
  EXPECT_EQ(draw(s, l), 20);
  EXPECT_EQ(draw(s, l), 2);  // the fourth token may be eos
  // Random sampling never draws them either.
  SamplingParams r = p;
  r.temperature = 1.0f;
  r.min_tokens = 200;
  r.seed = 1;
  Sampler sr = make(r, vocab, {}, {2});
  for (int i = 0; i < 200; ++i) {
    const int32_t t = draw(sr, l);
    ASSERT_TRUE(t != 2 && t != 9) << i;
  }
}

TEST(Sampler, LogprobsAreRawLogSoftmax) {
  std::mt19937 rng(5);
  const int vocab = 1000;
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_k = 10;
  p.seed = 3;
  p.logprobs = 5;
  p.repetition_penalty = 1.5f;  // processing must not leak into the logprobs
  p.logit_bias = {{17, 4.0f}};
  Sampler s = make(p, vocab, {1, 2, 3});
  for (int step = 0; step < 20; ++step) {
    const auto logits = random_logits(rng, vocab);
    const auto ref = log_softmax(logits);
    std::vector<float> row = logits;
    const SampledToken out = s.sample(row.data());
    EXPECT_NEAR(out.logprob, ref[out.token], 1e-4);
    ASSERT_EQ(out.top_logprobs.size(), 5u);
    std::vector<int> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + 5, order.end(), [&](int a, int b) { return ref[a] > ref[b]; });
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(out.top_logprobs[i].first, order[i]);
      EXPECT_NEAR(out.top_logprobs[i].second, ref[order[i]], 1e-4);
    }
  }
  // logprobs = 0: the sampled token's logprob only.
  SamplingParams z;
  z.temperature = 0.0f;
  z.logprobs = 0;
  Sampler sz = make(z, vocab);
  const auto logits = random_logits(rng, vocab);
  std::vector<float> row = logits;
  const SampledToken out = sz.sample(row.data());
  EXPECT_EQ(out.token, argmax(logits.data(), vocab));
  EXPECT_NEAR(out.logprob, log_softmax(logits)[out.token], 1e-4);
  EXPECT_TRUE(out.top_logprobs.empty());
  // Without logprobs nothing is filled.
  Sampler none = make(SamplingParams{}, vocab);
  row = logits;
  EXPECT_TRUE(none.sample(row.data()).top_logprobs.empty());
}

TEST(Sampler, PromptLogprob) {
  std::mt19937 rng(8);
  const int vocab = 3000;
  const auto logits = random_logits(rng, vocab, 4.0f);
  const auto ref = log_softmax(logits);
  const SampledToken out = prompt_logprob(logits.data(), vocab, 1234, 20);
  EXPECT_EQ(out.token, 1234);
  EXPECT_NEAR(out.logprob, ref[1234], 1e-4);
  ASSERT_EQ(out.top_logprobs.size(), 20u);
  for (size_t i = 1; i < out.top_logprobs.size(); ++i)
    EXPECT_GE(out.top_logprobs[i - 1].second, out.top_logprobs[i].second);
  EXPECT_EQ(out.top_logprobs[0].first, argmax(logits.data(), vocab));
  EXPECT_THROW(prompt_logprob(logits.data(), vocab, vocab, 1), Error);
  // log_sum_exp agrees with a double-precision reference.
  double m = *std::max_element(logits.begin(), logits.end()), z = 0;
  for (float x : logits) z += std::exp(x - m);
  EXPECT_NEAR(log_sum_exp(logits.data(), vocab), m + std::log(z), 1e-5);
}

TEST(Sampler, FullVocabularyEveryPathReturnsAValidToken) {
  // Qwen's 151,936-entry rows through every filter path (timing lives in bench/, not here).
  std::mt19937 rng(9);
  const int vocab = 151936;
  const auto logits = random_logits(rng, vocab, 2.0f);
  for (int mode = 0; mode < 4; ++mode) {
    SamplingParams p;
    p.seed = 1;
    if (mode == 0) p.temperature = 0.0f;
    if (mode == 2) p.top_p = 0.95f;
    if (mode == 3) {
      p.top_k = 50;
      p.top_p = 0.9f;
      p.min_p = 0.01f;
      p.repetition_penalty = 1.1f;
      p.logprobs = 5;
    }
    Sampler s = make(p, vocab, {1, 2, 3});
    std::vector<float> row(vocab);
    const int steps = 50;
    for (int i = 0; i < steps; ++i) {
      std::copy(logits.begin(), logits.end(), row.begin());
      const int32_t t = s.sample(row.data()).token;
      ASSERT_TRUE(t >= 0 && t < vocab);
    }
  }
}

TEST(SamplingParams, RejectsOutOfRangeValues) {
  auto expect_error = [](const SamplingParams& p, const std::string& field, int64_t vocab = -1) {
    try {
      p.validate(vocab);
      ADD_FAILURE() << "no error for " << field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  SamplingParams p;
  EXPECT_NO_THROW(p.validate());
  p.top_p = 0.0f;
  expect_error(p, "top_p");
  p = SamplingParams{};
  p.temperature = -1.0f;
  expect_error(p, "temperature");
  p = SamplingParams{};
  p.min_p = 1.5f;
  expect_error(p, "min_p");
  p = SamplingParams{};
  p.top_k = -2;
  expect_error(p, "top_k");
  p = SamplingParams{};
  p.n = 0;
  expect_error(p, "n must");
  p = SamplingParams{};
  p.presence_penalty = 2.5f;
  expect_error(p, "presence_penalty");
  p = SamplingParams{};
  p.frequency_penalty = -3.0f;
  expect_error(p, "frequency_penalty");
  p = SamplingParams{};
  p.repetition_penalty = 0.0f;
  expect_error(p, "repetition_penalty");
  p = SamplingParams{};
  p.max_tokens = 0;
  expect_error(p, "max_tokens");
  p = SamplingParams{};
  p.min_tokens = 5;
  p.max_tokens = 3;
  expect_error(p, "min_tokens");
  p = SamplingParams{};
  p.logprobs = 21;
  expect_error(p, "logprobs");
  p = SamplingParams{};
  p.prompt_logprobs = -1;
  expect_error(p, "prompt_logprobs");
  p = SamplingParams{};
  p.stop = {"ok", ""};
  expect_error(p, "stop");
  p = SamplingParams{};
  p.logit_bias = {{100, 1.0f}};
  EXPECT_NO_THROW(p.validate());
  expect_error(p, "logit_bias", 100);
  p = SamplingParams{};
  p.allowed_token_ids = std::vector<int32_t>{};
  expect_error(p, "allowed_token_ids");
  p.allowed_token_ids = std::vector<int32_t>{1, 100};
  expect_error(p, "allowed_token_ids", 100);
  EXPECT_THROW(make(p, 100), Error);
}

}  // namespace
}  // namespace pagoda
