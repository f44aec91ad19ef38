"""Half-precision data in and out: float16 and bfloat16 widened to float32, float32 narrowed
back, in parallel blocks at memory speed (built per CPU level: F16C's vcvtph2ps/vcvtps2ph
where the level has it).

bfloat16 is a float32's top 16 bits: widening is a shift, narrowing rounds to nearest, ties
to even, on the bits (NaN stays a quiet NaN, infinities and overflow to infinity as IEEE
rounding does). float16 uses the compiler's _Float16 conversions (IEEE, round to nearest
even); every float16 value is exact in float32, as every bfloat16 value is. The arrays are
1-D, contiguous; the half data is passed as its uint16 bits.
"""
cimport numpy as cnp
from libc.stdint cimport uint16_t, uint32_t
from libc.string cimport memcpy

from ._reduce cimport threads_for
from .pool cimport fl_run

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* whole runs, 8 lanes at a time with F16C's conversions where the level has them (gcc 12
       does not vectorise _Float16 casts by itself); the rest through _Float16 one by one */
    #if defined(__F16C__)
    #include <immintrin.h>
    #endif
    static void fl_widen_f16(const uint16_t* src, float* dst, Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if defined(__F16C__)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(src + i))));
    #endif
        for (; i < n; i++) { _Float16 v; memcpy(&v, src + i, 2); dst[i] = (float)v; }
    }
    static void fl_narrow_f16(const float* src, uint16_t* dst, Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if defined(__F16C__)
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i*)(dst + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    #endif
        for (; i < n; i++) { _Float16 v = (_Float16)src[i]; memcpy(dst + i, &v, 2); }
    }
    """
    void fl_widen_f16(const uint16_t* src, float* dst, Py_ssize_t n) nogil
    void fl_narrow_f16(const float* src, uint16_t* dst, Py_ssize_t n) nogil

cdef enum:
    CONVERT_BLOCK = 65536

ctypedef struct Conversion:
    const void* src
    void* dst
    Py_ssize_t n
    bint bfloat
    bint narrow     # float32 -> half; else half -> float32


cdef inline float float_from_bf16(uint16_t h) noexcept nogil:
    cdef uint32_t u = (<uint32_t> h) << 16
    cdef float f
    memcpy(&f, &u, 4)
    return f


cdef inline uint16_t bf16_from_float(float f) noexcept nogil:
    cdef uint32_t u
    memcpy(&u, &f, 4)
    if (u & 0x7fffffffu) > 0x7f800000u:   # NaN: keep the sign and the top payload bits, quiet
        return <uint16_t> ((u >> 16) | 0x40u)
    return <uint16_t> ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)


cdef void convert_block(void* ctx, Py_ssize_t block) noexcept nogil:
    """One block of a conversion, either way: a loop per case, each vectorised on its own."""
    cdef Conversion* c = <Conversion*> ctx
    cdef Py_ssize_t i, start = block * CONVERT_BLOCK, stop = min(c.n, (block + 1) * CONVERT_BLOCK)
    cdef const uint16_t* half_in = <const uint16_t*> c.src
    cdef const float* float_in = <const float*> c.src
    cdef uint16_t* half_out = <uint16_t*> c.dst
    cdef float* float_out = <float*> c.dst
    if c.narrow and c.bfloat:
        for i in range(start, stop):
            half_out[i] = bf16_from_float(float_in[i])
    elif c.narrow:
        fl_narrow_f16(float_in + start, half_out + start, stop - start)
    elif c.bfloat:
        for i in range(start, stop):
            float_out[i] = float_from_bf16(half_in[i])
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
