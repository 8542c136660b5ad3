#include "chat/jinja_interp.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "chat/jinja_builtins.h"
#include "chat/jinja_unicode.h"

// GCC 12 at -O3 reports false -Wrestrict overlaps inside std::string concatenation (GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace pagoda::jinja {

void eval_fail(std::string message) { throw EvalError{std::move(message), false}; }

TemplateError::TemplateError(int line, std::string detail, bool raised)
    : Error("chat template line " + std::to_string(line) + ": " + detail),
      line_(line),
      detail_(std::move(detail)),
      raised_(raised) {}

namespace {

constexpr int kMaxEvalDepth = 600;  // C++ recursion through eval/exec (bounded stack use)

[[noreturn]] void fail_undefined(const Value& v) {
  std::string hint = v.undefined_hint();
  eval_fail(hint.empty() ? "undefined value" : hint);
}

std::string no_attribute(const Value& obj, std::string_view name) {
  return repr(Value::string(object_type_repr(obj))) + " has no attribute " + repr(Value::string(std::string(name)));
}

std::string no_element(const Value& obj, const Value& key) {
  return object_type_repr(obj) + " has no element " + repr(key);
}

std::string unsafe_hint(const Value& obj, std::string_view name) {
  return "access to attribute " + repr(Value::string(std::string(name))) + " of " +
         repr(Value::string(type_name(obj))) + " object is unsafe.";
}

// A macro, or the caller() of a {% call %} block.
class MacroCallable final : public CallableObj {
 public:
  MacroCallable(std::shared_ptr<const MacroDef> def, std::weak_ptr<Scope> closure)
      : def_(std::move(def)), closure_(std::move(closure)) {}
  Value call(Interpreter& in, CallArgs& args, int) override { return in.call_macro(*def_, closure_, args); }
  std::string repr() const override { return "<Macro '" + def_->name + "'>"; }
  bool is_macro() const override { return true; }

 private:
  std::shared_ptr<const MacroDef> def_;
  std::weak_ptr<Scope> closure_;
};

// `'abc'.upper` before it is called.
class BoundMethod final : public CallableObj {
 public:
  BoundMethod(Value self, std::string name) : self_(std::move(self)), name_(std::move(name)) {}
  Value call(Interpreter& in, CallArgs& args, int) override { return call_method(in, self_, name_, args); }
  std::string repr() const override { return "<built-in method " + name_ + " of " + type_name(self_) + " object>"; }

 private:
  Value self_;
  std::string name_;
};

// loop.cycle / loop.changed
class LoopMethod final : public CallableObj {
 public:
  LoopMethod(std::shared_ptr<LoopObj> loop, bool cycle) : loop_(std::move(loop)), cycle_(cycle) {}
  Value call(Interpreter&, CallArgs& args, int) override {
    if (cycle_) {
      if (args.pos.empty()) eval_fail("no items for cycling given");
      return args.pos[loop_->index0 % args.pos.size()];
    }
    bool same = loop_->changed_called && loop_->changed_args.size() == args.pos.size();
    for (size_t i = 0; same && i < args.pos.size(); ++i) same = equals(loop_->changed_args[i], args.pos[i]);
    loop_->changed_called = true;
    loop_->changed_args = args.pos;
    return Value::boolean(!same);
  }
  std::string repr() const override {
    return cycle_ ? "<bound method LoopContext.cycle>" : "<bound method LoopContext.changed>";
  }

 private:
  std::shared_ptr<LoopObj> loop_;
  bool cycle_;
};

class LoopRecurse final : public CallableObj {
 public:
  LoopRecurse(const Stmt* stmt, std::weak_ptr<Scope> scope, int depth)
      : stmt_(stmt), scope_(std::move(scope)), depth_(depth) {}
  Value call(Interpreter& in, CallArgs& args, int) override {
    if (args.pos.size() != 1 || !args.kw.empty()) eval_fail("loop() takes exactly one argument");
    return in.call_loop(*stmt_, scope_, args.pos[0], depth_ + 1);
  }
  std::string repr() const override { return "<LoopContext>"; }

 private:
  const Stmt* stmt_;
  std::weak_ptr<Scope> scope_;
  int depth_;
};

int64_t checked(__int128 v) {
  if (v > std::numeric_limits<int64_t>::max() || v < std::numeric_limits<int64_t>::min()) {
    eval_fail("integer overflow (values beyond 64 bits are not supported)");
  }
  return static_cast<int64_t>(v);
}

int64_t floor_div(int64_t a, int64_t b) {
  if (b == -1 && a == std::numeric_limits<int64_t>::min())
    eval_fail("integer overflow (values beyond 64 bits are not supported)");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t py_mod(int64_t a, int64_t b) {
  if (b == -1) return 0;
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

double py_fmod(double a, double b) {
  double r = std::fmod(a, b);
  if (r != 0) {
    if ((r < 0) != (b < 0)) r += b;
  } else {
    r = std::copysign(0.0, b);
  }
  return r;
}

const char* op_symbol(BinOp op) {
  switch (op) {
    case BinOp::kAdd: return "+";
    case BinOp::kSub: return "-";
    case BinOp::kMul: return "*";
    case BinOp::kDiv: return "/";
    case BinOp::kFloorDiv: return "//";
    case BinOp::kMod: return "%";
    case BinOp::kPow: return "** or pow()";
  }
  return "?";
}

const char* cmp_symbol(CmpOp op) {
  switch (op) {
    case CmpOp::kLt: return "<";
    case CmpOp::kLe: return "<=";
    case CmpOp::kGt: return ">";
    case CmpOp::kGe: return ">=";
    default: return "==";
  }
}

bool is_sequence_kind(const Value& v) {
  if (!v.is_list()) return false;
  const auto k = v.as_list().kind;
  return k == ListObj::Kind::kList || k == ListObj::Kind::kTuple || k == ListObj::Kind::kRange;
}

// Python slice index normalisation (PySlice_AdjustIndices); returns the selected indices.
std::vector<int64_t> slice_indices(int64_t len, const Value& start_v, const Value& stop_v, const Value& step_v) {
  auto as_index = [](const Value& v, bool& present) -> int64_t {
    present = !(v.is_none() || v.is_undefined());
    if (!present) return 0;
    if (!v.is_integral()) throw EvalError{"\x01slice", false};  // TypeError: sandbox turns it into undefined
    return v.as_int();
  };
  bool has_start, has_stop, has_step;
  int64_t step = as_index(step_v, has_step);
  if (!has_step) step = 1;
  if (step == 0) eval_fail("slice step cannot be zero");
  int64_t start = as_index(start_v, has_start);
  int64_t stop = as_index(stop_v, has_stop);
  auto adjust = [&](int64_t& i, bool present, int64_t dflt) {
    if (!present) {
      i = dflt;
      return;
    }
    if (i < 0) {
      i += len;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= len) {
      i = step < 0 ? len - 1 : len;
    }
  };
  adjust(start, has_start, step < 0 ? len - 1 : 0);
  adjust(stop, has_stop, step < 0 ? -1 : len);
  std::vector<int64_t> out;
  if (step > 0) {
    for (int64_t i = start; i < stop; i += step) out.push_back(i);
  } else {
    for (int64_t i = start; i > stop; i += step) out.push_back(i);
  }
  return out;
}

}  // namespace

struct Interpreter::DepthGuard {
  explicit DepthGuard(Interpreter& in) : in(in) {
    if (++in.depth_ > kMaxEvalDepth) {
      --in.depth_;
      eval_fail("maximum recursion depth exceeded");
    }
  }
  ~DepthGuard() { --in.depth_; }
  Interpreter& in;
};

Interpreter::Interpreter(const Program& program, const DictObj& context, const RenderLimits& limits)
    : program_(program), context_(context), limits_(limits) {
  root_ = std::make_shared<Scope>();
  scope_ = root_;
}

Interpreter::~Interpreter() {
  for (auto& ns : namespaces_) ns->items.clear();
}

std::string Interpreter::render() {
  std::string out;
  try {
    exec(program_.body, out);
  } catch (const EvalError& e) {
    throw TemplateError(0, e.message, e.raised);
  }
  return out;
}

void Interpreter::check_string_size(size_t bytes) {
  if (bytes > limits_.max_string_bytes) {
    eval_fail("string of " + std::to_string(bytes) + " bytes exceeds the limit of " +
              std::to_string(limits_.max_string_bytes));
  }
}

Value Interpreter::make_string(std::string s) {
  check_string_size(s.size());
  charge(s.size() / 16);
  return Value::string(std::move(s));
}

Value Interpreter::make_list(std::vector<Value> items, ListObj::Kind kind) {
  if (items.size() > limits_.max_list_items) {
    eval_fail("list of " + std::to_string(items.size()) + " items exceeds the limit of " +
              std::to_string(limits_.max_list_items));
  }
  charge(items.size());
  try {
    return Value::list(std::move(items), kind);
  } catch (const Error& e) {
    eval_fail(e.what());
  }
}

Value Interpreter::make_namespace() {
  auto d = std::make_shared<DictObj>();
  d->is_namespace = true;
  namespaces_.push_back(d);
  charge(1);
  return Value::dict(std::move(d));
}

// ---------------------------------------------------------------- statements

Interpreter::Flow Interpreter::exec(const Body& body, std::string& out) {
  for (const auto& s : body) {
    const Flow f = exec_stmt(*s, out);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

void Interpreter::emit(std::string& out, const Value& v) {
  append_str(out, v);
  if (out.size() > limits_.max_output_bytes) {
    eval_fail("rendered output exceeds the limit of " + std::to_string(limits_.max_output_bytes) + " bytes");
  }
}

Interpreter::Flow Interpreter::exec_stmt(const Stmt& s, std::string& out) {
  DepthGuard guard(*this);
  try {
    charge(1);
    switch (s.kind) {
      case StmtKind::kOutput:
        out += s.text;
        if (out.size() > limits_.max_output_bytes) {
          eval_fail("rendered output exceeds the limit of " + std::to_string(limits_.max_output_bytes) + " bytes");
        }
        return Flow::kNormal;
      case StmtKind::kPrint: emit(out, eval(*s.expr)); return Flow::kNormal;
      case StmtKind::kIf: {
        Flow flow = Flow::kNormal;
        exec_if(s, out, flow);
        return flow;
      }
      case StmtKind::kFor: {
        const Value iterable = eval(*s.expr);
        exec_for(s, iterable, 0, out);
        return Flow::kNormal;
      }
      case StmtKind::kSet: assign(s.target, eval(*s.expr)); return Flow::kNormal;
      case StmtKind::kSetBlock:
      case StmtKind::kFilterBlock: {
        std::string buf;
        auto saved = scope_;
        scope_ = std::make_shared<Scope>(Scope{saved, {}});
        Flow f;
        try {
          f = exec(s.body, buf);
        } catch (...) {
          scope_ = saved;
          throw;
        }
        scope_ = saved;
        Value v = make_string(std::move(buf));
        // Apply the filter chain innermost-first (the innermost filter's target is null: the body).
        std::vector<const Expr*> chain;
        for (const Expr* f2 = s.expr.get(); f2 != nullptr; f2 = f2->target.get()) chain.push_back(f2);
        for (auto it = chain.rbegin(); it != chain.rend(); ++it) v = eval_filter(**it, v);
        if (s.kind == StmtKind::kSetBlock) {
          assign(s.target, v);
        } else {
          emit(out, v);
        }
        return f;
      }
      case StmtKind::kMacro:
        scope_->set(s.macro->name, Value::callable(std::make_shared<MacroCallable>(s.macro, scope_)));
        return Flow::kNormal;
      case StmtKind::kCallBlock: {
        CallArgs args;
        const Expr& call = *s.expr;
        Value callee;
        if (call.target->kind == ExprKind::kGetattr) {
          callee = getattr(eval(*call.target->target), call.target->name);
        } else {
          callee = eval(*call.target);
        }
        eval_args(call, args);
        args.kw.emplace_back("caller", Value::callable(std::make_shared<MacroCallable>(s.macro, scope_)));
        try {
          emit(out, this->call(callee, args));
        } catch (const EvalError& e) {
          throw TemplateError(call.line, e.message, e.raised);
        }
        return Flow::kNormal;
      }
      case StmtKind::kWith:
      case StmtKind::kScope: {
        std::vector<Value> values;
        for (const auto& v : s.with_values) values.push_back(eval(*v));
        auto saved = scope_;
        scope_ = std::make_shared<Scope>(Scope{saved, {}});
        Flow f;
        try {
          for (size_t i = 0; i < values.size(); ++i) assign(s.with_targets[i], values[i]);
          f = exec(s.body, out);
        } catch (...) {
          scope_ = saved;
          throw;
        }
        scope_ = saved;
        return f;
      }
      case StmtKind::kBreak: return Flow::kBreak;
      case StmtKind::kContinue: return Flow::kContinue;
    }
  } catch (const EvalError& e) {
    throw TemplateError(s.line, e.message, e.raised);
  }
  return Flow::kNormal;
}

void Interpreter::exec_if(const Stmt& s, std::string& out, Flow& flow) {
  for (const auto& [test, body] : s.branches) {
    if (test == nullptr || truthy(eval(*test))) {
      flow = exec(body, out);
      return;
    }
  }
}

Interpreter::Flow Interpreter::exec_for(const Stmt& s, const Value& iterable, int depth, std::string& out) {
  std::vector<Value> items = iterate(iterable);
  auto saved = scope_;
  auto restore = [&] { scope_ = saved; };
  try {
    if (s.cond) {
      std::vector<Value> kept;
      for (Value& item : items) {
        scope_ = std::make_shared<Scope>(Scope{saved, {}});
        assign(s.target, item);
        if (truthy(eval(*s.cond))) kept.push_back(std::move(item));
        scope_ = saved;
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      scope_ = std::make_shared<Scope>(Scope{saved, {}});
      const Flow f = exec(s.else_body, out);
      restore();
      return f;
    }
    auto list = std::make_shared<ListObj>();
    list->items = std::move(items);
    auto loop = std::make_shared<LoopObj>();
    loop->items = list;
    loop->depth0 = depth;
    if (s.recursive) loop->recurse = std::make_shared<LoopRecurse>(&s, saved, depth);
    const Value loop_value = Value::loop(loop);
    for (size_t i = 0; i < list->items.size(); ++i) {
      loop->index0 = i;
      scope_ = std::make_shared<Scope>(Scope{saved, {}});
      assign(s.target, list->items[i]);
      scope_->vars.emplace_back("loop", loop_value);
      const Flow f = exec(s.body, out);
      if (f == Flow::kBreak) break;
    }
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return Flow::kNormal;
}

Value Interpreter::call_loop(const Stmt& stmt, const std::weak_ptr<Scope>& scope, const Value& iterable, int depth) {
  if (++call_depth_ > limits_.max_call_depth) {
    --call_depth_;
    eval_fail("maximum recursion depth exceeded");
  }
  auto saved = scope_;
  scope_ = scope.lock();
  if (!scope_) scope_ = root_;
  std::string buf;
  try {
    exec_for(stmt, iterable, depth, buf);
  } catch (...) {
    scope_ = saved;
    --call_depth_;
    throw;
  }
  scope_ = saved;
  --call_depth_;
  return make_string(std::move(buf));
}

void Interpreter::assign(const Target& t, const Value& v) {
  switch (t.kind) {
    case Target::Kind::kName: scope_->set(t.name, v); return;
    case Target::Kind::kNsAttr: {
      const Value ns = lookup(t.name);
      if (!ns.is_namespace()) eval_fail("cannot assign attribute on non-namespace object");
      if (!t.attr.empty() && t.attr[0] == '_') {
        eval_fail("Chat templates cannot store underscore-prefixed attributes on a namespace, but got " +
                  repr(Value::string(t.attr)) + ". Please rename the attribute.");
      }
      try {
        ns.mutable_dict().set(Value::string(t.attr), v);
      } catch (const Error& e) {
        eval_fail(e.what());
      }
      return;
    }
    case Target::Kind::kTuple: {
      std::vector<Value> items = iterate(v);
      if (items.size() < t.items.size()) {
        eval_fail("not enough values to unpack (expected " + std::to_string(t.items.size()) + ", got " +
                  std::to_string(items.size()) + ")");
      }
      if (items.size() > t.items.size()) {
        eval_fail("too many values to unpack (expected " + std::to_string(t.items.size()) + ")");
      }
      for (size_t i = 0; i < items.size(); ++i) assign(t.items[i], items[i]);
      return;
    }
  }
}

Value Interpreter::call_macro(const MacroDef& m, const std::weak_ptr<Scope>& closure, CallArgs& args) {
  if (++call_depth_ > limits_.max_call_depth) {
    --call_depth_;
    eval_fail("maximum recursion depth exceeded (macro '" + m.name + "')");
  }
  struct CallDepth {
    int& d;
    ~CallDepth() { --d; }
  } call_depth{call_depth_};
  auto scope = std::make_shared<Scope>();
  scope->parent = closure.lock();
  if (!scope->parent) scope->parent = root_;
  const size_t n = m.params.size();
  std::vector<bool> bound(n, false);
  std::vector<Value> values(n);
  for (size_t i = 0; i < n && i < args.pos.size(); ++i) {
    values[i] = args.pos[i];
    bound[i] = true;
  }
  auto take_kw = [&](const std::string& name, Value& out) {
    for (auto it = args.kw.begin(); it != args.kw.end(); ++it) {
      if (it->first == name) {
        out = std::move(it->second);
        args.kw.erase(it);
        return true;
      }
    }
    return false;
  };
  for (size_t i = args.pos.size(); i < n; ++i) bound[i] = take_kw(m.params[i], values[i]);
  if (m.uses_caller) {
    Value caller;
    if (!take_kw("caller", caller)) caller = Value::undefined("No caller defined");
    scope->vars.emplace_back("caller", std::move(caller));
  }
  if (m.catch_kwargs) {
    auto d = std::make_shared<DictObj>();
    for (auto& [k, v] : args.kw) d->set(Value::string(k), std::move(v));
    scope->vars.emplace_back("kwargs", Value::dict(std::move(d)));
  } else if (!args.kw.empty()) {
    if (std::any_of(args.kw.begin(), args.kw.end(), [](const auto& kv) { return kv.first == "caller"; })) {
      eval_fail("macro '" + m.name +
                "' was invoked with two values for the special caller argument. This is most likely a bug.");
    }
    eval_fail("macro '" + m.name + "' takes no keyword argument '" + args.kw.front().first + "'");
  }
  if (m.catch_varargs) {
    std::vector<Value> extra;
    for (size_t i = n; i < args.pos.size(); ++i) extra.push_back(args.pos[i]);
    scope->vars.emplace_back("varargs", make_list(std::move(extra), ListObj::Kind::kTuple));
  } else if (args.pos.size() > n) {
    eval_fail("macro '" + m.name + "' takes not more than " + std::to_string(n) + " argument(s)");
  }
  auto saved = scope_;
  scope_ = scope;
  std::string buf;
  try {
    for (size_t i = 0; i < n; ++i) {
      if (!bound[i]) {
        values[i] = m.defaults[i]
                        ? eval(*m.defaults[i])
                        : Value::undefined("parameter " + repr(Value::string(m.params[i])) + " was not provided");
      }
      scope->set(m.params[i], values[i]);
    }
    exec(m.body, buf);
  } catch (...) {
    scope_ = saved;
    throw;
  }
  scope_ = saved;
  return make_string(std::move(buf));
}

// ---------------------------------------------------------------- expressions

Value Interpreter::lookup(const std::string& name) {
  for (const Scope* s = scope_.get(); s != nullptr; s = s->parent.get()) {
    if (const Value* v = s->find_local(name)) return *v;
  }
  if (const Value* v = context_.find(std::string_view(name))) return *v;
  if (const Value* v = find_global(name)) return *v;
  return Value::undefined(repr(Value::string(name)) + " is undefined");
}

Value Interpreter::eval(const Expr& e) {
  DepthGuard guard(*this);
  try {
    charge(1);
    return eval_impl(e);
  } catch (const EvalError& err) {
    if (!err.message.empty() && err.message[0] == '\x01') throw;  // internal signal, handled by the caller
    throw TemplateError(e.line, err.message, err.raised);
  }
}

Value Interpreter::eval_impl(const Expr& e) {
  switch (e.kind) {
    case ExprKind::kConst: return e.value;
    case ExprKind::kName: return lookup(e.name);
    case ExprKind::kGetattr: return getattr(eval(*e.target), e.name);
    case ExprKind::kGetitem: return eval_getitem(e);
    case ExprKind::kSlice: eval_fail("slice outside of a subscript");
    case ExprKind::kCall: return eval_call(e);
    case ExprKind::kFilter: return eval_filter(e, eval(*e.target));
    case ExprKind::kTest: return eval_test(e);
    case ExprKind::kNeg:
    case ExprKind::kPos: {
      const Value v = eval(*e.target);
      const bool neg = e.kind == ExprKind::kNeg;
      if (v.is_integral()) return Value::integer(neg ? checked(-static_cast<__int128>(v.as_int())) : v.as_int());
      if (v.is_float()) return Value::floating(neg ? -v.as_float() : v.as_float());
      if (v.is_undefined()) fail_undefined(v);
      eval_fail(std::string("bad operand type for unary ") + (neg ? "-" : "+") + ": '" + type_name(v) + "'");
    }
    case ExprKind::kNot: return Value::boolean(!truthy(eval(*e.target)));
    case ExprKind::kBinary: {
      Value a = eval(*e.target);
      const Value b = eval(*e.args[0]);
      if (e.op == BinOp::kAdd && a.is_string() && b.is_string() && a.object().use_count() == 1) {
        // `x + y + z` chains: the left operand is a temporary nobody else holds, so append to it.
        check_string_size(a.as_string().size() + b.as_string().size());
        charge(b.as_string().size() / 16);
        static_cast<StrObj&>(*a.object()).s += b.as_string();
        return a;
      }
      return binary_op(e.op, a, b);
    }
    case ExprKind::kAnd: {
      Value a = eval(*e.target);
      if (!truthy(a)) return a;
      return eval(*e.args[0]);
    }
    case ExprKind::kOr: {
      Value a = eval(*e.target);
      if (truthy(a)) return a;
      return eval(*e.args[0]);
    }
    case ExprKind::kCompare: return eval_compare(e);
    case ExprKind::kConcat: {
      std::string s;
      for (const auto& a : e.args) {
        append_str(s, eval(*a));
        check_string_size(s.size());
      }
      return make_string(std::move(s));
    }
    case ExprKind::kCond: {
      if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
      if (e.args[2]) return eval(*e.args[2]);
      return Value::undefined("the inline if-expression on line " + std::to_string(e.line) +
                              " evaluated to false and no else section was defined.");
    }
    case ExprKind::kList:
    case ExprKind::kTuple: {
      std::vector<Value> items;
      items.reserve(e.args.size());
      for (const auto& a : e.args) items.push_back(eval(*a));
      return make_list(std::move(items), e.kind == ExprKind::kList ? ListObj::Kind::kList : ListObj::Kind::kTuple);
    }
    case ExprKind::kDict: {
      auto d = std::make_shared<DictObj>();
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        Value k = eval(*e.args[i]);
        Value v = eval(*e.args[i + 1]);
        hash_key(k);  // unhashable keys raise TypeError
        d->set(std::move(k), std::move(v));
      }
      return Value::dict(std::move(d));
    }
  }
  return Value();
}

void Interpreter::eval_args(const Expr& e, CallArgs& args) {
  args.pos.reserve(e.args.size());
  for (const auto& a : e.args) args.pos.push_back(eval(*a));
  if (e.dyn_args) {
    for (Value& v : iterate(eval(*e.dyn_args))) args.pos.push_back(std::move(v));
  }
  for (const auto& [k, v] : e.kwargs) args.kw.emplace_back(k, eval(*v));
  if (e.dyn_kwargs) {
    const Value d = eval(*e.dyn_kwargs);
    if (!d.is_dict()) eval_fail("argument after ** must be a mapping, not " + type_name(d));
    for (const auto& [k, v] : d.as_dict().items) {
      if (!k.is_string()) eval_fail("keywords must be strings");
      args.kw.emplace_back(k.as_string(), v);
    }
  }
}

Value Interpreter::eval_call(const Expr& e) {
  if (e.target->kind == ExprKind::kGetattr) {
    // Method calls skip materialising a bound method.
    const Value obj = eval(*e.target->target);
    const std::string& name = e.target->name;
    if ((obj.is_string() || obj.is_list() || obj.is_dict()) && name.rfind("__", 0) != 0) {
      const MethodKind kind = find_method(obj, name);
      if (kind == MethodKind::kSafe) {
        CallArgs args;
        eval_args(e, args);
        return call_method(*this, obj, name, args);
      }
      if (kind == MethodKind::kUnsafe) eval_fail(unsafe_hint(obj, name));
    }
    const Value callee = getattr(obj, name);
    CallArgs args;
    eval_args(e, args);
    return call(callee, args);
  }
  const Value callee = eval(*e.target);
  CallArgs args;
  eval_args(e, args);
  return call(callee, args);
}

Value Interpreter::call(const Value& callee, CallArgs& args) {
  if (callee.is_callable()) return callee.as_callable().call(*this, args, 0);
  if (callee.is_undefined()) fail_undefined(callee);
  if (callee.is_loop()) {
    LoopObj& l = callee.as_loop();
    if (!l.recurse) eval_fail("The loop must be marked 'recursive' to be called recursively.");
    return l.recurse->call(*this, args, 0);
  }
  eval_fail("'" + type_name(callee) + "' object is not callable");
}

Value Interpreter::eval_filter(const Expr& e, const Value& operand) {
  if (e.filter == nullptr) eval_fail("No filter named " + repr(Value::string(e.name)) + " found.");
  CallArgs args;
  eval_args(e, args);
  return e.filter(*this, operand, args);
}

Value Interpreter::apply_filter(std::string_view name, const Value& v, CallArgs& args) {
  const FilterFn f = find_filter(name);
  if (f == nullptr) eval_fail("No filter named " + repr(Value::string(std::string(name))) + ".");
  return f(*this, v, args);
}

bool Interpreter::apply_test(std::string_view name, const Value& v, CallArgs& args) {
  const TestFn t = find_test(name);
  if (t == nullptr) eval_fail("No test named " + repr(Value::string(std::string(name))) + ".");
  return t(*this, v, args);
}

Value Interpreter::eval_test(const Expr& e) {
  if (e.test == nullptr) eval_fail("No test named " + repr(Value::string(e.name)) + " found.");
  const Value v = eval(*e.target);
  CallArgs args;
  eval_args(e, args);
  return Value::boolean(e.test(*this, v, args));
}

Value Interpreter::eval_compare(const Expr& e) {
  Value left = eval(*e.target);
  for (size_t i = 0; i < e.cmp_ops.size(); ++i) {
    Value right = eval(*e.args[i]);
    if (!compare(e.cmp_ops[i], left, right)) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

bool Interpreter::compare(CmpOp op, const Value& a, const Value& b) {
  switch (op) {
    case CmpOp::kEq: return equals(a, b);
    case CmpOp::kNe: return !equals(a, b);
    case CmpOp::kIn: return contains(b, a);
    case CmpOp::kNotIn: return !contains(b, a);
    default: break;
  }
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  const bool orderable = (a.is_number() && b.is_number()) || (a.is_string() && b.is_string()) ||
                         (is_sequence_kind(a) && is_sequence_kind(b) && a.as_list().kind == b.as_list().kind &&
                          a.as_list().kind != ListObj::Kind::kRange);
  if (!orderable) {
    eval_fail(std::string("'") + cmp_symbol(op) + "' not supported between instances of '" + type_name(a) + "' and '" +
              type_name(b) + "'");
  }
  try {
    switch (op) {
      case CmpOp::kLt: return less_than(a, b);
      case CmpOp::kLe: return !less_than(b, a);
      case CmpOp::kGt: return less_than(b, a);
      case CmpOp::kGe: return !less_than(a, b);
      default: return false;
    }
  } catch (const Error& err) {
    eval_fail(err.what());
  }
}

bool Interpreter::contains(const Value& c, const Value& item) {
  switch (c.type()) {
    case Value::Type::kString:
      if (!item.is_string()) {
        if (item.is_undefined()) fail_undefined(item);
        eval_fail("'in <string>' requires string as left operand, not " + type_name(item));
      }
      return c.as_string().find(item.as_string()) != std::string::npos;
    case Value::Type::kList: {
      const ListObj& l = c.as_list();
      const size_t start = l.kind == ListObj::Kind::kGenerator ? l.consumed : 0;
      for (size_t i = start; i < l.items.size(); ++i) {
        if (equals(l.items[i], item)) {
          if (l.kind == ListObj::Kind::kGenerator) c.mutable_list().consumed = i + 1;
          return true;
        }
      }
      if (l.kind == ListObj::Kind::kGenerator) c.mutable_list().consumed = l.items.size();
      return false;
    }
    case Value::Type::kDict:
      if (c.is_namespace()) break;
      try {
        hash_key(item);
      } catch (const Error& err) {
        eval_fail(err.what());
      }
      return c.as_dict().find(item) != nullptr;
    case Value::Type::kUndefined: return false;
    default: break;
  }
  eval_fail("argument of type '" + type_name(c) + "' is not iterable");
}

std::vector<Value> Interpreter::iterate(const Value& v) {
  switch (v.type()) {
    case Value::Type::kList: {
      ListObj& l = v.mutable_list();
      charge(l.items.size());
      if (l.kind == ListObj::Kind::kGenerator) {
        std::vector<Value> rest(l.items.begin() + static_cast<std::ptrdiff_t>(l.consumed), l.items.end());
        l.consumed = l.items.size();
        return rest;
      }
      return l.items;
    }
    case Value::Type::kString: {
      const std::string& s = v.as_string();
      std::vector<Value> out;
      out.reserve(s.size());
      for (size_t pos = 0; pos < s.size();) {
        const size_t start = pos;
        decode_utf8(s, pos);
        out.push_back(Value::string(s.substr(start, pos - start)));
      }
      charge(out.size());
      return out;
    }
    case Value::Type::kDict: {
      if (v.is_namespace()) break;
      std::vector<Value> out;
      for (const auto& kv : v.as_dict().items) out.push_back(kv.first);
      charge(out.size());
      return out;
    }
    case Value::Type::kUndefined: return {};
    default: break;
  }
  eval_fail("'" + type_name(v) + "' object is not iterable");
}

Value Interpreter::getattr(const Value& obj, std::string_view name) {
  if (obj.is_undefined()) fail_undefined(obj);
  const bool dunder = name.size() >= 2 && name.substr(0, 2) == "__";
  if (obj.is_string() || obj.is_list() || obj.is_dict()) {
    const MethodKind kind = dunder ? MethodKind::kNone : find_method(obj, name);
    if (kind == MethodKind::kSafe) return Value::callable(std::make_shared<BoundMethod>(obj, std::string(name)));
    if (kind == MethodKind::kUnsafe || dunder) return Value::undefined(unsafe_hint(obj, name));
  }
  if (obj.is_dict() || obj.is_namespace()) {
    if (const Value* v = obj.as_dict().find(name)) return *v;
    return Value::undefined(no_attribute(obj, name));
  }
  if (obj.is_loop()) {
    const LoopObj& l = obj.as_loop();
    const int64_t i = static_cast<int64_t>(l.index0);
    const int64_t n = static_cast<int64_t>(l.items->items.size());
    if (name == "index0") return Value::integer(i);
    if (name == "index") return Value::integer(i + 1);
    if (name == "revindex") return Value::integer(n - i);
    if (name == "revindex0") return Value::integer(n - i - 1);
    if (name == "first") return Value::boolean(i == 0);
    if (name == "last") return Value::boolean(i == n - 1);
    if (name == "length") return Value::integer(n);
    if (name == "depth") return Value::integer(l.depth0 + 1);
    if (name == "depth0") return Value::integer(l.depth0);
    if (name == "previtem") return i > 0 ? l.items->items[i - 1] : Value::undefined("there is no previous item");
    if (name == "nextitem") return i + 1 < n ? l.items->items[i + 1] : Value::undefined("there is no next item");
    if (name == "cycle" || name == "changed") {
      auto self = std::static_pointer_cast<LoopObj>(obj.object());
      return Value::callable(std::make_shared<LoopMethod>(std::move(self), name == "cycle"));
    }
  }
  if (dunder) return Value::undefined(unsafe_hint(obj, name));
  return Value::undefined(no_attribute(obj, name));
}

Value Interpreter::getitem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) fail_undefined(obj);
  if (key.is_integral() && (obj.is_string() || is_sequence_kind(obj))) {
    const int64_t k = key.as_int();
    if (obj.is_string()) {
      const std::string& s = obj.as_string();
      if (is_ascii(s)) {
        const int64_t n = static_cast<int64_t>(s.size());
        const int64_t i = k < 0 ? k + n : k;
        if (i >= 0 && i < n) return Value::string(std::string(1, s[i]));
      } else {
        const std::vector<char32_t> cps = to_code_points(s);
        const int64_t n = static_cast<int64_t>(cps.size());
        const int64_t i = k < 0 ? k + n : k;
        if (i >= 0 && i < n) return Value::string(from_code_points(&cps[i], &cps[i] + 1));
      }
    } else {
      const auto& items = obj.as_list().items;
      const int64_t n = static_cast<int64_t>(items.size());
      const int64_t i = k < 0 ? k + n : k;
      if (i >= 0 && i < n) return items[i];
    }
    return Value::undefined(no_element(obj, key));
  }
  if (obj.is_dict()) {
    bool hashable = true;
    try {
      hash_key(key);
    } catch (const Error&) {
      hashable = false;
    }
    if (hashable) {
      if (const Value* v = obj.as_dict().find(key)) return *v;
    }
  }
  if (key.is_string()) return getattr(obj, key.as_string());
  return Value::undefined(no_element(obj, key));
}

Value Interpreter::eval_getitem(const Expr& e) {
  const Value obj = eval(*e.target);
  const Expr& idx = *e.args[0];
  if (idx.kind != ExprKind::kSlice) return getitem(obj, eval(idx));
  Value parts[3];
  for (int i = 0; i < 3; ++i) parts[i] = idx.args[i] ? eval(*idx.args[i]) : Value::none();
  if (obj.is_undefined()) fail_undefined(obj);
  const bool is_str = obj.is_string();
  if (!is_str && !is_sequence_kind(obj)) {
    return Value::undefined(object_type_repr(obj) + " has no element slice(" + repr(parts[0]) + ", " + repr(parts[1]) +
                            ", " + repr(parts[2]) + ")");
  }
  std::vector<int64_t> indices;
  try {
    if (is_str) {
      const std::string& s = obj.as_string();
      if (is_ascii(s)) {
        indices = slice_indices(static_cast<int64_t>(s.size()), parts[0], parts[1], parts[2]);
        std::string out;
        out.reserve(indices.size());
        for (int64_t i : indices) out += s[i];
        return make_string(std::move(out));
      }
      const std::vector<char32_t> cps = to_code_points(s);
      indices = slice_indices(static_cast<int64_t>(cps.size()), parts[0], parts[1], parts[2]);
      std::string out;
      for (int64_t i : indices) encode_utf8(cps[i], out);
      return make_string(std::move(out));
    }
    const auto& items = obj.as_list().items;
    indices = slice_indices(static_cast<int64_t>(items.size()), parts[0], parts[1], parts[2]);
  } catch (const EvalError& err) {
    if (err.message == "\x01slice") {
      return Value::undefined(object_type_repr(obj) + " has no element slice(" + repr(parts[0]) + ", " +
                              repr(parts[1]) + ", " + repr(parts[2]) + ")");
    }
    throw;
  }
  std::vector<Value> out;
  out.reserve(indices.size());
  const auto& items = obj.as_list().items;
  for (int64_t i : indices) out.push_back(items[i]);
  const auto kind = obj.as_list().kind == ListObj::Kind::kTuple ? ListObj::Kind::kTuple : ListObj::Kind::kList;
  return make_list(std::move(out), kind);
}

Value Interpreter::binary_op(BinOp op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  const bool nums = a.is_number() && b.is_number();
  const bool ints = a.is_integral() && b.is_integral();
  auto unsupported = [&]() -> Value {
    eval_fail(std::string("unsupported operand type(s) for ") + op_symbol(op) + ": '" + type_name(a) + "' and '" +
              type_name(b) + "'");
  };
  switch (op) {
    case BinOp::kAdd:
      if (ints) return Value::integer(checked(static_cast<__int128>(a.as_int()) + b.as_int()));
      if (nums) return Value::floating(a.as_float() + b.as_float());
      if (a.is_string()) {
        if (!b.is_string()) eval_fail("can only concatenate str (not \"" + type_name(b) + "\") to str");
        check_string_size(a.as_string().size() + b.as_string().size());
        return make_string(a.as_string() + b.as_string());
      }
      if (is_sequence_kind(a) && a.as_list().kind != ListObj::Kind::kRange) {
        const auto kind = a.as_list().kind;
        if (!b.is_list() || b.as_list().kind != kind) {
          eval_fail(std::string("can only concatenate ") + type_name(a) + " (not \"" + type_name(b) + "\") to " +
                    type_name(a));
        }
        std::vector<Value> items = a.as_list().items;
        if (items.size() + b.as_list().items.size() > limits_.max_list_items) eval_fail("list too long");
        items.insert(items.end(), b.as_list().items.begin(), b.as_list().items.end());
        return make_list(std::move(items), kind);
      }
      return unsupported();
    case BinOp::kSub:
      if (ints) return Value::integer(checked(static_cast<__int128>(a.as_int()) - b.as_int()));
      if (nums) return Value::floating(a.as_float() - b.as_float());
      return unsupported();
    case BinOp::kMul: {
      if (ints) return Value::integer(checked(static_cast<__int128>(a.as_int()) * b.as_int()));
      if (nums) return Value::floating(a.as_float() * b.as_float());
      const Value* seq = nullptr;
      const Value* count = nullptr;
      if ((a.is_string() || is_sequence_kind(a)) && b.is_integral()) {
        seq = &a;
        count = &b;
      } else if ((b.is_string() || is_sequence_kind(b)) && a.is_integral()) {
        seq = &b;
        count = &a;
      }
      if (seq == nullptr) {
        if (a.is_string() || is_sequence_kind(a) || b.is_string() || is_sequence_kind(b)) {
          const Value& other = (a.is_string() || is_sequence_kind(a)) ? b : a;
          eval_fail("can't multiply sequence by non-int of type '" + type_name(other) + "'");
        }
        return unsupported();
      }
      const int64_t n = std::max<int64_t>(0, count->as_int());
      if (seq->is_string()) {
        const std::string& s = seq->as_string();
        if (!s.empty() && static_cast<uint64_t>(n) > limits_.max_string_bytes / s.size()) {
          check_string_size(limits_.max_string_bytes + 1);
        }
        std::string out;
        out.reserve(s.size() * n);
        for (int64_t i = 0; i < n; ++i) out += s;
        return make_string(std::move(out));
      }
      const auto& items = seq->as_list().items;
      if (!items.empty() && static_cast<uint64_t>(n) > limits_.max_list_items / items.size()) {
        eval_fail("list too long");
      }
      std::vector<Value> out;
      out.reserve(items.size() * n);
      for (int64_t i = 0; i < n; ++i) out.insert(out.end(), items.begin(), items.end());
      const auto kind = seq->as_list().kind == ListObj::Kind::kTuple ? ListObj::Kind::kTuple : ListObj::Kind::kList;
      return make_list(std::move(out), kind);
    }
    case BinOp::kDiv:
      if (!nums) return unsupported();
      if (b.as_float() == 0) eval_fail(ints ? "division by zero" : "float division by zero");
      return Value::floating(a.as_float() / b.as_float());
    case BinOp::kFloorDiv:
      if (!nums) return unsupported();
      if (ints) {
        if (b.as_int() == 0) eval_fail("integer division or modulo by zero");
        return Value::integer(floor_div(a.as_int(), b.as_int()));
      }
      if (b.as_float() == 0) eval_fail("float floor division by zero");
      return Value::floating(std::floor((a.as_float() - py_fmod(a.as_float(), b.as_float())) / b.as_float() + 0.0));
    case BinOp::kMod:
      if (a.is_string()) {
        std::vector<Value> args;
        if (b.is_list() && b.as_list().kind == ListObj::Kind::kTuple) {
          args = b.as_list().items;
        } else {
          args.push_back(b);
        }
        return make_string(percent_format(*this, a.as_string(), args, b.is_dict() ? &b : nullptr));
      }
      if (!nums) return unsupported();
      if (ints) {
        if (b.as_int() == 0) eval_fail("integer modulo by zero");
        return Value::integer(py_mod(a.as_int(), b.as_int()));
      }
      if (b.as_float() == 0) eval_fail("float modulo");
      return Value::floating(py_fmod(a.as_float(), b.as_float()));
    case BinOp::kPow: {
      if (!nums) return unsupported();
      if (ints && b.as_int() >= 0) {
        __int128 result = 1;
        __int128 base = a.as_int();
        int64_t exp = b.as_int();
        while (exp > 0) {
          if (exp & 1) result = checked(result * base);
          exp >>= 1;
          if (exp > 0) base = checked(base * base);
        }
        return Value::integer(static_cast<int64_t>(result));
      }
      const double x = a.as_float(), y = b.as_float();
      if (x == 0 && y < 0) eval_fail("0.0 cannot be raised to a negative power");
      if (x < 0 && std::floor(y) != y) eval_fail("complex results are not supported");
      const double r = std::pow(x, y);
      if (std::isinf(r) && !std::isinf(x) && !std::isinf(y)) eval_fail("(34, 'Numerical result out of range')");
      return Value::floating(r);
    }
  }
  return unsupported();
}

}  // namespace pagoda::jinja
