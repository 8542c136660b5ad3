// One error type end to end: every failure that a user can cause (bad file, bad flag, bad
// request) is a pagoda::Error carrying a message that names the offending file/field.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace pagoda {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

// Throws pagoda::Error with the streamed arguments concatenated.
template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

}  // namespace pagoda

// Checks a condition that input can violate; throws pagoda::Error with the message.
#define PAGODA_CHECK(cond, ...)                 \
  do {                                          \
    if (!(cond)) ::pagoda::fail(__VA_ARGS__);   \
  } while (0)

// Checks an internal invariant (a bug if violated, never user input).
#define PAGODA_ASSERT(cond)                                                                    \
  do {                                                                                         \
    if (!(cond))                                                                               \
      ::pagoda::fail("internal error: ", #cond, " failed at ", __FILE__, ":", __LINE__);       \
  } while (0)
