"""Metrics beside the loss (fl.evaluate(..., metrics=...), fastloss.metrics): against
scikit-learn's metrics on the same data, chunked equal to one call, and the per-row losses
(loss_out) as safe as grad_out."""
import builtins
import json
import os

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

import fastloss as fl
from fastloss.metrics import METRICS


def classification(seed=0, n=6000, classes=9, dtype=np.float32):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, classes)).astype(dtype)
    t = r.integers(0, classes, n)
    x[np.arange(n), t] += 1.0
    x[::7] = np.round(x[::7])            # equal logits: the top_k and argmax tie rules count
    t[::11] = -100                       # ignore_index rows count in no metric
    return x, t


def kept(x, t):
    keep = t != -100
    return x[keep], t[keep]


@pytest.mark.parametrize("chunk_rows", [None, 257])
def test_classification_metrics_match_sklearn(chunk_rows):
    x, t = classification()
    crit = fl.CrossEntropyLoss()
    m = fl.evaluate(crit, x, t, metrics=["accuracy", "top_k=3", "per_class", "confusion", "ece=10", "worst=7"],
                    chunk_rows=chunk_rows).metrics
    xk, tk = kept(x, t)
    predicted = xk.argmax(axis=1)
    assert m["kind"] == "classification" and m["classes"] == 9 and m["rows_counted"] == len(tk)
    assert m["accuracy"] == skm.accuracy_score(tk, predicted)
    assert m["top_k"] == {"k": 3, "accuracy": skm.top_k_accuracy_score(tk, xk, k=3, labels=np.arange(9))}
    np.testing.assert_array_equal(m["confusion"], skm.confusion_matrix(tk, predicted, labels=np.arange(9)))
    per_class = m["per_class"]
    np.testing.assert_allclose([c["precision"] for c in per_class], skm.precision_score(tk, predicted, average=None),
                               rtol=1e-15)
    np.testing.assert_allclose([c["recall"] for c in per_class], skm.recall_score(tk, predicted, average=None),
                               rtol=1e-15)
    assert [c["support"] for c in per_class] == np.bincount(tk, minlength=9).tolist()
    truth = torch.nn.functional.cross_entropy(torch.from_numpy(xk).double(), torch.from_numpy(tk),
                                              reduction="none").numpy()
    np.testing.assert_allclose([c["mean_loss"] for c in per_class],
                               [truth[tk == k].mean() for k in range(9)], rtol=1e-6)
    # the reliability bins: scikit-learn's calibration_curve of "was the argmax right" by the top probability
    confidence = torch.softmax(torch.from_numpy(xk).double(), 1).max(1).values.numpy()
    correct = (predicted == tk).astype(int)
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=10, strategy="uniform")
    bins = [b for b in m["ece"]["reliability"] if b["count"]]
    np.testing.assert_allclose([b["accuracy"] for b in bins], accuracy, rtol=1e-12)
    np.testing.assert_allclose([b["confidence"] for b in bins], mean_confidence, rtol=1e-7)   # float32 softmax
    counts = np.array([b["count"] for b in bins])
    assert m["ece"]["ece"] == pytest.approx(np.sum(counts / counts.sum() * np.abs(accuracy - mean_confidence)), rel=1e-6)
    # the worst rows: row numbers of the whole, the largest losses first
    row_truth = torch.nn.functional.cross_entropy(torch.from_numpy(x).double(), torch.from_numpy(t),
                                                  reduction="none").numpy()
    order = np.argsort(-row_truth, kind="stable")[:7]
    assert [w["row"] for w in m["worst"]] == order.tolist()
    assert [w["target"] for w in m["worst"]] == t[order].tolist()
    assert [w["predicted"] for w in m["worst"]] == x[order].argmax(1).tolist()
    np.testing.assert_allclose([w["loss"] for w in m["worst"]], row_truth[order], rtol=1e-6)


def test_nll_confidence_and_positions():
    """NLLLoss reads log-probabilities; (N, C, d) inputs give one prediction per position."""
    r = np.random.default_rng(1)
    logp = torch.log_softmax(torch.from_numpy(r.standard_normal((300, 4, 5))), 1).numpy()
    t = r.integers(0, 4, (300, 5))
    m = fl.evaluate(fl.NLLLoss(), logp, t, metrics=["accuracy", "ece=5"], chunk_rows=64).metrics
    flat = np.moveaxis(logp, 1, -1).reshape(-1, 4)
    assert m["accuracy"] == skm.accuracy_score(t.reshape(-1), flat.argmax(1))
    _, mean_confidence = calibration_curve((flat.argmax(1) == t.reshape(-1)).astype(int), np.exp(flat.max(1)),
                                           n_bins=5)
    np.testing.assert_allclose([b["confidence"] for b in m["ece"]["reliability"] if b["count"]], mean_confidence,
                               rtol=1e-12)


@pytest.mark.parametrize("crit_name", ["BCEWithLogitsLoss", "SigmoidFocalLoss", "BCELoss", "SoftMarginLoss"])
def test_binary_metrics_match_sklearn(crit_name):
    r = np.random.default_rng(2)
    x = r.standard_normal((5000, 3))
    x[::5] = np.round(x[::5])   # tied scores: half a pair each, as scikit-learn counts them
    y = (r.random((5000, 3)) < 1 / (1 + np.exp(-2 * x))).astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    crit = getattr(fl, crit_name)()
    given, target = (p, y) if crit_name == "BCELoss" else (x, 2 * y - 1 if crit_name == "SoftMarginLoss" else y)
    m = fl.evaluate(crit, given, target, metrics="all", chunk_rows=333).metrics
    assert m["kind"] == "binary" and m["elements"] == y.size
    assert m["accuracy"] == skm.accuracy_score(y.ravel(), p.ravel() > 0.5)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y.ravel(), p.ravel()), rel=1e-12)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y.ravel(), p.ravel()), rel=1e-12)
    auc = skm.roc_auc_score(y.ravel(), given.ravel())
    assert abs(m["roc_auc"] - auc) <= m["roc_auc_error_bound"] + 1e-15
    assert m["roc_auc_error_bound"] < 0.02   # the tied fifth of the scores: their pairs share a bin


def test_auc_is_exact_when_no_bin_holds_a_positive_and_a_negative():
    r = np.random.default_rng(3)
    x = r.integers(-50, 50, 20000).astype(np.float32)          # 100 distinct scores, far apart
    y = (r.random(20000) < 1 / (1 + np.exp(-x / 10))).astype(np.float32)
    m = fl.evaluate(fl.BCEWithLogitsLoss(), x, y, metrics=["roc_auc"]).metrics
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, x), rel=1e-15, abs=0)
    # each bin is one score value, so its pairs are true ties: the bound is their half share
    pos, neg = np.bincount((x + 50).astype(int)[y == 1], minlength=100), np.bincount((x + 50).astype(int)[y == 0],
                                                                                       minlength=100)
    assert m["roc_auc_error_bound"] == pytest.approx((pos * neg).sum() / 2 / (pos.sum() * neg.sum()), rel=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("crit", [fl.HuberLoss(), fl.PinballLoss(0.8), fl.LogCoshLoss()], ids=lambda c: type(c).__name__)
def test_regression_metrics_match_sklearn(dtype, crit):
    r = np.random.default_rng(4)
    x, y = (r.standard_normal((2, 4000, 2)) * [[[1.0, 100.0]]]).astype(dtype)
    m = fl.evaluate(crit, x, y, metrics="all", chunk_rows=999).metrics
    truth, pred = y.astype(np.float64).ravel(), x.astype(np.float64).ravel()
    rel = 1e-14 if dtype == np.float64 else 1e-7   # |r| and r^2 in the input's dtype, as the losses
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(truth, pred), rel=rel)
    assert m["rmse"] == pytest.approx(skm.root_mean_squared_error(truth, pred), rel=rel)
    residual = pred - truth
    for q in m["quantiles"]:
        exact = np.quantile(residual, q["q"], method="inverted_cdf")
        lo, hi = np.nextafter(np.float32([q["lo"], q["hi"]]), np.float32([-np.inf, np.inf]))
        assert lo <= exact <= hi, (q, exact)       # its bin (widened by float32's rounding of the residual)
        assert q["hi"] - q["lo"] <= 2 ** -10 * abs(exact) + 1e-30
    assert sum(m["residual_histogram"]["count"]) == residual.size


@pytest.mark.parametrize("make", ["classification", "binary", "regression"])
def test_chunked_metrics_are_the_one_call_metrics_bitwise(make):
    r = np.random.default_rng(5)
    if make == "classification":
        crit, arrays = fl.SoftmaxFocalLoss(), list(classification(5, 3000, 130))
    elif make == "binary":
        x = r.standard_normal((3000, 5)).astype(np.float32)
        crit, arrays = fl.BCEWithLogitsLoss(), [x, (r.random(x.shape) < 0.3).astype(np.float32)]
    else:
        crit, arrays = fl.MSELoss(), list(r.standard_normal((2, 3000, 5)))
    whole = fl.evaluate(crit, *arrays, metrics="all", chunk_rows=10 ** 6).metrics
    for chunk_rows in (1, 64, 1000):
        assert json.dumps(fl.evaluate(crit, *arrays, metrics="all", chunk_rows=chunk_rows).metrics) == json.dumps(whole)
    assert set(whole) >= set(METRICS[make])


def test_worst_rows_and_the_loss_histogram_for_any_criterion():
    r = np.random.default_rng(6)
    x, y = r.standard_normal((2, 500, 3))
    x[17, 1] = np.nan
    crit = fl.PoissonNLLLoss()
    m = fl.evaluate(crit, x, y, metrics="all", chunk_rows=50).metrics
    assert m["kind"] is None and set(m) == {"kind", "worst", "loss_histogram"}
    rows = fl.PoissonNLLLoss(reduction="none").loss(x, y).sum(axis=1)
    assert m["worst"][0] == {"row": 17, "loss": None}   # NaN first (None in JSON)
    order = np.argsort(-np.where(np.isnan(rows), np.inf, rows), kind="stable")[:10]
    assert [w["row"] for w in m["worst"]] == order.tolist()
    assert sum(m["loss_histogram"]["count"]) == 500


def test_per_row_losses_to_a_file_and_an_array(tmp_path):
    x, t = classification(7, 2000, 10)
    crit = fl.CrossEntropyLoss(label_smoothing=0.1)
    truth = fl.CrossEntropyLoss(label_smoothing=0.1, reduction="none").loss(x, t)
    result = fl.evaluate(crit, x, t, loss_out=tmp_path / "rows.npy", grad_out=tmp_path / "g.npy", chunk_rows=300)
    assert np.load(tmp_path / "rows.npy").tobytes() == truth.tobytes()
    assert result.passes == 2 and result.bytes == 2 * (x.nbytes + t.nbytes)
    out = np.empty_like(truth)
    fl.evaluate(crit, x, t, loss_out=out, chunk_rows=300)
    assert out.tobytes() == truth.tobytes()
    with pytest.raises(FileExistsError, match="loss_out: expected a new file"):
        fl.evaluate(crit, x, t, loss_out=tmp_path / "rows.npy")
    with pytest.raises(ValueError, match="loss_out: expected a file other than grad_out's"):
        fl.evaluate(crit, x, t, loss_out=tmp_path / "same.npy", grad_out=tmp_path / "same.npy")
    g = np.empty_like(x)
    with pytest.raises(ValueError, match="loss_out: expected a buffer that shares no memory"):
        fl.evaluate(crit, x, t, grad_out=g, loss_out=g[:, 0])
    with pytest.raises(ValueError, match=r"loss_out: expected shape \(2000,\) and dtype float32"):
        fl.evaluate(crit, x, t, loss_out=np.empty(2000))


def test_loss_out_never_onto_an_input_and_nothing_left_on_failure(tmp_path):
    x, t = classification(8, 2000, 10)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    with pytest.raises(ValueError, match="loss_out: expected a file other than the inputs"):
        fl.evaluate(fl.CrossEntropyLoss(), mapped, t, loss_out=tmp_path / "x.npy", overwrite=True)
    assert np.load(tmp_path / "x.npy").tobytes() == x.tobytes()
    bad = t.copy()
    bad[1500] = 10   # found in a later chunk, after earlier chunks were written
    with pytest.raises(IndexError, match=r"at position \(1500,\)"):
        fl.evaluate(fl.CrossEntropyLoss(), x, bad, loss_out=tmp_path / "rows.npy", metrics="all", chunk_rows=500)
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_metric_errors():
    x, t = classification(9, 100, 4)
    with pytest.raises(ValueError, match="metrics: expected some of accuracy, top_k.* for CrossEntropyLoss, got 'mae'"):
        fl.evaluate(fl.CrossEntropyLoss(), x, t, metrics=["mae"])
    with pytest.raises(ValueError, match="metrics: expected top_k=<a positive int"):
        fl.evaluate(fl.CrossEntropyLoss(), x, t, metrics=["top_k=0"])
    for item, most in (("ece=10001", 10_000), ("worst=100001", 100_000), ("confusion=4097", 4096)):
        with pytest.raises(ValueError, match=f"metrics: expected {item.split('=')[0]}=<a positive int up to {most}>"):
            fl.evaluate(fl.CrossEntropyLoss(), x, t, metrics=[item])   # each sizes memory: bounded
    with pytest.raises(ValueError, match="metrics: expected class-index targets"):
        fl.evaluate(fl.CrossEntropyLoss(), x, np.eye(4, dtype=np.float32)[np.abs(t) % 4], metrics=["accuracy"])
    with pytest.raises(NotImplementedError, match="DiceLoss: its 'none' loss is not one per row"):
        fl.evaluate(fl.DiceLoss("multiclass"), np.zeros((4, 3, 8, 8), np.float32), np.zeros((4, 8, 8), np.int64),
                    metrics=["worst"])


def test_progress_without_tqdm_shows_the_pass_the_rate_and_an_eta(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    x, t = classification(10, 2000, 10)
    fl.evaluate(fl.CrossEntropyLoss(), x, t, grad_out=np.empty_like(x), progress=True, chunk_rows=500)
    err = capsys.readouterr().err
    assert "pass 1/2: loss" in err and "pass 2/2: gradient" in err
    assert "GB/s" in err and "ETA" in err and f"{(x.nbytes + t.nbytes) / 1e9:.2f} GB" in err


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_summary_is_numpys_argmax_and_sklearns_rank(dtype):
    from fastloss._kernels.softmax import row_summary
    r = np.random.default_rng(11)
    z = np.round(r.standard_normal((3000, 37)) * 2).astype(dtype)   # many equal scores
    z[5, 3] = z[6, 0] = np.nan
    z[7] = -np.inf
    z[8, :] = 1.0
    t = r.integers(0, 37, 3000)
    t[9] = -100
    predicted, confidence, above = row_summary(z, t, True, True, False, 2)
    np.testing.assert_array_equal(predicted, np.argmax(z, axis=1))
    zt = z[np.arange(3000), np.clip(t, 0, 36)][:, None]
    rank = (z > zt).sum(1) + ((z == zt) & (np.arange(37) > t[:, None])).sum(1)
    rank[9] = -1
    np.testing.assert_array_equal(above, rank)
    with np.errstate(all="ignore"):
        truth = 1 / np.exp(z.astype(np.float64) - z.max(1, keepdims=True)).sum(1)
    ok = np.isfinite(z).all(1)
    np.testing.assert_allclose(confidence[ok], truth[ok], rtol=1e-6 if dtype == np.float32 else 1e-13)
    assert confidence[8] == pytest.approx(1 / 37)
    with fl.threads(1):
        assert [a.tobytes() for a in row_summary(z, t, True, True, False, 1)] == [predicted.tobytes(),
                                                                                 confidence.tobytes(), above.tobytes()]
