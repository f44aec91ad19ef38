"""Command line of the benchmarks (also reached as `fastloss bench`)."""
import argparse
import json

import fastloss as fl

from . import adapters, contention, embedding, evaluate, gpu, half, harness, levels, pointwise, sequence, softmax

FAMILIES = {"pointwise": pointwise.CASES, "softmax": softmax.CASES, "embedding": embedding.CASES,
            "sequence": sequence.CASES, "adapters": [], "eval": [], "gpu": [], "contention": [],
            "levels": [], "half": []}
# families with a report of their own after the table (memory; boosting rounds, wrappers;
# chunked evaluation of a 16 GB file, the GPU against torch CUDA, and calls beside another
# multithreaded job, and half-precision data against float32, only when asked for by name)
REPORTS = {"softmax": softmax.report, "adapters": adapters.report, "eval": evaluate.report, "gpu": gpu.report,
           "contention": contention.report, "half": half.report}
ONLY_BY_NAME = {"eval", "gpu", "contention", "levels", "half"}
SIZES = (64, 100_000, 10_000_000)
QUICK_SIZES = (64, 100_000, 1_000_000)
LEVEL_SIZES = (100_000, 1_000_000)


def parser(prog="python -m bench"):
    p = argparse.ArgumentParser(prog=prog, description="fastloss against torch, NumPy and scikit-learn, "
                                "fwd+bwd in float32, side by side in one process.")
    p.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, shorter timings")
    p.add_argument("--sizes", type=int, nargs="+", help=f"element counts (default {SIZES})")
    p.add_argument("--threads", type=int, default=None, help="threads for every library (default: fastloss's)")
    p.add_argument("--loss", nargs="+", default=None, help="only these losses (class names)")
    p.add_argument("--family", nargs="+", choices=sorted(FAMILIES), default=None, help="only these families")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--plot", metavar="PNG", help="also draw the table as a chart: fastloss's speed-up over each "
                   "peer per loss and size (needs matplotlib)")
    return p


def main(argv=None, prog="python -m bench"):
    args = parser(prog).parse_args(argv)
    cases = [c for name, family in FAMILIES.items() for c in family
             if (args.loss is None or c.name in args.loss) and (args.family is None or name in args.family)]
    reports = [f for name, f in REPORTS.items() if args.loss is None and (
        name in args.family if args.family else name not in ONLY_BY_NAME)]
    if not cases and not reports and "levels" not in (args.family or ()):
        raise SystemExit(f"--loss: expected some of {[c.name for f in FAMILIES.values() for c in f]}, got {args.loss}")
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    threads = args.threads or fl.get_num_threads()
    rows = harness.run(cases, sizes, threads, quick=args.quick) if cases else []
    if args.family and "levels" in args.family:   # every loss (or --loss's), once per CPU level
        rows += levels.run([c for family in FAMILIES.values() for c in family
                            if args.loss is None or c.name in args.loss], args.sizes or LEVEL_SIZES, args.quick)
    for report in reports:
        report(quick=args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot and rows:
        from fastloss.plots import bench_chart
        print(f"chart: {bench_chart(rows, args.plot)}")
    return rows
