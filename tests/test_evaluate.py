"""Chunked evaluation (fastloss.evaluate, the `fastloss eval` command, fastloss.dask): bitwise
the one-call loss and gradient."""
import json
import os

import numpy as np
import pytest
from conftest import prediction_files, run_cli

import fastloss as fl


def families(dtype):
    r = np.random.default_rng(5)
    x, y = r.standard_normal((2, 2100, 130)).astype(dtype)
    yield fl.MSELoss(), [x, y]
    yield fl.BCEWithLogitsLoss(reduction="sum"), [x, (y > 0).astype(dtype)]
    t = r.integers(0, 130, 2100)
    t[::5] = -100
    yield fl.CrossEntropyLoss(weight=r.uniform(0.5, 2, 130).astype(dtype), label_smoothing=0.05), [x, t]
    yield fl.SoftmaxFocalLoss(), [x, t]
    yield fl.NLLLoss(), [x, t]
    yield fl.MultiLabelSoftMarginLoss(), [x, (y > 0).astype(dtype)]
    a, p, n = r.standard_normal((3, 2100, 24)).astype(dtype)
    yield fl.TripletMarginLoss(swap=True), [a, p, n]
    yield fl.CosineEmbeddingLoss(margin=0.1), [a, p, r.choice([-1, 1], 2100)]
    yield fl.LinearCrossEntropyLoss(), [a, (0.2 * r.standard_normal((30, 24))).astype(dtype), r.integers(0, 30, 2100),
                                        r.standard_normal(30).astype(dtype)]
    lp = np.log(r.dirichlet(np.ones(8), (25, 2100))).astype(dtype)
    yield fl.CTCLoss(zero_infinity=True), [lp, r.integers(1, 8, (2100, 6)), r.integers(8, 26, 2100),
                                           r.integers(0, 7, 2100)]


def test_evaluate_dice_per_class_sums():
    r = np.random.default_rng(9)
    x = r.standard_normal((40, 5, 16, 16)).astype(np.float32)
    t = r.integers(0, 5, (40, 16, 16))
    for reduction in ("mean", "none"):
        crit = fl.DiceLoss("multiclass", smooth=0.5, reduction=reduction)
        result = fl.evaluate(crit, x, t, chunk_rows=7)
        assert np.asarray(result.loss).tobytes() == np.asarray(crit.loss(x, t)).tobytes()
    with pytest.raises(NotImplementedError, match="DiceLoss: no chunked gradient"):
        fl.evaluate(crit, x, t, grad_out=np.empty_like(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunk_rows", [1, 100, None])
def test_evaluate_is_the_one_call_bitwise(dtype, chunk_rows):
    for crit, arrays in families(dtype):
        grad_out = np.empty_like(arrays[0])
        result = fl.evaluate(crit, *arrays, chunk_rows=chunk_rows, grad_out=grad_out)
        loss, grad = crit(*arrays)
        grad = grad[0] if isinstance(grad, tuple) else grad
        assert result.loss.tobytes() == crit.loss(*arrays).tobytes() == loss.tobytes(), repr(crit)
        assert grad_out.tobytes() == grad.tobytes(), repr(crit)
        assert result.rows == 2100 and result.chunk_rows % crit.block_rows(arrays[0].shape) == 0, repr(crit)


def test_evaluate_memmap_files_and_a_memmap_gradient(tmp_path):
    r = np.random.default_rng(6)
    x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (9000, 60))
    x[:] = r.standard_normal((9000, 60))
    x.flush()
    np.save(tmp_path / "t.npy", r.integers(0, 60, 9000))
    X, T = np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "t.npy", mmap_mode="r")
    g = np.lib.format.open_memmap(tmp_path / "g.npy", "w+", np.float32, (9000, 60))
    crit = fl.CrossEntropyLoss()
    result = fl.evaluate(crit, X, T, chunk_rows=1000, grad_out=g, progress=True)
    g.flush()
    loss, grad = crit(np.array(X), np.array(T))
    assert result.loss.tobytes() == loss.tobytes()
    assert np.load(tmp_path / "g.npy").tobytes() == grad.tobytes()
    # a slice of a map starts at its own offset in the file
    part = fl.evaluate(crit, X[1600:4800], T[1600:4800], chunk_rows=320)
    assert part.loss.tobytes() == crit.loss(np.array(X[1600:4800]), np.array(T[1600:4800])).tobytes()


def test_evaluate_errors():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"target: expected 10 rows \(input's\), got 9 rows"):
        fl.evaluate(fl.MSELoss(), x, np.zeros((9, 3)))
    with pytest.raises(ValueError, match="reduction='none'"):
        fl.evaluate(fl.MSELoss(reduction="none"), x, x)
    with pytest.raises(NotImplementedError, match="NTXentLoss"):
        fl.evaluate(fl.NTXentLoss(), x, x)
    with pytest.raises(ValueError, match="grad_out: expected shape"):
        fl.evaluate(fl.MSELoss(), x, x, grad_out=np.zeros((10, 4)))


@pytest.mark.commands
def test_cli_evaluates_files_with_json_and_a_gradient(tmp_path):
    x, t = prediction_files(tmp_path, 7)
    run = run_cli("--loss", "cross_entropy", "--input", "p.npy", "--target", "t.npy", "--option",
                  "label_smoothing=0.1", "--json", "--grad-out", "g.npy", "--chunk-rows", "500", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    crit = fl.CrossEntropyLoss(label_smoothing=0.1)
    loss, grad = crit(x, t)
    assert np.float32(report["loss"]) == loss and report["rows"] == 3000
    assert np.load(tmp_path / "g.npy").tobytes() == grad.tobytes()
    text = run_cli("--loss", "MSELoss", "--input", "p.npy", "--target", "p.npy", "--no-progress", cwd=tmp_path)
    assert text.returncode == 0 and "loss 0 over 3000 rows" in text.stdout


@pytest.mark.commands
@pytest.mark.parametrize("args, message", [
    (["--loss", "cross_entropy", "--input", "missing.npy", "--target", "t.npy"], "--input: no such file 'missing.npy'"),
    (["--loss", "cross_entropy", "--input", "p.npy", "--target", "bad.npy"], "--target: 'bad.npy' is not a readable .npy file"),
    (["--loss", "cross_entopy", "--input", "p.npy", "--target", "t.npy"], "--loss: expected one of"),
    (["--loss", "cross_entropy", "--input", "t.npy", "--target", "t.npy"], "input: expected a float32 or float64 array, got dtype int64"),
    (["--loss", "cross_entropy", "--input", "p.npy", "--target", "short.npy"], "target: expected 3000 rows"),
    (["--loss", "cross_entropy", "--input", "p.npy", "--target", "t.npy", "--option", "smoothing"], "--option: expected KEY=VALUE"),
    (["--loss", "cross_entropy", "--input", "p.npy", "--target", "t.npy", "--option", "label_smoothing=2"], "label_smoothing"),
    (["--input", "p.npy"], "expected --loss and --input"),
])
def test_cli_bad_input(tmp_path, args, message):
    np.save(tmp_path / "p.npy", np.zeros((3000, 20), np.float32))
    np.save(tmp_path / "t.npy", np.zeros(3000, np.int64))
    np.save(tmp_path / "short.npy", np.zeros(2999, np.int64))
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    run = run_cli(*args, "--no-progress", cwd=tmp_path)
    assert run.returncode == 2
    assert message in run.stderr, run.stderr


@pytest.mark.commands
def test_cli_example(tmp_path):
    run = run_cli("--example", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    x, t = np.load(tmp_path / "fastloss-example" / "preds.npy"), np.load(tmp_path / "fastloss-example" / "labels.npy")
    assert np.float32(report["loss"]) == fl.CrossEntropyLoss().loss(x, t)
    assert report["metrics"]["accuracy"] == np.mean(x.argmax(1) == t)
    folder = tmp_path / "fastloss-example" / "report"
    assert {"report.json", "summary.txt", "report.html", "reliability.png"} <= set(os.listdir(folder))
    text = run_cli("--example", "--no-progress", cwd=tmp_path)   # again: its own files are made anew
    assert text.returncode == 0 and "chance level for 20 classes" in text.stdout, text.stderr


@pytest.mark.commands
def test_dask_on_a_local_cluster_is_the_in_memory_call_bitwise():
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    import fastloss.dask as fd
    r = np.random.default_rng(8)
    x = r.standard_normal((5000, 40)).astype(np.float32)
    t = r.integers(0, 40, 5000)
    t[::9] = -100
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        for crit in (fl.CrossEntropyLoss(label_smoothing=0.1), fl.CrossEntropyLoss(reduction="sum")):
            loss, grad = fd.evaluate(crit, da.from_array(x, chunks=(777, 40)), da.from_array(t, chunks=777), grad=True)
            ref, ref_grad = crit(x, t)
            assert loss.tobytes() == ref.tobytes()
            assert grad.compute().tobytes() == ref_grad.tobytes()
        mse = fl.MSELoss()
        y = r.standard_normal((5000, 40)).astype(np.float32)
        assert fd.evaluate(mse, da.from_array(x, chunks=(1000, 40)), da.from_array(y, chunks=(1000, 40))).tobytes() \
            == mse.loss(x, y).tobytes()


def test_dask_refuses_a_chunked_gradient_where_chunks_need_the_whole():
    da = pytest.importorskip("dask.array")
    import fastloss.dask as fd
    x, t = np.zeros((4, 3, 5), np.float32), np.zeros((4, 5), np.int64)
    with pytest.raises(NotImplementedError, match="DiceLoss: no chunked gradient"):
        fd.evaluate(fl.DiceLoss("multiclass"), da.from_array(x), da.from_array(t), grad=True)
