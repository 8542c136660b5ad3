#include "chat/jinja_unicode.h"

#include <algorithm>

namespace pagoda::jinja {

namespace {

struct CodeRange {
  uint32_t first, last;
};
struct CaseRun {
  uint32_t first, last;
  int32_t stride, delta;
};

#include "chat/jinja_unicode_data.inc"

template <size_t N>
bool in_ranges(const CodeRange (&table)[N], char32_t c) {
  const auto* it = std::upper_bound(std::begin(table), std::end(table), static_cast<uint32_t>(c),
                                    [](uint32_t v, const CodeRange& r) { return v < r.first; });
  if (it == std::begin(table)) return false;
  --it;
  return c >= it->first && c <= it->last;
}

template <size_t N>
char32_t map_case(const CaseRun (&table)[N], char32_t c) {
  const auto* it = std::upper_bound(std::begin(table), std::end(table), static_cast<uint32_t>(c),
                                    [](uint32_t v, const CaseRun& r) { return v < r.first; });
  if (it == std::begin(table)) return c;
  --it;
  if (c > it->last || (c - it->first) % it->stride != 0) return c;
  return static_cast<char32_t>(static_cast<int64_t>(c) + it->delta);
}

}  // namespace

char32_t decode_utf8(std::string_view s, size_t& pos) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) {
    ++pos;
    return b0;
  }
  int len = 0;
  char32_t cp = 0;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2;
    cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3;
    cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4;
    cp = b0 & 0x07;
  }
  if (len == 0 || pos + len > s.size()) {
    ++pos;
    return 0xDC00 + b0;
  }
  for (int i = 1; i < len; ++i) {
    const auto b = static_cast<unsigned char>(s[pos + i]);
    if ((b & 0xC0) != 0x80) {
      ++pos;
      return 0xDC00 + b0;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are invalid UTF-8.
  static constexpr char32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++pos;
    return 0xDC00 + b0;
  }
  pos += len;
  return cp;
}

void encode_utf8(char32_t cp, std::string& out) {
  if (cp >= 0xDC80 && cp <= 0xDCFF) {  // surrogateescape: the original byte
    out += static_cast<char>(cp - 0xDC00);
  } else if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // other lone surrogates cannot be encoded
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp <= 0x10FFFF) {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += "\xEF\xBF\xBD";
  }
}

std::vector<char32_t> to_code_points(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) out.push_back(decode_utf8(s, pos));
  return out;
}

std::string from_code_points(const char32_t* begin, const char32_t* end) {
  std::string out;
  out.reserve(end - begin);
  for (const char32_t* p = begin; p != end; ++p) encode_utf8(*p, out);
  return out;
}

size_t code_point_count(std::string_view s) {
  if (is_ascii(s)) return s.size();
  size_t n = 0;
  for (size_t pos = 0; pos < s.size(); ++n) decode_utf8(s, pos);
  return n;
}

bool is_ascii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

bool py_isspace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

bool py_isprintable(char32_t c) {
  if (c < 0x80) return c >= 0x20 && c < 0x7F;
  return !in_ranges(kNonPrintable, c);
}

bool py_isalpha(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return in_ranges(kAlpha, c);
}

bool py_isalnum(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  return in_ranges(kAlnum, c);
}

bool py_isdigit(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return in_ranges(kAlnum, c) && !in_ranges(kAlpha, c);
}

char32_t py_toupper(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  return map_case(kToUpper, c);
}

char32_t py_tolower(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  return map_case(kToLower, c);
}

bool py_isupper(char32_t c) { return py_tolower(c) != c; }
bool py_islower(char32_t c) { return py_toupper(c) != c; }

namespace {
template <class F>
std::string map_chars(std::string_view s, F&& f) {
  std::string out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) encode_utf8(f(decode_utf8(s, pos)), out);
  return out;
}
bool is_cased(char32_t c) { return py_toupper(c) != c || py_tolower(c) != c; }
}  // namespace

std::string str_upper(std::string_view s) { return map_chars(s, py_toupper); }
std::string str_lower(std::string_view s) { return map_chars(s, py_tolower); }
std::string str_swapcase(std::string_view s) {
  return map_chars(s, [](char32_t c) { return py_isupper(c) ? py_tolower(c) : py_toupper(c); });
}

std::string str_title(std::string_view s) {
  bool prev_cased = false;
  return map_chars(s, [&](char32_t c) {
    const char32_t r = prev_cased ? py_tolower(c) : py_toupper(c);
    prev_cased = is_cased(c);
    return r;
  });
}

std::string str_capitalize(std::string_view s) {
  bool first = true;
  return map_chars(s, [&](char32_t c) {
    const char32_t r = first ? py_toupper(c) : py_tolower(c);
    first = false;
    return r;
  });
}

std::string_view str_strip(std::string_view s, const std::string* chars, bool left, bool right) {
  std::vector<char32_t> set;
  if (chars != nullptr) set = to_code_points(*chars);
  auto strip_it = [&](char32_t c) {
    if (chars == nullptr) return py_isspace(c);
    return std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t begin = 0, end = s.size();
  if (left) {
    while (begin < end) {
      size_t pos = begin;
      if (!strip_it(decode_utf8(s, pos))) break;
      begin = pos;
    }
  }
  if (right) {
    while (end > begin) {
      // Step back to the start of the last code point.
      size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && end - start < 4) --start;
      size_t pos = start;
      char32_t c = decode_utf8(s, pos);
      if (pos != end) {  // not a well-formed sequence ending at `end`: the last byte stands alone
        start = end - 1;
        pos = start;
        c = decode_utf8(s, pos);
      }
      if (!strip_it(c)) break;
      end = start;
    }
  }
  return s.substr(begin, end - begin);
}

}  // namespace pagoda::jinja
