"""Hostile-but-finite values for the exact sums (no torch: subprocesses import this).

Shewchuk's grow-expansion keeps its partials nonoverlapping, but they may sit a few bits
apart: each value below is chosen, among a few candidates near the running top partial, as
the one that leaves the most partials behind. 300 ordinary doubles make 150 partials, 1000 make 500, far
beyond the 64-double scratch the kernels used to write into unchecked.
"""
import math


def grow(partials, x):
    """Shewchuk's grow-expansion (math.fsum's inner loop): partials after adding x."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    partials[i:] = [x]
    return partials


def most_partials(values):
    """The largest expansion grow-expansion holds while adding `values`."""
    partials, most = [], 0
    for v in values:
        most = max(most, len(grow(partials, v)))
    return most


def hostile(n=300, start=1.0):
    """n finite doubles whose running exact sum needs about n / 2 partials."""
    partials, values = [], []
    for _ in range(n):
        top = partials[-1] if partials else start
        best = None
        for k in (1, 2, 3, 5, 7):
            for sign in (1, -1):
                candidate = top + sign * k * math.ulp(top)
                count = len(grow(list(partials), candidate))
                if best is None or count > best[0]:
                    best = (count, candidate)
        values.append(best[1])
        partials = grow(partials, best[1])
    return values


def hostile_blocks(blocks, scale=1.0):
    """One hostile value per block: the sequence repeated (and scaled) to `blocks` values."""
    base = hostile(min(blocks, 1000))   # 1000 values: 500 partials
    return [v * scale for v in (base * (blocks // len(base) + 1))[:blocks]]
