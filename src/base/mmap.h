// Read-only memory mapping of a whole file (checkpoints are mapped, never read into copies).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pagoda {

class MappedFile {
 public:
  MappedFile() = default;
  // Maps `path` read-only; throws pagoda::Error naming the path on failure. populate: fault the
  // whole file in now (MAP_POPULATE), so that the first pass over it (a checkpoint's first
  // forward) does not pay millions of page faults inside the timed / served path; pages the
  // kernel cannot keep are simply faulted in later.
  explicit MappedFile(const std::string& path, bool populate = false);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void reset();
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace pagoda
