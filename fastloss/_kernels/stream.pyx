"""STREAM triad (a = b + s c), the yardstick that bench/ reports every bandwidth against:
the same OpenMP threads and the same compiler flags as the loss kernels."""
cimport numpy as cnp
from cython.parallel cimport prange

cnp.import_array()


def triad(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c, double s, int num_threads):
    """a[i] = b[i] + s * c[i] over C-contiguous float32 arrays of one size."""
    cdef float* pa = <float*> cnp.PyArray_DATA(a)
    cdef const float* pb = <const float*> cnp.PyArray_DATA(b)
    cdef const float* pc = <const float*> cnp.PyArray_DATA(c)
    cdef float fs = <float> s
    cdef Py_ssize_t i, n = a.size
    for i in prange(n, nogil=True, num_threads=num_threads, schedule="static"):
        pa[i] = pb[i] + fs * pc[i]
