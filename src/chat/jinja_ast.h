// The syntax tree a template parses into (once), mirroring jinja2.nodes. The interpreter walks it
// for every render; nothing in it changes after parsing, so one tree serves concurrent renders.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chat/jinja_value.h"

namespace pagoda::jinja {

class Interpreter;

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

// A filter gets the value being filtered and the call arguments; a test likewise.
using FilterFn = Value (*)(Interpreter& in, const Value& value, CallArgs& args);
using TestFn = bool (*)(Interpreter& in, const Value& value, CallArgs& args);

enum class ExprKind : uint8_t {
  kConst,
  kName,
  kGetattr,  // target.name
  kGetitem,  // target[args[0]]
  kSlice,    // args: start, stop, step (each may be null); only inside kGetitem
  kCall,     // target(args, kwargs, *dyn_args, **dyn_kwargs)
  kFilter,   // target|name(args...); target is null inside {% filter %} / {% set x | f %} blocks
  kTest,     // target is name(args...)
  kNeg,
  kPos,
  kNot,
  kBinary,  // target op args[0]
  kAnd,     // target and args[0]
  kOr,
  kCompare,  // target ops[0] args[0] ops[1] args[1] ...
  kConcat,   // args[0] ~ args[1] ~ ...
  kCond,     // args[0] if args[1] else args[2] (args[2] may be null)
  kList,
  kTuple,
  kDict,  // args: key0, value0, key1, value1, ...
};

enum class BinOp : uint8_t { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow };
enum class CmpOp : uint8_t { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind;
  int line;
  Value value;       // kConst
  std::string name;  // kName, kGetattr, kFilter, kTest
  ExprPtr target;
  std::vector<ExprPtr> args;  // may contain nulls (kSlice, kCond)
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr dyn_args, dyn_kwargs;
  BinOp op = BinOp::kAdd;
  std::vector<CmpOp> cmp_ops;
  FilterFn filter = nullptr;  // resolved at parse time; null when unknown (error when evaluated)
  TestFn test = nullptr;
};

// An assignment target: a name, a namespace attribute (`ns.x`, only in {% set %}) or a tuple.
struct Target {
  enum class Kind : uint8_t { kName, kNsAttr, kTuple };
  Kind kind = Kind::kName;
  std::string name;
  std::string attr;
  std::vector<Target> items;
  int line = 0;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct MacroDef {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // one per param; null where none is given
  Body body;
  bool catch_varargs = false;  // the body references `varargs`
  bool catch_kwargs = false;   // ... `kwargs`
  bool uses_caller = false;    // ... `caller`
  int line = 0;
};

enum class StmtKind : uint8_t {
  kOutput,  // text
  kPrint,   // {{ expr }}
  kIf,      // branches (test null for else)
  kFor,
  kSet,       // target = expr
  kSetBlock,  // {% set target | filter %}body{% endset %}
  kMacro,
  kCallBlock,    // {% call(args) expr %}body{% endcall %}: macro holds the caller's signature + body
  kFilterBlock,  // {% filter expr %}body{% endfilter %}
  kWith,
  kScope,  // body in a new scope ({% block %}, {% generation %}, {% autoescape %})
  kBreak,
  kContinue,
};

struct Stmt {
  StmtKind kind;
  int line;
  std::string text;  // kOutput
  ExprPtr expr;      // kPrint, kFor (iterable), kSet (value), kCallBlock (call), kFilterBlock / kSetBlock (filter)
  std::vector<std::pair<ExprPtr, Body>> branches;  // kIf
  Target target;                                   // kFor, kSet, kSetBlock
  ExprPtr cond;                                    // kFor: `for x in y if cond`
  Body body;                                       // kFor, kSetBlock, kFilterBlock, kWith, kScope
  Body else_body;                                  // kFor
  bool recursive = false;                          // kFor
  std::shared_ptr<MacroDef> macro;                 // kMacro, kCallBlock
  std::vector<Target> with_targets;                // kWith
  std::vector<ExprPtr> with_values;
};

struct Program {
  Body body;
};

// Parses template source; throws pagoda::Error("chat template line N: ...").
std::unique_ptr<Program> parse_program(std::string_view source);

// Builtin filters and tests by name (null when unknown).
FilterFn find_filter(std::string_view name);
TestFn find_test(std::string_view name);

}  // namespace pagoda::jinja
