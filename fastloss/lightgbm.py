"""fastloss criteria as LightGBM objectives: ``params["objective"] =
fastloss.lightgbm.objective(crit)`` for ``lightgbm.train`` (LightGBM >= 4 passes (N, C) raw
scores for C classes). The objective returns, per sample, the gradient and the exact hessian
diagonal from one fused pass; BCEWithLogitsLoss reproduces LightGBM's ``binary`` (with
``boost_from_average`` off there, as a custom objective starts from 0). Dataset weights are
used. Predictions of a booster trained this way are raw scores.
"""
from ._boosting import gradients, metric_value

__all__ = ["objective", "metric"]


def objective(criterion):
    """``fobj(preds, train_data) -> (grad, hess)``."""
    def fobj(preds, train_data):
        return gradients(criterion, preds, train_data.get_label(), train_data.get_weight())
    return fobj


def metric(criterion, name=None, higher_better=False):
    """``feval(preds, eval_data) -> (name, value, higher_better)``: the criterion's loss."""
    label = name or type(criterion).__name__

    def feval(preds, eval_data):
        return label, metric_value(criterion, preds, eval_data.get_label()), higher_better
    return feval
