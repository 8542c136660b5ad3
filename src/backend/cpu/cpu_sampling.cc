#include "backend/cpu/cpu_sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace pagoda::cpu {
namespace {

constexpr int kNB = kSampleBuckets;

// The first index c <= limit where before + v[c] >= target (before: the sum of v[0, c)); limit
// when the sum never reaches it.
template <typename T>
int crossing(const T* v, int limit, double target, double* before) {
  double acc = 0.0;
  for (int c = 0; c < limit; ++c) {
    if (acc + static_cast<double>(v[c]) >= target) {
      *before = acc;
      return c;
    }
    acc += static_cast<double>(v[c]);
  }
  *before = acc;
  return limit;
}

}  // namespace

int32_t sample_row(const float* l, int64_t vocab, const SamplingRow& row, SampleScratch& sc) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t arg = 0;
  for (int64_t i = 0; i < vocab; ++i)
    if (l[i] > m) {
      m = l[i];
      arg = i;
    }
  if (sample_greedy(row) || !(m > -std::numeric_limits<float>::infinity())) return static_cast<int32_t>(arg);

  const float inv_t = sample_inv_temperature(row);
  float floor = kSampleFloor;
  if (row.min_p > 0.0f) floor = std::max(floor, std::log(row.min_p));
  const float scale = static_cast<float>(kNB) / -floor;
  sc.s.resize(static_cast<size_t>(vocab));
  float* s = sc.s.data();
  for (int64_t i = 0; i < vocab; ++i) s[i] = (l[i] - m) * inv_t;  // NaN: never >= floor

  const bool use_k = row.top_k > 0 && row.top_k < vocab;
  const bool use_p = row.top_p < 1.0f;
  int cut1 = kNB - 1, cut2 = kNB - 1;  // keep (b1, b2) <= (cut1, cut2)
  if (use_k || use_p) {
    sc.count1.resize(kNB);
    sc.mass1.resize(kNB);
    sc.count2.resize(kNB);
    sc.mass2.resize(kNB);
    // Count and mass per bucket of the candidates: level 1 (bucket < 0, by b1) or level 2 of one
    // level-1 bucket (by b2). Returns how many candidates it counted.
    auto histogram = [&](std::vector<int32_t>& count, std::vector<float>& mass, int bucket) {
      std::fill(count.begin(), count.end(), 0);
      std::fill(mass.begin(), mass.end(), 0.0f);
      int64_t n = 0;
      for (int64_t i = 0; i < vocab; ++i) {
        if (!(s[i] >= floor)) continue;
        const SampleBucket b = sample_bucket(s[i], scale);
        if (bucket >= 0 && b.b1 != bucket) continue;
        const size_t at = static_cast<size_t>(bucket < 0 ? b.b1 : b.b2);
        ++count[at];
        mass[at] += std::exp(s[i]);
        ++n;
      }
      return n;
    };
    const int64_t total = histogram(sc.count1, sc.mass1, -1);
    int h2 = -1;  // the level-1 bucket count2 / mass2 hold
    auto hist2 = [&](int bucket) {
      histogram(sc.count2, sc.mass2, bucket);
      h2 = bucket;
    };
    bool partial = false;  // bucket cut1 is kept only up to cut2
    if (use_k && total > row.top_k) {
      double before = 0.0;
      cut1 = crossing(sc.count1.data(), kNB - 1, static_cast<double>(row.top_k), &before);
      hist2(cut1);
      double before2 = 0.0;
      cut2 = crossing(sc.count2.data(), kNB - 1, static_cast<double>(row.top_k) - before, &before2);
      partial = true;
    }
    if (use_p) {
      float last = sc.mass1[static_cast<size_t>(cut1)];
      if (partial) {
        last = 0.0f;
        for (int c = 0; c <= cut2; ++c) last += sc.mass2[static_cast<size_t>(c)];
      }
      std::vector<float>& m1 = sc.mass1;
      const float saved = m1[static_cast<size_t>(cut1)];
      m1[static_cast<size_t>(cut1)] = last;
      double kept = 0.0;
      for (int b = 0; b <= cut1; ++b) kept += static_cast<double>(m1[static_cast<size_t>(b)]);
      const double target = static_cast<double>(row.top_p) * kept;
      double before = 0.0;
      const int bp = crossing(m1.data(), cut1, target, &before);
      m1[static_cast<size_t>(cut1)] = saved;
      if (h2 != bp) hist2(bp);
      double before2 = 0.0;
      const int cp = crossing(sc.mass2.data(), bp == cut1 ? cut2 : kNB - 1, target - before, &before2);
      cut1 = bp;
      cut2 = cp;
    }
  }

  float best = -std::numeric_limits<float>::infinity();
  int64_t token = arg;
  const int64_t cut = static_cast<int64_t>(cut1) * kNB + cut2;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!(s[i] >= floor)) continue;
    const SampleBucket b = sample_bucket(s[i], scale);
    if (static_cast<int64_t>(b.b1) * kNB + b.b2 > cut) continue;
    const float u = sample_uniform(row.seed, row.offset, static_cast<uint32_t>(i));
    const float g = s[i] - std::log(-std::log(u));
    if (g > best) {
      best = g;
      token = i;
    }
  }
  return static_cast<int32_t>(token);
}

void logprobs_row(const float* l, int64_t vocab, int32_t token, int k, float* token_logprob, int32_t* top_ids,
                  float* top_logprobs) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < vocab; ++i) m = std::max(m, l[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += static_cast<double>(std::exp(l[i] - m));
  const float lse = m + static_cast<float>(std::log(sum));
  *token_logprob = l[token] - lse;
  // The k best so far, best first (ties: the lower id, seen first, stays ahead).
  std::vector<std::pair<float, int32_t>> top;
  top.reserve(static_cast<size_t>(k) + 1);
  for (int64_t i = 0; i < vocab; ++i) {
    if (static_cast<int>(top.size()) == k && !(l[i] > top.back().first)) continue;
    auto pos = std::upper_bound(top.begin(), top.end(), l[i],
                                [](float v, const std::pair<float, int32_t>& e) { return v > e.first; });
    top.insert(pos, {l[i], static_cast<int32_t>(i)});
    if (static_cast<int>(top.size()) > k) top.pop_back();
  }
  for (int j = 0; j < k; ++j) {
    top_ids[j] = top[static_cast<size_t>(j)].second;
    top_logprobs[j] = top[static_cast<size_t>(j)].first - lse;
  }
}

}  // namespace pagoda::cpu
