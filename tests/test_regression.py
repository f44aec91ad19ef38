"""The regression and boosting objectives (PinballLoss, PseudoHuberLoss, LogCoshLoss,
TweedieLoss, GammaLoss, ExponentialLoss) beyond the shared tables of test_pointwise.py and
test_hessian.py (torch float64 compositions, finite differences): scikit-learn's own losses,
exact values at extreme inputs, a sequence of quantiles, and the errors for bad options."""
import mpmath
import numpy as np
import pytest
from conftest import assert_close

import fastloss as fl

sk_loss = pytest.importorskip("sklearn._loss.loss")
R = np.random.default_rng(18)
N = 3000


def _targets(kind, n):
    if kind == "positive":
        return R.gamma(2.0, 1.5, n)
    if kind == "tweedie":
        return R.poisson(1.0, n) * R.uniform(0.1, 3, n)   # a third exact zeros
    if kind == "binary":
        return R.integers(0, 2, n) * 1.0
    return R.standard_normal(n)


# (ours, scikit-learn's, targets, whether scikit-learn's hessian is the exact one)
SKLEARN = [
    (fl.PinballLoss(0.2), sk_loss.PinballLoss(quantile=0.2), "real", False),
    (fl.PinballLoss(0.5), sk_loss.PinballLoss(quantile=0.5), "real", False),
    (fl.TweedieLoss(1.5), sk_loss.HalfTweedieLoss(power=1.5), "tweedie", True),
    (fl.TweedieLoss(1.2), sk_loss.HalfTweedieLoss(power=1.2), "tweedie", True),
    (fl.GammaLoss(), sk_loss.HalfGammaLoss(), "positive", True),
    (fl.ExponentialLoss(), sk_loss.ExponentialLoss(), "binary", True),
]


@pytest.mark.parametrize("ours, theirs, kind, exact_hessian", SKLEARN,
                         ids=[f"{type(s[0]).__name__}-{i}" for i, s in enumerate(SKLEARN)])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_scikit_learn(ours, theirs, kind, exact_hessian, weighted):
    """loss, gradient and gradient_hessian per sample (scikit-learn's sample weights as
    grad_output); scikit-learn's loss of these equals ours exactly (no constant terms)."""
    x = 2 * R.standard_normal(N)
    y = _targets(kind, N)
    w = R.uniform(0.5, 2, N) if weighted else None
    crit = ours._with_reduction("none")
    loss, grad = crit(x, y, grad_output=w)
    assert_close(loss * (1 if w is None else w), theirs.loss(y, x, sample_weight=w), np.float64)
    assert_close(grad, theirs.gradient(y, x, sample_weight=w), np.float64)
    sk_grad, sk_hess = theirs.gradient_hessian(y, x, sample_weight=w)
    g, h = crit.grad_hess(x, y, grad_output=w)
    assert_close(g, sk_grad, np.float64)
    if exact_hessian:
        assert_close(h, sk_hess, np.float64)
    else:   # scikit-learn's pinball hessian is the boosters' constant; ours the exact 0
        np.testing.assert_array_equal(h, 0.0)
        np.testing.assert_array_equal(sk_hess, 1.0 if w is None else w)
    # the mean is scikit-learn's __call__ (the weighted average when weighted)
    total = np.sum(loss * (1 if w is None else w)) / (N if w is None else np.sum(w))
    assert total == pytest.approx(theirs(y, x, sample_weight=w), rel=1e-12)


def test_exponential_link_has_scikit_learns_factor_two():
    """The probability an ExponentialLoss score stands for is sigmoid(2 x): scikit-learn's link."""
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(sk_loss.ExponentialLoss().link.inverse(x), 1 / (1 + np.exp(-2 * x)), rtol=1e-15)
    # and the loss of labels {0, 1} is exp(-s x), s = 2 y - 1
    y = np.array([0.0, 1.0] * 6 + [1.0])
    np.testing.assert_allclose(fl.ExponentialLoss(reduction="none").loss(x, y), np.exp(-(2 * y - 1) * x), rtol=1e-15)


# ---------------------------------------------------------------- extreme inputs
mpmath.mp.dps = 50
EXTREME_X = [-1e4, -1500.0, -1000.0, -750.0, -100.0, -1.0, 0.0, 1e-300, 1.0, 100.0, 750.0, 1000.0, 1500.0, 1e4]
EXTREME_Y = {"tweedie": [0.0, 1e-300, 1e-10, 1.0, 1e10, 1e300], "gamma": [1e-300, 1e-10, 1.0, 1e300],
             "exponential": [0.0, 0.25, 1.0]}


def _exact(name, x, y, p=1.5):
    """(loss, gradient, hessian) in 50 digits, as float64 (inf where they overflow)."""
    x, y = mpmath.mpf(x), mpmath.mpf(y)
    e = mpmath.exp
    if name == "tweedie":
        a, b = y * e((1 - p) * x), e((2 - p) * x)
        values = (a / (p - 1) + b / (2 - p), b - a, (2 - p) * b + (p - 1) * a)
    elif name == "gamma":
        values = (x + y * e(-x), 1 - y * e(-x), y * e(-x))
    else:
        loss = y * e(-x) + (1 - y) * e(x)
        values = (loss, (1 - y) * e(x) - y * e(-x), loss)
    return [float(v) if abs(v) < mpmath.mpf(np.finfo(np.float64).max) else float(mpmath.sign(v)) * np.inf
            for v in values]


@pytest.mark.parametrize("name, crit", [("tweedie", fl.TweedieLoss()), ("gamma", fl.GammaLoss()),
                                        ("exponential", fl.ExponentialLoss())])
def test_log_link_losses_are_exact_at_extreme_inputs(name, crit):
    """|x| up to 1e4: finite (and right) wherever the true value is finite in float64 (a zero
    target's term is 0, not 0 * inf; y e^z stays finite past e^z's overflow), inf where it is not."""
    xs, ys = np.meshgrid(EXTREME_X, EXTREME_Y[name])
    x, y = xs.ravel(), ys.ravel()
    crit = crit._with_reduction("none")
    loss, grad = crit(x, y)
    _, hess = crit.grad_hess(x, y)
    exact = np.array([_exact(name, a, b) for a, b in zip(x, y)])
    for ours, true, what in zip((loss, grad, hess), exact.T, ("loss", "gradient", "hessian")):
        np.testing.assert_array_equal(np.isinf(ours), np.isinf(true), err_msg=f"{name} {what}: overflow")
        assert not np.isnan(ours).any(), f"{name} {what}: NaN"
        finite = np.isfinite(true)
        np.testing.assert_allclose(ours[finite], true[finite], rtol=1e-11, atol=1e-300, err_msg=f"{name} {what}")
    # float32 data: within 2e-7 of the float64 result (finite wherever it fits in float32)
    fits = (y.astype(np.float32) > 0) | (y == 0)   # targets that stay finite and non-zero in float32
    fits &= np.isfinite(y.astype(np.float32))
    x, y = x[fits], y[fits]
    loss32, grad32 = crit(x.astype(np.float32), y.astype(np.float32))
    x32, y32 = x.astype(np.float32).astype(float), y.astype(np.float32).astype(float)
    with np.errstate(over="ignore"):
        exact32 = np.array([_exact(name, a, b) for a, b in zip(x32, y32)]).astype(np.float32)
    np.testing.assert_array_equal(np.isinf(loss32), np.isinf(exact32[:, 0]))
    finite = np.isfinite(exact32[:, 0])
    np.testing.assert_allclose(loss32[finite], exact32[finite, 0], rtol=2e-7, atol=1e-44)


# float32 inputs where e^+-x alone over- or underflows float32 but the term y e^-x (or
# (1 - y) e^x) does not, and targets from the smallest subnormal to the largest float
EXTREME_X32 = [-190.5, -176.25, -120.5, -89.125, -88.5, -87.25, -20.5, -1.5, 0.0, 1.5, 20.5, 87.25, 88.5, 89.125,
               103.5, 110.25, 150.5, 176.25, 190.5]
EXTREME_Y32 = {"gamma": [1e-45, 1e-40, 1e-30, 1e-10, 0.25, 1.0, 3.0, 1e30, 3e38],
               "exponential": [0.0, 1e-45, 1e-30, 0.25, 0.5, 1 - 2.0 ** -24, 1.0]}


@pytest.mark.parametrize("name, crit", [("gamma", fl.GammaLoss()), ("exponential", fl.ExponentialLoss())])
def test_log_link_losses_in_float32(name, crit):
    """GammaLoss and ExponentialLoss compute float32 data in float32 (simd_math.h's
    fl_times_expf): each term within 1 ulp, so the loss, gradient and hessian are within 3e-7 of
    the sum of their terms' sizes (|x| + y e^-x for Gamma's loss, 1 + y e^-x for its gradient,
    the loss itself for Exponential's); inf exactly where the true value rounds to inf."""
    xs, ys = np.meshgrid(EXTREME_X32, EXTREME_Y32[name])
    x, y = xs.ravel().astype(np.float32), ys.ravel().astype(np.float32)
    crit = crit._with_reduction("none")
    loss, grad = crit(x, y)
    _, hess = crit.grad_hess(x, y)
    assert loss.dtype == grad.dtype == hess.dtype == np.float32
    big = mpmath.mpf(float(np.finfo(np.float32).max))
    for i, (a, b) in enumerate(zip(x.astype(float), y.astype(float))):
        a, b = mpmath.mpf(a), mpmath.mpf(b)
        if name == "gamma":
            t = b * mpmath.exp(-a)
            values, sizes = (a + t, 1 - t, t), (abs(a) + t, 1 + t, t)
        else:
            far, near = (1 - b) * mpmath.exp(a), b * mpmath.exp(-a)
            values, sizes = (far + near, far - near, far + near), (far + near,) * 3
        for ours, true, size, what in zip((loss[i], grad[i], hess[i]), values, sizes, ("loss", "gradient", "hessian")):
            where = f"{name} {what} at x={x[i]!r}, y={y[i]!r}: {ours!r} against {mpmath.nstr(true, 9)}"
            if abs(true) > big:   # (no grid point lies within a few ulp of the largest float)
                assert np.isinf(ours) and np.sign(ours) == mpmath.sign(true), where
            else:
                assert abs(mpmath.mpf(float(ours)) - true) <= 3e-7 * size + mpmath.mpf(2) ** -149, where


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pseudo_huber_and_log_cosh_never_overflow(dtype):
    """Residuals up to the dtype's largest and inf: the loss is finite where it is (no r^2, no
    cosh), the gradient finite at inf too (delta sgn r, sgn r)."""
    big = float(np.finfo(dtype).max)
    r = np.array([-np.inf, -big, -1e30, -1e19, -5.0, -1e-20, 0.0, 1e-20, 5.0, 1e19, 1e30, big, np.inf], dtype)
    zero = np.zeros_like(r)
    delta = 2.0
    loss, grad = fl.PseudoHuberLoss(delta, reduction="none")(r, zero)
    _, hess = fl.PseudoHuberLoss(delta, reduction="none").grad_hess(r, zero)
    rr = [mpmath.mpf(float(v)) for v in r[1:-1]]
    true = [delta ** 2 * (mpmath.sqrt(1 + (v / delta) ** 2) - 1) for v in rr]
    fits = [abs(t) < np.finfo(dtype).max for t in true]
    np.testing.assert_array_equal(np.isfinite(loss[1:-1]), fits)
    tiny = 2 * float(np.finfo(dtype).smallest_subnormal)
    np.testing.assert_allclose(loss[1:-1][fits], [float(t) for t, f in zip(true, fits) if f], rtol=4e-7, atol=tiny)
    assert np.isinf(loss[[0, -1]]).all()
    np.testing.assert_allclose(grad[[0, -1]], [-delta, delta])
    np.testing.assert_allclose(grad[1:-1], [float(v / mpmath.sqrt(1 + (v / delta) ** 2)) for v in rr],
                               rtol=4e-7, atol=tiny)
    assert np.all(np.isfinite(hess)) and np.all(hess >= 0)
    loss, grad = fl.LogCoshLoss(reduction="none")(r, zero)
    true = [mpmath.log(mpmath.cosh(v)) for v in rr]
    fits = [abs(t) < np.finfo(dtype).max for t in true]
    np.testing.assert_allclose(loss[1:-1][fits], [float(t) for t, f in zip(true, fits) if f], rtol=4e-7, atol=tiny)
    assert np.isinf(loss[[0, -1]]).all()
    np.testing.assert_array_equal(grad[[0, 1, -2, -1]], [-1, -1, 1, 1])


@pytest.mark.parametrize("dtype, ulps", [(np.float64, 8), (np.float32, 8)])
def test_log_cosh_is_exact_near_zero(dtype, ulps):
    """log cosh r = r^2 / 2 - r^4 / 12 ... : to a few ulp from 1e-30 to 10 (where
    log(cosh(r)) loses every digit below 1e-8 in float64)."""
    r = np.concatenate([10.0 ** R.uniform(-30, 1, 400), -(10.0 ** R.uniform(-30, 1, 100))]).astype(dtype)
    loss, grad = fl.LogCoshLoss(reduction="none")(r, np.zeros_like(r))
    _, hess = fl.LogCoshLoss(reduction="none").grad_hess(r, np.zeros_like(r))
    with mpmath.workdps(120):
        rr = [mpmath.mpf(float(v)) for v in r]
        true = np.array([[float(mpmath.log(mpmath.cosh(v))), float(mpmath.tanh(v)), float(1 / mpmath.cosh(v) ** 2)]
                         for v in rr])
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    for ours, t, what in zip((loss, grad, hess), true.T, ("loss", "gradient", "hessian")):
        t = t.astype(dtype).astype(np.float64)   # the truth in the dtype (r^2 / 2 underflows below ~1e-19 in float32)
        err = np.abs(ours - t) / np.maximum(np.abs(t), tiny) / eps
        assert err.max() <= ulps, f"{what}: {err.max():.1f} ulp at r = {r[np.argmax(err)]!r}"


# ---------------------------------------------------------------- a sequence of quantiles
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantile_sequence_is_one_pinball_per_column(reduction, dtype):
    qs = [0.05, 0.5, 0.9]
    x = R.standard_normal((500, 3)).astype(dtype)
    y = R.standard_normal(500).astype(dtype)
    crit = fl.QuantileLoss(qs, reduction=reduction)
    loss, grad = crit(x, y)
    # the target per row, as (N,), (N, 1) or (N, Q): the same
    for target in (y[:, None], np.repeat(y[:, None], 3, 1)):
        same_loss, same_grad = crit(x, target)
        np.testing.assert_array_equal(same_loss, loss)
        np.testing.assert_array_equal(same_grad, grad)
    _, hess = crit.grad_hess(x, y)
    np.testing.assert_array_equal(hess, 0)
    columns = [fl.PinballLoss(q, reduction="none")(np.ascontiguousarray(x[:, j]), y) for j, q in enumerate(qs)]
    ref_loss = np.stack([c.loss for c in columns], 1)
    ref_grad = np.stack([c.grad for c in columns], 1)
    scale = {"none": 1, "mean": 1 / x.size, "sum": 1}[reduction]
    np.testing.assert_allclose(grad, (ref_grad * scale).astype(dtype), rtol=1e-6)
    if reduction == "none":
        np.testing.assert_array_equal(loss, ref_loss)
    else:
        assert float(loss) == pytest.approx(float(ref_loss.astype(np.float64).sum()) * scale, rel=1e-6)


def test_quantile_sequence_against_scikit_learn():
    qs = [0.1, 0.3, 0.7]
    x = R.standard_normal((200, 3))
    y = R.standard_normal(200)
    loss, grad = fl.QuantileLoss(qs, reduction="none")(x, y)
    for j, q in enumerate(qs):
        theirs = sk_loss.PinballLoss(quantile=q)
        np.testing.assert_allclose(loss[:, j], theirs.loss(y, np.ascontiguousarray(x[:, j])), rtol=1e-15)
        np.testing.assert_allclose(grad[:, j], theirs.gradient(y, np.ascontiguousarray(x[:, j])), rtol=1e-15)


def test_pinball_gradient_at_a_tie_is_scikit_learns():
    x = np.array([1.0, 2.0, 3.0])
    _, grad = fl.PinballLoss(0.3, reduction="none")(x, x)
    np.testing.assert_array_equal(grad, sk_loss.PinballLoss(quantile=0.3).gradient(x, x))   # -q
    np.testing.assert_array_equal(grad, -0.3)


# ---------------------------------------------------------------- streaming and functional forms
@pytest.mark.parametrize("crit, kind", [(fl.TweedieLoss(1.4), "tweedie"), (fl.GammaLoss(), "positive"),
                                        (fl.ExponentialLoss(), "binary"), (fl.PseudoHuberLoss(0.5), "real"),
                                        (fl.LogCoshLoss(), "real"), (fl.PinballLoss(0.8), "real")])
def test_evaluate_in_chunks_equals_one_call(crit, kind):
    x = R.standard_normal((3000, 4))
    y = _targets(kind, x.size).reshape(x.shape)
    whole, grad = crit(x, y)
    result = fl.evaluate(crit, x, y, chunk_rows=333, grad_out=np.empty_like(x))
    assert result.loss == whole
    assert float(crit.loss(x, y)) == whole
    name = {fl.TweedieLoss: "tweedie_loss", fl.GammaLoss: "gamma_loss", fl.ExponentialLoss: "exponential_loss",
            fl.PseudoHuberLoss: "pseudo_huber_loss", fl.LogCoshLoss: "log_cosh_loss",
            fl.PinballLoss: "pinball_loss"}[type(crit)]
    options = {k: getattr(crit, k) for k in ("power", "delta", "quantile") if hasattr(crit, k)}
    assert getattr(fl.functional, name)(x, y, **options) == whole
    np.testing.assert_array_equal(getattr(fl.functional, name + "_and_grad")(x, y, **options).grad, grad)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("make, message", [
    (lambda: fl.PinballLoss(0.0), "quantile: expected values in the open interval (0, 1), got 0.0"),
    (lambda: fl.PinballLoss(1.5), "quantile: expected values in the open interval (0, 1), got 1.5"),
    (lambda: fl.PinballLoss([0.2, 1.0]), "quantile: expected values in the open interval (0, 1), got [0.2, 1.0]"),
    (lambda: fl.PinballLoss([]), "quantile: expected a number or a non-empty sequence of numbers, got []"),
    (lambda: fl.PinballLoss("0.5"), "quantile: expected a real number, got '0.5'"),
    (lambda: fl.TweedieLoss(power=1.0), "power: expected a number in the open interval (1, 2), got 1.0"),
    (lambda: fl.TweedieLoss(power=2.0), "power: expected a number in the open interval (1, 2), got 2.0"),
    (lambda: fl.TweedieLoss(power=np.nan), "power: expected a number in the open interval (1, 2), got nan"),
    (lambda: fl.PseudoHuberLoss(delta=0.0), "delta: expected a positive number, got 0.0"),
    (lambda: fl.PseudoHuberLoss(delta=-1.0), "delta: expected a positive number, got -1.0"),
])
def test_bad_options_are_clear_errors(make, message):
    with pytest.raises((ValueError, TypeError)) as err:
        make()
    assert str(err.value) == message


@pytest.mark.parametrize("crit, target, message", [
    (fl.TweedieLoss(), [1.0, -0.5, 2.0], "target: expected non-negative values (TweedieLoss), got -0.5 at position (1,)"),
    (fl.GammaLoss(), [1.0, 2.0, 0.0], "target: expected positive values (GammaLoss), got 0.0 at position (2,)"),
    (fl.GammaLoss(), [-3.0, 2.0, 1.0], "target: expected positive values (GammaLoss), got -3.0 at position (0,)"),
    (fl.ExponentialLoss(), [0.0, 1.0, 2.0], "target: expected values in [0, 1] (ExponentialLoss), got 2.0 at position (2,)"),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_targets_out_of_range_are_clear_errors(crit, target, message, dtype):
    x = np.zeros(3, dtype)
    for call in (lambda: crit(x, np.array(target)), lambda: crit.loss(x, np.array(target, dtype)),
                 lambda: crit.grad_hess(x, np.array(target))):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == message


def test_nan_targets_propagate_rather_than_fail():
    loss = fl.GammaLoss(reduction="none").loss(np.zeros(2), np.array([np.nan, 1.0]))
    assert np.isnan(loss[0]) and loss[1] == 1.0


def test_quantile_sequence_needs_one_column_per_quantile():
    crit = fl.QuantileLoss([0.1, 0.9])
    with pytest.raises(ValueError, match=r"input: expected a last dimension of 2 \(one column per quantile\), "
                                         r"got shape \(4, 3\)"):
        crit(np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="input: expected a last dimension of 2"):
        crit(np.zeros(()), np.zeros(()))
