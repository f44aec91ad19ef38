"""Pictures: an evaluation report's figures, a loss's curves (`fastloss plot`) and the bench
table as a chart (`fastloss bench --plot`). matplotlib is optional (``pip install
'fastloss[plot]'``); it is imported here only, with the Agg backend (files, no screen).
"""

import numpy as np

__all__ = ["available", "report_figures", "loss_curves", "bench_chart"]

MAX_BARS = 40          # classes shown in the per-class bars (the worst by accuracy beyond that)
MAX_HEATMAP = 30       # classes shown as a full confusion heatmap (the largest mistakes beyond that)


def available():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("pictures need matplotlib: pip install 'fastloss[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def report_figures(metrics, title, path_for):
    """The figures of an evaluation's metrics (fastloss.metrics' dict): {name: path}, each
    written to path_for(name)."""
    plt = _pyplot()
    made = {}
    if metrics.get("per_class"):
        made["per_class"] = _per_class(plt, metrics["per_class"], title, path_for("per_class"))
    if metrics.get("ece") and metrics["ece"]["ece"] is not None:
        made["reliability"] = _reliability(plt, metrics["ece"], title, path_for("reliability"))
    if metrics.get("confusion"):
        made["confusion"] = _confusion(plt, np.array(metrics["confusion"]), title, path_for("confusion"))
    if metrics.get("roc_curve"):
        made["roc"] = _roc(plt, metrics, title, path_for("roc"))
    if metrics.get("residual_histogram"):
        made["residuals"] = _histogram(plt, metrics["residual_histogram"], "residual (input - target)",
                                       f"{title}: residuals", path_for("residuals"), log_x=False)
    if metrics.get("loss_histogram"):
        made["loss_histogram"] = _histogram(plt, metrics["loss_histogram"], "loss of a row",
                                            f"{title}: per-row losses", path_for("loss_histogram"), log_x=True)
    return made


def _per_class(plt, rows, title, path):
    rows = [r for r in rows if r["support"]]
    shown = sorted(rows, key=lambda r: (r["accuracy"], r["class"]))[:MAX_BARS] if len(rows) > MAX_BARS else rows
    labels = [str(r["class"]) for r in shown]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 0.28 * len(shown) + 2), 6), sharex=True)
    top.bar(labels, [r["mean_loss"] or 0 for r in shown], color="#c0504d")
    top.set_ylabel("mean loss")
    top.set_title(f"{title}: per class" + (f" (the {MAX_BARS} least accurate of {len(rows)})"
                                            if len(rows) > MAX_BARS else ""))
    bottom.bar(labels, [r["accuracy"] or 0 for r in shown], color="#4f81bd")
    bottom.set_ylabel("accuracy (recall)")
    bottom.set_ylim(0, 1)
    bottom.set_xlabel("class")
    bottom.tick_params(axis="x", labelrotation=90 if len(shown) > 15 else 0)
    return _save(fig, path)


def _reliability(plt, ece, title, path):
    bins = [b for b in ece["reliability"] if b["count"]]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    width = 1.0 / ece["bins"]
    ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
           color="#4f81bd", edgecolor="white", label="accuracy in the bin")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#1f3a60",
            label="(mean confidence, accuracy)")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top predicted probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}: reliability, ECE {ece['ece']:.4f}")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _confusion(plt, matrix, title, path):
    C = matrix.shape[0]
    if C <= MAX_HEATMAP:
        fig, ax = plt.subplots(figsize=(0.32 * C + 3, 0.32 * C + 2.5))
        shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(image, ax=ax, label="share of the true class's rows", fraction=0.046, pad=0.04)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_xticks(range(C))
        ax.set_yticks(range(C))
        ax.tick_params(labelsize=7)
        ax.set_title(f"{title}: confusion matrix")
        return _save(fig, path)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:20]
    cells = [(int(i // C), int(i % C), int(off.flat[i])) for i in flat if off.flat[i]]
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh([f"true {t} -> predicted {p}" for t, p, _ in cells][::-1], [n for *_, n in cells][::-1],
            color="#c0504d")
    ax.set_xlabel("rows")
    ax.set_title(f"{title}: the {len(cells)} largest confusions of {C} classes")
    return _save(fig, path)


def _roc(plt, metrics, title, path):
    fpr, tpr = metrics["roc_curve"]["fpr"], metrics["roc_curve"]["tpr"]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot(fpr, tpr, color="#4f81bd", label=f"AUC {metrics['roc_auc']:.4f}")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{title}: ROC curve")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _histogram(plt, histogram, xlabel, title, path, log_x):
    """The float bins' counts redrawn on 60 even bins (even in log for a log axis): each
    float bin's count spread over the even bins it overlaps, in proportion."""
    lo, hi, count = (np.array(histogram[k], np.float64) for k in ("lo", "hi", "count"))
    finite = np.isfinite(lo) & np.isfinite(hi)
    hidden = int(count[~finite].sum())
    lo, hi, count = lo[finite], hi[finite], count[finite]
    log_x = log_x and bool(len(lo)) and (lo > 0).any()
    if log_x:
        hidden += int(count[lo <= 0].sum())
        lo, hi, count = lo[lo > 0], hi[lo > 0], count[lo > 0]
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(lo):
        scale = np.log if log_x else (lambda v: v)
        x = np.stack([scale(lo), scale(hi)], axis=1).reshape(-1)   # the CDF, linear inside each bin
        cdf = np.cumsum(count)
        y = np.stack([cdf - count, cdf], axis=1).reshape(-1)
        first, last = x[0], x[-1]
        if not log_x:   # a linear axis spans the middle 99.8% (long tails would squeeze it to one bar)
            first, last = np.interp([0.001 * cdf[-1], 0.999 * cdf[-1]], y, x)
        edges = np.linspace(first, last, 61) if last > first else np.array([first, first + 1])
        merged = np.diff(np.interp(edges, x, y))
        hidden += int(round(cdf[-1] - merged.sum()))
        edges = np.exp(edges) if log_x else edges
        ax.stairs(merged, edges, fill=True, color="#4f81bd")
        if log_x:
            ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(("rows" if "loss" in xlabel else "elements") + " per bin")
    ax.set_title(title + (f" ({hidden} outside the axis)" if hidden else ""))
    return _save(fig, path)


def loss_curves(cls, option_sets, path, target=None, points=401, span=(-4.0, 4.0)):
    """The loss and its gradient against the input for one criterion class, one curve per
    option set, overlaid; the target fixed (`target`, or a value that suits the loss).
    Pointwise and class-row criteria: for a class-row loss the input is the true class's
    logit against a zero logit for each of the other (two) classes."""
    import fastloss as fl
    plt = _pyplot()
    x = np.linspace(*span, points)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for options in option_sets or [{}]:
        crit = cls(reduction="none", **options)
        arrays, input_of = _curve_arrays(crit, x, target)
        loss, grad = crit(*arrays)
        grad = grad[0] if isinstance(grad, tuple) else grad
        label = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
        top.plot(x, np.asarray(loss).reshape(points, -1)[:, 0], label=label)
        bottom.plot(x, input_of(grad), label=label)
    classes = isinstance(crit, (fl.CrossEntropyLoss, fl.NLLLoss, fl.MultiMarginLoss))
    what = ("the true class's logit (3 classes, the others' logits 0)" if classes
            else f"input (target {arrays[1].flat[0]:g})")
    top.set_ylabel("loss")
    top.set_title(f"{cls.__name__}: the loss and its gradient")
    top.legend(fontsize=8)
    bottom.set_ylabel("gradient")
    bottom.set_xlabel(what)
    for ax in (top, bottom):
        ax.axhline(0, color="gray", linewidth=0.6)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _curve_arrays(crit, x, target):
    import fastloss as fl
    if isinstance(crit, (fl.CrossEntropyLoss, fl.NLLLoss, fl.MultiMarginLoss)):
        logits = np.zeros((len(x), 3))
        logits[:, 0] = x
        if isinstance(crit, fl.NLLLoss):   # log-probabilities of those logits
            logits = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        return [logits, np.zeros(len(x), np.int64)], lambda g: g[:, 0]
    if len(crit.arguments) != 2:
        raise ValueError(f"{type(crit).__name__}: curves are drawn for an input and a target only")
    default = 1.0 if isinstance(crit, (fl.BCEWithLogitsLoss, fl.BCELoss, fl.SigmoidFocalLoss, fl.SoftMarginLoss,
                                       fl.HingeEmbeddingLoss, fl.PoissonNLLLoss)) else 0.0
    if isinstance(crit, fl.BCELoss):   # probabilities in: the sigmoid of the axis
        x = 1 / (1 + np.exp(-x))
    t = np.full(len(x), default if target is None else float(target))
    return [x, t], lambda g: g


def bench_chart(rows, path):
    """The bench table as a chart: for each loss and size, how many times faster fastloss ran
    than each peer it was timed against (log scale; 1 is parity)."""
    plt = _pyplot()
    peers = [p for p in ("torch", "jax", "numpy", "sklearn") if any(p in r for r in rows)]
    colours = dict(zip(peers, ("#4f81bd", "#f79646", "#9bbb59", "#c0504d")))
    fig, ax = plt.subplots(figsize=(8, 0.22 * sum(max(1, sum(p in r for p in peers)) for r in rows) + 0.3 * len(rows)
                                    + 1.5))
    y, ticks, labels, shown = 0.0, [], [], set()
    for r in rows:
        present = [p for p in peers if p in r and r["fastloss"]]
        for k, peer in enumerate(present):
            ax.barh(y + k * 0.22, r[peer] / r["fastloss"], height=0.2, color=colours[peer],
                    label=None if peer in shown else f"vs {peer}")
            shown.add(peer)
        size = r.get("size", r["n"])
        ticks.append(y + 0.22 * (len(present) - 1) / 2)
        labels.append(f"{r['loss']} {'x'.join(map(str, size)) if isinstance(size, (tuple, list)) else size}")
        y += 0.22 * max(1, len(present)) + 0.3
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("peer time / fastloss time (right of 1: fastloss faster)")
    ax.set_title("fastloss bench: fwd+bwd, float32")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
