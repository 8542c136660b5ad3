#include "tokenizer/bpe.h"

#include <algorithm>
#include <climits>
#include <atomic>
#include <cstring>
#include <queue>

#include "tokenizer/utf8.h"

namespace pagoda::tokenizer_detail {

size_t StringHash::operator()(std::string_view s) const noexcept {
  return std::hash<std::string_view>()(s);
}

namespace {

struct CacheSlot {
  uint64_t hash;
  uint8_t len;
  uint8_t nids;
  char bytes[22];
  int32_t ids[8];
};
static_assert(sizeof(CacheSlot) == 64);
constexpr size_t kCacheSlots = 1 << 14;
constexpr size_t kCachedThreadModels = 4;

uint64_t word_hash(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull * (s.size() + 1);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  if (i < s.size()) {
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
  }
  h ^= h >> 29;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 32;
  return h;
}

struct ThreadCache {
  uint64_t owner = 0;
  std::vector<CacheSlot> slots;
};

CacheSlot* thread_cache(uint64_t generation) {
  thread_local ThreadCache caches[kCachedThreadModels];
  thread_local size_t victim = 0;
  for (auto& c : caches)
    if (c.owner == generation) return c.slots.data();
  ThreadCache& c = caches[victim];
  victim = (victim + 1) % kCachedThreadModels;
  c.owner = generation;
  c.slots.assign(kCacheSlots, CacheSlot{});
  return c.slots.data();
}

std::atomic<uint64_t> g_generation{0};

}  // namespace

void Bpe::init(StringMap pieces, bool byte_level, bool ignore_merges, size_t num_merges) {
  generation_ = ++g_generation;
  pieces_ = std::move(pieces);
  byte_level_ = byte_level;
  ignore_merges_ = ignore_merges;
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    auto it = pieces_.find(std::string_view(&c, 1));
    byte_ids_[b] = it == pieces_.end() ? -1 : it->second;
  }
  size_t cap = 16;
  while (cap < num_merges * 2 + 16) cap <<= 1;
  keys_.assign(cap, kEmpty);
  vals_.assign(cap, Merge{0, 0});
  mask_ = cap - 1;
}

void Bpe::add_merge(int32_t left, int32_t right, int32_t rank, int32_t new_id) {
  const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
                       static_cast<uint32_t>(right);
  size_t h = hash_key(key) & mask_;
  while (keys_[h] != kEmpty && keys_[h] != key) h = (h + 1) & mask_;
  keys_[h] = key;  // a repeated pair keeps the last rank (as HF's map does)
  vals_[h] = Merge{rank, new_id};
}

void Bpe::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (byte_level_ && word.size() == 1) {
    const int32_t id = byte_ids_[static_cast<unsigned char>(word[0])];
    if (id >= 0) out.push_back(id);
    return;
  }
  if (word.size() > sizeof(CacheSlot::bytes)) {
    merge_word(word, out);
    return;
  }
  const uint64_t h = word_hash(word);
  CacheSlot& slot = thread_cache(generation_)[h & (kCacheSlots - 1)];
  if (slot.hash == h && slot.len == word.size() && std::memcmp(slot.bytes, word.data(), word.size()) == 0) {
    out.insert(out.end(), slot.ids, slot.ids + slot.nids);
    return;
  }
  const size_t before = out.size();
  merge_word(word, out);
  const size_t nids = out.size() - before;
  if (nids <= 8) {
    slot.hash = h;
    slot.len = static_cast<uint8_t>(word.size());
    slot.nids = static_cast<uint8_t>(nids);
    std::memcpy(slot.bytes, word.data(), word.size());
    std::memcpy(slot.ids, out.data() + before, nids * sizeof(int32_t));
  }
}

void Bpe::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {  // a word that is itself a token is not merged (HF ignore_merges)
    auto it = pieces_.find(word);
    if (it != pieces_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Initial symbols: one per byte (byte-level) or per UTF-8 character.
  thread_local std::vector<int32_t> ids;
  ids.clear();
  if (byte_level_) {
    for (unsigned char c : word) {
      const int32_t id = byte_ids_[c];
      if (id >= 0) ids.push_back(id);  // no unk token in byte-level models: drop (as HF)
    }
  } else {
    size_t i = 0;
    while (i < word.size()) {
      const size_t start = i;
      utf8::next_codepoint(word, i);
      auto it = pieces_.find(word.substr(start, i - start));
      if (it != pieces_.end()) ids.push_back(it->second);
    }
  }
  const size_t n = ids.size();
  if (n <= 1) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }

  if (n <= 128) {
    // Short words: keep the rank of every adjacent pair; merge the lowest rank (leftmost on
    // ties), then refresh only the two neighbouring pairs.
    thread_local std::vector<int32_t> ranks, new_ids;
    ranks.resize(n);
    new_ids.resize(n);
    size_t m = n;
    for (size_t i = 0; i + 1 < m; ++i) {
      const Merge* mg = find_merge(ids[i], ids[i + 1]);
      ranks[i] = mg ? mg->rank : INT_MAX;
      new_ids[i] = mg ? mg->new_id : -1;
    }
    while (m > 1) {
      int32_t best = INT_MAX;
      size_t bi = 0;
      for (size_t i = 0; i + 1 < m; ++i) {
        if (ranks[i] < best) {
          best = ranks[i];
          bi = i;
        }
      }
      if (best == INT_MAX) break;
      ids[bi] = new_ids[bi];
      // Remove symbol bi+1 and pair bi+1.
      for (size_t i = bi + 1; i + 1 < m; ++i) {
        ids[i] = ids[i + 1];
        ranks[i] = ranks[i + 1];
        new_ids[i] = new_ids[i + 1];
      }
      --m;
      if (bi + 1 < m) {
        const Merge* mg = find_merge(ids[bi], ids[bi + 1]);
        ranks[bi] = mg ? mg->rank : INT_MAX;
        new_ids[bi] = mg ? mg->new_id : -1;
      }
      if (bi > 0) {
        const Merge* mg = find_merge(ids[bi - 1], ids[bi]);
        ranks[bi - 1] = mg ? mg->rank : INT_MAX;
        new_ids[bi - 1] = mg ? mg->new_id : -1;
      }
    }
    out.insert(out.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(m));
    return;
  }

  // Long words: doubly linked symbols and a min-heap of (rank, position) candidates; stale
  // candidates are recognised on pop because the pair at that position no longer has that rank.
  thread_local std::vector<int32_t> prev, next;
  prev.resize(n);
  next.resize(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  using Cand = std::pair<int32_t, int32_t>;  // (rank, left position)
  thread_local std::vector<Cand> heap_storage;
  heap_storage.clear();
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap(std::greater<Cand>(),
                                                                        std::move(heap_storage));
  for (size_t i = 0; i + 1 < n; ++i) {
    if (const Merge* mg = find_merge(ids[i], ids[i + 1])) heap.push({mg->rank, static_cast<int32_t>(i)});
  }
  while (!heap.empty()) {
    const auto [rank, pos] = heap.top();
    heap.pop();
    if (ids[pos] < 0) continue;  // merged away
    const int32_t r = next[pos];
    if (r < 0) continue;
    const Merge* mg = find_merge(ids[pos], ids[r]);
    if (!mg || mg->rank != rank) continue;
    ids[pos] = mg->new_id;
    ids[r] = -1;
    next[pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = pos;
    if (prev[pos] >= 0) {
      if (const Merge* m2 = find_merge(ids[prev[pos]], ids[pos])) heap.push({m2->rank, prev[pos]});
    }
    if (next[pos] >= 0) {
      if (const Merge* m2 = find_merge(ids[pos], ids[next[pos]])) heap.push({m2->rank, pos});
    }
  }
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(ids[i]);
}

}  // namespace pagoda::tokenizer_detail
