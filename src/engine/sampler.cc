#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace pagoda {

void SamplingParams::validate() const {
  PAGODA_CHECK(std::isfinite(temperature) && temperature >= 0.0f, "temperature must be >= 0, got ", temperature);
  PAGODA_CHECK(top_p > 0.0f && top_p <= 1.0f, "top_p must be in (0, 1], got ", top_p);
  PAGODA_CHECK(top_k >= -1, "top_k must be -1 (off), 0 (off) or positive, got ", top_k);
  PAGODA_CHECK(min_p >= 0.0f && min_p <= 1.0f, "min_p must be in [0, 1], got ", min_p);
  PAGODA_CHECK(max_tokens >= 1, "max_tokens must be at least 1, got ", max_tokens);
}

int32_t argmax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

Sampler::Sampler(const SamplingParams& params) : params_(params) {
  rng_.seed(params.seed ? *params.seed : std::random_device{}());
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  if (params_.greedy()) return argmax(logits, vocab);
  const float inv_t = 1.0f / params_.temperature;

  // Candidates sorted by logit, descending. Only as many as the filters can keep are sorted:
  // top-k bounds them directly; for top-p we first try the best 1024 and fall back to all.
  candidates_.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) candidates_[i] = static_cast<int32_t>(i);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  const int64_t k = (params_.top_k > 0) ? std::min<int64_t>(params_.top_k, vocab) : vocab;
  const float max_logit = logits[argmax(logits, vocab)];

  // Sum of exp over ALL of the vocabulary restricted to the top-k set is needed for top-p, so
  // compute the normaliser over the kept set after the top-k cut.
  int64_t kept = k;
  int64_t sorted = std::min<int64_t>(k, 1024);
  std::partial_sort(candidates_.begin(), candidates_.begin() + sorted, candidates_.end(), by_logit);
  double total = 0.0;
  if (k < vocab) {
    // Entries [sorted, k) are not yet ordered; sort the whole top-k prefix.
    if (sorted < k) {
      std::partial_sort(candidates_.begin(), candidates_.begin() + k, candidates_.end(), by_logit);
      sorted = k;
    }
  }
  for (int64_t i = 0; i < kept; ++i) total += std::exp((logits[candidates_[i]] - max_logit) * inv_t);

  if (params_.top_p < 1.0f) {
    double cumulative = 0.0;
    int64_t cut = 0;
    for (;; ++cut) {
      if (cut == sorted && sorted < kept) {  // need more of the order
        std::sort(candidates_.begin() + sorted, candidates_.begin() + kept, by_logit);
        sorted = kept;
      }
      if (cut >= kept) break;
      cumulative += std::exp((logits[candidates_[cut]] - max_logit) * inv_t) / total;
      // HF keeps the smallest set whose mass reaches top_p (always at least one token).
      if (cumulative >= params_.top_p) {
        ++cut;
        break;
      }
    }
    kept = std::max<int64_t>(1, std::min(cut, kept));
  }
  if (params_.min_p > 0.0f) {
    // min-p: drop tokens whose probability is below min_p × the top probability. The top token
    // has probability exp(0)/total, so the threshold on exp((l - max)/T) is simply min_p.
    int64_t keep = 1;
    while (keep < kept && keep < sorted &&
           std::exp((logits[candidates_[keep]] - max_logit) * inv_t) >= params_.min_p)
      ++keep;
    if (keep == sorted && sorted < kept) {
      std::sort(candidates_.begin() + sorted, candidates_.begin() + kept, by_logit);
      sorted = kept;
      while (keep < kept && std::exp((logits[candidates_[keep]] - max_logit) * inv_t) >= params_.min_p) ++keep;
    }
    kept = keep;
  }

  probs_.resize(static_cast<size_t>(kept));
  double mass = 0.0;
  for (int64_t i = 0; i < kept; ++i) {
    probs_[i] = std::exp((logits[candidates_[i]] - max_logit) * inv_t);
    mass += probs_[i];
  }
  std::uniform_real_distribution<double> uniform(0.0, mass);
  const double u = uniform(rng_);
  double acc = 0.0;
  for (int64_t i = 0; i < kept; ++i) {
    acc += probs_[i];
    if (u < acc) return candidates_[i];
  }
  return candidates_[kept - 1];
}

}  // namespace pagoda
