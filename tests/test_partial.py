"""Partial states: slices of the rows, starting on multiples of block_rows, combine (in any
order and grouping) to the one-call loss, bitwise."""

import numpy as np
import pytest

import fastloss as fl


def rows_of(*arrays, axis=0):
    """A slicer taking rows [r0, r1) of every array along `axis` (None: the array whole)."""
    def take(r0, r1):
        out = []
        for a, ax in zip(arrays, axis if isinstance(axis, tuple) else (axis,) * len(arrays)):
            out.append(a if ax is None else np.take(a, np.arange(r0, r1), axis=ax))
        return out
    return take


def cases(dtype):
    r = np.random.default_rng(3)
    x, y = r.standard_normal((2, 3000, 200)).astype(dtype)
    p01 = (r.random((3000, 200)) > 0.5).astype(dtype)
    yield "mse", fl.MSELoss(), 3000, rows_of(x, y)
    yield "l1-sum", fl.L1Loss(reduction="sum"), 3000, rows_of(x, y)
    yield "bce-logits-weighted", fl.BCEWithLogitsLoss(pos_weight=np.full(200, 2.0, dtype)), 3000, rows_of(x, p01)
    yield "kl-batchmean", fl.KLDivLoss(reduction="batchmean"), 3000, rows_of(x, np.abs(y))
    yield "tweedie", fl.TweedieLoss(1.3), 3000, rows_of(x, np.abs(y) * p01)
    yield "gamma-sum", fl.GammaLoss(reduction="sum"), 3000, rows_of(x, np.abs(y) + 0.1)
    yield "quantiles", fl.QuantileLoss(np.linspace(0.01, 0.99, 200)), 3000, rows_of(x, y[:, 0])
    yield "log-cosh", fl.LogCoshLoss(), 3000, rows_of(x, y)
    var = np.abs(y[:, :1]) + 0.5
    yield "gaussian", fl.GaussianNLLLoss(), 3000, rows_of(x, y, var)
    logits = r.standard_normal((900, 50)).astype(dtype)
    t = r.integers(0, 50, 900)
    t[::7] = -100
    w = r.uniform(0.5, 2, 50).astype(dtype)
    yield "ce-weighted-ignore", fl.CrossEntropyLoss(weight=w, label_smoothing=0.1), 900, rows_of(logits, t)
    probs = np.abs(r.standard_normal((900, 50))).astype(dtype)
    yield "ce-probabilities", fl.CrossEntropyLoss(), 900, rows_of(logits, probs / probs.sum(1, keepdims=True))
    kdim = r.standard_normal((90, 7, 3, 5)).astype(dtype)
    yield "ce-kdim", fl.CrossEntropyLoss(), 90, rows_of(kdim, r.integers(0, 7, (90, 3, 5)))
    yield "focal", fl.SoftmaxFocalLoss(gamma=2.0, weight=w), 900, rows_of(logits, t)
    yield "ce-z-loss", fl.CrossEntropyLoss(z_loss=1e-3), 900, rows_of(logits, t)
    dice_x = r.standard_normal((60, 4, 8, 8)).astype(dtype)   # blocks of 1024 positions: 16 samples
    yield "dice", fl.DiceLoss("multiclass", smooth=1.0), 60, rows_of(dice_x, r.integers(0, 4, (60, 8, 8)))
    yield "nll", fl.NLLLoss(weight=w), 900, rows_of(logits, t)
    yield "multi-margin", fl.MultiMarginLoss(p=2), 900, rows_of(logits, np.abs(t) % 50)
    yield "multilabel-soft", fl.MultiLabelSoftMarginLoss(), 900, rows_of(logits, (logits > 0).astype(dtype))
    a, b_, c = r.standard_normal((3, 1000, 16)).astype(dtype)
    yield "triplet", fl.TripletMarginLoss(swap=True), 1000, rows_of(a, b_, c)
    yield "cosine", fl.CosineEmbeddingLoss(), 1000, rows_of(a, b_, r.choice([-1, 1], 1000))
    yield "contrastive-sum", fl.ContrastiveLoss(reduction="sum"), 1000, rows_of(a, b_, r.integers(0, 2, 1000))
    W = (0.1 * r.standard_normal((40, 16))).astype(dtype)
    yield "linear-ce", fl.LinearCrossEntropyLoss(), 1000, rows_of(a, W, r.integers(0, 40, 1000), None, axis=(0, None, 0, None))
    lp = np.log(r.dirichlet(np.ones(6), (30, 40))).astype(dtype)
    yield "ctc", fl.CTCLoss(), 40, rows_of(lp, r.integers(1, 6, (40, 5)), np.full(40, 30), r.integers(0, 6, 40),
                                           axis=(1, 0, 0, 0))


def combine(partials, rng):
    """Add the partial states in a random order, as a random binary tree."""
    partials = list(partials)
    rng.shuffle(partials)
    while len(partials) > 1:
        i = rng.integers(0, len(partials) - 1)
        partials[i:i + 2] = [partials[i] + partials[i + 1]]
    return partials[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_partial_states_combine_to_the_one_call_loss_bitwise(dtype):
    rng = np.random.default_rng(11)
    for name, crit, rows, take in cases(dtype):
        whole = crit.loss(*take(0, rows))
        block = crit.block_rows(np.shape(take(0, rows)[0]) if name != "ctc" else (rows,))
        cuts = sorted({0, rows} | {block * int(k) for k in rng.integers(1, max(2, rows // block), 4)})
        cuts = [c for c in cuts if c <= rows]
        parts = [crit.partial(*take(r0, r1)) for r0, r1 in zip(cuts, cuts[1:])]
        assert len(parts) >= 2, name
        combined = combine(parts, rng)
        assert np.asarray(combined.value()).tobytes() == np.asarray(whole).tobytes(), (name, combined.value(), whole)
        if not hasattr(combined, "total"):   # DiceLoss: per-class sums
            continue
        # and the float64 sums themselves, before the loss's rounding to its dtype
        assert combined.total == crit.partial(*take(0, rows)).total, name   # the exact sums themselves
        assert combined.value().dtype == dtype


def test_partial_state_is_refused_where_every_row_involves_all_rows():
    x = np.ones((4, 3))
    with pytest.raises(NotImplementedError, match="NTXentLoss"):
        fl.NTXentLoss().partial(x, x)
    with pytest.raises(NotImplementedError, match="z_loss"):
        fl.CrossEntropyLoss(z_loss=0.1, weight=np.array([1.0, 2.0, 3.0])).partial(x, np.ones(4, int))
    with pytest.raises(ValueError, match="reduction='none'"):
        fl.MSELoss(reduction="none").partial(x, x)
