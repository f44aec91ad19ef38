"""Exact sums by group and float bins, for the metrics that fastloss.evaluate keeps beside the loss.

``ExactSums(count)`` adds each value exactly into its group's fixed-size superaccumulator
(exact_sum.h, as the loss kernels' block sums), call after call, and gives every group's
exact state, (scaled, special) as fastloss._exact.ExactSum takes it. Exact sums add in any
order and grouping to the same bits, so a metric summed chunk by chunk is bitwise the metric
of one pass over the whole. Memory: `count` accumulators of about 560 bytes, whatever the
values; the caller bounds `count`.
"""
cimport numpy as cnp
import numpy as np
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from ._reduce cimport exact_state, fl_exact, fl_exact_add, fl_exact_zero

cnp.import_array()


cdef void add_all(const double* values, const Py_ssize_t* groups, Py_ssize_t n, fl_exact* sums) noexcept nogil:
    cdef Py_ssize_t i
    if groups == NULL:
        for i in range(n):
            fl_exact_add(sums, values[i])
    else:
        for i in range(n):
            fl_exact_add(&sums[groups[i]], values[i])


cdef class ExactSums:
    """`count` exact sums kept across calls (a metric's per-class or per-bin sums over the
    chunks of an evaluation): add(values, groups) adds each value into its group's; states()
    gives every group's (scaled, special) pair. Memory: `count` fixed-size accumulators."""
    cdef fl_exact* sums
    cdef readonly Py_ssize_t count

    def __cinit__(self, Py_ssize_t count=1):
        if count < 1:
            raise ValueError(f"count: expected a positive int, got {count}")
        self.sums = <fl_exact*> malloc(count * sizeof(fl_exact))
        if self.sums == NULL:
            raise MemoryError(f"fastloss: could not allocate {count} exact sums")
        self.count = count
        cdef Py_ssize_t k
        for k in range(count):
            fl_exact_zero(&self.sums[k])

    def __dealloc__(self):
        free(self.sums)

    def add(self, values, groups=None):
        """Adds `values` (1-D, any float dtype) into the sums of their `groups` (1-D, each in
        [0, count); None: all into sum 0). A group outside that range is a ValueError."""
        cdef cnp.ndarray[double, ndim=1, mode="c"] v = np.ascontiguousarray(values, np.float64).reshape(-1)
        cdef cnp.ndarray[Py_ssize_t, ndim=1, mode="c"] g
        cdef const Py_ssize_t* gp = NULL
        cdef Py_ssize_t n = v.shape[0]
        if groups is not None:
            g = np.ascontiguousarray(groups, np.intp).reshape(-1)
            if g.shape[0] != n:
                raise ValueError(f"groups: expected {n} values (one per value), got {g.shape[0]}")
            if n and (g.min() < 0 or g.max() >= self.count):
                raise ValueError(f"groups: expected values in [0, {self.count}), got {g.min()} to {g.max()}")
            gp = &g[0] if n else NULL
        if n:
            with nogil:
                add_all(&v[0], gp, n, self.sums)

    def states(self):
        return [exact_state(&self.sums[k]) for k in range(self.count)]


ctypedef fused real:
    float
    double


cdef inline uint32_t order_key(float v) noexcept nogil:
    """The float's bits made monotone in its value (NaN past +inf)."""
    cdef uint32_t bits
    memcpy(&bits, &v, 4)
    return ~bits if bits >> 31 else bits | 0x80000000u


cdef void count_bins(const real* values, const uint8_t* labels, Py_ssize_t n, int shift, int64_t* counts,
                     Py_ssize_t width) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        counts[(labels[i] * width if labels != NULL else 0) + (order_key(<float> values[i]) >> shift)] += 1


def float_bins(const real[::1] values, int shift, int64_t[:, ::1] counts, const uint8_t[::1] labels=None):
    """counts[label, key] += 1 for each value, key its float32 value's monotone bits without the
    `shift` low bits (NaN past +inf); label from `labels` (0 or 1; row 0 without). The bins of a
    value are those of its float32 rounding. No temporaries: a pass over the values."""
    cdef Py_ssize_t n = values.shape[0], width = counts.shape[1]
    if not 0 <= shift < 32 or width != (1 << (32 - shift)):
        raise ValueError(f"counts: expected {1 << (32 - shift)} columns for shift {shift}, got {width}")
    if labels is not None and (labels.shape[0] != n or counts.shape[0] < 2):
        raise ValueError(f"labels: expected {n} labels and two rows of counts")
    if labels is not None and n and np.asarray(labels).max() > 1:
        raise ValueError("labels: expected 0 or 1")
    if n == 0:
        return
    cdef const uint8_t* lp = NULL
    if labels is not None:
        lp = &labels[0]
    with nogil:
        count_bins(&values[0], lp, n, shift, &counts[0, 0], width)
