#include "engine/speculative.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "base/error.h"

namespace pagoda {
namespace {

int int_field(const nlohmann::json& j, const char* key) {
  const nlohmann::json& v = j.at(key);
  PAGODA_CHECK(v.is_number_integer(), "--speculative-config: \"", key, "\" must be an integer (got ", v.dump(), ")");
  const auto x = v.get<int64_t>();
  PAGODA_CHECK(x >= 1 && x <= 1024, "--speculative-config: \"", key, "\" must be in [1, 1024] (got ", x, ")");
  return static_cast<int>(x);
}

}  // namespace

SpeculativeConfig parse_speculative_config(const std::string& json_text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    fail("--speculative-config is not valid JSON (", e.what(), "): ", json_text);
  }
  PAGODA_CHECK(j.is_object(), "--speculative-config must be a JSON object, e.g. ",
               "{\"method\": \"ngram\", \"num_speculative_tokens\": 4, \"prompt_lookup_max\": 4}");
  for (const auto& [key, value] : j.items()) {
    (void)value;
    PAGODA_CHECK(key == "method" || key == "num_speculative_tokens" || key == "prompt_lookup_max" ||
                     key == "prompt_lookup_min",
                 "--speculative-config: unknown key \"", key,
                 "\" (pagoda knows method, num_speculative_tokens, prompt_lookup_max, prompt_lookup_min)");
  }
  SpeculativeConfig c;
  PAGODA_CHECK(j.contains("method") && j["method"].is_string(),
               "--speculative-config: \"method\" (a string) is required; pagoda supports \"ngram\"");
  c.method = j["method"].get<std::string>();
  PAGODA_CHECK(c.method == "ngram", "--speculative-config: method \"", c.method,
               "\" is not supported; pagoda supports \"ngram\" (draft_model, eagle and mtp are not implemented)");
  PAGODA_CHECK(j.contains("num_speculative_tokens"), "--speculative-config: \"num_speculative_tokens\" is required");
  c.num_speculative_tokens = int_field(j, "num_speculative_tokens");
  const bool has_min = j.contains("prompt_lookup_min"), has_max = j.contains("prompt_lookup_max");
  c.prompt_lookup_min = has_min ? int_field(j, "prompt_lookup_min") : 0;
  c.prompt_lookup_max = has_max ? int_field(j, "prompt_lookup_max") : 0;
  if (!has_min && !has_max) {
    c.prompt_lookup_min = c.prompt_lookup_max = 5;
  } else if (!has_min) {
    c.prompt_lookup_min = c.prompt_lookup_max;
  } else if (!has_max) {
    c.prompt_lookup_max = c.prompt_lookup_min;
  }
  PAGODA_CHECK(c.prompt_lookup_min <= c.prompt_lookup_max, "--speculative-config: prompt_lookup_min (",
               c.prompt_lookup_min, ") must not exceed prompt_lookup_max (", c.prompt_lookup_max, ")");
  return c;
}

int propose_ngram(std::span<const int32_t> tokens, int min_n, int max_n, int k, std::vector<int32_t>& out) {
  out.clear();
  const int L = static_cast<int>(tokens.size());
  if (k <= 0 || min_n <= 0 || max_n < min_n) return 0;
  // One pass over the earlier positions e where an occurrence could end: m = how many tokens
  // ending at e equal the suffix (at most max_n). The longest m wins, the earliest e among equals
  // (as vLLM's proposer: in a repeating stretch the earliest has the most tokens after it).
  const int32_t* t = tokens.data();
  int best_n = 0, best_end = -1;
  for (int e = 0; e + 1 < L; ++e) {
    if (t[e] != t[L - 1]) continue;
    const int cap = std::min(max_n, e + 1);
    int m = 1;
    while (m < cap && t[e - m] == t[L - 1 - m]) ++m;
    if (m > best_n) {
      best_n = m;
      best_end = e;
      if (m == max_n) break;  // nothing later can be longer, and the earliest is kept
    }
  }
  if (best_n < min_n) return 0;
  const int from = best_end + 1, count = std::min(k, L - from);
  out.assign(tokens.begin() + from, tokens.begin() + from + count);
  return count;
}

}  // namespace pagoda
