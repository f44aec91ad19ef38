# The deterministic reduction that every kernel shares.
#
# A kernel splits its n elements into fixed-size blocks (a constant of the kernel, never a
# function of the thread count) and returns one float64 sum per block. Inside a block the
# per-element values go to 16 lanes by position (lane = offset within the block mod 16),
# so the vectoriser adds lane-wise and cannot reassociate; the lanes meet in a fixed
# pairwise tree. Block sums are then added exactly (see run_reduction). The same inputs thus
# give the same bits for any thread count and wherever the arrays sit in memory.
from cython.parallel cimport prange
from libc.math cimport NAN, fabs
from libc.stdlib cimport free, malloc

cdef enum:
    LANES = 16

# One block's work: the sum of the per-element values of elements [start, stop).
ctypedef double (*block_fn)(const void* job, Py_ssize_t start, Py_ssize_t stop) noexcept nogil


cdef inline void lanes_zero(double* acc) noexcept nogil:
    cdef int lane
    for lane in range(LANES):
        acc[lane] = 0.0


cdef inline void lanes_add(double* acc, const double* values, Py_ssize_t m) noexcept nogil:
    """acc[j % 16] += values[j] for j in order (values start at a multiple of 16 within the
    block). The lanes live in a local array while adding: acc might alias values, and
    through memory the adds would not vectorise."""
    cdef double lanes[LANES]
    cdef Py_ssize_t j = 0, full = m - m % LANES
    cdef int lane
    for lane in range(LANES):
        lanes[lane] = acc[lane]
    while j < full:
        for lane in range(LANES):
            lanes[lane] += values[j + lane]
        j += LANES
    for lane in range(m - full):
        lanes[lane] += values[full + lane]
    for lane in range(LANES):
        acc[lane] = lanes[lane]


cdef inline double lanes_total(const double* acc) noexcept nogil:
    cdef double t8[8]
    cdef double t4[4]
    cdef int k
    for k in range(8):
        t8[k] = acc[k] + acc[k + 8]
    for k in range(4):
        t4[k] = t8[k] + t8[k + 4]
    return (t4[0] + t4[2]) + (t4[1] + t4[3])


cdef inline Py_ssize_t num_blocks(Py_ssize_t n, Py_ssize_t block_len) noexcept nogil:
    return (n + block_len - 1) // block_len


cdef inline void run_blocks(block_fn fn, const void* job, Py_ssize_t n, Py_ssize_t block_len,
                            int num_threads, double* sums) noexcept nogil:
    """sums[b] = fn over block b of [0, n), for the num_blocks(n, block_len) blocks, in parallel."""
    cdef Py_ssize_t nblocks = num_blocks(n, block_len), b
    if num_threads > 1 and nblocks > 1:
        for b in prange(nblocks, num_threads=min(num_threads, nblocks), schedule="static"):
            sums[b] = fn(job, b * block_len, min(n, (b + 1) * block_len))
    else:
        for b in range(nblocks):
            sums[b] = fn(job, b * block_len, min(n, (b + 1) * block_len))


# Exact sums of the block sums. The total is the block sums' exact sum rounded once (as
# math.fsum), which does not depend on their order or grouping: a loss evaluated in chunks
# that start on block boundaries, each chunk's exact sum kept as an expansion (a few
# nonoverlapping doubles whose sum is exact, Shewchuk's), combines to the same bits as one
# call on the whole, in any order and any tree.

cdef enum:
    EXPANSION_MAX = 64   # doubles in an expansion: at most ~40 (2098 binary exponents / 53)


cdef inline int expansion_add(double* p, int count, double x) noexcept nogil:
    """Add the finite x exactly to the expansion p[0:count] (increasing magnitude); returns
    the new count."""
    cdef int i, j = 0
    cdef double y, hi, lo, t
    for i in range(count):
        y = p[i]
        if fabs(x) < fabs(y):
            t = x
            x = y
            y = t
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            p[j] = lo
            j += 1
        x = hi
    p[j] = x
    return j + 1


cdef inline double expansion_round(const double* p, int count) noexcept nogil:
    """The expansion's value rounded once to the nearest double, ties to even (math.fsum's
    last step)."""
    cdef double hi = 0.0, lo = 0.0, x, y
    cdef int n = count
    if n > 0:
        n -= 1
        hi = p[n]
        while n > 0:
            x = hi
            n -= 1
            y = p[n]
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0 and p[n - 1] < 0) or (lo > 0 and p[n - 1] > 0)):
            y = lo * 2
            x = hi + y
            if y == x - hi:
                hi = x
    return hi


cdef inline int expansion_push(double* p, int count, double* special, double v) noexcept nogil:
    """Add v to an exact sum kept as the expansion p[0:count], with the infinities and NaNs
    added plainly into special[0]; returns the new count: -1 once a special value has come
    (the sum is then special[0], see expansion_result)."""
    if v - v != 0:   # inf or nan
        special[0] += v
        return -1
    if v != 0 and count >= 0:
        return expansion_add(p, count, v)
    return count


cdef inline double expansion_result(const double* p, int count, double special) noexcept nogil:
    """The sum expansion_push kept: rounded once, or the special value."""
    return special if count < 0 else expansion_round(p, count)


cdef inline double exact_sum(const double* values, Py_ssize_t n, double* expansion, int* count) noexcept nogil:
    """The correctly rounded sum of values, and its expansion into `expansion` (EXPANSION_MAX
    doubles, or NULL) with its length in count[0]. Infinities and NaNs are added plainly and
    are the result (count -1): inf, -inf, or NaN."""
    cdef double local[EXPANSION_MAX]
    cdef double* p = expansion if expansion != NULL else local
    cdef double special = 0.0
    cdef int c = 0
    cdef Py_ssize_t i
    for i in range(n):
        c = expansion_push(p, c, &special, values[i])
    count[0] = c
    return expansion_result(p, c, special)


cdef inline double run_reduction(block_fn fn, const void* job, Py_ssize_t n, Py_ssize_t block_len,
                                 int num_threads, double* expansion, int* count) noexcept nogil:
    """The exact sum of fn over the blocks of [0, n) (see run_blocks and exact_sum): the block
    sums on the stack for up to 64 blocks (a small call allocates nothing), else in malloc'ed
    scratch (NaN, count -2, if that fails)."""
    cdef double local[64]
    cdef Py_ssize_t nblocks = num_blocks(n, block_len)
    cdef double* sums = &local[0]
    cdef double total
    if nblocks > 64:
        sums = <double*> malloc(nblocks * sizeof(double))
    if sums == NULL:
        count[0] = -2
        return NAN
    run_blocks(fn, job, n, block_len, num_threads, sums)
    total = exact_sum(sums, nblocks, expansion, count)
    if nblocks > 64:
        free(sums)
    return total


cdef inline object reduction_result(double total, const double* expansion, int count, bint partial):
    """What a kernel entry returns: the total, or with `partial` the exact expansion of it as
    a tuple of floats (for Criterion.partial)."""
    if count == -2:
        raise MemoryError("fastloss: could not allocate the block sums")
    if not partial:
        return total
    if count < 0:
        return (total,)
    return tuple([expansion[i] for i in range(count)])
