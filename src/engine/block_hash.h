// Content hashes of full KV blocks for automatic prefix caching (vLLM V1's BlockHash).
// hash(block i) = H(hash(block i-1), token ids of block i, extra keys), so equal hashes name equal
// prefixes, not just equal blocks. The hash is only an index: the block pool still compares the
// stored tokens, extra keys and parent block of every candidate before reporting a hit, so a
// collision costs a cache miss, never wrong KV.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

namespace pagoda {

struct BlockHash {
  uint64_t lo = 0;
  uint64_t hi = 0;
  friend bool operator==(const BlockHash&, const BlockHash&) = default;
};

struct BlockHashHasher {
  // Both halves are already well mixed; folding them keeps std::unordered_map happy with any
  // injected (weak) test hasher too.
  size_t operator()(const BlockHash& h) const { return static_cast<size_t>(h.lo ^ (h.hi * 0x9e3779b97f4a7c15ULL)); }
};

// The parent "hash" of a request's first block. A fixed value (not random per process) so that
// hashes are reproducible across runs, e.g. for KV events or an external cache.
inline constexpr BlockHash kRootBlockHash{0x243f6a8885a308d3ULL, 0x13198a2e03707344ULL};

// Pluggable so that tests can force collisions.
using BlockHasher = std::function<BlockHash(const BlockHash& parent, std::span<const int32_t> token_ids,
                                            std::span<const int64_t> extra_keys)>;

// The default hasher: a 128-bit, two-lane multiply/rotate mix of every input word, with lengths
// absorbed so that tokens and extra keys can never be shifted into each other.
BlockHash hash_block_tokens(const BlockHash& parent, std::span<const int32_t> token_ids,
                            std::span<const int64_t> extra_keys);

}  // namespace pagoda
