"""Benchmarks of chunked evaluation (run with --family eval; not part of the default run):

* `fastloss.evaluate` of cross entropy over a float32 .npy file of 16 GB (1 GB with --quick),
  generated here and deleted afterwards: its reading speed against a plain sequential read of
  the same file (64 MiB reads; the better of one before and one after; every read from a cold
  page cache: the file's pages are dropped before each), and
  the process's anonymous memory (RssAnon, sampled) while it runs; then the same file with
  every classification metric, and the same logits as a bfloat16 file (half the bytes);
* `fastloss.dask.evaluate` on a LocalCluster of 2 worker processes against the in-process call,
  on a 2 GB in-memory set (200 MB with --quick) that the workers already hold.
"""
import os
import tempfile
import threading
import time

import numpy as np

import fastloss as fl

CLASSES = 1000


def _anon_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class _PeakAnon:
    """The peak of the process's anonymous memory while the block runs, sampled every 20 ms."""

    def __enter__(self):
        self.peak, self.running = _anon_bytes(), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, _anon_bytes())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def _drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _write_logits(path, rows, rng):
    """A (rows, CLASSES) float32 .npy file: one random 64 MiB block, shifted per block."""
    out = np.lib.format.open_memmap(path, "w+", np.float32, (rows, CLASSES))
    block_rows = (64 << 20) // (4 * CLASSES)
    block = rng.standard_normal((block_rows, CLASSES), dtype=np.float32)
    for i, r0 in enumerate(range(0, rows, block_rows)):
        r1 = min(rows, r0 + block_rows)
        np.add(block[: r1 - r0], np.float32(i % 7) * 0.125, out=out[r0:r1])
    out.flush()
    del out


def _sequential_read(path, chunk=64 << 20):
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    start, total = time.perf_counter(), 0
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            total += n
    return total / (time.perf_counter() - start)


def _write_bfloat16(source, path):
    """The float32 logits file as bfloat16 (rounded to nearest even), 64 MiB at a time."""
    from fastloss._half import bfloat16, store
    X = np.load(source, mmap_mode="r")
    out = np.lib.format.open_memmap(path, "w+", bfloat16(load=True), X.shape)
    step = (64 << 20) // (4 * CLASSES)
    for r0 in range(0, X.shape[0], step):
        store(np.asarray(X[r0:r0 + step]), out[r0:r0 + step])
    out.flush()
    del out


def _cold_evaluate(path, labels, dtype=None, metrics=None):
    _drop_cache(path)
    _drop_cache(labels)
    X, T = np.load(path, mmap_mode="r"), np.load(labels, mmap_mode="r")
    X = X if dtype is None else X.view(dtype)
    before = _anon_bytes()
    with _PeakAnon() as peak:
        result = fl.evaluate(fl.CrossEntropyLoss(), X, T, metrics=metrics)
    return result, peak.peak, before


def file_report(gigabytes, print_fn=print):
    """The float32 file, the same logits as a bfloat16 file (half the bytes), and the float32
    file with every classification metric, each read from a cold page cache."""
    rows = int(gigabytes * 1e9) // (4 * CLASSES)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=os.environ.get("FASTLOSS_BENCH_DIR", ".")) as d:
        preds, labels, half = (os.path.join(d, f) for f in ("preds.npy", "labels.npy", "preds-bf16.npy"))
        start = time.perf_counter()
        _write_logits(preds, rows, rng)
        np.save(labels, rng.integers(0, CLASSES, rows))
        written = time.perf_counter() - start
        size = os.path.getsize(preds)
        _drop_cache(preds)
        plain = _sequential_read(preds)
        result, peak, before = _cold_evaluate(preds, labels)
        ours = result.bytes / result.seconds
        _drop_cache(preds)
        plain = max(plain, _sequential_read(preds))   # the plain read again, after: the better of the two
        with_metrics, _, _ = _cold_evaluate(preds, labels, metrics="all")
        from fastloss._half import bfloat16
        bf16 = None
        if bfloat16(load=True) is not None:
            _write_bfloat16(preds, half)
            bf16, _, _ = _cold_evaluate(half, labels, bfloat16())
    print_fn("")
    print_fn(f"fastloss.evaluate, CrossEntropyLoss over a {size / 1e9:.1f} GB float32 .npy ({rows}x{CLASSES}, "
             f"written in {written:.0f} s, deleted after), cold page cache, {fl.get_num_threads()} threads:")
    print_fn(f"  plain sequential read {plain / 1e9:6.2f} GB/s   evaluate {ours / 1e9:6.2f} GB/s   "
             f"ratio {ours / plain:.2f}   anonymous memory: peak {peak / 2**20:.0f} MiB "
             f"({(peak - before) / 2**20:.0f} MiB above the process's before)   loss {float(result.loss):.6f}")
    print_fn(f"  with every metric (accuracy, top-5, per-class, confusion, ECE, worst rows, loss histogram): "
             f"{with_metrics.seconds:.2f} s, {with_metrics.seconds / result.seconds:.2f}x the loss alone's "
             f"{result.seconds:.2f} s")
    if bf16 is not None:
        print_fn(f"  the same logits as bfloat16 ({bf16.bytes / 1e9:.1f} GB read): {bf16.seconds:.2f} s, "
                 f"{result.seconds / bf16.seconds:.2f}x faster than float32 (loss {float(bf16.loss):.6f})")
    return {"gb": size / 1e9, "plain_gbs": plain / 1e9, "evaluate_gbs": ours / 1e9,
            "peak_anon_mib": peak / 2**20, "ratio": ours / plain,
            "metrics_ratio": with_metrics.seconds / result.seconds,
            "bf16_speedup": None if bf16 is None else result.seconds / bf16.seconds}


def dask_report(gigabytes, print_fn=print):
    try:
        import dask.array as da
        import distributed
    except ImportError:
        print_fn("(dask/distributed not installed: no Dask row; pip install 'fastloss[dask]')")
        return None
    import fastloss.dask as fd

    from .harness import best_time
    rows = int(gigabytes * 1e9) // (4 * CLASSES)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, CLASSES), dtype=np.float32)
    t = rng.integers(0, CLASSES, rows)
    crit = fl.CrossEntropyLoss()
    local = best_time(lambda: crit.loss(x, t), 1.0, repeats=3)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        client.run(fl.set_num_threads, 1)   # one core per worker process, as 2 threads in process
        chunk = -(-rows // 4 // 64) * 64   # two chunks per worker, whole row blocks: no rechunking
        X = da.from_array(x, chunks=(chunk, CLASSES)).persist()
        T = da.from_array(t, chunks=chunk).persist()
        distributed.wait([X, T])
        remote = best_time(lambda: fd.evaluate(crit, X, T), 1.0, repeats=3)
        same = fd.evaluate(crit, X, T).tobytes() == crit.loss(x, t).tobytes()
    print_fn(f"fastloss.dask.evaluate, CrossEntropyLoss over {x.nbytes / 1e9:.1f} GB held by 2 local worker processes: "
             f"{remote * 1e3:.0f} ms; in process (2 threads) {local * 1e3:.0f} ms; ratio {remote / local:.2f}; "
             f"bitwise equal: {same}")
    return {"dask_ms": remote * 1e3, "local_ms": local * 1e3, "ratio": remote / local, "bitwise": same}


def report(quick=False, threads=None, print_fn=print):
    if threads:
        fl.set_num_threads(threads)
    return [file_report(1 if quick else 16, print_fn), dask_report(0.2 if quick else 2, print_fn)]
