#include "io/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace pagoda {
namespace {

using json = nlohmann::json;

// Same cap as the reference implementation: a header above 100 MB is a corrupt length field,
// not a real checkpoint, and must not make us parse (or allocate) gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100u * 1000u * 1000u;

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A non-negative JSON integer, or false (floats, negatives, strings... are all rejected).
bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

TensorInfo parse_entry(const std::string& name, const json& entry, const uint8_t* data, uint64_t data_size,
                       const std::string& file) {
  const std::string where = file + ": tensor '" + name + "'";
  PAGODA_CHECK(entry.is_object(), where, ": header entry is not a JSON object");

  TensorInfo info;
  info.name = name;
  info.file = file;

  const auto dt = entry.find("dtype");
  PAGODA_CHECK(dt != entry.end() && dt->is_string(), where, ": missing or non-string \"dtype\"");
  PAGODA_CHECK(parse_dtype(dt->get_ref<const std::string&>(), &info.dtype), where, ": unknown dtype \"",
               dt->get_ref<const std::string&>(), "\"");

  const auto sh = entry.find("shape");
  PAGODA_CHECK(sh != entry.end() && sh->is_array(), where, ": missing or non-array \"shape\"");
  uint64_t numel = 1;
  for (const json& d : *sh) {
    uint64_t v = 0;
    // Dimensions above INT64_MAX cannot be represented in the shape vector.
    PAGODA_CHECK(as_u64(d, &v) && v <= static_cast<uint64_t>(INT64_MAX), where,
                 ": shape entries must be non-negative integers, got ", d.dump());
    PAGODA_CHECK(!__builtin_mul_overflow(numel, v, &numel), where, ": shape ", sh->dump(), " overflows");
    info.shape.push_back(static_cast<int64_t>(v));
  }
  uint64_t nbytes = 0;
  PAGODA_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(info.dtype)), &nbytes), where,
               ": shape ", sh->dump(), " overflows");

  const auto off = entry.find("data_offsets");
  PAGODA_CHECK(off != entry.end() && off->is_array() && off->size() == 2, where,
               ": \"data_offsets\" must be [begin, end]");
  uint64_t begin = 0, end = 0;
  PAGODA_CHECK(as_u64((*off)[0], &begin) && as_u64((*off)[1], &end), where,
               ": \"data_offsets\" must be non-negative integers, got ", off->dump());
  PAGODA_CHECK(begin <= end, where, ": data_offsets ", off->dump(), " has begin > end");
  PAGODA_CHECK(end <= data_size, where, ": data_offsets ", off->dump(), " run past the end of the data (",
               data_size, " bytes; file truncated?)");
  PAGODA_CHECK(end - begin == nbytes, where, ": ", dt->get_ref<const std::string&>(), " shape ",
               shape_to_string(info.shape), " needs ", nbytes, " bytes but data_offsets ", off->dump(), " hold ",
               end - begin);

  info.data = data + begin;
  info.nbytes = static_cast<size_t>(nbytes);
  return info;
}

// Two tensors sharing bytes would alias weights silently; the reference parser rejects it too.
void check_no_overlap(const std::map<std::string, TensorInfo>& tensors, const std::string& file) {
  std::vector<const TensorInfo*> sorted;
  for (const auto& [name, info] : tensors)
    if (info.nbytes > 0) sorted.push_back(&info);
  std::sort(sorted.begin(), sorted.end(), [](const TensorInfo* a, const TensorInfo* b) { return a->data < b->data; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    PAGODA_CHECK(sorted[i - 1]->data + sorted[i - 1]->nbytes <= sorted[i]->data, file, ": tensors '",
                 sorted[i - 1]->name, "' and '", sorted[i]->name, "' overlap in the data section");
  }
}

}  // namespace

std::string TensorInfo::shape_string() const { return shape_to_string(shape); }

// More than kMaxDims dimensions is an error rather than a silent collapse: no model code path
// needs it, and collapsing would hide a wrong-tensor bug behind a plausible shape.
Tensor TensorInfo::view() const {
  PAGODA_CHECK(shape.size() <= static_cast<size_t>(kMaxDims), file, ": tensor '", name, "' has ", shape.size(),
               " dimensions ", shape_string(), "; at most ", kMaxDims, " are supported");
  Tensor t;
  t.data = const_cast<uint8_t*>(data);
  t.dtype = dtype;
  t.ndim = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t.shape[i] = shape[i];
  return t;
}

std::map<std::string, TensorInfo> parse_safetensors(const uint8_t* bytes, size_t size, const std::string& file_name) {
  PAGODA_CHECK(size >= 8, file_name, ": not a safetensors file (", size, " bytes; need at least 8)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian on any host
  PAGODA_CHECK(header_len <= kMaxHeaderBytes, file_name, ": header length ", header_len,
               " is not plausible (limit ", kMaxHeaderBytes, "); not a safetensors file?");
  PAGODA_CHECK(header_len <= size - 8, file_name, ": header length ", header_len, " runs past the end of the file (",
               size, " bytes); file truncated?");

  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  // allow_exceptions=false: a malformed header becomes a discarded value, never a json exception.
  const json header = json::parse(header_begin, header_begin + header_len, nullptr, /*allow_exceptions=*/false);
  PAGODA_CHECK(!header.is_discarded(), file_name, ": header is not valid JSON");
  PAGODA_CHECK(header.is_object(), file_name, ": header is not a JSON object");

  const uint8_t* data = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::map<std::string, TensorInfo> tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      PAGODA_CHECK(entry.is_object() || entry.is_null(), file_name, ": __metadata__ is not a JSON object");
      if (entry.is_object())
        for (const auto& [key, value] : entry.items())
          PAGODA_CHECK(value.is_string(), file_name, ": __metadata__ value for '", key, "' is not a string");
      continue;
    }
    tensors.emplace(name, parse_entry(name, entry, data, data_size, file_name));
  }
  check_no_overlap(tensors, file_name);
  return tensors;
}

// Weights are read in full by the first forward (CPU: in place, zero-copy) or right away (a GPU
// backend copies them): populate the mapping at load time, as vLLM / HF load weights before serving.
SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path, /*populate=*/true) {
  tensors_ = parse_safetensors(file_.data(), file_.size(), path);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

void write_safetensors_streaming(const std::string& path, const std::vector<TensorToWrite>& tensors,
                                 const TensorFiller& fill, const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<size_t> sizes;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    PAGODA_CHECK(t.name != "__metadata__" && !header.contains(t.name), path, ": tensor name '", t.name,
                 "' is reserved or repeated");
    size_t numel = 1;
    for (int64_t d : t.shape) {
      PAGODA_CHECK(d >= 0, path, ": tensor '", t.name, "' has a negative dimension");
      numel *= static_cast<size_t>(d);
    }
    sizes.push_back(numel * dtype_size(t.dtype));
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + sizes.back()}}};
    offset += sizes.back();
  }
  std::string text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned (as the reference writer does).
  text.append((8 - text.size() % 8) % 8, ' ');

  std::FILE* f = std::fopen(path.c_str(), "wb");
  PAGODA_CHECK(f != nullptr, path, ": cannot create: ", std::strerror(errno));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  std::vector<uint8_t> buffer;
  try {
    for (size_t i = 0; ok && i < tensors.size(); ++i) {
      buffer.resize(sizes[i]);
      fill(i, buffer);
      PAGODA_CHECK(buffer.size() == sizes[i], path, ": tensor '", tensors[i].name, "' needs ", sizes[i],
                   " bytes, got ", buffer.size());
      ok = buffer.empty() || std::fwrite(buffer.data(), 1, buffer.size(), f) == buffer.size();
    }
  } catch (...) {
    std::fclose(f);
    throw;
  }
  ok = (std::fclose(f) == 0) && ok;
  PAGODA_CHECK(ok, path, ": write failed: ", std::strerror(errno));
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  for (const TensorToWrite& t : tensors) {
    size_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<size_t>(d < 0 ? 0 : d);
    PAGODA_CHECK(numel * dtype_size(t.dtype) == t.bytes.size(), path, ": tensor '", t.name, "' shape ",
                 shape_to_string(t.shape), " needs ", numel * dtype_size(t.dtype), " bytes, got ", t.bytes.size());
  }
  write_safetensors_streaming(
      path, tensors, [&](size_t i, std::vector<uint8_t>& out) { out = tensors[i].bytes; }, metadata);
}

}  // namespace pagoda
