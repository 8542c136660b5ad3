#!/usr/bin/env python3
"""Peer benchmark: llama.cpp offline throughput with its own multi-sequence batching.

The workload of `pagoda bench throughput` (and bench/peers/hf_throughput.py):
  --num-prompts P prompts of --input-len random token ids each (numpy default_rng(--seed),
  ids in [0, 151643), i.e. no special tokens; prompt i is row i of one (P, input_len) draw),
  all available at time 0; each generates exactly --output-len tokens (greedy argmax, no EOS
  stop). Timed from the first llama_decode to the last generated token (one wall-clock span,
  Python batch building and argmax included):
    output tokens/s = P * output_len / wall,  total tokens/s = P * (input_len + output_len) / wall,
    requests/s = P / wall.

How llama.cpp runs it (driven through llama-cpp-python's low-level ctypes API, what llama.cpp's
examples/batched and examples/parallel do): one context with n_seq_max = --max-concurrency
(C, default P) sequences and a KV cache for C * (input_len + output_len) tokens
(--kv-unified off, llama.cpp's library default: one KV stream of n_ctx / C cells per sequence;
on: one buffer shared by all sequences). Each iteration builds one token list:
  * one token per live sequence (its last generated token, logits requested), then
  * the whole prompt of each newly admitted sequence (free slots, prompts in order; logits
    for the prompt's last token only),
and submits it with llama_decode in chunks of at most n_batch tokens (--n-batch, default 2048,
which llama.cpp clamps to n_ctx; llama.cpp splits each call into micro-batches of at most
n_ubatch = --n-ubatch, default 512, tokens). The greedy token of every requested row is the argmax of
llama_get_logits_ith. With C = P (default) this is: prefill all prompts, then output_len - 1
decode steps with one token per sequence each (the first generated token comes from the
prompt's logits, the last one is never fed back). With C < P it is a continuous pool: a
sequence that has its output_len tokens leaves (llama_memory_seq_rm on its seq id) and the
next prompt is prefilled in the following iteration, in the same batch as the other
sequences' decode tokens (as examples/parallel does with cont_batching).

Before the timed run(s): one warm-up (one separate random prompt of input_len tokens + 4 decode
steps), then the KV cache is cleared (llama_memory_clear) before each run. With --runs N > 1 the
median run is reported (and all runs). --check-alone K afterwards reruns prompts 0..3 one at a time
(one sequence, cleared cache) for K tokens each and reports, per prompt, how many leading tokens
match the batched run (alone_match; a batch-invariance sanity check: accumulation order can
differ between batch shapes, so with bf16 weights an argmax may flip after some tokens).

Output: one JSON line on stdout (first_tokens = the first generated ids of prompt 0,
first_token_per_prompt = the first generated id of prompts 0..15). Progress
on stderr.

Usage:
  python3 bench/peers/llamacpp_throughput.py --gguf models/qwen3-0.6b-random-bf16.gguf \
      --input-len 32 --output-len 128 --num-prompts 32 [--max-concurrency C] [--threads 2]
"""

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from collections import deque

import numpy as np

import llama_cpp

VOCAB_LIMIT = 151643  # Qwen's first special token; prompts avoid special tokens

_log_lines: list[str] = []
_log_verbose = False
_log_last_level = 0


@llama_cpp.llama_log_callback
def _log_cb(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous line.
    global _log_last_level
    if level != 5:
        _log_last_level = level
    s = text.decode("utf-8", "replace")
    _log_lines.append(s)
    if _log_verbose or _log_last_level >= 3:  # warnings and errors always
        print(s, end="", file=sys.stderr)


def random_prompts(num: int, length: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB_LIMIT, size=(num, length)).tolist()


class Seq:
    __slots__ = ("idx", "slot", "n_past", "last", "out")

    def __init__(self, idx: int, slot: int):
        self.idx, self.slot, self.n_past, self.last, self.out = idx, slot, 0, -1, []


class Runner:
    def __init__(self, ctx, n_batch: int, n_vocab: int):
        self.ctx = ctx
        self.mem = llama_cpp.llama_get_memory(ctx)
        self.n_batch = n_batch
        self.n_vocab = n_vocab
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.decode_calls = 0

    def free(self) -> None:
        llama_cpp.llama_batch_free(self.batch)

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.mem, True)

    def argmax(self, i: int) -> int:
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, i)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def decode(self, items: list[tuple[int, int, int, bool, "Seq"]]) -> None:
        """items: (token, pos, seq_id, want_logits, owner); submitted in chunks of n_batch."""
        b = self.batch
        for c in range(0, len(items), self.n_batch):
            chunk = items[c:c + self.n_batch]
            for k, (tok, pos, sid, want, _) in enumerate(chunk):
                b.token[k] = tok
                b.pos[k] = pos
                b.n_seq_id[k] = 1
                b.seq_id[k][0] = sid
                b.logits[k] = want
            b.n_tokens = len(chunk)
            rc = llama_cpp.llama_decode(self.ctx, b)
            self.decode_calls += 1
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} (batch of {len(chunk)} tokens)")
            for k, (_, _, _, want, s) in enumerate(chunk):
                if want:
                    s.last = self.argmax(k)
                    s.out.append(s.last)

    def run(self, prompts: list[list[int]], output_len: int, concurrency: int) -> list[list[int]]:
        """Runs all prompts through a pool of `concurrency` sequence slots; returns the outputs."""
        pending = deque(range(len(prompts)))
        free_slots = list(range(concurrency - 1, -1, -1))  # pop() hands out 0, 1, 2, ...
        live: list[Seq] = []
        outputs: list[list[int]] = [[] for _ in prompts]
        while pending or live:
            items = []
            for s in live:
                items.append((s.last, s.n_past, s.slot, True, s))
                s.n_past += 1
            while free_slots and pending:
                s = Seq(pending.popleft(), free_slots.pop())
                p = prompts[s.idx]
                items.extend((t, j, s.slot, j == len(p) - 1, s) for j, t in enumerate(p))
                s.n_past = len(p)
                live.append(s)
            self.decode(items)
            still = []
            for s in live:
                if len(s.out) >= output_len:
                    outputs[s.idx] = s.out
                    llama_cpp.llama_memory_seq_rm(self.mem, s.slot, -1, -1)
                    free_slots.append(s.slot)
                else:
                    still.append(s)
            live = still
        return outputs


def main() -> int:
    global _log_verbose
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--input-len", type=int, required=True)
    ap.add_argument("--output-len", type=int, required=True)
    ap.add_argument("--num-prompts", type=int, required=True)
    ap.add_argument("--max-concurrency", type=int, default=0,
                    help="sequences decoded together (n_seq_max); default: num-prompts (max 256)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-batch", type=int, default=2048,
                    help="max tokens per llama_decode call (llama.cpp's default 2048; llama.cpp clamps it to n_ctx)")
    ap.add_argument("--n-ubatch", type=int, default=512,
                    help="micro-batch size (llama.cpp's default 512; raised to max-concurrency if smaller)")
    ap.add_argument("--kv-unified", choices=["off", "on"], default="off",
                    help="off: one KV stream per sequence (llama.cpp's default); on: one shared buffer")
    ap.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto",
                    help="llama.cpp flash attention (auto: the library default, resolved at context creation)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--check-alone", type=int, default=0, metavar="K",
                    help="afterwards, rerun prompts 0..3 alone for K tokens each and compare with the batched run")
    ap.add_argument("--verbose", action="store_true", help="show llama.cpp's log")
    args = ap.parse_args()
    _log_verbose = args.verbose

    P, L, O = args.num_prompts, args.input_len, args.output_len
    if min(P, L, O) < 1:
        ap.error("--input-len, --output-len and --num-prompts must be >= 1")
    C = args.max_concurrency or P
    C = min(C, P)
    if C > 256:
        ap.error(f"--max-concurrency {C} exceeds llama.cpp's LLAMA_MAX_SEQ (256)")
    n_ubatch = max(args.n_ubatch, C)
    n_batch = max(args.n_batch, n_ubatch)
    n_ctx = C * (L + O)

    llama_cpp.llama_log_set(_log_cb, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    mparams.use_mmap = True
    t0 = time.perf_counter()
    model = llama_cpp.llama_model_load_from_file(args.gguf.encode(), mparams)
    if not model:
        raise RuntimeError(f"could not load {args.gguf}")
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = n_ctx
    cparams.n_batch = n_batch
    cparams.n_ubatch = n_ubatch
    cparams.n_seq_max = C
    cparams.n_threads = args.threads
    cparams.n_threads_batch = args.threads
    cparams.kv_unified = args.kv_unified == "on"
    cparams.flash_attn_type = {"auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
                               "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                               "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}[args.flash_attn]
    cparams.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        raise RuntimeError("could not create the llama.cpp context")
    load_s = time.perf_counter() - t0
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    ctx_n_ctx = llama_cpp.llama_n_ctx(ctx)
    ctx_n_ctx_seq = llama_cpp.llama_n_ctx_seq(ctx)
    # llama.cpp clamps n_batch to the requested n_ctx (causal models) and n_ubatch to n_batch.
    n_batch = llama_cpp.llama_n_batch(ctx)
    n_ubatch = llama_cpp.llama_n_ubatch(ctx)
    if n_ubatch < C:
        raise RuntimeError(f"n_ubatch {n_ubatch} < max-concurrency {C}")
    if ctx_n_ctx_seq < L + O:
        raise RuntimeError(f"n_ctx_seq {ctx_n_ctx_seq} < input_len + output_len {L + O}")
    log = "".join(_log_lines)
    fa = "enabled" if "Flash Attention enabled" in log else (
        "disabled" if ("Flash Attention not supported" in log or args.flash_attn == "off") else args.flash_attn)
    print(f"loaded {args.gguf} in {load_s:.1f} s (n_vocab {n_vocab}, n_ctx {ctx_n_ctx}, n_ctx_seq "
          f"{ctx_n_ctx_seq}, n_seq_max {C}, n_batch {n_batch}, n_ubatch {n_ubatch}, kv_unified "
          f"{args.kv_unified}, flash attention {fa})", file=sys.stderr)

    prompts = random_prompts(P, L, args.seed)
    runner = Runner(ctx, n_batch, n_vocab)
    if not args.no_warmup:
        t = time.perf_counter()
        runner.run(random_prompts(1, L, args.seed + 1), 5, 1)
        print(f"warm-up (1 prompt, 5 tokens) {time.perf_counter() - t:.2f} s", file=sys.stderr)

    times, outputs = [], None
    for r in range(args.runs):
        runner.clear()
        calls0 = runner.decode_calls
        t = time.perf_counter()
        outputs = runner.run(prompts, O, C)
        dt = time.perf_counter() - t
        times.append(dt)
        n_out = sum(len(o) for o in outputs)
        assert n_out == P * O, (n_out, P * O)
        print(f"run {r}: {P} prompts x ({L} in + {O} out) in {dt:.2f} s = {n_out / dt:.2f} output tok/s "
              f"({runner.decode_calls - calls0} llama_decode calls)", file=sys.stderr)
    wall = statistics.median(times)
    n_out = P * O
    result = {
        "engine": "llama.cpp",
        "binding": f"llama-cpp-python {llama_cpp.__version__}",
        "gguf": os.path.basename(args.gguf),
        "workload": "throughput",
        "input_len": L, "output_len": O, "num_prompts": P, "max_concurrency": C,
        "threads": args.threads, "seed": args.seed,
        "n_ctx": ctx_n_ctx, "n_ctx_seq": ctx_n_ctx_seq, "n_batch": n_batch, "n_ubatch": n_ubatch,
        "kv_unified": args.kv_unified == "on", "flash_attn": fa,
        "load_s": round(load_s, 2),
        "wall_s": round(wall, 3),
        "output_tok_s": round(n_out / wall, 2),
        "total_tok_s": round(P * (L + O) / wall, 2),
        "requests_s": round(P / wall, 3),
        "output_tok_s_best": round(n_out / min(times), 2),
        "wall_s_runs": [round(t, 3) for t in times],
        "runs": args.runs,
        "first_tokens": outputs[0][:8],
        "first_token_per_prompt": [o[0] for o in outputs[:16]],
        "machine": platform.machine(),
    }
    try:
        result["system_info"] = llama_cpp.llama_print_system_info().decode()
    except Exception:
        pass

    if args.check_alone > 0:
        k = min(args.check_alone, O)
        matches = []
        for i in range(min(4, P)):
            runner.clear()
            alone = runner.run([prompts[i]], k, 1)[0]
            m = 0
            while m < k and alone[m] == outputs[i][m]:
                m += 1
            matches.append(f"{m}/{k}")
        result["alone_match"] = matches
        print(f"prompts 0..{len(matches) - 1} alone vs batched, leading tokens that match: {matches}",
              file=sys.stderr)

    runner.free()
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
