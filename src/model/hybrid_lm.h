// The hybrid-attention decoder of Qwen3-Next (qwen3_next) and Qwen3.5 (qwen3_5, qwen3_5_moe text
// model): layers are Gated DeltaNet linear attention or gated full attention (config layer_types),
//   h = embed(ids); per layer: h += mixer(norm(h)); h += mlp(norm(h)); logits = lm_head(norm(h)).
// Norms are zero-centred ((1 + w) scaling; the (1 + w) vectors are precomputed in F32 at load).
// Full attention: q_proj rows per head [q_h | gate_h] (split into two weights at load), per-head
// q/k norm, partial RoPE, paged attention, * sigmoid(gate), o_proj. Linear attention: projections
// to [q|k|v] (Qwen3-Next's interleaved in_proj_qkvz / in_proj_ba are reordered into Qwen3.5's
// flat in_proj_qkv / z / b / a at load), causal conv1d + SiLU, gated delta rule (chunked form
// for prefill, recurrent for decode), gated RMSNorm with z, out_proj. MLP: dense SwiGLU or MoE
// (softmax top-k experts + sigmoid-gated shared expert).
//
// State: full-attention layers use the paged KV cache (one KvCacheLayer per full-attention layer,
// in layer order); every linear-attention layer has num_state_slots() slots of conv + recurrent
// state, and a forward batch names each sequence's slot in attn.state_slots.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "model/weights.h"
#include "model/rope.h"

namespace pagoda {

class HybridLM : public CausalLM {
 public:
  HybridLM(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint, Backend& backend,
           const ModelLoadOptions& options);

  const ModelConfig& config() const override { return config_; }
  int num_kv_layers() const override { return num_full_layers_; }
  int num_kv_heads() const override { return static_cast<int>(config_.num_key_value_heads); }
  int head_dim() const override { return static_cast<int>(config_.head_dim); }
  int num_state_slots() const override { return num_state_slots_; }
  size_t state_bytes_per_slot() const override { return state_bytes_per_slot_; }

  void forward(const ForwardBatch& batch, KvCache& kv, Tensor logits) override;
  // Decode steps replay as CUDA graphs (no dynamic RoPE here; padding sequences of the padded
  // layout carry AttentionMetadata::kPaddingSlot and touch no recurrent state).
  bool replayable_decode() const override { return true; }

  bool is_linear_layer(int layer) const { return layers_[layer].linear; }
  bool is_moe_layer(int layer) const { return layers_[layer].moe; }
  // Tensors of the multi-token-prediction head (mtp.*), kept for speculative decoding.
  size_t num_mtp_tensors() const { return mtp_.size(); }
  // Chunk length of the chunked delta rule in prefill (0 = token by token).
  void set_gdn_chunk_size(int c) { chunk_size_ = c; }

 private:
  struct Layer {
    bool linear = false;
    Tensor input_norm, post_attention_norm;  // F32 (1 + w)
    // Full attention.
    int kv_index = -1;
    Tensor q_proj, gate_proj_attn, k_proj, v_proj, o_proj;
    Tensor q_norm, k_norm;  // F32 (1 + w)
    // Linear attention.
    int state_index = -1;
    Tensor in_qkv, in_z, in_b, in_a, out_proj;
    Tensor conv_w;                    // F32 [conv_dim, K]
    Tensor A_log, dt_bias, gdn_norm;  // F32
    // MLP.
    bool moe = false;
    Tensor gate_proj, up_proj, down_proj;
    Tensor router;
    MoeExpertWeights experts;
    Tensor shared_gate, shared_up, shared_down, shared_expert_gate;  // shared_* absent: no shared expert
  };

  Tensor weight(const std::string& name, std::vector<int64_t> shape);
  // A linear of the layer stack: FP8 when the checkpoint or --quantization says so.
  Tensor linear_weight(const std::string& name, std::vector<int64_t> shape);
  Tensor f32_weight(const std::string& name, std::vector<int64_t> shape, float add);
  std::vector<Tensor> rows_of(const std::string& name, std::vector<int64_t> shape,
                              const std::vector<std::vector<int64_t>>& row_sets);
  Tensor upload_f32(const std::vector<float>& v, std::initializer_list<int64_t> dims);
  void load_weights();
  void allocate_workspace();

  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  Backend& backend_;
  ModelLoadOptions options_;
  WeightQuantization quant_;
  RotaryEmbedding rope_;
  std::string prefix_;  // "model." or "model.language_model."
  GdnShape gdn_;
  int64_t conv_dim_ = 0, value_dim_ = 0;
  int num_full_layers_ = 0;
  int num_state_slots_ = 0;
  size_t state_bytes_per_slot_ = 0;
  int chunk_size_ = 64;

  std::vector<DeviceBuffer> weight_storage_;
  Tensor embed_tokens_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  std::map<std::string, Tensor> mtp_;

  std::vector<LinearAttnState> states_;  // per linear-attention layer
  std::vector<DeviceBuffer> state_storage_;

  std::vector<DeviceBuffer> workspace_;
  Tensor hidden_, normed_, out_;
  Tensor q_, k_, v_, gate_, attn_out_;
  Tensor qkv_raw_, qkv_, z_, a_, b_, core_, core_normed_;
  Tensor mlp_gate_, mlp_up_;
  Tensor router_logits_, topk_ids_, topk_weights_;
  MoeScratch moe_scratch_;
  Tensor sh_gate_, sh_up_, sh_out_, sh_logit_;
  Tensor cos_sin_, inv_freq_, gathered_;
  float attention_factor_ = 1.0f;
};

std::unique_ptr<CausalLM> make_hybrid_lm(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint, Backend& backend,
                                         const ModelLoadOptions& options);

}  // namespace pagoda
