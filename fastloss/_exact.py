"""Exact float64 sums as Python values: the totals and divisors of partial states.

Every finite double is an integer multiple of 2**-1074, so an exact sum of doubles is kept
as that integer (`scaled`, a Python int: exact at any size) and the plain sum of the
infinities and NaNs that came (`special`, 0.0 when none did), as the kernels' fixed-size
accumulators keep it (fastloss/_kernels/exact_sum.h hands it over in this form). Adding two
is exact, so states add in any order and grouping to the same bits; `value()` rounds once.
"""
import math
from collections import namedtuple

SCALE_BITS = 1074   # the smallest double is 2**-1074
_UNIT = 1 << SCALE_BITS


class ExactSum(namedtuple("ExactSum", ["scaled", "special"])):
    """The exact sum scaled / 2**1074, unless special (inf or NaN) is not 0."""
    __slots__ = ()

    def __add__(self, other):
        return ExactSum(self.scaled + other.scaled, self.special + other.special)

    def value(self):
        """The sum rounded once to the nearest double (ties to even, as math.fsum): an int
        divided by an int is correctly rounded in Python; beyond the double range +-inf."""
        if self.special != 0.0 or self.special != self.special:
            return self.special
        try:
            return self.scaled / _UNIT
        except OverflowError:
            return math.inf if self.scaled > 0 else -math.inf


def exact_sum(values):
    """The ExactSum of an iterable of floats."""
    scaled, special = 0, 0.0
    for v in values:
        v = float(v)
        if math.isfinite(v):
            numerator, denominator = v.as_integer_ratio()   # denominator: a power of 2 <= 2**1074
            scaled += numerator * (_UNIT // denominator)
        else:
            special += v
    return ExactSum(scaled, special)
