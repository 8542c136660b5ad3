// Mirrors transformers 5.x modeling_rope_utils.py. transformers evaluates these formulas on
// float32 tensors (Python scalars are cast to float32 when combined with a tensor, `s / t` is
// reciprocal(t) * s); the arithmetic below keeps the same order and precision, with Python-side
// scalar arithmetic (find_correction_range, wavelength bounds) in double as there.
#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "base/error.h"

namespace pagoda {

RotaryEmbedding::RotaryEmbedding(const ModelConfig& config)
    : type_(config.rope_scaling.type),
      rotary_dim_(static_cast<int>(config.rotary_dim())),
      theta_(config.rope_theta),
      max_position_embeddings_(config.max_position_embeddings),
      scaling_(config.rope_scaling) {
  PAGODA_CHECK(rotary_dim_ > 0 && rotary_dim_ % 2 == 0, "rotary dimension ", rotary_dim_, " must be even");
  PAGODA_CHECK(type_ == "default" || type_ == "linear" || type_ == "dynamic" || type_ == "yarn" || type_ == "llama3",
               "rope type \"", type_, "\" is not supported");
  base_ = compute(0);
}

// inv_freq_i = 1 / base^(2i / dim), in float32.
std::vector<float> RotaryEmbedding::default_inv_freq(float base) const {
  const int half = rotary_dim_ / 2;
  std::vector<float> inv(half);
  const float dim = static_cast<float>(rotary_dim_);
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / dim;
    inv[i] = 1.0f / std::pow(base, exponent);
  }
  return inv;
}

RopeFrequencies RotaryEmbedding::compute(int64_t seq_len) const {
  RopeFrequencies out;
  const int half = rotary_dim_ / 2;
  const float theta = static_cast<float>(theta_);

  if (type_ == "default") {
    out.inv_freq = default_inv_freq(theta);
  } else if (type_ == "linear") {
    out.inv_freq = default_inv_freq(theta);
    const float factor = static_cast<float>(scaling_.factor);
    for (float& f : out.inv_freq) f /= factor;
  } else if (type_ == "dynamic") {
    // _compute_dynamic_ntk_parameters with seq_len = max(seq_len, max_position_embeddings).
    const int64_t len = std::max(seq_len, max_position_embeddings_);
    const float factor = static_cast<float>(scaling_.factor);
    float ratio = factor * static_cast<float>(len);
    ratio = ratio / static_cast<float>(max_position_embeddings_);
    ratio = ratio - static_cast<float>(scaling_.factor - 1.0);
    const double dim = rotary_dim_;
    const float base = theta * std::pow(ratio, static_cast<float>(dim / (dim - 2.0)));
    out.inv_freq = default_inv_freq(base);
  } else if (type_ == "yarn") {
    const double factor = scaling_.factor;
    const double dim = rotary_dim_;
    const double orig = static_cast<double>(scaling_.original_max_position_embeddings > 0
                                                ? scaling_.original_max_position_embeddings
                                                : max_position_embeddings_);
    if (scaling_.attention_factor) {
      out.attention_factor = static_cast<float>(*scaling_.attention_factor);
    } else {
      out.attention_factor = factor <= 1.0 ? 1.0f : static_cast<float>(0.1 * std::log(factor) + 1.0);
    }
    auto correction_dim = [&](double rotations) {
      return (dim * std::log(orig / (rotations * 2.0 * std::numbers::pi))) / (2.0 * std::log(theta_));
    };
    double low = correction_dim(scaling_.beta_fast);
    double high = correction_dim(scaling_.beta_slow);
    if (scaling_.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, dim - 1.0);
    if (low == high) high += 0.001;  // linear_ramp_factor's guard against a zero range
    const float range = static_cast<float>(high - low);
    const float ffactor = static_cast<float>(factor);
    out.inv_freq.resize(half);
    for (int i = 0; i < half; ++i) {
      const float pos_freq = std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(rotary_dim_));
      const float extrapolation = 1.0f / pos_freq;
      const float interpolation = 1.0f / (ffactor * pos_freq);
      float ramp = (static_cast<float>(i) - static_cast<float>(low)) / range;
      ramp = std::clamp(ramp, 0.0f, 1.0f);
      const float extrapolation_factor = 1.0f - ramp;
      out.inv_freq[i] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
    }
  } else if (type_ == "llama3") {
    out.inv_freq = default_inv_freq(theta);
    const double old_context = static_cast<double>(scaling_.original_max_position_embeddings > 0
                                                       ? scaling_.original_max_position_embeddings
                                                       : max_position_embeddings_);
    const float low_freq_wavelen = static_cast<float>(old_context / scaling_.low_freq_factor);
    const float high_freq_wavelen = static_cast<float>(old_context / scaling_.high_freq_factor);
    const float factor = static_cast<float>(scaling_.factor);
    const float two_pi = static_cast<float>(2.0 * std::numbers::pi);
    const float old = static_cast<float>(old_context);
    const float lo = static_cast<float>(scaling_.low_freq_factor);
    const float span = static_cast<float>(scaling_.high_freq_factor - scaling_.low_freq_factor);
    for (float& f : out.inv_freq) {
      const float wavelen = (1.0f / f) * two_pi;
      const float scaled = wavelen > low_freq_wavelen ? f / factor : f;
      const float smooth = ((1.0f / wavelen) * old - lo) / span;
      const float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
      const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      f = medium ? smoothed : scaled;
    }
  }
  return out;
}

}  // namespace pagoda
