#!/usr/bin/env python3
"""Summary of bench/run_hybrid.sh: per model and concurrency, pagoda's output tokens/s, its ratio
to llama.cpp and HF transformers measured in the same run, and batch-1 decode as a fraction of the
memory-bandwidth roofline (bytes one decode step must read / read bandwidth); the Gated DeltaNet
recurrence's time per token against its own roofline.

  python3 bench/summarize_hybrid.py OUT_DIR
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
    return json.loads(lines[-1]) if lines else None


def pagoda_tok_s(path):
    m = re.search(r"Throughput: ([\d.]+) requests/s, ([\d.]+) total tokens/s, ([\d.]+) output tokens/s", read(path))
    return float(m.group(3)) if m else None


def decode_bytes(model_dir):
    """Bytes one batch-1 decode step reads: every weight except the experts a token is not routed
    to ((E - k) / E of the expert weights) and an untied input embedding (one row is gathered; a
    tied one is read in full as the LM head), plus the Gated DeltaNet states (F32, read and
    written)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg = {**cfg, **cfg.get("text_config", {})}
    total = experts = embed = 0
    tied = cfg.get("tie_word_embeddings", False)
    for name in sorted(os.listdir(model_dir)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, name), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for key, t in header.items():
            if key == "__metadata__":
                continue
            b = t["data_offsets"][1] - t["data_offsets"][0]
            total += b
            if ".mlp.experts." in key:
                experts += b
            if key.endswith("embed_tokens.weight") and not tied:
                embed += b  # untied: a decode step gathers one row of it; the LM head is read in full
    E = cfg.get("num_experts", cfg.get("num_local_experts", 0))
    k = cfg.get("num_experts_per_tok", 0)
    active = total - embed - (experts * (E - k) / E if E else 0)
    n_linear = sum(1 for t in cfg.get("layer_types", []) if t == "linear_attention")
    state = 2 * 4 * n_linear * cfg.get("linear_num_value_heads", 0) * cfg.get("linear_key_head_dim", 0) * \
        cfg.get("linear_value_head_dim", 0)
    return active + state, total


def main():
    out = sys.argv[1]
    p = lambda name: os.path.join(out, name)
    membw = last_json(p("membw.json"))
    bw = membw["read_gbs"]
    print(f"memory bandwidth (membw read, {membw['threads']} threads): {bw:.2f} GB/s")
    if os.path.exists(p("gdn.txt")):
        for line in read(p("gdn.txt")).splitlines():
            if line.startswith("gdn"):
                print(line)
    models = sorted({f.split("_pagoda_c")[0] for f in os.listdir(out) if "_pagoda_c" in f})
    for name in models:
        print(f"\n{name}")
        model_dir = os.path.join("models", name + "-random")
        b1 = None
        for c in (1, 8, 32):
            ours = pagoda_tok_s(p(f"{name}_pagoda_c{c}.txt")) if os.path.exists(p(f"{name}_pagoda_c{c}.txt")) else None
            if ours is None:
                continue
            if c == 1:
                b1 = ours
            line = f"  {c:>2} concurrent: pagoda {ours:7.2f} out tok/s"
            for peer, label in (("llamacpp", "llama.cpp"), ("hf", "HF bf16")):
                path = p(f"{name}_{peer}_c{c}.json")
                j = last_json(path) if os.path.exists(path) else None
                if j:
                    line += f" | {label} {j['output_tok_s']:7.2f} -> {ours / j['output_tok_s']:.2f}x"
            if b1 and c > 1:
                line += f" | {ours / b1:.2f}x pagoda batch 1"
            print(line)
        if b1 and os.path.isdir(model_dir):
            active, total = decode_bytes(model_dir)
            print(f"  batch-1 decode reads {active / 1e9:.3f} GB/token (checkpoint {total / 1e9:.2f} GB) -> "
                  f"{b1 * active / 1e9:.2f} GB/s = {b1 * active / 1e9 / bw:.2f} of the read roofline "
                  "(bench throughput with 1 sequence: prefills and sampling included)")


if __name__ == "__main__":
    main()
