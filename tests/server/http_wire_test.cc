#include "server/http_wire.h"

#include <gtest/gtest.h>

namespace pagoda {
namespace {

TEST(HttpWire, FramesChunksInHex) {
  EXPECT_EQ(http_wire::frame_chunk("data: x\n\n"), "9\r\ndata: x\n\n\r\n");
  EXPECT_EQ(http_wire::frame_chunk(std::string(255, 'a')), "ff\r\n" + std::string(255, 'a') + "\r\n");
  EXPECT_EQ(http_wire::frame_chunk(""), "");  // an empty chunk would end the body
}

TEST(HttpWire, WritesHeads) {
  EXPECT_EQ(http_wire::response_head(200, "text/plain", {{"X-A", "1"}}, 5, false, false),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n");
  EXPECT_EQ(http_wire::response_head(200, "text/event-stream", {}, -1, true, true),
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n");
  EXPECT_EQ(http_wire::response_head(299, "", {}, 0, false, false), "HTTP/1.1 299 Unknown\r\nContent-Length: 0\r\n\r\n");
}

TEST(HttpWire, RejectsHeaderInjection) {
  EXPECT_TRUE(http_wire::valid_header("X-Request-Id", "abc def"));
  EXPECT_FALSE(http_wire::valid_header("X-A", "a\r\nSet-Cookie: x"));
  EXPECT_FALSE(http_wire::valid_header("X A", "a"));
  EXPECT_FALSE(http_wire::valid_header("", "a"));
}

}  // namespace
}  // namespace pagoda
