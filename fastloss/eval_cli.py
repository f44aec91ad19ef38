"""``fastloss eval``: the loss of prediction files far larger than memory, with progress."""
import argparse
import ast
import json
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


def parser(prog="fastloss eval"):
    p = argparse.ArgumentParser(prog=prog, description="Evaluate a loss over .npy files chunk by chunk "
                                "(memory-mapped, read ahead of the computation), bitwise equal to one call.")
    p.add_argument("--loss", help="the criterion: a functional name (cross_entropy, mse_loss, ...) or a class name")
    p.add_argument("--input", help=".npy file of predictions (logits, scores, ...)")
    p.add_argument("--target", nargs="+", default=[], help=".npy file(s) of the other arrays of the call, in torch's order")
    p.add_argument("--reduction", choices=["mean", "sum"], default="mean")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a criterion option, e.g. label_smoothing=0.1 (repeatable; values as Python literals)")
    p.add_argument("--grad-out", metavar="FILE", help="write the gradient with respect to the input to this .npy file")
    p.add_argument("--threads", type=int, help="kernel threads (default: fastloss's)")
    p.add_argument("--chunk-rows", type=int, help="rows per chunk (default: about 64 MiB of input)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--example", action="store_true",
                   help="write a small example set (cross entropy logits and labels) to ./fastloss-example and evaluate it")
    return p


def _fail(message):
    print(f"fastloss eval: {message}", file=sys.stderr)
    raise SystemExit(2)


def _options(pairs):
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--option: expected KEY=VALUE, got {pair!r}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value   # a plain string, e.g. mode=multiclass
    return options


def _open(path, what):
    if not os.path.exists(path):
        _fail(f"{what}: no such file {path!r}")
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        _fail(f"{what}: {path!r} is not a readable .npy file ({e})")


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
    import fastloss as fl
    args = parser(prog).parse_args(argv)
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
    grad_out = None
    if args.grad_out:
        grad_out = np.lib.format.open_memmap(args.grad_out, "w+", arrays[0].dtype, arrays[0].shape)
    if args.threads:
        fl.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        result = fl.evaluate(crit, *arrays, chunk_rows=args.chunk_rows, grad_out=grad_out,
                             progress=not args.no_progress and not args.json)
    except (TypeError, ValueError, IndexError, NotImplementedError) as e:
        _fail(str(e))
    wall = time.perf_counter() - start
    rate = result.bytes / result.seconds / 1e9 if result.seconds else float("inf")
    report = {"loss": float(result.loss), "criterion": repr(crit), "rows": result.rows,
              "chunk_rows": result.chunk_rows, "bytes": result.bytes, "seconds": result.seconds,
              "gb_per_s": rate, "wall_seconds": wall, "grad_out": args.grad_out}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{crit!r}: loss {float(result.loss):.9g} over {result.rows} rows "
              f"({result.bytes / 1e9:.2f} GB in {result.seconds:.2f} s, {rate:.2f} GB/s, "
              f"{-(-result.rows // result.chunk_rows)} chunks of {result.chunk_rows} rows)"
              + (f"; gradient in {args.grad_out}" if args.grad_out else ""))
    return report
