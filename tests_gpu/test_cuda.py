"""The GPU backend against the CPU path, which tests/ checks against torch float64: every
family's kernels with their options and reductions, out=, grad_output=, the errors, and
repeatability. In CI it runs under numba's CUDA simulator on small inputs:

    NUMBA_ENABLE_CUDASIM=1 pytest tests_gpu

On a machine with a GPU, plain ``pytest tests_gpu`` runs the same on the device and adds the
interop with torch CUDA tensors and CuPy arrays and the parity with torch CUDA itself
(test_torch_cuda.py)."""
import numpy as np
import pytest
from numba import config, cuda

import fastloss as fl

SIMULATOR = bool(config.ENABLE_CUDASIM)
if not SIMULATOR and not cuda.is_available():
    pytest.skip("no GPU and NUMBA_ENABLE_CUDASIM is not set", allow_module_level=True)

RTOL = {np.float32: 2e-5, np.float64: 1e-11}


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def dev(a):
    return cuda.to_device(np.array(a, order="C"))   # (np.ascontiguousarray makes 0-d arrays 1-d)


def unit(rng, shape):
    return rng.uniform(0.05, 0.95, shape)


def normal(rng, shape):
    return rng.standard_normal(shape)


def signs(rng, shape):
    return rng.choice([-1.0, 1.0], shape)


def log_softmax(x, axis):
    return x - np.log(np.exp(x - x.max(axis, keepdims=True)).sum(axis, keepdims=True)) - x.max(axis, keepdims=True)


def labels(rng, shape, C, ignore=True):
    t = rng.integers(0, C, shape)
    if ignore and t.ndim:
        t.reshape(-1)[0] = -100
    return t


def multilabel(rng, rows, C):
    """MultiLabelMarginLoss targets: each row's classes, a repeated one too, then -1."""
    t = np.full((rows, C), -1)
    for r in range(rows):
        k = rng.integers(0, C)
        t[r, :k] = rng.choice(C, k, replace=False)
    t[0, :3] = [2, 2, 1]
    return t


def soft_distance(x, y):
    """A user's distance for TripletMarginWithDistanceLoss, sqrt(|x - y|^2 + 1e-3), on NumPy
    or numba device arrays (here through the host: the plumbing is under test)."""
    on_device = hasattr(x, "copy_to_host")
    d = np.sqrt(((host(x) - host(y)) ** 2).sum(-1) + 1e-3)
    return dev(d) if on_device else d


def soft_distance_grad(x, y, g):
    gx = (host(g) / np.sqrt(((host(x) - host(y)) ** 2).sum(-1) + 1e-3))[..., None] * (host(x) - host(y))
    return (dev(gx), dev(-gx)) if hasattr(x, "copy_to_host") else (gx, -gx)


S = (4, 5)   # the pointwise cases' input shape
CASES = [   # (id, criterion, arrays(rng, dtype))
    ("l1", fl.L1Loss(), lambda r, d: [normal(r, S), normal(r, S)]),
    ("mse-broadcast", fl.MSELoss(), lambda r, d: [normal(r, S), normal(r, (5,))]),
    ("mse-int-target", fl.MSELoss(), lambda r, d: [normal(r, S), r.integers(-2, 3, S)]),
    ("smooth_l1", fl.SmoothL1Loss(beta=0.5), lambda r, d: [normal(r, S), normal(r, (4, 1))]),
    ("smooth_l1-beta0", fl.SmoothL1Loss(beta=0.0), lambda r, d: [normal(r, S), normal(r, S)]),
    ("huber", fl.HuberLoss(delta=0.3), lambda r, d: [normal(r, S), normal(r, S)]),
    ("soft_margin", fl.SoftMarginLoss(), lambda r, d: [normal(r, S) * 30, signs(r, S)]),
    ("bce-weight", fl.BCELoss(weight=np.linspace(0.5, 2, 5)), lambda r, d: [unit(r, S), unit(r, S)]),
    ("bce_with_logits", fl.BCEWithLogitsLoss(weight=np.linspace(0.5, 2, 5), pos_weight=np.linspace(1, 3, 5)),
     lambda r, d: [normal(r, S) * 20, unit(r, S)]),
    ("poisson", fl.PoissonNLLLoss(), lambda r, d: [normal(r, S), r.poisson(2.0, S).astype(float)]),
    ("poisson-rate-full", fl.PoissonNLLLoss(log_input=False, full=True),
     lambda r, d: [unit(r, S) * 3, r.poisson(2.0, S).astype(float)]),
    ("gaussian-var-full", fl.GaussianNLLLoss(full=True), lambda r, d: [normal(r, S), normal(r, S), unit(r, S)]),
    ("gaussian-var-rows", fl.GaussianNLLLoss(), lambda r, d: [normal(r, S), normal(r, S), unit(r, (4,))]),
    ("gaussian-var-slab", fl.GaussianNLLLoss(eps=0.1), lambda r, d: [normal(r, S), normal(r, S), unit(r, (1, 5))]),
    ("gaussian-var-float", fl.GaussianNLLLoss(), lambda r, d: [normal(r, S), normal(r, S), 0.7]),
    ("kl_div", fl.KLDivLoss(reduction="batchmean"),
     lambda r, d: [log_softmax(normal(r, S), 1), np.where(r.random(S) < 0.2, 0.0, unit(r, S))]),
    ("kl_div-log_target", fl.KLDivLoss(log_target=True), lambda r, d: [normal(r, S), normal(r, S)]),
    ("hinge_embedding", fl.HingeEmbeddingLoss(margin=0.5), lambda r, d: [normal(r, S), signs(r, S)]),
    ("margin_ranking", fl.MarginRankingLoss(margin=0.2), lambda r, d: [normal(r, S), normal(r, S), signs(r, S)]),
    ("sigmoid_focal", fl.SigmoidFocalLoss(), lambda r, d: [normal(r, S), unit(r, S)]),
    ("sigmoid_focal-gamma", fl.SigmoidFocalLoss(alpha=-1, gamma=1.5), lambda r, d: [normal(r, S), unit(r, S)]),
    ("ce", fl.CrossEntropyLoss(), lambda r, d: [normal(r, (6, 5)), labels(r, (6,), 5)]),
    ("ce-weight-smoothing", fl.CrossEntropyLoss(weight=np.linspace(0.5, 2, 5), label_smoothing=0.1),
     lambda r, d: [normal(r, (6, 5)), labels(r, (6,), 5)]),
    ("ce-kdim-zloss-softcap", fl.CrossEntropyLoss(z_loss=1e-2, softcap=2.0),
     lambda r, d: [normal(r, (3, 5, 2, 2)), labels(r, (3, 2, 2), 5)]),
    ("ce-probabilities", fl.CrossEntropyLoss(label_smoothing=0.2, weight=np.linspace(0.5, 2, 5)),
     lambda r, d: [normal(r, (4, 5, 3)), np.moveaxis(r.dirichlet(np.ones(5), (4, 3)), -1, 1)]),
    ("ce-one-row", fl.CrossEntropyLoss(), lambda r, d: [normal(r, (5,)), np.array(3)]),
    ("ce-narrow-rows", fl.CrossEntropyLoss(label_smoothing=0.3), lambda r, d: [normal(r, (9, 1)), np.zeros(9, int)]),
    ("softmax_focal", fl.SoftmaxFocalLoss(gamma=1.5, weight=np.linspace(0.5, 2, 5)),
     lambda r, d: [normal(r, (6, 5)), labels(r, (6,), 5)]),
    ("nll", fl.NLLLoss(weight=np.linspace(0.5, 2, 5)),
     lambda r, d: [log_softmax(normal(r, (3, 5, 2)), 1), labels(r, (3, 2), 5)]),
    ("multi_margin-p2-weight", fl.MultiMarginLoss(p=2, margin=0.7, weight=np.linspace(0.5, 2, 5)),
     lambda r, d: [normal(r, (6, 5)), labels(r, (6,), 5, ignore=False)]),
    ("multilabel_margin", fl.MultiLabelMarginLoss(), lambda r, d: [normal(r, (4, 5)), multilabel(r, 4, 5)]),
    ("multilabel_soft_margin", fl.MultiLabelSoftMarginLoss(weight=np.linspace(0.5, 2, 5)),
     lambda r, d: [normal(r, (4, 5)), unit(r, (4, 5))]),
    ("dice-multiclass-ignore", fl.DiceLoss("multiclass", ignore_index=-100, smooth=0.5),
     lambda r, d: [normal(r, (2, 3, 2, 3)), labels(r, (2, 2, 3), 3)]),
    ("dice-multilabel", fl.DiceLoss("multilabel"), lambda r, d: [normal(r, (2, 3, 5)), r.integers(0, 2, (2, 3, 5)) * 1.0]),
    ("dice-binary-probabilities", fl.DiceLoss("binary", from_logits=False),
     lambda r, d: [unit(r, (3, 1, 4)), r.integers(0, 2, (3, 1, 4)) * 1.0]),
    ("linear_ce-bias-chunks", fl.LinearCrossEntropyLoss(label_smoothing=0.1, chunk_rows=2),
     lambda r, d: [normal(r, (5, 3)), normal(r, (6, 3)), labels(r, (5,), 6), normal(r, (6,))]),
    ("linear_ce-probabilities", fl.LinearCrossEntropyLoss(weight=np.linspace(0.5, 2, 4)),
     lambda r, d: [normal(r, (3, 2)), normal(r, (4, 2)), r.dirichlet(np.ones(4), 3), None]),
    ("nt_xent-chunks", fl.NTXentLoss(temperature=0.3, chunk_rows=2), lambda r, d: [normal(r, (3, 4)), normal(r, (3, 4))]),
    ("triplet-callable-swap", fl.TripletMarginWithDistanceLoss(distance_function=(soft_distance, soft_distance_grad),
                                                               swap=True, margin=1.5),
     lambda r, d: [normal(r, (5, 4)) for _ in range(3)]),
    ("triplet", fl.TripletMarginLoss(margin=2.0), lambda r, d: [normal(r, (5, 7)) for _ in range(3)]),
    ("triplet-p-swap", fl.TripletMarginLoss(p=1.5, swap=True, margin=2.0), lambda r, d: [normal(r, (5, 7)) for _ in range(3)]),
    ("triplet-cosine", fl.TripletMarginWithDistanceLoss(distance_function="cosine", swap=True),
     lambda r, d: [normal(r, (5, 7)) for _ in range(3)]),
    ("cosine_embedding", fl.CosineEmbeddingLoss(margin=0.1), lambda r, d: [normal(r, (5, 7)), normal(r, (5, 7)), signs(r, 5)]),
    ("contrastive", fl.ContrastiveLoss(margin=4.0), lambda r, d: [normal(r, (5, 7)), normal(r, (5, 7)), r.integers(0, 2, 5)]),
    ("ctc-padded", fl.CTCLoss(), lambda r, d: [log_softmax(normal(r, (6, 3, 5)), 2), r.integers(1, 5, (3, 3)),
                                               np.array([6, 5, 4]), np.array([3, 2, 0])]),
    ("ctc-concatenated-zero_infinity", fl.CTCLoss(blank=4, zero_infinity=True),
     lambda r, d: [log_softmax(normal(r, (5, 3, 5)), 2), r.integers(0, 4, 6), np.array([5, 1, 4]), np.array([2, 3, 1])]),
]
IDS = [c[0] for c in CASES]
HOST_ARGUMENTS = {"input_lengths", "target_lengths"}   # CTC's lengths stay on the host


def build(case, reduction, dtype, seed=0):
    name, crit, make = case
    crit = crit._with_reduction(reduction)
    rng = np.random.default_rng(seed)
    arrays = make(rng, dtype)
    arrays = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in arrays]
    on_device = [a if a is None or isinstance(a, float) or name in HOST_ARGUMENTS else dev(a)
                 for a, name in zip(arrays, crit.arguments)]
    return crit, arrays, on_device


def assert_matches(ours, reference, dtype, what):
    ours, reference = host(ours), np.asarray(reference)
    assert ours.shape == reference.shape, what
    scale = max(1.0, float(np.nanmax(np.abs(reference), initial=0.0)))
    np.testing.assert_allclose(ours, reference, rtol=RTOL[dtype], atol=RTOL[dtype] * scale, err_msg=what)


def grads(g):
    return g if isinstance(g, tuple) else (g,)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("reduction,dtype", [("none", np.float64), ("mean", np.float64), ("sum", np.float64),
                                             ("mean", np.float32)])
def test_matches_the_cpu_path(case, reduction, dtype):
    crit, arrays, on_device = build(case, reduction, dtype)
    expected, ours = crit(*arrays), crit(*on_device)
    assert_matches(ours.loss, expected.loss, dtype, "loss")
    assert host(ours.loss).dtype == dtype
    for g, e in zip(grads(ours.grad), grads(expected.grad)):
        assert (g is None) == (e is None)
        if g is not None:
            assert type(g) is type(on_device[0]) and g.dtype == dtype
            assert_matches(g, e, dtype, "gradient")
    assert_matches(crit.loss(*on_device), expected.loss, dtype, "loss()")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grad_output_and_out(case):
    """grad_output as a device array (per row for 'none', one value for 'mean') and as a
    number, gradients written into the caller's out= buffers and returned as themselves."""
    crit, arrays, on_device = build(case, "none", np.float64, seed=1)
    loss_shape = np.shape(crit(*arrays).loss)
    g_rows = np.random.default_rng(2).uniform(0.5, 1.5, loss_shape)
    expected = crit(*arrays, grad_output=g_rows)
    outs = tuple(None if e is None else dev(np.full(e.shape, np.nan)) for e in grads(expected.grad))
    ours = crit(*on_device, grad_output=dev(g_rows), out=outs if len(outs) > 1 else outs[0])
    for g, o, e in zip(grads(ours.grad), outs, grads(expected.grad)):
        assert g is o
        if e is not None:
            assert_matches(g, e, np.float64, "gradient with grad_output (rows)")
    mean = crit._with_reduction("mean")
    expected = mean(*arrays, grad_output=2.5)
    for go in (2.5, dev(np.array(2.5))):
        for g, e in zip(grads(mean(*on_device, grad_output=go).grad), grads(expected.grad)):
            if e is not None:
                assert_matches(g, e, np.float64, "gradient with grad_output (scalar)")


@pytest.mark.parametrize("case", CASES[::4], ids=IDS[::4])
def test_repeatable_to_the_bit(case):
    crit, _, on_device = build(case, "mean", np.float32)
    first, second = crit(*on_device), crit(*on_device)
    assert host(first.loss).tobytes() == host(second.loss).tobytes()
    for a, b in zip(grads(first.grad), grads(second.grad)):
        if a is not None:
            assert host(a).tobytes() == host(b).tobytes()


def test_results_stay_on_the_device_as_zero_d_arrays():
    x, y = dev(np.arange(6.0)), dev(np.ones(6))
    loss, grad = fl.MSELoss()(x, y)
    assert loss.shape == () and type(loss) is type(x) and type(grad) is type(x)
    assert host(loss) == np.mean((np.arange(6.0) - 1) ** 2)


def test_empty_input_gives_nan_mean_and_zero_sum():
    x = dev(np.zeros((0, 3)))
    assert np.isnan(host(fl.MSELoss()(x, x).loss))
    assert host(fl.L1Loss(reduction="sum")(x, x).loss) == 0


BAD = [
    (lambda: fl.MSELoss()(dev(np.zeros(3)), np.zeros(3)), ValueError, "all on the host or all on a CUDA device"),
    (lambda: fl.MSELoss()(dev(np.zeros(3, np.int64)), dev(np.zeros(3))), TypeError, "input: expected a float32 or float64"),
    (lambda: fl.MSELoss()(dev(np.zeros(3)), dev(np.zeros(4))), ValueError, "target: expected a shape that broadcasts"),
    (lambda: fl.MSELoss()(dev(np.zeros(3)), dev(np.zeros(3)), out=dev(np.zeros(4))), ValueError, r"out \(input\): expected shape"),
    (lambda: fl.MSELoss()(dev(np.zeros(3)), dev(np.zeros(3)), out=dev(np.zeros(3, np.float32))), TypeError, "dtype float64"),
    (lambda: fl.BCELoss()(dev(np.array([0.5, 1.5])), dev(np.zeros(2))), ValueError, "input: expected all elements between 0 and 1"),
    (lambda: fl.GaussianNLLLoss()(dev(np.zeros(2)), dev(np.zeros(2)), dev(np.array([1.0, -1.0]))), ValueError, "var: expected non-negative"),
    (lambda: fl.CrossEntropyLoss()(dev(np.zeros((2, 3))), dev(np.array([0, 3]))), IndexError, r"target: expected class indices in \[0, 3\)"),
    (lambda: fl.SoftmaxFocalLoss()(dev(np.zeros((2, 3))), dev(np.zeros((2, 3)))), TypeError, "target: expected class indices"),
    (lambda: fl.TripletMarginLoss()(dev(np.zeros((2, 3))), dev(np.zeros((2, 3))), dev(np.zeros((2, 4)))), ValueError, "negative: expected shape"),
    (lambda: fl.CTCLoss()(dev(np.zeros((4, 1, 3))), dev(np.array([[1, 0]])), [4], [2]), ValueError, "targets: expected labels"),
    (lambda: fl.MultiMarginLoss()(dev(np.zeros((2, 3))), dev(np.array([0, -1]))), IndexError, r"target: expected class indices in \[0, 3\)"),
    (lambda: fl.MultiLabelMarginLoss()(dev(np.zeros((2, 3))), dev(np.array([[0, -1, 0], [1, 3, -1]]))), IndexError,
     r"got 3 at position \(1, 1\)"),
    (lambda: fl.MultiLabelSoftMarginLoss()(dev(np.zeros((2, 3))), dev(np.zeros((2, 4)))), ValueError, "target: expected shape"),
    (lambda: fl.DiceLoss("binary")(dev(np.zeros((2, 3, 4))), dev(np.zeros((2, 3, 4)))), ValueError, "one channel"),
    (lambda: fl.DiceLoss("multiclass")(dev(np.zeros((2, 3, 4))), dev(np.full((2, 4), 3))), IndexError, "class indices in"),
    (lambda: fl.LinearCrossEntropyLoss()(dev(np.zeros((2, 3))), dev(np.zeros((4, 2))), dev(np.array([0, 1]))), ValueError,
     r"linear_weight: expected shape \(C, 3\)"),
    (lambda: fl.LinearCrossEntropyLoss()(dev(np.zeros((2, 3))), dev(np.zeros((4, 3), np.float32)), dev(np.array([0, 1]))),
     TypeError, "linear_weight: expected dtype float64"),
    (lambda: fl.NTXentLoss()(dev(np.zeros((2, 3))), dev(np.zeros((3, 3)))), ValueError, r"z2: expected shape \(2, 3\)"),
    (lambda: fl.MSELoss().partial(dev(np.zeros(3)), dev(np.zeros(3))), NotImplementedError, "partial states are for host arrays"),
    (lambda: fl.CrossEntropyLoss(softcap=2.0).grad_hess(dev(np.zeros((2, 3))), dev(np.array([0, 1]))), NotImplementedError,
     "no hessian with softcap"),
]


@pytest.mark.parametrize("call,error,message", BAD)
def test_bad_input_is_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_nothing_is_written_on_a_bad_target():
    out = dev(np.full((2, 3), 7.0))
    with pytest.raises(IndexError):
        fl.CrossEntropyLoss()(dev(np.zeros((2, 3))), dev(np.array([0, 5])), out=out)
    assert (host(out) == 7.0).all()


HESSIANS = [   # (criterion, arrays(rng)): every kernel with a hessian mode
    (fl.MSELoss(), lambda r: [normal(r, S), normal(r, S)]),
    (fl.BCEWithLogitsLoss(pos_weight=np.linspace(1, 2, 5)), lambda r: [normal(r, S), unit(r, S)]),
    (fl.HuberLoss(reduction="sum"), lambda r: [normal(r, S), normal(r, S)]),
    (fl.CrossEntropyLoss(weight=np.linspace(0.5, 2, 5), label_smoothing=0.1, z_loss=0.01),
     lambda r: [normal(r, (6, 5)), labels(r, (6,), 5)]),
    (fl.CrossEntropyLoss(reduction="sum"), lambda r: [normal(r, (3, 5, 2)), np.moveaxis(r.dirichlet(np.ones(5), (3, 2)), -1, 1)]),
    (fl.SoftmaxFocalLoss(gamma=1.5, reduction="none"), lambda r: [normal(r, (6, 5)), labels(r, (6,), 5)]),
]


@pytest.mark.parametrize("crit,make", HESSIANS, ids=[type(c).__name__ for c, _ in HESSIANS])
def test_hessian_matches_the_cpu_path(crit, make):
    arrays = make(np.random.default_rng(3))
    expected, ours = crit.grad_hess(*arrays), crit.grad_hess(*map(dev, arrays))
    assert type(ours.hess) is type(dev(arrays[0]))
    assert_matches(ours.grad, expected.grad, np.float64, "grad")
    assert_matches(ours.hess, expected.hess, np.float64, "hess")
