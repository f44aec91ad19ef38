"""The CPU levels side by side in one process: `python -m bench --family levels`.

Every kernel level this installation has and this CPU runs (v2, v3, v4 of the portable build;
a `native` or `custom` level too where one was built in beside them, e.g. by
`FASTLOSS_MARCH=native python setup.py build_ext --inplace` into a copy and its
fastloss/_kernels/native folder copied over) is loaded at once, and each case's fwd+bwd is
timed with each level's kernels in turn, interleaved, one thread (the kernels' own speed, not
the pool's). Ratios are per case: a level's time over the reference level's (native where
built, else the level fastloss loaded), best of several interleaved rounds.
"""
import contextlib
import importlib

import numpy as np

import fastloss as fl
from fastloss import _kernels
from fastloss.losses import embedding, pointwise, sequence, softmax

from .harness import best_time

# the kernel module each loss module calls, by attribute
USERS = [(pointwise, "_kernel", "pointwise"), (softmax, "_kernel", "softmax"), (embedding, "_kernel", "embedding"),
         (embedding, "_softmax_kernel", "softmax"), (sequence, "_kernel", "sequence")]
ROUNDS = 3


@contextlib.contextmanager
def kernels_of(level):
    """Run the criteria with `level`'s kernel modules (imported beside the loaded ones)."""
    modules = {name: importlib.import_module(f"fastloss._kernels.{level}.{name}") for _, _, name in USERS}
    saved = [(module, attribute, getattr(module, attribute)) for module, attribute, _ in USERS]
    for module, attribute, name in USERS:
        setattr(module, attribute, modules[name])
    try:
        yield
    finally:
        for module, attribute, kernel in saved:
            setattr(module, attribute, kernel)


def levels_here():
    return [level for level in _kernels.LEVELS_BUILT if _kernels._runs_here(level, _kernels.CPU_SUPPORTS)]


def run(cases, sizes, quick=False, print_fn=print):
    levels = levels_here()
    reference = "native" if "native" in levels else _kernels.LEVEL
    min_time = 0.1 if quick else 0.15
    print_fn(f"\nCPU levels, one thread, float32 fwd+bwd: time / the {reference} kernels' time "
             f"(lower is better), best of {ROUNDS} interleaved rounds; levels: "
             + ", ".join(f"{lvl} ({importlib.import_module(f'fastloss._kernels.{lvl}.stream').build_info()['target']})"
                         for lvl in levels))
    print_fn(f"{'loss':22s} {'n':>12s} {reference + ' ms':>12s} " + " ".join(f"{lvl:>8s}" for lvl in levels))
    rng = np.random.default_rng(0)
    rows = []
    with fl.threads(1):
        for case in cases:
            for size in (case.quick_shapes if quick else case.shapes) or sizes:
                arrays = case.data(rng, size)
                criterion = case.criterion()
                times = {lvl: float("inf") for lvl in levels}
                for _ in range(ROUNDS):
                    for lvl in levels:
                        with kernels_of(lvl):
                            times[lvl] = min(times[lvl], best_time(lambda: criterion(*arrays), min_time, 3))
                row = dict(loss=case.name, size=size, **{lvl: times[lvl] / times[reference] for lvl in levels},
                           reference_seconds=times[reference])
                rows.append(row)
                label = "x".join(map(str, size)) if isinstance(size, tuple) else str(size)
                print_fn(f"{case.name:22s} {label:>12s} {times[reference] * 1e3:12.3f} "
                         + " ".join(f"{row[lvl]:7.2f}x" for lvl in levels))
    return rows
