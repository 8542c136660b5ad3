#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/error.h"
#include "base/thread_pool.h"

namespace pagoda {

Tensor place_weight_checked(const Checkpoint& checkpoint, Backend& backend, std::vector<DeviceBuffer>* storage,
                            const std::string& name, const std::vector<int64_t>& shape) {
  const TensorInfo& info = checkpoint.get(name, shape);
  PAGODA_CHECK(info.dtype == DType::kBF16 || info.dtype == DType::kF16 || info.dtype == DType::kF32, info.file,
               ": tensor ", name, " has dtype ", dtype_name(info.dtype), "; supported: BF16, F16, F32");
  return backend.place_weight(info.view(), storage);
}

namespace {

bool is_float(DType d) { return d == DType::kBF16 || d == DType::kF16 || d == DType::kF32; }

float element_as_f32(const void* p, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// Positive integer entry `i` of a JSON array, or an error naming `what`.
int64_t positive_int(const nlohmann::json& a, size_t i, const std::string& what) {
  PAGODA_CHECK(a.is_array() && a.size() > i && a[i].is_number_integer() && a[i].get<int64_t>() > 0, what,
               " must be two positive integers, got ", a.dump());
  return a[i].get<int64_t>();
}

// A compressed-tensors config whose every quantized group is FP8 weights (float, 8 bits).
void check_compressed_tensors(const nlohmann::json& qc, const std::string& where, WeightQuantization* q) {
  const auto groups = qc.find("config_groups");
  PAGODA_CHECK(groups != qc.end() && groups->is_object() && !groups->empty(), where,
               ": compressed-tensors quantization_config has no config_groups");
  for (const auto& [name, group] : groups->items()) {
    const std::string at = where + ": quantization_config.config_groups." + name;
    PAGODA_CHECK(group.is_object() && group.contains("weights") && group["weights"].is_object(), at,
                 " has no \"weights\" scheme");
    const auto& w = group["weights"];
    const std::string type = w.value("type", std::string());
    const int bits = w.value("num_bits", 0);
    PAGODA_CHECK(type == "float" && bits == 8, at, ".weights is ", type.empty() ? "?" : type, " ", bits,
                 "-bit; supported: float 8-bit (FP8) weights");
    const std::string strategy = w.value("strategy", std::string("tensor"));
    PAGODA_CHECK(strategy == "tensor" || strategy == "channel" || strategy == "block", at, ".weights.strategy \"",
                 strategy, "\" is not supported (tensor, channel, block)");
    if (strategy == "block" && w.contains("block_structure") && !w["block_structure"].is_null()) {
      q->block_n = positive_int(w["block_structure"], 0, at + ".weights.block_structure");
      q->block_k = positive_int(w["block_structure"], 1, at + ".weights.block_structure");
    }
  }
}

// Host memory for `bytes`, kept in `storage` (the CPU backend then uses it in place).
void* host_buffer(Backend& backend, std::vector<DeviceBuffer>* storage, size_t bytes) {
  storage->push_back(backend.allocate_host(std::max<size_t>(bytes, 1)));
  return storage->back().data();
}

// Places FP8 data + F32 scales [grid_n, grid_k] of blocks bn x bk as one block-scaled weight.
Tensor place_fp8(Backend& backend, std::vector<DeviceBuffer>* storage, const Tensor& data, const float* scales,
                 int64_t grid, int64_t bn, int64_t bk) {
  PAGODA_CHECK(bn <= INT32_MAX && bk <= INT32_MAX, "FP8 weight: scale block ", bn, " x ", bk, " too large");
  const Tensor placed_scales = backend.place_weight(Tensor(const_cast<float*>(scales), DType::kF32, {grid}), storage);
  Tensor t = backend.place_weight(data, storage);
  t.scale = placed_scales.ptr<float>();
  t.scale_block_n = static_cast<int32_t>(bn);
  t.scale_block_k = static_cast<int32_t>(bk);
  return t;
}

// The F32 scales of FP8 checkpoint tensor `info` [N, K] and their block (see WeightQuantization).
std::vector<float> read_fp8_scales(const Checkpoint& checkpoint, const TensorInfo& info, int64_t N, int64_t K,
                                   const WeightQuantization& q, int64_t* block_n, int64_t* block_k) {
  const std::string& name = info.name;
  const std::string inv = name + "_scale_inv", plain = name + "_scale";
  const bool has_inv = checkpoint.has(inv);
  PAGODA_CHECK(has_inv || checkpoint.has(plain), info.file, ": FP8 tensor ", name, " has no scales (", inv, " or ",
               plain, ")");
  const TensorInfo& s = checkpoint.get(has_inv ? inv : plain);
  PAGODA_CHECK(is_float(s.dtype), s.file, ": tensor ", s.name, " has dtype ", dtype_name(s.dtype),
               "; supported: F32, BF16, F16");
  const int64_t count = static_cast<int64_t>(s.nbytes / dtype_size(s.dtype));
  int64_t bn = 0, bk = 0;
  if (count == 1) {
    bn = N;
    bk = K;
  } else if ((s.shape.size() == 1 && s.shape[0] == N) || (s.shape.size() == 2 && s.shape[0] == N && s.shape[1] == 1)) {
    bn = 1;
    bk = K;
  } else if (s.shape.size() == 2) {
    const int64_t gn = s.shape[0], gk = s.shape[1];
    if (q.block_n > 0) {
      bn = q.block_n;
      bk = q.block_k;
    } else if (gn > 0 && gk > 0 && N % gn == 0 && K % gk == 0) {
      bn = N / gn;
      bk = K / gk;
    }
    PAGODA_CHECK(bn > 0 && gn == (N + bn - 1) / bn && gk == (K + bk - 1) / bk, s.file, ": scales ", s.name, " ",
                 s.shape_string(), " do not fit weight [", N, ", ", K, "]",
                 q.block_n > 0 ? " in blocks of weight_block_size" : "");
  }
  PAGODA_CHECK(bn > 0, s.file, ": scales ", s.name, " ", s.shape_string(), " do not fit weight [", N, ", ", K,
               "] (one value, [N], [N, 1] or a block grid)");
  std::vector<float> scales(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    scales[i] = element_as_f32(s.data, s.dtype, i);
    PAGODA_CHECK(std::isfinite(scales[i]), s.file, ": scales ", s.name, " hold a non-finite value at ", i);
  }
  *block_n = bn;
  *block_k = bk;
  return scales;
}

}  // namespace

WeightQuantization resolve_weight_quantization(const ModelConfig& config, const std::string& dir,
                                               const std::string& requested, int online_block) {
  WeightQuantization q;
  q.online_block = online_block;
  PAGODA_CHECK(online_block > 0, "quantization block must be positive, got ", online_block);
  const std::string where = dir + "/config.json";
  const auto qc = config.raw.find("quantization_config");
  if (qc != config.raw.end() && !qc->is_null()) {
    PAGODA_CHECK(qc->is_object() && qc->contains("quant_method") && (*qc)["quant_method"].is_string(), where,
                 ": quantization_config has no quant_method");
    q.method = (*qc)["quant_method"].get<std::string>();
    if (q.method == "fp8") {
      const std::string fmt = qc->value("fmt", std::string("e4m3"));
      PAGODA_CHECK(fmt == "e4m3", where, ": quantization_config.fmt \"", fmt, "\" is not supported (only e4m3)");
      const auto wbs = qc->find("weight_block_size");
      if (wbs != qc->end() && !wbs->is_null()) {
        q.block_n = positive_int(*wbs, 0, where + ": quantization_config.weight_block_size");
        q.block_k = positive_int(*wbs, 1, where + ": quantization_config.weight_block_size");
      }
    } else if (q.method == "compressed-tensors") {
      check_compressed_tensors(*qc, where, &q);
    } else {
      fail(where, ": quantization_config.quant_method \"", q.method,
           "\" is not supported (supported: fp8, and compressed-tensors with FP8 weights)");
    }
    PAGODA_CHECK(requested.empty() || requested == q.method, "--quantization ", requested,
                 " does not match the checkpoint's quantization_config.quant_method \"", q.method, "\" (", where,
                 "); leave --quantization out to use the checkpoint's");
    return q;
  }
  if (requested.empty()) return q;
  PAGODA_CHECK(requested == "fp8", "--quantization ", requested,
               " is not supported: the checkpoint is unquantized and only fp8 can quantize it at load");
  q.method = "fp8";
  q.online = true;
  return q;
}

namespace {

// quantize_fp8_blocks for one storage type: Get(i) is element i as f32.
template <class Get>
void quantize_fp8_typed(const Get& get, int64_t N, int64_t K, int64_t bn, int64_t bk, uint8_t* q, float* scales) {
  const int64_t gn = (N + bn - 1) / bn, gk = (K + bk - 1) / bk;
  auto block_row = [&](int64_t bi) {
    const Get get_local = get;  // a local copy: the byte stores to q cannot alias its pointer
    const int64_t n0 = bi * bn, n1 = std::min(N, n0 + bn);
    // amax as the bits of |w|: for finite values the integer order is the float order, and an
    // integer max vectorizes where a float one (NaN rules) does not.
    std::vector<int32_t> amax(static_cast<size_t>(gk), 0);
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t kb = 0, bj = 0; kb < K; kb += bk, ++bj) {
        int32_t m = amax[static_cast<size_t>(bj)];
        const int64_t k1 = std::min(K, kb + bk), base = n * K;
        for (int64_t k = kb; k < k1; ++k) {
          const float v = get_local(base + k);
          int32_t b;
          std::memcpy(&b, &v, sizeof(b));
          b &= 0x7fffffff;
          m = b > m ? b : m;
        }
        amax[static_cast<size_t>(bj)] = m;
      }
    for (int64_t bj = 0; bj < gk; ++bj) {
      float a;
      std::memcpy(&a, &amax[static_cast<size_t>(bj)], sizeof(a));
      scales[bi * gk + bj] = std::max(a / 448.0f, 1e-12f);
    }
    for (int64_t n = n0; n < n1; ++n) {
      const float* s = scales + bi * gk;
      for (int64_t kb = 0, bj = 0; kb < K; kb += bk, ++bj) {
        // Locals: q (bytes) may alias anything, which would reload the scale every element.
        const int64_t k1 = std::min(K, kb + bk), base = n * K;
        const float scale = s[bj];
        uint8_t* const qrow = q + base;
        for (int64_t k = kb; k < k1; ++k) qrow[k] = f32_to_fp8_e4m3(get_local(base + k) / scale);
      }
    }
  };
  if (N * K < (int64_t{1} << 20)) {
    for (int64_t bi = 0; bi < gn; ++bi) block_row(bi);
    return;
  }
  static ThreadPool pool;  // load-time only; one pool for every weight of the process
  pool.parallel_for(gn, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t bi = b0; bi < b1; ++bi) block_row(bi);
  });
}

}  // namespace

void quantize_fp8_blocks(const Tensor& w, int64_t bn, int64_t bk, uint8_t* q, float* scales) {
  PAGODA_CHECK(w.ndim == 2 && is_float(w.dtype) && bn > 0 && bk > 0, "quantize_fp8_blocks: weight ",
               w.shape_string(), " ", dtype_name(w.dtype), ", blocks ", bn, " x ", bk);
  const int64_t N = w.dim(0), K = w.dim(1);
  switch (w.dtype) {
    case DType::kBF16: {
      const auto* p = w.ptr<const uint16_t>();
      quantize_fp8_typed([p](int64_t i) { return bf16_to_f32(p[i]); }, N, K, bn, bk, q, scales);
      break;
    }
    case DType::kF16: {
      const auto* p = w.ptr<const uint16_t>();
      quantize_fp8_typed([p](int64_t i) { return f16_to_f32(p[i]); }, N, K, bn, bk, q, scales);
      break;
    }
    default: {
      const auto* p = w.ptr<const float>();
      quantize_fp8_typed([p](int64_t i) { return p[i]; }, N, K, bn, bk, q, scales);
      break;
    }
  }
}

Tensor place_linear_weight(const Checkpoint& checkpoint, Backend& backend, std::vector<DeviceBuffer>* storage,
                           const std::string& name, const std::vector<int64_t>& shape, const WeightQuantization& q) {
  PAGODA_CHECK(shape.size() == 2, "place_linear_weight: ", name, " is not 2-D");
  const TensorInfo& info = checkpoint.get(name, shape);
  const int64_t N = shape[0], K = shape[1];
  if (info.dtype == DType::kF8E4M3) {
    int64_t bn = 0, bk = 0;
    const std::vector<float> scales = read_fp8_scales(checkpoint, info, N, K, q, &bn, &bk);
    auto* placed = static_cast<float*>(host_buffer(backend, storage, scales.size() * sizeof(float)));
    std::memcpy(placed, scales.data(), scales.size() * sizeof(float));
    return place_fp8(backend, storage, info.view(), placed, static_cast<int64_t>(scales.size()), bn, bk);
  }
  if (!q.online) return place_weight_checked(checkpoint, backend, storage, name, shape);
  PAGODA_CHECK(is_float(info.dtype), info.file, ": tensor ", name, " has dtype ", dtype_name(info.dtype),
               "; supported: BF16, F16, F32, F8_E4M3");
  return place_quantized_fp8(backend, storage, info.view(), q.online_block);
}

Tensor place_quantized_fp8(Backend& backend, std::vector<DeviceBuffer>* storage, const Tensor& host, int64_t block) {
  const int64_t N = host.dim(0), K = host.dim(1), b = block;
  const int64_t grid = ((N + b - 1) / b) * ((K + b - 1) / b);
  auto* data = static_cast<uint8_t*>(host_buffer(backend, storage, static_cast<size_t>(N * K)));
  auto* scales = static_cast<float*>(host_buffer(backend, storage, static_cast<size_t>(grid) * sizeof(float)));
  quantize_fp8_blocks(host, b, b, data, scales);
  return place_fp8(backend, storage, Tensor(data, DType::kF8E4M3, {N, K}), scales, grid, b, b);
}

std::vector<Tensor> place_linear_rows(const Checkpoint& checkpoint, Backend& backend,
                                      std::vector<DeviceBuffer>* storage, const std::string& name,
                                      const std::vector<int64_t>& shape,
                                      const std::vector<std::vector<int64_t>>& row_sets, const WeightQuantization& q) {
  PAGODA_CHECK(shape.size() == 2, "place_linear_rows: ", name, " is not 2-D");
  const TensorInfo& info = checkpoint.get(name, shape);
  const int64_t N = shape[0], K = shape[1];
  for (const auto& rows : row_sets)
    for (int64_t r : rows) PAGODA_CHECK(r >= 0 && r < N, "place_linear_rows: row ", r, " of ", name, " out of range");
  PAGODA_CHECK(is_float(info.dtype) || info.dtype == DType::kF8E4M3, info.file, ": tensor ", name, " has dtype ",
               dtype_name(info.dtype), "; supported: BF16, F16, F32, F8_E4M3");
  std::vector<Tensor> out;
  if (info.dtype != DType::kF8E4M3 && !q.online) {
    const size_t row_bytes = static_cast<size_t>(K) * dtype_size(info.dtype);
    for (const auto& rows : row_sets) {
      const int64_t R = static_cast<int64_t>(rows.size());
      std::vector<uint8_t> host(static_cast<size_t>(R) * row_bytes);
      for (int64_t i = 0; i < R; ++i) std::memcpy(&host[i * row_bytes], info.data + rows[i] * row_bytes, row_bytes);
      storage->push_back(backend.allocate(std::max<size_t>(host.size(), 1)));
      backend.copy_from_host(storage->back().data(), host.data(), host.size());
      out.push_back(storage->back().as(info.dtype, {R, K}));
    }
    return out;
  }
  // FP8 codes and scales of the whole tensor in its own blocks (quantized once for every row
  // set), then each set's rows with their scales.
  std::vector<uint8_t> quantized;
  std::vector<float> scales;
  const uint8_t* codes = info.data;
  int64_t bn = 0, bk = 0;
  if (info.dtype == DType::kF8E4M3) {
    scales = read_fp8_scales(checkpoint, info, N, K, q, &bn, &bk);
  } else {
    bn = bk = q.online_block;
    quantized.resize(static_cast<size_t>(N * K));
    scales.resize(static_cast<size_t>(((N + bn - 1) / bn) * ((K + bk - 1) / bk)));
    quantize_fp8_blocks(info.view(), bn, bk, quantized.data(), scales.data());
    codes = quantized.data();
  }
  const int64_t gk = (K + bk - 1) / bk;
  for (const auto& rows : row_sets) {
    const int64_t R = static_cast<int64_t>(rows.size());
    auto* dst = static_cast<uint8_t*>(host_buffer(backend, storage, static_cast<size_t>(R * K)));
    auto* dst_scales = static_cast<float*>(host_buffer(backend, storage, static_cast<size_t>(R * gk) * sizeof(float)));
    for (int64_t i = 0; i < R; ++i) {
      std::memcpy(dst + i * K, codes + rows[i] * K, static_cast<size_t>(K));
      for (int64_t j = 0; j < gk; ++j) dst_scales[i * gk + j] = scales[static_cast<size_t>((rows[i] / bn) * gk + j)];
    }
    out.push_back(place_fp8(backend, storage, Tensor(dst, DType::kF8E4M3, {R, K}), dst_scales, R * gk, 1, bk));
  }
  return out;
}

MoeExpertWeights load_moe_experts(const Checkpoint& checkpoint, Backend& backend, std::vector<DeviceBuffer>* storage,
                                  const std::string& prefix, int64_t E, int64_t I, int64_t H,
                                  const WeightQuantization& q) {
  auto linear = [&](const std::string& name, const std::vector<int64_t>& shape) {
    return place_linear_weight(checkpoint, backend, storage, name, shape, q);
  };
  MoeExpertWeights w;
  w.gate.resize(static_cast<size_t>(E));
  w.up.resize(static_cast<size_t>(E));
  w.down.resize(static_cast<size_t>(E));
  const bool fused = checkpoint.has(prefix + "experts.gate_up_proj");
  Tensor gate_up, down;
  if (fused && !q.online) {
    gate_up = place_weight_checked(checkpoint, backend, storage, prefix + "experts.gate_up_proj", {E, 2 * I, H});
    down = place_weight_checked(checkpoint, backend, storage, prefix + "experts.down_proj", {E, H, I});
  }
  auto quantized = [&](const Tensor& host) { return place_quantized_fp8(backend, storage, host, q.online_block); };
  for (int64_t e = 0; e < E; ++e) {
    const size_t k = static_cast<size_t>(e);
    if (fused) {
      if (q.online) {
        // Quantized from the checkpoint's own (host) bytes, not from a device copy.
        const Tensor gu_host = checkpoint.get(prefix + "experts.gate_up_proj").view().slice_rows(e, e + 1).view({2 * I, H});
        const Tensor d_host = checkpoint.get(prefix + "experts.down_proj").view().slice_rows(e, e + 1).view({H, I});
        w.gate[k] = quantized(gu_host.slice_rows(0, I));
        w.up[k] = quantized(gu_host.slice_rows(I, 2 * I));
        w.down[k] = quantized(d_host);
        continue;
      }
      const Tensor gu = gate_up.slice_rows(e, e + 1).view({2 * I, H});
      w.gate[k] = gu.slice_rows(0, I);
      w.up[k] = gu.slice_rows(I, 2 * I);
      w.down[k] = down.slice_rows(e, e + 1).view({H, I});
    } else {
      const std::string p = prefix + "experts." + std::to_string(e) + ".";
      w.gate[k] = linear(p + "gate_proj.weight", {I, H});
      w.up[k] = linear(p + "up_proj.weight", {I, H});
      w.down[k] = linear(p + "down_proj.weight", {H, I});
    }
  }
  return w;
}

}  // namespace pagoda
