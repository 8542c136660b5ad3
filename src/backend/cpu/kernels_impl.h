// One implementation of the CPU kernels, templated over a SIMD traits type `I`:
//   using V = <vector of I::L floats>;  zero, set1, load, store (unaligned), add, sub, mul,
//   fmadd(a, b, c) = a * b + c, hsum, hsum4 (4 sums at once), transpose (an L x L block held in
//   L vectors), exp (vector e^x, a few ulp), load_bf16 / load_f16 / load_fp8_e4m3 / load_fp8_e5m2
//   (L values widened to f32), load_fp8_e4m3_weight (L E4M3 values times 2^-8, NaN not kept).
// Included only by kernels_{scalar,avx2,avx512}.cc. Everything here has internal linkage (an
// anonymous namespace) and instantiates no inline function or template from other headers, so
// code compiled with AVX-512 can never be chosen by the linker for a caller on a CPU without it
// (`nm` on kernels_avx512.cc.o lists only avx512_kernels() as defined).
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cpu/cpu_kernels.h"

namespace pagoda::cpu {
namespace {

inline float bf16_bits_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &bits, sizeof(f));
  return f;
}
// base/dtype.h's fp8_e4m3_to_f32, repeated here: an inline function of another header must not
// be instantiated in these ISA-specific translation units (see above).
inline float fp8_e4m3_bits_to_float(uint8_t b) {
  const uint32_t mag = static_cast<uint32_t>(b & 0x7f) << 20;
  float f;
  memcpy(&f, &mag, sizeof(f));
  f *= 1.329227995784916e36f;  // 2^120
  if ((b & 0x7f) == 0x7f) f = __builtin_nanf("");
  return (b & 0x80) ? -f : f;
}
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Weight element access by storage dtype: get() one element, load() I::L elements as f32.
struct WeightF32 {
  static constexpr int kBytes = 4;
  static float get(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
  template <class I>
  static typename I::V load(const void* p, int64_t i) {
    return I::load(static_cast<const float*>(p) + i);
  }
};
struct WeightBF16 {
  static constexpr int kBytes = 2;
  static float get(const void* p, int64_t i) { return bf16_bits_to_float(static_cast<const uint16_t*>(p)[i]); }
  template <class I>
  static typename I::V load(const void* p, int64_t i) {
    return I::load_bf16(static_cast<const uint16_t*>(p) + i);
  }
};
struct WeightF16 {
  static constexpr int kBytes = 2;
  static float get(const void* p, int64_t i) { return f16_to_f32(static_cast<const uint16_t*>(p)[i]); }
  template <class I>
  static typename I::V load(const void* p, int64_t i) {
    return I::load_f16(static_cast<const uint16_t*>(p) + i);
  }
};

// FP8 KV-cache elements (E4M3 / E5M2, --kv-cache-dtype fp8 / fp8_e5m2).
struct KvFp8E4M3 {
  static constexpr int kBytes = 1;
  static float get(const void* p, int64_t i) { return fp8_e4m3_bits_to_float(static_cast<const uint8_t*>(p)[i]); }
  template <class I>
  static typename I::V load(const void* p, int64_t i) {
    return I::load_fp8_e4m3(static_cast<const uint8_t*>(p) + i);
  }
};
struct KvFp8E5M2 {
  static constexpr int kBytes = 1;
  static float get(const void* p, int64_t i) {
    return f16_to_f32(static_cast<uint16_t>(static_cast<const uint8_t*>(p)[i] << 8));
  }
  template <class I>
  static typename I::V load(const void* p, int64_t i) {
    return I::load_fp8_e5m2(static_cast<const uint8_t*>(p) + i);
  }
};

float get_element(const void* p, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kBF16: return WeightBF16::get(p, i);
    case DType::kF16: return WeightF16::get(p, i);
    default: return WeightF32::get(p, i);
  }
}

void add_bias(const void* bias, DType bias_dtype, int64_t t0, int64_t t1, int64_t n0, int64_t n1, float* out,
              int64_t ldo) {
  if (bias == nullptr) return;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t n = n0; n < n1; ++n) out[t * ldo + n] += get_element(bias, bias_dtype, n);
}

// E4M3 weights of a block-scaled linear, read as value * 2^-8 (I::load_fp8_e4m3_weight: a
// cheaper widening than the exact one); kScale = 2^8 goes into each block's scale, so every
// product is the same f32 number as with the exact value (scaling by a power of two is exact).
struct WeightFp8E4M3 {
  static constexpr int kBytes = 1;
  static constexpr float kScale = 256.0f;
  static float get(const void* p, int64_t i) {
    return fp8_e4m3_bits_to_float(static_cast<const uint8_t*>(p)[i]) * 0.00390625f;
  }
  template <class I>
  static typename I::V load(const void* p, int64_t i) {
    return I::load_fp8_e4m3_weight(static_cast<const uint8_t*>(p) + i);
  }
};

// An F8E4M3 weight without scales: one block of scale 1.
constexpr float kUnitScale = 1.0f;
constexpr WeightScales kUnitScales{&kUnitScale, INT64_MAX, INT64_MAX, 1};

// ---- GEMV (decode) ------------------------------------------------------------------------
// How far ahead the one-byte (FP8) GEMV prefetches its weight stream.
constexpr int64_t kGemvPrefetchBytes = 2048;

// One weight row at a time, read as a single sequential stream (measured faster from DRAM than
// interleaving 2 or 4 rows, which splits the hardware prefetcher's streams), each weight vector
// widened once and used for all TT activation rows. U independent accumulators per row along k
// keep at least 4 FMA chains in flight when TT is small. kScaled: the row is summed in segments
// of the scale block (block_k), and each segment's sum enters the total times its scale.
template <class I, class W, int TT, bool kScaled>
void gemv_row(const float* x, int64_t K, const void* w, const WeightScales* sc, int64_t n, float* out,
              int64_t ldo) {
  using V = typename I::V;
  constexpr int L = I::L;
  constexpr int U = TT == 1 ? 4 : TT <= 4 ? 2 : 1;
  const int64_t row = n * K;
  V acc[TT][U];
  V total[TT];
  float tail[TT];
  for (int t = 0; t < TT; ++t) {
    for (int u = 0; u < U; ++u) acc[t][u] = I::zero();
    total[t] = I::zero();
    tail[t] = 0.0f;
  }
  const int64_t seg = kScaled ? sc->block_k : K;
  const float* srow = kScaled ? sc->data + (n / sc->block_n) * sc->ld : nullptr;
  int64_t k = 0;
  for (int64_t kb = 0, j = 0; kb < K; kb += seg, ++j) {
    const int64_t ke = min64(K, kb + seg);
    for (k = kb; k + U * L <= ke; k += U * L) {
      // One-byte weights: rows are short streams for the hardware prefetcher; fetch ahead.
      if constexpr (W::kBytes == 1) __builtin_prefetch(static_cast<const char*>(w) + row + k + kGemvPrefetchBytes);
      for (int u = 0; u < U; ++u) {
        const V wv = W::template load<I>(w, row + k + u * L);
        for (int t = 0; t < TT; ++t) acc[t][u] = I::fmadd(wv, I::load(x + t * K + k + u * L), acc[t][u]);
      }
    }
    for (; k + L <= ke; k += L) {
      const V wv = W::template load<I>(w, row + k);
      for (int t = 0; t < TT; ++t) acc[t][0] = I::fmadd(wv, I::load(x + t * K + k), acc[t][0]);
    }
    if constexpr (kScaled) {
      const float s = srow[j] * W::kScale;
      for (int t = 0; t < TT; ++t) {
        V a = acc[t][0];
        acc[t][0] = I::zero();
        for (int u = 1; u < U; ++u) {
          a = I::add(a, acc[t][u]);
          acc[t][u] = I::zero();
        }
        total[t] = I::fmadd(a, I::set1(s), total[t]);
        float part = 0.0f;
        for (int64_t j = k; j < ke; ++j) part += W::get(w, row + j) * x[t * K + j];
        tail[t] += part * s;
      }
    }
  }
  for (int t = 0; t < TT; ++t) {
    if constexpr (kScaled) {
      out[t * ldo + n] = I::hsum(total[t]) + tail[t];
    } else {
      V a = acc[t][0];
      for (int u = 1; u < U; ++u) a = I::add(a, acc[t][u]);
      float s = I::hsum(a);
      for (int64_t j = k; j < K; ++j) s += W::get(w, row + j) * x[t * K + j];
      out[t * ldo + n] = s;
    }
  }
}

template <class I, class W, int TT, bool kScaled>
void gemv_rows(const float* x, int64_t K, const void* w, const WeightScales* sc, int64_t n0, int64_t n1, float* out,
               int64_t ldo) {
  for (int64_t n = n0; n < n1; ++n) gemv_row<I, W, TT, kScaled>(x, K, w, sc, n, out, ldo);
}

// Three or more activation rows make the GEMV compute-bound, not memory-bound: 2 T flops per
// weight outrun the FMA units fed at DRAM speed (AVX2 at T = 8 needs 16 flops per 2 bytes). One
// weight row at a time then leaves the FMA pipes half idle: T accumulator chains, T loads of x per
// weight vector. Here kGemvBlock (3) weight rows go at once against TT (<= 4) activation rows: each
// x vector is loaded once for the three rows, and 3 TT independent chains (12 at TT = 4) cover the
// FMA latency of two pipes; 12 accumulators + 3 weights + 1 x = AVX2's 16 vector registers.
// Compute-bound, the loop runs too slowly for the hardware prefetcher to keep DRAM busy (and a
// block's later passes over more activation rows read L1 only), so the first pass prefetches the
// next block (`next`, its 3 K contiguous weights; nullptr: none) at the pace it reads its own.
// kScaled: segments of block_k as in gemv_row (the totals live in memory, not registers).
constexpr int64_t kGemvBlock = 3;

template <class I, class W, int TT, bool kScaled>
void gemv_block(const float* x, int64_t K, const void* w, const WeightScales* sc, int64_t n, float* out, int64_t ldo,
                const char* next) {
  static_assert(kGemvBlock == 3, "gemv_block computes rows n, n + 1 and n + 2");
  using V = typename I::V;
  constexpr int L = I::L;
  const int64_t r0 = n * K, r1 = r0 + K, r2 = r1 + K;
  V a0[TT], a1[TT], a2[TT];
  float total[3][TT];
  for (int t = 0; t < TT; ++t) {
    a0[t] = a1[t] = a2[t] = I::zero();
    total[0][t] = total[1][t] = total[2][t] = 0.0f;
  }
  const int64_t seg = kScaled ? sc->block_k : K;
  const float* sr0 = kScaled ? sc->data + (n / sc->block_n) * sc->ld : nullptr;
  const float* sr1 = kScaled ? sc->data + ((n + 1) / sc->block_n) * sc->ld : nullptr;
  const float* sr2 = kScaled ? sc->data + ((n + 2) / sc->block_n) * sc->ld : nullptr;
  int64_t k = 0;
  for (int64_t kb = 0, j = 0; kb < K; kb += seg, ++j) {
    const int64_t ke = min64(K, kb + seg);
    for (k = kb; k + L <= ke; k += L) {
      if (next != nullptr) {
        for (int b = 0; b < kGemvBlock * L * W::kBytes; b += 64) __builtin_prefetch(next + kGemvBlock * k * W::kBytes + b);
      }
      const V w0 = W::template load<I>(w, r0 + k), w1 = W::template load<I>(w, r1 + k),
              w2 = W::template load<I>(w, r2 + k);
      for (int t = 0; t < TT; ++t) {
        const V xv = I::load(x + t * K + k);
        a0[t] = I::fmadd(w0, xv, a0[t]);
        a1[t] = I::fmadd(w1, xv, a1[t]);
        a2[t] = I::fmadd(w2, xv, a2[t]);
      }
    }
    if constexpr (kScaled) {
      const float s0 = sr0[j] * W::kScale, s1 = sr1[j] * W::kScale, s2 = sr2[j] * W::kScale;
      for (int t = 0; t < TT; ++t) {
        float p0 = I::hsum(a0[t]), p1 = I::hsum(a1[t]), p2 = I::hsum(a2[t]);
        a0[t] = a1[t] = a2[t] = I::zero();
        for (int64_t j = k; j < ke; ++j) {
          const float xj = x[t * K + j];
          p0 += W::get(w, r0 + j) * xj;
          p1 += W::get(w, r1 + j) * xj;
          p2 += W::get(w, r2 + j) * xj;
        }
        total[0][t] += p0 * s0;
        total[1][t] += p1 * s1;
        total[2][t] += p2 * s2;
      }
    }
  }
  for (int t = 0; t < TT; ++t) {
    float* o = out + t * ldo + n;
    if constexpr (kScaled) {
      o[0] = total[0][t];
      o[1] = total[1][t];
      o[2] = total[2][t];
    } else {
      float s0 = I::hsum(a0[t]), s1 = I::hsum(a1[t]), s2 = I::hsum(a2[t]);
      for (int64_t j = k; j < K; ++j) {
        const float xj = x[t * K + j];
        s0 += W::get(w, r0 + j) * xj;
        s1 += W::get(w, r1 + j) * xj;
        s2 += W::get(w, r2 + j) * xj;
      }
      o[0] = s0;
      o[1] = s1;
      o[2] = s2;
    }
  }
}

// Rows are taken kGemvRows at a time, so up to that many rows read the weight exactly once.
constexpr int64_t kGemvRows = 8;

template <class I, class W, bool kScaled>
void gemv_typed(const float* x, int64_t T, int64_t K, const void* w, const WeightScales* sc, int64_t n0, int64_t n1,
                float* out, int64_t ldo) {
  if (T >= 3) {
    // Blocks of 3 weight rows; each block's rows (3 K weights, from L1 / L2 after the first
    // pass) serve every group of up to 4 activation rows before the next block streams in.
    int64_t n = n0;
    for (; n + kGemvBlock <= n1; n += kGemvBlock) {
      const char* next = n + 2 * kGemvBlock <= n1
                             ? static_cast<const char*>(w) + (n + kGemvBlock) * K * W::kBytes
                             : nullptr;
      // Passes over ceil(T / 4) groups of activation rows, as even as can be (5 = 3 + 2, never 4 + 1).
      const int64_t passes = (T + 3) / 4;
      for (int64_t p = 0, t = 0; p < passes; ++p) {
        const int64_t tt = (T - t) / (passes - p);
        const float* xt = x + t * K;
        float* ot = out + t * ldo;
        const char* pf = p == 0 ? next : nullptr;
        switch (tt) {
          case 2: gemv_block<I, W, 2, kScaled>(xt, K, w, sc, n, ot, ldo, pf); break;
          case 3: gemv_block<I, W, 3, kScaled>(xt, K, w, sc, n, ot, ldo, pf); break;
          default: gemv_block<I, W, 4, kScaled>(xt, K, w, sc, n, ot, ldo, pf); break;
        }
        t += tt;
      }
    }
    n0 = n;  // the last 1 or 2 rows: one at a time, below
  }
  for (int64_t t = 0; t < T; t += kGemvRows) {
    const float* xt = x + t * K;
    float* ot = out + t * ldo;
    switch (min64(kGemvRows, T - t)) {
      case 1: gemv_rows<I, W, 1, kScaled>(xt, K, w, sc, n0, n1, ot, ldo); break;
      case 2: gemv_rows<I, W, 2, kScaled>(xt, K, w, sc, n0, n1, ot, ldo); break;
      case 3: gemv_rows<I, W, 3, kScaled>(xt, K, w, sc, n0, n1, ot, ldo); break;
      case 4: gemv_rows<I, W, 4, kScaled>(xt, K, w, sc, n0, n1, ot, ldo); break;
      case 5: gemv_rows<I, W, 5, kScaled>(xt, K, w, sc, n0, n1, ot, ldo); break;
      case 6: gemv_rows<I, W, 6, kScaled>(xt, K, w, sc, n0, n1, ot, ldo); break;
      case 7: gemv_rows<I, W, 7, kScaled>(xt, K, w, sc, n0, n1, ot, ldo); break;
      default: gemv_rows<I, W, 8, kScaled>(xt, K, w, sc, n0, n1, ot, ldo); break;
    }
  }
}

template <class I>
void gemv(const float* x, int64_t T, int64_t K, const void* w, DType w_dtype, const WeightScales* scales,
          const void* bias, DType bias_dtype, int64_t n0, int64_t n1, float* out, int64_t ldo) {
  switch (w_dtype) {
    case DType::kBF16: gemv_typed<I, WeightBF16, false>(x, T, K, w, nullptr, n0, n1, out, ldo); break;
    case DType::kF16: gemv_typed<I, WeightF16, false>(x, T, K, w, nullptr, n0, n1, out, ldo); break;
    case DType::kF8E4M3:
      gemv_typed<I, WeightFp8E4M3, true>(x, T, K, w, scales != nullptr ? scales : &kUnitScales, n0, n1, out, ldo);
      break;
    default: gemv_typed<I, WeightF32, false>(x, T, K, w, nullptr, n0, n1, out, ldo); break;
  }
  add_bias(bias, bias_dtype, 0, T, n0, n1, out, ldo);
}

// ---- GEMM (prefill) -----------------------------------------------------------------------
// C[t, n] = sum_k X[t, k] W[n, k]. A kGemmKc x kGemmNc block of W is converted to f32 and packed
// as column panels of NR = 2 * L: panel p holds W[n0 + p*NR + j, k] at [k * NR + j], so the micro-
// kernel reads it contiguously. The micro-kernel keeps an MR x NR tile of C in 2 * MR registers
// (6 x 16 on AVX2: 12 accumulators + 2 weight vectors + 1 broadcast of the 16 ymm registers).
constexpr int kGemmMr = 6;

// Full panels go L x L tile by tile: L weight rows are loaded as vectors (widened to f32),
// transposed in registers (I::transpose) and stored as L packed rows, so packing costs a few
// instructions per 8 (AVX2) elements instead of one scalar load + store each. Partial panels
// and the k tail are packed element by element in k-outer order (contiguous stores; the NR
// source rows are read as NR sequential streams). kScaled: every element is multiplied by its
// block's scale as it is packed (a vector of L never crosses a block when block_k is a multiple
// of L or covers K; other block widths are packed element by element).
template <class I, class W, bool kScaled>
void pack_weight(const void* w, const WeightScales* sc, int64_t K, int64_t nb, int64_t nlen, int64_t kb, int64_t klen,
                 float* dst) {
  constexpr int L = I::L;
  constexpr int NR = 2 * L;
  const bool tiles = !kScaled || sc->block_k % L == 0 || sc->block_k >= K;
  for (int64_t p = 0; p * NR < nlen; ++p) {
    float* d = dst + p * klen * NR;
    const int64_t valid = min64(NR, nlen - p * NR);
    const int64_t n = nb + p * NR;
    const int64_t row0 = n * K + kb;
    // The scale row of each of the panel's rows (one division per panel).
    const float* srow[NR];
    if constexpr (kScaled) {
      int64_t br = n / sc->block_n, rem = n - br * sc->block_n;
      for (int j = 0; j < NR; ++j) {
        srow[j] = sc->data + br * sc->ld;
        if (++rem == sc->block_n) {
          rem = 0;
          ++br;
        }
      }
    }
    int64_t k = 0;
    if (valid == NR && tiles) {
      // The scale column of k (kb + k) / block_k, kept incrementally.
      int64_t kblk = kScaled ? kb / sc->block_k : 0, kleft = kScaled ? (kblk + 1) * sc->block_k - kb : 0;
      for (; k + L <= klen; k += L) {
        if constexpr (kScaled) {
          if (kleft <= 0) {
            ++kblk;
            kleft += sc->block_k;
          }
          kleft -= L;
        }
        for (int h = 0; h < 2; ++h) {
          typename I::V v[L];
          for (int j = 0; j < L; ++j) {
            v[j] = W::template load<I>(w, row0 + (h * L + j) * K + k);
            if constexpr (kScaled) v[j] = I::mul(v[j], I::set1(srow[h * L + j][kblk] * W::kScale));
          }
          I::transpose(v);
          for (int j = 0; j < L; ++j) I::store(d + (k + j) * NR + h * L, v[j]);
        }
      }
    }
    for (; k < klen; ++k) {
      for (int j = 0; j < NR; ++j) {
        float v = j < valid ? W::get(w, row0 + j * K + k) : 0.0f;
        if constexpr (kScaled) {
          if (j < valid) v *= srow[j][(kb + k) / sc->block_k] * W::kScale;
        }
        d[k * NR + j] = v;
      }
    }
  }
}

template <class I, int MR>
void gemm_micro(const float* a, int64_t lda, const float* b, int64_t klen, float* c, int64_t ldc, bool accumulate,
                int64_t ncols) {
  using V = typename I::V;
  constexpr int L = I::L;
  V acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = I::zero();
  for (int64_t k = 0; k < klen; ++k) {
    const V b0 = I::load(b + k * 2 * L);
    const V b1 = I::load(b + k * 2 * L + L);
    for (int i = 0; i < MR; ++i) {
      const V av = I::set1(a[i * lda + k]);
      acc[i][0] = I::fmadd(av, b0, acc[i][0]);
      acc[i][1] = I::fmadd(av, b1, acc[i][1]);
    }
  }
  if (ncols == 2 * L) {
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * ldc;
      if (accumulate) {
        I::store(ci, I::add(I::load(ci), acc[i][0]));
        I::store(ci + L, I::add(I::load(ci + L), acc[i][1]));
      } else {
        I::store(ci, acc[i][0]);
        I::store(ci + L, acc[i][1]);
      }
    }
  } else {
    float tmp[2 * L];
    for (int i = 0; i < MR; ++i) {
      I::store(tmp, acc[i][0]);
      I::store(tmp + L, acc[i][1]);
      float* ci = c + i * ldc;
      for (int64_t j = 0; j < ncols; ++j) ci[j] = accumulate ? ci[j] + tmp[j] : tmp[j];
    }
  }
}

template <class I, class W, bool kScaled>
void gemm_typed(const float* x, int64_t K, const void* w, const WeightScales* sc, int64_t t0, int64_t t1, int64_t n0,
                int64_t n1, float* out, int64_t ldo, float* packed) {
  constexpr int NR = 2 * I::L;
  for (int64_t nb = n0; nb < n1; nb += kGemmNc) {
    const int64_t nlen = min64(kGemmNc, n1 - nb);
    for (int64_t kb = 0; kb < K; kb += kGemmKc) {
      const int64_t klen = min64(kGemmKc, K - kb);
      pack_weight<I, W, kScaled>(w, sc, K, nb, nlen, kb, klen, packed);
      const bool accumulate = kb > 0;
      for (int64_t t = t0; t < t1; t += kGemmMr) {
        const int64_t mr = min64(kGemmMr, t1 - t);
        const float* a = x + t * K + kb;
        for (int64_t p = 0; p * NR < nlen; ++p) {
          const float* b = packed + p * klen * NR;
          float* c = out + t * ldo + nb + p * NR;
          const int64_t ncols = min64(NR, nlen - p * NR);
          switch (mr) {
            case 1: gemm_micro<I, 1>(a, K, b, klen, c, ldo, accumulate, ncols); break;
            case 2: gemm_micro<I, 2>(a, K, b, klen, c, ldo, accumulate, ncols); break;
            case 3: gemm_micro<I, 3>(a, K, b, klen, c, ldo, accumulate, ncols); break;
            case 4: gemm_micro<I, 4>(a, K, b, klen, c, ldo, accumulate, ncols); break;
            case 5: gemm_micro<I, 5>(a, K, b, klen, c, ldo, accumulate, ncols); break;
            default: gemm_micro<I, 6>(a, K, b, klen, c, ldo, accumulate, ncols); break;
          }
        }
      }
    }
  }
}

template <class I>
void gemm(const float* x, int64_t K, const void* w, DType w_dtype, const WeightScales* scales, const void* bias,
          DType bias_dtype, int64_t t0, int64_t t1, int64_t n0, int64_t n1, float* out, int64_t ldo, float* scratch) {
  switch (w_dtype) {
    case DType::kBF16: gemm_typed<I, WeightBF16, false>(x, K, w, nullptr, t0, t1, n0, n1, out, ldo, scratch); break;
    case DType::kF16: gemm_typed<I, WeightF16, false>(x, K, w, nullptr, t0, t1, n0, n1, out, ldo, scratch); break;
    case DType::kF8E4M3:
      gemm_typed<I, WeightFp8E4M3, true>(x, K, w, scales != nullptr ? scales : &kUnitScales, t0, t1, n0, n1, out, ldo,
                                         scratch);
      break;
    default: gemm_typed<I, WeightF32, false>(x, K, w, nullptr, t0, t1, n0, n1, out, ldo, scratch); break;
  }
  add_bias(bias, bias_dtype, t0, t1, n0, n1, out, ldo);
}

// ---- paged attention ----------------------------------------------------------------------
// Scores of NQ query rows against 4 keys: NQ x 4 accumulators, each K vector loaded (and widened)
// once for all NQ rows, one combined horizontal reduction per row.
template <class I, class KV, int NQ>
void dot4(const float* const* q, const void* const* k, int64_t D, float* const* out, int64_t c) {
  using V = typename I::V;
  constexpr int L = I::L;
  V acc[NQ][4];
  for (int r = 0; r < NQ; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = I::zero();
  int64_t i = 0;
  for (; i + L <= D; i += L) {
    V qv[NQ];
    for (int r = 0; r < NQ; ++r) qv[r] = I::load(q[r] + i);
    for (int j = 0; j < 4; ++j) {
      const V kv = KV::template load<I>(k[j], i);
      for (int r = 0; r < NQ; ++r) acc[r][j] = I::fmadd(qv[r], kv, acc[r][j]);
    }
  }
  for (int r = 0; r < NQ; ++r) {
    I::hsum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3], out[r] + c);
    for (int64_t e = i; e < D; ++e)
      for (int j = 0; j < 4; ++j) out[r][c + j] += q[r][e] * KV::get(k[j], e);
  }
}

template <class I, class KV>
float dot1(const float* q, const void* k, int64_t D) {
  constexpr int L = I::L;
  typename I::V a = I::zero();
  int64_t i = 0;
  for (; i + L <= D; i += L) a = I::fmadd(I::load(q + i), KV::template load<I>(k, i), a);
  float s = I::hsum(a);
  for (; i < D; ++i) s += q[i] * KV::get(k, i);
  return s;
}

// y_r = y_r * alpha_r + sum_{c in [c0, c1)} p_r[c] * v[c][:] for NR rows r sharing the key range
// (the query heads of one token). A block of VB vectors of D keeps NR x VB accumulators in
// registers (8 independent FMA chains, enough to hide the FMA latency) while each V vector is
// loaded (and widened) once for all NR rows.
template <class I, class KV, int NR, int VB>
int64_t accumulate_pv_blocks(float* const* y, const float* alpha, const void* const* v, const float* const* p,
                             int64_t c0, int64_t c1, int64_t i, int64_t D) {
  using V = typename I::V;
  constexpr int L = I::L;
  for (; i + VB * L <= D; i += VB * L) {
    V acc[NR][VB];
    for (int r = 0; r < NR; ++r) {
      const V a = I::set1(alpha[r]);
      for (int b = 0; b < VB; ++b) acc[r][b] = I::mul(I::load(y[r] + i + b * L), a);
    }
    for (int64_t c = c0; c < c1; ++c) {
      V vv[VB];
      for (int b = 0; b < VB; ++b) vv[b] = KV::template load<I>(v[c], i + b * L);
      for (int r = 0; r < NR; ++r) {
        const V pr = I::set1(p[r][c]);
        for (int b = 0; b < VB; ++b) acc[r][b] = I::fmadd(pr, vv[b], acc[r][b]);
      }
    }
    for (int r = 0; r < NR; ++r)
      for (int b = 0; b < VB; ++b) I::store(y[r] + i + b * L, acc[r][b]);
  }
  return i;
}

template <class I, class KV, int NR>
void accumulate_pv(float* const* y, const float* alpha, const void* const* v, const float* const* p, int64_t c0,
                   int64_t c1, int64_t D) {
  constexpr int VB = NR == 1 ? 8 : NR == 2 ? 4 : 2;
  int64_t i = accumulate_pv_blocks<I, KV, NR, VB>(y, alpha, v, p, c0, c1, 0, D);
  i = accumulate_pv_blocks<I, KV, NR, 1>(y, alpha, v, p, c0, c1, i, D);
  for (; i < D; ++i) {
    for (int r = 0; r < NR; ++r) {
      float acc = y[r][i] * alpha[r];
      for (int64_t c = c0; c < c1; ++c) acc += p[r][c] * KV::get(v[c], i);
      y[r][i] = acc;
    }
  }
}

// n elements of a row stored as Src, widened to f32.
template <class I, class Src>
void widen_row(const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + I::L <= n; i += I::L) I::store(dst + i, Src::template load<I>(src, i));
  for (; i < n; ++i) dst[i] = Src::get(src, i);
}

// One work item: rows = tokens x group query heads, all reading KV head `kv_head`. Keys are
// visited in chunks of kAttentionChunk context positions (any block size: each position is
// looked up in the block table); for every row the chunk's scores feed an online softmax in f32
// (running max m, running sum l, unnormalised output acc). Each K/V row is fetched once per
// work item: read in place (KV = the cache's dtype) when there are few rows (decode), widened
// once into a chunk buffer (`widen`, KV = f32) when many rows would each convert it again.
template <class I, class KV, class Src = KV>
void attention_typed(const AttentionWork& w, bool widen) {
  constexpr int C = kAttentionChunk;
  const int64_t D = w.head_dim;
  const int G = w.num_q_heads / w.num_kv_heads;
  const int64_t tokens = w.q_end - w.q_begin;
  const int64_t rows = tokens * G;
  float* qs = w.scratch;
  float* acc = qs + rows * D;
  float* m = acc + rows * D;
  float* l = m + rows;
  float* scores = l + rows;
  float* kbuf = scores + rows * C;
  float* vbuf = kbuf + C * D;
  const void* krow[C];
  const void* vrow[C];

  for (int64_t t = 0; t < tokens; ++t) {
    for (int g = 0; g < G; ++g) {
      const int64_t r = t * G + g;
      const float* src = w.q + ((w.q_begin + t) * w.num_q_heads + w.kv_head * G + g) * D;
      for (int64_t i = 0; i < D; ++i) {
        qs[r * D + i] = src[i] * w.scale;
        acc[r * D + i] = 0.0f;
      }
      m[r] = -INFINITY;
      l[r] = 0.0f;
    }
  }
  const int64_t last_pos = min64(w.first_pos + tokens - 1, int64_t{w.key_end} - 1);
  const int64_t first_key =
      max64(w.sliding_window > 0 ? max64(0, w.first_pos - w.sliding_window + 1) : 0, w.key_begin);
  const int64_t elem = Src::kBytes;
  const int64_t head_stride = int64_t{w.block_size} * D;
  const int64_t row_bytes = D * elem;
  // Byte offset of context position pos's row of this KV head in the K (and V) cache.
  auto row_offset = [&](int64_t pos) {
    const int64_t block = w.block_table[pos / w.block_size];
    return ((block * w.num_kv_heads + w.kv_head) * head_stride + (pos % w.block_size) * D) * elem;
  };
  for (int64_t c0 = first_key; c0 <= last_pos; c0 += C) {
    const int64_t cn = min64(C, last_pos - c0 + 1);
    for (int64_t c = 0; c < cn; ++c) {
      const int64_t offset = row_offset(c0 + c);
      krow[c] = static_cast<const char*>(w.k_cache) + offset;
      vrow[c] = static_cast<const char*>(w.v_cache) + offset;
      // Read in place: this chunk's V rows are fetched while its scores are computed (a KV head's
      // rows are contiguous only within a block, one 4 KiB page at BF16 x 16 x 128, which the
      // hardware prefetcher does not cross), the next chunk's K rows while P V is.
      if (!widen)
        for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(static_cast<const char*>(vrow[c]) + b);
      if (widen) {
        widen_row<I, Src>(krow[c], kbuf + c * D, D);
        widen_row<I, Src>(vrow[c], vbuf + c * D, D);
        krow[c] = kbuf + c * D;
        vrow[c] = vbuf + c * D;
      }
    }
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t pos = w.first_pos + t;
      const int64_t lo = max64(w.sliding_window > 0 ? max64(0, pos - w.sliding_window + 1) : 0, w.key_begin);
      // Keys of this chunk the token sees: [cb, ce).
      const int64_t cb = max64(lo - c0, 0);
      const int64_t ce = min64(pos - c0 + 1, cn);
      if (cb >= ce) continue;
      // Scores of the token's G query heads, two heads per pass over the keys.
      for (int g = 0; g < G; g += 2) {
        const int nq = G - g >= 2 ? 2 : 1;
        const float* qr[2] = {qs + (t * G + g) * D, qs + (t * G + g + nq - 1) * D};
        float* sr[2] = {scores + (t * G + g) * C, scores + (t * G + g + nq - 1) * C};
        int64_t c = cb;
        for (; c + 4 <= ce; c += 4) {
          if (nq == 2) {
            dot4<I, KV, 2>(qr, krow + c, D, sr, c);
          } else {
            dot4<I, KV, 1>(qr, krow + c, D, sr, c);
          }
        }
        for (; c < ce; ++c)
          for (int r = 0; r < nq; ++r) sr[r][c] = dot1<I, KV>(qr[r], krow[c], D);
      }
      if (t == 0 && !widen) {
        for (int64_t pos = c0 + C; pos < min64(c0 + 2 * C, last_pos + 1); ++pos) {
          const char* k = static_cast<const char*>(w.k_cache) + row_offset(pos);
          for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(k + b);
        }
      }
      float alpha[4];
      float* yr[4];
      const float* pr[4];
      for (int g = 0; g < G; ++g) {
        const int64_t r = t * G + g;
        float* s = scores + r * C;
        float cmax = -INFINITY;
        int64_t c;
        for (c = cb; c < ce; ++c) cmax = s[c] > cmax ? s[c] : cmax;
        const float m_new = m[r] > cmax ? m[r] : cmax;
        float sum = 0.0f;
        for (c = cb; c + I::L <= ce; c += I::L) {
          const typename I::V e = I::exp(I::sub(I::load(s + c), I::set1(m_new)));
          I::store(s + c, e);
          sum += I::hsum(e);
        }
        for (; c < ce; ++c) {
          s[c] = expf(s[c] - m_new);
          sum += s[c];
        }
        const float a = expf(m[r] - m_new);  // 0 on the first visit (m = -inf)
        l[r] = l[r] * a + sum;
        m[r] = m_new;
        // The heads of this token share [cb, ce): accumulate P V for up to 4 of them together.
        const int slot = g % 4;
        alpha[slot] = a;
        yr[slot] = acc + r * D;
        pr[slot] = s;
        if (slot == 3 || g == G - 1) {
          switch (slot) {
            case 0: accumulate_pv<I, KV, 1>(yr, alpha, vrow, pr, cb, ce, D); break;
            case 1: accumulate_pv<I, KV, 2>(yr, alpha, vrow, pr, cb, ce, D); break;
            case 2: accumulate_pv<I, KV, 3>(yr, alpha, vrow, pr, cb, ce, D); break;
            default: accumulate_pv<I, KV, 4>(yr, alpha, vrow, pr, cb, ce, D); break;
          }
        }
      }
    }
  }
  if (w.partial != nullptr) {
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = w.partial + r * (D + 2);
      for (int64_t i = 0; i < D; ++i) dst[i] = acc[r * D + i];
      dst[D] = m[r];
      dst[D + 1] = l[r];
    }
    return;
  }
  for (int64_t t = 0; t < tokens; ++t) {
    for (int g = 0; g < G; ++g) {
      const int64_t r = t * G + g;
      float* dst = w.out + ((w.q_begin + t) * w.num_q_heads + w.kv_head * G + g) * D;
      const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
      for (int64_t i = 0; i < D; ++i) dst[i] = acc[r * D + i] * inv;
    }
  }
}

// A BF16 / FP8 cache is read in place when each key meets at most this many query rows;
// otherwise each chunk of rows is widened to f32 once.
constexpr int64_t kAttentionInPlaceRows = 8;

template <class I, class Src>
void attention_narrow(const AttentionWork& w) {
  if ((w.q_end - w.q_begin) * (w.num_q_heads / w.num_kv_heads) <= kAttentionInPlaceRows) {
    attention_typed<I, Src>(w, false);
  } else {
    attention_typed<I, WeightF32, Src>(w, true);
  }
}

template <class I>
void attention(const AttentionWork& w) {
  switch (w.kv_dtype) {
    case DType::kBF16: attention_narrow<I, WeightBF16>(w); break;
    case DType::kF8E4M3: attention_narrow<I, KvFp8E4M3>(w); break;
    case DType::kF8E5M2: attention_narrow<I, KvFp8E5M2>(w); break;
    default: attention_typed<I, WeightF32>(w, false); break;
  }
}

// ---- elementwise ----------------------------------------------------------------------------
template <class I>
void silu_and_mul(const float* gate, const float* up, float* out, int64_t n) {
  int64_t i = 0;
  const typename I::V one = I::set1(1.0f);
  for (; i + I::L <= n; i += I::L) {
    const typename I::V g = I::load(gate + i);
    const typename I::V e = I::exp(I::sub(I::zero(), g));
    I::store(out + i, I::mul(I::div(g, I::add(one, e)), I::load(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

template <class I, class W>
void rms_norm_typed(float* residual, const float* x, const void* weight, float eps, int64_t n, float* out) {
  constexpr int L = I::L;
  typename I::V ss = I::zero();
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    typename I::V v = I::load(residual + i);
    if (x != nullptr) {
      v = I::add(v, I::load(x + i));
      I::store(residual + i, v);
    }
    ss = I::fmadd(v, v, ss);
  }
  float sum = I::hsum(ss);
  for (; i < n; ++i) {
    if (x != nullptr) residual[i] += x[i];
    sum += residual[i] * residual[i];
  }
  const float inv = 1.0f / sqrtf(sum / static_cast<float>(n) + eps);
  const typename I::V vinv = I::set1(inv);
  for (i = 0; i + L <= n; i += L)
    I::store(out + i, I::mul(I::mul(I::load(residual + i), vinv), W::template load<I>(weight, i)));
  for (; i < n; ++i) out[i] = residual[i] * inv * W::get(weight, i);
}

template <class I>
void rms_norm_row(float* residual, const float* x, const void* weight, DType w_dtype, float eps, int64_t n,
                  float* out) {
  switch (w_dtype) {
    case DType::kBF16: rms_norm_typed<I, WeightBF16>(residual, x, weight, eps, n, out); break;
    case DType::kF16: rms_norm_typed<I, WeightF16>(residual, x, weight, eps, n, out); break;
    default: rms_norm_typed<I, WeightF32>(residual, x, weight, eps, n, out); break;
  }
}

template <class I>
constexpr CpuKernels make_kernels(Isa isa, const char* name) {
  return CpuKernels{isa,           name,           I::L, &gemv<I>, &gemm<I>, &attention<I>, &silu_and_mul<I>,
                    &rms_norm_row<I>};
}

}  // namespace
}  // namespace pagoda::cpu
