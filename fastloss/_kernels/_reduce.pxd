# The deterministic reduction that every kernel shares.
#
# A kernel splits its n elements into fixed-size blocks (a constant of the kernel, never a
# function of the thread count) and returns one float64 sum per block. Inside a block the
# per-element values go to 16 lanes by position (lane = offset within the block mod 16),
# so the vectoriser adds lane-wise and cannot reassociate; the lanes meet in a fixed
# pairwise tree. Block sums are then added exactly (see run_reduction). The same inputs thus
# give the same bits for any thread count and wherever the arrays sit in memory.
from cython cimport floating
from libc.stdlib cimport free, malloc

from .pool cimport fl_run, fl_task, fl_thread_id, fl_work_per_thread

cdef enum:
    LANES = 16

# One block's work: the sum of the per-element values of elements [start, stop).
ctypedef double (*block_fn)(const void* job, Py_ssize_t start, Py_ssize_t stop) noexcept nogil


cdef inline void lanes_zero(double* acc) noexcept nogil:
    cdef int lane
    for lane in range(LANES):
        acc[lane] = 0.0


cdef inline void lanes_add(double* acc, const floating* values, Py_ssize_t m) noexcept nogil:
    """acc[j % 16] += values[j] for j in order (values start at a multiple of 16 within the
    block; float values are added as float64). The lanes live in a local array while adding:
    acc might alias values, and through memory the adds would not vectorise."""
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


cdef inline void lanes_add_from(double* acc, const floating* values, Py_ssize_t m, Py_ssize_t phase) noexcept nogil:
    """acc[(phase + j) % 16] += values[j] for j in order: values that start at position
    `phase` within the block (the head up to the next multiple of 16, then lanes_add)."""
    cdef Py_ssize_t j, head = min((LANES - phase % LANES) % LANES, m)
    for j in range(head):
        acc[(phase + j) % LANES] += values[j]
    lanes_add(acc, values + head, m - head)


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


# When more threads pay: the cost model. A kernel estimates its work from the bytes it moves
# and the transcendentals it evaluates per element, and takes one more thread for each
# pool.set_work_per_thread nanoseconds of it (15 µs), up to the threads asked for and its blocks.
# A worker costs microseconds to wake (more when its core is busy with another job), so small
# work stays on the calling thread; the estimate needs to be right within a factor of a few.
cdef inline int threads_for(int requested, Py_ssize_t nblocks, double elements, double bytes_per_element,
                            double transcendentals_per_element) noexcept nogil:
    """How many threads a job of `nblocks` blocks over `elements` elements should use."""
    cdef double ns_per_byte = 0.04               # a thread streams ~25 GB/s
    cdef double ns_per_transcendental = 0.4      # a vector exp or log, per element
    cdef double work = elements * (bytes_per_element * ns_per_byte + transcendentals_per_element * ns_per_transcendental)
    cdef double price = fl_work_per_thread()   # ns of work that pay for one more thread
    cdef double most = min(<double> requested, <double> nblocks)
    if most < 2 or work < 2 * price:
        return 1
    return <int> (most if price == 0 else min(most, work / price))


ctypedef struct BlockRun:
    block_fn fn
    const void* job
    Py_ssize_t n, block_len
    double* sums


cdef inline void run_one_block(void* ctx, Py_ssize_t b) noexcept nogil:
    cdef BlockRun* run = <BlockRun*> ctx
    run.sums[b] = run.fn(run.job, b * run.block_len, min(run.n, (b + 1) * run.block_len))


cdef inline void run_blocks(block_fn fn, const void* job, Py_ssize_t n, Py_ssize_t block_len,
                            int num_threads, double* sums) noexcept nogil:
    """sums[b] = fn over block b of [0, n), for the num_blocks(n, block_len) blocks, on up to
    num_threads threads of the pool."""
    cdef BlockRun run
    run.fn, run.job, run.n, run.block_len, run.sums = fn, job, n, block_len, sums
    fl_run(run_one_block, &run, num_blocks(n, block_len), num_threads)


# Exact sums of the block sums. The total is the block sums' exact sum rounded once (as
# math.fsum), which does not depend on their order or grouping: a loss evaluated in chunks
# that start on block boundaries, each chunk's exact sum kept as a partial state, combines to
# the same bits as one call on the whole, in any order and any tree. The exact sum lives in a
# fixed-size superaccumulator (exact_sum.h): no input can make it grow.

cdef extern from "exact_sum.h" nogil:
    enum:
        FL_EXACT_LIMBS
    ctypedef struct fl_exact:
        double special
    void fl_exact_zero(fl_exact* a)
    void fl_exact_add(fl_exact* a, double x)
    double fl_exact_round(const fl_exact* a)
    void fl_exact_bytes(const fl_exact* a, unsigned char* out)


cdef inline int run_reduction(block_fn fn, const void* job, Py_ssize_t n, Py_ssize_t block_len,
                              int num_threads, fl_exact* total) noexcept nogil:
    """Adds fn over the blocks of [0, n) (see run_blocks) exactly into `total`. The block sums
    sit on the stack for up to 64 blocks (a small call allocates nothing), else in malloc'ed
    scratch; returns -1, before any block has run, when that allocation fails, else 0."""
    cdef double local[64]
    cdef Py_ssize_t nblocks = num_blocks(n, block_len), b
    cdef double* sums = &local[0]
    if nblocks > 64:
        sums = <double*> malloc(nblocks * sizeof(double))
        if sums == NULL:
            return -1
    run_blocks(fn, job, n, block_len, num_threads, sums)
    for b in range(nblocks):
        fl_exact_add(total, sums[b])
    if nblocks > 64:
        free(sums)
    return 0


cdef inline object exact_state(const fl_exact* total):
    """An exact sum as Python values, (scaled, special): the total is scaled / 2**1074 (an
    int, exact), unless special (the plain sum of the infinities and NaNs) is not 0.
    fastloss._exact.ExactSum takes it from here."""
    cdef unsigned char raw[4 * FL_EXACT_LIMBS]
    fl_exact_bytes(total, raw)
    return int.from_bytes((<char*> raw)[:4 * FL_EXACT_LIMBS], "little", signed=True), total.special


cdef inline object reduction_result(int status, const fl_exact* total, bint partial):
    """What a kernel entry returns: the total rounded once, or with `partial` its exact state
    (see exact_state). status -1 (scratch memory ran out) raises MemoryError."""
    if status < 0:
        raise MemoryError("fastloss: could not allocate the block sums")
    if partial:
        return exact_state(total)
    return fl_exact_round(total)
