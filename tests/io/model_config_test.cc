#include "io/model_config.h"

#include <filesystem>

#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "temp_dir.h"

namespace pagoda {
namespace {

using ::pagoda::testing::error_of;
using ::pagoda::testing::TempDir;
using json = nlohmann::json;

// Qwen3-0.6B's config.json, as published.
json qwen3_06b() {
  return json::parse(R"({
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
    "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
    "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
    "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
}

json minimal(const std::string& model_type) {
  return json{{"model_type", model_type}, {"vocab_size", 1000},       {"hidden_size", 64},
              {"intermediate_size", 128}, {"num_hidden_layers", 2},   {"num_attention_heads", 4}};
}

ModelConfig parse(const json& j) { return parse_model_config(j, "config.json"); }
std::string parse_error(const json& j) { return error_of([&] { parse_model_config(j, "cfg/config.json"); }); }

TEST(ModelConfig, Qwen3_06B) {
  const ModelConfig c = parse(qwen3_06b());
  EXPECT_EQ(c.model_type, "qwen3");
  EXPECT_EQ(c.architectures, std::vector<std::string>{"Qwen3ForCausalLM"});
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_EQ(c.hidden_size, 1024);
  EXPECT_EQ(c.intermediate_size, 3072);
  EXPECT_EQ(c.num_hidden_layers, 28);
  EXPECT_EQ(c.num_attention_heads, 16);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rotary_dim(), 128);
  EXPECT_EQ(c.max_position_embeddings, 40960);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_FALSE(c.attention_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.use_sliding_window);
  EXPECT_EQ(c.torch_dtype, DType::kBF16);
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151645});
  EXPECT_EQ(c.raw["transformers_version"], "4.51.0");
}

TEST(ModelConfig, DefaultsFollowTransformers) {
  const ModelConfig q2 = parse(minimal("qwen2"));
  EXPECT_EQ(q2.head_dim, 16);  // hidden / heads
  EXPECT_EQ(q2.num_key_value_heads, 4);
  EXPECT_EQ(q2.max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(q2.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(q2.rms_norm_eps, 1e-6);
  EXPECT_FALSE(q2.tie_word_embeddings);
  EXPECT_TRUE(q2.attention_bias);  // always on for qwen2
  EXPECT_EQ(q2.max_window_layers, 28);
  EXPECT_FALSE(q2.torch_dtype.has_value());
  EXPECT_FALSE(q2.bos_token_id.has_value());
  EXPECT_TRUE(q2.eos_token_ids.empty());

  const ModelConfig q3 = parse(minimal("qwen3"));
  EXPECT_EQ(q3.head_dim, 128);  // Qwen3Config's class default
  EXPECT_FALSE(q3.attention_bias);

  const ModelConfig ll = parse(minimal("llama"));
  EXPECT_EQ(ll.head_dim, 16);
  EXPECT_EQ(ll.max_position_embeddings, 2048);
  EXPECT_EQ(ll.bos_token_id, 1);
  EXPECT_EQ(ll.eos_token_ids, std::vector<int64_t>{2});
}

TEST(ModelConfig, Qwen2AttentionBiasForced) {
  json j = minimal("qwen2");
  j["attention_bias"] = false;
  EXPECT_TRUE(parse(j).attention_bias);
  j = minimal("qwen3");
  j["attention_bias"] = true;
  EXPECT_TRUE(parse(j).attention_bias);
}

TEST(ModelConfig, SlidingWindow) {
  json j = minimal("qwen2");
  j["sliding_window"] = 4096;
  EXPECT_EQ(parse(j).sliding_window, 0);  // ignored unless use_sliding_window
  j["use_sliding_window"] = true;
  j["max_window_layers"] = 1;
  const ModelConfig c = parse(j);
  EXPECT_TRUE(c.use_sliding_window);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.max_window_layers, 1);
}

TEST(ModelConfig, LlamaMlpBiasRejected) {
  json j = minimal("llama");
  j["mlp_bias"] = true;
  const std::string msg = parse_error(j);
  EXPECT_CONTAINS(msg, "cfg/config.json");
  EXPECT_CONTAINS(msg, "mlp_bias");
  j["mlp_bias"] = false;
  j["attention_bias"] = true;
  EXPECT_TRUE(parse(j).attention_bias);
}

TEST(ModelConfig, HybridQwen3NextAndQwen35) {
  const json base = {{"vocab_size", 512}, {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 8},
                     {"num_attention_heads", 4}};
  json next = base;
  next["model_type"] = "qwen3_next";
  const ModelConfig c = parse(next);
  // Qwen3NextConfig defaults: head_dim 256, partial_rotary_factor 0.25, full attention every 4th layer.
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.rotary_dim(), 64);
  ASSERT_EQ(c.layer_types.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(c.is_linear_attention_layer(i), (i + 1) % 4 != 0) << i;
  EXPECT_EQ(c.num_experts, 512);
  EXPECT_EQ(c.num_experts_per_tok, 10);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.linear_num_value_heads, 32);
  EXPECT_EQ(c.linear_conv_kernel_dim, 4);

  json text = base;
  text["full_attention_interval"] = 2;
  text["linear_num_key_heads"] = 2;
  text["linear_num_value_heads"] = 4;
  const json q35 = {{"model_type", "qwen3_5"}, {"text_config", text}, {"tie_word_embeddings", true},
                    {"vision_config", json::object()}};
  const ModelConfig d = parse(q35);
  EXPECT_EQ(d.model_type, "qwen3_5");
  EXPECT_TRUE(d.text_config_nested);
  EXPECT_TRUE(d.tie_word_embeddings);
  EXPECT_EQ(d.num_experts, 0);  // dense Qwen3.5
  for (int i = 0; i < 8; ++i) EXPECT_EQ(d.is_linear_attention_layer(i), i % 2 == 0) << i;
  EXPECT_EQ(d.linear_num_value_heads, 4);

  // Qwen3_5MoeTextConfig has no intermediate_size and makes every layer sparse (transformers reads
  // neither decoder_sparse_step nor mlp_only_layers for it); the router always renormalises.
  json moe_text = text;
  moe_text.erase("intermediate_size");
  moe_text["num_experts"] = 8;
  moe_text["num_experts_per_tok"] = 2;
  moe_text["decoder_sparse_step"] = 2;
  moe_text["mlp_only_layers"] = json::array({0});
  moe_text["norm_topk_prob"] = false;
  const ModelConfig m = parse({{"model_type", "qwen3_5_moe"}, {"text_config", moe_text}});
  EXPECT_EQ(m.model_type, "qwen3_5_moe");
  EXPECT_EQ(m.num_experts, 8);
  EXPECT_EQ(m.shared_expert_intermediate_size, 512);
  EXPECT_TRUE(m.norm_topk_prob);
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(m.is_moe_layer(i)) << i;
  // What transformers' text-only classes save (Qwen3_5TextConfig.model_type == "qwen3_5_text",
  // Qwen3_5MoeTextConfig's "qwen3_5_moe_text"): a flat config of the same model.
  json flat = text;
  flat["model_type"] = "qwen3_5_text";
  const ModelConfig f = parse(flat);
  EXPECT_EQ(f.model_type, "qwen3_5");
  EXPECT_FALSE(f.text_config_nested);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(f.is_linear_attention_layer(i), d.is_linear_attention_layer(i)) << i;
  EXPECT_EQ(f.linear_num_value_heads, d.linear_num_value_heads);
  json flat_moe = moe_text;
  flat_moe["model_type"] = "qwen3_5_moe_text";
  const ModelConfig fm = parse(flat_moe);
  EXPECT_EQ(fm.model_type, "qwen3_5_moe");
  EXPECT_EQ(fm.num_experts, 8);
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(fm.is_moe_layer(i)) << i;

  json no_inter = base;
  no_inter.erase("intermediate_size");
  no_inter["model_type"] = "qwen3_next";
  EXPECT_CONTAINS(parse_error(no_inter), "intermediate_size");  // still required elsewhere

  json bad = next;
  bad["layer_types"] = {"linear_attention", "sliding_attention", "full_attention", "full_attention",
                        "full_attention", "full_attention", "full_attention", "full_attention"};
  EXPECT_NE(parse_error(bad).find("sliding_attention"), std::string::npos);
}

TEST(ModelConfig, Qwen3Moe) {
  json j = minimal("qwen3_moe");
  const ModelConfig d = parse(j);  // Qwen3MoeConfig defaults; head_dim -> hidden / heads
  EXPECT_EQ(d.head_dim, 16);
  EXPECT_EQ(d.num_experts, 128);
  EXPECT_EQ(d.num_experts_per_tok, 8);
  EXPECT_EQ(d.moe_intermediate_size, 768);
  EXPECT_EQ(d.decoder_sparse_step, 1);
  EXPECT_FALSE(d.norm_topk_prob);
  EXPECT_TRUE(d.is_moe_layer(0) && d.is_moe_layer(1));
  EXPECT_FALSE(parse(minimal("qwen3")).is_moe_layer(0));

  j["num_experts"] = 16;
  EXPECT_EQ(parse(j).num_experts, 16);
  j["num_local_experts"] = 4;  // the name transformers 5 writes (attribute_map)
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 32;
  j["norm_topk_prob"] = true;
  j["num_hidden_layers"] = 8;
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = json::array({3, 5});
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.num_experts, 4);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.moe_intermediate_size, 32);
  EXPECT_TRUE(c.norm_topk_prob);
  std::vector<int64_t> sparse;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    if (c.is_moe_layer(i)) sparse.push_back(i);
  EXPECT_EQ(sparse, (std::vector<int64_t>{1, 7}));  // (i + 1) % 2 == 0, minus 3 and 5

  j["use_sliding_window"] = true;
  j["sliding_window"] = 64;
  EXPECT_EQ(parse(j).max_window_layers, 0);  // every layer windowed

  json bad = j;
  bad["num_experts_per_tok"] = 5;
  EXPECT_CONTAINS(parse_error(bad), "num_experts_per_tok");
  bad = j;
  bad["decoder_sparse_step"] = 0;
  EXPECT_CONTAINS(parse_error(bad), "decoder_sparse_step");
  bad = j;
  bad["mlp_only_layers"] = "0";
  EXPECT_CONTAINS(parse_error(bad), "mlp_only_layers");
}

TEST(ModelConfig, UnknownModelType) {
  const std::string msg = parse_error(minimal("gpt2"));
  EXPECT_CONTAINS(msg, "cfg/config.json");
  EXPECT_CONTAINS(msg, "\"gpt2\"");
  EXPECT_CONTAINS(msg, "qwen2, qwen3, llama");
  json j = minimal("qwen3");
  j.erase("model_type");
  EXPECT_CONTAINS(parse_error(j), "model_type");
}

TEST(ModelConfig, TypeErrorsNameField) {
  json j = minimal("qwen3");
  j["hidden_size"] = "big";
  std::string msg = parse_error(j);
  EXPECT_CONTAINS(msg, "cfg/config.json");
  EXPECT_CONTAINS(msg, "'hidden_size'");
  j = minimal("qwen3");
  j["tie_word_embeddings"] = 1;
  EXPECT_CONTAINS(parse_error(j), "'tie_word_embeddings'");
  j = minimal("qwen3");
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", "x"}};
  EXPECT_CONTAINS(parse_error(j), "'rope_scaling.factor'");
  j = minimal("qwen3");
  j["torch_dtype"] = "int4";
  EXPECT_CONTAINS(parse_error(j), "'torch_dtype'");
  j = minimal("qwen3");
  j["eos_token_id"] = {1, "x"};
  EXPECT_CONTAINS(parse_error(j), "'eos_token_id'");
  j = minimal("qwen3");
  j.erase("vocab_size");
  EXPECT_CONTAINS(parse_error(j), "missing required field 'vocab_size'");
  // Integral floats are accepted for integer fields.
  j = minimal("qwen3");
  j["max_position_embeddings"] = 4096.0;
  EXPECT_EQ(parse(j).max_position_embeddings, 4096);
}

TEST(ModelConfig, SizeValidation) {
  json j = minimal("qwen3");
  j["num_key_value_heads"] = 3;
  EXPECT_CONTAINS(parse_error(j), "num_key_value_heads");
  j = minimal("qwen3");
  j["num_hidden_layers"] = 0;
  EXPECT_CONTAINS(parse_error(j), "'num_hidden_layers' must be positive");
  j = minimal("llama");
  j["num_attention_heads"] = 5;  // 64 % 5 != 0 and no head_dim
  EXPECT_CONTAINS(parse_error(j), "hidden_size");
  j["head_dim"] = 16;
  j["num_key_value_heads"] = 5;
  EXPECT_EQ(parse(j).head_dim, 16);
}

TEST(ModelConfig, DtypeSpellings) {
  json j = minimal("qwen3");
  j["dtype"] = "float16";  // transformers v5 spelling
  EXPECT_EQ(parse(j).torch_dtype, DType::kF16);
  j["torch_dtype"] = "float32";
  EXPECT_EQ(parse(j).torch_dtype, DType::kF32);
}

TEST(ModelConfig, EosList) {
  json j = minimal("qwen3");
  j["eos_token_id"] = {151645, 151643};
  EXPECT_EQ(parse(j).eos_token_ids, (std::vector<int64_t>{151645, 151643}));
}

TEST(ModelConfig, RopeLinearLegacyType) {
  json j = minimal("llama");
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  j["rope_theta"] = 500000.0;
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
}

TEST(ModelConfig, RopeDynamic) {
  json j = minimal("qwen2");
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 4}};
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, "dynamic");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);
  j["rope_scaling"] = {{"rope_type", "dynamic"}};
  EXPECT_CONTAINS(parse_error(j), "'rope_scaling.factor'");
}

TEST(ModelConfig, RopeYarn) {
  json j = qwen3_06b();
  j["max_position_embeddings"] = 131072;
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32768);
  EXPECT_FALSE(c.rope_scaling.attention_factor.has_value());
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 1.0);
  EXPECT_TRUE(c.rope_scaling.truncate);
  // Absent original length -> max_position_embeddings; explicit extras are read.
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 2.0}, {"attention_factor", 1.5}, {"beta_fast", 16},
                       {"truncate", false}};
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 131072);
  EXPECT_EQ(c.rope_scaling.attention_factor, 1.5);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 16.0);
  EXPECT_FALSE(c.rope_scaling.truncate);
}

TEST(ModelConfig, RopeLlama3) {
  json j = minimal("llama");
  j["max_position_embeddings"] = 131072;
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  j["rope_scaling"].erase("low_freq_factor");
  EXPECT_CONTAINS(parse_error(j), "low_freq_factor");
}

TEST(ModelConfig, RopeParametersV5) {
  json j = minimal("qwen3");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
  ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 2e6}, {"factor", 4.0},
                          {"original_max_position_embeddings", 8192}, {"partial_rotary_factor", 0.5}};
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_theta, 2e6);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.rotary_dim(), 64);
  // rope_scaling (legacy) wins over rope_parameters when both are set, as in transformers.
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 3.0}};
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, "linear");
}

TEST(ModelConfig, RopeUnknownType) {
  json j = minimal("qwen3");
  j["rope_scaling"] = {{"rope_type", "longrope"}, {"factor", 2.0}};
  const std::string msg = parse_error(j);
  EXPECT_CONTAINS(msg, "cfg/config.json");
  EXPECT_CONTAINS(msg, "\"longrope\"");
  EXPECT_CONTAINS(msg, "yarn");
}

TEST(ModelConfig, LoadFromFolder) {
  TempDir dir;
  EXPECT_CONTAINS(error_of([&] { load_model_config(dir.path()); }), "no config.json");
  EXPECT_CONTAINS(error_of([&] { load_model_config(dir.file("nope")); }), "no such directory");
  dir.write("config.json", "{not json");
  EXPECT_CONTAINS(error_of([&] { load_model_config(dir.path()); }), dir.file("config.json"));
  dir.write("config.json", qwen3_06b().dump());
  EXPECT_EQ(load_model_config(dir.path()).hidden_size, 1024);
}

TEST(GenerationConfig, Qwen3) {
  TempDir dir;
  EXPECT_TRUE(load_generation_config(dir.path()).eos_token_ids.empty());  // absent file
  dir.write("generation_config.json", R"({"bos_token_id": 151643, "do_sample": true,
      "eos_token_id": [151645, 151643], "pad_token_id": 151643, "temperature": 0.6, "top_k": 20,
      "top_p": 0.95, "transformers_version": "4.51.0"})");
  const GenerationConfig g = load_generation_config(dir.path());
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{151645, 151643}));
  EXPECT_EQ(g.bos_token_id, 151643);
  EXPECT_EQ(g.pad_token_id, 151643);
  EXPECT_EQ(g.do_sample, true);
  EXPECT_DOUBLE_EQ(*g.temperature, 0.6);
  EXPECT_DOUBLE_EQ(*g.top_p, 0.95);
  EXPECT_EQ(g.top_k, 20);
  EXPECT_FALSE(g.min_p.has_value());
  EXPECT_FALSE(g.max_new_tokens.has_value());

  dir.write("generation_config.json", R"({"eos_token_id": 2, "temperature": "hot"})");
  const std::string msg = error_of([&] { load_generation_config(dir.path()); });
  EXPECT_CONTAINS(msg, "generation_config.json");
  EXPECT_CONTAINS(msg, "'temperature'");
}

}  // namespace
}  // namespace pagoda

namespace pagoda {
namespace {

// Every golden fixture under tests/model/data was written by transformers; each must load here.
TEST(ModelConfig, LoadsTransformersFixtures) {
  const std::filesystem::path root = std::filesystem::path(PAGODA_SOURCE_DIR) / "tests/model/data";
  if (!std::filesystem::is_directory(root)) GTEST_SKIP() << "no fixtures in " << root;
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    if (!std::filesystem::exists(entry.path() / "config.json")) continue;
    SCOPED_TRACE(entry.path().string());
    const ModelConfig c = load_model_config(entry.path().string());
    EXPECT_GT(c.hidden_size, 0);
    load_generation_config(entry.path().string());
    const Checkpoint ckpt(entry.path().string());  // safetensors written by the reference writer
    // Qwen3.5 fixtures are laid out like released checkpoints: text model under model.language_model.
    EXPECT_TRUE(ckpt.has(c.text_config_nested ? "model.language_model.embed_tokens.weight" : "model.embed_tokens.weight"));
    ++loaded;
  }
  EXPECT_GT(loaded, 0);
}

}  // namespace
}  // namespace pagoda
