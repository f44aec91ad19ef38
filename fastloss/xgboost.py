"""fastloss criteria as XGBoost objectives and metrics, for ``xgboost.train`` and for the
scikit-learn estimators.

Native: ``xgboost.train(params, dtrain, obj=fastloss.xgboost.objective(crit),
custom_metric=fastloss.xgboost.metric(crit))``. scikit-learn: ``XGBRegressor(objective=
fastloss.xgboost.objective(crit), eval_metric=fastloss.xgboost.metric(crit))`` (and
XGBClassifier): the same functions take both calls, and the sample weights of either
(``DMatrix(weight=...)``, ``fit(sample_weight=...)``).

The objective returns, per sample, the gradient and the exact hessian diagonal of the
criterion's loss from one fused pass (`Criterion.grad_hess`). BCEWithLogitsLoss reproduces
``binary:logistic``, PseudoHuberLoss ``reg:pseudohubererror``, GammaLoss ``reg:gamma`` and
TweedieLoss ``reg:tweedie`` (the same gradients and hessians); CrossEntropyLoss on (N, C) raw
scores is a softmax objective (XGBoost's ``multi:softprob`` uses twice the hessian diagonal, so
the boosters differ slightly). L1Loss and PinballLoss need ``hessian="constant"`` or ``"scaled"``
(their exact hessian is 0); the built-ins also re-fit each leaf to a quantile of its residuals,
a step a custom objective cannot take, so "scaled" takes about twice
the rounds to reach the built-ins' test loss (within 1% at each one's best round count).

Mind:
- Raw scores are margins. With a custom objective XGBoost's predictions are margins too: call
  ``booster.predict(d, output_margin=True)`` and apply the sigmoid or softmax yourself (a
  multi-class ``predict()`` without it does not give probabilities). ``base_score`` is a margin
  for ``xgboost.train`` with ``obj=``, but XGBClassifier runs a custom objective under
  ``binary:logistic``, where it is a probability (0.5 for a margin of 0).
- Multi-class criteria need ``num_class`` in the parameters (XGBClassifier sets it): without it
  the scores are 1-D and the objective refuses them rather than train on garbage.
- XGBoost still computes its default metric beside a custom one: silence it with
  ``disable_default_eval_metric=1``.
"""
from . import _boosting
from ._boosting import metric_call

__all__ = ["objective", "metric"]


def objective(criterion, hessian="exact"):
    """``obj(predt, dtrain) -> (grad, hess)`` for ``xgboost.train(..., obj=...)``, which is
    also ``obj(y_true, y_pred, sample_weight=None)`` for the scikit-learn estimators.
    hessian: 'exact' (the criterion's diagonal), or for
    L1Loss and PinballLoss, whose exact hessian is 0: 'constant' (each sample's weight, 1
    without weights: the boosters' convention) or 'scaled' (that over the round's mean absolute
    residual, so that a leaf's step is in the targets' units: with targets of scale 30, 100
    rounds of 'constant' barely move)."""
    return _boosting.objective(criterion, hessian)


def metric(criterion, name=None):
    """``custom_metric(predt, dtrain) -> (name, value)``: the criterion's loss, weighted by the
    DMatrix's weights; as ``eval_metric`` of the scikit-learn estimators it is
    ``(y_true, y_pred, sample_weight=None) -> value``, named `name` (the criterion's class name)."""
    label = name or type(criterion).__name__

    def custom_metric(predt, dtrain, sample_weight=None):
        value, native = metric_call(criterion, predt, dtrain, sample_weight)
        return (label, value) if native else value
    custom_metric.__name__ = label
    return custom_metric
