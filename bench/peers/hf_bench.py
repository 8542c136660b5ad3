#!/usr/bin/env python3
"""Peer benchmark: Hugging Face transformers (PyTorch, CPU) prefill and batch-1 decode speed.

Workload (same as bench/peers/llamacpp_bench.py):
  prefill  one forward pass over --prompt-len fixed random token ids (seeded, no special tokens)
           with a fresh KV cache (use_cache=True, logits for the last position only, as
           generate() and llama.cpp do); tokens/s = prompt_len / wall time.
  decode   greedy generate() after a --decode-prompt-len token prompt, with
           min_new_tokens = max_new_tokens (no early stop) and the KV cache:
             decode tokens/s = N / (t(generate N+1 new tokens) - t(generate 1 new token))
           i.e. N single-token forward passes, the prompt excluded (generate's first new token
           comes from the prompt's forward pass). With --loop, also a hand-written loop of N
           single-token forwards over a DynamicCache (decode_tok_s_loop), as a cross-check.
A warm-up of each comes first; then --runs timed runs; the median is reported.
Runs once per --dtype (bf16 and/or fp32), each with its own model instance.

Output: one JSON line per dtype on stdout. Progress on stderr.

Usage:
  python3 bench/peers/hf_bench.py --model models/qwen3-0.6b-random \
      [--dtype bf16 fp32] [--prompt-len 512] [--decode-tokens 128] [--threads 2] [--runs 3]
"""

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, GenerationConfig

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


DEVICE = "cpu"  # --device (cuda: the GPU machine's run, tools/gpu_run.sh)


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def random_prompt(n: int, seed: int, vocab_limit: int) -> torch.Tensor:
    # Same ids as llamacpp_bench.py (numpy default_rng with the same seed).
    rng = np.random.default_rng(seed)
    return torch.tensor([[int(t) for t in rng.integers(0, vocab_limit, size=n)]], dtype=torch.long,
                        device=DEVICE)


def prefill_once(model, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True,
                    logits_to_keep=1)
        _ = out.logits[0, -1].argmax().item()  # synchronises on a GPU too
        return time.perf_counter() - t0


def generate_once(model, ids: torch.Tensor, n_new: int) -> tuple[float, list[int]]:
    gc = GenerationConfig(do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new,
                          num_beams=1, pad_token_id=151643, eos_token_id=151645,
                          bos_token_id=151643, use_cache=True)
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc)
        sync()
        dt = time.perf_counter() - t0
    return dt, out[0, ids.shape[1]:].tolist()


def loop_once(model, ids: torch.Tensor, n_new: int) -> float:
    from transformers import DynamicCache
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        tok = out.logits[0, -1].argmax().view(1, 1)
        pos = ids.shape[1]
        t0 = time.perf_counter()
        for _ in range(n_new):
            out = model(input_ids=tok, past_key_values=cache, use_cache=True,
                        cache_position=torch.tensor([pos], device=DEVICE), logits_to_keep=1)
            tok = out.logits[0, -1].argmax().view(1, 1)
            pos += 1
        sync()
        return time.perf_counter() - t0


def bench_dtype(args, dtype_name: str) -> dict:
    dtype = DTYPES[dtype_name]
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype,
                                                 attn_implementation=args.attn).to(DEVICE).eval()
    load_s = time.perf_counter() - t0
    vocab_limit = min(model.config.vocab_size, 151643)
    res = {"engine": "hf-transformers", "dtype": dtype_name,
           "versions": f"transformers {transformers.__version__}, torch {torch.__version__}",
           "attn_implementation": model.config._attn_implementation,
           "threads": torch.get_num_threads(), "load_s": round(load_s, 2),
           "machine": platform.machine(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    print(f"[{dtype_name}] loaded in {load_s:.1f} s", file=sys.stderr)

    if not args.skip_prefill:
        ids = random_prompt(args.prompt_len, args.seed, vocab_limit)
        dt = prefill_once(model, ids)
        print(f"[{dtype_name}] prefill warm-up {args.prompt_len / dt:.1f} tok/s", file=sys.stderr)
        times = []
        for i in range(args.runs):
            times.append(prefill_once(model, ids))
            print(f"[{dtype_name}] prefill run {i}: {times[-1]:.3f} s = "
                  f"{args.prompt_len / times[-1]:.1f} tok/s", file=sys.stderr)
        med = statistics.median(times)
        res.update(prompt_len=args.prompt_len, prefill_tok_s=round(args.prompt_len / med, 2),
                   prefill_tok_s_best=round(args.prompt_len / min(times), 2),
                   prefill_s_runs=[round(t, 4) for t in times])

    if not args.skip_decode:
        n = args.decode_tokens
        ids = random_prompt(args.decode_prompt_len, args.seed + 1, vocab_limit)
        generate_once(model, ids, 4)  # warm-up
        t1s, tns, toks = [], [], None
        for i in range(args.runs):
            t1, _ = generate_once(model, ids, 1)
            tn, toks = generate_once(model, ids, n + 1)
            t1s.append(t1)
            tns.append(tn)
            print(f"[{dtype_name}] decode run {i}: generate(1) {t1:.3f} s, generate({n + 1}) {tn:.3f} s"
                  f" -> {n / (tn - t1):.2f} tok/s", file=sys.stderr)
        per_run = [n / (tn - t1) for t1, tn in zip(t1s, tns)]
        res.update(decode_prompt_len=args.decode_prompt_len, decode_tokens=n,
                   decode_tok_s=round(n / (statistics.median(tns) - statistics.median(t1s)), 2),
                   decode_tok_s_runs=[round(x, 2) for x in per_run],
                   decode_first_tokens=toks[:8])
        if args.loop:
            loop_once(model, ids, 4)  # warm-up
            lt = []
            for i in range(args.runs):
                lt.append(loop_once(model, ids, n))
                print(f"[{dtype_name}] loop run {i}: {n} tok in {lt[-1]:.3f} s = {n / lt[-1]:.2f} tok/s",
                      file=sys.stderr)
            res["decode_tok_s_loop"] = round(n / statistics.median(lt), 2)
    res["runs"] = args.runs
    del model
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF checkpoint folder")
    ap.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"])
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--decode-prompt-len", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, eager)")
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    ap.add_argument("--loop", action="store_true", help="also time a hand-written decode loop")
    ap.add_argument("--skip-prefill", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    transformers.logging.set_verbosity_error()
    for d in args.dtype:
        print(json.dumps(bench_dtype(args, d)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
