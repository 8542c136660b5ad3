// Minimal leveled logging to stderr. PAGODA_LOG_LEVEL=debug|info|warn|error (default info).
#pragma once

#include <cstdio>
#include <string>

#include "base/error.h"

namespace pagoda {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// v with `digits` decimals ("%.*f"), for log lines.
inline std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

LogLevel log_level();
void set_log_level(LogLevel level);
void log_message(LogLevel level, const std::string& message);

template <class... Args>
void log_debug(Args&&... args) {
  if (log_level() <= LogLevel::kDebug) log_message(LogLevel::kDebug, detail::concat(std::forward<Args>(args)...));
}
template <class... Args>
void log_info(Args&&... args) {
  if (log_level() <= LogLevel::kInfo) log_message(LogLevel::kInfo, detail::concat(std::forward<Args>(args)...));
}
template <class... Args>
void log_warn(Args&&... args) {
  if (log_level() <= LogLevel::kWarn) log_message(LogLevel::kWarn, detail::concat(std::forward<Args>(args)...));
}
template <class... Args>
void log_error(Args&&... args) {
  log_message(LogLevel::kError, detail::concat(std::forward<Args>(args)...));
}

}  // namespace pagoda
