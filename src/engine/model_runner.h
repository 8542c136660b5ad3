// The model runner (vLLM V1's GPUModelRunner, on any Backend): turns a SchedulerOutput into one
// ForwardBatch over the flattened varlen batch, runs CausalLM::forward and hands back the logits
// rows of the requests that sample. It owns the paged KV cache memory; which block holds which
// tokens is the KvCacheManager's business (block tables are read from it every step).
//
// Every buffer (backend and host staging) is allocated once, at construction, for the largest
// step the scheduler can produce: max_num_batched_tokens tokens, max_num_seqs sequences, each at
// most max_model_len long. A step only copies what it uses.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "engine/kv_cache_manager.h"
#include "engine/scheduler.h"
#include "model/model.h"

namespace pagoda {

struct ModelRunnerConfig {
  int max_num_batched_tokens = 2048;
  int max_num_seqs = 256;
  int max_model_len = 4096;
  int block_size = 16;
  int num_kv_blocks = 0;
  DType kv_cache_dtype = DType::kBF16;
  int max_num_logits = 0;  // logits rows per step at most (0: min(max_num_seqs, max_num_batched_tokens))
  // Decode steps (one new token per sequence) run padded to a capture size (1, 2, 4, then
  // multiples of 8 up to min(max_num_seqs, max_capture_size)) with a fixed layout, recorded once per size as a
  // graph and replayed: -1 when the backend has graphs and the model is replayable, 0 never
  // (--enforce-eager), 1 also the padded layout on a backend without graphs (tests).
  int graphs = -1;
  // The largest capture size (vLLM's --max-cudagraph-capture-size): bigger decode batches run
  // eagerly.
  int max_capture_size = 512;
};

// The most top logprobs per token the backend computes (Backend::compute_logprobs); requests
// that want more are sampled on the host.
inline constexpr int kMaxBackendLogprobs = 32;

// What Backend::sample_tokens needs for one step (ModelRunner::execute).
struct BackendSamplingInput {
  std::vector<SamplingRow> rows;  // one per logits row
  std::vector<LogitEdit> edits;   // Backend::apply_logit_edits, every row's in row order
  std::vector<int32_t> offsets;   // rows.size() + 1 entries when edits is not empty
  // Logits rows whose raw logprobs (before the edits) the backend computes for the token it
  // draws, with num_top_logprobs (1 .. kMaxBackendLogprobs) top entries each.
  std::vector<int32_t> logprob_rows;
  int num_top_logprobs = 1;
};

class ModelRunner {
 public:
  // The model must have been loaded for at least max_num_batched_tokens tokens and max_num_seqs
  // logits rows per forward (ModelLoadOptions); throws pagoda::Error otherwise.
  ModelRunner(CausalLM& model, Backend& backend, const ModelRunnerConfig& config);

  // What one step hands back (host memory, valid until the next call).
  struct StepResult {
    // F32 logits [output.num_logits_rows, vocab] (the caller may edit rows in place): for each
    // scheduled request in order, its prompt-logprob rows (positions prompt_logprob_begin, ...),
    // then its sampling row if it samples. Empty when the caller did not want them.
    std::span<float> logits;
    // With sample_rows: the token Backend::sample_tokens drew from each logits row.
    std::span<const int32_t> sampled;
    // With logprob_rows (in their order): the drawn token's raw logprob, and num_top_logprobs
    // (id, logprob) entries per row, best first.
    std::span<const float> token_logprobs;
    std::span<const int32_t> top_ids;
    std::span<const float> top_logprobs;
    int num_top_logprobs = 0;
  };
  // Runs one step: launch() then wait().
  StepResult execute(const SchedulerOutput& output, const KvCacheManager& kv_cache,
                     const BackendSamplingInput* sampling = nullptr, bool want_logits = true);

  // Issues one step to the backend without waiting for it (async scheduling: the host schedules
  // the next step meanwhile). `sampling` has the backend edit (penalties, ...) and sample every
  // logits row where the logits are, copying back only the token ids; want_logits copies the
  // logits rows too. Tokens of the scheduled chunks that are kPlaceholderToken must be ones the
  // previously launched step samples on the backend: they are fed from its sampled tokens on
  // the device. At most two steps may be launched and not waited for, and only one of them may
  // want logits.
  void launch(const SchedulerOutput& output, const KvCacheManager& kv_cache,
              const BackendSamplingInput* sampling = nullptr, bool want_logits = true);
  // Waits for the oldest launched step that has not been waited for and returns what it handed
  // back (valid until the next launch() after the next wait()).
  StepResult wait();
  int num_in_flight() const { return static_cast<int>(in_flight_.size()); }

  int64_t vocab_size() const { return vocab_; }
  const ModelRunnerConfig& config() const { return config_; }
  // Bytes of KV memory one block takes across all layers (for sizing the pool).
  static size_t kv_bytes_per_block(const CausalLM& model, int block_size, DType kv_cache_dtype);
  // The batch sizes decode steps are padded to (empty: decode steps are not padded).
  const std::vector<int>& capture_sizes() const { return capture_sizes_; }
  int num_graphs() const { return static_cast<int>(graph_of_.size()); }
  // Records the decode graph of every capture size not recorded yet (vLLM captures them all at
  // start-up), so that no serving step pays for a first eager run and a recording (or, on a GPU,
  // for choosing its small-batch GEMM). Nothing may be in flight. Returns how many were recorded
  // (0 without graphs; it stops at the first recording that fails, as a step would).
  int capture_graphs();

 private:
  CausalLM& model_;
  Backend& backend_;
  ModelRunnerConfig config_;
  int64_t vocab_ = 0;
  int max_blocks_per_seq_ = 0;
  KvCache kv_;
  // Backend buffers, built on the host in the vectors, then staged through a host buffer
  // (page-locked on a GPU: the copies run asynchronously) into the backend buffers.
  DeviceBuffer ids_buf_, pos_buf_, slot_buf_, qsl_buf_, seq_lens_buf_, tables_buf_, logits_idx_buf_, logits_buf_;
  DeviceBuffer state_slots_buf_;  // hybrid models: each sequence's recurrent-state slot
  DeviceBuffer feed_buf_;         // [T, 2]: (token row, sampled row of the step before) (Backend::feed_tokens)
  std::vector<int32_t> ids_, pos_, slots_, qsl_, seq_lens_, tables_, logits_idx_, state_slots_, feed_;
  // Backend sampling: the rows' settings, the drawn tokens, the edits (grown on demand).
  DeviceBuffer sample_rows_buf_, sampled_buf_, edit_offsets_buf_;
  // Backend logprobs: the rows' indices, their raw logits (copied before the edits; grown on
  // demand), the drawn tokens of those rows and the results.
  DeviceBuffer lp_rows_buf_, lp_logits_buf_, lp_tokens_buf_, lp_token_buf_, lp_ids_buf_, lp_top_buf_;
  // Host memory a launched step reads or writes asynchronously, one set per parity: step k uses
  // set k % 2 and signals event k % 2, so a set is only reused after its step was waited for.
  struct HostSet {
    DeviceBuffer staging;   // the int32 inputs of one step
    DeviceBuffer rows;      // SamplingRows
    DeviceBuffer sampled;   // the drawn tokens
    DeviceBuffer edits, edits_dev;  // LogitEdits (host and backend copies, grown on demand)
    DeviceBuffer lp_token, lp_ids, lp_top;  // backend logprobs
  };
  HostSet host_[2];
  DeviceBuffer logits_host_;  // host: the logits rows of one step (one launched step at a time wants them)
  struct InFlight {
    int parity = 0;
    int num_rows = 0;  // logits rows
    bool sampled = false;
    bool logits = false;
    int num_logprob_rows = 0;
    int num_top_logprobs = 0;
  };
  std::vector<InFlight> in_flight_;  // launched and not waited for, oldest first
  int next_parity_ = 0;
  // The sampled_buf_ row of each request that the last launched step samples on the backend.
  std::unordered_map<const Request*, int32_t> last_sampled_rows_, sampled_rows_;
  // The graph recorded for padded batch size B, or -1.
  int graph_of(int B) const;
  // Padding sequences appended to the host inputs (graph layouts and recordings).
  void add_padding_sequences(int n);
  // Copies v through host's staging buffer (from element `staged`) into buf; returns the new end.
  size_t stage(HostSet& host, size_t staged, const DeviceBuffer& buf, const std::vector<int32_t>& v);
  // Stages the host inputs (ids_ ... state_slots_) into their backend buffers; returns the end.
  size_t upload_inputs(HostSet& host);
  // Runs the model on the uploaded inputs (a decode layout: replays or records its graph).
  void run_forward(int B, int T, int L_fwd, int width, int max_query_len, int max_seq_len, bool decode);
  std::vector<int> capture_sizes_;
  bool backend_graphs_ = false;        // record and replay (cleared if a recording fails)
  std::vector<std::pair<int, int>> graph_of_;  // (padded batch size, graph id)
};

}  // namespace pagoda
