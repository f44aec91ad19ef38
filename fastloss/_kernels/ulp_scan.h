/* Test support: the error of simd_math.h's float functions over a range of float32 bit
 * patterns, in ulp of the correctly rounded result, against float64 libm (libmvec's when
 * built with it: its float64 error is ~2^-29 of a float ulp). Used by tests/test_simd_math.py,
 * which scans all 2^32 patterns at each CPU level. */
#include "simd_math.h"

enum { FL_SCAN_EXP, FL_SCAN_LOG, FL_SCAN_LOG1P, FL_SCAN_EXP_NEG, FL_SCAN_LOG1P_FROM, FL_SCAN_EXP_NEG_SHORT,
       FL_SCAN_TIMES_EXP, FL_SCAN_TIMES_EXP_MINUS, FL_SCAN_CHUNK = 1024 };

/* The worst error over bit patterns [start, stop), in ulp; *worst_bits gets its input and *over
 * the count of inputs with an error above `limit`. FL_SCAN_TIMES_EXP scans fl_times_expf(c, z)
 * over the patterns z for the one coefficient c (_MINUS: fl_times_expf_minus, c e^-z);
 * FL_SCAN_LOG1P_FROM, fl_log1pf_from(x, 1 + x, 1 / (1 + x)) (meant for x in [0, 1]);
 * FL_SCAN_EXP_NEG_SHORT, fl_expf_neg_short against exp (meant for x <= 0). A result
 * that should be NaN must be NaN, one that rounds to +-inf must be exactly that: anything else
 * counts as 1e9 ulp (fl_times_expf's overflow threshold aside, below). */
static double fl_ulp_scan(int which, unsigned long long start, unsigned long long stop, double limit,
                          float c, uint32_t* worst_bits, long long* over) {
    float x[FL_SCAN_CHUNK], got[FL_SCAN_CHUNK];
    double want[FL_SCAN_CHUNK], err[FL_SCAN_CHUNK], worst = -1.0;
    *over = 0;
    *worst_bits = (uint32_t) start;
    for (unsigned long long base = start; base < stop; base += FL_SCAN_CHUNK) {
        int n = stop - base < FL_SCAN_CHUNK ? (int) (stop - base) : FL_SCAN_CHUNK;
        for (int i = 0; i < n; i++)
            x[i] = fl_from_bits((uint32_t) (base + i));
        /* The reference is called on ordinary arguments only (a special value sends a whole
         * vector of libmvec down its scalar path), placed in want first (in the call's loop,
         * gcc would turn log(ok ? x : 1) into ok ? log(x) : 0); the specials' results are IEEE's. */
        if (which == FL_SCAN_EXP || which == FL_SCAN_EXP_NEG_SHORT) {   /* (the short one: for x <= 0) */
            if (which == FL_SCAN_EXP)
                for (int i = 0; i < n; i++) got[i] = fl_expf(x[i]);
            else
                for (int i = 0; i < n; i++) got[i] = fl_expf_neg_short(x[i]);
            for (int i = 0; i < n; i++)   /* exp(-110) and exp(100) round to float 0 and inf */
                want[i] = x[i] != x[i] ? 0.0 : x[i] < -110.0f ? -110.0 : x[i] > 100.0f ? 100.0 : x[i];
            for (int i = 0; i < n; i++) want[i] = exp(want[i]);
            for (int i = 0; i < n; i++) want[i] = x[i] != x[i] ? NAN : want[i];
        } else if (which == FL_SCAN_LOG) {
            for (int i = 0; i < n; i++) got[i] = fl_logf(x[i]);
            for (int i = 0; i < n; i++) want[i] = (x[i] > 0.0f) & (x[i] < INFINITY) ? (double) x[i] : 1.0;
            for (int i = 0; i < n; i++) want[i] = log(want[i]);
            for (int i = 0; i < n; i++)
                want[i] = x[i] == 0.0f ? -INFINITY : x[i] == INFINITY ? INFINITY : x[i] > 0.0f ? want[i] : NAN;
        } else if (which >= FL_SCAN_TIMES_EXP) {   /* c e^z in float64; a finite c e^+-300 is 0 or inf */
            float sign = which == FL_SCAN_TIMES_EXP ? 1.0f : -1.0f;
            if (sign > 0.0f)
                for (int i = 0; i < n; i++) got[i] = fl_times_expf(c, x[i]);
            else
                for (int i = 0; i < n; i++) got[i] = fl_times_expf_minus(c, x[i]);
            for (int i = 0; i < n; i++) {   /* (+-inf stay: inf e^-inf is NaN) */
                float z = sign * x[i];
                want[i] = z != z ? 0.0 : z < -300.0f ? (z == -INFINITY ? -INFINITY : -300.0)
                                        : z > 300.0f ? (z == INFINITY ? INFINITY : 300.0) : z;
            }
            for (int i = 0; i < n; i++) want[i] = exp(want[i]);
            for (int i = 0; i < n; i++)   /* 0 e^z is 0 but at a NaN z */
                want[i] = x[i] != x[i] ? NAN : c == 0.0f ? 0.0 : (double) c * want[i];
        } else if (which == FL_SCAN_EXP_NEG) {   /* against fl_expf: 0 ulp where they agree */
            for (int i = 0; i < n; i++) got[i] = fl_expf_neg(x[i]);
            for (int i = 0; i < n; i++) want[i] = fl_expf(x[i]);
        } else {   /* log1p, and fl_log1pf_from given 1 + x and its reciprocal as its callers give them */
            if (which == FL_SCAN_LOG1P_FROM)
                for (int i = 0; i < n; i++) got[i] = fl_log1pf_from(x[i], 1.0f + x[i], 1.0f / (1.0f + x[i]));
            else
                for (int i = 0; i < n; i++) got[i] = fl_log1pf(x[i]);
            for (int i = 0; i < n; i++) want[i] = (x[i] > -1.0f) & (x[i] < INFINITY) ? (double) x[i] : 0.0;
            for (int i = 0; i < n; i++) want[i] = log1p(want[i]);
            for (int i = 0; i < n; i++)
                want[i] = x[i] == -1.0f ? -INFINITY : x[i] == INFINITY ? INFINITY : x[i] > -1.0f ? want[i] : NAN;
        }
        for (int i = 0; i < n; i++) {   /* branch-free, so that it vectorises */
            float rounded = (float) want[i];
            uint32_t biased = (fl_bits(rounded) >> 23) & 0xff;   /* the ulp of the rounded result, */
            uint64_t ulp_bits = (uint64_t) ((biased > 1u ? biased : 1u) + 1023u - 150u) << 52;   /* 2^(max(biased, 1) - 150) */
            double ulp;
            __builtin_memcpy(&ulp, &ulp_bits, 8);   /* (in float64: no per-lane shift, which SSE lacks) */
            double off = __builtin_fabs((double) got[i] - want[i]) / ulp;
            int exact_only = (want[i] != want[i]) | (biased == 0xff);   /* NaN, or rounds to +-inf */
            int same = (got[i] == rounded) | ((got[i] != got[i]) & (want[i] != want[i]));
            err[i] = exact_only ? (same ? 0.0 : 1e9) : ((got[i] != got[i]) ? 1e9 : off);
        }
        /* fl_times_expf rounds i e^r before it scales: at the overflow threshold it may give the
         * largest float where the result rounds to inf, or inf where it rounds to the largest
         * float; that error is measured in that float's ulp, inf counting as 2^128. (A loop of
         * its own, in float64 comparisons only: beside the 32-bit ones above they kept gcc from
         * vectorising the loop, and every scan ran scalar at half the speed.) */
        if (which >= FL_SCAN_TIMES_EXP)
            for (int i = 0; i < n; i++) {
                double g = (double) got[i], w = want[i], rounded = (double) (float) want[i];
                double capped = g > 0x1.fffffep127f ? (double) 0x1p128L : g;   /* (L: see FL_LN2) */
                int edge = ((rounded > 0x1.fffffep127f) | (g > 0x1.fffffep127f)) & (w > 0x1p127) & (w < INFINITY)
                           & (g >= 0x1p127) & (g != rounded);
                err[i] = edge ? __builtin_fabs(capped - w) / 0x1p104 : err[i];
            }
        /* errors are >= 0, so their bits order as int64s do: an integer max vectorises */
        int64_t chunk_worst = -1, chunk_over = 0, limit_bits, bits;
        __builtin_memcpy(&limit_bits, &limit, 8);
        for (int i = 0; i < n; i++) {
            __builtin_memcpy(&bits, &err[i], 8);
            chunk_over += bits > limit_bits;
            chunk_worst = bits > chunk_worst ? bits : chunk_worst;
        }
        *over += chunk_over;
        double chunk_max;
        __builtin_memcpy(&chunk_max, &chunk_worst, 8);
        for (int i = 0; chunk_max > worst && i < n; i++)   /* where, only when it is a new worst */
            if (err[i] == chunk_max) {
                worst = err[i];
                *worst_bits = (uint32_t) (base + i);
            }
    }
    return worst;
}
