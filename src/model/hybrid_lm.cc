#include "model/hybrid_lm.h"
#include "model/weights.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "base/dtype.h"
#include "base/error.h"
#include "base/log.h"

namespace pagoda {
namespace {

float to_f32(const uint8_t* p, DType dtype) {
  uint16_t h;
  switch (dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case DType::kBF16:
      std::memcpy(&h, p, 2);
      return bf16_to_f32(h);
    case DType::kF16:
      std::memcpy(&h, p, 2);
      return f16_to_f32(h);
    default:
      fail("unsupported dtype ", dtype_name(dtype));
  }
}

}  // namespace

HybridLM::HybridLM(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint, Backend& backend,
                   const ModelLoadOptions& options)
    : config_(std::move(config)),
      checkpoint_(std::move(checkpoint)),
      backend_(backend),
      options_(options),
      rope_(config_) {
  const std::string& type = config_.model_type;
  PAGODA_CHECK(type == "qwen3_next" || type == "qwen3_5" || type == "qwen3_5_moe", "HybridLM cannot build model_type \"",
               type, "\"");
  PAGODA_CHECK(config_.is_hybrid(), checkpoint_->dir(), "/config.json: no layer_types");
  PAGODA_CHECK(options_.max_num_tokens > 0 && options_.max_num_logits > 0,
               "ModelLoadOptions: max_num_tokens and max_num_logits must be positive");
  PAGODA_CHECK(!config_.attention_bias, checkpoint_->dir(), "/config.json: attention_bias is not supported for ", type);
  PAGODA_CHECK(!rope_.is_dynamic(), checkpoint_->dir(), "/config.json: dynamic RoPE is not supported for ", type);
  const auto act = config_.raw.find("hidden_act");
  if (act != config_.raw.end() && !act->is_null()) {
    PAGODA_CHECK(act->is_string() && act->get<std::string>() == "silu", checkpoint_->dir(),
                 "/config.json: hidden_act ", act->dump(), " is not supported (only \"silu\")");
  }
  const ModelConfig& c = config_;
  gdn_.num_k_heads = static_cast<int32_t>(c.linear_num_key_heads);
  gdn_.num_v_heads = static_cast<int32_t>(c.linear_num_value_heads);
  gdn_.k_head_dim = static_cast<int32_t>(c.linear_key_head_dim);
  gdn_.v_head_dim = static_cast<int32_t>(c.linear_value_head_dim);
  value_dim_ = c.linear_num_value_heads * c.linear_value_head_dim;
  conv_dim_ = 2 * c.linear_num_key_heads * c.linear_key_head_dim + value_dim_;
  num_state_slots_ = options_.num_state_slots > 0 ? options_.num_state_slots : options_.max_num_logits;
  prefix_ = checkpoint_->has("model.language_model.embed_tokens.weight") ? "model.language_model." : "model.";
  quant_ = resolve_weight_quantization(config_, checkpoint_->dir(), options_.quantization, options_.quantization_block);
  load_weights();
  allocate_workspace();
}

Tensor HybridLM::weight(const std::string& name, std::vector<int64_t> shape) {
  return place_weight_checked(*checkpoint_, backend_, &weight_storage_, name, shape);
}

Tensor HybridLM::linear_weight(const std::string& name, std::vector<int64_t> shape) {
  return place_linear_weight(*checkpoint_, backend_, &weight_storage_, name, shape, quant_);
}

Tensor HybridLM::upload_f32(const std::vector<float>& v, std::initializer_list<int64_t> dims) {
  weight_storage_.push_back(backend_.allocate(std::max<size_t>(v.size(), 1) * sizeof(float)));
  backend_.copy_from_host(weight_storage_.back().data(), v.data(), v.size() * sizeof(float));
  return weight_storage_.back().as(DType::kF32, dims);
}

// A small tensor converted to F32 on the host, plus `add` (1 for zero-centred norm weights).
Tensor HybridLM::f32_weight(const std::string& name, std::vector<int64_t> shape, float add) {
  const TensorInfo& info = checkpoint_->get(name, shape);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(n);
  const size_t es = dtype_size(info.dtype);
  for (int64_t i = 0; i < n; ++i) v[i] = to_f32(info.data + i * es, info.dtype) + add;
  Tensor t = upload_f32(v, {n});
  t.ndim = 0;
  for (int64_t d : shape) t.shape[t.ndim++] = d;
  return t;
}

// A new weight [rows.size(), cols] made of the given rows of a checkpoint matrix (same dtype).
std::vector<Tensor> HybridLM::rows_of(const std::string& name, std::vector<int64_t> shape,
                                      const std::vector<std::vector<int64_t>>& row_sets) {
  return place_linear_rows(*checkpoint_, backend_, &weight_storage_, name, shape, row_sets, quant_);
}

void HybridLM::load_weights() {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, D = c.head_dim;
  const int64_t Hq = c.num_attention_heads, q_dim = Hq * D, kv_dim = c.num_key_value_heads * D;
  const int64_t nk = c.linear_num_key_heads, nv = c.linear_num_value_heads, dk = c.linear_key_head_dim,
                dv = c.linear_value_head_dim, K = c.linear_conv_kernel_dim, r = nv / nk, key_dim = nk * dk;
  const std::string& P = prefix_;

  embed_tokens_ = weight(P + "embed_tokens.weight", {V, H});
  final_norm_ = f32_weight(P + "norm.weight", {H}, 1.0f);
  lm_head_ = c.tie_word_embeddings ? embed_tokens_ : weight("lm_head.weight", {V, H});

  layers_.resize(c.num_hidden_layers);
  int num_linear = 0;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = P + "layers." + std::to_string(i) + ".";
    Layer& l = layers_[i];
    l.input_norm = f32_weight(p + "input_layernorm.weight", {H}, 1.0f);
    l.post_attention_norm = f32_weight(p + "post_attention_layernorm.weight", {H}, 1.0f);
    l.linear = c.is_linear_attention_layer(i);
    if (!l.linear) {
      l.kv_index = num_full_layers_++;
      const std::string a = p + "self_attn.";
      // q_proj [2 * Hq * D, H], rows of head h: [q_h (D) | gate_h (D)].
      std::vector<int64_t> qrows, grows;
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t d = 0; d < D; ++d) {
          qrows.push_back(h * 2 * D + d);
          grows.push_back(h * 2 * D + D + d);
        }
      const std::vector<Tensor> q_gate = rows_of(a + "q_proj.weight", {2 * q_dim, H}, {qrows, grows});
      l.q_proj = q_gate[0];
      l.gate_proj_attn = q_gate[1];
      l.k_proj = linear_weight(a + "k_proj.weight", {kv_dim, H});
      l.v_proj = linear_weight(a + "v_proj.weight", {kv_dim, H});
      l.o_proj = linear_weight(a + "o_proj.weight", {H, q_dim});
      l.q_norm = f32_weight(a + "q_norm.weight", {D}, 1.0f);
      l.k_norm = f32_weight(a + "k_norm.weight", {D}, 1.0f);
    } else {
      l.state_index = num_linear++;
      const std::string a = p + "linear_attn.";
      if (checkpoint_->has(a + "in_proj_qkvz.weight")) {
        // Qwen3-Next: rows grouped per key head g as [q_g (dk) | k_g (dk) | v_g (r dv) | z_g (r dv)];
        // in_proj_ba per group [b (r) | a (r)]. Reordered into flat [q | k | v], z, b, a.
        const int64_t gsz = 2 * dk + 2 * r * dv;
        std::vector<int64_t> qkv, z, b, av;
        for (int part = 0; part < 3; ++part)
          for (int64_t g = 0; g < nk; ++g) {
            const int64_t base = g * gsz + (part == 0 ? 0 : part == 1 ? dk : 2 * dk);
            const int64_t len = part == 2 ? r * dv : dk;
            for (int64_t e = 0; e < len; ++e) qkv.push_back(base + e);
          }
        for (int64_t g = 0; g < nk; ++g) {
          for (int64_t e = 0; e < r * dv; ++e) z.push_back(g * gsz + 2 * dk + r * dv + e);
          for (int64_t e = 0; e < r; ++e) {
            b.push_back(g * 2 * r + e);
            av.push_back(g * 2 * r + r + e);
          }
        }
        const std::vector<Tensor> qkvz = rows_of(a + "in_proj_qkvz.weight", {2 * key_dim + 2 * value_dim_, H}, {qkv, z});
        const std::vector<Tensor> ba = rows_of(a + "in_proj_ba.weight", {2 * nv, H}, {b, av});
        l.in_qkv = qkvz[0];
        l.in_z = qkvz[1];
        l.in_b = ba[0];
        l.in_a = ba[1];
      } else {
        // Qwen3.5: in_proj_qkv flat [q | k | v], in_proj_z, in_proj_b, in_proj_a.
        l.in_qkv = linear_weight(a + "in_proj_qkv.weight", {conv_dim_, H});
        l.in_z = linear_weight(a + "in_proj_z.weight", {value_dim_, H});
        l.in_b = linear_weight(a + "in_proj_b.weight", {nv, H});
        l.in_a = linear_weight(a + "in_proj_a.weight", {nv, H});
      }
      l.conv_w = f32_weight(a + "conv1d.weight", {conv_dim_, 1, K}, 0.0f).view({conv_dim_, K});
      l.A_log = f32_weight(a + "A_log", {nv}, 0.0f);
      l.dt_bias = f32_weight(a + "dt_bias", {nv}, 0.0f);
      l.gdn_norm = f32_weight(a + "norm.weight", {dv}, 0.0f);  // plain w (not zero-centred)
      l.out_proj = linear_weight(a + "out_proj.weight", {H, value_dim_});
    }
    l.moe = c.is_moe_layer(i);
    const std::string m = p + "mlp.";
    if (l.moe) {
      const int64_t E = c.num_experts, MI = c.moe_intermediate_size, SI = c.shared_expert_intermediate_size;
      l.router = weight(m + "gate.weight", {E, H});
      l.experts = load_moe_experts(*checkpoint_, backend_, &weight_storage_, m, E, MI, H, quant_);
      if (SI > 0 && checkpoint_->has(m + "shared_expert.gate_proj.weight")) {
        l.shared_gate = linear_weight(m + "shared_expert.gate_proj.weight", {SI, H});
        l.shared_up = linear_weight(m + "shared_expert.up_proj.weight", {SI, H});
        l.shared_down = linear_weight(m + "shared_expert.down_proj.weight", {H, SI});
        l.shared_expert_gate = weight(m + "shared_expert_gate.weight", {1, H});
      }
    } else {
      l.gate_proj = linear_weight(m + "gate_proj.weight", {I, H});
      l.up_proj = linear_weight(m + "up_proj.weight", {I, H});
      l.down_proj = linear_weight(m + "down_proj.weight", {H, I});
    }
  }

  // Multi-token-prediction head: kept (placed) for speculative decoding, unused by forward().
  for (const std::string& name : checkpoint_->names()) {
    if (name.rfind("mtp.", 0) == 0) {
      const TensorInfo& info = checkpoint_->get(name);
      mtp_[name] = backend_.place_weight(info.view(), &weight_storage_);
    }
  }
  if (!mtp_.empty()) log_info(checkpoint_->dir(), ": kept ", mtp_.size(), " MTP tensors (mtp.*), unused by forward");

  // State pool: per linear-attention layer, num_state_slots_ slots of conv + recurrent state.
  const int64_t S = num_state_slots_;
  states_.resize(num_linear);
  for (LinearAttnState& st : states_) {
    const size_t conv_bytes = static_cast<size_t>(S * conv_dim_ * (K - 1)) * sizeof(float);
    const size_t rec_bytes = static_cast<size_t>(S * nv * dk * dv) * sizeof(float);
    state_storage_.push_back(backend_.allocate(std::max<size_t>(conv_bytes, 4)));
    st.conv = state_storage_.back().as(DType::kF32, {S, conv_dim_, K - 1});
    state_storage_.push_back(backend_.allocate(rec_bytes));
    st.recurrent = state_storage_.back().as(DType::kF32, {S, nv, dk, dv});
    state_bytes_per_slot_ += static_cast<size_t>(conv_dim_ * (K - 1) + nv * dk * dv) * sizeof(float);
  }
}

void HybridLM::allocate_workspace() {
  const ModelConfig& c = config_;
  const int64_t T = options_.max_num_tokens, L = options_.max_num_logits;
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim, nv = c.linear_num_value_heads;
  const int64_t q_dim = c.num_attention_heads * D, kv_dim = c.num_key_value_heads * D;
  const DType act = backend_.activation_dtype();
  auto buffer = [&](DType dtype, std::initializer_list<int64_t> dims) {
    Tensor shape_only(nullptr, dtype, dims);
    const size_t bytes = (shape_only.nbytes() + 63) / 64 * 64;
    workspace_.push_back(backend_.allocate(std::max<size_t>(bytes, 64)));
    return workspace_.back().as(dtype, dims);
  };
  hidden_ = buffer(act, {T, H});
  normed_ = buffer(act, {T, H});
  out_ = buffer(act, {T, H});
  bool any_full = false, any_linear = false, any_dense = false, any_moe = false, any_shared = false;
  for (const Layer& l : layers_) {
    (l.linear ? any_linear : any_full) = true;
    (l.moe ? any_moe : any_dense) = true;
    any_shared |= l.shared_gate.data != nullptr;
  }
  if (any_full) {
    q_ = buffer(act, {T, q_dim});
    k_ = buffer(act, {T, kv_dim});
    v_ = buffer(act, {T, kv_dim});
    gate_ = buffer(act, {T, q_dim});
    attn_out_ = buffer(act, {T, q_dim});
  }
  if (any_linear) {
    qkv_raw_ = buffer(act, {T, conv_dim_});
    qkv_ = buffer(act, {T, conv_dim_});
    z_ = buffer(act, {T, value_dim_});
    a_ = buffer(act, {T, nv});
    b_ = buffer(act, {T, nv});
    core_ = buffer(act, {T, value_dim_});
    core_normed_ = buffer(act, {T, value_dim_});
  }
  if (any_dense) {
    mlp_gate_ = buffer(act, {T, I});
    mlp_up_ = buffer(act, {T, I});
  }
  if (any_moe) {
    const int64_t E = c.num_experts, K = c.num_experts_per_tok, R = T * K, MI = c.moe_intermediate_size;
    router_logits_ = buffer(DType::kF32, {T, E});
    topk_ids_ = buffer(DType::kI32, {T, K});
    topk_weights_ = buffer(DType::kF32, {T, K});
    moe_scratch_.x = buffer(act, {R, H});
    moe_scratch_.y = moe_scratch_.x;
    moe_scratch_.gate = buffer(act, {R, MI});
    moe_scratch_.up = buffer(act, {R, MI});
    moe_scratch_.row_of_pair = buffer(DType::kI32, {R});
    moe_scratch_.pair_of_row = buffer(DType::kI32, {R});
    moe_scratch_.expert_offsets = buffer(DType::kI32, {E + 1});
  }
  if (any_shared) {
    const int64_t SI = c.shared_expert_intermediate_size;
    sh_gate_ = buffer(act, {T, SI});
    sh_up_ = buffer(act, {T, SI});
    sh_out_ = buffer(act, {T, H});
    sh_logit_ = buffer(DType::kF32, {T, 1});
  }
  cos_sin_ = buffer(DType::kF32, {T, rope_.rotary_dim()});
  inv_freq_ = buffer(DType::kF32, {rope_.rotary_dim() / 2});
  gathered_ = buffer(act, {L, H});
  const RopeFrequencies& f = rope_.base();
  backend_.copy_from_host(inv_freq_.data, f.inv_freq.data(), f.inv_freq.size() * sizeof(float));
  attention_factor_ = f.attention_factor;
}

void HybridLM::forward(const ForwardBatch& batch, KvCache& kv, Tensor logits) {
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
  PAGODA_CHECK(static_cast<int>(kv.layers.size()) == num_full_layers_, "forward: KV cache has ", kv.layers.size(),
               " layers, the model ", num_full_layers_, " full-attention layers");
  PAGODA_CHECK(states_.empty() || batch.attn.state_slots.data != nullptr,
               "forward: a hybrid model needs a state slot per sequence (attn.state_slots)");
  PAGODA_CHECK(logits.dtype == DType::kF32 && logits.rows() >= L && logits.cols() == c.vocab_size,
               "forward: logits must be F32 [", L, ", ", c.vocab_size, "], got ", logits.shape_string());

  auto rows = [T](const Tensor& t) { return t.slice_rows(0, T); };
  Tensor hidden = rows(hidden_), normed = rows(normed_), out = rows(out_);
  Tensor cos_sin = rows(cos_sin_);
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int rotary_dim = rope_.rotary_dim();

  backend_.embedding(batch.token_ids, embed_tokens_, hidden);
  backend_.rope_cos_sin(batch.positions, inv_freq_, attention_factor_, cos_sin);

  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    if (i == 0) {
      backend_.rms_norm(hidden, l.input_norm, eps, normed);
    } else {
      backend_.add_rms_norm(hidden, out, l.input_norm, eps, normed);
    }

    if (!l.linear) {
      Tensor q = rows(q_), k = rows(k_), v = rows(v_);
      Tensor gate = rows(gate_), attn_out = rows(attn_out_);
      backend_.linears(normed, {&l.q_proj, &l.gate_proj_attn, &l.k_proj, &l.v_proj}, {nullptr, nullptr, nullptr, nullptr},
                       {q, gate, k, v});
      KvCacheLayer& cache = kv.layers[l.kv_index];
      backend_.qk_norm_rope_and_cache(q.view({T, Hq, D}), k.view({T, Hk, D}), v.view({T, Hk, D}), l.q_norm, l.k_norm,
                                      eps, cos_sin, rotary_dim, batch.attn.slot_mapping, cache);
      AttentionMetadata meta = batch.attn;
      meta.sliding_window = -1;
      backend_.paged_attention(q.view({T, Hq, D}), cache, meta, scale, attn_out.view({T, Hq, D}));
      backend_.sigmoid_mul(attn_out, gate);
      backend_.linear(attn_out, l.o_proj, nullptr, out);
    } else {
      Tensor qkv_raw = rows(qkv_raw_), qkv = rows(qkv_), z = rows(z_), a = rows(a_), b = rows(b_);
      Tensor core = rows(core_), core_normed = rows(core_normed_);
      LinearAttnState& st = states_[l.state_index];
      backend_.linears(normed, {&l.in_qkv, &l.in_z, &l.in_b, &l.in_a}, {nullptr, nullptr, nullptr, nullptr},
                       {qkv_raw, z, b, a});
      backend_.causal_conv1d(qkv_raw, l.conv_w, batch.attn, st, qkv);
      backend_.gated_delta_rule(qkv, a, b, l.A_log, l.dt_bias, gdn_, batch.attn, chunk_size_, st, core);
      const int64_t dv = c.linear_value_head_dim, nv = c.linear_num_value_heads;
      backend_.rms_norm_gated(core.view({T * nv, dv}), z.view({T * nv, dv}), l.gdn_norm, eps,
                              core_normed.view({T * nv, dv}));
      backend_.linear(core_normed, l.out_proj, nullptr, out);
    }

    backend_.add_rms_norm(hidden, out, l.post_attention_norm, eps, normed);
    if (l.moe) {
      Tensor router_logits = rows(router_logits_), ids = rows(topk_ids_), weights = rows(topk_weights_);
      backend_.linear(normed, l.router, nullptr, router_logits);
      backend_.moe_route(router_logits, c.norm_topk_prob, ids, weights);
      backend_.moe_experts(normed, ids, weights, l.experts, moe_scratch_, out);
      if (l.shared_gate.data != nullptr) {
        Tensor sg = rows(sh_gate_), su = rows(sh_up_), so = rows(sh_out_), logit = rows(sh_logit_);
        backend_.linear(normed, l.shared_expert_gate, nullptr, logit);
        backend_.gate_up_silu(normed, l.shared_gate, l.shared_up, sg, su, sg);
        backend_.linear(sg, l.shared_down, nullptr, so);
        backend_.sigmoid_mul(so, logit);
        backend_.add(out, so);
      }
    } else {
      Tensor gate = rows(mlp_gate_), up = rows(mlp_up_);
      backend_.gate_up_silu(normed, l.gate_proj, l.up_proj, gate, up, gate);
      backend_.linear(gate, l.down_proj, nullptr, out);
    }
  }
  backend_.add_rms_norm(hidden, out, final_norm_, eps, normed);
  if (L == 0) return;
  Tensor gathered = gathered_.slice_rows(0, L);
  backend_.gather_rows(normed, batch.logits_indices, gathered);
  backend_.linear(gathered, lm_head_, nullptr, logits.slice_rows(0, L));
}

std::unique_ptr<CausalLM> make_hybrid_lm(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint, Backend& backend,
                                         const ModelLoadOptions& options) {
  return std::make_unique<HybridLM>(std::move(config), std::move(checkpoint), backend, options);
}

}  // namespace pagoda
