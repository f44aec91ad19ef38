"""The compiled kernels, built once per CPU level; the best level this CPU runs is loaded.

setup.py compiles the kernel modules (KERNELS) for the x86-64 levels v2 (SSE4.2), v3 (AVX2,
FMA) and v4 (AVX-512) into the subpackages v2/, v3/ and v4/ (one ``generic`` level on other
architectures, one ``native`` or ``custom`` level with FASTLOSS_MARCH). Here the best level
that is built and that the CPU and the OS support is chosen (``cpu.level()``), or the one that
FASTLOSS_CPU names, and its modules are made ``fastloss._kernels.<name>``: the rest of fastloss
imports them from there and never sees the level. A level the CPU cannot run is never
imported (that would kill the interpreter with an illegal instruction).
"""
import importlib
import importlib.util
import os
import sys

from . import cpu

KERNELS = ("pointwise", "softmax", "embedding", "sequence", "stream", "convert")
X86_LEVELS = ("v4", "v3", "v2")   # best first
SINGLE_LEVELS = ("native", "custom", "generic")


def _built():
    """The levels whose kernels this installation has."""
    return [level for level in SINGLE_LEVELS + X86_LEVELS
            if importlib.util.find_spec(f"{__name__}.{level}") is not None
            and importlib.util.find_spec(f"{__name__}.{level}.pointwise") is not None]


def _runs_here(level, supported):
    """Whether kernels of `level` run on a CPU that supports x86-64 level `supported`."""
    if level in SINGLE_LEVELS:   # built for this machine (or the user's choice), or not x86
        return True
    return supported in X86_LEVELS and X86_LEVELS.index(level) >= X86_LEVELS.index(supported)


def _choose(built, supported, forced):
    """The level to load: `forced` (FASTLOSS_CPU) if given, else the best built one the CPU runs."""
    runnable = [level for level in built if _runs_here(level, supported)]
    if forced:
        if forced not in built:
            raise ImportError(f"FASTLOSS_CPU: expected one of the levels this fastloss was built for "
                              f"({', '.join(built) or 'none'}), got {forced!r}")
        if forced not in runnable:
            raise ImportError(f"FASTLOSS_CPU={forced}: this CPU (with its OS) supports x86-64 "
                              f"{supported or 'below v2'}, so the {forced} kernels cannot run here; "
                              f"levels it can run: {', '.join(runnable) or 'none'}")
        return forced
    if not runnable:
        raise ImportError(f"fastloss: no kernels for this CPU (x86-64 {supported}); "
                          f"built: {', '.join(built) or 'none'}. Reinstall fastloss from source on this machine.")
    return runnable[0]


LEVELS_BUILT = _built()
CPU_SUPPORTS = cpu.level()
FORCED = os.environ.get("FASTLOSS_CPU", "").strip() or None   # read once: the choice is made once
LEVEL = _choose(LEVELS_BUILT, CPU_SUPPORTS, FORCED)

for _name in KERNELS:
    _module = importlib.import_module(f"{__name__}.{LEVEL}.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
del _name, _module


def build_info():
    """Which kernels run here and how they were built: the CPU level loaded ("level"), the
    levels this installation has ("levels_built"), the best x86-64 level this CPU and OS
    support ("cpu_supports", None off x86-64), FASTLOSS_CPU if it chose ("forced"), the
    level's compiler target flags ("target"), its widest SIMD ("simd"), whether libmvec's
    vector exp/log/log1p are in ("libmvec"), and whether the worker pool has threads ("pool")."""
    from . import pool, stream
    return {"level": LEVEL, "levels_built": list(LEVELS_BUILT), "cpu_supports": CPU_SUPPORTS, "forced": FORCED,
            **stream.build_info(), "pool": pool.THREADED}
