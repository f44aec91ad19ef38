"""The speed issue's rows of the bench, each at its own sizes only, in one run and one table
(`python -m bench --loss` runs a case at all of its sizes):

    python tools/issue_rows.py [--threads 2] [NAME ...]     (default: every row below)
"""
import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import harness, pointwise, sequence, softmax  # noqa: E402

N = 10_000_000   # the pointwise rows' element count (their shapes are ())
ROWS = {"BCEWithLogitsLoss": (), "BCELoss": (), "SoftMarginLoss": (), "SigmoidFocalLoss": (),
        "MultiLabelSoftMargin": ((4096, 1000),),
        "CrossEntropyLoss": ((64, 10), (4096, 1000), (8192, 32000), (2048, 128256)),
        "CE label_smoothing=0.1": ((4096, 1000), (8192, 32000)), "NLLLoss": ((64, 10),),
        "DiceLoss multiclass": ((8, 21, 256, 256),), "CTCLoss": ((200, 32, 50, 50),)}

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--threads", type=int, default=2)
p.add_argument("names", nargs="*", default=list(ROWS))
args = p.parse_args()
known = {c.name: c for c in pointwise.CASES + softmax.CASES + sequence.CASES if c.name in ROWS}
if set(args.names) - set(known):
    raise SystemExit(f"expected names among {sorted(known)}, got {sorted(set(args.names) - set(known))}")
# in the order named (a run cut short by a time limit keeps the first ones)
cases = [dataclasses.replace(known[n], shapes=ROWS[n]) for n in args.names]
harness.run(cases, (N,), args.threads)
