"""Real XGBoost and LightGBM boosters trained with fastloss objectives, against their built-in
objectives on synthetic data."""
import numpy as np
import pytest

import fastloss as fl

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
import fastloss.lightgbm as fl_lgb  # noqa: E402
import fastloss.xgboost as fl_xgb  # noqa: E402


def binary_data(n=4000, seed=0):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, 8)).astype(np.float32)
    logit = X[:, 0] - 2 * X[:, 1] * X[:, 2] + np.sin(3 * X[:, 3])
    y = (r.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return X, y


def multiclass_data(n=3000, classes=4, seed=1):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, 6)).astype(np.float32)
    scores = X[:, :classes] + 0.5 * X[:, 4:5] * X[:, 5:6]
    p = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    y = np.array([r.choice(classes, p=row) for row in p]).astype(np.float32)
    return X, y


def log_loss(margins, y):
    z = margins - margins.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y.astype(int)].mean()


@pytest.mark.parametrize("weighted", [False, True])
def test_xgboost_bce_objective_equals_binary_logistic(weighted):
    X, y = binary_data()
    w = np.random.default_rng(3).uniform(0.5, 2, len(y)) if weighted else None
    params = {"max_depth": 4, "eta": 0.3, "tree_method": "hist", "nthread": 2, "seed": 0}
    builtin = xgb.train({**params, "objective": "binary:logistic", "base_score": 0.5},
                        xgb.DMatrix(X, label=y, weight=w), num_boost_round=20)
    ours = xgb.train({**params, "base_score": 0.0, "disable_default_eval_metric": 1},
                     xgb.DMatrix(X, label=y, weight=w), num_boost_round=20, obj=fl_xgb.objective(fl.BCEWithLogitsLoss()))
    test = xgb.DMatrix(binary_data(500, seed=9)[0])
    np.testing.assert_allclose(ours.predict(test, output_margin=True), builtin.predict(test, output_margin=True),
                               rtol=1e-5, atol=1e-5)


def test_xgboost_multiclass_cross_entropy_reaches_softprob_log_loss():
    """multi:softprob takes the hessian diagonal as 2 p (1 - p), twice the exact one: its steps
    are half as long, so the two boosters are compared where neither has overfitted."""
    X, y = multiclass_data(20000)
    Xt, yt = multiclass_data(2000, seed=7)
    params = {"max_depth": 3, "eta": 0.1, "tree_method": "hist", "nthread": 2, "seed": 0, "num_class": 4}
    builtin = xgb.train({**params, "objective": "multi:softprob"}, xgb.DMatrix(X, label=y), num_boost_round=30)
    evals = {}
    ours = xgb.train({**params, "disable_default_eval_metric": 1}, xgb.DMatrix(X, label=y), num_boost_round=30,
                     obj=fl_xgb.objective(fl.CrossEntropyLoss()), custom_metric=fl_xgb.metric(fl.CrossEntropyLoss()),
                     evals=[(xgb.DMatrix(Xt, label=yt), "test")], evals_result=evals, verbose_eval=False)
    ref = log_loss(np.log(builtin.predict(xgb.DMatrix(Xt))), yt)
    mine = log_loss(ours.predict(xgb.DMatrix(Xt), output_margin=True), yt)
    assert mine < 1.02 * ref, (mine, ref)
    assert evals["test"]["CrossEntropyLoss"][-1] == pytest.approx(mine, rel=1e-5)


@pytest.mark.parametrize("weighted", [False, True])
def test_lightgbm_bce_objective_equals_binary(weighted):
    X, y = binary_data()
    w = np.random.default_rng(4).uniform(0.5, 2, len(y)) if weighted else None
    params = {"num_leaves": 15, "learning_rate": 0.2, "num_threads": 2, "verbose": -1, "seed": 0,
              "deterministic": True, "force_row_wise": True}
    builtin = lgb.train({**params, "objective": "binary", "boost_from_average": False},
                        lgb.Dataset(X, label=y, weight=w), num_boost_round=20)
    ours = lgb.train({**params, "objective": fl_lgb.objective(fl.BCEWithLogitsLoss())},
                     lgb.Dataset(X, label=y, weight=w), num_boost_round=20)
    Xt = binary_data(500, seed=9)[0]
    np.testing.assert_allclose(ours.predict(Xt, raw_score=True), builtin.predict(Xt, raw_score=True), rtol=1e-5, atol=1e-5)


def test_lightgbm_multiclass_cross_entropy():
    X, y = multiclass_data()
    Xt, yt = multiclass_data(1000, seed=7)
    params = {"num_leaves": 15, "learning_rate": 0.2, "num_threads": 2, "verbose": -1, "seed": 0, "num_class": 4}
    builtin = lgb.train({**params, "objective": "multiclass"}, lgb.Dataset(X, label=y), num_boost_round=30)
    ours = lgb.train({**params, "objective": fl_lgb.objective(fl.CrossEntropyLoss())}, lgb.Dataset(X, label=y),
                     num_boost_round=30)
    ref = log_loss(builtin.predict(Xt, raw_score=True), yt)
    mine = log_loss(ours.predict(Xt, raw_score=True), yt)
    assert mine < 1.02 * ref, (mine, ref)
