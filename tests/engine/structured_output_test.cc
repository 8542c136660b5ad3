// Structured output: the JSON-schema grammar's byte matcher against JSON / JSON-schema semantics
// (expectations reasoned from the JSON grammar and the schemas, not captured output), the token
// mask on the real Qwen3 vocabulary (every allowed token keeps the matcher alive, disallowed ones
// kill it, with the mask time per step printed), and the engine end to end: a random-weight model
// sampled at temperature 1 under a schema produces JSON that parses and has the schema's shape.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "base/error.h"
#include "engine/llm_engine.h"
#include "engine/structured_output.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {
namespace {

using ordered_json = nlohmann::ordered_json;

std::shared_ptr<const JsonGrammar> schema(const std::string& text) {
  return JsonGrammar::from_schema(ordered_json::parse(text));
}

// The whole text is a complete document.
bool accepts(const std::shared_ptr<const JsonGrammar>& g, const std::string& text) {
  GrammarMatcher m(g);
  return m.advance(text) && m.is_complete();
}

// The text can be continued into a document (a live prefix).
bool live(const std::shared_ptr<const JsonGrammar>& g, const std::string& text) {
  GrammarMatcher m(g);
  return m.advance(text);
}

TEST(JsonGrammar, AnyObjectAcceptsJsonObjects) {
  const auto g = JsonGrammar::any_object();
  for (const std::string s :
       {"{}", "{\"a\": 1}", "{\"a\":1}", "{\"a\": [1, 2.5e-3, {\"b\": null}], \"c\": \"x\\n\\u00e9\\\"\"}",
        "{\"a\": true, \"b\": false, \"c\": -0.0E+5, \"d\": []}", "{\"\": {\"\": {}}}", "{\"k\": \"\xc3\xa9\xe2\x82\xac\"}",
        "{\"k\": \"\\ud7ff\\/\\b\\f\\r\\t\"}", "{\"a\": 0}", "{\"a\": 10.25}"}) {
    EXPECT_TRUE(accepts(g, s)) << s;
    EXPECT_TRUE(nlohmann::json::accept(s)) << s;  // the cases really are JSON
  }
}

TEST(JsonGrammar, AnyObjectRejectsNonJsonAndNonObjects) {
  const auto g = JsonGrammar::any_object();
  for (const std::string s : {"[1]", "1", "\"a\"", "null", "{'a': 1}", "{\"a\":01}", "{\"a\":1,}", "{\"a\":1}}",
                              "{\"a\":.5}", "{\"a\":1.}", "{\"a\":-}", "{\"a\":1e}", "{\"a\":tru}x", "{\"a\":\"\\x\"}",
                              "{\"a\":\"\x01\"}", "{a:1}", "{\"a\" 1}", "{,}", "{\"a\":[1,]}", "{\"a\":[,1]}",
                              "{\"a\":\"\xc0\xaf\"}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\\ud800\"}", "{\"a\":+1}",
                              "{\"a\":\"\xff\"}"}) {
    EXPECT_FALSE(accepts(g, s)) << s;
  }
  // Whitespace: one space after ':' and ',' only (documented); JSON allows more, this grammar not.
  EXPECT_FALSE(live(g, "{ \"a\":1}"));
  EXPECT_FALSE(live(g, "{\"a\" :1}"));
  EXPECT_FALSE(live(g, "{\"a\":  1}"));
  EXPECT_FALSE(live(g, "{\"a\":1}\n"));
  // Live prefixes are not complete documents.
  EXPECT_TRUE(live(g, "{\"a\": [1, {\"b\": \"x"));
  EXPECT_FALSE(accepts(g, "{\"a\": [1, {\"b\": \"x"));
  EXPECT_FALSE(accepts(g, ""));
}

constexpr const char* kPerson = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string"},
    "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
    "ok": {"type": "boolean"}
  },
  "required": ["name", "age"]
})";

TEST(JsonGrammar, ObjectSchemaPropertiesRequiredItems) {
  const auto g = schema(kPerson);
  EXPECT_TRUE(accepts(g, R"({"name": "Bob", "age": 3})"));
  EXPECT_TRUE(accepts(g, R"({"name":"","age":-0,"tags":["a","b"],"ok":false})"));
  EXPECT_TRUE(accepts(g, R"({"name": "Bob", "age": 12, "ok": true})"));
  EXPECT_FALSE(accepts(g, R"({"name": "Bob"})"));            // age is required
  EXPECT_FALSE(accepts(g, R"({"name": "Bob", "age": 3.5})"));  // integer
  EXPECT_FALSE(accepts(g, R"({"name": "Bob", "age": 1e3})"));
  EXPECT_FALSE(accepts(g, R"({"name": 1, "age": 3})"));
  EXPECT_FALSE(accepts(g, R"({"name": "B", "age": 3, "tags": []})"));               // minItems 1
  EXPECT_FALSE(accepts(g, R"({"name": "B", "age": 3, "tags": ["a", "b", "c"]})"));  // maxItems 2
  EXPECT_FALSE(accepts(g, R"({"name": "B", "age": 3, "x": 1})"));                   // undeclared key
  EXPECT_FALSE(accepts(g, R"({"name": "B", "age": 3, "ok": true, "ok": true})"));
  EXPECT_FALSE(accepts(g, R"({"nam": "B", "age": 3})"));
  EXPECT_FALSE(accepts(g, R"({})"));
  // Declared order (documented narrowing): the same object with keys swapped is refused.
  EXPECT_FALSE(accepts(g, R"({"age": 3, "name": "Bob"})"));
}

TEST(JsonGrammar, EnumConstAnyOfRef) {
  const auto g = schema(R"({
    "$defs": {"colour": {"enum": ["red", "green", 1, null]}},
    "type": "object",
    "properties": {
      "c": {"$ref": "#/$defs/colour"},
      "v": {"anyOf": [
        {"type": "object", "properties": {"k": {"const": "a"}, "x": {"type": "integer"}}, "required": ["k", "x"]},
        {"type": "object", "properties": {"k": {"const": "b"}, "y": {"type": "boolean"}}, "required": ["k", "y"]}]},
      "n": {"type": ["integer", "null"]}
    },
    "required": ["c", "v"]
  })");
  EXPECT_TRUE(accepts(g, R"({"c": "red", "v": {"k": "a", "x": 5}})"));
  EXPECT_TRUE(accepts(g, R"({"c": 1, "v": {"k": "b", "y": true}, "n": null})"));
  EXPECT_TRUE(accepts(g, R"({"c": null, "v": {"k": "b", "y": false}, "n": -7})"));
  EXPECT_FALSE(accepts(g, R"({"c": "blue", "v": {"k": "a", "x": 5}})"));
  EXPECT_FALSE(accepts(g, R"({"c": 10, "v": {"k": "a", "x": 5}})"));
  EXPECT_FALSE(accepts(g, R"({"c": "red", "v": {"k": "a", "y": true}})"));  // mixes the alternatives
  EXPECT_FALSE(accepts(g, R"({"c": "red", "v": {"k": "c", "x": 5}})"));
  EXPECT_FALSE(accepts(g, R"({"c": "red", "v": {"k": "a", "x": 5}, "n": "1"})"));
}

TEST(JsonGrammar, RecursiveRefAndScalars) {
  const auto tree = schema(R"({
    "$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
              "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"]}},
    "$ref": "#/$defs/node"})");
  EXPECT_TRUE(accepts(tree, R"({"v": 1, "kids": [{"v": 2, "kids": []}, {"v": 3}]})"));
  EXPECT_FALSE(accepts(tree, R"({"v": 1, "kids": [{"kids": []}]})"));

  const auto num = schema(R"({"type": "number"})");
  for (const std::string s : {"0", "-1.5e+10", "12", "3.25", "1E5", "-0"}) EXPECT_TRUE(accepts(num, s)) << s;
  for (const std::string s : {"01", "1.", ".5", "--1", "1e", "0x1", "1 "}) EXPECT_FALSE(accepts(num, s)) << s;

  const auto arr = schema(R"({"type": "array", "items": {"type": "string", "enum": ["x", "xy"]}})");
  EXPECT_TRUE(accepts(arr, R"([])"));
  EXPECT_TRUE(accepts(arr, R"(["xy", "x"])"));
  EXPECT_FALSE(accepts(arr, R"(["xyz"])"));

  const auto any = schema("{}");
  for (const std::string s : {"1", "\"s\"", "[true, null]", "{\"a\": {}}"}) EXPECT_TRUE(accepts(any, s)) << s;
}

TEST(JsonGrammar, UnsupportedOrInvalidSchemasThrow) {
  for (const std::string s : {R"({"type": "foo"})", R"({"not": {}})", R"({"$ref": "#/$defs/missing"})", "false",
                              R"({"$ref": "http://x/y"})", R"({"type": "array", "minItems": 3, "maxItems": 1})",
                              R"({"enum": []})", R"({"properties": 5})", R"({"allOf": [{}, {}]})"}) {
    EXPECT_THROW((void)schema(s), Error) << s;
  }
}

// ---- masks on the real Qwen3 vocabulary ----------------------------------------------------

const Tokenizer& qwen3() {
  static const Tokenizer tok = Tokenizer::from_dir(std::string(PAGODA_SHARED_DIR) + "/tokenizers/qwen3");
  return tok;
}

bool bit(const std::vector<uint64_t>& bits, int32_t id) { return (bits[static_cast<size_t>(id) >> 6] >> (id & 63)) & 1; }

void check_mask(const char* what, const std::shared_ptr<const JsonGrammar>& g, const std::string& prefix,
                const TokenVocabulary& vocab, const std::vector<int32_t>& eos, int* num_allowed) {
  GrammarMatcher m(g);
  ASSERT_TRUE(m.advance(prefix)) << prefix;
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<uint64_t> bits = m.allowed_tokens(vocab, eos);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const auto t1 = std::chrono::steady_clock::now();
  (void)m.allowed_tokens(vocab, eos);  // the same state again: cached
  const double cached = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
  int allowed = 0, checked_dead = 0;
  for (int32_t id = 0; id < vocab.size(); ++id) {
    const bool is_eos = std::find(eos.begin(), eos.end(), id) != eos.end();
    if (bit(bits, id)) {
      ++allowed;
      if (is_eos) {
        EXPECT_TRUE(m.is_complete()) << what << ": EOS allowed before the document is complete";
        continue;
      }
      GrammarMatcher copy = m;
      EXPECT_TRUE(copy.accept_token(vocab, id)) << what << ": allowed token " << id << " kills the matcher";
    } else if (!vocab.bytes(id).empty() && id % 7 == 0) {
      GrammarMatcher copy = m;
      EXPECT_FALSE(copy.accept_token(vocab, id)) << what << ": token " << id << " '" << vocab.bytes(id)
                                                 << "' is alive but masked";
      ++checked_dead;
    }
  }
  std::printf("[ mask ] %-22s allowed %6d / %lld tokens, %.2f ms (cached %.3f ms), %d disallowed checked\n", what,
              allowed, static_cast<long long>(vocab.size()), ms, cached, checked_dead);
  *num_allowed = allowed;
}

TEST(StructuredOutputMask, Qwen3VocabularyMasksAreExact) {
  const auto vocab = TokenVocabulary::from_tokenizer(qwen3());
  ASSERT_GE(vocab->size(), 151643);
  const std::vector<int32_t> eos{151645, 151643};
  EXPECT_TRUE(vocab->bytes(151645).empty());  // <|im_end|>: no bytes, never inside the grammar
  EXPECT_EQ(vocab->bytes(qwen3().token_to_id("Ġ{")), " {");  // byte-level symbols mapped back
  const auto g = schema(kPerson);
  int n = 0;
  check_mask("object start", g, "", *vocab, eos, &n);
  EXPECT_GT(n, 1);
  check_mask("inside a string", g, R"({"name": "Bo)", *vocab, eos, &n);
  EXPECT_GT(n, 100000);  // nearly every token may continue a string
  check_mask("inside a number", g, R"({"name": "Bo", "age": 12)", *vocab, eos, &n);
  EXPECT_GT(n, 5);
  check_mask("after a key", g, R"({"name")", *vocab, eos, &n);
  check_mask("json_object value", JsonGrammar::any_object(), R"({"a": )", *vocab, eos, &n);
  check_mask("complete", g, R"({"name": "Bo", "age": 12})", *vocab, eos, &n);
  EXPECT_EQ(n, 2);  // only the EOS tokens
}

// ---- the engine under a schema -------------------------------------------------------------

// A synthetic vocabulary for the 512-token fixture: every single byte plus JSON-ish fragments,
// so that quotes, digits and punctuation are frequent enough to finish within the budget.
std::shared_ptr<const TokenVocabulary> fixture_vocabulary(int32_t eos, int32_t bos) {
  const std::vector<std::string> fragments = {
      "\"",   "\",",  "\":",   "\", \"", "\": \"", "{\"",  "\"}",  "}",    "]",     "[",    "true",  "false",
      "null", "0",    "12",    "-3",     ".5",     "e+1",  " ",    ", ",   "\": ",  "name", "id",    "\\n",
      "\\u00e9", "\xc3\xa9", "\"a\"", "\"b\"", "1,", "2]", "{",  ",",    ":",    "7",     "\xe2\x82", "\xac",
      "\\\"", "\"x\"", "[1", "}]", "\"}]"};
  std::vector<std::string> bytes(512);
  for (int i = 0; i < 256; ++i) bytes[static_cast<size_t>(i)] = std::string(1, static_cast<char>(i));
  for (int i = 256; i < 512; ++i) bytes[static_cast<size_t>(i)] = fragments[static_cast<size_t>(i) % fragments.size()];
  bytes[static_cast<size_t>(eos)].clear();
  bytes[static_cast<size_t>(bos)].clear();
  return std::make_shared<TokenVocabulary>(std::move(bytes), 512);
}

TEST(StructuredOutputEngine, RandomModelOutputMatchesSchema) {
  auto backend = make_cpu_backend();
  ModelLoadOptions lo;
  lo.max_num_tokens = 256;
  lo.max_num_logits = 16;
  auto model = load_model(std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/qwen3", *backend, lo);
  EngineConfig c;
  c.max_num_seqs = 16;
  c.max_num_batched_tokens = 256;
  c.max_model_len = 1024;
  c.num_kv_blocks = 1200;
  c.kv_cache_dtype = DType::kF32;
  c.eos_token_ids = {2};
  c.token_vocabulary = fixture_vocabulary(2, 1);
  LLMEngine engine(*model, *backend, c);

  auto spec = std::make_shared<StructuredOutputSpec>();
  spec->grammar = schema(R"({"type": "object", "properties": {
      "id": {"type": "integer"}, "name": {"type": "string"}, "kind": {"enum": ["a", "b"]},
      "vals": {"type": "array", "items": {"type": "number"}, "maxItems": 3}, "ok": {"type": "boolean"}},
      "required": ["id", "name", "kind"]})");
  const int kSeeds = 8;
  for (int s = 0; s < kSeeds; ++s) {
    SamplingParams p;
    p.temperature = 1.0f;
    p.seed = 1000 + s;
    p.max_tokens = 900;
    p.structured_output = spec;
    engine.add_request("r" + std::to_string(s), {5, 6, 7, 8, 9}, p);
  }
  // The deferred form: free text until token 300 is sampled, then the grammar (any object).
  auto deferred = std::make_shared<StructuredOutputSpec>();
  deferred->grammar = JsonGrammar::any_object();
  deferred->start_after_token = 300;
  {
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = 1;
    p.structured_output = deferred;
    engine.add_request("deferred", {5, 6, 7}, p);  // one free token: not masked to '{'
  }
  std::map<std::string, std::vector<int32_t>> tokens;
  std::map<std::string, std::string> finish;
  for (int step = 0; engine.has_unfinished() && step < 20000; ++step)
    for (const RequestOutput& o : engine.step()) {
      auto& t = tokens[o.request_id];
      t.insert(t.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      if (o.finished) finish[o.request_id] = o.finish_reason;
    }
  int stopped = 0;
  for (int s = 0; s < kSeeds; ++s) {
    const std::string id = "r" + std::to_string(s);
    ASSERT_TRUE(finish.contains(id));
    std::string text;
    for (int32_t t : tokens[id])
      if (t != 2) text += c.token_vocabulary->bytes(t);
    if (finish[id] == "length") {  // cut by max_tokens: still a live prefix
      EXPECT_TRUE(live(spec->grammar, text)) << text;
      continue;
    }
    ++stopped;
    ASSERT_EQ(finish[id], "stop") << text;
    EXPECT_EQ(tokens[id].back(), 2) << "ends with EOS";
    nlohmann::ordered_json j;
    ASSERT_NO_THROW(j = nlohmann::ordered_json::parse(text)) << text;
    ASSERT_TRUE(j.is_object()) << text;
    EXPECT_TRUE(j.contains("id") && j["id"].is_number_integer()) << text;
    EXPECT_TRUE(j.contains("name") && j["name"].is_string()) << text;
    EXPECT_TRUE(j.contains("kind") && (j["kind"] == "a" || j["kind"] == "b")) << text;
    if (j.contains("vals")) {
      EXPECT_TRUE(j["vals"].is_array() && j["vals"].size() <= 3) << text;
      for (const auto& v : j["vals"]) EXPECT_TRUE(v.is_number()) << text;
    }
    if (j.contains("ok")) {
      EXPECT_TRUE(j["ok"].is_boolean()) << text;
    }
    for (auto it = j.begin(); it != j.end(); ++it)
      EXPECT_TRUE(it.key() == "id" || it.key() == "name" || it.key() == "kind" || it.key() == "vals" ||
                  it.key() == "ok")
          << text;
  }
  EXPECT_GE(stopped, kSeeds / 2) << "most seeds should finish their JSON within max_tokens";
  ASSERT_EQ(tokens["deferred"].size(), 1u);
  EXPECT_EQ(finish["deferred"], "length");
}

TEST(StructuredOutputEngine, NeedsAVocabulary) {
  SamplingParams p;
  auto spec = std::make_shared<StructuredOutputSpec>();
  spec->grammar = JsonGrammar::any_object();
  p.structured_output = spec;
  EXPECT_THROW(Sampler(p, std::vector<int32_t>{1}, 16, {2}), Error);
}

}  // namespace
}  // namespace pagoda
