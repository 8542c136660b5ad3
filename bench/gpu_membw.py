#!/usr/bin/env python3
"""GPU memory bandwidth through PyTorch, for the decode rooflines of the GPU run: a device-to-
device copy of a 4 GiB buffer (bytes read + written per second) and a read-only sum, each the
median of 10 timed runs (CUDA events) after 3 warm-ups. Prints one JSON line."""
import json
import statistics

import torch


def timed(fn, runs=10, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def main():
    n = 4 << 30
    x = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    t_copy = timed(lambda: y.copy_(x))
    xf = x.view(torch.float32)
    t_read = timed(lambda: xf.sum())
    print(json.dumps({"device": torch.cuda.get_device_name(), "bytes": n,
                      "copy_GBps": round(2 * n / t_copy / 1e9, 1), "read_GBps": round(n / t_read / 1e9, 1)}))


if __name__ == "__main__":
    main()
