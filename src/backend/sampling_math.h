// The arithmetic of Backend::sample_tokens, shared by the CPU backend and the CUDA kernel (this
// header compiles as host code and, under nvcc, as device code), so both backends draw the same
// token from the same row up to floating-point rounding (exp / log ulps, summation order).
//
// Per row, with s_i = (logit_i - max) / max(T, 0.01):
//  1. greedy (T < 1e-5) or a row with no finite logit: the argmax (lowest id on ties);
//  2. candidates: s_i >= floor, floor = max(kSampleFloor, log(min_p)) (min-p relative to the best
//     token, as vLLM; kSampleFloor drops weights below e^-87, as the host sampler);
//  3. top-k and top-p cut the candidates best first. Candidates are ranked by a two-level bucket
//     key of s (kSampleBuckets^2 buckets over [floor, 0]): top-k keeps the best buckets until
//     they hold >= k tokens; top-p then keeps the best buckets of those until their mass reaches
//     top_p of the kept mass. A cut falls between buckets, so tokens that share the crossing
//     bucket (s within (-floor) / kSampleBuckets^2 of each other, 2e-5 at the default floor)
//     stay together: a tie-break, never a probability change beyond that width;
//  4. the draw: Gumbel-max, argmax over kept tokens of s_i - log(-log(u_i)) with
//     u_i = philox4x32_10(counter = (i, offset), key = seed) mapped to (0, 1): a sample from
//     softmax(s) over the kept set. The noise depends only on (seed, offset, token id), so a row
//     draws the same token whatever else is in the batch.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define PAGODA_HD __host__ __device__ __forceinline__
#else
#define PAGODA_HD inline
#endif

namespace pagoda {

// One row's settings (an array of these lives in backend memory).
struct SamplingRow {
  float temperature = 0.0f;  // < kGreedyTemperature: greedy
  int32_t top_k = 0;         // <= 0 or >= vocab: off
  float top_p = 1.0f;        // >= 1: off
  float min_p = 0.0f;        // <= 0: off
  uint64_t seed = 0;         // the request's generator
  uint64_t offset = 0;       // which draw of that generator (the request's sampled-token count)
  // Penalties, applied by Backend::apply_logit_edits to the tokens its edits name.
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t unused = 0;
};
static_assert(sizeof(SamplingRow) == 48, "SamplingRow is copied to devices as raw bytes");
// A row without penalties.
inline SamplingRow sampling_row(float temperature, int32_t top_k, float top_p, float min_p, uint64_t seed,
                                uint64_t offset) {
  SamplingRow r;
  r.temperature = temperature;
  r.top_k = top_k;
  r.top_p = top_p;
  r.min_p = min_p;
  r.seed = seed;
  r.offset = offset;
  return r;
}
inline constexpr int64_t kSamplingRowWords = sizeof(SamplingRow) / 4;  // the I32 view's width

// One token's edit in one row (Backend::apply_logit_edits), vLLM's order: masked (min_tokens:
// eos / stop ids) -> -inf; otherwise += bias (logit_bias), then the repetition penalty when
// kEditRepeat (the token is in the prompt or the output: l > 0 ? l / p : l * p), then
// -= frequency * count + presence when count > 0 (count: occurrences in the output).
struct LogitEdit {
  int32_t token = 0;
  int32_t count = 0;
  float bias = 0.0f;
  uint32_t flags = 0;
};
static_assert(sizeof(LogitEdit) == 16, "LogitEdit is copied to devices as raw bytes");
inline constexpr uint32_t kEditMask = 1, kEditRepeat = 2;

PAGODA_HD float apply_logit_edit(float l, const LogitEdit& e, const SamplingRow& r) {
  if (e.flags & kEditMask) return -INFINITY;
  l += e.bias;
  if (e.flags & kEditRepeat) l = l > 0.0f ? l / r.repetition_penalty : l * r.repetition_penalty;
  if (e.count > 0) {
#if defined(__CUDA_ARCH__)
    // Rounded like the host (no fused multiply-add), so both backends edit a row identically.
    l = __fsub_rn(l, __fadd_rn(__fmul_rn(r.frequency_penalty, static_cast<float>(e.count)), r.presence_penalty));
#else
    l -= r.frequency_penalty * static_cast<float>(e.count) + r.presence_penalty;
#endif
  }
  return l;
}

inline constexpr float kGreedyTemperature = 1e-5f;
inline constexpr float kMinTemperature = 0.01f;
inline constexpr float kSampleFloor = -87.0f;
inline constexpr int kSampleBuckets = 2048;

// Philox4x32-10 (Salmon et al., SC'11): ten rounds over a 128-bit counter with a 64-bit key.
struct Philox4 {
  uint32_t v[4];
};

PAGODA_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

PAGODA_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, ctr.v[0], hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, ctr.v[2], hi1, lo1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return ctr;
}

// u in (0, 1) for token `id` of draw `offset` of generator `seed`: 23 random bits, centred.
PAGODA_HD float sample_uniform(uint64_t seed, uint64_t offset, uint32_t id) {
  const Philox4 r = philox4x32_10(
      Philox4{{id, static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32), 0u}},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return (static_cast<float>(r.v[0] >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

// The two-level bucket of a scaled logit s in [floor, 0]: 0 is the best. `scale` is
// kSampleBuckets / -floor.
struct SampleBucket {
  int b1, b2;
};
PAGODA_HD SampleBucket sample_bucket(float s, float scale) {
  const float x = -s * scale;
  int b1 = static_cast<int>(x);
  b1 = b1 < 0 ? 0 : (b1 > kSampleBuckets - 1 ? kSampleBuckets - 1 : b1);
  int b2 = static_cast<int>((x - static_cast<float>(b1)) * static_cast<float>(kSampleBuckets));
  b2 = b2 < 0 ? 0 : (b2 > kSampleBuckets - 1 ? kSampleBuckets - 1 : b2);
  return {b1, b2};
}

PAGODA_HD bool sample_greedy(const SamplingRow& r) { return !(r.temperature >= kGreedyTemperature); }
PAGODA_HD float sample_inv_temperature(const SamplingRow& r) {
  return 1.0f / (r.temperature > kMinTemperature ? r.temperature : kMinTemperature);
}

}  // namespace pagoda
