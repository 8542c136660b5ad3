// The request state that the KV cache manager and the scheduler read: a slice of vLLM's Request.
// Token ids are the prompt followed by every token generated so far. Sampling itself (the
// Sampler and its random state) lives in the engine; the scheduler only needs the stop
// conditions, resolved here from the SamplingParams when the request is added.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/block_hash.h"

namespace pagoda {

// Stands in all_token_ids for a token that a step in flight is sampling (async scheduling): the
// scheduler appends one when it schedules a sampling step and the step's output replaces it.
inline constexpr int32_t kPlaceholderToken = -1;

enum class RequestStatus {
  kWaiting,          // never scheduled yet
  kRunning,
  kPreempted,        // back in the waiting queue; recomputes from scratch (or from cache hits)
  kFinishedStopped,  // EOS or a stop token
  kFinishedLength,   // max_tokens or max_model_len
  kFinishedAborted,
};

inline bool is_finished(RequestStatus s) { return s >= RequestStatus::kFinishedStopped; }
// The OpenAI finish_reason of a finished status ("stop", "length", "abort"); "" while unfinished.
inline const char* finish_reason(RequestStatus s) {
  switch (s) {
    case RequestStatus::kFinishedStopped: return "stop";
    case RequestStatus::kFinishedLength: return "length";
    case RequestStatus::kFinishedAborted: return "abort";
    default: return "";
  }
}

struct Request {
  std::string request_id;
  std::vector<int32_t> all_token_ids;  // prompt + output so far (the last ones may be placeholders)
  // Trailing entries of all_token_ids that are kPlaceholderToken: sampled by steps that have
  // been scheduled but whose output has not been processed yet (at most one per step in flight).
  int num_output_placeholders = 0;
  int num_prompt_tokens = 0;
  // Tokens whose KV is in the cache (prefix hits + computed chunks); the scheduler advances it
  // after each step and resets it to 0 on preemption.
  int num_computed_tokens = 0;
  // Keys that make equal token ids mean different KV (LoRA id, multimodal input hashes, a cache
  // salt). They enter every block's hash and are compared on every hit.
  std::vector<int64_t> extra_keys;
  // Requests that need prompt logprobs must recompute the whole prompt (vLLM does the same).
  bool skip_reading_prefix_cache = false;
  // Prompt logprobs: every prompt position p < num_prompt_tokens - 1 yields the logprobs of
  // prompt token p + 1 once. Positions [0, num_prompt_logprobs_done) have been delivered (they
  // are not delivered again when a preempted request recomputes them).
  bool wants_prompt_logprobs = false;
  int num_prompt_logprobs_done = 0;
  // Speculative decoding: draft tokens proposed for the request's next step (the scheduler
  // consumes them when it schedules that step).
  std::vector<int32_t> spec_token_ids;
  // How many drafts it proposes now (-1: num_speculative_tokens): HF's "heuristic" schedule,
  // two more after a step that accepted every draft, one fewer (at least one) after a rejection,
  // so that text that does not repeat costs one draft token per step, not k.
  int num_spec_budget = -1;

  // Hashes of the request's full blocks, in order. Maintained by KvCacheManager (extended as the
  // request grows); kept here so a request waiting for memory is not re-hashed every step and
  // nothing outlives the request.
  std::vector<BlockHash> block_hashes;

  // ---- scheduling (owned by the Scheduler) -----------------------------------------------
  RequestStatus status = RequestStatus::kWaiting;
  int priority = 0;          // priority policy: lower first (vLLM's convention)
  int64_t arrival_seq = 0;   // order of arrival, assigned by the scheduler; breaks ties
  int num_preemptions = 0;
  // Prompt tokens found in the prefix cache when the request was first scheduled (-1: not yet).
  int num_cached_tokens = -1;

  // ---- timing (EngineCore, for the request-level histograms; a default time_point: not yet) --
  std::chrono::steady_clock::time_point arrival_time{};     // handed to the engine
  std::chrono::steady_clock::time_point scheduled_time{};   // first scheduled (kept over preemptions)
  std::chrono::steady_clock::time_point first_token_time{};  // first output token sampled

  // ---- stop conditions (resolved from SamplingParams by the engine) ------------------------
  int max_tokens = 16;  // output tokens; the engine caps it at max_model_len - prompt length
  int min_tokens = 0;   // EOS and stop tokens do not stop the request before this many
  bool ignore_eos = false;
  std::vector<int32_t> eos_token_ids;
  std::vector<int32_t> stop_token_ids;
  std::optional<int32_t> stop_reason;  // the stop token that finished it (EOS gives none)

  int num_tokens() const { return static_cast<int>(all_token_ids.size()); }
  int num_output_tokens() const { return num_tokens() - num_prompt_tokens; }
  // Tokens whose ids are known (placeholders excluded): what block hashes may cover.
  int num_known_tokens() const { return num_tokens() - num_output_placeholders; }
  bool finished() const { return is_finished(status); }
};

}  // namespace pagoda
