// config.json and generation_config.json of a checkpoint folder.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/dtype.h"

namespace pagoda {

// rope_scaling / rope_parameters, normalised. type: "default", "linear", "dynamic", "yarn", "llama3".
struct RopeScaling {
  std::string type = "default";
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;  // yarn, llama3 (0 = use max_position_embeddings)
  std::optional<double> attention_factor;        // yarn (default 0.1 ln(factor) + 1)
  double beta_fast = 32.0;                       // yarn
  double beta_slow = 1.0;                        // yarn
  bool truncate = true;                          // yarn
  double low_freq_factor = 1.0;                  // llama3
  double high_freq_factor = 4.0;                 // llama3
};

struct ModelConfig {
  std::string model_type;  // qwen2 | qwen3 | llama | qwen3_moe (later: qwen3_next, qwen3_5, ...)
  std::vector<std::string> architectures;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  // Absent -> num_attention_heads (transformers' Qwen2/Qwen3Config would say 32, an artifact that
  // breaks any other head count, so we follow LlamaConfig's rule for all three).
  int64_t num_key_value_heads = 0;
  // Absent -> hidden_size / num_attention_heads; qwen3: 128 (Qwen3Config's default).
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double partial_rotary_factor = 1.0;
  RopeScaling rope_scaling;
  bool attention_bias = false;      // qkv bias (always true for qwen2)
  bool tie_word_embeddings = false;
  bool use_sliding_window = false;
  int64_t sliding_window = 0;
  int64_t max_window_layers = 0;
  // Mixture of experts (qwen3_moe; 0 / empty for dense models). Qwen3MoeConfig defaults: 128
  // experts (config.json may name it num_local_experts, which transformers 5 writes), top-8,
  // moe_intermediate_size 768, decoder_sparse_step 1, norm_topk_prob false, no mlp_only_layers.
  int64_t num_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  int64_t decoder_sparse_step = 1;
  bool norm_topk_prob = false;
  std::vector<int64_t> mlp_only_layers;
  // Hybrid attention (qwen3_next, qwen3_5, qwen3_5_moe): per layer "linear_attention" (Gated
  // DeltaNet) or "full_attention" (gated attention); empty for the other models.
  std::vector<std::string> layer_types;
  int64_t full_attention_interval = 4;
  int64_t linear_conv_kernel_dim = 0;
  int64_t linear_key_head_dim = 0;
  int64_t linear_value_head_dim = 0;
  int64_t linear_num_key_heads = 0;
  int64_t linear_num_value_heads = 0;
  int64_t shared_expert_intermediate_size = 0;  // qwen3_next / qwen3_5_moe MoE layers
  bool text_config_nested = false;  // qwen3_5*: fields came from config.json's text_config
  std::optional<DType> torch_dtype;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  nlohmann::json raw;  // the whole file, for architectures that need more fields

  int64_t rotary_dim() const { return static_cast<int64_t>(head_dim * partial_rotary_factor); }
  // Whether layer i's MLP is a sparse MoE block (transformers' Qwen3MoeDecoderLayer rule): i not in
  // mlp_only_layers, num_experts > 0 and (i + 1) % decoder_sparse_step == 0.
  bool is_moe_layer(int64_t i) const;
  bool is_hybrid() const { return !layer_types.empty(); }
  bool is_linear_attention_layer(int64_t i) const {
    return i < static_cast<int64_t>(layer_types.size()) && layer_types[i] == "linear_attention";
  }
};

// Reads and validates <model_dir>/config.json. Unknown model_type, a missing or mistyped
// required field, or inconsistent sizes give a pagoda::Error naming the file and field.
// Required: model_type, vocab_size, hidden_size, intermediate_size, num_hidden_layers,
// num_attention_heads. Other absent fields take transformers' defaults (max_position_embeddings
// 32768, llama 2048; rms_norm_eps 1e-6; rope_theta 10000; tie_word_embeddings false; llama
// bos/eos 1/2). llama with mlp_bias true is rejected.
ModelConfig load_model_config(const std::string& model_dir);
ModelConfig parse_model_config(const nlohmann::json& json, const std::string& file_name);

struct GenerationConfig {
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> pad_token_id;
  std::optional<bool> do_sample;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<double> min_p;
  std::optional<double> repetition_penalty;
  std::optional<int64_t> max_new_tokens;
};

// Reads <model_dir>/generation_config.json if present (absent file -> empty config).
GenerationConfig load_generation_config(const std::string& model_dir);

}  // namespace pagoda
