"""float16 and bfloat16 inputs on the CPU (fastloss/_half.py, _kernels/half.h, convert.pyx):
every criterion gives the float32 call's results on the same values, bitwise (gradients
narrowed to the input's dtype), with no float32 copy of the input; the pointwise kernels read
and write half data in their loops; evaluation reads half-precision files."""
import os
import subprocess
import sys
import tracemalloc

import cases
import ml_dtypes
import numpy as np
import pytest
import torch
from conftest import fastloss_env, run_cli

import fastloss as fl
from fastloss import _half
from fastloss._kernels import convert

HALVES = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
HALF_IDS = ["float16", "bfloat16"]


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    wide_a, wide_b = a.astype(np.float32), b.astype(np.float32)
    return np.array_equal(wide_a, wide_b, equal_nan=True) and np.array_equal(np.signbit(wide_a), np.signbit(wide_b))


def test_widen_is_exact_for_every_half_value():
    bits = np.arange(1 << 16, dtype=np.uint16)
    for dtype in HALVES:
        out = np.empty(1 << 16, np.float32)
        convert.widen(bits, out, dtype == HALVES[1], 2)
        expected = bits.view(dtype).astype(np.float32)
        assert np.array_equal(out.view(np.uint32), expected.view(np.uint32)) or \
            np.array_equal(out, expected, equal_nan=True)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_narrow_rounds_to_nearest_even(dtype):
    r = np.random.default_rng(0)
    values = r.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.float32([0.0, -0.0, np.inf, -np.inf, 65504, 65519.99, 65520, 6e-8, 3e-8, 1e-45, 3.3895e38, 3.4e38])
    values = np.concatenate([values, edges, np.nextafter(edges, np.float32(np.inf))])
    out = np.empty(values.size, np.uint16)
    convert.narrow(values, out, dtype == HALVES[1], 2)
    with np.errstate(over="ignore"):
        expected = values.astype(dtype)
    ours = out.view(dtype).astype(np.float32)
    nan = np.isnan(values)
    assert np.array_equal(ours[~nan], expected[~nan].astype(np.float32))
    assert np.array_equal(np.signbit(ours[~nan]), np.signbit(expected[~nan].astype(np.float32)))
    assert np.isnan(ours[nan]).all()


def halved(arrays, dtype):
    return [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in arrays]


def widened(arrays):
    return [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype in HALVES else a for a in arrays]


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("case", cases.CASES, ids=cases.IDS)
def test_every_criterion_is_the_float32_call_on_the_same_values(case, reduction, dtype, monkeypatch):
    monkeypatch.setattr(_half, "STAGE_ELEMENTS", 8)   # many staged blocks even for the registry's small arrays
    crit, arrays, _ = cases.build(case, reduction if reduction in case[1].reductions else "mean", np.float32)
    if reduction not in crit.reductions:
        pytest.skip(f"{type(crit).__name__} has no reduction={reduction!r}")
    half = halved(arrays, dtype)
    wide = widened(half)
    grad_output = None
    probe = crit.loss(*wide)
    if reduction == "none" and np.ndim(probe):
        grad_output = np.random.default_rng(1).uniform(0.5, 1.5, np.shape(probe)).astype(np.float32)
    elif reduction != "none":
        grad_output = 0.37   # the whole's scale is grad_output / divisor, as the one call's
    loss, grads = crit(*half, grad_output=grad_output)
    ref_loss, ref_grads = crit(*wide, grad_output=grad_output)
    if np.ndim(ref_loss) and reduction == "none":
        assert same_bits(loss, np.asarray(ref_loss).astype(dtype))
    else:   # a 0-d scalar of the input's dtype (SPEC.md): the float32 loss, narrowed
        assert np.asarray(loss).dtype == dtype and same_bits(loss, np.float32(ref_loss).astype(dtype)), (loss, ref_loss)
    assert same_bits(crit.loss(*half), loss)
    grads = grads if isinstance(grads, tuple) else (grads,)
    ref_grads = ref_grads if isinstance(ref_grads, tuple) else (ref_grads,)
    for g, ref in zip(grads, ref_grads):
        if ref is None:
            assert g is None
            continue
        assert same_bits(g, ref.astype(dtype))


IN_KERNEL = [c for c in cases.CASES if c[1]._half_kernels]   # the pointwise family, cross entropy, NLL


def _not_staged(*args, **kwargs):
    raise AssertionError("a half call took the staged or the whole-array path")


def _stages(crit):
    """Whether a call takes staged blocks by design: a triplet loss with a Python distance function."""
    return getattr(crit, "distance_function", None) is not None


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("case", IN_KERNEL, ids=[c[0] for c in IN_KERNEL])
def test_kernels_read_half_data_in_their_loops(case, reduction, dtype, monkeypatch):
    """No staged block and no widened copy: the kernels widen the half data in their loops (a
    tile, a row), and the results are still the float32 call's, bitwise, with grad_output per
    element or row, out= in either dtype, a half input beside a float32 target, and hessians."""
    crit, arrays, _ = cases.build(case, reduction, np.float32)
    half = halved(arrays, dtype)
    wide = widened(half)
    staged = _stages(crit)
    if not staged:
        monkeypatch.setattr(_half, "_staged", _not_staged)
        monkeypatch.setattr(_half, "_whole", _not_staged)
    probe = crit.loss(*wide)
    grad_output = None
    if reduction == "none":
        grad_output = np.random.default_rng(1).uniform(0.5, 1.5, np.shape(probe)).astype(dtype)
    loss, grads = crit(*half, grad_output=grad_output)
    ref_loss, ref_grads = crit(*wide, grad_output=None if grad_output is None else grad_output.astype(np.float32))
    assert same_bits(loss, np.asarray(np.float32(ref_loss) if np.ndim(ref_loss) == 0 else ref_loss).astype(dtype))
    for g, ref in zip(grads if isinstance(grads, tuple) else (grads,),
                      ref_grads if isinstance(ref_grads, tuple) else (ref_grads,)):
        assert (g is None) == (ref is None) and (g is None or same_bits(g, ref.astype(dtype)))
    if len(crit.differentiable) == 1:
        out = np.empty(np.shape(half[0]), np.float32)
        assert crit(*half, out=out, grad_output=grad_output)[1] is out
        assert np.array_equal(out, np.asarray(ref_grads), equal_nan=True)
        mixed = [half[0]] + wide[1:]   # half input, float32 target
        assert same_bits(crit(*mixed, grad_output=grad_output)[1], np.asarray(ref_grads).astype(dtype))
    if crit._hessian and not staged and reduction != "none":
        try:
            ref_grad, ref_hess = crit.grad_hess(*wide)
        except NotImplementedError:   # (these options have none: the half call must say so too)
            with pytest.raises(NotImplementedError):
                crit.grad_hess(*half)
            return
        grad, hess = crit.grad_hess(*half)
        assert same_bits(grad, ref_grad.astype(dtype)) and same_bits(hess, ref_hess.astype(dtype))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 16), (40, 17), (33, 1000), (5, 70001)])
def test_class_rows_of_every_width(shape, dtype, monkeypatch):
    """Cross entropy (index and probability targets, smoothing, softcap), NLL and the margin
    losses over half rows of every width, on 2 threads, the float32 call's bits: the
    small-class kernel's rows as well."""
    monkeypatch.setattr(_half, "_staged", _not_staged)
    r = np.random.default_rng(shape[1])
    x = (r.standard_normal(shape) * 4).astype(dtype)
    t = r.integers(0, shape[1], shape[0])
    t[::5] = -100
    p = r.dirichlet(np.ones(shape[1]), shape[0]).astype(dtype)
    multilabel = np.where(r.random(shape) < 0.3, r.integers(0, shape[1], shape), -1)   # each row ends at a -1
    for crit, target in [(fl.CrossEntropyLoss(), t), (fl.CrossEntropyLoss(label_smoothing=0.2, softcap=3.0), t),
                         (fl.CrossEntropyLoss(reduction="sum"), p), (fl.NLLLoss(reduction="none"), t),
                         (fl.SoftmaxFocalLoss(gamma=2.0), t),
                         (fl.MultiMarginLoss(p=2, margin=0.7), np.abs(t) % shape[1]),
                         (fl.MultiLabelMarginLoss(reduction="sum"), multilabel),
                         (fl.MultiLabelSoftMarginLoss(reduction="none"), (p > 1 / shape[1]).astype(dtype))]:
        loss, grad = crit(x, target)
        ref_loss, ref_grad = crit(*widened([x, target]))
        assert same_bits(loss, np.asarray(np.float32(ref_loss) if np.ndim(ref_loss) == 0 else ref_loss).astype(dtype))
        assert same_bits(grad, ref_grad.astype(dtype)), repr(crit)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 5), (3, 21, 7, 9), (2, 1100, 3), (1, 17, 300)])
def test_class_rows_along_an_inner_axis(shape, dtype, monkeypatch):
    """Cross entropy over (N, C, d1, ...) half inputs (each row's classes d1 * ... apart,
    gathered a tile of rows at a time, plane by plane, and scattered back), on 2 threads: the
    float32 call's bits, with half or float32 probability targets, a float32 out=, per-row
    grad_output and the hessian; and the float32 tiles are the contiguous kernel's bits."""
    monkeypatch.setattr(_half, "_staged", _not_staged)
    monkeypatch.setattr(_half, "_whole", _not_staged)
    r = np.random.default_rng(shape[1])
    x = (r.standard_normal(shape) * 4).astype(dtype)
    rows = (shape[0],) + shape[2:]
    t = r.integers(0, shape[1], rows)
    t.reshape(-1)[::4] = -100
    p = np.moveaxis(r.dirichlet(np.ones(shape[1]), rows), -1, 1)
    go = r.uniform(0.5, 1.5, rows).astype(np.float32)
    for crit, target in [(fl.CrossEntropyLoss(), t), (fl.CrossEntropyLoss(label_smoothing=0.1, softcap=2.0), t),
                         (fl.CrossEntropyLoss(reduction="sum"), p.astype(dtype)),
                         (fl.CrossEntropyLoss(reduction="none", weight=r.random(shape[1]) + 0.5), p.astype(np.float32)),
                         (fl.SoftmaxFocalLoss(gamma=1.5, reduction="none"), t)]:
        wide = widened([x, target])
        grad_output = go if crit.reduction == "none" else None
        ref_loss, ref_grad = crit(*wide, grad_output=grad_output)
        loss, grad = crit(x, target, grad_output=grad_output)
        assert same_bits(loss, np.asarray(np.float32(ref_loss) if np.ndim(ref_loss) == 0 else ref_loss).astype(dtype))
        assert same_bits(grad, ref_grad.astype(dtype)), repr(crit)
        out = np.full(shape, np.nan, np.float32)
        assert crit(x, target, out=out, grad_output=grad_output)[1] is out and same_bits(out, ref_grad)
        if crit.reduction != "none" and not crit.softcap:
            ref_g, ref_h = crit.grad_hess(*wide)
            g, h = crit.grad_hess(x, target)
            assert same_bits(g, ref_g.astype(dtype)) and same_bits(h, ref_h.astype(dtype)), repr(crit)
    if shape[1] > 16:   # (C <= 16: contiguous rows take the small-class kernel, other bits)
        # the tiles against the contiguous kernel on the same rows laid out (N d1 ..., C): the same bits
        x32 = widened([x])[0]
        rows_x = np.ascontiguousarray(np.moveaxis(x32, 1, -1).reshape(-1, shape[1]))
        crit = fl.CrossEntropyLoss(reduction="none", label_smoothing=0.1)
        loss, grad = crit(x32, t)
        ref_loss, ref_grad = crit(rows_x, t.reshape(-1))
        assert same_bits(loss.reshape(-1), ref_loss)
        assert same_bits(np.moveaxis(grad, 1, -1).reshape(-1, shape[1]), ref_grad)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("T,N,C", [(1, 1, 2), (30, 5, 9), (60, 3, 700)])
def test_ctc_over_half_log_probs(T, N, C, dtype, monkeypatch):
    """CTCLoss over half log-probabilities (each state's value widened as the recursions read
    it, each frame's row widened for the gradient, frames past an input length zeroed), on 2
    threads: the float32 call's bits, impossible alignments and zero_infinity included, with a
    half or float32 gradient."""
    monkeypatch.setattr(_half, "_staged", _not_staged)
    monkeypatch.setattr(_half, "_whole", _not_staged)
    r = np.random.default_rng(C)
    logits = r.standard_normal((T, N, C)) * 2
    lp = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(dtype)
    input_lengths = r.integers(max(1, T // 2), T + 1, N)
    target_lengths = r.integers(0, max(1, T // 3) + 1, N)
    target_lengths[0] = T if T > 1 else 1   # longer than its frames allow when T > 1: impossible
    targets = r.integers(1, C, (N, int(target_lengths.max())))
    for crit in (fl.CTCLoss(), fl.CTCLoss(reduction="none", zero_infinity=True), fl.CTCLoss(reduction="sum", blank=C - 1)):
        args = [lp, np.where(targets == crit.blank, 0, targets), input_lengths, target_lengths]
        ref_loss, ref_grad = crit(*widened(args))
        loss, grad = crit(*args)
        assert same_bits(loss, np.asarray(np.float32(ref_loss) if np.ndim(ref_loss) == 0 else ref_loss).astype(dtype))
        assert same_bits(grad, ref_grad.astype(dtype)), repr(crit)
        out = np.full(lp.shape, np.nan, np.float32)
        assert crit(*args, out=out)[1] is out and same_bits(out, ref_grad)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("n", [1, 7, 8, 271, 272, 273, 3 * 8192 + 5])
def test_half_tiles_at_every_length(n, dtype, monkeypatch):
    """Lengths around F16C's 8 lanes, the kernels' 272-element tiles and 8192-element blocks,
    on 2 threads: whole tiles and their tails widen and narrow alike."""
    monkeypatch.setattr(_half, "_staged", _not_staged)
    r = np.random.default_rng(n)
    x = (r.standard_normal(n) * 3).astype(dtype)
    y = r.random(n).astype(dtype)
    for crit in (fl.BCEWithLogitsLoss(), fl.HuberLoss(reduction="none"), fl.LogCoshLoss(reduction="sum")):
        loss, grad = crit(x, y)
        ref_loss, ref_grad = crit(*widened([x, y]))
        assert same_bits(loss, np.asarray(np.float32(ref_loss) if np.ndim(ref_loss) == 0 else ref_loss).astype(dtype))
        assert same_bits(grad, ref_grad.astype(dtype)), type(crit).__name__


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (130, 8), (70, 33), (3, 5000)])
def test_embedding_rows_of_every_width(shape, dtype, monkeypatch):
    """The embedding family over half rows (several blocks of 64 rows, feature counts around
    F16C's 8 lanes): the float32 call's bits; half inputs beside float32 ones are staged."""
    r = np.random.default_rng(shape[1])
    a, b, c = ((r.standard_normal(shape)).astype(dtype) for _ in range(3))
    labels = np.where(r.random(shape[0]) < 0.5, 1, -1).astype(dtype)
    cases_ = [(fl.TripletMarginLoss(p=1.5, swap=True), [a, b, c]),
              (fl.TripletMarginWithDistanceLoss(distance_function="cosine", reduction="none"), [a, b, c]),
              (fl.ContrastiveLoss(margin=2.0, reduction="sum"), [a, b, (labels.astype(np.float32) > 0).astype(dtype)]),
              (fl.CosineEmbeddingLoss(margin=0.2), [a, b, labels])]
    with monkeypatch.context() as patched:
        patched.setattr(_half, "_staged", _not_staged)
        patched.setattr(_half, "_whole", _not_staged)
        for crit, arrays in cases_:
            loss, grads = crit(*arrays)
            ref_loss, ref_grads = crit(*widened(arrays))
            assert same_bits(loss, np.asarray(np.float32(ref_loss) if np.ndim(ref_loss) == 0 else ref_loss).astype(dtype))
            for g, ref in zip(grads, ref_grads):
                assert same_bits(g, ref.astype(dtype)), type(crit).__name__
    mixed = [a, b.astype(np.float32), c]
    loss, grads = fl.TripletMarginLoss()(*mixed)
    ref_loss, ref_grads = fl.TripletMarginLoss()(*widened(mixed))
    assert same_bits(loss, np.float32(ref_loss).astype(dtype)) and same_bits(grads[1], ref_grads[1].astype(dtype))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("shape", [(3, 4, 700), (2, 21, 37, 29), (2, 3000, 9)])
def test_dice_widens_its_planes_in_the_kernel(shape, dtype, monkeypatch):
    """DiceLoss over half data: runs that span samples and blocks, many classes (short runs),
    each mode with half 0/1 targets and ignore_index, pass 2 computing p again from the half
    input: the float32 call's bits, and no float32 copy."""
    monkeypatch.setattr(_half, "_staged", _not_staged)
    monkeypatch.setattr(_half, "_whole", _not_staged)
    r = np.random.default_rng(shape[1])
    x = (r.standard_normal(shape) * 3).astype(dtype)
    labels = r.integers(0, shape[1], (shape[0],) + shape[2:])
    labels.reshape(-1)[::7] = 255
    binary = (r.random(shape) < 0.4).astype(dtype)
    binary.reshape(-1)[::11] = 255
    for crit, target in [(fl.DiceLoss("multiclass", ignore_index=255), labels),
                         (fl.DiceLoss("multilabel", ignore_index=255, smooth=1.0, reduction="none"), binary),
                         (fl.DiceLoss("multilabel", from_logits=False, reduction="sum"),
                          (binary.astype(np.float32) == 1).astype(dtype))]:
        data = x if crit.from_logits else (r.random(shape)).astype(dtype)
        loss, grad = crit(data, target)
        ref_loss, ref_grad = crit(*widened([data, target]))
        assert same_bits(loss, np.asarray(np.float32(ref_loss) if np.ndim(ref_loss) == 0 else ref_loss).astype(dtype))
        assert same_bits(grad, ref_grad.astype(dtype)), crit.mode
        out = np.empty(shape, np.float32)
        assert crit(data, target, out=out)[1] is out and np.array_equal(out, ref_grad)
    if shape[1] == 21:   # memory: the half gradient and O(C), no float32 copy (11 MB here)
        big = np.resize(x, (4, 21, 128, 128))
        big_labels = np.resize(labels, (4, 128, 128))
        fl.DiceLoss("multiclass", ignore_index=255)(big[:1, :, :8], big_labels[:1, :8])
        tracemalloc.start()
        fl.DiceLoss("multiclass", ignore_index=255)(big, big_labels)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak <= big.nbytes + (1 << 20), peak


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_linear_cross_entropy_widens_weight_slabs(dtype, monkeypatch):
    """LinearCrossEntropyLoss of half data: chunks of rows and slabs of classes of the weight
    widened (more classes than a chunk's rows: several slabs), no float32 copy of the weight.
    The logits are the float32 call's entries; the input's gradient sums the slabs' products
    in float32, so it is the float32 call's to float32 rounding, then narrowed: within one
    half ulp of it. Index and half probability targets, bias, 'none' with grad_output, out=."""
    monkeypatch.setattr(_half, "_staged", _not_staged)
    monkeypatch.setattr(_half, "_whole", _not_staged)
    r = np.random.default_rng(5)
    N, H, C = 40, 24, 1000
    x, w = (r.standard_normal((N, H)) * 0.5).astype(dtype), (r.standard_normal((C, H)) * 0.5).astype(dtype)
    bias = r.standard_normal(C).astype(dtype)
    t = r.integers(0, C, N)
    t[::7] = -100
    probs = r.dirichlet(np.ones(C), N).astype(dtype)
    ulp = np.finfo(dtype).eps
    for crit, args in [(fl.LinearCrossEntropyLoss(chunk_rows=16), [x, w, t]),
                       (fl.LinearCrossEntropyLoss(label_smoothing=0.1, reduction="sum", chunk_rows=16), [x, w, t, bias]),
                       (fl.LinearCrossEntropyLoss(reduction="none", chunk_rows=7), [x, w, probs, bias])]:
        grad_output = r.uniform(0.5, 1.5, N).astype(np.float32) if crit.reduction == "none" else None
        ref_loss, ref_grads = crit(*widened(args), grad_output=grad_output)
        loss, grads = crit(*args, grad_output=grad_output)
        assert np.asarray(loss).dtype == dtype and all(g.dtype == dtype for g in grads)
        np.testing.assert_allclose(np.asarray(loss, np.float32), ref_loss, rtol=ulp, atol=ulp)
        for g, ref in zip(grads, ref_grads):
            np.testing.assert_allclose(g.astype(np.float32), ref, rtol=ulp, atol=1e-6)
        out = tuple(np.full(g.shape, np.nan, np.float32) for g in ref_grads)
        assert all(a is b for a, b in zip(crit(*args, grad_output=grad_output, out=out)[1], out))
        for g, ref in zip(out, ref_grads):
            np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-7)
    # memory: a loss over a 12.8 MB bfloat16/float16 weight takes a chunk's logits (3.2 MB) and
    # a slab (4 MB), never a float32 copy of the weight (25.6 MB)
    big = r.standard_normal((50000, 128)).astype(dtype)
    crit = fl.LinearCrossEntropyLoss(chunk_rows=16)
    tracemalloc.start()
    crit.loss(x[:, :1].repeat(128, 1)[:32], big, t[:32])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < big.nbytes, peak


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_nt_xent_widens_into_its_normalised_rows(dtype, monkeypatch):
    """NTXentLoss of half views: the rows widened into the float32 buffer of normalised rows
    that the float32 call builds anyway (several chunks), the float32 call's bits, with
    'none' and grad_output and a float32 out=; its memory is the float32 call's plus the half
    gradients, no float32 copy of the inputs."""
    monkeypatch.setattr(_half, "_staged", _not_staged)
    monkeypatch.setattr(_half, "_whole", _not_staged)
    r = np.random.default_rng(8)
    z1, z2 = (r.standard_normal((300, 48)).astype(dtype) for _ in range(2))
    go = r.uniform(0.5, 1.5, 600).astype(np.float32)
    for crit, grad_output in [(fl.NTXentLoss(temperature=0.2, chunk_rows=64), None),
                              (fl.NTXentLoss(reduction="none", chunk_rows=100), go)]:
        ref_loss, ref_grads = crit(*widened([z1, z2]), grad_output=grad_output)
        loss, grads = crit(z1, z2, grad_output=grad_output)
        assert same_bits(loss, np.asarray(np.float32(ref_loss) if np.ndim(ref_loss) == 0 else ref_loss).astype(dtype))
        assert all(same_bits(g, ref.astype(dtype)) for g, ref in zip(grads, ref_grads))
        out = tuple(np.full(z1.shape, np.nan, np.float32) for _ in range(2))
        assert all(a is b for a, b in zip(crit(z1, z2, grad_output=grad_output, out=out)[1], out))
        assert all(same_bits(g, ref) for g, ref in zip(out, ref_grads))
    z1, z2 = (r.standard_normal((1000, 64)).astype(dtype) for _ in range(2))
    crit, wide = fl.NTXentLoss(chunk_rows=256), widened([z1, z2])
    peaks = []
    for args in (wide, [z1, z2]):
        crit(*args)
        tracemalloc.start()
        crit(*args)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] <= peaks[0] + z1.nbytes + z2.nbytes + (32 << 10), peaks   # (float32 copies: 512 KiB more)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_half_target_range_errors_name_the_whole_arrays(dtype):
    x = np.zeros(3 * (1 << 20) + 11, dtype)
    y = np.ones_like(x)
    y[(1 << 21) + 5] = -1.0
    with pytest.raises(ValueError, match=r"target: expected positive values \(GammaLoss\), got -1.0 at position \(2097157,\)"):
        fl.GammaLoss()(x, y)
    with pytest.raises(ValueError, match=r"input: expected all elements between 0 and 1, got 2.0 at position \(4,\)"):
        fl.BCELoss()(np.array([0.5, 0, 1, 0.25, 2], dtype), np.zeros(5, dtype))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_large_calls_in_many_blocks_and_out(dtype):
    r = np.random.default_rng(2)
    x = r.standard_normal((70000, 40)).astype(dtype)
    t = r.integers(0, 40, 70000)
    y = (r.random(x.shape) < 0.3).astype(dtype)
    for crit, arrays in [(fl.CrossEntropyLoss(label_smoothing=0.1), [x, t]), (fl.BCEWithLogitsLoss(), [x, y]),
                         (fl.MSELoss(reduction="sum"), [x, y])]:
        loss, grad = crit(*arrays)
        ref_loss, ref_grad = crit(*widened(arrays))
        assert same_bits(loss, np.float32(ref_loss).astype(dtype)) and same_bits(grad, ref_grad.astype(dtype)), repr(crit)
        out = np.empty(x.shape, np.float32)   # float32 gradients of half data, through out=
        assert crit(*arrays, out=out)[1] is out and np.array_equal(out, ref_grad)
        out = np.empty(x.shape, dtype)
        assert crit(*arrays, out=out)[1] is out and same_bits(out, ref_grad.astype(dtype))
    with pytest.raises(ValueError, match="out: expected a writable array of shape .* and dtype .* or float32"):
        fl.MSELoss()(x, y, out=np.empty(x.shape))


def test_no_float32_copy_of_the_input():
    x = np.random.default_rng(3).standard_normal(4_000_000).astype(ml_dtypes.bfloat16)   # 8 MB
    y = np.zeros_like(x)
    crit = fl.BCEWithLogitsLoss()
    crit(x[:10], y[:10])
    tracemalloc.start()
    loss = crit.loss(x, y)
    _, peak_loss = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    _, grad = crit(x, y)
    _, peak_grad = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the pointwise kernels widen tiles on their stacks: no staged block (a float32 copy would be 16 MB)
    assert peak_loss <= 1 << 16, peak_loss
    assert peak_grad <= x.nbytes + (1 << 16), peak_grad   # the bfloat16 gradient itself, 8 MB
    assert np.isfinite(loss) and grad.dtype == x.dtype
    logits = np.resize(x, (120_000, 100))   # 24 MB; a float32 copy would be 48 MB
    t = np.zeros(len(logits), np.int64)
    for crit, target, staging in [(fl.CrossEntropyLoss(), t, 0),   # a row at a time, in the kernel
                                  (fl.MultiLabelSoftMarginLoss(), np.zeros_like(logits),   # staged blocks
                                   2 * 3 * 4 * _half.STAGE_ELEMENTS)]:
        crit(logits[:10], target[:10])
        tracemalloc.start()
        crit(logits, target)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak <= logits.nbytes + staging + (1 << 16), (type(crit).__name__, peak)


@pytest.mark.parametrize("torch_dtype, dtype", [(torch.float16, HALVES[0]), (torch.bfloat16, HALVES[1])])
def test_torch_half_tensors_are_read_in_place(torch_dtype, dtype):
    x = torch.randn(300, 7).to(torch_dtype)
    t = torch.randint(0, 7, (300,))
    loss, grad = fl.CrossEntropyLoss()(x, t.numpy())
    view = x.view(torch.int16).numpy().view(dtype)
    assert np.shares_memory(_half.as_numpy(x), x.view(torch.int16).numpy())
    ref_loss, ref_grad = fl.CrossEntropyLoss()(view.astype(np.float32), t.numpy())
    assert same_bits(loss, ref_loss.astype(dtype)) and grad.dtype == dtype and same_bits(grad, ref_grad.astype(dtype))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_evaluate_a_half_file_is_the_one_call(tmp_path, dtype):
    r = np.random.default_rng(4)
    x = r.standard_normal((9000, 30)).astype(dtype)
    t = r.integers(0, 30, 9000)
    np.save(tmp_path / "x.npy", x)   # bfloat16 is saved as '<V2'
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r").view(dtype)
    crit = fl.CrossEntropyLoss()
    result = fl.evaluate(crit, mapped, t, chunk_rows=1000, grad_out=tmp_path / "g.npy", loss_out=tmp_path / "l.npy",
                         metrics=["accuracy"])
    loss, grad = crit(x, t)
    assert result.loss == loss and result.bytes == 2 * (x.nbytes + t.nbytes)
    assert same_bits(np.load(tmp_path / "g.npy").view(dtype), grad)
    assert same_bits(np.load(tmp_path / "l.npy").view(dtype), fl.CrossEntropyLoss(reduction="none").loss(x, t))
    assert result.metrics["accuracy"] == np.mean(x.astype(np.float32).argmax(1) == t)
    np.save(tmp_path / "t.npy", t)
    run = run_cli("--loss", "cross_entropy", "--input", "x.npy", "--target", "t.npy", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert np.float32(__import__("json").loads(run.stdout)["loss"]) == loss


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_evaluate_passes_half_chunks_to_the_kernels(tmp_path, dtype, monkeypatch):
    """Without metrics, evaluate hands the half chunks to the criterion as they are: nothing
    is widened outside the kernels, and the loss, gradient and per-row losses are the one call's."""
    r = np.random.default_rng(6)
    x = r.standard_normal((5000, 40)).astype(dtype)
    t = r.integers(0, 40, 5000)
    y = (r.random(x.shape) < 0.5).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r").view(dtype)
    monkeypatch.setattr(_half, "to_float32", _not_staged)
    for crit, target in [(fl.CrossEntropyLoss(), t), (fl.BCEWithLogitsLoss(), y), (fl.MultiLabelSoftMarginLoss(), y)]:
        grad_file, loss_file = tmp_path / "g.npy", tmp_path / "l.npy"
        result = fl.evaluate(crit, mapped, target, chunk_rows=700, grad_out=grad_file, loss_out=loss_file,
                             overwrite=True)
        loss, grad = crit(x, target)
        assert same_bits(result.loss, loss) and same_bits(np.load(grad_file).view(dtype), grad), repr(crit)
        assert same_bits(np.load(loss_file).view(dtype), crit._with_reduction("none").loss(x, target))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_bad_data_in_a_later_block_is_named_in_the_whole_arrays(dtype, monkeypatch):
    monkeypatch.setattr(_half, "STAGE_ELEMENTS", 100)
    x = np.zeros((500, 10), dtype)
    t = np.zeros(500, np.int64)
    t[377] = 12
    with pytest.raises(IndexError) as half_error:
        fl.CrossEntropyLoss()(x, t)
    with pytest.raises(IndexError) as float_error:
        fl.CrossEntropyLoss()(x.astype(np.float32), t)
    assert str(half_error.value) == str(float_error.value) and "377" in str(half_error.value)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_grad_hess_of_half_data_is_the_float32_one_narrowed(dtype):
    x = np.random.default_rng(5).standard_normal((300, 4)).astype(dtype)
    y = (x.astype(np.float32) > 0.3).astype(dtype)
    grad, hess = fl.BCEWithLogitsLoss().grad_hess(x, y)
    ref_grad, ref_hess = fl.BCEWithLogitsLoss().grad_hess(*widened([x, y]))
    assert same_bits(grad, ref_grad.astype(dtype)) and same_bits(hess, ref_hess.astype(dtype))


@pytest.mark.commands
def test_import_leaves_ml_dtypes_until_bfloat16_data_comes():
    # ml_dtypes takes about a second to import beside NumPy 2.4: `import fastloss` does not
    # import it, and bfloat16 arrays made after it is imported are still taken as bfloat16
    code = """
import sys
import numpy as np
import fastloss as fl
assert "ml_dtypes" not in sys.modules
import ml_dtypes
x = np.linspace(-3, 3, 1001).astype(ml_dtypes.bfloat16)
y = (np.arange(1001) % 2).astype(ml_dtypes.bfloat16)
half = fl.BCEWithLogitsLoss()(x, y)
full = fl.BCEWithLogitsLoss()(x.astype(np.float32), y.astype(np.float32))
assert half.grad.dtype == x.dtype and half.loss.dtype == x.dtype
assert np.array_equal(half.grad.view(np.uint16), full.grad.astype(ml_dtypes.bfloat16).view(np.uint16))
print("ok")
"""
    # (the fastloss under test, from outside the checkout: its unbuilt sources would shadow it)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=fastloss_env(), cwd=os.path.dirname(__file__))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
