#!/usr/bin/env python3
"""Peer benchmark: Hugging Face transformers (PyTorch, CPU) offline throughput with generate().

The workload of `pagoda bench throughput` (and bench/peers/llamacpp_throughput.py):
  --num-prompts P prompts of --input-len random token ids each (numpy default_rng(--seed),
  ids in [0, 151643), i.e. no special tokens; prompt i is row i of one (P, input_len) draw, the
  same ids as llamacpp_throughput.py), all available at time 0; each generates exactly
  --output-len tokens (greedy: do_sample=False, min_new_tokens = max_new_tokens = output_len, so
  no EOS stop; min_new_tokens also masks EOS id 151645 out of the argmax, which only matters if
  it would have been the argmax). Timed from the first generate() call to the end of the last one (one wall-clock
  span):
    output tokens/s = P * output_len / wall,  total tokens/s = P * (input_len + output_len) / wall,
    requests/s = P / wall.

How transformers runs it: STATIC batching, which is what generate() offers. The prompts are cut
into consecutive batches of --batch-size B (default P: one batch holding every prompt); each
batch is one model.generate() call on a (B, input_len) tensor (all prompts have the same length,
so no padding; attention_mask all ones) with the default DynamicCache: one prefill forward of the
whole batch, then output_len - 1 forwards of B tokens each. Batches run one after another; a
batch's sequences all start and finish together (no continuous batching, no admission of new
prompts mid-batch). attn_implementation = --attn (sdpa), torch.inference_mode(),
torch.set_num_threads(--threads), one inter-op thread.

Before the timed run(s): one warm-up generate() (one separate random prompt, 4 new tokens). With
--runs N > 1 the median run is reported (and all runs). --check-alone K afterwards reruns prompts
0..3 one at a time (batch 1) for K tokens each and reports, per prompt, how many leading tokens
match the batched run (alone_match).
Runs once per --dtype (bf16 and/or fp32), each with its own model instance.

Output: one JSON line per dtype on stdout (first_tokens = the first generated ids of prompt 0,
first_token_per_prompt = the first generated id of prompts 0..15).
Progress on stderr.

Usage:
  python3 bench/peers/hf_throughput.py --model models/qwen3-0.6b-random --dtype fp32 \
      --input-len 32 --output-len 128 --num-prompts 32 [--batch-size B] [--threads 2]
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
VOCAB_LIMIT = 151643  # Qwen's first special token; prompts avoid special tokens


def random_prompts(num: int, length: int, seed: int) -> torch.Tensor:
    # Same ids as llamacpp_throughput.py (numpy default_rng, one (num, length) draw).
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.integers(0, VOCAB_LIMIT, size=(num, length)), dtype=torch.long)


def gen_config(n_new: int) -> GenerationConfig:
    return GenerationConfig(do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new,
                            num_beams=1, pad_token_id=151643, eos_token_id=151645,
                            bos_token_id=151643, use_cache=True)


def generate(model, ids: torch.Tensor, n_new: int) -> torch.Tensor:
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             generation_config=gen_config(n_new))
    return out[:, ids.shape[1]:]


def run_all(model, prompts: torch.Tensor, n_new: int, batch_size: int) -> list[list[int]]:
    outputs = []
    for b in range(0, prompts.shape[0], batch_size):
        new = generate(model, prompts[b:b + batch_size], n_new)
        assert new.shape[1] == n_new, (new.shape, n_new)
        outputs.extend(new.tolist())
    return outputs


def bench_dtype(args, dtype_name: str) -> dict:
    P, L, O = args.num_prompts, args.input_len, args.output_len
    B = min(args.batch_size or P, P)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=DTYPES[dtype_name],
                                                 attn_implementation=args.attn).eval()
    load_s = time.perf_counter() - t0
    print(f"[{dtype_name}] loaded in {load_s:.1f} s", file=sys.stderr)

    prompts = random_prompts(P, L, args.seed)
    if not args.no_warmup:
        t = time.perf_counter()
        generate(model, random_prompts(1, L, args.seed + 1), 4)
        print(f"[{dtype_name}] warm-up (1 prompt, 4 tokens) {time.perf_counter() - t:.2f} s", file=sys.stderr)

    times, outputs = [], None
    for r in range(args.runs):
        t = time.perf_counter()
        outputs = run_all(model, prompts, O, B)
        dt = time.perf_counter() - t
        times.append(dt)
        print(f"[{dtype_name}] run {r}: {P} prompts x ({L} in + {O} out), batches of {B}, in {dt:.2f} s"
              f" = {P * O / dt:.2f} output tok/s", file=sys.stderr)
    wall = statistics.median(times)
    res = {
        "engine": "hf-transformers", "dtype": dtype_name,
        "versions": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "workload": "throughput", "batching": "static (generate per batch)",
        "input_len": L, "output_len": O, "num_prompts": P, "batch_size": B,
        "threads": torch.get_num_threads(), "seed": args.seed,
        "attn_implementation": model.config._attn_implementation,
        "load_s": round(load_s, 2),
        "wall_s": round(wall, 3),
        "output_tok_s": round(P * O / wall, 2),
        "total_tok_s": round(P * (L + O) / wall, 2),
        "requests_s": round(P / wall, 3),
        "output_tok_s_best": round(P * O / min(times), 2),
        "wall_s_runs": [round(t, 3) for t in times],
        "runs": args.runs,
        "first_tokens": outputs[0][:8],
        "first_token_per_prompt": [o[0] for o in outputs[:16]],
        "machine": platform.machine(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if args.check_alone > 0:
        k = min(args.check_alone, O)
        matches = []
        for i in range(min(4, P)):
            alone = generate(model, prompts[i:i + 1], k)[0].tolist()
            m = 0
            while m < k and alone[m] == outputs[i][m]:
                m += 1
            matches.append(f"{m}/{k}")
        res["alone_match"] = matches
        print(f"[{dtype_name}] prompts 0..{len(matches) - 1} alone vs batched, leading tokens that match: "
              f"{matches}", file=sys.stderr)
    del model
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF checkpoint folder")
    ap.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["bf16"])
    ap.add_argument("--input-len", type=int, required=True)
    ap.add_argument("--output-len", type=int, required=True)
    ap.add_argument("--num-prompts", type=int, required=True)
    ap.add_argument("--batch-size", type=int, default=0,
                    help="prompts per generate() call; default: num-prompts (one static batch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, eager)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--check-alone", type=int, default=0, metavar="K",
                    help="afterwards, rerun prompts 0..3 alone for K tokens each and compare with the batched run")
    args = ap.parse_args()
    if min(args.num_prompts, args.input_len, args.output_len) < 1:
        ap.error("--input-len, --output-len and --num-prompts must be >= 1")

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
