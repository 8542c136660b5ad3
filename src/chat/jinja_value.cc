#include "chat/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "base/error.h"
#include "chat/jinja_error.h"
#include "chat/jinja_unicode.h"

// GCC 12 at -O3 reports false -Wrestrict overlaps inside std::string concatenation (GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace pagoda::jinja {

namespace {

// Recursion guard for repr / equality / json of values that may contain cycles through
// namespaces (a namespace can be assigned into itself).
constexpr int kMaxRecursion = 2 * kMaxDepth;

void check_recursion(int depth) {
  if (depth > kMaxRecursion) eval_fail("maximum recursion depth exceeded while printing or comparing a value");
}

const char* kind_name(ListObj::Kind k) {
  switch (k) {
    case ListObj::Kind::kList: return "list";
    case ListObj::Kind::kTuple: return "tuple";
    case ListObj::Kind::kRange: return "range";
    case ListObj::Kind::kGenerator: return "generator";
    case ListObj::Kind::kItemsView: return "dict_items";
    case ListObj::Kind::kKeysView: return "dict_keys";
    case ListObj::Kind::kValuesView: return "dict_values";
  }
  return "list";
}

void append_hex(std::string& out, uint32_t v, int digits) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) out += kHex[(v >> (4 * i)) & 0xF];
}

void repr_string(std::string& out, std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  out += quote;
  for (size_t pos = 0; pos < s.size();) {
    const char32_t c = decode_utf8(s, pos);
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7F) {
      out += "\\x";
      append_hex(out, c, 2);
    } else if (c < 0x7F) {
      out += static_cast<char>(c);
    } else if (py_isprintable(c)) {
      encode_utf8(c, out);
    } else if (c <= 0xFF) {
      out += "\\x";
      append_hex(out, c, 2);
    } else if (c <= 0xFFFF) {
      out += "\\u";
      append_hex(out, c, 4);
    } else {
      out += "\\U";
      append_hex(out, c, 8);
    }
  }
  out += quote;
}

void repr_into(std::string& out, const Value& v, int depth);

void repr_items(std::string& out, const ListObj& l, int depth) {
  for (size_t i = l.kind == ListObj::Kind::kGenerator ? l.consumed : 0; i < l.items.size(); ++i) {
    if (i != 0) out += ", ";
    repr_into(out, l.items[i], depth + 1);
  }
}

void repr_dict(std::string& out, const DictObj& d, int depth) {
  out += '{';
  bool first = true;
  for (const auto& [k, v] : d.items) {
    if (!first) out += ", ";
    first = false;
    repr_into(out, k, depth + 1);
    out += ": ";
    repr_into(out, v, depth + 1);
  }
  out += '}';
}

void str_into(std::string& out, const Value& v, int depth) {
  check_recursion(depth);
  switch (v.type()) {
    case Value::Type::kUndefined: return;
    case Value::Type::kNone: out += "None"; return;
    case Value::Type::kBool: out += v.as_bool() ? "True" : "False"; return;
    case Value::Type::kInt: {
      char buf[32];
      auto r = std::to_chars(buf, buf + sizeof buf, v.as_int());
      out.append(buf, r.ptr);
      return;
    }
    case Value::Type::kFloat: out += float_repr(v.as_float()); return;
    case Value::Type::kString: out += v.as_string(); return;
    case Value::Type::kList: {
      const ListObj& l = v.as_list();
      switch (l.kind) {
        case ListObj::Kind::kList:
          out += '[';
          repr_items(out, l, depth);
          out += ']';
          return;
        case ListObj::Kind::kTuple:
          out += '(';
          repr_items(out, l, depth);
          if (l.items.size() == 1) out += ',';
          out += ')';
          return;
        case ListObj::Kind::kRange:
          out += "range(" + std::to_string(l.range_start) + ", " + std::to_string(l.range_stop);
          if (l.range_step != 1) out += ", " + std::to_string(l.range_step);
          out += ')';
          return;
        case ListObj::Kind::kGenerator: out += "<generator object>"; return;
        default:
          out += kind_name(l.kind);
          out += "([";
          repr_items(out, l, depth);
          out += "])";
          return;
      }
    }
    case Value::Type::kDict:
      if (v.is_namespace()) {
        out += "<Namespace ";
        repr_dict(out, v.as_dict(), depth);
        out += '>';
      } else {
        repr_dict(out, v.as_dict(), depth);
      }
      return;
    case Value::Type::kCallable: out += v.as_callable().repr(); return;
    case Value::Type::kLoop: {
      const LoopObj& l = v.as_loop();
      out += "<LoopContext " + std::to_string(l.index0 + 1) + "/" + std::to_string(l.items->items.size()) + ">";
      return;
    }
  }
}

void repr_into(std::string& out, const Value& v, int depth) {
  if (v.is_string()) {
    repr_string(out, v.as_string());
  } else if (v.is_undefined()) {
    out += "Undefined";
  } else {
    str_into(out, v, depth);
  }
}

bool equals_impl(const Value& a, const Value& b, int depth) {
  check_recursion(depth);
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_float() == b.as_float();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Value::Type::kUndefined:
    case Value::Type::kNone: return true;
    case Value::Type::kString: return a.as_string() == b.as_string();
    case Value::Type::kList: {
      const ListObj& x = a.as_list();
      const ListObj& y = b.as_list();
      if (&x == &y) return true;
      const bool seq_x =
          x.kind == ListObj::Kind::kList || x.kind == ListObj::Kind::kTuple || x.kind == ListObj::Kind::kRange;
      if (!seq_x || x.kind != y.kind || x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i) {
        if (!equals_impl(x.items[i], y.items[i], depth + 1)) return false;
      }
      return true;
    }
    case Value::Type::kDict: {
      const DictObj& x = a.as_dict();
      const DictObj& y = b.as_dict();
      if (&x == &y) return true;
      if (x.is_namespace || y.is_namespace || x.items.size() != y.items.size()) return false;
      for (const auto& [k, v] : x.items) {
        const Value* other = y.find(k);
        if (other == nullptr || !equals_impl(v, *other, depth + 1)) return false;
      }
      return true;
    }
    default: return a.object() == b.object();
  }
}

bool less_impl(const Value& a, const Value& b, int depth) {
  check_recursion(depth);
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int();
    return a.as_float() < b.as_float();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  if (a.is_list() && b.is_list() && a.as_list().kind == b.as_list().kind &&
      (a.as_list().kind == ListObj::Kind::kList || a.as_list().kind == ListObj::Kind::kTuple)) {
    const auto& x = a.as_list().items;
    const auto& y = b.as_list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equals_impl(x[i], y[i], depth + 1)) return less_impl(x[i], y[i], depth + 1);
    }
    return x.size() < y.size();
  }
  if (a.is_undefined() || b.is_undefined()) {
    eval_fail(a.is_undefined() ? a.undefined_hint() : b.undefined_hint());
  }
  eval_fail(detail::concat("'<' not supported between instances of '", type_name(a), "' and '", type_name(b), "'"));
}

void json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out += '"';
  for (size_t pos = 0; pos < s.size();) {
    const size_t start = pos;
    const char32_t c = decode_utf8(s, pos);
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
      if (c >= 0x10000) {
        const uint32_t v = c - 0x10000;
        out += "\\u";
        append_hex(out, 0xD800 + (v >> 10), 4);
        out += "\\u";
        append_hex(out, 0xDC00 + (v & 0x3FF), 4);
      } else {
        out += "\\u";
        append_hex(out, c, 4);
      }
    } else {
      out.append(s.data() + start, pos - start);
    }
  }
  out += '"';
}

std::string json_type_name(const Value& v) {
  if (v.is_undefined()) return "Undefined";
  if (v.is_namespace()) return "TemplateNamespace";
  if (v.is_loop()) return "LoopContext";
  if (v.is_callable()) return v.as_callable().is_macro() ? "Macro" : "builtin_function_or_method";
  return type_name(v);
}

void json_into(std::string& out, const Value& v, const JsonOptions& o, int depth) {
  check_recursion(depth);
  auto newline = [&](int level) {
    if (!o.has_indent) return;
    out += '\n';
    for (int i = 0; i < level; ++i) out += o.indent;
  };
  switch (v.type()) {
    case Value::Type::kNone: out += "null"; return;
    case Value::Type::kBool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Type::kInt: out += std::to_string(v.as_int()); return;
    case Value::Type::kFloat: {
      const double d = v.as_float();
      if (std::isnan(d)) {
        out += "NaN";
      } else if (std::isinf(d)) {
        out += d > 0 ? "Infinity" : "-Infinity";
      } else {
        out += float_repr(d);
      }
      return;
    }
    case Value::Type::kString: json_string(out, v.as_string(), o.ensure_ascii); return;
    case Value::Type::kList: {
      const ListObj& l = v.as_list();
      if (l.kind != ListObj::Kind::kList && l.kind != ListObj::Kind::kTuple) break;
      if (l.items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < l.items.size(); ++i) {
        if (i != 0) out += o.item_sep;
        newline(depth + 1);
        json_into(out, l.items[i], o, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Type::kDict: {
      if (v.is_namespace()) break;
      const DictObj& d = v.as_dict();
      if (d.items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<Value, Value>*> items;
      items.reserve(d.items.size());
      for (const auto& kv : d.items) items.push_back(&kv);
      if (o.sort_keys) {
        std::stable_sort(items.begin(), items.end(),
                         [&](const auto* x, const auto* y) { return less_impl(x->first, y->first, depth + 1); });
      }
      out += '{';
      bool first = true;
      for (const auto* kv : items) {
        if (!first) out += o.item_sep;
        first = false;
        newline(depth + 1);
        const Value& k = kv->first;
        if (k.is_string()) {
          json_string(out, k.as_string(), o.ensure_ascii);
        } else if (k.is_bool() || k.is_none() || k.is_int() || k.is_float()) {
          std::string key;
          json_into(key, k, o, depth + 1);
          json_string(out, key, o.ensure_ascii);
        } else {
          eval_fail(detail::concat("keys must be str, int, float, bool or None, not ", type_name(k)));
        }
        out += o.key_sep;
        json_into(out, kv->second, o, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    default: break;
  }
  eval_fail(detail::concat("Object of type ", json_type_name(v), " is not JSON serializable"));
}

}  // namespace

Value Value::list(std::vector<Value> items, ListObj::Kind kind) {
  auto l = std::make_shared<ListObj>();
  int depth = 1;
  for (const Value& item : items) depth = std::max(depth, item.depth() + 1);
  if (depth > kMaxDepth) eval_fail(detail::concat("value nesting is deeper than ", kMaxDepth, " levels"));
  l->items = std::move(items);
  l->kind = kind;
  l->depth = depth;
  return list(std::move(l));
}

Value Value::loop(std::shared_ptr<LoopObj> l) {
  Value v(Type::kLoop);
  v.obj_ = std::move(l);
  return v;
}

LoopObj& Value::as_loop() const { return static_cast<LoopObj&>(*obj_); }

int Value::depth() const {
  if (type_ == Type::kList) return as_list().depth;
  if (type_ == Type::kDict) return as_dict().depth;
  return 0;
}

const Value* DictObj::find(const Value& key) const {
  if (key.is_string()) return find(std::string_view(key.as_string()));
  for (const auto& [k, v] : items) {
    if (equals(k, key)) return &v;
  }
  return nullptr;
}

const Value* DictObj::find(std::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k.is_string() && k.as_string() == key) return &v;
  }
  return nullptr;
}

void DictObj::set(Value key, Value value) {
  const int d = value.depth() + 1;
  if (d > kMaxDepth) eval_fail(detail::concat("value nesting is deeper than ", kMaxDepth, " levels"));
  depth = std::max(depth, d);
  for (auto& [k, v] : items) {
    if (equals(k, key)) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(value));
}

bool truthy(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined:
    case Value::Type::kNone: return false;
    case Value::Type::kBool:
    case Value::Type::kInt: return v.as_int() != 0;
    case Value::Type::kFloat: return v.as_float() != 0.0;
    case Value::Type::kString: return !v.as_string().empty();
    case Value::Type::kList: return v.as_list().kind == ListObj::Kind::kGenerator || !v.as_list().items.empty();
    case Value::Type::kDict: return v.is_namespace() || !v.as_dict().items.empty();
    default: return true;
  }
}

std::string to_str(const Value& v) {
  if (v.is_string()) return v.as_string();
  std::string out;
  str_into(out, v, 0);
  return out;
}

void append_str(std::string& out, const Value& v) { str_into(out, v, 0); }

std::string repr(const Value& v) {
  std::string out;
  repr_into(out, v, 0);
  return out;
}

std::string type_name(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined: return "Undefined";
    case Value::Type::kNone: return "NoneType";
    case Value::Type::kBool: return "bool";
    case Value::Type::kInt: return "int";
    case Value::Type::kFloat: return "float";
    case Value::Type::kString: return "str";
    case Value::Type::kList: return kind_name(v.as_list().kind);
    case Value::Type::kDict: return v.is_namespace() ? "TemplateNamespace" : "dict";
    case Value::Type::kCallable: return v.as_callable().is_macro() ? "Macro" : "builtin_function_or_method";
    case Value::Type::kLoop: return "LoopContext";
  }
  return "object";
}

std::string object_type_repr(const Value& v) {
  if (v.is_none()) return "None";
  if (v.is_namespace()) return "transformers.utils.chat_template_utils.TemplateNamespace object";
  if (v.is_loop()) return "jinja2.runtime.LoopContext object";
  if (v.is_callable() && v.as_callable().is_macro()) return "jinja2.runtime.Macro object";
  return type_name(v) + " object";
}

bool equals(const Value& a, const Value& b) { return equals_impl(a, b, 0); }
bool less_than(const Value& a, const Value& b) { return less_impl(a, b, 0); }

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string_view s(buf, r.ptr - buf);
  std::string out;
  if (s[0] == '-') {
    out += '-';
    s.remove_prefix(1);
  }
  const size_t e_pos = s.find('e');
  std::string digits;
  for (char c : s.substr(0, e_pos)) {
    if (c != '.') digits += c;
  }
  int exp = 0;
  std::from_chars(s.data() + e_pos + 1 + (s[e_pos + 1] == '+' ? 1 : 0), s.data() + s.size(), exp);
  const int decpt = exp + 1;
  const int n = static_cast<int>(digits.size());
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0." + std::string(-decpt, '0') + digits;
    } else if (decpt >= n) {
      out += digits + std::string(decpt - n, '0') + ".0";
    } else {
      out += digits.substr(0, decpt) + "." + digits.substr(decpt);
    }
  } else {
    out += digits[0];
    if (n > 1) out += "." + digits.substr(1);
    out += exp < 0 ? "e-" : "e+";
    const int a = std::abs(exp);
    if (a < 10) out += '0';
    out += std::to_string(a);
  }
  return out;
}

std::string hash_key(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined: return "u";
    case Value::Type::kNone: return "n";
    case Value::Type::kBool:
    case Value::Type::kInt: return "i" + std::to_string(v.as_int());
    case Value::Type::kFloat: {
      const double d = v.as_float();
      if (std::nearbyint(d) == d && std::fabs(d) < 9.2e18) return "i" + std::to_string(static_cast<int64_t>(d));
      return "f" + float_repr(d);
    }
    case Value::Type::kString: return "s" + v.as_string();
    case Value::Type::kList:
      if (v.as_list().kind == ListObj::Kind::kTuple) {
        std::string out = "t(";
        for (const Value& item : v.as_list().items) {
          const std::string k = hash_key(item);
          out += std::to_string(k.size()) + ":" + k;
        }
        return out + ")";
      }
      break;
    case Value::Type::kDict:
      if (v.is_namespace()) break;
      eval_fail("unhashable type: 'dict'");
    default: break;
  }
  if (v.is_list()) eval_fail(detail::concat("unhashable type: '", type_name(v), "'"));
  return "o" + std::to_string(reinterpret_cast<uintptr_t>(v.object().get()));
}

std::string to_json(const Value& v, const JsonOptions& options) {
  std::string out;
  json_into(out, v, options, 0);
  return out;
}

}  // namespace pagoda::jinja
