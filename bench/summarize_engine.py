#!/usr/bin/env python3
"""Summary of bench/run_engine.sh: throughput ratios against the peers measured in the same run,
the batch-1 decode as a fraction of the memory-bandwidth roofline, the shared-prefix TTFT and the
KV memory lost to partly filled blocks.

  python3 bench/summarize_engine.py OUT_DIR [MODEL_DIR]
"""

import json
import os
import re
import struct
import sys


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def last_json(path):
    lines = [l for l in read(path).splitlines() if l.strip().startswith("{")]
    return [json.loads(l) for l in lines]


def pagoda_throughput(path):
    m = re.search(r"Throughput: ([\d.]+) requests/s, ([\d.]+) total tokens/s, ([\d.]+) output tokens/s", read(path))
    return float(m.group(3)) if m else None


def weight_bytes(model_dir):
    """Bytes of every tensor in the checkpoint: what one decode step streams (the tied embedding
    is read once, as the LM head)."""
    total = 0
    for name in sorted(os.listdir(model_dir)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, name), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for key, t in header.items():
            if key != "__metadata__":
                total += t["data_offsets"][1] - t["data_offsets"][0]
    return total


def main():
    out = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else "models/qwen3-0.6b-random"
    p = lambda name: os.path.join(out, name)
    membw = last_json(p("membw.json"))[-1]
    b1 = pagoda_throughput(p("pagoda_batch1.txt"))
    b32 = pagoda_throughput(p("pagoda_batch32.txt"))
    print(f"memory bandwidth (membw read, {membw['threads']} threads): {membw['read_gbs']:.2f} GB/s")
    print(f"pagoda output tokens/s: batch 1 {b1:.2f}, 32 concurrent {b32:.2f} -> {b32 / b1:.2f}x (target >= 4x)")
    if os.path.isdir(model):
        wb = weight_bytes(model)
        frac = b1 * wb / (membw["read_gbs"] * 1e9)
        print(f"batch-1 decode streams {wb / 1e9:.3f} GB/token -> {b1 * wb / 1e9:.2f} GB/s = {frac:.2f} of the roofline"
              " (bench throughput with 1 sequence: includes the 32-token prefills and sampling)")
    for name, label in (("llamacpp_batch32.json", "llama.cpp, 32 concurrent"), ("llamacpp_batch1.json", "llama.cpp, batch 1")):
        if os.path.exists(p(name)):
            j = last_json(p(name))[-1]
            ours = b32 if "32" in name else b1
            print(f"{label}: {j['output_tok_s']:.2f} output tokens/s -> pagoda/llama.cpp {ours / j['output_tok_s']:.2f}x")
    if os.path.exists(p("hf_batch32.json")):
        for j in last_json(p("hf_batch32.json")):
            print(f"HF transformers {j.get('dtype')}, static batch 32: {j['output_tok_s']:.2f} output tokens/s -> "
                  f"pagoda/HF {b32 / j['output_tok_s']:.2f}x")
    text = read(p("pagoda_prefix.txt"))
    m = re.search(r"Later requests TTFT: mean ([\d.]+) s \(([\d.]+)% of the first\), max ([\d.]+) s \(([\d.]+)%", text)
    f = re.search(r"First request TTFT: ([\d.]+) s", text)
    if m and f:
        print(f"shared 1,024-token prefix: first TTFT {float(f.group(1)):.3f} s, later mean {float(m.group(1)):.3f} s "
              f"({m.group(2)}% of the first), max {m.group(4)}% (target <= 20%)")
    m = re.search(r"KV cache: (.*)", read(p("pagoda_fullkv.txt")))
    if m:
        print("full KV pool (input 256, output 64, 32 sequences, 320 blocks): " + m.group(1))


if __name__ == "__main__":
    main()
