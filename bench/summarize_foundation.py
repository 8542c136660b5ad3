#!/usr/bin/env python3
"""Summarises bench/run_foundation.sh output: pagoda vs llama.cpp vs HF transformers (ratios),
and pagoda's decode as a fraction of the measured memory-bandwidth roofline."""
import json
import os
import sys


def read_lines(path):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def main(out_dir):
    membw = read_lines(os.path.join(out_dir, "membw.json"))[-1]
    pagoda = read_lines(os.path.join(out_dir, "pagoda.json"))[-1]
    peers = []
    for r in read_lines(os.path.join(out_dir, "llamacpp.json")):
        peers.append((f"llama.cpp ({r.get('gguf', '')})", r.get("prefill_tok_s"), r.get("decode_tok_s")))
    for r in read_lines(os.path.join(out_dir, "hf.json")):
        peers.append((f"HF transformers ({r.get('dtype', '?')})", r.get("prefill_tok_s"), r.get("decode_tok_s")))

    pp, tg = pagoda["prefill_tokens_per_s"], pagoda["decode_tokens_per_s"]
    bw = membw["read_gbs"]
    frac = pagoda["decode_GBps"] / bw
    print()
    print(f"memory bandwidth (read, all threads): {bw:.2f} GB/s; copy {membw['copy_gbs']:.2f} GB/s")
    print(f"pagoda decode streams {pagoda['decode_GBps']:.2f} GB/s = {frac:.2f} of the read-bandwidth roofline "
          f"({(pagoda['decode_weight_bytes_per_token'] + pagoda['decode_kv_bytes_per_token']) / 1e9:.3f} GB/token)")
    print()
    print(f"{'engine':40s} {'prefill tok/s':>14s} {'decode tok/s':>13s} {'pagoda/peer pp':>15s} {'pagoda/peer tg':>15s}")
    print(f"{'pagoda':40s} {pp:14.1f} {tg:13.2f}")
    for name, ppp, ptg in peers:
        rp = f"{pp / ppp:.2f}x" if ppp else "-"
        rt = f"{tg / ptg:.2f}x" if ptg else "-"
        print(f"{name:40s} {ppp or 0:14.1f} {ptg or 0:13.2f} {rp:>15s} {rt:>15s}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/out")
