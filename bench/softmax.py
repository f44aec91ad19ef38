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


CASES = [
    Case("CrossEntropyLoss", fl.CrossEntropyLoss, _logits, lambda x, t: F.cross_entropy(x, t),
         np_cross_entropy, sklearn_multinomial, bytes_per_element=8, jax=jax_cross_entropy,
         shapes=SHAPES, quick_shapes=QUICK_SHAPES),
    Case("CE label_smoothing=0.1", lambda: fl.CrossEntropyLoss(label_smoothing=0.1), _logits,
         lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1), bytes_per_element=8,
         shapes=SHAPES[2:], quick_shapes=QUICK_SHAPES[2:]),
    Case("CE ignore_index", fl.CrossEntropyLoss, lambda r, s: _logits(r, s, ignore=True),
         lambda x, t: F.cross_entropy(x, t), bytes_per_element=8,
         shapes=SHAPES[2:], quick_shapes=QUICK_SHAPES[2:]),
    Case("NLLLoss", fl.NLLLoss, _logits, lambda x, t: F.nll_loss(x, t), bytes_per_element=4,
         shapes=SHAPES[:3], quick_shapes=QUICK_SHAPES),
]
