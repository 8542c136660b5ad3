// Small helpers the engine tests share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/sampling_params.h"

namespace pagoda::test_support {

// "<prefix><i>" (built by appending: GCC 12 warns falsely on "literal" + std::to_string chains).
inline std::string numbered(std::string prefix, int64_t i) {
  prefix.append(std::to_string(i));
  return prefix;
}

// A request to hand an engine.
struct Req {
  std::string id;
  std::vector<int32_t> prompt;
  SamplingParams params;
};

// A prompt of n token ids in [3, 253), different for each salt.
inline std::vector<int32_t> test_prompt(int n, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(3 + (i * 37 + salt * 101) % 250);
  return p;
}

}  // namespace pagoda::test_support
