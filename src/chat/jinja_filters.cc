// jinja2's builtin filters (jinja2/filters.py) plus Hugging Face's tojson override
// (transformers/utils/chat_template_utils.py: json.dumps(x, ensure_ascii=False, indent=indent,
// separators=separators, sort_keys=sort_keys)). Filters that return generators in jinja2 (map,
// select, reject, unique, items, reverse, batch, slice) return generator-kind lists here, which are
// truthy, have no len() and are consumed by iteration, as in Python.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "chat/jinja_builtins.h"
#include "chat/jinja_unicode.h"

// GCC 12 at -O3 reports false -Wrestrict overlaps inside std::string concatenation (GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace pagoda::jinja {

namespace {

using Kind = ListObj::Kind;

Value str_value(Interpreter& in, std::string s) { return in.make_string(std::move(s)); }

std::string soft_str(const Value& v) { return to_str(v); }

Value lower_if_str(const Value& v) { return v.is_string() ? Value::string(str_lower(v.as_string())) : v; }

// ---- string filters ----
Value f_upper(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("upper", a, {});
  return str_value(in, str_upper(soft_str(v)));
}
Value f_lower(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("lower", a, {});
  return str_value(in, str_lower(soft_str(v)));
}
Value f_capitalize(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("capitalize", a, {});
  return str_value(in, str_capitalize(soft_str(v)));
}
Value f_title(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("title", a, {});
  // jinja2: split on ([-\s({\[<]+), then item[0].upper() + item[1:].lower() for each piece.
  const std::string s = soft_str(v);
  std::string out;
  bool at_start = true;
  for (size_t pos = 0; pos < s.size();) {
    const char32_t c = decode_utf8(s, pos);
    const bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c);
    if (sep) {
      encode_utf8(c, out);
      at_start = true;
    } else {
      encode_utf8(at_start ? py_toupper(c) : py_tolower(c), out);
      at_start = false;
    }
  }
  return str_value(in, std::move(out));
}
Value f_trim(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("trim", a, {"chars"});
  const std::string s = soft_str(v);
  const Value* chars = p.get(0);
  if (chars && !chars->is_none())
    return str_value(in, std::string(str_strip(s, &require_str(*chars, "trim"), true, true)));
  return str_value(in, std::string(str_strip(s, nullptr, true, true)));
}
Value f_replace(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("replace", a, {"old", "new", "count"});
  if (!p.get(0) || !p.get(1)) eval_fail("do_replace() missing required arguments");
  CallArgs margs;
  margs.pos = {Value::string(soft_str(*p.get(0))), Value::string(soft_str(*p.get(1)))};
  if (p.get(2) && !p.get(2)->is_none()) margs.pos.push_back(*p.get(2));
  return call_method(in, Value::string(soft_str(v)), "replace", margs);
}
Value f_center(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("center", a, {"width"});
  CallArgs margs;
  margs.pos = {Value::integer(p.get_int(0, 80))};
  return call_method(in, Value::string(soft_str(v)), "center", margs);
}
Value f_indent(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("indent", a, {"width", "first", "blank"});
  std::string indention;
  const Value width = p.get_or(0, Value::integer(4));
  if (width.is_string()) {
    indention = width.as_string();
  } else {
    const int64_t n = require_int(width, "indent width");
    in.check_string_size(static_cast<size_t>(std::max<int64_t>(0, n)));
    indention.assign(static_cast<size_t>(std::max<int64_t>(0, n)), ' ');
  }
  const bool first = p.get_bool(1, false), blank = p.get_bool(2, false);
  std::string s = soft_str(v) + "\n";
  // str.splitlines() boundaries: \n \r \r\n \v \f \x1c \x1d \x1e \x85 \u2028 \u2029
  std::vector<std::string> lines;
  {
    std::string cur;
    for (size_t pos = 0; pos < s.size();) {
      const size_t start = pos;
      const char32_t c = decode_utf8(s, pos);
      const bool nl = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
                      c == 0x85 || c == 0x2028 || c == 0x2029;
      if (nl) {
        if (c == '\r' && pos < s.size() && s[pos] == '\n') ++pos;
        lines.push_back(std::move(cur));
        cur.clear();
      } else {
        cur.append(s, start, pos - start);
      }
    }
    if (!cur.empty()) lines.push_back(std::move(cur));
  }
  std::string rv;
  const uint64_t estimate = s.size() + lines.size() * (indention.size() + 1);
  in.check_string_size(estimate);
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) rv += "\n" + indention;
      rv += lines[i];
    }
  } else {
    rv = lines.empty() ? std::string() : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += "\n";
      if (!lines[i].empty()) rv += indention;
      rv += lines[i];
    }
  }
  if (first) rv = indention + rv;
  return str_value(in, std::move(rv));
}
Value f_wordcount(Interpreter&, const Value& v, CallArgs& a) {
  Params p("wordcount", a, {});
  const std::string s = soft_str(v);
  int64_t n = 0;
  bool in_word = false;
  for (size_t pos = 0; pos < s.size();) {
    const char32_t c = decode_utf8(s, pos);
    const bool w = c == '_' || py_isalnum(c);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::integer(n);
}
Value f_truncate(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("truncate", a, {"length", "killwords", "end", "leeway"});
  const int64_t length = p.get_int(0, 255);
  const bool killwords = p.get_bool(1, false);
  const std::string end = p.get(2) ? soft_str(*p.get(2)) : "...";
  const int64_t leeway = p.get(3) && !p.get(3)->is_none() ? require_int(*p.get(3), "leeway") : 5;
  const int64_t end_len = static_cast<int64_t>(code_point_count(end));
  if (length < end_len) eval_fail("expected length >= " + std::to_string(end_len) + ", got " + std::to_string(length));
  if (leeway < 0) eval_fail("expected leeway >= 0, got " + std::to_string(leeway));
  const std::string s = soft_str(v);
  const std::vector<char32_t> cps = to_code_points(s);
  if (static_cast<int64_t>(cps.size()) <= length + leeway) return str_value(in, s);
  const size_t keep = static_cast<size_t>(length - end_len);
  std::string head = from_code_points(cps.data(), cps.data() + std::min(keep, cps.size()));
  if (!killwords) {
    const size_t sp = head.rfind(' ');
    if (sp != std::string::npos) head.resize(sp);
  }
  return str_value(in, head + end);
}
Value f_striptags(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("striptags", a, {});
  std::string s = soft_str(v);
  for (size_t start; (start = s.find("<!--")) != std::string::npos;) {
    const size_t end = s.find("-->", start);
    if (end == std::string::npos) break;
    s.erase(start, end + 3 - start);
  }
  for (size_t start; (start = s.find('<')) != std::string::npos;) {
    const size_t end = s.find('>', start);
    if (end == std::string::npos) break;
    s.erase(start, end + 1 - start);
  }
  CallArgs none;
  const Value words = call_method(in, Value::string(s), "split", none);
  std::string out;
  for (const Value& w : words.as_list().items) out += (out.empty() ? "" : " ") + w.as_string();
  // Markup.unescape(): the common entities.
  static const std::pair<const char*, const char*> kEntities[] = {
      {"&amp;", "&"},  {"&lt;", "<"},  {"&gt;", ">"},         {"&quot;", "\""},
      {"&#34;", "\""}, {"&#39;", "'"}, {"&nbsp;", "\xC2\xA0"}};
  std::string res;
  for (size_t i = 0; i < out.size();) {
    bool done = false;
    if (out[i] == '&') {
      for (const auto& [ent, rep] : kEntities) {
        if (out.compare(i, std::strlen(ent), ent) == 0) {
          res += rep;
          i += std::strlen(ent);
          done = true;
          break;
        }
      }
    }
    if (!done) res += out[i++];
  }
  return str_value(in, std::move(res));
}
std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}
Value f_escape(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("escape", a, {});
  return str_value(in, html_escape(soft_str(v)));
}
Value f_safe(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("safe", a, {});
  return v.is_string() ? v : str_value(in, soft_str(v));
}
Value f_string(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("string", a, {});
  return v.is_string() ? v : str_value(in, soft_str(v));
}
Value f_format(Interpreter& in, const Value& v, CallArgs& a) {
  if (!a.pos.empty() && !a.kw.empty()) eval_fail("can't handle positional and keyword arguments at the same time");
  if (!a.kw.empty()) {
    auto d = std::make_shared<DictObj>();
    for (auto& [k, val] : a.kw) d->set(Value::string(k), val);
    const Value mapping = Value::dict(std::move(d));
    return str_value(in, percent_format(in, soft_str(v), {mapping}, &mapping));
  }
  return str_value(in, percent_format(in, soft_str(v), a.pos, nullptr));
}

// ---- numbers ----
Value f_abs(Interpreter&, const Value& v, CallArgs& a) {
  Params p("abs", a, {});
  if (v.is_integral()) {
    if (v.as_int() == INT64_MIN) eval_fail("integer overflow (values beyond 64 bits are not supported)");
    return Value::integer(std::llabs(v.as_int()));
  }
  if (v.is_float()) return Value::floating(std::fabs(v.as_float()));
  if (v.is_undefined()) eval_fail(v.undefined_hint());
  eval_fail("bad operand type for abs(): '" + type_name(v) + "'");
}
Value f_int(Interpreter&, const Value& v, CallArgs& a) {
  Params p("int", a, {"default", "base"});
  const Value dflt = p.get_or(0, Value::integer(0));
  const int64_t base = p.get_int(1, 10);
  if (v.is_undefined()) eval_fail(v.undefined_hint());
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.is_float()) {
    const double d = v.as_float();
    if (std::isnan(d) || std::isinf(d) || std::fabs(d) >= 9.2e18) return dflt;
    return Value::integer(static_cast<int64_t>(d));
  }
  if (v.is_string()) {
    int64_t out;
    if (parse_py_int(v.as_string(), static_cast<int>(base), out)) return Value::integer(out);
    double d;
    if (parse_py_float(v.as_string(), d) && !std::isnan(d) && !std::isinf(d) && std::fabs(d) < 9.2e18) {
      return Value::integer(static_cast<int64_t>(d));
    }
  }
  return dflt;
}
Value f_float(Interpreter&, const Value& v, CallArgs& a) {
  Params p("float", a, {"default"});
  const Value dflt = p.get_or(0, Value::floating(0.0));
  if (v.is_undefined()) eval_fail(v.undefined_hint());
  if (v.is_number()) return Value::floating(v.as_float());
  double d;
  if (v.is_string() && parse_py_float(v.as_string(), d)) return Value::floating(d);
  return dflt;
}
// Python's round(x, ndigits): correctly rounded (half-even on the exact binary value).
double py_round(double x, int64_t ndigits) {
  if (std::isnan(x) || std::isinf(x) || x == 0) return x;
  if (ndigits > 308) return x;
  if (ndigits < -308) return 0.0 * x;
  char buf[512];
  if (ndigits >= 0) {
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::min<int64_t>(ndigits, 340)), x);
    return std::strtod(buf, nullptr);
  }
  const double p = std::pow(10.0, static_cast<double>(-ndigits));
  const double y = x / p;
  double r = std::nearbyint(y);
  return r * p;
}
Value f_round(Interpreter&, const Value& v, CallArgs& a) {
  Params p("round", a, {"precision", "method"});
  const int64_t precision = p.get_int(0, 0);
  const std::string method = p.get(1) ? soft_str(*p.get(1)) : "common";
  if (method != "common" && method != "ceil" && method != "floor") eval_fail("method must be common, ceil or floor");
  if (v.is_undefined()) eval_fail(v.undefined_hint());
  if (!v.is_number()) eval_fail("type " + type_name(v) + " doesn't define __round__ method");
  if (method == "common") {
    if (v.is_integral()) {
      if (precision >= 0) return Value::integer(v.as_int());
      return Value::integer(static_cast<int64_t>(py_round(static_cast<double>(v.as_int()), precision)));
    }
    return Value::floating(py_round(v.as_float(), precision));
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.as_float() * scale;
  const double r = method == "ceil" ? std::ceil(x) : std::floor(x);
  return Value::floating(r / scale);
}

// ---- sequences ----
Value f_length(Interpreter&, const Value& v, CallArgs& a) {
  Params p("length", a, {});
  return Value::integer(py_len(v));
}
Value f_list(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("list", a, {});
  return in.make_list(in.iterate(v));
}
Value f_first(Interpreter&, const Value& v, CallArgs& a) {
  Params p("first", a, {});
  if (v.is_list()) {
    ListObj& l = v.mutable_list();
    const size_t start = l.kind == Kind::kGenerator ? l.consumed : 0;
    if (start >= l.items.size()) return Value::undefined("No first item, sequence was empty.");
    if (l.kind == Kind::kGenerator) ++l.consumed;
    return l.items[start];
  }
  if (v.is_string()) {
    if (v.as_string().empty()) return Value::undefined("No first item, sequence was empty.");
    size_t pos = 0;
    decode_utf8(v.as_string(), pos);
    return Value::string(v.as_string().substr(0, pos));
  }
  if (v.is_dict()) {
    if (v.as_dict().items.empty()) return Value::undefined("No first item, sequence was empty.");
    return v.as_dict().items.front().first;
  }
  if (v.is_undefined()) return Value::undefined("No first item, sequence was empty.");
  eval_fail("'" + type_name(v) + "' object is not iterable");
}
Value f_last(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("last", a, {});
  if (v.is_list() && v.as_list().kind == Kind::kGenerator) eval_fail("'generator' object is not reversible");
  if (v.is_undefined()) eval_fail(v.undefined_hint());
  std::vector<Value> items = in.iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}
Value f_join(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("join", a, {"d", "attribute"});
  const std::string d = p.get(0) ? soft_str(*p.get(0)) : "";
  const Value* attr = p.get(1);
  std::string out;
  bool first = true;
  for (const Value& item : in.iterate(v)) {
    if (!first) out += d;
    first = false;
    append_str(out, attr && !attr->is_none() ? get_attribute_path(in, item, *attr, nullptr) : item);
    in.check_string_size(out.size());
  }
  return str_value(in, std::move(out));
}
Value f_reverse(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("reverse", a, {});
  if (v.is_string()) {
    std::vector<char32_t> cps = to_code_points(v.as_string());
    std::reverse(cps.begin(), cps.end());
    return str_value(in, from_code_points(cps.data(), cps.data() + cps.size()));
  }
  std::vector<Value> items = in.iterate(v);
  std::reverse(items.begin(), items.end());
  return in.make_list(std::move(items), Kind::kGenerator);
}
Value f_items(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("items", a, {});
  if (v.is_undefined()) return in.make_list({}, Kind::kGenerator);
  if (!v.is_dict()) eval_fail("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, val] : v.as_dict().items) out.push_back(Value::list({k, val}, Kind::kTuple));
  return in.make_list(std::move(out), Kind::kGenerator);
}

// Sort key with jinja2's ignore_case postprocessing.
struct SortKeyed {
  Value key;
  Value item;
};
void sort_values(std::vector<SortKeyed>& v, bool reverse) {
  try {
    std::stable_sort(v.begin(), v.end(), [&](const SortKeyed& x, const SortKeyed& y) {
      return reverse ? less_than(y.key, x.key) : less_than(x.key, y.key);
    });
  } catch (const Error& e) {
    eval_fail(e.what());
  }
}
// Python's sorted(reverse=True) keeps equal elements in their original order.
void sort_values_stable_reverse(std::vector<SortKeyed>& v) {
  std::reverse(v.begin(), v.end());
  sort_values(v, false);
  std::reverse(v.begin(), v.end());
}
Value key_for(Interpreter& in, const Value& item, const Value* attribute, bool case_sensitive) {
  Value k = attribute && !attribute->is_none() ? get_attribute_path(in, item, *attribute, nullptr) : item;
  return case_sensitive ? k : lower_if_str(k);
}
Value f_sort(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("sort", a, {"reverse", "case_sensitive", "attribute"});
  const bool reverse = p.get_bool(0, false), cs = p.get_bool(1, false);
  const Value* attr = p.get(2);
  std::vector<SortKeyed> keyed;
  for (Value& item : in.iterate(v)) {
    if (attr && attr->is_string() && attr->as_string().find(',') != std::string::npos) {
      // make_multi_attrgetter: a list of keys compared in order
      std::vector<Value> keys;
      std::string s = attr->as_string();
      size_t start = 0;
      while (true) {
        const size_t comma = s.find(',', start);
        const Value part =
            Value::string(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        keys.push_back(key_for(in, item, &part, cs));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
      keyed.push_back({Value::list(std::move(keys)), item});
    } else {
      keyed.push_back({key_for(in, item, attr, cs), item});
    }
  }
  if (reverse) {
    sort_values_stable_reverse(keyed);
  } else {
    sort_values(keyed, false);
  }
  std::vector<Value> out;
  for (auto& k : keyed) out.push_back(std::move(k.item));
  return in.make_list(std::move(out));
}
Value f_dictsort(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("dictsort", a, {"case_sensitive", "by", "reverse"});
  const bool cs = p.get_bool(0, false), reverse = p.get_bool(2, false);
  const std::string by = p.get(1) ? soft_str(*p.get(1)) : "key";
  if (by != "key" && by != "value") eval_fail("You can only sort by either \"key\" or \"value\"");
  if (!v.is_dict()) eval_fail("'" + type_name(v) + "' object has no attribute 'items'");
  std::vector<SortKeyed> keyed;
  for (const auto& [k, val] : v.as_dict().items) {
    const Value& sk = by == "key" ? k : val;
    keyed.push_back({cs ? sk : lower_if_str(sk), Value::list({k, val}, Kind::kTuple)});
  }
  if (reverse) {
    sort_values_stable_reverse(keyed);
  } else {
    sort_values(keyed, false);
  }
  std::vector<Value> out;
  for (auto& k : keyed) out.push_back(std::move(k.item));
  return in.make_list(std::move(out));
}
Value f_unique(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("unique", a, {"case_sensitive", "attribute"});
  const bool cs = p.get_bool(0, false);
  const Value* attr = p.get(1);
  std::unordered_set<std::string> seen;
  std::vector<Value> out;
  for (Value& item : in.iterate(v)) {
    std::string key;
    try {
      key = hash_key(key_for(in, item, attr, cs));
    } catch (const Error& e) {
      eval_fail(e.what());
    }
    if (seen.insert(key).second) out.push_back(std::move(item));
  }
  return in.make_list(std::move(out), Kind::kGenerator);
}
Value min_max(Interpreter& in, const Value& v, CallArgs& a, bool is_max) {
  Params p(is_max ? "max" : "min", a, {"case_sensitive", "attribute"});
  const bool cs = p.get_bool(0, false);
  const Value* attr = p.get(1);
  std::vector<Value> items = in.iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  size_t best = 0;
  Value best_key = key_for(in, items[0], attr, cs);
  try {
    for (size_t i = 1; i < items.size(); ++i) {
      Value k = key_for(in, items[i], attr, cs);
      if (is_max ? less_than(best_key, k) : less_than(k, best_key)) {
        best = i;
        best_key = std::move(k);
      }
    }
  } catch (const Error& e) {
    eval_fail(e.what());
  }
  return items[best];
}
Value f_min(Interpreter& in, const Value& v, CallArgs& a) { return min_max(in, v, a, false); }
Value f_max(Interpreter& in, const Value& v, CallArgs& a) { return min_max(in, v, a, true); }
Value f_sum(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("sum", a, {"attribute", "start"});
  const Value* attr = p.get(0);
  Value total = p.get_or(1, Value::integer(0));
  if (total.is_string()) eval_fail("sum() can't sum strings [use ''.join(seq) instead]");
  for (const Value& item : in.iterate(v)) {
    total = in.binary_op(BinOp::kAdd, total,
                         attr && !attr->is_none() ? get_attribute_path(in, item, *attr, nullptr) : item);
  }
  return total;
}
Value f_batch(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("batch", a, {"linecount", "fill_with"});
  if (!p.get(0)) eval_fail("do_batch() missing 1 required positional argument: 'linecount'");
  const int64_t n = require_int(*p.get(0), "linecount");
  const Value* fill = p.get(1);
  std::vector<Value> out, cur;
  for (Value& item : in.iterate(v)) {
    if (static_cast<int64_t>(cur.size()) == n) {
      out.push_back(in.make_list(std::move(cur)));
      cur.clear();
    }
    cur.push_back(std::move(item));
  }
  if (!cur.empty()) {
    if (fill && !fill->is_none()) {
      while (static_cast<int64_t>(cur.size()) < n) cur.push_back(*fill);
    }
    out.push_back(in.make_list(std::move(cur)));
  }
  return in.make_list(std::move(out), Kind::kGenerator);
}
Value f_slice(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("slice", a, {"slices", "fill_with"});
  if (!p.get(0)) eval_fail("do_slice() missing 1 required positional argument: 'slices'");
  const int64_t slices = require_int(*p.get(0), "slices");
  if (slices > static_cast<int64_t>(in.limits().max_list_items)) eval_fail("too many slices");
  const Value* fill = p.get(1);
  std::vector<Value> seq = in.iterate(v);
  const int64_t length = static_cast<int64_t>(seq.size());
  if (slices == 0) eval_fail("integer division or modulo by zero");
  const int64_t per = length / slices, extra = length % slices;
  int64_t offset = 0;
  std::vector<Value> out;
  for (int64_t i = 0; i < slices; ++i) {
    const int64_t start = offset + i * per;
    if (i < extra) ++offset;
    const int64_t end = offset + (i + 1) * per;
    std::vector<Value> tmp;
    for (int64_t j = std::max<int64_t>(0, start); j < end && j < length; ++j) tmp.push_back(seq[j]);
    if (fill && !fill->is_none() && i >= extra) tmp.push_back(*fill);
    out.push_back(in.make_list(std::move(tmp)));
  }
  return in.make_list(std::move(out), Kind::kGenerator);
}
Value f_groupby(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("groupby", a, {"attribute", "default", "case_sensitive"});
  if (!p.get(0)) eval_fail("do_groupby() missing 1 required positional argument: 'attribute'");
  const Value attr = *p.get(0);
  const Value* dflt = p.get(1) && !p.get(1)->is_none() ? p.get(1) : nullptr;
  const bool cs = p.get_bool(2, false);
  std::vector<SortKeyed> keyed;
  for (Value& item : in.iterate(v)) {
    Value k = get_attribute_path(in, item, attr, dflt);
    keyed.push_back({cs ? k : lower_if_str(k), std::move(item)});
  }
  sort_values(keyed, false);
  std::vector<Value> out;
  for (size_t i = 0; i < keyed.size();) {
    size_t j = i;
    std::vector<Value> group;
    while (j < keyed.size() && equals(keyed[j].key, keyed[i].key)) group.push_back(keyed[j++].item);
    const Value grouper = cs ? keyed[i].key : get_attribute_path(in, group[0], attr, dflt);
    out.push_back(Value::list({grouper, in.make_list(std::move(group))}, Kind::kTuple));
    i = j;
  }
  return in.make_list(std::move(out));
}

Value f_map(Interpreter& in, const Value& v, CallArgs& a) {
  std::vector<Value> items = in.iterate(v);
  std::vector<Value> out;
  out.reserve(items.size());
  if (a.pos.empty()) {
    Value attribute, dflt;
    bool have_attr = false;
    for (auto& [k, val] : a.kw) {
      if (k == "attribute") {
        attribute = val;
        have_attr = true;
      } else if (k == "default") {
        dflt = val;
      } else {
        eval_fail("Unexpected keyword argument '" + k + "'");
      }
    }
    if (!have_attr) eval_fail("map requires a filter argument");
    for (const Value& item : items) {
      out.push_back(get_attribute_path(in, item, attribute, dflt.is_undefined() || dflt.is_none() ? nullptr : &dflt));
    }
  } else {
    const std::string name = require_str(a.pos[0], "map filter name");
    CallArgs rest;
    rest.pos.assign(a.pos.begin() + 1, a.pos.end());
    rest.kw = a.kw;
    for (const Value& item : items) {
      CallArgs copy = rest;
      out.push_back(in.apply_filter(name, item, copy));
    }
  }
  return in.make_list(std::move(out), Kind::kGenerator);
}

Value select_reject(Interpreter& in, const Value& v, CallArgs& a, bool select, bool by_attr) {
  std::vector<Value> out;
  if (!truthy(v)) return in.make_list({}, Kind::kGenerator);
  size_t off = 0;
  Value attr;
  if (by_attr) {
    if (a.pos.empty()) eval_fail("Missing parameter for attribute name");
    attr = a.pos[0];
    off = 1;
  }
  std::string test;
  CallArgs rest;
  const bool have_test = a.pos.size() > off;
  if (have_test) {
    test = require_str(a.pos[off], "test name");
    rest.pos.assign(a.pos.begin() + off + 1, a.pos.end());
    rest.kw = a.kw;
  }
  for (Value& item : in.iterate(v)) {
    const Value x = by_attr ? get_attribute_path(in, item, attr, nullptr) : item;
    bool ok;
    if (have_test) {
      CallArgs copy = rest;
      ok = in.apply_test(test, x, copy);
    } else {
      ok = truthy(x);
    }
    if (ok == select) out.push_back(std::move(item));
  }
  return in.make_list(std::move(out), Kind::kGenerator);
}
Value f_select(Interpreter& in, const Value& v, CallArgs& a) { return select_reject(in, v, a, true, false); }
Value f_reject(Interpreter& in, const Value& v, CallArgs& a) { return select_reject(in, v, a, false, false); }
Value f_selectattr(Interpreter& in, const Value& v, CallArgs& a) { return select_reject(in, v, a, true, true); }
Value f_rejectattr(Interpreter& in, const Value& v, CallArgs& a) { return select_reject(in, v, a, false, true); }

Value f_default(Interpreter&, const Value& v, CallArgs& a) {
  Params p("default", a, {"default_value", "boolean"});
  const bool boolean = p.get_bool(1, false);
  if (v.is_undefined() || (boolean && !truthy(v))) return p.get_or(0, Value::string(""));
  return v;
}
Value f_attr(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("attr", a, {"name"});
  if (!p.get(0)) eval_fail("do_attr() missing 1 required positional argument: 'name'");
  const std::string name = soft_str(*p.get(0));
  // Python getattr() only: for a dict that is its methods, never its keys.
  if (v.is_dict() && find_method(v, name) == MethodKind::kNone) {
    return Value::undefined(repr(Value::string(object_type_repr(v))) + " has no attribute " +
                            repr(Value::string(name)));
  }
  return in.getattr(v, name);
}
Value f_pprint(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("pprint", a, {});
  return str_value(in, repr(v));
}

Value f_tojson(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("tojson", a, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions o;
  o.ensure_ascii = p.get_bool(0, false);
  o.sort_keys = p.get_bool(3, false);
  if (const Value* indent = p.get(1); indent && !indent->is_none()) {
    o.has_indent = true;
    if (indent->is_string()) {
      o.indent = indent->as_string();
    } else {
      const int64_t n = require_int(*indent, "indent");
      if (n > 4096) eval_fail("indent too large");
      o.indent.assign(static_cast<size_t>(std::max<int64_t>(0, n)), ' ');
    }
    o.item_sep = ",";
  }
  if (const Value* seps = p.get(2); seps && !seps->is_none()) {
    std::vector<Value> items = in.iterate(*seps);
    if (items.size() != 2) eval_fail("separators must be a (item_separator, key_separator) pair");
    o.item_sep = require_str(items[0], "item separator");
    o.key_sep = require_str(items[1], "key separator");
  }
  std::string out;
  try {
    out = to_json(v, o);
  } catch (const Error& e) {
    eval_fail(e.what());
  }
  return str_value(in, std::move(out));
}

struct NamedFilter {
  const char* name;
  FilterFn fn;
};
constexpr NamedFilter kFilters[] = {
    {"abs", f_abs},           {"attr", f_attr},
    {"batch", f_batch},       {"capitalize", f_capitalize},
    {"center", f_center},     {"count", f_length},
    {"d", f_default},         {"default", f_default},
    {"dictsort", f_dictsort}, {"e", f_escape},
    {"escape", f_escape},     {"first", f_first},
    {"float", f_float},       {"forceescape", f_escape},
    {"format", f_format},     {"groupby", f_groupby},
    {"indent", f_indent},     {"int", f_int},
    {"items", f_items},       {"join", f_join},
    {"last", f_last},         {"length", f_length},
    {"list", f_list},         {"lower", f_lower},
    {"map", f_map},           {"max", f_max},
    {"min", f_min},           {"pprint", f_pprint},
    {"reject", f_reject},     {"rejectattr", f_rejectattr},
    {"replace", f_replace},   {"reverse", f_reverse},
    {"round", f_round},       {"safe", f_safe},
    {"select", f_select},     {"selectattr", f_selectattr},
    {"slice", f_slice},       {"sort", f_sort},
    {"string", f_string},     {"striptags", f_striptags},
    {"sum", f_sum},           {"title", f_title},
    {"tojson", f_tojson},     {"trim", f_trim},
    {"truncate", f_truncate}, {"unique", f_unique},
    {"upper", f_upper},       {"wordcount", f_wordcount},
};

}  // namespace

FilterFn find_filter(std::string_view name) {
  for (const auto& f : kFilters) {
    if (name == f.name) return f.fn;
  }
  return nullptr;
}

Value get_attribute_path(Interpreter& in, const Value& item, const Value& attribute, const Value* dflt) {
  std::vector<Value> parts;
  if (attribute.is_string()) {
    const std::string& s = attribute.as_string();
    size_t start = 0;
    while (true) {
      const size_t dot = s.find('.', start);
      std::string part = s.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      const bool digits =
          !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
      int64_t n = 0;
      if (digits && parse_py_int(part, 10, n)) {
        parts.push_back(Value::integer(n));
      } else {
        parts.push_back(Value::string(std::move(part)));
      }
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
  } else if (!attribute.is_none()) {
    parts.push_back(attribute);
  }
  Value cur = item;
  for (const Value& part : parts) {
    cur = in.getitem(cur, part);
    if (dflt != nullptr && cur.is_undefined()) cur = *dflt;
  }
  return cur;
}

}  // namespace pagoda::jinja
