/* float16 and bfloat16 to and from float32, for the kernels that read or write half data in
 * their loops (pointwise.pyx.tp's tiles) and for convert.pyx's whole-array conversions.
 *
 * Half data travels as its uint16 bits. bfloat16 is a float32's top 16 bits: widening is a
 * shift, narrowing rounds to nearest, ties to even, on the bits (a NaN stays a quiet NaN with
 * its sign; overflow goes to infinity, as IEEE rounding does). float16 uses F16C's
 * vcvtph2ps/vcvtps2ph, 8 lanes at a time, where the level has it (gcc 12 does not vectorise
 * _Float16 casts by itself), and the compiler's _Float16 conversions (IEEE, nearest even) for
 * the rest. Every float16 and bfloat16 value is exact in float32. `kind`: FL_FLOAT16 or
 * FL_BFLOAT16. */
#ifndef FASTLOSS_HALF_H
#define FASTLOSS_HALF_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

enum { FL_FLOAT16 = 1, FL_BFLOAT16 = 2 };

static inline void fl_widen_f16(const uint16_t* src, float* dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(src + i))));
#endif
    for (; i < n; i++) { _Float16 v; memcpy(&v, src + i, 2); dst[i] = (float)v; }
}

static inline void fl_narrow_f16(const float* src, uint16_t* dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i*)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) { _Float16 v = (_Float16)src[i]; memcpy(dst + i, &v, 2); }
}

static inline void fl_widen_bf16(const uint16_t* src, float* dst, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(dst + i, &u, 4);
    }
}

static inline uint16_t fl_bf16_of(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40u)
                                           : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline void fl_narrow_bf16(const float* src, uint16_t* dst, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = fl_bf16_of(src[i]);
}

static inline void fl_widen_half(int kind, const void* src, float* dst, ptrdiff_t n) {
    if (kind == FL_BFLOAT16) fl_widen_bf16((const uint16_t*)src, dst, n);
    else fl_widen_f16((const uint16_t*)src, dst, n);
}

static inline void fl_narrow_half(int kind, const float* src, void* dst, ptrdiff_t n) {
    if (kind == FL_BFLOAT16) fl_narrow_bf16(src, (uint16_t*)dst, n);
    else fl_narrow_f16(src, (uint16_t*)dst, n);
}

#endif
