// Internals of HttpServer (not for use outside src/server): one HttpConnection per accepted socket, its
// state confined to a strand; one HttpExchange per request, shared with the HttpResponse handed to the
// handler (the only state that other threads touch: atomics and one small mutex).
//
// Ownership: the pending asynchronous operations (read, write, timer) and every HttpResponse hold the
// connection by shared_ptr. The connection does not own the io_context; an HttpResponse keeps the
// io_context alive instead, so a response held past the server's life stays safe to call (its posts are
// simply never run). The server finds open connections through a registry of weak_ptrs.
#pragma once

#include <utility>  // before Asio: boost/asio/awaitable.hpp needs std::exchange (DESIGN.md)

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/parser.hpp>

#include "server/http_server.h"

namespace pagoda::detail {

namespace asio = boost::asio;
using Strand = asio::strand<asio::io_context::executor_type>;

// One request/response pair. The producer side (HttpResponse) and the strand meet here.
struct HttpExchange {
  bool chunked = true;  // HTTP/1.1 client: stream with the chunked coding (HTTP/1.0: body to EOF)
  size_t max_pending_bytes = 0;

  std::atomic<bool> answered{false};   // send() or start_stream() was called
  std::atomic<bool> streaming{false};  // start_stream() was called
  std::atomic<bool> ended{false};      // send() or end() was called: the producer is done
  std::atomic<bool> open{true};        // the client is there and the response still takes data
  std::atomic<size_t> pending_bytes{0};  // posted but not yet taken by the socket

  std::mutex mu;  // guards the three below
  std::function<void()> on_disconnect;
  bool disconnected = false;
  bool gone_before_end = false;  // the client left before send()/end(): late registrations fire
};

// What connections share with the server; never the io_context (see above).
struct HttpServerShared {
  HttpServerShared(HttpServerOptions o, HttpServer::Handler h) : options(std::move(o)), handler(std::move(h)) {}

  const HttpServerOptions options;
  const HttpServer::Handler handler;

  std::atomic<uint64_t> connections_accepted{0};
  std::atomic<uint64_t> connections_rejected{0};
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> bytes_received{0};
  std::atomic<uint64_t> bytes_sent{0};

  std::mutex mu;  // guards the registry and stopping
  std::condition_variable cv;  // signalled when a connection leaves the registry
  std::unordered_map<HttpConnection*, std::weak_ptr<HttpConnection>> connections;
  bool stopping = false;
};

class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
 public:
  HttpConnection(std::shared_ptr<HttpServerShared> shared, std::weak_ptr<void> io_keepalive,
                 asio::ip::tcp::socket socket);
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Runs the connection (call once, after registering it). reject: answer 503 and close.
  void start(bool reject);
  // Server shutdown: stop keep-alive, close if idle. Posts onto the strand.
  void begin_shutdown();
  // Closes the socket now (fires a pending response's on_disconnect). Posts onto the strand.
  void force_close();

  // Posts `fn` onto this connection's strand.
  template <class F>
  void post(F&& fn);

  // Strand side of HttpResponse (each checks that `ex` is still the connection's current exchange).
  void do_send(const std::shared_ptr<HttpExchange>& ex, int status, const std::string& content_type,
               std::string body, const HttpHeaders& extra);
  void do_start_stream(const std::shared_ptr<HttpExchange>& ex, int status, const std::string& content_type,
                       const HttpHeaders& extra);
  void do_write(const std::shared_ptr<HttpExchange>& ex, std::string framed);
  void do_end(const std::shared_ptr<HttpExchange>& ex);
  // Closes the connection: at once (slow client), or after what is queued went out (a dropped stream).
  void do_abort(const std::shared_ptr<HttpExchange>& ex, bool flush_first);

  // Fires ex's on_disconnect (once, and only if the producer had not finished). Strand side.
  static void fire_disconnect(const std::shared_ptr<HttpExchange>& ex);
  static void run_callback(const std::function<void()>& callback);

 private:
  enum class State { kReadingRequest, kResponding, kLingering, kClosed };
  enum class TimerPhase { kNone, kIdle, kHeader, kBody, kSend, kLinger };

  void begin_request();
  void maybe_read();
  void on_read(const boost::system::error_code& ec, size_t n);
  void process_input();
  void reject_request(int status);  // a transport-level error response, then close
  void dispatch();
  void queue(std::string bytes, bool counted);
  void flush();
  void on_write(const boost::system::error_code& ec, size_t n);
  void finish_response();
  void linger_close();
  void close_now();
  void arm_timer(TimerPhase phase, std::chrono::milliseconds after);
  void on_timer();
  bool closing() const { return stopping_ || close_after_response_; }

  const std::shared_ptr<HttpServerShared> shared_;
  // The io_context, weakly: a strong reference here would make a cycle through the handlers queued in it.
  // HttpResponse holds it strongly.
  const std::weak_ptr<void> io_keepalive_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;
  std::string peer_;

  State state_ = State::kReadingRequest;
  TimerPhase timer_phase_ = TimerPhase::kNone;
  uint64_t timer_generation_ = 0;
  bool first_request_ = true;
  bool stopping_ = false;

  // Reading: bytes go read_buf_ → in_ → parser_.
  std::array<char, 16384> read_buf_{};
  boost::beast::flat_buffer in_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  bool reading_ = false;
  bool request_started_ = false;  // bytes of the current request arrived
  bool header_checked_ = false;

  // Writing: queue_ (waiting) → in_flight_ (one async_write at a time).
  std::deque<std::pair<std::string, bool>> queue_;  // (bytes, counted in the exchange's pending_bytes)
  std::vector<std::string> in_flight_;
  size_t in_flight_counted_ = 0;
  bool writing_ = false;

  // The current response.
  std::shared_ptr<HttpExchange> exchange_;  // null for transport-level errors
  bool head_request_ = false;
  bool keep_alive_ = false;
  bool response_done_ = false;       // all of the response is queued
  bool close_after_response_ = false;
};

template <class F>
void HttpConnection::post(F&& fn) {
  asio::post(socket_.get_executor(), std::forward<F>(fn));
}

}  // namespace pagoda::detail
