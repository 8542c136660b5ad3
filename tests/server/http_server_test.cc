#include "server/http_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <thread>

#include "base/error.h"
#include "http_test_client.h"

namespace pagoda {
namespace {

using namespace std::chrono_literals;
using testing::TestClient;
using testing::TestResponse;

// Responses handed from the handler (an I/O thread) to the test thread, the way the engine side will
// receive them.
class ResponseQueue {
 public:
  void push(HttpRequest request, std::shared_ptr<HttpResponse> response) {
    std::lock_guard<std::mutex> lock(mu_);
    items_.emplace_back(std::move(request), std::move(response));
    cv_.notify_all();
  }
  std::pair<HttpRequest, std::shared_ptr<HttpResponse>> pop(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [this] { return !items_.empty(); })) return {};
    auto item = std::move(items_.front());
    items_.pop_front();
    return item;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<HttpRequest, std::shared_ptr<HttpResponse>>> items_;
};

HttpServerOptions test_options() {
  HttpServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  options.num_threads = 2;
  return options;
}

// Echoes the request back as text.
void echo_handler(HttpRequest req, std::shared_ptr<HttpResponse> res) {
  std::string body = req.method + " " + req.path + " q=" + req.query + " v=" + std::to_string(req.version) +
                     " x-test=" + req.header("X-TEST", "none") + " body=" + req.body;
  res->send(200, "text/plain", body, {{"X-Echo", "1"}});
}

std::unique_ptr<HttpServer> start_server(HttpServer::Handler handler, HttpServerOptions options = test_options()) {
  auto server = std::make_unique<HttpServer>(options, std::move(handler));
  server->start();
  return server;
}

TEST(HttpServer, AnswersGetAndPostWithBody) {
  auto server = start_server(echo_handler);
  ASSERT_GT(server->port(), 0);
  TestClient client(server->port());
  ASSERT_TRUE(client.connected());
  client.send("GET /v1/models?a=1&b=2 HTTP/1.1\r\nHost: x\r\nx-Test: hello\r\n\r\n");
  auto r = client.read_response();
  ASSERT_TRUE(r && r->complete);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->headers["content-type"], "text/plain");
  EXPECT_EQ(r->headers["x-echo"], "1");
  EXPECT_EQ(r->body, "GET /v1/models q=a=1&b=2 v=11 x-test=hello body=");

  client.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              "Content-Length: 13\r\n\r\n{\"prompt\":42}");
  r = client.read_response();
  ASSERT_TRUE(r && r->complete);
  EXPECT_EQ(r->body, "POST /v1/completions q= v=11 x-test=none body={\"prompt\":42}");
}

TEST(HttpServer, KeepsAliveAcrossRequestsAndPipelines) {
  std::atomic<int> requests{0};
  auto server = start_server([&](HttpRequest req, std::shared_ptr<HttpResponse> res) {
    ++requests;
    echo_handler(std::move(req), std::move(res));
  });
  TestClient client(server->port());
  for (int i = 0; i < 3; ++i) {
    client.send("GET /r" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n");
    auto r = client.read_response();
    ASSERT_TRUE(r && r->complete);
    EXPECT_EQ(r->body, "GET /r" + std::to_string(i) + " q= v=11 x-test=none body=");
    EXPECT_EQ(r->headers.count("connection"), 0u);
  }
  // Two requests in one write: answered in order.
  client.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
  auto a = client.read_response();
  auto b = client.read_response();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->body, "GET /a q= v=11 x-test=none body=");
  EXPECT_EQ(b->body, "POST /b q= v=11 x-test=none body=hi");
  EXPECT_EQ(requests.load(), 5);
  EXPECT_EQ(server->stats().requests, 5u);
}

TEST(HttpServer, ConnectionCloseAndHttp10CloseAfterTheResponse) {
  auto server = start_server(echo_handler);
  {
    TestClient client(server->port());
    client.send("GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    auto r = client.read_response();
    ASSERT_TRUE(r && r->complete);
    EXPECT_EQ(r->headers["connection"], "close");
    EXPECT_TRUE(client.wait_eof());
  }
  {
    TestClient client(server->port());
    client.send("GET /old HTTP/1.0\r\n\r\n");
    auto r = client.read_response();
    ASSERT_TRUE(r && r->complete);
    EXPECT_EQ(r->body, "GET /old q= v=10 x-test=none body=");
    EXPECT_TRUE(client.wait_eof());
  }
}

TEST(HttpServer, PassesAnyStatusThrough) {
  auto server = start_server([](HttpRequest, std::shared_ptr<HttpResponse> res) {
    res->send(404, "application/json", "{\"error\":\"nope\"}", {{"X-Request-Id", "abc"}});
  });
  TestClient client(server->port());
  client.send("GET /missing HTTP/1.1\r\nHost: x\r\n\r\n");
  auto r = client.read_response();
  ASSERT_TRUE(r && r->complete);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->head.substr(0, 24), "HTTP/1.1 404 Not Found\r\n");
  EXPECT_EQ(r->headers["x-request-id"], "abc");
  EXPECT_EQ(r->body, "{\"error\":\"nope\"}");
}

TEST(HttpServer, AnswersHeadWithoutABody) {
  auto server = start_server([](HttpRequest, std::shared_ptr<HttpResponse> res) {
    res->send(200, "text/plain", "twelve bytes");
  });
  TestClient client(server->port());
  client.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
  auto head = client.read_head();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->headers["content-length"], "12");
  // No body follows: the next response starts right away.
  client.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
  auto second = client.read_head();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 200);
}

TEST(HttpServer, RejectsBodiesOverTheLimitWith413) {
  auto options = test_options();
  options.max_body_bytes = 1024;
  auto server = start_server(echo_handler, options);
  {
    TestClient client(server->port());
    client.send("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + std::string(4096, 'a'));
    auto r = client.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_TRUE(client.wait_eof());
  }
  {  // chunked: the limit holds while the body arrives
    TestClient client(server->port());
    client.send("POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; ++i) client.send("200\r\n" + std::string(512, 'b') + "\r\n");
    auto r = client.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
  }
  {  // exactly at the limit is fine
    TestClient client(server->port());
    client.send("POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + std::string(1024, 'c'));
    auto r = client.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
}

TEST(HttpServer, DecodesChunkedRequestBodies) {
  auto server = start_server(echo_handler);
  TestClient client(server->port());
  client.send("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  auto r = client.read_response();
  ASSERT_TRUE(r && r->complete);
  EXPECT_EQ(r->body, "POST /c q= v=11 x-test=none body=hello world");
}

TEST(HttpServer, RejectsHugeHeadersWith431) {
  auto server = start_server(echo_handler);  // 8 KiB default
  TestClient client(server->port());
  client.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(16 << 10, 'h') + "\r\n\r\n");
  auto r = client.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  EXPECT_TRUE(client.wait_eof());
}

TEST(HttpServer, RejectsGarbageWith400) {
  auto server = start_server(echo_handler);
  for (std::string garbage : {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "HELLO WORLD\r\n\r\n",
                              "GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
                              "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"}) {
    TestClient client(server->port());
    client.send(garbage);
    auto r = client.read_response();
    ASSERT_TRUE(r) << garbage;
    EXPECT_EQ(r->status, 400) << garbage;
    EXPECT_TRUE(client.wait_eof());
  }
  // The server still serves.
  TestClient client(server->port());
  client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  auto r = client.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(HttpServer, RejectsUnsupportedTransferEncodingWith501) {
  auto server = start_server(echo_handler);
  TestClient client(server->port());
  client.send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc");
  auto r = client.read_response();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->status == 501 || r->status == 400) << r->status;
}

TEST(HttpServer, AnswersExpect100Continue) {
  auto server = start_server(echo_handler);
  TestClient client(server->port());
  client.send("POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  auto interim = client.read_response();
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100);
  client.send("body");
  auto r = client.read_response();
  ASSERT_TRUE(r && r->complete);
  EXPECT_EQ(r->body, "POST /e q= v=11 x-test=none body=body");
}

TEST(HttpServer, StreamsChunkedSseByteExact) {
  ResponseQueue queue;
  auto server = start_server([&](HttpRequest req, std::shared_ptr<HttpResponse> res) {
    queue.push(std::move(req), std::move(res));
  });
  TestClient client(server->port());
  client.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
  auto [req, res] = queue.pop();
  ASSERT_TRUE(res);
  EXPECT_EQ(req.body, "{}");
  // The producer is this test thread, not an I/O thread.
  const std::vector<std::string> events = {"data: {\"n\":1}\n\n", "data: {\"n\":2}\n\n",
                                           "data: " + std::string(300, 'x') + "\n\n", "data: [DONE]\n\n"};
  ASSERT_TRUE(res->start_stream(200, "text/event-stream", {{"Cache-Control", "no-cache"}}));
  auto head = client.read_head();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->headers["content-type"], "text/event-stream");
  EXPECT_EQ(head->headers["transfer-encoding"], "chunked");
  EXPECT_EQ(head->headers["cache-control"], "no-cache");
  EXPECT_EQ(head->headers.count("content-length"), 0u);
  // Each write arrives as its own chunk, promptly (before the next is written).
  for (const auto& event : events) {
    ASSERT_TRUE(res->write(event));
    auto chunk = client.read_chunk(*head);
    ASSERT_TRUE(chunk);
    EXPECT_EQ(*chunk, event);
  }
  EXPECT_TRUE(res->write(""));  // no empty chunk on the wire (it would end the body)
  ASSERT_TRUE(res->end());
  auto last = client.read_chunk(*head);
  ASSERT_TRUE(last);
  EXPECT_EQ(*last, "");
  EXPECT_TRUE(head->complete);
  std::string expected;
  for (const auto& e : events) {
    char size[16];
    std::snprintf(size, sizeof(size), "%zx\r\n", e.size());
    expected += size + e + "\r\n";
  }
  expected += "0\r\n\r\n";
  EXPECT_EQ(head->raw_body, expected);
  EXPECT_EQ(client.buffer(), "");
  EXPECT_FALSE(res->write("late"));
  EXPECT_FALSE(res->end());
  EXPECT_FALSE(res->send(200, "text/plain", "again"));

  // The connection is kept alive after the stream.
  client.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
  auto [req2, res2] = queue.pop();
  ASSERT_TRUE(res2);
  res2->send(204, "", "");
  auto r = client.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
}

TEST(HttpServer, StreamsToHttp10ClientsUntilClose) {
  auto server = start_server([](HttpRequest, std::shared_ptr<HttpResponse> res) {
    res->start_stream(200, "text/event-stream");
    res->write("data: a\n\n");
    res->write("data: b\n\n");
    res->end();
  });
  TestClient client(server->port());
  client.send("GET /s HTTP/1.0\r\n\r\n");
  auto r = client.read_response();
  ASSERT_TRUE(r && r->complete);
  EXPECT_FALSE(r->chunked);
  EXPECT_EQ(r->body, "data: a\n\ndata: b\n\n");
}

TEST(HttpServer, WritesFromManyThreadsAllArrive) {
  ResponseQueue queue;
  auto server = start_server([&](HttpRequest req, std::shared_ptr<HttpResponse> res) {
    queue.push(std::move(req), std::move(res));
  });
  TestClient client(server->port());
  client.send("GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
  auto [req, res] = queue.pop();
  ASSERT_TRUE(res);
  // start_stream() happens-before every write (thread creation), so all chunks follow the head.
  res->start_stream(200, "text/event-stream");
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([t, res = res] {
      for (int i = 0; i < 50; ++i) res->write("data: " + std::to_string(t) + "-" + std::to_string(i) + "\n\n");
    });
  }
  for (auto& w : writers) w.join();
  res->end();
  auto r = client.read_response();
  ASSERT_TRUE(r && r->complete);
  EXPECT_EQ(r->chunks.size(), 200u);
  // Per writer, order is preserved.
  std::vector<int> next(4, 0);
  for (const auto& chunk : r->chunks) {
    int t = chunk[6] - '0';
    EXPECT_EQ(chunk, "data: " + std::to_string(t) + "-" + std::to_string(next[t]) + "\n\n");
    ++next[t];
  }
}

TEST(HttpServer, DetectsClientDisconnectMidStream) {
  for (bool use_reset : {false, true}) {
    ResponseQueue queue;
    auto server = start_server([&](HttpRequest req, std::shared_ptr<HttpResponse> res) {
      queue.push(std::move(req), std::move(res));
    });
    TestClient client(server->port());
    client.send("GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
    auto [req, res] = queue.pop();
    ASSERT_TRUE(res);
    std::promise<void> gone;
    std::atomic<int> fired{0};
    res->on_disconnect([&] {
      if (fired.fetch_add(1) == 0) gone.set_value();
    });
    res->start_stream(200, "text/event-stream");
    res->write("data: 1\n\n");
    auto head = client.read_head();
    ASSERT_TRUE(head);
    ASSERT_TRUE(client.read_chunk(*head));
    EXPECT_TRUE(res->is_open());
    // Nothing is being written when the client leaves: the server must still notice.
    if (use_reset) {
      client.reset();
    } else {
      client.close();
    }
    ASSERT_EQ(gone.get_future().wait_for(5s), std::future_status::ready);
    EXPECT_FALSE(res->is_open());
    EXPECT_FALSE(res->write("data: 2\n\n"));
    EXPECT_FALSE(res->end());
    // Registered after the fact: fires promptly (once).
    std::promise<void> late;
    res->on_disconnect([&] { late.set_value(); });
    EXPECT_EQ(late.get_future().wait_for(5s), std::future_status::ready);
    EXPECT_EQ(fired.load(), 1);
  }
}

TEST(HttpServer, DetectsDisconnectWhileResponsePending) {
  ResponseQueue queue;
  auto server = start_server([&](HttpRequest req, std::shared_ptr<HttpResponse> res) {
    queue.push(std::move(req), std::move(res));
  });
  TestClient client(server->port());
  client.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
  auto [req, res] = queue.pop();
  ASSERT_TRUE(res);
  std::promise<void> gone;
  res->on_disconnect([&] { gone.set_value(); });
  client.close();
  ASSERT_EQ(gone.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(res->send(200, "text/plain", "too late"));
}

TEST(HttpServer, NoDisconnectCallbackAfterTheResponseEnded) {
  ResponseQueue queue;
  auto server = start_server([&](HttpRequest req, std::shared_ptr<HttpResponse> res) {
    queue.push(std::move(req), std::move(res));
  });
  TestClient client(server->port());
  client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  auto [req, res] = queue.pop();
  ASSERT_TRUE(res);
  std::atomic<bool> fired{false};
  res->on_disconnect([&] { fired = true; });
  res->send(200, "text/plain", "ok");
  ASSERT_TRUE(client.read_response());
  client.close();
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(fired.load());
}

TEST(HttpServer, SlowClientHitsThePendingBytesCap) {
  auto options = test_options();
  options.max_pending_bytes = 256 << 10;
  ResponseQueue queue;
  auto server = start_server([&](HttpRequest req, std::shared_ptr<HttpResponse> res) {
    queue.push(std::move(req), std::move(res));
  }, options);
  TestClient client(server->port(), /*rcvbuf=*/4096);
  client.send("GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
  auto [req, res] = queue.pop();
  ASSERT_TRUE(res);
  std::promise<void> gone;
  res->on_disconnect([&] { gone.set_value(); });
  res->start_stream(200, "text/event-stream");
  // The client never reads. Kernel buffers absorb a few MiB; after that the cap must trip rather than
  // the server queueing without bound.
  const std::string chunk = "data: " + std::string(16 << 10, 'z') + "\n\n";
  bool refused = false;
  for (int i = 0; i < 64 * 1024 && !refused; ++i) {  // at most ~1 GiB offered
    if (!res->write(chunk)) refused = true;
    if (i % 64 == 63) std::this_thread::sleep_for(1ms);  // let the I/O threads fill the socket
  }
  EXPECT_TRUE(refused);
  ASSERT_EQ(gone.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(res->is_open());
  EXPECT_TRUE(client.wait_eof(10s));
}

TEST(HttpServer, DropsAClientThatTakesNothingForSendTimeout) {
  auto options = test_options();
  options.send_timeout = 200ms;
  auto server = start_server([](HttpRequest, std::shared_ptr<HttpResponse> res) {
    res->send(200, "application/octet-stream", std::string(32 << 20, 'b'));  // more than socket buffers hold
  }, options);
  TestClient client(server->port(), /*rcvbuf=*/4096);
  client.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
  // The client never reads; the server gives up on it instead of holding the connection forever.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (server->stats().requests == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(server->stats().requests, 1u);
  while (server->stats().connections_open > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(server->stats().connections_open, 0u);
  EXPECT_LT(server->stats().bytes_sent, uint64_t{32} << 20);  // the timeout, not a finished write
}

TEST(HttpServer, DroppedOrThrowingHandlersGive500) {
  auto server = start_server([](HttpRequest req, std::shared_ptr<HttpResponse> res) {
    if (req.path == "/throw") throw std::runtime_error("handler bug");
    // /drop: the response is dropped unanswered.
  });
  for (const char* path : {"/drop", "/throw"}) {
    TestClient client(server->port());
    client.send(std::string("GET ") + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
    auto r = client.read_response();
    ASSERT_TRUE(r && r->complete) << path;
    EXPECT_EQ(r->status, 500) << path;
    // Still usable afterwards.
    client.send(std::string("GET ") + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
    r = client.read_response();
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 500) << path;
  }
}

TEST(HttpServer, DroppedStreamIsCutOffWithoutTheLastChunk) {
  ResponseQueue queue;
  auto server = start_server([&](HttpRequest req, std::shared_ptr<HttpResponse> res) {
    queue.push(std::move(req), std::move(res));
  });
  TestClient client(server->port());
  client.send("GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
  {
    auto [req, res] = queue.pop();
    ASSERT_TRUE(res);
    res->start_stream(200, "text/event-stream");
    res->write("data: 1\n\n");
  }
  auto r = client.read_response();
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->complete);
  EXPECT_EQ(r->body, "data: 1\n\n");
  EXPECT_TRUE(client.wait_eof());
}

TEST(HttpServer, ServesManyConcurrentConnections) {
  auto server = start_server(echo_handler);
  constexpr int kClients = 200;
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<TestClient>(server->port()));
    ASSERT_TRUE(clients.back()->connected());
  }
  // All open at once, then all requests, then all answers.
  for (int i = 0; i < kClients; ++i) {
    clients[i]->send("POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(std::to_string(i).size()) +
                     "\r\n\r\n" + std::to_string(i));
  }
  for (int i = 0; i < kClients; ++i) {
    auto r = clients[i]->read_response(10s);
    ASSERT_TRUE(r && r->complete) << i;
    EXPECT_EQ(r->body, "POST /c q= v=11 x-test=none body=" + std::to_string(i));
  }
  auto stats = server->stats();
  EXPECT_EQ(stats.requests, static_cast<uint64_t>(kClients));
  EXPECT_EQ(stats.connections_accepted, static_cast<uint64_t>(kClients));
  EXPECT_EQ(stats.connections_open, static_cast<uint64_t>(kClients));
  EXPECT_GT(stats.bytes_received, 0u);
  EXPECT_GT(stats.bytes_sent, 0u);

  // And from many threads at once, each doing a few keep-alive requests.
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      TestClient c(server->port());
      for (int i = 0; i < 10; ++i) {
        c.send("GET /t" + std::to_string(t) + " HTTP/1.1\r\nHost: x\r\n\r\n");
        auto r = c.read_response(10s);
        if (r && r->complete && r->body == "GET /t" + std::to_string(t) + " q= v=11 x-test=none body=") ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 160);
}

TEST(HttpServer, RejectsConnectionsOverTheLimitWith503) {
  auto options = test_options();
  options.max_connections = 2;
  auto server = start_server(echo_handler, options);
  TestClient a(server->port());
  TestClient b(server->port());
  a.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  b.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(a.read_response());  // both registered
  ASSERT_TRUE(b.read_response());
  TestClient c(server->port());
  c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_TRUE(c.wait_eof());
  EXPECT_GE(server->stats().connections_rejected, 1u);
}

TEST(HttpServer, TimesOutSlowHeadersWith408AndIdleConnectionsSilently) {
  auto options = test_options();
  options.header_timeout = 200ms;
  options.keep_alive_timeout = 200ms;
  auto server = start_server(echo_handler, options);
  {
    TestClient client(server->port());
    client.send("GET / HTTP/1.1\r\nHo");
    auto r = client.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 408);
    EXPECT_TRUE(client.wait_eof());
  }
  {
    TestClient client(server->port());
    client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(client.read_response());
    EXPECT_TRUE(client.wait_eof());  // idle past keep_alive_timeout
    EXPECT_EQ(client.buffer(), "");
  }
}

TEST(HttpServer, GracefulStopLetsAStreamFinish) {
  ResponseQueue queue;
  auto server = start_server([&](HttpRequest req, std::shared_ptr<HttpResponse> res) {
    queue.push(std::move(req), std::move(res));
  });
  int port = server->port();
  TestClient idle(port);  // an idle keep-alive connection is closed at once
  TestClient client(port);
  client.send("GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
  auto [req, res] = queue.pop();
  ASSERT_TRUE(res);
  std::atomic<bool> fired{false};
  res->on_disconnect([&] { fired = true; });
  res->start_stream(200, "text/event-stream");
  res->write("data: 1\n\n");
  auto head = client.read_head();
  ASSERT_TRUE(head);

  std::thread stopper([&] { server->stop(10s); });
  EXPECT_TRUE(idle.wait_eof());
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(res->write("data: 2\n\n"));
  EXPECT_TRUE(res->end());
  stopper.join();
  EXPECT_FALSE(fired.load());
  // The whole stream arrived, then the connection closed.
  while (auto chunk = client.read_chunk(*head)) {
    if (chunk->empty()) break;
  }
  EXPECT_TRUE(head->complete);
  EXPECT_EQ(head->body, "data: 1\n\ndata: 2\n\n");
  EXPECT_TRUE(client.wait_eof());
  TestClient after(port);
  EXPECT_FALSE(after.connected());
}

TEST(HttpServer, StopCutsOffStreamsAfterTheGracePeriod) {
  ResponseQueue queue;
  auto server = start_server([&](HttpRequest req, std::shared_ptr<HttpResponse> res) {
    queue.push(std::move(req), std::move(res));
  });
  TestClient client(server->port());
  client.send("GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
  auto [req, res] = queue.pop();
  ASSERT_TRUE(res);
  std::promise<void> gone;
  res->on_disconnect([&] { gone.set_value(); });
  res->start_stream(200, "text/event-stream");
  auto t0 = std::chrono::steady_clock::now();
  server->stop(200ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(gone.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(res->write("data: x\n\n"));
  EXPECT_TRUE(client.wait_eof());
  // The response outlives the server safely.
  server.reset();
  EXPECT_FALSE(res->end());
  res.reset();
}

TEST(HttpServer, ReportsBindFailures) {
  auto server = start_server(echo_handler);
  auto options = test_options();
  options.port = server->port();
  HttpServer second(options, echo_handler);
  EXPECT_THROW(second.start(), Error);
}

}  // namespace
}  // namespace pagoda
