/* Exact sums of doubles in a fixed-size superaccumulator.
 *
 * Every finite double is an integer multiple of 2^-1074 (the smallest subnormal) below
 * 2^1024, so a sum of doubles is an integer times 2^-1074. fl_exact keeps that integer in
 * two's complement, as 68 signed 64-bit limbs of 32-bit digits: limb k weighs 2^(32 k - 1074).
 * Limbs 0..65 hold every bit a double can have (its mantissa spans at most 3 of them), 66..67
 * the carries of up to 2^63 additions of the largest double. The size is a constant, so no
 * input (values, count, order) can make it grow: that is the point of the design. The total
 * is exact, hence independent of the order and grouping of the additions, which is what
 * makes chunked evaluation (partial states added in Python, fastloss/_exact.py) bitwise
 * equal to one call.
 *
 * An addition adds a digit of at most 2^32 to each of 3 limbs; after FL_EXACT_CARRY_EVERY
 * additions the carries are propagated (each limb back into [0, 2^32), the top one signed),
 * long before a limb could overflow (2^30 additions of < 2^32 stay below 2^62).
 * Infinities and NaNs are added plainly into `special` (an inf and a -inf make NaN, as in
 * any order of a float sum), which then is the result.
 */
#ifndef FASTLOSS_EXACT_SUM_H
#define FASTLOSS_EXACT_SUM_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#define FL_EXACT_LIMBS 68
#define FL_EXACT_BIAS 1074              /* bit 0 of limb 0 weighs 2^-1074 */
#define FL_EXACT_CARRY_EVERY (1 << 30)  /* additions between carry propagations */

typedef struct {
    int64_t limb[FL_EXACT_LIMBS];
    int lo, hi;         /* limbs outside [lo, hi] are 0: the loops below touch only these */
    int64_t pending;    /* additions since the carries were last propagated */
    int64_t adds;       /* nonzero finite values added in all; with one, it is the sum: */
    double single;      /* that value (a one-block call rounds nothing) */
    double special;     /* the plain sum of the infinities and NaNs (0 if none came) */
} fl_exact;

static inline void fl_exact_zero(fl_exact* a) {
    memset(a, 0, sizeof(fl_exact));
    a->lo = FL_EXACT_LIMBS;
    a->hi = -1;
}

/* Propagate the carries: limbs below the top into [0, 2^32), the top limb keeps the sign (a
 * negative total's carries run up to it). Only limbs lo.. are visited, up to the last carry. */
static inline void fl_exact_normalize(fl_exact* a) {
    int k;
    for (k = a->lo; k <= a->hi && k < FL_EXACT_LIMBS - 1; k++) {
        int64_t carry = a->limb[k] >> 32;           /* floor division by 2^32 */
        a->limb[k] -= (int64_t)((uint64_t)carry << 32);
        a->limb[k + 1] += carry;
        if (carry != 0 && k + 1 > a->hi)
            a->hi = k + 1;
    }
    a->pending = 0;
}

static inline void fl_exact_add(fl_exact* a, double x) {
    uint64_t bits, mantissa, rest;
    int exponent, position, k, shift;
    memcpy(&bits, &x, sizeof bits);
    exponent = (int)((bits >> 52) & 0x7ff);
    if (exponent == 0x7ff) {            /* inf or NaN */
        a->special += x;
        return;
    }
    mantissa = bits & ((UINT64_C(1) << 52) - 1);
    if (exponent == 0) {
        if (mantissa == 0)              /* +-0 adds nothing */
            return;
        position = 0;                   /* subnormal: mantissa x 2^-1074 */
    } else {
        mantissa |= UINT64_C(1) << 52;
        position = exponent - 1;        /* mantissa x 2^(exponent - 1075) */
    }
    a->adds += 1;
    a->single = x;
    if (a->pending >= FL_EXACT_CARRY_EVERY)
        fl_exact_normalize(a);
    k = position >> 5;
    shift = position & 31;
    if (k < a->lo)
        a->lo = k;
    if (k + 2 > a->hi)
        a->hi = k + 2;
    /* the mantissa shifted by `shift` as three 32-bit digits of limbs k, k + 1, k + 2 */
    rest = mantissa >> (32 - shift);
    if ((int64_t)bits < 0) {
        a->limb[k] -= (int64_t)((mantissa << shift) & 0xffffffffu);
        a->limb[k + 1] -= (int64_t)(rest & 0xffffffffu);
        a->limb[k + 2] -= (int64_t)(rest >> 32);
    } else {
        a->limb[k] += (int64_t)((mantissa << shift) & 0xffffffffu);
        a->limb[k + 1] += (int64_t)(rest & 0xffffffffu);
        a->limb[k + 2] += (int64_t)(rest >> 32);
    }
    a->pending += 1;
}

/* The exact total rounded once to the nearest double, ties to even (as math.fsum); beyond
 * the double range +-inf; the special sum when an inf or NaN came. */
static inline double fl_exact_round(const fl_exact* acc) {
    fl_exact a;
    int k, h, negative, sticky = 0, shift, nbits;
    unsigned __int128 window, kept, rest, half;
    double result;
    if (acc->special != 0.0 || acc->special != acc->special)
        return acc->special;
    if (acc->adds <= 1)
        return acc->adds ? acc->single : 0.0;
    a = *acc;
    fl_exact_normalize(&a);
    negative = a.limb[FL_EXACT_LIMBS - 1] < 0;
    if (negative) {                     /* round |total| (rounding to nearest is symmetric) */
        for (k = a.lo; k < FL_EXACT_LIMBS; k++)
            a.limb[k] = -a.limb[k];
        a.hi = FL_EXACT_LIMBS - 1;
        fl_exact_normalize(&a);
    }
    for (h = a.hi; h >= a.lo && a.limb[h] == 0; h--)
        ;
    if (h < a.lo)
        return 0.0;
    /* the top three digits (96 bits) and whether anything below them is nonzero */
    window = 0;
    for (k = h; k >= h - 2; k--)
        window = (window << 32) | (unsigned __int128)(uint64_t)(k >= 0 ? a.limb[k] : 0);
    for (k = h - 3; k >= a.lo; k--)
        sticky |= a.limb[k] != 0;
    nbits = 128 - (int)__builtin_clzll((uint64_t)(window >> 64)) ;   /* window >> 64 = limb h, not 0 */
    shift = nbits - 53;
    if (shift <= 0) {
        /* at most 53 bits, all present: h < 2 here, so the window is the whole total */
        kept = window;
        shift = 0;
    } else {
        kept = window >> shift;
        rest = window & (((unsigned __int128)1 << shift) - 1);
        half = (unsigned __int128)1 << (shift - 1);
        if (rest > half || (rest == half && (sticky || (kept & 1))))
            kept += 1;
    }
    /* kept <= 2^53 is exact as a double; ldexp is exact for a representable result (the
     * subnormal totals are all bits present, shift 0) and gives inf beyond the range */
    result = ldexp((double)(uint64_t)kept, 32 * (h - 2) - FL_EXACT_BIAS + shift);
    return negative ? -result : result;
}

/* The normalized total as 4 * FL_EXACT_LIMBS little-endian bytes of two's complement
 * (digits 0..66 unsigned, the top limb signed: it fits 32 bits), for int.from_bytes. */
static inline void fl_exact_bytes(const fl_exact* acc, unsigned char* out) {
    fl_exact a = *acc;
    int k, j;
    fl_exact_normalize(&a);
    for (k = 0; k < FL_EXACT_LIMBS; k++) {
        uint32_t digit = (uint32_t)(uint64_t)a.limb[k];
        for (j = 0; j < 4; j++)
            out[4 * k + j] = (unsigned char)(digit >> (8 * j));
    }
}

#endif
