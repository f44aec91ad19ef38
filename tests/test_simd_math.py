"""The float32 exp, log and log1p of simd_math.h, which the kernels inline at full SIMD width,
and its c e^z (fl_times_expf, the log-link losses' y e^-x).

Every one of the 2^32 float32 inputs is checked against float64 libm at the CPU level the
kernels run at here: within 2 ulp of the correctly rounded result, and IEEE's special values
exactly (NaN, 0, +-inf). The scan runs in the kernel module itself (ulp_scan.h), vectorised as
the kernels are: about 3 s per function at AVX-512, 40-50 s on a 2-core Zen 1. That is with
FASTLOSS_SCAN=all (tools/full_check.sh sets it, at every CPU level); without it, the long ranges
are scanned in windows of 2^16 consecutive inputs, one in every 16 (eight in every binade, so
every exponent and sign), which keeps README's test command within CI's budget. The short
ranges (the over- and underflow edges, the checks that the scan sees errors) are whole either way.
"""
import os
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fastloss import _kernels

FUNCTIONS = ("exp", "log", "log1p")
ALL = 1 << 32
SAMPLE = 1 if os.environ.get("FASTLOSS_SCAN") == "all" else 16
WINDOW = 1 << 16


def as_float(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def bits_of(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def scan(function, start=0, stop=ALL, limit=2.0, parts=16, c=1.0):
    """(worst ulp, its input, count above limit) over [start, stop) (sampled as the module's
    docstring says), on two threads (c: the coefficient of "times_exp")."""
    if SAMPLE > 1 and stop - start > WINDOW * SAMPLE * parts:   # a window in every SAMPLE
        ranges = [(a, min(a + WINDOW, stop)) for a in range(start, stop, WINDOW * SAMPLE)]
    else:
        step = -(-(stop - start) // parts)
        ranges = [(a, min(a + step, stop)) for a in range(start, stop, step)]
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda r: _kernels.pointwise.ulp_scan(function, *r, limit, c), ranges))
    worst, bits, _ = max(results)
    return worst, as_float(bits), sum(r[2] for r in results)


@pytest.mark.exhaustive
@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_float32_input_within_2_ulp(function):
    worst, at, over = scan(function)
    assert over == 0 and worst <= 2.0, f"{function} at {_kernels.LEVEL}: {worst:.3f} ulp at {at!r}, {over} over 2"


@pytest.mark.exhaustive
def test_exp_of_nonpositive_inputs_is_exp():
    # fl_expf_neg (the softmax's exp(z - max), exp(-|x|)) gives fl_expf's bits over its whole
    # domain: every x <= 0, -0 and -inf, and every NaN (the patterns from +NaN up to 2^32)
    worst, at, over = scan("exp_neg", bits_of(np.inf) + 1, ALL, limit=0.0)
    assert worst == 0.0 and over == 0, f"exp_neg at {_kernels.LEVEL}: {worst} ulp from exp at {at!r}"
    for x in (0.0, -87.5, -103.9, -104.0, -1e30):   # and where the ranges end, each alone
        assert _kernels.pointwise.ulp_scan("exp_neg", bits_of(x), bits_of(x) + 1, 0.0)[0] == 0.0


@pytest.mark.exhaustive
def test_exp_neg_short_of_every_nonpositive_input_within_2_ulp():
    # fl_expf_neg_short (the softmax rows' exp(z - max): 90% correctly rounded, where fl_expf
    # keeps the bits its reduction loses for 97%) over every x <= 0, -0 and -inf, and every NaN
    worst, at, over = scan("exp_neg_short", bits_of(np.inf) + 1, ALL)
    assert over == 0 and worst <= 2.0, f"exp_neg_short at {_kernels.LEVEL}: {worst:.3f} ulp at {at!r}"
    assert _kernels.pointwise.ulp_scan("exp_neg_short", 0, 1, 0.0)[0] == 0.0   # exp(+0) = 1


@pytest.mark.exhaustive
def test_log1p_from_of_every_input_in_0_1_within_1_5_ulp():
    # fl_log1pf_from(e, 1 + e, 1 / (1 + e)), the softplus of every logistic loss (e = exp(-|x|)
    # in [0, 1]): its exact e ln2_hi + r and one rounding of the rest keep it within 1.5 ulp (1.31
    # measured, near 1/3; 93% correctly rounded), and every NaN passes
    worst, at, over = scan("log1p_from", 0, bits_of(1.0) + 1, limit=1.5)
    assert over == 0 and worst <= 1.5, f"log1p_from at {_kernels.LEVEL}: {worst:.3f} ulp at {at!r}"
    for start, stop in ((bits_of(np.inf) + 1, 1 << 31), ((1 << 31) + bits_of(np.inf) + 1, ALL)):
        worst, at, over = scan("log1p_from", start, stop, limit=0.0, parts=2)
        assert worst == 0.0 and over == 0, f"log1p_from of NaN {at!r}"
    worst, at, over = scan("log1p_from", bits_of(0.5), bits_of(1.0), limit=0.25, parts=2)   # the scan sees errors
    assert 0.25 < worst <= 1.5 and over > 0 and 0.5 <= at < 1.0


def test_the_scan_sees_a_wrong_exp_neg():
    # above 43, 2^(n + 64) overflows: the scan must report that as an error (the guard above
    # would pass a scan that compared nothing)
    worst, at, over = scan("exp_neg", bits_of(44.0), bits_of(45.0), limit=0.0, parts=2)
    assert worst >= 1e9 and over > 0 and 44.0 <= at < 45.0


@pytest.mark.parametrize("function", FUNCTIONS + ("times_exp",))
def test_the_scan_sees_errors(function):
    # the same scan with a limit below what any float function reaches in [1, 2) (~0.5 ulp:
    # rounding alone) counts errors and reports a worst input from the range
    worst, at, over = scan(function, bits_of(1.0), bits_of(2.0), limit=0.25, parts=2, c=1.25)
    assert 0.25 < worst <= 2.0 and over > 0 and 1.0 <= at < 2.0


# inputs whose results IEEE fixes (NaN, 0, +-inf, exact 1) or that sit at the edges of a
# function's ranges (overflow, subnormal results and arguments, the clamp of exp)
SPECIALS = {
    "exp": [np.nan, np.inf, -np.inf, 0.0, -0.0, 89.0, 88.72, 88.73, -87.5, -103.9, -104.0, -200.0, 1e-30],
    "log": [np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1.0, 1e-45, 1e-39, 3.4e38, -1e-45],
    "log1p": [np.nan, np.inf, -np.inf, -1.0, -2.0, 0.0, -0.0, 1e-30, -1e-30, -0.5, 3.4e38, -0.99999994],
}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_special_values(function):
    # one input at a time: a special value alone in its vector, all other lanes unused
    for x in SPECIALS[function]:
        bits = bits_of(x)
        worst, _, over = _kernels.pointwise.ulp_scan(function, bits, bits + 1, 2.0)
        assert over == 0 and worst <= 2.0, (function, x, worst)


# fl_times_expf(c, z) = c e^z, within 1 ulp, scanned over z for one c at a time: every z for
# one c, and for a set of c from the smallest subnormal to the largest float, the z where c e^z
# crosses the largest float, the smallest normal and the smallest subnormal (2^19 patterns
# around each)
TIMES_EXP_C = [2.0 ** -149, 3e-39, 2.0 ** -126, 1e-30, 0.7, 1.25, 1e30, 1e38, float(np.finfo(np.float32).max)]


@pytest.mark.exhaustive
def test_times_exp_of_every_z_within_1_ulp():
    # every z in [-310, 310] (past +-300 the clamp gives the same as at +-300: the special
    # values below check that)
    for start in (0, 1 << 31):
        worst, at, over = scan("times_exp", start, start + bits_of(310.0) + 1, limit=1.0, c=1.25)
        assert over == 0 and worst <= 1.0, f"times_exp(1.25, z) at {_kernels.LEVEL}: {worst:.3f} ulp at z={at!r}"


@pytest.mark.parametrize("function", ["times_exp", "times_exp_minus"])
@pytest.mark.parametrize("c", TIMES_EXP_C)
def test_times_exp_where_it_over_and_underflows(c, function):
    # (times_exp_minus: c e^-z, ExponentialLoss's e^-|x| from the reduction of |x|)
    sign = 1.0 if function == "times_exp" else -1.0
    c = float(np.float32(c))
    big, normal, tiny = (float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny),
                         float(np.finfo(np.float32).smallest_subnormal))
    for edge in (np.log(big / c), np.log(normal / c), np.log(tiny / c), 1.0, -1.0):
        if abs(edge) > 1e-3:
            bits = bits_of(sign * edge)
            worst, at, over = scan(function, bits - (1 << 18), bits + (1 << 18), limit=1.0, parts=2, c=c)
            assert over == 0 and worst <= 1.0, f"{function}({c!r}, z) at {_kernels.LEVEL}: {worst:.3f} ulp at z={at!r}"


@pytest.mark.parametrize("function", ["times_exp", "times_exp_minus"])
@pytest.mark.parametrize("c", [0.0, -0.0, 1e-45, 1.0, 3e38, np.inf, np.nan])
def test_times_exp_special_values(c, function):
    # a zero c gives 0 at every z but NaN (0 e^inf: a zero target contributes nothing), inf
    # and NaN give what c e^z does (inf e^-inf: NaN); the scan's float64 reference says so
    for z in (np.nan, np.inf, -np.inf, 0.0, -0.0, 300.0, -300.0, 1e30, -1e30, 88.72, -103.9):
        bits = bits_of(z)
        worst, _, over = _kernels.pointwise.ulp_scan(function, bits, bits + 1, 1.0, c)
        assert over == 0 and worst <= 1.0, (function, c, z, worst)


def test_bad_range_is_refused():
    with pytest.raises(ValueError, match="stop"):
        _kernels.pointwise.ulp_scan("exp", 0, ALL + 1)
    with pytest.raises(ValueError, match="function: expected"):
        _kernels.pointwise.ulp_scan("sin", 0, 1)
