// The engine's host time per step, with the device's work taken away: what the scheduler, the
// model runner's batch preparation, the model's launch code and the output handling cost on the
// CPU for each step. On a GPU this has to stay under the device's step time, or the GPU waits on
// the host even with async scheduling (which overlaps the two). The backend here behaves like the
// CUDA backend towards the engine (BF16 activations, sampling on the device, graphs for decode,
// the tokens of step N fed into step N + 1 on the device) but runs no op: kernels are free, host
// work is all that is timed. Prints one JSON line per workload.
//   engine_overhead MODEL_DIR [--batch 256] [--input-len 1024] [--output-len 128]
//                   [--max-num-batched-tokens 8192] [--enforce-eager] [--no-async-scheduling]
// The checkpoint's tensors are only mapped (never read), so a full-size random checkpoint costs
// nothing but its file.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "base/error.h"
#include "cli/args.h"
#include "engine/engine_core.h"
#include "engine/llm_engine.h"
#include "model/model.h"

namespace pagoda {
namespace {

// Every op returns at once; copies, token feeding and sampling (a fixed token per row) are real,
// because the engine reads what they write.
class NullBackend final : public Backend {
 public:
  std::string name() const override { return "null"; }
  DType activation_dtype() const override { return DType::kBF16; }
  bool samples_on_device() const override { return true; }
  bool has_graphs() const override { return true; }
  int capture_graph(const std::function<void()>&) override { return graphs_++; }
  void replay_graph(int) override {}

  DeviceBuffer allocate(size_t bytes) override {
    void* p = std::aligned_alloc(256, std::max<size_t>(256, (bytes + 255) / 256 * 256));
    PAGODA_CHECK(p != nullptr, "null backend: out of memory");
    return DeviceBuffer(p, bytes, [](void* q) { std::free(q); });
  }
  void copy_from_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy_to_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  Tensor place_weight(const Tensor& host, std::vector<DeviceBuffer>*) override { return host; }
  // The pool is never read or written: every layer's tensors point at one small buffer.
  KvCache allocate_kv_cache(int num_layers, int num_blocks, int block_size, int num_kv_heads, int head_dim,
                            DType dtype) override {
    KvCache cache;
    cache.storage.push_back(allocate(256));
    for (int l = 0; l < num_layers; ++l) {
      KvCacheLayer layer;
      layer.k = Tensor(cache.storage[0].data(), dtype, {num_blocks, block_size, num_kv_heads, head_dim});
      layer.v = layer.k;
      layer.num_blocks = num_blocks;
      layer.block_size = block_size;
      layer.num_kv_heads = num_kv_heads;
      layer.head_dim = head_dim;
      cache.layers.push_back(layer);
    }
    return cache;
  }
  void synchronize() override {}

  void embedding(const Tensor&, const Tensor&, Tensor) override {}
  void rms_norm(const Tensor&, const Tensor&, float, Tensor) override {}
  void add_rms_norm(Tensor, const Tensor&, const Tensor&, float, Tensor) override {}
  void linear(const Tensor&, const Tensor&, const Tensor*, Tensor) override {}
  void rope_cos_sin(const Tensor&, const Tensor&, float, Tensor) override {}
  void rope_and_cache(Tensor, Tensor, const Tensor&, const Tensor&, int, const Tensor&, KvCacheLayer&) override {}
  void paged_attention(const Tensor&, const KvCacheLayer&, const AttentionMetadata&, float, Tensor) override {}
  void silu_and_mul(const Tensor&, const Tensor&, Tensor) override {}
  void gather_rows(const Tensor&, const Tensor&, Tensor) override {}
  void add(Tensor, const Tensor&) override {}
  void feed_tokens(Tensor ids, const Tensor& feed, const Tensor& sampled) override {
    const int32_t* f = feed.ptr<int32_t>();
    for (int64_t i = 0; i < feed.rows(); ++i) ids.ptr<int32_t>()[f[2 * i]] = sampled.ptr<int32_t>()[f[2 * i + 1]];
  }
  void sample_tokens(const Tensor&, const Tensor&, Tensor tokens) override {
    for (int64_t r = 0; r < tokens.numel(); ++r) tokens.ptr<int32_t>()[r] = static_cast<int32_t>(100 + r % 1000);
  }
  void apply_logit_edits(Tensor, const Tensor&, const Tensor&, const Tensor&) override {}
  void compute_logprobs(const Tensor&, const Tensor&, Tensor, Tensor, Tensor) override {}
  void moe_route(const Tensor&, bool, Tensor, Tensor) override {}
  void moe_experts(const Tensor&, const Tensor&, const Tensor&, const MoeExpertWeights&, const MoeScratch&,
                   Tensor) override {}
  void sigmoid_mul(Tensor, const Tensor&) override {}
  void rms_norm_gated(const Tensor&, const Tensor&, const Tensor&, float, Tensor) override {}
  void causal_conv1d(const Tensor&, const Tensor&, const AttentionMetadata&, LinearAttnState&, Tensor) override {}
  void gated_delta_rule(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const GdnShape&,
                        const AttentionMetadata&, int, LinearAttnState&, Tensor) override {}

 private:
  int graphs_ = 0;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q / 100.0 * static_cast<double>(v.size() - 1))];
}

int run(int argc, char** argv) {
  Args args(argc - 1, argv + 1, {"--batch", "--input-len", "--output-len", "--max-num-batched-tokens"},
            {"--enforce-eager", "--no-async-scheduling"});
  PAGODA_CHECK(args.positionals().size() == 1, "usage: engine_overhead MODEL_DIR [--batch N] [--input-len N] ...");
  const int batch = static_cast<int>(args.get_int("--batch").value_or(256));
  const int input_len = static_cast<int>(args.get_int("--input-len").value_or(1024));
  const int output_len = static_cast<int>(args.get_int("--output-len").value_or(128));
  PAGODA_CHECK(batch >= 1 && input_len >= 1 && output_len >= 1, "--batch, --input-len, --output-len must be >= 1");

  NullBackend backend;
  EngineConfig config;
  config.max_num_seqs = batch;
  config.max_num_batched_tokens = static_cast<int>(args.get_int("--max-num-batched-tokens").value_or(8192));
  config.max_model_len = input_len + output_len;
  config.block_size = 16;
  config.num_kv_blocks = batch * ((config.max_model_len + 15) / 16) + 16;
  if (args.has("--enforce-eager")) config.cuda_graphs = 0;
  if (args.has("--no-async-scheduling")) config.async_scheduling = 0;
  std::unique_ptr<CausalLM> model = load_model(args.positionals()[0], backend, engine_load_options(config));
  LLMEngine engine(*model, backend, config);

  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> tok(100, 10000);
  SamplingParams params;
  params.temperature = 1.0f;
  params.ignore_eos = true;
  params.max_tokens = output_len;
  for (int i = 0; i < batch; ++i) {
    std::vector<int32_t> prompt(static_cast<size_t>(input_len));
    for (int32_t& t : prompt) t = tok(rng);
    std::string id = "r";  // (appended: GCC 12 warns falsely on "r" + std::to_string(i))
    id += std::to_string(i);
    engine.add_request(id, prompt, params);
  }
  // A step is a full decode step when it computed no prompt token and every sequence is running.
  std::vector<double> decode_us, other_us;
  int64_t tokens = 0;
  const double t0 = now();
  while (engine.has_unfinished()) {
    const EngineStats before = engine.stats();
    const double s = now();
    for (const RequestOutput& o : engine.step()) tokens += static_cast<int64_t>(o.new_token_ids.size());
    const double us = 1e6 * (now() - s);
    const EngineStats after = engine.stats();
    const bool decode = after.num_prompt_tokens == before.num_prompt_tokens && before.num_running == batch;
    (decode ? decode_us : other_us).push_back(us);
  }
  const double total = now() - t0;
  nlohmann::json j;
  j["batch"] = batch;
  j["input_len"] = input_len;
  j["output_len"] = output_len;
  j["cuda_graphs"] = !args.has("--enforce-eager");
  j["async_scheduling"] = !args.has("--no-async-scheduling");
  j["steps"] = decode_us.size() + other_us.size();
  j["decode_steps"] = decode_us.size();
  j["decode_step_us_p50"] = percentile(decode_us, 50);
  j["decode_step_us_p90"] = percentile(decode_us, 90);
  j["decode_us_per_sequence_p50"] = percentile(decode_us, 50) / batch;
  j["other_step_us_p50"] = percentile(other_us, 50);
  j["host_s_total"] = total;
  j["output_tokens"] = tokens;
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace pagoda

int main(int argc, char** argv) {
  try {
    return pagoda::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "engine_overhead: %s\n", e.what());
    return 1;
  }
}
