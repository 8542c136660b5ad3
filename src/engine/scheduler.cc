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

void Scheduler::preempt(Request* r) {
  kv_.free(*r);
  r->num_computed_tokens = 0;
  r->status = RequestStatus::kPreempted;
  r->num_preemptions += 1;
  ++num_preemptions_;
  waiting_.push_front(r);
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  int budget = config_.max_num_batched_tokens;

  // Running requests, oldest first. A victim is always taken from the back, i.e. among those not
  // yet scheduled this step, or the current request itself.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Request* r = running_[i];
    const int remaining = r->num_tokens() - r->num_computed_tokens;
    PAGODA_ASSERT(remaining > 0);
    const int n = std::min(remaining, budget);
    bool scheduled = true;
    while (!kv_.allocate_slots(*r, n)) {
      Request* victim = running_.back();
      running_.pop_back();
      preempt(victim);
      out.preempted_ids.push_back(victim->request_id);
      if (victim == r) {
        scheduled = false;
        break;
      }
    }
    if (!scheduled) break;  // r was the newest: nothing after it is left to schedule
    out.scheduled.push_back({r, r->num_computed_tokens, n, false, false, n == remaining});
    budget -= n;
    ++i;
  }

  // Waiting requests, unless memory was short this step.
  while (out.preempted_ids.empty() && !waiting_.empty() && budget > 0 &&
         static_cast<int>(running_.size()) < config_.max_num_seqs) {
    auto it = next_waiting();
    Request* r = *it;
    PAGODA_ASSERT(r->num_computed_tokens == 0);
    ComputedBlocks hit = kv_.get_computed_blocks(*r);
    const int remaining = r->num_tokens() - hit.num_computed_tokens;
    const int n = std::min(remaining, budget);
    // Memory short: wait (the policy's head blocks the queue, as in vLLM).
    if (!kv_.allocate_slots(*r, n, hit.num_computed_tokens, hit.blocks)) break;
    waiting_.erase(it);
    const bool resumed = r->status == RequestStatus::kPreempted;
    r->status = RequestStatus::kRunning;
    r->num_computed_tokens = hit.num_computed_tokens;
    if (r->num_cached_tokens < 0) r->num_cached_tokens = hit.num_computed_tokens;
    running_.push_back(r);
    out.scheduled.push_back({r, r->num_computed_tokens, n, true, resumed, n == remaining});
    budget -= n;
  }

  for (const ScheduledRequest& s : out.scheduled) {
    out.total_num_scheduled_tokens += s.num_new_tokens;
    if (s.samples) ++out.num_sampling;
  }
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
  return s;
}

}  // namespace pagoda
