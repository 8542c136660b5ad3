#!/usr/bin/env python3
"""Writes tests/base/data/fp8_reference.json: torch's FP8 conversions, the reference of pagoda's
fp8_e4m3 / fp8_e5m2 codecs (src/base/dtype.h) used by the FP8 KV cache.

- decode: for each of the 256 codes of float8_e4m3fn and float8_e5m2, the float32 bits torch
  decodes it to (every value is exact in float32);
- encode: float32 values (bits) inside each format's finite range and their code under torch's
  round-to-nearest-even conversion: random magnitudes over the whole range, subnormals, exact
  ties between neighbouring codes, and +-0. (Beyond the finite range torch gives NaN for e4m3fn
  and inf for e5m2; pagoda saturates as vLLM's KV-cache writes do, which the C++ test states.)

Run: python3 tools/make_fp8_fixture.py   (needs torch)
"""
import json
import os

import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "base", "data",
                   "fp8_reference.json")


def f32_bits(t):
    return [int(x) for x in t.to(torch.float32).contiguous().view(torch.int32).tolist()]


def fmt(dtype, max_finite):
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    decoded = codes.view(dtype).to(torch.float32)
    finite = decoded[torch.isfinite(decoded)]
    finite_sorted = torch.unique(finite.abs())
    g = torch.Generator().manual_seed(0)
    # Random magnitudes, log-uniform over the subnormals to the largest finite value.
    lo, hi = float(finite_sorted[1].log2()) - 1, float(torch.tensor(max_finite).log2())
    r = torch.exp2(torch.rand(4000, generator=g) * (hi - lo) + lo)
    r = r[r < max_finite]
    # Exact midpoints between neighbouring codes (ties: round to even), and points just off them.
    a, b = finite_sorted[:-1], finite_sorted[1:]
    mid = (a + b) / 2
    off = torch.cat([torch.nextafter(mid, b), torch.nextafter(mid, a)])
    vals = torch.cat([r, mid, off, finite_sorted, torch.tensor([0.0])]).to(torch.float32)
    signs = torch.where(torch.rand(vals.numel(), generator=g) < 0.5, -1.0, 1.0)
    vals = torch.cat([vals * signs, torch.tensor([-0.0])])
    vals = vals[vals.abs() < max_finite]
    enc = vals.to(dtype).view(torch.uint8).to(torch.int32)
    return {
        "decode_f32_bits": f32_bits(decoded),
        "encode_f32_bits": f32_bits(vals),
        "encode_codes": [int(x) for x in enc.tolist()],
    }


def main():
    data = {"torch": torch.__version__, "e4m3": fmt(torch.float8_e4m3fn, 448.0), "e5m2": fmt(torch.float8_e5m2, 57344.0)}
    with open(OUT, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    print(OUT, len(data["e4m3"]["encode_codes"]), len(data["e5m2"]["encode_codes"]))


if __name__ == "__main__":
    main()
