#!/usr/bin/env python3
"""Peer benchmark: llama.cpp (through llama-cpp-python) prefill and batch-1 decode speed.

Workload (same as bench/peers/hf_bench.py):
  prefill  one prompt of --prompt-len fixed random token ids (seeded, no special tokens) into an
           empty KV cache, evaluated in one llama_decode call (n_batch = n_ubatch = prompt length,
           so one micro-batch); tokens/s = prompt_len / wall time of that call.
  decode   after a --decode-prompt-len token prompt, --decode-tokens single-token evaluations
           with greedy (argmax) selection; tokens/s = decode_tokens / wall time of those evals
           (the prompt is excluded).
A warm-up run of each comes first; then --runs timed runs, each on a cleared KV cache; the median
is reported (best and all runs too). Wall-clock times of Llama.eval() (its Python overhead
is small next to a 0.6B-parameter forward pass; llama.cpp's llama_perf_context counters were
not usable through this binding: they reported 1 token in 0 ms for a 512-token prompt).

Output: one JSON line on stdout. Progress on stderr.

Usage:
  python3 bench/peers/llamacpp_bench.py --gguf models/qwen3-0.6b-random-bf16.gguf \
      [--prompt-len 512] [--decode-tokens 128] [--threads 2] [--runs 5]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

import llama_cpp
from llama_cpp import Llama


def random_prompt(n: int, seed: int, vocab_limit: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(0, vocab_limit, size=n)]


def clear(llm: Llama) -> None:
    # Llama.eval() removes KV entries at positions >= n_tokens before decoding, so reset()
    # (n_tokens = 0) gives an empty cache for the next eval.
    llm.reset()


def last_logits_argmax(llm: Llama) -> int:
    # With logits_all=False, Llama.eval() no longer copies logits into llm.scores (0.3.x);
    # read the last row straight from the context (what llama.cpp's greedy sampler sees).
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))))


def run_prefill(llm: Llama, prompt: list[int]) -> float:
    clear(llm)
    t0 = time.perf_counter()
    llm.eval(prompt)
    dt = time.perf_counter() - t0
    return dt


def run_decode(llm: Llama, prompt: list[int], n_new: int) -> tuple[float, list[int]]:
    clear(llm)
    llm.eval(prompt)
    tok = last_logits_argmax(llm)
    out = []
    t0 = time.perf_counter()
    for _ in range(n_new):
        out.append(tok)
        llm.eval([tok])
        tok = last_logits_argmax(llm)
    dt = time.perf_counter() - t0
    return dt, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--decode-prompt-len", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--flash-attn", choices=["default", "on", "off"], default="default",
                    help="llama.cpp flash attention (default: the library's default)")
    ap.add_argument("--skip-prefill", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    args = ap.parse_args()

    n_ctx = max(1024, args.prompt_len + 16, args.decode_prompt_len + args.decode_tokens + 16)
    n_batch = max(512, args.prompt_len)
    kwargs = dict(model_path=args.gguf, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                  n_threads=args.threads, n_threads_batch=args.threads, n_gpu_layers=0,
                  logits_all=False, verbose=False, use_mmap=True)
    if args.flash_attn != "default":
        kwargs["flash_attn"] = args.flash_attn == "on"
    t0 = time.perf_counter()
    llm = Llama(**kwargs)
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()
    print(f"loaded {args.gguf} in {load_s:.1f} s (n_vocab {n_vocab}, n_ctx {n_ctx}, n_batch {n_batch})",
          file=sys.stderr)

    vocab_limit = min(n_vocab, 151643)  # below Qwen's special tokens
    result = {
        "engine": "llama.cpp",
        "binding": f"llama-cpp-python {llama_cpp.__version__}",
        "gguf": os.path.basename(args.gguf),
        "threads": args.threads,
        "n_ctx": n_ctx,
        "n_batch": n_batch,
        "flash_attn": args.flash_attn,
        "load_s": round(load_s, 2),
        "machine": platform.machine(),
    }
    try:
        result["system_info"] = llama_cpp.llama_print_system_info().decode()
    except Exception:
        pass

    if not args.skip_prefill:
        prompt = random_prompt(args.prompt_len, args.seed, vocab_limit)
        dt = run_prefill(llm, prompt)  # warm-up
        print(f"prefill warm-up {args.prompt_len / dt:.1f} tok/s", file=sys.stderr)
        times = []
        for i in range(args.runs):
            dt = run_prefill(llm, prompt)
            times.append(dt)
            print(f"prefill run {i}: {dt:.3f} s = {args.prompt_len / dt:.1f} tok/s", file=sys.stderr)
        med = statistics.median(times)
        result["prompt_len"] = args.prompt_len
        result["prefill_tok_s"] = round(args.prompt_len / med, 2)
        result["prefill_tok_s_best"] = round(args.prompt_len / min(times), 2)
        result["prefill_s_runs"] = [round(t, 4) for t in times]

    if not args.skip_decode:
        prompt = random_prompt(args.decode_prompt_len, args.seed + 1, vocab_limit)
        run_decode(llm, prompt, min(16, args.decode_tokens))  # warm-up
        times, toks = [], None
        for i in range(args.runs):
            dt, out = run_decode(llm, prompt, args.decode_tokens)
            times.append(dt)
            toks = out
            print(f"decode run {i}: {args.decode_tokens} tok in {dt:.3f} s = "
                  f"{args.decode_tokens / dt:.2f} tok/s", file=sys.stderr)
        med = statistics.median(times)
        result["decode_prompt_len"] = args.decode_prompt_len
        result["decode_tokens"] = args.decode_tokens
        result["decode_tok_s"] = round(args.decode_tokens / med, 2)
        result["decode_tok_s_best"] = round(args.decode_tokens / min(times), 2)
        result["decode_s_runs"] = [round(t, 4) for t in times]
        result["decode_first_tokens"] = toks[:8]

    result["runs"] = args.runs
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
