/* Vector transcendentals for the kernels' hot loops.
 *
 * glibc's libmvec has SIMD variants of exp, log and log1p, in float and double (_ZGVeN8v_exp for AVX-512,
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
__attribute__((simd("notinbranch"))) float expf(float);
__attribute__((simd("notinbranch"))) float logf(float);
__attribute__((simd("notinbranch"))) float log1pf(float);
__attribute__((simd("notinbranch"))) double tanh(double);
__attribute__((simd("notinbranch"))) float tanhf(float);
#endif

/* The point functions are written once for float and double (a Cython fused type); these
 * pick the float or the double function by the argument's type, so that float32 data is
 * computed in float32 throughout. */
#define fl_exp(x) _Generic((x), float: expf, default: exp)(x)
#define fl_log(x) _Generic((x), float: logf, default: log)(x)
#define fl_log1p(x) _Generic((x), float: log1pf, default: log1p)(x)
#define fl_abs(x) _Generic((x), float: fabsf, default: fabs)(x)
#define fl_tanh(x) _Generic((x), float: tanhf, default: tanh)(x)

/* Output pointers the kernels store through with nothing else reading that memory in the loop
 * (the Python layer refuses out= buffers that overlap an input): `restrict` lets gcc vectorise
 * without a run-time overlap check. That check's fallback, the scalar loop, would round
 * exp/log with scalar libm where the vector body uses libmvec, another last bit: the results
 * would depend on where the caller's buffers happen to sit (found by tests/fuzz.py). */
typedef float *__restrict fl_restrict_float;
typedef double *__restrict fl_restrict_double;

/* Inexact constants of the point functions. pointwise.c is compiled with
 * -fsingle-precision-constant, which leaves long double (L) constants alone. */
#define FL_LOG_2PI 1.8378770664093454835606594728112353L
/* torch's clamp of x (1 - x) in BCELoss's gradient: its EPSILON = 1e-12 is a float, so the
 * float64 kernel clamps at 1e-12 rounded to float32 as well (bit for bit torch's gradient) */
#define FL_BCE_EPSILON 0x1.197998p-40L

#endif
