"""fastloss beside another multithreaded job: `python -m bench --family contention`.

For MSELoss, BCEWithLogitsLoss and CrossEntropyLoss at 1e5, 1e6 and 1e7 float32 elements,
the median (and p99) time of one fwd+bwd call with fastloss's default threads and with one
thread: on a quiet machine, then while a competitor keeps every core busy: a torch job running
matmuls with one thread per core (NumPy's BLAS when torch is missing), then as many processes
of a multiprocessing pool, each calling fastloss in a loop (every one with default threads).
The target: under load a default-threads call is never more than 3x slower than a one-thread
call, and on a quiet machine the default is not slower than one thread.
"""
import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np

import fastloss as fl

SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (100_000, 1_000_000)
TARGET = 3.0

COMPETITOR = """
import sys, time
threads = int(sys.argv[1])
try:
    import torch
    torch.set_num_threads(threads)
    a = torch.randn(768, 768)
    step = lambda: torch.mm(a, a)
except ImportError:
    import os
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    import numpy as np
    a = np.random.standard_normal((768, 768))
    step = lambda: a @ a
print("ready", flush=True)
while True:
    step()
"""


def cases(n, rng):
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    t = (rng.random(n) < 0.5).astype(np.float32)
    rows = n // 100
    logits = rng.standard_normal((rows, 100)).astype(np.float32)
    labels = rng.integers(0, 100, rows)
    return [("MSELoss", lambda: fl.MSELoss()(x, y)),
            ("BCEWithLogitsLoss", lambda: fl.BCEWithLogitsLoss()(x, t)),
            ("CrossEntropyLoss", lambda: fl.CrossEntropyLoss()(logits, labels))]


def call_times(fn, seconds):
    """Per-call times of fn over about `seconds` (at least 20 calls)."""
    times = []
    end = time.perf_counter() + seconds
    while len(times) < 20 or time.perf_counter() < end:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.array(times)


def measure(fn, threads, seconds):
    with fl.threads(threads):
        fn()
        times = call_times(fn, seconds)
    return np.median(times), np.percentile(times, 99)


def _pool_worker(args):
    """One process of the pool load: its own fastloss calls, default threads, until `until`."""
    n, until = args
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    criterion = fl.MSELoss()
    calls = 0
    while time.time() < until:
        criterion(x, x)
        calls += 1
    return calls


def run_loaded(load, sizes, seconds, rng):
    """Rows for every case and size while `load` runs; quiet when load is None."""
    rows = []
    stop = None
    if load == "torch":
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR, str(fl.get_num_threads())],
                                      stdout=subprocess.PIPE, text=True)
        competitor.stdout.readline()
        time.sleep(0.5)
        stop = competitor.kill
    elif load == "pool":
        workers = multiprocessing.get_context("spawn").Pool(fl.get_num_threads())
        budget = seconds * 2 * 3 * len(sizes) + 30
        pending = workers.map_async(_pool_worker, [(1_000_000, time.time() + budget)] * fl.get_num_threads())
        time.sleep(2.0)   # spawned workers import fastloss first

        def stop():
            workers.terminate()
            pending.wait(0)
    try:
        for n in sizes:
            for name, fn in cases(n, rng):
                default, default_p99 = measure(fn, fl.get_num_threads(), seconds)
                single, single_p99 = measure(fn, 1, seconds)
                rows.append(dict(load=load or "quiet", loss=name, n=n, default=default, single=single,
                                 default_p99=default_p99, single_p99=single_p99, ratio=default / single))
    finally:
        if stop is not None:
            stop()
    return rows


def report(quick=False):
    sizes = QUICK_SIZES if quick else SIZES
    seconds = 0.4 if quick else 1.0
    rng = np.random.default_rng(0)
    threads = fl.get_num_threads()
    print(f"\nContention: fastloss's default ({threads} threads) vs one thread, median (p99) per "
          f"fwd+bwd call, float32; loads: quiet, a torch job with {threads} threads of matmuls, "
          f"{threads} processes calling fastloss. Target: default / one <= {TARGET:g}x under load.")
    print(f"{'load':>6s} {'loss':>18s} {'n':>9s} {'default ms':>16s} {'1 thread ms':>16s} {'default/1':>9s}")
    rows = []
    for load in (None, "torch", "pool"):
        for row in run_loaded(load, sizes, seconds, rng):
            rows.append(row)
            verdict = "" if row["load"] == "quiet" else ("  ok" if row["ratio"] <= TARGET else "  MISSED")
            print(f"{row['load']:>6s} {row['loss']:>18s} {row['n']:9d} "
                  f"{row['default'] * 1e3:7.3f} ({row['default_p99'] * 1e3:6.2f}) "
                  f"{row['single'] * 1e3:7.3f} ({row['single_p99'] * 1e3:6.2f}) {row['ratio']:8.2f}x{verdict}")
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    report(quick="--quick" in sys.argv)
