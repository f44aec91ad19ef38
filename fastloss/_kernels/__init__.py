"""The compiled kernels (Cython with OpenMP)."""
import os

# GNU OpenMP keeps a finished region's threads spinning for a while (about 300,000 pause
# instructions: milliseconds) before they sleep. After a kernel that is the moment BLAS or the
# caller's own threads start, and a spinning thread takes one of their cores. libgomp reads its
# spin count once, when it loads with the first kernel module below, so that is when a short one
# is asked for (unless the user chose a spin count or a wait policy), and the environment is left
# as it was.
if not {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(os.environ):
    os.environ["GOMP_SPINCOUNT"] = "1000"
    try:
        from . import memory  # noqa: F401  (loads libgomp)
    finally:
        del os.environ["GOMP_SPINCOUNT"]
