// The request state that the KV cache manager (and, next, the scheduler) reads: a minimal slice
// of vLLM's Request. Token ids are the prompt followed by every token generated so far.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/block_hash.h"

namespace pagoda {

struct Request {
  std::string request_id;
  std::vector<int32_t> all_token_ids;  // prompt + output so far
  int num_prompt_tokens = 0;
  // Tokens whose KV is in the cache (prefix hits + computed chunks); the scheduler advances it
  // after each step and resets it to 0 on preemption.
  int num_computed_tokens = 0;
  // Keys that make equal token ids mean different KV (LoRA id, multimodal input hashes, a cache
  // salt). They enter every block's hash and are compared on every hit.
  std::vector<int64_t> extra_keys;
  // Requests that need prompt logprobs must recompute the whole prompt (vLLM does the same).
  bool skip_reading_prefix_cache = false;

  // Hashes of the request's full blocks, in order. Maintained by KvCacheManager (extended as the
  // request grows); kept here so a request waiting for memory is not re-hashed every step and
  // nothing outlives the request.
  std::vector<BlockHash> block_hashes;

  int num_tokens() const { return static_cast<int>(all_token_ids.size()); }
};

}  // namespace pagoda
