// The scheduler (vLLM V1's Scheduler): continuous batching under a token budget.
//
// There are no prefill and decode phases: every request has num_computed_tokens (tokens whose
// KV is cached) and num_tokens (prompt + output so far), and each step hands out at most
// max_num_batched_tokens tokens across requests to close that gap. Running requests go first, in
// the order they were admitted: a decoding request takes 1 token, a request mid-prefill a chunk
// of min(remaining, budget) (chunked prefill is always on, so batches mix prefill and decode).
// Then waiting requests are admitted in policy order (FCFS, or lowest priority value first),
// within max_num_seqs, starting from their longest prefix-cache hit.
//
// Out of KV blocks for a running request → the newest running request is preempted: its blocks
// are freed, num_computed_tokens goes back to 0 and it rejoins the waiting queue at the front, to
// be recomputed (its prompt and outputs, usually largely from the prefix cache) when memory frees
// up. No waiting request is admitted in a step that preempted. Under the priority policy the
// victim is the running request with the largest priority value (latest arrival on ties), as in
// vLLM; if it was already scheduled this step it is taken out of the step again.
//
// Logits rows are a budget too (max_num_logits): a request that samples needs one row, and a
// request with prompt logprobs one more per prompt position in its chunk, so its prefill chunk
// is cut to the rows left.
//
// Protocol, once per step: schedule() → run the model on the SchedulerOutput → sample the
// requests whose `samples` is set → update_from_output(). add_request() and abort() go between
// steps (never inside schedule() or update_from_output()).
//
// Async scheduling (vLLM's --async-scheduling): schedule() already advances each scheduled
// request as if its step had run — num_computed_tokens moves past the chunk and a request that
// samples gets a kPlaceholderToken for the token it will draw — so the next step can be
// scheduled while this one is still running; update_from_output() then only puts the sampled
// tokens in place of the placeholders and applies the stop conditions. At most one step may be
// outstanding when schedule() is called (its placeholders are fed on the device by the model
// runner). A request that a stop condition ends while a later step already covers it simply has
// that step's work dropped (its blocks are freed at once: the later step only writes KV of its
// own, and the device runs steps in order). A request whose outstanding token will certainly end
// it (max_tokens, max_model_len) is not scheduled again.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/kv_cache_manager.h"
#include "engine/request.h"
#include "engine/speculative.h"

namespace pagoda {

enum class SchedulingPolicy { kFcfs, kPriority };

struct SchedulerConfig {
  int max_num_seqs = 256;              // running requests at most
  int max_num_batched_tokens = 2048;   // tokens per step at most
  int max_model_len = 4096;            // prompt + output tokens at most
  SchedulingPolicy policy = SchedulingPolicy::kFcfs;
  // Logits rows per step at most (0: max_num_seqs). Must be at least min(max_num_seqs,
  // max_num_batched_tokens), so that every running request can sample.
  int max_num_logits = 0;
  // Speculative decoding (n-gram drafts): proposed after each step for every decoding request,
  // scheduled with its next token (as many as the token and logits budgets, max_tokens and
  // max_model_len leave room for).
  SpeculativeConfig speculative;
};

// One request's share of a step.
struct ScheduledRequest {
  Request* request = nullptr;
  int num_computed_tokens = 0;  // before this step: the chunk starts at this position
  int num_new_tokens = 0;       // tokens [num_computed_tokens, + num_new_tokens) run this step
  // First step since admission (new, or resumed after preemption): the model runner sets up
  // per-request state.
  bool is_new = false;
  bool resumed = false;  // is_new after a preemption
  // The chunk ends at the last known token, so this step yields logits to sample from (a partial
  // prefill chunk does not).
  bool samples = false;
  // Prompt logprobs computed this step: positions [prompt_logprob_begin, + num_prompt_logprob_rows)
  // each give one logits row (before the sampling row, if any).
  int prompt_logprob_begin = 0;
  int num_prompt_logprob_rows = 0;
  // Speculative decoding: draft tokens verified this step, at positions after the request's
  // known tokens (num_new_tokens counts them); each gives one more sampling row.
  std::vector<int32_t> spec_token_ids;
  int num_spec() const { return static_cast<int>(spec_token_ids.size()); }
  int num_logits_rows() const { return num_prompt_logprob_rows + (samples ? 1 + num_spec() : 0); }
};

struct SchedulerOutput {
  int64_t step_id = 0;  // 1, 2, ... in schedule() order
  std::vector<ScheduledRequest> scheduled;  // running requests first, then newly admitted ones
  int total_num_scheduled_tokens = 0;
  int num_sampling = 0;                     // entries with samples set
  int num_spec_tokens = 0;                  // draft tokens scheduled (speculative decoding)
  int num_logits_rows = 0;                  // sampling rows + prompt-logprob rows
  std::vector<std::string> preempted_ids;   // preempted during this schedule() call
  bool empty() const { return scheduled.empty(); }
};

// What one step did to one request (vLLM's EngineCoreOutput).
struct SchedulerRequestOutput {
  std::string request_id;
  std::vector<int32_t> new_token_ids;  // 0 or 1 token (1 + accepted drafts with speculative decoding)
  bool finished = false;
  RequestStatus status = RequestStatus::kRunning;
  std::optional<int32_t> stop_reason;
  int num_cached_tokens = 0;  // prompt tokens that came from the prefix cache
  // Finished outputs: the request's Request::scheduled_time and first_token_time (the Request
  // itself may be gone by the time the engine reads the output).
  std::chrono::steady_clock::time_point scheduled_time{}, first_token_time{};
};

// Speculative decoding since start (vLLM's spec_decode_* counters).
struct SpecDecodingStats {
  int64_t num_drafts = 0;           // request-steps that verified at least one draft token
  int64_t num_draft_tokens = 0;     // draft tokens verified
  int64_t num_accepted_tokens = 0;  // of those, accepted
  std::vector<int64_t> accepted_per_pos;  // [k]: drafts accepted at position k of their step
};

struct SchedulerStats {
  int num_running = 0;
  int num_waiting = 0;
  int64_t num_preemptions = 0;  // since start
  double kv_cache_usage = 0.0;  // fraction of blocks held by requests
  int num_free_blocks = 0;
  int num_blocks = 0;
  // KV occupancy: token slots in the blocks that requests hold, and tokens whose KV they hold
  // (summed over requests, so a block shared by two requests counts twice in both). The gap is
  // the memory lost to partly filled last blocks.
  int64_t num_held_slots = 0;
  int64_t num_stored_tokens = 0;
  PrefixCacheStats prefix_cache;
  SpecDecodingStats spec_decoding;
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, KvCacheManager& kv_cache);

  // Takes ownership. The request must be new (unique id, num_computed_tokens 0), non-empty, and
  // fit max_model_len; its stop conditions must be resolved. Throws pagoda::Error otherwise.
  void add_request(std::unique_ptr<Request> request);

  // Finishes a waiting or running request at once (its blocks are freed now); its final output
  // (status kFinishedAborted) comes from the next update_from_output() or take_aborted().
  // Unknown or already finished ids are ignored; returns whether the request was found.
  bool abort(const std::string& request_id);

  SchedulerOutput schedule();

  // sampled_token_ids[i] is the token sampled for output.scheduled[i] (ignored where samples is
  // false); with speculative decoding num_accepted[i] (empty: all 0) of its draft tokens were
  // accepted before it, so the request gains those drafts and then sampled_token_ids[i]. Puts the
  // tokens in place of their placeholders, applies the stop conditions (token by token) and
  // frees finished requests. Entries of requests that finished after the step was scheduled are
  // ignored. Steps are updated in the order they were scheduled. Returns one entry per request
  // that got a token or finished (aborted requests included).
  std::vector<SchedulerRequestOutput> update_from_output(const SchedulerOutput& output,
                                                         std::span<const int32_t> sampled_token_ids,
                                                         std::span<const int32_t> num_accepted = {});

  // Outputs of requests aborted since the last update_from_output() (for callers that have no
  // step to run).
  std::vector<SchedulerRequestOutput> take_aborted();

  const Request* find(const std::string& request_id) const;
  bool has_unfinished_requests() const { return !waiting_.empty() || !running_.empty(); }
  bool has_pending_outputs() const { return !aborted_.empty(); }
  int num_running() const { return static_cast<int>(running_.size()); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int64_t num_preemptions() const { return num_preemptions_; }
  SchedulerStats stats() const;
  const SchedulerConfig& config() const { return config_; }
  const KvCacheManager& kv_cache() const { return kv_; }

 private:
  // The next waiting request to admit (policy order); waiting_ must not be empty.
  std::deque<Request*>::iterator next_waiting();
  // Index in running_ of the request to preempt when memory is short (policy dependent).
  size_t pick_victim() const;
  // Frees the request's blocks and queues it for recomputation; was_scheduled: it was scheduled
  // earlier in this step (and has been taken out of the step again).
  void preempt(Request* request, bool was_scheduled = false);
  // Settles samples and the prompt-logprob rows of s (num_new_tokens set to the token budget's
  // chunk), cutting a prompt-logprob chunk to fit rows_left logits rows; false if nothing fits.
  bool fit_logits_rows(ScheduledRequest& s, int rows_left) const;
  // Frees the request's blocks and forgets it (the object lives on while a step scheduled
  // before may still refer to it); returns its final output.
  SchedulerRequestOutput finish(Request* request, RequestStatus status);
  // Applies max_tokens / max_model_len / EOS / stop tokens to the token at position pos.
  std::optional<RequestStatus> check_stop(const Request& request, int pos) const;
  // True when the request's outstanding tokens certainly end it (max_tokens, max_model_len).
  bool ends_by_length(const Request& request) const;
  // Draft tokens the running decode request r may verify this step (its proposal cut to the
  // budgets, max_tokens and max_model_len).
  int num_drafts_allowed(const Request& r, int budget, int rows_left) const;

  SchedulerConfig config_;
  KvCacheManager& kv_;
  std::unordered_map<std::string, std::unique_ptr<Request>> requests_;  // every unfinished request
  std::deque<Request*> waiting_;
  std::vector<Request*> running_;  // admission order: the back is the newest
  std::vector<SchedulerRequestOutput> aborted_;
  // Finished requests that a scheduled step not yet updated may still point to, each with the
  // last step_id scheduled when it finished; freed once that step has been updated.
  std::vector<std::pair<int64_t, std::unique_ptr<Request>>> retired_;
  int64_t num_scheduled_steps_ = 0;
  int64_t num_updated_steps_ = 0;
  int64_t next_arrival_ = 0;
  int64_t num_preemptions_ = 0;
  int max_num_logits_ = 0;
  SpecDecodingStats spec_stats_;
  std::vector<int32_t> draft_scratch_;
};

}  // namespace pagoda
