// The Backend ops interface. Model code is written once against these coarse ops; the CPU
// backend (cpu/) and the CUDA backend (cuda/) each implement them. Contract for every op:
//  - tensors are row-major contiguous views of this backend's memory;
//  - ops never allocate and never synchronise with the host (buffers come from workspaces
//    allocated up front), so a decode step can be captured as a CUDA graph;
//  - activations are activation_dtype() (CPU: F32, CUDA: BF16); weights may be BF16, F16 or F32;
//    accumulation is always FP32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/sampling_math.h"
#include "base/tensor.h"

namespace pagoda {

// Owning handle to backend memory.
class DeviceBuffer {
 public:
  using Deleter = void (*)(void*);
  DeviceBuffer() = default;
  DeviceBuffer(void* data, size_t bytes, Deleter deleter) : data_(data), bytes_(bytes), deleter_(deleter) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(o.data_), bytes_(o.bytes_), deleter_(o.deleter_) {
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = o.data_;
      bytes_ = o.bytes_;
      deleter_ = o.deleter_;
      o.data_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return bytes_; }
  Tensor as(DType dtype, std::initializer_list<int64_t> dims) const {
    Tensor t(data_, dtype, dims);
    PAGODA_ASSERT(t.nbytes() <= bytes_);
    return t;
  }

 private:
  void reset() {
    if (data_ != nullptr && deleter_ != nullptr) deleter_(data_);
    data_ = nullptr;
  }
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Deleter deleter_ = nullptr;
};

// The paged KV cache of one attention layer. The backend chooses the memory layout of k and v
// (CPU: [num_blocks, num_kv_heads, block_size, head_dim], so one head of one block is a
// contiguous tile); model and engine only pass the handle to ops.
struct KvCacheLayer {
  Tensor k;
  Tensor v;
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
};

// Owns the KV pool of all attention layers (one allocation per layer).
struct KvCache {
  std::vector<KvCacheLayer> layers;
  std::vector<DeviceBuffer> storage;
};

// A flattened, variable-length batch: sequence s contributes query tokens
// [query_start_loc[s], query_start_loc[s+1]) of the batch (a prefill chunk or one decode token).
// Those tokens sit at the last positions of the sequence's context, which is seq_lens[s] tokens
// long after this step; token i of the chunk attends causally to context positions
// [0, seq_lens[s] - query_len + i]. All tensors are I32 in backend memory; the scalar fields are
// host-side copies the backend may use to size its launch.
struct AttentionMetadata {
  Tensor query_start_loc;  // [num_seqs + 1]
  Tensor seq_lens;         // [num_seqs]
  Tensor block_tables;     // [num_seqs, max_blocks_per_seq]: physical block ids
  Tensor slot_mapping;     // [num_tokens]: block_id * block_size + offset where K/V is written; -1 = skip
  int32_t num_seqs = 0;
  int32_t num_tokens = 0;
  int32_t max_query_len = 0;
  int32_t max_seq_len = 0;
  int32_t sliding_window = -1;  // > 0: a query attends only to the last `sliding_window` keys
  // Hybrid (linear-attention) models only: I32 [num_seqs], the state slot of each sequence (see
  // LinearAttnState). data == nullptr when the model keeps no per-sequence state. kPaddingSlot
  // marks a padding sequence (the padded decode batches replayed as CUDA graphs): the linear-
  // attention ops write zeros for its tokens and touch no state.
  Tensor state_slots;
  static constexpr int32_t kPaddingSlot = -1;
};

// The per-sequence state of one Gated DeltaNet (linear-attention) layer for num_slots sequences,
// both F32: conv [num_slots, conv_dim, K - 1] holds the raw conv inputs of the last K - 1 tokens
// (oldest first); recurrent [num_slots, n_v, d_k, d_v] holds the delta-rule state S of each value
// head. A sequence whose chunk starts at position 0 (seq_lens[s] == query length) starts from a
// zero state and ignores what its slot held; otherwise it continues from its slot. Each op
// leaves the state after the sequence's last token in its slot.
struct LinearAttnState {
  Tensor conv;
  Tensor recurrent;
};

// Head layout of a Gated DeltaNet layer: value head h reads key head h / (num_v_heads / num_k_heads).
struct GdnShape {
  int32_t num_k_heads = 0;
  int32_t num_v_heads = 0;
  int32_t k_head_dim = 0;
  int32_t v_head_dim = 0;
};

// The experts of one sparse MoE block (SwiGLU experts): expert e has gate[e], up[e] [I, H] and
// down[e] [H, I]. Views of per-expert tensors or slices of fused [E, ...] tensors.
struct MoeExpertWeights {
  std::vector<Tensor> gate, up, down;
};

// Workspace of moe_experts for R = T * top_k (token, expert) pairs: x [R, H] and y [R, H]
// (activation dtype; y may alias x), gate and up [R, I] (activation dtype), and I32 index
// arrays row_of_pair [R], pair_of_row [R], expert_offsets [E + 1].
struct MoeScratch {
  Tensor x, y, gate, up;
  Tensor row_of_pair, pair_of_row, expert_offsets;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;
  // dtype of hidden states between ops.
  virtual DType activation_dtype() const = 0;

  // ---- memory --------------------------------------------------------------------------
  virtual DeviceBuffer allocate(size_t bytes) = 0;
  // Host memory for staging copies to / from this backend: page-locked on a GPU, so that copies
  // run at full speed and asynchronously (a buffer handed to copy_from_host must then stay
  // unchanged until the backend has synchronised). The CPU backend: plain host memory.
  virtual DeviceBuffer allocate_host(size_t bytes) { return allocate(bytes); }
  virtual void copy_from_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;
  // Makes a host weight (e.g. an mmapped checkpoint tensor) usable by ops. The CPU backend
  // returns the same view (zero-copy); a device backend copies into `storage`.
  virtual Tensor place_weight(const Tensor& host, std::vector<DeviceBuffer>* storage) = 0;
  // Every weight of a model has been placed (load_model calls it): a backend may wait for its
  // copies and release what it used to make them.
  virtual void weights_loaded() {}
  // Allocates the KV pool: num_layers layers of num_blocks blocks of block_size tokens.
  virtual KvCache allocate_kv_cache(int num_layers, int num_blocks, int block_size, int num_kv_heads,
                                    int head_dim, DType dtype) = 0;
  virtual void synchronize() = 0;
  // Device memory (GPU backends): free and total bytes of the device right now. false when the
  // backend has no separate device memory (the CPU backend), whose KV pool is sized by
  // --kv-cache-memory instead.
  virtual bool memory_info(size_t* free_bytes, size_t* total_bytes) {
    (void)free_bytes;
    (void)total_bytes;
    return false;
  }

  // ---- asynchronous steps (async scheduling) -----------------------------------------------
  // copy_to_host without waiting: dst holds the data once wait_event() returns for an event
  // recorded after this call. The default (and the CPU backend) copies at once.
  virtual void copy_to_host_async(void* dst, const void* src, size_t bytes) { copy_to_host(dst, src, bytes); }
  // record_event(slot) marks how far the backend's queue of work has been issued; wait_event(slot)
  // blocks until everything issued before the latest record_event(slot) has run. Slots are
  // 0 .. kNumEvents - 1. The CPU backend runs each op when it is called: both are no-ops there.
  static constexpr int kNumEvents = 4;
  virtual void record_event(int slot) { (void)slot; }
  virtual void wait_event(int slot) { (void)slot; }

  // ---- graphs (CUDA graphs) -----------------------------------------------------------
  // Records the ops `enqueue` issues, without running them, as a graph that replay_graph runs
  // again later on the same buffers; returns its id. -1 when this backend has no graphs (the CPU
  // backend): nothing was recorded and `enqueue` was not called. Throws pagoda::Error when the
  // recording fails (the backend stays usable).
  virtual int capture_graph(const std::function<void()>& enqueue) {
    (void)enqueue;
    return -1;
  }
  virtual void replay_graph(int id) { fail("this backend has no graphs (replay_graph ", id, ")"); }
  virtual bool has_graphs() const { return false; }

  // ---- ops -----------------------------------------------------------------------------
  // out[t, :] = table[ids[t], :]   (ids I32 [T], table [V, H], out [T, H])
  virtual void embedding(const Tensor& ids, const Tensor& table, Tensor out) = 0;
  // Row-wise out = x * rsqrt(mean(x^2) + eps) * weight over the last dimension (x [R, H]).
  // Used for per-head q/k norm too, with x viewed as [T * heads, head_dim].
  virtual void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor out) = 0;
  // Fused residual add + norm: residual += x; out = rms_norm(residual) * weight.
  virtual void add_rms_norm(Tensor residual, const Tensor& x, const Tensor& weight, float eps, Tensor out) = 0;
  // out[T, N] = x[T, K] * weight[N, K]^T (+ bias[N] if bias is non-null).
  virtual void linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor out) = 0;
  // Several linears over the same input (q/k/v, gate/up) as one op: outs[i] = linear(x,
  // weights[i], biases[i]). Weights stay separate tensors (zero-copy); a backend may run them
  // as one pass (the CPU backend shares one parallel region, so decode streams all of them
  // without a join between). biases[i] may be null.
  virtual void linears(const Tensor& x, std::initializer_list<const Tensor*> weights,
                       std::initializer_list<const Tensor*> biases, std::initializer_list<Tensor> outs) {
    PAGODA_ASSERT(weights.size() == biases.size() && weights.size() == outs.size());
    auto w = weights.begin();
    auto b = biases.begin();
    for (const Tensor& o : outs) linear(x, **w++, *b++, o);
  }
  // The ops around a dense layer's linears, so that a backend may fold them into its GEMM (the
  // CUDA backend does for decode steps: the small-batch GEMM, cuda_gemv.h). The defaults run
  // the separate ops; a fused form may round differently (noted per op).
  //
  // residual[T, N] += linear(x, weight, bias): the product stored in the activation dtype (into
  // `scratch` [T, N], which a fused form leaves alone), then add()ed.
  virtual void linear_add(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor scratch,
                          Tensor residual) {
    linear(x, weight, bias, scratch);
    add(residual, scratch);
  }
  // outs[i] = linear(rms_norm(x) * norm_weight, weights[i], biases[i]), x [T, K]: the default
  // normalises into `normed` [T, K] and runs linears. Fused, the FP32 products are scaled by the
  // row's inverse RMS instead (the normalised row is never rounded to the activation dtype) and
  // `normed` is left alone.
  virtual void rms_norm_linears(const Tensor& x, const Tensor& norm_weight, float eps, Tensor normed,
                                std::initializer_list<const Tensor*> weights,
                                std::initializer_list<const Tensor*> biases, std::initializer_list<Tensor> outs) {
    rms_norm(x, norm_weight, eps, normed);
    linears(normed, weights, biases, outs);
  }
  // cos_sin[T, rotary_dim] (F32): for token t and frequency i < rotary_dim/2,
  // cos_sin[t, i] = cos(pos_t * inv_freq[i]) * attention_factor and
  // cos_sin[t, rotary_dim/2 + i] = sin(...) * attention_factor. Computed once per forward.
  virtual void rope_cos_sin(const Tensor& positions, const Tensor& inv_freq, float attention_factor,
                            Tensor cos_sin) = 0;
  // Rotates the first rotary_dim dims of every head of q [T, Hq, D] and k [T, Hk, D] in place
  // (NeoX rotate_half pairing: i with i + rotary_dim/2), then writes k and v [T, Hk, D] into the
  // cache at slot_mapping.
  virtual void rope_and_cache(Tensor q, Tensor k, const Tensor& v, const Tensor& cos_sin, int rotary_dim,
                              const Tensor& slot_mapping, KvCacheLayer& cache) = 0;
  // Qwen3's per-head q / k norm fused with rope_and_cache: every head of q [T, Hq, D] and of
  // k [T, Hk, D] is first replaced, in place, by rms_norm(head) * q_norm (k_norm) [D] with
  // rms_norm's rounding (the normalised head is stored in the activation dtype), then rotated and
  // cached exactly as rope_and_cache does. One op instead of three on a backend that fuses them
  // (the CUDA backend: one kernel); the default runs the three.
  virtual void qk_norm_rope_and_cache(Tensor q, Tensor k, const Tensor& v, const Tensor& q_norm, const Tensor& k_norm,
                                      float eps, const Tensor& cos_sin, int rotary_dim, const Tensor& slot_mapping,
                                      KvCacheLayer& cache) {
    const int64_t D = cache.head_dim;
    PAGODA_CHECK(D > 0 && q.numel() % D == 0 && k.numel() % D == 0, "qk_norm_rope_and_cache: q ", q.shape_string(),
                 " k ", k.shape_string(), " vs head_dim ", D);
    Tensor qh = q.view({q.numel() / D, D}), kh = k.view({k.numel() / D, D});
    rms_norm(qh, q_norm, eps, qh);
    rms_norm(kh, k_norm, eps, kh);
    rope_and_cache(q, k, v, cos_sin, rotary_dim, slot_mapping, cache);
  }
  // out [T, Hq, D] = softmax(q k^T * scale + causal mask) v over the paged context; GQA: query
  // head h reads KV head h / (Hq / Hk).
  virtual void paged_attention(const Tensor& q, const KvCacheLayer& cache, const AttentionMetadata& meta,
                               float scale, Tensor out) = 0;
  // out [T, I] = silu(gate [T, I]) * up [T, I]  (out may alias gate).
  virtual void silu_and_mul(const Tensor& gate, const Tensor& up, Tensor out) = 0;
  // The first half of a SwiGLU MLP as one op: out [T, I] = silu(x gate_w^T) * (x up_w^T), with
  // the rounding of linears() followed by silu_and_mul() (each product is stored in the
  // activation dtype first). gate and up [T, I] are scratch the op may write; out may alias gate.
  // The default runs linears and silu_and_mul; the CUDA backend fuses all of it into one
  // small-batch GEMM launch for decode steps.
  virtual void gate_up_silu(const Tensor& x, const Tensor& gate_w, const Tensor& up_w, Tensor gate, Tensor up,
                            Tensor out) {
    linears(x, {&gate_w, &up_w}, {nullptr, nullptr}, {gate, up});
    silu_and_mul(gate, up, out);
  }
  // gate_up_silu(rms_norm(x) * norm_weight, ...), with rms_norm_linears' two forms.
  virtual void rms_norm_gate_up_silu(const Tensor& x, const Tensor& norm_weight, float eps, Tensor normed,
                                     const Tensor& gate_w, const Tensor& up_w, Tensor gate, Tensor up, Tensor out) {
    rms_norm(x, norm_weight, eps, normed);
    gate_up_silu(normed, gate_w, up_w, gate, up, out);
  }
  // out[i, :] = x[indices[i], :]   (indices I32 [N])
  virtual void gather_rows(const Tensor& x, const Tensor& indices, Tensor out) = 0;
  // a += b (same shape).
  virtual void add(Tensor a, const Tensor& b) = 0;
  // ids[feed[i, 0]] = sampled[feed[i, 1]] for every i (all I32; feed [N, 2]): tokens that the
  // step before sampled into `sampled`, fed into this step's token ids without a trip through
  // the host (async scheduling).
  virtual void feed_tokens(Tensor ids, const Tensor& feed, const Tensor& sampled) = 0;

  // ---- sampling -------------------------------------------------------------------------
  // tokens[r] (I32 [R]) = one draw from row r of logits (F32 [R, V]) under rows[r] (the R
  // SamplingRow structs in backend memory, viewed as I32 [R, kSamplingRowWords]): greedy, temperature, top-k, min-p, top-p,
  // seeded; sampling_math.h defines it exactly. Both backends implement it; the engine samples
  // this way (copying back only token ids) when samples_on_device() says it pays.
  virtual void sample_tokens(const Tensor& logits, const Tensor& rows, Tensor tokens) = 0;
  // Edits logits (F32 [R, V]) in place before sample_tokens: row r gets the LogitEdits
  // edits[offsets[r], offsets[r + 1]) (edits viewed as I32 [N, 4], offsets I32 [R + 1]; each
  // token at most once per row) with the penalties of rows[r] (sampling_math.h's
  // apply_logit_edit: min_tokens masks, logit_bias, repetition / presence / frequency penalties).
  virtual void apply_logit_edits(Tensor logits, const Tensor& rows, const Tensor& edits, const Tensor& offsets) = 0;
  // Raw logprobs of rows of logits (F32 [N, V]: the model's output before any edit), for requests
  // that want logprobs of what the backend sampled: lse_r = log(sum_i exp(l_ri - m_r)) + m_r (FP32
  // exp, FP64 sum), token_logprobs[r] (F32 [N]) = l[r, tokens[r]] - lse_r (tokens I32 [N]), and the
  // K = top_ids.cols() (1 <= K <= V) largest entries of the row (value descending, lowest id first
  // on ties) as top_ids (I32 [N, K]) and top_logprobs (F32 [N, K], l - lse_r).
  virtual void compute_logprobs(const Tensor& logits, const Tensor& tokens, Tensor token_logprobs, Tensor top_ids,
                                Tensor top_logprobs) = 0;
  // True when sample_tokens runs where the logits already are (a GPU): the engine then avoids
  // copying logits rows to the host for requests it can sample this way.
  virtual bool samples_on_device() const { return false; }

  // ---- mixture of experts ----------------------------------------------------------------
  // Top-k routing: p = softmax(router_logits[t, :]) (F32 [T, E], computed in F32); ids[t, :] (I32
  // [T, k]) are the k most probable experts in descending probability (ties: lower id first) and
  // weights[t, :] (F32 [T, k]) their probabilities, divided by their sum when `renormalize`.
  virtual void moe_route(const Tensor& router_logits, bool renormalize, Tensor ids, Tensor weights) = 0;
  // out[t, :] = sum_j weights[t, j] * down_e(silu(gate_e x[t]) * up_e x[t]) with e = ids[t, j]
  // (summed in j order). The (token, expert) pairs are grouped by expert and every expert with
  // tokens runs as one GEMM over its rows: gather, gate/up, silu_and_mul, down, weighted scatter.
  virtual void moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const MoeExpertWeights& experts,
                           const MoeScratch& scratch, Tensor out) = 0;

  // ---- hybrid attention (Qwen3-Next / Qwen3.5) --------------------------------------------
  // x *= sigmoid(gate), gate [T, N] elementwise or [T, 1] broadcast over the row.
  virtual void sigmoid_mul(Tensor x, const Tensor& gate) = 0;
  // Gated RMSNorm: out = weight * rms_norm(x) * silu(z) row-wise (x, z, out [R, d]; weight [d]).
  virtual void rms_norm_gated(const Tensor& x, const Tensor& z, const Tensor& weight, float eps, Tensor out) = 0;
  // Causal depthwise conv1d + SiLU over each sequence of the batch: out[t, c] = silu(sum_j
  // weight[c, j] * x[t - (K-1) + j, c]) where inputs before the chunk come from state.conv of the
  // sequence's slot (zeros at position 0); the slot is then updated. x, out [T, C]; weight F32 [C, K].
  virtual void causal_conv1d(const Tensor& x, const Tensor& weight, const AttentionMetadata& meta,
                             LinearAttnState& state, Tensor out) = 0;
  // Gated delta rule. qkv [T, 2 n_k d_k + n_v d_v] = [q | k | v] after the conv; a, b [T, n_v];
  // A_log, dt_bias F32 [n_v]. Per token: q, k L2-normalised per head (eps 1e-6), q *= d_k^-1/2,
  // g = -exp(A_log) * softplus(a + dt_bias), beta = sigmoid(b); per value head
  // S <- exp(g) S; S <- S + k (beta (v - S^T k))^T; o = S^T q. out [T, n_v d_v].
  // chunk_size > 0: a sequence with more than one query token runs the chunked (WY) form over
  // chunks of chunk_size tokens (same result up to rounding); 0: token by token throughout.
  virtual void gated_delta_rule(const Tensor& qkv, const Tensor& a, const Tensor& b, const Tensor& A_log,
                                const Tensor& dt_bias, const GdnShape& shape, const AttentionMetadata& meta,
                                int chunk_size, LinearAttnState& state, Tensor out) = 0;
};

// The CPU backend (AVX-512 / AVX2 kernels chosen at run time, all cores).
std::unique_ptr<Backend> make_cpu_backend();

// The CUDA backend on GPU `device` (BF16 activations, one stream). Throws pagoda::Error when this
// build has no CUDA or the device cannot be used.
std::unique_ptr<Backend> make_cuda_backend(int device = 0);
// Number of usable CUDA devices: 0 when built without CUDA or without a driver / device. Never throws.
int cuda_device_count();

}  // namespace pagoda
