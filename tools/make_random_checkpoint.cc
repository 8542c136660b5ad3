// make_random_checkpoint OUT_DIR [--preset tiny|qwen3-0.6b] [--tokenizer-dir DIR] [--seed N] [--dtype bf16|f32]
//
// Writes a complete Hugging Face Qwen3 checkpoint folder with RANDOM weights (config.json,
// generation_config.json, model.safetensors, tokenizer files), for demos, benchmarks and tests
// that need real shapes but no real model. transformers' AutoModelForCausalLM loads the result.
// Output text from such a model is meaningless by construction.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/dtype.h"
#include "base/error.h"
#include "io/safetensors.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using pagoda::DType;
using pagoda::fail;

struct Preset {
  int64_t vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, max_pos;
};
// qwen3-0.6b is Qwen3-0.6B's published config; tiny keeps the real vocabulary (so the real
// tokenizer works) and shrinks everything else.
constexpr Preset kQwen3_06B{151936, 1024, 3072, 28, 16, 8, 128, 40960};
constexpr Preset kTiny{151936, 64, 128, 2, 4, 2, 16, 40960};

// xoshiro256** seeded by splitmix64: fast enough to fill 0.6B parameters in about a second;
// std::normal_distribution per element would take minutes.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t& s : s_) {
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      s = z ^ (z >> 31);
    }
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Approximately N(0, 1): the sum of four 16-bit uniforms (Irwin-Hall), centred and scaled to
  // unit variance. Bounded to about +-3.5 sigma, which is all random weights need.
  float normal() {
    const uint64_t r = next();
    const uint32_t sum = static_cast<uint32_t>((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48));
    constexpr float kScale = 1.7320508f / 65536.0f;  // sqrt(12 / 4) per unit of the 16-bit range
    return (static_cast<float>(sum) - 2.0f * 65535.0f) * kScale;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

struct Options {
  std::string out_dir;
  std::string preset = "tiny";
  std::string tokenizer_dir;
  uint64_t seed = 0;
  DType dtype = DType::kBF16;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "make_random_checkpoint: %s\nusage: make_random_checkpoint OUT_DIR [--preset tiny|qwen3-0.6b] "
               "[--tokenizer-dir DIR] [--seed N] [--dtype bf16|f32]\n",
               why);
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  // Default tokenizer: ../shared/tokenizers/qwen3 beside the source checkout (tools/ is one level down).
  o.tokenizer_dir = (fs::path(__FILE__).parent_path().parent_path() / ".." / "shared" / "tokenizers" / "qwen3").string();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage((a + " needs a value").c_str());
      return argv[++i];
    };
    if (a == "--preset") {
      o.preset = value();
    } else if (a == "--tokenizer-dir") {
      o.tokenizer_dir = value();
    } else if (a == "--seed") {
      const std::string v = value();
      char* end = nullptr;
      o.seed = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0') usage("--seed must be a non-negative integer");
    } else if (a == "--dtype") {
      const std::string v = value();
      if (v == "bf16" || v == "bfloat16") o.dtype = DType::kBF16;
      else if (v == "f32" || v == "float32") o.dtype = DType::kF32;
      else usage("--dtype must be bf16 or f32");
    } else if (a == "-h" || a == "--help") {
      usage("writes a Qwen3 checkpoint with random weights");
    } else if (!a.empty() && a[0] == '-') {
      usage(("unknown flag " + a).c_str());
    } else if (o.out_dir.empty()) {
      o.out_dir = a;
    } else {
      usage("only one OUT_DIR may be given");
    }
  }
  if (o.out_dir.empty()) usage("OUT_DIR is required");
  if (o.preset != "tiny" && o.preset != "qwen3-0.6b") usage("--preset must be tiny or qwen3-0.6b");
  return o;
}

json config_json(const Preset& p, DType dtype) {
  return json{
      {"_comment", "RANDOM WEIGHTS written by pagoda tools/make_random_checkpoint; outputs are meaningless"},
      {"architectures", {"Qwen3ForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", 151643},
      {"eos_token_id", 151645},
      {"head_dim", p.head_dim},
      {"hidden_act", "silu"},
      {"hidden_size", p.hidden},
      {"initializer_range", 0.02},
      {"intermediate_size", p.intermediate},
      {"max_position_embeddings", p.max_pos},
      {"max_window_layers", p.layers},
      {"model_type", "qwen3"},
      {"num_attention_heads", p.heads},
      {"num_hidden_layers", p.layers},
      {"num_key_value_heads", p.kv_heads},
      {"rms_norm_eps", 1e-6},
      {"rope_scaling", nullptr},
      {"rope_theta", 1000000.0},
      {"sliding_window", nullptr},
      {"tie_word_embeddings", true},
      {"torch_dtype", dtype == DType::kBF16 ? "bfloat16" : "float32"},
      {"use_cache", true},
      {"use_sliding_window", false},
      {"vocab_size", p.vocab},
  };
}

json generation_config_json() {
  // Qwen3's published sampling defaults.
  return json{{"bos_token_id", 151643}, {"do_sample", true}, {"eos_token_id", {151645, 151643}},
              {"pad_token_id", 151643}, {"temperature", 0.6},  {"top_k", 20},
              {"top_p", 0.95}};
}

// Qwen3ForCausalLM tensor names and [out, in] shapes; norms end in "norm.weight".
std::vector<pagoda::TensorToWrite> tensor_list(const Preset& p, DType dtype) {
  std::vector<pagoda::TensorToWrite> t;
  auto add = [&](std::string name, std::vector<int64_t> shape) { t.push_back({std::move(name), dtype, std::move(shape), {}}); };
  add("model.embed_tokens.weight", {p.vocab, p.hidden});
  for (int64_t i = 0; i < p.layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    add(l + "input_layernorm.weight", {p.hidden});
    add(l + "post_attention_layernorm.weight", {p.hidden});
    add(l + "self_attn.q_proj.weight", {p.heads * p.head_dim, p.hidden});
    add(l + "self_attn.k_proj.weight", {p.kv_heads * p.head_dim, p.hidden});
    add(l + "self_attn.v_proj.weight", {p.kv_heads * p.head_dim, p.hidden});
    add(l + "self_attn.o_proj.weight", {p.hidden, p.heads * p.head_dim});
    add(l + "self_attn.q_norm.weight", {p.head_dim});
    add(l + "self_attn.k_norm.weight", {p.head_dim});
    add(l + "mlp.gate_proj.weight", {p.intermediate, p.hidden});
    add(l + "mlp.up_proj.weight", {p.intermediate, p.hidden});
    add(l + "mlp.down_proj.weight", {p.hidden, p.intermediate});
  }
  add("model.norm.weight", {p.hidden});
  // tie_word_embeddings: no lm_head.weight on disk, as in Qwen3-0.6B.
  return t;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) fail(path.string(), ": write failed");
}

int run(const Options& o) {
  const Preset& p = o.preset == "tiny" ? kTiny : kQwen3_06B;
  const fs::path out(o.out_dir);
  const fs::path tok(o.tokenizer_dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    if (!fs::exists(tok / f)) fail((tok / f).string(), ": not found (pass --tokenizer-dir DIR holding the Qwen3 tokenizer)");
  std::error_code ec;
  fs::create_directories(out, ec);
  if (!fs::is_directory(out)) fail(o.out_dir, ": cannot create directory: ", ec.message());

  const auto start = std::chrono::steady_clock::now();
  const std::vector<pagoda::TensorToWrite> tensors = tensor_list(p, o.dtype);
  Rng rng(o.seed);
  int64_t params = 0;
  auto fill = [&](size_t i, std::vector<uint8_t>& bytes) {
    const bool norm = ends_with(tensors[i].name, "norm.weight");  // RMSNorm weights start at 1
    const size_t n = bytes.size() / pagoda::dtype_size(o.dtype);
    params += static_cast<int64_t>(n);
    if (o.dtype == DType::kBF16) {
      uint16_t* w = reinterpret_cast<uint16_t*>(bytes.data());
      for (size_t k = 0; k < n; ++k) w[k] = pagoda::f32_to_bf16(norm ? 1.0f : 0.02f * rng.normal());
    } else {
      float* w = reinterpret_cast<float*>(bytes.data());
      for (size_t k = 0; k < n; ++k) w[k] = norm ? 1.0f : 0.02f * rng.normal();
    }
  };
  pagoda::write_safetensors_streaming((out / "model.safetensors").string(), tensors, fill,
                                      {{"format", "pt"}, {"pagoda", "random weights"}});
  write_text(out / "config.json", config_json(p, o.dtype).dump(2) + "\n");
  write_text(out / "generation_config.json", generation_config_json().dump(2) + "\n");
  // Copied by content, not fs::copy_file: the source may be read-only, and a read-only copy would
  // make the next run over the same OUT_DIR fail.
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    std::ifstream in(tok / f, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) fail((tok / f).string(), ": read failed");
    write_text(out / f, text.str());
  }

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %s: Qwen3 preset %s, %lld parameters (%s), seed %llu, %.1f s\n", o.out_dir.c_str(),
              o.preset.c_str(), static_cast<long long>(params), std::string(pagoda::dtype_name(o.dtype)).c_str(),
              static_cast<unsigned long long>(o.seed), secs);
  std::printf("NOTE: these are RANDOM WEIGHTS, not a trained model; generated text is meaningless.\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_random_checkpoint: %s\n", e.what());
    return 1;
  }
}
