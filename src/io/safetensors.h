// safetensors files, mmapped. Layout: u64 little-endian N, N bytes of JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data
// (offsets relative to 8 + N). Every header claim is validated against the file size before
// any tensor is handed out, so a lying or truncated file is an Error, never an OOB read.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "base/mmap.h"
#include "base/tensor.h"

namespace pagoda {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapping
  size_t nbytes = 0;
  std::string file;               // the file it came from (for messages)

  // A Tensor view of the mapped bytes (read-only memory: never write through it).
  Tensor view() const;
  std::string shape_string() const;
};

// Parses and validates a complete safetensors image (header + data) held in memory.
// `file_name` is used in error messages. Throws pagoda::Error on any inconsistency.
std::map<std::string, TensorInfo> parse_safetensors(const uint8_t* bytes, size_t size, const std::string& file_name);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return file_.path(); }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;

 private:
  MappedFile file_;
  std::map<std::string, TensorInfo> tensors_;
};

// Writes a safetensors file (used by tools and tests). Tensors are written in the given order.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Same file layout, but tensor data is produced one tensor at a time so that a multi-GB
// checkpoint never has to sit in memory: `tensors[i].bytes` is ignored, and fill(i, out) must
// write exactly out.size() (= numel x dtype size) bytes of tensor i.
using TensorFiller = std::function<void(size_t index, std::vector<uint8_t>& out)>;
void write_safetensors_streaming(const std::string& path, const std::vector<TensorToWrite>& tensors,
                                 const TensorFiller& fill, const std::map<std::string, std::string>& metadata = {});

}  // namespace pagoda
