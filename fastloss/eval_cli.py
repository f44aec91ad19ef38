"""``fastloss eval``: the loss of prediction files far larger than memory, with progress."""
import argparse
import ast
import json
import math
import os
import sys
import time

import numpy as np


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
    p.add_argument("--input", help=".npy file of predictions (logits, scores, ...)")
    p.add_argument("--target", nargs="+", default=[],
                   help=".npy file(s) of the other arrays of the call, in torch's order")
    p.add_argument("--reduction", choices=["mean", "sum"], default="mean")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a criterion option, e.g. label_smoothing=0.1 (repeatable; values as Python literals, "
                   "true/false/none in any case)")
    p.add_argument("--grad-out", metavar="FILE", help="write the gradient with respect to the input to this new "
                   ".npy file (atomically: renamed into place only when complete; never an input file)")
    p.add_argument("--overwrite", action="store_true", help="let --grad-out replace an existing file")
    p.add_argument("--threads", type=int, help="kernel threads (default: fastloss's)")
    p.add_argument("--chunk-rows", type=int, help="rows per chunk (default: about 64 MiB of input)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--example", action="store_true",
                   help="write a small example set (cross entropy logits and labels) to ./fastloss-example "
                   "and evaluate it")
    return p


def _fail(message):
    print(f"fastloss eval: {message}", file=sys.stderr)
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
    return array


def _one_line(error):
    text = " ".join(str(error).split()) or type(error).__name__
    plain = isinstance(error, (ValueError, TypeError, IndexError, OSError))
    return text if plain else f"{type(error).__name__}: {text}"


def _finite_or_none(value):
    """JSON has no NaN or infinity: such a value is null, and the report says so."""
    return value if math.isfinite(value) else None


def write_example(directory="fastloss-example", rows=200_000, classes=100, seed=0):
    """A small cross entropy example set: logits (rows, classes) float32 and int64 labels."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    logits = np.lib.format.open_memmap(os.path.join(directory, "preds.npy"), "w+", np.float32, (rows, classes))
    for r0 in range(0, rows, 50_000):
        logits[r0:r0 + 50_000] = rng.standard_normal((min(50_000, rows - r0), classes), dtype=np.float32)
    logits.flush()
    labels = rng.integers(0, classes, rows)
    np.save(os.path.join(directory, "labels.npy"), labels)
    return os.path.join(directory, "preds.npy"), os.path.join(directory, "labels.npy")


def main(argv=None, prog="fastloss eval"):
    """The command; every failure is one line on stderr and exit code 2."""
    try:
        return _main(argv, prog)
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
        if not args.json:
            print(f"example set: {args.input}, {targets}")
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
    start = time.perf_counter()
    try:
        result = fl.evaluate(crit, *arrays, chunk_rows=args.chunk_rows, grad_out=args.grad_out or None,
                             overwrite=args.overwrite, progress=not args.no_progress and not args.json)
    except (TypeError, ValueError, IndexError, NotImplementedError, OSError) as e:
        _fail(_one_line(e))
    wall = time.perf_counter() - start
    rate = result.bytes / result.seconds / 1e9 if result.seconds else None
    loss = float(result.loss)
    report = {"loss": _finite_or_none(loss), "loss_is_finite": math.isfinite(loss), "loss_text": repr(loss),
              "criterion": repr(crit), "rows": result.rows, "chunk_rows": result.chunk_rows, "bytes": result.bytes,
              "seconds": result.seconds, "gb_per_s": rate, "wall_seconds": wall, "grad_out": args.grad_out}
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        print(f"{crit!r}: loss {float(result.loss):.9g} over {result.rows} rows "
              f"({result.bytes / 1e9:.2f} GB in {result.seconds:.2f} s, {rate or 0:.2f} GB/s, "
              f"{-(-result.rows // result.chunk_rows)} chunks of {result.chunk_rows} rows)"
              + (f"; gradient in {args.grad_out}" if args.grad_out else ""))
    return report
