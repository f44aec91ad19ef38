"""Exact float64 sums as Python values: the totals and divisors of partial states.

Every finite double is an integer multiple of 2**-1074, so an exact sum of doubles is kept
as that integer (`scaled`, a Python int: exact at any size) and the plain sum of the
infinities and NaNs that came (`special`, 0.0 when none did), as the kernels' fixed-size
accumulators keep it (fastloss/_kernels/exact_sum.h hands it over in this form). Adding two
is exact, so states add in any order and grouping to the same bits; `value()` rounds once.
"""
import functools
import math

SCALE_BITS = 1074   # the smallest double is 2**-1074
_UNIT = 1 << SCALE_BITS
_LOW = _UNIT - 1
_EXACT_INTS = 1 << 53


class ExactSum:
    """The exact sum scaled / 2**1074, unless special (inf or NaN) is not 0."""
    __slots__ = ("scaled", "special", "_value")

    def __init__(self, scaled, special, value=None):
        self.scaled, self.special, self._value = scaled, special, value

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def of_int(n):
        """The exact sum that is the integer n (a count of rows, say); shared, being immutable."""
        return ExactSum(int(n) << SCALE_BITS, 0.0, float(n))

    def __add__(self, other):
        return ExactSum(self.scaled + other.scaled, self.special + other.special)

    def __eq__(self, other):
        if not isinstance(other, ExactSum):
            return NotImplemented
        both_nan = self.special != self.special and other.special != other.special
        return self.scaled == other.scaled and (self.special == other.special or both_nan)

    def __hash__(self):
        return hash(self.scaled)

    def __reduce__(self):   # pickled: dask ships partial states between processes
        return ExactSum, (self.scaled, self.special, self._value)

    def __repr__(self):
        return f"ExactSum({self.value()!r})"

    def value(self):
        """The sum rounded once to the nearest double (ties to even, as math.fsum): an int
        divided by an int is correctly rounded in Python; beyond the double range +-inf."""
        if self._value is None:
            self._value = self._round()
        return self._value

    def _round(self):
        if self.special != 0.0 or self.special != self.special:
            return self.special
        whole = self.scaled >> SCALE_BITS
        if -_EXACT_INTS <= whole <= _EXACT_INTS and not self.scaled & _LOW:   # an integer (a count)
            return float(whole)
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
            scaled += numerator << (SCALE_BITS - denominator.bit_length() + 1)
        else:
            special += v
    return ExactSum(scaled, special)
