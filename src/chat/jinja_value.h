// Runtime values of the Jinja interpreter, with Python semantics (the chat templates we run were
// written against jinja2 on CPython, and their output must match byte for byte).
//
// A Value is 32 bytes: a type tag, an inline scalar (bool / int64 / double) and a shared pointer
// to a heap object for everything else (string, list, dict, namespace, callable, loop). Heap
// objects are immutable once published, like Python objects under jinja2's
// ImmutableSandboxedEnvironment; the one exception is a namespace(), whose attributes `{% set
// ns.x = ... %}` assigns. Sharing makes copies O(1), so passing message contents around never
// copies text.
//
// Python ints are unbounded; ours are int64 and overflow raises an error instead of growing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pagoda::jinja {

class Value;
class Interpreter;
struct CallArgs;

struct Object {
  virtual ~Object() = default;
};

// Python sequence-like types (see ListObj).
enum class ListKind : uint8_t { kList, kTuple, kRange, kGenerator, kItemsView, kKeysView, kValuesView };

struct LoopObj;
struct StrObj;
struct ListObj;
struct DictObj;
struct CallableObj;

class Value {
 public:
  enum class Type : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kCallable, kLoop };

  Value() = default;  // undefined
  static Value none() { return Value(Type::kNone); }
  static Value boolean(bool b) {
    Value v(Type::kBool);
    v.i_ = b ? 1 : 0;
    return v;
  }
  static Value integer(int64_t i) {
    Value v(Type::kInt);
    v.i_ = i;
    return v;
  }
  static Value floating(double d) {
    Value v(Type::kFloat);
    v.d_ = d;
    return v;
  }
  static Value string(std::string s);
  // An undefined value that remembers why (jinja2's Undefined hint), e.g. "'x' is undefined".
  static Value undefined(std::string hint);
  static Value list(std::shared_ptr<ListObj> l);
  // Fails (EvalError) past kMaxDepth nesting.
  static Value list(std::vector<Value> items, ListKind kind = ListKind::kList);
  static Value dict(std::shared_ptr<DictObj> d);
  static Value callable(std::shared_ptr<CallableObj> c);
  static Value loop(std::shared_ptr<LoopObj> l);

  Type type() const { return type_; }
  bool is_undefined() const { return type_ == Type::kUndefined; }
  bool is_none() const { return type_ == Type::kNone; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_int() const { return type_ == Type::kInt; }
  bool is_float() const { return type_ == Type::kFloat; }
  bool is_number() const { return type_ == Type::kInt || type_ == Type::kFloat || type_ == Type::kBool; }
  bool is_integral() const { return type_ == Type::kInt || type_ == Type::kBool; }  // Python int incl. bool
  bool is_string() const { return type_ == Type::kString; }
  bool is_list() const { return type_ == Type::kList; }
  bool is_dict() const;
  bool is_namespace() const;
  bool is_callable() const { return type_ == Type::kCallable; }
  bool is_loop() const { return type_ == Type::kLoop; }

  bool as_bool() const { return i_ != 0; }
  int64_t as_int() const { return i_; }  // int or bool
  double as_float() const { return type_ == Type::kFloat ? d_ : static_cast<double>(i_); }
  const std::string& as_string() const;
  const ListObj& as_list() const;
  ListObj& mutable_list() const;
  const DictObj& as_dict() const;
  DictObj& mutable_dict() const;
  CallableObj& as_callable() const;
  LoopObj& as_loop() const;
  const std::shared_ptr<Object>& object() const { return obj_; }
  // The hint of an undefined value ("" when there is none).
  std::string undefined_hint() const;

  // Nesting depth of this value as a container (0 for scalars).
  int depth() const;

 private:
  explicit Value(Type t) : type_(t) {}
  Type type_ = Type::kUndefined;
  union {
    int64_t i_ = 0;
    double d_;
  };
  std::shared_ptr<Object> obj_;
};

// ---- Python semantics ----
bool truthy(const Value& v);
// str(v): the text `{{ v }}` prints.
std::string to_str(const Value& v);
void append_str(std::string& out, const Value& v);
// repr(v), as Python prints container elements.
std::string repr(const Value& v);
// Python's type name: 'str', 'int', 'list', 'NoneType', ...
std::string type_name(const Value& v);
// jinja2's object_type_repr(): "dict object", "None", "str object", ...
std::string object_type_repr(const Value& v);
// ==
bool equals(const Value& a, const Value& b);
// <, for sorting and comparisons; throws EvalError (jinja_error.h) on unorderable types.
bool less_than(const Value& a, const Value& b);
// repr() of a Python float.
std::string float_repr(double d);
// A canonical key such that equal values (in the Python sense, for hashable values) share it.
std::string hash_key(const Value& v);

// json.dumps(v, ensure_ascii, indent, separators, sort_keys) as Python prints it.
struct JsonOptions {
  bool ensure_ascii = false;
  bool has_indent = false;
  std::string indent;  // one level of indentation
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonOptions& options);

struct StrObj final : Object {
  explicit StrObj(std::string v) : s(std::move(v)) {}
  std::string s;
};

// A Python sequence-like result. Lists, tuples and range objects behave alike apart from
// repr(); generator-like results (map/select/reverse filters) are always truthy, have no len()
// and are consumed by iteration, as in Python.
struct ListObj final : Object {
  using Kind = ListKind;
  std::vector<Value> items;
  Kind kind = Kind::kList;
  int depth = 1;        // nesting depth of containers (bounded so that destructors and repr cannot overflow)
  size_t consumed = 0;  // generators: items already taken by iteration
  int64_t range_start = 0, range_stop = 0, range_step = 1;
};

// An insertion-ordered Python dict. Keys are compared with Python equality (1 == 1.0 == True).
struct DictObj final : Object {
  std::vector<std::pair<Value, Value>> items;
  int depth = 1;
  bool is_namespace = false;

  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  // Inserts or overwrites (keeping the first insertion position, like Python).
  void set(Value key, Value value);
};

// Callables: macros, builtins (range, namespace, raise_exception, ...) and bound methods.
struct CallableObj : Object {
  virtual Value call(Interpreter& in, CallArgs& args, int line) = 0;
  virtual std::string repr() const = 0;
  virtual bool is_macro() const { return false; }
};

inline Value Value::string(std::string s) {
  Value v(Type::kString);
  v.obj_ = std::make_shared<StrObj>(std::move(s));
  return v;
}
inline Value Value::undefined(std::string hint) {
  Value v(Type::kUndefined);
  if (!hint.empty()) v.obj_ = std::make_shared<StrObj>(std::move(hint));
  return v;
}
inline Value Value::list(std::shared_ptr<ListObj> l) {
  Value v(Type::kList);
  v.obj_ = std::move(l);
  return v;
}
inline Value Value::dict(std::shared_ptr<DictObj> d) {
  Value v(Type::kDict);
  v.obj_ = std::move(d);
  return v;
}
inline Value Value::callable(std::shared_ptr<CallableObj> c) {
  Value v(Type::kCallable);
  v.obj_ = std::move(c);
  return v;
}
inline bool Value::is_dict() const { return type_ == Type::kDict && !as_dict().is_namespace; }
inline bool Value::is_namespace() const { return type_ == Type::kDict && as_dict().is_namespace; }
inline const std::string& Value::as_string() const { return static_cast<const StrObj&>(*obj_).s; }
inline const ListObj& Value::as_list() const { return static_cast<const ListObj&>(*obj_); }
inline ListObj& Value::mutable_list() const { return static_cast<ListObj&>(*obj_); }
inline const DictObj& Value::as_dict() const { return static_cast<const DictObj&>(*obj_); }
inline DictObj& Value::mutable_dict() const { return static_cast<DictObj&>(*obj_); }
inline CallableObj& Value::as_callable() const { return static_cast<CallableObj&>(*obj_); }
inline std::string Value::undefined_hint() const { return obj_ ? static_cast<const StrObj&>(*obj_).s : std::string(); }

// The `loop` variable of a for loop.
struct LoopObj final : Object {
  std::shared_ptr<const ListObj> items;  // what is iterated (after the `if` filter)
  size_t index0 = 0;
  int depth0 = 0;
  bool changed_called = false;  // loop.changed(*args) remembers the previous call's arguments
  std::vector<Value> changed_args;
  std::shared_ptr<CallableObj> recurse;  // `loop(...)` in a recursive loop
};

// Maximum container nesting (JSON input and values built by templates).
inline constexpr int kMaxDepth = 256;

}  // namespace pagoda::jinja
