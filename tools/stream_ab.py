"""Cross entropy with its gradient streamed (non-temporal stores) or plain, side by side in
one run, at sizes far beyond the caches, as a fraction of a same-run STREAM triad:

    python tools/stream_ab.py [--threads 2]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastloss as fl  # noqa: E402
from bench import harness  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()
fl.set_num_threads(args.threads)
kernel = fl.losses.softmax._kernel
rng = np.random.default_rng(0)
print(f"{'rows x classes':>16s} {'smoothing':>9s} {'plain':>9s} {'streamed':>9s} {'plain/streamed':>14s} "
      f"{'triad':>6s} {'triad streamed':>14s}")
for (rows, C), smoothing in (((2048, 32000), 0.0), ((2048, 32000), 0.1), ((512, 128256), 0.0)):
    x = rng.standard_normal((rows, C), dtype=np.float32)
    t = rng.integers(0, C, rows)
    g = np.empty_like(x)
    crit = fl.CrossEntropyLoss(label_smoothing=smoothing)
    triad = harness.triad_bandwidth(args.threads, x.size)
    best = {}
    for _ in range(5):   # interleaved: the machine's drift falls on both alike
        for name, limit in (("plain", 1 << 62), ("streamed", 0)):
            previous = kernel.set_stream_min_bytes(limit)
            start = time.perf_counter()
            crit(x, t, out=g)
            best[name] = min(best.get(name, np.inf), time.perf_counter() - start)
            kernel.set_stream_min_bytes(previous)
    fraction = {k: 8 * x.size / v / 1e9 / triad for k, v in best.items()}
    print(f"{rows:>7d} x {C:<6d} {smoothing:9.1f} {best['plain'] * 1e3:7.1f}ms {best['streamed'] * 1e3:7.1f}ms "
          f"{best['plain'] / best['streamed']:13.2f}x {fraction['plain']:6.0%} {fraction['streamed']:14.0%}")
