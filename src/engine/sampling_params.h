// Per-request sampling settings (vLLM's SamplingParams, the part the foundation needs).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace pagoda {

struct SamplingParams {
  float temperature = 1.0f;  // < 1e-5: greedy
  float top_p = 1.0f;        // (0, 1]
  int top_k = 0;             // 0 or -1: off
  float min_p = 0.0f;        // [0, 1]
  std::optional<uint64_t> seed;
  int max_tokens = 16;
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;

  bool greedy() const { return temperature < 1e-5f; }
  // Throws pagoda::Error naming the field if a value is out of range.
  void validate() const;
};

}  // namespace pagoda
