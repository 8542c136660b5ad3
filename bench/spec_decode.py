#!/usr/bin/env python3
"""Speculative decoding (n-gram / prompt lookup) on the CPU: pagoda vs llama.cpp, batch 1, greedy.

Both engines decode the same prompt token ids (HF `tokenizers` on the checkpoint's tokenizer.json)
for --tokens tokens, greedy (or --temperature T: sampled, where drafts rarely match), EOS ignored,
once plainly and once with n-gram drafts:
  pagoda     `pagoda generate MODEL --prompt TEXT --temperature 0 --ignore-eos --output-format json`
             [--speculative-config '{"method":"ngram","num_speculative_tokens":K,
             "prompt_lookup_max":N,"prompt_lookup_min":1}']; decode tokens/s as it prints it
             (prefill excluded).
  llama.cpp  llama-cpp-python Llama.generate(top_k=1) on the BF16 GGUF of the same checkpoint
             [draft_model=LlamaPromptLookupDecoding(max_ngram_size=N, num_pred_tokens=K)];
             tokens/s from the first generated token to the last (prefill excluded).
Each mode runs --runs times (median reported), alternating engines. Output: a table on stdout and
one JSON line. Each engine's spec run must reproduce its own plain tokens (greedy is unchanged
by construction); the script says so.

Usage:
  python3 bench/spec_decode.py --model models/qwen3-0.6b-random --gguf models/qwen3-0.6b-random-bf16.gguf
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROMPT = ("Summarise the following notes, then repeat the list of action items exactly.\n"
          "Notes: the build server ran out of disk on Monday; the cache folder was moved to the large volume; "
          "nightly tests now finish in forty minutes instead of seventy; the release is planned for Friday.\n"
          "Action items: move the cache folder; rerun the nightly tests; update the release notes; tell the team.\n"
          "Action items: move the cache folder; rerun the nightly tests; update the release notes; tell the team.\n")


def run_pagoda(binary, model, threads, tokens, spec, temperature):
    cmd = [binary, "generate", model, "--prompt", PROMPT, "--max-tokens", str(tokens), "--temperature",
           str(temperature), "--seed", "3", "--ignore-eos", "--output-format", "json", "--max-model-len", "2048"]
    if spec:
        cmd += ["--speculative-config", spec]
    env = {**os.environ, "PAGODA_NUM_THREADS": str(threads)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    m = re.search(r"generated (\d+) tokens: ([\d.]+) tokens/s decode", p.stderr)
    assert m, p.stderr
    acc = re.search(r"speculative decoding: (\d+) of (\d+) draft tokens accepted .* mean acceptance length ([\d.]+)",
                    p.stderr)
    if acc:
        print(f"  pagoda: {acc.group(1)} of {acc.group(2)} drafts accepted, mean acceptance length {acc.group(3)}",
              file=sys.stderr)
    return out["token_ids"], float(m.group(2))


def run_llamacpp(llm, prompt_ids, tokens, temperature):
    llm.reset()
    out, t_first = [], None
    for tok in llm.generate(prompt_ids, top_k=1 if temperature == 0 else 0, top_p=1.0, min_p=0.0, temp=temperature,
                            repeat_penalty=1.0):
        if t_first is None:
            t_first = time.perf_counter()
        out.append(tok)
        if len(out) == tokens:
            break
    dt = time.perf_counter() - t_first
    return out, (len(out) - 1) / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bin", "pagoda"))
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("-k", type=int, default=4, help="draft tokens per step")
    ap.add_argument("--ngram", type=int, default=3, help="longest n-gram looked up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="0: greedy; else plain sampling at this temperature (pagoda seeded), where few drafts match")
    a = ap.parse_args()

    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    prompt_ids = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json")).encode(PROMPT).ids
    spec = json.dumps({"method": "ngram", "num_speculative_tokens": a.k, "prompt_lookup_max": a.ngram,
                       "prompt_lookup_min": 1})
    common = dict(model_path=a.gguf, n_ctx=2048, n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
    llm_plain = Llama(**common)
    llm_spec = Llama(**common, draft_model=LlamaPromptLookupDecoding(max_ngram_size=a.ngram, num_pred_tokens=a.k))
    res = {k: [] for k in ("pagoda", "pagoda_spec", "llamacpp", "llamacpp_spec")}
    toks = {}
    for r in range(a.runs):
        for name in res:
            if name.startswith("pagoda"):
                t, tps = run_pagoda(a.binary, a.model, a.threads, a.tokens, spec if name.endswith("spec") else None,
                                    a.temperature)
            else:
                t, tps = run_llamacpp(llm_spec if name.endswith("spec") else llm_plain, prompt_ids, a.tokens,
                                      a.temperature)
            res[name].append(tps)
            toks[name] = t
            print(f"run {r}: {name:14s} {tps:7.2f} tokens/s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in res.items()}
    same_pagoda = toks["pagoda"] == toks["pagoda_spec"]
    same_llama = toks["llamacpp"] == toks["llamacpp_spec"]
    mode = "greedy" if a.temperature == 0 else f"temperature {a.temperature}"
    print(f"prompt {len(prompt_ids)} tokens, {a.tokens} tokens ({mode}), k={a.k}, n-grams 1..{a.ngram}, "
          f"{a.threads} threads, median of {a.runs}")
    print(f"{'engine':10s} {'plain tok/s':>12s} {'n-gram tok/s':>13s} {'speedup':>8s}  same tokens as plain")
    for eng, same in (("pagoda", same_pagoda), ("llamacpp", same_llama)):
        print(f"{eng:10s} {med[eng]:12.2f} {med[eng + '_spec']:13.2f} {med[eng + '_spec'] / med[eng]:7.2f}x  {same}")
    print(f"pagoda / llama.cpp: plain {med['pagoda'] / med['llamacpp']:.2f}x, "
          f"n-gram {med['pagoda_spec'] / med['llamacpp_spec']:.2f}x")
    print(json.dumps({"median_tokens_per_s": med, "runs": res, "same_tokens": {"pagoda": same_pagoda,
                                                                               "llamacpp": same_llama},
                      "prompt_tokens": len(prompt_ids), "tokens": a.tokens, "k": a.k, "ngram": a.ngram,
                      "temperature": a.temperature}))


if __name__ == "__main__":
    main()
