// The CPU backend's hot kernels, compiled once per instruction set and chosen at run time.
//
// kernels_impl.h holds one templated implementation over a "SIMD traits" type; kernels_scalar.cc,
// kernels_avx2.cc and kernels_avx512.cc instantiate it for 1-, 8- and 16-lane vectors, so all three
// paths share the same loop structure (the AVX-512 one cannot be run on the development machine:
// it is only ever selected when the CPU reports AVX-512F/BW/VL/DQ).
//
// Kernels take plain pointers and work on a caller-chosen slice, so threading (ThreadPool,
// std::function) stays in baseline-compiled code: nothing in a SIMD translation unit is an inline
// function that the linker could pick for code running on a CPU without those instructions.
#pragma once

#include <climits>
#include <cstdint>
#include <memory>
#include <string>

#include "base/dtype.h"

namespace pagoda::cpu {

enum class Isa { kScalar, kAvx2, kAvx512 };

// Work item of paged_attention: query tokens [q_begin, q_end) of one sequence (all at the end of
// its context), all query heads of one KV head group.
struct AttentionWork {
  const float* q;            // [T, num_q_heads, head_dim] (the whole batch)
  float* out;                // same layout as q
  const void* k_cache;       // [num_blocks, num_kv_heads, block_size, head_dim]
  const void* v_cache;
  DType kv_dtype;            // F32, BF16, F8E4M3 or F8E5M2
  const int32_t* block_table;  // this sequence's row of block ids
  int32_t block_size;
  int32_t num_kv_heads;
  int32_t num_q_heads;
  int32_t head_dim;
  int32_t kv_head;
  int32_t q_begin, q_end;    // batch token indices
  int32_t first_pos;         // context position of token q_begin
  int32_t sliding_window;    // > 0: attend to the last sliding_window keys only
  float scale;
  float* scratch;            // attention_scratch_floats(...) floats, 64-byte aligned
  // Split-context (flash-decoding) partitions: only keys at positions [key_begin, key_end) are
  // visited, and when `partial` is set the unnormalised state is written there instead of to
  // `out`: per row r (= token * group + head), partial[r * (head_dim + 2) + i] = acc[i] for
  // i < head_dim, then the running max m and sum l. The backend merges the partitions.
  int32_t key_begin = 0;
  int32_t key_end = INT32_MAX;
  float* partial = nullptr;
};

// Keys/values processed per online-softmax step.
constexpr int kAttentionChunk = 32;
// Scratch one attention work item of `rows` = tokens * group query rows needs.
inline int64_t attention_scratch_floats(int64_t rows, int64_t head_dim) {
  return rows * head_dim * 2 + rows * (kAttentionChunk + 2) + 2 * kAttentionChunk * head_dim + 64;
}

// GEMM blocking (in elements): a packed weight block is kGemmKc x kGemmNc floats (256 KiB,
// half an L2 of the Zen cores this was tuned on).
constexpr int kGemmKc = 256;
constexpr int kGemmNc = 256;
constexpr int64_t kGemmScratchFloats = int64_t{kGemmKc} * kGemmNc + 1024;

// The scales of a block-scaled weight [N, K] (Tensor::scale): element (n, k) stands for
// w[n * K + k] * data[(n / block_n) * ld + k / block_k], ld = ceil(K / block_k).
struct WeightScales {
  const float* data;
  int64_t block_n;
  int64_t block_k;
  int64_t ld;
};

struct CpuKernels {
  Isa isa;
  const char* name;
  // Lanes of one vector; GEMM micro-tiles are 6 x (2 * lanes).
  int lanes;
  // Memory-bound path for few rows (decode): out[t * ldo + n] = sum_k x[t * K + k] * w[n * K + k]
  // (+ bias[n]) for t < T, n in [n0, n1). Streams each weight row once for all T rows. w_dtype is
  // F32, BF16, F16 or F8E4M3; `scales` (nullptr: none) scale the weight per block (F8E4M3 only):
  // each block's partial dot product is multiplied by its scale.
  void (*gemv)(const float* x, int64_t T, int64_t K, const void* w, DType w_dtype, const WeightScales* scales,
               const void* bias, DType bias_dtype, int64_t n0, int64_t n1, float* out, int64_t ldo);
  // Blocked GEMM of the output block rows [t0, t1) x cols [n0, n1); `scratch` holds
  // kGemmScratchFloats floats (the packed weight panel), 64-byte aligned. Weights as for gemv;
  // block-scaled ones are scaled as they are packed (each packed element is w * scale in f32).
  void (*gemm)(const float* x, int64_t K, const void* w, DType w_dtype, const WeightScales* scales, const void* bias,
               DType bias_dtype, int64_t t0, int64_t t1, int64_t n0, int64_t n1, float* out, int64_t ldo,
               float* scratch);
  void (*attention)(const AttentionWork& work);
  // out[i] = silu(gate[i]) * up[i] for i < n (out may alias gate).
  void (*silu_and_mul)(const float* gate, const float* up, float* out, int64_t n);
  // One row of (add_)rms_norm: if x != nullptr, residual += x first; out = residual * rsqrt(mean
  // (residual^2) + eps) * weight.
  void (*rms_norm_row)(float* residual, const float* x, const void* weight, DType w_dtype, float eps,
                       int64_t n, float* out);
};

const CpuKernels& scalar_kernels();
const CpuKernels& avx2_kernels();
const CpuKernels& avx512_kernels();

// Whether this CPU can run `isa`.
bool isa_supported(Isa isa);
// The best supported ISA, unless PAGODA_CPU_ISA=scalar|avx2|avx512 names one (an unsupported
// request throws pagoda::Error).
Isa default_isa();
const CpuKernels& kernels_for(Isa isa);
std::string isa_name(Isa isa);

}  // namespace pagoda::cpu

namespace pagoda {
class Backend;
// The CPU backend with a fixed kernel set (tests run every op on every supported ISA).
std::unique_ptr<Backend> make_cpu_backend(cpu::Isa isa);
}  // namespace pagoda
