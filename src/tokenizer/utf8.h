// UTF-8 helpers shared by the tokenizer: validation and lossy repair that matches Python's
// bytes.decode('utf-8', errors='replace') and Rust's String::from_utf8_lossy (each maximal
// subpart of an ill-formed sequence becomes one U+FFFD).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pagoda::utf8 {

// Length of the well-formed sequence at s[i..n), or 0 when ill-formed; `*consumed` receives how
// many bytes form the maximal subpart to replace (>= 1) in the ill-formed case.
size_t sequence_length(const unsigned char* s, size_t n, size_t* consumed);

bool is_valid(std::string_view s);
// Appends `s` to `out`, replacing ill-formed subsequences with U+FFFD.
void append_lossy(std::string& out, std::string_view s);
inline std::string to_valid(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  append_lossy(out, s);
  return out;
}
// Length of a trailing, still-completable prefix of a multi-byte sequence (0..3); such a tail may
// become valid when more bytes arrive.
size_t incomplete_tail(std::string_view s);

void append_codepoint(std::string& out, uint32_t cp);
// Decodes the (valid) code point at s[i], advancing i.
uint32_t next_codepoint(std::string_view s, size_t& i);

}  // namespace pagoda::utf8
