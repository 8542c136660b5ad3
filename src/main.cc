#include <cstdio>
#include <cstring>
#include <string>

#include "base/error.h"
#include "cli/args.h"
#include "cli/commands.h"

namespace {

void print_usage(FILE* to) {
  std::fprintf(to,
               "usage: pagoda <command> [args]\n"
               "commands:\n"
               "  generate MODEL_DIR --prompt TEXT [--max-tokens N --temperature T --top-p P --top-k K\n"
               "           --min-p P --seed S --output-format text|json]\n"
               "  generate MODEL_DIR --input prompts.jsonl [--output out.jsonl --max-num-seqs N\n"
               "           --max-num-batched-tokens N --max-model-len N --block-size N --num-kv-blocks N\n"
               "           --kv-cache-memory GiB --no-enable-prefix-caching --max-tokens N ...]\n"
               "  bench throughput MODEL_DIR --input-len N --output-len M --num-prompts P [--seed S]\n"
               "  bench latency MODEL_DIR --input-len N --output-len M --batch-size B [--num-iters 3\n"
               "           --num-iters-warmup 1]\n"
               "  bench prefix-caching MODEL_DIR --prefix-len N --suffix-len M --num-prompts P\n"
               "  bench serve MODEL_DIR --model NAME [--host H --port P --dataset-name random|sharegpt\n"
               "           --random-input-len N --random-output-len M --num-prompts P --request-rate R\n"
               "           --max-concurrency C --ignore-eos --save-result]\n"
               "  serve MODEL_DIR [--host H --port 8000 --served-model-name NAME --api-key KEY\n"
               "           --max-model-len N --max-num-seqs N --max-num-batched-tokens N --chat-template T\n"
               "           --enable-auto-tool-choice --tool-call-parser hermes --reasoning-parser qwen3 ...]\n"
               "  tokenize MODEL_DIR TEXT [--decode]\n"
               "  --version\n"
               "`pagoda <command> --help` lists a command's flags.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "generate") return pagoda::generate_command(argc - 2, argv + 2);
    if (cmd == "bench") return pagoda::bench_command(argc - 2, argv + 2);
    if (cmd == "tokenize") return pagoda::tokenize_command(argc - 2, argv + 2);
    if (cmd == "serve") return pagoda::serve_command(argc - 2, argv + 2);
    if (cmd == "--version" || cmd == "version") {
      std::printf("pagoda 0.1.0\n");
      return 0;
    }
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      print_usage(stdout);
      return 0;
    }
  } catch (const pagoda::HelpShown&) {
    return 0;
  } catch (const pagoda::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "pagoda: unknown command '%s'\n", cmd.c_str());
  print_usage(stderr);
  return 2;
}
