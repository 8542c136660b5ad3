#!/usr/bin/env python3
"""HF `tokenizers` single-threaded encode throughput on the same documents as tokenizer_bench.

  RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false python3 bench/tokenizer_bench_hf.py [--repeat 16]
One Tokenizer.encode(doc, add_special_tokens=False) call per document (no batching).
"""
import argparse
import json
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(root, "..", "shared"))
    ap.add_argument("--corpus", default=os.path.join(root, "tests", "tokenizer", "data", "corpus.json"))
    ap.add_argument("--text", help="plain UTF-8 file; documents are consecutive 64-line chunks")
    ap.add_argument("--repeat", type=int, default=16)
    ap.add_argument("--names", default="qwen3,llama3,deepseek_v3")
    args = ap.parse_args()
    if args.text:
        with open(args.text, "rb") as f:
            lines = f.read().decode("utf-8", errors="replace").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        docs = ["".join(l + "\n" for l in lines[i:i + 64]) for i in range(0, len(lines), 64)]
    else:
        docs = json.load(open(args.corpus, encoding="utf-8"))["texts"]
    per_pass = sum(len(d.encode("utf-8")) for d in docs)
    print(f"corpus: {len(docs)} documents, {per_pass / 1e6:.2f} MB per pass, {args.repeat} passes")
    for name in args.names.split(","):
        t0 = time.perf_counter()
        tok = Tokenizer.from_file(os.path.join(args.shared, "tokenizers", name, "tokenizer.json"))
        load = time.perf_counter() - t0
        tokens = 0
        start = time.perf_counter()
        first = 0.0
        for r in range(args.repeat):
            for d in docs:
                tokens += len(tok.encode(d, add_special_tokens=False).ids)
            if r == 0:
                first = time.perf_counter() - start
        secs = time.perf_counter() - start
        mb = per_pass * args.repeat / 1e6
        print(f"{name:<12} load {load:.2f}s  encode {mb / secs:.1f} MB/s "
              f"(first pass {per_pass / 1e6 / first:.1f} MB/s), {tokens / secs / 1e6:.2f}M tokens/s")


if __name__ == "__main__":
    main()
