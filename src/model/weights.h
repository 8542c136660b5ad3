// Weight loading shared by the model classes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"

namespace pagoda {

// The checkpoint tensor `name`, checked against `shape` and a floating dtype (BF16, F16, F32;
// errors name the file and tensor), placed on the backend (zero-copy where it can; any buffer it
// needs is appended to `storage`).
Tensor place_weight_checked(const Checkpoint& checkpoint, Backend& backend, std::vector<DeviceBuffer>* storage,
                            const std::string& name, const std::vector<int64_t>& shape);

// The E SwiGLU experts under `prefix` ("model.layers.N.mlp."), each [I, H] gate / up and [H, I]
// down: per expert (experts.{e}.{gate,up,down}_proj.weight, what checkpoints and transformers'
// save_pretrained write) or fused (experts.gate_up_proj [E, 2I, H] with the gate rows first,
// experts.down_proj [E, H, I]: transformers' in-memory layout), viewed per expert without copying.
MoeExpertWeights load_moe_experts(const Checkpoint& checkpoint, Backend& backend, std::vector<DeviceBuffer>* storage,
                                  const std::string& prefix, int64_t num_experts, int64_t intermediate,
                                  int64_t hidden);

}  // namespace pagoda
