// A tiny blocking HTTP/1.1 client over a raw socket, for the server tests: it sends exactly the bytes a
// test gives it and parses responses itself (Content-Length, chunked, or to EOF), so framing is checked
// byte for byte and no third-party client can hide a mistake. Every read has a timeout.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pagoda::testing {

struct TestResponse {
  int status = 0;
  std::string head;                            // status line + headers, as received
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // de-chunked
  std::vector<std::string> chunks;             // the chunks, when chunked
  std::string raw_body;                        // the body bytes as received (chunk framing included)
  bool chunked = false;
  bool complete = false;  // the body ended as framed (length reached / last chunk / EOF for no length)
};

class TestClient {
 public:
  // rcvbuf > 0: a small receive buffer (set before connecting), for slow-client tests.
  explicit TestClient(int port, int rcvbuf = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~TestClient() { close(); }
  TestClient(const TestClient&) = delete;
  TestClient& operator=(const TestClient&) = delete;

  bool connected() const { return connected_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes with a reset (SO_LINGER 0) instead of a FIN.
  void reset() {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close();
  }

  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads more bytes into the buffer; false on EOF, error or timeout (eof() tells which).
  bool fill(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  bool eof() const { return eof_; }

  // True if the server closes the connection (EOF or reset) within the timeout; bytes still arriving are
  // kept in the buffer.
  bool wait_eof(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!eof_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      fill(left);
    }
    return true;
  }

  // Reads until the buffer holds `n` bytes past its start; false on timeout/EOF.
  bool need(size_t n, std::chrono::steady_clock::time_point deadline) {
    while (buf_.size() < n) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !fill(left)) return false;
    }
    return true;
  }
  // Reads until `token` is in the buffer; its end offset, or npos.
  size_t need_token(std::string_view token, std::chrono::steady_clock::time_point deadline) {
    for (;;) {
      size_t at = buf_.find(token);
      if (at != std::string::npos) return at + token.size();
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !fill(left)) return std::string::npos;
    }
  }

  // Reads the head of one response (skipping none): nullopt on timeout/EOF.
  std::optional<TestResponse> read_head(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t end = need_token("\r\n\r\n", deadline);
    if (end == std::string::npos) return std::nullopt;
    TestResponse r;
    r.head = buf_.substr(0, end);
    buf_.erase(0, end);
    size_t line_end = r.head.find("\r\n");
    std::string status_line = r.head.substr(0, line_end);
    if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) return std::nullopt;
    r.status = std::stoi(status_line.substr(9, 3));
    size_t pos = line_end + 2;
    while (pos < r.head.size() - 2) {
      size_t eol = r.head.find("\r\n", pos);
      std::string line = r.head.substr(pos, eol - pos);
      size_t colon = line.find(':');
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      r.headers[name] = value;
      pos = eol + 2;
    }
    r.chunked = r.headers.count("transfer-encoding") && r.headers["transfer-encoding"] == "chunked";
    return r;
  }

  // Reads one chunk of a chunked body: the data, "" for the last chunk, nullopt on timeout/EOF/bad framing.
  std::optional<std::string> read_chunk(TestResponse& r, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t line_end = need_token("\r\n", deadline);
    if (line_end == std::string::npos) return std::nullopt;
    std::string size_line = buf_.substr(0, line_end - 2);
    size_t size = std::stoul(size_line, nullptr, 16);
    if (!need(line_end + size + 2, deadline)) return std::nullopt;
    if (buf_.compare(line_end + size, 2, "\r\n") != 0) return std::nullopt;
    std::string data = buf_.substr(line_end, size);
    r.raw_body += buf_.substr(0, line_end + size + 2);
    buf_.erase(0, line_end + size + 2);
    if (size == 0) {
      r.complete = true;
      return std::string();
    }
    r.chunks.push_back(data);
    r.body += data;
    return data;
  }

  // Reads one whole response (100 Continue interim responses are returned as such).
  std::optional<TestResponse> read_response(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    auto r = read_head(timeout);
    if (!r) return std::nullopt;
    if (r->status / 100 == 1 || r->status == 204 || r->status == 304) {
      r->complete = true;
      return r;
    }
    if (r->chunked) {
      for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        auto chunk = read_chunk(*r, left);
        if (!chunk) return r;  // incomplete
        if (chunk->empty()) return r;
      }
    }
    if (r->headers.count("content-length")) {
      size_t length = std::stoul(r->headers["content-length"]);
      if (need(length, deadline)) {
        r->body = buf_.substr(0, length);
        buf_.erase(0, length);
        r->complete = true;
      }
      r->raw_body = r->body;
      return r;
    }
    // No framing: the body runs to EOF.
    r->complete = wait_eof(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
    r->body = buf_;
    r->raw_body = buf_;
    buf_.clear();
    return r;
  }

  const std::string& buffer() const { return buf_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  std::string buf_;
};

}  // namespace pagoda::testing
