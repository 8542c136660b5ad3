// Recursive-descent parser with jinja2.parser's grammar and precedence:
//   condexpr (a if b else c) < or < and < not < compare (== != < <= > >= in, not in)
//   < + - < ~ < * / // % < ** < unary - + < primary with postfix (.x [i] (args)) and filters (|f, is t).
// Note the jinja2 quirks kept here: filters and tests bind to the unary operand (`-x|abs` is
// `(-x)|abs`, `a + b is defined` is `a + (b is defined)`).
#include <algorithm>
#include <functional>
#include <set>

#include "base/error.h"
#include "chat/jinja_ast.h"
#include "chat/jinja_lexer.h"

// GCC 12 at -O3 reports false -Wrestrict overlaps inside std::string concatenation (GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace pagoda::jinja {

namespace {

constexpr int kMaxNesting = 128;  // expression and statement nesting (each level is a few C++ frames)

std::string describe(const Token& t) {
  switch (t.type) {
    case TokenType::kData: return "template data / text";
    case TokenType::kVariableBegin: return "begin of print statement";
    case TokenType::kVariableEnd: return "end of print statement";
    case TokenType::kBlockBegin: return "begin of statement block";
    case TokenType::kBlockEnd: return "end of statement block";
    case TokenType::kName:
    case TokenType::kOperator: return t.text;
    case TokenType::kString: return "string";
    case TokenType::kInteger: return "integer";
    case TokenType::kFloat: return "float";
    case TokenType::kEof: return "end of template";
  }
  return "token";
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  std::unique_ptr<Program> parse() {
    auto program = std::make_unique<Program>();
    program->body = subparse({});
    if (cur().type != TokenType::kEof) fail_unknown_tag(cur().text, cur().line);
    return program;
  }

 private:
  // ---- token stream ----
  const Token& cur() const { return toks_[pos_]; }
  const Token& look() const { return toks_[std::min(pos_ + 1, toks_.size() - 1)]; }
  const Token& next() {
    const Token& t = toks_[pos_];
    if (pos_ + 1 < toks_.size()) ++pos_;
    return t;
  }
  bool is_op(const char* op) const { return cur().type == TokenType::kOperator && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == TokenType::kName && cur().text == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }

  [[noreturn]] void fail(const std::string& msg, int line = 0) { syntax_error(line ? line : cur().line, msg); }

  [[noreturn]] void fail_expected(const std::string& what) {
    if (cur().type == TokenType::kEof) fail("unexpected end of template, expected " + quoted(what) + ".");
    fail("expected token " + quoted(what) + ", got " + quoted(describe(cur())));
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail_expected(op);
  }
  void expect_type(TokenType type, const char* what) {
    if (cur().type != type) fail_expected(what);
    next();
  }
  const Token& expect_name() {
    if (cur().type != TokenType::kName) fail_expected("name");
    return next();
  }
  void expect_keyword(const char* name) {
    if (!skip_name(name)) fail_expected(name);
  }
  void expect_block_end() { expect_type(TokenType::kBlockEnd, "end of statement block"); }

  struct DepthGuard {
    explicit DepthGuard(Parser& p) : p(p) {
      if (++p.depth_ > kMaxNesting)
        p.fail("template nesting is too deep (more than " + std::to_string(kMaxNesting) + " levels)");
    }
    ~DepthGuard() { --p.depth_; }
    Parser& p;
  };

  struct SoftGuard {  // jinja2 "soft frames": unknown filters inside if/condexpr fail only when run
    SoftGuard(Parser& p, bool soft) : p(p), saved(p.soft_) { p.soft_ = soft; }
    ~SoftGuard() { p.soft_ = saved; }
    Parser& p;
    bool saved;
  };

  // ---- errors for unknown / misplaced tags ----
  [[noreturn]] void fail_unknown_tag(const std::string& name, int line, bool eof = false,
                                     const std::vector<std::string>* extra = nullptr) {
    std::vector<std::vector<std::string>> stack = end_stack_;
    if (extra != nullptr) stack.push_back(*extra);
    std::set<std::string> expected;
    for (const auto& ends : stack) expected.insert(ends.begin(), ends.end());
    std::string msg = eof ? "Unexpected end of template." : "Encountered unknown tag " + quoted(name) + ".";
    if (!stack.empty()) {
      std::string looking;
      for (const auto& e : stack.back()) looking += (looking.empty() ? "" : " or ") + quoted(e);
      if (!eof && expected.count(name)) {
        msg += " You probably made a nesting mistake. Jinja is expecting this tag, but currently looking for " +
               looking + ".";
      } else {
        msg += " Jinja was looking for the following tags: " + looking + ".";
      }
    }
    if (!tag_stack_.empty())
      msg += " The innermost block that needs to be closed is " + quoted(tag_stack_.back()) + ".";
    fail(msg, line);
  }

  // ---- statements ----
  Body subparse(const std::vector<std::string>& end_tokens) {
    Body body;
    if (!end_tokens.empty()) end_stack_.push_back(end_tokens);
    while (cur().type != TokenType::kEof) {
      const Token& t = cur();
      if (t.type == TokenType::kData) {
        auto s = make_stmt(StmtKind::kOutput, t.line);
        s->text = t.text;
        body.push_back(std::move(s));
        next();
      } else if (t.type == TokenType::kVariableBegin) {
        next();
        auto s = make_stmt(StmtKind::kPrint, t.line);
        s->expr = parse_tuple(false, true, {}, false);
        expect_type(TokenType::kVariableEnd, "end of print statement");
        body.push_back(std::move(s));
      } else if (t.type == TokenType::kBlockBegin) {
        next();
        if (!end_tokens.empty() && cur().type == TokenType::kName &&
            std::find(end_tokens.begin(), end_tokens.end(), cur().text) != end_tokens.end()) {
          end_stack_.pop_back();
          return body;
        }
        parse_statement(body);
        expect_block_end();
      } else {
        fail("unexpected " + quoted(describe(t)));
      }
    }
    if (!end_tokens.empty()) end_stack_.pop_back();
    return body;
  }

  // jinja2's parse_statements: `:`? block_end body, stopping at one of end_tokens.
  Body parse_statements(const std::vector<std::string>& end_tokens, bool drop_needle) {
    skip_op(":");
    expect_block_end();
    Body body = subparse(end_tokens);
    if (cur().type == TokenType::kEof) fail_unknown_tag("", cur().line, true, &end_tokens);
    if (drop_needle) next();
    return body;
  }

  StmtPtr make_stmt(StmtKind kind, int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = line;
    return s;
  }

  void parse_statement(Body& out) {
    DepthGuard guard(*this);
    const Token& t = cur();
    if (t.type != TokenType::kName) fail("tag name expected", t.line);
    const std::string name = t.text;
    const int line = t.line;
    static const std::set<std::string> kKnown = {"for",     "if",     "block",  "extends",  "print",     "macro",
                                                 "include", "from",   "import", "set",      "with",      "autoescape",
                                                 "call",    "filter", "break",  "continue", "generation"};
    if (!kKnown.count(name)) fail_unknown_tag(name, line);
    tag_stack_.push_back(name);
    if (name == "for") {
      out.push_back(parse_for());
    } else if (name == "if") {
      out.push_back(parse_if());
    } else if (name == "set") {
      out.push_back(parse_set());
    } else if (name == "macro") {
      out.push_back(parse_macro());
    } else if (name == "call") {
      out.push_back(parse_call_block());
    } else if (name == "filter") {
      out.push_back(parse_filter_block());
    } else if (name == "with") {
      out.push_back(parse_with());
    } else if (name == "print") {
      next();
      auto s = make_stmt(StmtKind::kPrint, line);
      s->expr = parse_tuple(false, true, {}, false);
      out.push_back(std::move(s));
    } else if (name == "break" || name == "continue") {
      next();
      if (loop_depth_ == 0) fail("'" + name + "' outside loop", line);
      out.push_back(make_stmt(name == "break" ? StmtKind::kBreak : StmtKind::kContinue, line));
    } else if (name == "block" || name == "generation" || name == "autoescape") {
      next();
      auto s = make_stmt(StmtKind::kScope, line);
      if (name == "block") {
        const std::string block_name = expect_name().text;
        skip_name("scoped");
        skip_name("required");
        s->body = parse_statements({"endblock"}, true);
        skip_name(block_name.c_str());
      } else if (name == "autoescape") {
        parse_expression();
        s->body = parse_statements({"endautoescape"}, true);
      } else {
        s->body = parse_statements({"endgeneration"}, true);
      }
      out.push_back(std::move(s));
    } else {
      fail("the '" + name + "' tag is not supported (chat templates cannot load other templates)", line);
    }
    tag_stack_.pop_back();
  }

  StmtPtr parse_for() {
    auto s = make_stmt(StmtKind::kFor, next().line);
    s->target = parse_assign_target(true, false, {"in"});
    expect_keyword("in");
    s->expr = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) s->cond = parse_expression(true);
    s->recursive = skip_name("recursive");
    ++loop_depth_;
    SoftGuard hard(*this, false);
    s->body = parse_statements({"endfor", "else"}, false);
    --loop_depth_;
    if (next().text == "endfor") return s;
    s->else_body = parse_statements({"endfor"}, true);
    return s;
  }

  StmtPtr parse_if() {
    auto s = make_stmt(StmtKind::kIf, next().line);
    SoftGuard soft(*this, true);
    while (true) {
      ExprPtr test = parse_tuple(false, false, {}, false);
      Body body = parse_statements({"elif", "else", "endif"}, false);
      s->branches.emplace_back(std::move(test), std::move(body));
      const Token& t = next();
      if (t.text == "elif") continue;
      if (t.text == "else") s->branches.emplace_back(nullptr, parse_statements({"endif"}, true));
      break;
    }
    return s;
  }

  StmtPtr parse_set() {
    const int line = next().line;
    Target target = parse_assign_target(true, false, {}, true);
    if (skip_op("=")) {
      auto s = make_stmt(StmtKind::kSet, line);
      s->target = std::move(target);
      s->expr = parse_tuple(false, true, {}, false);
      return s;
    }
    auto s = make_stmt(StmtKind::kSetBlock, line);
    s->target = std::move(target);
    s->expr = parse_filter_chain(nullptr, false);
    SoftGuard hard(*this, false);
    s->body = parse_statements({"endset"}, true);
    return s;
  }

  void parse_signature(MacroDef& m) {
    expect_op("(");
    bool have_default = false;
    while (!is_op(")")) {
      if (!m.params.empty()) expect_op(",");
      const Token& t = expect_name();
      check_assignable_name(t);
      m.params.push_back(t.text);
      if (skip_op("=")) {
        m.defaults.push_back(parse_expression(true));
        have_default = true;
      } else {
        if (have_default) fail("non-default argument follows default argument");
        m.defaults.push_back(nullptr);
      }
    }
    expect_op(")");
  }

  // Which of the special names the body references (jinja2 decides this at compile time too).
  void scan_specials(MacroDef& m) {
    std::function<void(const Expr*)> expr = [&](const Expr* e) {
      if (e == nullptr) return;
      if (e->kind == ExprKind::kName) {
        if (e->name == "varargs") m.catch_varargs = true;
        if (e->name == "kwargs") m.catch_kwargs = true;
        if (e->name == "caller") m.uses_caller = true;
      }
      expr(e->target.get());
      for (const auto& a : e->args) expr(a.get());
      for (const auto& kv : e->kwargs) expr(kv.second.get());
      expr(e->dyn_args.get());
      expr(e->dyn_kwargs.get());
    };
    std::function<void(const Body&)> body = [&](const Body& b) {
      for (const auto& s : b) {
        expr(s->expr.get());
        expr(s->cond.get());
        for (const auto& [test, br] : s->branches) {
          expr(test.get());
          body(br);
        }
        body(s->body);
        body(s->else_body);
        for (const auto& v : s->with_values) expr(v.get());
        // Nested macros are separate functions; call blocks' bodies belong to the enclosing one.
        if (s->kind == StmtKind::kCallBlock) body(s->macro->body);
        if (s->kind == StmtKind::kMacro) {
          for (const auto& d : s->macro->defaults) expr(d.get());
        }
      }
    };
    body(m.body);
    // Parameters shadow the specials.
    for (const auto& p : m.params) {
      if (p == "varargs") m.catch_varargs = false;
      if (p == "kwargs") m.catch_kwargs = false;
      if (p == "caller") m.uses_caller = false;
    }
  }

  StmtPtr parse_macro() {
    auto s = make_stmt(StmtKind::kMacro, next().line);
    s->macro = std::make_shared<MacroDef>();
    MacroDef& m = *s->macro;
    m.line = s->line;
    const Token& name = expect_name();
    check_assignable_name(name);
    m.name = name.text;
    parse_signature(m);
    const int saved_loops = loop_depth_;
    loop_depth_ = 0;
    SoftGuard hard(*this, false);
    m.body = parse_statements({"endmacro"}, true);
    loop_depth_ = saved_loops;
    scan_specials(m);
    return s;
  }

  StmtPtr parse_call_block() {
    auto s = make_stmt(StmtKind::kCallBlock, next().line);
    s->macro = std::make_shared<MacroDef>();
    MacroDef& m = *s->macro;
    m.name = "caller";
    m.line = s->line;
    if (is_op("(")) parse_signature(m);
    s->expr = parse_expression(true);
    if (s->expr->kind != ExprKind::kCall) fail("expected call", s->line);
    const int saved_loops = loop_depth_;
    loop_depth_ = 0;
    SoftGuard hard(*this, false);
    m.body = parse_statements({"endcall"}, true);
    loop_depth_ = saved_loops;
    scan_specials(m);
    return s;
  }

  StmtPtr parse_filter_block() {
    auto s = make_stmt(StmtKind::kFilterBlock, next().line);
    s->expr = parse_filter_chain(nullptr, true);
    SoftGuard hard(*this, false);
    s->body = parse_statements({"endfilter"}, true);
    return s;
  }

  StmtPtr parse_with() {
    auto s = make_stmt(StmtKind::kWith, next().line);
    while (cur().type != TokenType::kBlockEnd) {
      if (!s->with_targets.empty()) expect_op(",");
      s->with_targets.push_back(parse_assign_target(true, false, {}));
      expect_op("=");
      s->with_values.push_back(parse_expression(true));
    }
    SoftGuard hard(*this, false);
    s->body = parse_statements({"endwith"}, true);
    return s;
  }

  void check_assignable_name(const Token& t) {
    static const std::set<std::string> kConst = {"true", "false", "none", "True", "False", "None"};
    if (kConst.count(t.text)) fail("can't assign to 'const'", t.line);
  }

  Target parse_assign_target(bool with_tuple, bool name_only, const std::vector<std::string>& extra_end,
                             bool with_namespace = false) {
    (void)name_only;
    DepthGuard guard(*this);
    const int line = cur().line;
    std::vector<Target> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(parse_target_primary(with_namespace));
      if (with_tuple && is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (items.empty()) fail("Expected an expression, got " + quoted(describe(cur())));
      return std::move(items[0]);
    }
    Target t;
    t.kind = Target::Kind::kTuple;
    t.items = std::move(items);
    t.line = line;
    return t;
  }

  Target parse_target_primary(bool with_namespace) {
    const Token& t = cur();
    Target target;
    target.line = t.line;
    if (t.type == TokenType::kName) {
      check_assignable_name(t);
      next();
      target.name = t.text;
      if (with_namespace && is_op(".")) {
        next();
        target.kind = Target::Kind::kNsAttr;
        target.attr = expect_name().text;
      }
      return target;
    }
    if (t.type == TokenType::kOperator && t.text == "(") {
      next();
      Target inner = parse_assign_target(true, false, {}, with_namespace);
      expect_op(")");
      return inner;
    }
    if (t.type == TokenType::kString || t.type == TokenType::kInteger || t.type == TokenType::kFloat) {
      fail("can't assign to 'const'", t.line);
    }
    if (t.type == TokenType::kOperator && (t.text == "[" || t.text == "{")) {
      fail(std::string("can't assign to '") + (t.text == "[" ? "list" : "dict") + "'", t.line);
    }
    fail("unexpected " + quoted(describe(t)), t.line);
  }

  bool is_tuple_end(const std::vector<std::string>& extra_end) const {
    const Token& t = cur();
    if (t.type == TokenType::kVariableEnd || t.type == TokenType::kBlockEnd ||
        (t.type == TokenType::kOperator && t.text == ")")) {
      return true;
    }
    return t.type == TokenType::kName && std::find(extra_end.begin(), extra_end.end(), t.text) != extra_end.end();
  }

  // ---- expressions ----
  ExprPtr make(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  ExprPtr parse_tuple(bool simplified, bool with_condexpr, const std::vector<std::string>& extra_end,
                      bool explicit_parens) {
    DepthGuard guard(*this);
    const int line = cur().line;
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      args.push_back(simplified ? parse_primary() : parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parens) fail("Expected an expression, got " + quoted(describe(cur())));
    }
    auto e = make(ExprKind::kTuple, line);
    e->args = std::move(args);
    return e;
  }

  ExprPtr parse_expression(bool with_condexpr = true) {
    DepthGuard guard(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    int line = cur().line;
    ExprPtr expr1 = parse_or();
    while (is_name("if")) {
      next();
      SoftGuard soft(*this, true);
      ExprPtr expr2 = parse_or();
      ExprPtr expr3;
      if (skip_name("else")) {
        DepthGuard guard(*this);
        expr3 = parse_condexpr();
      }
      auto e = make(ExprKind::kCond, line);
      e->args.push_back(std::move(expr1));
      e->args.push_back(std::move(expr2));
      e->args.push_back(std::move(expr3));
      expr1 = std::move(e);
      line = cur().line;
    }
    return expr1;
  }

  ExprPtr parse_or() {
    int line = cur().line;
    ExprPtr left = parse_and();
    while (skip_name("or")) {
      auto e = make(ExprKind::kOr, line);
      e->target = std::move(left);
      e->args.push_back(parse_and());
      left = std::move(e);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_and() {
    int line = cur().line;
    ExprPtr left = parse_not();
    while (skip_name("and")) {
      auto e = make(ExprKind::kAnd, line);
      e->target = std::move(left);
      e->args.push_back(parse_not());
      left = std::move(e);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      auto e = make(ExprKind::kNot, next().line);
      e->target = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    int line = cur().line;
    ExprPtr expr = parse_math1();
    std::vector<CmpOp> ops;
    std::vector<ExprPtr> operands;
    while (true) {
      const Token& t = cur();
      CmpOp op;
      if (t.type == TokenType::kOperator && t.text == "==") {
        op = CmpOp::kEq;
      } else if (t.type == TokenType::kOperator && t.text == "!=") {
        op = CmpOp::kNe;
      } else if (t.type == TokenType::kOperator && t.text == "<") {
        op = CmpOp::kLt;
      } else if (t.type == TokenType::kOperator && t.text == "<=") {
        op = CmpOp::kLe;
      } else if (t.type == TokenType::kOperator && t.text == ">") {
        op = CmpOp::kGt;
      } else if (t.type == TokenType::kOperator && t.text == ">=") {
        op = CmpOp::kGe;
      } else if (is_name("in")) {
        op = CmpOp::kIn;
      } else if (is_name("not") && look().type == TokenType::kName && look().text == "in") {
        next();
        op = CmpOp::kNotIn;
      } else {
        break;
      }
      next();
      ops.push_back(op);
      operands.push_back(parse_math1());
      line = cur().line;
    }
    if (ops.empty()) return expr;
    auto e = make(ExprKind::kCompare, line);
    e->target = std::move(expr);
    e->args = std::move(operands);
    e->cmp_ops = std::move(ops);
    return e;
  }

  ExprPtr binary(BinOp op, ExprPtr left, ExprPtr right, int line) {
    auto e = make(ExprKind::kBinary, line);
    e->op = op;
    e->target = std::move(left);
    e->args.push_back(std::move(right));
    return e;
  }

  ExprPtr parse_math1() {
    int line = cur().line;
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const BinOp op = next().text == "+" ? BinOp::kAdd : BinOp::kSub;
      left = binary(op, std::move(left), parse_concat(), line);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_concat() {
    const int line = cur().line;
    std::vector<ExprPtr> args;
    args.push_back(parse_math2());
    while (skip_op("~")) args.push_back(parse_math2());
    if (args.size() == 1) return std::move(args[0]);
    auto e = make(ExprKind::kConcat, line);
    e->args = std::move(args);
    return e;
  }

  ExprPtr parse_math2() {
    int line = cur().line;
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = next().text;
      const BinOp b = op == "*" ? BinOp::kMul : op == "/" ? BinOp::kDiv : op == "//" ? BinOp::kFloorDiv : BinOp::kMod;
      left = binary(b, std::move(left), parse_pow(), line);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_pow() {
    int line = cur().line;
    ExprPtr left = parse_unary(true);
    while (skip_op("**")) {
      left = binary(BinOp::kPow, std::move(left), parse_unary(true), line);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    const int line = cur().line;
    ExprPtr node;
    if (skip_op("-")) {
      node = make(ExprKind::kNeg, line);
      node->target = parse_unary(false);
    } else if (skip_op("+")) {
      node = make(ExprKind::kPos, line);
      node->target = parse_unary(false);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    DepthGuard guard(*this);
    const Token& t = cur();
    if (t.type == TokenType::kName) {
      next();
      auto e = make(ExprKind::kConst, t.line);
      if (t.text == "true" || t.text == "True") {
        e->value = Value::boolean(true);
      } else if (t.text == "false" || t.text == "False") {
        e->value = Value::boolean(false);
      } else if (t.text == "none" || t.text == "None") {
        e->value = Value::none();
      } else {
        e->kind = ExprKind::kName;
        e->name = t.text;
      }
      return e;
    }
    if (t.type == TokenType::kString) {
      auto e = make(ExprKind::kConst, t.line);
      std::string s;
      while (cur().type == TokenType::kString) s += next().text;  // adjacent literals concatenate
      e->value = Value::string(std::move(s));
      return e;
    }
    if (t.type == TokenType::kInteger || t.type == TokenType::kFloat) {
      next();
      auto e = make(ExprKind::kConst, t.line);
      e->value = t.type == TokenType::kInteger ? Value::integer(t.int_value) : Value::floating(t.float_value);
      return e;
    }
    if (t.type == TokenType::kOperator && t.text == "(") {
      next();
      ExprPtr e = parse_tuple(false, true, {}, true);
      expect_op(")");
      return e;
    }
    if (t.type == TokenType::kOperator && t.text == "[") {
      auto e = make(ExprKind::kList, next().line);
      while (!is_op("]")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("]")) break;
        e->args.push_back(parse_expression(true));
      }
      expect_op("]");
      return e;
    }
    if (t.type == TokenType::kOperator && t.text == "{") {
      auto e = make(ExprKind::kDict, next().line);
      while (!is_op("}")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("}")) break;
        e->args.push_back(parse_expression(true));
        expect_op(":");
        e->args.push_back(parse_expression(true));
      }
      expect_op("}");
      return e;
    }
    fail("unexpected " + quoted(describe(t)), t.line);
  }

  ExprPtr parse_postfix(ExprPtr node) {
    int chain = 0;
    while (true) {
      if (++chain > kMaxNesting) fail("expression is too long");
      if (is_op(".") || is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        break;
      }
    }
    return node;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    int chain = 0;
    while (true) {
      if (++chain > kMaxNesting) fail("expression is too long");
      if (is_op("|")) {
        node = parse_filter_chain(std::move(node), false);
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        break;
      }
    }
    return node;
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token& t = next();
    if (t.text == ".") {
      const Token& attr = next();
      if (attr.type == TokenType::kName) {
        auto e = make(ExprKind::kGetattr, t.line);
        e->target = std::move(node);
        e->name = attr.text;
        return e;
      }
      if (attr.type != TokenType::kInteger) fail("expected name or number", attr.line);
      auto e = make(ExprKind::kGetitem, t.line);
      e->target = std::move(node);
      auto idx = make(ExprKind::kConst, attr.line);
      idx->value = Value::integer(attr.int_value);
      e->args.push_back(std::move(idx));
      return e;
    }
    // '['
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    auto e = make(ExprKind::kGetitem, t.line);
    e->target = std::move(node);
    if (args.size() == 1) {
      e->args.push_back(std::move(args[0]));
    } else {
      auto tuple = make(ExprKind::kTuple, t.line);
      tuple->args = std::move(args);
      e->args.push_back(std::move(tuple));
    }
    return e;
  }

  ExprPtr parse_subscribed() {
    DepthGuard guard(*this);
    const int line = cur().line;
    std::vector<ExprPtr> args;
    if (is_op(":")) {
      next();
      args.push_back(nullptr);
    } else {
      ExprPtr node = parse_expression(true);
      if (!is_op(":")) return node;
      next();
      args.push_back(std::move(node));
    }
    if (is_op(":")) {
      args.push_back(nullptr);
    } else if (!is_op("]") && !is_op(",")) {
      args.push_back(parse_expression(true));
    } else {
      args.push_back(nullptr);
    }
    if (is_op(":")) {
      next();
      if (!is_op("]") && !is_op(",")) {
        args.push_back(parse_expression(true));
      } else {
        args.push_back(nullptr);
      }
    } else {
      args.push_back(nullptr);
    }
    auto e = make(ExprKind::kSlice, line);
    e->args = std::move(args);
    return e;
  }

  void parse_call_args(Expr& e) {
    const int line = cur().line;
    expect_op("(");
    bool require_comma = false;
    auto ensure = [&](bool ok) {
      if (!ok) fail("invalid syntax for function call expression", line);
    };
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*")) {
        ensure(!e.dyn_args && !e.dyn_kwargs);
        next();
        e.dyn_args = parse_expression(true);
      } else if (is_op("**")) {
        ensure(!e.dyn_kwargs);
        next();
        e.dyn_kwargs = parse_expression(true);
      } else if (cur().type == TokenType::kName && look().type == TokenType::kOperator && look().text == "=") {
        ensure(!e.dyn_kwargs);
        std::string key = next().text;
        next();
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        ensure(!e.dyn_args && !e.dyn_kwargs && e.kwargs.empty());
        e.args.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr node) {
    DepthGuard guard(*this);
    auto e = make(ExprKind::kCall, cur().line);
    e->target = std::move(node);
    parse_call_args(*e);
    return e;
  }

  // `|name(args)|name2...`; with start_inline the first filter has no leading pipe.
  ExprPtr parse_filter_chain(ExprPtr node, bool start_inline) {
    DepthGuard guard(*this);
    while (is_op("|") || start_inline) {
      if (!start_inline) next();
      start_inline = false;
      const Token& t = expect_name();
      std::string name = t.text;
      while (is_op(".")) {
        next();
        name += "." + expect_name().text;
      }
      auto e = make(ExprKind::kFilter, t.line);
      e->name = name;
      e->target = std::move(node);
      e->filter = find_filter(name);
      if (e->filter == nullptr && !soft_) fail("No filter named " + quoted(name) + ".", t.line);
      if (is_op("(")) parse_call_args(*e);
      node = std::move(e);
    }
    return node;
  }

  ExprPtr parse_test(ExprPtr node) {
    DepthGuard guard(*this);
    const int line = next().line;  // 'is'
    const bool negated = skip_name("not");
    const Token& t = expect_name();
    std::string name = t.text;
    while (is_op(".")) {
      next();
      name += "." + expect_name().text;
    }
    auto e = make(ExprKind::kTest, line);
    e->name = name;
    e->target = std::move(node);
    e->test = find_test(name);
    if (e->test == nullptr && !soft_) fail("No test named " + quoted(name) + ".", line);
    const Token& c = cur();
    if (is_op("(")) {
      parse_call_args(*e);
    } else if ((c.type == TokenType::kName || c.type == TokenType::kString || c.type == TokenType::kInteger ||
                c.type == TokenType::kFloat ||
                (c.type == TokenType::kOperator && (c.text == "(" || c.text == "[" || c.text == "{"))) &&
               !(c.type == TokenType::kName && (c.text == "else" || c.text == "or" || c.text == "and"))) {
      if (is_name("is")) fail("You cannot chain multiple tests with is");
      ExprPtr arg = parse_primary();
      e->args.push_back(parse_postfix(std::move(arg)));
    }
    if (!negated) return e;
    auto n = make(ExprKind::kNot, line);
    n->target = std::move(e);
    return n;
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  bool soft_ = false;
  std::vector<std::string> tag_stack_;
  std::vector<std::vector<std::string>> end_stack_;
};

}  // namespace

std::unique_ptr<Program> parse_program(std::string_view source) { return Parser(tokenize(source)).parse(); }

}  // namespace pagoda::jinja
