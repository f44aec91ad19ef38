"""Metrics beside the loss, in the same streaming pass: ``fl.evaluate(crit, X, T, metrics=...)``.

Which metrics a criterion offers follows from what its input is (`kind_of`):

* classification (CrossEntropyLoss, SoftmaxFocalLoss, NLLLoss, MultiMarginLoss; class-index
  targets, classes along axis 1): accuracy (the argmax, the lowest index among equal
  maxima, as NumPy's), top_k accuracy (scikit-learn's rule: of equal scores the higher class
  ranks first), per-class support / mean loss / accuracy (= recall) / precision, the
  confusion matrix (rows true, columns predicted; up to `confusion` classes), the expected
  calibration error over `ece` uniform bins of the top softmax probability (NLLLoss: exp of
  the top log-probability; a value on a bin edge goes to the lower bin, as scikit-learn's
  calibration_curve), rows whose target is ignore_index left out;
* binary (BCEWithLogitsLoss, BCELoss, SigmoidFocalLoss, SoftMarginLoss; every element one
  prediction): accuracy at probability 0.5 (positive above it), log-loss, Brier score and
  ROC AUC. The AUC is counted from a histogram of the scores on 2**20 bins of their float32
  values (11 of the 23 mantissa bits: bins 2**-11 of a value wide): pairs of a positive and a
  negative in one bin count a half, as ties do, so the AUC is exact when no bin holds both,
  and `roc_auc_error_bound` gives the most it can be off otherwise (half the share of such
  pairs), computed from the same counts;
* regression (MSELoss, L1Loss, HuberLoss, SmoothL1Loss, PseudoHuberLoss, LogCoshLoss,
  PinballLoss with one quantile; residual r = input - target over
  every element): MAE, RMSE, and residual quantiles from the same kind of histogram: each
  quantile (inverted CDF: the smallest r with F(r) >= q) is given as the interval of its bin,
  which holds the exact value (bounds 2**-11 of the value apart).

Every criterion offers `worst` (the k rows with the largest loss, row numbers in the whole
arrays; a row's loss is its 'none' losses summed; NaN counts as the largest; ties by row
number) and `loss_histogram` (the per-row losses on the same float32 bins, coarsened to
3 mantissa bits). Counts are integers and sums exact (fastloss._exact), so a metric over
chunks is bitwise the metric over the whole, in any chunking.

A metric is named by a string, with its parameter after '=': "accuracy", "top_k=5",
"ece=15", "worst=20", "confusion=1000"; "all" takes every metric of the criterion's kind.
"""
import math

import numpy as np

from ._arrays import fail
from ._exact import ExactSum
from ._kernels.softmax import row_summary
from ._kernels.tally import ExactSums, float_bins
from ._threads import get_num_threads
from .losses.pointwise import (
    BCELoss,
    BCEWithLogitsLoss,
    HuberLoss,
    L1Loss,
    LogCoshLoss,
    MSELoss,
    PinballLoss,
    PseudoHuberLoss,
    SigmoidFocalLoss,
    SmoothL1Loss,
    SoftMarginLoss,
)
from .losses.softmax import CrossEntropyLoss, MultiMarginLoss, NLLLoss

__all__ = ["kind_of", "METRICS", "Tally"]

KINDS = (("classification", (CrossEntropyLoss, NLLLoss, MultiMarginLoss)),   # SoftmaxFocalLoss is a CrossEntropyLoss
         ("binary", (BCEWithLogitsLoss, BCELoss, SigmoidFocalLoss, SoftMarginLoss)),
         ("regression", (MSELoss, L1Loss, HuberLoss, SmoothL1Loss, PseudoHuberLoss, LogCoshLoss, PinballLoss)))
_ANY = ("worst", "loss_histogram")
METRICS = {
    "classification": ("accuracy", "top_k", "per_class", "confusion", "ece") + _ANY,
    "binary": ("accuracy", "log_loss", "brier", "roc_auc") + _ANY,
    "regression": ("mae", "rmse", "quantiles") + _ANY,
    None: _ANY,
}
DEFAULTS = {"top_k": 5, "ece": 15, "worst": 10, "confusion": 1000}
# the largest values taken: each sizes memory (ece: exact sums of ~560 bytes per bin; worst: the
# rows kept; confusion: an int64 matrix of its square), so none may come from the input unbounded
MAXIMA = {"top_k": 1 << 62, "ece": 10_000, "worst": 100_000, "confusion": 4096}
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
FINE, COARSE = 12, 20     # float32 bits dropped by the AUC / quantile bins and the loss histogram's
PER_CLASS_LIMIT = 1 << 16   # classes with per-class figures (their exact sums: ~560 bytes each)
_BLOCK = 1 << 20            # elements per block of the regression residuals' float64 temporaries
_SUM = {c: c(reduction="sum") for c in (BCELoss, BCEWithLogitsLoss, L1Loss, MSELoss)}   # exact sums, fast


def kind_of(criterion):
    """'classification', 'binary', 'regression' or None: what the criterion's input is."""
    if isinstance(criterion, PinballLoss) and isinstance(criterion.quantile, tuple):
        return None   # one column per quantile against one target per row: no single residual
    for kind, classes in KINDS:
        if isinstance(criterion, classes):
            return kind
    return None


def parse(metrics, criterion):
    """{name: parameter} from "all" or a sequence of "name" / "name=value" strings."""
    kind = kind_of(criterion)
    offered = METRICS[kind]
    if isinstance(metrics, str):
        metrics = offered if metrics == "all" else [metrics]
    chosen = {}
    for item in metrics:
        name, _, value = str(item).partition("=")
        if name not in offered:
            fail(ValueError, "metrics", f"some of {', '.join(offered)} (or 'all') for {type(criterion).__name__}",
                 repr(item))
        parameter = DEFAULTS.get(name)
        if value:
            if parameter is None or not value.isdigit() or not 1 <= int(value) <= MAXIMA[name]:
                fail(ValueError, "metrics", f"{name}" + (f"=<a positive int up to {MAXIMA[name]}> (default {parameter})"
                                                          if parameter else " without a value"), repr(item))
            parameter = int(value)
        chosen[name] = parameter
    return kind, chosen


def _bin_edges(keys, shift):
    """The smallest and largest float32 value of each bin number."""
    keys = np.asarray(keys, np.uint64)
    lo, hi = keys << np.uint64(shift), ((keys + 1) << np.uint64(shift)) - 1

    def value(k):
        k = k.astype(np.uint32)
        bits = np.where(k >> 31, k & np.uint32(0x7FFFFFFF), ~k)
        return bits.view(np.float32).astype(np.float64)
    return value(lo), value(hi)


class _Histogram:
    """Exact counts of values per float32 bin: the value's float32 bits, made monotone in the
    value (NaN past +inf), without their `shift` low bits; a row of 2**(32 - shift) counts per
    label (tally.float_bins)."""

    def __init__(self, shift, labels=1):
        self.shift, self.all = shift, np.zeros((labels, 1 << (32 - shift)), np.int64)
        self.counts = self.all[0]

    def add(self, values, labels=None):
        values = np.asarray(values)
        if values.dtype not in (np.float32, np.float64):
            values = values.astype(np.float32)
        float_bins(np.ascontiguousarray(values).reshape(-1), self.shift, self.all,
                   None if labels is None else np.ascontiguousarray(labels).reshape(-1).view(np.uint8))

    def as_dict(self, shift=COARSE):
        """The nonempty bins, merged into bins of `shift` dropped bits (for pictures)."""
        counts = self.counts.reshape(-1, 1 << (shift - self.shift)).sum(axis=1)
        keys = np.flatnonzero(counts)
        lo, hi = _bin_edges(keys, shift)
        return {"lo": lo.tolist(), "hi": hi.tolist(), "count": counts[keys].tolist()}

    def quantiles(self, qs):
        total = int(self.counts.sum())
        if not total:
            return [{"q": q, "lo": None, "hi": None} for q in qs]
        cumulative = np.cumsum(self.counts)
        out = []
        for q in qs:
            rank = max(1, math.ceil(q * total))   # the rank-th smallest (inverted CDF)
            lo, hi = _bin_edges([int(np.searchsorted(cumulative, rank))], self.shift)
            out.append({"q": q, "lo": float(lo[0]), "hi": float(hi[0])})
        return out


class _Worst:
    """The k largest row losses with their row numbers (NaN first, then by loss, ties by row)."""

    def __init__(self, k):
        self.k = k
        self.key, self.loss, self.rows, self.extra = np.empty(0), np.empty(0), np.empty(0, np.int64), {}

    def add(self, losses, r0, **extra):
        key = np.where(np.isnan(losses), np.inf, losses)
        rows = np.arange(r0, r0 + len(losses), dtype=np.int64)
        if len(key) > self.k:   # this chunk's candidates: everything tied with its k-th largest
            kth = np.partition(key, len(key) - self.k)[len(key) - self.k]
            keep = key >= kth
            key, rows, losses = key[keep], rows[keep], losses[keep]
            extra = {name: values[keep] for name, values in extra.items()}
        key = np.concatenate([self.key, key])
        rows = np.concatenate([self.rows, rows])
        self.loss = np.concatenate([self.loss, losses])
        extra = {name: np.concatenate([self.extra.get(name, np.empty(0, v.dtype)), v]) for name, v in extra.items()}
        order = np.lexsort((rows, np.where(np.isnan(self.loss), 0, 1), -key))[:self.k]
        self.key, self.rows, self.loss = key[order], rows[order], self.loss[order]
        self.extra = {name: v[order] for name, v in extra.items()}

    def result(self):
        rows = [{"row": int(r), "loss": _number(v)} for r, v in zip(self.rows, self.loss)]
        for name, values in self.extra.items():
            for row, v in zip(rows, values.tolist()):
                row[name] = v
        return rows


def _number(value):
    """A float for JSON: None for NaN and the infinities."""
    value = float(value)
    return value if math.isfinite(value) else None


def _ratio(a, b):
    return a / b if b else None


class Tally:
    """The running state of the chosen metrics over the chunks of one evaluation."""

    def __init__(self, criterion, metrics):
        self.criterion = criterion
        self.kind, self.chosen = parse(metrics, criterion)
        self.rows = 0
        self.worst = _Worst(self.chosen["worst"]) if "worst" in self.chosen else None
        self.loss_histogram = _Histogram(COARSE) if "loss_histogram" in self.chosen else None
        self.counts, self.sums, self.states, self.classes = {}, {}, {}, None
        self.histograms = {}

    @property
    def needs_row_losses(self):
        return bool({"worst", "loss_histogram", "per_class"} & set(self.chosen))

    def _work(self, shape, dtype):
        """A scratch array of `shape` (at most _BLOCK elements), reused across blocks."""
        size = math.prod(shape)
        if getattr(self, "_scratch", None) is None or self._scratch.dtype != dtype or self._scratch.size < size:
            self._scratch = np.empty(max(size, _BLOCK), dtype)
        return self._scratch[:size].reshape(shape)

    def _count(self, name, values):
        self.counts[name] = self.counts.get(name, 0) + values

    def _sum(self, name, values, groups=None, count=1):
        """Exact sums of values by group, kept in C across the chunks (tally.ExactSums)."""
        if name not in self.sums:
            self.sums[name] = ExactSums(count)
        self.sums[name].add(values, groups)

    def _state(self, name, partial):
        """A sum kept as a criterion's exact partial state (reduction 'sum')."""
        self.states[name] = partial.total if name not in self.states else self.states[name] + partial.total

    def _exact(self, name):
        """The exact sums of `name` as ExactSum values (None when nothing was added)."""
        if name in self.states:
            return [self.states[name]]
        return [ExactSum(*state) for state in self.sums[name].states()] if name in self.sums else None

    def update(self, r0, arrays, losses):
        """Add a chunk starting at row r0: the criterion's arrays, and its 'none' losses when
        `needs_row_losses` (else None)."""
        n = arrays[0].shape[0]
        self.rows += n
        if losses is not None:
            losses = np.asarray(losses)
            row_losses = losses if losses.ndim == 1 else losses.reshape(n, -1).sum(axis=1, dtype=np.float64)
            if self.loss_histogram is not None:
                self.loss_histogram.add(row_losses)
        extra = {}
        if self.kind == "classification":
            extra = self._classification(arrays[0], arrays[1], losses)
        elif self.kind == "binary":
            self._binary(arrays[0], arrays[1])
        elif self.kind == "regression":
            self._regression(arrays[0], arrays[1])
        if self.worst is not None:
            self.worst.add(row_losses, r0, **extra)

    # ------------------------------------------------------------------ classification
    def _classification(self, x, target, losses):
        x, target = np.asarray(x), np.asarray(target)
        if x.ndim < 2 or target.dtype.kind not in "iu":
            fail(ValueError, "metrics", "class-index targets and input with classes along axis 1 for "
                 "classification metrics", f"input {x.shape} and target dtype {target.dtype}")
        C = x.shape[1]
        if self.classes is None:
            self.classes = C
            self.per_class = C <= PER_CLASS_LIMIT
        n = x.shape[0]
        if x.ndim > 2:   # positions: classes last, one row per position
            x = np.moveaxis(x, 1, -1).reshape(-1, C)
        target = target.reshape(-1)
        predicted = self._class_rows(x, target, None if losses is None else np.asarray(losses).reshape(-1))
        if x.shape[0] == n:   # one position per row: the worst rows say their target and prediction
            return {"target": target.astype(np.int64), "predicted": predicted}
        return {}

    def _class_rows(self, z, t, losses):
        """The chunk's rows: one read of each row's scores (softmax.row_summary: no temporaries
        but a few numbers per row) for the argmax, the top probability and the target's rank;
        then counts and exact sums. Returns each row's prediction (-1 where ignored)."""
        C, chosen = self.classes, self.chosen
        z = np.ascontiguousarray(z) if z.dtype in (np.float32, np.float64) else z.astype(np.float32)
        t = np.ascontiguousarray(t, np.int64)
        predicted, confidence, above = row_summary(z, t, "ece" in chosen, "top_k" in chosen,
                                                   isinstance(self.criterion, NLLLoss), get_num_threads())
        ignore = getattr(self.criterion, "ignore_index", None)
        keep = None if ignore is None else t != ignore
        every = predicted
        if keep is not None and not keep.all():
            t, predicted = t[keep], predicted[keep]
            confidence = None if confidence is None else confidence[keep]
            above = None if above is None else above[keep]
            losses = None if losses is None else losses[keep]
        correct = predicted == t
        self._count("kept", len(t))
        self._count("correct", int(np.count_nonzero(correct)))
        if "top_k" in chosen:
            self._count("top_k_correct", int(np.count_nonzero(above < chosen["top_k"])))
        if "per_class" in chosen and self.per_class:
            self._count("support", np.bincount(t, minlength=C))
            self._count("class_correct", np.bincount(t[correct], minlength=C))
            self._count("class_predicted", np.bincount(predicted, minlength=C))
            if losses is not None:
                self._sum("class_loss", losses, t, C)
        if "confusion" in chosen and C <= chosen["confusion"]:
            self._count("confusion", np.bincount(t * C + predicted, minlength=C * C).reshape(C, C))
        if "ece" in chosen:
            bins = chosen["ece"]
            where = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], confidence)
            self._count("ece_count", np.bincount(where, minlength=bins))
            self._count("ece_correct", np.bincount(where[correct], minlength=bins))
            self._sum("ece_confidence", confidence, where, bins)
        if keep is not None:
            every = np.where(keep, every, -1)
        return every

    # ------------------------------------------------------------------ binary
    def _binary(self, x, y):
        x = np.asarray(x)
        y = np.broadcast_to(np.asarray(y), x.shape)
        if isinstance(self.criterion, SoftMarginLoss):   # y in {-1, 1}
            y = (y > 0).astype(x.dtype)
        probabilities = isinstance(self.criterion, BCELoss)
        positive = y >= 0.5
        self._count("elements", x.size)
        self._count("correct", int(np.count_nonzero((x > (0.5 if probabilities else 0.0)) == positive)))
        if "log_loss" in self.chosen:   # the unweighted binary cross entropy, from fastloss's kernels
            log_loss = _SUM[BCELoss if probabilities else BCEWithLogitsLoss]
            self._state("log_loss", log_loss.partial(x, y.astype(x.dtype, copy=False)))
        if "brier" in self.chosen:
            with np.errstate(over="ignore"):
                p = x if probabilities else 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
            self._state("brier", _SUM[MSELoss].partial(p.astype(np.float64, copy=False), y.astype(np.float64)))
        if "roc_auc" in self.chosen:
            self.histograms.setdefault("scores", _Histogram(FINE, labels=2)).add(x, positive)

    # ------------------------------------------------------------------ regression
    def _regression(self, x, y):
        x = np.asarray(x)
        y = np.broadcast_to(np.asarray(y), x.shape)
        self._count("elements", x.size)
        if "mae" in self.chosen:   # exact sums of |r| and r^2 from fastloss's kernels (r in x's dtype)
            self._state("abs", _SUM[L1Loss].partial(x, y))
        if "rmse" in self.chosen:
            self._state("square", _SUM[MSELoss].partial(x, y))
        if "quantiles" in self.chosen:   # r in float64, a block at a time
            residual = self.histograms.setdefault("residual", _Histogram(FINE))
            x, y = x.reshape(-1), y.reshape(-1)
            for b0 in range(0, x.size, _BLOCK):
                work = self._work((min(x.size - b0, _BLOCK),), np.float64)
                with np.errstate(all="ignore"):
                    residual.add(np.subtract(x[b0:b0 + _BLOCK], y[b0:b0 + _BLOCK], out=work, dtype=np.float64))

    # ------------------------------------------------------------------ results
    def result(self):
        """Every chosen metric as plain, JSON-ready values (None where undefined: no rows)."""
        out, c, chosen = {"kind": self.kind}, self.counts, self.chosen

        def total(name):
            sums = self._exact(name)   # (its states are read once)
            return sums[0].value() if sums else 0.0

        if self.kind == "classification":
            kept = c.get("kept", 0)
            out["classes"], out["rows_counted"] = self.classes, kept
            if "accuracy" in chosen:
                out["accuracy"] = _ratio(c.get("correct", 0), kept)
            if "top_k" in chosen:
                out["top_k"] = {"k": chosen["top_k"], "accuracy": _ratio(c.get("top_k_correct", 0), kept)}
            if "per_class" in chosen:
                out["per_class"] = self._per_class()
            if "confusion" in chosen:
                matrix = c.get("confusion")
                out["confusion"] = None if matrix is None else matrix.tolist()
            if "ece" in chosen:
                out["ece"] = self._ece()
        elif self.kind == "binary":
            n = c.get("elements", 0)
            out["elements"] = n
            if "accuracy" in chosen:
                out["accuracy"] = _ratio(c.get("correct", 0), n)
            for name in ("log_loss", "brier"):
                if name in chosen:
                    out[name] = _number(total(name) / n) if n else None
            if "roc_auc" in chosen:
                out["roc_auc"], out["roc_auc_error_bound"] = self._auc()
                out["positives"], out["roc_curve"] = self._roc_curve()
        elif self.kind == "regression":
            n = c.get("elements", 0)
            out["elements"] = n
            if "mae" in chosen:
                out["mae"] = _number(total("abs") / n) if n else None
            if "rmse" in chosen:
                out["rmse"] = _number(math.sqrt(total("square") / n)) if n else None
            if "quantiles" in chosen:
                residual = self.histograms.get("residual", _Histogram(FINE))
                out["quantiles"] = residual.quantiles(QUANTILES)
                out["residual_histogram"] = residual.as_dict()
        if self.worst is not None:
            out["worst"] = self.worst.result()
        if self.loss_histogram is not None:
            out["loss_histogram"] = self.loss_histogram.as_dict()
        return out

    def _per_class(self):
        if not self.classes or not self.per_class:
            return None
        C, c = self.classes, self.counts
        zero = np.zeros(C, np.int64)
        support, right, predicted = (c.get(k, zero) for k in ("support", "class_correct", "class_predicted"))
        losses = self._exact("class_loss")
        return [{"class": k, "support": int(support[k]),
                 "mean_loss": _number(losses[k].value() / support[k]) if losses and support[k] else None,
                 "accuracy": _ratio(int(right[k]), int(support[k])),
                 "precision": _ratio(int(right[k]), int(predicted[k])),
                 "recall": _ratio(int(right[k]), int(support[k]))} for k in range(C)]

    def _ece(self):
        bins = self.chosen["ece"]
        count = self.counts.get("ece_count", np.zeros(bins, np.int64))
        right = self.counts.get("ece_correct", np.zeros(bins, np.int64))
        sums = self._exact("ece_confidence")
        total = int(count.sum())
        rows, ece = [], 0.0
        for b in range(bins):
            n = int(count[b])
            confidence = sums[b].value() / n if n else None
            accuracy = int(right[b]) / n if n else None
            if n:
                ece += n / total * abs(accuracy - confidence)
            rows.append({"lo": b / bins, "hi": (b + 1) / bins, "count": n, "confidence": confidence,
                         "accuracy": accuracy})
        return {"bins": bins, "ece": ece if total else None, "reliability": rows}

    def _roc_curve(self, points=256):
        """Positives, and the ROC curve at the bins' edges (at most `points`, evenly by rank)."""
        scores = self.histograms.get("scores")
        if scores is None:
            return 0, None
        negative, positive = scores.all
        P, N = int(positive.sum()), int(negative.sum())
        if not P or not N:
            return P, None
        occupied = np.flatnonzero(positive | negative)[::-1]   # the highest scores first
        tpr = np.concatenate([[0], np.cumsum(positive[occupied])]) / P
        fpr = np.concatenate([[0], np.cumsum(negative[occupied])]) / N
        keep = np.unique(np.linspace(0, len(tpr) - 1, min(points, len(tpr))).round().astype(np.intp))
        return P, {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}

    def _auc(self):
        scores = self.histograms.get("scores")
        if scores is None or not scores.all[0].any() or not scores.all[1].any():
            return None, None
        negative, positive = scores.all
        occupied = np.flatnonzero(positive | negative)
        p, q = positive[occupied], negative[occupied]
        positives, negatives = int(p.sum()), int(q.sum())
        if positives * negatives < 1 << 61:   # int64 holds every sum below exactly
            below = np.cumsum(q) - q
            above_half, tied = int((p * (2 * below + q)).sum()), int((p * q).sum())
        else:   # Python ints: exact at any count
            below = above_half = tied = 0
            for pk, qk in zip(p.tolist(), q.tolist()):
                above_half += pk * (2 * below + qk)   # twice the positive-above-negative pairs, ties once
                tied += pk * qk
                below += qk
        pairs = positives * negatives
        return above_half / (2 * pairs), tied / (2 * pairs)

