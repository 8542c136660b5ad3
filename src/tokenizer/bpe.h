// Byte-pair-encoding model of tokenizer.json ("model": {"type": "BPE"}): merge ranks in a flat
// hash table, a bounded per-word cache, and a merge loop that needs no allocation per word.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pagoda::tokenizer_detail {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept;
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class Bpe {
 public:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };

  // `symbols` maps a unit (a byte for byte-level models, else a UTF-8 character) to its id.
  // `pieces` maps the byte form of every vocabulary token to its id (for ignore_merges).
  void init(StringMap pieces, bool byte_level, bool ignore_merges, size_t num_merges);
  void add_merge(int32_t left, int32_t right, int32_t rank, int32_t new_id);

  // Appends the ids of one pre-tokenized word (raw bytes; byte-level mapping is implicit).
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  const StringMap& pieces() const { return pieces_; }

 private:
  const Merge* find_merge(int32_t left, int32_t right) const {
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
                         static_cast<uint32_t>(right);
    size_t h = hash_key(key) & mask_;
    while (true) {
      const uint64_t k = keys_[h];
      if (k == key) return &vals_[h];
      if (k == kEmpty) return nullptr;
      h = (h + 1) & mask_;
    }
  }
  static size_t hash_key(uint64_t k) {
    k ^= k >> 31;
    k *= 0x9E3779B97F4A7C15ull;
    k ^= k >> 29;
    return static_cast<size_t>(k);
  }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  static constexpr uint64_t kEmpty = ~0ull;
  std::vector<uint64_t> keys_;
  std::vector<Merge> vals_;
  size_t mask_ = 0;
  StringMap pieces_;
  int32_t byte_ids_[256];
  bool byte_level_ = true;
  bool ignore_merges_ = false;

  // Word -> ids cache: a direct-mapped table per thread (no locking), keyed by this model's
  // unique generation number; short words with few ids only (long ones are rare and cheap
  // relative to their length).
  uint64_t generation_ = 0;
};

}  // namespace pagoda::tokenizer_detail
