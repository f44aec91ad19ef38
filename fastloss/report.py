"""An evaluation's report: every figure as JSON, a text summary that says what the numbers
mean, and, with matplotlib, PNG figures and a self-contained HTML page (`fastloss eval
--report DIR`). Each file is written whole to a temporary name and renamed into place; none
lands on an input file.
"""
import base64
import html
import json
import math
import os
import secrets

__all__ = ["summary", "reference", "write_report"]

FIGURE_NAMES = {"per_class": "per-class loss and accuracy", "reliability": "reliability diagram",
                "confusion": "confusion matrix", "roc": "ROC curve", "residuals": "residual histogram",
                "loss_histogram": "per-row loss histogram"}


def reference(criterion, metrics):
    """What the loss is measured against: the loss of an uninformed prediction, in words and as
    a number (None where no such number exists)."""
    name = type(criterion).__name__
    kind = (metrics or {}).get("kind")
    classes = (metrics or {}).get("classes")
    if kind == "classification" and classes and name in ("CrossEntropyLoss", "NLLLoss"):
        chance = math.log(classes)
        return chance, (f"chance level for {classes} classes (every class equally likely): ln {classes} = "
                        f"{chance:.4g}; below it the model knows something, above it it is worse than guessing")
    if kind == "binary" and name in ("BCEWithLogitsLoss", "BCELoss", "SoftMarginLoss"):
        chance = math.log(2)
        return chance, (f"chance level (probability 0.5 everywhere): ln 2 = {chance:.4g}")
    if kind == "regression":
        return None, "0 is a perfect fit; MAE and RMSE below are in the target's units"
    return None, None


def _size(n):
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _fmt(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def summary(report):
    """The report's text summary: the loss with what it means, then the metrics, a line each."""
    lines = [f"{report['criterion']}: loss {report['loss_text']} over {report['rows']} rows "
             f"({_size(report['bytes'])} read in {report['seconds']:.2f} s over {report['passes']} "
             f"pass{'es' if report['passes'] > 1 else ''}, {_fmt(report['gb_per_s'], 3)} GB/s)"]
    if report.get("reference_text"):
        lines.append(f"  {report['reference_text']}")
    m = report.get("metrics") or {}
    kind = m.get("kind")
    if kind == "classification":
        classes = m.get("classes") or 0
        if "accuracy" in m:
            lines.append(f"  accuracy {_fmt(m['accuracy'])} over {m['rows_counted']} rows "
                         f"(chance {_fmt(1 / classes if classes else None)})")
        if "top_k" in m:
            lines.append(f"  top-{m['top_k']['k']} accuracy {_fmt(m['top_k']['accuracy'])}")
        if m.get("ece") and m["ece"]["ece"] is not None:
            lines.append(f"  expected calibration error {_fmt(m['ece']['ece'])} over {m['ece']['bins']} bins "
                         "(0: the top probability is the accuracy it predicts)")
        if m.get("per_class"):
            worst = sorted((r for r in m["per_class"] if r["support"]), key=lambda r: (r["accuracy"], r["class"]))[:5]
            lines.append("  least accurate classes: " + ", ".join(
                f"{r['class']} ({_fmt(r['accuracy'], 3)} of {r['support']})" for r in worst))
    elif kind == "binary":
        n, positives = m.get("elements"), m.get("positives")
        if "accuracy" in m:
            lines.append(f"  accuracy at probability 0.5: {_fmt(m['accuracy'])} over {n} predictions"
                         + (f" ({positives / n:.1%} positive)" if positives is not None and n else ""))
        if "log_loss" in m:
            lines.append(f"  log-loss {_fmt(m['log_loss'])} (0.6931 = probability 0.5 everywhere)")
        if "brier" in m:
            lines.append(f"  Brier score {_fmt(m['brier'])} (0.25 = probability 0.5 everywhere)")
        if m.get("roc_auc") is not None:
            lines.append(f"  ROC AUC {_fmt(m['roc_auc'], 6)} (0.5 = chance; at most {m['roc_auc_error_bound']:.1e} "
                         "off, from scores sharing a histogram bin)")
    elif kind == "regression":
        if "mae" in m:
            lines.append(f"  MAE {_fmt(m['mae'])}, RMSE {_fmt(m.get('rmse'))} over {m['elements']} predictions")
        if m.get("quantiles") and m["quantiles"][0]["lo"] is not None:
            q = {item["q"]: item for item in m["quantiles"]}
            lines.append(f"  residual median in [{_fmt(q[0.5]['lo'])}, {_fmt(q[0.5]['hi'])}] (0: no bias); "
                         f"1% to 99% of residuals within [{_fmt(q[0.01]['lo'])}, {_fmt(q[0.99]['hi'])}]")
    if m.get("worst"):
        lines.append("  worst rows (row: loss): " + ", ".join(
            f"{w['row']}: {_fmt(w['loss'])}" + (f" (true {w['target']}, predicted {w['predicted']})"
                                                if "target" in w else "") for w in m["worst"][:5]))
    for key, what in (("grad_out", "gradient"), ("loss_out", "per-row losses")):
        if report.get(key):
            lines.append(f"  {what} in {report[key]}")
    return "\n".join(lines)


def _atomic_write(path, data, inputs):
    for source in inputs:
        if os.path.exists(path) and os.path.samefile(path, source):
            raise ValueError(f"report: expected files other than the inputs, got {path!r}, an input file")
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb") as f:
            f.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def write_report(directory, report, inputs=(), overwrite=False):
    """Writes report.json, summary.txt and, with matplotlib, the figures (PNG) and report.html
    into `directory` (made if missing; an earlier report there is replaced only with
    `overwrite`). `inputs`: the input files, which no report file may be. Returns the paths."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    if os.path.exists(os.path.join(directory, "report.json")) and not overwrite:
        raise FileExistsError(f"report: expected a folder without a report (or overwrite), got {directory!r}, "
                              "which has one")
    from . import plots
    written, figures = [], {}
    if plots.available() and report.get("metrics"):
        staged = {}

        def path_for(name):   # drawn to a temporary name, renamed below
            staged[name] = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.png")
            return staged[name]
        try:
            plots.report_figures(report["metrics"], type_name(report), path_for)
            for name, temporary in staged.items():
                with open(temporary, "rb") as f:
                    figures[name] = f.read()
        finally:
            for temporary in staged.values():
                if os.path.lexists(temporary):
                    os.unlink(temporary)
    report = dict(report, figures=[f"{name}.png" for name in figures])
    files = {"report.json": json.dumps(report, indent=1, allow_nan=False).encode(),
             "summary.txt": (summary(report) + "\n").encode()}
    files.update({f"{name}.png": data for name, data in figures.items()})
    if figures:
        files["report.html"] = _html(report, figures).encode()
    for name, data in files.items():
        path = os.path.join(directory, name)
        _atomic_write(path, data, inputs)
        written.append(path)
    return written


def type_name(report):
    return report["criterion"].split("(", 1)[0]


def _table(rows, columns):
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(report, figures):
    """One page, figures embedded as data URIs: it can be mailed or attached as one file."""
    m = report.get("metrics") or {}
    parts = [f"<h1>{html.escape(type_name(report))}: evaluation report</h1>",
             f"<pre>{html.escape(summary(report))}</pre>"]
    for name, data in figures.items():
        parts.append(f"<h2>{html.escape(FIGURE_NAMES.get(name, name))}</h2>"
                     f"<img alt='{name}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>")
    if m.get("worst"):
        parts.append("<h2>worst rows</h2>" + _table(m["worst"], list(m["worst"][0])))
    if m.get("per_class"):
        rows = m["per_class"][:200]
        parts.append("<h2>per class</h2>" + (f"<p>the first 200 of {len(m['per_class'])}</p>"
                                            if len(m["per_class"]) > 200 else "")
                     + _table(rows, ["class", "support", "mean_loss", "accuracy", "precision", "recall"]))
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
             "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}pre{background:#f6f6f6;padding:1em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>fastloss report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
