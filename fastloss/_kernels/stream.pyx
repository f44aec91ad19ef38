"""STREAM triad (a = b + s c), the yardstick that bench/ reports every bandwidth against:
the same OpenMP threads and the same compiler flags as the loss kernels."""
cimport numpy as cnp
from cython.parallel cimport prange

cnp.import_array()

cdef extern from *:
    """
    #ifdef _OPENMP
    #define FL_OPENMP 1
    #else
    #define FL_OPENMP 0
    #endif
    #ifdef FASTLOSS_LIBMVEC
    #define FL_LIBMVEC 1
    #else
    #define FL_LIBMVEC 0
    #endif
    #if defined(__AVX512F__)
    #define FL_SIMD "AVX-512"
    #elif defined(__AVX2__)
    #define FL_SIMD "AVX2"
    #elif defined(__SSE2__)
    #define FL_SIMD "SSE2"
    #else
    #define FL_SIMD "scalar"
    #endif
    """
    int FL_OPENMP, FL_LIBMVEC
    const char* FL_SIMD


def build_info():
    """How the kernels were compiled: OpenMP, libmvec's vector math, the widest SIMD."""
    return {"openmp": bool(FL_OPENMP), "libmvec": bool(FL_LIBMVEC), "simd": FL_SIMD.decode()}


def triad(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c, double s, int num_threads):
    """a[i] = b[i] + s * c[i] over C-contiguous float32 arrays of one size."""
    cdef float* pa = <float*> cnp.PyArray_DATA(a)
    cdef const float* pb = <const float*> cnp.PyArray_DATA(b)
    cdef const float* pc = <const float*> cnp.PyArray_DATA(c)
    cdef float fs = <float> s
    cdef Py_ssize_t i, n = a.size
    for i in prange(n, nogil=True, num_threads=num_threads, schedule="static"):
        pa[i] = pb[i] + fs * pc[i]
