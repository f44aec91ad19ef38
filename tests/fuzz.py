"""A fuzz run over every criterion (SPEC section 3), driven by hypothesis.

Each example draws a criterion and its options, shapes (empty and 0-d among them), a dtype,
values (+-0, subnormals, +-inf, NaN, +-1e30 sprinkled in), a layout per array (negative
strides, Fortran order, an offset inside a larger buffer, a misaligned one, read-only) and an out= choice (none,
a fresh buffer, or an input's own memory). It asserts that the call either raises a clear
exception that names an argument, with out= untouched, or returns exactly what the same call
on C-contiguous copies returns, finite wherever torch (same dtype) is finite.

`run(examples)` is called in a subprocess by tests/test_safety.py, so that a crash fails the
test instead of the test run: FASTLOSS_FUZZ_EXAMPLES (default 500) sets the count, and
FASTLOSS_FUZZ_SEED makes a run differ from CI's (which is derandomised).
"""
import os
import re
import sys

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastloss as fl

SPECIALS = np.array([0.0, -0.0, 5e-324, -1e-310, np.inf, -np.inf, np.nan, 1e30, -1e30, 1.0, -1.0])
ERRORS = (ValueError, TypeError, IndexError, NotImplementedError)
CLEAR = re.compile(r"^[\w ()]+?(?: \([\w ]+\))?: ")   # "target: expected ...", "CTCLoss: ..."


def values(rng, shape, special_rate, low=None, high=None):
    x = np.array(rng.standard_normal(shape) * 3 if low is None else rng.uniform(low, high, shape))
    if x.size and special_rate:
        mask = np.array(rng.random(shape) < special_rate)
        x[mask] = rng.choice(SPECIALS, mask.sum())
    return x


def labels(rng, shape, C, bad_rate):
    t = np.array(rng.integers(0, max(C, 1), shape))
    if t.size and bad_rate:
        mask = np.array(rng.random(shape) < bad_rate)
        t[mask] = rng.choice([-100, -1, C, -2 ** 63, 2 ** 62], mask.sum())
    return t


def shape_of(rng, ndim, empty):
    return tuple(int(0 if empty and d == 0 else rng.integers(1, 6)) for d in range(ndim))


# ------------------------------------------------------------------ the registry of criteria
# name -> (rng, dtype, special_rate, empty) -> (criterion, arrays, torch loss or None)
def _pointwise(make, second=None, third=None, low=None, high=None):
    def build(rng, dtype, s, empty):
        shape = shape_of(rng, int(rng.integers(0, 4)), empty)
        x = values(rng, shape, s, low, high).astype(dtype)
        y = (second or (lambda r, sh: values(r, sh, s)))(rng, shape).astype(dtype)
        arrays = (x, y) if third is None else (x, y, third(rng, shape).astype(dtype))
        return make(rng), arrays
    return build


def _sometimes(rng, shape, good, bad, rate=0.02):
    """Targets in the loss's range, with an out-of-range value now and then (a clear error)."""
    return np.where(rng.random(shape) < rate, bad, good).astype(float)


def _quantiles(rng, dtype, s, empty):
    """QuantileLoss with a sequence: (N, Q) scores, one target per row or per element."""
    Q = int(rng.integers(1, 5))
    rows = shape_of(rng, 1, empty)
    x = values(rng, rows + (Q,), s).astype(dtype)
    y = values(rng, rows if rng.random() < 0.5 else rows + (Q,), s).astype(dtype)
    return fl.QuantileLoss(list(np.sort(rng.uniform(0.01, 0.99, Q)))), (x, y)


def _rows(make, target):
    def build(rng, dtype, s, empty):
        ndim = int(rng.integers(0 if make is not fl.MultiLabelSoftMarginLoss else 1, 3))
        shape = shape_of(rng, ndim, empty)
        C = shape[-1] if shape else 1
        return make(rng), (values(rng, shape, s).astype(dtype), target(rng, shape, C))
    return build


def _cross_entropy(rng, dtype, s, empty):
    shape = shape_of(rng, int(rng.integers(1, 4)), empty)
    C = shape[1] if len(shape) > 1 else shape[0]
    options = {}
    if rng.random() < 0.3:
        options["weight"] = rng.uniform(0, 2, C)
    if rng.random() < 0.3:
        options["label_smoothing"] = float(rng.uniform(0, 1))
    if rng.random() < 0.2:
        options["z_loss"] = 0.1
    if rng.random() < 0.2:
        options["softcap"] = 5.0
    x = values(rng, shape, s).astype(dtype)
    if rng.random() < 0.3:
        p = rng.random(shape)
        axis = 1 if len(shape) > 1 else 0
        return fl.CrossEntropyLoss(**options), (x, (p / np.maximum(p.sum(axis, keepdims=True), 1e-300)).astype(dtype))
    target_shape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
    return fl.CrossEntropyLoss(**options), (x, labels(rng, target_shape, C, 0.05))


def _index_loss(make):
    def build(rng, dtype, s, empty):
        shape = shape_of(rng, int(rng.integers(1, 4)), empty)
        C = shape[1] if len(shape) > 1 else shape[0]
        target_shape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
        return make(rng, C), (values(rng, shape, s).astype(dtype), labels(rng, target_shape, C, 0.05))
    return build


def _dice(rng, dtype, s, empty):
    mode = rng.choice(["binary", "multiclass", "multilabel"])
    shape = shape_of(rng, int(rng.integers(2, 4)), empty)
    if mode == "binary" and rng.random() < 0.5:
        shape = shape[:1] + (1,) + shape[2:]
    options = {"ignore_index": 255} if rng.random() < 0.3 else {}
    crit = fl.DiceLoss(mode, smooth=float(rng.choice([0.0, 1.0])), **options)
    x = values(rng, shape, s).astype(dtype)
    if mode == "multiclass":
        return crit, (x, labels(rng, shape[:1] + shape[2:], shape[1], 0.05))
    return crit, (x, (rng.random(shape) < 0.5).astype(dtype))


def _embedding(make, n_inputs, label=None):
    def build(rng, dtype, s, empty):
        shape = shape_of(rng, int(rng.integers(1, 3)), empty)
        arrays = [values(rng, shape, s).astype(dtype) for _ in range(n_inputs)]
        if label is not None:
            arrays.append(label(rng, shape[:-1]))
        return make(rng), tuple(arrays)
    return build


def _ntxent(rng, dtype, s, empty):
    shape = shape_of(rng, 2, empty)
    return fl.NTXentLoss(temperature=float(rng.choice([0.1, 0.5]))), tuple(values(rng, shape, s).astype(dtype) for _ in range(2))


def _linear(rng, dtype, s, empty):
    N, H, C = (int(0 if empty else rng.integers(1, 6)), int(rng.integers(1, 5)), int(rng.integers(1, 6)))
    x = values(rng, (N, H), s).astype(dtype)
    W = values(rng, (C, H), s).astype(dtype)
    arrays = (x, W, labels(rng, (N,), C, 0.05))
    if rng.random() < 0.5:
        arrays += (values(rng, (C,), s).astype(dtype),)
    return fl.LinearCrossEntropyLoss(chunk_rows=int(rng.choice([1, 2, 512]))), arrays


def _ctc(rng, dtype, s, empty):
    T, N, C = int(rng.integers(1, 8)), int(0 if empty else rng.integers(1, 4)), int(rng.integers(2, 5))
    lp = values(rng, (T, N, C), s, -5.0, 0.0).astype(dtype)
    S = int(rng.integers(0, 4))
    targets = rng.integers(1, C, (N, S)) if rng.random() < 0.9 else rng.integers(-1, C + 1, (N, S))
    return fl.CTCLoss(zero_infinity=bool(rng.random() < 0.5)), (lp, targets, rng.integers(0, T + 1, N),
                                                                rng.integers(0, S + 1, N))


REGISTRY = {
    "L1Loss": _pointwise(lambda r: fl.L1Loss()),
    "MSELoss": _pointwise(lambda r: fl.MSELoss()),
    "SmoothL1Loss": _pointwise(lambda r: fl.SmoothL1Loss(beta=float(r.choice([0.0, 0.5, 1.0])))),
    "HuberLoss": _pointwise(lambda r: fl.HuberLoss(delta=float(r.choice([0.5, 2.0])))),
    "SoftMarginLoss": _pointwise(lambda r: fl.SoftMarginLoss(), lambda r, sh: r.choice([-1.0, 1.0], sh)),
    "BCELoss": _pointwise(lambda r: fl.BCELoss(), lambda r, sh: r.uniform(0, 1, sh), low=0.0, high=1.0),
    "BCEWithLogitsLoss": _pointwise(lambda r: fl.BCEWithLogitsLoss(pos_weight=r.uniform(0.5, 2, 1) if r.random() < 0.3 else None),
                                    lambda r, sh: r.uniform(0, 1, sh)),
    "PoissonNLLLoss": _pointwise(lambda r: fl.PoissonNLLLoss(log_input=bool(r.random() < 0.5), full=bool(r.random() < 0.5)),
                                 lambda r, sh: r.poisson(3.0, sh).astype(float)),
    "GaussianNLLLoss": _pointwise(lambda r: fl.GaussianNLLLoss(full=bool(r.random() < 0.5)), third=lambda r, sh: r.uniform(0, 2, sh)),
    "KLDivLoss": _pointwise(lambda r: fl.KLDivLoss(reduction=str(r.choice(["mean", "batchmean", "sum", "none"])),
                                                   log_target=bool(r.random() < 0.5)), lambda r, sh: r.uniform(0, 1, sh)),
    "HingeEmbeddingLoss": _pointwise(lambda r: fl.HingeEmbeddingLoss(), lambda r, sh: r.choice([-1.0, 1.0], sh)),
    "MarginRankingLoss": _pointwise(lambda r: fl.MarginRankingLoss(margin=0.1), third=lambda r, sh: r.choice([-1.0, 1.0], sh)),
    "SigmoidFocalLoss": _pointwise(lambda r: fl.SigmoidFocalLoss(gamma=float(r.choice([0.0, 1.5, 2.0]))),
                                   lambda r, sh: (r.random(sh) < 0.5).astype(float)),
    "PinballLoss": _pointwise(lambda r: fl.PinballLoss(float(r.choice([0.1, 0.5, 0.9])))),
    "QuantileLoss": _quantiles,
    "PseudoHuberLoss": _pointwise(lambda r: fl.PseudoHuberLoss(delta=float(r.choice([0.5, 2.0])))),
    "LogCoshLoss": _pointwise(lambda r: fl.LogCoshLoss()),
    "TweedieLoss": _pointwise(lambda r: fl.TweedieLoss(power=float(r.choice([1.01, 1.5, 1.99]))),
                              lambda r, sh: _sometimes(r, sh, r.poisson(1.0, sh) * r.uniform(0, 3, sh), -1.0)),
    "GammaLoss": _pointwise(lambda r: fl.GammaLoss(), lambda r, sh: _sometimes(r, sh, r.gamma(2.0, 1.0, sh), 0.0)),
    "ExponentialLoss": _pointwise(lambda r: fl.ExponentialLoss(),
                                  lambda r, sh: _sometimes(r, sh, (r.random(sh) < 0.5) * 1.0, 2.0)),
    "CrossEntropyLoss": _cross_entropy,
    "NLLLoss": _index_loss(lambda r, C: fl.NLLLoss(weight=r.uniform(0, 2, C) if r.random() < 0.3 else None)),
    "SoftmaxFocalLoss": _index_loss(lambda r, C: fl.SoftmaxFocalLoss(gamma=float(r.choice([0.0, 2.0])))),
    "MultiMarginLoss": _rows(lambda r: fl.MultiMarginLoss(p=int(r.choice([1, 2]))),
                             lambda r, sh, C: labels(r, sh[:-1], C, 0.05)),
    "MultiLabelMarginLoss": _rows(lambda r: fl.MultiLabelMarginLoss(),
                                  lambda r, sh, C: np.where(r.random(sh) < 0.3, -1, r.integers(0, C, sh)) if sh else np.array(-1)),
    "MultiLabelSoftMarginLoss": _rows(lambda r: fl.MultiLabelSoftMarginLoss(), lambda r, sh, C: (r.random(sh) < 0.5).astype(float)),
    "DiceLoss": _dice,
    "LinearCrossEntropyLoss": _linear,
    "TripletMarginLoss": _embedding(lambda r: fl.TripletMarginLoss(swap=bool(r.random() < 0.5)), 3),
    "TripletMarginWithDistanceLoss": _embedding(lambda r: fl.TripletMarginWithDistanceLoss(
        distance_function=str(r.choice(["euclidean", "cosine"]))), 3),
    "CosineEmbeddingLoss": _embedding(lambda r: fl.CosineEmbeddingLoss(margin=0.2), 2, lambda r, sh: r.choice([-1.0, 1.0], sh)),
    "ContrastiveLoss": _embedding(lambda r: fl.ContrastiveLoss(), 2, lambda r, sh: r.integers(0, 2, sh)),
    "NTXentLoss": _ntxent,
    "CTCLoss": _ctc,
}


# ------------------------------------------------------------------ layouts and out= choices

def relayout(a, kind, rng):
    """The same values in another memory layout."""
    if not isinstance(a, np.ndarray):
        return a
    if a.ndim == 0 and kind != "readonly":
        return a.copy()
    if kind == "reversed":
        return np.flip(np.flip(a).copy())
    if kind == "fortran":
        return np.asfortranarray(a.copy())
    if kind == "offset":
        buffer = np.empty(a.size + 3, a.dtype)
        view = buffer[3:].reshape(a.shape)
        view[...] = a
        return view
    if kind == "strided":
        buffer = np.empty(a.shape + (2,), a.dtype)
        buffer[..., 0] = a
        return buffer[..., 0]
    if kind == "misaligned":   # a byte offset: the kernels must copy it, not load it unaligned
        buffer = np.empty(a.nbytes + 1, np.uint8)
        view = buffer[1:].view(a.dtype).reshape(a.shape)
        view[...] = a
        return view
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    return a.copy()   # the originals stay as they were (an alias-safe out= may write over a copy)


def outcome(call):
    try:
        return "ok", call()
    except ERRORS as e:
        return "error", e


def same(a, b):
    if a is None or b is None:
        return a is b
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def check(name, seed, layouts, out_kind, special_rate, empty, dtype):
    rng = np.random.default_rng(seed)
    crit, arrays = REGISTRY[name](rng, dtype, special_rate, empty)
    kind, base = outcome(lambda: crit(*arrays))
    if kind == "error":
        assert CLEAR.match(str(base)), f"{name}: unclear error {base!r}"
    moved = tuple(relayout(a, k, rng) for a, k in zip(arrays, layouts))
    out = None
    if kind == "ok" and out_kind != "none":
        grads = base.grad if isinstance(base.grad, tuple) else (base.grad,)
        if out_kind == "fresh":
            out = tuple(None if g is None else np.full_like(g, 7) for g in grads)
        else:   # an input's own memory, where shapes allow: refused, or (pointwise) alias-safe
            out = tuple(None if g is None else np.full_like(g, 7) for g in grads)
            for i, a in enumerate(moved):
                if isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable and a.dtype == grads[0].dtype \
                        and a.shape == grads[0].shape and a.size:
                    out = (a,) + out[1:]
                    break
        out = out if len(out) > 1 else out[0]
        if out is not None and (isinstance(out, tuple) and all(o is None for o in out)):
            out = None
    before = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in moved]
    outs = () if out is None else [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
    outs_before = [o.copy() for o in outs]
    result_kind, result = outcome(lambda: crit(*moved, out=out))
    if result_kind == "error":
        assert CLEAR.match(str(result)), f"{name}: unclear error {result!r}"
        aliased = any(np.shares_memory(o, a) for o in outs for a in moved if isinstance(a, np.ndarray))
        assert kind == "error" or aliased or outs, f"{name}: {result!r} only after a change of layout"
        if kind == "error" and not aliased:
            assert type(result) is type(base) and str(result) == str(base), (name, result, base)
        for o, b in zip(outs, outs_before):   # nothing written on failure
            assert o.tobytes() == b.tobytes(), f"{name}: out= written before {result!r}"
        for a, b in zip(moved, before):
            if isinstance(a, np.ndarray):
                assert np.array_equal(a, b, equal_nan=True), f"{name}: an input changed before {result!r}"
        return
    assert kind == "ok", f"{name}: succeeded after a change of layout, where the contiguous call raised {base!r}"
    assert same(result.loss, base.loss), f"{name}: the loss depends on the layout"
    assert same(result.grad, base.grad), f"{name}: the gradient depends on the layout"
    if out is not None:
        given = out if isinstance(out, tuple) else (out,)
        got = result.grad if isinstance(result.grad, tuple) else (result.grad,)
        assert all(o is None or o is g for o, g in zip(given, got)), f"{name}: out= not returned as itself"
    finite_where_torch_is(name, crit, arrays, base)


def finite_where_torch_is(name, crit, arrays, result):
    """Where torch (same dtype) gives a finite loss, so does fastloss."""
    oracle = TORCH.get(name)
    if oracle is None:
        return
    import torch
    tensors = [torch.from_numpy(np.array(a)) for a in arrays]
    try:
        ref = oracle(crit, *tensors)
    except Exception:   # torch refuses what we accept (a superset): nothing to compare
        return
    if ref is None:
        return
    ref = ref.detach().numpy()
    ours = np.asarray(result.loss)
    if ref.shape == ours.shape:
        assert not (np.isfinite(ref) & ~np.isfinite(ours)).any(), f"{name}: not finite where torch is: {ours} vs {ref}"


def _torch_table():
    try:
        import torch.nn.functional as F
    except ImportError:
        return {}
    return {
        "L1Loss": lambda c, x, y: F.l1_loss(x, y, reduction=c.reduction),
        "MSELoss": lambda c, x, y: F.mse_loss(x, y, reduction=c.reduction),
        "SmoothL1Loss": lambda c, x, y: F.smooth_l1_loss(x, y, reduction=c.reduction, beta=c.beta),
        "HuberLoss": lambda c, x, y: F.huber_loss(x, y, reduction=c.reduction, delta=c.delta),
        "BCEWithLogitsLoss": lambda c, x, y: F.binary_cross_entropy_with_logits(
            x, y, reduction=c.reduction, pos_weight=None if c.pos_weight is None else torch_like(c.pos_weight, x)),
        "HingeEmbeddingLoss": lambda c, x, y: F.hinge_embedding_loss(x, y, reduction=c.reduction),
        "CrossEntropyLoss": lambda c, x, t: None if c.z_loss or c.softcap else F.cross_entropy(
            x, t, reduction=c.reduction, label_smoothing=c.label_smoothing,
            weight=None if c.weight is None else torch_like(c.weight, x)),
        "NLLLoss": lambda c, x, t: F.nll_loss(x, t, reduction=c.reduction,
                                              weight=None if c.weight is None else torch_like(c.weight, x)),
        "MultiLabelSoftMarginLoss": lambda c, x, y: F.multilabel_soft_margin_loss(x, y, reduction=c.reduction),
        "TripletMarginLoss": lambda c, a, p, n: F.triplet_margin_loss(a, p, n, swap=c.swap, reduction=c.reduction),
    }


def torch_like(array, like):
    import torch
    return torch.from_numpy(np.asarray(array)).to(like.dtype)


TORCH = _torch_table()
VERBOSE = bool(os.environ.get("FASTLOSS_FUZZ_VERBOSE"))


def run(examples, seed=None):
    names = sorted(REGISTRY)
    strategy = st.tuples(
        st.sampled_from(names), st.integers(0, 2 ** 32 - 1),
        st.lists(st.sampled_from(["c", "reversed", "fortran", "offset", "strided", "readonly", "misaligned"]), min_size=5, max_size=5),
        st.sampled_from(["none", "fresh", "alias"]), st.sampled_from([0.0, 0.05, 0.3]), st.booleans(),
        st.sampled_from([np.float32, np.float64]))
    count = [0]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(strategy)
    def fuzz(example):
        count[0] += 1
        name, case_seed, layouts, out_kind, special_rate, empty, dtype = example
        if VERBOSE:
            print(example, file=sys.stderr, flush=True)
        check(name, case_seed ^ (seed or 0), layouts, out_kind, special_rate, empty, dtype)

    fuzz()
    return count[0]


if __name__ == "__main__":
    n = int(os.environ.get("FASTLOSS_FUZZ_EXAMPLES", "500"))
    seed = os.environ.get("FASTLOSS_FUZZ_SEED")
    done = run(n, None if seed is None else int(seed))
    print(f"fuzz: {done} examples, no failure")
    sys.exit(0)
