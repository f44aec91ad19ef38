"""The torch and JAX adapters: gradcheck for every criterion, training against torch's own
criterion, and jax.grad against JAX's autodiff of the same formula."""
import numpy as np
import pytest
from conftest import torch

import fastloss as fl

F = torch.nn.functional
ft = pytest.importorskip("fastloss.torch")
pytestmark = pytest.mark.commands   # Python over the kernels (see pyproject.toml's markers)


def _t(a, grad=False):
    t = torch.tensor(np.asarray(a))
    return t.requires_grad_(True) if grad else t


def criterion_cases():
    """(criterion, inputs as float64 numpy arrays / ints, positions that require grad)."""
    r = np.random.default_rng(0)
    x, y = r.standard_normal((3, 4)), r.standard_normal((3, 4))
    p = r.uniform(0.05, 0.95, (3, 4))
    b01 = (r.random((3, 4)) > 0.5).astype(float)
    t = r.integers(0, 4, 3)
    emb = [r.standard_normal((3, 5)) for _ in range(3)]
    lp = torch.tensor(r.standard_normal((12, 2, 5))).log_softmax(-1).numpy()
    yield fl.L1Loss(), [x, y], (0,)
    yield fl.MSELoss(reduction="none"), [x, y], (0,)
    yield fl.SmoothL1Loss(beta=0.5), [x, y], (0,)
    yield fl.HuberLoss(delta=0.7, reduction="sum"), [x, y], (0,)
    yield fl.SoftMarginLoss(), [x, np.sign(y)], (0,)
    yield fl.BCELoss(), [p, b01], (0,)
    yield fl.BCEWithLogitsLoss(pos_weight=np.full(4, 2.0)), [x, b01], (0,)
    yield fl.PoissonNLLLoss(), [x, np.abs(y)], (0,)
    yield fl.GaussianNLLLoss(reduction="none"), [x, y, np.abs(y[:, :1]) + 0.5], (0, 2)
    yield fl.KLDivLoss(reduction="batchmean"), [np.log(p), p], (0,)
    yield fl.HingeEmbeddingLoss(), [np.abs(x), np.sign(y)], (0,)
    yield fl.MarginRankingLoss(margin=0.1), [x[0], y[0], np.sign(x[1])], (0, 1)
    yield fl.SigmoidFocalLoss(), [x, b01], (0,)
    yield fl.CrossEntropyLoss(label_smoothing=0.1), [x, t], (0,)
    yield fl.CrossEntropyLoss(reduction="none", z_loss=0.01), [x, t], (0,)
    yield fl.NLLLoss(), [x, t], (0,)
    yield fl.SoftmaxFocalLoss(), [x, t], (0,)
    yield fl.MultiMarginLoss(), [x, t], (0,)
    yield fl.MultiLabelMarginLoss(), [x, np.array([[1, 2, -1, 0], [3, -1, 0, 0], [0, 1, 2, 3]])], (0,)
    yield fl.MultiLabelSoftMarginLoss(), [x, b01], (0,)
    yield fl.DiceLoss("multiclass"), [r.standard_normal((2, 3, 4)), r.integers(0, 3, (2, 4))], (0,)
    yield fl.LinearCrossEntropyLoss(), [emb[0], r.standard_normal((4, 5)), t, r.standard_normal(4)], (0, 1, 3)
    yield fl.TripletMarginLoss(swap=True), emb, (0, 1, 2)
    yield fl.TripletMarginWithDistanceLoss(distance_function="cosine", margin=0.5), emb, (0, 1, 2)
    yield fl.CosineEmbeddingLoss(margin=0.1), [emb[0], emb[1], np.array([1, -1, 1])], (0, 1)
    yield fl.ContrastiveLoss(margin=3.0), [emb[0], emb[1], np.array([1, 0, 0])], (0, 1)
    yield fl.NTXentLoss(0.5), [emb[0], emb[1]], (0, 1)
    yield fl.CTCLoss(reduction="none"), [lp, np.array([[1, 2, 2], [3, 1, 4]]), np.array([12, 10]), np.array([3, 2])], (0,)


CASES = list(criterion_cases())


@pytest.mark.parametrize("crit, arrays, positions", CASES, ids=[repr(c[0]) for c in CASES])
def test_torch_wrapper_passes_gradcheck(crit, arrays, positions):
    module = ft.wrap(crit)
    tensors = [_t(a, i in positions and a.dtype.kind == "f") for i, a in enumerate(arrays)]
    if isinstance(crit, fl.CTCLoss):   # torch's reported CTC gradient is the logits' one:
        logits = _t(np.random.default_rng(1).standard_normal(arrays[0].shape), True)
        assert torch.autograd.gradcheck(lambda z, *rest: module(z.log_softmax(-1), *rest).sum(),
                                        [logits] + tensors[1:])
        return
    assert torch.autograd.gradcheck(lambda *ts: module(*ts), tensors)


def test_torch_wrapper_values_and_no_copy_of_the_gradient():
    crit = fl.CrossEntropyLoss()
    x = torch.randn(64, 10, dtype=torch.float32, requires_grad=True)
    t = torch.randint(0, 10, (64,))
    loss = ft.wrap(crit)(x, t)
    ref = F.cross_entropy(x, t)
    assert loss.dtype == torch.float32 and abs(loss.item() - ref.item()) < 1e-6
    (loss * 3).backward()
    x2 = x.detach().clone().requires_grad_(True)
    (F.cross_entropy(x2, t) * 3).backward()
    torch.testing.assert_close(x.grad, x2.grad)
    # no input requires grad: forward only
    assert ft.wrap(crit)(x.detach(), t).requires_grad is False


def test_torch_wrapper_trains_an_mlp_like_torch():
    def train(criterion):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 5)).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        g = torch.Generator().manual_seed(1)
        X = torch.randn(256, 8, generator=g, dtype=torch.float64)
        y = (X[:, :5].argmax(1) + (X[:, 5] > 1).long()) % 5
        curve = []
        for _ in range(40):
            opt.zero_grad()
            loss = criterion(model(X), y)
            loss.backward()
            opt.step()
            curve.append(loss.item())
        return np.array(curve)
    ours = train(ft.wrap(fl.CrossEntropyLoss(label_smoothing=0.05)))
    theirs = train(torch.nn.CrossEntropyLoss(label_smoothing=0.05))
    assert ours[-1] < 0.6 * ours[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)


jax = pytest.importorskip("jax")
jnp = jax.numpy
fj = pytest.importorskip("fastloss.jax")
jax.config.update("jax_enable_x64", True)


def jax_cases():
    """(criterion, the same loss written in JAX, arrays, differentiable positions)."""
    r = np.random.default_rng(2)
    x, y = r.standard_normal((6, 5)), r.standard_normal((6, 5))
    b01 = (r.random((6, 5)) > 0.5).astype(float)
    t = r.integers(0, 5, 6)
    a, p, n = (r.standard_normal((6, 4)) for _ in range(3))

    def huber(x, y, delta=0.7):
        d = jnp.abs(x - y)
        return jnp.mean(jnp.where(d < delta, 0.5 * d ** 2, delta * (d - 0.5 * delta)))

    def bce_logits(x, y):
        return jnp.mean(jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x))))

    def cross_entropy(x, t, eps=0.1):
        logp = jax.nn.log_softmax(x, axis=1)
        return jnp.mean(-(1 - eps) * jnp.take_along_axis(logp, t[:, None], 1)[:, 0] - eps * logp.mean(1))

    def triplet(a, p, n, margin=1.0):
        def d(u, v):
            return jnp.linalg.norm(u - v + 1e-6, axis=1)

        return jnp.mean(jnp.maximum(margin + d(a, p) - d(a, n), 0))

    yield fl.MSELoss(reduction="sum"), lambda x, y: jnp.sum((x - y) ** 2), [x, y], (0,)
    yield fl.HuberLoss(delta=0.7), huber, [x, y], (0,)
    yield fl.BCEWithLogitsLoss(), bce_logits, [x, b01], (0,)
    yield fl.CrossEntropyLoss(label_smoothing=0.1), cross_entropy, [x, t], (0,)
    yield fl.TripletMarginLoss(), triplet, [a, p, n], (0, 1, 2)


JAX_CASES = list(jax_cases())


@pytest.mark.parametrize("crit, formula, arrays, positions", JAX_CASES, ids=[repr(c[0]) for c in JAX_CASES])
def test_jax_grad_equals_jax_autodiff(crit, formula, arrays, positions):
    ours = fj.wrap(crit)
    args = [jnp.asarray(v) for v in arrays]
    value = jax.jit(ours)(*args)
    np.testing.assert_allclose(value, formula(*args), rtol=1e-10)
    for i in positions:
        g_ours = jax.jit(jax.grad(ours, argnums=i))(*args)
        g_ref = jax.grad(formula, argnums=i)(*args)
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-9, atol=1e-12)


def test_jax_vjp_with_reduction_none():
    r = np.random.default_rng(3)
    x, y, g = (jnp.asarray(r.standard_normal((4, 3))) for _ in range(3))
    ours = fj.wrap(fl.SmoothL1Loss(reduction="none", beta=0.5))
    value, vjp = jax.vjp(lambda x: ours(x, y), x)
    ref_value, ref_vjp = jax.vjp(lambda x: jnp.where(jnp.abs(x - y) < 0.5, 0.5 * (x - y) ** 2 / 0.5,
                                                     jnp.abs(x - y) - 0.25), x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(vjp(g)[0], ref_vjp(g)[0], rtol=1e-12)


def test_import_fastloss_imports_neither_torch_nor_jax(tmp_path):
    import os
    import subprocess
    import sys
    code = "import sys, fastloss; print('torch' in sys.modules, 'jax' in sys.modules)"
    # the fastloss these tests import (installed, or built in place), from a neutral directory
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fl.__file__)))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.stdout.split() == ["False", "False"], run.stderr
