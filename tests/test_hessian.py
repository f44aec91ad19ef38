"""grad_hess: the exact diagonal of the hessian, against the diagonal of
torch.autograd.functional.hessian (float64) and central differences of our own gradient."""
import cases as registry
import numpy as np
import pytest
from conftest import REDUCTIONS, assert_close, torch

import fastloss as fl

F = torch.nn.functional
R = np.random.default_rng(21)
X = R.standard_normal((4, 5))
Y = R.standard_normal((4, 5))
B01 = (R.random((4, 5)) > 0.5).astype(float)
T = np.array([0, 3, 1, 4])
T_IGNORE = np.array([0, -100, 1, 4])


def cases():
    """(name, our criterion factory, torch loss of (x, reduction), target arrays)."""
    yield "mse", lambda r: fl.MSELoss(reduction=r), lambda x, r: F.mse_loss(x, _t(Y), reduction=r), [Y]
    yield "l1", lambda r: fl.L1Loss(reduction=r), lambda x, r: F.l1_loss(x, _t(Y), reduction=r), [Y]
    yield "huber", lambda r: fl.HuberLoss(delta=0.6, reduction=r), lambda x, r: F.huber_loss(x, _t(Y), delta=0.6, reduction=r), [Y]
    yield "smooth_l1", lambda r: fl.SmoothL1Loss(beta=0.7, reduction=r), lambda x, r: F.smooth_l1_loss(x, _t(Y), beta=0.7, reduction=r), [Y]
    yield "soft_margin", lambda r: fl.SoftMarginLoss(reduction=r), lambda x, r: F.soft_margin_loss(x, _t(np.sign(Y)), reduction=r), [np.sign(Y)]
    w, pw = R.uniform(0.5, 2, 5), R.uniform(0.5, 3, 5)
    yield "bce_logits", lambda r: fl.BCEWithLogitsLoss(weight=w, pos_weight=pw, reduction=r), \
        lambda x, r: F.binary_cross_entropy_with_logits(x, _t(B01), weight=_t(w), pos_weight=_t(pw), reduction=r), [B01]
    yield "poisson", lambda r: fl.PoissonNLLLoss(reduction=r), lambda x, r: F.poisson_nll_loss(x, _t(np.abs(Y) * 3), reduction=r), [np.abs(Y) * 3]
    yield "poisson_full", lambda r: fl.PoissonNLLLoss(full=True, reduction=r), \
        lambda x, r: F.poisson_nll_loss(x, _t(np.abs(Y) * 3), full=True, reduction=r), [np.abs(Y) * 3]
    var = np.abs(Y[:, :1]) + 0.3
    yield "gaussian", lambda r: fl.GaussianNLLLoss(reduction=r), lambda x, r: F.gaussian_nll_loss(x, _t(Y), _t(var), reduction=r), [Y, var]
    regression = registry.regression_reference
    for name, crit, target, options in [
            ("pinball", fl.PinballLoss, Y, {"quantile": 0.3}), ("pseudo_huber", fl.PseudoHuberLoss, Y, {"delta": 0.6}),
            ("log_cosh", fl.LogCoshLoss, Y, {}), ("tweedie", fl.TweedieLoss, np.abs(Y) * (Y > -0.3), {"power": 1.4}),
            ("gamma", fl.GammaLoss, np.abs(Y) + 0.1, {}), ("exponential", fl.ExponentialLoss, B01, {})]:
        yield name, lambda r, c=crit, o=options: c(reduction=r, **o), \
            lambda x, r, n=name, t=target, o=options: regression(n, x, _t(t), r, **o), [target]
    cw = R.uniform(0.5, 2, 5)
    yield "ce", lambda r: fl.CrossEntropyLoss(reduction=r), lambda x, r: F.cross_entropy(x, _t(T), reduction=r), [T]
    yield "ce_options", lambda r: fl.CrossEntropyLoss(weight=cw, label_smoothing=0.2, reduction=r), \
        lambda x, r: F.cross_entropy(x, _t(T_IGNORE), weight=_t(cw), label_smoothing=0.2, reduction=r), [T_IGNORE]
    probs = np.exp(Y) / np.exp(Y).sum(1, keepdims=True)
    yield "ce_probabilities", lambda r: fl.CrossEntropyLoss(reduction=r), lambda x, r: F.cross_entropy(x, _t(probs), reduction=r), [probs]
    yield "ce_z_loss", lambda r: fl.CrossEntropyLoss(z_loss=0.1, reduction=r), \
        lambda x, r: _reduce(F.cross_entropy(x, _t(T), reduction="none") + 0.1 * torch.logsumexp(x, 1) ** 2, r), [T]
    for gamma in (2.0, 0.5):
        yield f"focal{gamma}", lambda r, g=gamma: fl.SoftmaxFocalLoss(gamma=g, weight=cw, reduction=r), \
            lambda x, r, g=gamma: _focal(x, T, cw, g, r), [T]


def _t(a):
    return torch.tensor(np.asarray(a))


def _reduce(v, reduction):
    return {"none": v, "mean": v.mean(), "sum": v.sum()}[reduction]


def _focal(x, t, w, gamma, reduction):
    logp = x.log_softmax(1).gather(1, _t(t)[:, None])[:, 0]
    wt = _t(w)[_t(t)]
    loss = -wt * (1 - logp.exp()) ** gamma * logp
    return loss.sum() / wt.sum() if reduction == "mean" else _reduce(loss, reduction)


CASES = list(cases())


@pytest.mark.parametrize("name, make, torch_loss, rest", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_hessian_diagonal_matches_torch(name, make, torch_loss, rest, reduction):
    crit = make(reduction)
    go = R.standard_normal(4 if name.startswith(("ce", "focal")) else (4, 5)) if reduction == "none" else 1.3
    grad, hess = crit.grad_hess(X, *rest, grad_output=go)
    _, ref_grad = crit(X, *rest, grad_output=go)
    ref_grad = ref_grad[0] if isinstance(ref_grad, tuple) else ref_grad   # GaussianNLL: (input, var)

    def scalar(x):
        loss = torch_loss(x, reduction)
        return (loss * _t(go)).sum()
    H = torch.autograd.functional.hessian(scalar, _t(X)).reshape(X.size, X.size).diagonal().reshape(X.shape)
    assert_close(grad, ref_grad, np.float64, what="grad")
    assert_close(hess, H.numpy(), np.float64, what="hessian diagonal")
    assert grad_hess_dtype_is_the_inputs(crit, X, rest)


def grad_hess_dtype_is_the_inputs(crit, x, rest):
    g, h = crit.grad_hess(x.astype(np.float32), *rest)
    return g.dtype == h.dtype == np.float32 and h.shape == x.shape


@pytest.mark.parametrize("name, make, torch_loss, rest", CASES, ids=[c[0] for c in CASES])
def test_hessian_diagonal_matches_differences_of_the_gradient(name, make, torch_loss, rest):
    crit = make("sum")
    _, hess = crit.grad_hess(X, *rest)
    h = 1e-6
    numeric = np.empty_like(X)
    for i in np.ndindex(X.shape):
        up, down = X.copy(), X.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (_input_grad(crit(up, *rest)[1])[i] - _input_grad(crit(down, *rest)[1])[i]) / (2 * h)
    np.testing.assert_allclose(hess, numeric, rtol=1e-5, atol=1e-7)


def _input_grad(grad):
    return grad[0] if isinstance(grad, tuple) else grad


def test_k_dim_cross_entropy_hessian():
    x = R.standard_normal((2, 3, 4))
    t = R.integers(0, 3, (2, 4))
    _, hess = fl.CrossEntropyLoss().grad_hess(x, t)
    H = torch.autograd.functional.hessian(lambda z: F.cross_entropy(z, _t(t)), _t(x))
    assert_close(hess, H.reshape(x.size, x.size).diagonal().reshape(x.shape).numpy(), np.float64)


@pytest.mark.parametrize("crit, args", [
    (fl.BCELoss(), (np.full(3, 0.5), np.ones(3))),
    (fl.PoissonNLLLoss(log_input=False), (np.ones(3), np.ones(3))),
    (fl.CrossEntropyLoss(softcap=5.0), (np.ones((2, 3)), np.zeros(2, int))),
    (fl.NLLLoss(), (np.ones((2, 3)), np.zeros(2, int))),
    (fl.LinearCrossEntropyLoss(), (np.ones((2, 3)), np.ones((4, 3)), np.zeros(2, int), None)),
    (fl.TripletMarginLoss(), (np.ones((2, 3)),) * 3),
])
def test_no_hessian_is_a_clear_error(crit, args):
    with pytest.raises(NotImplementedError, match=type(crit).__name__):
        crit.grad_hess(*args)
