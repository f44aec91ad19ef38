"""Build the Cython kernels in fastloss/_kernels: one wheel that runs on any x86-64 CPU.

* CPU levels. The kernel modules (KERNELS) are compiled once per x86-64 level from the same C:
  ``fastloss/_kernels/v2`` (SSE4.2), ``v3`` (AVX2 + FMA) and ``v4`` (AVX-512), and
  ``fastloss/_kernels/__init__.py`` loads the best level the running CPU supports (``cpu.pyx``
  asks the CPU and the OS). Other architectures build one ``generic`` level. ``FASTLOSS_MARCH``
  builds a single level for one target instead, e.g. ``FASTLOSS_MARCH=native`` for the build
  machine only (the wheel then runs on that machine's CPU and newer ones of its family only).
  The worker pool (``pool.pyx``), the CPU probe and ``memory.pyx`` are built once, for the
  baseline: every level's kernels share one pool.
* Threads: the kernels' blocks run on fastloss's own worker pool (``pool.h``, POSIX threads),
  not OpenMP; without POSIX threads (or with ``FASTLOSS_POOL=0``) every block runs on the caller.
* Vector transcendentals: float32 exp/log/log1p are ``_kernels/simd_math.h``'s own inline
  functions (vectorised in place at every level). For float64, glibc's libmvec provides SIMD
  exp/log/log1p for each level (SSE, AVX2, AVX-512 variants), but its headers declare them only
  under ``-ffast-math``, whose
  finite-math part would break NaN and inf. So ``_kernels/simd_math.h`` declares them itself
  when ``FASTLOSS_LIBMVEC`` is defined, and ``-fno-math-errno -fno-trapping-math`` (both
  harmless for IEEE results) let gcc vectorise calls.

The extensions compile in parallel (one job per core); the generated C stays out of the wheel.
Templates (``*.pyx.tp``) are expanded with Cython's Tempita before cythonizing.
"""
import os
import platform
import shlex
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from Cython.Tempita import sub as tempita_sub
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCE = Path("fastloss", "_kernels")
KERNELS = ["pointwise", "softmax", "embedding", "sequence", "stream", "convert"]   # once per CPU level
BASELINE = ["memory", "pool", "cpu", "tally"]                            # built once
# x86-64 levels: the flags of each, tuned for no CPU in particular. v4 asks for 512-bit vectors
# (gcc's generic tuning prefers 256), so the math calls take libmvec's AVX-512 variants. Loops
# start on 32-byte boundaries: generic tuning pads to 16 only when that takes under 11 bytes,
# and the embedding kernels' feature loops ran up to 1.5x slower on Zen 5 where they landed
# (Intel's decoded-uop cache works in 32-byte windows too).
X86_LEVELS = {
    "v2": ["-march=x86-64-v2", "-mtune=generic", "-falign-loops=32"],
    "v3": ["-march=x86-64-v3", "-mtune=generic", "-falign-loops=32"],
    "v4": ["-march=x86-64-v4", "-mtune=generic", "-falign-loops=32", "-mprefer-vector-width=512"],
}


def expand_templates():
    for template in SOURCE.glob("*.pyx.tp"):
        target = template.with_suffix("")
        text = tempita_sub(template.read_text(), name=str(template))
        header = f"# Generated from {template.name} by setup.py; edit the template, not this file.\n"
        if not target.exists() or target.read_text() != header + text:
            target.write_text(header + text)


def compiles(compiler, code, flags, libraries=()):
    """True when `code` compiles and links with `flags` and `libraries` (the linker also gets
    LDFLAGS, which setuptools passes to extensions but not to executables: a sanitizer's)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "probe.c")
        source.write_text(code)
        try:
            objects = compiler.compile([str(source)], output_dir=tmp, extra_postargs=list(flags))
            compiler.link_executable(objects, str(Path(tmp, "probe")), libraries=list(libraries),
                                     extra_postargs=list(flags) + shlex.split(os.environ.get("LDFLAGS", "")))
        except Exception:
            return False
    return True


def accepts(compiler, flags):
    """True when the compiler takes `flags` (an empty program compiles and links with them)."""
    return compiles(compiler, "int main(void){return 0;}\n", flags)


# Every vector function the kernels may call, in vectorised loops: compiled and linked with a
# level's flags, so that each of that level's widths must exist (glibc 2.22 has exp and log;
# log1p and tanh came in 2.35: an older glibc gives the kernels scalar math, not a module that
# fails to import on an undefined symbol).
LIBMVEC_PROBE = """
#define FASTLOSS_LIBMVEC 1
#include "simd_math.h"
double d[256]; float f[256];
int main(void) {
    for (int i = 0; i < 256; i++) d[i] = exp(d[i]) + log(d[i]) + log1p(d[i]) + tanh(d[i]);
    for (int i = 0; i < 256; i++) f[i] = tanhf(f[i]);
    return (int)(d[7] + f[7]);
}
"""


def levels():
    """{level: target flags} for the kernel modules: FASTLOSS_MARCH's one level, the x86-64
    levels (BuildKernels drops those the compiler does not know), or one generic level on
    other architectures."""
    march = os.environ.get("FASTLOSS_MARCH")
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if march:
        return {"native" if march == "native" else "custom": [f"-march={march}"] + (
            ["-mprefer-vector-width=512"] if x86 else [])}
    return X86_LEVELS if x86 else {"generic": []}


class BuildKernels(build_ext):
    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:   # one compiler per core unless `build_ext -j N` said otherwise
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        cc = self.compiler
        # -ffp-contract=off: no fused multiply-adds chosen by context, so a point function gives
        # the same bits in every kernel variant (forward only or not, reduced or 'none')
        common = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
        # Python's own CFLAGS carry -g: debug info would be two thirds of the wheel
        # (FASTLOSS_DEBUG=1 keeps it, for a sanitizer's or a debugger's stack traces)
        common += [] if os.environ.get("FASTLOSS_DEBUG") == "1" else ["-g0"]
        # No peeling or versioning of loops by the data's alignment in the kernels with vector
        # exp/log: which elements ran through the scalar prologue (scalar libm) and which through
        # the vector body (libmvec, another last bit) would depend on where the buffers sit, and
        # the same inputs would not give the same bits. (Not for the others: the embedding
        # kernel's feature loops run 20% slower unpeeled, and their arithmetic is exact either way.)
        unpeeled = [f"--param={param}" for param in ("vect-max-peeling-for-alignment=0",
                                                     "vect-max-version-for-alignment-checks=0")
                    if accepts(cc, [f"--param={param}"])]
        # The point functions with three or more transcendentals (LogCoshLoss, SigmoidFocalLoss's
        # general gamma) outgrow gcc's default limits for inlining `inline` functions (per
        # function, and the growth of this large unit): called out of line, their loop does not
        # vectorise and runs 15-30x slower.
        inlined = [flag for flag in ("--param=max-inline-insns-single=400", "--param=inline-unit-growth=200")
                   if accepts(cc, [flag])]
        macros = [] if os.environ.get("FASTLOSS_POOL", "1") != "0" else [("FASTLOSS_NO_POOL", "1")]
        accepted, mvec = {}, {}
        for ext in self.extensions:
            level, name = ext.name.split(".")[-2:]
            ext.extra_compile_args += common
            ext.define_macros += macros
            if name == "pool" and accepts(cc, ["-pthread"]):
                ext.extra_compile_args.append("-pthread")
                ext.extra_link_args.append("-pthread")
            if name not in KERNELS:   # the baseline modules
                continue
            if level not in accepted:
                accepted[level] = accepts(cc, ext.extra_link_args)
                if not accepted[level]:
                    self.warn(f"fastloss: the compiler does not know {' '.join(ext.extra_link_args)}: "
                              f"no {level} kernels")
                mvec[level] = compiles(cc, LIBMVEC_PROBE, common + ext.extra_link_args + [f"-I{SOURCE}"],
                                       ["mvec", "m"])
                if accepted[level] and not mvec[level]:
                    self.warn(f"fastloss: no libmvec for {level} (or an old one): exp/log/log1p stay scalar "
                              "there, the kernels run slower")
            if mvec[level]:
                ext.define_macros.append(("FASTLOSS_LIBMVEC", "1"))
                ext.libraries += ["mvec", "m"]
            if name in VECTOR_MATH:
                ext.extra_compile_args += unpeeled
            if name == "pointwise":
                ext.extra_compile_args += inlined
        if not any(accepted.values()):
            raise RuntimeError(f"fastloss: the compiler takes none of the CPU levels' flags {levels()}")
        self.extensions = [ext for ext in self.extensions if accepted.get(ext.name.split(".")[-2], True)]
        for ext in self.extensions:   # the level folders (no __init__.py: namespace packages)
            Path(self.get_ext_fullpath(ext.name)).parent.mkdir(parents=True, exist_ok=True)
        super().build_extensions()

    def copy_extensions_to_source(self):   # --inplace: into the level folders of the checkout
        for ext in self.extensions:
            Path(*ext.name.split(".")[:-1]).mkdir(parents=True, exist_ok=True)
        super().copy_extensions_to_source()


def level_extensions(kernel):
    """The cythonized kernel `kernel`, once per CPU level: the same C, compiled from a one-line
    file per level (setuptools names an object file after its source, so one source for
    every level would give one object file)."""
    extensions = []
    for level, flags in levels().items():
        name = Path(kernel.sources[0]).stem
        wrapper = Path("build", "levels", level, f"{name}.c")
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        line = f'#include "{Path(kernel.sources[0]).resolve()}"\n'
        if not wrapper.exists() or wrapper.read_text() != line:
            wrapper.write_text(line)
        target = " ".join(flags) or "default"
        extensions.append(Extension(
            f"fastloss._kernels.{level}.{name}", [str(wrapper)], include_dirs=kernel.include_dirs,
            define_macros=kernel.define_macros + [("FASTLOSS_TARGET", f'"{target}"')],
            extra_compile_args=kernel.extra_compile_args + flags, extra_link_args=flags,
            # (with the headers cythonize found it to include: without them an edit of
            # simd_math.h alone rebuilt nothing in place)
            depends=kernel.sources + kernel.depends))
    return extensions


expand_templates()
# The pointwise point functions are written once for float and double (a fused type), and
# Cython writes their literals as double constants, which would widen float32 arithmetic to
# float64. -fsingle-precision-constant makes them float constants; the file keeps its
# inexact constants in simd_math.h as long doubles, which the flag leaves alone.
EXTRA_FLAGS = {"pointwise": ["-fsingle-precision-constant"], "softmax": ["-fsingle-precision-constant"]}
VECTOR_MATH = {"pointwise", "softmax", "sequence"}   # the kernels whose loops call libmvec
# Cython's `cdef inline` (the point functions, the row helpers) is a plain `inline`, a hint that
# each compiler weighs by its own heuristics: where one declines, the loop calls a scalar
# function per element and does not vectorise (15-30x slower: see the --param flags below).
# Kernel modules make it always_inline, so the loops' shape does not depend on the compiler.
FORCED_INLINE = [("CYTHON_INLINE", "inline __attribute__((always_inline))")] if os.name != "nt" else []
extensions = [
    Extension(
        f"fastloss._kernels.{name}",
        [str(SOURCE / f"{name}.pyx")],
        include_dirs=[np.get_include(), str(SOURCE)],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")] + (FORCED_INLINE if name in KERNELS else []),
        extra_compile_args=list(EXTRA_FLAGS.get(name, [])),
    )
    for name in KERNELS + BASELINE
]

cythonized = cythonize(
    extensions,
    compiler_directives={
        "language_level": 3,
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "initializedcheck": False,
    },
    nthreads=os.cpu_count() or 1,
    quiet=True,
)

setup(
    packages=["fastloss", "fastloss.losses", "fastloss._kernels", "fastloss.cuda", "fastloss.bench"],
    package_dir={"fastloss.bench": "bench"},
    package_data={"fastloss": ["py.typed"], "fastloss._kernels": ["*.pxd", "*.h", "*.pyx.tp"]},
    exclude_package_data={"fastloss._kernels": ["*.c"]},
    ext_modules=[e for kernel in cythonized for e in
                 (level_extensions(kernel) if kernel.name.split(".")[-1] in KERNELS else [kernel])],
    cmdclass={"build_ext": BuildKernels},
    zip_safe=False,
)
