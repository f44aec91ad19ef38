"""The pointwise family against torch float64: one table of cases drives parity (every loss,
option, reduction, dtype and shape), finite differences on our own float64 gradients, and
random broadcast shapes."""
import itertools
from dataclasses import dataclass, field

import cases
import numpy as np
import pytest
from conftest import (
    DTYPES,
    REDUCTIONS,
    assert_close,
    central_differences,
    parallel,
    registry_parity,
    torch,
    torch_oracle,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import fastloss as fl

F = torch.nn.functional

SHAPES = [(), (1,), (7,), (4, 5), (2, 3, 4), (0,), (0, 4), (70, 1031)]


def normal(rng, shape):
    return rng.standard_normal(shape)


def signs(rng, shape):
    return rng.choice([-1.0, 1.0], size=shape)


torchvision_sigmoid_focal = cases.sigmoid_focal_reference
regression = cases.regression_reference


def option_array(kind, shape, rng):
    """Array-valued options, described by how they broadcast against the input's shape."""
    if kind == "full":
        return rng.uniform(0.5, 2.0, shape)
    if kind == "last":
        return rng.uniform(0.5, 2.0, shape[-1:])
    raise ValueError(kind)


@dataclass
class Case:
    name: str
    criterion: type
    oracle: object                 # (tensors..., reduction, **options) -> torch loss
    data: object                   # (rng, shape) -> arrays for the call, float64
    options: list = field(default_factory=lambda: [{}])
    differentiable: tuple = (0,)
    reductions: tuple = REDUCTIONS
    array_options: tuple = ()      # option names whose values are built by option_array
    # (arrays, options, position) -> mask of the elements where the loss is differentiable as
    # torch defines the gradient (None: all of them)
    smooth_where: object = None


def two(x_fn, y_fn):
    return lambda rng, shape: [x_fn(rng, shape), y_fn(rng, shape)]


CASES = [
    Case("l1", fl.L1Loss, lambda x, y, reduction: F.l1_loss(x, y, reduction=reduction), two(normal, normal)),
    Case("mse", fl.MSELoss, lambda x, y, reduction: F.mse_loss(x, y, reduction=reduction), two(normal, normal)),
    Case("smooth_l1", fl.SmoothL1Loss,
         lambda x, y, reduction, beta: F.smooth_l1_loss(x, y, reduction=reduction, beta=beta),
         two(normal, normal), [{"beta": 1.0}, {"beta": 0.5}, {"beta": 0.0}]),
    Case("huber", fl.HuberLoss,
         lambda x, y, reduction, delta: F.huber_loss(x, y, reduction=reduction, delta=delta),
         two(normal, normal), [{"delta": 1.0}, {"delta": 0.3}]),
    Case("soft_margin", fl.SoftMarginLoss,
         lambda x, y, reduction: F.soft_margin_loss(x, y, reduction=reduction), two(normal, signs)),
    Case("bce", fl.BCELoss,
         lambda x, y, reduction, weight=None: F.binary_cross_entropy(x, y, weight=weight, reduction=reduction),
         two(lambda r, s: r.uniform(0.02, 0.98, s), lambda r, s: r.uniform(0, 1, s)),
         [{}, {"weight": "full"}, {"weight": "last"}], array_options=("weight",)),
    Case("bce_with_logits", fl.BCEWithLogitsLoss,
         lambda x, y, reduction, weight=None, pos_weight=None: F.binary_cross_entropy_with_logits(
             x, y, weight=weight, pos_weight=pos_weight, reduction=reduction),
         two(lambda r, s: 3 * r.standard_normal(s), lambda r, s: r.integers(0, 2, s).astype(float)),
         [{}, {"weight": "last"}, {"pos_weight": "last"}, {"weight": "full", "pos_weight": "last"}],
         array_options=("weight", "pos_weight")),
    Case("poisson_nll", fl.PoissonNLLLoss,
         lambda x, y, reduction, **o: F.poisson_nll_loss(x, y, reduction=reduction, **o),
         two(lambda r, s: r.uniform(0.1, 3.0, s), lambda r, s: r.poisson(2.0, s).astype(float)),
         [{"log_input": True}, {"log_input": False}, {"log_input": True, "full": True},
          {"log_input": False, "full": True, "eps": 1e-3}]),
    Case("gaussian_nll", fl.GaussianNLLLoss,
         lambda x, y, v, reduction, **o: F.gaussian_nll_loss(x, y, v, reduction=reduction, **o),
         lambda r, s: [r.standard_normal(s), r.standard_normal(s), r.uniform(0.1, 2.0, s)],
         [{}, {"full": True}, {"eps": 0.5}], differentiable=(0, 2),
         # below eps the clamped var is flat, while torch's gradient (clamp without a mask) is not
         smooth_where=lambda arrays, options, position: (
             arrays[2] >= options.get("eps", 1e-6) if position == 2 else None)),
    Case("kl_div", fl.KLDivLoss,
         lambda x, y, reduction, **o: F.kl_div(x, y, reduction=reduction, **o),
         two(lambda r, s: np.log(r.uniform(0.05, 1.0, s)),
             lambda r, s: r.uniform(0, 1, s) * (r.uniform(0, 1, s) > 0.2)),
         [{}], reductions=REDUCTIONS + ("batchmean",)),
    Case("kl_div_log_target", fl.KLDivLoss,
         lambda x, y, reduction, **o: F.kl_div(x, y, reduction=reduction, **o),
         two(lambda r, s: np.log(r.uniform(0.05, 1.0, s)), lambda r, s: np.log(r.uniform(0.05, 1.0, s))),
         [{"log_target": True}], reductions=REDUCTIONS + ("batchmean",)),
    Case("hinge_embedding", fl.HingeEmbeddingLoss,
         lambda x, y, reduction, **o: F.hinge_embedding_loss(x, y, reduction=reduction, **o),
         two(lambda r, s: r.uniform(0, 2, s), signs), [{}, {"margin": 0.5}]),
    Case("margin_ranking", fl.MarginRankingLoss,
         lambda x1, x2, y, reduction, **o: F.margin_ranking_loss(x1, x2, y, reduction=reduction, **o),
         lambda r, s: [normal(r, s), normal(r, s), signs(r, s)], [{}, {"margin": 0.5}], differentiable=(0, 1)),
    Case("sigmoid_focal", fl.SigmoidFocalLoss,
         lambda x, y, reduction, alpha=0.25, gamma=2.0: torchvision_sigmoid_focal(x, y, alpha, gamma, reduction),
         two(lambda r, s: 2 * r.standard_normal(s), lambda r, s: r.integers(0, 2, s).astype(float)),
         [{}, {"alpha": -1.0, "gamma": 0.0}, {"gamma": 1.0}, {"alpha": 0.6, "gamma": 1.5}]),
    Case("pinball", fl.PinballLoss, lambda x, y, reduction, **o: regression("pinball", x, y, reduction, **o),
         two(normal, normal), [{"quantile": 0.5}, {"quantile": 0.1}, {"quantile": 0.93}]),
    Case("pseudo_huber", fl.PseudoHuberLoss,
         lambda x, y, reduction, **o: regression("pseudo_huber", x, y, reduction, **o),
         two(lambda r, s: 3 * r.standard_normal(s), normal), [{}, {"delta": 0.3}, {"delta": 5.0}]),
    Case("log_cosh", fl.LogCoshLoss, lambda x, y, reduction: regression("log_cosh", x, y, reduction),
         two(lambda r, s: 4 * r.standard_normal(s), normal)),
    Case("tweedie", fl.TweedieLoss, lambda x, y, reduction, **o: regression("tweedie", x, y, reduction, **o),
         two(lambda r, s: 2 * r.standard_normal(s), lambda r, s: r.poisson(1.0, s) * r.uniform(0.1, 3, s)),
         [{}, {"power": 1.01}, {"power": 1.9}]),
    Case("gamma", fl.GammaLoss, lambda x, y, reduction: regression("gamma", x, y, reduction),
         two(lambda r, s: 2 * r.standard_normal(s), lambda r, s: r.gamma(2.0, 1.5, s))),
    Case("exponential", fl.ExponentialLoss, lambda x, y, reduction: regression("exponential", x, y, reduction),
         two(lambda r, s: 2 * r.standard_normal(s), lambda r, s: r.integers(0, 2, s) * 1.0)),
]
IDS = [case.name for case in CASES]


def build(case, options, shape, rng, dtype):
    """(fastloss criterion kwargs, torch kwargs, call arrays in dtype)."""
    ours, theirs = {}, {}
    for key, value in options.items():
        if key in case.array_options:
            arr = option_array(value, shape, rng).astype(dtype)
            ours[key], theirs[key] = arr, torch.tensor(arr.astype(np.float64))
        else:
            ours[key] = theirs[key] = value
    arrays = [a.astype(dtype) for a in case.data(rng, shape)]
    return ours, theirs, arrays


def parity_cases():
    for case in CASES:
        for options, reduction, dtype in itertools.product(case.options, case.reductions, DTYPES):
            yield pytest.param(case, options, reduction, dtype,
                               id=f"{case.name}-{options}-{reduction}-{np.dtype(dtype).name}")


@pytest.mark.parametrize("case, options, reduction, dtype", list(parity_cases()))
def test_parity_with_torch(case, options, reduction, dtype):
    rng = np.random.default_rng(abs(hash((case.name, reduction))) % 2**32)
    for shape in SHAPES:
        if reduction == "batchmean" and shape == (0, 4):
            continue  # torch divides 0 by 0 here too; covered by the empty-input test
        ours, theirs, arrays = build(case, options, shape, rng, dtype)
        crit = case.criterion(reduction=reduction, **ours)
        grad_output = rng.uniform(0.5, 1.5, shape).astype(dtype) if reduction == "none" else 0.75
        loss, grads = crit(*arrays, grad_output=grad_output)
        grads = grads if isinstance(grads, tuple) else (grads,)
        ref_loss, ref_grads = torch_oracle(lambda *t, reduction: case.oracle(*t, reduction=reduction, **theirs),
                                           arrays, case.differentiable, reduction, grad_output)
        what = f"{case.name} {options} {reduction} shape={shape}"
        assert np.asarray(loss).dtype == dtype and np.shape(loss) == ref_loss.shape, what
        assert_close(loss, ref_loss, dtype, what=what + " loss")
        assert len(grads) == len(ref_grads)
        for ours_g, ref_g, position in zip(grads, ref_grads, case.differentiable):
            assert ours_g.dtype == dtype and ours_g.flags.c_contiguous
            assert_close(ours_g, ref_g, dtype, what=f"{what} grad of argument {position}")
        assert_close(crit.loss(*arrays), ref_loss, dtype, what=what + " loss()")


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_gradient_matches_finite_differences(case, reduction):
    rng = np.random.default_rng(7)
    for options in case.options:
        ours, _, arrays = build(case, options, (3, 5), rng, np.float64)
        crit = case.criterion(reduction=reduction, **ours)
        weights = rng.uniform(0.5, 1.5, (3, 5)) if reduction == "none" else 1.0
        _, grads = crit(*arrays, grad_output=weights)
        grads = grads if isinstance(grads, tuple) else (grads,)

        def objective(*a):
            return float(np.sum(np.asarray(crit.loss(*a)) * weights))

        for grad, position in zip(grads, case.differentiable):
            numeric = central_differences(objective, arrays, position)
            mask = case.smooth_where and case.smooth_where(arrays, options, position)
            if mask is not None:
                grad, numeric = grad[mask], numeric[mask]
            np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8 * max(1, np.abs(numeric).max()),
                                       err_msg=f"{case.name} {options} argument {position}")


# ---------------------------------------------------------------- broadcasting

@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.data())
def test_broadcast_operands_match_torch(shape, data):
    """Targets, weights and pos_weight of any shape that broadcasts to the input."""
    shape = tuple(shape)

    def broadcastable():
        keep = data.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
        lead = data.draw(st.integers(0, len(shape)))
        return tuple(s if k else 1 for s, k in zip(shape, keep))[lead:]

    rng = np.random.default_rng(len(shape))
    dtype = data.draw(st.sampled_from(DTYPES))
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    y = rng.integers(0, 2, broadcastable()).astype(dtype)
    weight = rng.uniform(0.5, 2, broadcastable()).astype(dtype)
    pos_weight = rng.uniform(0.5, 2, broadcastable()).astype(dtype)
    reduction = data.draw(st.sampled_from(REDUCTIONS))
    y_full = np.broadcast_to(y, shape)
    loss, grad = fl.BCEWithLogitsLoss(weight, pos_weight=pos_weight, reduction=reduction)(x, y_full)
    ref_loss, (ref_grad,) = torch_oracle(
        lambda a, b, reduction: F.binary_cross_entropy_with_logits(
            a, b, weight=torch.tensor(weight.astype(float)), pos_weight=torch.tensor(pos_weight.astype(float)),
            reduction=reduction), [x, y_full], (0,), reduction)
    assert_close(loss, ref_loss, dtype)
    assert_close(grad, ref_grad, dtype)
    # a broadcast target (torch broadcasts it with a warning)
    loss, grad = fl.MSELoss(reduction=reduction)(x, y)
    with np.errstate(all="ignore"):
        ref_loss, (ref_grad,) = torch_oracle(lambda a, b, reduction: F.mse_loss(
            a, b.expand(a.shape), reduction=reduction), [x, y], (0,), reduction)
    assert_close(loss, ref_loss, dtype)
    assert_close(grad, ref_grad, dtype)


@pytest.mark.parametrize("var_shape", [(6, 5, 4), (6, 5), (6, 5, 1), (6, 1, 4), (1, 5, 4), "float"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_nll_var_shapes(var_shape, reduction, dtype):
    """Every var shape torch accepts; var's gradient is summed over the shared axis."""
    rng = np.random.default_rng(3)
    shape = (6, 5, 4)
    x, y = rng.standard_normal((2,) + shape).astype(dtype)
    var = 0.7 if var_shape == "float" else rng.uniform(0.1, 2, var_shape).astype(dtype)
    loss, (gx, gv) = fl.GaussianNLLLoss(reduction=reduction)(x, y, var)
    differentiable = (0,) if var_shape == "float" else (0, 2)
    ref_loss, ref_grads = torch_oracle(lambda a, b, v, reduction: F.gaussian_nll_loss(
        a, b, v if var_shape != "float" else 0.7, reduction=reduction), [x, y, var], differentiable, reduction)
    assert_close(loss, ref_loss, dtype)
    assert_close(gx, ref_grads[0], dtype)
    if var_shape == "float":
        assert gv is None
    else:
        assert gv.shape == var.shape
        assert_close(gv, ref_grads[1], dtype)


def test_gaussian_nll_var_gradient_large_threaded():
    """A shared-variance gradient over many blocks and threads equals torch's."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2, 3000, 100))
    var = rng.uniform(0.1, 2, (3000, 1))
    with parallel(2):
        loss, (gx, gv) = fl.GaussianNLLLoss()(x, y, var)
    ref_loss, (ref_gx, ref_gv) = torch_oracle(lambda a, b, v, reduction: F.gaussian_nll_loss(
        a, b, v, reduction=reduction), [x, y, var], (0, 2), "mean")
    assert_close(loss, ref_loss, np.float64)
    assert_close(gv, ref_gv, np.float64)


def test_soft_margin_is_finite_where_torch_overflows():
    x = np.array([-100.0, 100.0], np.float32)
    loss, grad = fl.SoftMarginLoss(reduction="none")(x, np.ones(2, np.float32))
    np.testing.assert_allclose(loss, [100.0, np.log1p(np.exp(-100.0))], rtol=1e-6, atol=1e-44)
    np.testing.assert_allclose(grad, [-1.0, -np.exp(-100.0)], rtol=1e-6, atol=1e-44)


@pytest.mark.parametrize("case", [c for c in CASES if c.criterion is not fl.BCELoss],
                         ids=[c.name for c in CASES if c.criterion is not fl.BCELoss])
def test_nan_and_inf_propagate_as_torch(case):
    # (BCELoss rejects NaN input, as torch does: test_contract checks that error)
    rng = np.random.default_rng(5)
    ours, theirs, arrays = build(case, case.options[0], (6,), rng, np.float64)
    arrays[0][:3] = [np.nan, np.inf, -np.inf]
    loss, _ = case.criterion(reduction="none", **ours)(*arrays)
    ref_loss, _ = torch_oracle(lambda *t, reduction: case.oracle(*t, reduction=reduction, **theirs),
                               arrays, case.differentiable, "none")
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(ref_loss))
    finite = np.isfinite(ref_loss)
    np.testing.assert_array_equal(np.isinf(loss[~np.isnan(loss)]), np.isinf(ref_loss[~np.isnan(ref_loss)]))
    np.testing.assert_allclose(loss[finite], ref_loss[finite], rtol=1e-10)


# ---------------------------------------------------------------- the shared registry (tests/cases.py)
@pytest.mark.parametrize("case", cases.of_family("pointwise"), ids=[c[0] for c in cases.of_family("pointwise")])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_registry_cases_match_torch(case, reduction, dtype):
    registry_parity(case, reduction, dtype)
