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
