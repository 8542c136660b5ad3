#include "model/weights.h"

#include "base/error.h"

namespace pagoda {

Tensor place_weight_checked(const Checkpoint& checkpoint, Backend& backend, std::vector<DeviceBuffer>* storage,
                            const std::string& name, const std::vector<int64_t>& shape) {
  const TensorInfo& info = checkpoint.get(name, shape);
  PAGODA_CHECK(info.dtype == DType::kBF16 || info.dtype == DType::kF16 || info.dtype == DType::kF32, info.file,
               ": tensor ", name, " has dtype ", dtype_name(info.dtype), "; supported: BF16, F16, F32");
  return backend.place_weight(info.view(), storage);
}

MoeExpertWeights load_moe_experts(const Checkpoint& checkpoint, Backend& backend, std::vector<DeviceBuffer>* storage,
                                  const std::string& prefix, int64_t E, int64_t I, int64_t H) {
  auto weight = [&](const std::string& name, const std::vector<int64_t>& shape) {
    return place_weight_checked(checkpoint, backend, storage, name, shape);
  };
  MoeExpertWeights w;
  w.gate.resize(static_cast<size_t>(E));
  w.up.resize(static_cast<size_t>(E));
  w.down.resize(static_cast<size_t>(E));
  const bool fused = checkpoint.has(prefix + "experts.gate_up_proj");
  const Tensor gate_up = fused ? weight(prefix + "experts.gate_up_proj", {E, 2 * I, H}) : Tensor{};
  const Tensor down = fused ? weight(prefix + "experts.down_proj", {E, H, I}) : Tensor{};
  for (int64_t e = 0; e < E; ++e) {
    const size_t k = static_cast<size_t>(e);
    if (fused) {
      const Tensor gu = gate_up.slice_rows(e, e + 1).view({2 * I, H});
      w.gate[k] = gu.slice_rows(0, I);
      w.up[k] = gu.slice_rows(I, 2 * I);
      w.down[k] = down.slice_rows(e, e + 1).view({H, I});
    } else {
      const std::string q = prefix + "experts." + std::to_string(e) + ".";
      w.gate[k] = weight(q + "gate_proj.weight", {I, H});
      w.up[k] = weight(q + "up_proj.weight", {I, H});
      w.down[k] = weight(q + "down_proj.weight", {H, I});
    }
  }
  return w;
}

}  // namespace pagoda
