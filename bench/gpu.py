"""The GPU benchmark: fastloss's numba CUDA kernels against torch CUDA, fwd+bwd in float32,
side by side in one process, on torch CUDA tensors (zero-copy in and out).

Every case of the CPU families runs at the GPU sizes: the pointwise losses at 1e8 elements,
the softmax family at its largest shapes (cross entropy 8192x32000 and 2048x128256), the
embedding family at 65536x256, CTC at T=200, N=32, C=50, S=50. Times are CUDA-event times of
a batch of calls on torch's current stream (the best of several batches, after a warm-up
that compiles the kernels); the pointwise bandwidth (bytes read + written / time) is given as
a fraction of a device-to-device copy (torch's ``copy_``) measured in the same run. Needs
torch with CUDA and numba-cuda: ``python -m bench --family gpu``.
"""
import numpy as np

from . import embedding, pointwise, sequence, softmax
from .harness import format_time, torch, torch_fwd_bwd

POINTWISE_N = 100_000_000
SOFTMAX_SHAPES = {"CrossEntropyLoss": ((8192, 32000), (2048, 128256)), "CE label_smoothing=0.1": ((8192, 32000),),
                  "CE ignore_index": ((8192, 32000),), "NLLLoss": ((8192, 32000),)}
EMBEDDING_SHAPE = (65536, 256)
NT_XENT_SHAPE = (2048, 256)   # 2N = 4096 views, as on the CPU: torch's composition holds the (2N, 2N) similarities


def cases(quick):
    """(case, size) pairs at the GPU sizes (smaller with quick)."""
    n = 10_000_000 if quick else POINTWISE_N
    rows = [(c, n) for c in pointwise.CASES]
    for c in softmax.CASES:
        for size in SOFTMAX_SHAPES.get(c.name, c.shapes[-1:]):
            rows.append((c, (size[0] // 4,) + size[1:] if quick else size))
    rows += [(c, NT_XENT_SHAPE if c.name == "NTXentLoss" else (8192, 256) if quick else EMBEDDING_SHAPE)
             for c in embedding.CASES]
    rows += [(c, s) for c in sequence.CASES for s in c.shapes]
    return rows


def cuda_time(fn, min_time=0.2, repeats=5):
    """Best per-call time of fn on the current stream, by CUDA events over batches of calls."""
    fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    batch = max(1, int(min_time / repeats / max(start.elapsed_time(stop) / 1e3, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        start.record()
        for _ in range(batch):
            fn()
        stop.record()
        stop.synchronize()
        best = min(best, start.elapsed_time(stop) / 1e3 / batch)
    return best


def copy_bandwidth(n):
    """GB/s of a device-to-device copy of n float32 (bytes read + written / time)."""
    src, dst = torch.ones(n, device="cuda"), torch.empty(n, device="cuda")
    return 8 * n / cuda_time(lambda: dst.copy_(src)) / 1e9


def _on_device(arrays):
    return [None if a is None else torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in arrays]


def measure(case, size, rng, min_time):
    arrays = _on_device(case.data(rng, size))
    crit = case.criterion()
    grads = crit(*arrays).grad
    empty_like = torch.empty_like if torch.is_tensor(grads if not isinstance(grads, tuple) else grads[0]) \
        else np.empty_like   # (torch CUDA tensors give torch tensors; a CPU dry run, arrays)
    out = tuple(None if g is None else empty_like(g) for g in grads) if isinstance(grads, tuple) else empty_like(grads)
    times = {"fastloss": cuda_time(lambda: crit(*arrays), min_time),
             "fastloss out=": cuda_time(lambda: crit(*arrays, out=out), min_time)}
    if case.torch is not None:
        times["torch CUDA"] = cuda_time(torch_fwd_bwd(case, [a.clone() for a in arrays]), min_time)
    return times


def report(quick=False, print_fn=print):
    if torch is None or not torch.cuda.is_available():
        print_fn("GPU bench: skipped (needs torch with CUDA and a GPU)")
        return []
    rng = np.random.default_rng(0)
    n = 10_000_000 if quick else POINTWISE_N
    copy = copy_bandwidth(n)
    print_fn(f"fastloss GPU bench on {torch.cuda.get_device_name()}: float32, fwd+bwd, CUDA-event times; "
             f"x torch = torch CUDA time / fastloss time (higher is better); pointwise GB/s = bytes read + "
             f"written / time, as a fraction of a device-to-device copy of {n} floats: {copy:.0f} GB/s")
    header = f"{'loss':24s} {'size':>16s} {'fastloss':>11s} {'out=':>11s} {'torch CUDA':>11s} {'x torch':>8s} " \
             f"{'GB/s':>7s} {'copy':>6s} {'copy out=':>9s}"
    print_fn(header)
    print_fn("-" * len(header))
    rows = []
    for case, size in cases(quick):
        times = measure(case, size, rng, 0.05 if quick else 0.2)
        ours = times["fastloss"]
        pointwise_case = case in pointwise.CASES
        gbs = case.bytes_per_element * n / ours / 1e9 if pointwise_case else float("nan")
        gbs_out = case.bytes_per_element * n / times["fastloss out="] / 1e9 if pointwise_case else float("nan")
        ratio = times["torch CUDA"] / ours if "torch CUDA" in times else float("nan")
        rows.append(dict(loss=case.name, size=size, **times, vs_torch=ratio, gbs=gbs, copy=copy))
        label = "x".join(map(str, size)) if isinstance(size, tuple) else str(size)
        torch_cell = format_time(times["torch CUDA"]) if "torch CUDA" in times else f"{'-':>11s}"
        blank = f"{'':7s} {'':6s} {'':9s}"
        bandwidth = f"{gbs:7.0f} {gbs / copy:6.0%} {gbs_out / copy:9.0%}" if pointwise_case else blank
        print_fn(f"{case.name:24s} {label:>16s} {format_time(ours)} {format_time(times['fastloss out='])} "
                 f"{torch_cell} {ratio:7.2f}x {bandwidth}")
    return rows
