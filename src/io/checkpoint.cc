#include "io/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace pagoda {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PAGODA_CHECK(in, path, ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  PAGODA_CHECK(!j.is_discarded(), path, ": not valid JSON");
  return j;
}

// weight_map of model.safetensors.index.json: tensor name -> shard file name (relative to dir).
std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
  const json index = read_json_file(index_path);
  PAGODA_CHECK(index.is_object(), index_path, ": not a JSON object");
  const auto wm = index.find("weight_map");
  PAGODA_CHECK(wm != index.end() && wm->is_object(), index_path, ": missing \"weight_map\" object");
  std::map<std::string, std::string> out;
  for (const auto& [tensor, shard] : wm->items()) {
    PAGODA_CHECK(shard.is_string(), index_path, ": weight_map entry for tensor '", tensor, "' is not a string");
    const std::string& file = shard.get_ref<const std::string&>();
    // Shards live in the checkpoint folder; a path escaping it is a broken (or hostile) index.
    PAGODA_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." && file != "..", index_path,
                 ": weight_map entry for tensor '", tensor, "' names an invalid shard file \"", file, "\"");
    out.emplace(tensor, file);
  }
  return out;
}

}  // namespace

Checkpoint::Checkpoint(const std::string& model_dir) : dir_(model_dir) {
  std::error_code ec;
  PAGODA_CHECK(fs::is_directory(model_dir, ec), model_dir, ": no such directory (MODEL_DIR must be a Hugging Face ",
               "checkpoint folder)");
  const fs::path dir(model_dir);
  const fs::path index_path = dir / "model.safetensors.index.json";
  const fs::path single_path = dir / "model.safetensors";

  if (fs::exists(index_path, ec)) {
    const auto weight_map = read_weight_map(index_path.string());
    std::map<std::string, SafetensorsFile*> shards;  // each shard opened (mapped) once
    for (const auto& [tensor, shard] : weight_map) {
      auto it = shards.find(shard);
      if (it == shards.end()) {
        const fs::path shard_path = dir / shard;
        PAGODA_CHECK(fs::exists(shard_path, ec), index_path.string(), ": shard ", shard, " (holding tensor '", tensor,
                     "') does not exist in ", model_dir);
        files_.push_back(std::make_unique<SafetensorsFile>(shard_path.string()));
        it = shards.emplace(shard, files_.back().get()).first;
      }
      const TensorInfo* info = it->second->find(tensor);
      PAGODA_CHECK(info != nullptr, index_path.string(), " lists tensor '", tensor, "' in ", it->second->path(),
                   " but that file does not contain it");
      index_.emplace(tensor, info);
    }
    return;
  }

  std::vector<fs::path> paths;
  if (fs::exists(single_path, ec)) {
    paths.push_back(single_path);
  } else {
    // No index: accept any *.safetensors files (e.g. a folder written by hand), in name order.
    for (const auto& entry : fs::directory_iterator(dir, ec))
      if (entry.path().extension() == ".safetensors") paths.push_back(entry.path());
    std::sort(paths.begin(), paths.end());
  }
  PAGODA_CHECK(!paths.empty(), model_dir, ": not a checkpoint (no model.safetensors, model.safetensors.index.json ",
               "or *.safetensors)");
  for (const fs::path& p : paths) {
    files_.push_back(std::make_unique<SafetensorsFile>(p.string()));
    for (const auto& [name, info] : files_.back()->tensors()) {
      const auto [it, inserted] = index_.emplace(name, &info);
      PAGODA_CHECK(inserted, model_dir, ": tensor '", name, "' appears in both ", it->second->file, " and ", p.string());
    }
  }
}

bool Checkpoint::has(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& Checkpoint::get(const std::string& name) const {
  const auto it = index_.find(name);
  PAGODA_CHECK(it != index_.end(), dir_, ": tensor ", name, " is missing from the checkpoint");
  return *it->second;
}

const TensorInfo& Checkpoint::get(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  const TensorInfo& info = get(name);
  PAGODA_CHECK(info.shape == expected_shape, info.file, ": tensor ", name, " has shape ", info.shape_string(),
               ", expected ", shape_to_string(expected_shape));
  return info;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, info] : index_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

size_t Checkpoint::total_bytes() const {
  size_t total = 0;
  for (const auto& [name, info] : index_) total += info->nbytes;
  return total;
}

}  // namespace pagoda
