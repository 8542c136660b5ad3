// Internal state of a loaded tokenizer.json (see tokenizer.h). Not part of the public API.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe.h"

namespace pagoda::tokenizer_detail {

// A compiled PCRE2 pattern (UTF + UCP, JIT when available).
class Regex {
 public:
  explicit Regex(const std::string& pattern);  // throws pagoda::Error
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Finds the next match in subject[from..); returns false when none. Offsets are absolute.
  bool find(std::string_view subject, size_t from, size_t* start, size_t* end) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokStage {
  enum class Kind { kSplit, kPrefixSpace } kind = Kind::kSplit;
  std::shared_ptr<Regex> regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
};

enum class NormStep { kNFC, kNFD, kNFKC, kNFKD, kLowercase };

struct AddedToken {
  std::string content;  // as matched (normalized when `normalized`)
  int32_t id = -1;
  bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = false;
};

// Leftmost-longest matcher over a set of added tokens.
class AddedMatcher {
 public:
  void build(std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }
  struct Match {
    size_t start, end;  // span consumed in the text (includes lstrip/rstrip whitespace)
    int32_t id;
  };
  // Next accepted match at or after `from`.
  std::optional<Match> find(std::string_view text, size_t from) const;

 private:
  std::vector<AddedToken> tokens_;
  std::vector<std::vector<uint32_t>> by_first_;  // per first byte, token indices longest first
  bool first_[256] = {};
};

struct TokenizerImpl {
  std::string path;
  std::vector<std::string> id_to_token;  // "" where no token
  std::vector<std::string> id_bytes;     // what the decoder turns each token into
  std::vector<uint8_t> special;          // per id
  StringMap model_vocab;                 // token string -> id
  StringMap added_vocab;                 // added token content -> id
  int64_t vocab_size = 0;

  std::vector<NormStep> normalizer;
  std::vector<PreTokStage> pretok;
  bool byte_level = false;  // a ByteLevel pre-tokenizer maps bytes to symbols
  Bpe bpe;
  AddedMatcher raw_added;   // added tokens with normalized=false, matched on the raw text
  AddedMatcher norm_added;  // normalized=true, matched on the normalized text

  enum class DecoderKind { kNone, kByteLevel } decoder = DecoderKind::kNone;

  std::vector<int32_t> post_prefix, post_suffix;  // TemplateProcessing / Bert / Roberta (single)

  std::optional<int32_t> bos, eos;

  void encode(std::string_view text, bool add_special, std::vector<int32_t>& out) const;
  void encode_normal(std::string_view segment, std::vector<int32_t>& out) const;
  void pretokenize(size_t stage, std::string_view piece, std::vector<int32_t>& out) const;
  std::string normalize(std::string_view s) const;
  // Raw bytes of the kept tokens (before UTF-8 repair).
  void decode_bytes(const int32_t* ids, size_t n, bool skip_special, std::string& out) const;
  bool token_kept(int32_t id, bool skip_special) const {
    return id >= 0 && static_cast<size_t>(id) < id_to_token.size() && !id_to_token[id].empty() &&
           !(skip_special && special[id]);
  }
};

}  // namespace pagoda::tokenizer_detail
