// GCC 12 at -O2 with sanitizers reports a false -Wmaybe-uninitialized inside Beast's parser
// (boost::optional in basic_parser::content_length_unchecked); the warning is about Boost's code, not ours.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if defined(__SANITIZE_THREAD__)
// Asio's handler invocation uses std::atomic_thread_fence, which GCC warns TSan does not model; the
// hand-offs that matter also go through Asio's mutexes, which TSan does see.
#pragma GCC diagnostic ignored "-Wtsan"
#endif

#include "server/http_connection.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>

#include "base/log.h"
#include "server/http_wire.h"

namespace pagoda::detail {

namespace http = boost::beast::http;
using boost::system::error_code;

namespace {

// Bytes of a following (pipelined) request kept while a response is in progress; past this, reading
// pauses until the response is done (and disconnects are then only seen by failed writes).
constexpr size_t kPipelineSlack = 64 << 10;
// After the last response of a connection: how long to drain the client's unread bytes before closing, so
// that our response is not lost to a TCP reset (e.g. a 413 while the client is still sending its body).
constexpr std::chrono::milliseconds kLingerTime{1000};

std::string to_string(boost::beast::string_view sv) { return std::string(sv.data(), sv.size()); }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

HttpConnection::HttpConnection(std::shared_ptr<HttpServerShared> shared, std::weak_ptr<void> io_keepalive,
                               asio::ip::tcp::socket socket)
    : shared_(std::move(shared)),
      io_keepalive_(std::move(io_keepalive)),
      socket_(std::move(socket)),
      timer_(socket_.get_executor()) {}

void HttpConnection::start(bool reject) {
  post([self = shared_from_this(), reject] {
    error_code ec;
    auto endpoint = self->socket_.remote_endpoint(ec);
    if (!ec) {
      auto address = endpoint.address();
      self->peer_ = (address.is_v6() ? "[" + address.to_string() + "]" : address.to_string()) + ":" +
                    std::to_string(endpoint.port());
    }
    self->socket_.set_option(asio::ip::tcp::no_delay(true), ec);  // each SSE chunk leaves at once
    if (reject) {
      self->maybe_read();
      self->reject_request(503);
      return;
    }
    self->begin_request();
  });
}

void HttpConnection::begin_shutdown() {
  post([self = shared_from_this()] {
    self->stopping_ = true;
    if (self->state_ == State::kReadingRequest && !self->request_started_) self->close_now();
  });
}

void HttpConnection::force_close() {
  post([self = shared_from_this()] { self->close_now(); });
}

// --- reading -----------------------------------------------------------------------------------------

void HttpConnection::begin_request() {
  state_ = State::kReadingRequest;
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(std::min<size_t>(shared_->options.max_header_bytes, UINT32_MAX)));
  parser_->body_limit(shared_->options.max_body_bytes);
  request_started_ = in_.size() > 0;
  header_checked_ = false;
  exchange_.reset();
  response_done_ = false;
  close_after_response_ = false;
  if (request_started_) {
    arm_timer(TimerPhase::kHeader, shared_->options.header_timeout);
  } else {
    arm_timer(TimerPhase::kIdle,
              first_request_ ? shared_->options.header_timeout : shared_->options.keep_alive_timeout);
  }
  first_request_ = false;
  process_input();
  maybe_read();
}

void HttpConnection::maybe_read() {
  if (reading_ || state_ == State::kClosed) return;
  if (state_ == State::kResponding && in_.size() >= kPipelineSlack) return;
  reading_ = true;
  socket_.async_read_some(asio::buffer(read_buf_),
                          [self = shared_from_this()](const error_code& ec, size_t n) { self->on_read(ec, n); });
}

void HttpConnection::on_read(const error_code& ec, size_t n) {
  reading_ = false;
  if (state_ == State::kClosed) return;
  if (ec) {
    // EOF or reset: the client is gone (a half-close counts too). A pending response's on_disconnect
    // fires in close_now().
    close_now();
    return;
  }
  shared_->bytes_received.fetch_add(n, std::memory_order_relaxed);
  if (state_ == State::kLingering) {
    maybe_read();  // discard
    return;
  }
  auto dst = in_.prepare(n);
  std::memcpy(dst.data(), read_buf_.data(), n);
  in_.commit(n);
  if (state_ == State::kReadingRequest) process_input();
  maybe_read();
}

void HttpConnection::process_input() {
  while (state_ == State::kReadingRequest) {
    if (!request_started_ && in_.size() > 0) {
      request_started_ = true;
      arm_timer(TimerPhase::kHeader, shared_->options.header_timeout);
    }
    if (parser_->is_header_done() && !header_checked_) {
      header_checked_ = true;
      const auto& req = parser_->get();
      // Beast decodes only the chunked coding; anything else (gzip, ...) we cannot read.
      auto te = req.find(http::field::transfer_encoding);
      if (te != req.end() && !iequals(std::string_view(te->value().data(), te->value().size()), "chunked")) {
        reject_request(501);
        return;
      }
      if (!parser_->is_done()) {
        auto expect = req.find(http::field::expect);
        if (expect != req.end()) {
          if (!iequals(std::string_view(expect->value().data(), expect->value().size()), "100-continue")) {
            reject_request(417);
            return;
          }
          if (req.version() >= 11) {
            queue("HTTP/1.1 100 Continue\r\n\r\n", false);
            flush();
          }
        }
        arm_timer(TimerPhase::kBody, shared_->options.body_timeout);
      }
      parser_->eager(true);
    }
    if (parser_->is_done()) {
      dispatch();
      return;
    }
    if (in_.size() == 0) return;
    error_code ec;
    size_t used = parser_->put(in_.data(), ec);
    in_.consume(used);
    if (ec == http::error::need_more) return;
    if (ec == http::error::header_limit) return reject_request(431);
    if (ec == http::error::body_limit) return reject_request(413);
    if (ec) return reject_request(400);
    if (used == 0 && !parser_->is_header_done()) return;  // no progress: wait for bytes
  }
}

void HttpConnection::reject_request(int status) {
  state_ = State::kResponding;
  arm_timer(TimerPhase::kNone, {});
  exchange_.reset();
  response_done_ = true;
  close_after_response_ = true;
  queue(http_wire::error_response(status, true), false);
  flush();
}

void HttpConnection::dispatch() {
  arm_timer(TimerPhase::kNone, {});
  state_ = State::kResponding;
  shared_->requests.fetch_add(1, std::memory_order_relaxed);
  auto msg = parser_->release();
  parser_.reset();

  HttpRequest request;
  request.method = to_string(msg.method_string());
  request.target = to_string(msg.target());
  auto q = request.target.find('?');
  request.path = request.target.substr(0, q);
  if (q != std::string::npos) request.query = request.target.substr(q + 1);
  request.version = msg.version() >= 11 ? 11 : 10;
  request.headers.reserve(16);
  for (const auto& field : msg) request.headers.emplace_back(to_string(field.name_string()), to_string(field.value()));
  request.body = std::move(msg.body());
  request.peer = peer_;
  // HTTP/1.0 keep-alive is not offered: one request per connection.
  request.keep_alive = request.version == 11 && msg.keep_alive();

  head_request_ = request.method == "HEAD";
  keep_alive_ = request.keep_alive;
  exchange_ = std::make_shared<HttpExchange>();
  exchange_->chunked = request.version == 11;
  exchange_->max_pending_bytes = shared_->options.max_pending_bytes;
  auto response = std::shared_ptr<HttpResponse>(new HttpResponse(io_keepalive_.lock(), shared_from_this(), exchange_));
  try {
    shared_->handler(std::move(request), std::move(response));
  } catch (const std::exception& e) {
    log_error("http handler threw: ", e.what());  // an unanswered response turns into a 500 when dropped
  } catch (...) {
    log_error("http handler threw a non-std exception");
  }
}

// --- the response (strand side of HttpResponse) --------------------------------------------------------

void HttpConnection::do_send(const std::shared_ptr<HttpExchange>& ex, int status, const std::string& content_type,
                             std::string body, const HttpHeaders& extra) {
  if (ex != exchange_ || state_ != State::kResponding) return;
  bool no_body = http_wire::status_has_no_body(status);
  close_after_response_ = !keep_alive_ || stopping_;
  long long length = no_body ? -1 : static_cast<long long>(body.size());
  std::string bytes = http_wire::response_head(status, content_type, extra, length, false, close_after_response_);
  if (!no_body && !head_request_) bytes += body;
  response_done_ = true;
  queue(std::move(bytes), false);
  flush();
}

void HttpConnection::do_start_stream(const std::shared_ptr<HttpExchange>& ex, int status,
                                     const std::string& content_type, const HttpHeaders& extra) {
  if (ex != exchange_ || state_ != State::kResponding) return;
  // HTTP/1.0: no chunked coding, so the body runs to EOF.
  close_after_response_ = !keep_alive_ || stopping_ || !ex->chunked;
  queue(http_wire::response_head(status, content_type, extra, -1, ex->chunked, close_after_response_), false);
  flush();
}

void HttpConnection::do_write(const std::shared_ptr<HttpExchange>& ex, std::string framed) {
  if (ex != exchange_ || state_ != State::kResponding || response_done_) {
    ex->pending_bytes.fetch_sub(framed.size());
    return;
  }
  if (head_request_) {
    ex->pending_bytes.fetch_sub(framed.size());
    return;
  }
  queue(std::move(framed), true);
  flush();
}

void HttpConnection::do_end(const std::shared_ptr<HttpExchange>& ex) {
  if (ex != exchange_ || state_ != State::kResponding || response_done_) return;
  if (ex->chunked && !head_request_) queue(std::string(http_wire::kLastChunk), false);
  response_done_ = true;
  flush();
}

void HttpConnection::do_abort(const std::shared_ptr<HttpExchange>& ex, bool flush_first) {
  if (ex != exchange_ || state_ != State::kResponding) return;
  if (!flush_first) {
    close_now();
    return;
  }
  // What was written still goes out; then the connection closes without the last chunk.
  response_done_ = true;
  close_after_response_ = true;
  flush();
}

void HttpConnection::fire_disconnect(const std::shared_ptr<HttpExchange>& ex) {
  ex->open.store(false);
  std::function<void()> callback;
  {
    std::lock_guard<std::mutex> lock(ex->mu);
    if (ex->disconnected) return;
    ex->disconnected = true;
    ex->gone_before_end = !ex->ended.load();
    if (ex->gone_before_end) callback = std::move(ex->on_disconnect);
    ex->on_disconnect = nullptr;
  }
  run_callback(callback);
}

void HttpConnection::run_callback(const std::function<void()>& callback) {
  if (!callback) return;
  try {
    callback();
  } catch (const std::exception& e) {
    log_error("http on_disconnect callback threw: ", e.what());
  } catch (...) {
    log_error("http on_disconnect callback threw a non-std exception");
  }
}

// --- writing -------------------------------------------------------------------------------------------

void HttpConnection::queue(std::string bytes, bool counted) {
  if (bytes.empty()) return;
  queue_.emplace_back(std::move(bytes), counted);
}

void HttpConnection::flush() {
  if (state_ == State::kClosed || writing_) return;
  if (queue_.empty()) {
    if (state_ == State::kResponding && response_done_) finish_response();
    return;
  }
  writing_ = true;
  in_flight_.clear();
  in_flight_counted_ = 0;
  std::vector<asio::const_buffer> buffers;
  buffers.reserve(queue_.size());
  while (!queue_.empty()) {
    auto& [bytes, counted] = queue_.front();
    if (counted) in_flight_counted_ += bytes.size();
    in_flight_.push_back(std::move(bytes));
    queue_.pop_front();
  }
  for (const auto& b : in_flight_) buffers.emplace_back(b.data(), b.size());
  // A client that takes nothing for send_timeout is dropped (the timer is idle while responding).
  if (state_ == State::kResponding) arm_timer(TimerPhase::kSend, shared_->options.send_timeout);
  asio::async_write(socket_, buffers,
                    [self = shared_from_this()](const error_code& ec, size_t n) { self->on_write(ec, n); });
}

void HttpConnection::on_write(const error_code& ec, size_t n) {
  writing_ = false;
  shared_->bytes_sent.fetch_add(n, std::memory_order_relaxed);
  if (exchange_ && in_flight_counted_ > 0) exchange_->pending_bytes.fetch_sub(in_flight_counted_);
  in_flight_.clear();
  in_flight_counted_ = 0;
  if (state_ == State::kClosed) return;
  if (ec) {
    close_now();
    return;
  }
  if (timer_phase_ == TimerPhase::kSend) arm_timer(TimerPhase::kNone, {});
  flush();
}

void HttpConnection::finish_response() {
  if (exchange_) exchange_->open.store(false);
  exchange_.reset();
  if (close_after_response_ || stopping_) {
    linger_close();
    return;
  }
  begin_request();
}

// --- closing -------------------------------------------------------------------------------------------

void HttpConnection::linger_close() {
  state_ = State::kLingering;
  in_.clear();
  error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
  if (ec) {
    close_now();
    return;
  }
  arm_timer(TimerPhase::kLinger, kLingerTime);
  maybe_read();
}

void HttpConnection::close_now() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  if (exchange_) fire_disconnect(exchange_);
  arm_timer(TimerPhase::kNone, {});
  error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  queue_.clear();
  parser_.reset();
  in_.clear();
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->connections.erase(this);
  }
  shared_->cv.notify_all();
}

// --- timeouts ------------------------------------------------------------------------------------------

void HttpConnection::arm_timer(TimerPhase phase, std::chrono::milliseconds after) {
  timer_phase_ = phase;
  uint64_t generation = ++timer_generation_;
  if (phase == TimerPhase::kNone) {
    timer_.cancel();
    return;
  }
  timer_.expires_after(after);
  timer_.async_wait([self = shared_from_this(), generation](const error_code& ec) {
    if (ec || generation != self->timer_generation_) return;
    self->on_timer();
  });
}

void HttpConnection::on_timer() {
  switch (timer_phase_) {
    case TimerPhase::kIdle:
    case TimerPhase::kLinger:
    case TimerPhase::kSend:
      close_now();
      break;
    case TimerPhase::kHeader:
    case TimerPhase::kBody:
      if (state_ == State::kReadingRequest) reject_request(408);
      break;
    case TimerPhase::kNone:
      break;
  }
}

}  // namespace pagoda::detail

// --- HttpResponse --------------------------------------------------------------------------------------

namespace pagoda {

using detail::HttpConnection;
using detail::HttpExchange;

HttpResponse::HttpResponse(std::shared_ptr<void> io_keepalive, std::shared_ptr<HttpConnection> connection,
                           std::shared_ptr<HttpExchange> exchange)
    : io_keepalive_(std::move(io_keepalive)), connection_(std::move(connection)), exchange_(std::move(exchange)) {}

HttpResponse::~HttpResponse() {
  auto& ex = exchange_;
  if (!ex->answered.exchange(true)) {
    ex->ended.store(true);
    connection_->post([c = connection_, ex] {
      c->do_send(ex, 500, "text/plain; charset=utf-8", "Internal Server Error\n", {});
    });
  } else if (ex->streaming.load() && !ex->ended.load()) {
    // Dropped mid-stream: no terminating chunk, so the client sees a truncated body, not a complete one.
    ex->open.store(false);
    connection_->post([c = connection_, ex] { c->do_abort(ex, /*flush_first=*/true); });
  }
}

bool HttpResponse::send(int status, std::string content_type, std::string body, HttpHeaders extra_headers) {
  for (const auto& [name, value] : extra_headers) {
    PAGODA_CHECK(http_wire::valid_header(name, value), "invalid HTTP response header '", name, "'");
  }
  PAGODA_CHECK(http_wire::valid_header("Content-Type", content_type), "invalid HTTP Content-Type");
  auto& ex = exchange_;
  if (ex->answered.exchange(true)) return false;
  ex->ended.store(true);
  drop_disconnect_callback();
  if (!ex->open.load()) return false;
  connection_->post([c = connection_, ex, status, content_type = std::move(content_type), body = std::move(body),
                     extra = std::move(extra_headers)]() mutable {
    c->do_send(ex, status, content_type, std::move(body), extra);
  });
  return true;
}

bool HttpResponse::start_stream(int status, std::string content_type, HttpHeaders extra_headers) {
  for (const auto& [name, value] : extra_headers) {
    PAGODA_CHECK(http_wire::valid_header(name, value), "invalid HTTP response header '", name, "'");
  }
  PAGODA_CHECK(http_wire::valid_header("Content-Type", content_type), "invalid HTTP Content-Type");
  auto& ex = exchange_;
  if (ex->answered.exchange(true)) return false;
  ex->streaming.store(true);
  if (!ex->open.load()) return false;
  connection_->post([c = connection_, ex, status, content_type = std::move(content_type),
                     extra = std::move(extra_headers)] { c->do_start_stream(ex, status, content_type, extra); });
  return true;
}

bool HttpResponse::write(std::string chunk) {
  auto& ex = exchange_;
  if (!ex->streaming.load() || ex->ended.load() || !ex->open.load()) return false;
  if (chunk.empty()) return true;
  std::string framed = ex->chunked ? http_wire::frame_chunk(chunk) : std::move(chunk);
  size_t size = framed.size();
  size_t before = ex->pending_bytes.fetch_add(size);
  if (before + size > ex->max_pending_bytes) {
    ex->pending_bytes.fetch_sub(size);
    // A client that does not keep up counts as gone: close it rather than buffer without bound.
    ex->open.store(false);
    connection_->post([c = connection_, ex] { c->do_abort(ex, /*flush_first=*/false); });
    return false;
  }
  connection_->post([c = connection_, ex, framed = std::move(framed)]() mutable { c->do_write(ex, std::move(framed)); });
  return true;
}

bool HttpResponse::end() {
  auto& ex = exchange_;
  if (!ex->streaming.load() || ex->ended.exchange(true)) return false;
  drop_disconnect_callback();
  if (!ex->open.load()) return false;
  connection_->post([c = connection_, ex] { c->do_end(ex); });
  return true;
}

void HttpResponse::on_disconnect(std::function<void()> callback) {
  auto& ex = exchange_;
  {
    std::lock_guard<std::mutex> lock(ex->mu);
    if (!ex->disconnected) {
      if (!ex->ended.load()) ex->on_disconnect = std::move(callback);
      return;
    }
    if (!ex->gone_before_end) return;
  }
  if (!callback) return;
  connection_->post([callback = std::move(callback)] { HttpConnection::run_callback(callback); });
}

void HttpResponse::drop_disconnect_callback() {
  std::function<void()> callback;  // destroyed outside the lock: it may own this response's owner
  std::lock_guard<std::mutex> lock(exchange_->mu);
  callback.swap(exchange_->on_disconnect);
}

bool HttpResponse::is_open() const { return exchange_->open.load(); }

}  // namespace pagoda
