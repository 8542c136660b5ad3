// Micro-benchmarks of the CPU backend's hot ops at Qwen3-0.6B shapes:
//  - linear at decode sizes (T = 1, 4): GB/s of weight bytes streamed, and the fraction of the
//    machine's read bandwidth (measured here the same way as bench/membw);
//  - linear at prefill sizes: GFLOP/s;
//  - paged_attention: decode (GB/s of K/V read) and prefill (GFLOP/s).
// The kernels are those make_cpu_backend() picks (PAGODA_CPU_ISA overrides, PAGODA_NUM_THREADS
// sets the threads).
//  - gated_delta_rule (Gated DeltaNet recurrence) at decode, vs its memory roofline (--gdn: only that).
//  - moe_experts at Qwen3-30B-A3B's expert shapes (128 experts of 768 x 2048, top-8) for 1 to 32
//    tokens routed at random: GB/s of the distinct experts' weights streamed (--moe: only that).
//  - linear at every decode row count T = 1..8 of one 6144 x 2048 BF16 weight (--rows: only that).
//   ops_bench [--quick] [--best] [--gdn] [--moe] [--rows] [--gemm T,N,K ...]  (--gemm: BF16 and FP8)
#include <array>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <emmintrin.h>

#include "backend/backend.h"
#include "base/dtype.h"
#include "base/thread_pool.h"

namespace {

using pagoda::Backend;
using pagoda::DType;
using pagoda::Tensor;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// --best: report the fastest call instead of the median (on a machine shared with other jobs the
// median measures the neighbours as much as the kernel).
bool g_best = false;

// Median (or best) seconds of `reps` calls after one warm-up.
double time_op(int reps, const std::function<void(int)>& fn) {
  fn(0);
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    fn(r + 1);
    t.push_back(seconds_since(t0));
  }
  std::sort(t.begin(), t.end());
  return g_best ? t.front() : t[t.size() / 2];
}

double read_bandwidth_gbs() {
  pagoda::ThreadPool& pool = pagoda::ThreadPool::global();
  const size_t n = size_t{512} << 20 >> 2;
  float* buf = static_cast<float*>(std::aligned_alloc(64, n * 4));
  pool.parallel_for(static_cast<int64_t>(n), 1 << 16, [&](int64_t b, int64_t e) {
    std::memset(buf + b, 0, (e - b) * 4);
  });
  std::vector<float> sink(pool.num_threads());
  double best = 0;
  for (int r = 0; r < 4; ++r) {
    auto t0 = Clock::now();
    pool.run([&](int t, int nt) {
      const size_t b = n * t / nt / 16 * 16, e = t + 1 == nt ? n : n * (t + 1) / nt / 16 * 16;
      __m128 a0 = _mm_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (size_t i = b; i + 16 <= e; i += 16) {
        a0 = _mm_add_ps(a0, _mm_load_ps(buf + i));
        a1 = _mm_add_ps(a1, _mm_load_ps(buf + i + 4));
        a2 = _mm_add_ps(a2, _mm_load_ps(buf + i + 8));
        a3 = _mm_add_ps(a3, _mm_load_ps(buf + i + 12));
      }
      sink[t] += _mm_cvtss_f32(_mm_add_ps(_mm_add_ps(a0, a1), _mm_add_ps(a2, a3)));
    });
    best = std::max(best, n * 4.0 / seconds_since(t0) / 1e9);
  }
  std::free(buf);
  return sink[0] == 12345.f ? 0 : best;
}

std::vector<uint16_t> random_bf16(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = pagoda::f32_to_bf16(d(rng));
  return v;
}
std::vector<float> random_f32(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Decode linear: copies of the weight rotate so that the bytes streamed per call come from
// DRAM, not the 32 MiB L3, as in a real model (28 layers of weights).
// fp8: E4M3 weights with 128 x 128 block scales (--quantization fp8); bytes counted: codes + scales.
void bench_linear_decode(Backend& be, int64_t N, int64_t K, int64_t T, double membw, std::mt19937& rng,
                         bool fp8 = false) {
  const size_t w_elems = static_cast<size_t>(N) * K;
  const size_t elem_bytes = fp8 ? 1 : 2;
  const int64_t grid = ((N + 127) / 128) * ((K + 127) / 128);
  const int copies =
      static_cast<int>(std::max<int64_t>(1, (int64_t{256} << 20) / static_cast<int64_t>(w_elems * elem_bytes)));
  std::vector<std::vector<uint16_t>> ws;
  std::vector<std::vector<uint8_t>> ws8;
  std::vector<float> scales(static_cast<size_t>(grid), 0.01f);
  std::uniform_int_distribution<int> code(0, 0x7e);
  for (int c = 0; c < copies; ++c) {
    if (fp8) {
      ws8.emplace_back(w_elems);
      for (auto& b : ws8.back()) b = static_cast<uint8_t>(code(rng) | (rng() & 0x80));
    } else {
      ws.push_back(random_bf16(w_elems, rng));
    }
  }
  std::vector<float> x = random_f32(T * K, rng), out(T * N);
  const double s = time_op(std::max(8, 3 * copies), [&](int r) {
    Tensor w = fp8 ? Tensor(ws8[r % copies].data(), DType::kF8E4M3, {N, K})
                   : Tensor(ws[r % copies].data(), DType::kBF16, {N, K});
    if (fp8) {
      w.scale = scales.data();
      w.scale_block_n = w.scale_block_k = 128;
    }
    be.linear(Tensor(x.data(), DType::kF32, {T, K}), w, nullptr, Tensor(out.data(), DType::kF32, {T, N}));
  });
  const double gbs = (w_elems * elem_bytes + (fp8 ? 4.0 * grid : 0.0)) / s / 1e9;
  std::printf("linear decode  T=%-3lld N=%-6lld K=%-5lld %s: %8.3f ms  %6.2f GB/s  %5.1f%% of read bw\n",
              static_cast<long long>(T), static_cast<long long>(N), static_cast<long long>(K), fp8 ? "fp8 " : "bf16",
              s * 1e3, gbs, 100.0 * gbs / membw);
}

void bench_linear_prefill(Backend& be, int64_t N, int64_t K, int64_t T, DType wd, double peak, std::mt19937& rng) {
  std::vector<uint16_t> w16;
  std::vector<float> w32;
  std::vector<uint8_t> w8;
  std::vector<float> scales(static_cast<size_t>(((N + 127) / 128) * ((K + 127) / 128)), 0.01f);
  if (wd == DType::kF32) {
    w32 = random_f32(N * K, rng);
  } else if (wd == DType::kF8E4M3) {  // 128 x 128 block scales (--quantization fp8)
    w8.resize(static_cast<size_t>(N * K));
    for (auto& b : w8) b = static_cast<uint8_t>(rng() % 0x7f | (rng() & 0x80));
  } else {
    w16 = random_bf16(N * K, rng);
  }
  void* w = wd == DType::kF32 ? static_cast<void*>(w32.data())
            : wd == DType::kF8E4M3 ? static_cast<void*>(w8.data()) : static_cast<void*>(w16.data());
  std::vector<float> x = random_f32(T * K, rng), out(T * N);
  Tensor wt(w, wd, {N, K});
  if (wd == DType::kF8E4M3) {
    wt.scale = scales.data();
    wt.scale_block_n = wt.scale_block_k = 128;
  }
  const double s = time_op(5, [&](int) {
    be.linear(Tensor(x.data(), DType::kF32, {T, K}), wt, nullptr, Tensor(out.data(), DType::kF32, {T, N}));
  });
  const double gflops = 2.0 * T * N * K / s / 1e9;
  std::printf("linear prefill T=%-4lld N=%-6lld K=%-5lld %-4s: %8.3f ms  %7.1f GFLOP/s  %5.1f%% of peak\n",
              static_cast<long long>(T), static_cast<long long>(N), static_cast<long long>(K),
              std::string(pagoda::dtype_name(wd)).c_str(), s * 1e3, gflops, 100.0 * gflops / peak);
}

// S sequences, each `ctx` tokens long, with `q_len` new tokens each (1 = decode).
void bench_attention(Backend& be, int S, int ctx, int q_len, DType cache_dtype, int window, std::mt19937& rng) {
  const int Hq = 16, Hk = 8, D = 128, bs = 16;
  const int blocks_per_seq = (ctx + bs - 1) / bs;
  const int num_blocks = S * blocks_per_seq;
  pagoda::KvCache kv = be.allocate_kv_cache(1, num_blocks, bs, Hk, D, cache_dtype);
  const size_t cache_bytes = kv.layers[0].k.nbytes();
  // Fill with small values (the content does not change the speed; NaN-free matters).
  std::memset(kv.layers[0].k.data, 0, cache_bytes);
  std::memset(kv.layers[0].v.data, 0, cache_bytes);
  const int T = S * q_len;
  std::vector<int32_t> qsl(S + 1), lens(S, ctx), tables(static_cast<size_t>(S) * blocks_per_seq);
  for (int s = 0; s <= S; ++s) qsl[s] = s * q_len;
  for (size_t i = 0; i < tables.size(); ++i) tables[i] = static_cast<int32_t>(i);
  pagoda::AttentionMetadata meta;
  meta.query_start_loc = Tensor(qsl.data(), DType::kI32, {S + 1});
  meta.seq_lens = Tensor(lens.data(), DType::kI32, {S});
  meta.block_tables = Tensor(tables.data(), DType::kI32, {S, blocks_per_seq});
  meta.num_seqs = S;
  meta.num_tokens = T;
  meta.max_query_len = q_len;
  meta.max_seq_len = ctx;
  meta.sliding_window = window;
  std::vector<float> q = random_f32(static_cast<size_t>(T) * Hq * D, rng), out(q.size());
  const double s = time_op(q_len == 1 ? 20 : 3, [&](int) {
    be.paged_attention(Tensor(q.data(), DType::kF32, {T, Hq, D}), kv.layers[0], meta, 0.088f,
                       Tensor(out.data(), DType::kF32, {T, Hq, D}));
  });
  const char* dt = cache_dtype == DType::kBF16 ? "bf16" : cache_dtype == DType::kF8E4M3 ? "fp8" : "f32";
  if (q_len == 1) {
    const double bytes = 2.0 * S * ctx * Hk * D * pagoda::dtype_size(cache_dtype);
    std::printf("attention decode  seqs=%-3d ctx=%-5d %-4s: %8.3f ms  %6.2f GB/s of K/V\n", S, ctx, dt, s * 1e3,
                bytes / s / 1e9);
  } else {
    // QK^T and PV over the causal triangle: 4 * D flops per (query, key, head) pair.
    const double pairs = static_cast<double>(S) * Hq * (static_cast<double>(ctx - q_len) * q_len + q_len * (q_len + 1) / 2.0);
    std::printf("attention prefill seqs=%-3d q=%-5d ctx=%-5d %-4s: %8.3f ms  %7.1f GFLOP/s\n", S, q_len, ctx, dt,
                s * 1e3, 4.0 * D * pairs / s / 1e9);
  }
}

// Gated DeltaNet recurrence (gated_delta_rule) at decode: S sequences, one token each, Qwen3.5-0.8B
// head shapes (16 key / 16 value heads of 128). The op must read and write each sequence's F32
// state [n_v, d_k, d_v] (1 MiB); that is its memory roofline: 2 x state bytes / read bandwidth
// per token. The states are rotated over >= 256 MiB of copies (as in a decode step, where the
// weights of the whole model pass through the caches between two visits to one layer), so every
// call reads its state from DRAM.
void bench_gdn_decode(Backend& be, int S, double membw, std::mt19937& rng) {
  const int nk = 16, nv = 16, dk = 128, dv = 128, K = 4;
  const int64_t conv_dim = 2 * nk * dk + nv * dv;
  const size_t rec_floats = static_cast<size_t>(S) * nv * dk * dv;
  const int copies = std::max<int>(2, static_cast<int>((size_t{256} << 20) / (rec_floats * 4)) + 1);
  std::vector<std::vector<float>> rec(copies, std::vector<float>(rec_floats, 0.01f));
  std::vector<std::vector<float>> conv(copies, std::vector<float>(static_cast<size_t>(S) * conv_dim * (K - 1), 0.f));
  std::vector<float> qkv = random_f32(static_cast<size_t>(S) * conv_dim, rng), a = random_f32(static_cast<size_t>(S) * nv, rng),
                     b = random_f32(static_cast<size_t>(S) * nv, rng), A_log(nv, 0.5f), dt_bias(nv, 1.0f),
                     out(static_cast<size_t>(S) * nv * dv);
  std::vector<int32_t> qsl(S + 1), lens(S, 100), slots(S);
  for (int s = 0; s <= S; ++s) qsl[s] = s;
  for (int s = 0; s < S; ++s) slots[s] = s;
  pagoda::AttentionMetadata meta;
  meta.query_start_loc = Tensor(qsl.data(), DType::kI32, {S + 1});
  meta.seq_lens = Tensor(lens.data(), DType::kI32, {S});
  meta.state_slots = Tensor(slots.data(), DType::kI32, {S});
  meta.num_seqs = S;
  meta.num_tokens = S;
  meta.max_query_len = 1;
  meta.max_seq_len = 100;
  const pagoda::GdnShape shape{nk, nv, dk, dv};
  const double s = time_op(40, [&](int r) {
    pagoda::LinearAttnState st;
    st.conv = Tensor(conv[r % copies].data(), DType::kF32, {S, conv_dim, K - 1});
    st.recurrent = Tensor(rec[r % copies].data(), DType::kF32, {S, nv, dk, dv});
    be.gated_delta_rule(Tensor(qkv.data(), DType::kF32, {S, conv_dim}), Tensor(a.data(), DType::kF32, {S, nv}),
                        Tensor(b.data(), DType::kF32, {S, nv}), Tensor(A_log.data(), DType::kF32, {nv}),
                        Tensor(dt_bias.data(), DType::kF32, {nv}), shape, meta, 64, st,
                        Tensor(out.data(), DType::kF32, {S, nv * dv}));
  });
  const double bytes = 2.0 * rec_floats * 4;  // state read + written; q/k/v/a/b/out are < 3% more
  const double roofline = bytes / (membw * 1e9);
  std::printf("gdn recurrence decode seqs=%-3d (16x128x128 state): %8.3f ms = %7.1f us/token  %6.2f GB/s of state"
              "  roofline %6.1f us/token -> %5.1f%% of roofline\n",
              S, s * 1e3, s * 1e6 / S, bytes / s / 1e9, roofline * 1e6 / S, 100.0 * roofline / s);
}

// Qwen3-30B-A3B's expert shapes: H 2048, I 768, 128 experts, top-8. Two layers' experts (2.4 GB),
// made once and alternated by bench_moe, so the weights come from DRAM.
constexpr int64_t kMoeH = 2048, kMoeI = 768, kMoeE = 128, kMoeTopK = 8;
struct MoeBenchWeights {
  std::vector<std::vector<uint16_t>> store;
  std::vector<pagoda::MoeExpertWeights> layers;
  explicit MoeBenchWeights(std::mt19937& rng) : layers(2) {
    store.reserve(layers.size() * kMoeE * 3);  // (a vector's data stays put when moved anyway)
    for (auto& l : layers) {
      for (int64_t e = 0; e < kMoeE; ++e) {
        for (int m = 0; m < 3; ++m) store.push_back(random_bf16(static_cast<size_t>(kMoeI * kMoeH), rng));
        l.gate.push_back(Tensor(store[store.size() - 3].data(), DType::kBF16, {kMoeI, kMoeH}));
        l.up.push_back(Tensor(store[store.size() - 2].data(), DType::kBF16, {kMoeI, kMoeH}));
        l.down.push_back(Tensor(store[store.size() - 1].data(), DType::kBF16, {kMoeH, kMoeI}));
      }
    }
  }
};

// moe_experts for T tokens, each routed to top-k distinct experts drawn at random (a fresh draw
// per call), weights 1/k. The roofline is the distinct experts' weight bytes / read bandwidth:
// every one is streamed once however many tokens it serves.
void bench_moe(Backend& be, const MoeBenchWeights& mw, int64_t T, double membw, std::mt19937& rng) {
  const int64_t H = kMoeH, I = kMoeI, E = kMoeE, k = kMoeTopK, R = T * k;
  const auto& w = mw.layers;
  const int layers = static_cast<int>(w.size());
  std::vector<float> x = random_f32(static_cast<size_t>(T * H), rng), out(static_cast<size_t>(T * H));
  std::vector<float> sx(static_cast<size_t>(R * H)), sg(static_cast<size_t>(R * I)), su(static_cast<size_t>(R * I));
  std::vector<int32_t> rop(R), por(R), offs(E + 1);
  pagoda::MoeScratch scratch{Tensor(sx.data(), DType::kF32, {R, H}),     Tensor(sx.data(), DType::kF32, {R, H}),
                             Tensor(sg.data(), DType::kF32, {R, I}),     Tensor(su.data(), DType::kF32, {R, I}),
                             Tensor(rop.data(), DType::kI32, {R}),       Tensor(por.data(), DType::kI32, {R}),
                             Tensor(offs.data(), DType::kI32, {E + 1})};
  std::vector<float> weights(static_cast<size_t>(R), 1.0f / k);
  const int reps = 40;
  std::vector<std::vector<int32_t>> ids(reps + 1, std::vector<int32_t>(static_cast<size_t>(R)));
  double distinct = 0;
  for (auto& id : ids) {
    std::vector<int32_t> perm(E);
    std::vector<bool> used(E, false);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t e = 0; e < E; ++e) perm[e] = static_cast<int32_t>(e);
      std::shuffle(perm.begin(), perm.end(), rng);
      for (int64_t j = 0; j < k; ++j) {
        id[t * k + j] = perm[j];
        used[perm[j]] = true;
      }
    }
    distinct += static_cast<double>(std::count(used.begin(), used.end(), true));
  }
  distinct /= static_cast<double>(ids.size());
  const double s = time_op(reps, [&](int r) {
    be.moe_experts(Tensor(x.data(), DType::kF32, {T, H}), Tensor(ids[r].data(), DType::kI32, {T, k}),
                   Tensor(weights.data(), DType::kF32, {T, k}), w[r % layers], scratch,
                   Tensor(out.data(), DType::kF32, {T, H}));
  });
  const double bytes = distinct * 3.0 * I * H * 2;
  std::printf("moe_experts T=%-3lld top-8 of 128 (768x2048 bf16): %8.3f ms  %5.1f distinct experts  %6.2f GB/s"
              "  %5.1f%% of read bw\n",
              static_cast<long long>(T), s * 1e3, distinct, bytes / s / 1e9, 100.0 * bytes / s / 1e9 / membw);
}

double cpu_mhz() {
  FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (f == nullptr) return 0;
  char line[512];
  double mhz = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, "cpu MHz", 7) == 0) {
      const char* colon = std::strchr(line, ':');
      if (colon != nullptr) mhz = std::max(mhz, std::atof(colon + 1));
    }
  }
  std::fclose(f);
  return mhz;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, gdn_only = false, moe_only = false, rows_only = false;
  std::vector<std::array<int64_t, 3>> gemms;  // --gemm T,N,K: only these prefill linears (BF16)
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--gemm" && i + 1 < argc) {
      std::array<int64_t, 3> tnk{};
      if (std::sscanf(argv[++i], "%ld,%ld,%ld", &tnk[0], &tnk[1], &tnk[2]) != 3) {
        std::fprintf(stderr, "--gemm expects T,N,K\n");
        return 2;
      }
      gemms.push_back(tnk);
    }
    quick = quick || a == "--quick";
    g_best = g_best || a == "--best";
    gdn_only = gdn_only || a == "--gdn";
    moe_only = moe_only || a == "--moe";
    rows_only = rows_only || a == "--rows";
  }
  auto be = pagoda::make_cpu_backend();
  const int threads = pagoda::ThreadPool::global().num_threads();
  const double mhz = cpu_mhz();
  const int lanes = be->name().find("avx512") != std::string::npos ? 16 : be->name().find("avx2") != std::string::npos ? 8 : 1;
  // 2 FMA pipes x lanes x 2 flops per core (Zen / Skylake-SP class cores).
  const double peak = threads * 2.0 * lanes * 2.0 * mhz / 1e3;
  const double membw = read_bandwidth_gbs();
  std::printf("backend %s, %d threads, %.0f MHz: f32 FMA peak %.1f GFLOP/s, read bandwidth %.2f GB/s (%s time)\n",
              be->name().c_str(), threads, mhz, peak, membw, g_best ? "best" : "median");
  std::mt19937 rng(1);
  if (!gemms.empty()) {
    for (const auto& [T, N, K] : gemms) {
      bench_linear_prefill(*be, N, K, T, DType::kBF16, peak, rng);
      bench_linear_prefill(*be, N, K, T, DType::kF8E4M3, peak, rng);
    }
    return 0;
  }
  if (rows_only) {
    for (int64_t T = 1; T <= 8; ++T) bench_linear_decode(*be, 6144, 2048, T, membw, rng);
    return 0;
  }
  if (moe_only) {
    const MoeBenchWeights mw(rng);
    for (int64_t T : {1, 2, 4, 8, 16, 32}) bench_moe(*be, mw, T, membw, rng);
    // The rest of a Qwen3-30B-A3B decode step: q/k/v, o_proj, lm_head (untied, vocab 151936).
    for (auto [N, K] : {std::pair<int64_t, int64_t>{5120, 2048}, {2048, 4096}, {151936, 2048}})
      for (int64_t T : {1, 8}) bench_linear_decode(*be, N, K, T, membw, rng);
    return 0;
  }
  // Qwen3-0.6B: hidden 1024, q 2048 + k/v 1024 (qkv 4096), MLP 3072 (gate+up 6144), vocab 151936.
  const int64_t decode_shapes[][2] = {{3072, 1024}, {4096, 1024}, {6144, 1024}, {1024, 3072}, {151936, 1024}};
  for (auto& nk : decode_shapes) {
    if (gdn_only) break;
    for (int64_t T : {1, 4, 8}) {
      if (quick && T != 1) continue;
      bench_linear_decode(*be, nk[0], nk[1], T, membw, rng);
      if (nk[0] != 151936) bench_linear_decode(*be, nk[0], nk[1], T, membw, rng, /*fp8=*/true);
    }
  }
  const int64_t prefill_shapes[][2] = {{4096, 1024}, {6144, 1024}, {1024, 3072}};
  for (auto& nk : prefill_shapes) {
    if (gdn_only) break;
    for (int64_t T : {64, 512}) {
      if (quick && T == 64) continue;
      bench_linear_prefill(*be, nk[0], nk[1], T, DType::kBF16, peak, rng);
    }
  }
  if (!quick && !gdn_only) bench_linear_prefill(*be, 1024, 1024, 512, DType::kF32, peak, rng);
  if (gdn_only) {
    for (int S : {1, 8, 32}) bench_gdn_decode(*be, S, membw, rng);
    return 0;
  }
  for (DType cd : {DType::kBF16, DType::kF8E4M3, DType::kF32}) {
    bench_attention(*be, 1, 1024, 1, cd, -1, rng);
    bench_attention(*be, 1, 4096, 1, cd, -1, rng);
    if (!quick) bench_attention(*be, 16, 1024, 1, cd, -1, rng);
    bench_attention(*be, 1, 512, 512, cd, -1, rng);
  }
  return 0;
}
