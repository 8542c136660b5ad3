#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "temp_dir.h"

namespace pagoda {
namespace {

using ::pagoda::testing::error_of;
using ::pagoda::testing::TempDir;

// u64 LE header length + header + data, without any validation (to build broken files).
std::string raw_file(const std::string& header, const std::string& data, uint64_t claimed_len = UINT64_MAX) {
  const uint64_t n = claimed_len == UINT64_MAX ? header.size() : claimed_len;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

std::string parse_error(const std::string& image) {
  return error_of([&] {
    parse_safetensors(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "bad.safetensors");
  });
}

std::vector<uint8_t> f32_bytes(std::initializer_list<float> values) {
  std::vector<uint8_t> out(values.size() * 4);
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

TEST(Safetensors, RoundTrip) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  std::vector<uint8_t> bf16(2 * 3 * 2);
  for (size_t i = 0; i < bf16.size(); ++i) bf16[i] = static_cast<uint8_t>(i);
  write_safetensors(path,
                    {{"a.weight", DType::kF32, {2, 2}, f32_bytes({1, 2, 3, 4})},
                     {"b", DType::kBF16, {2, 3}, bf16},
                     {"empty", DType::kF16, {0, 5}, {}},
                     {"scalar", DType::kI64, {}, std::vector<uint8_t>(8, 7)}},
                    {{"format", "pt"}});

  // The data section starts 8-byte aligned, like the reference writer's output.
  std::ifstream in(path, std::ios::binary);
  const std::string image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  std::memcpy(&n, image.data(), 8);
  EXPECT_EQ(n % 8, 0u);

  SafetensorsFile file(path);
  ASSERT_EQ(file.tensors().size(), 4u);
  const TensorInfo* a = file.find("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(a->nbytes, 16u);
  EXPECT_EQ(a->file, path);
  EXPECT_EQ(a->shape_string(), "[2, 2]");
  const Tensor t = a->view();
  EXPECT_EQ(t.ndim, 2);
  EXPECT_EQ(t.ptr<float>()[3], 4.0f);

  const TensorInfo* b = file.find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(std::vector<uint8_t>(b->data, b->data + b->nbytes), bf16);
  EXPECT_EQ(file.find("empty")->nbytes, 0u);
  EXPECT_EQ(file.find("scalar")->view().ndim, 0);
  EXPECT_EQ(file.find("missing"), nullptr);
}

TEST(Safetensors, WriteRejectsWrongByteCount) {
  TempDir dir;
  const std::string msg =
      error_of([&] { write_safetensors(dir.file("w.safetensors"), {{"t", DType::kF32, {3}, f32_bytes({1, 2})}}); });
  EXPECT_CONTAINS(msg, "w.safetensors");
  EXPECT_CONTAINS(msg, "'t'");
}

TEST(Safetensors, ViewRejectsMoreThanFourDims) {
  const std::string image =
      raw_file(R"({"conv":{"dtype":"U8","shape":[1,1,1,1,2],"data_offsets":[0,2]}})", "ab");
  const auto tensors =
      parse_safetensors(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "five.safetensors");
  const std::string msg = error_of([&] { tensors.at("conv").view(); });
  EXPECT_CONTAINS(msg, "five.safetensors");
  EXPECT_CONTAINS(msg, "'conv'");
}

TEST(Safetensors, MetadataIsAccepted) {
  const std::string image = raw_file(R"({"__metadata__":{"format":"pt"},"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "ab");
  const auto tensors = parse_safetensors(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "m");
  EXPECT_EQ(tensors.size(), 1u);
  EXPECT_CONTAINS(parse_error(raw_file(R"({"__metadata__":{"format":1}})", "")), "format");
}

TEST(Safetensors, TruncatedFile) {
  EXPECT_CONTAINS(parse_error("abc"), "bad.safetensors");
  // A valid file cut short inside the data section.
  const std::string full = raw_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(16, 'x'));
  const std::string msg = parse_error(full.substr(0, full.size() - 3));
  EXPECT_CONTAINS(msg, "bad.safetensors");
  EXPECT_CONTAINS(msg, "'w'");
  EXPECT_CONTAINS(msg, "truncated");
}

TEST(Safetensors, HeaderLengthBeyondFile) {
  EXPECT_CONTAINS(parse_error(raw_file("{}", "", 1000)), "runs past the end of the file");
  EXPECT_CONTAINS(parse_error(raw_file("{}", "", UINT64_MAX - 1)), "bad.safetensors");
}

TEST(Safetensors, HeaderNotJson) {
  EXPECT_CONTAINS(parse_error(raw_file("{not json", "")), "bad.safetensors: header is not valid JSON");
  EXPECT_CONTAINS(parse_error(raw_file("[1,2]", "")), "not a JSON object");
}

TEST(Safetensors, OffsetsBeyondData) {
  const std::string msg = parse_error(raw_file(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", "abcd"));
  EXPECT_CONTAINS(msg, "bad.safetensors");
  EXPECT_CONTAINS(msg, "'w'");
  EXPECT_CONTAINS(parse_error(raw_file(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[3,2]}})", "abcd")), "begin > end");
  EXPECT_CONTAINS(parse_error(raw_file(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[-1,2]}})", "abcd")), "'w'");
}

TEST(Safetensors, ShapeSizeMismatch) {
  const std::string msg = parse_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd"));
  EXPECT_CONTAINS(msg, "bad.safetensors: tensor 'w'");
  EXPECT_CONTAINS(msg, "needs 8 bytes");
  // numel overflow must be caught, not wrapped around to a small size.
  EXPECT_CONTAINS(parse_error(raw_file(
                  R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", "")), "overflows");
  EXPECT_CONTAINS(parse_error(raw_file(R"({"w":{"dtype":"U8","shape":[-2],"data_offsets":[0,0]}})", "")), "non-negative");
  EXPECT_CONTAINS(parse_error(raw_file(R"({"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,0]}})", "")), "'w'");
}

TEST(Safetensors, UnknownDtype) {
  const std::string msg = parse_error(raw_file(R"({"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", "a"));
  EXPECT_CONTAINS(msg, "bad.safetensors: tensor 'w'");
  EXPECT_CONTAINS(msg, "unknown dtype \"Q4\"");
}

TEST(Safetensors, MissingFields) {
  EXPECT_CONTAINS(parse_error(raw_file(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", "a")), "dtype");
  EXPECT_CONTAINS(parse_error(raw_file(R"({"w":{"dtype":"U8","data_offsets":[0,1]}})", "a")), "shape");
  EXPECT_CONTAINS(parse_error(raw_file(R"({"w":{"dtype":"U8","shape":[1]}})", "a")), "data_offsets");
  EXPECT_CONTAINS(parse_error(raw_file(R"({"w":7})", "a")), "'w'");
}

TEST(Safetensors, OverlappingTensors) {
  const std::string msg = parse_error(raw_file(
      R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"U8","shape":[3],"data_offsets":[2,5]}})",
      "abcde"));
  EXPECT_CONTAINS(msg, "'a'");
  EXPECT_CONTAINS(msg, "'b'");
  EXPECT_CONTAINS(msg, "overlap");
}

TEST(Safetensors, MissingFileNamesPath) {
  EXPECT_CONTAINS(error_of([] { SafetensorsFile f("/nonexistent/x.safetensors"); }), "/nonexistent/x.safetensors");
}

}  // namespace
}  // namespace pagoda

namespace pagoda {
namespace {

// The fuzz seed corpus was written by the reference Python `safetensors` package: parsing it
// checks compatibility with files we did not write ourselves.
TEST(Safetensors, ReadsReferenceWriterFiles) {
  const std::string dir = std::string(PAGODA_SOURCE_DIR) + "/bench/fuzz/corpus/safetensors/";
  SafetensorsFile mixed(dir + "mixed.safetensors");
  ASSERT_EQ(mixed.tensors().size(), 3u);
  const TensorInfo* a = mixed.find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->view().ptr<float>()[3], 3.0f);
  EXPECT_EQ(mixed.find("b")->shape, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(mixed.find("c")->view().ptr<int64_t>()[1], 2);

  SafetensorsFile other(dir + "scalar_4d_bool.safetensors");
  EXPECT_EQ(other.find("s")->view().ndim, 0);
  EXPECT_EQ(other.find("q")->view().ndim, 4);
  EXPECT_EQ(other.find("m")->dtype, DType::kBool);
  SafetensorsFile fp8(dir + "fp8.safetensors");
  EXPECT_EQ(fp8.find("x.weight")->dtype, DType::kF8E4M3);
  EXPECT_EQ(fp8.find("x.scale")->dtype, DType::kF64);
  EXPECT_EQ(SafetensorsFile(dir + "bf16_2x3.safetensors").find("w")->nbytes, 12u);
}

}  // namespace
}  // namespace pagoda
