"""fastloss criteria as XGBoost objectives and metrics.

``xgboost.train(params, dtrain, obj=fastloss.xgboost.objective(crit),
custom_metric=fastloss.xgboost.metric(crit))``. The objective returns, per sample, the
gradient and the exact hessian diagonal of the criterion's loss from one fused pass
(`Criterion.grad_hess`): BCEWithLogitsLoss reproduces ``binary:logistic``, CrossEntropyLoss
on (N, C) raw scores a softmax objective (XGBoost's own ``multi:softprob`` uses twice the
hessian diagonal, so the boosters differ slightly). Sample weights of the DMatrix are used.
Booster raw scores are margins: with a custom objective, XGBoost reports predictions as
margins too (apply the sigmoid or softmax yourself), and ``base_score`` is a margin.
"""
from ._boosting import gradients, metric_value

__all__ = ["objective", "metric"]


def objective(criterion):
    """``obj(predt, dtrain) -> (grad, hess)`` for ``xgboost.train(..., obj=...)``."""
    def obj(predt, dtrain):
        return gradients(criterion, predt, dtrain.get_label(), dtrain.get_weight())
    return obj


def metric(criterion, name=None):
    """``custom_metric(predt, dtrain) -> (name, value)``: the criterion's loss."""
    label = name or type(criterion).__name__

    def custom_metric(predt, dtrain):
        return label, metric_value(criterion, predt, dtrain.get_label())
    return custom_metric
