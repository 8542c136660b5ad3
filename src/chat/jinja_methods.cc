// Python methods of str / list / tuple / dict values (what `'x'.strip()` or `d.get(k)` call),
// the globals Hugging Face's environment provides, and argument-binding helpers.
//
// The sandbox (jinja2 ImmutableSandboxedEnvironment) forbids mutating methods: list.append,
// dict.update, ... resolve to an undefined value whose call raises "access to attribute 'append'
// of 'list' object is unsafe.", exactly as in transformers.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <ctime>

#include "chat/jinja_builtins.h"
#include "chat/jinja_unicode.h"

// GCC 12 at -O3 reports false -Wrestrict overlaps inside std::string concatenation (GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace pagoda::jinja {

// ---------------------------------------------------------------- argument helpers

Params::Params(std::string_view fn, CallArgs& args, std::initializer_list<const char*> names, bool allow_extra)
    : fn_(fn), values_(names.size()), given_(names.size(), false) {
  if (args.pos.size() > names.size() && !allow_extra) {
    eval_fail(std::string(fn) + "() takes at most " + std::to_string(names.size()) + " argument(s) (" +
              std::to_string(args.pos.size()) + " given)");
  }
  for (size_t i = 0; i < args.pos.size() && i < names.size(); ++i) {
    values_[i] = args.pos[i];
    given_[i] = true;
  }
  for (auto& [k, v] : args.kw) {
    size_t i = 0;
    for (const char* n : names) {
      if (k == n) break;
      ++i;
    }
    if (i == names.size()) {
      if (allow_extra) continue;
      eval_fail(std::string(fn) + "() got an unexpected keyword argument '" + k + "'");
    }
    if (given_[i]) eval_fail(std::string(fn) + "() got multiple values for argument '" + k + "'");
    values_[i] = v;
    given_[i] = true;
  }
}

int64_t Params::get_int(size_t i, int64_t dflt) const {
  if (!get(i)) return dflt;
  return require_int(values_[i], std::string(fn_) + " argument");
}

int64_t require_int(const Value& v, std::string_view what) {
  if (v.is_integral()) return v.as_int();
  if (v.is_undefined()) eval_fail(v.undefined_hint());
  eval_fail("'" + type_name(v) + "' object cannot be interpreted as an integer (" + std::string(what) + ")");
}

const std::string& require_str(const Value& v, std::string_view what) {
  if (v.is_string()) return v.as_string();
  if (v.is_undefined()) eval_fail(v.undefined_hint());
  eval_fail(std::string(what) + " must be str, not " + type_name(v));
}

int64_t py_len(const Value& v) {
  switch (v.type()) {
    case Value::Type::kString: return static_cast<int64_t>(code_point_count(v.as_string()));
    case Value::Type::kList:
      if (v.as_list().kind == ListObj::Kind::kGenerator) break;
      return static_cast<int64_t>(v.as_list().items.size());
    case Value::Type::kDict:
      if (v.is_namespace()) break;
      return static_cast<int64_t>(v.as_dict().items.size());
    case Value::Type::kUndefined: return 0;
    case Value::Type::kLoop: return static_cast<int64_t>(v.as_loop().items->items.size());
    default: break;
  }
  eval_fail("object of type '" + type_name(v) + "' has no len()");
}

bool parse_py_int(std::string_view s, int base, int64_t& out) {
  std::string_view t = str_strip(s, nullptr, true, true);
  bool neg = false;
  if (!t.empty() && (t[0] == '+' || t[0] == '-')) {
    neg = t[0] == '-';
    t.remove_prefix(1);
  }
  if (base == 0 || base == 16 || base == 8 || base == 2) {
    if (t.size() > 2 && t[0] == '0') {
      const char p = t[1] | 0x20;
      const int b = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
      if (b != 0 && (base == 0 || base == b)) {
        base = b;
        t.remove_prefix(2);
        if (!t.empty() && t[0] == '_') t.remove_prefix(1);
      }
    }
    if (base == 0) base = 10;
  }
  if (base < 2 || base > 36 || t.empty()) return false;
  __int128 v = 0;
  bool prev_underscore = true;
  for (char c : t) {
    if (c == '_') {
      if (prev_underscore) return false;
      prev_underscore = true;
      continue;
    }
    prev_underscore = false;
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') {
      d = (c | 0x20) - 'a' + 10;
    } else {
      return false;
    }
    if (d >= base) return false;
    v = v * base + d;
    if (v > (static_cast<__int128>(1) << 63)) return false;
  }
  if (prev_underscore) return false;
  if (neg) v = -v;
  if (v > INT64_MAX || v < INT64_MIN) return false;
  out = static_cast<int64_t>(v);
  return true;
}

bool parse_py_float(std::string_view s, double& out) {
  std::string t(str_strip(s, nullptr, true, true));
  // Only the short spellings of inf / nan need case folding (and long inputs must stay O(n) cheap).
  std::string lower = t.size() <= 10 ? str_lower(t) : std::string();
  std::string_view body = lower;
  bool neg = false;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    neg = body[0] == '-';
    body.remove_prefix(1);
  }
  if (body == "inf" || body == "infinity") {
    out = neg ? -INFINITY : INFINITY;
    return true;
  }
  if (body == "nan") {
    out = NAN;
    return true;
  }
  // digits with single underscores between digits, optional fraction and exponent
  std::string clean;
  char prev = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c == '_') {
      if (!(prev >= '0' && prev <= '9') || i + 1 >= t.size() || !(t[i + 1] >= '0' && t[i + 1] <= '9')) return false;
    } else {
      if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')) return false;
      clean += c;
    }
    prev = c;
  }
  if (clean.empty()) return false;
  const char* begin = clean.c_str();
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(begin, &end);
  if (end != begin + clean.size()) return false;
  bool has_digit = false;
  for (char c : clean) has_digit |= (c >= '0' && c <= '9');
  if (!has_digit) return false;
  out = d;
  return true;
}

// ---------------------------------------------------------------- globals

namespace {

class Builtin final : public CallableObj {
 public:
  using Fn = Value (*)(Interpreter&, CallArgs&);
  Builtin(const char* name, Fn fn) : name_(name), fn_(fn) {}
  Value call(Interpreter& in, CallArgs& args, int) override { return fn_(in, args); }
  std::string repr() const override { return std::string("<built-in function ") + name_ + ">"; }

 private:
  const char* name_;
  Fn fn_;
};

Value g_range(Interpreter& in, CallArgs& a) {
  if (!a.kw.empty()) eval_fail("range() takes no keyword arguments");
  if (a.pos.empty() || a.pos.size() > 3)
    eval_fail("range expected at most 3 arguments, got " + std::to_string(a.pos.size()));
  int64_t start = 0, stop, step = 1;
  auto as_int = [](const Value& v) {
    if (v.is_integral()) return v.as_int();
    if (v.is_undefined()) eval_fail(v.undefined_hint());
    eval_fail("'" + type_name(v) + "' object cannot be interpreted as an integer");
  };
  if (a.pos.size() == 1) {
    stop = as_int(a.pos[0]);
  } else {
    start = as_int(a.pos[0]);
    stop = as_int(a.pos[1]);
    if (a.pos.size() == 3) step = as_int(a.pos[2]);
  }
  if (step == 0) eval_fail("range() arg 3 must not be zero");
  __int128 n = 0;
  if (step > 0 && stop > start) n = (static_cast<__int128>(stop) - start + step - 1) / step;
  if (step < 0 && stop < start) n = (static_cast<__int128>(start) - stop - step - 1) / (-static_cast<__int128>(step));
  // jinja2.sandbox.MAX_RANGE
  if (n > 100000) eval_fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  std::vector<Value> items;
  items.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) items.push_back(Value::integer(start + i * step));
  Value v = in.make_list(std::move(items), ListObj::Kind::kRange);
  ListObj& l = v.mutable_list();
  l.range_start = start;
  l.range_stop = stop;
  l.range_step = step;
  return v;
}

void fill_dict(Interpreter& in, DictObj& d, CallArgs& a, const char* fn, bool check_names) {
  if (a.pos.size() > 1)
    eval_fail(std::string(fn) + " expected at most 1 argument, got " + std::to_string(a.pos.size()));
  auto check = [&](const Value& k) {
    if (check_names && k.is_string() && !k.as_string().empty() && k.as_string()[0] == '_') {
      eval_fail("Chat templates cannot store underscore-prefixed attributes on a namespace, but got " + repr(k) +
                ". Please rename the attribute.");
    }
  };
  try {
    if (!a.pos.empty()) {
      const Value& src = a.pos[0];
      if (src.is_dict() || src.is_namespace()) {
        for (const auto& [k, v] : src.as_dict().items) {
          check(k);
          d.set(k, v);
        }
      } else {
        for (const Value& item : in.iterate(src)) {
          std::vector<Value> pair = in.iterate(item);
          if (pair.size() != 2) {
            eval_fail("dictionary update sequence element has length " + std::to_string(pair.size()) +
                      "; 2 is required");
          }
          hash_key(pair[0]);
          check(pair[0]);
          d.set(pair[0], pair[1]);
        }
      }
    }
    for (auto& [k, v] : a.kw) {
      const Value key = Value::string(k);
      check(key);
      d.set(key, v);
    }
  } catch (const Error& e) {
    eval_fail(e.what());
  }
}

Value g_dict(Interpreter& in, CallArgs& a) {
  auto d = std::make_shared<DictObj>();
  fill_dict(in, *d, a, "dict", false);
  in.charge(d->items.size());
  return Value::dict(std::move(d));
}

Value g_namespace(Interpreter& in, CallArgs& a) {
  Value ns = in.make_namespace();
  fill_dict(in, ns.mutable_dict(), a, "namespace", true);
  return ns;
}

Value g_raise_exception(Interpreter&, CallArgs& a) {
  Params p("raise_exception", a, {"message"});
  if (!p.get(0)) eval_fail("raise_exception() missing 1 required positional argument: 'message'");
  throw EvalError{to_str(*p.get(0)), true};
}

Value g_strftime_now(Interpreter& in, CallArgs& a) {
  Params p("strftime_now", a, {"format"});
  if (!p.get(0)) eval_fail("strftime_now() missing 1 required positional argument: 'format'");
  const std::string& fmt = require_str(*p.get(0), "strftime format");
  if (fmt.size() > 4096) eval_fail("strftime format too long");
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  std::string out(fmt.size() * 8 + 64, '\0');
  const size_t n = std::strftime(out.data(), out.size(), fmt.c_str(), &tm);
  out.resize(n);
  return in.make_string(std::move(out));
}

class Joiner final : public CallableObj {
 public:
  explicit Joiner(std::string sep) : sep_(std::move(sep)) {}
  Value call(Interpreter&, CallArgs&, int) override {
    if (!used_) {
      used_ = true;
      return Value::string("");
    }
    return Value::string(sep_);
  }
  std::string repr() const override { return "<jinja2.utils.Joiner object>"; }

 private:
  std::string sep_;
  bool used_ = false;
};

Value g_joiner(Interpreter&, CallArgs& a) {
  Params p("joiner", a, {"sep"});
  return Value::callable(std::make_shared<Joiner>(p.get(0) ? to_str(*p.get(0)) : ", "));
}

struct Global {
  const char* name;
  Value value;
};

const std::vector<Global>& globals() {
  static const std::vector<Global> g = {
      {"range", Value::callable(std::make_shared<Builtin>("range", g_range))},
      {"dict", Value::callable(std::make_shared<Builtin>("dict", g_dict))},
      {"namespace", Value::callable(std::make_shared<Builtin>("namespace", g_namespace))},
      {"raise_exception", Value::callable(std::make_shared<Builtin>("raise_exception", g_raise_exception))},
      {"strftime_now", Value::callable(std::make_shared<Builtin>("strftime_now", g_strftime_now))},
      {"joiner", Value::callable(std::make_shared<Builtin>("joiner", g_joiner))},
  };
  return g;
}

// ---------------------------------------------------------------- str methods

// Code point index <-> byte offset helpers (ASCII strings take the identity path).
struct Indexed {
  explicit Indexed(const std::string& s) : s(s), ascii(is_ascii(s)) {
    if (!ascii) {
      for (size_t pos = 0; pos < s.size();) {
        offsets.push_back(pos);
        decode_utf8(s, pos);
      }
      offsets.push_back(s.size());
    }
  }
  int64_t length() const { return ascii ? static_cast<int64_t>(s.size()) : static_cast<int64_t>(offsets.size()) - 1; }
  size_t byte(int64_t cp) const { return ascii ? static_cast<size_t>(cp) : offsets[cp]; }
  int64_t cp(size_t byte_off) const {
    if (ascii) return static_cast<int64_t>(byte_off);
    return std::lower_bound(offsets.begin(), offsets.end(), byte_off) - offsets.begin();
  }
  // Python's start/end argument normalisation for find/count/startswith.
  void range(const Value* start_v, const Value* end_v, int64_t& start, int64_t& end) const {
    const int64_t n = length();
    start = 0;
    end = n;
    if (start_v && !start_v->is_none()) start = require_int(*start_v, "start");
    if (end_v && !end_v->is_none()) end = require_int(*end_v, "end");
    if (start < 0) start = std::max<int64_t>(0, start + n);
    if (end < 0) end = std::max<int64_t>(0, end + n);
    end = std::min(end, n);
  }
  const std::string& s;
  bool ascii;
  std::vector<size_t> offsets;
};

std::vector<std::string> whitespace_split(const std::string& s, int64_t maxsplit, bool from_right) {
  std::vector<std::pair<size_t, size_t>> words;  // [begin, end) byte ranges
  for (size_t pos = 0; pos < s.size();) {
    size_t p = pos;
    if (py_isspace(decode_utf8(s, p))) {
      pos = p;
      continue;
    }
    const size_t begin = pos;
    size_t end = p;
    while (end < s.size()) {
      size_t q = end;
      if (py_isspace(decode_utf8(s, q))) break;
      end = q;
    }
    words.emplace_back(begin, end);
    pos = end;
  }
  std::vector<std::string> out;
  if (maxsplit < 0 || static_cast<size_t>(maxsplit) >= words.size()) {
    for (const auto& [b, e] : words) out.push_back(s.substr(b, e - b));
    return out;
  }
  if (!from_right) {
    for (int64_t i = 0; i < maxsplit; ++i) out.push_back(s.substr(words[i].first, words[i].second - words[i].first));
    // The remainder keeps its trailing whitespace but not its leading whitespace.
    std::string rest = s.substr(words[maxsplit].first);
    out.push_back(std::string(str_strip(rest, nullptr, false, false)));
    return out;
  }
  const size_t keep = words.size() - static_cast<size_t>(maxsplit);
  out.push_back(s.substr(0, words[keep - 1].second));
  for (size_t i = keep; i < words.size(); ++i)
    out.push_back(s.substr(words[i].first, words[i].second - words[i].first));
  return out;
}

Value str_list(Interpreter& in, std::vector<std::string> parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (auto& p : parts) items.push_back(Value::string(std::move(p)));
  return in.make_list(std::move(items));
}

Value pad(Interpreter& in, const std::string& s, CallArgs& a, const char* fn, int align) {
  Params p(fn, a, {"width", "fillchar"});
  if (!p.get(0)) eval_fail(std::string(fn) + "() takes at least 1 argument (0 given)");
  const int64_t width = require_int(*p.get(0), "width");
  std::string fill = " ";
  if (p.get(1)) {
    fill = require_str(*p.get(1), "fillchar");
    if (code_point_count(fill) != 1) eval_fail("The fill character must be exactly one character long");
  }
  const int64_t len = static_cast<int64_t>(code_point_count(s));
  if (width <= len) return Value::string(s);
  in.check_string_size(static_cast<size_t>(width) * fill.size());
  const int64_t marg = width - len;
  int64_t left = 0;
  if (align < 0) {
    left = 0;
  } else if (align > 0) {
    left = marg;
  } else {
    left = marg / 2 + (marg & width & 1);
  }
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s;
  for (int64_t i = 0; i < marg - left; ++i) out += fill;
  return in.make_string(std::move(out));
}

bool affix_match(const std::string& s, const Value& affix, const Value* start_v, const Value* end_v, bool suffix) {
  Indexed idx(s);
  int64_t start, end;
  idx.range(start_v, end_v, start, end);
  auto one = [&](const Value& a) {
    const std::string& x = require_str(a, suffix ? "endswith arg" : "startswith arg");
    if (start > idx.length() || end < start) return false;
    const std::string_view window(s.data() + idx.byte(start), idx.byte(end) - idx.byte(start));
    if (x.size() > window.size()) return false;
    return suffix ? window.substr(window.size() - x.size()) == x : window.substr(0, x.size()) == x;
  };
  if (affix.is_list() && affix.as_list().kind == ListObj::Kind::kTuple) {
    for (const Value& a : affix.as_list().items) {
      if (one(a)) return true;
    }
    return false;
  }
  if (!affix.is_string()) {
    eval_fail(std::string(suffix ? "endswith" : "startswith") + " first arg must be str or a tuple of str, not " +
              type_name(affix));
  }
  return one(affix);
}

Value str_method(Interpreter& in, const std::string& s, std::string_view name, CallArgs& a) {
  const std::string fn(name);
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize" || name == "swapcase" ||
      name == "casefold") {
    Params p(fn, a, {});
    if (name == "upper") return in.make_string(str_upper(s));
    if (name == "title") return in.make_string(str_title(s));
    if (name == "capitalize") return in.make_string(str_capitalize(s));
    if (name == "swapcase") return in.make_string(str_swapcase(s));
    return in.make_string(str_lower(s));
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    Params p(fn, a, {"chars"});
    const Value* chars = p.get(0);
    const std::string* set = chars && !chars->is_none() ? &require_str(*chars, fn + " arg") : nullptr;
    return in.make_string(std::string(str_strip(s, set, name != "rstrip", name != "lstrip")));
  }
  if (name == "split" || name == "rsplit") {
    Params p(fn, a, {"sep", "maxsplit"});
    const int64_t maxsplit = p.get_int(1, -1);
    const Value* sep_v = p.get(0);
    if (!sep_v || sep_v->is_none()) return str_list(in, whitespace_split(s, maxsplit, name == "rsplit"));
    if (!sep_v->is_string()) eval_fail("must be str or None, not " + type_name(*sep_v));
    const std::string& sep = sep_v->as_string();
    if (sep.empty()) eval_fail("empty separator");
    std::vector<std::string> parts;
    if (name == "split") {
      size_t start = 0;
      int64_t splits = 0;
      while (maxsplit < 0 || splits < maxsplit) {
        const size_t at = s.find(sep, start);
        if (at == std::string::npos) break;
        parts.push_back(s.substr(start, at - start));
        start = at + sep.size();
        ++splits;
      }
      parts.push_back(s.substr(start));
    } else {
      size_t end = s.size();
      int64_t splits = 0;
      std::vector<std::string> rev;
      while (maxsplit < 0 || splits < maxsplit) {
        if (end < sep.size()) break;
        const size_t at = s.rfind(sep, end - sep.size());
        if (at == std::string::npos) break;
        rev.push_back(s.substr(at + sep.size(), end - at - sep.size()));
        end = at;
        ++splits;
      }
      rev.push_back(s.substr(0, end));
      parts.assign(rev.rbegin(), rev.rend());
    }
    return str_list(in, std::move(parts));
  }
  if (name == "splitlines") {
    Params p(fn, a, {"keepends"});
    const bool keep = p.get_bool(0, false);
    std::vector<std::string> lines;
    std::string cur;
    for (size_t pos = 0; pos < s.size();) {
      const size_t start = pos;
      const char32_t c = decode_utf8(s, pos);
      const bool nl = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
                      c == 0x85 || c == 0x2028 || c == 0x2029;
      if (nl) {
        if (c == '\r' && pos < s.size() && s[pos] == '\n') ++pos;
        if (keep) cur.append(s, start, pos - start);
        lines.push_back(std::move(cur));
        cur.clear();
      } else {
        cur.append(s, start, pos - start);
      }
    }
    if (!cur.empty()) lines.push_back(std::move(cur));
    return str_list(in, std::move(lines));
  }
  if (name == "startswith" || name == "endswith") {
    Params p(fn, a, {"prefix", "start", "end"});
    if (!p.get(0)) eval_fail(fn + "() takes at least 1 argument (0 given)");
    return Value::boolean(affix_match(s, *p.get(0), p.get(1), p.get(2), name == "endswith"));
  }
  if (name == "replace") {
    Params p(fn, a, {"old", "new", "count"});
    if (!p.get(0) || !p.get(1)) eval_fail("replace expected at least 2 arguments");
    const std::string& old = require_str(*p.get(0), "replace arg 1");
    const std::string& repl = require_str(*p.get(1), "replace arg 2");
    int64_t count = p.get_int(2, -1);
    std::string out;
    if (old.empty()) {
      // Inserts `repl` before every code point and at the end.
      const int64_t n = static_cast<int64_t>(code_point_count(s));
      const int64_t inserts = count < 0 ? n + 1 : std::min(count, n + 1);
      in.check_string_size(s.size() + static_cast<size_t>(inserts) * repl.size());
      int64_t done = 0;
      size_t pos = 0;
      while (pos < s.size()) {
        if (done < inserts) {
          out += repl;
          ++done;
        }
        const size_t start = pos;
        decode_utf8(s, pos);
        out.append(s, start, pos - start);
      }
      if (done < inserts) out += repl;
      return in.make_string(std::move(out));
    }
    size_t start = 0;
    while (count != 0) {
      const size_t at = s.find(old, start);
      if (at == std::string::npos) break;
      out.append(s, start, at - start);
      out += repl;
      in.check_string_size(out.size());
      start = at + old.size();
      if (count > 0) --count;
    }
    out.append(s, start, std::string::npos);
    return in.make_string(std::move(out));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    Params p(fn, a, {"sub", "start", "end"});
    if (!p.get(0)) eval_fail(fn + "() takes at least 1 argument (0 given)");
    const std::string& sub = require_str(*p.get(0), fn + " arg");
    Indexed idx(s);
    int64_t start, end;
    idx.range(p.get(1), p.get(2), start, end);
    if (name == "count") {
      if (start > idx.length() || end < start) return Value::integer(0);
      const std::string_view w(s.data() + idx.byte(start), idx.byte(end) - idx.byte(start));
      if (sub.empty()) return Value::integer(static_cast<int64_t>(code_point_count(w)) + 1);
      int64_t n = 0;
      for (size_t at = w.find(sub); at != std::string_view::npos; at = w.find(sub, at + sub.size())) ++n;
      return Value::integer(n);
    }
    int64_t found = -1;
    if (start <= idx.length() && end >= start) {
      const size_t b = idx.byte(start), e = idx.byte(end);
      const std::string_view w(s.data() + b, e - b);
      const size_t at = (name == "find" || name == "index") ? w.find(sub) : w.rfind(sub);
      if (at != std::string_view::npos) found = idx.cp(b + at);
    }
    if (found < 0 && (name == "index" || name == "rindex")) eval_fail("substring not found");
    return Value::integer(found);
  }
  if (name == "join") {
    Params p(fn, a, {"iterable"});
    if (!p.get(0)) eval_fail("str.join() takes exactly one argument (0 given)");
    std::string out;
    size_t i = 0;
    for (const Value& item : in.iterate(*p.get(0))) {
      if (!item.is_string()) {
        eval_fail("sequence item " + std::to_string(i) + ": expected str instance, " + type_name(item) + " found");
      }
      if (i++) out += s;
      out += item.as_string();
      in.check_string_size(out.size());
    }
    return in.make_string(std::move(out));
  }
  if (name == "center") return pad(in, s, a, "center", 0);
  if (name == "ljust") return pad(in, s, a, "ljust", -1);
  if (name == "rjust") return pad(in, s, a, "rjust", 1);
  if (name == "zfill") {
    Params p(fn, a, {"width"});
    if (!p.get(0)) eval_fail("zfill() takes exactly one argument (0 given)");
    const int64_t width = require_int(*p.get(0), "width");
    const int64_t len = static_cast<int64_t>(code_point_count(s));
    if (width <= len) return Value::string(s);
    in.check_string_size(static_cast<size_t>(width));
    std::string out = s;
    const size_t at = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
    out.insert(at, static_cast<size_t>(width - len), '0');
    return in.make_string(std::move(out));
  }
  if (name == "partition" || name == "rpartition") {
    Params p(fn, a, {"sep"});
    if (!p.get(0)) eval_fail(fn + "() takes exactly one argument (0 given)");
    const std::string& sep = require_str(*p.get(0), "separator");
    if (sep.empty()) eval_fail("empty separator");
    const size_t at = name == "partition" ? s.find(sep) : s.rfind(sep);
    std::vector<Value> parts;
    if (at == std::string::npos) {
      if (name == "partition") {
        parts = {Value::string(s), Value::string(""), Value::string("")};
      } else {
        parts = {Value::string(""), Value::string(""), Value::string(s)};
      }
    } else {
      parts = {Value::string(s.substr(0, at)), Value::string(sep), Value::string(s.substr(at + sep.size()))};
    }
    return in.make_list(std::move(parts), ListObj::Kind::kTuple);
  }
  if (name == "removeprefix" || name == "removesuffix") {
    Params p(fn, a, {"affix"});
    if (!p.get(0)) eval_fail(fn + "() takes exactly one argument (0 given)");
    const std::string& x = require_str(*p.get(0), fn + " arg");
    if (name == "removeprefix" && s.compare(0, x.size(), x) == 0) return in.make_string(s.substr(x.size()));
    if (name == "removesuffix" && !x.empty() && s.size() >= x.size() &&
        s.compare(s.size() - x.size(), x.size(), x) == 0) {
      return in.make_string(s.substr(0, s.size() - x.size()));
    }
    return Value::string(s);
  }
  if (name.substr(0, 2) == "is") {
    Params p(fn, a, {});
    if (name == "isascii") return Value::boolean(is_ascii(s));
    if (s.empty()) return Value::boolean(false);
    bool all = true, upper = false, lower = false;
    for (size_t pos = 0; pos < s.size();) {
      const char32_t c = decode_utf8(s, pos);
      bool ok = true;
      if (name == "isalpha") ok = py_isalpha(c);
      if (name == "isalnum") ok = py_isalnum(c);
      if (name == "isdigit" || name == "isdecimal" || name == "isnumeric") ok = py_isdigit(c);
      if (name == "isspace") ok = py_isspace(c);
      upper |= py_isupper(c);
      lower |= py_islower(c);
      all &= ok;
    }
    if (name == "isupper") return Value::boolean(upper && !lower);
    if (name == "islower") return Value::boolean(lower && !upper);
    return Value::boolean(all);
  }
  if (name == "format") return in.make_string(str_format(in, s, a));
  eval_fail("'str' object has no attribute '" + fn + "'");
}

constexpr std::string_view kStrMethods[] = {
    "capitalize", "casefold",   "center",  "count",     "endswith",   "find",      "format",       "index",
    "isalnum",    "isalpha",    "isascii", "isdecimal", "isdigit",    "islower",   "isnumeric",    "isspace",
    "isupper",    "join",       "ljust",   "lower",     "lstrip",     "partition", "removeprefix", "removesuffix",
    "replace",    "rfind",      "rindex",  "rjust",     "rpartition", "rsplit",    "rstrip",       "split",
    "splitlines", "startswith", "strip",   "swapcase",  "title",      "upper",     "zfill"};
constexpr std::string_view kListMethods[] = {"count", "index", "copy"};
constexpr std::string_view kTupleMethods[] = {"count", "index"};
constexpr std::string_view kListUnsafe[] = {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"};
constexpr std::string_view kDictMethods[] = {"get", "items", "keys", "values", "copy"};
constexpr std::string_view kDictUnsafe[] = {"clear", "pop", "popitem", "setdefault", "update"};

template <size_t N>
bool in_set(const std::string_view (&set)[N], std::string_view name) {
  return std::find(std::begin(set), std::end(set), name) != std::end(set);
}

}  // namespace

const Value* find_global(std::string_view name) {
  for (const auto& g : globals()) {
    if (name == g.name) return &g.value;
  }
  return nullptr;
}

MethodKind find_method(const Value& self, std::string_view name) {
  if (self.is_string()) return in_set(kStrMethods, name) ? MethodKind::kSafe : MethodKind::kNone;
  if (self.is_dict()) {
    if (in_set(kDictMethods, name)) return MethodKind::kSafe;
    return in_set(kDictUnsafe, name) ? MethodKind::kUnsafe : MethodKind::kNone;
  }
  if (self.is_list()) {
    const auto kind = self.as_list().kind;
    if (kind == ListObj::Kind::kList) {
      if (in_set(kListMethods, name)) return MethodKind::kSafe;
      return in_set(kListUnsafe, name) ? MethodKind::kUnsafe : MethodKind::kNone;
    }
    if (kind == ListObj::Kind::kTuple || kind == ListObj::Kind::kRange) {
      return in_set(kTupleMethods, name) ? MethodKind::kSafe : MethodKind::kNone;
    }
  }
  return MethodKind::kNone;
}

Value call_method(Interpreter& in, const Value& self, std::string_view name, CallArgs& a) {
  const std::string fn(name);
  if (self.is_string()) return str_method(in, self.as_string(), name, a);
  if (self.is_dict()) {
    const DictObj& d = self.as_dict();
    if (name == "get") {
      Params p("get", a, {"key", "default"});
      if (!p.get(0)) eval_fail("get expected at least 1 argument, got 0");
      try {
        hash_key(*p.get(0));
      } catch (const Error& e) {
        eval_fail(e.what());
      }
      if (const Value* v = d.find(*p.get(0))) return *v;
      return p.get_or(1, Value::none());
    }
    Params p(fn, a, {});
    if (name == "copy") {
      auto c = std::make_shared<DictObj>(d);
      c->is_namespace = false;
      return Value::dict(std::move(c));
    }
    std::vector<Value> out;
    out.reserve(d.items.size());
    for (const auto& [k, v] : d.items) {
      if (name == "keys") {
        out.push_back(k);
      } else if (name == "values") {
        out.push_back(v);
      } else {
        out.push_back(Value::list({k, v}, ListObj::Kind::kTuple));
      }
    }
    const auto kind = name == "keys"     ? ListObj::Kind::kKeysView
                      : name == "values" ? ListObj::Kind::kValuesView
                                         : ListObj::Kind::kItemsView;
    return in.make_list(std::move(out), kind);
  }
  if (self.is_list()) {
    const auto& items = self.as_list().items;
    if (name == "copy") {
      Params p(fn, a, {});
      return in.make_list(items);
    }
    if (name == "count") {
      Params p(fn, a, {"value"});
      if (!p.get(0)) eval_fail("count() takes exactly one argument (0 given)");
      int64_t n = 0;
      for (const Value& v : items) n += equals(v, *p.get(0)) ? 1 : 0;
      return Value::integer(n);
    }
    if (name == "index") {
      Params p(fn, a, {"value", "start", "stop"});
      if (!p.get(0)) eval_fail("index expected at least 1 argument, got 0");
      const int64_t n = static_cast<int64_t>(items.size());
      int64_t start = p.get_int(1, 0), stop = p.get_int(2, n);
      if (start < 0) start = std::max<int64_t>(0, start + n);
      if (stop < 0) stop = std::max<int64_t>(0, stop + n);
      for (int64_t i = start; i < std::min(stop, n); ++i) {
        if (equals(items[i], *p.get(0))) return Value::integer(i);
      }
      eval_fail(repr(*p.get(0)) + " is not in " + type_name(self));
    }
  }
  eval_fail("'" + type_name(self) + "' object has no attribute '" + fn + "'");
}

}  // namespace pagoda::jinja
