#include "io/checkpoint.h"

#include <gtest/gtest.h>

#include "temp_dir.h"

namespace pagoda {
namespace {

using ::pagoda::testing::error_of;
using ::pagoda::testing::TempDir;

TensorToWrite u8(const std::string& name, std::vector<int64_t> shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return {name, DType::kU8, std::move(shape), std::vector<uint8_t>(n, 1)};
}

TEST(Checkpoint, SingleFile) {
  TempDir dir;
  write_safetensors(dir.file("model.safetensors"), {u8("a", {2, 3}), u8("b", {4})});
  Checkpoint ckpt(dir.path());
  EXPECT_EQ(ckpt.dir(), dir.path());
  EXPECT_TRUE(ckpt.has("a"));
  EXPECT_FALSE(ckpt.has("c"));
  EXPECT_EQ(ckpt.get("a", {2, 3}).nbytes, 6u);
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ckpt.total_bytes(), 10u);
}

TEST(Checkpoint, Sharded) {
  TempDir dir;
  write_safetensors(dir.file("model-00001-of-00002.safetensors"), {u8("a", {2}), u8("b", {3})});
  write_safetensors(dir.file("model-00002-of-00002.safetensors"), {u8("c", {5})});
  dir.write("model.safetensors.index.json", R"({"metadata": {"total_size": 10}, "weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors"}})");
  Checkpoint ckpt(dir.path());
  EXPECT_EQ(ckpt.names().size(), 3u);
  EXPECT_EQ(ckpt.get("c").nbytes, 5u);
  EXPECT_EQ(ckpt.get("c").file, dir.file("model-00002-of-00002.safetensors"));
}

TEST(Checkpoint, MissingFolder) {
  const std::string msg = error_of([] { Checkpoint c("/nonexistent/model"); });
  EXPECT_CONTAINS(msg, "/nonexistent/model: no such directory");
}

TEST(Checkpoint, FolderWithoutCheckpoint) {
  TempDir dir;
  dir.write("config.json", "{}");
  const std::string msg = error_of([&] { Checkpoint c(dir.path()); });
  EXPECT_CONTAINS(msg, dir.path());
  EXPECT_CONTAINS(msg, "not a checkpoint");
}

TEST(Checkpoint, AnySafetensorsFileWithoutIndex) {
  TempDir dir;
  write_safetensors(dir.file("weights.safetensors"), {u8("a", {2})});
  EXPECT_TRUE(Checkpoint(dir.path()).has("a"));
}

TEST(Checkpoint, MissingTensor) {
  TempDir dir;
  write_safetensors(dir.file("model.safetensors"), {u8("a", {2})});
  Checkpoint ckpt(dir.path());
  const std::string msg = error_of([&] { ckpt.get("model.norm.weight"); });
  EXPECT_CONTAINS(msg, dir.path());
  EXPECT_CONTAINS(msg, "tensor model.norm.weight is missing from the checkpoint");
}

TEST(Checkpoint, WrongShape) {
  TempDir dir;
  write_safetensors(dir.file("model.safetensors"), {u8("a", {2, 3})});
  Checkpoint ckpt(dir.path());
  const std::string msg = error_of([&] { ckpt.get("a", {3, 2}); });
  EXPECT_CONTAINS(msg, dir.file("model.safetensors"));
  EXPECT_CONTAINS(msg, "tensor a has shape [2, 3], expected [3, 2]");
}

TEST(Checkpoint, IndexReferencesMissingShard) {
  TempDir dir;
  write_safetensors(dir.file("s1.safetensors"), {u8("a", {2})});
  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  const std::string msg = error_of([&] { Checkpoint c(dir.path()); });
  EXPECT_CONTAINS(msg, "model.safetensors.index.json");
  EXPECT_CONTAINS(msg, "s2.safetensors");
  EXPECT_CONTAINS(msg, "'b'");
}

TEST(Checkpoint, IndexReferencesMissingTensor) {
  TempDir dir;
  write_safetensors(dir.file("s1.safetensors"), {u8("a", {2})});
  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors", "ghost": "s1.safetensors"}})");
  const std::string msg = error_of([&] { Checkpoint c(dir.path()); });
  EXPECT_CONTAINS(msg, "model.safetensors.index.json");
  EXPECT_CONTAINS(msg, "'ghost'");
  EXPECT_CONTAINS(msg, dir.file("s1.safetensors"));
}

TEST(Checkpoint, BadIndex) {
  TempDir dir;
  dir.write("model.safetensors.index.json", "{oops");
  EXPECT_CONTAINS(error_of([&] { Checkpoint c(dir.path()); }), "model.safetensors.index.json: not valid JSON");
  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": "../../etc/passwd"}})");
  EXPECT_CONTAINS(error_of([&] { Checkpoint c(dir.path()); }), "invalid shard file");
  dir.write("model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_CONTAINS(error_of([&] { Checkpoint c(dir.path()); }), "weight_map");
}

TEST(Checkpoint, CorruptShardNamesFile) {
  TempDir dir;
  dir.write("model.safetensors", "garbage");
  EXPECT_CONTAINS(error_of([&] { Checkpoint c(dir.path()); }), dir.file("model.safetensors"));
}

}  // namespace
}  // namespace pagoda
