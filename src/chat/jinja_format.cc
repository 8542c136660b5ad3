// Python string formatting: `"%s-%d" % (a, b)` (and the |format filter), and str.format() with
// the format-spec mini language for str / int / float values.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "chat/jinja_builtins.h"
#include "chat/jinja_unicode.h"

// GCC 12 at -O3 reports false -Wrestrict overlaps inside std::string concatenation (GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace pagoda::jinja {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string pad_to(std::string body, int64_t width, char align, const std::string& fill, size_t sign_len = 0) {
  const int64_t len = static_cast<int64_t>(code_point_count(body));
  if (width <= len) return body;
  const int64_t marg = width - len;
  std::string pad;
  auto repeat = [&](int64_t n) {
    std::string r;
    for (int64_t i = 0; i < n; ++i) r += fill;
    return r;
  };
  switch (align) {
    case '<': return body + repeat(marg);
    case '^': return repeat(marg / 2) + body + repeat(marg - marg / 2);
    case '=': return body.substr(0, sign_len) + repeat(marg) + body.substr(sign_len);
    default: return repeat(marg) + body;
  }
}

// printf-style float formatting ("%.6f", "%e", "%g") with Python's spellings of inf / nan.
std::string c_float(double d, int precision, char type, bool alt) {
  if (std::isinf(d) || std::isnan(d)) {
    std::string s = std::isnan(d) ? "nan" : (d < 0 ? "-inf" : "inf");
    if (type == 'E' || type == 'F' || type == 'G') {
      for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return s;
  }
  char spec[16];
  std::snprintf(spec, sizeof spec, "%%%s.%d%c", alt ? "#" : "", precision, type);
  const int n = std::snprintf(nullptr, 0, spec, d);
  std::string out(static_cast<size_t>(n) + 1, '\0');
  std::snprintf(out.data(), out.size(), spec, d);
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string int_to_base(int64_t v, int base, bool upper) {
  if (v == 0) return "0";
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  unsigned __int128 u = v < 0 ? -static_cast<__int128>(v) : v;
  std::string out;
  while (u > 0) {
    out += digits[static_cast<int>(u % base)];
    u /= base;
  }
  if (v < 0) out += '-';
  return std::string(out.rbegin(), out.rend());
}

std::string group_digits(const std::string& digits, char sep) {
  std::string out;
  const size_t n = digits.size();
  for (size_t i = 0; i < n; ++i) {
    if (i && (n - i) % 3 == 0) out += sep;
    out += digits[i];
  }
  return out;
}

}  // namespace

std::string percent_format(Interpreter& in, const std::string& fmt, const std::vector<Value>& args,
                           const Value* mapping) {
  std::string out;
  size_t argi = 0;
  bool used_mapping = false;
  auto next_arg = [&]() -> const Value& {
    if (argi >= args.size()) eval_fail("not enough arguments for format string");
    return args[argi++];
  };
  for (size_t i = 0; i < fmt.size();) {
    if (fmt[i] != '%') {
      out += fmt[i++];
      continue;
    }
    ++i;
    if (i >= fmt.size()) eval_fail("incomplete format");
    Value keyed;
    bool has_key = false;
    if (fmt[i] == '(') {
      if (mapping == nullptr) eval_fail("format requires a mapping");
      int depth = 1;
      size_t j = i + 1;
      while (j < fmt.size() && depth > 0) {
        if (fmt[j] == '(') ++depth;
        if (fmt[j] == ')') --depth;
        ++j;
      }
      if (depth != 0) eval_fail("incomplete format key");
      const std::string key = fmt.substr(i + 1, j - i - 2);
      const Value* v = mapping->as_dict().find(std::string_view(key));
      if (v == nullptr) eval_fail(repr(Value::string(key)));
      keyed = *v;
      has_key = true;
      used_mapping = true;
      i = j;
    }
    bool left = false, plus = false, space = false, alt = false, zero = false;
    for (; i < fmt.size(); ++i) {
      const char c = fmt[i];
      if (c == '-')
        left = true;
      else if (c == '+')
        plus = true;
      else if (c == ' ')
        space = true;
      else if (c == '#')
        alt = true;
      else if (c == '0')
        zero = true;
      else
        break;
    }
    int64_t width = 0;
    int64_t precision = -1;
    if (i < fmt.size() && fmt[i] == '*') {
      width = require_int(next_arg(), "* width");
      if (width < 0) {
        left = true;
        width = -width;
      }
      ++i;
    } else {
      while (i < fmt.size() && is_digit(fmt[i])) width = std::min<int64_t>(width * 10 + (fmt[i++] - '0'), 1 << 30);
    }
    if (i < fmt.size() && fmt[i] == '.') {
      ++i;
      precision = 0;
      if (i < fmt.size() && fmt[i] == '*') {
        precision = std::max<int64_t>(0, require_int(next_arg(), "* precision"));
        ++i;
      } else {
        while (i < fmt.size() && is_digit(fmt[i]))
          precision = std::min<int64_t>(precision * 10 + (fmt[i++] - '0'), 1 << 30);
      }
    }
    while (i < fmt.size() && (fmt[i] == 'h' || fmt[i] == 'l' || fmt[i] == 'L')) ++i;
    if (i >= fmt.size()) eval_fail("incomplete format");
    const char type = fmt[i++];
    in.check_string_size(static_cast<size_t>(width));
    if (precision > 1000) eval_fail("precision too big");
    if (type == '%') {
      out += '%';
      continue;
    }
    const Value arg = has_key ? keyed : next_arg();
    std::string body;
    bool numeric = false;
    switch (type) {
      case 's':
      case 'r':
      case 'a': {
        body = type == 's' ? to_str(arg) : repr(arg);
        if (precision >= 0) {
          std::vector<char32_t> cps = to_code_points(body);
          if (static_cast<int64_t>(cps.size()) > precision) body = from_code_points(cps.data(), cps.data() + precision);
        }
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o': {
        numeric = true;
        int64_t v;
        if (arg.is_integral()) {
          v = arg.as_int();
        } else if (arg.is_float() && (type == 'd' || type == 'i' || type == 'u')) {
          if (std::isnan(arg.as_float()) || std::isinf(arg.as_float())) eval_fail("cannot convert float to integer");
          v = static_cast<int64_t>(arg.as_float());
        } else {
          eval_fail(std::string("%") + type +
                    " format: " + (type == 'd' || type == 'i' || type == 'u' ? "a real number" : "an integer") +
                    " is required, not " + type_name(arg));
        }
        const int base = (type == 'x' || type == 'X') ? 16 : type == 'o' ? 8 : 10;
        body = int_to_base(v < 0 ? -v : v, base, type == 'X');
        if (precision > static_cast<int64_t>(body.size())) body.insert(0, precision - body.size(), '0');
        if (alt && base != 10) body.insert(0, base == 16 ? (type == 'X' ? "0X" : "0x") : "0o");
        body.insert(0, v < 0 ? "-" : plus ? "+" : space ? " " : "");
        break;
      }
      case 'e':
      case 'E':
      case 'f':
      case 'F':
      case 'g':
      case 'G': {
        numeric = true;
        if (!arg.is_number()) eval_fail("must be real number, not " + type_name(arg));
        const double d = arg.as_float();
        body = c_float(d, precision < 0 ? 6 : static_cast<int>(precision), type, alt);
        if (d >= 0 && !std::signbit(d)) body.insert(0, plus ? "+" : space ? " " : "");
        break;
      }
      case 'c': {
        if (arg.is_integral()) {
          if (arg.as_int() < 0 || arg.as_int() > 0x10FFFF) eval_fail("%c arg not in range(0x110000)");
          encode_utf8(static_cast<char32_t>(arg.as_int()), body);
        } else if (arg.is_string() && code_point_count(arg.as_string()) == 1) {
          body = arg.as_string();
        } else {
          eval_fail("%c requires int or char");
        }
        break;
      }
      default: eval_fail(std::string("unsupported format character '") + type + "'");
    }
    if (left) {
      body = pad_to(std::move(body), width, '<', " ");
    } else if (zero && numeric) {
      const size_t sign = (!body.empty() && (body[0] == '-' || body[0] == '+' || body[0] == ' ')) ? 1 : 0;
      body = pad_to(std::move(body), width, '=', "0", sign);
    } else {
      body = pad_to(std::move(body), width, '>', " ");
    }
    out += body;
    in.check_string_size(out.size());
  }
  if (!used_mapping && argi < args.size() && !(mapping != nullptr && args.size() == 1)) {
    eval_fail("not all arguments converted during string formatting");
  }
  return out;
}

std::string format_spec(Interpreter& in, const Value& v, std::string_view spec) {
  if (spec.empty()) return to_str(v);
  // [[fill]align][sign][#][0][width][,_][.precision][type]
  std::string fill = " ";
  char align = 0, sign = '-', grouping = 0, type = 0;
  bool alt = false, zero = false;
  int64_t width = 0, precision = -1;
  size_t i = 0;
  {
    size_t p = 0;
    const char32_t c = decode_utf8(spec, p);
    if (p < spec.size() && (spec[p] == '<' || spec[p] == '>' || spec[p] == '^' || spec[p] == '=')) {
      fill.clear();
      encode_utf8(c, fill);
      align = spec[p];
      i = p + 1;
    } else if (spec[0] == '<' || spec[0] == '>' || spec[0] == '^' || spec[0] == '=') {
      align = spec[0];
      i = 1;
    }
  }
  if (i < spec.size() && (spec[i] == '+' || spec[i] == '-' || spec[i] == ' ')) sign = spec[i++];
  if (i < spec.size() && spec[i] == '#') {
    alt = true;
    ++i;
  }
  if (i < spec.size() && spec[i] == '0') {
    zero = true;
    ++i;
  }
  while (i < spec.size() && is_digit(spec[i])) width = std::min<int64_t>(width * 10 + (spec[i++] - '0'), 1 << 30);
  if (i < spec.size() && (spec[i] == ',' || spec[i] == '_')) grouping = spec[i++];
  if (i < spec.size() && spec[i] == '.') {
    ++i;
    precision = 0;
    if (i >= spec.size() || !is_digit(spec[i])) eval_fail("Format specifier missing precision");
    while (i < spec.size() && is_digit(spec[i]))
      precision = std::min<int64_t>(precision * 10 + (spec[i++] - '0'), 1 << 30);
  }
  if (i < spec.size()) type = spec[i++];
  if (i != spec.size()) eval_fail("Invalid format specifier '" + std::string(spec) + "'");
  in.check_string_size(static_cast<size_t>(width));
  if (precision > 1000) eval_fail("precision too big");
  if (zero && align == 0) {
    fill = "0";
    align = '=';
  }
  std::string body;
  if (v.is_string()) {
    if (type != 0 && type != 's') eval_fail(std::string("Unknown format code '") + type + "' for object of type 'str'");
    body = v.as_string();
    if (precision >= 0) {
      std::vector<char32_t> cps = to_code_points(body);
      if (static_cast<int64_t>(cps.size()) > precision) body = from_code_points(cps.data(), cps.data() + precision);
    }
    return pad_to(std::move(body), width, align ? align : '<', fill);
  }
  if (!v.is_number()) eval_fail("unsupported format string passed to " + type_name(v) + ".__format__");
  const bool as_int = v.is_integral() && (type == 0 || type == 'd' || type == 'b' || type == 'o' || type == 'x' ||
                                          type == 'X' || type == 'n' || type == 'c');
  std::string sign_str;
  if (as_int) {
    const int64_t x = v.as_int();
    if (type == 'c') {
      encode_utf8(static_cast<char32_t>(x), body);
      return pad_to(std::move(body), width, align ? align : '<', fill);
    }
    const int base = type == 'b' ? 2 : type == 'o' ? 8 : (type == 'x' || type == 'X') ? 16 : 10;
    body = int_to_base(x < 0 ? -x : x, base, type == 'X');
    if (grouping) body = group_digits(body, grouping);
    if (alt && base != 10) body.insert(0, base == 2 ? "0b" : base == 8 ? "0o" : type == 'X' ? "0X" : "0x");
    sign_str = x < 0 ? "-" : sign == '+' ? "+" : sign == ' ' ? " " : "";
  } else {
    if (type != 0 && std::string("eEfFgGn%").find(type) == std::string::npos) {
      eval_fail(std::string("Unknown format code '") + type + "' for object of type '" + type_name(v) + "'");
    }
    double d = v.as_float();
    if (type == '%') d *= 100;
    if (type == 0 && precision < 0) {
      body = v.is_float() ? float_repr(std::fabs(d)) : std::to_string(std::llabs(v.as_int()));
    } else {
      char t = type == 0 ? 'g' : type == '%' ? 'f' : type == 'n' ? 'g' : type;
      body = c_float(std::fabs(d), precision < 0 ? 6 : static_cast<int>(precision), t, alt);
      if (type == 0 && body.find_first_of(".e") == std::string::npos && std::isfinite(d)) body += ".0";
      if (type == '%') body += '%';
    }
    if (grouping) {
      const size_t end = body.find_first_not_of("0123456789");
      body = group_digits(body.substr(0, end), grouping) + (end == std::string::npos ? "" : body.substr(end));
    }
    sign_str = std::signbit(d) && !std::isnan(d) ? "-" : sign == '+' ? "+" : sign == ' ' ? " " : "";
  }
  body = sign_str + body;
  return pad_to(std::move(body), width, align ? align : '>', fill, sign_str.size());
}

std::string str_format(Interpreter& in, const std::string& fmt, CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  bool manual = false;
  auto resolve = [&](std::string_view field) -> Value {
    // field_name: (digits | identifier | "") ( "." name | "[" key "]" )*
    size_t i = 0;
    while (i < field.size() && field[i] != '.' && field[i] != '[') ++i;
    const std::string_view head = field.substr(0, i);
    Value v;
    if (head.empty()) {
      if (manual) eval_fail("cannot switch from manual field specification to automatic field numbering");
      if (auto_index >= args.pos.size())
        eval_fail("Replacement index " + std::to_string(auto_index) + " out of range for positional args tuple");
      v = args.pos[auto_index++];
    } else if (std::all_of(head.begin(), head.end(), is_digit)) {
      manual = true;
      int64_t n = 0;
      parse_py_int(head, 10, n);
      if (n < 0 || static_cast<size_t>(n) >= args.pos.size()) {
        eval_fail("Replacement index " + std::string(head) + " out of range for positional args tuple");
      }
      v = args.pos[n];
    } else {
      bool found = false;
      for (auto& [k, val] : args.kw) {
        if (k == head) {
          v = val;
          found = true;
          break;
        }
      }
      if (!found) eval_fail(repr(Value::string(std::string(head))));
    }
    while (i < field.size()) {
      if (field[i] == '.') {
        size_t j = i + 1;
        while (j < field.size() && field[j] != '.' && field[j] != '[') ++j;
        v = in.getattr(v, field.substr(i + 1, j - i - 1));
        i = j;
      } else {
        const size_t j = field.find(']', i);
        if (j == std::string_view::npos) eval_fail("Missing ']' in format string");
        const std::string key(field.substr(i + 1, j - i - 1));
        int64_t n;
        v = in.getitem(v, !key.empty() && std::all_of(key.begin(), key.end(), is_digit) && parse_py_int(key, 10, n)
                              ? Value::integer(n)
                              : Value::string(key));
        i = j + 1;
      }
    }
    return v;
  };
  for (size_t i = 0; i < fmt.size();) {
    const char c = fmt[i];
    if (c == '{') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
        out += '{';
        i += 2;
        continue;
      }
      // Find the matching '}' (one level of nested {} is allowed in the spec).
      size_t j = i + 1;
      int depth = 1;
      while (j < fmt.size() && depth > 0) {
        if (fmt[j] == '{') ++depth;
        if (fmt[j] == '}') --depth;
        if (depth > 0) ++j;
      }
      if (j >= fmt.size()) eval_fail("expected '}' before end of string");
      std::string_view field(fmt.data() + i + 1, j - i - 1);
      std::string spec;
      char conversion = 0;
      const size_t colon = field.find(':');
      std::string_view name_part = colon == std::string_view::npos ? field : field.substr(0, colon);
      if (colon != std::string_view::npos) {
        spec = str_format(in, std::string(field.substr(colon + 1)), args);
      }
      const size_t bang = name_part.find('!');
      if (bang != std::string_view::npos) {
        if (bang + 2 != name_part.size()) eval_fail("expected ':' after conversion specifier");
        conversion = name_part[bang + 1];
        name_part = name_part.substr(0, bang);
      }
      Value v = resolve(name_part);
      if (conversion == 'r' || conversion == 'a') {
        v = Value::string(repr(v));
      } else if (conversion == 's') {
        v = Value::string(to_str(v));
      } else if (conversion != 0) {
        eval_fail(std::string("Unknown conversion specifier ") + conversion);
      }
      out += format_spec(in, v, spec);
      in.check_string_size(out.size());
      i = j + 1;
    } else if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') {
        out += '}';
        i += 2;
        continue;
      }
      eval_fail("Single '}' encountered in format string");
    } else {
      out += c;
      ++i;
    }
  }
  return out;
}

}  // namespace pagoda::jinja
