// Portable kernels: the traits are a 1-lane "vector" of plain floats, so this is the same code
// as the SIMD paths with every vector op a scalar one.
#include <math.h>

#include "backend/cpu/kernels_impl.h"

namespace pagoda::cpu {
namespace {

struct ScalarIsa {
  using V = float;
  static constexpr int L = 1;
  static V zero() { return 0.0f; }
  static V set1(float v) { return v; }
  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V div(V a, V b) { return a / b; }
  static V fmadd(V a, V b, V c) { return a * b + c; }
  static float hsum(V v) { return v; }
  static void hsum4(V a, V b, V c, V d, float* out) {
    out[0] = a;
    out[1] = b;
    out[2] = c;
    out[3] = d;
  }
  static void transpose(V*) {}  // a 1 x 1 block
  static V exp(V v) { return expf(v); }
  static V load_bf16(const uint16_t* p) { return bf16_bits_to_float(*p); }
  static V load_f16(const uint16_t* p) { return f16_to_f32(*p); }
  static V load_fp8_e4m3(const uint8_t* p) { return fp8_e4m3_bits_to_float(*p); }
  static V load_fp8_e5m2(const uint8_t* p) { return f16_to_f32(static_cast<uint16_t>(*p << 8)); }
  static V load_fp8_e4m3_weight(const uint8_t* p) { return fp8_e4m3_bits_to_float(*p) * 0.00390625f; }
};

constexpr CpuKernels kScalarKernels = make_kernels<ScalarIsa>(Isa::kScalar, "scalar");

}  // namespace

const CpuKernels& scalar_kernels() { return kScalarKernels; }

}  // namespace pagoda::cpu
