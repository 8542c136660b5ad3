// HttpServer: the HTTP/1.1 transport under the OpenAI-compatible server (routes, JSON and the engine live
// elsewhere). I/O runs on its own threads (one io_context, N threads); each connection is confined to a
// strand, so its state needs no locks. Nothing here ever blocks: not on a slow client, and not the thread
// that produces responses (the engine side), which only touches atomics and posts onto the strand.
//
// One request at a time per connection (pipelined bytes are buffered, bounded, and parsed after the
// current response). The handler runs on an I/O thread and must return quickly; it may hand its
// HttpResponse to any other thread. A response is either complete (send(): Content-Length) or streamed
// (start_stream() / write() / end(): chunked transfer encoding, one chunk per write, TCP_NODELAY so that
// each SSE event leaves at once).
//
// Client gone: while a response is pending the connection keeps a read outstanding, so EOF/reset is seen
// within one round trip even when nothing is being written; on_disconnect then fires once (on an I/O
// thread) so the owner can abort the engine request and free its KV blocks. A client that stops reading
// is bounded by max_pending_bytes: past it, the stream counts as disconnected (closed, callback fired),
// never unbounded buffering.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pagoda {

// Header (name, value) pairs in wire order; names compare case-insensitively.
using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: "/v1/models?x=1"
  std::string path;    // target before '?', not percent-decoded
  std::string query;   // target after '?' (raw), empty if none
  int version = 11;    // 10 or 11 (HTTP/1.0, HTTP/1.1)
  HttpHeaders headers;
  std::string body;    // de-chunked when the request was chunked
  std::string peer;    // "ip:port" of the client
  bool keep_alive = true;  // HTTP/1.1 without "Connection: close"

  // The first header with this name (case-insensitive), or nullptr.
  const std::string* find_header(std::string_view name) const;
  std::string header(std::string_view name, std::string_view fallback = {}) const;
};

struct HttpServerOptions {
  std::string host = "0.0.0.0";
  int port = 8000;  // 0: an ephemeral port (HttpServer::port() tells which)
  int num_threads = 2;
  int backlog = 1024;
  size_t max_header_bytes = 8 << 10;   // request line + headers; beyond → 431
  size_t max_body_bytes = 32 << 20;    // beyond → 413
  std::chrono::milliseconds header_timeout{30000};      // a started request's headers must arrive → 408
  std::chrono::milliseconds body_timeout{60000};        // ... and then its body → 408
  std::chrono::milliseconds keep_alive_timeout{5000};   // idle between requests → close
  std::chrono::milliseconds send_timeout{60000};        // a response write makes no progress → close
  size_t max_pending_bytes = 4 << 20;  // per streaming response, written but not yet taken by the socket
  int max_connections = 4096;          // beyond → 503 and close
};

// Counters since start() (a snapshot; each field is read atomically on its own).
struct HttpServerStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_rejected = 0;  // over max_connections
  uint64_t connections_open = 0;
  uint64_t requests = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
};

namespace detail {
class HttpConnection;
struct HttpExchange;
struct HttpServerCore;
}  // namespace detail

// The answer to one request. Thread-safe: every method may be called from any thread and returns at
// once (the work is posted onto the connection's strand). Exactly one of send() / start_stream() is
// honoured; later calls return false. Dropped unanswered → the client gets 500; dropped mid-stream
// (no end()) → the connection is closed without the terminating chunk, so the client sees an error.
class HttpResponse {
 public:
  ~HttpResponse();
  HttpResponse(const HttpResponse&) = delete;
  HttpResponse& operator=(const HttpResponse&) = delete;

  // A complete response with Content-Length. False if already answered or the client is gone.
  bool send(int status, std::string content_type, std::string body, HttpHeaders extra_headers = {});

  // Streaming: the head now (Transfer-Encoding: chunked; for an HTTP/1.0 client the body runs to EOF),
  // then one chunk per write(), then end(). write() queues and returns false when the client is gone
  // or the pending-bytes cap was exceeded (which closes the connection and fires on_disconnect).
  bool start_stream(int status, std::string content_type, HttpHeaders extra_headers = {});
  bool write(std::string chunk);
  bool end();

  // Called once, on an I/O thread, if the client goes away (or the server force-closes the connection,
  // or the stream exceeds max_pending_bytes) before send()/end(). Registered after the fact: fires
  // promptly. Never fires once send()/end() was called.
  void on_disconnect(std::function<void()> callback);

  // The client is still there and the response still accepts data.
  bool is_open() const;

 private:
  friend class detail::HttpConnection;
  HttpResponse(std::shared_ptr<void> io_keepalive, std::shared_ptr<detail::HttpConnection> connection,
               std::shared_ptr<detail::HttpExchange> exchange);
  void drop_disconnect_callback();  // the producer is done: the callback can never fire

  std::shared_ptr<void> io_keepalive_;  // the io_context outlives the connection's socket (declared first)
  std::shared_ptr<detail::HttpConnection> connection_;
  std::shared_ptr<detail::HttpExchange> exchange_;
};

class HttpServer {
 public:
  // Runs on an I/O thread; must not block.
  using Handler = std::function<void(HttpRequest, std::shared_ptr<HttpResponse>)>;

  HttpServer(HttpServerOptions options, Handler handler);
  // stop(0): in-flight responses are cut off.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens, then starts the I/O threads. Throws pagoda::Error if host:port cannot be bound.
  void start();
  // Graceful shutdown: stop accepting, close idle connections, let in-flight requests finish for up to
  // `grace`, then close the rest (their on_disconnect fires) and join the I/O threads. Idempotent; from
  // any thread except an I/O thread (e.g. not from a handler or an on_disconnect callback).
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));

  // The bound port (after start()).
  int port() const;
  HttpServerStats stats() const;

 private:
  std::shared_ptr<detail::HttpServerCore> core_;
};

}  // namespace pagoda
