// Defaults for fields absent from config.json follow transformers 5.x (Qwen2Config, Qwen3Config,
// LlamaConfig, modeling_rope_utils.standardize_rope_params), because a checkpoint must mean the
// same model here as there. Exceptions are listed in model_config.h.
#include "io/model_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/error.h"

namespace pagoda {
namespace {

using json = nlohmann::json;

constexpr const char* kSupportedModelTypes = "qwen2, qwen3, llama, qwen3_moe, qwen3_next, qwen3_5, qwen3_5_moe";
constexpr const char* kSupportedRopeTypes = "default, linear, dynamic, yarn, llama3";

// Typed field access: absent or null -> fallback; wrong type -> Error naming file and field.
class Fields {
 public:
  Fields(const json& obj, std::string file, std::string prefix = "")
      : obj_(obj), file_(std::move(file)), prefix_(std::move(prefix)) {}

  bool has(const char* key) const {
    const auto it = obj_.find(key);
    return it != obj_.end() && !it->is_null();
  }
  const json* find(const char* key) const {
    const auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void type_error(const char* key, const char* want, const json& got) const {
    fail(file_, ": field '", prefix_, key, "' must be ", want, ", got ", got.dump());
  }
  void require(const char* key) const {
    PAGODA_CHECK(has(key), file_, ": missing required field '", prefix_, key, "'");
  }

  int64_t integer(const char* key, int64_t fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    if (v->is_number_integer()) {
      if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) type_error(key, "an integer", *v);
      return v->get<int64_t>();
    }
    // 32768.0 is what some exporters write; accept integral floats only.
    if (v->is_number_float()) {
      const double d = v->get<double>();
      if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9.0e18) return static_cast<int64_t>(d);
    }
    type_error(key, "an integer", *v);
  }
  std::optional<int64_t> opt_integer(const char* key) const {
    if (!has(key)) return std::nullopt;
    return integer(key, 0);
  }
  double number(const char* key, double fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_number()) type_error(key, "a number", *v);
    return v->get<double>();
  }
  std::optional<double> opt_number(const char* key) const {
    if (!has(key)) return std::nullopt;
    return number(key, 0.0);
  }
  bool boolean(const char* key, bool fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) type_error(key, "true or false", *v);
    return v->get<bool>();
  }
  std::optional<bool> opt_boolean(const char* key) const {
    if (!has(key)) return std::nullopt;
    return boolean(key, false);
  }
  std::string string(const char* key, const std::string& fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_string()) type_error(key, "a string", *v);
    return v->get<std::string>();
  }
  // eos_token_id: an integer or a list of integers.
  std::vector<int64_t> int_list(const char* key) const {
    const json* v = find(key);
    if (v == nullptr) return {};
    if (!v->is_array()) return {integer(key, 0)};
    std::vector<int64_t> out;
    for (const json& e : *v) {
      if (!e.is_number_integer()) type_error(key, "an integer or a list of integers", *v);
      out.push_back(e.get<int64_t>());
    }
    return out;
  }
  const std::string& file() const { return file_; }

 private:
  const json& obj_;
  std::string file_;
  std::string prefix_;
};

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PAGODA_CHECK(in, path, ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  PAGODA_CHECK(!j.is_discarded(), path, ": not valid JSON");
  PAGODA_CHECK(j.is_object(), path, ": not a JSON object");
  return j;
}

DType parse_torch_dtype(const std::string& s, const std::string& file, const char* key) {
  if (s == "bfloat16") return DType::kBF16;
  if (s == "float16") return DType::kF16;
  if (s == "float32") return DType::kF32;
  fail(file, ": field '", key, "' is \"", s, "\"; supported: bfloat16, float16, float32");
}

// transformers v5 merges rope_scaling (legacy) and rope_parameters (v5) into one dict; rope_scaling
// wins when both are set. rope_theta / partial_rotary_factor inside the dict beat the top level.
void parse_rope(const Fields& top, ModelConfig& c, double partial_rotary_default) {
  const json* dict = top.find("rope_scaling");
  const char* dict_name = "rope_scaling";
  if (dict == nullptr || (dict->is_object() && dict->empty())) {
    dict = top.find("rope_parameters");
    dict_name = "rope_parameters";
  }
  if (dict != nullptr && !dict->is_object()) top.type_error(dict_name, "an object or null", *dict);

  c.rope_theta = top.number("rope_theta", 10000.0);
  c.partial_rotary_factor = top.number("partial_rotary_factor", partial_rotary_default);
  RopeScaling& r = c.rope_scaling;
  r = RopeScaling{};
  if (dict == nullptr) return;

  const Fields f(*dict, top.file(), std::string(dict_name) + ".");
  c.rope_theta = f.number("rope_theta", c.rope_theta);
  c.partial_rotary_factor = f.number("partial_rotary_factor", c.partial_rotary_factor);
  r.type = f.string("rope_type", f.string("type", "default"));
  if (r.type == "default") return;
  PAGODA_CHECK(r.type == "linear" || r.type == "dynamic" || r.type == "yarn" || r.type == "llama3", top.file(),
               ": field '", dict_name, ".rope_type' is \"", r.type, "\"; supported: ", kSupportedRopeTypes);

  // Phi3-style top-level original_max_position_embeddings takes priority, else max_position_embeddings.
  const int64_t orig_default = top.integer("original_max_position_embeddings", c.max_position_embeddings);
  if (r.type == "yarn" || r.type == "llama3") {
    r.original_max_position_embeddings =
        top.has("original_max_position_embeddings") ? orig_default
                                                    : f.integer("original_max_position_embeddings", orig_default);
    PAGODA_CHECK(r.original_max_position_embeddings > 0, top.file(), ": field '", dict_name,
                 ".original_max_position_embeddings' must be positive");
  }
  if (r.type == "yarn") {
    // factor may be null: then it is the context extension ratio (transformers does the same).
    r.factor = f.number("factor", static_cast<double>(c.max_position_embeddings) /
                                      static_cast<double>(r.original_max_position_embeddings));
    r.attention_factor = f.opt_number("attention_factor");
    const std::optional<double> mscale = f.opt_number("mscale");
    const std::optional<double> mscale_all_dim = f.opt_number("mscale_all_dim");
    if (!r.attention_factor && mscale && mscale_all_dim && *mscale != 0 && *mscale_all_dim != 0) {
      auto get_mscale = [&](double m) { return r.factor <= 1 ? 1.0 : 0.1 * m * std::log(r.factor) + 1.0; };
      r.attention_factor = get_mscale(*mscale) / get_mscale(*mscale_all_dim);
    }
    // transformers uses `or`: 0/null fall back to the defaults.
    r.beta_fast = f.number("beta_fast", 32.0);
    if (r.beta_fast == 0) r.beta_fast = 32.0;
    r.beta_slow = f.number("beta_slow", 1.0);
    if (r.beta_slow == 0) r.beta_slow = 1.0;
    r.truncate = f.boolean("truncate", true);
  } else {
    f.require("factor");
    r.factor = f.number("factor", 1.0);
  }
  if (r.type == "llama3") {
    f.require("low_freq_factor");
    f.require("high_freq_factor");
    r.low_freq_factor = f.number("low_freq_factor", 1.0);
    r.high_freq_factor = f.number("high_freq_factor", 4.0);
    PAGODA_CHECK(r.high_freq_factor > r.low_freq_factor && r.low_freq_factor > 0, top.file(), ": field '", dict_name,
                 "': llama3 needs 0 < low_freq_factor < high_freq_factor");
  }
  PAGODA_CHECK(r.factor > 0 && std::isfinite(r.factor), top.file(), ": field '", dict_name,
               ".factor' must be a positive number");
}

void check_positive(const std::string& file, const char* key, int64_t v) {
  PAGODA_CHECK(v > 0, file, ": field '", key, "' must be positive, got ", v);
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& file_name) {
  PAGODA_CHECK(j.is_object(), file_name, ": not a JSON object");
  // The text-only classes of Qwen3.5 save a flat config under their own model_type; it is the
  // same model.
  if (const auto mt = j.find("model_type"); mt != j.end() && mt->is_string() &&
                                            (*mt == "qwen3_5_text" || *mt == "qwen3_5_moe_text")) {
    json flat = j;
    flat["model_type"] = *mt == "qwen3_5_text" ? "qwen3_5" : "qwen3_5_moe";
    return parse_model_config(flat, file_name);
  }
  // Qwen3.5 (qwen3_5 / qwen3_5_moe) nests the language model's fields in text_config: parse those
  // under the top-level model_type; top-level architectures / tie_word_embeddings / dtype apply.
  if (const auto mt = j.find("model_type"); mt != j.end() && mt->is_string() &&
                                            (*mt == "qwen3_5" || *mt == "qwen3_5_moe")) {
    if (const auto tc = j.find("text_config"); tc != j.end() && tc->is_object()) {
      json merged = *tc;
      merged["model_type"] = *mt;
      for (const char* key : {"architectures", "tie_word_embeddings", "dtype", "torch_dtype", "quantization_config"}) {
        if (j.contains(key) && !j[key].is_null() && (!merged.contains(key) || merged[key].is_null() ||
                                                     std::string(key) == "tie_word_embeddings"))
          merged[key] = j[key];
      }
      ModelConfig c = parse_model_config(merged, file_name);
      c.text_config_nested = true;
      return c;
    }
  }
  const Fields f(j, file_name);
  ModelConfig c;
  f.require("model_type");
  c.model_type = f.string("model_type", "");
  const bool qwen2 = c.model_type == "qwen2", qwen3 = c.model_type == "qwen3", llama = c.model_type == "llama";
  const bool qwen3_moe = c.model_type == "qwen3_moe";
  const bool qwen3_next = c.model_type == "qwen3_next", qwen3_5 = c.model_type == "qwen3_5",
             qwen3_5_moe = c.model_type == "qwen3_5_moe";
  const bool hybrid = qwen3_next || qwen3_5 || qwen3_5_moe;
  PAGODA_CHECK(qwen2 || qwen3 || llama || qwen3_moe || hybrid, file_name, ": model_type \"", c.model_type, "\" is not supported; supported: ",
               kSupportedModelTypes);

  if (const json* a = f.find("architectures")) {
    if (!a->is_array()) f.type_error("architectures", "a list of strings", *a);
    for (const json& e : *a) {
      if (!e.is_string()) f.type_error("architectures", "a list of strings", *a);
      c.architectures.push_back(e.get<std::string>());
    }
  }

  // The sizes that define the network are required: a transformers class default (4096 hidden,
  // 32 layers) silently standing in for a missing size would only fail later at weight loading.
  // Qwen3_5MoeTextConfig has no intermediate_size (every layer is MoE): not required there.
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"}) {
    if (qwen3_5_moe && std::string(key) == "intermediate_size") continue;
    f.require(key);
  }
  c.vocab_size = f.integer("vocab_size", 0);
  c.hidden_size = f.integer("hidden_size", 0);
  c.intermediate_size = f.integer("intermediate_size", 0);
  c.num_hidden_layers = f.integer("num_hidden_layers", 0);
  c.num_attention_heads = f.integer("num_attention_heads", 0);
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"}) {
    if (qwen3_5_moe && std::string(key) == "intermediate_size" && !f.has(key)) continue;
    check_positive(file_name, key, f.integer(key, 0));
  }

  c.num_key_value_heads = f.integer("num_key_value_heads", c.num_attention_heads);
  check_positive(file_name, "num_key_value_heads", c.num_key_value_heads);
  PAGODA_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, file_name, ": num_attention_heads (",
               c.num_attention_heads, ") must be a multiple of num_key_value_heads (", c.num_key_value_heads, ")");

  if (hybrid) {
    c.head_dim = f.integer("head_dim", 256);  // Qwen3NextConfig / Qwen3_5TextConfig default
  } else if (qwen3) {
    c.head_dim = f.integer("head_dim", 128);  // Qwen3Config's class default, not hidden / heads
  } else if (f.has("head_dim")) {
    c.head_dim = f.integer("head_dim", 0);
  } else {
    PAGODA_CHECK(c.hidden_size % c.num_attention_heads == 0, file_name, ": hidden_size (", c.hidden_size,
                 ") must be a multiple of num_attention_heads (", c.num_attention_heads, ") when head_dim is absent");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  check_positive(file_name, "head_dim", c.head_dim);

  c.max_position_embeddings = f.integer("max_position_embeddings", llama ? 2048 : 32768);
  check_positive(file_name, "max_position_embeddings", c.max_position_embeddings);
  c.rms_norm_eps = f.number("rms_norm_eps", 1e-6);
  PAGODA_CHECK(c.rms_norm_eps > 0, file_name, ": field 'rms_norm_eps' must be positive");
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);

  parse_rope(f, c, hybrid ? 0.25 : 1.0);  // hybrids: partial_rotary_factor defaults to 0.25
  PAGODA_CHECK(c.rope_theta > 0 && std::isfinite(c.rope_theta), file_name, ": field 'rope_theta' must be positive");
  PAGODA_CHECK(c.partial_rotary_factor > 0 && c.partial_rotary_factor <= 1, file_name,
               ": field 'partial_rotary_factor' must be in (0, 1], got ", c.partial_rotary_factor);
  PAGODA_CHECK(c.rotary_dim() > 0 && c.rotary_dim() % 2 == 0, file_name, ": rotary dimension ", c.rotary_dim(),
               " (head_dim x partial_rotary_factor) must be even and positive");

  if (qwen2) {
    c.attention_bias = true;  // Qwen2 q/k/v always carry a bias; the field is not read by transformers
  } else {
    c.attention_bias = f.boolean("attention_bias", false);
  }
  if (llama) {
    PAGODA_CHECK(!f.boolean("mlp_bias", false), file_name,
                 ": field 'mlp_bias' is true; llama checkpoints with MLP biases are not supported");
  }

  if (qwen2 || qwen3 || qwen3_moe) {
    c.use_sliding_window = f.boolean("use_sliding_window", false);
    // Qwen3MoeConfig has no max_window_layers: with use_sliding_window every layer is windowed.
    c.max_window_layers = qwen3_moe ? 0 : f.integer("max_window_layers", 28);
    // transformers drops sliding_window unless use_sliding_window is set.
    c.sliding_window = c.use_sliding_window ? f.integer("sliding_window", 4096) : 0;
    if (c.use_sliding_window) check_positive(file_name, "sliding_window", c.sliding_window);
  }

  if (hybrid) {
    // Qwen3NextConfig / Qwen3_5TextConfig: layer_types, else full attention every
    // full_attention_interval-th layer (default 4).
    c.full_attention_interval = f.integer("full_attention_interval", 4);
    check_positive(file_name, "full_attention_interval", c.full_attention_interval);
    if (const json* lt = f.find("layer_types")) {
      if (!lt->is_array()) f.type_error("layer_types", "a list of strings", *lt);
      PAGODA_CHECK(static_cast<int64_t>(lt->size()) == c.num_hidden_layers, file_name, ": layer_types has ",
                   lt->size(), " entries, expected num_hidden_layers = ", c.num_hidden_layers);
      for (const json& e : *lt) {
        if (!e.is_string()) f.type_error("layer_types", "a list of strings", *lt);
        const std::string t = e.get<std::string>();
        PAGODA_CHECK(t == "linear_attention" || t == "full_attention", file_name, ": layer_types entry \"", t,
                     "\"; supported: linear_attention, full_attention");
        c.layer_types.push_back(t);
      }
    } else {
      for (int64_t i = 0; i < c.num_hidden_layers; ++i)
        c.layer_types.push_back((i + 1) % c.full_attention_interval == 0 ? "full_attention" : "linear_attention");
    }
    c.linear_conv_kernel_dim = f.integer("linear_conv_kernel_dim", 4);
    c.linear_key_head_dim = f.integer("linear_key_head_dim", 128);
    c.linear_value_head_dim = f.integer("linear_value_head_dim", 128);
    c.linear_num_key_heads = f.integer("linear_num_key_heads", 16);
    c.linear_num_value_heads = f.integer("linear_num_value_heads", 32);
    for (const char* key : {"linear_conv_kernel_dim", "linear_key_head_dim", "linear_value_head_dim",
                            "linear_num_key_heads", "linear_num_value_heads"})
      check_positive(file_name, key, f.integer(key, 1));
    PAGODA_CHECK(c.linear_num_value_heads % c.linear_num_key_heads == 0, file_name, ": linear_num_value_heads (",
                 c.linear_num_value_heads, ") must be a multiple of linear_num_key_heads (", c.linear_num_key_heads, ")");
  }

  if (qwen3_moe || qwen3_next || qwen3_5_moe) {
    // Qwen3MoeConfig.attribute_map: num_experts -> num_local_experts (what save_pretrained writes).
    const int64_t def_experts = qwen3_moe ? 128 : qwen3_next ? 512 : 256;
    c.num_experts = f.has("num_local_experts") ? f.integer("num_local_experts", def_experts)
                                               : f.integer("num_experts", def_experts);
    c.num_experts_per_tok = f.integer("num_experts_per_tok", qwen3_moe ? 8 : qwen3_next ? 10 : 8);
    c.moe_intermediate_size = f.integer("moe_intermediate_size", qwen3_moe ? 768 : 512);
    // Qwen3.5-MoE has every layer sparse: transformers reads neither decoder_sparse_step nor
    // mlp_only_layers there, so neither do we.
    c.decoder_sparse_step = qwen3_5_moe ? 1 : f.integer("decoder_sparse_step", 1);
    // Qwen3-Next defaults to renormalising; Qwen3.5-MoE always renormalises.
    c.norm_topk_prob = qwen3_5_moe ? true : f.boolean("norm_topk_prob", qwen3_next);
    if (!qwen3_moe) c.shared_expert_intermediate_size = f.integer("shared_expert_intermediate_size", 512);
    PAGODA_CHECK(c.num_experts >= 0, file_name, ": field 'num_experts' must not be negative, got ", c.num_experts);
    check_positive(file_name, "decoder_sparse_step", c.decoder_sparse_step);
    if (c.num_experts > 0) {
      check_positive(file_name, "moe_intermediate_size", c.moe_intermediate_size);
      check_positive(file_name, "num_experts_per_tok", c.num_experts_per_tok);
      PAGODA_CHECK(c.num_experts_per_tok <= c.num_experts, file_name, ": num_experts_per_tok (", c.num_experts_per_tok,
                   ") must not exceed num_experts (", c.num_experts, ")");
    }
    if (const json* m = qwen3_5_moe ? nullptr : f.find("mlp_only_layers")) {
      if (!m->is_array()) f.type_error("mlp_only_layers", "a list of integers", *m);
      for (const json& e : *m) {
        if (!e.is_number_integer()) f.type_error("mlp_only_layers", "a list of integers", *m);
        c.mlp_only_layers.push_back(e.get<int64_t>());
      }
    }
  }

  // transformers 5 writes `dtype`, older versions `torch_dtype`.
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (f.has(key)) {
      c.torch_dtype = parse_torch_dtype(f.string(key, ""), file_name, key);
      break;
    }
  }
  c.bos_token_id = f.opt_integer("bos_token_id");
  // LlamaConfig's class defaults (1, 2) apply only when the key is absent; an explicit null stays null.
  if (llama && !j.contains("bos_token_id")) c.bos_token_id = 1;
  c.eos_token_ids = f.int_list("eos_token_id");
  if (llama && !j.contains("eos_token_id")) c.eos_token_ids = {2};
  c.raw = j;
  return c;
}

bool ModelConfig::is_moe_layer(int64_t i) const {
  if (num_experts <= 0 || decoder_sparse_step <= 0) return false;
  for (int64_t l : mlp_only_layers)
    if (l == i) return false;
  return (i + 1) % decoder_sparse_step == 0;
}

ModelConfig load_model_config(const std::string& model_dir) {
  std::error_code ec;
  PAGODA_CHECK(std::filesystem::is_directory(model_dir, ec), model_dir, ": no such directory");
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  PAGODA_CHECK(std::filesystem::exists(path, ec), model_dir, ": not a checkpoint (no config.json)");
  return parse_model_config(read_json(path), path);
}

GenerationConfig load_generation_config(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "generation_config.json").string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  const json j = read_json(path);
  const Fields f(j, path);
  GenerationConfig g;
  g.eos_token_ids = f.int_list("eos_token_id");
  g.bos_token_id = f.opt_integer("bos_token_id");
  g.pad_token_id = f.opt_integer("pad_token_id");
  g.do_sample = f.opt_boolean("do_sample");
  g.temperature = f.opt_number("temperature");
  g.top_p = f.opt_number("top_p");
  g.top_k = f.opt_integer("top_k");
  g.min_p = f.opt_number("min_p");
  g.repetition_penalty = f.opt_number("repetition_penalty");
  g.max_new_tokens = f.opt_integer("max_new_tokens");
  return g;
}

}  // namespace pagoda
