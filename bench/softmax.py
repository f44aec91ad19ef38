"""Benchmark cases of the softmax family, at the issue's sizes (N rows, C classes)."""
import numpy as np

import fastloss as fl

from .harness import Case, torch

if torch is not None:
    F = torch.nn.functional

SHAPES = ((64, 10), (4096, 1000), (8192, 32000), (2048, 128256))
QUICK_SHAPES = ((64, 10), (4096, 1000), (1024, 32000))


def _logits(rng, shape, ignore=False):
    N, C = shape
    t = rng.integers(0, C, N)
    if ignore:
        t[::4] = -100
    return [rng.standard_normal(shape, dtype=np.float32), t]


def np_cross_entropy(x, t):
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(t))
    loss = (np.log(s[:, 0]) + m[:, 0] - x[rows, t]).mean()
    grad = e / s
    grad[rows, t] -= 1
    return loss, grad / len(t)


def jax_cross_entropy(j, x, t):
    import jax
    lse = jax.nn.logsumexp(x, axis=1)
    return j.mean(lse - j.take_along_axis(x, t[:, None], axis=1)[:, 0])


def torch_dice_multiclass(x, t):
    N, C = x.shape[:2]
    p = x.softmax(1).reshape(N, C, -1)
    y = F.one_hot(t.reshape(N, -1), C).permute(0, 2, 1).to(p.dtype)
    inner, total = (p * y).sum((0, 2)), (p + y).sum((0, 2))
    return ((1 - 2 * inner / total.clamp_min(1e-7)) * (y.sum((0, 2)) > 0)).mean()


def sklearn_multinomial(arrays, num_threads):
    try:
        from sklearn._loss.loss import HalfMultinomialLoss
    except ImportError:
        return None
    x, t = arrays
    loss = HalfMultinomialLoss(n_classes=x.shape[1])
    y = t.astype(np.float32)
    loss_out, grad_out = np.empty(len(t), np.float32), np.empty_like(x)
    return lambda: loss.loss_gradient(y, x, loss_out=loss_out, gradient_out=grad_out, n_threads=num_threads)


def _linear(rng, shape):
    N, H, C = shape
    return [rng.standard_normal((N, H), dtype=np.float32),
            (0.02 * rng.standard_normal((C, H), dtype=np.float32)), rng.integers(0, C, N)]


LINEAR_SHAPES, LINEAR_QUICK = ((4096, 1024, 32000),), ((512, 256, 8000),)
# torch's fused linear + cross entropy (2.12 and later; older torch gives no such column)
TORCH_LINEAR_CE = getattr(F, "linear_cross_entropy", None) if torch is not None else None

CASES = [
    Case("CrossEntropyLoss", fl.CrossEntropyLoss, _logits, lambda x, t: F.cross_entropy(x, t),
         np_cross_entropy, sklearn_multinomial, bytes_per_element=8, jax=jax_cross_entropy,
         shapes=SHAPES, quick_shapes=QUICK_SHAPES),
    Case("CE label_smoothing=0.1", lambda: fl.CrossEntropyLoss(label_smoothing=0.1), _logits,
         lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1), bytes_per_element=8,
         shapes=SHAPES[1:], quick_shapes=QUICK_SHAPES[1:]),
    Case("CE ignore_index", fl.CrossEntropyLoss, lambda r, s: _logits(r, s, ignore=True),
         lambda x, t: F.cross_entropy(x, t), bytes_per_element=8,
         shapes=SHAPES[2:], quick_shapes=QUICK_SHAPES[2:]),
    Case("LinearCrossEntropyLoss", fl.LinearCrossEntropyLoss, _linear,
         TORCH_LINEAR_CE, bytes_per_element=0, differentiable=(0, 1),
         shapes=LINEAR_SHAPES, quick_shapes=LINEAR_QUICK),
    Case("LinearCE vs CE(linear)", fl.LinearCrossEntropyLoss, _linear,
         lambda x, w, t: F.cross_entropy(F.linear(x, w), t), bytes_per_element=0, differentiable=(0, 1),
         shapes=LINEAR_SHAPES, quick_shapes=LINEAR_QUICK),
    Case("MultiMarginLoss", fl.MultiMarginLoss, _logits, lambda x, t: F.multi_margin_loss(x, t),
         bytes_per_element=8, shapes=((64, 10), (4096, 1000)), quick_shapes=((64, 10), (4096, 1000))),
    Case("MultiLabelSoftMargin", fl.MultiLabelSoftMarginLoss,
         lambda r, s: [r.standard_normal(s, dtype=np.float32), (r.random(s) > 0.5).astype(np.float32)],
         lambda x, y: F.multilabel_soft_margin_loss(x, y), bytes_per_element=12,
         shapes=((64, 10), (4096, 1000)), quick_shapes=((64, 10), (4096, 1000))),
    Case("DiceLoss multiclass", lambda: fl.DiceLoss("multiclass"),
         lambda r, s: [r.standard_normal(s, dtype=np.float32), r.integers(0, s[1], (s[0],) + s[2:])],
         lambda x, t: torch_dice_multiclass(x, t), bytes_per_element=8,
         shapes=((8, 21, 256, 256),), quick_shapes=((2, 21, 128, 128),)),
    Case("NLLLoss", fl.NLLLoss, _logits, lambda x, t: F.nll_loss(x, t), bytes_per_element=4,
         shapes=SHAPES[:3], quick_shapes=QUICK_SHAPES),
]


def _rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


def peak_extra_bytes(fn):
    """Growth of the process's peak resident memory over one call of fn (Linux). fastloss's
    gradient cache is emptied first, so that its gradient counts as a fresh allocation."""
    fn()
    fl.empty_cache()
    open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM
    before = _rss()["VmRSS"]
    fn()
    return _rss()["VmHWM"] - before


def report(print_fn=print, quick=False, num_threads=None):
    """Peak extra memory of a fwd+bwd call: fastloss against torch, same process."""
    try:
        _rss()
        open("/proc/self/clear_refs", "w").close()
    except OSError:
        print_fn("(peak memory: needs Linux's /proc/self/clear_refs)")
        return
    rng = np.random.default_rng(0)
    rows = []
    ce_shape = (1024, 32000) if quick else (8192, 32000)
    x, t = _logits(rng, ce_shape)
    rows.append((f"CrossEntropyLoss {ce_shape[0]}x{ce_shape[1]}", x.nbytes, [
        ("fastloss", lambda: fl.CrossEntropyLoss()(x, t)),
        ("torch", (lambda: _torch_backward(lambda a: F.cross_entropy(a, torch.from_numpy(t)), x)) if torch else None)]))
    shape = LINEAR_QUICK[0] if quick else LINEAR_SHAPES[0]
    X, W, t2 = _linear(rng, shape)
    rows.append((f"LinearCrossEntropyLoss {'x'.join(map(str, shape))}", shape[0] * shape[2] * 4, [
        ("fastloss", lambda: fl.LinearCrossEntropyLoss()(X, W, t2)),
        ("torch linear_cross_entropy", (lambda: _torch_backward(
            lambda a, b: TORCH_LINEAR_CE(a, b, torch.from_numpy(t2)), X, W)) if TORCH_LINEAR_CE else None),
        ("torch cross_entropy(linear)", (lambda: _torch_backward(
            lambda a, b: F.cross_entropy(F.linear(a, b), torch.from_numpy(t2)), X, W)) if torch else None)]))
    print_fn("")
    print_fn("peak extra memory of one fwd+bwd call (growth of the process's peak RSS; the gradient included):")
    for label, logits_bytes, methods in rows:
        cells = [f"{name} {peak_extra_bytes(fn) / 2**20:8.1f} MiB" for name, fn in methods if fn is not None]
        print_fn(f"  {label:38s} (logits {logits_bytes / 2**20:.0f} MiB): " + ", ".join(cells))


def _torch_backward(loss_fn, *arrays):
    tensors = [torch.from_numpy(a).requires_grad_(True) for a in arrays]
    loss_fn(*tensors).backward()
