"""Build the Cython kernels in fastloss/_kernels.

Three things are decided here, by trying the compiler at hand rather than assuming:

* OpenMP (``-fopenmp``). Without it (or with ``FASTLOSS_OPENMP=0``) the kernels build
  serial, with a warning; they stay correct and deterministic, only single-threaded.
* The target: ``-march=native`` (the kernels are built for the machine they run on, AVX-512
  where it has it, AVX2 where it does not). ``FASTLOSS_MARCH`` overrides it, e.g. ``x86-64-v3``.
* Vector transcendentals: glibc's libmvec provides SIMD exp/log/log1p, but its headers declare
  them only under ``-ffast-math``, whose finite-math part would break NaN and inf. So
  ``_kernels/simd_math.h`` declares them itself when ``FASTLOSS_LIBMVEC`` is defined, and
  ``-fno-math-errno -fno-trapping-math`` (both harmless for IEEE results) let gcc vectorise calls.

Templates (``*.pyx.tp``) are expanded with Cython's Tempita before cythonizing.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from Cython.Tempita import sub as tempita_sub
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = Path("fastloss", "_kernels")
EXTENSIONS = ["pointwise", "softmax", "embedding", "sequence", "stream", "memory"]


def expand_templates():
    for template in KERNELS.glob("*.pyx.tp"):
        target = template.with_suffix("")
        text = tempita_sub(template.read_text(), name=str(template))
        header = f"# Generated from {template.name} by setup.py; edit the template, not this file.\n"
        if not target.exists() or target.read_text() != header + text:
            target.write_text(header + text)


def compiles(compiler, code, flags, libraries=()):
    """True when `code` compiles and links with `flags` and `libraries`."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "probe.c")
        source.write_text(code)
        try:
            objects = compiler.compile([str(source)], output_dir=tmp, extra_postargs=list(flags))
            compiler.link_executable(objects, str(Path(tmp, "probe")), extra_postargs=list(flags),
                                     libraries=list(libraries))
        except Exception:
            return False
    return True


OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
LIBMVEC_PROBE = """
#include <math.h>
__attribute__((simd("notinbranch"))) double exp(double);
int main(void) { double s = 0; for (int i = 0; i < 64; i++) s += exp(i * 0.01); return s > 0 ? 0 : 1; }
"""


class BuildKernels(build_ext):
    def build_extensions(self):
        cc = self.compiler
        # -ffp-contract=off: no fused multiply-adds chosen by context, so a point function gives
        # the same bits in every kernel variant (forward only or not, reduced or 'none')
        flags, libraries, macros = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"], [], []
        # No peeling or versioning of loops by the data's alignment in the kernels with vector
        # exp/log: which elements ran through the scalar prologue (scalar libm) and which through
        # the vector body (libmvec, another last bit) would depend on where the buffers sit, and
        # the same inputs would not give the same bits. (Not for the others: the embedding
        # kernel's feature loops run 20% slower unpeeled, and their arithmetic is exact either way.)
        unpeeled = [f"--param={param}" for param in ("vect-max-peeling-for-alignment=0",
                                                     "vect-max-version-for-alignment-checks=0")
                    if compiles(cc, "int main(void){return 0;}\n", [f"--param={param}"])]
        march = os.environ.get("FASTLOSS_MARCH", "native")
        if march and compiles(cc, "int main(void){return 0;}\n", [f"-march={march}"]):
            flags.append(f"-march={march}")
        if compiles(cc, "int main(void){return 0;}\n", ["-mprefer-vector-width=512"]):
            # Only takes effect where the target has AVX-512; the math calls use 512-bit variants.
            flags.append("-mprefer-vector-width=512")
        if os.environ.get("FASTLOSS_OPENMP", "1") != "0" and compiles(cc, OPENMP_PROBE, ["-fopenmp"]):
            flags.append("-fopenmp")
        else:
            self.warn("fastloss: no OpenMP (the compiler lacks -fopenmp, or FASTLOSS_OPENMP=0): "
                      "building serial kernels")
            if compiles(cc, "int main(void){return 0;}\n", ["-fopenmp-simd"]):
                flags.append("-fopenmp-simd")
        if compiles(cc, LIBMVEC_PROBE, flags, ["mvec", "m"]):
            macros.append(("FASTLOSS_LIBMVEC", "1"))
            libraries += ["mvec", "m"]
        else:
            self.warn("fastloss: no libmvec: exp/log/log1p stay scalar, the kernels run slower")
        for ext in self.extensions:
            ext.extra_compile_args += flags + (unpeeled if ext.name.rsplit(".", 1)[-1] in VECTOR_MATH else [])
            ext.extra_link_args += [f for f in flags if f.startswith("-f") or f.startswith("-m")]
            ext.libraries += libraries
            ext.define_macros += macros
        super().build_extensions()


expand_templates()
# The pointwise point functions are written once for float and double (a fused type), and
# Cython writes their literals as double constants, which would widen float32 arithmetic to
# float64. -fsingle-precision-constant makes them float constants; the file keeps its
# inexact constants in simd_math.h as long doubles, which the flag leaves alone.
EXTRA_FLAGS = {"pointwise": ["-fsingle-precision-constant"], "softmax": ["-fsingle-precision-constant"]}
VECTOR_MATH = {"pointwise", "softmax", "sequence"}   # the kernels whose loops call libmvec
extensions = [
    Extension(
        f"fastloss._kernels.{name}",
        [str(KERNELS / f"{name}.pyx")],
        include_dirs=[np.get_include(), str(KERNELS)],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=list(EXTRA_FLAGS.get(name, [])),
    )
    for name in EXTENSIONS
]

setup(
    packages=["fastloss", "fastloss.losses", "fastloss._kernels", "fastloss.cuda", "fastloss.bench"],
    package_dir={"fastloss.bench": "bench"},
    package_data={"fastloss._kernels": ["*.pxd", "*.h", "*.pyx.tp"]},
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        quiet=True,
    ),
    cmdclass={"build_ext": BuildKernels},
    zip_safe=False,
)
