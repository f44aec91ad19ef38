"""What fastloss.xgboost and fastloss.lightgbm share: per-sample gradients and hessians, the
weighted metric, and the checks that turn a booster's silent mistakes into errors.

A booster wants, per sample, the gradient and the diagonal hessian of that sample's loss with
respect to its raw score: the criterion's `grad_hess` with reduction 'sum' (the per-sample
values, as the built-in objectives give them), or 'none' with the sample weights as
grad_output. Raw scores are (N,) for one output and (N, C) for C classes (or C outputs);
class-index criteria (CrossEntropyLoss, SoftmaxFocalLoss, NLLLoss, MultiMarginLoss) read the
labels as class indices.

Both adapters take a booster's native call ``(scores, dataset)`` and the scikit-learn
estimators' call ``(labels, scores[, weights])`` with one function: the second argument tells
them apart (a DMatrix or Dataset has ``get_label``).
"""
import numpy as np

from ._arrays import fail
from .losses import CrossEntropyLoss, L1Loss, MultiMarginLoss, NLLLoss

__all__ = ["per_sample", "check_hessian", "gradients", "metric_value", "objective", "metric_call"]

HESSIANS = ("exact", "constant", "scaled")
_CLASS_INDEX = (CrossEntropyLoss, NLLLoss, MultiMarginLoss)   # SoftmaxFocalLoss is a CrossEntropyLoss
_MEAN_ABSOLUTE = L1Loss()   # hessian='scaled': the round's mean |label - score|, one fused pass


def per_sample(criterion, weighted):
    """A copy of the criterion giving per-sample values: reduction 'sum', or 'none' when the
    samples are weighted (their weights then come in as grad_output)."""
    return criterion._with_reduction("none" if weighted else "sum")


def _flat_hessian(criterion):
    """Whether the criterion's exact hessian is 0 almost everywhere (L1, Pinball)."""
    kernel = getattr(criterion, "_kernel_name", None)
    return kernel is not None and kernel() in ("l1", "pinball")


def check_hessian(criterion, hessian):
    """The `hessian` option, checked against the criterion: a loss whose exact hessian
    vanishes (L1, Pinball) would give a booster nothing to split on, so it needs 'constant'
    or 'scaled'; 'scaled' is for those losses only (its scale is the residuals')."""
    if hessian not in HESSIANS:
        fail(ValueError, "hessian", "'exact', 'constant' or 'scaled'", repr(hessian))
    name = type(criterion).__name__
    if hessian == "exact" and _flat_hessian(criterion):
        raise ValueError(
            f"hessian: {name}'s exact hessian is 0 almost everywhere, so a booster would never split "
            "(every leaf's hessian sum is 0); pass hessian='constant', the boosters' convention for it "
            "(1 per sample, times its weight: XGBoost's reg:absoluteerror and reg:quantileerror, "
            "scikit-learn's gradient boosting), or hessian='scaled' (the same over the mean absolute residual)")
    if hessian == "scaled" and not _flat_hessian(criterion):
        fail(ValueError, "hessian", f"'exact' or 'constant' for {name} ('scaled' is for L1Loss and PinballLoss)",
             repr(hessian))
    return hessian


def _scores_and_labels(criterion, scores, labels):
    """The scores (C-contiguous) and the labels as the criterion reads them, or a clear error
    for a mismatch a booster would otherwise train on silently."""
    scores = np.ascontiguousarray(scores)
    labels = np.asarray(labels)
    name = type(criterion).__name__
    if isinstance(criterion, _CLASS_INDEX):
        if scores.ndim != 2:
            fail(ValueError, "scores", f"(N, C) raw scores for {name}, one column per class", f"shape {scores.shape}: "
                 "set num_class=C in the booster's parameters (XGBoost and LightGBM alike; the scikit-learn "
                 "classifiers set it themselves)")
        if labels.shape != (scores.shape[0],):
            fail(ValueError, "labels", f"one class index per row of the scores, shape ({scores.shape[0]},)",
                 f"shape {labels.shape}")
        if labels.size and not np.array_equal(labels, np.round(labels)):
            bad = labels[labels != np.round(labels)][0]
            fail(ValueError, "labels", f"class indices for {name}", repr(bad.item()))
        return scores, labels.astype(np.int64)
    if labels.size == scores.size:
        return scores, labels.astype(scores.dtype, copy=False).reshape(scores.shape)
    if scores.ndim == 2 and labels.shape == (scores.shape[0],):   # one target per row (a quantile sequence)
        return scores, labels.astype(scores.dtype, copy=False)
    fail(ValueError, "labels", f"one label per score ({scores.size}, scores of shape {scores.shape})",
         f"{labels.size} labels")


def _weights(weights, scores):
    """The sample weights as an array broadcasting over the scores' rows, or None."""
    if weights is None or len(weights) == 0:
        return None
    w = np.asarray(weights, scores.dtype)
    rows = scores.shape[0] if scores.ndim else 1
    if w.shape != (rows,):
        fail(ValueError, "weights", f"one weight per sample, shape ({rows},)", f"shape {w.shape}")
    return w.reshape((-1,) + (1,) * (scores.ndim - 1)) if scores.ndim > 1 else w


def gradients(criterion, scores, labels, weights=None, hessian="exact"):
    """(grad, hess) of every sample's loss with respect to its raw scores. hessian='constant'
    gives the boosters' convention instead of the exact diagonal: each sample's weight (1), and
    'scaled' that over the mean absolute residual |label - score| of this round."""
    scores, labels = _scores_and_labels(criterion, scores, labels)
    w = _weights(weights, scores)
    crit = per_sample(criterion, w is not None)
    if hessian == "exact":
        return crit.grad_hess(scores, labels, grad_output=w)
    _, grad = crit(scores, labels, grad_output=w)
    hess = np.ones_like(grad) if w is None else np.array(np.broadcast_to(w, grad.shape))   # (not the caller's w)
    if hessian == "scaled":
        per_row = labels.reshape(labels.shape + (1,) * (scores.ndim - labels.ndim))   # (a quantile sequence's)
        scale = float(_MEAN_ABSOLUTE.loss(scores, per_row))
        if scale > 0 and np.isfinite(scale):
            hess /= np.asarray(scale, hess.dtype)
    return grad, hess


def metric_value(criterion, scores, labels, weights=None):
    """The criterion's loss (its own reduction) of raw scores against labels, as a float. With
    sample weights: 'sum' is the weighted sum of the per-sample losses and 'mean' their weighted
    average (a sample's loss is its row's for (N, C) class scores, else the mean of its row)."""
    scores, labels = _scores_and_labels(criterion, scores, labels)
    w = _weights(weights, scores)
    if w is None:
        return float(criterion.loss(scores, labels))
    losses = np.asarray(criterion._with_reduction("none").loss(scores, labels), np.float64)
    per_row = losses.reshape(scores.shape[0], -1)
    w = np.asarray(weights, np.float64)   # (checked above; kept in float64, not the scores' dtype)
    total = float(w @ per_row.sum(1))
    if criterion.reduction == "sum":
        return total
    return total / (float(w.sum()) * per_row.shape[1])


def objective(criterion, hessian):
    """The objective of both boosters and both their APIs: native ``obj(scores, DMatrix or
    Dataset)``, and the scikit-learn estimators' ``obj(labels, scores, sample_weight)``: XGBoost
    passes the weights by that keyword, LightGBM positionally (it counts three parameters)."""
    check_hessian(criterion, hessian)

    def obj(first, second, sample_weight=None):
        if hasattr(second, "get_label"):
            return gradients(criterion, first, second.get_label(), second.get_weight(), hessian)
        return gradients(criterion, second, first, sample_weight, hessian)
    return obj


def metric_call(criterion, first, second, weights=None):
    """(value, native) of a metric's call from either API, told apart as `objective` does."""
    if hasattr(second, "get_label"):
        return metric_value(criterion, first, second.get_label(), second.get_weight()), True
    return metric_value(criterion, second, first, weights), False
