#include "tokenizer/utf8.h"

#include <cstring>

namespace pagoda::utf8 {

namespace {
// Allowed range of the second byte for each lead byte (Unicode Table 3-7).
inline bool second_ok(unsigned char lead, unsigned char b) {
  switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return b >= 0x80 && b <= 0xBF;
  }
}
inline size_t lead_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}
inline bool is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }
}  // namespace

size_t sequence_length(const unsigned char* s, size_t n, size_t* consumed) {
  const unsigned char c = s[0];
  const size_t len = lead_length(c);
  if (len == 1) return 1;
  if (len == 0) {
    *consumed = 1;
    return 0;
  }
  size_t k = 1;
  if (k < n && k < len && second_ok(c, s[k])) {
    ++k;
    while (k < len && k < n && is_cont(s[k])) ++k;
  }
  if (k == len) return len;
  *consumed = k;
  return 0;
}

bool is_valid(std::string_view sv) {
  const auto* s = reinterpret_cast<const unsigned char*>(sv.data());
  const size_t n = sv.size();
  size_t i = 0;
  while (i < n) {
    // Fast path: 8 ASCII bytes at a time.
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s + i, 8);
      if ((w & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    size_t consumed = 0;
    const size_t len = sequence_length(s + i, n - i, &consumed);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

void append_lossy(std::string& out, std::string_view sv) {
  const auto* s = reinterpret_cast<const unsigned char*>(sv.data());
  const size_t n = sv.size();
  size_t i = 0, run = 0;
  while (i < n) {
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    size_t consumed = 0;
    const size_t len = sequence_length(s + i, n - i, &consumed);
    if (len > 0) {
      i += len;
      continue;
    }
    out.append(sv.data() + run, i - run);
    out.append("\xEF\xBF\xBD");
    i += consumed;
    run = i;
  }
  out.append(sv.data() + run, n - run);
}

size_t incomplete_tail(std::string_view sv) {
  const auto* s = reinterpret_cast<const unsigned char*>(sv.data());
  const size_t n = sv.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const unsigned char c = s[n - back];
    if (is_cont(c)) continue;
    const size_t len = lead_length(c);
    if (len <= back) return 0;  // ASCII, invalid lead, or a complete sequence
    // Lead byte with `back - 1` continuation bytes after it: completable when those are valid.
    if (back >= 2 && !second_ok(c, s[n - back + 1])) return 0;
    return back;
  }
  return 0;
}

void append_codepoint(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t next_codepoint(std::string_view sv, size_t& i) {
  const auto* s = reinterpret_cast<const unsigned char*>(sv.data());
  const unsigned char c = s[i];
  if (c < 0x80) {
    ++i;
    return c;
  }
  if (c < 0xE0) {
    const uint32_t cp = ((c & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
    i += 2;
    return cp;
  }
  if (c < 0xF0) {
    const uint32_t cp = ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
    i += 3;
    return cp;
  }
  const uint32_t cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) |
                      (s[i + 3] & 0x3Fu);
  i += 4;
  return cp;
}

}  // namespace pagoda::utf8
