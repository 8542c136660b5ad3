#include "base/dtype.h"

#include <cmath>

namespace pagoda {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF64: case DType::kI64: return 8;
    case DType::kF32: case DType::kI32: return 4;
    case DType::kF16: case DType::kBF16: case DType::kI16: return 2;
    case DType::kI8: case DType::kU8: case DType::kBool: case DType::kF8E4M3: case DType::kF8E5M2: return 1;
  }
  return 0;
}

namespace {
struct NamedDType {
  std::string_view name;
  DType dtype;
};
constexpr NamedDType kNames[] = {
    {"F32", DType::kF32},   {"F16", DType::kF16},   {"BF16", DType::kBF16},       {"F64", DType::kF64},
    {"I64", DType::kI64},   {"I32", DType::kI32},   {"I16", DType::kI16},         {"I8", DType::kI8},
    {"U8", DType::kU8},     {"BOOL", DType::kBool}, {"F8_E4M3", DType::kF8E4M3}, {"F8_E5M2", DType::kF8E5M2},
};
}  // namespace

std::string_view dtype_name(DType dtype) {
  for (const auto& n : kNames)
    if (n.dtype == dtype) return n.name;
  return "?";
}

bool parse_dtype(std::string_view name, DType* out) {
  for (const auto& n : kNames) {
    if (n.name == name) {
      *out = n.dtype;
      return true;
    }
  }
  return false;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: value = mant * 2^-24
      float f = std::ldexp(static_cast<float>(mant), -24);
      std::memcpy(&bits, &f, sizeof(bits));
      bits |= sign;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {  // subnormal or zero in f16: round value * 2^24 to nearest even
    float a;
    std::memcpy(&a, &abs, sizeof(a));
    const float scaled = a * 16777216.0f;  // exact
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
  }
  uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

namespace {

// Round-to-nearest-even, saturating encoding of |f| into an FP8 format with M mantissa bits and
// exponent bias B whose largest finite magnitude has code max_code; sign and NaN are handled by
// the caller. Subnormals (below 2^(1 - B)) are multiples of 2^(1 - B - M).
// 2^e as a float constant (|e| < 127).
constexpr float pow2(int e) { return e >= 0 ? (e == 0 ? 1.0f : 2.0f * pow2(e - 1)) : 0.5f * pow2(e + 1); }

template <int M, int B>
uint8_t fp8_magnitude(float a, uint8_t max_code, float max_value) {
  if (!(a < max_value)) return max_code;  // >= the largest finite value, or +inf
  constexpr float kMinNormal = pow2(1 - B);
  if (a < kMinNormal) {
    // m x 2^(1 - B - M); m == 2^M rounds up into the smallest normal, whose code is 2^M too.
    return static_cast<uint8_t>(std::nearbyint(a * pow2(M + B - 1)));
  }
  uint32_t u;
  std::memcpy(&u, &a, sizeof(u));
  constexpr int kDrop = 23 - M;
  u += ((1u << (kDrop - 1)) - 1) + ((u >> kDrop) & 1u);  // round to nearest even at the kept bits
  const int e = static_cast<int>(u >> 23) - 127 + B;
  const uint32_t code = (static_cast<uint32_t>(e) << M) | ((u >> kDrop) & ((1u << M) - 1));
  return code > max_code ? max_code : static_cast<uint8_t>(code);
}

}  // namespace

uint8_t f32_to_fp8_e5m2(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  if (std::isnan(f)) return sign | 0x7f;
  return sign | fp8_magnitude<2, 15>(std::fabs(f), 0x7b, 57344.0f);
}

}  // namespace pagoda
