// A host emulation of the parts of the CUDA execution model that our kernels use, so that a
// kernel's own source (written to compile for the host too, like attention_mma.cuh and
// sampling_kernels.cuh) can be run and checked without a GPU: one fiber per CUDA thread (its own
// stack; a switch saves the callee-saved registers and swaps stack pointers, x86-64 only), the
// threads of one block run together in one OS thread, blocks one after another; __syncthreads,
// warp shuffles and ballots and the warp-wide mma.sync m16n8k16 (BF16 in, FP32 accumulate) are
// barriers over fibers with the lane data exchanged through memory; atomics are plain
// read-modify-writes (one fiber runs at a time). Fragment layouts follow the PTX ISA's
// description of mma.m16n8k16 (.bf16): lane = 4 * groupID + threadID_in_group; each 32-bit
// register holds two consecutive elements, the first in its low half.
//
// Include this before the kernel's source and nothing from CUDA in the same file: it defines the
// CUDA keywords (__global__, __shared__, ...) as host C++.
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#define PAGODA_CUDA_EMULATION 1

// BF16 and F16 scalars with the conversions the kernels use (round to nearest even).
struct __nv_bfloat16 {
  uint16_t x;
};
struct __half {
  _Float16 h;
};
inline float __bfloat162float(__nv_bfloat16 v) {
  const uint32_t bits = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{static_cast<uint16_t>((u >> 16) | 0x40u)};  // NaN
  return __nv_bfloat16{static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
inline float __half2float(__half v) { return static_cast<float>(v.h); }
inline __half __float2half_rn(float f) { return __half{static_cast<_Float16>(f)}; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fmul_rn(float a, float b) { return a * b; }  // (no contraction across the call)
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}

// may_alias: kernels move 16 bytes of any type through uint4 (a CUDA idiom that is type punning
// on the host).
struct __attribute__((may_alias)) uint4 {
  uint32_t x, y, z, w;
};
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return uint4{x, y, z, w}; }
struct __attribute__((may_alias)) float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }

namespace cuda_emu {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline Dim3 thread_idx, block_idx, grid_dim, block_dim;

struct Barrier {
  int expected = 0;
  int arrived = 0;
  uint64_t generation = 0;
};

struct Fiber {
  void* sp = nullptr;  // its saved stack pointer (see switch_stack)
  unsigned tid = 0;
  Dim3 idx;  // threadIdx
  bool started = false;
  bool done = false;
  const Barrier* waiting = nullptr;
  uint64_t waiting_generation = 0;
};

struct BlockState {
  void* scheduler_sp = nullptr;
  std::vector<Fiber> fibers;
  size_t current = 0;
  size_t done = 0;        // fibers that have ended
  bool deadlock = false;  // set when no fiber can run but some have not ended
  Barrier block_barrier;
  std::vector<uint4> dynamic_shared;  // `extern __shared__` memory (16-byte aligned)
  std::vector<Barrier> warp_barriers;
  // [2][thread][kWords]: what a lane hands to its warp, double-buffered by the parity of its warp
  // barrier's generation so that one barrier per exchange suffices (a lane can write the same
  // buffer again only after the next barrier, which every lane reaches after reading it).
  std::vector<uint32_t> lane_words;
  void* kernel = nullptr;            // the launch's functor, run by entry (fiber_main<Kernel>)
  void (*entry)() = nullptr;
  static constexpr int kWords = 10;
};
inline BlockState* block = nullptr;

// Saves the callee-saved registers on the current stack and the stack pointer in *save, then
// continues the context whose stack pointer is next (saved by an earlier switch_stack, or
// prepared by prepare for a fiber's first run).
#if defined(__x86_64__)
__attribute__((naked, noinline)) inline void switch_stack(void** /*save*/, void* /*next*/) {
  asm volatile(
      "pushq %rbp\n\tpushq %rbx\n\tpushq %r12\n\tpushq %r13\n\tpushq %r14\n\tpushq %r15\n\t"
      "movq %rsp, (%rdi)\n\tmovq %rsi, %rsp\n\t"
      "popq %r15\n\tpopq %r14\n\tpopq %r13\n\tpopq %r12\n\tpopq %rbx\n\tpopq %rbp\n\tret");
}
#else
#error "cuda_emu: the fiber switch is written for x86-64"
#endif

inline Fiber& self() { return block->fibers[block->current]; }
// The running block's dynamic shared memory (PAGODA_DYNAMIC_SHARED).
inline void* dynamic_shared() { return block->dynamic_shared.data(); }

// Fiber stacks, allocated once and reused by every block (uninitialised: only touched pages cost).
// Each fiber's stack starts kStackSkew(tid) below the top of its region: regions a power of two
// apart would put every fiber's live frames in the same cache sets, and a switch would miss.
constexpr size_t kStackBytes = 192 * 1024;
inline size_t kStackSkew(unsigned tid) { return (static_cast<size_t>(tid) * 37 * 64) % (64 * 1024); }
inline char* fiber_stack(unsigned tid) {
  static std::vector<std::unique_ptr<char[]>> stacks;
  while (stacks.size() <= tid) stacks.emplace_back(new char[kStackBytes]);
  return stacks[tid].get();
}

// Gives a fiber that has not run yet its initial stack: six zero registers and block->entry as
// the return address, so that the first switch to it starts entry on a fresh stack.
inline void prepare(Fiber& f) {
  f.started = true;
  char* top = fiber_stack(f.tid) + kStackBytes - kStackSkew(f.tid);
  top -= reinterpret_cast<uintptr_t>(top) % 16;
  void** sp = reinterpret_cast<void**>(top) - 2;  // entry starts with rsp = top - 8, as after a call
  sp[0] = reinterpret_cast<void*>(block->entry);
  sp -= 6;
  for (int i = 0; i < 6; ++i) sp[i] = nullptr;
  f.sp = sp;
}

// The first fiber after `from` in round-robin order that can run (it has not ended and is not
// waiting at a barrier whose generation is unchanged), or -1.
inline long next_runnable(size_t from) {
  const size_t n = block->fibers.size();
  for (size_t step = 1; step <= n; ++step) {
    size_t i = from + step;
    if (i >= n) i -= n;
    Fiber& f = block->fibers[i];
    if (f.done) continue;
    if (f.waiting != nullptr) {
      if (f.waiting->generation == f.waiting_generation) continue;  // still waiting
      f.waiting = nullptr;
    }
    return static_cast<long>(i);
  }
  return -1;
}

// Leaves the running fiber (its context saved in *save) for the next one that can run, directly
// (no round trip through the scheduler); back to the scheduler when every fiber has ended, or
// when none can run (a deadlock, reported there).
inline void hand_off(void** save) {
  const long next = next_runnable(block->current);
  if (next < 0) {
    block->deadlock = block->done != block->fibers.size();
    switch_stack(save, block->scheduler_sp);
    return;
  }
  Fiber& f = block->fibers[static_cast<size_t>(next)];
  if (!f.started) prepare(f);
  block->current = static_cast<size_t>(next);
  thread_idx = f.idx;
  switch_stack(save, f.sp);
}

// Waits until `expected` fibers have arrived at b (the arriving fiber that completes it goes on).
inline void wait(Barrier& b) {
  if (++b.arrived == b.expected) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  Fiber& f = self();
  f.waiting = &b;
  f.waiting_generation = b.generation;
  hand_off(&f.sp);
}

// The running fiber's linear thread index (x fastest).
inline unsigned linear_tid() { return block->fibers[block->current].tid; }
inline Barrier& warp_barrier() { return block->warp_barriers[linear_tid() / 32]; }
inline uint32_t* lane_words(unsigned tid, uint64_t generation) {
  const size_t threads = block->fibers.size();
  return &block->lane_words[((generation & 1) * threads + tid) * BlockState::kWords];
}

template <class Kernel>
void fiber_main() {
  (*static_cast<Kernel*>(block->kernel))();
  self().done = true;
  ++block->done;
  hand_off(&self().sp);  // never comes back
  __builtin_unreachable();
}

// Runs kernel() on grid x block threads (block.x * block.y * block.z a multiple of 32: warps are
// consecutive linear thread indices, x fastest, as on a GPU). The blocks run one after another;
// each starts at its fiber 0, and a fiber that waits hands over to the next one that can run.
template <class Kernel>
void launch(Dim3 grid, Dim3 shape, Kernel kernel, size_t dynamic_shared_bytes = 0) {
  const unsigned threads = shape.x * shape.y * shape.z;
  if (threads % 32 != 0) throw std::runtime_error("cuda_emu: threads per block must be a multiple of 32");
  grid_dim = grid;
  block_dim = shape;
  BlockState state;
  state.dynamic_shared.resize((dynamic_shared_bytes + 15) / 16);
  state.lane_words.assign(2 * static_cast<size_t>(threads) * BlockState::kWords, 0);
  state.fibers.resize(threads);
  state.kernel = &kernel;
  state.entry = &fiber_main<Kernel>;
  for (unsigned t = 0; t < threads; ++t) {
    state.fibers[t].tid = t;
    state.fibers[t].idx = Dim3{t % shape.x, (t / shape.x) % shape.y, t / (shape.x * shape.y)};
  }
  block = &state;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        block_idx = Dim3{x, y, z};
        state.block_barrier = Barrier{static_cast<int>(threads), 0, 0};
        state.warp_barriers.assign(threads / 32, Barrier{32, 0, 0});
        for (Fiber& f : state.fibers) {
          f.started = f.done = false;
          f.waiting = nullptr;
        }
        state.done = 0;
        state.deadlock = false;
        state.current = 0;
        prepare(state.fibers[0]);
        thread_idx = state.fibers[0].idx;
        switch_stack(&state.scheduler_sp, state.fibers[0].sp);
        if (state.deadlock) {
          block = nullptr;
          throw std::runtime_error("cuda_emu: deadlock (threads wait at different barriers)");
        }
      }
  block = nullptr;
}

template <class Kernel>
void launch(Dim3 grid, unsigned threads, Kernel kernel, size_t dynamic_shared_bytes = 0) {
  launch(grid, Dim3{threads, 1, 1}, kernel, dynamic_shared_bytes);
}

}  // namespace cuda_emu

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define threadIdx cuda_emu::thread_idx
#define blockIdx cuda_emu::block_idx
#define gridDim cuda_emu::grid_dim
#define blockDim cuda_emu::block_dim

inline void __syncthreads() { cuda_emu::wait(cuda_emu::block->block_barrier); }

namespace cuda_emu {
// Every lane of the warp hands over v and gets the value of lane src(lane) (its own when src is
// out of the warp).
template <class T, class Src>
T warp_exchange(T v, Src src) {
  static_assert(sizeof(T) <= 8, "warp values of at most 8 bytes");
  const unsigned tid = linear_tid(), base = tid & ~31u;
  const uint64_t gen = warp_barrier().generation;
  std::memcpy(lane_words(tid, gen), &v, sizeof(T));
  wait(warp_barrier());
  const int from = src(static_cast<int>(tid & 31u));
  T r = v;
  if (from >= 0 && from < 32) std::memcpy(&r, lane_words(base + static_cast<unsigned>(from), gen), sizeof(T));
  return r;
}
}  // namespace cuda_emu

// (Every caller passes the full warp as the mask.)
template <class T>
T __shfl_xor_sync(unsigned, T v, int lane_mask) {
  return cuda_emu::warp_exchange(v, [&](int lane) { return lane ^ lane_mask; });
}
template <class T>
T __shfl_up_sync(unsigned, T v, unsigned delta) {
  return cuda_emu::warp_exchange(v, [&](int lane) { return lane - static_cast<int>(delta); });
}
template <class T>
T __shfl_sync(unsigned, T v, int src_lane) {
  return cuda_emu::warp_exchange(v, [&](int) { return src_lane; });
}
inline unsigned __ballot_sync(unsigned, int predicate) {
  const unsigned tid = cuda_emu::linear_tid(), base = tid & ~31u;
  const uint64_t gen = cuda_emu::warp_barrier().generation;
  cuda_emu::lane_words(tid, gen)[0] = predicate != 0 ? 1u : 0u;
  cuda_emu::wait(cuda_emu::warp_barrier());
  unsigned bits = 0;
  for (unsigned l = 0; l < 32; ++l) bits |= cuda_emu::lane_words(base + l, gen)[0] << l;
  return bits;
}
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }
template <class T>
T atomicAdd(T* address, T v) {
  const T old = *address;
  *address = old + v;
  return old;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 with d as both C and D.
inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const unsigned tid = cuda_emu::linear_tid(), base = tid & ~31u, lane = tid & 31u;
  const uint64_t gen = cuda_emu::warp_barrier().generation;
  uint32_t* mine = cuda_emu::lane_words(tid, gen);
  std::memcpy(mine, a, 16);
  std::memcpy(mine + 4, b, 8);
  cuda_emu::wait(cuda_emu::warp_barrier());
  auto bf16 = [](uint32_t word, int half) {
    const uint32_t bits = (half == 0 ? word & 0xffffu : word >> 16) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  };
  // A[row][k]: lane 4 * (row % 8) + (k % 8) / 2, register (row >= 8) + 2 * (k >= 8), half k % 2.
  auto A = [&](int row, int k) {
    const uint32_t* w = cuda_emu::lane_words(base + 4 * (row % 8) + (k % 8) / 2, gen);
    return bf16(w[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k % 2);
  };
  // B[k][col]: lane 4 * col + (k % 8) / 2, register 4 + (k >= 8), half k % 2.
  auto B = [&](int k, int col) {
    const uint32_t* w = cuda_emu::lane_words(base + 4 * col + (k % 8) / 2, gen);
    return bf16(w[4 + (k >= 8 ? 1 : 0)], k % 2);
  };
  const int g = static_cast<int>(lane >> 2), t = static_cast<int>(lane & 3u);
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
    float acc = d[e];
    for (int k = 0; k < 16; ++k) acc = std::fma(A(row, k), B(k, col), acc);
    d[e] = acc;
  }
}
