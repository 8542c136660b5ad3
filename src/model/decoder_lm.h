// The decoder-only transformer shared by qwen2, qwen3, llama and qwen3_moe:
//   h = embed(ids); per layer: h += o_proj(attn(rope(qk_norm?(qkv(rms(h)))))); h += mlp(rms(h));
//   logits = lm_head(rms(h)[logits_indices]).
// Differences between the architectures are flags read from the config at load time:
// q/k/v biases (qwen2 always, llama/qwen3 with attention_bias; llama's attention_bias also adds
// an o_proj bias), per-head q/k RMSNorm (qwen3), tied embeddings, RoPE scaling, sliding-window
// layers (qwen2/qwen3 with use_sliding_window), sparse MoE MLPs (qwen3_moe: softmax top-k router,
// SwiGLU experts run as one grouped GEMM per expert by Backend::moe_experts).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "model/weights.h"
#include "model/rope.h"

namespace pagoda {

class DecoderLM : public CausalLM {
 public:
  DecoderLM(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint, Backend& backend,
            const ModelLoadOptions& options);

  const ModelConfig& config() const override { return config_; }
  int num_kv_layers() const override { return static_cast<int>(config_.num_hidden_layers); }
  int num_kv_heads() const override { return static_cast<int>(config_.num_key_value_heads); }
  int head_dim() const override { return static_cast<int>(config_.head_dim); }

  void forward(const ForwardBatch& batch, KvCache& kv, Tensor logits) override;
  bool replayable_decode() const override;

  // The sliding window of layer i (0 = full attention).
  int sliding_window(int layer) const { return layers_[layer].sliding_window; }
  // Whether layer i's MLP is a sparse mixture of experts.
  bool is_moe_layer(int layer) const { return layers_[layer].moe; }

 private:
  struct Layer {
    Tensor input_norm, post_attention_norm;
    Tensor q_proj, k_proj, v_proj, o_proj;
    Tensor q_bias, k_bias, v_bias, o_bias;  // data == nullptr when absent
    Tensor q_norm, k_norm;                  // qwen3
    Tensor gate_proj, up_proj, down_proj;  // dense MLP
    bool moe = false;
    Tensor router;                         // qwen3_moe: mlp.gate.weight [E, H]
    MoeExpertWeights experts;
    int sliding_window = 0;
  };

  Tensor weight(const std::string& name, std::initializer_list<int64_t> shape);
  // A linear of the layer stack: FP8 when the checkpoint or --quantization says so.
  Tensor linear_weight(const std::string& name, std::initializer_list<int64_t> shape);
  void load_weights();
  void load_experts(const std::string& prefix, Layer& l);
  void allocate_workspace();
  void update_rope(int32_t max_seq_len);

  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;  // keeps zero-copy weights mapped
  Backend& backend_;
  ModelLoadOptions options_;
  WeightQuantization quant_;
  RotaryEmbedding rope_;
  bool qk_norm_ = false;
  bool o_bias_ = false;

  std::vector<DeviceBuffer> weight_storage_;
  Tensor embed_tokens_, final_norm_, lm_head_;
  std::vector<Layer> layers_;

  // Activation workspace, allocated once for options_.max_num_tokens tokens.
  std::vector<DeviceBuffer> workspace_;
  Tensor hidden_;     // [T, H] residual stream
  Tensor normed_;     // [T, H]
  Tensor q_, k_, v_;  // [T, Hq * D], [T, Hk * D], [T, Hk * D]
  Tensor attn_out_;   // [T, Hq * D]
  Tensor out_;        // [T, H]: output of attention / MLP, added to the residual by the next norm
  Tensor gate_, up_;  // [T, I] (only when a layer has a dense MLP)
  // MoE: router logits F32 [T, E], top-k ids I32 / weights F32 [T, k], grouped-GEMM scratch.
  Tensor router_logits_, topk_ids_, topk_weights_;
  MoeScratch moe_scratch_;
  Tensor cos_sin_;    // F32 [T, rotary_dim]
  Tensor inv_freq_;   // F32 [rotary_dim / 2]
  Tensor gathered_;   // [max_num_logits, H]
  float attention_factor_ = 1.0f;
  int64_t rope_seq_len_ = -1;  // dynamic NTK: the effective length inv_freq_ was computed for
};

std::unique_ptr<CausalLM> make_decoder_lm(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint,
                                          Backend& backend, const ModelLoadOptions& options);

}  // namespace pagoda
