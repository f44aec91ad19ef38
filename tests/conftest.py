"""Shared test machinery: the torch float64 oracle, tolerances and finite differences.

torch is the independent oracle: every case is evaluated by torch in float64 with autograd,
on exactly the values fastloss saw (float32 data is widened, not regenerated).
"""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is the test oracle: pip install -e '.[test]'")
torch.set_num_threads(1)



@contextlib.contextmanager
def parallel(n):
    """fl.threads(n) where every call with the blocks for it runs on n threads: the cost
    model's price of a thread set to 0 (small test inputs would otherwise run on the caller)
    and the cap at the usable cores lifted (n threads even on a 2-core machine)."""
    import fastloss as fl
    from fastloss import _threads
    from fastloss._kernels import pool
    cores, price = _threads._cores[0], pool.get_work_per_thread()
    _threads._cores[0] = max(n, _threads.usable_cores())
    pool.set_work_per_thread(0)
    try:
        with fl.threads(n):
            yield
    finally:
        _threads._cores[0] = cores
        pool.set_work_per_thread(price)


REDUCTIONS = ("none", "mean", "sum")
DTYPES = (np.float32, np.float64)


def torch_oracle(torch_loss, arrays, differentiable, reduction, grad_output=None):
    """Loss and gradients (for the positions in `differentiable`) from torch in float64.
    For 'none' the gradient is that of sum(loss * grad_output)."""
    tensors = []
    for i, arr in enumerate(arrays):
        t = torch.tensor(np.asarray(arr, dtype=np.float64))
        if i in differentiable:
            t.requires_grad_(True)
        tensors.append(t)
    loss = torch_loss(*tensors, reduction=reduction)
    if grad_output is None:
        grad_output = np.ones(loss.shape)
    loss.backward(torch.tensor(np.asarray(grad_output, dtype=np.float64)).expand(loss.shape))
    grads = [tensors[i].grad.numpy() if tensors[i].grad is not None else np.zeros(tensors[i].shape)
             for i in differentiable]
    return loss.detach().numpy(), grads


def assert_close(ours, reference, dtype, scale=None, what="value"):
    """float64: rtol 1e-10; float32: rtol 1e-5 and atol 1e-6 of the data's scale."""
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != {reference.shape}"
    if scale is None:
        scale = float(np.max(np.abs(reference[np.isfinite(reference)]), initial=1.0))
    if dtype == np.float64:
        rtol, atol = 1e-10, 1e-12 * scale
    else:
        rtol, atol = 1e-5, 1e-6 * scale
    np.testing.assert_allclose(ours, reference, rtol=rtol, atol=atol, err_msg=what, equal_nan=True)


def central_differences(f, arrays, index, h=1e-6):
    """d f / d arrays[index] by central differences, f returning a float."""
    base = [np.array(a, dtype=np.float64, copy=True) for a in arrays]
    x = base[index]
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f(*base)
        flat[i] = old - h
        down = f(*base)
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def fastloss_env():
    """The environment for a subprocess that must import the fastloss these tests import (an
    installed one, or a checkout built in place)."""
    import fastloss
    return dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastloss.__file__)))


def run_cli(*args, cwd):
    """`fastloss eval ARGS` in a subprocess (the fastloss under test), in the folder cwd."""
    return subprocess.run([sys.executable, "-m", "fastloss.cli", "eval", *args], capture_output=True,
                          text=True, cwd=cwd, env=fastloss_env())


def prediction_files(folder, seed, rows=3000, classes=20):
    """p.npy (float32 logits) and t.npy (int64 labels) in folder; returns (logits, labels)."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((rows, classes)).astype(np.float32)
    t = r.integers(0, classes, rows)
    np.save(folder / "p.npy", x)
    np.save(folder / "t.npy", t)
    return x, t


def registry_parity(case, reduction, dtype):
    """A case of tests/cases.py against its torch float64 reference: the loss and every
    gradient, with a random grad_output for 'none' (the gradient of sum(loss * g))."""
    import cases
    crit, arrays, _ = cases.build(case, reduction, dtype)
    rng = np.random.default_rng(5)
    tensors = []
    for name, a in zip(crit.arguments, arrays):
        if isinstance(a, np.ndarray):
            t = torch.tensor(a.astype(np.float64) if a.dtype.kind == "f" else a.astype(np.int64))
            if name in crit.differentiable and a.dtype.kind == "f":
                t.requires_grad_(True)
            a = t
        tensors.append(a)
    ref = cases.oracle(case[0])(*tensors, reduction=reduction)
    grad_output = rng.uniform(0.5, 1.5, tuple(ref.shape)) if reduction == "none" else None
    ref.backward(torch.ones(()) if grad_output is None else torch.tensor(grad_output))
    loss, grads = crit(*arrays, grad_output=grad_output)
    assert_close(loss, ref.detach().numpy(), dtype, what=f"{case[0]} loss")
    grads = grads if isinstance(grads, tuple) else (grads,)
    for name, g in zip(crit.differentiable, grads):
        t = tensors[crit.arguments.index(name)]
        if g is None or not isinstance(t, torch.Tensor):
            continue
        expected = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        assert_close(g, expected, dtype, what=f"{case[0]} d/d {name}")
