// A test backend that behaves like a GPU stream in front of the CPU backend: every op and copy
// is queued and runs only when the host waits (wait_event, synchronize, copy_to_host). Copies
// from host memory that allocate_host handed out are read when the queue reaches them (DMA from
// page-locked memory), copies to the host land then too; copies from any other host memory are
// taken at the call (as cudaMemcpyAsync from pageable memory). So a caller that rewrites a host
// buffer before the step that reads it has run, or reads results before waiting, gets wrong
// tokens here as it would on a GPU.
#pragma once

#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"

namespace pagoda::test_support {

class DeferredBackend final : public Backend {
 public:
  explicit DeferredBackend(std::unique_ptr<Backend> inner) : b_(std::move(inner)) {}
  ~DeferredBackend() override { queue_.clear(); }  // what is left refers to buffers already freed

  std::string name() const override { return "deferred " + b_->name(); }
  DType activation_dtype() const override { return b_->activation_dtype(); }
  bool samples_on_device() const override { return true; }
  int64_t num_ops_run() const { return executed_; }

  DeviceBuffer allocate(size_t bytes) override { return b_->allocate(bytes); }
  DeviceBuffer allocate_host(size_t bytes) override {
    DeviceBuffer buf = b_->allocate_host(bytes);
    host_ranges_.emplace_back(static_cast<const char*>(buf.data()), bytes);
    return buf;
  }
  void copy_from_host(void* dst, const void* src, size_t bytes) override {
    if (is_host_buffer(src, bytes)) {
      enqueue([=, this] { b_->copy_from_host(dst, src, bytes); });
    } else {
      auto copy = std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + bytes);
      enqueue([=, this] { b_->copy_from_host(dst, copy->data(), bytes); });
    }
  }
  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    synchronize();
    b_->copy_to_host(dst, src, bytes);
  }
  void copy_to_host_async(void* dst, const void* src, size_t bytes) override {
    enqueue([=, this] { b_->copy_to_host(dst, src, bytes); });
  }
  void record_event(int slot) override { marks_.at(static_cast<size_t>(slot)) = enqueued_; }
  void wait_event(int slot) override { run_until(marks_.at(static_cast<size_t>(slot))); }
  void synchronize() override { run_until(enqueued_); }
  Tensor place_weight(const Tensor& host, std::vector<DeviceBuffer>* storage) override {
    return b_->place_weight(host, storage);
  }
  void weights_loaded() override { b_->weights_loaded(); }
  KvCache allocate_kv_cache(int num_layers, int num_blocks, int block_size, int num_kv_heads, int head_dim,
                            DType dtype) override {
    return b_->allocate_kv_cache(num_layers, num_blocks, block_size, num_kv_heads, head_dim, dtype);
  }

  void embedding(const Tensor& ids, const Tensor& table, Tensor out) override {
    enqueue([=, this] { b_->embedding(ids, table, out); });
  }
  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor out) override {
    enqueue([=, this] { b_->rms_norm(x, weight, eps, out); });
  }
  void add_rms_norm(Tensor residual, const Tensor& x, const Tensor& weight, float eps, Tensor out) override {
    enqueue([=, this] { b_->add_rms_norm(residual, x, weight, eps, out); });
  }
  void linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor out) override {
    const std::optional<Tensor> b = bias != nullptr ? std::optional<Tensor>(*bias) : std::nullopt;
    enqueue([=, this] { b_->linear(x, weight, b ? &*b : nullptr, out); });
  }
  // (The base class runs linears as one linear per weight, through linear() above.)
  void rope_cos_sin(const Tensor& positions, const Tensor& inv_freq, float attention_factor, Tensor cos_sin) override {
    enqueue([=, this] { b_->rope_cos_sin(positions, inv_freq, attention_factor, cos_sin); });
  }
  void rope_and_cache(Tensor q, Tensor k, const Tensor& v, const Tensor& cos_sin, int rotary_dim,
                      const Tensor& slot_mapping, KvCacheLayer& cache) override {
    const KvCacheLayer c = cache;
    enqueue([=, this] {
      KvCacheLayer layer = c;
      b_->rope_and_cache(q, k, v, cos_sin, rotary_dim, slot_mapping, layer);
    });
  }
  void paged_attention(const Tensor& q, const KvCacheLayer& cache, const AttentionMetadata& meta, float scale,
                       Tensor out) override {
    const KvCacheLayer c = cache;
    const AttentionMetadata m = meta;
    enqueue([=, this] { b_->paged_attention(q, c, m, scale, out); });
  }
  void silu_and_mul(const Tensor& gate, const Tensor& up, Tensor out) override {
    enqueue([=, this] { b_->silu_and_mul(gate, up, out); });
  }
  void gather_rows(const Tensor& x, const Tensor& indices, Tensor out) override {
    enqueue([=, this] { b_->gather_rows(x, indices, out); });
  }
  void add(Tensor a, const Tensor& b) override {
    enqueue([=, this] { b_->add(a, b); });
  }
  void feed_tokens(Tensor ids, const Tensor& feed, const Tensor& sampled) override {
    enqueue([=, this] { b_->feed_tokens(ids, feed, sampled); });
  }
  void sample_tokens(const Tensor& logits, const Tensor& rows, Tensor tokens) override {
    enqueue([=, this] { b_->sample_tokens(logits, rows, tokens); });
  }
  void compute_logprobs(const Tensor& logits, const Tensor& tokens, Tensor token_logprobs, Tensor top_ids,
                        Tensor top_logprobs) override {
    enqueue([=, this] { b_->compute_logprobs(logits, tokens, token_logprobs, top_ids, top_logprobs); });
  }
  void apply_logit_edits(Tensor logits, const Tensor& rows, const Tensor& edits, const Tensor& offsets) override {
    enqueue([=, this] { b_->apply_logit_edits(logits, rows, edits, offsets); });
  }
  void moe_route(const Tensor& router_logits, bool renormalize, Tensor ids, Tensor weights) override {
    enqueue([=, this] { b_->moe_route(router_logits, renormalize, ids, weights); });
  }
  void moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const MoeExpertWeights& experts,
                   const MoeScratch& scratch, Tensor out) override {
    const auto e = std::make_shared<MoeExpertWeights>(experts);
    const MoeScratch s = scratch;
    enqueue([=, this] { b_->moe_experts(x, ids, weights, *e, s, out); });
  }
  void sigmoid_mul(Tensor x, const Tensor& gate) override {
    enqueue([=, this] { b_->sigmoid_mul(x, gate); });
  }
  void rms_norm_gated(const Tensor& x, const Tensor& z, const Tensor& weight, float eps, Tensor out) override {
    enqueue([=, this] { b_->rms_norm_gated(x, z, weight, eps, out); });
  }
  void causal_conv1d(const Tensor& x, const Tensor& weight, const AttentionMetadata& meta, LinearAttnState& state,
                     Tensor out) override {
    const AttentionMetadata m = meta;
    const LinearAttnState st = state;
    enqueue([=, this] {
      LinearAttnState s = st;
      b_->causal_conv1d(x, weight, m, s, out);
    });
  }
  void gated_delta_rule(const Tensor& qkv, const Tensor& a, const Tensor& b, const Tensor& A_log,
                        const Tensor& dt_bias, const GdnShape& shape, const AttentionMetadata& meta, int chunk_size,
                        LinearAttnState& state, Tensor out) override {
    const AttentionMetadata m = meta;
    const LinearAttnState st = state;
    enqueue([=, this] {
      LinearAttnState s = st;
      b_->gated_delta_rule(qkv, a, b, A_log, dt_bias, shape, m, chunk_size, s, out);
    });
  }

 private:
  void enqueue(std::function<void()> op) {
    queue_.push_back(std::move(op));
    ++enqueued_;
  }
  void run_until(int64_t n) {
    while (executed_ < n) {
      std::function<void()> op = std::move(queue_.front());
      queue_.pop_front();
      op();
      ++executed_;
    }
  }
  bool is_host_buffer(const void* p, size_t bytes) const {
    const char* c = static_cast<const char*>(p);
    for (const auto& [base, size] : host_ranges_)
      if (c >= base && c + bytes <= base + size) return true;
    return false;
  }

  std::unique_ptr<Backend> b_;
  std::deque<std::function<void()>> queue_;
  int64_t enqueued_ = 0, executed_ = 0;
  std::vector<int64_t> marks_ = std::vector<int64_t>(kNumEvents, 0);
  std::vector<std::pair<const char*, size_t>> host_ranges_;  // (freed host buffers stay listed: tests only)
};

}  // namespace pagoda::test_support
