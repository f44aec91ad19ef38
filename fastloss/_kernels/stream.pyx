"""STREAM triad (a = b + s c), the yardstick that bench/ reports every bandwidth against:
the same worker pool and the same compiler flags as the loss kernels of its CPU level."""
cimport numpy as cnp

from ._reduce cimport fl_run

cnp.import_array()

cdef extern from *:
    """
    #ifdef FASTLOSS_LIBMVEC
    #define FL_LIBMVEC 1
    #else
    #define FL_LIBMVEC 0
    #endif
    #ifndef FASTLOSS_TARGET
    #define FASTLOSS_TARGET "default"
    #endif
    #if defined(__AVX512F__)
    #define FL_SIMD "AVX-512"
    #elif defined(__AVX2__)
    #define FL_SIMD "AVX2"
    #elif defined(__SSE4_2__)
    #define FL_SIMD "SSE4.2"
    #elif defined(__SSE2__)
    #define FL_SIMD "SSE2"
    #elif defined(__ARM_NEON)
    #define FL_SIMD "NEON"
    #else
    #define FL_SIMD "scalar"
    #endif
    """
    int FL_LIBMVEC
    const char* FL_SIMD
    const char* FASTLOSS_TARGET

cdef enum:
    TRIAD_BLOCK = 65536


def build_info():
    """How this level's kernels were compiled: the target flags, libmvec's vector math, the widest SIMD."""
    return {"target": FASTLOSS_TARGET.decode(), "libmvec": bool(FL_LIBMVEC), "simd": FL_SIMD.decode()}


ctypedef struct Triad:
    float* a
    const float* b
    const float* c
    float s
    Py_ssize_t n


cdef void triad_block(void* ctx, Py_ssize_t block) noexcept nogil:
    cdef Triad* t = <Triad*> ctx
    cdef Py_ssize_t i, stop = min(t.n, (block + 1) * TRIAD_BLOCK)
    for i in range(block * TRIAD_BLOCK, stop):
        t.a[i] = t.b[i] + t.s * t.c[i]


def triad(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c, double s, int num_threads):
    """a[i] = b[i] + s * c[i] over C-contiguous float32 arrays of one size."""
    cdef Triad t
    t.a, t.b, t.c = <float*> cnp.PyArray_DATA(a), <const float*> cnp.PyArray_DATA(b), <const float*> cnp.PyArray_DATA(c)
    t.s, t.n = <float> s, a.size
    with nogil:
        fl_run(triad_block, &t, (t.n + TRIAD_BLOCK - 1) // TRIAD_BLOCK, num_threads)
