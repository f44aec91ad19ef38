"""fastloss criteria as LightGBM objectives and metrics, for ``lightgbm.train`` and for the
scikit-learn estimators.

Native: ``params["objective"] = fastloss.lightgbm.objective(crit)`` for ``lightgbm.train``
(LightGBM >= 4 passes (N, C) raw scores for C classes), ``feval=fastloss.lightgbm.metric(crit)``.
scikit-learn: ``LGBMRegressor(objective=fastloss.lightgbm.objective(crit))`` (and
LGBMClassifier), ``fit(..., eval_metric=fastloss.lightgbm.metric(crit))``: the same functions
take both calls, and the Dataset's or ``fit(sample_weight=...)``'s weights.

The objective returns, per sample, the gradient and the exact hessian diagonal from one fused
pass. BCEWithLogitsLoss reproduces LightGBM's ``binary``, GammaLoss its ``gamma`` and
TweedieLoss its ``tweedie`` (set ``boost_from_average=False`` on the built-in to compare: a
custom objective starts from 0). L1Loss and PinballLoss need ``hessian="constant"`` or
``"scaled"`` (their exact hessian is 0); the built-ins also re-fit each leaf to a quantile of its
residuals, a step a custom objective cannot take, so "scaled" takes about twice
the rounds to reach the built-ins' test loss (within 1% at each one's best round count).

Mind:
- Predictions of a booster trained this way are raw scores: ``predict(X, raw_score=True)``
  says so explicitly, and a multi-class ``predict()`` gives no probabilities without it.
- Multi-class criteria need ``num_class`` in the parameters (LGBMClassifier sets it): without
  it the scores are 1-D and the objective refuses them rather than train on garbage.
- LightGBM computes its default metric beside a custom one: silence it with ``metric="None"``.
"""
from . import _boosting
from ._boosting import metric_call

__all__ = ["objective", "metric"]


def objective(criterion, hessian="exact"):
    """``fobj(preds, train_data) -> (grad, hess)``, which is also ``fobj(y_true, y_pred,
    weight)`` for the scikit-learn estimators. hessian: 'exact' (the criterion's diagonal), or for
    L1Loss and PinballLoss, whose exact hessian is 0: 'constant' (each sample's weight, 1
    without weights: the boosters' convention) or 'scaled' (that over the round's mean absolute
    residual, so that a leaf's step is in the targets' units: with targets of scale 30, 100
    rounds of 'constant' barely move)."""
    return _boosting.objective(criterion, hessian)


def metric(criterion, name=None, higher_better=False):
    """``feval(preds, eval_data) -> (name, value, higher_better)``: the criterion's loss,
    weighted by the Dataset's weights; for the scikit-learn estimators ``feval(y_true, y_pred,
    weight)``, the same tuple."""
    label = name or type(criterion).__name__

    def feval(preds, eval_data, weight=None):
        return label, metric_call(criterion, preds, eval_data, weight)[0], higher_better
    return feval
