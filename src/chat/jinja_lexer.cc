#include "chat/jinja_lexer.h"

#include <cstring>

#include "base/error.h"
#include "chat/jinja_error.h"
#include "chat/jinja_unicode.h"
#include "chat/jinja_value.h"

// GCC 12 at -O3 reports false -Wrestrict overlaps inside std::string concatenation (GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace pagoda::jinja {

void syntax_error(int line, const std::string& message) { throw TemplateError(line, message, false); }

namespace {

// Operators, longest first (jinja2 sorts them by length so that "//" wins over "/").
constexpr const char* kOperators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
                                      "]",  "(",  ")",  "{",  "}",  ">",  "<", "=", ".", ":", "|", ",", ";"};

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
int hex_value(char c) {
  if (is_digit(c)) return c - '0';
  return (c | 0x20) - 'a' + 10;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) {
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();  // keep_trailing_newline=False
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      const size_t tag = find_tag(pos_);
      if (tag == std::string::npos) {
        emit_data(src_.substr(pos_), pos_);
        pos_ = src_.size();
        break;
      }
      const char kind = src_[tag + 1];
      const char sign = (tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+')) ? src_[tag + 2] : 0;
      std::string_view text(src_.data() + pos_, tag - pos_);
      const size_t text_start = pos_;
      size_t raw_body = 0;
      const bool raw = kind == '%' && match_raw_begin(tag, sign, raw_body);
      text = strip_text(text, sign, kind != '{');
      emit_data(std::string(text), text_start);
      const int tag_line = line_at(tag);
      if (raw) {
        lex_raw(raw_body, tag_line);
      } else if (kind == '#') {
        lex_comment(tag + 2 + (sign ? 1 : 0), tag_line);
      } else {
        lex_tag(tag + 2 + (sign ? 1 : 0), kind == '%', tag_line);
      }
    }
    tokens_.push_back(Token{TokenType::kEof, line_at(src_.size()), {}});
    return std::move(tokens_);
  }

 private:
  int line_at(size_t pos) {
    // Lines are counted incrementally: positions only move forward.
    while (line_pos_ < pos && line_pos_ < src_.size()) {
      if (src_[line_pos_] == '\n') ++line_;
      ++line_pos_;
    }
    return line_;
  }

  size_t find_tag(size_t from) const {
    for (size_t p = src_.find('{', from); p != std::string::npos; p = src_.find('{', p + 1)) {
      if (p + 1 < src_.size() && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#')) return p;
    }
    return std::string::npos;
  }

  // Python's \s* / \s+ (Unicode whitespace); returns the end position.
  size_t skip_ws(size_t p) const {
    while (p < src_.size()) {
      size_t q = p;
      if (!py_isspace(decode_utf8(src_, q))) break;
      p = q;
    }
    return p;
  }

  bool starts_with(size_t p, const char* s) const {
    const size_t n = std::strlen(s);
    return p + n <= src_.size() && src_.compare(p, n, s) == 0;
  }

  // {%(-|+|)\s*raw\s*(-%}\s*|%})
  bool match_raw_begin(size_t tag, char sign, size_t& body) {
    size_t p = skip_ws(tag + 2 + (sign ? 1 : 0));
    if (!starts_with(p, "raw")) return false;
    p = skip_ws(p + 3);
    if (starts_with(p, "-%}")) {
      body = skip_ws(p + 3);
    } else if (starts_with(p, "%}")) {
      body = p + 2;
    } else {
      return false;
    }
    return true;
  }

  // The whitespace control of jinja2's OptionalLStrip rule.
  std::string_view strip_text(std::string_view text, char sign, bool lstrip_allowed) {
    if (sign == '-') return str_strip(text, nullptr, false, true);
    if (sign == '+' || !lstrip_allowed) return text;
    const size_t nl = text.rfind('\n');
    const size_t l_pos = nl == std::string_view::npos ? 0 : nl + 1;
    if (l_pos > 0 || line_starting_) {
      const std::string_view tail = text.substr(l_pos);
      if (!tail.empty() && str_strip(tail, nullptr, true, false).empty()) return text.substr(0, l_pos);
    }
    return text;
  }

  void emit_data(std::string text, size_t at) {
    if (text.empty()) return;
    tokens_.push_back(Token{TokenType::kData, line_at(at), std::move(text)});
  }

  // Consumes a tag end (`+%}`, `-%}\s*`, `%}\n?`; for comments `#}`); sets pos_ and line_starting_.
  void finish_end(size_t p, char close_char, bool trim) {
    const bool plus = src_[p] == '+';
    const bool minus = src_[p] == '-';
    if (plus || minus) ++p;
    p += 2;  // "%}" / "#}" / "}}"
    (void)close_char;
    if (minus) {
      p = skip_ws(p);
    } else if (!plus && trim && p < src_.size() && src_[p] == '\n') {
      ++p;
    }
    line_starting_ = src_[p - 1] == '\n';
    pos_ = p;
  }

  void lex_comment(size_t body, int line) {
    const size_t close = src_.find("#}", body);
    if (close == std::string::npos) syntax_error(line, "Missing end of comment tag");
    size_t end = close;
    if (close > body && (src_[close - 1] == '-' || src_[close - 1] == '+')) end = close - 1;
    finish_end(end, '#', true);
  }

  void lex_raw(size_t body, int line) {
    // (.*?)((?:{%(-|+|))\s*endraw\s*(?:+%}|-%}\s*|%}\n?))
    for (size_t p = src_.find("{%", body); p != std::string::npos; p = src_.find("{%", p + 1)) {
      const char sign = (p + 2 < src_.size() && (src_[p + 2] == '-' || src_[p + 2] == '+')) ? src_[p + 2] : 0;
      size_t q = skip_ws(p + 2 + (sign ? 1 : 0));
      if (!starts_with(q, "endraw")) continue;
      q = skip_ws(q + 6);
      if (!(starts_with(q, "+%}") || starts_with(q, "-%}") || starts_with(q, "%}"))) continue;
      std::string_view text(src_.data() + body, p - body);
      line_starting_ = body > 0 && src_[body - 1] == '\n';
      text = strip_text(text, sign, true);
      emit_data(std::string(text), body);
      finish_end(q, '%', true);
      return;
    }
    syntax_error(line, "Missing end of raw directive");
  }

  void lex_tag(size_t p, bool block, int line) {
    tokens_.push_back(Token{block ? TokenType::kBlockBegin : TokenType::kVariableBegin, line, {}});
    std::vector<char> balance;
    while (true) {
      if (p >= src_.size()) {  // end of input inside a tag: the parser reports it
        pos_ = p;
        return;
      }
      if (balance.empty()) {
        if (block && (starts_with(p, "+%}") || starts_with(p, "-%}") || starts_with(p, "%}"))) {
          tokens_.push_back(Token{TokenType::kBlockEnd, line_at(p), {}});
          finish_end(p, '%', true);
          return;
        }
        if (!block && (starts_with(p, "-}}") || starts_with(p, "}}"))) {
          tokens_.push_back(Token{TokenType::kVariableEnd, line_at(p), {}});
          finish_end(p, '}', false);
          return;
        }
      }
      const size_t ws_end = skip_ws(p);
      if (ws_end != p) {
        p = ws_end;
        continue;
      }
      const int tok_line = line_at(p);
      if (size_t end = match_float(p); end != 0) {
        std::string digits;
        for (size_t i = p; i < end; ++i) {
          if (src_[i] != '_') digits += src_[i];
        }
        Token t{TokenType::kFloat, tok_line, digits};
        t.float_value = std::strtod(digits.c_str(), nullptr);
        tokens_.push_back(std::move(t));
        p = end;
        continue;
      }
      if (size_t end = match_integer(p, tok_line); end != 0) {
        p = end;
        continue;
      }
      if (size_t end = match_name(p); end != 0) {
        tokens_.push_back(Token{TokenType::kName, tok_line, src_.substr(p, end - p)});
        p = end;
        continue;
      }
      if (src_[p] == '\'' || src_[p] == '"') {
        if (size_t end = match_string(p, tok_line); end != 0) {
          p = end;
          continue;
        }
      }
      const char* op = nullptr;
      for (const char* candidate : kOperators) {
        if (starts_with(p, candidate)) {
          op = candidate;
          break;
        }
      }
      if (op == nullptr) {
        size_t q = p;
        const char32_t c = decode_utf8(src_, q);
        std::string ch;
        encode_utf8(c, ch);
        syntax_error(tok_line, "unexpected char " + repr(Value::string(ch)) + " at " +
                                   std::to_string(code_point_count(std::string_view(src_).substr(0, p))));
      }
      const char c = op[0];
      if (op[1] == 0 && (c == '{' || c == '(' || c == '[')) {
        if (balance.size() >= static_cast<size_t>(kMaxDepth)) syntax_error(tok_line, "brackets nested too deeply");
        balance.push_back(c == '{' ? '}' : c == '(' ? ')' : ']');
      } else if (op[1] == 0 && (c == '}' || c == ')' || c == ']')) {
        if (balance.empty()) syntax_error(tok_line, std::string("unexpected '") + c + "'");
        if (balance.back() != c) {
          syntax_error(tok_line, std::string("unexpected '") + c + "', expected '" + balance.back() + "'");
        }
        balance.pop_back();
      }
      tokens_.push_back(Token{TokenType::kOperator, tok_line, op});
      p += std::strlen(op);
    }
  }

  // (\d+_)*\d+  -> end or 0
  size_t match_digits(size_t p) const {
    if (p >= src_.size() || !is_digit(src_[p])) return 0;
    while (true) {
      while (p < src_.size() && is_digit(src_[p])) ++p;
      if (p + 1 < src_.size() && src_[p] == '_' && is_digit(src_[p + 1])) {
        ++p;
        continue;
      }
      return p;
    }
  }

  size_t match_float(size_t p) const {
    if (p > 0 && src_[p - 1] == '.') return 0;  // (?<!\.)
    const size_t int_end = match_digits(p);
    if (int_end == 0) return 0;
    size_t q = int_end;
    size_t frac_end = 0;
    if (q < src_.size() && src_[q] == '.') frac_end = match_digits(q + 1);
    // exponent form: (\.digits)? e[+-]?digits
    size_t e = frac_end ? frac_end : int_end;
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t s = e + 1;
      if (s < src_.size() && (src_[s] == '+' || src_[s] == '-')) ++s;
      if (size_t exp_end = match_digits(s); exp_end != 0) return exp_end;
      // With a fraction, "1.5e" still matches as the fraction form below.
    }
    return frac_end;
  }

  size_t match_integer(size_t p, int line) {
    const char c0 = src_[p];
    if (!is_digit(c0)) return 0;
    int base = 10;
    size_t q = p;
    auto digit_ok = [&](char c) {
      if (base == 2) return c == '0' || c == '1';
      if (base == 8) return c >= '0' && c <= '7';
      if (base == 16) return is_hex(c);
      return is_digit(c);
    };
    if (c0 == '0' && p + 1 < src_.size() && std::strchr("bBoOxX", src_[p + 1]) != nullptr && src_[p + 1] != 0) {
      const char b = src_[p + 1] | 0x20;
      base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
      q = p + 2;
      size_t end = 0;
      while (true) {  // (_?[digits])+
        size_t r = q;
        if (r < src_.size() && src_[r] == '_') ++r;
        if (r < src_.size() && digit_ok(src_[r])) {
          q = r + 1;
          end = q;
        } else {
          break;
        }
      }
      if (end == 0) {
        base = 10;  // just "0"
        q = p + 1;
      }
    } else if (c0 == '0') {
      q = p + 1;
      while (true) {  // 0(_?0)*
        size_t r = q;
        if (r < src_.size() && src_[r] == '_') ++r;
        if (r < src_.size() && src_[r] == '0') {
          q = r + 1;
        } else {
          break;
        }
      }
    } else {
      q = p + 1;
      while (true) {  // [1-9](_?\d)*
        size_t r = q;
        if (r < src_.size() && src_[r] == '_') ++r;
        if (r < src_.size() && is_digit(src_[r])) {
          q = r + 1;
        } else {
          break;
        }
      }
    }
    const size_t start = base == 10 ? p : p + 2;
    int64_t value = 0;
    for (size_t i = start; i < q; ++i) {
      if (src_[i] == '_') continue;
      const int d = hex_value(src_[i]);
      if (value > (INT64_MAX - d) / base) syntax_error(line, "integer literal too large");
      value = value * base + d;
    }
    Token t{TokenType::kInteger, line, src_.substr(p, q - p)};
    t.int_value = value;
    tokens_.push_back(std::move(t));
    return q;
  }

  size_t match_name(size_t p) const {
    size_t q = p;
    const char32_t c = decode_utf8(src_, q);
    if (!(c == '_' || py_isalpha(c) || (c >= 0x80 && py_isalnum(c)))) {
      return 0;
    }
    size_t end = q;
    while (end < src_.size()) {
      size_t r = end;
      const char32_t d = decode_utf8(src_, r);
      if (!(d == '_' || py_isalnum(d))) break;
      end = r;
    }
    return end;
  }

  size_t match_string(size_t p, int line) {
    const char quote = src_[p];
    size_t q = p + 1;
    while (q < src_.size() && src_[q] != quote) {
      if (src_[q] == '\\') {
        if (q + 1 >= src_.size()) return 0;
        ++q;
      }
      ++q;
    }
    if (q >= src_.size()) return 0;  // unterminated: not a string token
    tokens_.push_back(Token{TokenType::kString, line, unescape(std::string_view(src_).substr(p + 1, q - p - 1), line)});
    return q + 1;
  }

  // Python's .encode("ascii", "backslashreplace").decode("unicode-escape"), as jinja2 does.
  static std::string unescape(std::string_view s, int line) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      if (s[i] != '\\') {
        out += s[i++];
        continue;
      }
      const char n = s[i + 1];
      i += 2;
      if (static_cast<unsigned char>(n) >= 0x80) {
        // "\é" became "\\xe9" before decoding: a backslash and the literal escape text.
        size_t q = i - 1;
        const char32_t cp = decode_utf8(s, q);
        i = q;
        out += '\\';
        if (cp < 0x100) {
          out += 'x';
          append_hex(out, cp, 2);
        } else if (cp < 0x10000) {
          out += 'u';
          append_hex(out, cp, 4);
        } else {
          out += 'U';
          append_hex(out, cp, 8);
        }
        continue;
      }
      switch (n) {
        case '\n': break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x':
        case 'u':
        case 'U': {
          const int len = n == 'x' ? 2 : n == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (int k = 0; k < len; ++k) {
            if (i + k >= s.size() || !is_hex(s[i + k])) {
              syntax_error(line, n == 'x'   ? "truncated \\xXX escape"
                                 : n == 'u' ? "truncated \\uXXXX escape"
                                            : "truncated \\UXXXXXXXX escape");
            }
            cp = cp * 16 + hex_value(s[i + k]);
          }
          if (cp > 0x10FFFF) syntax_error(line, "illegal Unicode character");
          i += len;
          encode_utf8(cp, out);
          break;
        }
        case 'N': syntax_error(line, "named Unicode escapes (\\N{...}) are not supported");
        default:
          if (n >= '0' && n <= '7') {
            uint32_t cp = n - '0';
            for (int k = 0; k < 2 && i < s.size() && s[i] >= '0' && s[i] <= '7'; ++k) cp = cp * 8 + (s[i++] - '0');
            encode_utf8(cp, out);
          } else {
            out += '\\';
            out += n;
          }
      }
    }
    return out;
  }

  static void append_hex(std::string& out, uint32_t v, int digits) {
    static constexpr char kHex[] = "0123456789abcdef";
    for (int k = digits - 1; k >= 0; --k) out += kHex[(v >> (4 * k)) & 0xF];
  }

  std::string src_;
  size_t pos_ = 0;
  bool line_starting_ = true;
  int line_ = 1;
  size_t line_pos_ = 0;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) { return Lexer(source).run(); }

}  // namespace pagoda::jinja
