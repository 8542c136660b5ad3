// EngineCore (vLLM V1's EngineCore): the step loop body that owns the model state. One step is
//   Scheduler::schedule() → ModelRunner::execute() → a Sampler per sampling request →
//   Scheduler::update_from_output()
// and returns what happened to each request. Single-threaded: whoever owns it (LLMEngine, or the
// AsyncEngine's engine thread) calls add_request / abort / step from one thread.
//
// The KV pool is sized by EngineConfig::num_kv_blocks, or, when that is 0, by
// kv_cache_memory_bytes / (bytes of one block across all layers). When kv_cache_memory_bytes is
// 0 (the default): 4 GiB on the CPU; on a GPU, gpu_memory_utilization of the device's memory
// minus what is in use once the model is loaded (weights, the model's activation workspaces
// and the backend's GEMM / attention workspaces: ops never allocate, so that is the peak) and
// a fixed reserve, as vLLM's --gpu-memory-utilization.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "base/histogram.h"
#include "engine/kv_cache_manager.h"
#include "engine/model_runner.h"
#include "engine/sampler.h"
#include "engine/sampling_params.h"
#include "engine/scheduler.h"
#include "model/model.h"

namespace pagoda {

struct EngineConfig {
  // --quantization: ModelLoadOptions::quantization ("" = the checkpoint's own).
  std::string quantization;
  std::string device = "cpu";  // --device: cpu, cuda or cuda:N (LLMEngine::from_model_dir makes the backend)
  int max_num_seqs = 256;
  int max_num_batched_tokens = 2048;
  int max_model_len = 0;  // 0: the model's max_position_embeddings
  int block_size = 16;
  int num_kv_blocks = 0;  // 0: from kv_cache_memory_bytes
  size_t kv_cache_memory_bytes = 0;  // --kv-cache-memory; 0: 4 GiB on the CPU, gpu_memory_utilization on a GPU
  double gpu_memory_utilization = 0.9;  // --gpu-memory-utilization: fraction of the GPU's memory pagoda may use
  bool enable_prefix_caching = true;
  SchedulingPolicy policy = SchedulingPolicy::kFcfs;
  DType kv_cache_dtype = DType::kBF16;
  // Tokens that end generation unless ignore_eos; empty: the model config's eos_token_id(s).
  // (generation_config.json's list, when the caller loaded it, belongs here.)
  std::vector<int32_t> eos_token_ids;
  // Token bytes for structured output (guided decoding); requests that ask for it fail without.
  std::shared_ptr<const TokenVocabulary> token_vocabulary;
  // Backend::sample_tokens (after Backend::apply_logit_edits for penalties, logit_bias and
  // min_tokens; raw logprobs by Backend::compute_logprobs) for the requests it covers (no
  // allowed_token_ids or structured output, at most kMaxBackendLogprobs top logprobs): -1 when
  // the backend samples on the device (a GPU: only token ids and requested logprobs come back),
  // 0 never, 1 always (tests of the path on the CPU).
  int backend_sampling = -1;
  // Decode steps recorded as CUDA graphs per padded batch size and replayed (ModelRunnerConfig::
  // graphs): -1 when the backend and the model allow it, 0 never (--enforce-eager), 1 also the
  // padded decode layout on the CPU backend (tests).
  int cuda_graphs = -1;
  // The largest decode batch recorded as a graph (--max-cudagraph-capture-size, as vLLM's): the
  // sizes are 1, 2, 4, then multiples of 8 up to min(this, max_num_seqs); bigger decode batches
  // run eagerly. Fewer sizes: a shorter start-up.
  int max_cudagraph_capture_size = 512;
  // With graphs: record every decode size's graph when the engine is built (ModelRunner::
  // capture_graphs, as vLLM does at start-up); false records each size at its first step.
  bool graphs_at_start = true;
  // Async scheduling (vLLM's --async-scheduling): step N+1 is scheduled and issued while the
  // backend still runs step N, its tokens fed on the device (Scheduler, ModelRunner::launch);
  // only with backend sampling, and a step is not overlapped when a request in it needs its
  // token on the host first (allowed_token_ids, structured output, more than kMaxBackendLogprobs
  // logprobs, penalties, prompt logprobs). -1: when the backend samples on the device (a GPU), 0 never
  // (--no-async-scheduling), 1 always (tests on the CPU, where the backend runs each op at once).
  int async_scheduling = -1;
  // --max-logprobs: the most logprobs / prompt_logprobs a request may ask for (vLLM's default 20).
  int max_logprobs = 20;
  // --speculative-config (engine/speculative.h): n-gram drafts verified k + 1 tokens per step.
  // The rows are sampled on the host, one after the other (no backend sampling, no async
  // scheduling); not for models with recurrent state (their state cannot step back over
  // rejected drafts).
  SpeculativeConfig speculative;
};

struct EngineCoreRequest {
  std::string request_id;
  std::vector<int32_t> prompt_token_ids;
  SamplingParams params;  // n is ignored here (LLMEngine fans out)
  int priority = 0;
  // When the request reached the engine (its queue time starts here); default: add_request's call.
  std::chrono::steady_clock::time_point arrival_time{};
};

struct EngineCoreOutput {
  std::string request_id;
  std::vector<int32_t> new_token_ids;
  std::vector<SampledToken> new_logprobs;  // parallel to new_token_ids when params.logprobs is set
  // Prompt logprobs computed this step, for the next prompt positions in order: entry k is the
  // logprob of prompt token p + 1 given tokens [0, p] (its `token`), with top-k. Over the whole
  // request they cover prompt tokens 1 .. P-1 exactly once (token 0 has none, as vLLM's None).
  std::vector<SampledToken> new_prompt_logprobs;
  bool finished = false;
  std::string finish_reason;            // "stop" | "length" | "abort" when finished
  std::optional<int32_t> stop_reason;   // the stop token id that finished it (EOS: none)
  int num_cached_tokens = 0;            // prompt tokens served by the prefix cache
};

struct EngineStats {
  int num_running = 0;
  int num_waiting = 0;
  int64_t num_preemptions = 0;
  double kv_cache_usage = 0.0;
  int num_free_blocks = 0;
  int num_blocks = 0;
  int64_t num_held_slots = 0;     // see SchedulerStats
  int64_t num_stored_tokens = 0;
  PrefixCacheStats prefix_cache;
  int64_t num_steps = 0;
  int64_t num_prompt_tokens = 0;      // prompt tokens computed (prefix-cache hits excluded)
  int64_t num_generation_tokens = 0;  // tokens sampled
  // Async scheduling: steps issued while the step before was still running.
  int64_t num_overlapped_steps = 0;
  SpecDecodingStats spec_decoding;  // speculative decoding counters
};

// vLLM's request-phase and step histograms, observed on the engine thread as requests pass
// through it and read by the server's /metrics (Histogram is thread-safe). A request's phases:
// queue (arrival to first scheduled), prefill (first scheduled to first token), decode (first
// token to finished), inference (first scheduled to finished); a request aborted before it was
// scheduled, or before its first token, has no later phase.
struct EngineMetrics {
  EngineMetrics();
  Histogram queue_time, prefill_time, decode_time, inference_time;  // seconds
  Histogram iteration_tokens;  // tokens scheduled per engine step (prompt chunks + decodes)
};

class EngineCore {
 public:
  // model must have been loaded with ModelLoadOptions of at least max_num_batched_tokens tokens
  // and min(max_num_seqs, max_num_batched_tokens) logits rows (see engine_load_options).
  EngineCore(CausalLM& model, Backend& backend, const EngineConfig& config);

  // Validates (pagoda::Error naming the field) and queues the request.
  void add_request(EngineCoreRequest request);
  void abort(const std::string& request_id);
  // Runs one step (or none if nothing is scheduled) and returns every request's news.
  std::vector<EngineCoreOutput> step();
  bool has_unfinished_requests() const;
  // Forgets every cached prefix block; false (nothing done) while requests hold blocks.
  bool reset_prefix_cache() { return kv_->reset_prefix_cache(); }

  EngineStats stats() const;
  const EngineMetrics& metrics() const { return metrics_; }
  const EngineConfig& config() const { return config_; }  // with max_model_len, num_kv_blocks resolved
  const KvCacheManager& kv_cache_manager() const { return *kv_; }
  const Scheduler& scheduler() const { return *scheduler_; }
  const ModelRunner& model_runner() const { return *runner_; }
  int64_t vocab_size() const { return runner_->vocab_size(); }

 private:
  EngineCoreOutput convert(SchedulerRequestOutput&& o);
  // Issues a scheduled step to the model runner (with its backend-sampling rows).
  void launch(SchedulerOutput so);
  // Waits for the oldest launched step, samples on the host what it must, updates the scheduler
  // and appends every request's news to outs.
  void collect(std::vector<EngineCoreOutput>& outs);
  // The decode and inference histograms of a request that finished (stop or length) at `now`.
  void observe_finished(const SchedulerRequestOutput& o, std::chrono::steady_clock::time_point now);

  EngineConfig config_;
  std::unique_ptr<KvCacheManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<ModelRunner> runner_;
  struct PerRequest {
    Sampler sampler;
    bool want_logprobs = false;
    int prompt_logprobs = -1;  // top-k for prompt logprobs; -1: none wanted
    // Sampled by Backend::sample_tokens (the whole request: its draws follow one generator).
    bool on_backend = false;
    SamplingRow row;  // its settings; row.offset counts its draws
    int num_in_flight = 0;  // backend draws launched and not yet collected
  };
  std::unordered_map<std::string, PerRequest> samplers_;
  std::vector<int32_t> sampled_;  // scratch: one entry per scheduled request
  std::vector<int32_t> num_accepted_;  // scratch: accepted drafts per scheduled request
  bool backend_sampling_ = false;
  bool async_ = false;
  struct Launched {
    SchedulerOutput so;
    bool pipelined = false;  // the next step may be scheduled before this one is collected
    std::vector<int32_t> logprob_index;  // per scheduled request: its backend logprob row, or -1
  };
  std::deque<Launched> launched_;  // issued, not yet collected (at most two, briefly)
  BackendSamplingInput backend_input_;  // scratch: one row (and its edits) per logits row
  int64_t num_steps_ = 0;
  int64_t num_prompt_tokens_ = 0;
  int64_t num_generation_tokens_ = 0;
  EngineMetrics metrics_;
  int64_t num_overlapped_steps_ = 0;
};

// The ModelLoadOptions a model needs to serve under this config.
ModelLoadOptions engine_load_options(const EngineConfig& config);

}  // namespace pagoda
