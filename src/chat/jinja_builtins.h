// Shared helpers for the builtin filters, tests, globals and methods (jinja_filters.cc,
// jinja_tests.cc, jinja_methods.cc, jinja_format.cc).
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "chat/jinja_interp.h"

namespace pagoda::jinja {

// Binds call arguments to a Python-style signature: positional first, then keywords by name.
// Unknown keywords or too many positionals raise TypeError-like errors naming `fn`.
class Params {
 public:
  Params(std::string_view fn, CallArgs& args, std::initializer_list<const char*> names, bool allow_extra = false);
  const Value* get(size_t i) const { return i < given_.size() && given_[i] ? &values_[i] : nullptr; }
  Value get_or(size_t i, Value dflt) const { return get(i) ? values_[i] : std::move(dflt); }
  bool get_bool(size_t i, bool dflt) const { return get(i) ? truthy(values_[i]) : dflt; }
  int64_t get_int(size_t i, int64_t dflt) const;
  std::string fn() const { return std::string(fn_); }

 private:
  std::string_view fn_;
  std::vector<Value> values_;
  std::vector<bool> given_;
};

// int(value) for ints/bools; TypeError for anything else.
int64_t require_int(const Value& v, std::string_view what);
// A string argument (str() of non-strings is NOT applied: TypeError, like Python str methods).
const std::string& require_str(const Value& v, std::string_view what);

// Python's len(); errors for unsized values.
int64_t py_len(const Value& v);

// "%"-formatting: value % args (args: a tuple's items, a single value, or a dict for %(name)s).
std::string percent_format(Interpreter& in, const std::string& fmt, const std::vector<Value>& args,
                           const Value* mapping);
// str.format(*args, **kwargs).
std::string str_format(Interpreter& in, const std::string& fmt, CallArgs& args);
// format(value, spec) for str.format's format specs.
std::string format_spec(Interpreter& in, const Value& v, std::string_view spec);

// Python str(float) for int(value)/float(value) conversions of strings.
bool parse_py_int(std::string_view s, int base, int64_t& out);
bool parse_py_float(std::string_view s, double& out);

// jinja2's make_attrgetter: "a.b.0" looks up each dotted part (digits as integers).
Value get_attribute_path(Interpreter& in, const Value& item, const Value& attribute, const Value* dflt);

}  // namespace pagoda::jinja
