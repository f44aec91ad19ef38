# The deterministic reduction that every kernel shares.
#
# A kernel splits its n elements into fixed-size blocks (a constant of the kernel, never a
# function of the thread count) and returns one float64 sum per block. Inside a block the
# per-element values go to 16 lanes by position (lane = offset within the block mod 16),
# so the vectoriser adds lane-wise and cannot reassociate; the lanes meet in a fixed
# pairwise tree. Block sums are then added in block order. The same inputs thus give
# the same bits for any thread count and wherever the arrays sit in memory.
from cython.parallel cimport prange

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


cdef inline double run_blocks(block_fn fn, const void* job, Py_ssize_t n, Py_ssize_t block_len,
                              int num_threads, double* sums) noexcept nogil:
    """Sum of fn over the blocks of [0, n): blocks in parallel, block sums (scratch `sums`,
    num_blocks(n, block_len) of them) added in block order."""
    cdef Py_ssize_t nblocks = num_blocks(n, block_len), b
    cdef double total = 0.0
    if num_threads > 1 and nblocks > 1:
        for b in prange(nblocks, num_threads=min(num_threads, nblocks), schedule="static"):
            sums[b] = fn(job, b * block_len, min(n, (b + 1) * block_len))
    else:
        for b in range(nblocks):
            sums[b] = fn(job, b * block_len, min(n, (b + 1) * block_len))
    for b in range(nblocks):
        total += sums[b]
    return total
