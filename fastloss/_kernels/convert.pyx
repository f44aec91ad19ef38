"""Half-precision data in and out: float16 and bfloat16 widened to float32, float32 narrowed
back, in parallel blocks at memory speed (built per CPU level: F16C's vcvtph2ps/vcvtps2ph
where the level has it), with half.h's conversions, which the pointwise kernels use in
their tiles too (the rounding is described there). The arrays are 1-D, contiguous; the half
data is passed as its uint16 bits.
"""
cimport numpy as cnp
from libc.stdint cimport uint16_t

from ._reduce cimport threads_for
from .pool cimport fl_run

cnp.import_array()

cdef extern from "half.h" nogil:
    void fl_widen_f16(const uint16_t* src, float* dst, Py_ssize_t n)
    void fl_narrow_f16(const float* src, uint16_t* dst, Py_ssize_t n)
    void fl_widen_bf16(const uint16_t* src, float* dst, Py_ssize_t n)
    void fl_narrow_bf16(const float* src, uint16_t* dst, Py_ssize_t n)

cdef enum:
    CONVERT_BLOCK = 65536

ctypedef struct Conversion:
    const void* src
    void* dst
    Py_ssize_t n
    bint bfloat
    bint narrow     # float32 -> half; else half -> float32


cdef void convert_block(void* ctx, Py_ssize_t block) noexcept nogil:
    """One block of a conversion, either way: a loop per case, each vectorised on its own."""
    cdef Conversion* c = <Conversion*> ctx
    cdef Py_ssize_t start = block * CONVERT_BLOCK, stop = min(c.n, (block + 1) * CONVERT_BLOCK)
    cdef const uint16_t* half_in = <const uint16_t*> c.src
    cdef const float* float_in = <const float*> c.src
    cdef uint16_t* half_out = <uint16_t*> c.dst
    cdef float* float_out = <float*> c.dst
    if c.narrow and c.bfloat:
        fl_narrow_bf16(float_in + start, half_out + start, stop - start)
    elif c.narrow:
        fl_narrow_f16(float_in + start, half_out + start, stop - start)
    elif c.bfloat:
        fl_widen_bf16(half_in + start, float_out + start, stop - start)
    else:
        fl_widen_f16(half_in + start, float_out + start, stop - start)


cdef run(bint narrow, cnp.ndarray src, cnp.ndarray dst, bint bfloat, int num_threads):
    cdef Conversion c
    if not (src.flags.c_contiguous and dst.flags.c_contiguous) or src.size != dst.size:
        raise ValueError("convert: expected C-contiguous arrays of one size")
    if not dst.flags.writeable:
        raise ValueError("convert: expected a writable destination")
    c.src, c.dst, c.n, c.bfloat, c.narrow = cnp.PyArray_DATA(src), cnp.PyArray_DATA(dst), src.size, bfloat, narrow
    cdef Py_ssize_t blocks = (c.n + CONVERT_BLOCK - 1) // CONVERT_BLOCK
    cdef int threads = threads_for(num_threads, blocks, <double> c.n, 6.0, 0.0)
    with nogil:
        fl_run(convert_block, &c, blocks, threads)


def widen(cnp.ndarray src, cnp.ndarray dst, bint bfloat, int num_threads):
    """dst (float32) = src (the uint16 bits of float16, or of bfloat16 with `bfloat`)."""
    if src.dtype.itemsize != 2 or dst.dtype.num != cnp.NPY_FLOAT32:
        raise TypeError("widen: expected 2-byte source and float32 destination")
    run(False, src, dst, bfloat, num_threads)


def narrow(cnp.ndarray src, cnp.ndarray dst, bint bfloat, int num_threads):
    """dst (the uint16 bits of float16, or bfloat16 with `bfloat`) = src (float32), rounded to
    nearest even."""
    if dst.dtype.itemsize != 2 or src.dtype.num != cnp.NPY_FLOAT32:
        raise TypeError("narrow: expected float32 source and 2-byte destination")
    run(True, src, dst, bfloat, num_threads)
