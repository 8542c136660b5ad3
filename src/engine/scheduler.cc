#include "engine/scheduler.h"

#include <algorithm>
#include <utility>

#include "base/error.h"

namespace pagoda {

Scheduler::Scheduler(const SchedulerConfig& config, KvCacheManager& kv_cache) : config_(config), kv_(kv_cache) {
  PAGODA_CHECK(config.max_num_seqs > 0, "--max-num-seqs must be positive (got ", config.max_num_seqs, ")");
  PAGODA_CHECK(config.max_num_batched_tokens > 0, "--max-num-batched-tokens must be positive (got ",
               config.max_num_batched_tokens, ")");
  PAGODA_CHECK(config.max_model_len > 0, "--max-model-len must be positive (got ", config.max_model_len, ")");
  max_num_logits_ = config.max_num_logits > 0 ? config.max_num_logits : config.max_num_seqs;
  PAGODA_CHECK(max_num_logits_ >= std::min(config.max_num_seqs, config.max_num_batched_tokens),
               "max_num_logits (", max_num_logits_, ") must cover one row per scheduled sequence");
  PAGODA_CHECK(config.speculative.num_speculative_tokens >= 0, "num_speculative_tokens must not be negative");
}

void Scheduler::add_request(std::unique_ptr<Request> request) {
  PAGODA_CHECK(request != nullptr, "add_request: null request");
  Request& r = *request;
  PAGODA_CHECK(!requests_.contains(r.request_id), "request id '", r.request_id, "' is already in use");
  PAGODA_CHECK(r.num_tokens() > 0, "request '", r.request_id, "': the prompt is empty");
  PAGODA_CHECK(r.num_tokens() < config_.max_model_len, "This model's maximum context length is ", config_.max_model_len,
               " tokens. However, your request has ", r.num_tokens(), " input tokens.");
  PAGODA_CHECK(r.max_tokens >= 1, "request '", r.request_id, "': max_tokens must be at least 1");
  PAGODA_ASSERT(r.num_computed_tokens == 0 && r.num_prompt_tokens == r.num_tokens());
  r.status = RequestStatus::kWaiting;
  r.arrival_seq = next_arrival_++;
  waiting_.push_back(&r);
  requests_.emplace(r.request_id, std::move(request));
}

const Request* Scheduler::find(const std::string& request_id) const {
  auto it = requests_.find(request_id);
  return it == requests_.end() ? nullptr : it->second.get();
}

bool Scheduler::abort(const std::string& request_id) {
  auto it = requests_.find(request_id);
  if (it == requests_.end()) return false;
  aborted_.push_back(finish(it->second.get(), RequestStatus::kFinishedAborted));
  return true;
}

std::vector<SchedulerRequestOutput> Scheduler::take_aborted() { return std::exchange(aborted_, {}); }

std::deque<Request*>::iterator Scheduler::next_waiting() {
  if (config_.policy == SchedulingPolicy::kFcfs) return waiting_.begin();
  return std::ranges::min_element(waiting_, [](const Request* a, const Request* b) {
    return a->priority != b->priority ? a->priority < b->priority : a->arrival_seq < b->arrival_seq;
  });
}

size_t Scheduler::pick_victim() const {
  PAGODA_ASSERT(!running_.empty());
  if (config_.policy == SchedulingPolicy::kFcfs) return running_.size() - 1;  // the newest
  // The lowest priority (largest value), the latest arrival among equals.
  auto it = std::ranges::max_element(running_, [](const Request* a, const Request* b) {
    return a->priority != b->priority ? a->priority < b->priority : a->arrival_seq < b->arrival_seq;
  });
  return static_cast<size_t>(it - running_.begin());
}

void Scheduler::preempt(Request* r, bool was_scheduled) {
  if (was_scheduled) {
    kv_.free_unrun(*r);
  } else {
    kv_.free(*r);
  }
  r->num_computed_tokens = 0;
  r->spec_token_ids.clear();
  r->status = RequestStatus::kPreempted;
  r->num_preemptions += 1;
  ++num_preemptions_;
  waiting_.push_front(r);
}

bool Scheduler::fit_logits_rows(ScheduledRequest& s, int rows_left) const {
  const Request& r = *s.request;
  const int start = s.num_computed_tokens;
  const int remaining = r.num_tokens() - start;
  auto plan = [&](int n) {
    s.num_new_tokens = n;
    s.samples = n == remaining;
    s.prompt_logprob_begin = start;
    s.num_prompt_logprob_rows = 0;
    if (r.wants_prompt_logprobs) {
      s.prompt_logprob_begin = std::max(start, r.num_prompt_logprobs_done);
      s.num_prompt_logprob_rows = std::max(0, std::min(start + n, r.num_prompt_tokens - 1) - s.prompt_logprob_begin);
    }
  };
  plan(s.num_new_tokens);
  if (s.num_logits_rows() <= rows_left) return true;
  if (!r.wants_prompt_logprobs) return false;  // it samples, and no row is left
  // Keep the prompt positions that still have rows (recomputed positions need none); the cut
  // chunk ends inside the prompt, so it does not sample.
  const int n = std::min(s.num_new_tokens, s.prompt_logprob_begin - start + rows_left);
  if (n <= 0) return false;
  plan(n);
  PAGODA_ASSERT(!s.samples && s.num_logits_rows() <= rows_left);
  return true;
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  int budget = config_.max_num_batched_tokens;
  int rows_left = max_num_logits_;

  // Running requests, oldest first.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Request* r = running_[i];
    if (r->num_output_placeholders > 0 && ends_by_length(*r)) {  // its last token is in flight
      ++i;
      continue;
    }
    const int remaining = r->num_tokens() - r->num_computed_tokens;
    PAGODA_ASSERT(remaining > 0);
    ScheduledRequest s;
    s.request = r;
    s.num_computed_tokens = r->num_computed_tokens;
    s.num_new_tokens = std::min(remaining, budget);
    // Every running request after this one may need a row to sample: prompt logprobs do not
    // take those.
    const int reserved = r->wants_prompt_logprobs ? static_cast<int>(running_.size() - i - 1) : 0;
    if (!fit_logits_rows(s, rows_left - reserved)) {  // no logits row left for it this step
      ++i;
      continue;
    }
    // Speculative decoding: a decoding request verifies its drafts along with its next token,
    // leaving a token and a logits row for every running request after it.
    if (s.samples && remaining == 1 && !r->spec_token_ids.empty() && r->num_output_placeholders == 0) {
      const int later = static_cast<int>(running_.size() - i - 1);
      const int d = num_drafts_allowed(*r, budget - later, rows_left - later);
      if (d > 0) {
        s.spec_token_ids.assign(r->spec_token_ids.begin(), r->spec_token_ids.begin() + d);
        s.num_new_tokens += d;
      }
    }
    bool scheduled = true;
    while (!kv_.allocate_slots(*r, s.num_new_tokens)) {
      const size_t v = pick_victim();
      Request* victim = running_[v];
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(v));
      if (v < i) --i;
      // Scheduled earlier in this step (the priority policy): take it out of the step again.
      auto e = std::ranges::find_if(out.scheduled, [&](const ScheduledRequest& x) { return x.request == victim; });
      const bool victim_scheduled = e != out.scheduled.end();
      if (victim_scheduled) {
        budget += e->num_new_tokens;
        rows_left += e->num_logits_rows();
        out.scheduled.erase(e);
      }
      preempt(victim, victim_scheduled);
      out.preempted_ids.push_back(victim->request_id);
      if (victim == r) {
        scheduled = false;
        break;
      }
    }
    if (!scheduled) break;  // as vLLM: the step goes ahead with what is scheduled so far
    out.scheduled.push_back(s);
    budget -= s.num_new_tokens;
    rows_left -= s.num_logits_rows();
    ++i;
  }

  // Waiting requests, unless memory was short this step.
  while (out.preempted_ids.empty() && !waiting_.empty() && budget > 0 &&
         static_cast<int>(running_.size()) < config_.max_num_seqs) {
    auto it = next_waiting();
    Request* r = *it;
    PAGODA_ASSERT(r->num_computed_tokens == 0);
    ComputedBlocks hit = kv_.get_computed_blocks(*r);
    ScheduledRequest s;
    s.request = r;
    s.num_computed_tokens = hit.num_computed_tokens;
    s.num_new_tokens = std::min(r->num_tokens() - hit.num_computed_tokens, budget);
    s.is_new = true;
    s.resumed = r->status == RequestStatus::kPreempted;
    if (!fit_logits_rows(s, rows_left)) break;
    // Memory short: wait (the policy's head blocks the queue, as in vLLM).
    if (!kv_.allocate_slots(*r, s.num_new_tokens, hit.num_computed_tokens, hit.blocks)) break;
    waiting_.erase(it);
    r->status = RequestStatus::kRunning;
    r->num_computed_tokens = hit.num_computed_tokens;
    if (r->num_cached_tokens < 0) r->num_cached_tokens = hit.num_computed_tokens;
    running_.push_back(r);
    out.scheduled.push_back(s);
    budget -= s.num_new_tokens;
    rows_left -= s.num_logits_rows();
  }

  // Advance every scheduled request as if the step had run (see the header): the next step can
  // be scheduled before this one's tokens are known.
  for (const ScheduledRequest& s : out.scheduled) {
    out.total_num_scheduled_tokens += s.num_new_tokens;
    if (s.samples) ++out.num_sampling;
    out.num_logits_rows += s.num_logits_rows();
    out.num_spec_tokens += s.num_spec();
    Request* r = s.request;
    // Draft tokens are not counted as computed until they are accepted (update_from_output).
    r->num_computed_tokens = s.num_computed_tokens + s.num_new_tokens - s.num_spec();
    r->spec_token_ids.clear();  // consumed (a running request left out this step keeps its drafts)
    if (s.num_prompt_logprob_rows > 0)
      r->num_prompt_logprobs_done = std::max(r->num_prompt_logprobs_done, s.prompt_logprob_begin + s.num_prompt_logprob_rows);
    if (s.samples) {
      PAGODA_ASSERT(r->num_computed_tokens == r->num_tokens());
      r->all_token_ids.push_back(kPlaceholderToken);
      ++r->num_output_placeholders;
    }
  }
  PAGODA_ASSERT(out.num_logits_rows <= max_num_logits_);
  if (!out.scheduled.empty()) out.step_id = ++num_scheduled_steps_;
  return out;
}

std::optional<RequestStatus> Scheduler::check_stop(const Request& r, int pos) const {
  const int32_t token = r.all_token_ids[static_cast<size_t>(pos)];
  const int num_output = pos + 1 - r.num_prompt_tokens;
  if (num_output >= r.min_tokens) {
    if (!r.ignore_eos && std::ranges::find(r.eos_token_ids, token) != r.eos_token_ids.end())
      return RequestStatus::kFinishedStopped;
    if (std::ranges::find(r.stop_token_ids, token) != r.stop_token_ids.end()) return RequestStatus::kFinishedStopped;
  }
  if (num_output >= r.max_tokens || pos + 1 >= config_.max_model_len) return RequestStatus::kFinishedLength;
  return std::nullopt;
}

bool Scheduler::ends_by_length(const Request& r) const {
  return r.num_output_tokens() >= r.max_tokens || r.num_tokens() >= config_.max_model_len;
}

int Scheduler::num_drafts_allowed(const Request& r, int budget, int rows_left) const {
  // The step emits up to drafts + 1 tokens: all of them must fit max_tokens and max_model_len.
  int d = std::min(static_cast<int>(r.spec_token_ids.size()), config_.speculative.num_speculative_tokens);
  d = std::min({d, budget - 1, rows_left - 1, r.max_tokens - r.num_output_tokens() - 1,
                config_.max_model_len - r.num_tokens() - 1});
  return std::max(d, 0);
}

std::vector<SchedulerRequestOutput> Scheduler::update_from_output(const SchedulerOutput& output,
                                                                  std::span<const int32_t> sampled_token_ids,
                                                                  std::span<const int32_t> num_accepted) {
  PAGODA_ASSERT(sampled_token_ids.size() == output.scheduled.size());
  PAGODA_ASSERT(num_accepted.empty() || num_accepted.size() == output.scheduled.size());
  const SpeculativeConfig& spec = config_.speculative;
  PAGODA_ASSERT(output.step_id == num_updated_steps_ + 1);
  std::vector<SchedulerRequestOutput> outs = take_aborted();
  for (size_t i = 0; i < output.scheduled.size(); ++i) {
    const ScheduledRequest& s = output.scheduled[i];
    Request* r = s.request;
    // Finished (aborted, or stopped by an earlier step's token) after this step was scheduled:
    // what the step computed for it is dropped.
    if (r->finished() || !s.samples) continue;
    const int pos = s.num_computed_tokens + s.num_new_tokens - s.num_spec();
    PAGODA_ASSERT(r->num_output_placeholders > 0 && pos < r->num_tokens() &&
                  r->all_token_ids[static_cast<size_t>(pos)] == kPlaceholderToken);
    // The accepted drafts, then the sampled token.
    const int accepted = num_accepted.empty() ? 0 : num_accepted[i];
    PAGODA_ASSERT(accepted >= 0 && accepted <= s.num_spec());
    PAGODA_ASSERT(s.num_spec() == 0 || (r->num_output_placeholders == 1 && pos + 1 == r->num_tokens()));
    if (s.num_spec() > 0) {
      const int max_drafts = spec.num_speculative_tokens;
      const int budget = r->num_spec_budget < 0 ? max_drafts : r->num_spec_budget;
      r->num_spec_budget = accepted == s.num_spec() ? std::min(max_drafts, budget + 2) : std::max(1, budget - 1);
      spec_stats_.num_drafts += 1;
      spec_stats_.num_draft_tokens += s.num_spec();
      spec_stats_.num_accepted_tokens += accepted;
      if (spec_stats_.accepted_per_pos.size() < static_cast<size_t>(s.num_spec()))
        spec_stats_.accepted_per_pos.resize(static_cast<size_t>(s.num_spec()), 0);
      for (int k = 0; k < accepted; ++k) spec_stats_.accepted_per_pos[static_cast<size_t>(k)] += 1;
    }
    --r->num_output_placeholders;
    SchedulerRequestOutput o;
    o.request_id = r->request_id;
    o.num_cached_tokens = std::max(0, r->num_cached_tokens);
    for (int k = 0; k <= accepted; ++k) {
      const int32_t token = k < accepted ? s.spec_token_ids[static_cast<size_t>(k)] : sampled_token_ids[i];
      const int at = pos + k;
      if (k == 0) {
        r->all_token_ids[static_cast<size_t>(at)] = token;
      } else {  // an accepted draft: its KV was written by this step
        r->all_token_ids.push_back(token);
        r->num_computed_tokens += 1;
      }
      o.new_token_ids.push_back(token);
      if (std::optional<RequestStatus> stop = check_stop(*r, at)) {
        // A stop token (not EOS, which has no stop_reason; with ignore_eos every stop is a stop token).
        const bool eos = !r->ignore_eos && std::ranges::find(r->eos_token_ids, token) != r->eos_token_ids.end();
        if (*stop == RequestStatus::kFinishedStopped && !eos) r->stop_reason = token;
        // A later step may already have scheduled the next token: it is not part of the output.
        r->all_token_ids.resize(static_cast<size_t>(at + 1));
        r->num_output_placeholders = 0;
        SchedulerRequestOutput f = finish(r, *stop);
        o.finished = true;
        o.status = f.status;
        o.stop_reason = f.stop_reason;
        o.scheduled_time = f.scheduled_time;
        o.first_token_time = f.first_token_time;
        break;
      }
    }
    // The drafts for its next step.
    if (!o.finished && spec.enabled() && r->num_output_placeholders == 0)
      propose_ngram(r->all_token_ids, spec.prompt_lookup_min, spec.prompt_lookup_max,
                    r->num_spec_budget < 0 ? spec.num_speculative_tokens : r->num_spec_budget, r->spec_token_ids);
    outs.push_back(std::move(o));
  }
  num_updated_steps_ = output.step_id;
  std::erase_if(retired_, [&](const auto& e) { return e.first <= num_updated_steps_; });
  return outs;
}

SchedulerRequestOutput Scheduler::finish(Request* r, RequestStatus status) {
  SchedulerRequestOutput o;
  o.request_id = r->request_id;
  o.finished = true;
  o.status = status;
  o.stop_reason = r->stop_reason;
  o.num_cached_tokens = std::max(0, r->num_cached_tokens);
  o.scheduled_time = r->scheduled_time;
  o.first_token_time = r->first_token_time;
  if (r->status == RequestStatus::kRunning) {
    running_.erase(std::ranges::find(running_, r));
  } else {
    auto w = std::ranges::find(waiting_, r);
    if (w != waiting_.end()) waiting_.erase(w);
  }
  r->status = status;
  kv_.free(*r);
  auto it = requests_.find(r->request_id);
  PAGODA_ASSERT(it != requests_.end());
  std::unique_ptr<Request> owned = std::move(it->second);
  requests_.erase(it);
  // Steps scheduled but not yet updated may still refer to it.
  if (num_scheduled_steps_ > num_updated_steps_) retired_.emplace_back(num_scheduled_steps_, std::move(owned));
  return o;
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.num_running = num_running();
  s.num_waiting = num_waiting();
  s.num_preemptions = num_preemptions_;
  s.kv_cache_usage = kv_.usage();
  s.num_free_blocks = kv_.num_free_blocks();
  s.num_blocks = kv_.num_blocks();
  s.prefix_cache = kv_.prefix_cache_stats();
  s.spec_decoding = spec_stats_;
  for (const Request* r : running_) {
    s.num_held_slots += static_cast<int64_t>(kv_.block_table(r->request_id).size()) * kv_.block_size();
    s.num_stored_tokens += r->num_computed_tokens;
  }
  return s;
}

}  // namespace pagoda
