// Tree-walking interpreter for a parsed template (jinja_ast.h). One Interpreter renders one
// template once; it owns the per-render state (scopes, output, resource budget) so that renders
// of the same Program can run on many threads at once.
//
// Scoping follows jinja2: every for-loop iteration, macro call and {% with %} block opens a new
// scope; {% if %} does not; {% set %} writes to the innermost scope; names that no scope defines
// come from the render context, then the globals. Macros see their defining scope by reference
// (so later top-level {% set %}s are visible), but hold it weakly: a macro that outlives its
// scope (stored in a namespace and called after the loop ended) sees the top-level scope instead.
//
// Hostile templates are bounded: recursion depth, output size, string/list sizes and the total
// work of a render are capped (RenderLimits), and exceeding a cap is a pagoda::Error.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "chat/jinja_ast.h"
#include "chat/jinja_error.h"
#include "chat/jinja_value.h"

namespace pagoda::jinja {

struct RenderLimits {
  size_t max_output_bytes = size_t{32} << 20;  // the rendered prompt
  size_t max_string_bytes = size_t{32} << 20;  // any one string value
  size_t max_list_items = size_t{1} << 20;     // any one list
  uint64_t max_work = 20'000'000;              // evaluation steps + items and bytes/16 produced (~2 s of CPU)
  int max_call_depth = 64;                     // nested macro calls
};

struct Scope {
  std::shared_ptr<Scope> parent;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* find_local(std::string_view name) const {
    for (const auto& [k, v] : vars) {
      if (k == name) return &v;
    }
    return nullptr;
  }
  void set(std::string_view name, Value v) {
    for (auto& [k, old] : vars) {
      if (k == name) {
        old = std::move(v);
        return;
      }
    }
    vars.emplace_back(std::string(name), std::move(v));
  }
};

class Interpreter {
 public:
  Interpreter(const Program& program, const DictObj& context, const RenderLimits& limits);
  ~Interpreter();

  std::string render();

  // ---- used by builtins ----
  const RenderLimits& limits() const { return limits_; }
  // Accounts work (evaluation steps, produced items or bytes / 16); fails past the budget.
  void charge(uint64_t units) {
    work_ += units;
    if (work_ > limits_.max_work) eval_fail("template rendering exceeded its work budget (runaway loop?)");
  }
  Value make_string(std::string s);
  void check_string_size(size_t bytes);
  Value make_list(std::vector<Value> items, ListObj::Kind kind = ListObj::Kind::kList);
  Value make_namespace();

  Value call(const Value& callee, CallArgs& args);
  Value getattr(const Value& obj, std::string_view name);
  Value getitem(const Value& obj, const Value& key);
  Value apply_filter(std::string_view name, const Value& v, CallArgs& args);
  bool apply_test(std::string_view name, const Value& v, CallArgs& args);
  // Items of an iterable (list, tuple, str chars, dict keys, generator); consumes generators.
  std::vector<Value> iterate(const Value& v);
  Value binary_op(BinOp op, const Value& a, const Value& b);
  bool compare(CmpOp op, const Value& a, const Value& b);
  bool contains(const Value& container, const Value& item);

  // Macro / caller invocation (used by the callable objects).
  Value call_macro(const MacroDef& m, const std::weak_ptr<Scope>& closure, CallArgs& args);
  // `loop(...)` of a recursive for loop.
  Value call_loop(const Stmt& stmt, const std::weak_ptr<Scope>& scope, const Value& iterable, int depth);

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Flow exec(const Body& body, std::string& out);
  Flow exec_stmt(const Stmt& s, std::string& out);
  Flow exec_for(const Stmt& s, const Value& iterable, int depth, std::string& out);
  void exec_if(const Stmt& s, std::string& out, Flow& flow);
  void assign(const Target& t, const Value& v);
  Value eval(const Expr& e);
  Value eval_impl(const Expr& e);
  Value eval_call(const Expr& e);
  Value eval_filter(const Expr& e, const Value& operand);
  Value eval_test(const Expr& e);
  Value eval_compare(const Expr& e);
  Value eval_getitem(const Expr& e);
  void eval_args(const Expr& e, CallArgs& args);
  Value lookup(const std::string& name);
  void emit(std::string& out, const Value& v);

  struct DepthGuard;

  const Program& program_;
  const DictObj& context_;
  RenderLimits limits_;
  std::shared_ptr<Scope> root_;
  std::shared_ptr<Scope> scope_;  // innermost
  uint64_t work_ = 0;
  int depth_ = 0;       // C++ recursion through eval/exec
  int call_depth_ = 0;  // macro calls
  // Namespaces created by this render: cleared at the end to break reference cycles.
  std::vector<std::shared_ptr<DictObj>> namespaces_;
};

// Globals every template sees (range, namespace, dict, raise_exception, strftime_now, ...).
const Value* find_global(std::string_view name);

// Methods of str / list / dict values: `'abc'.upper()`.
enum class MethodKind { kNone, kSafe, kUnsafe };
MethodKind find_method(const Value& self, std::string_view name);
Value call_method(Interpreter& in, const Value& self, std::string_view name, CallArgs& args);

}  // namespace pagoda::jinja
