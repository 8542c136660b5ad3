// Structured output (vLLM's guided decoding): a JSON schema compiled into a grammar, a byte-level
// incremental matcher for it, and the per-step token mask over the vocabulary.
//
// Grammar. The supported schema subset: type (object / array / string / number / integer /
// boolean / null, or a list of them), properties + required (properties are emitted in declared
// order; required ones must appear, optional ones may be skipped; additionalProperties is only
// honoured for objects without declared properties, as xgrammar's strict mode: with declared
// properties no others are generated), items, minItems / maxItems, enum, const, anyOf / oneOf,
// allOf of one schema, $ref to "#", "#/$defs/..." or "#/definitions/...", and true / {} = any
// JSON value. Keywords that only narrow strings or numbers (pattern, format, minLength, minimum,
// ...) are ignored: the output is still valid JSON of the right shape. Anything else that would
// change the shape (prefixItems, not, if/then, ...) is a pagoda::Error naming it.
//
// Whitespace: no insignificant whitespace except at most one ' ' after ':' and after ','
// (Python's json.dumps spacing and the compact form both match); no newlines. Numbers are the
// JSON number grammar with at most 18 integer digits (an int64), 20 fraction digits and 2
// exponent digits (a finite double); strings are any valid UTF-8 except
// control characters, with JSON escapes (\u escapes of surrogates are refused, so the output is
// always strict UTF-8 JSON).
//
// Matcher. A set of pushdown stacks (several while anyOf alternatives share a prefix), each a
// fixed array of small frames: copying a state is a memcpy of its live part, which the mask walk
// does once per vocabulary-trie edge. Nesting deeper than kMaxDepth frames is refused.
//
// Masking. The vocabulary is a byte trie in depth-first order; the walk advances a copy of the
// state per edge and skips dead subtrees. Masks are cached per state (inside a string the state
// repeats from token to token, so most steps are a cache hit).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace pagoda {

class Tokenizer;

// Token id -> the bytes it produces, as a byte trie. Tokens without bytes (special and added
// tokens, ids past the tokenizer's vocabulary) are never allowed inside the grammar; EOS tokens
// are allowed only once the grammar is complete.
class TokenVocabulary {
 public:
  // token_bytes[id]: the bytes of token id (empty: never allowed). vocab_size >= token_bytes.size().
  TokenVocabulary(std::vector<std::string> token_bytes, int64_t vocab_size);
  // From a tokenizer: the decoder's bytes of every model (non-added) token. (A model's logits
  // row may be longer, padded: ids past size() are never allowed.)
  static std::shared_ptr<const TokenVocabulary> from_tokenizer(const Tokenizer& tokenizer);

  int64_t size() const { return size_; }
  const std::string& bytes(int32_t id) const;

  struct TrieNode {
    uint8_t byte = 0;
    uint16_t depth = 0;
    int32_t end = 0;  // one past the last node of this subtree (preorder)
    int32_t tok_begin = 0, tok_end = 0;  // tokens ending here: tokens_[tok_begin, tok_end)
  };
  const std::vector<TrieNode>& trie() const { return trie_; }
  const std::vector<int32_t>& trie_tokens() const { return tokens_; }
  int max_depth() const { return max_depth_; }

 private:
  int64_t size_;
  std::vector<std::string> bytes_;
  std::vector<TrieNode> trie_;  // preorder; node 0 is the root
  std::vector<int32_t> tokens_;
  int max_depth_ = 0;
};

// A compiled JSON grammar (immutable, shared by every request that uses it).
class JsonGrammar {
 public:
  // Throws pagoda::Error with a message naming the unsupported or invalid part.
  static std::shared_ptr<const JsonGrammar> from_schema(const nlohmann::ordered_json& schema);
  // Any JSON object (response_format json_object).
  static std::shared_ptr<const JsonGrammar> any_object();

  enum class Kind : uint8_t { kObject, kArray, kString, kNumber, kInteger, kLiteral, kUnion };
  struct TrieNode {  // literal / key trie
    std::vector<std::pair<uint8_t, int32_t>> next;
    int32_t leaf = -1;           // the literal / property index ending here
    std::vector<int32_t> leaves;  // every leaf in the subtree, sorted
  };
  struct Node {
    Kind kind = Kind::kUnion;
    // object
    std::vector<int32_t> prop_values;  // value node per declared property
    std::vector<uint8_t> prop_required;
    std::vector<int32_t> last_key;  // last_key[i]: the last property index allowed next at index i
    std::vector<uint8_t> closable;  // closable[i]: no required property at or after i
    int32_t additional = -1;        // value node of extra keys (objects without declared properties)
    std::vector<TrieNode> trie;     // keys ("\"name\"") or literals
    // array
    int32_t items = -1;
    int32_t min_items = 0, max_items = -1;
    // union
    std::vector<int32_t> alts;
  };
  const Node& node(int32_t i) const { return nodes_[static_cast<size_t>(i)]; }
  int32_t root() const { return root_; }
  int32_t string_node() const { return string_node_; }

 private:
  friend class SchemaCompiler;
  std::vector<Node> nodes_;
  int32_t root_ = -1;
  int32_t string_node_ = -1;
};

// What a request's output must match.
struct StructuredOutputSpec {
  std::shared_ptr<const JsonGrammar> grammar;
  // When set, the constraint starts after this token is sampled (a reasoning parser's "</think>").
  std::optional<int32_t> start_after_token;
};

class GrammarMatcher {
 public:
  static constexpr int kMaxDepth = 20;
  static constexpr int kMaxStacks = 8;
  struct Frame {
    uint16_t node = 0;
    uint8_t phase = 0;
    uint8_t aux = 0;
    uint32_t a = 0;
  };
  struct Stack {
    uint8_t depth = 0;
    Frame f[kMaxDepth];
  };
  struct State {
    uint8_t started = 0;  // 0: nothing consumed yet (the root value is about to start)
    uint8_t n = 0;        // live stacks; 0: dead
    Stack s[kMaxStacks];
  };

  explicit GrammarMatcher(std::shared_ptr<const JsonGrammar> grammar);

  // Consumes bytes; false (state unchanged) if they cannot continue a valid document.
  bool advance(std::string_view bytes);
  bool is_complete() const;
  const State& state() const { return state_; }

  // The allowed tokens now, one bit per token id: tokens whose bytes keep the state alive, plus
  // eos_ids once complete (and as a last resort when nothing else is allowed).
  const std::vector<uint64_t>& allowed_tokens(const TokenVocabulary& vocab, const std::vector<int32_t>& eos_ids);
  // Sets every disallowed logit of logits[0, num_logits) to -inf.
  void mask_logits(float* logits, int64_t num_logits, const TokenVocabulary& vocab,
                   const std::vector<int32_t>& eos_ids);
  // Advances by a sampled token's bytes (EOS and byte-less tokens are ignored); false if rejected.
  bool accept_token(const TokenVocabulary& vocab, int32_t id);

  // One step of the matcher on a state (exposed for the mask walk and tests): out = in + byte.
  bool step(const State& in, uint8_t byte, State& out) const;
  bool complete(const State& s) const;

 private:
  void push_value(Stack s, int32_t node, uint8_t byte, State& out, int guard) const;
  void step_stack(Stack s, uint8_t byte, State& out) const;
  static void append(State& out, const Stack& s);
  std::string key(const State& s) const;
  bool string_identity(const State& s, uint8_t byte) const;  // step(s, byte) == s (inside a string)

  std::shared_ptr<const JsonGrammar> grammar_;
  State state_;
  std::vector<State> scratch_;  // one per trie depth
  // Mask cache (per state), bounded.
  std::unordered_map<std::string, std::shared_ptr<const std::vector<uint64_t>>> cache_;
  std::shared_ptr<const std::vector<uint64_t>> current_;
};

}  // namespace pagoda
