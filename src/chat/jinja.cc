#include "chat/jinja.h"

#include "base/error.h"

// GCC 12 at -O3 reports false -Wrestrict overlaps inside std::string concatenation (GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace pagoda::jinja {

namespace {

Value convert(const nlohmann::ordered_json& j, int depth) {
  if (depth > kMaxDepth) fail("JSON value nesting is deeper than ", kMaxDepth, " levels");
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::floating(static_cast<double>(u));
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value::floating(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& item : j) items.push_back(convert(item, depth + 1));
      return Value::list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      auto d = std::make_shared<DictObj>();
      d->items.reserve(j.size());
      int max_child = 0;
      for (const auto& [k, v] : j.items()) {
        Value child = convert(v, depth + 1);
        max_child = std::max(max_child, child.depth());
        d->items.emplace_back(Value::string(k), std::move(child));
      }
      d->depth = max_child + 1;
      return Value::dict(std::move(d));
    }
    default: return Value::none();  // binary / discarded: not produced by JSON text
  }
}

}  // namespace

Value from_json(const nlohmann::ordered_json& j) { return convert(j, 0); }

Template Template::parse(std::string_view source) {
  Template t;
  t.source_ = std::make_shared<const std::string>(source);
  t.program_ = parse_program(source);
  return t;
}

std::string Template::render(const nlohmann::ordered_json& context, const RenderLimits& limits) const {
  if (!context.is_object() && !context.is_null()) fail("chat template context must be a JSON object");
  return render(context.is_null() ? Value::dict(std::make_shared<DictObj>()) : from_json(context), limits);
}

std::string Template::render(const Value& context, const RenderLimits& limits) const {
  if (!context.is_dict()) fail("chat template context must be a dict");
  Interpreter interp(*program_, context.as_dict(), limits);
  return interp.render();
}

}  // namespace pagoda::jinja
