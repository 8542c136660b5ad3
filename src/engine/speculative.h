// Speculative decoding (vLLM's --speculative-config), n-gram method ("prompt lookup"): a request
// that is decoding proposes the k tokens that followed the earliest occurrence of its last n
// tokens (n from prompt_lookup_max down to prompt_lookup_min, the longest that matches); the
// next step runs its last token and the k drafts in one forward (k + 1 logits rows) and keeps the
// drafts that the target model samples itself, plus the first token it samples differently (or
// one more after the last draft). How many drafts a request proposes adapts as in transformers'
// assisted generation ("heuristic" schedule): up to k, two more after a step whose drafts were
// all accepted, one fewer (at least one) after a rejection; a draft costs little only while it
// is accepted. With n-gram drafts the proposal is a single token, so the
// rejection sampler reduces to: sample each row in turn from the request's own sampling
// distribution, accept while the sampled token equals the draft. Every emitted token is thus
// drawn from exactly the distribution plain decoding draws it from, in the same order from the
// same generator, so greedy and seeded outputs are those of plain decoding in fewer steps, up to
// floating point: a (k + 1)-token forward sums in another order than a 1-token one (GEMM vs
// GEMV, ~1e-7 relative), which can flip a BF16 KV rounding and, rarely, a near-tie or a seeded
// draw.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace pagoda {

struct SpeculativeConfig {
  std::string method;              // "" (off) or "ngram"
  int num_speculative_tokens = 0;  // k: drafts per step at most
  int prompt_lookup_min = 0;       // n-gram lengths tried, longest first
  int prompt_lookup_max = 0;
  bool enabled() const { return num_speculative_tokens > 0; }
};

// Parses the --speculative-config JSON ({"method": "ngram", "num_speculative_tokens": k,
// "prompt_lookup_max": N, "prompt_lookup_min": M}; vLLM's names and defaults: both lookup bounds
// 5 when neither is given, else the missing one equals the other). Unknown keys, other methods
// and out-of-range values are pagoda::Error naming the key.
SpeculativeConfig parse_speculative_config(const std::string& json_text);

// The n-gram proposal for `tokens` (prompt + output so far): the longest n in [min_n, max_n]
// whose last-n-token suffix also occurs earlier in `tokens`; at its earliest occurrence (as
// vLLM's proposer), the up to k tokens that followed it. Writes them to `out` (cleared; empty when nothing
// matches) and returns how many.
int propose_ngram(std::span<const int32_t> tokens, int min_n, int max_n, int k, std::vector<int32_t>& out);

}  // namespace pagoda
