// jinja2's builtin tests (jinja2/tests.py): `x is defined`, `x is divisibleby 3`, ...
#include <cmath>

#include "chat/jinja_builtins.h"
#include "chat/jinja_unicode.h"

// GCC 12 at -O3 reports false -Wrestrict overlaps inside std::string concatenation (GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace pagoda::jinja {

namespace {

const Value& arg0(std::string_view fn, CallArgs& a, Value& storage) {
  Params p(fn, a, {"other"});
  if (!p.get(0)) eval_fail(std::string(fn) + "() missing 1 required positional argument");
  storage = *p.get(0);
  return storage;
}

bool t_defined(Interpreter&, const Value& v, CallArgs& a) {
  Params p("defined", a, {});
  return !v.is_undefined();
}
bool t_undefined(Interpreter&, const Value& v, CallArgs& a) {
  Params p("undefined", a, {});
  return v.is_undefined();
}
bool t_none(Interpreter&, const Value& v, CallArgs& a) {
  Params p("none", a, {});
  return v.is_none();
}
bool t_boolean(Interpreter&, const Value& v, CallArgs& a) {
  Params p("boolean", a, {});
  return v.is_bool();
}
bool t_true(Interpreter&, const Value& v, CallArgs& a) {
  Params p("true", a, {});
  return v.is_bool() && v.as_bool();
}
bool t_false(Interpreter&, const Value& v, CallArgs& a) {
  Params p("false", a, {});
  return v.is_bool() && !v.as_bool();
}
bool t_integer(Interpreter&, const Value& v, CallArgs& a) {
  Params p("integer", a, {});
  return v.is_int();
}
bool t_float(Interpreter&, const Value& v, CallArgs& a) {
  Params p("float", a, {});
  return v.is_float();
}
bool t_number(Interpreter&, const Value& v, CallArgs& a) {
  Params p("number", a, {});
  return v.is_number();
}
bool t_string(Interpreter&, const Value& v, CallArgs& a) {
  Params p("string", a, {});
  return v.is_string();
}
bool t_mapping(Interpreter&, const Value& v, CallArgs& a) {
  Params p("mapping", a, {});
  return v.is_dict();
}
bool t_sequence(Interpreter&, const Value& v, CallArgs& a) {
  Params p("sequence", a, {});
  if (v.is_string() || v.is_dict()) return true;
  if (!v.is_list()) return false;
  const auto k = v.as_list().kind;
  return k == ListObj::Kind::kList || k == ListObj::Kind::kTuple || k == ListObj::Kind::kRange;
}
bool t_iterable(Interpreter&, const Value& v, CallArgs& a) {
  Params p("iterable", a, {});
  return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined() || v.is_loop();
}
bool t_callable(Interpreter&, const Value& v, CallArgs& a) {
  Params p("callable", a, {});
  return v.is_callable() || v.is_loop();
}
bool t_escaped(Interpreter&, const Value&, CallArgs& a) {
  Params p("escaped", a, {});
  return false;
}
bool t_lower(Interpreter&, const Value& v, CallArgs& a) {
  Params p("lower", a, {});
  // str.islower(): at least one cased character and no upper-case ones.
  const std::string s = to_str(v);
  bool cased = false;
  for (size_t pos = 0; pos < s.size();) {
    const char32_t c = decode_utf8(s, pos);
    if (py_isupper(c)) return false;
    if (py_islower(c)) cased = true;
  }
  return cased;
}
bool t_upper(Interpreter&, const Value& v, CallArgs& a) {
  Params p("upper", a, {});
  const std::string s = to_str(v);
  bool cased = false;
  for (size_t pos = 0; pos < s.size();) {
    const char32_t c = decode_utf8(s, pos);
    if (py_islower(c)) return false;
    if (py_isupper(c)) cased = true;
  }
  return cased;
}
int64_t mod2(Interpreter& in, const Value& v) {
  const Value r = in.binary_op(BinOp::kMod, v, Value::integer(2));
  return r.is_integral() ? r.as_int() : static_cast<int64_t>(r.as_float());
}
bool t_odd(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("odd", a, {});
  return mod2(in, v) == 1;
}
bool t_even(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("even", a, {});
  return mod2(in, v) == 0;
}
bool t_divisibleby(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("divisibleby", a, {"num"});
  if (!p.get(0)) eval_fail("test_divisibleby() missing 1 required positional argument: 'num'");
  const Value r = in.binary_op(BinOp::kMod, v, *p.get(0));
  return equals(r, Value::integer(0));
}
bool t_sameas(Interpreter&, const Value& v, CallArgs& a) {
  Value o;
  const Value& other = arg0("sameas", a, o);
  if (v.type() != other.type()) return false;
  switch (v.type()) {
    case Value::Type::kUndefined: return false;  // distinct Undefined instances
    case Value::Type::kNone: return true;
    case Value::Type::kBool: return v.as_bool() == other.as_bool();
    case Value::Type::kInt: return v.as_int() == other.as_int() && v.as_int() >= -5 && v.as_int() <= 256;
    case Value::Type::kFloat: return false;
    default: return v.object() == other.object();
  }
}
bool t_in(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("in", a, {"seq"});
  if (!p.get(0)) eval_fail("test_in() missing 1 required positional argument: 'seq'");
  return in.contains(*p.get(0), v);
}
template <CmpOp op>
bool t_cmp(Interpreter& in, const Value& v, CallArgs& a) {
  Value o;
  const Value& other = arg0("compare", a, o);
  return in.compare(op, v, other);
}
bool t_filter(Interpreter&, const Value& v, CallArgs& a) {
  Params p("filter", a, {});
  return v.is_string() && find_filter(v.as_string()) != nullptr;
}
bool t_test(Interpreter&, const Value& v, CallArgs& a) {
  Params p("test", a, {});
  return v.is_string() && find_test(v.as_string()) != nullptr;
}

struct NamedTest {
  const char* name;
  TestFn fn;
};
constexpr NamedTest kTests[] = {
    {"odd", t_odd},
    {"even", t_even},
    {"divisibleby", t_divisibleby},
    {"defined", t_defined},
    {"undefined", t_undefined},
    {"none", t_none},
    {"boolean", t_boolean},
    {"false", t_false},
    {"true", t_true},
    {"integer", t_integer},
    {"float", t_float},
    {"number", t_number},
    {"lower", t_lower},
    {"upper", t_upper},
    {"string", t_string},
    {"mapping", t_mapping},
    {"sequence", t_sequence},
    {"iterable", t_iterable},
    {"callable", t_callable},
    {"sameas", t_sameas},
    {"escaped", t_escaped},
    {"in", t_in},
    {"==", t_cmp<CmpOp::kEq>},
    {"eq", t_cmp<CmpOp::kEq>},
    {"equalto", t_cmp<CmpOp::kEq>},
    {"!=", t_cmp<CmpOp::kNe>},
    {"ne", t_cmp<CmpOp::kNe>},
    {">", t_cmp<CmpOp::kGt>},
    {"gt", t_cmp<CmpOp::kGt>},
    {"greaterthan", t_cmp<CmpOp::kGt>},
    {"ge", t_cmp<CmpOp::kGe>},
    {">=", t_cmp<CmpOp::kGe>},
    {"<", t_cmp<CmpOp::kLt>},
    {"lt", t_cmp<CmpOp::kLt>},
    {"lessthan", t_cmp<CmpOp::kLt>},
    {"<=", t_cmp<CmpOp::kLe>},
    {"le", t_cmp<CmpOp::kLe>},
    {"filter", t_filter},
    {"test", t_test},
};

}  // namespace

TestFn find_test(std::string_view name) {
  for (const auto& t : kTests) {
    if (name == t.name) return t.fn;
  }
  return nullptr;
}

}  // namespace pagoda::jinja
