// `pagoda bench throughput|latency MODEL_DIR ...`: vLLM's benchmark_throughput.py /
// benchmark_latency.py on synthetic prompts (random token ids, ignore_eos, max_tokens =
// --output-len), on one LLMEngine with the usual engine flags.
//
//   throughput: --num-prompts P requests submitted at once, timed to the last token; prints
//     "Throughput: X requests/s, Y total tokens/s, Z output tokens/s".
//   latency: --batch-size B requests run to completion, --num-iters-warmup + --num-iters times;
//     prints "Avg latency: X seconds" and the 10/25/50/75/90/99% percentiles (numpy's linear
//     interpolation). The prefix cache is reset before every iteration, so each one prefills.
//   prefix-caching: --num-prompts requests that share a --prefix-len-token prefix (then
//     --suffix-len tokens of their own) arrive one after another, each once the previous one
//     finished; prints every request's time to first token and the later ones' mean and max as
//     a share of the first's (the first computes the prefix, the others should find it cached).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "engine/llm_engine.h"

namespace pagoda {
namespace {

using Clock = std::chrono::steady_clock;

const std::set<std::string> kEngineBoolFlags = {"--no-enable-prefix-caching", "--enforce-eager",
                                                "--async-scheduling", "--no-async-scheduling"};

std::vector<std::vector<int32_t>> random_prompts(int count, int len, int64_t vocab_size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> dist(0, vocab_size - 1);
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(count));
  for (auto& p : prompts)
    for (int i = 0; i < len; ++i) p.push_back(static_cast<int32_t>(dist(rng)));
  return prompts;
}

// KV cache occupancy over a run: the fullest step, and the memory lost to partly filled blocks
// summed over the steps at full load (at least 90% of the blocks held), or over all steps if the
// pool never got that full.
struct KvPeak {
  int used_blocks = 0;
  int num_blocks = 0;
  int64_t held[2] = {0, 0}, stored[2] = {0, 0};  // [0]: every step, [1]: steps at full load
  int64_t steps[2] = {0, 0};
  void observe(const EngineStats& st) {
    const int used = st.num_blocks - st.num_free_blocks;
    used_blocks = std::max(used_blocks, used);
    num_blocks = st.num_blocks;
    for (int k = 0; k < 2; ++k) {
      if (k == 1 && 10 * static_cast<int64_t>(used) < 9 * static_cast<int64_t>(st.num_blocks)) continue;
      held[k] += st.num_held_slots;
      stored[k] += st.num_stored_tokens;
      ++steps[k];
    }
  }
  int which() const { return steps[1] > 0 ? 1 : 0; }
  double waste() const {
    const int k = which();
    return held[k] > 0 ? static_cast<double>(held[k] - stored[k]) / static_cast<double>(held[k]) : 0.0;
  }
};

// Submits the prompts and steps the engine until all finish; returns the output token count.
int64_t run_batch(LLMEngine& engine, const std::vector<std::vector<int32_t>>& prompts, int output_len,
                  const std::string& tag, KvPeak* peak = nullptr) {
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_p = 1.0f;
  params.ignore_eos = true;
  params.max_tokens = output_len;
  for (size_t i = 0; i < prompts.size(); ++i) engine.add_request(tag + std::to_string(i), prompts[i], params);
  int64_t out = 0;
  while (engine.has_unfinished()) {
    for (const RequestOutput& o : engine.step()) out += static_cast<int64_t>(o.new_token_ids.size());
    if (peak) peak->observe(engine.stats());
  }
  return out;
}

int positive(const Args& args, const char* flag, long long fallback, bool required) {
  auto v = args.get_int(flag);
  PAGODA_CHECK(v || !required, "bench needs ", flag, " N");
  const long long x = v.value_or(fallback);
  PAGODA_CHECK(x >= 1 && x <= (1 << 24), flag, " must be in [1, ", 1 << 24, "], got ", x);
  return static_cast<int>(x);
}

// numpy.percentile's default (linear) interpolation.
double percentile(std::vector<double> xs, double q) {
  std::sort(xs.begin(), xs.end());
  const double pos = q / 100.0 * static_cast<double>(xs.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, xs.size() - 1);
  return xs[lo] + (xs[hi] - xs[lo]) * (pos - static_cast<double>(lo));
}

std::unique_ptr<LLMEngine> make_engine(const Args& args, int input_len, int output_len) {
  const std::string model_dir = args.positionals()[0];
  check_checkpoint_dir(model_dir);
  EngineConfig config = engine_config_from_args(args);
  if (config.max_model_len == 0) config.max_model_len = input_len + output_len;
  PAGODA_CHECK(input_len + output_len <= config.max_model_len, "--input-len + --output-len (",
               input_len + output_len, ") exceeds --max-model-len ", config.max_model_len);
  return LLMEngine::from_model_dir(model_dir, config);
}

int throughput(int argc, char** argv) {
  std::set<std::string> value_flags = engine_value_flags();
  for (const char* f : {"--input-len", "--output-len", "--num-prompts", "--seed"}) value_flags.insert(f);
  Args args(argc, argv, value_flags, kEngineBoolFlags,
            {"pagoda bench throughput", "MODEL_DIR --input-len N --output-len M --num-prompts P [options]",
             "Offline throughput on random prompts (vLLM's bench throughput): all requests at once, ignore_eos."});
  PAGODA_CHECK(args.positionals().size() == 1,
               "usage: pagoda bench throughput MODEL_DIR --input-len N --output-len M --num-prompts P");
  const int input_len = positive(args, "--input-len", 0, true);
  const int output_len = positive(args, "--output-len", 0, true);
  const int num_prompts = positive(args, "--num-prompts", 0, true);
  const long long seed = args.get_int("--seed").value_or(0);
  PAGODA_CHECK(seed >= 0, "--seed must be non-negative");

  std::unique_ptr<LLMEngine> engine = make_engine(args, input_len, output_len);
  const auto prompts =
      random_prompts(num_prompts, input_len, engine->core().vocab_size(), static_cast<uint64_t>(seed));
  KvPeak peak;
  const auto start = Clock::now();
  const int64_t output_tokens = run_batch(*engine, prompts, output_len, "bench-", &peak);
  const double elapsed = std::max(std::chrono::duration<double>(Clock::now() - start).count(), 1e-9);
  const double total_tokens = static_cast<double>(num_prompts) * input_len + static_cast<double>(output_tokens);
  std::printf("Throughput: %.2f requests/s, %.2f total tokens/s, %.2f output tokens/s\n", num_prompts / elapsed,
              total_tokens / elapsed, static_cast<double>(output_tokens) / elapsed);
  std::printf("Total num prompt tokens:  %lld\nTotal num output tokens:  %lld\n",
              static_cast<long long>(num_prompts) * input_len, static_cast<long long>(output_tokens));
  std::printf("KV cache: at most %d of %d blocks held (%.1f%%); partly filled blocks leave %.2f%% of the held "
              "KV memory empty (mean over %lld steps %s)\n",
              peak.used_blocks, peak.num_blocks, 100.0 * peak.used_blocks / std::max(peak.num_blocks, 1),
              100.0 * peak.waste(), static_cast<long long>(peak.steps[peak.which()]),
              peak.which() == 1 ? "with >= 90% of the blocks held" : "(the pool never got 90% full)");
  if (const std::string spec = spec_decoding_summary(engine->stats().spec_decoding); !spec.empty())
    std::printf("%s\n", spec.c_str());
  std::fflush(stdout);
  return 0;
}

int prefix_caching(int argc, char** argv) {
  std::set<std::string> value_flags = engine_value_flags();
  for (const char* f : {"--prefix-len", "--suffix-len", "--output-len", "--num-prompts", "--seed"}) value_flags.insert(f);
  Args args(argc, argv, value_flags, kEngineBoolFlags,
            {"pagoda bench prefix-caching", "MODEL_DIR [--prefix-len N --suffix-len M --num-prompts P] [options]",
             "Requests sharing one prefix, one after another: each one's time to first token against the first's."});
  PAGODA_CHECK(args.positionals().size() == 1,
               "usage: pagoda bench prefix-caching MODEL_DIR --prefix-len N --suffix-len M --num-prompts P");
  const int prefix_len = positive(args, "--prefix-len", 1024, false);
  const int suffix_len = positive(args, "--suffix-len", 32, false);
  const int output_len = positive(args, "--output-len", 1, false);
  const int num_prompts = positive(args, "--num-prompts", 16, false);
  PAGODA_CHECK(num_prompts >= 2, "--num-prompts must be at least 2 (the first one fills the cache)");
  const long long seed = args.get_int("--seed").value_or(0);
  PAGODA_CHECK(seed >= 0, "--seed must be non-negative");

  std::unique_ptr<LLMEngine> engine = make_engine(args, prefix_len + suffix_len, output_len);
  const int64_t vocab = engine->core().vocab_size();
  const auto prefix = random_prompts(1, prefix_len, vocab, static_cast<uint64_t>(seed))[0];
  auto prompts = random_prompts(num_prompts, suffix_len, vocab, static_cast<uint64_t>(seed) + 1);
  for (auto& p : prompts) p.insert(p.begin(), prefix.begin(), prefix.end());

  SamplingParams params;
  params.temperature = 0.0f;
  params.ignore_eos = true;
  params.max_tokens = output_len;
  std::vector<double> ttft;
  std::vector<int> cached;
  for (int i = 0; i < num_prompts; ++i) {
    const auto start = Clock::now();
    engine->add_request("prefix-" + std::to_string(i), prompts[static_cast<size_t>(i)], params);
    double first = -1;
    int num_cached = 0;
    while (engine->has_unfinished()) {
      for (const RequestOutput& o : engine->step()) {
        if (first < 0 && !o.new_token_ids.empty()) first = std::chrono::duration<double>(Clock::now() - start).count();
        num_cached = std::max(num_cached, o.num_cached_tokens);
      }
    }
    ttft.push_back(first);
    cached.push_back(num_cached);
    std::printf("Request %2d: TTFT %.4f s, %d of %d prompt tokens from the prefix cache\n", i, first, num_cached,
                prefix_len + suffix_len);
  }
  double sum = 0, worst = 0;
  for (size_t i = 1; i < ttft.size(); ++i) {
    sum += ttft[i];
    worst = std::max(worst, ttft[i]);
  }
  const double mean = sum / static_cast<double>(ttft.size() - 1);
  std::printf("First request TTFT: %.4f s\n", ttft[0]);
  std::printf("Later requests TTFT: mean %.4f s (%.1f%% of the first), max %.4f s (%.1f%% of the first)\n", mean,
              100.0 * mean / ttft[0], worst, 100.0 * worst / ttft[0]);
  const EngineStats st = engine->stats();
  std::printf("Prefix cache hit rate: %.2f%% (%lld of %lld tokens)\n", 100.0 * st.prefix_cache.hit_rate(),
              static_cast<long long>(st.prefix_cache.hits), static_cast<long long>(st.prefix_cache.queries));
  std::fflush(stdout);
  return 0;
}

int latency(int argc, char** argv) {
  std::set<std::string> value_flags = engine_value_flags();
  for (const char* f : {"--input-len", "--output-len", "--batch-size", "--num-iters", "--num-iters-warmup", "--seed"})
    value_flags.insert(f);
  Args args(argc, argv, value_flags, kEngineBoolFlags,
            {"pagoda bench latency", "MODEL_DIR [--input-len N --output-len M --batch-size B] [options]",
             "Latency of one batch run to completion (vLLM's bench latency): average and percentiles."});
  PAGODA_CHECK(args.positionals().size() == 1,
               "usage: pagoda bench latency MODEL_DIR --input-len N --output-len M --batch-size B");
  // vLLM's defaults: --input-len 32 --output-len 128 --batch-size 8 (required-ness relaxed).
  const int input_len = positive(args, "--input-len", 32, false);
  const int output_len = positive(args, "--output-len", 128, false);
  const int batch_size = positive(args, "--batch-size", 8, false);
  const int num_iters = positive(args, "--num-iters", 3, false);
  const long long warmup = args.get_int("--num-iters-warmup").value_or(1);
  PAGODA_CHECK(warmup >= 0 && warmup <= 1000, "--num-iters-warmup must be in [0, 1000]");
  const long long seed = args.get_int("--seed").value_or(0);
  PAGODA_CHECK(seed >= 0, "--seed must be non-negative");

  std::unique_ptr<LLMEngine> engine = make_engine(args, input_len, output_len);
  const auto prompts =
      random_prompts(batch_size, input_len, engine->core().vocab_size(), static_cast<uint64_t>(seed));
  int iter = 0;
  auto one = [&] {
    engine->reset_prefix_cache();
    const auto start = Clock::now();
    run_batch(*engine, prompts, output_len, "it" + std::to_string(iter++) + "-");
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  for (long long i = 0; i < warmup; ++i) {
    one();
    std::fprintf(stderr, "\rWarmup iterations: %lld/%lld", i + 1, warmup);
  }
  if (warmup > 0) std::fputc('\n', stderr);
  std::vector<double> latencies;
  for (int i = 0; i < num_iters; ++i) {
    latencies.push_back(one());
    std::fprintf(stderr, "\rProfiling iterations: %d/%d", i + 1, num_iters);
  }
  std::fputc('\n', stderr);
  double sum = 0;
  for (double l : latencies) sum += l;
  std::printf("Avg latency: %.6f seconds\n", sum / static_cast<double>(latencies.size()));
  for (int q : {10, 25, 50, 75, 90, 99})
    std::printf("%d%% percentile latency: %.6f seconds\n", q, percentile(latencies, q));
  if (const std::string spec = spec_decoding_summary(engine->stats().spec_decoding); !spec.empty())
    std::printf("%s\n", spec.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int bench_command(int argc, char** argv) {
  constexpr const char* kUsage =
      "usage: pagoda bench throughput|latency|prefix-caching|serve MODEL_DIR [options]\n"
      "  throughput      offline throughput on random prompts (vLLM's bench throughput)\n"
      "  latency         one batch run to completion, average and percentiles (vLLM's bench latency)\n"
      "  prefix-caching  time to first token of requests sharing a prefix\n"
      "  serve           load a running server over HTTP (vLLM's bench serve)\n"
      "`pagoda bench <name> --help` lists each one's flags.\n";
  if (argc >= 1 && (std::string(argv[0]) == "--help" || std::string(argv[0]) == "-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  PAGODA_CHECK(argc >= 1, "usage: pagoda bench throughput|latency|prefix-caching|serve MODEL_DIR [options]");
  const std::string sub = argv[0];
  if (sub == "throughput") return throughput(argc - 1, argv + 1);
  if (sub == "latency") return latency(argc - 1, argv + 1);
  if (sub == "prefix-caching") return prefix_caching(argc - 1, argv + 1);
  if (sub == "serve") return bench_serve(argc - 1, argv + 1);
  fail("unknown bench '", sub, "' (expected throughput, latency, prefix-caching or serve)");
}

}  // namespace pagoda
