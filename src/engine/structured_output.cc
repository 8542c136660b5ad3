#include "engine/structured_output.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_set>
#include <utility>

#include "base/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_impl.h"

namespace pagoda {

using ordered_json = nlohmann::ordered_json;
using Kind = JsonGrammar::Kind;

// ---- vocabulary ----------------------------------------------------------------------------

TokenVocabulary::TokenVocabulary(std::vector<std::string> token_bytes, int64_t vocab_size)
    : size_(vocab_size), bytes_(std::move(token_bytes)) {
  PAGODA_CHECK(vocab_size >= static_cast<int64_t>(bytes_.size()), "the vocabulary has ", bytes_.size(),
               " tokens, more than the model's ", vocab_size);
  bytes_.resize(static_cast<size_t>(vocab_size));
  std::vector<int32_t> order;
  for (int64_t i = 0; i < vocab_size; ++i)
    if (!bytes_[static_cast<size_t>(i)].empty()) order.push_back(static_cast<int32_t>(i));
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return bytes_[static_cast<size_t>(a)] < bytes_[static_cast<size_t>(b)] ||
           (bytes_[static_cast<size_t>(a)] == bytes_[static_cast<size_t>(b)] && a < b);
  });
  // Sorted order is preorder: each token adds the nodes below its common prefix with the previous.
  trie_.push_back(TrieNode{});
  std::vector<int32_t> path{0};  // path[d]: the node at depth d on the current branch
  std::string_view prev;
  auto close_to = [&](size_t depth) {  // nodes deeper than `depth` are complete
    while (path.size() > depth + 1) {
      trie_[static_cast<size_t>(path.back())].end = static_cast<int32_t>(trie_.size());
      path.pop_back();
    }
  };
  for (int32_t id : order) {
    const std::string& b = bytes_[static_cast<size_t>(id)];
    size_t lcp = 0;
    while (lcp < prev.size() && lcp < b.size() && prev[lcp] == b[lcp]) ++lcp;
    close_to(lcp);
    for (size_t d = lcp; d < b.size(); ++d) {
      TrieNode n;
      n.byte = static_cast<uint8_t>(b[d]);
      n.depth = static_cast<uint16_t>(d + 1);
      n.tok_begin = n.tok_end = static_cast<int32_t>(tokens_.size());
      path.push_back(static_cast<int32_t>(trie_.size()));
      trie_.push_back(n);
    }
    TrieNode& leaf = trie_[static_cast<size_t>(path.back())];
    PAGODA_ASSERT(leaf.tok_end == static_cast<int32_t>(tokens_.size()));
    tokens_.push_back(id);
    leaf.tok_end = static_cast<int32_t>(tokens_.size());
    max_depth_ = std::max(max_depth_, static_cast<int>(b.size()));
    prev = b;
  }
  close_to(0);
  trie_[0].end = static_cast<int32_t>(trie_.size());
}

std::shared_ptr<const TokenVocabulary> TokenVocabulary::from_tokenizer(const Tokenizer& tokenizer) {
  const tokenizer_detail::TokenizerImpl& impl = tokenizer.impl();
  const int64_t vocab_size = std::max<int64_t>(tokenizer.vocab_size(), static_cast<int64_t>(impl.id_bytes.size()));
  std::unordered_set<int32_t> added;
  for (const auto& [text, id] : impl.added_vocab) added.insert(id);
  std::vector<std::string> bytes(std::min<size_t>(impl.id_bytes.size(), static_cast<size_t>(vocab_size)));
  for (size_t id = 0; id < bytes.size(); ++id) {
    if (added.contains(static_cast<int32_t>(id)) || (id < impl.special.size() && impl.special[id])) continue;
    bytes[id] = impl.id_bytes[id];
  }
  return std::make_shared<TokenVocabulary>(std::move(bytes), vocab_size);
}

const std::string& TokenVocabulary::bytes(int32_t id) const {
  static const std::string empty;
  return id >= 0 && id < size_ ? bytes_[static_cast<size_t>(id)] : empty;
}

// ---- schema compiler -----------------------------------------------------------------------

namespace {

void trie_insert(std::vector<JsonGrammar::TrieNode>& trie, const std::string& s, int32_t index) {
  if (trie.empty()) trie.emplace_back();
  int32_t t = 0;
  trie[0].leaves.push_back(index);
  for (char ch : s) {
    const uint8_t b = static_cast<uint8_t>(ch);
    int32_t next = -1;
    for (const auto& [eb, to] : trie[static_cast<size_t>(t)].next)
      if (eb == b) next = to;
    if (next < 0) {
      next = static_cast<int32_t>(trie.size());
      trie[static_cast<size_t>(t)].next.emplace_back(b, next);
      trie.emplace_back();
    }
    t = next;
    trie[static_cast<size_t>(t)].leaves.push_back(index);
  }
  if (trie[static_cast<size_t>(t)].leaf < 0) trie[static_cast<size_t>(t)].leaf = index;
}

int32_t trie_child(const std::vector<JsonGrammar::TrieNode>& trie, int32_t t, uint8_t b) {
  for (const auto& [eb, to] : trie[static_cast<size_t>(t)].next)
    if (eb == b) return to;
  return -1;
}

}  // namespace

class SchemaCompiler {
 public:
  SchemaCompiler(JsonGrammar& g, const ordered_json& root) : g_(g), root_(root) {}

  int32_t add(JsonGrammar::Node n) {
    PAGODA_CHECK(g_.nodes_.size() < 60000, "the JSON schema is too large");
    g_.nodes_.push_back(std::move(n));
    return static_cast<int32_t>(g_.nodes_.size() - 1);
  }

  int32_t string_node() {
    if (g_.string_node_ < 0) {
      JsonGrammar::Node n;
      n.kind = Kind::kString;
      g_.string_node_ = add(std::move(n));
    }
    return g_.string_node_;
  }

  int32_t literal(const std::vector<std::string>& texts) {
    JsonGrammar::Node n;
    n.kind = Kind::kLiteral;
    for (size_t i = 0; i < texts.size(); ++i) trie_insert(n.trie, texts[i], static_cast<int32_t>(i));
    return add(std::move(n));
  }

  int32_t any_value() {
    if (any_ >= 0) return any_;
    any_ = add(JsonGrammar::Node{});  // the union, filled below
    JsonGrammar::Node obj;
    obj.kind = Kind::kObject;
    obj.additional = any_;
    obj.closable = {1};
    obj.last_key = {0};
    JsonGrammar::Node arr;
    arr.kind = Kind::kArray;
    arr.items = any_;
    JsonGrammar::Node num;
    num.kind = Kind::kNumber;
    std::vector<int32_t> alts{add(std::move(obj)), add(std::move(arr)), string_node(), add(std::move(num)),
                              literal({"true", "false", "null"})};
    g_.nodes_[static_cast<size_t>(any_)].alts = std::move(alts);
    return any_;
  }

  int32_t any_object() {
    JsonGrammar::Node obj;
    obj.kind = Kind::kObject;
    obj.additional = any_value();
    obj.closable = {1};
    obj.last_key = {0};
    return add(std::move(obj));
  }

  int32_t compile(const ordered_json& s, const std::string& path, int depth = 0) {
    PAGODA_CHECK(depth < 64, "the JSON schema nests too deeply at ", path);
    if (s.is_boolean()) {
      PAGODA_CHECK(s.get<bool>(), "the JSON schema at ", path, " is false: nothing can match it");
      return any_value();
    }
    PAGODA_CHECK(s.is_object(), "the JSON schema at ", path, " must be an object or a boolean");
    for (const char* k : {"not", "if", "then", "else", "prefixItems", "patternProperties", "dependentSchemas",
                          "contains", "unevaluatedItems"})
      PAGODA_CHECK(!s.contains(k), "the JSON schema keyword '", k, "' (at ", path, ") is not supported");
    if (auto it = s.find("$ref"); it != s.end()) {
      PAGODA_CHECK(it->is_string(), "'$ref' at ", path, " must be a string");
      return ref(it->get<std::string>(), path, depth);
    }
    if (auto it = s.find("const"); it != s.end()) return literal({it->dump()});
    if (auto it = s.find("enum"); it != s.end()) {
      PAGODA_CHECK(it->is_array() && !it->empty(), "'enum' at ", path, " must be a non-empty array");
      std::vector<std::string> texts;
      for (const ordered_json& v : *it) texts.push_back(v.dump());
      return literal(texts);
    }
    for (const char* k : {"anyOf", "oneOf"}) {
      if (auto it = s.find(k); it != s.end()) {
        PAGODA_CHECK(it->is_array() && !it->empty(), "'", k, "' at ", path, " must be a non-empty array");
        JsonGrammar::Node u;
        for (size_t i = 0; i < it->size(); ++i)
          u.alts.push_back(compile((*it)[i], path + "/" + k + "/" + std::to_string(i), depth + 1));
        return add(std::move(u));
      }
    }
    if (auto it = s.find("allOf"); it != s.end()) {
      PAGODA_CHECK(it->is_array() && it->size() == 1, "'allOf' at ", path,
                   " is only supported with exactly one schema");
      return compile((*it)[0], path + "/allOf/0", depth + 1);
    }
    auto t = s.find("type");
    if (t == s.end()) {
      if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties"))
        return compile_type(s, "object", path, depth);
      if (s.contains("items") || s.contains("minItems") || s.contains("maxItems"))
        return compile_type(s, "array", path, depth);
      return any_value();
    }
    if (t->is_string()) return compile_type(s, t->get<std::string>(), path, depth);
    PAGODA_CHECK(t->is_array() && !t->empty(), "'type' at ", path, " must be a string or a non-empty array");
    JsonGrammar::Node u;
    for (const ordered_json& x : *t) {
      PAGODA_CHECK(x.is_string(), "'type' at ", path, " must hold strings");
      u.alts.push_back(compile_type(s, x.get<std::string>(), path, depth));
    }
    return add(std::move(u));
  }

 private:
  int32_t ref(const std::string& r, const std::string& path, int depth) {
    if (auto it = refs_.find(r); it != refs_.end()) return it->second;
    PAGODA_CHECK(r == "#" || r.rfind("#/$defs/", 0) == 0 || r.rfind("#/definitions/", 0) == 0, "'$ref' '", r,
                 "' at ", path, " is not supported (only #, #/$defs/... and #/definitions/...)");
    const ordered_json* target = &root_;
    if (r != "#") {
      const ordered_json::json_pointer ptr(r.substr(1));
      PAGODA_CHECK(root_.contains(ptr), "'$ref' '", r, "' at ", path, " names nothing in the schema");
      target = &root_.at(ptr);
    }
    const int32_t placeholder = add(JsonGrammar::Node{});  // a union of one, filled below
    refs_.emplace(r, placeholder);
    const int32_t body = compile(*target, r, depth + 1);
    g_.nodes_[static_cast<size_t>(placeholder)].alts = {body};
    return placeholder;
  }

  int32_t compile_type(const ordered_json& s, const std::string& type, const std::string& path, int depth) {
    JsonGrammar::Node n;
    if (type == "string") return string_node();
    if (type == "number" || type == "integer") {
      n.kind = type == "number" ? Kind::kNumber : Kind::kInteger;
      return add(std::move(n));
    }
    if (type == "boolean") return literal({"true", "false"});
    if (type == "null") return literal({"null"});
    if (type == "array") {
      n.kind = Kind::kArray;
      auto it = s.find("items");
      if (it != s.end() && it->is_boolean() && !it->get<bool>()) {
        n.items = any_value();
        n.max_items = 0;
      } else {
        n.items = it == s.end() ? any_value() : compile(*it, path + "/items", depth + 1);
      }
      if (auto m = s.find("minItems"); m != s.end()) {
        PAGODA_CHECK(m->is_number_integer() && m->get<int64_t>() >= 0, "'minItems' at ", path,
                     " must be a non-negative integer");
        n.min_items = static_cast<int32_t>(std::min<int64_t>(m->get<int64_t>(), 1 << 20));
      }
      if (auto m = s.find("maxItems"); m != s.end()) {
        PAGODA_CHECK(m->is_number_integer() && m->get<int64_t>() >= 0, "'maxItems' at ", path,
                     " must be a non-negative integer");
        n.max_items = static_cast<int32_t>(std::min<int64_t>(m->get<int64_t>(), 1 << 20));
      }
      PAGODA_CHECK(n.max_items < 0 || n.max_items >= n.min_items, "'maxItems' is below 'minItems' at ", path);
      return add(std::move(n));
    }
    PAGODA_CHECK(type == "object", "unknown JSON schema type '", type, "' at ", path);
    n.kind = Kind::kObject;
    std::vector<std::string> names;
    std::vector<int32_t> values;
    if (auto it = s.find("properties"); it != s.end()) {
      PAGODA_CHECK(it->is_object(), "'properties' at ", path, " must be an object");
      for (auto p = it->begin(); p != it->end(); ++p) {
        names.push_back(p.key());
        values.push_back(compile(p.value(), path + "/properties/" + p.key(), depth + 1));
      }
    }
    std::vector<uint8_t> required(names.size(), 0);
    if (auto it = s.find("required"); it != s.end()) {
      PAGODA_CHECK(it->is_array(), "'required' at ", path, " must be an array of strings");
      for (const ordered_json& r : *it) {
        PAGODA_CHECK(r.is_string(), "'required' at ", path, " must be an array of strings");
        const std::string name = r.get<std::string>();
        auto at = std::find(names.begin(), names.end(), name);
        if (at == names.end()) {  // required but undeclared: any value
          names.push_back(name);
          values.push_back(any_value());
          required.push_back(1);
        } else {
          required[static_cast<size_t>(at - names.begin())] = 1;
        }
      }
    }
    if (names.empty()) {
      auto it = s.find("additionalProperties");
      if (it == s.end() || (it->is_boolean() && it->get<bool>()))
        n.additional = any_value();
      else if (!it->is_boolean())
        n.additional = compile(*it, path + "/additionalProperties", depth + 1);
      n.closable = {1};
      n.last_key = {0};
      return add(std::move(n));
    }
    const size_t np = names.size();
    for (size_t i = 0; i < np; ++i) trie_insert(n.trie, ordered_json(names[i]).dump(), static_cast<int32_t>(i));
    n.prop_values = std::move(values);
    n.prop_required = required;
    n.closable.assign(np + 1, 1);
    n.last_key.assign(np + 1, static_cast<int32_t>(np) - 1);
    for (size_t i = np; i-- > 0;) {
      n.closable[i] = required[i] ? 0 : n.closable[i + 1];
      n.last_key[i] = required[i] ? static_cast<int32_t>(i) : n.last_key[i + 1];
    }
    return add(std::move(n));
  }

  JsonGrammar& g_;
  const ordered_json& root_;
  int32_t any_ = -1;
  std::unordered_map<std::string, int32_t> refs_;
};

std::shared_ptr<const JsonGrammar> JsonGrammar::from_schema(const ordered_json& schema) {
  auto g = std::make_shared<JsonGrammar>();
  SchemaCompiler c(*g, schema);
  c.string_node();
  g->root_ = c.compile(schema, "#");
  return g;
}

std::shared_ptr<const JsonGrammar> JsonGrammar::any_object() {
  auto g = std::make_shared<JsonGrammar>();
  const ordered_json empty = ordered_json::object();
  SchemaCompiler c(*g, empty);
  c.string_node();
  g->root_ = c.any_object();
  return g;
}

// ---- matcher -------------------------------------------------------------------------------

namespace {

enum : uint8_t { kObStart, kObFirst, kObKey, kObColon, kObValue, kObNext, kObComma };
enum : uint8_t { kArStart, kArFirst, kArNext, kArComma };
enum : uint8_t { kStStart, kStBody, kStEsc, kStHex, kStUtf, kStHexD };
enum : uint8_t { kNStart, kNMinus, kNZero, kNInt, kNDot, kNFrac, kNE, kNESign, kNExp };
enum : uint8_t { kLiStart, kLiIn };
constexpr uint32_t kMaxDigits = 20;
constexpr int kMaxUnionNesting = 16;
constexpr size_t kMaxCachedMasks = 512;

bool is_digit(uint8_t b) { return b >= '0' && b <= '9'; }
bool is_hex(uint8_t b) { return is_digit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F'); }

// UTF-8: the allowed range of the next continuation byte (code in aux bits 2..4).
bool utf8_cont_ok(uint8_t code, uint8_t b) {
  switch (code) {
    case 1: return b >= 0xA0 && b <= 0xBF;  // after E0
    case 2: return b >= 0x80 && b <= 0x9F;  // after ED
    case 3: return b >= 0x90 && b <= 0xBF;  // after F0
    case 4: return b >= 0x80 && b <= 0x8F;  // after F4
    default: return b >= 0x80 && b <= 0xBF;
  }
}

}  // namespace

GrammarMatcher::GrammarMatcher(std::shared_ptr<const JsonGrammar> grammar) : grammar_(std::move(grammar)) {
  PAGODA_CHECK(grammar_ && grammar_->root() >= 0, "structured output needs a compiled grammar");
  // The initial state: the root value about to start (unions expanded lazily on the first byte,
  // so the state is one stack holding a marker frame for the root).
  state_.n = 1;
  state_.s[0].depth = 0;
}

void GrammarMatcher::append(State& out, const Stack& s) {
  for (int k = 0; k < out.n; ++k) {
    const Stack& o = out.s[k];
    if (o.depth == s.depth && std::memcmp(o.f, s.f, sizeof(Frame) * s.depth) == 0) return;
  }
  if (out.n >= kMaxStacks) return;
  Stack& d = out.s[out.n++];
  const int depth = std::min<int>(s.depth, kMaxDepth);
  d.depth = static_cast<uint8_t>(depth);
  std::memcpy(d.f, s.f, sizeof(Frame) * static_cast<size_t>(depth));
}

void GrammarMatcher::push_value(Stack s, int32_t node, uint8_t byte, State& out, int guard) const {
  const JsonGrammar::Node& n = grammar_->node(node);
  if (n.kind == Kind::kUnion) {
    if (guard >= kMaxUnionNesting) return;
    for (int32_t alt : n.alts) push_value(s, alt, byte, out, guard + 1);
    return;
  }
  if (s.depth >= kMaxDepth) return;
  Frame& f = s.f[s.depth++];
  f = Frame{};
  f.node = static_cast<uint16_t>(node);
  step_stack(s, byte, out);
}

void GrammarMatcher::step_stack(Stack s, uint8_t b, State& out) const {
  if (s.depth == 0) return;  // the document is complete: nothing may follow
  Frame& f = s.f[s.depth - 1];
  const JsonGrammar::Node& n = grammar_->node(f.node);
  auto pop = [&] {
    --s.depth;
    append(out, s);
  };
  // A frame that may end here and does not take the byte: end it and give the byte to its parent.
  auto pass_up = [&] {
    --s.depth;
    step_stack(s, b, out);
  };
  switch (n.kind) {
    case Kind::kObject: {
      const bool open = n.prop_values.empty();  // keys are any string (additional)
      const uint32_t i = f.a >> 16;
      switch (f.phase) {
        case kObStart:
          if (b == '{') {
            f.phase = kObFirst;
            append(out, s);
          }
          return;
        case kObFirst:
        case kObComma:
          if (f.phase == kObComma && b == ' ' && f.aux == 0) {
            f.aux = 1;
            append(out, s);
            return;
          }
          if (b == '"') {
            if (open) {
              if (n.additional < 0 || s.depth >= kMaxDepth) return;
              f.phase = kObColon;
              f.aux = 0;
              Frame& k = s.f[s.depth++];
              k = Frame{};
              k.node = static_cast<uint16_t>(grammar_->string_node());
              k.phase = kStBody;
              append(out, s);
              return;
            }
            if (i >= n.prop_values.size()) return;
            const int32_t c = trie_child(n.trie, 0, b);
            if (c < 0) return;
            f.phase = kObKey;
            f.aux = 0;
            f.a = (i << 16) | static_cast<uint32_t>(c);
            append(out, s);
            return;
          }
          if (f.phase == kObFirst && b == '}' && n.closable[open ? 0 : i]) pop();
          return;
        case kObKey: {
          const int32_t c = trie_child(n.trie, static_cast<int32_t>(f.a & 0xffff), b);
          if (c < 0) return;
          const auto& leaves = n.trie[static_cast<size_t>(c)].leaves;
          auto it = std::lower_bound(leaves.begin(), leaves.end(), static_cast<int32_t>(i));
          if (it == leaves.end() || *it > n.last_key[i]) return;
          const int32_t leaf = n.trie[static_cast<size_t>(c)].leaf;
          if (leaf >= 0) {
            f.phase = kObColon;
            f.a = static_cast<uint32_t>(leaf + 1) << 16;
          } else {
            f.a = (i << 16) | static_cast<uint32_t>(c);
          }
          append(out, s);
          return;
        }
        case kObColon:
          if (b == ':') {
            f.phase = kObValue;
            f.aux = 0;
            append(out, s);
          }
          return;
        case kObValue: {
          if (b == ' ' && f.aux == 0) {
            f.aux = 1;
            append(out, s);
            return;
          }
          const int32_t value = open ? n.additional : n.prop_values[i - 1];
          f.phase = kObNext;
          f.aux = 0;
          push_value(s, value, b, out, 0);
          return;
        }
        case kObNext:
          if (b == ',' && (open || i < n.prop_values.size())) {
            f.phase = kObComma;
            f.aux = 0;
            append(out, s);
          } else if (b == '}' && (open || n.closable[i])) {
            pop();
          }
          return;
      }
      return;
    }
    case Kind::kArray: {
      const uint32_t cap = static_cast<uint32_t>(std::max(n.min_items, n.max_items));
      auto more_ok = [&] { return n.max_items < 0 || f.a < static_cast<uint32_t>(n.max_items); };
      switch (f.phase) {
        case kArStart:
          if (b == '[') {
            f.phase = kArFirst;
            append(out, s);
          }
          return;
        case kArFirst:
          if (b == ']') {
            if (n.min_items == 0) pop();
            return;
          }
          if (n.max_items == 0) return;
          f.phase = kArNext;
          f.a = std::min<uint32_t>(1, std::max<uint32_t>(cap, 1));
          push_value(s, n.items, b, out, 0);
          return;
        case kArNext:
          if (b == ',' && more_ok()) {
            f.phase = kArComma;
            f.aux = 0;
            append(out, s);
          } else if (b == ']' && f.a >= static_cast<uint32_t>(n.min_items)) {
            pop();
          }
          return;
        case kArComma:
          if (b == ' ' && f.aux == 0) {
            f.aux = 1;
            append(out, s);
            return;
          }
          f.phase = kArNext;
          f.aux = 0;
          f.a = std::min(f.a + 1, std::max<uint32_t>(cap, 1));
          push_value(s, n.items, b, out, 0);
          return;
      }
      return;
    }
    case Kind::kString:
      switch (f.phase) {
        case kStStart:
          if (b == '"') {
            f.phase = kStBody;
            append(out, s);
          }
          return;
        case kStBody:
          if (b == '"') {
            pop();
          } else if (b == '\\') {
            f.phase = kStEsc;
            append(out, s);
          } else if (b < 0x20) {
            return;
          } else if (b < 0x80) {
            append(out, s);
          } else if (b >= 0xC2 && b <= 0xDF) {
            f.phase = kStUtf;
            f.aux = 1;
            append(out, s);
          } else if (b >= 0xE0 && b <= 0xEF) {
            f.phase = kStUtf;
            f.aux = static_cast<uint8_t>(2 | ((b == 0xE0 ? 1 : b == 0xED ? 2 : 0) << 2));
            append(out, s);
          } else if (b >= 0xF0 && b <= 0xF4) {
            f.phase = kStUtf;
            f.aux = static_cast<uint8_t>(3 | ((b == 0xF0 ? 3 : b == 0xF4 ? 4 : 0) << 2));
            append(out, s);
          }
          return;
        case kStUtf: {
          if (!utf8_cont_ok(static_cast<uint8_t>(f.aux >> 2), b)) return;
          const uint8_t left = static_cast<uint8_t>((f.aux & 3) - 1);
          if (left == 0) {
            f.phase = kStBody;
            f.aux = 0;
          } else {
            f.aux = left;
          }
          append(out, s);
          return;
        }
        case kStEsc:
          if (b == '"' || b == '\\' || b == '/' || b == 'b' || b == 'f' || b == 'n' || b == 'r' || b == 't') {
            f.phase = kStBody;
            append(out, s);
          } else if (b == 'u') {
            f.phase = kStHex;
            f.aux = 4;
            append(out, s);
          }
          return;
        case kStHex:
          if (!is_hex(b)) return;
          if (f.aux == 4 && (b == 'd' || b == 'D')) {
            f.phase = kStHexD;  // \uD...: only D000-D7FF (no surrogates)
          } else if (--f.aux == 0) {
            f.phase = kStBody;
          }
          append(out, s);
          return;
        case kStHexD:
          if (b < '0' || b > '7') return;
          f.phase = kStHex;
          f.aux = 2;
          append(out, s);
          return;
      }
      return;
    case Kind::kNumber:
    case Kind::kInteger: {
      const bool integer = n.kind == Kind::kInteger;
      auto digit_start = [&](uint8_t phase) {
        f.phase = phase;
        f.a = 1;
        append(out, s);
      };
      auto more_digits = [&] {
        // At most 18 integer digits (the value fits an int64), 2 exponent digits (finite doubles).
        const uint32_t limit = f.phase == kNInt ? 18 : f.phase == kNExp ? 2 : kMaxDigits;
        if (f.a >= limit) return false;
        ++f.a;
        append(out, s);
        return true;
      };
      switch (f.phase) {
        case kNStart:
        case kNMinus:
          if (b == '-' && f.phase == kNStart) {
            f.phase = kNMinus;
            append(out, s);
          } else if (b == '0') {
            f.phase = kNZero;
            append(out, s);
          } else if (b >= '1' && b <= '9') {
            digit_start(kNInt);
          }
          return;
        case kNZero:
        case kNInt:
          if (f.phase == kNInt && is_digit(b)) {
            if (!more_digits()) pass_up();
          } else if (b == '.' && !integer) {
            f.phase = kNDot;
            append(out, s);
          } else if ((b == 'e' || b == 'E') && !integer) {
            f.phase = kNE;
            append(out, s);
          } else {
            pass_up();
          }
          return;
        case kNDot:
          if (is_digit(b)) digit_start(kNFrac);
          return;
        case kNFrac:
          if (is_digit(b)) {
            if (!more_digits()) pass_up();
          } else if (b == 'e' || b == 'E') {
            f.phase = kNE;
            append(out, s);
          } else {
            pass_up();
          }
          return;
        case kNE:
        case kNESign:
          if ((b == '+' || b == '-') && f.phase == kNE) {
            f.phase = kNESign;
            append(out, s);
          } else if (is_digit(b)) {
            digit_start(kNExp);
          }
          return;
        case kNExp:
          if (is_digit(b)) {
            if (!more_digits()) pass_up();
          } else {
            pass_up();
          }
          return;
      }
      return;
    }
    case Kind::kLiteral: {
      const int32_t c = trie_child(n.trie, static_cast<int32_t>(f.a), b);
      if (c >= 0) {
        f.a = static_cast<uint32_t>(c);
        f.phase = kLiIn;
        if (n.trie[static_cast<size_t>(c)].next.empty())
          pop();
        else
          append(out, s);
      } else if (f.phase == kLiIn && n.trie[f.a].leaf >= 0) {
        pass_up();
      }
      return;
    }
    case Kind::kUnion:
      return;  // never a frame
  }
}

bool GrammarMatcher::step(const State& in, uint8_t byte, State& out) const {
  out.n = 0;
  out.started = 1;
  if (!in.started) {
    push_value(Stack{}, grammar_->root(), byte, out, 0);
  } else {
    for (int k = 0; k < in.n; ++k) step_stack(in.s[k], byte, out);
  }
  return out.n > 0;
}

namespace {

void copy_state(GrammarMatcher::State& dst, const GrammarMatcher::State& src) {
  const int n = std::min<int>(src.n, GrammarMatcher::kMaxStacks);
  dst.n = static_cast<uint8_t>(n);
  dst.started = src.started;
  for (int k = 0; k < n; ++k) {
    const int depth = std::min<int>(src.s[k].depth, GrammarMatcher::kMaxDepth);
    dst.s[k].depth = static_cast<uint8_t>(depth);
    std::memcpy(dst.s[k].f, src.s[k].f, sizeof(GrammarMatcher::Frame) * static_cast<size_t>(depth));
  }
}

}  // namespace

bool GrammarMatcher::complete(const State& st) const {
  if (!st.started) return false;
  for (int k = 0; k < st.n; ++k) {
    const Stack& s = st.s[k];
    if (s.depth == 0) return true;
    if (s.depth != 1) continue;
    const Frame& f = s.f[0];
    const JsonGrammar::Node& n = grammar_->node(f.node);
    if ((n.kind == Kind::kNumber || n.kind == Kind::kInteger) &&
        (f.phase == kNZero || f.phase == kNInt || f.phase == kNFrac || f.phase == kNExp))
      return true;
    if (n.kind == Kind::kLiteral && f.phase == kLiIn && n.trie[f.a].leaf >= 0) return true;
  }
  return false;
}

bool GrammarMatcher::string_identity(const State& st, uint8_t b) const {
  if (!st.started || st.n != 1 || b < 0x20 || b >= 0x80 || b == '"' || b == '\\') return false;
  const Stack& s = st.s[0];
  if (s.depth == 0) return false;
  const Frame& f = s.f[s.depth - 1];
  return f.phase == kStBody && grammar_->node(f.node).kind == Kind::kString;
}

bool GrammarMatcher::is_complete() const { return complete(state_); }

bool GrammarMatcher::advance(std::string_view bytes) {
  if (bytes.empty()) return true;
  auto a = std::make_unique<State>();
  auto b = std::make_unique<State>();
  copy_state(*a, state_);
  for (char ch : bytes) {
    if (!step(*a, static_cast<uint8_t>(ch), *b)) return false;
    std::swap(a, b);
  }
  copy_state(state_, *a);
  current_.reset();
  return true;
}

std::string GrammarMatcher::key(const State& st) const {
  std::string k;
  k.push_back(static_cast<char>(st.started));
  k.push_back(static_cast<char>(st.n));
  for (int i = 0; i < st.n; ++i) {
    k.push_back(static_cast<char>(st.s[i].depth));
    k.append(reinterpret_cast<const char*>(st.s[i].f), sizeof(Frame) * st.s[i].depth);
  }
  return k;
}

const std::vector<uint64_t>& GrammarMatcher::allowed_tokens(const TokenVocabulary& vocab,
                                                            const std::vector<int32_t>& eos_ids) {
  if (current_) return *current_;
  const std::string k = key(state_);
  if (auto it = cache_.find(k); it != cache_.end()) {
    current_ = it->second;
    return *current_;
  }
  const size_t words = static_cast<size_t>((vocab.size() + 63) / 64);
  auto bits = std::make_shared<std::vector<uint64_t>>(words, 0);
  uint64_t* w = bits->data();
  const auto& trie = vocab.trie();
  const auto& toks = vocab.trie_tokens();
  if (scratch_.size() < static_cast<size_t>(vocab.max_depth()) + 1)
    scratch_.resize(static_cast<size_t>(vocab.max_depth()) + 1);
  copy_state(scratch_[0], state_);
  // cur[d]: the state after the first d bytes of the current trie path. Inside a string a plain
  // ASCII byte leaves a single-stack state unchanged: that edge reuses its parent's state.
  std::vector<const State*> cur(scratch_.size(), nullptr);
  cur[0] = &scratch_[0];
  bool any = false;
  const int32_t num_nodes = static_cast<int32_t>(trie.size());
  for (int32_t i = 1; i < num_nodes;) {
    const TokenVocabulary::TrieNode& t = trie[static_cast<size_t>(i)];
    const State& in = *cur[t.depth - 1u];
    if (string_identity(in, t.byte)) {
      cur[t.depth] = &in;
    } else if (step(in, t.byte, scratch_[t.depth])) {
      cur[t.depth] = &scratch_[t.depth];
    } else {
      i = t.end;
      continue;
    }
    for (int32_t j = t.tok_begin; j < t.tok_end; ++j) {
      const int32_t id = toks[static_cast<size_t>(j)];
      w[id >> 6] |= uint64_t{1} << (id & 63);
      any = true;
    }
    ++i;
  }
  if (complete(state_) || !any)
    for (int32_t id : eos_ids)
      if (id >= 0 && id < vocab.size()) w[id >> 6] |= uint64_t{1} << (id & 63);
  if (cache_.size() >= kMaxCachedMasks) cache_.clear();
  cache_.emplace(k, bits);
  current_ = std::move(bits);
  return *current_;
}

void GrammarMatcher::mask_logits(float* logits, int64_t num_logits, const TokenVocabulary& vocab,
                                 const std::vector<int32_t>& eos_ids) {
  const std::vector<uint64_t>& bits = allowed_tokens(vocab, eos_ids);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t n = std::min(vocab.size(), num_logits);
  for (int64_t id = n; id < num_logits; ++id) logits[id] = kNegInf;
  for (int64_t base = 0; base < n; base += 64) {
    const uint64_t word = bits[static_cast<size_t>(base >> 6)];
    if (word == ~uint64_t{0}) continue;
    const int64_t end = std::min<int64_t>(base + 64, n);
    for (int64_t id = base; id < end; ++id)
      if (!((word >> (id - base)) & 1)) logits[id] = kNegInf;
  }
}

bool GrammarMatcher::accept_token(const TokenVocabulary& vocab, int32_t id) {
  const std::string& b = vocab.bytes(id);
  if (b.empty()) return false;
  return advance(b);
}

}  // namespace pagoda
