// A unique temporary folder, removed with everything in it when the test ends.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "base/error.h"

namespace pagoda::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "pagoda_io_test_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw Error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }
  std::string write(const std::string& name, const std::string& contents) const {
    const std::string p = file(name);
    std::ofstream(p, std::ios::binary) << contents;
    return p;
  }

 private:
  std::string path_;
};

// Runs `fn`, expects a pagoda::Error, and returns its message ("" and a test failure otherwise).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected pagoda::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected pagoda::Error, nothing was thrown";
  return "";
}

inline ::testing::AssertionResult contains_format(const char* hexpr, const char* nexpr, const std::string& haystack,
                                                  const std::string& needle) {
  if (haystack.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << hexpr << " = \"" << haystack << "\" does not contain \"" << needle << "\"";
}

}  // namespace pagoda::testing

// EXPECT_CONTAINS(message, "substring"), with both strings printed on failure.
#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_PRED_FORMAT2(::pagoda::testing::contains_format, haystack, needle)
