"""What fastloss.xgboost and fastloss.lightgbm share: per-sample gradients and hessians.

A booster wants, per sample, the gradient and the diagonal hessian of that sample's loss
with respect to its raw score: the criterion's `grad_hess` with reduction 'sum' (the
per-sample values, as the built-in objectives give them), or 'none' with the sample weights
as grad_output. Raw scores are (N,) for one output and (N, C) for C classes; class-index
criteria (CrossEntropyLoss, SoftmaxFocalLoss) read the labels as class indices.
"""
import numpy as np

__all__ = ["per_sample", "gradients", "metric_value"]


def per_sample(criterion, weighted):
    """A copy of the criterion giving per-sample values: reduction 'sum', or 'none' when the
    samples are weighted (their weights then come in as grad_output)."""
    return criterion._with_reduction("none" if weighted else "sum")


def _labels(scores, labels):
    if scores.ndim == 2 and labels.ndim == 1:   # C raw scores per sample: class indices
        return labels.astype(np.int64)
    return labels.astype(scores.dtype).reshape(scores.shape)


def gradients(criterion, scores, labels, weights=None):
    """(grad, hess) of every sample's loss with respect to its raw scores."""
    scores = np.ascontiguousarray(scores)
    labels = np.asarray(labels)
    weighted = weights is not None and len(weights) > 0
    grad_output = None
    if weighted:   # one weight per sample: per row of scores, or per element of 1-D scores
        w = np.asarray(weights, scores.dtype)
        grad_output = w if scores.ndim == 1 or labels.ndim == 1 else w[:, None]
    return per_sample(criterion, weighted).grad_hess(scores, _labels(scores, labels),
                                                      grad_output=grad_output)


def metric_value(criterion, scores, labels):
    """The criterion's loss (its own reduction) of raw scores against labels, as a float."""
    scores = np.ascontiguousarray(scores)
    return float(criterion.loss(scores, _labels(scores, labels)))
