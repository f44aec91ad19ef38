"""``fastloss eval``: the loss of prediction files far larger than memory, with progress."""
import argparse
import ast
import json
import math
import os
import sys
import time

import numpy as np

from .plots import available as plots_available
from .report import reference, summary, write_report


def _criteria():
    from .losses import FUNCTIONAL_NAMES
    table = {}
    for criterion, name in FUNCTIONAL_NAMES.items():
        table[name] = table[criterion.__name__] = criterion
    return table


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, exit code 2 (argparse's own prints the usage too)
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def parser(prog="fastloss eval"):
    p = _Parser(prog=prog, description="Evaluate a loss over .npy files chunk by chunk "
                                "(memory-mapped, read ahead of the computation), bitwise equal to one call.")
    p.add_argument("--loss", help="the criterion: a functional name (cross_entropy, mse_loss, ...) or a class name")
    p.add_argument("--input", help=".npy file of predictions (logits, scores, ...): float32, float64, float16 or "
                   "bfloat16 (a .npy whose dtype is '<V2', as NumPy saves ml_dtypes.bfloat16, is read as bfloat16)")
    p.add_argument("--target", nargs="+", default=[],
                   help=".npy file(s) of the other arrays of the call, in torch's order")
    p.add_argument("--reduction", choices=["mean", "sum"], default="mean")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a criterion option, e.g. label_smoothing=0.1 (repeatable; values as Python literals, "
                   "true/false/none in any case)")
    p.add_argument("--grad-out", metavar="FILE", help="write the gradient with respect to the input to this new "
                   ".npy file (atomically: renamed into place only when complete; never an input file)")
    p.add_argument("--loss-out", metavar="FILE", help="write the per-row losses (reduction='none') to this new .npy "
                   "file (atomically, never an input file)")
    p.add_argument("--metrics", nargs="+", metavar="NAME", help="metrics in the same pass: 'all', or names such as "
                   "accuracy top_k=5 per_class confusion ece=15 worst=10 (classification), accuracy log_loss brier "
                   "roc_auc (binary), mae rmse quantiles (regression); see fastloss.metrics")
    p.add_argument("--report", metavar="DIR", help="write report.json, summary.txt and (with matplotlib) PNG figures "
                   "and a self-contained report.html to DIR (metrics default to 'all')")
    p.add_argument("--overwrite", action="store_true", help="let --grad-out, --loss-out and --report replace "
                   "existing files")
    p.add_argument("--threads", type=int, help="kernel threads (default: fastloss's)")
    p.add_argument("--chunk-rows", type=int, help="rows per chunk (default: about 64 MiB of input)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--example", action="store_true",
                   help="write a small example set (a 20-class model's logits and labels) to ./fastloss-example, "
                   "evaluate it with every metric and write its report to ./fastloss-example/report")
    return p


def _fail(message, prog="fastloss eval"):
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(2)


_WORDS = {"true": True, "false": False, "none": None}


def _options(pairs):
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--option: expected KEY=VALUE, got {pair!r}")
        if value.strip().lower() in _WORDS:   # true/false/none as a shell user writes them
            options[key] = _WORDS[value.strip().lower()]
            continue
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            options[key] = value   # a plain string, e.g. mode=multiclass
    return options


def _open(path, what):
    if not os.path.exists(path):
        _fail(f"{what}: no such file {path!r}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:   # a corrupt header fails in many ways
        _fail(f"{what}: {path!r} is not a readable .npy file ({_one_line(e)})")
    if not isinstance(array, np.ndarray):
        _fail(f"{what}: {path!r} is not a .npy file (an .npz archive?)")
    if array.dtype == np.dtype("V2"):   # how NumPy saves ml_dtypes.bfloat16 (.npy has no code for it)
        from ._half import bfloat16
        bf16 = bfloat16(load=True)
        if bf16 is None:
            _fail(f"{what}: {path!r} holds 2-byte raw values ('<V2', as bfloat16 is saved): reading them as "
                  "bfloat16 needs ml_dtypes (pip install ml_dtypes)")
        array = array.view(bf16)
    return array


def _one_line(error):
    text = " ".join(str(error).split()) or type(error).__name__
    plain = isinstance(error, (ValueError, TypeError, IndexError, OSError))
    return text if plain else f"{type(error).__name__}: {text}"


def _finite_or_none(value):
    """JSON has no NaN or infinity: such a value is null, and the report says so."""
    return value if math.isfinite(value) else None


def write_example(directory="fastloss-example", rows=200_000, classes=20, seed=0):
    """An example set: the float32 logits (rows, classes) of an overconfident, imperfect
    classifier and its int64 labels, with classes of unequal frequency and difficulty."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    frequency = rng.dirichlet(np.full(classes, 4.0))
    labels = rng.choice(classes, rows, p=frequency)
    skill = np.linspace(0.5, 3.0, classes)[rng.permutation(classes)]   # how well each class is recognised
    logits = np.lib.format.open_memmap(os.path.join(directory, "preds.npy"), "w+", np.float32, (rows, classes))
    for r0 in range(0, rows, 50_000):
        t = labels[r0:r0 + 50_000]
        z = rng.standard_normal((len(t), classes), dtype=np.float32)
        z[np.arange(len(t)), t] += skill[t]
        logits[r0:r0 + len(t)] = 2.5 * z   # too sharp: confidence above accuracy
    logits.flush()
    np.save(os.path.join(directory, "labels.npy"), labels)
    return os.path.join(directory, "preds.npy"), os.path.join(directory, "labels.npy")


def plot_parser(prog="fastloss plot"):
    p = _Parser(prog=prog, description="Draw a loss and its gradient against the input (the true class's logit "
                "for a class loss), one curve per --option, overlaid.")
    p.add_argument("loss", help="the criterion: a functional name (huber_loss, ...) or a class name")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="one curve's options, e.g. delta=0.5 (repeat for more curves; commas for several options)")
    p.add_argument("--target", type=float, help="the target value (default: 0, or 1 for binary losses)")
    p.add_argument("--range", nargs=2, type=float, default=(-4.0, 4.0), metavar=("LO", "HI"),
                   help="the input axis (default -4 4; BCELoss: its sigmoid)")
    p.add_argument("-o", "--output", default="curves.png", help="the PNG to write (default curves.png)")
    return p


def plot_main(argv=None, prog="fastloss plot"):
    """`fastloss plot`; every failure is one line on stderr and exit code 2."""
    return main(argv, prog, _plot)


def _plot(argv, prog):
    from .plots import loss_curves
    args = plot_parser(prog).parse_args(argv)
    curves = [_options(o.split(",")) for o in args.option]
    if not args.range[0] < args.range[1]:
        _fail(f"--range: expected LO < HI, got {args.range[0]:g} {args.range[1]:g}")
    criteria = _criteria()
    if args.loss not in criteria:
        _fail(f"loss: expected one of {sorted(n for n in criteria if n[0].islower())}, got {args.loss!r}", prog)
    try:
        path = loss_curves(criteria[args.loss], curves, args.output, target=args.target, span=tuple(args.range))
    except (TypeError, ValueError, NotImplementedError, ImportError) as e:
        _fail(_one_line(e), prog)
    print(f"{prog}: wrote {path}")
    return path


def main(argv=None, prog="fastloss eval", command=None):
    """The command; every failure is one line on stderr and exit code 2."""
    try:
        return (command or _main)(argv, prog)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BaseException as error:   # noqa: BLE001 (a traceback helps no user of a command)
        print(f"{prog}: {_one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


def _main(argv, prog):
    import fastloss as fl
    args = parser(prog).parse_args(argv)
    if args.threads is not None and args.threads < 1:
        _fail(f"--threads: expected a positive int, got {args.threads}")
    if args.chunk_rows is not None and args.chunk_rows < 1:
        _fail(f"--chunk-rows: expected a positive int, got {args.chunk_rows}")
    if args.example:
        args.input, targets = write_example()
        args.target, args.loss = [targets], args.loss or "cross_entropy"
        args.report = args.report or os.path.join("fastloss-example", "report")
        args.overwrite = True   # the example's own files, made again
        if not args.json:
            print(f"example set: {args.input} (200000 rows of 20-class logits), {targets}")
    if not args.loss or not args.input:
        _fail("expected --loss and --input (or --example)")
    criteria = _criteria()
    if args.loss not in criteria:
        _fail(f"--loss: expected one of {sorted(n for n in criteria if n[0].islower())}, got {args.loss!r}")
    try:
        crit = criteria[args.loss](reduction=args.reduction, **_options(args.option))
    except (TypeError, ValueError) as e:
        _fail(f"--option: {e}")
    arrays = [_open(args.input, "--input")] + [_open(t, "--target") for t in args.target]
    if args.threads:
        fl.set_num_threads(args.threads)
    metrics = args.metrics or ("all" if args.report else None)
    start = time.perf_counter()
    try:
        result = fl.evaluate(crit, *arrays, chunk_rows=args.chunk_rows, grad_out=args.grad_out or None,
                             loss_out=args.loss_out or None, metrics=metrics, overwrite=args.overwrite,
                             progress=not args.no_progress and not args.json)
    except (TypeError, ValueError, IndexError, NotImplementedError, OSError) as e:
        _fail(_one_line(e))
    wall = time.perf_counter() - start
    loss = float(result.loss)
    chance, meaning = reference(crit, result.metrics)
    report = {"fastloss": fl.__version__, "criterion": repr(crit), "input": args.input, "target": args.target,
              "loss": _finite_or_none(loss), "loss_is_finite": math.isfinite(loss), "loss_text": f"{loss:.9g}",
              "reference_loss": chance, "reference_text": meaning, "rows": result.rows,
              "chunk_rows": result.chunk_rows, "bytes": result.bytes, "passes": result.passes,
              "seconds": result.seconds, "gb_per_s": result.bytes / result.seconds / 1e9 if result.seconds else None,
              "wall_seconds": wall, "grad_out": args.grad_out, "loss_out": args.loss_out, "metrics": result.metrics}
    if args.report:
        try:
            report["report_files"] = write_report(args.report, report, [args.input] + args.target, args.overwrite)
        except (ValueError, OSError) as e:
            _fail(f"--report: {_one_line(e)}")
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        print(summary(report))
        if args.report:
            page = os.path.join(args.report, "report.html")
            print(f"report: {page if os.path.exists(page) else os.path.join(args.report, 'report.json')}"
                  + ("" if plots_available() else " (no figures: pip install 'fastloss[plot]')"))
    return report
