// `pagoda bench serve`: the client side of vLLM's `vllm bench serve` against any
// OpenAI-compatible server (ours or vLLM's): requests go out at --request-rate (Poisson; inf: all
// at once) with at most --max-concurrency in flight, each streamed over SSE from /v1/completions;
// prints vLLM's result table (request and token throughput; mean / median / p99 of TTFT, TPOT,
// ITL, E2EL) and with --save-result writes it as JSON.
//
// Datasets: "random" (--random-input-len token ids drawn uniformly from the tokenizer's ordinary
// tokens, sent as a token-id prompt so the server sees exactly that many tokens; --random-output-len
// tokens each with ignore_eos) or "sharegpt" (--dataset-path: a ShareGPT JSON file; the first human
// turn is the prompt and the length of the first reply, in tokens, is max_tokens; pairs with fewer
// than 4 tokens on either side, a prompt over 1024 or a total over 2048 tokens are skipped, as
// vLLM does).
//
// Timing: TTFT is from sending the request to the first chunk that carries text; ITL the gaps
// between such chunks; E2EL send to the last byte; TPOT (E2EL - TTFT) / (output tokens - 1),
// where output tokens come from the server's usage (stream_options.include_usage).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/system.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Sample {
  std::string prompt_text;              // sharegpt
  std::vector<int32_t> prompt_ids;      // random
  int prompt_len = 0;
  int output_len = 0;
};

struct Result {
  bool ok = false;
  std::string error;
  double ttft = 0, e2el = 0;
  std::vector<double> itl;
  int output_tokens = 0;
  int prompt_tokens = 0;
  double start = 0;  // seconds since the benchmark began
  std::vector<double> chunk_times;  // seconds since the benchmark began, one per text chunk
};

// A blocking HTTP/1.1 POST that reads a streamed (chunked or not) response, calling on_data
// with the body bytes as they arrive. Returns the status code.
class Connection {
 public:
  Connection(const std::string& host, int port, double timeout_s) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    PAGODA_CHECK(rc == 0, "cannot resolve ", host, ": ", gai_strerror(rc));
    for (addrinfo* a = res; a; a = a->ai_next) {
      fd_ = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
      if (fd_ < 0) continue;
      if (::connect(fd_, a->ai_addr, a->ai_addrlen) == 0) break;
      ::close(fd_);
      fd_ = -1;
    }
    ::freeaddrinfo(res);
    PAGODA_CHECK(fd_ >= 0, "cannot connect to ", host, ":", port, ": ", std::strerror(errno));
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout_s);
    tv.tv_usec = static_cast<suseconds_t>((timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }

  template <typename OnData>
  int post(const std::string& host, const std::string& path, const std::string& body, const std::string& api_key,
           OnData on_data) {
    std::string req = "POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\n" +
                      "Accept: text/event-stream\r\nConnection: close\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\n";
    if (!api_key.empty()) req += "Authorization: Bearer " + api_key + "\r\n";
    req += "\r\n" + body;
    for (size_t sent = 0; sent < req.size();) {
      const ssize_t n = ::send(fd_, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
      PAGODA_CHECK(n > 0, "send failed: ", std::strerror(errno));
      sent += static_cast<size_t>(n);
    }
    // Headers.
    std::string buf;
    size_t header_end;
    while ((header_end = buf.find("\r\n\r\n")) == std::string::npos) PAGODA_CHECK(fill(buf), "connection closed before the response headers");
    const std::string head = buf.substr(0, header_end);
    buf.erase(0, header_end + 4);
    PAGODA_CHECK(head.rfind("HTTP/1.", 0) == 0 && head.size() > 12, "malformed status line");
    const int status = std::atoi(head.c_str() + 9);
    std::string lower = head;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    const bool chunked = lower.find("transfer-encoding: chunked") != std::string::npos;
    if (!chunked) {  // Content-Length or until EOF
      long long left = -1;
      const size_t cl = lower.find("content-length:");
      if (cl != std::string::npos) left = std::atoll(lower.c_str() + cl + 15);
      for (;;) {
        if (!buf.empty()) {
          on_data(buf);
          if (left >= 0) left -= static_cast<long long>(buf.size());
          buf.clear();
        }
        if (left == 0 || !fill(buf)) break;
      }
      return status;
    }
    for (;;) {
      size_t eol;
      while ((eol = buf.find("\r\n")) == std::string::npos) PAGODA_CHECK(fill(buf), "connection closed inside a chunk");
      const size_t size = std::stoul(buf.substr(0, eol), nullptr, 16);
      buf.erase(0, eol + 2);
      if (size == 0) return status;
      while (buf.size() < size + 2) PAGODA_CHECK(fill(buf), "connection closed inside a chunk");
      on_data(buf.substr(0, size));
      buf.erase(0, size + 2);
    }
  }

 private:
  bool fill(std::string& buf) {
    char tmp[16384];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
    return true;
  }
  int fd_ = -1;
};

double percentile(std::vector<double> xs, double q) {
  if (xs.empty()) return 0;
  std::sort(xs.begin(), xs.end());
  const double pos = q / 100.0 * static_cast<double>(xs.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, xs.size() - 1);
  return xs[lo] + (xs[hi] - xs[lo]) * (pos - static_cast<double>(lo));
}

double mean(const std::vector<double>& xs) {
  if (xs.empty()) return 0;
  double s = 0;
  for (double x : xs) s += x;
  return s / static_cast<double>(xs.size());
}

std::vector<Sample> sharegpt_samples(const std::string& path, const Tokenizer& tok, int num, uint64_t seed) {
  std::ifstream in(path);
  PAGODA_CHECK(in.good(), path, ": cannot open the dataset");
  json data;
  try {
    data = json::parse(in);
  } catch (const json::exception& e) {
    fail(path, ": not JSON: ", e.what());
  }
  PAGODA_CHECK(data.is_array(), path, ": expected a JSON list of conversations");
  std::vector<size_t> order(data.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<Sample> out;
  for (size_t i : order) {
    if (static_cast<int>(out.size()) >= num) break;
    const json& conv = data[i].contains("conversations") ? data[i]["conversations"] : json();
    if (!conv.is_array() || conv.size() < 2 || !conv[0].contains("value") || !conv[1].contains("value")) continue;
    if (!conv[0]["value"].is_string() || !conv[1]["value"].is_string()) continue;
    Sample s;
    s.prompt_text = conv[0]["value"].get<std::string>();
    s.prompt_len = static_cast<int>(tok.encode(s.prompt_text).size());
    s.output_len = static_cast<int>(tok.encode(conv[1]["value"].get<std::string>()).size());
    if (s.prompt_len < 4 || s.output_len < 4 || s.prompt_len > 1024 || s.prompt_len + s.output_len > 2048) continue;
    out.push_back(std::move(s));
  }
  PAGODA_CHECK(!out.empty(), path, ": no usable conversations");
  return out;
}

}  // namespace

int bench_serve(int argc, char** argv) {
  raise_open_file_limit();  // one socket per client
  Args args(argc, argv,
            {"--host", "--port", "--base-url", "--endpoint", "--model", "--tokenizer", "--dataset-name", "--dataset-path",
             "--random-input-len", "--random-output-len", "--num-prompts", "--request-rate", "--max-concurrency",
             "--result-filename", "--seed", "--api-key", "--timeout", "--temperature"},
            {"--ignore-eos", "--disable-tqdm", "--save-result"},
            {"pagoda bench serve", "[MODEL_DIR] --model NAME [options]",
             "Loads a running OpenAI-compatible server (vLLM's bench serve) and prints TTFT, TPOT, ITL and "
             "throughput.\nMODEL_DIR (or --tokenizer) is the tokenizer that makes and counts the tokens."});
  PAGODA_CHECK(args.positionals().size() <= 1, "usage: pagoda bench serve [MODEL_DIR] --model NAME [options]");
  const std::string tokenizer_dir =
      args.get_or("--tokenizer", args.positionals().empty() ? "" : args.positionals()[0]);
  PAGODA_CHECK(!tokenizer_dir.empty(), "bench serve needs MODEL_DIR (or --tokenizer DIR) for the tokenizer");
  const Tokenizer tok = Tokenizer::from_dir(tokenizer_dir);
  const std::string model = args.get_or("--model", tokenizer_dir);
  std::string host = args.get_or("--host", "127.0.0.1");
  long long port = args.get_int("--port").value_or(8000);
  if (auto url = args.get("--base-url")) {  // http://host:port
    std::string u = *url;
    if (u.rfind("http://", 0) == 0) u = u.substr(7);
    const size_t colon = u.find(':');
    host = u.substr(0, colon);
    if (colon != std::string::npos) port = std::atoll(u.c_str() + colon + 1);
  }
  PAGODA_CHECK(port > 0 && port < 65536, "--port must be in [1, 65535]");
  const std::string endpoint = args.get_or("--endpoint", "/v1/completions");
  PAGODA_CHECK(endpoint == "/v1/completions", "--endpoint: only /v1/completions is supported");
  const std::string dataset = args.get_or("--dataset-name", "random");
  const long long num_prompts = args.get_int("--num-prompts").value_or(1000);
  PAGODA_CHECK(num_prompts >= 1 && num_prompts <= 10000000, "--num-prompts must be positive");
  const std::string rate_s = args.get_or("--request-rate", "inf");
  const double rate = rate_s == "inf" ? INFINITY : args.get_double("--request-rate").value_or(INFINITY);
  PAGODA_CHECK(rate > 0, "--request-rate must be positive or inf");
  const long long max_conc = args.get_int("--max-concurrency").value_or(0);
  PAGODA_CHECK(max_conc >= 0, "--max-concurrency must be non-negative");
  const uint64_t seed = static_cast<uint64_t>(args.get_int("--seed").value_or(0));
  const bool ignore_eos = args.flag("--ignore-eos");
  const std::string api_key = args.get_or("--api-key", "");
  const double timeout_s = args.get_double("--timeout").value_or(6 * 3600.0);
  const double temperature = args.get_double("--temperature").value_or(0.0);

  std::vector<Sample> samples;
  if (dataset == "random") {
    const long long in_len = args.get_int("--random-input-len").value_or(1024);
    const long long out_len = args.get_int("--random-output-len").value_or(128);
    PAGODA_CHECK(in_len >= 1 && out_len >= 1, "--random-input-len and --random-output-len must be positive");
    std::mt19937_64 rng(seed);
    // Ordinary tokens only: below the first special / added token id.
    int64_t limit = tok.vocab_size();
    for (int64_t id = 0; id < tok.vocab_size(); ++id)
      if (tok.is_special(static_cast<int32_t>(id))) {
        limit = id;
        break;
      }
    std::uniform_int_distribution<int64_t> dist(0, std::max<int64_t>(limit, 1) - 1);
    for (long long i = 0; i < num_prompts; ++i) {
      Sample s;
      for (long long k = 0; k < in_len; ++k) s.prompt_ids.push_back(static_cast<int32_t>(dist(rng)));
      s.prompt_len = static_cast<int>(in_len);
      s.output_len = static_cast<int>(out_len);
      samples.push_back(std::move(s));
    }
  } else if (dataset == "sharegpt") {
    const auto path = args.get("--dataset-path");
    PAGODA_CHECK(path.has_value(), "--dataset-name sharegpt needs --dataset-path FILE");
    samples = sharegpt_samples(*path, tok, static_cast<int>(num_prompts), seed);
  } else {
    fail("--dataset-name must be random or sharegpt, got '", dataset, "'");
  }

  std::printf("Traffic request rate: %s\nMaximum request concurrency: %s\n", rate_s.c_str(),
              max_conc > 0 ? std::to_string(max_conc).c_str() : "None");
  std::fflush(stdout);
  std::vector<Result> results(samples.size());
  std::mutex mu;
  std::condition_variable cv;
  long long in_flight = 0;
  const auto t0 = Clock::now();
  auto since = [&](Clock::time_point t) { return std::chrono::duration<double>(t - t0).count(); };

  auto run_one = [&](size_t i) {
    const Sample& s = samples[i];
    Result& r = results[i];
    json body{{"model", model},
              {"max_tokens", s.output_len},
              {"temperature", temperature},
              {"stream", true},
              {"stream_options", {{"include_usage", true}}},
              {"ignore_eos", ignore_eos}};
    if (s.prompt_ids.empty()) {
      body["prompt"] = s.prompt_text;
    } else {
      body["prompt"] = s.prompt_ids;
    }
    const auto start = Clock::now();
    r.start = since(start);
    try {
      Connection c(host, static_cast<int>(port), timeout_s);
      std::string pending;
      std::string error_body;
      bool done = false;
      const int status = c.post(host, endpoint, body.dump(), api_key, [&](const std::string& data) {
        pending += data;
        size_t end;
        while ((end = pending.find("\n\n")) != std::string::npos) {
          const std::string event = pending.substr(0, end);
          pending.erase(0, end + 2);
          if (event.rfind("data: ", 0) != 0) continue;
          const std::string payload = event.substr(6);
          if (payload == "[DONE]") {
            done = true;
            continue;
          }
          const json j = json::parse(payload, nullptr, false);
          if (j.is_discarded()) continue;
          if (j.contains("error")) {
            r.error = j["error"].dump();
            continue;
          }
          if (j.contains("usage") && j["usage"].is_object()) {
            r.output_tokens = j["usage"].value("completion_tokens", 0);
            r.prompt_tokens = j["usage"].value("prompt_tokens", 0);
          }
          if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
            const json& ch = j["choices"][0];
            const bool text = ch.contains("text") && ch["text"].is_string() && !ch["text"].get<std::string>().empty();
            if (text) {
              const auto now = Clock::now();
              if (r.chunk_times.empty()) {
                r.ttft = std::chrono::duration<double>(now - start).count();
              } else {
                r.itl.push_back(since(now) - r.chunk_times.back());
              }
              r.chunk_times.push_back(since(now));
            }
          }
        }
        error_body += data.size() < 4096 ? data : "";
      });
      r.e2el = std::chrono::duration<double>(Clock::now() - start).count();
      if (status != 200) {
        r.error = "HTTP " + std::to_string(status) + ": " + error_body.substr(0, 300);
      } else if (!done && r.error.empty()) {
        r.error = "stream ended without [DONE]";
      }
      r.ok = r.error.empty();
      if (r.ok && r.prompt_tokens == 0) r.prompt_tokens = s.prompt_len;
    } catch (const std::exception& e) {
      r.error = e.what();
      r.ok = false;
    }
  };

  std::vector<std::thread> threads;
  std::mt19937_64 arrivals(seed + 1);
  std::exponential_distribution<double> gap(std::isinf(rate) ? 1.0 : rate);
  auto next_time = Clock::now();
  std::atomic<size_t> finished{0};
  for (size_t i = 0; i < samples.size(); ++i) {
    if (!std::isinf(rate)) {
      next_time += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(arrivals)));
      std::this_thread::sleep_until(next_time);
    }
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return max_conc == 0 || in_flight < max_conc; });
      ++in_flight;
    }
    threads.emplace_back([&, i] {
      run_one(i);
      {
        std::lock_guard lock(mu);
        --in_flight;
      }
      cv.notify_all();
      const size_t f = ++finished;
      if (!args.flag("--disable-tqdm") && (f % 16 == 0 || f == samples.size())) {
        std::fprintf(stderr, "\r%zu/%zu requests done", f, samples.size());
        if (f == samples.size()) std::fputc('\n', stderr);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double duration = std::chrono::duration<double>(Clock::now() - t0).count();

  // Aggregate as vLLM's calculate_metrics.
  int completed = 0, failed = 0;
  long long total_in = 0, total_out = 0;
  std::vector<double> ttfts, tpots, itls, e2els;
  std::string first_error;
  std::vector<double> all_chunks;
  for (const Result& r : results) {
    if (!r.ok) {
      ++failed;
      if (first_error.empty()) first_error = r.error;
      continue;
    }
    ++completed;
    total_in += r.prompt_tokens;
    total_out += r.output_tokens;
    ttfts.push_back(r.ttft * 1000);
    e2els.push_back(r.e2el * 1000);
    for (double x : r.itl) itls.push_back(x * 1000);
    if (r.output_tokens > 1) tpots.push_back((r.e2el - r.ttft) / (r.output_tokens - 1) * 1000);
    all_chunks.insert(all_chunks.end(), r.chunk_times.begin(), r.chunk_times.end());
  }
  // Peak output throughput: most chunks (≈ tokens) in any one-second window.
  std::sort(all_chunks.begin(), all_chunks.end());
  double peak = 0;
  for (size_t i = 0, j = 0; i < all_chunks.size(); ++i) {
    while (all_chunks[i] - all_chunks[j] > 1.0) ++j;
    peak = std::max(peak, static_cast<double>(i - j + 1));
  }
  if (failed > 0) std::fprintf(stderr, "%d requests failed; the first error: %s\n", failed, first_error.c_str());
  auto line = [](const char* label, const std::string& v) { std::printf("%-40s %-10s\n", label, v.c_str()); };
  auto fmt = [](double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.2f", v);
    return std::string(b);
  };
  std::printf("============ Serving Benchmark Result ============\n");
  line("Successful requests:", std::to_string(completed));
  line("Failed requests:", std::to_string(failed));
  if (max_conc > 0) line("Maximum request concurrency:", std::to_string(max_conc));
  line("Benchmark duration (s):", fmt(duration));
  line("Total input tokens:", std::to_string(total_in));
  line("Total generated tokens:", std::to_string(total_out));
  line("Request throughput (req/s):", fmt(completed / duration));
  line("Output token throughput (tok/s):", fmt(static_cast<double>(total_out) / duration));
  line("Peak output token throughput (tok/s):", fmt(peak));
  line("Total Token throughput (tok/s):", fmt(static_cast<double>(total_in + total_out) / duration));
  auto section = [&](const char* title, const char* name, const std::vector<double>& xs) {
    std::printf("%s\n", title);
    line((std::string("Mean ") + name + " (ms):").c_str(), fmt(mean(xs)));
    line((std::string("Median ") + name + " (ms):").c_str(), fmt(percentile(xs, 50)));
    line((std::string("P99 ") + name + " (ms):").c_str(), fmt(percentile(xs, 99)));
  };
  section("---------------Time to First Token----------------", "TTFT", ttfts);
  section("-----Time per Output Token (excl. 1st token)------", "TPOT", tpots);
  section("---------------Inter-token Latency----------------", "ITL", itls);
  section("----------------End-to-end Latency----------------", "E2EL", e2els);
  std::printf("==================================================\n");
  std::fflush(stdout);

  if (args.flag("--save-result")) {
    const std::string file = args.get_or("--result-filename", "bench_serve.json");
    json out{{"duration", duration},
             {"completed", completed},
             {"failed", failed},
             {"num_prompts", samples.size()},
             {"request_rate", rate_s},
             {"max_concurrency", max_conc > 0 ? json(max_conc) : json(nullptr)},
             {"total_input_tokens", total_in},
             {"total_output_tokens", total_out},
             {"request_throughput", completed / duration},
             {"output_throughput", static_cast<double>(total_out) / duration},
             {"total_token_throughput", static_cast<double>(total_in + total_out) / duration},
             {"max_output_tokens_per_s", peak}};
    for (const auto& [name, xs] : {std::pair<const char*, const std::vector<double>*>{"ttft", &ttfts},
                                   {"tpot", &tpots}, {"itl", &itls}, {"e2el", &e2els}}) {
      out[std::string("mean_") + name + "_ms"] = mean(*xs);
      out[std::string("median_") + name + "_ms"] = percentile(*xs, 50);
      out[std::string("p99_") + name + "_ms"] = percentile(*xs, 99);
    }
    std::ofstream(file) << out.dump(2) << "\n";
    std::fprintf(stderr, "saved %s\n", file.c_str());
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace pagoda
