"""fastloss's float32 results are at least as accurate as torch's float32 results.

For every case of the registry (tests/cases.py: every criterion and the options that pick its
kernels), on the same float32 inputs over many seeds: the per-element loss (reduction 'none')
and every gradient, from fastloss in float32 and from torch in float32, each against torch in
float64 on those inputs (the truth). The error of an element is |value - truth| over
|truth| + 1e-6 of the case's largest |truth| (a relative error that does not blow up at zeros).
fastloss's error must not exceed torch's at the median and at the 99th percentile. fastloss
computes float32 data in float32 lanes (simd_math.h's exp/log/log1p, within 2 ulp) and sums in
float64; torch computes in float32 with SLEEF's transcendentals.
"""
import cases
import numpy as np
import pytest
import torch

# The comparison is of the kernels as shipped: the v2, v3 and v4 levels, at which CI runs it.
# tools/sanitize.sh's native debug build with sanitizers is another binary that rounds some
# cases differently (CrossEntropyLoss with softcap went 4% over torch's 99th percentile there)
# and leaves it out.
pytestmark = pytest.mark.accuracy
SEEDS = 60


def _tensors(crit, arrays, dtype):
    out = []
    for name, a in zip(crit.arguments, arrays):
        if isinstance(a, np.ndarray):
            t = torch.tensor(a.astype(dtype) if a.dtype.kind == "f" else a.astype(np.int64))
            if name in crit.differentiable and a.dtype.kind == "f":
                t.requires_grad_(True)
            a = t
        out.append(a)
    return out


def _torch_results(case, crit, arrays, dtype):
    tensors = _tensors(crit, arrays, dtype)
    loss = cases.oracle(case[0])(*tensors, reduction="none")
    loss.sum().backward()
    grads = [t.grad.numpy() if isinstance(t, torch.Tensor) and t.grad is not None else None
             for name, t in zip(crit.arguments, tensors) if name in crit.differentiable]
    return [loss.detach().numpy()] + grads


def _ours(crit, arrays):
    loss, grads = crit(*arrays)
    grads = grads if isinstance(grads, tuple) else (grads,)
    return [np.asarray(loss)] + [None if g is None else np.asarray(g) for g in grads]


def _error(values, true, finite, denominator):
    """Relative errors where the truth is finite; a NaN or inf there is an infinite error."""
    error = np.abs(np.asarray(values, np.float64)[finite] - true[finite]) / denominator
    return np.where(np.isnan(error), np.inf, error)


def _errors(case):
    """(ours, torch's) per-element errors over the seeds, every output pooled."""
    ours_err, torch_err = [], []
    for seed in range(SEEDS):
        crit, arrays, _ = cases.build(case, "none", np.float32, seed=seed)
        low = _torch_results(case, crit, arrays, np.float32)
        assert all(r is None or r.dtype == np.float32 for r in low), f"{case[0]}: torch's run is not float32"
        truth = _torch_results(case, crit, arrays, np.float64)
        mine = _ours(crit, arrays)
        for ours, theirs, true in zip(mine, low, truth):
            if ours is None or theirs is None or true is None:
                continue
            true = np.asarray(true, np.float64)
            finite = np.isfinite(true)
            scale = 1e-6 * float(np.max(np.abs(true[finite]), initial=1e-30))
            denominator = np.abs(true[finite]) + scale
            ours_err.append(_error(ours, true, finite, denominator))
            torch_err.append(_error(theirs, true, finite, denominator))
    return np.concatenate(ours_err), np.concatenate(torch_err)


# Every case: the last four above torch's (BCELoss with weight, PoissonNLLLoss(log_input=False,
# full=True) and SigmoidFocalLoss with both gamma paths, by 0.5-20% at the median) came under it
# when their arithmetic after the float32 exp and logs was rounded once (one FMA for BCELoss,
# float64 for the others).
@pytest.mark.parametrize("case", cases.CASES, ids=cases.IDS)
def test_float32_error_at_most_torchs(case):
    ours, theirs = _errors(case)
    for q in (50, 99):
        a, b = np.percentile(ours, q), np.percentile(theirs, q)
        assert a <= b, f"{case[0]}: float32 error at the {q}th percentile {a:.3g} > torch's {b:.3g}"
