"""The worker pool that every kernel's blocks run on (see pool.h for how it works).

Built once, for the baseline CPU, and shared by the kernel modules of every CPU level: one
set of worker threads per process. Its thread limit is a C symbol as well
(fastloss_pool_get_num_threads / fastloss_pool_set_num_threads), so that threadpoolctl can
read and limit it (fastloss._threads registers the controller)."""

cdef extern from "pool.h" nogil:
    int FL_POOL_THREADS
    int fl_pool_init()
    void fl_pool_run(fl_task fn, void* ctx, Py_ssize_t nblocks, int threads)
    int fl_pool_slot()
    int fl_pool_workers()
    unsigned long long fl_pool_jobs()
    int fastloss_pool_get_num_threads()
    void fastloss_pool_set_num_threads(int n)


cdef void fl_run(fl_task fn, void* ctx, Py_ssize_t nblocks, int threads) noexcept nogil:
    fl_pool_run(fn, ctx, nblocks, threads)


cdef int fl_thread_id() noexcept nogil:
    return fl_pool_slot()


cdef double work_per_thread = 15000.0    # ns: a few times a spinning worker's join, about a sleeping one's wake-up


cdef double fl_work_per_thread() noexcept nogil:
    return work_per_thread


if fl_pool_init() != 0:
    raise ImportError("fastloss: could not register the worker pool's fork handler")

THREADED = bool(FL_POOL_THREADS)   # False: built without POSIX threads, every job runs on the caller


def get_limit():
    """The thread limit set through set_limit (or threadpoolctl), 0 if none was set."""
    return fastloss_pool_get_num_threads()


def set_limit(int n):
    fastloss_pool_set_num_threads(n)


def get_work_per_thread():
    return work_per_thread


def set_work_per_thread(double ns):
    """The cost model's price of one more thread, in ns of estimated work (0: every call that
    has the blocks takes all the threads it may; the tests use it on small inputs)."""
    global work_per_thread
    work_per_thread = max(0.0, ns)


def workers():
    """How many worker threads the pool has started (they start on first need)."""
    return fl_pool_workers()


def jobs():
    """How many jobs have run on more than one thread since the pool was loaded."""
    return fl_pool_jobs()
