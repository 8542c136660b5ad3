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
  Request* r = it->second.get();
  if (r->status == RequestStatus::kRunning) {
    running_.erase(std::ranges::find(running_, r));
  } else {
    waiting_.erase(std::ranges::find(waiting_, r));
  }
  aborted_.push_back(finish(r, RequestStatus::kFinishedAborted));
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

  for (const ScheduledRequest& s : out.scheduled) {
    out.total_num_scheduled_tokens += s.num_new_tokens;
    if (s.samples) ++out.num_sampling;
    out.num_logits_rows += s.num_logits_rows();
  }
  PAGODA_ASSERT(out.num_logits_rows <= max_num_logits_);
  return out;
}

std::optional<RequestStatus> Scheduler::check_stop(const Request& r) const {
  const int32_t last = r.all_token_ids.back();
  if (r.num_output_tokens() >= r.min_tokens) {
    if (!r.ignore_eos && std::ranges::find(r.eos_token_ids, last) != r.eos_token_ids.end())
      return RequestStatus::kFinishedStopped;
    if (std::ranges::find(r.stop_token_ids, last) != r.stop_token_ids.end()) return RequestStatus::kFinishedStopped;
  }
  if (r.num_output_tokens() >= r.max_tokens || r.num_tokens() >= config_.max_model_len)
    return RequestStatus::kFinishedLength;
  return std::nullopt;
}

std::vector<SchedulerRequestOutput> Scheduler::update_from_output(const SchedulerOutput& output,
                                                                  std::span<const int32_t> sampled_token_ids) {
  PAGODA_ASSERT(sampled_token_ids.size() == output.scheduled.size());
  std::vector<SchedulerRequestOutput> outs = take_aborted();
  std::vector<Request*> finished;
  for (size_t i = 0; i < output.scheduled.size(); ++i) {
    const ScheduledRequest& s = output.scheduled[i];
    Request* r = s.request;
    PAGODA_ASSERT(r->status == RequestStatus::kRunning && r->num_computed_tokens == s.num_computed_tokens);
    r->num_computed_tokens += s.num_new_tokens;
    if (s.num_prompt_logprob_rows > 0)
      r->num_prompt_logprobs_done = std::max(r->num_prompt_logprobs_done, s.prompt_logprob_begin + s.num_prompt_logprob_rows);
    if (!s.samples) continue;  // a partial prefill chunk: nothing to sample yet
    PAGODA_ASSERT(r->num_computed_tokens == r->num_tokens());
    const int32_t token = sampled_token_ids[i];
    r->all_token_ids.push_back(token);
    SchedulerRequestOutput o;
    o.request_id = r->request_id;
    o.new_token_ids.push_back(token);
    o.num_cached_tokens = std::max(0, r->num_cached_tokens);
    if (std::optional<RequestStatus> stop = check_stop(*r)) {
      if (*stop == RequestStatus::kFinishedStopped && !r->ignore_eos &&
          std::ranges::find(r->eos_token_ids, token) == r->eos_token_ids.end())
        r->stop_reason = token;
      o.finished = true;
      o.status = *stop;
      o.stop_reason = r->stop_reason;
      r->status = *stop;
      finished.push_back(r);
    }
    outs.push_back(std::move(o));
  }
  if (!finished.empty()) {
    std::erase_if(running_, [](const Request* r) { return r->finished(); });
    for (Request* r : finished) finish(r, r->status);
  }
  return outs;
}

SchedulerRequestOutput Scheduler::finish(Request* r, RequestStatus status) {
  SchedulerRequestOutput o;
  o.request_id = r->request_id;
  o.finished = true;
  o.status = status;
  o.stop_reason = r->stop_reason;
  o.num_cached_tokens = std::max(0, r->num_cached_tokens);
  kv_.free(*r);
  const std::string id = r->request_id;  // erase() must not see a key that it destroys
  requests_.erase(id);

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
  for (const Request* r : running_) {
    s.num_held_slots += static_cast<int64_t>(kv_.block_table(r->request_id).size()) * kv_.block_size();
    s.num_stored_tokens += r->num_computed_tokens;
  }
  return s;
}

}  // namespace pagoda
