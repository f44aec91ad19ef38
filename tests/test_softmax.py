"""The softmax family against torch float64: every option, target kind, reduction, dtype and
shape; finite differences on our float64 gradients; errors; determinism."""
import itertools

import cases
import numpy as np
import pytest
from conftest import DTYPES, REDUCTIONS, assert_close, central_differences, parallel, registry_parity, torch

import fastloss as fl

F = torch.nn.functional

# (input shape, target shape)
SHAPES = [((5,), ()), ((6, 5), (6,)), ((4, 5, 3), (4, 3)), ((2, 5, 3, 2), (2, 3, 2)),
          ((0, 5), (0,)), ((500, 97), (500,))]


def torch_cross_entropy(x, t, reduction, weight=None, ignore_index=-100, label_smoothing=0.0,
                        z_loss=0.0, softcap=None):
    """torch's cross entropy on c tanh(x / c), plus SPEC's z-loss, composed in torch."""
    z = softcap * torch.tanh(x / softcap) if softcap else x
    loss = F.cross_entropy(z, t, weight=weight, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    if z_loss:
        lse = torch.logsumexp(z, dim=1 if x.ndim > 1 else 0)
        valid = torch.ones_like(lse) if t.is_floating_point() else (t != ignore_index).to(lse.dtype)
        term = z_loss * lse ** 2 * valid
        loss = loss + {"none": term, "sum": term.sum(), "mean": term.sum() / valid.sum()}[reduction]
    return loss


def torch_softmax_focal(x, t, reduction, gamma=2.0, weight=None, ignore_index=-100):
    """-w_t (1 - p_t)^gamma log p_t, composed in torch; 'mean' over the sum of w_t kept."""
    class_dim = 1 if x.ndim > 1 else 0
    log_p = torch.log_softmax(x, class_dim)
    keep = t != ignore_index
    safe = torch.where(keep, t, torch.zeros_like(t))
    log_p_t = log_p.gather(class_dim, safe.unsqueeze(class_dim)).squeeze(class_dim)
    w_t = (weight[safe] if weight is not None else torch.ones_like(log_p_t)) * keep
    loss = -w_t * (1 - log_p_t.exp()) ** gamma * log_p_t
    return {"none": loss, "sum": loss.sum(), "mean": loss.sum() / w_t.sum()}[reduction]


def make_targets(rng, x_shape, t_shape, kind, ignore_index):
    C = x_shape[0] if len(x_shape) == 1 else x_shape[1]
    if kind == "prob":
        p = rng.uniform(0, 1, x_shape)
        return p / p.sum(axis=0 if len(x_shape) == 1 else 1, keepdims=True)
    t = rng.integers(0, C, t_shape)
    if kind == "ignore" and t.size:
        t.reshape(-1)[:: 3] = ignore_index
    return t


OPTIONS = [{}, {"weight": True}, {"label_smoothing": 0.1}, {"weight": True, "label_smoothing": 0.2},
           {"z_loss": 0.01}, {"softcap": 3.0}, {"weight": True, "label_smoothing": 0.1, "z_loss": 0.01, "softcap": 2.0}]


def option_cases():
    for criterion, options, kind in itertools.chain(
            ((fl.CrossEntropyLoss, o, k) for o in OPTIONS for k in ("index", "ignore", "prob")),
            ((fl.NLLLoss, o, k) for o in ({}, {"weight": True}) for k in ("index", "ignore")),
            ((fl.SoftmaxFocalLoss, o, k) for o in ({}, {"gamma": 0.5, "weight": True}, {"gamma": 0.0})
             for k in ("index", "ignore"))):
        for reduction, dtype in itertools.product(REDUCTIONS, DTYPES):
            yield pytest.param(criterion, options, kind, reduction, dtype,
                               id=f"{criterion.__name__}-{kind}-{options}-{reduction}-{np.dtype(dtype).name}")


def build(criterion, options, kind, x_shape, t_shape, rng, dtype):
    C = x_shape[0] if len(x_shape) == 1 else x_shape[1]
    ours, theirs = {}, {}
    for key, value in options.items():
        if key == "weight":
            w = rng.uniform(0.5, 2.0, C).astype(dtype)
            ours[key], theirs[key] = w, torch.tensor(w.astype(np.float64))
        else:
            ours[key] = theirs[key] = value
    ignore_index = 1 if kind == "ignore" and criterion is fl.NLLLoss else -100
    if kind == "ignore":
        ours["ignore_index"] = theirs["ignore_index"] = ignore_index
    x = (2 * rng.standard_normal(x_shape)).astype(dtype)
    if criterion is fl.NLLLoss:
        x = np.log(rng.uniform(0.05, 1.0, x_shape)).astype(dtype)
    t = make_targets(rng, x_shape, t_shape, kind, ignore_index)
    if kind == "prob":
        t = t.astype(dtype)
    return ours, theirs, x, t


def oracle(criterion, theirs):
    if criterion is fl.NLLLoss:
        return lambda x, t, reduction: F.nll_loss(x, t, reduction=reduction, **theirs)
    if criterion is fl.SoftmaxFocalLoss:
        return lambda x, t, reduction: torch_softmax_focal(x, t, reduction, **theirs)
    return lambda x, t, reduction: torch_cross_entropy(x, t, reduction, **theirs)


@pytest.mark.parametrize("criterion, options, kind, reduction, dtype", list(option_cases()))
def test_parity_with_torch(criterion, options, kind, reduction, dtype):
    rng = np.random.default_rng(abs(hash((criterion.__name__, kind, reduction))) % 2**32)
    for x_shape, t_shape in SHAPES:
        if x_shape == (5,) and kind == "ignore":
            continue  # a single row that is ignored: covered by test_all_ignored
        ours, theirs, x, t = build(criterion, options, kind, x_shape, t_shape, rng, dtype)
        crit = criterion(reduction=reduction, **ours)
        grad_output = rng.uniform(0.5, 1.5, t_shape).astype(dtype) if reduction == "none" else 0.75
        loss, grad = crit(x, t, grad_output=grad_output)
        t_torch = t if kind == "prob" else t.astype(np.int64)
        tensors = [torch.tensor(x.astype(np.float64), requires_grad=True),
                   torch.tensor(t_torch.astype(np.float64) if kind == "prob" else t_torch)]
        ref = oracle(criterion, theirs)(*tensors, reduction=reduction)
        ref.backward(torch.tensor(np.asarray(grad_output, dtype=np.float64)).expand(ref.shape))
        what = f"{criterion.__name__} {kind} {options} {reduction} {x_shape}"
        assert np.asarray(loss).dtype == dtype and np.shape(loss) == tuple(ref.shape), what
        assert grad.dtype == dtype and grad.shape == x.shape and grad.flags.c_contiguous, what
        assert_close(loss, ref.detach().numpy(), dtype, what=what + " loss")
        assert_close(grad, tensors[0].grad.numpy(), dtype, what=what + " grad")
        assert_close(crit.loss(x, t), ref.detach().numpy(), dtype, what=what + " loss()")


FD_CASES = ([(fl.CrossEntropyLoss, o, k) for o in OPTIONS for k in ("ignore", "prob")]
            + [(fl.SoftmaxFocalLoss, o, "ignore") for o in ({"gamma": 2.0}, {"gamma": 0.5, "weight": True})])


@pytest.mark.parametrize("criterion, options, kind", FD_CASES,
                         ids=[f"{c.__name__}-{k}-{o}" for c, o, k in FD_CASES])
@pytest.mark.parametrize("shape", [((4, 5), (4,)), ((3, 4, 2), (3, 2))], ids=["2d", "3d"])
def test_gradient_matches_finite_differences(criterion, options, kind, shape):
    rng = np.random.default_rng(9)
    ours, _, x, t = build(criterion, options, kind, *shape, rng, np.float64)
    weights = rng.uniform(0.5, 1.5, shape[1])
    crit = criterion(reduction="none", **ours)
    _, grad = crit(x, t, grad_output=weights)
    numeric = central_differences(lambda a: float(np.sum(crit.loss(a, t) * weights)), [x], 0)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_all_ignored_gives_nan_and_zero_gradient_as_torch():
    x = np.random.default_rng(1).standard_normal((3, 4))
    t = np.full(3, -100)
    for criterion in (fl.CrossEntropyLoss(), fl.NLLLoss(), fl.SoftmaxFocalLoss()):
        loss, grad = criterion(x, t)
        assert np.isnan(loss) and not grad.any()
    assert np.isnan(F.cross_entropy(torch.tensor(x), torch.tensor(t)).item())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["rows", "strided"])
def test_softcap_over_the_range_of_tanh(dtype, layout):
    """The softcap's tanh and its slope 1 - tanh^2 (float32: 4 e / (1 + e)^2 from a float64
    exp) from zero to where tanh saturates, at infinities and at NaN: the loss and gradient
    per row against torch float64."""
    cap = 3.0
    u = np.array([0.0, 1e-30, 1e-6, 0.0019, 0.001953125, 0.00196, 0.01, 0.3, 0.7, 1.5, 4.0, 9.0, 20.0, 1e4])
    x = np.concatenate([u, -u]).astype(dtype).reshape(4, 7) * cap
    x = np.stack([x, x[::-1]], axis=2) if layout == "strided" else x   # (4, 7, 2): classes not contiguous
    t = np.arange(x.size // 7).reshape(x.shape[:1] + x.shape[2:]) % 7
    crit = fl.CrossEntropyLoss(softcap=cap, reduction="none")
    loss, grad = crit(x, t)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    ref = torch_cross_entropy(xt, torch.tensor(t), "none", softcap=cap)
    ref.sum().backward()
    assert_close(loss, ref.detach().numpy(), dtype)
    assert_close(grad, xt.grad.numpy(), dtype)
    specials = np.array([[np.inf, -np.inf, 0.5, 1.0], [np.nan, 0.0, 1.0, 2.0]], dtype)
    loss, grad = fl.CrossEntropyLoss(softcap=cap, reduction="none")(specials, np.array([0, 2]))
    xt = torch.tensor(specials.astype(np.float64), requires_grad=True)
    ref = torch_cross_entropy(xt, torch.tensor([0, 2]), "none", softcap=cap)
    ref.sum().backward()
    assert_close(loss, ref.detach().numpy(), dtype)
    assert_close(grad, xt.grad.numpy(), dtype)


@pytest.mark.parametrize("target_dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64])
def test_any_integer_target_dtype(target_dtype):
    x = np.random.default_rng(2).standard_normal((5, 4))
    t = np.array([0, 3, 1, 2, 0])
    expected = fl.CrossEntropyLoss()(x, t)
    got = fl.CrossEntropyLoss()(x, t.astype(target_dtype))
    assert got.loss == expected.loss and np.array_equal(got.grad, expected.grad)


@pytest.mark.parametrize("make, args, error, message", [
    (fl.CrossEntropyLoss, lambda: (np.zeros((3, 4)), np.array([0, 4, 1])), IndexError,
     r"target: expected class indices in \[0, 4\) or ignore_index -100, got 4 at position \(1,\)"),
    (fl.NLLLoss, lambda: (np.zeros((2, 4, 3)), np.array([[0, 1, 2], [3, -5, 0]])), IndexError,
     r"target: expected class indices in \[0, 4\) or ignore_index -100, got -5 at position \(1, 1\)"),
    (fl.CrossEntropyLoss, lambda: (np.zeros((3, 4)), np.zeros((3, 5))), ValueError,
     r"target: expected class probabilities of the input's shape \(3, 4\) or class indices of shape \(3,\), got \(3, 5\)"),
    (fl.CrossEntropyLoss, lambda: (np.zeros((3, 4)), np.zeros(4, int)), ValueError, r"target: expected shape \(3,\), got \(4,\)"),
    (lambda: fl.CrossEntropyLoss(weight=np.ones(3)), lambda: (np.zeros((3, 4)), np.zeros(3, int)), ValueError,
     r"weight: expected shape \(4,\) \(one per class\), got \(3,\)"),
    (fl.CrossEntropyLoss, lambda: (np.zeros(()), np.zeros((), int)), ValueError, "input: expected at least 1 dimension"),
    (fl.CrossEntropyLoss, lambda: (np.zeros((3, 4), int), np.zeros(3, int)), TypeError, "input: expected a float32 or float64 array"),
    (fl.NLLLoss, lambda: (np.zeros((3, 4)), np.zeros((3, 4))), TypeError, "target: expected class indices of an integer dtype"),
])
def test_bad_input(make, args, error, message):
    out = np.full(args()[0].shape, 7.0) if args()[0].dtype.kind == "f" else None
    with pytest.raises(error, match=message):
        make()(*args(), out=out)
    if out is not None:
        assert (out == 7.0).all()


@pytest.mark.parametrize("make, message", [
    (lambda: fl.CrossEntropyLoss(label_smoothing=1.5), "label_smoothing: expected a number in"),
    (lambda: fl.CrossEntropyLoss(softcap=0.0), "softcap: expected a positive number"),
    (lambda: fl.CrossEntropyLoss(z_loss=-1.0), "z_loss: expected a non-negative number"),
    (lambda: fl.NLLLoss(reduction="batchmean"), "reduction: expected one of"),
])
def test_bad_options(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("make, error, message", [
    (lambda: fl.CrossEntropyLoss(ignore_index=1.5), TypeError, r"ignore_index: expected an int, got 1.5"),
    (lambda: fl.NLLLoss(ignore_index=True), TypeError, r"ignore_index: expected an int, got True"),
    (lambda: fl.DiceLoss("multiclass", ignore_index="0"), TypeError, r"ignore_index: expected an int or None, got '0'"),
    (lambda: fl.LinearCrossEntropyLoss(chunk_rows=0), ValueError, r"chunk_rows: expected a positive int or None, got 0"),
    (lambda: fl.NTXentLoss(chunk_rows=2.0), ValueError, r"chunk_rows: expected a positive int or None, got 2.0"),
])
def test_bad_integer_options(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("options", [OPTIONS[0], OPTIONS[-1]], ids=["plain", "all-options"])
@pytest.mark.parametrize("shape", [((700, 129), (700,)), ((9, 40, 301), (9, 301))], ids=["2d", "3d"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_for_any_thread_count(options, shape, dtype):
    ours, _, x, t = build(fl.CrossEntropyLoss, options, "ignore", *shape, np.random.default_rng(4), dtype)
    results = []
    for threads in (1, 2, 4):
        with parallel(threads):
            loss, grad = fl.CrossEntropyLoss(**ours)(x, t)
            results.append((np.asarray(loss).tobytes(), grad.tobytes()))
    assert len(set(results)) == 1


@pytest.mark.parametrize("options", [{}, {"weight": np.linspace(-0.5, 2.0, 16), "ignore_index": 3},
                                     {"z_loss": 1e-3}, {"reduction": "none"}],
                         ids=["plain", "weight-ignore", "z_loss", "none"])
@pytest.mark.parametrize("C", [1, 2, 11, 16])
@pytest.mark.parametrize("dtype", DTYPES)
def test_small_rows_give_the_row_kernels_bits(options, C, dtype):
    """Rows of at most 16 classes run 16 to a vector (xent_small); each float32 value is the
    row kernel's, bit for bit: the same rows read as (1, C, N), which the strided row kernel
    works, give the same loss and gradient. Specials included (inf, -inf, NaN, -0.0, huge).
    float64: within an ulp or two (libmvec's exp here, glibc's in the row kernel's scalar tail,
    which depends on C and the CPU level)."""
    rng = np.random.default_rng(7)
    N = 53
    x = rng.standard_normal((N, C)) * 4
    x[3, 0], x[5] = np.inf, -np.inf
    x[7, C - 1], x[9, 0], x[11, 0] = np.nan, -0.0, 1e30
    x = x.astype(dtype)
    t = rng.integers(0, C, N)
    if "ignore_index" in options:
        t[::5] = options["ignore_index"]
    options = dict(options)
    if "weight" in options:
        options["weight"] = options["weight"][:C].astype(dtype)
        t[t >= C] = 0
        if options["ignore_index"] >= C:
            del options["ignore_index"]
    crit = fl.CrossEntropyLoss(**options)
    grad_output = rng.uniform(0.5, 1.5, N).astype(dtype) if options.get("reduction") == "none" else 0.75
    loss, grad = crit(x, t, grad_output=grad_output)
    loss_t, grad_t = crit(np.ascontiguousarray(x.T[None]), t[None], grad_output=np.asarray(grad_output)[None]
                          if np.ndim(grad_output) else grad_output)
    grad_t = np.ascontiguousarray(grad_t[0].T)
    if dtype == np.float32:
        np.testing.assert_array_equal(np.asarray(loss).reshape(-1).view(np.uint8),
                                      np.asarray(loss_t).reshape(-1).view(np.uint8))
        np.testing.assert_array_equal(grad.view(np.uint8), grad_t.view(np.uint8))
    else:
        np.testing.assert_allclose(np.reshape(loss, -1), np.reshape(loss_t, -1), rtol=4e-16, atol=0)
        finite = np.isfinite(grad_t)
        np.testing.assert_array_equal(np.isfinite(grad), finite)
        np.testing.assert_allclose(grad[finite], grad_t[finite], rtol=0,
                                   atol=4e-16 * np.abs(grad_t[finite]).max())
    np.testing.assert_array_equal(np.asarray(crit.loss(x, t)).reshape(-1).view(np.uint8),
                                  np.asarray(loss).reshape(-1).view(np.uint8))


@pytest.fixture
def streaming():
    """Cross entropy's streamed gradient (non-temporal stores from a row of scratch, for
    gradients of 64 MiB and more) from any size on, and then back."""
    kernel = fl.losses.softmax._kernel
    previous = kernel.set_stream_min_bytes(0)
    yield kernel
    kernel.set_stream_min_bytes(previous)


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"weight": "w", "ignore_index": 3},
                                     {"reduction": "none", "z_loss": 1e-3}],
                         ids=["plain", "smoothing", "weight-ignore", "none-z_loss"])
@pytest.mark.parametrize("C", [17, 1031])
@pytest.mark.parametrize("dtype", DTYPES)
def test_streamed_gradient_has_the_same_bits(streaming, options, C, dtype):
    """The streamed gradient is the plain one, bit for bit: every class count's head and tail
    around the whole vectors, the target's class on either side of them, a gradient not
    aligned to a vector (one element in), on one thread and two, with specials in the rows."""
    rng = np.random.default_rng(11)
    N = 37
    x = rng.standard_normal((N, C)) * 4
    x[3, 0], x[5, 1], x[7, C - 1], x[9, 2] = np.inf, -np.inf, np.nan, 1e30
    x = x.astype(dtype)
    t = rng.integers(0, C, N)
    t[::6], t[1::6] = 0, C - 1
    options = dict(options)
    if options.get("weight") == "w":
        options["weight"] = rng.uniform(0.5, 2.0, C).astype(dtype)
        t[::5] = 3
    crit = fl.CrossEntropyLoss(**options)
    misaligned = np.empty(N * C + 1, dtype)[1:].reshape(N, C)
    results = []
    for limit in (1 << 62, 0):
        streaming.set_stream_min_bytes(limit)
        for threads in (1, 2):
            with parallel(threads):
                before = streaming.streamed()
                loss, grad = crit(x, t)
                loss_out, grad_out = crit(x, t, out=misaligned)
                assert streaming.streamed() - before == (2 if limit == 0 else 0)
            results.append((np.asarray(loss).tobytes(), grad.tobytes(), np.asarray(loss_out).tobytes(), grad_out.tobytes()))
    assert results[0][0] == results[0][2] and results[0][1] == results[0][3]
    assert len(set(results)) == 1


def test_streamed_gradient_only_where_it_applies(streaming):
    """Probability targets, class weights with label smoothing, the hessian, the softcap and
    the loss alone keep the plain path (their gradients are read back or not written)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((20, 40)).astype(np.float32)
    t = rng.integers(0, 40, 20)
    w = rng.uniform(0.5, 2.0, 40).astype(np.float32)
    before = streaming.streamed()
    fl.CrossEntropyLoss()(x, rng.dirichlet(np.ones(40), 20).astype(np.float32))
    fl.CrossEntropyLoss(weight=w, label_smoothing=0.1)(x, t)
    fl.CrossEntropyLoss(softcap=5.0)(x, t)
    fl.CrossEntropyLoss().loss(x, t)
    fl.CrossEntropyLoss().grad_hess(x, t)
    assert streaming.streamed() == before
    fl.CrossEntropyLoss(weight=w)(x, t)
    assert streaming.streamed() == before + 1


def test_out_and_functional():
    rng = np.random.default_rng(6)
    x, t = rng.standard_normal((8, 6)), rng.integers(0, 6, 8)
    out = np.empty_like(x)
    loss, grad = fl.CrossEntropyLoss(label_smoothing=0.1)(x, t, out=out)
    assert grad is out
    np.testing.assert_array_equal(fl.functional.cross_entropy(x, t, label_smoothing=0.1), loss)
    np.testing.assert_array_equal(fl.functional.nll_loss_and_grad(x, t).grad, fl.NLLLoss()(x, t).grad)


# ---------------------------------------------------------------- LinearCrossEntropyLoss

LINEAR_OPTIONS = [{}, {"weight": True}, {"label_smoothing": 0.1}, {"weight": True, "label_smoothing": 0.2}]


def linear_case(rng, N, H, C, kind, dtype, options, with_bias):
    X = rng.standard_normal((N, H) if N is not None else (H,)).astype(dtype)
    W = (0.3 * rng.standard_normal((C, H))).astype(dtype)
    b = rng.standard_normal(C).astype(dtype) if with_bias else None
    shape = (C,) if N is None else (N, C)
    t = make_targets(rng, shape, shape[:-1], kind, -100)
    t = t.astype(dtype) if kind == "prob" else t
    ours = {k: (rng.uniform(0.5, 2, C).astype(dtype) if k == "weight" else v) for k, v in options.items()}
    return X, W, b, t, ours


@pytest.mark.parametrize("options", LINEAR_OPTIONS, ids=[str(o) for o in LINEAR_OPTIONS])
@pytest.mark.parametrize("kind", ["ignore", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_cross_entropy_matches_torch(options, kind, reduction, dtype):
    rng = np.random.default_rng(12)
    # (H = 0: logits of the bias alone, or all 0; the input and weight gradients are empty)
    for N, chunk_rows, with_bias, H in [(37, 8, True, 16), (37, None, False, 16), (5, 1, True, 16),
                                        (None, None, True, 16), (0, None, True, 16), (37, 8, True, 0),
                                        (None, None, False, 0)]:
        X, W, b, t, ours = linear_case(rng, N, H, 50, kind, dtype, options, with_bias)
        crit = fl.LinearCrossEntropyLoss(reduction=reduction, chunk_rows=chunk_rows, **ours)
        grad_output = rng.uniform(0.5, 1.5, () if N is None else (N,)).astype(dtype) if reduction == "none" else 0.75
        loss, grads = crit(X, W, t, b, grad_output=grad_output)
        assert len(grads) == (2 if b is None else 3)   # one gradient per input given (SPEC 1)
        gx, gw, gb = grads + (None,) * (3 - len(grads))
        tensors = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in (X, W)]
        bias = None if b is None else torch.tensor(b.astype(np.float64), requires_grad=True)
        target = torch.tensor(t.astype(np.float64) if kind == "prob" else t)
        theirs = {k: (torch.tensor(v.astype(np.float64)) if k == "weight" else v) for k, v in ours.items()}
        ignore = {} if kind == "prob" else {"ignore_index": -100}  # torch refuses it with probabilities
        ref = F.linear_cross_entropy(*tensors, target, linear_bias=bias, reduction=reduction, **ignore, **theirs)
        composed = F.cross_entropy(F.linear(*tensors, bias), target, reduction=reduction, **theirs)
        ref.backward(torch.tensor(np.asarray(grad_output, dtype=np.float64)).expand(ref.shape))
        what = f"{options} {kind} {reduction} N={N} H={H} chunk={chunk_rows}"
        assert_close(loss, ref.detach().numpy(), dtype, what=what)
        assert_close(loss, composed.detach().numpy(), dtype, what=what + " vs cross_entropy(linear)")
        assert_close(gx, tensors[0].grad.numpy(), dtype, what=what + " d input")
        assert_close(gw, tensors[1].grad.numpy(), dtype, what=what + " d linear_weight")
        if b is not None:
            assert_close(gb, bias.grad.numpy(), dtype, what=what + " d linear_bias")
        assert_close(crit.loss(X, W, t, b), ref.detach().numpy(), dtype, what=what + " loss()")


def test_linear_cross_entropy_gradients_match_finite_differences():
    rng = np.random.default_rng(13)
    X, W, b, t, ours = linear_case(rng, 6, 4, 7, "ignore", np.float64, {"label_smoothing": 0.1}, True)
    crit = fl.LinearCrossEntropyLoss(chunk_rows=4, **ours)
    _, grads = crit(X, W, t, b)
    arrays = [X, W, b]
    for position in range(3):
        def objective(*a):
            return float(crit.loss(a[0], a[1], t, a[2]))
        numeric = central_differences(objective, arrays, position)
        np.testing.assert_allclose(grads[position], numeric, rtol=1e-6, atol=1e-9)


def test_linear_cross_entropy_never_holds_the_logits():
    import tracemalloc
    rng = np.random.default_rng(14)
    N, H, C = 4096, 64, 4096
    X, W, b, t, _ = linear_case(rng, N, H, C, "index", np.float32, {}, True)
    fl.empty_cache()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        _, grads = fl.LinearCrossEntropyLoss()(X, W, t, b)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    gradients = sum(g.nbytes for g in grads)
    logits = N * C * 4
    # the gradients plus a chunk of logits (512 rows here) and a slice of the weight gradient
    # (about the input's size) and a few O(N + C) vectors, far under the (N, C) logits alone
    assert peak < gradients + 512 * C * 4 + X.nbytes + 8 * (N + C) * 8, (peak, gradients, X.nbytes)
    assert peak < logits / 4


@pytest.mark.parametrize("args, error, message", [
    (lambda: (np.zeros((3, 4)), np.zeros((5, 3)), np.zeros(3, int)), ValueError, r"linear_weight: expected shape \(C, 4\), got \(5, 3\)"),
    (lambda: (np.zeros((3, 4)), np.zeros((5, 4)), np.zeros(3, int), np.zeros(4)), ValueError, r"linear_bias: expected shape \(5,\), got \(4,\)"),
    (lambda: (np.zeros((3, 4)), np.zeros((5, 4), np.float32), np.zeros(3, int)), TypeError, "linear_weight: expected dtype float64"),
    (lambda: (np.zeros((2, 3, 4)), np.zeros((5, 4)), np.zeros(2, int)), ValueError, r"input: expected shape \(N, H\) or \(H,\)"),
    (lambda: (np.zeros((3, 4)), np.zeros((5, 4)), np.array([0, 5, 1])), IndexError, r"got 5 at position \(1,\)"),
])
def test_linear_cross_entropy_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        fl.LinearCrossEntropyLoss()(*args())


# ---------------------------------------------------------------- margin losses over rows

def multilabel_targets(rng, shape):
    C = shape[-1]
    t = np.full(shape, -1, np.int64)
    for row in t.reshape(-1, C):
        k = rng.integers(0, C + 1)
        row[:k] = rng.permutation(C)[:k]
        row[k:] = rng.integers(-1, C, C - k)  # after the first -1: ignored, any value
        if k < C:
            row[k] = -1
    return t


ROW_CASES = [
    ("multi_margin", {}, lambda x, t, r, w=None, **o: F.multi_margin_loss(x, t, weight=w, reduction=r, **o)),
    ("multi_margin", {"p": 2, "margin": 0.7, "weight": True},
     lambda x, t, r, w=None, **o: F.multi_margin_loss(x, t, weight=w, reduction=r, **o)),
    ("multilabel_margin", {}, lambda x, t, r, **o: F.multilabel_margin_loss(x, t, reduction=r)),
    ("multilabel_soft_margin", {}, lambda x, t, r, w=None: F.multilabel_soft_margin_loss(x, t, weight=w, reduction=r)),
    ("multilabel_soft_margin", {"weight": True},
     lambda x, t, r, w=None: F.multilabel_soft_margin_loss(x, t, weight=w, reduction=r)),
]
ROW_CRITERIA = {"multi_margin": fl.MultiMarginLoss, "multilabel_margin": fl.MultiLabelMarginLoss,
                "multilabel_soft_margin": fl.MultiLabelSoftMarginLoss}


def row_case(name, options, shape, rng, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    C = shape[-1]
    if name == "multi_margin":
        t = rng.integers(0, C, shape[:-1])
    elif name == "multilabel_margin":
        t = multilabel_targets(rng, shape)
    else:
        t = rng.integers(0, 2, shape).astype(dtype)
    ours = {k: v for k, v in options.items() if k != "weight"}
    weight = rng.uniform(0.5, 2, C).astype(dtype) if options.get("weight") else None
    if weight is not None:
        ours["weight"] = weight
    return x, t, ours, weight


@pytest.mark.parametrize("name, options, oracle", ROW_CASES, ids=[f"{n}-{o}" for n, o, _ in ROW_CASES])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_row_losses_match_torch(name, options, oracle, reduction, dtype):
    rng = np.random.default_rng(21)
    for shape in [(6,), (7, 6), (0, 6), (300, 131)]:
        x, t, ours, weight = row_case(name, options, shape, rng, dtype)
        crit = ROW_CRITERIA[name](reduction=reduction, **ours)
        grad_output = rng.uniform(0.5, 1.5, shape[:-1]).astype(dtype) if reduction == "none" else 0.75
        loss, grad = crit(x, t, grad_output=grad_output)
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        tt = torch.tensor(t.astype(np.float64) if name == "multilabel_soft_margin" else t)
        extra = {k: v for k, v in ours.items() if k != "weight"}
        w = None if weight is None else torch.tensor(weight.astype(np.float64))
        ref = oracle(xt, tt, reduction, **({"w": w} if name != "multilabel_margin" else {}), **extra)
        ref.backward(torch.tensor(np.asarray(grad_output, dtype=np.float64)).expand(ref.shape))
        what = f"{name} {options} {reduction} {shape}"
        if shape[0] == 0 and reduction != "none":
            # torch's multi_margin and multilabel_margin return uninitialised memory for the
            # mean and the sum of an empty batch (a different value from run to run); ours
            # are nan and 0, as every other mean and sum of nothing
            assert (np.isnan(loss) if reduction == "mean" else loss == 0) and grad.shape == x.shape
            continue
        assert_close(loss, ref.detach().numpy(), dtype, what=what)
        assert_close(grad, xt.grad.numpy(), dtype, what=what + " grad")
        assert_close(crit.loss(x, t), ref.detach().numpy(), dtype, what=what + " loss()")


@pytest.mark.parametrize("name, options, oracle", ROW_CASES, ids=[f"{n}-{o}" for n, o, _ in ROW_CASES])
def test_row_losses_gradients_match_finite_differences(name, options, oracle):
    rng = np.random.default_rng(22)
    x, t, ours, _ = row_case(name, options, (5, 7), rng, np.float64)
    weights = rng.uniform(0.5, 1.5, 5)
    crit = ROW_CRITERIA[name](reduction="none", **ours)
    _, grad = crit(x, t, grad_output=weights)
    numeric = central_differences(lambda a: float(np.sum(crit.loss(a, t) * weights)), [x], 0)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("make, args, error, message", [
    (fl.MultiMarginLoss, lambda: (np.zeros((2, 3)), np.array([0, 3])), IndexError,
     r"target: expected class indices in \[0, 3\), got 3 at position \(1,\)"),
    (lambda: fl.MultiMarginLoss(p=3), lambda: (np.zeros((2, 3)), np.zeros(2, int)), ValueError, "p: expected 1 or 2, got 3"),
    (fl.MultiLabelMarginLoss, lambda: (np.zeros((2, 3)), np.array([[0, 2, -1], [1, 3, -1]])), IndexError,
     r"before each row's first -1, got 3 at position \(1, 1\)"),
    (fl.MultiLabelMarginLoss, lambda: (np.zeros((2, 3)), np.zeros((2, 3))), TypeError, "target: expected class indices"),
    (fl.MultiLabelSoftMarginLoss, lambda: (np.zeros((2, 3)), np.zeros((2, 4))), ValueError, r"target: expected shape \(2, 3\)"),
    (fl.MultiMarginLoss, lambda: (np.zeros((2, 3, 4)), np.zeros((2, 4), int)), ValueError, r"input: expected shape \(N, C\) or \(C,\)"),
])
def test_row_losses_bad_input(make, args, error, message):
    with pytest.raises(error, match=message):
        make()(*args())


# ---------------------------------------------------------------- DiceLoss

def torch_dice(x, y, reduction, mode, from_logits=True, smooth=0.0, eps=1e-7, ignore_index=None):
    """SPEC's Dice (segmentation_models_pytorch up to 0.3), composed in torch."""
    N, C = x.shape[:2]
    p = (x.softmax(1) if mode == "multiclass" else x.sigmoid()) if from_logits else x
    p = p.reshape(N, C, -1)
    if mode == "multiclass":
        t = y.reshape(N, -1)
        m = (t != ignore_index) if ignore_index is not None else torch.ones_like(t, dtype=torch.bool)
        target = F.one_hot(t * m, C).permute(0, 2, 1).to(p.dtype) * m[:, None]
        p = p * m[:, None]
    else:
        t = y.reshape(N, C, -1)
        m = (t != ignore_index) if ignore_index is not None else torch.ones_like(t, dtype=torch.bool)
        p, target = p * m, t * m
    inner, total = (p * target).sum((0, 2)), (p + target).sum((0, 2))
    loss = (1 - (2 * inner + smooth) / (total + smooth).clamp_min(eps)) * (target.sum((0, 2)) > 0)
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


DICE_OPTIONS = [{"mode": "multiclass"}, {"mode": "multiclass", "ignore_index": 255, "smooth": 1.0},
                {"mode": "multilabel"}, {"mode": "multilabel", "from_logits": False},
                {"mode": "multilabel", "ignore_index": -1, "smooth": 0.5}, {"mode": "binary"},
                {"mode": "binary", "eps": 10.0}]


def dice_case(options, shape, rng, dtype):
    mode = options["mode"]
    shape = (shape[0], 1) + shape[2:] if mode == "binary" else shape
    x = rng.standard_normal(shape)
    if not options.get("from_logits", True):
        x = 1 / (1 + np.exp(-x))
    if mode == "multiclass":
        t = rng.integers(0, max(1, shape[1] - 1), (shape[0],) + shape[2:])  # the last class absent
        if "ignore_index" in options and t.size:
            t.reshape(-1)[::7] = options["ignore_index"]
    else:
        t = (rng.random(shape) > 0.5).astype(dtype)
        if "ignore_index" in options and t.size:
            t.reshape(-1)[::5] = options["ignore_index"]
    return x.astype(dtype), t


@pytest.mark.parametrize("options", DICE_OPTIONS, ids=[str(o) for o in DICE_OPTIONS])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dice_matches_torch(options, reduction, dtype):
    rng = np.random.default_rng(31)
    for shape in [(3, 4, 5, 6), (6, 3), (2, 5, 7), (4, 3, 60, 50)]:
        x, t = dice_case(options, shape, rng, dtype)
        crit = fl.DiceLoss(reduction=reduction, **options)
        grad_output = rng.uniform(0.5, 1.5, x.shape[1]).astype(dtype) if reduction == "none" else 0.75
        loss, grad = crit(x, t, grad_output=grad_output)
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        ref = torch_dice(xt, torch.tensor(t.astype(np.float64) if t.dtype.kind == "f" else t), reduction, **options)
        ref.backward(torch.tensor(np.asarray(grad_output, dtype=np.float64)).expand(ref.shape))
        what = f"{options} {reduction} {x.shape}"
        assert_close(loss, ref.detach().numpy(), dtype, what=what)
        assert_close(grad, xt.grad.numpy(), dtype, what=what + " grad")
        assert_close(crit.loss(x, t), ref.detach().numpy(), dtype, what=what + " loss()")


@pytest.mark.parametrize("options", DICE_OPTIONS, ids=[str(o) for o in DICE_OPTIONS])
def test_dice_gradient_matches_finite_differences(options):
    rng = np.random.default_rng(32)
    x, t = dice_case(options, (2, 3, 4), rng, np.float64)
    weights = rng.uniform(0.5, 1.5, x.shape[1])
    crit = fl.DiceLoss(reduction="none", **options)
    _, grad = crit(x, t, grad_output=weights)
    numeric = central_differences(lambda a: float(np.sum(crit.loss(a, t) * weights)), [x], 0)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_dice_bitwise_identical_for_any_thread_count():
    x, t = dice_case({"mode": "multiclass"}, (6, 5, 80, 90), np.random.default_rng(33), np.float32)
    results = set()
    for threads in (1, 2, 4):
        with parallel(threads):
            loss, grad = fl.DiceLoss("multiclass")(x, t)
            results.add((np.asarray(loss).tobytes(), grad.tobytes()))
    assert len(results) == 1


@pytest.mark.parametrize("reduction, grad_output", [("mean", np.ones(3)), ("none", np.ones(4))])
def test_dice_bad_grad_output_leaves_out_untouched(reduction, grad_output):
    # pass 1 writes p into the gradient buffer: everything that can fail is checked before it
    x, t = dice_case({"mode": "multiclass"}, (2, 3, 8, 9), np.random.default_rng(34), np.float64)
    out = np.full_like(x, np.nan)
    with pytest.raises(ValueError, match="grad_output: expected"):
        fl.DiceLoss("multiclass", reduction=reduction)(x, t, out=out, grad_output=grad_output)
    assert np.isnan(out).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_dice_binary_takes_inputs_with_or_without_the_channel_axis(dtype):
    # segmentation_models_pytorch flattens a binary input to (N, 1, -1): (N, H, W) and
    # (N, 1, H, W) are the same loss, and the gradient keeps the caller's shape
    rng = np.random.default_rng(34)
    x = rng.standard_normal((3, 5, 6)).astype(dtype)
    t = (rng.random((3, 5, 6)) > 0.5).astype(dtype)
    crit = fl.DiceLoss("binary", smooth=0.5)
    loss, grad = crit(x, t)
    loss1, grad1 = crit(x[:, None], t[:, None])
    assert grad.shape == x.shape and grad1.shape == (3, 1, 5, 6)
    assert np.asarray(loss).tobytes() == np.asarray(loss1).tobytes()
    assert grad.tobytes() == grad1.tobytes()
    xt = torch.tensor(x.astype(np.float64)[:, None], requires_grad=True)
    ref = torch_dice(xt, torch.tensor(t.astype(np.float64)[:, None]), "mean", "binary", smooth=0.5)
    ref.backward()
    assert_close(loss, ref.detach().numpy(), dtype)
    assert_close(grad, xt.grad.numpy()[:, 0], dtype)


@pytest.mark.parametrize("make, args, error, message", [
    (lambda: fl.DiceLoss("binary"), lambda: (np.zeros(()), np.zeros(())), ValueError,
     r"input: expected shape \(N, \*\) or \(N, 1, \*\) for mode 'binary', got \(\)"),
    (lambda: fl.DiceLoss("multiclass"), lambda: (np.zeros(3), np.zeros((), int)), ValueError,
     r"input: expected shape \(N, C, ...\), got \(3,\)"),
    (lambda: fl.DiceLoss("multiclass"), lambda: (np.zeros((2, 3, 4)), np.full((2, 4), 3)), IndexError,
     r"target: expected class indices in \[0, 3\), got 3 at position \(0, 0\)"),
    (lambda: fl.DiceLoss("multilabel"), lambda: (np.zeros((2, 3, 4)), np.zeros((2, 4))), ValueError,
     r"target: expected shape \(2, 3, 4\)"),
    (lambda: fl.DiceLoss("softmax"), lambda: (np.zeros((2, 3)), np.zeros(2, int)), ValueError,
     "mode: expected one of 'binary', 'multiclass', 'multilabel', got 'softmax'"),
])
def test_dice_bad_input(make, args, error, message):
    with pytest.raises(error, match=message):
        make()(*args())


def test_dice_kernel_refuses_the_softmax_link_without_class_indices():
    # its gradient pass reads the slopes from the class indices only
    from fastloss._kernels import softmax as kernel
    x, y = np.zeros((2, 3, 4), np.float32), np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="softmax link takes class-index targets"):
        kernel.dice(x, 2, 3, 4, None, y, ignore_index=None, mode=kernel.DICE_MODES["softmax"], num_threads=1)


# ---------------------------------------------------------------- the shared registry (tests/cases.py)
@pytest.mark.parametrize("case", cases.of_family("softmax"), ids=[c[0] for c in cases.of_family("softmax")])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_registry_cases_match_torch(case, reduction, dtype):
    registry_parity(case, reduction, dtype)
