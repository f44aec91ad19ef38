"""How many threads the kernels use: set_num_threads, get_num_threads, threads().

The default comes from FASTLOSS_NUM_THREADS, else OMP_NUM_THREADS, else every core this
process may run on. `threads(n)` sets the count for the current context only (a contextvar),
so Python threads evaluating in parallel do not change each other's setting.
"""
import contextlib
import contextvars
import os

__all__ = ["set_num_threads", "get_num_threads", "threads"]


def _check(n, name="n"):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}: expected a positive int, got {n!r}")
    return n


def _default():
    for variable in ("FASTLOSS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").split(",")[0].strip()
        if value:
            try:
                return _check(int(value), variable)
            except ValueError:
                raise ValueError(f"{variable}: expected a positive int, got {value!r}") from None
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_global = [None]
_local = contextvars.ContextVar("fastloss_num_threads", default=None)


def get_num_threads():
    """The number of threads a kernel call may use."""
    n = _local.get()
    if n is None:
        if _global[0] is None:
            _global[0] = _default()
        n = _global[0]
    return n


def set_num_threads(n):
    """Set the number of threads for every later call (outside `threads()` blocks)."""
    _global[0] = _check(n)


@contextlib.contextmanager
def threads(n):
    """`with fastloss.threads(n):` run the calls in the block with n threads."""
    token = _local.set(_check(n))
    try:
        yield
    finally:
        _local.reset(token)
