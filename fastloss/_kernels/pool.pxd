# The worker pool (pool.h), one per process, that every kernel module's blocks run on.

# One block of a job: the kernel's context and the block's number.
ctypedef void (*fl_task)(void* ctx, Py_ssize_t block) noexcept nogil

# Run fn(ctx, b) for b in [0, nblocks) on up to `threads` threads, the calling thread claiming
# blocks too; returns when all have finished.
cdef void fl_run(fl_task fn, void* ctx, Py_ssize_t nblocks, int threads) noexcept nogil

# The running thread's slot in the current job, 0 to threads - 1 (0 outside a job): which of
# the per-thread scratch buffers, allocated for `threads` threads before the job, it uses.
cdef int fl_thread_id() noexcept nogil

# Nanoseconds of estimated work that pay for one more thread (the cost model in _reduce.pxd).
cdef double fl_work_per_thread() noexcept nogil
