"""A short run of an installed fastloss: which kernels loaded, and a few losses and gradients.

    python tools/smoke.py > native.json
    qemu-x86_64 -cpu Haswell-v4 .venv/bin/python tools/smoke.py > haswell.json
    python tools/smoke.py --compare native.json haswell.json --level v3

Writes JSON (build_info, then per loss the loss and its gradient); with --compare, checks that
two such runs agree (rtol 1e-5) and that the second loaded the expected level.
"""
import argparse
import json
import sys

import numpy as np


def run():
    import fastloss as fl
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 40)).astype(np.float32)
    y = rng.standard_normal((300, 40)).astype(np.float32)
    labels = rng.integers(0, 40, 300)
    binary = (rng.random((300, 40)) < 0.5).astype(np.float32)
    log_probs = np.log(rng.dirichlet(np.ones(6), (30, 4))).astype(np.float32)
    calls = {
        "MSELoss": lambda: fl.MSELoss()(x, y),
        "BCEWithLogitsLoss": lambda: fl.BCEWithLogitsLoss()(x, binary),
        "PoissonNLLLoss": lambda: fl.PoissonNLLLoss()(x, np.abs(y)),
        "CrossEntropyLoss": lambda: fl.CrossEntropyLoss(label_smoothing=0.1)(x, labels),
        "MultiMarginLoss": lambda: fl.MultiMarginLoss()(x, labels),
        "DiceLoss": lambda: fl.DiceLoss("multiclass")(x, labels),
        "TripletMarginLoss": lambda: fl.TripletMarginLoss()(x, y, x[::-1].copy()),
        "CTCLoss": lambda: fl.CTCLoss()(log_probs, rng.integers(1, 6, (4, 5)), np.full(4, 30), np.full(4, 5)),
    }
    out = {"build_info": fl.build_info()}
    with fl.threads(2):
        for name, call in calls.items():
            loss, grad = call()
            grad = grad[0] if isinstance(grad, tuple) else grad
            out[name] = {"loss": float(loss), "grad": np.asarray(grad, np.float64).ravel().tolist()}
    return out


def compare(native, emulated, level):
    a, b = (json.load(open(path)) for path in (native, emulated))
    problems = []
    if level and b["build_info"]["level"] != level:
        problems.append(f"expected the {level} kernels, {emulated} loaded {b['build_info']['level']}")
    for name in a:
        if name == "build_info":
            continue
        for key in ("loss", "grad"):
            if not np.allclose(b[name][key], a[name][key], rtol=1e-5, atol=1e-7):
                problems.append(f"{name} {key}: {emulated} differs from {native} beyond rtol 1e-5")
    print(f"{emulated}: level {b['build_info']['level']} (CPU supports {b['build_info']['cpu_supports']}), "
          f"{len(a) - 1} losses {'agree' if not problems else 'DIFFER'} with {native} "
          f"(level {a['build_info']['level']})")
    for problem in problems:
        print("  " + problem)
    return not problems


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", nargs=2, metavar=("NATIVE", "OTHER"))
    p.add_argument("--level", help="with --compare: the level OTHER must have loaded")
    args = p.parse_args()
    if args.compare:
        sys.exit(0 if compare(*args.compare, args.level) else 1)
    json.dump(run(), sys.stdout)
