#include "engine/block_hash.h"

#include <bit>

namespace pagoda {
namespace {

// Bijective 64-bit finaliser (the splitmix64 output function): every input bit reaches every
// output bit, so one changed token flips about half of the state.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Two 64-bit lanes that absorb each word through different constants and feed each other, so the
// 128-bit result is not just two copies of one 64-bit hash.
class Lanes {
 public:
  explicit Lanes(const BlockHash& seed) : a_(seed.lo ^ 0x452821e638d01377ULL), b_(seed.hi ^ 0xbe5466cf34e90c6cULL) {}

  void absorb(uint64_t w) {
    a_ ^= mix64(w + 0xc0ac29b7c97c50ddULL);
    a_ = std::rotl(a_, 29) * 0x9e3779b97f4a7c15ULL + b_;
    b_ ^= mix64(w ^ 0x3f84d5b5b5470917ULL);
    b_ = std::rotl(b_, 37) * 0xd6e8feb86659fd93ULL + a_;
  }

  BlockHash finish() {
    const uint64_t a = mix64(a_ + std::rotl(b_, 17));
    const uint64_t b = mix64(b_ ^ std::rotl(a, 41) ^ 0x9216d5d98979fb1bULL);
    return BlockHash{a, b};
  }

 private:
  uint64_t a_;
  uint64_t b_;
};

}  // namespace

BlockHash hash_block_tokens(const BlockHash& parent, std::span<const int32_t> token_ids,
                            std::span<const int64_t> extra_keys) {
  Lanes lanes(parent);
  lanes.absorb(parent.lo);
  lanes.absorb(parent.hi);
  lanes.absorb(token_ids.size());
  size_t i = 0;
  for (; i + 1 < token_ids.size(); i += 2) {
    lanes.absorb(static_cast<uint32_t>(token_ids[i]) | (static_cast<uint64_t>(static_cast<uint32_t>(token_ids[i + 1])) << 32));
  }
  if (i < token_ids.size()) lanes.absorb(static_cast<uint32_t>(token_ids[i]));
  lanes.absorb(extra_keys.size() ^ 0x8000000000000000ULL);
  for (int64_t k : extra_keys) lanes.absorb(static_cast<uint64_t>(k));
  return lanes.finish();
}

}  // namespace pagoda
