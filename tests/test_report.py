"""`fastloss eval --metrics/--loss-out/--report`, `fastloss plot` and `fastloss bench --plot`:
the files are written, complete and readable; the pictures are real PNGs; the errors are one
line each."""
import json
import os
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import fastloss_env, prediction_files, run_cli

import fastloss as fl
from fastloss import plots, report

pytestmark = pytest.mark.commands
PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG and os.path.getsize(path) > 5000


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_cli_report_metrics_and_loss_out(tmp_path):
    x, t = prediction_files(tmp_path, 11, rows=5000, classes=12)
    run = run_cli("--loss", "cross_entropy", "--input", "p.npy", "--target", "t.npy", "--report", "rep",
                  "--loss-out", "rows.npy", "--chunk-rows", "700", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    one_call = fl.evaluate(fl.CrossEntropyLoss(), x, t, metrics="all")
    assert saved["metrics"] == json.loads(json.dumps(one_call.metrics))   # chunked through the CLI = one call
    assert np.float32(saved["loss"]) == fl.CrossEntropyLoss().loss(x, t)
    assert saved["reference_loss"] == pytest.approx(np.log(12))
    assert np.load(tmp_path / "rows.npy").tobytes() == fl.CrossEntropyLoss(reduction="none").loss(x, t).tobytes()
    names = {"report.json", "summary.txt", "report.html", "per_class.png", "reliability.png", "confusion.png",
             "loss_histogram.png"}
    assert set(os.listdir(tmp_path / "rep")) == names
    for name in names - {"report.json", "summary.txt", "report.html"}:
        assert is_png(tmp_path / "rep" / name), name
    page = _Images()
    page.feed((tmp_path / "rep" / "report.html").read_text())
    assert len(page.sources) == 4 and all(s.startswith("data:image/png;base64,") for s in page.sources)
    text = (tmp_path / "rep" / "summary.txt").read_text()
    assert text.strip() in run.stdout
    assert "chance level for 12 classes" in text and "accuracy" in text and "expected calibration error" in text
    again = run_cli("--loss", "cross_entropy", "--input", "p.npy", "--target", "t.npy", "--report", "rep",
                    "--no-progress", cwd=tmp_path)
    assert again.returncode == 2 and "--report: report: expected a folder without a report (or overwrite)" in again.stderr


@pytest.mark.parametrize("loss, make, figures", [
    ("binary_cross_entropy_with_logits", "binary", {"roc.png", "loss_histogram.png"}),
    ("mse_loss", "regression", {"residuals.png", "loss_histogram.png"}),
])
def test_cli_reports_of_the_other_kinds(tmp_path, loss, make, figures):
    r = np.random.default_rng(12)
    x = r.standard_normal((4000, 3)).astype(np.float32)
    y = (r.random(x.shape) < 0.4).astype(np.float32) if make == "binary" else x + r.standard_normal(x.shape, np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    run = run_cli("--loss", loss, "--input", "x.npy", "--target", "y.npy", "--report", "rep", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["metrics"]["kind"] == make
    assert set(os.listdir(tmp_path / "rep")) == figures | {"report.json", "summary.txt", "report.html"}
    assert all(is_png(tmp_path / "rep" / f) for f in figures)


def test_report_without_matplotlib_still_writes_json_and_text(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "available", lambda: False)
    x, t = prediction_files(tmp_path, 13, rows=500, classes=5)
    result = fl.evaluate(fl.CrossEntropyLoss(), x, t, metrics=["accuracy"])
    content = {"criterion": "CrossEntropyLoss()", "loss_text": "1.5", "rows": 500, "bytes": 1, "seconds": 0.1,
               "passes": 1, "gb_per_s": 1.0, "metrics": result.metrics}
    written = report.write_report(tmp_path / "out", content)
    assert sorted(os.path.basename(p) for p in written) == ["report.json", "summary.txt"]
    assert "accuracy" in (tmp_path / "out" / "summary.txt").read_text()


def test_report_never_lands_on_an_input(tmp_path):
    np.save(tmp_path / "summary.txt", np.zeros(3))   # an input that has a report file's name
    os.rename(tmp_path / "summary.txt.npy", tmp_path / "summary.txt")
    content = {"criterion": "MSELoss()", "loss_text": "0", "rows": 3, "bytes": 1, "seconds": 0.1, "passes": 1,
               "gb_per_s": 1.0, "metrics": None}
    with pytest.raises(ValueError, match="report: expected files other than the inputs"):
        report.write_report(tmp_path, content, inputs=[str(tmp_path / "summary.txt")])
    assert np.load(tmp_path / "summary.txt").tolist() == [0, 0, 0]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_cli_metric_errors(tmp_path):
    prediction_files(tmp_path, 14, rows=100, classes=4)
    run = run_cli("--loss", "cross_entropy", "--input", "p.npy", "--target", "t.npy", "--metrics", "mae",
                  "--no-progress", cwd=tmp_path)
    assert run.returncode == 2 and "metrics: expected some of accuracy" in run.stderr and "got 'mae'" in run.stderr
    run = run_cli("--loss", "cross_entropy", "--input", "p.npy", "--target", "t.npy", "--loss-out", "p.npy",
                  "--overwrite", "--no-progress", cwd=tmp_path)
    assert run.returncode == 2 and "loss_out: expected a file other than the inputs" in run.stderr


def plot_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastloss.cli", "plot", *args], capture_output=True, text=True,
                          cwd=cwd, env=fastloss_env())


def test_plot_draws_curves_and_names_bad_input(tmp_path, monkeypatch, capsys):
    run = plot_cli("huber_loss", "--option", "delta=0.5", "--option", "delta=2", "-o", "h.png", cwd=tmp_path)
    assert run.returncode == 0 and is_png(tmp_path / "h.png"), run.stderr   # the command itself, once
    from fastloss.eval_cli import plot_main
    monkeypatch.chdir(tmp_path)
    assert is_png(plot_main(["cross_entropy", "--option", "label_smoothing=0.1", "-o", "c.png"]))
    for args, message in [(["nope"], "loss: expected one of"), (["huber_loss", "--option", "delta=-1"], "delta"),
                          (["triplet_margin_loss"], "curves are drawn for an input and a target only"),
                          (["mse_loss", "--range", "2", "1"], "--range: expected LO < HI"),
                          (["cross_entropy", "--option", "label_smoothing=0.1,reduction=none"], "reduction")]:
        with pytest.raises(SystemExit) as stop:
            plot_main(args)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_plot_curves_are_the_criterion(tmp_path, monkeypatch):
    """What the curves draw is the criterion's own loss and gradient at those inputs."""
    drawn = []
    import matplotlib.axes
    real = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        drawn.append(args)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    plots.loss_curves(fl.SmoothL1Loss, [{"beta": 0.5}], tmp_path / "s.png", target=1.0, points=9)
    x = np.linspace(-4, 4, 9)
    loss, grad = fl.SmoothL1Loss(beta=0.5, reduction="none")(x, np.ones(9))
    np.testing.assert_array_equal(drawn[0][1], loss)
    np.testing.assert_array_equal(drawn[1][1], grad)


def test_bench_chart(tmp_path):
    rows = [{"loss": "MSELoss", "n": 64, "size": 64, "fastloss": 1e-6, "torch": 5e-6, "sklearn": 2e-6},
            {"loss": "CrossEntropyLoss", "n": 40960, "size": (4096, 10), "fastloss": 1e-4, "torch": 4e-4, "jax": 2e-4}]
    assert is_png(plots.bench_chart(rows, tmp_path / "b.png"))
