#include "engine/model_runner.h"

#include <algorithm>
#include <cstddef>

#include "base/error.h"
#include "base/log.h"

namespace pagoda {
namespace {

int ceil_div(int a, int b) { return (a + b - 1) / b; }

}  // namespace

size_t ModelRunner::kv_bytes_per_block(const CausalLM& model, int block_size, DType kv_cache_dtype) {
  // K and V, every attention layer.
  return 2 * static_cast<size_t>(model.num_kv_layers()) * static_cast<size_t>(model.num_kv_heads()) *
         static_cast<size_t>(model.head_dim()) * static_cast<size_t>(block_size) * dtype_size(kv_cache_dtype);
}

ModelRunner::ModelRunner(CausalLM& model, Backend& backend, const ModelRunnerConfig& config)
    : model_(model), backend_(backend), config_(config), vocab_(model.config().vocab_size) {
  PAGODA_CHECK(config.max_num_batched_tokens > 0 && config.max_num_seqs > 0 && config.max_model_len > 0 &&
                   config.block_size > 0 && config.num_kv_blocks > 0,
               "ModelRunner: sizes must be positive");
  max_blocks_per_seq_ = ceil_div(config.max_model_len, config.block_size);
  kv_ = backend.allocate_kv_cache(model.num_kv_layers(), config.num_kv_blocks, config.block_size,
                                  model.num_kv_heads(), model.head_dim(), config.kv_cache_dtype);
  const size_t T = static_cast<size_t>(config.max_num_batched_tokens);
  const size_t S = static_cast<size_t>(config.max_num_seqs);
  // A step schedules at most one chunk per sequence and at most T tokens, so T bounds sequences too.
  const size_t seqs = std::min(S, T);
  if (config_.max_num_logits <= 0) config_.max_num_logits = static_cast<int>(seqs);
  const size_t rows = static_cast<size_t>(config_.max_num_logits);
  ids_buf_ = backend.allocate(T * 4);
  pos_buf_ = backend.allocate(T * 4);
  slot_buf_ = backend.allocate(T * 4);
  qsl_buf_ = backend.allocate((seqs + 1) * 4);
  seq_lens_buf_ = backend.allocate(seqs * 4);
  tables_buf_ = backend.allocate(seqs * static_cast<size_t>(max_blocks_per_seq_) * 4);
  logits_idx_buf_ = backend.allocate(rows * 4);
  logits_buf_ = backend.allocate(rows * static_cast<size_t>(vocab_) * 4);
  if (model.num_state_slots() > 0) {
    state_slots_buf_ = backend.allocate(seqs * 4);
    state_slots_.reserve(seqs);
  }
  ids_.reserve(T);
  pos_.reserve(T);
  slots_.reserve(T);
  qsl_.reserve(seqs + 1);
  seq_lens_.reserve(seqs);
  tables_.reserve(seqs * static_cast<size_t>(max_blocks_per_seq_));
  logits_idx_.reserve(rows);
  const size_t staged =
      3 * T + (seqs + 1) + seqs + seqs * static_cast<size_t>(max_blocks_per_seq_) + rows + seqs + (rows + 1);
  feed_buf_ = backend.allocate(2 * T * sizeof(int32_t));
  feed_.reserve(2 * T);
  for (HostSet& h : host_) {
    h.staging = backend.allocate_host((staged + 2 * T + rows) * sizeof(int32_t));  // + feed pairs, logprob rows
    h.rows = backend.allocate_host(rows * sizeof(SamplingRow));
    h.sampled = backend.allocate_host(rows * sizeof(int32_t));
    h.lp_token = backend.allocate_host(rows * sizeof(float));
    h.lp_ids = backend.allocate_host(rows * kMaxBackendLogprobs * sizeof(int32_t));
    h.lp_top = backend.allocate_host(rows * kMaxBackendLogprobs * sizeof(float));
  }
  logits_host_ = backend.allocate_host(rows * static_cast<size_t>(vocab_) * sizeof(float));
  // Hybrid models replay too: padding sequences get AttentionMetadata::kPaddingSlot.
  const bool replayable = model.replayable_decode();
  if (config_.graphs != 0 && replayable && (backend.has_graphs() || config_.graphs == 1)) {
    PAGODA_CHECK(config_.max_capture_size >= 1, "ModelRunner: max_capture_size ", config_.max_capture_size,
                 " (at least 1)");
    const int limit =
        static_cast<int>(std::min<size_t>({seqs, rows, static_cast<size_t>(config_.max_capture_size)}));
    for (int b : {1, 2, 4})
      if (b <= limit) capture_sizes_.push_back(b);
    for (int b = 8; b <= limit; b += 8) capture_sizes_.push_back(b);
    backend_graphs_ = backend.has_graphs();
  }
  sample_rows_buf_ = backend.allocate(rows * sizeof(SamplingRow));
  sampled_buf_ = backend.allocate(rows * sizeof(int32_t));
  edit_offsets_buf_ = backend.allocate((rows + 1) * sizeof(int32_t));
  lp_rows_buf_ = backend.allocate(rows * sizeof(int32_t));
  lp_tokens_buf_ = backend.allocate(rows * sizeof(int32_t));
  lp_token_buf_ = backend.allocate(rows * sizeof(float));
  lp_ids_buf_ = backend.allocate(rows * kMaxBackendLogprobs * sizeof(int32_t));
  lp_top_buf_ = backend.allocate(rows * kMaxBackendLogprobs * sizeof(float));
}

ModelRunner::StepResult ModelRunner::execute(const SchedulerOutput& output, const KvCacheManager& kv_cache,
                                             const BackendSamplingInput* sampling, bool want_logits) {
  launch(output, kv_cache, sampling, want_logits);
  return wait();
}

ModelRunner::StepResult ModelRunner::wait() {
  PAGODA_ASSERT(!in_flight_.empty());
  const InFlight f = in_flight_.front();
  in_flight_.erase(in_flight_.begin());
  backend_.wait_event(f.parity);
  StepResult result;
  const auto L = static_cast<size_t>(f.num_rows);
  if (f.sampled) result.sampled = {static_cast<const int32_t*>(host_[f.parity].sampled.data()), L};
  if (f.num_logprob_rows > 0) {
    const HostSet& h = host_[f.parity];
    const auto N = static_cast<size_t>(f.num_logprob_rows), K = static_cast<size_t>(f.num_top_logprobs);
    result.token_logprobs = {static_cast<const float*>(h.lp_token.data()), N};
    result.top_ids = {static_cast<const int32_t*>(h.lp_ids.data()), N * K};
    result.top_logprobs = {static_cast<const float*>(h.lp_top.data()), N * K};
    result.num_top_logprobs = f.num_top_logprobs;
  }
  if (f.logits) result.logits = {static_cast<float*>(logits_host_.data()), L * static_cast<size_t>(vocab_)};
  return result;
}

void ModelRunner::launch(const SchedulerOutput& output, const KvCacheManager& kv_cache,
                         const BackendSamplingInput* sampling, bool want_logits) {
  PAGODA_CHECK(in_flight_.size() < 2, "ModelRunner: two steps are already in flight");
  const int parity = next_parity_;
  HostSet& host = host_[parity];
  const int num_seqs = static_cast<int>(output.scheduled.size());
  PAGODA_ASSERT(num_seqs > 0 && num_seqs <= config_.max_num_seqs);
  PAGODA_ASSERT(output.total_num_scheduled_tokens <= config_.max_num_batched_tokens);
  const int bs = config_.block_size;
  PAGODA_ASSERT(kv_cache.block_size() == bs);

  ids_.clear();
  pos_.clear();
  slots_.clear();
  qsl_.assign(1, 0);
  seq_lens_.clear();
  logits_idx_.clear();
  state_slots_.clear();
  feed_.clear();
  sampled_rows_.clear();
  const bool hybrid = model_.num_state_slots() > 0;
  int32_t max_query_len = 0, max_seq_len = 0;
  // A decode step of at most the largest capture size takes the fixed (graph) layout: padded to
  // a capture size B, block tables max_model_len wide, max_seq_len max_model_len.
  bool decode = !capture_sizes_.empty() && num_seqs <= capture_sizes_.back();
  for (const ScheduledRequest& s : output.scheduled)
    decode = decode && s.num_new_tokens == 1 && s.samples && s.num_prompt_logprob_rows == 0;
  const int B = decode ? *std::lower_bound(capture_sizes_.begin(), capture_sizes_.end(), num_seqs) : num_seqs;
  // Block tables are as wide as the longest in this batch, not max_model_len: less to copy.
  int width = 1;
  for (const ScheduledRequest& s : output.scheduled)
    width = std::max(width, ceil_div(s.num_computed_tokens + s.num_new_tokens, bs));
  if (decode) width = max_blocks_per_seq_;
  PAGODA_ASSERT(width <= max_blocks_per_seq_);
  tables_.assign(static_cast<size_t>(B) * static_cast<size_t>(width), 0);

  for (int i = 0; i < num_seqs; ++i) {
    const ScheduledRequest& s = output.scheduled[static_cast<size_t>(i)];
    const Request& r = *s.request;
    const int start = s.num_computed_tokens, n = s.num_new_tokens, len = start + n;
    // Draft tokens (speculative decoding) follow the request's known tokens.
    const int known_end = len - s.num_spec();
    PAGODA_ASSERT(n > s.num_spec() && known_end <= r.num_tokens());
    std::span<const int32_t> table = kv_cache.block_table(r.request_id);
    PAGODA_ASSERT(static_cast<int>(table.size()) >= ceil_div(len, bs));
    if (hybrid) {
      // The slot was taken with the request's first blocks and is its own until they are freed;
      // a chunk at position 0 starts the state afresh (a preempted request recomputes).
      state_slots_.push_back(kv_cache.state_slot(r.request_id));
      PAGODA_ASSERT(state_slots_.back() >= 0 && state_slots_.back() < model_.num_state_slots());
    }
    std::copy(table.begin(), table.begin() + ceil_div(len, bs),
              tables_.begin() + static_cast<std::ptrdiff_t>(i) * width);
    const int32_t first_row = static_cast<int32_t>(ids_.size());
    for (int p = start; p < len; ++p) {
      const int32_t token = p < known_end ? r.all_token_ids[static_cast<size_t>(p)]
                                          : s.spec_token_ids[static_cast<size_t>(p - known_end)];
      if (token == kPlaceholderToken) {  // sampled by the step in flight: fed on the device
        auto it = last_sampled_rows_.find(&r);
        PAGODA_CHECK(it != last_sampled_rows_.end(), "request '", r.request_id, "': token ", p,
                     " is not known yet and the step before does not sample it on the backend");
        feed_.push_back(static_cast<int32_t>(ids_.size()));
        feed_.push_back(it->second);
      }
      ids_.push_back(token == kPlaceholderToken ? 0 : token);
      pos_.push_back(p);
      slots_.push_back(table[static_cast<size_t>(p / bs)] * bs + p % bs);
    }
    PAGODA_ASSERT(s.num_prompt_logprob_rows == 0 ||
                  (s.prompt_logprob_begin >= start && s.prompt_logprob_begin + s.num_prompt_logprob_rows <= len));
    for (int k = 0; k < s.num_prompt_logprob_rows; ++k)
      logits_idx_.push_back(first_row + (s.prompt_logprob_begin - start) + k);
    if (s.samples) {
      // One row per draft and one after the last: rows for positions known_end - 1 .. len - 1.
      for (int k = 0; k < s.num_spec(); ++k)
        logits_idx_.push_back(static_cast<int32_t>(ids_.size()) - 1 - s.num_spec() + k);
      sampled_rows_.emplace(&r, static_cast<int32_t>(logits_idx_.size()));
      logits_idx_.push_back(static_cast<int32_t>(ids_.size()) - 1);
    }
    qsl_.push_back(static_cast<int32_t>(ids_.size()));
    seq_lens_.push_back(len);
    max_query_len = std::max(max_query_len, n);
    max_seq_len = std::max(max_seq_len, len);
  }
  const int T_real = static_cast<int>(ids_.size());
  const int L = static_cast<int>(logits_idx_.size());
  PAGODA_ASSERT(T_real == output.total_num_scheduled_tokens && L == output.num_logits_rows &&
                L <= config_.max_num_logits);
  add_padding_sequences(B - num_seqs);
  if (decode) {
    max_query_len = 1;
    max_seq_len = config_.max_model_len;
  }
  const int T = static_cast<int>(ids_.size());
  const int L_fwd = static_cast<int>(logits_idx_.size());

  // host (this parity's set) was last used by the step before the one in flight, which has been
  // waited for: its copies have all run.
  size_t staged = upload_inputs(host);
  auto upload = [&](const DeviceBuffer& buf, const std::vector<int32_t>& v) { staged = stage(host, staged, buf, v); };
  upload(feed_buf_, feed_);
  if (!feed_.empty())
    backend_.feed_tokens(ids_buf_.as(DType::kI32, {T}),
                         feed_buf_.as(DType::kI32, {static_cast<int64_t>(feed_.size() / 2), 2}),
                         sampled_buf_.as(DType::kI32, {config_.max_num_logits}));
  const bool backend_samples = sampling != nullptr && L > 0;
  const bool edits = backend_samples && !sampling->edits.empty();
  if (backend_samples) {
    PAGODA_ASSERT(static_cast<int>(sampling->rows.size()) == L);
    std::copy(sampling->rows.begin(), sampling->rows.end(), static_cast<SamplingRow*>(host.rows.data()));
    backend_.copy_from_host(sample_rows_buf_.data(), host.rows.data(), static_cast<size_t>(L) * sizeof(SamplingRow));
  }
  if (edits) {
    PAGODA_ASSERT(static_cast<int>(sampling->offsets.size()) == L + 1 &&
                  sampling->offsets.back() == static_cast<int32_t>(sampling->edits.size()));
    const size_t bytes = sampling->edits.size() * sizeof(LogitEdit);
    if (host.edits.size() < bytes) {  // grown (rarely: prompts are long or penalties many)
      const size_t cap = std::max(bytes, 2 * host.edits.size());
      host.edits = backend_.allocate_host(cap);
      host.edits_dev = backend_.allocate(cap);
    }
    std::copy(sampling->edits.begin(), sampling->edits.end(), static_cast<LogitEdit*>(host.edits.data()));
    backend_.copy_from_host(host.edits_dev.data(), host.edits.data(), bytes);
    upload(edit_offsets_buf_, sampling->offsets);
  }
  if (backend_samples && !sampling->logprob_rows.empty()) upload(lp_rows_buf_, sampling->logprob_rows);

  run_forward(B, T, L_fwd, width, max_query_len, max_seq_len, decode);
  Tensor logits = logits_buf_.as(DType::kF32, {std::max(L_fwd, 1), vocab_});
  InFlight f;
  f.parity = parity;
  f.num_rows = L;
  if (L > 0 && backend_samples) {
    Tensor tokens = sampled_buf_.as(DType::kI32, {L});
    // Backend logprobs are of the raw logits: their rows are copied aside before the edits.
    const int N = static_cast<int>(sampling->logprob_rows.size()), K = sampling->num_top_logprobs;
    if (N > 0) {
      PAGODA_CHECK(K >= 1 && K <= kMaxBackendLogprobs && K <= vocab_, "ModelRunner: ", K, " top logprobs");
      const size_t bytes = static_cast<size_t>(N) * static_cast<size_t>(vocab_) * sizeof(float);
      if (lp_logits_buf_.size() < bytes) lp_logits_buf_ = backend_.allocate(std::max(bytes, 2 * lp_logits_buf_.size()));
      backend_.gather_rows(logits.slice_rows(0, L), lp_rows_buf_.as(DType::kI32, {N}),
                           lp_logits_buf_.as(DType::kF32, {N, vocab_}));
    }
    if (edits)
      backend_.apply_logit_edits(logits.slice_rows(0, L), sample_rows_buf_.as(DType::kI32, {L, kSamplingRowWords}),
                                 host.edits_dev.as(DType::kI32, {static_cast<int64_t>(sampling->edits.size()), 4}),
                                 edit_offsets_buf_.as(DType::kI32, {L + 1}));
    backend_.sample_tokens(logits.slice_rows(0, L), sample_rows_buf_.as(DType::kI32, {L, kSamplingRowWords}), tokens);
    backend_.copy_to_host_async(host.sampled.data(), sampled_buf_.data(), static_cast<size_t>(L) * sizeof(int32_t));
    f.sampled = true;
    if (N > 0) {
      Tensor lp_tokens = lp_tokens_buf_.as(DType::kI32, {N, 1});
      backend_.gather_rows(sampled_buf_.as(DType::kI32, {L, 1}), lp_rows_buf_.as(DType::kI32, {N}), lp_tokens);
      backend_.compute_logprobs(lp_logits_buf_.as(DType::kF32, {N, vocab_}), lp_tokens_buf_.as(DType::kI32, {N}),
                                lp_token_buf_.as(DType::kF32, {N}), lp_ids_buf_.as(DType::kI32, {N, K}),
                                lp_top_buf_.as(DType::kF32, {N, K}));
      backend_.copy_to_host_async(host.lp_token.data(), lp_token_buf_.data(), static_cast<size_t>(N) * sizeof(float));
      backend_.copy_to_host_async(host.lp_ids.data(), lp_ids_buf_.data(), static_cast<size_t>(N * K) * sizeof(int32_t));
      backend_.copy_to_host_async(host.lp_top.data(), lp_top_buf_.data(), static_cast<size_t>(N * K) * sizeof(float));
      f.num_logprob_rows = N;
      f.num_top_logprobs = K;
    }
  }
  if (L > 0 && want_logits) {
    PAGODA_CHECK(std::none_of(in_flight_.begin(), in_flight_.end(), [](const InFlight& x) { return x.logits; }),
                 "ModelRunner: the step in flight still wants its logits");
    const size_t n = static_cast<size_t>(L) * static_cast<size_t>(vocab_);
    backend_.copy_to_host_async(logits_host_.data(), logits_buf_.data(), n * sizeof(float));
    f.logits = true;
  }
  backend_.record_event(parity);
  in_flight_.push_back(f);
  next_parity_ ^= 1;
  // Placeholders of the next step can be fed from the rows this step samples on the backend.
  last_sampled_rows_.clear();
  if (f.sampled) last_sampled_rows_.swap(sampled_rows_);
}

int ModelRunner::graph_of(int B) const {
  for (const auto& [size, id] : graph_of_)
    if (size == B) return id;
  return -1;
}

void ModelRunner::add_padding_sequences(int n) {
  // Padding sequences: one token at position 0 of block 0, K/V not written (slot -1), no
  // recurrent state (kPaddingSlot), logits computed and ignored.
  const bool hybrid = model_.num_state_slots() > 0;
  for (int i = 0; i < n; ++i) {
    if (hybrid) state_slots_.push_back(AttentionMetadata::kPaddingSlot);
    ids_.push_back(0);
    pos_.push_back(0);
    slots_.push_back(-1);
    logits_idx_.push_back(static_cast<int32_t>(ids_.size()) - 1);
    qsl_.push_back(static_cast<int32_t>(ids_.size()));
    seq_lens_.push_back(1);
  }
}

size_t ModelRunner::stage(HostSet& host, size_t staged, const DeviceBuffer& buf, const std::vector<int32_t>& v) {
  if (v.empty()) return staged;
  PAGODA_ASSERT((staged + v.size()) * sizeof(int32_t) <= host.staging.size());
  int32_t* at = static_cast<int32_t*>(host.staging.data()) + staged;
  std::copy(v.begin(), v.end(), at);
  backend_.copy_from_host(buf.data(), at, v.size() * sizeof(int32_t));
  return staged + v.size();
}

size_t ModelRunner::upload_inputs(HostSet& host) {
  size_t staged = 0;
  for (const auto& [buf, v] : {std::pair{&ids_buf_, &ids_}, std::pair{&pos_buf_, &pos_}, std::pair{&slot_buf_, &slots_},
                               std::pair{&qsl_buf_, &qsl_}, std::pair{&seq_lens_buf_, &seq_lens_},
                               std::pair{&tables_buf_, &tables_}, std::pair{&logits_idx_buf_, &logits_idx_},
                               std::pair{&state_slots_buf_, &state_slots_}})
    staged = stage(host, staged, *buf, *v);
  return staged;
}

void ModelRunner::run_forward(int B, int T, int L_fwd, int width, int max_query_len, int max_seq_len, bool decode) {
  ForwardBatch batch;
  batch.token_ids = ids_buf_.as(DType::kI32, {T});
  batch.positions = pos_buf_.as(DType::kI32, {T});
  batch.logits_indices = logits_idx_buf_.as(DType::kI32, {L_fwd});
  AttentionMetadata& m = batch.attn;
  m.query_start_loc = qsl_buf_.as(DType::kI32, {B + 1});
  m.seq_lens = seq_lens_buf_.as(DType::kI32, {B});
  m.block_tables = tables_buf_.as(DType::kI32, {B, width});
  m.slot_mapping = slot_buf_.as(DType::kI32, {T});
  m.num_seqs = B;
  m.num_tokens = T;
  m.max_query_len = max_query_len;
  m.max_seq_len = max_seq_len;
  if (model_.num_state_slots() > 0) m.state_slots = state_slots_buf_.as(DType::kI32, {B});

  Tensor logits = logits_buf_.as(DType::kF32, {std::max(L_fwd, 1), vocab_});
  auto forward = [&] { model_.forward(batch, kv_, logits); };
  if (decode && backend_graphs_) {
    if (const int id = graph_of(B); id >= 0) {
      backend_.replay_graph(id);
    } else {
      // The first step of this size runs eagerly (its result, and the cuBLASLt plans / MoE tables
      // the recording needs), then the same launches are recorded for the next ones.
      forward();
      try {
        graph_of_.emplace_back(B, backend_.capture_graph(forward));
      } catch (const Error& e) {
        log_warn("CUDA graph capture for batch size ", B, " failed; decode runs eagerly from now on: ", e.what());
        backend_graphs_ = false;
      }
    }
  } else {
    forward();
  }
}

int ModelRunner::capture_graphs() {
  PAGODA_CHECK(in_flight_.empty(), "ModelRunner: capture_graphs with a step in flight");
  int recorded = 0;
  // Largest first, as vLLM does; each from a batch of padding sequences only (no KV written, no
  // recurrent state touched): the decode layout is fixed per size, so what a recording captures
  // does not depend on which sequences run.
  for (auto size = capture_sizes_.rbegin(); size != capture_sizes_.rend() && backend_graphs_; ++size) {
    const int B = *size;
    if (graph_of(B) >= 0) continue;
    for (std::vector<int32_t>* v : {&ids_, &pos_, &slots_, &seq_lens_, &logits_idx_, &state_slots_}) v->clear();
    qsl_.assign(1, 0);
    add_padding_sequences(B);
    tables_.assign(static_cast<size_t>(B) * static_cast<size_t>(max_blocks_per_seq_), 0);
    upload_inputs(host_[next_parity_]);
    const int before = num_graphs();
    run_forward(B, B, B, max_blocks_per_seq_, 1, config_.max_model_len, true);
    backend_.synchronize();  // the staging buffer is reused by the next size
    recorded += num_graphs() - before;
  }
  return recorded;
}

}  // namespace pagoda
