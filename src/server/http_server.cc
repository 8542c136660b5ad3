#if defined(__SANITIZE_THREAD__)
// Asio's handler invocation uses std::atomic_thread_fence, which GCC warns TSan does not model; the
// hand-offs that matter also go through Asio's mutexes, which TSan does see.
#pragma GCC diagnostic ignored "-Wtsan"
#endif

#include "server/http_server.h"

#include <utility>  // before Asio (DESIGN.md)

#include <algorithm>
#include <cctype>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "base/error.h"
#include "base/log.h"
#include "server/http_connection.h"

namespace pagoda {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

// --- HttpRequest ---------------------------------------------------------------------------------------

const std::string* HttpRequest::find_header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key.size() == name.size() &&
        std::equal(key.begin(), key.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
        })) {
      return &value;
    }
  }
  return nullptr;
}

std::string HttpRequest::header(std::string_view name, std::string_view fallback) const {
  const std::string* value = find_header(name);
  return value ? *value : std::string(fallback);
}

// --- the server ----------------------------------------------------------------------------------------

namespace detail {

struct HttpServerCore {
  explicit HttpServerCore(std::shared_ptr<HttpServerShared> s)
      : shared(std::move(s)),
        ioc(std::make_shared<asio::io_context>()),
        work(asio::make_work_guard(*ioc)),
        accept_strand(asio::make_strand(*ioc)),
        acceptor(accept_strand),
        retry_timer(accept_strand) {}

  void accept_next();
  void on_accept(const error_code& ec, tcp::socket socket);
  bool on_io_thread() const;

  const std::shared_ptr<HttpServerShared> shared;
  // Shared with every HttpResponse, which may outlive the server (see http_connection.h).
  const std::shared_ptr<asio::io_context> ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  Strand accept_strand;
  tcp::acceptor acceptor;
  asio::steady_timer retry_timer;  // after an accept error (e.g. out of file descriptors)
  std::vector<std::thread> threads;

  std::mutex lifecycle_mu;  // start() / stop()
  bool started = false;
  bool stopped = false;
  std::atomic<int> port{0};
};

// Accept handlers capture the raw core: stop() closes the acceptor and joins the I/O threads before the
// core can be destroyed, and a handler that never ran is destroyed with the io_context without running.
void HttpServerCore::accept_next() {
  acceptor.async_accept(asio::make_strand(*ioc),
                        [this](const error_code& ec, tcp::socket socket) { on_accept(ec, std::move(socket)); });
}

void HttpServerCore::on_accept(const error_code& ec, tcp::socket socket) {
  if (!acceptor.is_open()) return;  // stopping
  if (ec) {
    if (ec == asio::error::operation_aborted) return;
    log_warn("http accept failed: ", ec.message());
    retry_timer.expires_after(std::chrono::milliseconds(50));
    retry_timer.async_wait([this](const error_code& wait_ec) {
      if (!wait_ec && acceptor.is_open()) accept_next();
    });
    return;
  }
  auto connection = std::make_shared<HttpConnection>(shared, std::weak_ptr<void>(ioc), std::move(socket));
  bool admit = false;
  bool reject = false;
  {
    std::lock_guard<std::mutex> lock(shared->mu);
    size_t open = shared->connections.size();
    size_t limit = static_cast<size_t>(std::max(1, shared->options.max_connections));
    if (!shared->stopping && open < 2 * limit) {
      // Past the limit a connection still gets its 503 (it lingers briefly); past twice the limit it is
      // closed at once, so a flood cannot grow the registry.
      admit = true;
      reject = open >= limit;
      shared->connections.emplace(connection.get(), connection);
    }
  }
  if (reject || !admit) {
    shared->connections_rejected.fetch_add(1, std::memory_order_relaxed);
  } else {
    shared->connections_accepted.fetch_add(1, std::memory_order_relaxed);
  }
  if (admit) connection->start(reject);  // otherwise its socket closes with it
  accept_next();
}

bool HttpServerCore::on_io_thread() const {
  auto id = std::this_thread::get_id();
  return std::any_of(threads.begin(), threads.end(), [id](const std::thread& t) { return t.get_id() == id; });
}

}  // namespace detail

HttpServer::HttpServer(HttpServerOptions options, Handler handler) {
  PAGODA_CHECK(handler, "HttpServer needs a handler");
  PAGODA_CHECK(options.port >= 0 && options.port <= 65535, "--port must be in 0..65535, got ", options.port);
  options.num_threads = std::max(1, options.num_threads);
  core_ = std::make_shared<detail::HttpServerCore>(
      std::make_shared<detail::HttpServerShared>(std::move(options), std::move(handler)));
}

HttpServer::~HttpServer() {
  try {
    stop(std::chrono::milliseconds(0));
  } catch (const std::exception& e) {
    log_error("http server stop failed: ", e.what());
  }
}

void HttpServer::start() {
  auto& core = *core_;
  std::lock_guard<std::mutex> lock(core.lifecycle_mu);
  PAGODA_CHECK(!core.started, "HttpServer::start() called twice");
  const auto& options = core.shared->options;
  try {
    tcp::resolver resolver(*core.ioc);
    auto results = resolver.resolve(options.host, std::to_string(options.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service);
    PAGODA_CHECK(!results.empty(), "cannot resolve --host ", options.host);
    tcp::endpoint endpoint = results.begin()->endpoint();
    core.acceptor.open(endpoint.protocol());
    core.acceptor.set_option(asio::socket_base::reuse_address(true));
    core.acceptor.bind(endpoint);
    core.acceptor.listen(options.backlog);
    core.port = core.acceptor.local_endpoint().port();
  } catch (const boost::system::system_error& e) {
    error_code ignored;
    core.acceptor.close(ignored);
    fail("cannot listen on ", options.host, ":", options.port, ": ", e.code().message());
  }
  core.started = true;
  asio::post(core.accept_strand, [c = &core] { c->accept_next(); });
  for (int i = 0; i < options.num_threads; ++i) {
    core.threads.emplace_back([ioc = core.ioc] {
      for (;;) {
        try {
          ioc->run();
          return;
        } catch (const std::exception& e) {
          // A handler bug must not take the server down with it.
          log_error("http I/O thread caught: ", e.what());
        }
      }
    });
  }
  log_info("http server listening on ", options.host, ":", core.port.load());
}

void HttpServer::stop(std::chrono::milliseconds grace) {
  auto& core = *core_;
  std::lock_guard<std::mutex> lifecycle(core.lifecycle_mu);
  if (!core.started || core.stopped) return;
  PAGODA_CHECK(!core.on_io_thread(), "HttpServer::stop() called from one of its own I/O threads");
  core.stopped = true;
  auto deadline = std::chrono::steady_clock::now() + grace;
  auto& shared = *core.shared;

  // 1. No new connections; idle ones close, busy ones close after their current response.
  std::vector<std::shared_ptr<detail::HttpConnection>> open;
  {
    std::lock_guard<std::mutex> lock(shared.mu);
    shared.stopping = true;
    for (auto& [raw, weak] : shared.connections) {
      if (auto c = weak.lock()) open.push_back(std::move(c));
    }
  }
  asio::post(core.accept_strand, [c = &core] {
    error_code ignored;
    c->acceptor.close(ignored);
    c->retry_timer.cancel();
  });
  for (auto& c : open) c->begin_shutdown();
  open.clear();

  // 2. Grace period, then cut off whatever is left (their on_disconnect fires).
  auto wait_until_empty = [&shared](std::chrono::steady_clock::time_point until) {
    std::unique_lock<std::mutex> lock(shared.mu);
    return shared.cv.wait_until(lock, until, [&shared] { return shared.connections.empty(); });
  };
  if (!wait_until_empty(deadline)) {
    {
      std::lock_guard<std::mutex> lock(shared.mu);
      for (auto& [raw, weak] : shared.connections) {
        if (auto c = weak.lock()) open.push_back(std::move(c));
      }
    }
    for (auto& c : open) c->force_close();
    open.clear();
    if (!wait_until_empty(std::chrono::steady_clock::now() + std::chrono::seconds(2))) {
      log_warn("http server: connections still open after force close");
    }
  }

  // 3. Stop the I/O threads. Handlers still queued (posts from responses held elsewhere) never run.
  core.work.reset();
  core.ioc->stop();
  for (auto& t : core.threads) t.join();
  core.threads.clear();
  log_debug("http server stopped");
}

int HttpServer::port() const { return core_->port.load(); }

HttpServerStats HttpServer::stats() const {
  const auto& shared = *core_->shared;
  HttpServerStats s;
  s.connections_accepted = shared.connections_accepted.load(std::memory_order_relaxed);
  s.connections_rejected = shared.connections_rejected.load(std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(core_->shared->mu);
    s.connections_open = shared.connections.size();
  }
  s.requests = shared.requests.load(std::memory_order_relaxed);
  s.bytes_received = shared.bytes_received.load(std::memory_order_relaxed);
  s.bytes_sent = shared.bytes_sent.load(std::memory_order_relaxed);
  return s;
}

}  // namespace pagoda
