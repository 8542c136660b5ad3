// The OpenAI-compatible server (vLLM's api_server): routes on top of HttpServer, requests into the
// AsyncEngine, outputs back as JSON or SSE (../shared/docs/API.md is the surface).
//
// Threads. HTTP I/O threads parse and validate the request, render the chat template, tokenize
// and queue the request on the AsyncEngine; they never wait for the engine. The engine thread
// only signals: each request's RequestStream notifies the server, which queues the request for one
// of its output threads. Output threads detokenize (RequestOutputState: incremental decoding and
// stop strings), run the reasoning and tool-call parsers, and write SSE chunks or the final JSON
// through the thread-safe HttpResponse. A request is worked on by one output thread at a time (a
// per-request "queued" flag), so its state needs no lock. A client that disconnects aborts its
// engine requests at once (their KV blocks are freed by the next engine step).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "chat/chat_template.h"
#include "engine/async_engine.h"
#include "engine/sampling_params.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_protocol.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {

class JsonGrammar;  // engine/structured_output.h

struct OpenAiServerConfig {
  std::vector<std::string> served_model_names;  // the first is the id /v1/models reports
  std::string model_root;                       // MODEL_DIR ("root" in /v1/models)
  std::string api_key;                          // non-empty: /v1/* needs "Authorization: Bearer <key>"
  int max_logprobs = 20;
  bool enable_auto_tool_choice = false;
  std::string tool_call_parser;   // "" or "hermes"
  std::string reasoning_parser;   // "" or "qwen3"
  std::vector<std::string> allowed_origins;  // CORS; "*" allows any
  int max_pending_requests = 0;   // > 0: requests waiting in the engine beyond this → 503
  bool log_requests = false;      // --enable-log-requests: a log line when a request arrives and when it ends
  int num_output_threads = 2;
  SamplingParams default_params;  // from generation_config.json (unless --generation-config vllm)
  std::string version = "0.1.0";
};

class OpenAiServer {
 public:
  // engine, tokenizer and chat_template must outlive the server. chat_template may be null (then
  // /v1/chat/completions answers 400, as vLLM does for a model without one).
  OpenAiServer(OpenAiServerConfig config, AsyncEngine& engine, const Tokenizer& tokenizer,
               const ChatTemplate* chat_template, HttpServerOptions http);
  ~OpenAiServer();

  void start();
  // Graceful: stops accepting, lets in-flight requests finish for up to `grace`, aborts the rest.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));
  int port() const { return http_->port(); }

  struct Job;  // one HTTP generation request in flight (openai_server.cc)

 private:
  void handle(HttpRequest request, std::shared_ptr<HttpResponse> response);
  void handle_completions(const HttpRequest& request, const std::shared_ptr<HttpResponse>& response);
  void handle_chat(const HttpRequest& request, const std::shared_ptr<HttpResponse>& response);
  void handle_tokenize(const HttpRequest& request, const std::shared_ptr<HttpResponse>& response);
  void handle_detokenize(const HttpRequest& request, const std::shared_ptr<HttpResponse>& response);
  void handle_models(const std::shared_ptr<HttpResponse>& response);
  void handle_metrics(const std::shared_ptr<HttpResponse>& response);
  // Queues the job's engine requests and starts streaming its outputs to the client.
  void launch(const std::shared_ptr<Job>& job, const SamplingParams& params, int priority);
  void schedule(const std::shared_ptr<Job>& job);  // hand a job to an output thread
  void output_loop();
  void process(Job& job);
  void check_model(const std::string& model) const;
  // The grammar a chat request's output must match (tool_choice named / required,
  // structured_outputs, response_format), or null; ApiError(400) on a schema it cannot compile.
  std::shared_ptr<const JsonGrammar> structured_output_grammar(const api::ChatRequest& req) const;
  api::ProtocolLimits limits() const;
  // A job with the fields every generation request shares filled in.
  std::shared_ptr<Job> new_job(bool chat, const api::GenerationRequest& req,
                               const std::shared_ptr<HttpResponse>& response) const;
  HttpHeaders cors_headers(const HttpRequest& request) const;

  OpenAiServerConfig config_;
  AsyncEngine& engine_;
  Tokenizer tokenizer_;
  const ChatTemplate* chat_template_;
  std::unique_ptr<HttpServer> http_;
  ServerMetrics metrics_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> ready_;
  std::vector<std::shared_ptr<Job>> live_;  // every job in flight (for shutdown)
  bool stopping_ = false;
  std::vector<std::thread> output_threads_;
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace pagoda
