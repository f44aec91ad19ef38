/* Vector transcendentals for the kernels' hot loops.
 *
 * glibc's libmvec has SIMD variants of exp, log and log1p (_ZGVeN8v_exp for AVX-512,
 * _ZGVdN4v_exp for AVX2, ...), but <math.h> declares them only under __FAST_MATH__, and
 * -ffast-math also brings -ffinite-math-only, which breaks NaN and inf. Declaring the
 * `simd` attribute ourselves lets gcc call the vector variants from vectorised loops
 * while every IEEE special value keeps its meaning. setup.py defines FASTLOSS_LIBMVEC
 * only after a probe has linked against libmvec; elsewhere the calls stay scalar. */
#ifndef FASTLOSS_SIMD_MATH_H
#define FASTLOSS_SIMD_MATH_H
#include <math.h>

#if defined(FASTLOSS_LIBMVEC) && defined(__GNUC__) && !defined(__FAST_MATH__)
__attribute__((simd("notinbranch"))) double exp(double);
__attribute__((simd("notinbranch"))) double log(double);
__attribute__((simd("notinbranch"))) double log1p(double);
#endif

#endif
