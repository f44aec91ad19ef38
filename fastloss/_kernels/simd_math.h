/* Vector transcendentals for the kernels' hot loops: float32 ones of our own (below), float64
 * ones from glibc's libmvec.
 *
 * glibc's libmvec has SIMD variants of exp, log, log1p and tanh (_ZGVeN8v_exp for AVX-512,
 * _ZGVdN4v_exp for AVX2, ...; the kernels call the float64 ones and tanhf), but <math.h> declares them only under __FAST_MATH__, and
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
__attribute__((simd("notinbranch"))) double tanh(double);
__attribute__((simd("notinbranch"))) float tanhf(float);
#endif

/* float32 exp, log and log1p of our own, inline and branch-free, so that a loop calling them
 * vectorises at the full width of every level (16 lanes of AVX-512, 8 of AVX2, 4 of SSE) with
 * no call, no spilled registers and no scalar special-value path. Each is within 2 ulp of the
 * float64 result over every float32 input (tests/test_simd_math.py scans all 2^32 of them at
 * each level; the worst measured at v3/v4 and at v2: exp 0.78, 0.78 (the softmax rows' short
 * one 1.01, 0.99); log 1.18, 1.35; log1p 1.66, 1.85 ulp) and keeps IEEE's special values: NaN
 * in gives NaN, exp(-inf) = 0, exp(inf) = log(inf) = inf, log(0) = -inf, log(x < 0) = NaN.
 * The kernels compile with -ffp-contract=off, so a multiply-add fuses only where FL_FMA says:
 * with FMA hardware (v3, v4) in one rounding, without it (v2) in two; a level gives the same
 * bits in every kernel and every loop position. The coefficients are minimax fits (relative
 * error) rounded to float. */
#include <stddef.h>
#include <stdint.h>
#if defined(__SSE__)
#include <immintrin.h>
#endif
#ifdef __FMA__
#define FL_FMA(a, b, c) __builtin_fmaf(a, b, c)
#else
#define FL_FMA(a, b, c) ((a) * (b) + (c))
#endif
#define FL_INLINE static inline __attribute__((always_inline))

FL_INLINE uint32_t fl_bits(float x) { uint32_t u; __builtin_memcpy(&u, &x, 4); return u; }
FL_INLINE float fl_from_bits(uint32_t u) { float x; __builtin_memcpy(&x, &u, 4); return x; }

/* exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 in two
 * parts, n * hi exact), exp(r) = 1 + r + r^2 q(r). 2^n is applied as two normal powers
 * 2^(n/2) 2^(n - n/2), so a subnormal result is rounded once. The shifter 1.5 * 2^23 rounds
 * x / ln 2 to an integer that sits in the low bits of k. Outside [-104, 88.75] the result is
 * 0 or inf (the arithmetic there is garbage, but defined: unsigned bits, no overflow), and NaN
 * passes through every step. */
#define FL_EXP_SHIFT 0x1.8p23f
FL_INLINE float fl_exp_r(float x, float* k_out, float* tail_out) {   /* r, k, and what r's rounding lost */
    float k = FL_FMA(x, 0x1.715476p+0f, FL_EXP_SHIFT), n = k - FL_EXP_SHIFT;
    float high = FL_FMA(n, -0x1.62e4p-1f, x), r = FL_FMA(n, -0x1.7f7d1cp-20f, high);
    *k_out = k;
    *tail_out = FL_FMA(n, -0x1.7f7d1cp-20f, high - r);   /* (where unused, no code) */
    return r;
}

/* exp(r) as one + rest, to be rounded once, and k. `carried` (a constant at every call) keeps
 * what the roundings of r and of 1 + r lose: 1 + r as one + low exactly (Fast2Sum), and r's
 * tail added to the small terms before the one rounding of one + rest: 97% correctly rounded
 * over [-20, 20], within 0.78 ulp, for four operations more; without, one = 1: 90%, within
 * 1.01 ulp. q(r) by Horner's rule: at AVX-512 the loops are bound by the multiply-adds, and
 * it takes one multiply fewer than Estrin's scheme, whose shorter dependency chain the
 * out-of-order window hides anyway (as exact: within 1.01 where Estrin's was 1.04 ulp). */
FL_INLINE float fl_exp_reduced(float x, float* k_out, float* rest_out, int carried) {
    float tail, r = fl_exp_r(x, k_out, &tail);
    float r2 = r * r;
    float q = FL_FMA(FL_FMA(FL_FMA(FL_FMA(0x1.6a2444p-10f, r, 0x1.1239d4p-7f), r, 0x1.5558f2p-5f), r,
                            0x1.555492p-3f), r, 0x1.fffffcp-2f);
    float one = 1.0f + r, low = (1.0f - one) + r;
    *rest_out = carried ? low + FL_FMA(r2, q, tail) : FL_FMA(r2, q, r);
    return carried ? one : 1.0f;
}

FL_INLINE float fl_expf(float x) {
    float k, rest, one = fl_exp_reduced(x, &k, &rest, 1), p = one + rest;
    int32_t ni = (int32_t) (fl_bits(k) - fl_bits(FL_EXP_SHIFT)), n1 = ni >> 1, n2 = ni - n1;
    float y = p * fl_from_bits((uint32_t) (n1 + 127) << 23) * fl_from_bits((uint32_t) (n2 + 127) << 23);
    y = x > 88.75f ? __builtin_inff() : y;
    return x < -104.0f ? 0.0f : y;
}

/* fl_expf for x <= 0 or NaN (exp(-|x|) of the logistic losses), in fewer instructions: 2^n is
 * applied once, as 2^(n + 64) (a normal number for every n >= -150 that gets here) and then
 * 2^-64, so that a subnormal result is still rounded once, and nothing can overflow. The same
 * bits as fl_expf over that whole domain (tests/test_simd_math.py scans it); a positive x above
 * 43 would give inf. fl_expf_neg_short is the same without `carried` (see fl_exp_reduced),
 * within 1.01 ulp: the softmax rows' exp(z - max), a fifth of cross entropy's time, whose
 * float32 error stays under torch's with it (tests/test_float32_error.py). */
FL_INLINE float fl_expf_neg_with(float x, int carried) {
    float k, rest, one = fl_exp_reduced(x, &k, &rest, carried);
    float s = fl_from_bits((fl_bits(k) - fl_bits(FL_EXP_SHIFT) + 191u) << 23);
    /* (one + rest) s rounded once, as one multiply-add: the same number as one + rest rounded
     * and then scaled, since s is a normal power of 2 (with one = 1, an add less) */
    float y = FL_FMA(rest, s, one * s) * 0x1p-64f;
    return x < -104.0f ? 0.0f : y;
}

FL_INLINE float fl_expf_neg(float x) { return fl_expf_neg_with(x, 1); }
FL_INLINE float fl_expf_neg_short(float x) { return fl_expf_neg_with(x, 0); }

/* c e^z in float64 as (c h) h with h = exp(z / 2): finite wherever c e^z is (h overflows only
 * past z = 2 log(max), where no float64 c brings it back), and 0 for c = 0 but at a NaN z (0 e^inf
 * is 0: a zero target contributes nothing). */
FL_INLINE double fl_times_exp_double(double c, double z) {
    double h = exp(z / 2), v = c * h * h;
    return c == 0 && z == z ? 0 : v;
}

FL_INLINE double fl_times_exp_double_minus(double c, double z) { return fl_times_exp_double(c, -z); }

/* c e^z for a float c >= 0 (inf and NaN included) and any z: the log-link losses' y e^-x.
 * No intermediate overflows or underflows: the result is finite wherever c e^z rounds to a
 * finite float (c = 2^-149 and z = 190, or c = 0.5 and z = 89, where e^z alone is inf), and
 * rounded once where it is subnormal. Within 1 ulp (0.8 measured; tests/test_simd_math.py
 * scans every z in [-310, 310] for one c, and the over- and underflow edges for c from 2^-149
 * to the largest float), and more exact than torch's float32 y * exp(-x), which rounds twice
 * (tests/test_float32_error.py):
 * - e^r as p + p_low, correctly rounded 99% of the time where fl_expf's is 91%: the part of r
 *   that its rounding lost is kept (`tail`), r^2 is exact as r2 + r2_low (by FMA), and the
 *   terms below one = 1 + r are added first; r^3 P(r) has P of degree 4 (relative error 2e-10,
 *   where fl_expf's q has 4e-9);
 * - c = i 2^(b - 150), with i its significand as an integer (the implicit bit where c is normal;
 *   b its biased exponent, 1 for a subnormal c), and m = i e^r = i p + i p_low, rounded once
 *   (by FMA);
 * - the result m 2^(b - 150 + n), applied as two normal powers of 2 as in fl_expf.
 * z is clamped to [-300, 300], past which every float c gives 0 or inf. A zero c gives 0 for
 * every z but NaN (0 e^inf is 0 here, not NaN: a zero target contributes nothing); an infinite
 * or NaN c, or a NaN z, gives c + z (inf, or NaN for inf e^-inf and any NaN). About 2x
 * fl_expf's work. Without FMA hardware (x86-64-v2) the exact products would take Dekker's
 * splits, slower than float64 (4.6 against 4.4 ns an element, measured): there it is
 * fl_times_exp_double's, rounded once. */
FL_INLINE float fl_times_expf_signed(float c, float z, float sign) {   /* c e^(sign z), sign +-1 */
#ifdef __FMA__
    float k, zc = z < 300.0f ? z : 300.0f;   /* (NaN: 300; the result is replaced below) */
    zc = zc > -300.0f ? zc : -300.0f;
    /* e^(s r) = one + (s r - (one - 1) + s tail + r^2 / 2 + (s r)^3 P(s r)), P by its even and
     * odd parts (shared by e^r and e^-r: the two signs' calls share all but the last steps) */
    float tail, r = fl_exp_r(zc, &k, &tail), r2 = r * r, r2_low = __builtin_fmaf(r, r, -r2);
    float even = FL_FMA(r2 * r2, 0x1.9dd62ep-13f, FL_FMA(r2, 0x1.111332p-7f, 0x1.555554p-3f));
    float odd = FL_FMA(r2, 0x1.6d4e56p-10f, 0x1.5554e6p-5f);
    float sr = sign * r, one = 1.0f + sr;
    float below = FL_FMA(r2 * sr, FL_FMA(sr, odd, even), (1.0f - one) + sr + sign * tail + 0.5f * r2_low);
    float t = FL_FMA(0.5f, r2, below), p = one + t, p_low = (one - p) + t;   /* e^(s r) = p + p_low */
    uint32_t bits = fl_bits(c) & 0x7fffffffu, biased = bits >> 23;   /* (-0 as 0) */
    uint32_t implicit = (uint32_t) (biased < 1u ? biased : 1u) << 23;
    float i = (float) (int32_t) ((bits & 0x7fffffu) | implicit);
    float m = __builtin_fmaf(i, p, i * p_low);
    int32_t n = (int32_t) (fl_bits(k) - fl_bits(FL_EXP_SHIFT));
    int32_t e = (int32_t) (biased > 1u ? biased : 1u) - 150 + (sign > 0.0f ? n : -n);
    e = e < -200 ? -200 : (e > 200 ? 200 : e);   /* m < 2^25: 2^-200 gives 0, 2^200 inf */
    int32_t e1 = e >> 1;
    float y = m * fl_from_bits((uint32_t) (e1 + 127) << 23) * fl_from_bits((uint32_t) (e - e1 + 127) << 23);
#else   /* (no clamp: float64 needs none, and gcc vectorises no select before the widening) */
    float y = (float) fl_times_exp_double(c, (double) sign * z);
#endif
    return !(c <= 0x1.fffffep127f) | (z != z) ? c + sign * z : y;
}

FL_INLINE float fl_times_expf(float c, float z) { return fl_times_expf_signed(c, z, 1.0f); }
FL_INLINE float fl_times_expf_minus(float c, float z) { return fl_times_expf_signed(c, z, -1.0f); }   /* c e^-z */

/* log(x) = e ln 2 + log(m), x = 2^e m with m in [2/3, 4/3) (found by subtracting the bits of
 * 2/3), log(1 + r) = r + r^2 q(r) for r = m - 1 (exact). fl_logf_scaled takes x = 2^s times a
 * positive normal number (NaN or inf give arbitrary numbers); fl_logf any x: a subnormal one is
 * scaled by 2^23 first (a multiply by a selected constant, not a selected product: gcc would
 * evaluate the polynomial for both). */
FL_INLINE float fl_logf_reduce(float x, int32_t s, float* r_out, float* r2_out, float* fe_out) {   /* q(r), and r, r^2, e - s */
    uint32_t ix = fl_bits(x);
    int32_t e = (int32_t) (ix - 0x3f2aaaabu) >> 23;
    float r = fl_from_bits(ix - ((uint32_t) e << 23)) - 1.0f;
    float r2 = r * r, r4 = r2 * r2;   /* q(r) by Estrin's scheme */
    *r_out = r;
    *r2_out = r2;
    *fe_out = (float) (e - s);
    return FL_FMA(r4, FL_FMA(r2, FL_FMA(0x1.1f4030p-3f, r, -0x1.3b28b4p-3f), FL_FMA(0x1.1ea2d2p-3f, r, -0x1.5032d2p-3f)),
                  FL_FMA(r2, FL_FMA(0x1.99d420p-3f, r, -0x1.001480p-2f), FL_FMA(0x1.5554fap-2f, r, -0x1.ffffd6p-2f)));
}

FL_INLINE float fl_logf_scaled(float x, int32_t s) {
    float r, r2, fe, q = fl_logf_reduce(x, s, &r, &r2, &fe);
    return FL_FMA(fe, 0x1.62e43p-1f, FL_FMA(fe, -0x1.05c61p-29f, FL_FMA(r2, q, r)));
}

/* fl_logf for a positive normal x only (NaN, inf, 0 and subnormals give arbitrary numbers): the
 * CTC recursion's log of a sum in [1, 3] */
FL_INLINE float fl_logf_normal(float x) { return fl_logf_scaled(x, 0); }

FL_INLINE float fl_logf(float x) {
    int subnormal = x < 0x1p-126f;
    float y = fl_logf_scaled(x * (subnormal ? 0x1p23f : 1.0f), subnormal ? 23 : 0);
    /* +-0, inf, NaN and x < 0 (bits - 1 wraps for +0, and the others' bits are at least inf's) */
    int special = fl_bits(x) - 1u >= 0x7f7fffffu;
    float value = x < 0.0f ? __builtin_nanf("") : (x == 0.0f ? -__builtin_inff() : x);
    return special ? value : y;
}

/* log1p(x) from u = 1 + x (rounded) and its reciprocal: log u, corrected by the part of x
 * that the rounding lost, (x - (u - 1)) / u (u - 1 is exact). fl_log1pf_from is for callers
 * that have 1 / u already (the sigmoid's denominator) and x in [0, 1] or NaN: u in [1, 2],
 * where log needs no special case, and NaN passes through the correction. There log u =
 * e ln 2 + r + r^2 q(r) with e 0 or 1, and e ln2_hi + r is exact (ln2_hi has 17 bits, r is a
 * multiple of 2^-24 under 1/3, the sum under 0.7), so the result is that sum plus the small
 * terms (correction first), rounded once: 93% correctly rounded, against 72% for log u plus
 * the correction (0.26 ulp on average, 1.2 at most, over x = e^-z for z in [0, 12]). */
FL_INLINE float fl_log1pf_from(float x, float u, float inv_u) {
    float r, r2, fe, q = fl_logf_reduce(u, 0, &r, &r2, &fe);
    float correction = (x - (u - 1.0f)) * inv_u;
    return FL_FMA(fe, 0x1.62e43p-1f, r) + FL_FMA(fe, -0x1.05c61p-29f, FL_FMA(r2, q, correction));
}

FL_INLINE float fl_log1pf(float x) {
    float u = 1.0f + x, kept = u - 1.0f;
    return fl_logf(u) + (kept == x ? 0.0f : (x - kept) / u);   /* == also at u = 0 or inf */
}

/* lanes[k % 16] = max(lanes[k % 16], z[k]) over the float row z[0 .. n), with z's 16 lanes in
 * the level's vectors (one AVX-512, two AVX2, four SSE ones): gcc does not vectorise the 16-lane
 * form of this written as scalars (the max alone was a third of cross entropy's time). A lane
 * takes z[k] only where z[k] > lane, the same comparison as before: NaN never wins. */
#if defined(__AVX512F__)
#define FL_VW 16
#elif defined(__AVX__)
#define FL_VW 8
#else
#define FL_VW 4
#endif
typedef float fl_vfloat __attribute__((vector_size(FL_VW * 4)));
typedef int32_t fl_vint __attribute__((vector_size(FL_VW * 4)));

/* v > acc ? v : acc in every lane: x86's MAXPS is exactly that, its first operand taken only
 * where it compares greater (so NaN never wins, and of two zeros acc stays), in one instruction
 * where a compare and a blend took two dependent ones (CrossEntropyLoss 4096x1000: ~3% faster) */
FL_INLINE fl_vfloat fl_vmax_greater(fl_vfloat v, fl_vfloat acc) {
#if defined(__AVX512F__)
    return (fl_vfloat) _mm512_max_ps((__m512) v, (__m512) acc);
#elif defined(__AVX__)
    return (fl_vfloat) _mm256_max_ps((__m256) v, (__m256) acc);
#elif defined(__SSE__)
    return (fl_vfloat) _mm_max_ps((__m128) v, (__m128) acc);
#else
    fl_vint greater = v > acc;
    return (fl_vfloat) ((greater & (fl_vint) v) | (~greater & (fl_vint) acc));
#endif
}

FL_INLINE void fl_max_lanes_float(float* lanes, const float* z, ptrdiff_t n) {
    fl_vfloat acc[16 / FL_VW], v;
    ptrdiff_t j = 0, k;
    __builtin_memcpy(acc, lanes, sizeof acc);
    for (; j + 16 <= n; j += 16)
        for (int part = 0; part < 16 / FL_VW; part++) {
            __builtin_memcpy(&v, z + j + part * FL_VW, sizeof v);
            acc[part] = fl_vmax_greater(v, acc[part]);
        }
    __builtin_memcpy(lanes, acc, sizeof acc);
    for (k = 0; j + k < n; k++)
        lanes[k] = z[j + k] > lanes[k] ? z[j + k] : lanes[k];
}

/* g[k] = e[k] f - c for k < n (a multiply, then a subtract: the scalar loop's bits), g's whole
 * aligned vectors by non-temporal stores, which write a line to memory without reading it
 * first: a gradient much larger than the caches, written once, moves 8 bytes an element
 * rather than 12 (a plain store reads each line before it overwrites it). g not aligned to its
 * element (no whole vector) is written by plain stores. Call fl_stream_fence() before any
 * other thread may read g. */
FL_INLINE void fl_stream_vector(void* p, fl_vint v) {   /* FL_VW * 4 bytes, aligned to that */
#if defined(__AVX512F__)
    _mm512_stream_si512((__m512i*) p, (__m512i) v);
#elif defined(__AVX__)
    _mm256_stream_si256((__m256i*) p, (__m256i) v);
#elif defined(__SSE2__)
    _mm_stream_si128((__m128i*) p, (__m128i) v);
#else
    __builtin_memcpy(p, &v, sizeof v);
#endif
}

FL_INLINE void fl_stream_fence(void) {
#if defined(__SSE__)
    _mm_sfence();
#endif
}

#define FL_SCALE_STREAM(T, name)                                                            \
    FL_INLINE void name(T* g, const T* e, T f, T c, ptrdiff_t n) {                          \
        typedef T vec __attribute__((vector_size(FL_VW * 4)));                              \
        ptrdiff_t k = 0, per = (ptrdiff_t) (sizeof(vec) / sizeof(T));                       \
        vec v;                                                                              \
        for (; k < n && (uintptr_t) (g + k) % sizeof(vec); k++)                             \
            g[k] = e[k] * f - c;                                                            \
        for (; k + per <= n; k += per) {                                                    \
            __builtin_memcpy(&v, e + k, sizeof v);                                          \
            fl_stream_vector(g + k, (fl_vint) (v * f - c));                                 \
        }                                                                                   \
        for (; k < n; k++)                                                                  \
            g[k] = e[k] * f - c;                                                            \
    }
FL_SCALE_STREAM(float, fl_scale_stream_float)
FL_SCALE_STREAM(double, fl_scale_stream_double)

/* A hint that the n bytes from p will be read soon, a cache line at a time (no fault, no effect
 * on any result). */
FL_INLINE void fl_prefetch_bytes(const void* p, size_t n) {
    for (size_t k = 0; k < n; k += 64)
        __builtin_prefetch((const char*) p + k);
}

/* The point functions are written once for float and double (a Cython fused type); these
 * pick the float or the double function by the argument's type, so that float32 data is
 * computed in float32 throughout (with the functions above; float64 with libm's, vectorised
 * by libmvec). fl_log1p_from(x, u, inv_u) is log1p(x) given u = 1 + x and 1 / u;
 * fl_times_exp(c, z) is c e^z for c >= 0, in c's type. */
#define fl_exp(x) _Generic((x), float: fl_expf, default: exp)(x)
#define fl_exp_neg(x) _Generic((x), float: fl_expf_neg, default: exp)(x)   /* x <= 0 or NaN */
#define fl_exp_neg_short(x) _Generic((x), float: fl_expf_neg_short, default: exp)(x)   /* the softmax rows' */
/* a x b + c rounded once where the level has FMA; without it (x86-64-v2) a float one is the
 * exact product plus c in float64, then rounded to float (nearly always the same number), and a
 * double one is rounded twice (no slow software fma) */
#ifdef __FMA__
#define fl_fma(a, b, c) _Generic((a), float: __builtin_fmaf, default: __builtin_fma)(a, b, c)
#else
FL_INLINE float fl_fmaf_wide(float a, float b, float c) { return (float) ((double) a * b + c); }
FL_INLINE double fl_fma_twice(double a, double b, double c) { return a * b + c; }
#define fl_fma(a, b, c) _Generic((a), float: fl_fmaf_wide, default: fl_fma_twice)(a, b, c)
#endif
#define fl_log(x) _Generic((x), float: fl_logf, default: log)(x)
#define fl_log_normal(x) _Generic((x), float: fl_logf_normal, default: log)(x)   /* x positive, normal */
#define fl_log1p(x) _Generic((x), float: fl_log1pf, default: log1p)(x)
#define fl_times_exp(c, z) _Generic((c), float: fl_times_expf, default: fl_times_exp_double)(c, z)
#define fl_times_exp_minus(c, z) _Generic((c), float: fl_times_expf_minus, default: fl_times_exp_double_minus)(c, z)
#define fl_log1p_from(x, u, inv_u) _Generic((x), float: fl_log1pf_from(x, u, inv_u), default: log1p(x))
#define fl_abs(x) _Generic((x), float: fabsf, default: fabs)(x)
#define fl_tanh(x) _Generic((x), float: tanhf, default: tanh)(x)
#define fl_sqrt(x) _Generic((x), float: sqrtf, default: sqrt)(x)

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
#define FL_LN2 0.69314718055994530941723212145817657L
/* PseudoHuberLoss: from |t| = 2^60 on, sqrt(1 + t^2) is |t| in float and double alike */
#define FL_FAR 0x1p60L
/* torch's clamp of x (1 - x) in BCELoss's gradient: its EPSILON = 1e-12 is a float, so the
 * float64 kernel clamps at 1e-12 rounded to float32 as well (bit for bit torch's gradient) */
#define FL_BCE_EPSILON 0x1.197998p-40L

#endif
