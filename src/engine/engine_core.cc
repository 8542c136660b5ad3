#include "engine/engine_core.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <utility>

#include "base/error.h"
#include "base/log.h"

namespace pagoda {
namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

constexpr size_t kCpuDefaultKvBytes = size_t{4} << 30;
// Left free on a GPU besides the utilization margin: cuBLASLt plans, CUDA graphs, the CUDA
// context's own growth.
constexpr size_t kGpuReserveBytes = size_t{512} << 20;

EngineConfig resolved(EngineConfig c, const CausalLM& model, Backend& backend) {
  const ModelConfig& mc = model.config();
  if (c.max_model_len <= 0) c.max_model_len = static_cast<int>(mc.max_position_embeddings);
  PAGODA_CHECK(!c.speculative.enabled() || model.num_state_slots() == 0, "--speculative-config: ", mc.model_type,
               " has linear-attention layers whose recurrent state cannot step back over rejected draft tokens; "
               "speculative decoding is not supported for it");
  PAGODA_CHECK(c.max_model_len > 0, "--max-model-len must be positive");
  PAGODA_CHECK(c.block_size > 0, "--block-size must be positive (got ", c.block_size, ")");
  if (model.num_state_slots() > 0 && c.enable_prefix_caching) {
    // A cached prefix would resume the linear-attention layers from a state that was never
    // stored for it; recomputing the prompt is always right.
    log_info("prefix caching is off: ", mc.model_type,
                    " has linear-attention layers whose recurrent state is not cached per block");
    c.enable_prefix_caching = false;
  }
  // Hybrid models: the recurrent-state pool (one slot per sequence that can run at once) is part
  // of the KV cache memory, as in vLLM; the paged KV blocks get what is left.
  const size_t state_bytes = static_cast<size_t>(model.num_state_slots()) * model.state_bytes_per_slot();
  const auto gib = [](size_t bytes) { return static_cast<double>(bytes) / static_cast<double>(size_t{1} << 30); };
  if (c.num_kv_blocks <= 0 && c.kv_cache_memory_bytes == 0) {
    size_t free_bytes = 0, total_bytes = 0;
    if (backend.memory_info(&free_bytes, &total_bytes)) {
      PAGODA_CHECK(c.gpu_memory_utilization > 0 && c.gpu_memory_utilization <= 1,
                   "--gpu-memory-utilization must be in (0, 1], got ", c.gpu_memory_utilization);
      const size_t used = total_bytes - free_bytes;  // weights + workspaces (+ anything else on the GPU)
      const auto allowed = static_cast<size_t>(c.gpu_memory_utilization * static_cast<double>(total_bytes));
      PAGODA_CHECK(allowed > used + kGpuReserveBytes, "--gpu-memory-utilization ", c.gpu_memory_utilization,
                   " allows ", gib(allowed), " GiB of the GPU's ", gib(total_bytes), " GiB, but ", gib(used),
                   " GiB are already in use after loading the model (+ ", gib(kGpuReserveBytes),
                   " GiB reserve): no room for a KV cache; raise --gpu-memory-utilization or lower "
                   "--max-num-batched-tokens / --max-num-seqs");
      // The recurrent-state pool of hybrid models is already allocated (in `used`); it is
      // subtracted from the budget again below, so add it back here.
      c.kv_cache_memory_bytes = allowed - used - kGpuReserveBytes + state_bytes;
      log_info("GPU memory: ", gib(total_bytes), " GiB total, ", gib(used), " GiB in use after loading, KV cache ",
               gib(c.kv_cache_memory_bytes - state_bytes), " GiB (--gpu-memory-utilization ", c.gpu_memory_utilization, ")");
    } else {
      c.kv_cache_memory_bytes = kCpuDefaultKvBytes;
    }
  }
  if (c.num_kv_blocks <= 0) {
    const size_t per_block = ModelRunner::kv_bytes_per_block(model, c.block_size, c.kv_cache_dtype);
    PAGODA_CHECK(per_block > 0, "the model has no paged attention layers to size a KV cache for");
    PAGODA_CHECK(state_bytes < c.kv_cache_memory_bytes, "--kv-cache-memory ", gib(c.kv_cache_memory_bytes),
                 " GiB is too small: the recurrent state of ", model.num_state_slots(), " sequences (--max-num-seqs, ",
                 gib(model.state_bytes_per_slot()) * 1024.0, " MiB each) alone takes ", gib(state_bytes),
                 " GiB; raise --kv-cache-memory or lower --max-num-seqs");
    c.num_kv_blocks =
        static_cast<int>(std::min<size_t>((c.kv_cache_memory_bytes - state_bytes) / per_block, size_t{1} << 30));
  }
  if (state_bytes > 0)
    log_info("recurrent-state pool: ", model.num_state_slots(), " slots x ", gib(model.state_bytes_per_slot()) * 1024.0,
             " MiB = ", gib(state_bytes), " GiB; paged KV: ", c.num_kv_blocks, " blocks");
  // One request of max_model_len tokens must fit, or it would preempt itself forever.
  const int64_t needed = (int64_t{c.max_model_len} + c.block_size - 1) / c.block_size;
  PAGODA_CHECK(c.num_kv_blocks >= needed, "the KV cache holds ", c.num_kv_blocks, " blocks of ", c.block_size,
               " tokens, fewer than the ", needed, " that one sequence of --max-model-len ", c.max_model_len,
               " needs; raise --kv-cache-memory or lower --max-model-len",
               state_bytes > 0 ? " (the recurrent-state pool of --max-num-seqs sequences is counted in --kv-cache-memory)"
                               : "");
  if (c.eos_token_ids.empty())
    for (int64_t id : mc.eos_token_ids) c.eos_token_ids.push_back(static_cast<int32_t>(id));
  return c;
}

}  // namespace

ModelLoadOptions engine_load_options(const EngineConfig& config) {
  ModelLoadOptions o;
  o.max_num_tokens = config.max_num_batched_tokens;
  // One row per sequence, and one more per draft token with speculative decoding.
  const int64_t rows = int64_t{config.max_num_seqs} * (1 + std::max(0, config.speculative.num_speculative_tokens));
  o.max_num_logits = static_cast<int>(std::min<int64_t>(rows, config.max_num_batched_tokens));
  o.num_state_slots = config.max_num_seqs;  // hybrid models: one recurrent-state slot per sequence
  o.quantization = config.quantization;
  return o;
}

EngineCore::EngineCore(CausalLM& model, Backend& backend, const EngineConfig& config)
    : config_(resolved(config, model, backend)) {
  KvCacheConfig kc;
  kc.num_blocks = config_.num_kv_blocks;
  kc.groups = {KvCacheSpec{KvCacheKind::kFullAttention, config_.block_size, {}}};
  kc.enable_prefix_caching = config_.enable_prefix_caching;
  kc.num_state_slots = model.num_state_slots();
  kv_ = std::make_unique<KvCacheManager>(std::move(kc));
  SchedulerConfig sc;
  sc.max_num_seqs = config_.max_num_seqs;
  sc.max_num_batched_tokens = config_.max_num_batched_tokens;
  sc.max_model_len = config_.max_model_len;
  sc.policy = config_.policy;
  sc.max_num_logits = engine_load_options(config_).max_num_logits;
  sc.speculative = config_.speculative;
  scheduler_ = std::make_unique<Scheduler>(sc, *kv_);
  ModelRunnerConfig rc;
  rc.max_num_batched_tokens = config_.max_num_batched_tokens;
  rc.max_num_seqs = config_.max_num_seqs;
  rc.max_model_len = config_.max_model_len;
  rc.block_size = config_.block_size;
  rc.num_kv_blocks = config_.num_kv_blocks;
  rc.kv_cache_dtype = config_.kv_cache_dtype;
  rc.max_num_logits = sc.max_num_logits;
  rc.graphs = config_.cuda_graphs;
  rc.max_capture_size = config_.max_cudagraph_capture_size;
  runner_ = std::make_unique<ModelRunner>(model, backend, rc);
  if (config_.graphs_at_start && backend.has_graphs() && !runner_->capture_sizes().empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    const int n = runner_->capture_graphs();
    log_info("captured ", n, n == 1 ? " CUDA graph" : " CUDA graphs", " (decode batch sizes ",
             runner_->capture_sizes().front(), " to ", runner_->capture_sizes().back(), ") in ",
             fixed(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2), " s");
  }
  backend_sampling_ = config_.backend_sampling == 1 || (config_.backend_sampling < 0 && backend.samples_on_device());
  if (config_.speculative.enabled()) {
    // Draft rows are verified one after the other by each request's Sampler.
    if (backend_sampling_) log_info("speculative decoding: tokens are sampled on the host");
    backend_sampling_ = false;
    log_info("speculative decoding: ", config_.speculative.method, ", ", config_.speculative.num_speculative_tokens,
             " draft tokens per step, n-grams of ", config_.speculative.prompt_lookup_min, " to ",
             config_.speculative.prompt_lookup_max, " tokens");
  }
  // Overlap needs tokens that stay on the device: only with backend sampling.
  async_ = backend_sampling_ &&
           (config_.async_scheduling == 1 || (config_.async_scheduling < 0 && backend.samples_on_device()));
  if (config_.async_scheduling == 1 && !async_)
    log_info("--async-scheduling has no effect here: it overlaps steps whose tokens are sampled on the device (",
             config_.speculative.enabled() ? "speculative decoding verifies drafts on the host"
                                           : backend.name() + std::string(" samples on the host"),
             ")");
}

void EngineCore::add_request(EngineCoreRequest req) {
  const SamplingParams& p = req.params;
  p.validate(vocab_size(), config_.max_logprobs);
  PAGODA_CHECK(!req.prompt_token_ids.empty(), "request '", req.request_id, "': the prompt is empty");
  for (int32_t id : req.prompt_token_ids)
    PAGODA_CHECK(id >= 0 && id < vocab_size(), "prompt token id ", id, " is outside the vocabulary [0, ", vocab_size(),
                 ")");
  const int prompt_len = static_cast<int>(req.prompt_token_ids.size());
  PAGODA_CHECK(prompt_len < config_.max_model_len, "This model's maximum context length is ", config_.max_model_len,
               " tokens. However, your request has ", prompt_len, " input tokens. Please reduce the length of the ",
               "input messages.");
  PAGODA_CHECK(!samplers_.contains(req.request_id), "request id '", req.request_id, "' is already in use");

  auto r = std::make_unique<Request>();
  r->request_id = req.request_id;
  r->all_token_ids = req.prompt_token_ids;
  r->num_prompt_tokens = prompt_len;
  r->priority = req.priority;
  r->arrival_time = req.arrival_time == Clock::time_point{} ? Clock::now() : req.arrival_time;
  const int room = config_.max_model_len - prompt_len;
  r->max_tokens = p.max_tokens ? std::min(*p.max_tokens, room) : room;
  r->min_tokens = p.min_tokens;
  r->ignore_eos = p.ignore_eos;
  r->eos_token_ids = config_.eos_token_ids;
  r->stop_token_ids = p.stop_token_ids;
  // Prompt logprobs need the logits of every prompt position, so the prompt is computed in full
  // (vLLM's skip_reading_prefix_cache); its blocks still enter the cache for others.
  if (p.prompt_logprobs) {
    r->wants_prompt_logprobs = true;
    r->skip_reading_prefix_cache = true;
  }

  Sampler sampler(p, req.prompt_token_ids, vocab_size(), config_.eos_token_ids, config_.token_vocabulary);
  PerRequest pr{std::move(sampler), p.logprobs.has_value(), p.prompt_logprobs.value_or(-1), false, SamplingRow{}, 0};
  // What the backend covers: temperature / top-k / top-p / min-p after penalties, logit_bias and
  // min_tokens (LogitEdits), and raw logprobs (up to kMaxBackendLogprobs top entries).
  // allowed_token_ids and grammars stay with the Sampler.
  pr.on_backend = backend_sampling_ && (!p.logprobs || *p.logprobs <= kMaxBackendLogprobs) &&
                  !p.allowed_token_ids && !p.structured_output;
  if (pr.on_backend) {
    pr.row.temperature = p.temperature;
    pr.row.top_k = p.top_k;
    pr.row.top_p = p.top_p;
    pr.row.min_p = p.min_p;
    if (p.seed) {
      pr.row.seed = *p.seed;
    } else {
      std::random_device rd;
      pr.row.seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    }
  }
  scheduler_->add_request(std::move(r));
  samplers_.emplace(req.request_id, std::move(pr));
}

void EngineCore::abort(const std::string& request_id) { scheduler_->abort(request_id); }

bool EngineCore::has_unfinished_requests() const {
  return scheduler_->has_unfinished_requests() || scheduler_->has_pending_outputs() || !launched_.empty();
}

EngineMetrics::EngineMetrics()
    : queue_time(request_latency_buckets()),
      prefill_time(request_latency_buckets()),
      decode_time(request_latency_buckets()),
      inference_time(request_latency_buckets()),
      iteration_tokens({1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}) {}

void EngineCore::observe_finished(const SchedulerRequestOutput& o, Clock::time_point now) {
  if (o.status == RequestStatus::kFinishedAborted) return;  // as vLLM: aborted requests are not timed
  if (o.first_token_time != Clock::time_point{}) metrics_.decode_time.observe(seconds(now - o.first_token_time));
  if (o.scheduled_time != Clock::time_point{}) metrics_.inference_time.observe(seconds(now - o.scheduled_time));
}

EngineCoreOutput EngineCore::convert(SchedulerRequestOutput&& o) {
  EngineCoreOutput e;
  e.request_id = std::move(o.request_id);
  e.new_token_ids = std::move(o.new_token_ids);
  e.finished = o.finished;
  if (o.finished) e.finish_reason = finish_reason(o.status);
  e.stop_reason = o.stop_reason;
  e.num_cached_tokens = o.num_cached_tokens;
  return e;
}

std::vector<EngineCoreOutput> EngineCore::step() {
  std::vector<EngineCoreOutput> outs;
  // A step in flight whose tokens or logits the host needs is finished before the next one is
  // scheduled; one whose tokens stay on the device is not (async scheduling).
  if (!launched_.empty() && !launched_.front().pipelined) collect(outs);
  SchedulerOutput so = scheduler_->schedule();
  if (so.empty()) {
    if (!launched_.empty()) {
      collect(outs);
      return outs;
    }
    for (SchedulerRequestOutput& o : scheduler_->take_aborted()) {
      samplers_.erase(o.request_id);
      outs.push_back(convert(std::move(o)));
    }
    return outs;
  }
  ++num_steps_;
  if (!launched_.empty()) ++num_overlapped_steps_;
  metrics_.iteration_tokens.observe(so.total_num_scheduled_tokens);
  const Clock::time_point now = Clock::now();
  for (const ScheduledRequest& s : so.scheduled) {
    Request& r = *s.request;
    if (r.scheduled_time != Clock::time_point{}) continue;
    r.scheduled_time = now;
    metrics_.queue_time.observe(seconds(now - r.arrival_time));
  }
  launch(std::move(so));
  // Async: the step before is finished while this one runs. Otherwise this one, now.
  if (!async_ || launched_.size() == 2) collect(outs);
  return outs;
}

void EngineCore::launch(SchedulerOutput so) {
  // Backend sampling: one SamplingRow per logits row (rows it does not cover: greedy, unused);
  // the logits come back only when a row needs the host (prompt logprobs, a Sampler request).
  bool any_backend = false, want_logits = !backend_sampling_, pipelined = async_;
  // Per scheduled request: its row among the backend logprob rows (-1: none).
  std::vector<int32_t> logprob_index(so.scheduled.size(), -1);
  if (backend_sampling_) {
    BackendSamplingInput& in = backend_input_;
    in.rows.clear();
    in.edits.clear();
    in.offsets.assign(1, 0);
    in.logprob_rows.clear();
    in.num_top_logprobs = 1;
    auto next_row = [&](const SamplingRow& r) {
      in.rows.push_back(r);
      in.offsets.push_back(static_cast<int32_t>(in.edits.size()));
    };
    for (size_t i = 0; i < so.scheduled.size(); ++i) {
      const ScheduledRequest& s = so.scheduled[i];
      if (s.num_logits_rows() == 0) continue;
      PerRequest& pr = samplers_.at(s.request->request_id);
      for (int k = 0; k < s.num_prompt_logprob_rows; ++k) next_row(SamplingRow{});
      want_logits = want_logits || s.num_prompt_logprob_rows > 0;
      if (!s.samples) continue;
      if (pr.on_backend) {
        pr.sampler.append_edits(in.edits, pr.row, pr.num_in_flight);
        if (pr.want_logprobs) {
          logprob_index[i] = static_cast<int32_t>(in.logprob_rows.size());
          in.logprob_rows.push_back(static_cast<int32_t>(in.rows.size()));
          in.num_top_logprobs = std::max(in.num_top_logprobs, *pr.sampler.params().logprobs);
        }
        next_row(pr.row);
        ++pr.row.offset;  // the next draw, also when the next step is scheduled before this one ran
        ++pr.num_in_flight;
        // Penalties need this token on the host before the next step's edits can be made.
        pipelined = pipelined && !pr.sampler.uses_penalties();
      } else {
        next_row(SamplingRow{});
      }
      any_backend = any_backend || pr.on_backend;
      want_logits = want_logits || !pr.on_backend;
    }
    if (in.edits.empty()) in.offsets.clear();
  }
  runner_->launch(so, *kv_, any_backend ? &backend_input_ : nullptr, want_logits);
  launched_.push_back(Launched{std::move(so), pipelined && !want_logits, std::move(logprob_index)});
}

void EngineCore::collect(std::vector<EngineCoreOutput>& outs) {
  PAGODA_ASSERT(!launched_.empty());
  const SchedulerOutput so = std::move(launched_.front().so);
  const std::vector<int32_t> logprob_index = std::move(launched_.front().logprob_index);
  launched_.pop_front();
  // The sampler edits its row in place (penalties, masks): the rows are the runner's host copy.
  const ModelRunner::StepResult result = runner_->wait();
  const Clock::time_point now = Clock::now();
  float* rows = result.logits.data();
  const int64_t vocab = vocab_size();
  sampled_.assign(so.scheduled.size(), -1);
  num_accepted_.assign(so.num_spec_tokens > 0 ? so.scheduled.size() : 0, 0);
  std::unordered_map<std::string, std::vector<SampledToken>> with_logprobs;
  std::unordered_map<std::string, std::vector<SampledToken>> prompt_logprobs;
  int row = 0;
  for (size_t i = 0; i < so.scheduled.size(); ++i) {
    const ScheduledRequest& s = so.scheduled[i];
    const Request& r = *s.request;
    if (s.num_computed_tokens < r.num_prompt_tokens)
      num_prompt_tokens_ += std::min(s.num_new_tokens, r.num_prompt_tokens - s.num_computed_tokens);
    if (s.num_logits_rows() == 0) continue;
    // Finished since this step was launched (aborted, or stopped by the step before): dropped.
    if (r.finished()) {
      row += s.num_logits_rows();
      continue;
    }
    PerRequest& pr = samplers_.at(r.request_id);
    if (s.num_prompt_logprob_rows > 0) {
      PAGODA_ASSERT(pr.prompt_logprobs >= 0);
      std::vector<SampledToken>& out = prompt_logprobs[r.request_id];
      for (int k = 0; k < s.num_prompt_logprob_rows; ++k) {
        const int p = s.prompt_logprob_begin + k;
        out.push_back(prompt_logprob(rows + static_cast<int64_t>(row++) * vocab,
                                     vocab, r.all_token_ids[static_cast<size_t>(p + 1)], pr.prompt_logprobs));
      }
    }
    if (!s.samples) continue;
    if (r.first_token_time == Clock::time_point{}) {
      s.request->first_token_time = now;
      metrics_.prefill_time.observe(seconds(now - r.scheduled_time));
    }
    if (pr.on_backend) {
      sampled_[i] = result.sampled[static_cast<size_t>(row++)];
      if (const int32_t j = logprob_index[i]; j >= 0) {  // raw logprobs computed by the backend
        SampledToken t;
        t.token = sampled_[i];
        t.logprob = result.token_logprobs[static_cast<size_t>(j)];
        const size_t K = static_cast<size_t>(result.num_top_logprobs);
        for (size_t k = 0; k < static_cast<size_t>(*pr.sampler.params().logprobs); ++k)
          t.top_logprobs.emplace_back(result.top_ids[j * K + k], result.top_logprobs[j * K + k]);
        with_logprobs[r.request_id].push_back(std::move(t));
      }
      pr.sampler.accept(sampled_[i]);
      --pr.num_in_flight;
      continue;
    }
    // Speculative decoding: row k verifies draft k; sampling stops at the first token that
    // differs from its draft (that token is the step's last), or after the row past the last draft.
    const int rows_end = row + 1 + s.num_spec();
    for (int k = 0;; ++k) {
      SampledToken t = pr.sampler.sample(rows + static_cast<int64_t>(row + k) * vocab);
      sampled_[i] = t.token;
      if (pr.want_logprobs) with_logprobs[r.request_id].push_back(std::move(t));
      if (k == s.num_spec() || sampled_[i] != s.spec_token_ids[static_cast<size_t>(k)]) break;
      num_accepted_[i] += 1;
    }
    row = rows_end;
  }
  PAGODA_ASSERT(row == so.num_logits_rows);

  for (SchedulerRequestOutput& o : scheduler_->update_from_output(so, sampled_, num_accepted_)) {
    if (o.finished) {
      samplers_.erase(o.request_id);
      observe_finished(o, now);
    }
    EngineCoreOutput e = convert(std::move(o));
    num_generation_tokens_ += static_cast<int64_t>(e.new_token_ids.size());
    if (!e.new_token_ids.empty()) {
      auto it = with_logprobs.find(e.request_id);
      if (it != with_logprobs.end()) {
        // A stop among accepted drafts ends the output early: the logprobs follow the tokens.
        it->second.resize(std::min(it->second.size(), e.new_token_ids.size()));
        e.new_logprobs = std::move(it->second);
      }
    }
    auto pl = prompt_logprobs.find(e.request_id);
    if (pl != prompt_logprobs.end()) {
      e.new_prompt_logprobs = std::move(pl->second);
      prompt_logprobs.erase(pl);
    }
    outs.push_back(std::move(e));
  }
  // Prompt chunks that sampled nothing still deliver their prompt logprobs.
  for (auto& [id, lps] : prompt_logprobs) {
    EngineCoreOutput e;
    e.request_id = id;
    e.new_prompt_logprobs = std::move(lps);
    outs.push_back(std::move(e));
  }
}

EngineStats EngineCore::stats() const {
  const SchedulerStats s = scheduler_->stats();
  EngineStats e;
  e.num_running = s.num_running;
  e.num_waiting = s.num_waiting;
  e.num_preemptions = s.num_preemptions;
  e.kv_cache_usage = s.kv_cache_usage;
  e.num_free_blocks = s.num_free_blocks;
  e.num_blocks = s.num_blocks;
  e.num_held_slots = s.num_held_slots;
  e.num_stored_tokens = s.num_stored_tokens;
  e.prefix_cache = s.prefix_cache;
  e.num_steps = num_steps_;
  e.num_prompt_tokens = num_prompt_tokens_;
  e.num_generation_tokens = num_generation_tokens_;
  e.num_overlapped_steps = num_overlapped_steps_;
  e.spec_decoding = s.spec_decoding;
  return e;
}

}  // namespace pagoda
