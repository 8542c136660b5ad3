// Weight loading shared by the model classes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "io/model_config.h"

namespace pagoda {

// How a model's linear weights are stored and run (vLLM's --quantization plus the checkpoint's
// quantization_config).
//  - FP8 checkpoints: a linear stored as F8_E4M3 comes with F32 / BF16 / F16 scales named
//    `<weight>_scale_inv` (quant_method "fp8": Qwen's and DeepSeek's *-FP8 releases) or
//    `<weight>_scale` (quant_method "compressed-tensors", float 8-bit: e.g. *-FP8-dynamic); the
//    scale shape says the granularity: one value (per tensor), [N] or [N, 1] (per output channel),
//    or [ceil(N / bn), ceil(K / bk)] (bn x bk blocks; weight_block_size when the config names it,
//    else N / rows and K / columns of the scale grid, as transformers derives it). The value of
//    element (n, k) is weight * scale of its block. Activations stay unquantized (W8A16): input /
//    activation scales of a checkpoint are not used.
//  - online ("fp8" requested on an unquantized checkpoint): every linear of the layer stack is
//    quantized at load in blocks of `block` x `block`: scale = max(amax / 448, 1e-12), weight =
//    E4M3(w / scale) rounded to nearest even (what transformers' and DeepSeek's block
//    quantization compute). Embeddings, lm_head, norms and MoE routers stay as stored.
struct WeightQuantization {
  std::string method;      // "" (none), "fp8" or "compressed-tensors"
  bool online = false;     // quantize unquantized linears at load
  int64_t online_block = 128;
  int64_t block_n = 0;     // the checkpoint's weight_block_size (0: derive from each scale's shape)
  int64_t block_k = 0;
};

// The quantization of a model from its config.json and the requested method ("" = the
// checkpoint's); throws pagoda::Error naming an unsupported method or a mismatch.
WeightQuantization resolve_weight_quantization(const ModelConfig& config, const std::string& dir,
                                               const std::string& requested, int online_block);

// A linear layer's weight `name` [N, K]: as place_weight_checked, or FP8 with block scales (an
// FP8 checkpoint tensor, or quantized at load when q.online).
Tensor place_linear_weight(const Checkpoint& checkpoint, Backend& backend, std::vector<DeviceBuffer>* storage,
                           const std::string& name, const std::vector<int64_t>& shape, const WeightQuantization& q);

// For each row set, those rows of linear `name` [N, K], in that order, as one weight (a copy): as
// stored, or FP8 (an FP8 checkpoint tensor, or quantized once at load in the tensor's own block
// layout) with each row keeping the scales of its block (per-row scales: block 1 x block_k).
std::vector<Tensor> place_linear_rows(const Checkpoint& checkpoint, Backend& backend,
                                      std::vector<DeviceBuffer>* storage, const std::string& name,
                                      const std::vector<int64_t>& shape,
                                      const std::vector<std::vector<int64_t>>& row_sets, const WeightQuantization& q);

// host (BF16 / F16 / F32 [N, K], host memory) quantized at load in block x block blocks and placed.
Tensor place_quantized_fp8(Backend& backend, std::vector<DeviceBuffer>* storage, const Tensor& host, int64_t block);

// Quantizes w (BF16, F16 or F32 [N, K], host memory) to E4M3 in blocks of block_n x block_k:
// q [N * K] bytes and scales [ceil(N / block_n) * ceil(K / block_k)] F32 (see WeightQuantization).
void quantize_fp8_blocks(const Tensor& w, int64_t block_n, int64_t block_k, uint8_t* q, float* scales);

// The checkpoint tensor `name`, checked against `shape` and a floating dtype (BF16, F16, F32;
// errors name the file and tensor), placed on the backend (zero-copy where it can; any buffer it
// needs is appended to `storage`).
Tensor place_weight_checked(const Checkpoint& checkpoint, Backend& backend, std::vector<DeviceBuffer>* storage,
                            const std::string& name, const std::vector<int64_t>& shape);

// The E SwiGLU experts under `prefix` ("model.layers.N.mlp."), each [I, H] gate / up and [H, I]
// down: per expert (experts.{e}.{gate,up,down}_proj.weight, what checkpoints and transformers'
// save_pretrained write) or fused (experts.gate_up_proj [E, 2I, H] with the gate rows first,
// experts.down_proj [E, H, I]: transformers' in-memory layout), viewed per expert without copying.
// Expert weights go through place_linear_weight (FP8 experts; fused ones are quantized per expert).
MoeExpertWeights load_moe_experts(const Checkpoint& checkpoint, Backend& backend, std::vector<DeviceBuffer>* storage,
                                  const std::string& prefix, int64_t num_experts, int64_t intermediate,
                                  int64_t hidden, const WeightQuantization& q);

}  // namespace pagoda
