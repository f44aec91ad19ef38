"""How many threads the kernels use: set_num_threads, get_num_threads, threads().

The default comes from FASTLOSS_NUM_THREADS, else OMP_NUM_THREADS, else every core this
process may run on. Any count is accepted and capped at those cores (get_num_threads shows
the cap): more threads than cores only queue behind each other. `threads(n)` sets the count
for the current context only (a contextvar), so Python threads evaluating in parallel do not
change each other's setting. The global count lives in the worker pool's C symbols, where
threadpoolctl reads and limits it (`threadpool_limits(1)` or `user_api="fastloss"`).

A count is an upper bound: each kernel call takes as many threads as its work pays for
(the cost model in _kernels/_reduce.pxd), and small calls run on the calling thread alone.
"""
import contextlib
import contextvars
import importlib.util
import os

from ._kernels import pool

__all__ = ["set_num_threads", "get_num_threads", "threads"]


def _check(n, name="n"):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}: expected a positive int, got {n!r}")
    return n


def usable_cores():
    """The cores this process may run on (its CPU affinity where the OS has one); 1 where
    fastloss was built without its worker pool (every block then runs on the caller)."""
    if _cores[0] is None:
        if not pool.THREADED:
            _cores[0] = 1
            return 1
        try:
            _cores[0] = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            _cores[0] = os.cpu_count() or 1
    return _cores[0]


def _default():
    for variable in ("FASTLOSS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").split(",")[0].strip()
        if value:
            try:
                return _check(int(value), variable)
            except ValueError:
                raise ValueError(f"{variable}: expected a positive int, got {value!r}") from None
    return usable_cores()


_cores = [None]
_local = contextvars.ContextVar("fastloss_num_threads", default=None)
if hasattr(os, "register_at_fork"):   # a child may have another affinity
    os.register_at_fork(after_in_child=lambda: _cores.__setitem__(0, None))


def _global():
    n = pool.get_limit()
    if n == 0:
        n = _default()
        pool.set_limit(n)
    return n


def get_num_threads():
    """The number of threads a kernel call may use: the count set, capped at the usable cores."""
    n = _local.get() or pool.get_limit() or _global()
    cores = _cores[0] or usable_cores()
    return n if n < cores else cores


def set_num_threads(n):
    """Set the number of threads for every later call (outside `threads()` blocks)."""
    pool.set_limit(_check(n))


@contextlib.contextmanager
def threads(n):
    """`with fastloss.threads(n):` run the calls in the block with n threads."""
    token = _local.set(_check(n))
    try:
        yield
    finally:
        _local.reset(token)


def _register_threadpoolctl():
    """Let threadpoolctl see and limit fastloss's pool, where threadpoolctl is installed."""
    if importlib.util.find_spec("threadpoolctl") is None:
        return
    import threadpoolctl
    if not hasattr(threadpoolctl, "register"):   # before threadpoolctl 3.5
        return

    class FastlossController(threadpoolctl.LibController):
        user_api = internal_api = "fastloss"
        filename_prefixes = ("pool.",)   # fastloss/_kernels/pool.*.so
        check_symbols = ("fastloss_pool_get_num_threads", "fastloss_pool_set_num_threads")

        def get_num_threads(self):
            return min(_global(), usable_cores())

        def set_num_threads(self, num_threads):
            self.dynlib.fastloss_pool_set_num_threads(num_threads)

        def get_version(self):
            from ._version import __version__
            return __version__

    threadpoolctl.register(FastlossController)


_register_threadpoolctl()
