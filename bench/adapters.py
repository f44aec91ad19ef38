"""Benchmarks of the adapters: XGBoost and LightGBM boosting rounds with fastloss objectives
against the built-in objectives, and the torch wrapper against torch's own criterion."""
import time

import numpy as np

import fastloss as fl

from .harness import best_time, torch


def _round_time(train, rounds):
    train(1)   # warm up (builds the histogram cuts)
    start = time.perf_counter()
    train(rounds)
    return (time.perf_counter() - start) / rounds


def _boosting_rows(quick, threads):
    try:
        import xgboost as xgb
    except ImportError:
        return []
    import fastloss.xgboost as fl_xgb
    rng = np.random.default_rng(0)
    rows = []
    sizes = [("binary", 10 ** 5 if quick else 10 ** 6, 20, None), ("10 classes", 10 ** 4 if quick else 10 ** 5, 20, 10)]
    for label, n, features, classes in sizes:
        X = rng.standard_normal((n, features)).astype(np.float32)
        if classes is None:
            y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.standard_normal(n) > 0).astype(np.float32)
            builtin, crit = {"objective": "binary:logistic"}, fl.BCEWithLogitsLoss()
        else:
            y = (np.argmax(X[:, :classes] + rng.standard_normal((n, classes)), 1)).astype(np.float32)
            builtin, crit = {"objective": "multi:softprob", "num_class": classes}, fl.CrossEntropyLoss()
        dtrain = xgb.DMatrix(X, label=y)
        params = {"max_depth": 6, "eta": 0.1, "tree_method": "hist", "nthread": threads}
        rounds = 5 if quick else 20
        t_builtin = _round_time(lambda r: xgb.train({**params, **builtin}, dtrain, r), rounds)
        ours_params = {**params, "disable_default_eval_metric": 1, **({"num_class": classes} if classes else {})}
        t_ours = _round_time(lambda r: xgb.train(ours_params, dtrain, r, obj=fl_xgb.objective(crit)), rounds)
        rows.append((f"XGBoost {label} {n}x{features}", t_ours, t_builtin, "built-in objective"))
    return rows + _regression_rows(quick, threads, rng)


def _regression_rows(quick, threads, rng):
    """The regression objectives with a built-in twin, per boosting round at 10^6 x 20: XGBoost
    (reg:pseudohubererror, reg:gamma, reg:tweedie) and LightGBM (gamma, tweedie)."""
    import xgboost as xgb

    import fastloss.xgboost as fl_xgb
    n, features = (10 ** 5 if quick else 10 ** 6), 20
    rounds = 5 if quick else 20
    X = rng.standard_normal((n, features)).astype(np.float32)
    mu = np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1] * X[:, 2])
    targets = {"real": (X[:, 0] + X[:, 1] * X[:, 2] + rng.standard_normal(n)).astype(np.float32),
               "gamma": rng.gamma(2.0, mu / 2).astype(np.float32),
               "tweedie": (rng.poisson(mu) * rng.gamma(2.0, 0.5, n)).astype(np.float32)}
    twins = [("pseudo-Huber", {"objective": "reg:pseudohubererror"}, None, fl.PseudoHuberLoss(), "real"),
             ("gamma", {"objective": "reg:gamma"}, {"objective": "gamma"}, fl.GammaLoss(), "gamma"),
             ("tweedie", {"objective": "reg:tweedie", "tweedie_variance_power": 1.5},
              {"objective": "tweedie", "tweedie_variance_power": 1.5}, fl.TweedieLoss(1.5), "tweedie")]
    params = {"max_depth": 6, "eta": 0.1, "tree_method": "hist", "nthread": threads}
    rows = []
    for label, builtin, lgb_builtin, crit, kind in twins:
        dtrain = xgb.DMatrix(X, label=targets[kind])
        t_builtin = _round_time(lambda r: xgb.train({**params, **builtin}, dtrain, r), rounds)
        t_ours = _round_time(lambda r: xgb.train({**params, "disable_default_eval_metric": 1}, dtrain, r,
                                                 obj=fl_xgb.objective(crit)), rounds)
        rows.append((f"XGBoost {label} {n}x{features}", t_ours, t_builtin, "built-in objective"))
    try:
        import lightgbm as lgb
    except ImportError:
        return rows
    import fastloss.lightgbm as fl_lgb
    lgb_params = {"num_leaves": 63, "learning_rate": 0.1, "num_threads": threads, "verbose": -1,
                  "force_row_wise": True, "metric": "None"}
    for label, _, builtin, crit, kind in twins:
        if builtin is None:
            continue
        data = lgb.Dataset(X, label=targets[kind], params={"verbose": -1}).construct()
        t_builtin = _round_time(lambda r: lgb.train({**lgb_params, **builtin}, data, r), rounds)
        t_ours = _round_time(lambda r: lgb.train({**lgb_params, "objective": fl_lgb.objective(crit)}, data, r), rounds)
        rows.append((f"LightGBM {label} {n}x{features}", t_ours, t_builtin, "built-in objective"))
    return rows


def _torch_rows(quick):
    if torch is None:
        return []
    import fastloss.torch as fl_torch
    N, C = (1024, 32000) if quick else (8192, 32000)
    x = torch.randn(N, C, requires_grad=True)
    t = torch.randint(0, C, (N,))
    wrapped, native = fl_torch.wrap(fl.CrossEntropyLoss()), torch.nn.CrossEntropyLoss()

    def step(criterion):
        def run():
            x.grad = None
            criterion(x, t).backward()
        return run
    return [(f"torch wrap(CrossEntropyLoss) {N}x{C}", best_time(step(wrapped)), best_time(step(native)),
             "torch.nn.CrossEntropyLoss")]


def report(quick=False, threads=None, print_fn=print):
    threads = threads or fl.get_num_threads()
    rows = _torch_rows(quick) + _boosting_rows(quick, threads)
    if not rows:
        return rows
    print_fn("")
    print_fn(f"adapters ({threads} threads): time per call or per boosting round; ratio = reference time / "
             "fastloss time (higher is better)")
    for label, ours, reference, what in rows:
        print_fn(f"  {label:42s} fastloss {ours * 1e3:9.2f} ms   {what} {reference * 1e3:9.2f} ms   "
                 f"{reference / ours:5.2f}x")
    return rows
