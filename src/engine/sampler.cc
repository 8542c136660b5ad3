#include "engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "base/error.h"

namespace pagoda {

void SamplingParams::validate(int64_t vocab_size, int max_logprobs) const {
  PAGODA_CHECK(n >= 1, "n must be at least 1, got ", n, ".");
  PAGODA_CHECK(std::isfinite(presence_penalty) && presence_penalty >= -2.0f && presence_penalty <= 2.0f,
               "presence_penalty must be in [-2, 2], got ", presence_penalty, ".");
  PAGODA_CHECK(std::isfinite(frequency_penalty) && frequency_penalty >= -2.0f && frequency_penalty <= 2.0f,
               "frequency_penalty must be in [-2, 2], got ", frequency_penalty, ".");
  PAGODA_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f,
               "repetition_penalty must be greater than zero, got ", repetition_penalty, ".");
  PAGODA_CHECK(std::isfinite(temperature) && temperature >= 0.0f, "temperature must be non-negative, got ",
               temperature, ".");
  PAGODA_CHECK(top_p > 0.0f && top_p <= 1.0f, "top_p must be in (0, 1], got ", top_p, ".");
  PAGODA_CHECK(top_k >= -1, "top_k must be 0 (disable), or at least 1, got ", top_k, ".");
  PAGODA_CHECK(min_p >= 0.0f && min_p <= 1.0f, "min_p must be in [0, 1], got ", min_p, ".");
  if (max_tokens) PAGODA_CHECK(*max_tokens >= 1, "max_tokens must be at least 1, got ", *max_tokens, ".");
  PAGODA_CHECK(min_tokens >= 0, "min_tokens must be greater than or equal to 0, got ", min_tokens, ".");
  if (max_tokens)
    PAGODA_CHECK(min_tokens <= *max_tokens, "min_tokens must be less than or equal to max_tokens=", *max_tokens,
                 ", got ", min_tokens, ".");
  if (logprobs) {
    PAGODA_CHECK(*logprobs >= 0, "logprobs must be non-negative, got ", *logprobs, ".");
    PAGODA_CHECK(*logprobs <= max_logprobs, "Requested sample logprobs of ", *logprobs,
                 ", which is greater than max allowed: ", max_logprobs);
  }
  if (prompt_logprobs) {
    PAGODA_CHECK(*prompt_logprobs >= 0, "prompt_logprobs must be non-negative, got ", *prompt_logprobs, ".");
    PAGODA_CHECK(*prompt_logprobs <= max_logprobs, "Requested prompt logprobs of ", *prompt_logprobs,
                 ", which is greater than max allowed: ", max_logprobs);
  }
  for (const std::string& s : stop) PAGODA_CHECK(!s.empty(), "stop cannot contain an empty string.");
  for (const auto& [id, bias] : logit_bias) {
    PAGODA_CHECK(std::isfinite(bias), "logit_bias for token ", id, " must be finite, got ", bias);
    PAGODA_CHECK(id >= 0 && (vocab_size <= 0 || id < vocab_size), "token_id(s) [", id,
                 "] in logit_bias contain out-of-vocab token ids. Vocabulary size: ", vocab_size);
  }
  if (allowed_token_ids) {
    PAGODA_CHECK(!allowed_token_ids->empty(), "allowed_token_ids is not None and empty!");
    for (int32_t id : *allowed_token_ids)
      PAGODA_CHECK(id >= 0 && (vocab_size <= 0 || id < vocab_size),
                   "allowed_token_ids contains out-of-vocab token id!");
  }
}

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// exp(x) for x below this is treated as 0 (about 1.6e-38).
constexpr float kExpFloor = -87.0f;
// top-k up to this size is selected by one insertion pass over the row.
constexpr int kSmallTopK = 256;

// out[i] = exp(x[i]) for x[i] <= 0 (0 where x[i] < floor or NaN). A branch-free polynomial:
// 2^v = 2^k * 2^f with k = round(v) (by the 1.5 * 2^23 shift, no float to int conversion) and f in
// [-0.5, 0.5]; 2^f by a degree-6 series of e^t (|t| < 0.35, relative error ~2e-7). Written with
// explicit 4-wide vectors: under the default -ftrapping-math the compiler will not if-convert the
// clamps of a scalar loop, so it would not vectorise it.
using v4f = float __attribute__((vector_size(16)));
using v4i = int32_t __attribute__((vector_size(16)));

inline float exp_nonpositive_one(float xi, float floor) {
  float v = xi * 1.44269504088896341f;
  v = v < -125.0f ? -125.0f : v;
  v = v > 0.0f ? 0.0f : v;
  const float r = v + 12582912.0f;
  const int32_t k = std::bit_cast<int32_t>(r) - std::bit_cast<int32_t>(12582912.0f);
  const float t = (v - (r - 12582912.0f)) * 0.69314718055994531f;
  const float q =
      ((((((t * (1.0f / 720.0f) + (1.0f / 120.0f)) * t + (1.0f / 24.0f)) * t + (1.0f / 6.0f)) * t + 0.5f) * t +
        1.0f) *
           t +
       1.0f);
  const float e = std::bit_cast<float>(std::bit_cast<int32_t>(q) + k * (1 << 23));
  return xi >= floor ? e : 0.0f;
}

void exp_nonpositive(const float* x, float* out, int64_t n, float floor) {
  const v4f log2e = {1.44269504088896341f, 1.44269504088896341f, 1.44269504088896341f, 1.44269504088896341f};
  const v4f ln2 = {0.69314718055994531f, 0.69314718055994531f, 0.69314718055994531f, 0.69314718055994531f};
  const v4f lo = {-125.0f, -125.0f, -125.0f, -125.0f};
  const v4f zero = {0.0f, 0.0f, 0.0f, 0.0f};
  const v4f one = {1.0f, 1.0f, 1.0f, 1.0f};
  const v4f shift = {12582912.0f, 12582912.0f, 12582912.0f, 12582912.0f};
  const v4f fl = {floor, floor, floor, floor};
  const v4f c2 = {0.5f, 0.5f, 0.5f, 0.5f};
  const v4f c3 = {1.0f / 6.0f, 1.0f / 6.0f, 1.0f / 6.0f, 1.0f / 6.0f};
  const v4f c4 = {1.0f / 24.0f, 1.0f / 24.0f, 1.0f / 24.0f, 1.0f / 24.0f};
  const v4f c5 = {1.0f / 120.0f, 1.0f / 120.0f, 1.0f / 120.0f, 1.0f / 120.0f};
  const v4f c6 = {1.0f / 720.0f, 1.0f / 720.0f, 1.0f / 720.0f, 1.0f / 720.0f};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    v4f xv;
    std::memcpy(&xv, x + i, sizeof(xv));
    v4f v = xv * log2e;
    v4i m = v < lo;
    v = reinterpret_cast<v4f>((m & reinterpret_cast<v4i>(lo)) | (~m & reinterpret_cast<v4i>(v)));
    m = v > zero;
    v = reinterpret_cast<v4f>(~m & reinterpret_cast<v4i>(v));
    const v4f r = v + shift;
    const v4i k = reinterpret_cast<v4i>(r) - reinterpret_cast<v4i>(shift);
    const v4f t = (v - (r - shift)) * ln2;
    const v4f q = ((((((t * c6 + c5) * t + c4) * t + c3) * t + c2) * t + one) * t + one);
    const v4i e = reinterpret_cast<v4i>(q) + k * (1 << 23);
    const v4i keep = xv >= fl;
    const v4f res = reinterpret_cast<v4f>(keep & e);
    std::memcpy(out + i, &res, sizeof(res));
  }
  for (; i < n; ++i) out[i] = exp_nonpositive_one(x[i], floor);
}

// Eight independent running maxima (the compiler cannot reorder a float max reduction itself).
float max_value(const float* x, int64_t n) {
  float m[8];
  for (float& v : m) v = kNegInf;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) m[j] = std::max(m[j], x[i + j]);
  float r = kNegInf;
  for (float v : m) r = std::max(r, v);
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

// The top_k largest entries of x (lowest index first on ties), best first.
std::vector<std::pair<int32_t, float>> top_entries(const float* x, int64_t n, int top_k) {
  std::vector<std::pair<int32_t, float>> top;
  if (top_k <= 0) return top;
  const int64_t k = std::min<int64_t>(top_k, n);
  if (k <= kSmallTopK) {
    // Insertion into a small sorted list: one compare per entry for all but a few.
    top.reserve(static_cast<size_t>(k) + 1);
    bool full = false;
    float worst = kNegInf;  // the k-th best so far, once there are k
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[i];
      if (full && !(v > worst)) continue;
      auto pos = std::upper_bound(top.begin(), top.end(), v,
                                  [](float value, const std::pair<int32_t, float>& e) { return value > e.second; });
      top.insert(pos, {static_cast<int32_t>(i), v});
      if (static_cast<int64_t>(top.size()) > k) top.pop_back();
      if (static_cast<int64_t>(top.size()) == k) {
        full = true;
        worst = top.back().second;
      }
    }
    return top;
  }
  std::vector<int32_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>(i);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  top.reserve(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) top.emplace_back(idx[i], x[idx[i]]);
  return top;
}

}  // namespace

int32_t argmax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  float best_value = logits[0];
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > best_value) {
      best_value = logits[i];
      best = i;
    }
  }
  return static_cast<int32_t>(best);
}

float log_sum_exp(const float* logits, int64_t vocab) {
  const float m = max_value(logits, vocab);
  if (!(m > kNegInf) || !std::isfinite(m)) return m;
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) scratch[i] = logits[i] - m;
  exp_nonpositive(scratch.data(), scratch.data(), vocab, kExpFloor);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += scratch[i];
  return m + static_cast<float>(std::log(sum));
}

SampledToken raw_logprobs(const float* logits, int64_t vocab, int32_t token, int top_k) {
  PAGODA_ASSERT(token >= 0 && token < vocab);
  const float lse = log_sum_exp(logits, vocab);
  SampledToken out;
  out.token = token;
  out.logprob = logits[token] - lse;
  out.top_logprobs = top_entries(logits, vocab, top_k);
  for (auto& e : out.top_logprobs) e.second -= lse;
  return out;
}

SampledToken prompt_logprob(const float* logits, int64_t vocab, int32_t next_token, int top_k) {
  PAGODA_CHECK(next_token >= 0 && next_token < vocab, "prompt token id ", next_token,
               " is outside the vocabulary [0, ", vocab, ")");
  return raw_logprobs(logits, vocab, next_token, top_k);
}

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt_token_ids, int64_t vocab_size,
                 std::vector<int32_t> eos_token_ids, std::shared_ptr<const TokenVocabulary> vocabulary)
    : params_(params), vocab_(vocab_size), eos_(std::move(eos_token_ids)), vocabulary_(std::move(vocabulary)) {
  PAGODA_CHECK(vocab_size > 0, "vocabulary size must be positive");
  params_.validate(vocab_size, std::numeric_limits<int>::max());
  if (params_.structured_output) {
    PAGODA_CHECK(params_.structured_output->grammar, "structured output without a grammar");
    PAGODA_CHECK(vocabulary_, "structured output (response_format / tool_choice) is not available: the engine has "
                              "no token vocabulary");
    matcher_ = std::make_unique<GrammarMatcher>(params_.structured_output->grammar);
    grammar_active_ = !params_.structured_output->start_after_token.has_value();
  }
  rng_.seed(params.seed ? *params.seed : std::random_device{}());

  if (params_.allowed_token_ids) {
    allowed_ = *params_.allowed_token_ids;
    std::sort(allowed_.begin(), allowed_.end());
    allowed_.erase(std::unique(allowed_.begin(), allowed_.end()), allowed_.end());
  }
  if (params_.min_tokens > 0) {
    min_tokens_masked_ = eos_;
    min_tokens_masked_.insert(min_tokens_masked_.end(), params_.stop_token_ids.begin(), params_.stop_token_ids.end());
    std::sort(min_tokens_masked_.begin(), min_tokens_masked_.end());
    min_tokens_masked_.erase(std::unique(min_tokens_masked_.begin(), min_tokens_masked_.end()),
                             min_tokens_masked_.end());
    std::erase_if(min_tokens_masked_, [&](int32_t id) { return id < 0 || id >= vocab_; });
  }
  for (const auto& [id, bias] : params_.logit_bias)
    if (bias != 0.0f) bias_.emplace_back(id, bias);

  use_repetition_ = params_.repetition_penalty != 1.0f;
  use_penalties_ = use_repetition_ || params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f;
  if (use_repetition_) {
    for (int32_t id : prompt_token_ids) {
      if (id < 0 || id >= vocab_) continue;  // vLLM ignores out-of-range ids in the prompt mask
      if (rep_set_.insert(id).second) rep_tokens_.push_back(id);
    }
  }
}

void Sampler::apply_processors(float* logits) const {
  if (!allowed_.empty()) {
    // Keep the allowed logits, blank the row, put them back: two linear passes, no mask stored.
    thread_local std::vector<float> keep;
    keep.resize(allowed_.size());
    for (size_t i = 0; i < allowed_.size(); ++i) keep[i] = logits[allowed_[i]];
    std::fill(logits, logits + vocab_, kNegInf);
    for (size_t i = 0; i < allowed_.size(); ++i) logits[allowed_[i]] = keep[i];
  }
  if (num_output_ < params_.min_tokens)
    for (int32_t id : min_tokens_masked_) logits[id] = kNegInf;
  for (const auto& [id, bias] : bias_) logits[id] += bias;
  if (use_penalties_) {
    if (use_repetition_) {
      const float p = params_.repetition_penalty;
      for (int32_t id : rep_tokens_) {
        float& l = logits[id];
        l = l > 0.0f ? l / p : l * p;
      }
    }
    const float freq = params_.frequency_penalty;
    const float presence = params_.presence_penalty;
    for (size_t i = 0; i < out_tokens_.size(); ++i)
      logits[out_tokens_[i]] -= freq * static_cast<float>(out_counts_[i]) + presence;
  }
}

void Sampler::append_edits(std::vector<LogitEdit>& out, SamplingRow& row, int in_flight) {
  row.repetition_penalty = params_.repetition_penalty;
  row.presence_penalty = params_.presence_penalty;
  row.frequency_penalty = params_.frequency_penalty;
  edit_index_.clear();
  auto at = [&](int32_t id) -> LogitEdit& {
    auto [it, inserted] = edit_index_.try_emplace(id, out.size());
    if (inserted) {
      LogitEdit e;
      e.token = id;
      out.push_back(e);
    }
    return out[it->second];
  };
  if (num_output_ + in_flight < params_.min_tokens)
    for (int32_t id : min_tokens_masked_) at(id).flags |= kEditMask;
  for (const auto& [id, bias] : bias_) at(id).bias += bias;
  if (!use_penalties_) return;
  if (use_repetition_)
    for (int32_t id : rep_tokens_) at(id).flags |= kEditRepeat;
  for (size_t i = 0; i < out_tokens_.size(); ++i) at(out_tokens_[i]).count = out_counts_[i];
}

void Sampler::record(int32_t token) {
  ++num_output_;
  if (!use_penalties_) return;
  auto [it, inserted] = out_index_.try_emplace(token, static_cast<int32_t>(out_tokens_.size()));
  if (inserted) {
    out_tokens_.push_back(token);
    out_counts_.push_back(1);
  } else {
    ++out_counts_[it->second];
  }
  if (use_repetition_ && rep_set_.insert(token).second) rep_tokens_.push_back(token);
}

SampledToken Sampler::sample(float* logits) {
  const bool want_logprobs = params_.logprobs.has_value();
  if (matcher_ && grammar_active_) matcher_->mask_logits(logits, vocab_, *vocabulary_, eos_);
  if (want_logprobs) raw_.assign(logits, logits + vocab_);
  apply_processors(logits);
  const int32_t token = params_.greedy() ? argmax(logits, vocab_) : sample_random(logits);
  record(token);
  if (matcher_) {
    if (!grammar_active_)
      grammar_active_ = token == *params_.structured_output->start_after_token;
    else if (std::find(eos_.begin(), eos_.end(), token) == eos_.end())
      matcher_->accept_token(*vocabulary_, token);
  }
  if (want_logprobs) return raw_logprobs(raw_.data(), vocab_, token, *params_.logprobs);
  SampledToken out;
  out.token = token;
  return out;
}

// A draw from the weights w[0, n) (not normalised); returns the position. Zero weights are never
// chosen.
int64_t Sampler::draw_position(const float* w, int64_t n) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += w[i];
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_) * total;
  double acc = 0.0;
  int64_t last = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (w[i] <= 0.0f) continue;
    acc += w[i];
    last = i;
    if (u < acc) return i;
  }
  return last;
}

// top-p over candidates sorted best first with weights w: keep a token while the mass of the
// better tokens is below top_p of the total (vLLM: the smallest prefix whose mass reaches
// top_p). Returns how many to keep (at least 1).
static int64_t top_p_cut(const float* w, int64_t n, float top_p) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += w[i];
  const double target = static_cast<double>(top_p) * total;
  double before = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    if (before >= target) return std::max<int64_t>(1, j);
    before += w[j];
  }
  return n;
}

int32_t Sampler::sample_random(const float* logits) {
  const int64_t vocab = vocab_;
  // vLLM raises tiny temperatures to 0.01 to keep the arithmetic finite.
  const float temperature = std::max(params_.temperature, 0.01f);
  const float inv_t = 1.0f / temperature;
  const float lmax = max_value(logits, vocab);
  if (!(lmax > kNegInf) || std::isnan(lmax)) return argmax(logits, vocab);  // everything masked

  // Weights are exp((l - lmax) / T): unnormalised probabilities, 1 for the best token. min-p
  // (relative to the best token's probability) is a floor on the scaled logit.
  float floor = kExpFloor;
  if (params_.min_p > 0.0f) floor = std::max(floor, std::log(params_.min_p));
  const bool use_k = params_.top_k > 0 && params_.top_k < vocab;
  const bool use_p = params_.top_p < 1.0f;
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };

  if (use_k && params_.top_k <= kSmallTopK) {
    // Small top-k (the common case, e.g. Qwen's default 20): select the k best logits in one
    // pass; only those k need an exp.
    const auto top = top_entries(logits, vocab, params_.top_k);
    candidates_.clear();
    probs_.clear();
    for (const auto& [id, l] : top) {
      candidates_.push_back(id);
      probs_.push_back((l - lmax) * inv_t);
    }
    exp_nonpositive(probs_.data(), probs_.data(), static_cast<int64_t>(probs_.size()), floor);
    int64_t n = static_cast<int64_t>(probs_.size());
    while (n > 1 && probs_[n - 1] <= 0.0f) --n;  // best first: min-p drops a tail
    if (use_p) n = top_p_cut(probs_.data(), n, params_.top_p);
    return candidates_[draw_position(probs_.data(), n)];
  }

  probs_.resize(static_cast<size_t>(vocab));
  float* p = probs_.data();
  for (int64_t i = 0; i < vocab; ++i) p[i] = (logits[i] - lmax) * inv_t;
  exp_nonpositive(p, p, vocab, floor);

  if (!use_k && !use_p) return static_cast<int32_t>(draw_position(p, vocab));  // the whole row

  candidates_.clear();
  weights_.clear();
  if (use_k) {
    // Large top-k: partition out the k best, order them, then top-p.
    for (int64_t i = 0; i < vocab; ++i)
      if (p[i] > 0.0f) candidates_.push_back(static_cast<int32_t>(i));
    if (params_.top_k < static_cast<int64_t>(candidates_.size())) {
      std::nth_element(candidates_.begin(), candidates_.begin() + params_.top_k, candidates_.end(), by_logit);
      candidates_.resize(static_cast<size_t>(params_.top_k));
    }
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
    for (int32_t id : candidates_) weights_.push_back(p[id]);
    int64_t n = static_cast<int64_t>(weights_.size());
    if (use_p) n = top_p_cut(weights_.data(), n, params_.top_p);
    return candidates_[draw_position(weights_.data(), n)];
  }

  // top-p alone, without sorting the vocabulary: bucket the scaled logits [floor, 0] into
  // kBuckets ranges (best first), find the bucket where the cumulative mass reaches top_p; every
  // token in a better bucket is kept, and only the members of that one bucket are sorted.
  constexpr int kBuckets = 1024;
  const float scale = static_cast<float>(kBuckets) / -floor;
  std::vector<double> mass(kBuckets, 0.0);
  bucket_.resize(static_cast<size_t>(vocab));
  double total = 0.0;
  uint16_t* bucket_out = bucket_.data();
  double* mass_of = mass.data();
  for (int64_t i = 0; i < vocab; ++i) {
    if (p[i] <= 0.0f) continue;
    const float x = (logits[i] - lmax) * inv_t;
    const int b = std::min(kBuckets - 1, static_cast<int>(-x * scale));
    bucket_out[i] = static_cast<uint16_t>(b);
    mass_of[b] += p[i];
    total += p[i];
  }
  const double target = static_cast<double>(params_.top_p) * total;
  double before = 0.0;
  int crossing = 0;
  for (; crossing < kBuckets - 1; ++crossing) {
    if (before + mass[crossing] >= target) break;
    before += mass[crossing];
  }
  // Gather through raw pointers (push_back would reload the vectors' state on every store).
  candidates_.resize(static_cast<size_t>(vocab));
  weights_.resize(static_cast<size_t>(vocab));
  edge_.resize(static_cast<size_t>(vocab));
  int32_t* cand = candidates_.data();
  float* wts = weights_.data();
  int32_t* edge = edge_.data();
  const uint16_t* bucket = bucket_.data();
  int64_t num_kept = 0, num_edge = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (p[i] <= 0.0f) continue;
    if (bucket[i] < crossing) {
      cand[num_kept] = static_cast<int32_t>(i);
      wts[num_kept++] = p[i];
    } else if (bucket[i] == crossing) {
      edge[num_edge++] = static_cast<int32_t>(i);
    }
  }
  candidates_.resize(static_cast<size_t>(num_kept));
  weights_.resize(static_cast<size_t>(num_kept));
  edge_.resize(static_cast<size_t>(num_edge));
  const std::vector<int32_t>& edge_ids = edge_;
  std::sort(edge_.begin(), edge_.end(), by_logit);
  for (int32_t id : edge_ids) {
    if (before >= target && !candidates_.empty()) break;
    candidates_.push_back(id);
    weights_.push_back(p[id]);
    before += p[id];
  }
  return candidates_[draw_position(weights_.data(), static_cast<int64_t>(weights_.size()))];
}

}  // namespace pagoda
