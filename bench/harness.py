"""The benchmark harness: times fastloss against its peers in one process, side by side.

A case is a loss at one size. For each, fwd+bwd is timed for fastloss (fresh gradient and
with out=), torch on the CPU with the same thread count (forward, then .backward()), JAX
(jax.jit of jax.value_and_grad) where installed, plain NumPy, and scikit-learn's Cython
losses with preallocated outputs where it has the loss. The table shows
times, the ratio of the best peer to fastloss, and effective bandwidth (bytes the loss must
read and write / time) as a fraction of a STREAM triad (same worker pool, same compiler flags)
measured in the same run.
"""
import time
from dataclasses import dataclass, field

import numpy as np

import fastloss as fl
from fastloss._kernels import stream

try:
    import torch
except ImportError:  # torch is optional here: the table then compares with NumPy
    torch = None

try:
    import jax
    import jax.numpy as jnp
except ImportError:  # JAX is optional: a column when installed
    jax = jnp = None


@dataclass
class Case:
    """One loss: how to build fastloss's criterion, the data, and each peer's fwd+bwd."""
    name: str
    criterion: object                  # () -> fastloss criterion
    data: object                       # (rng, n) -> list of float32 arrays for the call
    torch: object = None               # (*tensors) -> scalar loss tensor; tensor 0 needs grad
    numpy: object = None               # (*arrays) -> (loss, grad)
    sklearn: object = None             # (arrays, threads) -> run, or None when not available
    jax: object = None                 # (jnp, *arrays) -> scalar loss, differentiated by jax.grad
    shapes: tuple = ()                 # the sizes to run at, when not the element counts of --sizes
    quick_shapes: tuple = ()
    bytes_per_element: int = 12        # bytes read + written per element (float32)
    differentiable: tuple = (0,)
    extra: dict = field(default_factory=dict)


def best_time(fn, min_time=0.2, repeats=5):
    """Best per-call time of fn, over `repeats` batches sized to last about min_time/repeats."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    batch = max(1, int(min_time / repeats / once))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        best = min(best, (time.perf_counter() - start) / batch)
    return best


TRIAD_MAX = 50_000_000   # beyond this the triad is DRAM-bound anyway


def triad_bandwidth(num_threads, n):
    """GB/s of a = b + s c over float32 arrays of n elements (12 bytes per element, as MSE's
    fwd+bwd), with the same threads. Measured at each case's size: how much of the working
    set the caches hold changes the attainable bandwidth (this machine's L3 may be large)."""
    n = min(n, TRIAD_MAX)
    a, b, c = (np.ones(n, np.float32) for _ in range(3))
    seconds = best_time(lambda: stream.triad(a, b, c, 3.0, num_threads), min_time=0.3)
    return 12 * n / seconds / 1e9


def torch_fwd_bwd(case, arrays):
    """torch's forward then .backward() on the arrays (NumPy, or torch tensors as they are)."""
    tensors = [a if torch.is_tensor(a) else torch.from_numpy(a) for a in arrays]
    for i in case.differentiable:
        tensors[i].requires_grad_(True)

    def run():
        for i in case.differentiable:
            tensors[i].grad = None
        case.torch(*tensors).backward()
    return run


def jax_fwd_bwd(case, arrays):
    """jax.jit(jax.value_and_grad(loss)), the way JAX users write a training step."""
    step = jax.jit(jax.value_and_grad(lambda *a: case.jax(jnp, *a), argnums=case.differentiable))
    device_arrays = [jnp.asarray(a) for a in arrays]
    return lambda: jax.block_until_ready(step(*device_arrays))


def measure(case, size, rng, num_threads, quick):
    arrays = case.data(rng, size)
    crit = case.criterion()
    grads = crit(*arrays)[1]
    out = (tuple(None if g is None else np.empty_like(g) for g in grads) if isinstance(grads, tuple)
           else np.empty_like(grads))
    min_time = 0.05 if quick else 0.25
    times = {"fastloss": best_time(lambda: crit(*arrays), min_time),
             "fastloss out=": best_time(lambda: crit(*arrays, out=out), min_time)}
    if torch is not None and case.torch is not None:
        times["torch"] = best_time(torch_fwd_bwd(case, arrays), min_time)
    if jax is not None and case.jax is not None:
        times["jax"] = best_time(jax_fwd_bwd(case, arrays), min_time)
    if case.numpy is not None:
        times["numpy"] = best_time(lambda: case.numpy(*arrays), min_time)
    if case.sklearn is not None:
        run = case.sklearn(arrays, num_threads)
        if run is not None:
            times["sklearn"] = best_time(run, min_time)
    return times


def format_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"


def run(cases, sizes, num_threads, quick=False, print_fn=print):
    """Time every case at every size; print and return the rows."""
    if torch is not None:
        torch.set_num_threads(num_threads)
    fl.set_num_threads(num_threads)
    rng = np.random.default_rng(0)
    def sizes_of(case):
        return (case.quick_shapes if quick else case.shapes) or sizes

    def elements(size):
        return int(np.prod(size))

    triads = {}
    for n in sorted({elements(size) for case in cases for size in sizes_of(case)}):
        triads[n] = triad_bandwidth(num_threads, n)
    peers = ["torch", "jax", "numpy", "sklearn"]
    build = fl.build_info()
    print_fn(f"fastloss bench: {num_threads} threads, float32, fwd+bwd; ratio = peer time / fastloss time "
             f"(higher is better); GB/s = bytes read + written / time, as a fraction of a STREAM triad "
             f"over the same number of elements, same threads, same run: "
             + ", ".join(f"{bw:.1f} GB/s at n={n}" for n, bw in triads.items()))
    print_fn(f"kernels: the {build['level']} level ({build['target']}; {build['simd']}), "
             f"libmvec {'on' if build['libmvec'] else 'off'}, worker pool {'on' if build['pool'] else 'off'}")
    if torch is None:
        print_fn("(torch is not installed: comparing with NumPy only; pip install 'fastloss[bench]')")
    if jax is None:
        print_fn("(JAX is not installed: no JAX column; XLA uses every core)")
    header = (f"{'loss':22s} {'n':>12s} {'fastloss':>11s} {'out=':>11s} {'torch':>11s} {'jax':>11s} "
              f"{'numpy':>11s} {'sklearn':>11s} {'x torch':>8s} {'x jax':>7s} {'x best':>7s} {'GB/s':>6s} "
              f"{'triad':>6s} {'triad out=':>10s}")
    print_fn(header)
    print_fn("-" * len(header))
    rows = []
    for case in cases:
        for size in sizes_of(case):
            n = elements(size)
            triad = triads[n]
            times = measure(case, size, rng, num_threads, quick)
            ours = times["fastloss"]
            gbs = case.bytes_per_element * n / ours / 1e9
            gbs_out = case.bytes_per_element * n / times["fastloss out="] / 1e9
            present = [times[p] for p in peers if p in times]
            row = dict(loss=case.name, n=n, size=size, triad=triad, **times,
                       gbs=gbs, gbs_out=gbs_out, triad_fraction=gbs / triad, triad_fraction_out=gbs_out / triad,
                       vs_best=(min(present) / ours) if present else float("nan"))
            rows.append(row)

            def cell(key):
                return format_time(times[key]) if key in times else f"{'-':>11s}"

            def ratio(key):
                return f"{times[key] / ours:7.1f}x" if key in times else f"{'-':>8s}"
            label = "x".join(map(str, size)) if isinstance(size, tuple) else str(size)
            print_fn(f"{case.name:22s} {label:>12s} {cell('fastloss')} {cell('fastloss out=')} {cell('torch')} "
                     f"{cell('jax')} {cell('numpy')} {cell('sklearn')} {ratio('torch')} {ratio('jax'):>7s} "
                     f"{row['vs_best']:6.1f}x {gbs:6.1f} {gbs / triad:6.0%} {gbs_out / triad:10.0%}")
    return rows
