// Rotary position embedding frequencies, computed exactly as transformers'
// modeling_rope_utils.py does (default, linear, dynamic NTK, YaRN, Llama 3), including its
// float32 arithmetic, so that cos/sin match the reference bit for bit or within an ulp.
#pragma once

#include <cstdint>
#include <vector>

#include "io/model_config.h"

namespace pagoda {

struct RopeFrequencies {
  std::vector<float> inv_freq;    // [rotary_dim / 2]
  float attention_factor = 1.0f;  // multiplies cos and sin (YaRN)
};

class RotaryEmbedding {
 public:
  explicit RotaryEmbedding(const ModelConfig& config);

  int rotary_dim() const { return rotary_dim_; }
  // True when the frequencies depend on the sequence length (dynamic NTK).
  bool is_dynamic() const { return type_ == "dynamic"; }

  // Frequencies for a forward pass whose longest context is seq_len tokens (the largest position
  // in the batch + 1). Only dynamic NTK depends on seq_len: like transformers' dynamic_rope_update,
  // it rescales the base once seq_len exceeds max_position_embeddings, and uses the original
  // frequencies otherwise. Keys already in the KV cache keep the rotation they were written with,
  // as in transformers (it caches post-RoPE keys).
  RopeFrequencies compute(int64_t seq_len) const;

  // The frequencies used for every seq_len <= max_position_embeddings (all that static types need).
  const RopeFrequencies& base() const { return base_; }

 private:
  std::vector<float> default_inv_freq(float base) const;

  std::string type_;
  int rotary_dim_ = 0;
  double theta_ = 10000.0;
  int64_t max_position_embeddings_ = 0;
  RopeScaling scaling_;
  RopeFrequencies base_;
};

}  // namespace pagoda
