#include "cli/flag_docs.h"

#include <cstring>
#include <vector>

namespace pagoda {
namespace {

struct FlagDoc {
  const char* scope;    // nullptr: every command; else the one command (CommandUsage::command) it describes
  const char* name;     // "--max-num-seqs"
  const char* metavar;  // the value's name; nullptr for a boolean flag
  const char* help;
};

// Grouped as the help prints them: a flag is listed where the entry that describes it for the
// command stands (its own scoped entry if there is one, else the shared one).
constexpr FlagDoc kFlagDocs[] = {
    // pagoda generate
    {nullptr, "--prompt", "TEXT", "the prompt, tokenized with the model's tokenizer (no chat template)"},
    {nullptr, "--input", "FILE", "JSON lines, one request each ({\"prompt\": ..., sampling fields}); runs them "
                                 "batched on one engine"},
    {nullptr, "--output", "FILE", "where the JSON-lines results go, in input order (default: stdout)"},
    {nullptr, "--output-format", "FMT", "text (default) or json (text, token ids, finish reason)"},
    {nullptr, "--max-tokens", "N", "most tokens to generate per request (default 128)"},
    {nullptr, "--temperature", "T", "sampling temperature; 0 is greedy (default: generation_config.json, else 1)"},
    {nullptr, "--top-p", "P", "nucleus sampling mass in (0, 1] (default: generation_config.json, else 1)"},
    {nullptr, "--top-k", "K", "sample among the K most likely tokens; 0 or -1 is off (default: "
                              "generation_config.json, else off)"},
    {nullptr, "--min-p", "P", "drop tokens below P x the top token's probability (default: "
                              "generation_config.json, else 0)"},
    {nullptr, "--seed", "N", "sampling seed (default: none)"},
    {nullptr, "--stop", "TEXT", "stop when the output contains TEXT (not included in the output)"},
    {nullptr, "--ignore-eos", nullptr, "keep generating after the end-of-sequence token"},
    {nullptr, "--no-add-special-tokens", nullptr, "tokenize the prompt without the tokenizer's BOS / special tokens"},

    // the engine (generate, bench, serve)
    {nullptr, "--device", "DEVICE", "cpu (default), cuda or cuda:N"},
    {"pagoda serve", "--max-model-len", "N", "most tokens per sequence, prompt + output; 32k and 1M forms "
                                             "work too (default: the model's max_position_embeddings)"},
    {nullptr, "--max-model-len", "N", "most tokens per sequence, prompt + output (default: the model's "
                                      "max_position_embeddings)"},
    {nullptr, "--max-num-seqs", "N", "most sequences in one engine step (default 256)"},
    {nullptr, "--max-num-batched-tokens", "N", "token budget of one step; longer prompts are prefilled in chunks "
                                               "(default 2048)"},
    {nullptr, "--block-size", "N", "tokens per KV-cache block (default 16)"},
    {nullptr, "--num-kv-blocks", "N", "KV-cache blocks (default: sized from --kv-cache-memory on the CPU, "
                                      "--gpu-memory-utilization on a GPU)"},
    {nullptr, "--kv-cache-memory", "GIB", "KV-cache size on the CPU in GiB (default 4)"},
    {nullptr, "--kv-cache-dtype", "DTYPE", "auto (bfloat16), bfloat16; on the CPU also fp8 (= fp8_e4m3), fp8_e5m2 "
                                           "(half the bytes, unscaled, saturating) or float32"},
    {nullptr, "--quantization", "METHOD", "weight quantization: fp8 (E4M3 linears with 128 x 128 block scales, "
                                          "quantized at load from a BF16 checkpoint; CPU only). Default: what "
                                          "the checkpoint's quantization_config says (fp8 and compressed-tensors "
                                          "FP8 checkpoints load as they are)"},
    {nullptr, "-q", "METHOD", "same as --quantization"},
    {nullptr, "--speculative-config", "JSON", "speculative decoding, e.g. '{\"method\": \"ngram\", "
                                              "\"num_speculative_tokens\": 4, \"prompt_lookup_max\": 4}' (n-gram "
                                              "drafts from the prompt and output; greedy and seeded outputs are "
                                              "unchanged)"},
    {nullptr, "--gpu-memory-utilization", "F", "share of the GPU's memory for weights, activations and the KV "
                                               "cache (default 0.9)"},
    {nullptr, "--enable-prefix-caching", nullptr, "reuse the KV blocks of shared prompt prefixes (the default)"},
    {nullptr, "--no-enable-prefix-caching", nullptr, "turn prefix caching off"},
    {nullptr, "--enable-chunked-prefill", nullptr, "accepted as vLLM does; prefills are always chunked by "
                                                   "--max-num-batched-tokens"},
    {nullptr, "--enforce-eager", nullptr, "no CUDA graphs"},
    {nullptr, "--max-cudagraph-capture-size", "N", "largest decode batch recorded as a CUDA graph (default 512)"},
    {nullptr, "--async-scheduling", nullptr, "schedule step N+1 while the device runs step N (default: on where "
                                             "the backend samples on the device, i.e. a GPU)"},
    {nullptr, "--no-async-scheduling", nullptr, "never overlap engine steps"},

    // pagoda serve
    {"pagoda bench serve", "--host", "HOST", "the server's address (default 127.0.0.1)"},
    {nullptr, "--host", "HOST", "address to listen on (default 0.0.0.0)"},
    {"pagoda bench serve", "--port", "PORT", "the server's port (default 8000)"},
    {nullptr, "--port", "PORT", "port to listen on; 0 picks a free one (default 8000)"},
    {nullptr, "--served-model-name", "NAMES", "the model's name(s) in the API, comma-separated or a JSON list "
                                              "(default: MODEL_DIR)"},
    {"pagoda bench serve", "--api-key", "KEY", "sent as 'Authorization: Bearer KEY'"},
    {nullptr, "--api-key", "KEY", "paths under /v1 need 'Authorization: Bearer KEY' (else 401)"},
    {nullptr, "--chat-template", "TEMPLATE", "a Jinja chat template, or a file holding one (default: the "
                                             "model's tokenizer_config.json / chat_template.jinja)"},
    {nullptr, "--generation-config", "WHERE", "sampling defaults: auto (MODEL_DIR's generation_config.json, the "
                                              "default), vllm (none), or a folder holding one"},
    {nullptr, "--enable-auto-tool-choice", nullptr, "allow tool_choice \"auto\" (needs --tool-call-parser)"},
    {nullptr, "--tool-call-parser", "NAME", "hermes: <tool_call>{...}</tool_call> becomes tool_calls (Qwen2.5, "
                                            "Qwen3)"},
    {nullptr, "--reasoning-parser", "NAME", "qwen3: text inside <think>...</think> becomes reasoning_content"},
    {nullptr, "--max-logprobs", "N", "most logprobs / prompt_logprobs a request may ask for (default 20)"},
    {nullptr, "--scheduling-policy", "POLICY", "fcfs (default) or priority (a request's \"priority\" field; lower "
                                               "runs first)"},
    {nullptr, "--allowed-origins", "ORIGINS", "CORS origins allowed, comma-separated or a JSON list; * allows any "
                                              "(default: none)"},
    {"pagoda serve", "--seed", "N", "the seed of requests that set none (default: none, a fresh one per request)"},
    {nullptr, "--max-pending-requests", "N", "answer 503 while N requests already wait (default 0: no limit)"},
    {nullptr, "--http-threads", "N", "threads that read and parse HTTP requests (default 2)"},
    {nullptr, "--shutdown-timeout", "SECONDS", "on SIGINT / SIGTERM, how long requests in flight may finish "
                                               "before they are aborted (default 5)"},
    {nullptr, "--disable-log-stats", nullptr, "no periodic throughput / queue / KV-cache line in the log "
                                              "(every PAGODA_LOG_STATS_INTERVAL seconds, default 10)"},
    {nullptr, "--enable-log-requests", nullptr, "log every request when it arrives and when it ends"},
    {nullptr, "--disable-log-requests", nullptr, "do not log requests (the default)"},

    // pagoda bench throughput | latency | prefix-caching
    {"pagoda bench latency", "--input-len", "N", "prompt tokens per request, random ids (default 32)"},
    {nullptr, "--input-len", "N", "prompt tokens per request, random ids (required)"},
    {"pagoda bench latency", "--output-len", "N", "tokens generated per request, ignore_eos (default 128)"},
    {"pagoda bench prefix-caching", "--output-len", "N", "tokens generated per request (default 1)"},
    {nullptr, "--output-len", "N", "tokens generated per request, ignore_eos (required)"},
    {"pagoda bench serve", "--num-prompts", "N", "requests to send (default 1000)"},
    {"pagoda bench prefix-caching", "--num-prompts", "N", "requests sharing the prefix, sent one after another "
                                                          "(default 16)"},
    {nullptr, "--num-prompts", "N", "requests, all submitted at once (required)"},
    {nullptr, "--batch-size", "N", "requests per timed iteration (default 8)"},
    {nullptr, "--num-iters", "N", "timed iterations (default 3)"},
    {nullptr, "--num-iters-warmup", "N", "untimed iterations first (default 1)"},
    {"pagoda bench throughput", "--seed", "N", "seed of the random prompts (default 0)"},
    {"pagoda bench latency", "--seed", "N", "seed of the random prompts (default 0)"},
    {"pagoda bench prefix-caching", "--seed", "N", "seed of the random prompts (default 0)"},
    {nullptr, "--prefix-len", "N", "tokens of the prefix every prompt shares (default 1024)"},
    {nullptr, "--suffix-len", "N", "tokens of each prompt's own after the prefix (default 32)"},

    // pagoda bench serve
    {nullptr, "--base-url", "URL", "the server as http://HOST:PORT (instead of --host and --port)"},
    {nullptr, "--endpoint", "PATH", "the API path; only /v1/completions (the default)"},
    {nullptr, "--model", "NAME", "the model name sent in each request (default: MODEL_DIR)"},
    {nullptr, "--tokenizer", "DIR", "folder of the tokenizer that counts tokens (default: MODEL_DIR)"},
    {nullptr, "--dataset-name", "NAME", "random (default) or sharegpt (needs --dataset-path)"},
    {nullptr, "--dataset-path", "FILE", "a ShareGPT JSON file"},
    {nullptr, "--random-input-len", "N", "prompt tokens per request with --dataset-name random (default 1024)"},
    {nullptr, "--random-output-len", "N", "output tokens per request with --dataset-name random (default 128)"},
    {nullptr, "--request-rate", "R", "requests per second, Poisson arrivals; inf sends all at once (default inf)"},
    {nullptr, "--max-concurrency", "N", "most requests in flight at once (default: no limit)"},
    {"pagoda bench serve", "--temperature", "T", "sampling temperature of every request (default 0: greedy)"},
    {"pagoda bench serve", "--ignore-eos", nullptr, "ask the server to generate every requested token"},
    {"pagoda bench serve", "--seed", "N", "seed of the random dataset (default 0)"},
    {nullptr, "--timeout", "SECONDS", "give up on a request after this long (default 21600)"},
    {nullptr, "--save-result", nullptr, "write the results as JSON (--result-filename)"},
    {nullptr, "--result-filename", "FILE", "where --save-result writes (default bench_serve.json)"},
    {nullptr, "--disable-tqdm", nullptr, "no progress line"},
};

const FlagDoc* find_doc(const char* command, const std::string& name) {
  const FlagDoc* shared = nullptr;
  for (const FlagDoc& d : kFlagDocs) {
    if (name != d.name) continue;
    if (d.scope && std::strcmp(d.scope, command) == 0) return &d;
    if (!d.scope && !shared) shared = &d;
  }
  return shared;
}

// "  --name VALUE" padded to the help column, then the help wrapped at kWidth columns.
void append_flag(std::string& out, const std::string& name, const char* metavar, const std::string& help) {
  constexpr size_t kColumn = 34, kWidth = 100;
  std::string left = "  ";
  left += name;
  if (metavar) {
    left += ' ';
    left += metavar;
  }
  out += left;
  size_t col = left.size();
  if (col + 2 > kColumn) {
    out += "\n";
    col = 0;
  }
  out.append(kColumn - col, ' ');
  col = kColumn;
  size_t pos = 0;
  bool first = true;
  while (pos < help.size()) {
    size_t end = help.find(' ', pos);
    if (end == std::string::npos) end = help.size();
    const std::string word = help.substr(pos, end - pos);
    if (!first && col + 1 + word.size() > kWidth) {
      out += '\n';
      out.append(kColumn, ' ');
      col = kColumn;
    } else if (!first) {
      out += ' ';
      ++col;
    }
    out += word;
    col += word.size();
    first = false;
    pos = end + 1;
  }
  out += "\n";
}

}  // namespace

std::string format_help(const CommandUsage& usage, const std::set<std::string>& value_flags,
                        const std::set<std::string>& bool_flags) {
  std::string out = std::string("usage: ") + usage.command + " " + usage.synopsis + "\n";
  if (*usage.summary) {
    out += '\n';
    out += usage.summary;
    out += '\n';
  }
  out += "\noptions:\n";
  append_flag(out, "-h, --help", nullptr, "show this help and exit");
  std::set<std::string> listed;
  for (const FlagDoc& d : kFlagDocs) {
    const bool takes_value = value_flags.count(d.name) > 0;
    if ((!takes_value && !bool_flags.count(d.name)) || find_doc(usage.command, d.name) != &d) continue;
    listed.insert(d.name);
    append_flag(out, d.name, takes_value ? (d.metavar ? d.metavar : "VALUE") : nullptr, d.help);
  }
  for (const auto* set : {&value_flags, &bool_flags})
    for (const std::string& name : *set)
      if (!listed.count(name)) append_flag(out, name, set == &value_flags ? "VALUE" : nullptr, "(undocumented)");
  return out;
}

}  // namespace pagoda
