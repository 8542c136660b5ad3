#include "model/decoder_lm.h"
#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "base/error.h"

namespace pagoda {

DecoderLM::DecoderLM(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint, Backend& backend,
                     const ModelLoadOptions& options)
    : config_(std::move(config)),
      checkpoint_(std::move(checkpoint)),
      backend_(backend),
      options_(options),
      rope_(config_) {
  const std::string& type = config_.model_type;
  PAGODA_CHECK(type == "qwen2" || type == "qwen3" || type == "llama" || type == "qwen3_moe",
               "DecoderLM cannot build model_type \"", type, "\"");
  PAGODA_CHECK(options_.max_num_tokens > 0 && options_.max_num_logits > 0,
               "ModelLoadOptions: max_num_tokens and max_num_logits must be positive");
  const auto act = config_.raw.find("hidden_act");
  if (act != config_.raw.end() && !act->is_null()) {
    PAGODA_CHECK(act->is_string() && act->get<std::string>() == "silu", checkpoint_->dir(),
                 "/config.json: hidden_act ", act->dump(), " is not supported (only \"silu\")");
  }
  qk_norm_ = type == "qwen3" || type == "qwen3_moe";
  // Llama/Qwen3MoeAttention: o_proj bias=attention_bias (Qwen2's o_proj never has one).
  o_bias_ = (type == "llama" || type == "qwen3_moe") && config_.attention_bias;
  quant_ = resolve_weight_quantization(config_, checkpoint_->dir(), options_.quantization, options_.quantization_block);
  load_weights();
  allocate_workspace();
}

Tensor DecoderLM::weight(const std::string& name, std::initializer_list<int64_t> shape) {
  return place_weight_checked(*checkpoint_, backend_, &weight_storage_, name, std::vector<int64_t>(shape));
}

Tensor DecoderLM::linear_weight(const std::string& name, std::initializer_list<int64_t> shape) {
  return place_linear_weight(*checkpoint_, backend_, &weight_storage_, name, std::vector<int64_t>(shape), quant_);
}

void DecoderLM::load_weights() {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, D = c.head_dim;
  const int64_t q_dim = c.num_attention_heads * D, kv_dim = c.num_key_value_heads * D;

  embed_tokens_ = weight("model.embed_tokens.weight", {V, H});
  final_norm_ = weight("model.norm.weight", {H});
  lm_head_ = c.tie_word_embeddings ? embed_tokens_ : weight("lm_head.weight", {V, H});

  // Sliding-window layers: config.json's layer_types when present (what transformers uses),
  // else transformers' rule (layer i windowed when i >= max_window_layers).
  std::vector<bool> windowed(c.num_hidden_layers, false);
  if (c.use_sliding_window && c.sliding_window > 0) {
    const auto lt = c.raw.find("layer_types");
    if (lt != c.raw.end() && lt->is_array()) {
      PAGODA_CHECK(static_cast<int64_t>(lt->size()) == c.num_hidden_layers, checkpoint_->dir(),
                   "/config.json: layer_types has ", lt->size(), " entries, expected num_hidden_layers = ",
                   c.num_hidden_layers);
      for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
        const auto& e = (*lt)[i];
        PAGODA_CHECK(e.is_string(), checkpoint_->dir(), "/config.json: layer_types[", i, "] is not a string");
        const std::string s = e.get<std::string>();
        PAGODA_CHECK(s == "full_attention" || s == "sliding_attention", checkpoint_->dir(), "/config.json: layer_types[",
                     i, "] is \"", s, "\"; supported: full_attention, sliding_attention");
        windowed[i] = s == "sliding_attention";
      }
    } else {
      for (int64_t i = 0; i < c.num_hidden_layers; ++i) windowed[i] = i >= c.max_window_layers;
    }
  }

  layers_.resize(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer& l = layers_[i];
    l.input_norm = weight(p + "input_layernorm.weight", {H});
    l.post_attention_norm = weight(p + "post_attention_layernorm.weight", {H});
    l.q_proj = linear_weight(p + "self_attn.q_proj.weight", {q_dim, H});
    l.k_proj = linear_weight(p + "self_attn.k_proj.weight", {kv_dim, H});
    l.v_proj = linear_weight(p + "self_attn.v_proj.weight", {kv_dim, H});
    l.o_proj = linear_weight(p + "self_attn.o_proj.weight", {H, q_dim});
    if (c.attention_bias) {
      l.q_bias = weight(p + "self_attn.q_proj.bias", {q_dim});
      l.k_bias = weight(p + "self_attn.k_proj.bias", {kv_dim});
      l.v_bias = weight(p + "self_attn.v_proj.bias", {kv_dim});
    }
    if (o_bias_) l.o_bias = weight(p + "self_attn.o_proj.bias", {H});
    if (qk_norm_) {
      l.q_norm = weight(p + "self_attn.q_norm.weight", {D});
      l.k_norm = weight(p + "self_attn.k_norm.weight", {D});
    }
    l.moe = c.is_moe_layer(i);
    if (l.moe) {
      load_experts(p + "mlp.", l);
    } else {
      l.gate_proj = linear_weight(p + "mlp.gate_proj.weight", {I, H});
      l.up_proj = linear_weight(p + "mlp.up_proj.weight", {I, H});
      l.down_proj = linear_weight(p + "mlp.down_proj.weight", {H, I});
    }
    l.sliding_window = windowed[i] ? static_cast<int>(c.sliding_window) : 0;
  }
}

// Router mlp.gate.weight [E, H] and the experts (per-expert or fused on disk; see load_moe_experts).
void DecoderLM::load_experts(const std::string& p, Layer& l) {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.moe_intermediate_size, E = c.num_experts;
  l.router = weight(p + "gate.weight", {E, H});
  l.experts = load_moe_experts(*checkpoint_, backend_, &weight_storage_, p, E, I, H, quant_);
}

void DecoderLM::allocate_workspace() {
  const ModelConfig& c = config_;
  const int64_t T = options_.max_num_tokens, L = options_.max_num_logits;
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const int64_t q_dim = c.num_attention_heads * D, kv_dim = c.num_key_value_heads * D;
  const DType act = backend_.activation_dtype();
  auto buffer = [&](DType dtype, std::initializer_list<int64_t> dims) {
    Tensor shape_only(nullptr, dtype, dims);
    // Round every buffer up to 64 bytes so that each starts on a cache line / vector boundary.
    const size_t bytes = (shape_only.nbytes() + 63) / 64 * 64;
    workspace_.push_back(backend_.allocate(bytes));
    return workspace_.back().as(dtype, dims);
  };
  hidden_ = buffer(act, {T, H});
  normed_ = buffer(act, {T, H});
  q_ = buffer(act, {T, q_dim});
  k_ = buffer(act, {T, kv_dim});
  v_ = buffer(act, {T, kv_dim});
  attn_out_ = buffer(act, {T, q_dim});
  out_ = buffer(act, {T, H});
  bool any_dense = false, any_moe = false;
  for (const Layer& l : layers_) (l.moe ? any_moe : any_dense) = true;
  if (any_dense) {
    gate_ = buffer(act, {T, I});
    up_ = buffer(act, {T, I});
  }
  if (any_moe) {
    const int64_t E = c.num_experts, K = c.num_experts_per_tok, R = T * K, MI = c.moe_intermediate_size;
    router_logits_ = buffer(DType::kF32, {T, E});
    topk_ids_ = buffer(DType::kI32, {T, K});
    topk_weights_ = buffer(DType::kF32, {T, K});
    moe_scratch_.x = buffer(act, {R, H});
    moe_scratch_.y = moe_scratch_.x;  // allowed to alias (see Backend::moe_experts)
    moe_scratch_.gate = buffer(act, {R, MI});
    moe_scratch_.up = buffer(act, {R, MI});
    moe_scratch_.row_of_pair = buffer(DType::kI32, {R});
    moe_scratch_.pair_of_row = buffer(DType::kI32, {R});
    moe_scratch_.expert_offsets = buffer(DType::kI32, {E + 1});
  }
  cos_sin_ = buffer(DType::kF32, {T, rope_.rotary_dim()});
  inv_freq_ = buffer(DType::kF32, {rope_.rotary_dim() / 2});
  gathered_ = buffer(act, {L, H});

  const RopeFrequencies& f = rope_.base();
  backend_.copy_from_host(inv_freq_.data, f.inv_freq.data(), f.inv_freq.size() * sizeof(float));
  attention_factor_ = f.attention_factor;
  rope_seq_len_ = c.max_position_embeddings;
}

// Dynamic NTK (transformers' dynamic_rope_update): the frequencies of a forward pass follow the
// longest context in the batch once it exceeds max_position_embeddings. Uploaded only when the
// effective length changes; static rope types never get here.
void DecoderLM::update_rope(int32_t max_seq_len) {
  const int64_t len = std::max<int64_t>(max_seq_len, config_.max_position_embeddings);
  if (len == rope_seq_len_) return;
  const RopeFrequencies f = rope_.compute(len);
  backend_.copy_from_host(inv_freq_.data, f.inv_freq.data(), f.inv_freq.size() * sizeof(float));
  attention_factor_ = f.attention_factor;
  rope_seq_len_ = len;
}

bool DecoderLM::replayable_decode() const { return !rope_.is_dynamic(); }

void DecoderLM::forward(const ForwardBatch& batch, KvCache& kv, Tensor logits) {
  const ModelConfig& c = config_;
  const int64_t T = batch.token_ids.numel();
  const int64_t L = batch.logits_indices.numel();
  const int64_t D = c.head_dim, Hq = c.num_attention_heads, Hk = c.num_key_value_heads;
  PAGODA_CHECK(T > 0 && T <= options_.max_num_tokens, "forward: batch of ", T, " tokens; the model was loaded for at most ",
               options_.max_num_tokens);
  PAGODA_CHECK(L <= options_.max_num_logits, "forward: ", L, " logits rows requested; the model was loaded for at most ",
               options_.max_num_logits);
  PAGODA_CHECK(batch.positions.numel() == T && batch.attn.num_tokens == T, "forward: token_ids, positions and ",
               "attention metadata disagree on the number of tokens");
  PAGODA_CHECK(static_cast<int64_t>(kv.layers.size()) == c.num_hidden_layers, "forward: KV cache has ", kv.layers.size(),
               " layers, the model ", c.num_hidden_layers);
  PAGODA_CHECK(logits.dtype == DType::kF32 && logits.rows() >= L && logits.cols() == c.vocab_size,
               "forward: logits must be F32 [", L, ", ", c.vocab_size, "], got ", logits.shape_string());

  if (rope_.is_dynamic()) update_rope(batch.attn.max_seq_len);

  auto rows = [T](const Tensor& t) { return t.slice_rows(0, T); };
  Tensor hidden = rows(hidden_), normed = rows(normed_), q = rows(q_), k = rows(k_), v = rows(v_);
  Tensor attn_out = rows(attn_out_), out = rows(out_);
  Tensor cos_sin = rows(cos_sin_);
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int rotary_dim = rope_.rotary_dim();

  backend_.embedding(batch.token_ids, embed_tokens_, hidden);
  backend_.rope_cos_sin(batch.positions, inv_freq_, attention_factor_, cos_sin);

  AttentionMetadata meta = batch.attn;
  // The residual stream: `hidden`, plus `out` when `pending` (a MoE block's output not yet
  // added). Dense layers add their attention and MLP outputs into hidden as part of the last
  // linear (linear_add) and normalise as part of the next ones (rms_norm_linears,
  // rms_norm_gate_up_silu), which a backend may fuse (the CUDA backend's decode steps).
  bool pending = false;
  auto bias = [](const Tensor& b) { return b.data != nullptr ? &b : nullptr; };
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];

    // Attention.
    if (pending) {
      backend_.add_rms_norm(hidden, out, l.input_norm, eps, normed);
      backend_.linears(normed, {&l.q_proj, &l.k_proj, &l.v_proj}, {bias(l.q_bias), bias(l.k_bias), bias(l.v_bias)},
                       {q, k, v});
    } else {
      backend_.rms_norm_linears(hidden, l.input_norm, eps, normed, {&l.q_proj, &l.k_proj, &l.v_proj},
                                {bias(l.q_bias), bias(l.k_bias), bias(l.v_bias)}, {q, k, v});
    }
    KvCacheLayer& cache = kv.layers[i];
    if (qk_norm_) {
      backend_.qk_norm_rope_and_cache(q.view({T, Hq, D}), k.view({T, Hk, D}), v.view({T, Hk, D}), l.q_norm, l.k_norm,
                                      eps, cos_sin, rotary_dim, batch.attn.slot_mapping, cache);
    } else {
      backend_.rope_and_cache(q.view({T, Hq, D}), k.view({T, Hk, D}), v.view({T, Hk, D}), cos_sin, rotary_dim,
                              batch.attn.slot_mapping, cache);
    }
    meta.sliding_window = l.sliding_window > 0 ? l.sliding_window : -1;
    backend_.paged_attention(q.view({T, Hq, D}), cache, meta, scale, attn_out.view({T, Hq, D}));
    backend_.linear_add(attn_out, l.o_proj, bias(l.o_bias), out, hidden);

    // MLP.
    if (l.moe) {
      // Router logits in F32 (lm_head-style F32 output), softmax top-k, grouped expert GEMMs.
      backend_.rms_norm(hidden, l.post_attention_norm, eps, normed);
      Tensor router_logits = rows(router_logits_), ids = rows(topk_ids_), weights = rows(topk_weights_);
      backend_.linear(normed, l.router, nullptr, router_logits);
      backend_.moe_route(router_logits, c.norm_topk_prob, ids, weights);
      backend_.moe_experts(normed, ids, weights, l.experts, moe_scratch_, out);
      pending = true;
    } else {
      Tensor gate = rows(gate_), up = rows(up_);
      backend_.rms_norm_gate_up_silu(hidden, l.post_attention_norm, eps, normed, l.gate_proj, l.up_proj, gate, up,
                                     gate);
      backend_.linear_add(gate, l.down_proj, nullptr, out, hidden);
      pending = false;
    }
  }
  if (pending)
    backend_.add_rms_norm(hidden, out, final_norm_, eps, normed);
  else
    backend_.rms_norm(hidden, final_norm_, eps, normed);
  if (L == 0) return;
  Tensor gathered = gathered_.slice_rows(0, L);
  backend_.gather_rows(normed, batch.logits_indices, gathered);
  // lm_head writes F32 logits directly (activations may be BF16 on a device backend).
  backend_.linear(gathered, lm_head_, nullptr, logits.slice_rows(0, L));
}

std::unique_ptr<CausalLM> make_decoder_lm(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint,
                                          Backend& backend, const ModelLoadOptions& options) {
  return std::make_unique<DecoderLM>(std::move(config), std::move(checkpoint), backend, options);
}

}  // namespace pagoda
