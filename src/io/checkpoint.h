// A Hugging Face checkpoint folder: model.safetensors, or shards listed in
// model.safetensors.index.json ({"weight_map": {tensor: file}}).
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/safetensors.h"

namespace pagoda {

class Checkpoint {
 public:
  // Opens every shard of `model_dir`; throws pagoda::Error naming the folder or file.
  explicit Checkpoint(const std::string& model_dir);

  const std::string& dir() const { return dir_; }
  bool has(const std::string& name) const;
  // Throws "<dir>: tensor <name> is missing from the checkpoint" if absent.
  const TensorInfo& get(const std::string& name) const;
  // get() plus a shape check: throws "<file>: tensor <name> has shape [..], expected [..]".
  const TensorInfo& get(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  std::vector<std::string> names() const;
  size_t total_bytes() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, const TensorInfo*> index_;
};

}  // namespace pagoda
