"""Gradient memory: a small cache of recently freed large buffers.

A 1e7-element float32 gradient is 40 MB. glibc serves an allocation that large with a fresh
mmap, and the first write to each page of it faults and has the kernel zero the page: at
memory speed that costs as much as the whole fused loss kernel. In a training loop the
gradient of step t is dropped before step t + 1 asks for one of the same size, so, as
torch's CUDA caching allocator does, fastloss keeps the last few freed large buffers and
hands them out again, pages already mapped. A buffer goes back to the cache when the last
array viewing it is collected. The cache holds at most SLOTS buffers and `limit` bytes
(FASTLOSS_CACHE_BYTES, default 1 GiB); `empty_cache()` gives everything back to the system.

A small call's results are made here too, through NumPy's C API: its gradient (`empty`) and
its loss scalar (`loss_scalar`), each several times faster than np.empty and NumPy's scalar
constructor at the 1-10 us a small loss call takes.
"""
import os

cimport numpy as cnp
import numpy as np
from libc.stdlib cimport free

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void** memptr, size_t alignment, size_t size)

cdef extern from "Python.h":
    # so that tracemalloc sees this memory as it sees NumPy's
    int PyTraceMalloc_Track(unsigned int domain, size_t ptr, size_t size)
    int PyTraceMalloc_Untrack(unsigned int domain, size_t ptr)

cdef unsigned int NPY_TRACE_DOMAIN = np.lib.tracemalloc_domain  # NumPy's tracemalloc domain

cdef extern from "sys/mman.h" nogil:
    int madvise(void* addr, size_t length, int advice)
    int MADV_HUGEPAGE

cnp.import_array()

cdef enum:
    SLOTS = 8
    ALIGNMENT = 4096
    HUGEPAGE_MIN = 4 << 20
    MIN_BYTES = 1 << 20   # smaller buffers are left to NumPy and malloc
    MAX_SMALL_DIMS = 8    # (empty's C-API path for them)

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1

cdef void* cached_data[SLOTS]
cdef Py_ssize_t cached_bytes[SLOTS]
cdef Py_ssize_t cached_total = 0


def _limit_from_environment():
    value = os.environ.get("FASTLOSS_CACHE_BYTES", "")
    try:
        return max(0, int(value)) if value else 1 << 30
    except ValueError:
        raise ValueError(f"FASTLOSS_CACHE_BYTES: expected a number of bytes, got {value!r}") from None


cdef Py_ssize_t limit = _limit_from_environment()


cdef void* take(Py_ssize_t nbytes) noexcept:
    """A cached buffer of exactly nbytes, or NULL."""
    global cached_total
    cdef int i
    cdef void* data
    for i in range(SLOTS):
        if cached_data[i] != NULL and cached_bytes[i] == nbytes:
            data = cached_data[i]
            cached_data[i] = NULL
            cached_total -= nbytes
            return data
    return NULL


cdef void release(void* data) noexcept:
    PyTraceMalloc_Untrack(NPY_TRACE_DOMAIN, <size_t> data)
    free(data)


cdef void drop(int i) noexcept:
    global cached_total
    release(cached_data[i])
    cached_total -= cached_bytes[i]
    cached_data[i] = NULL


cdef void give_back(void* data, Py_ssize_t nbytes) noexcept:
    """Keep the buffer for the next request of its size, dropping others to make room."""
    global cached_total
    cdef int i
    if nbytes > limit:
        release(data)
        return
    for i in range(SLOTS):
        if cached_total + nbytes <= limit:
            break
        if cached_data[i] != NULL:
            drop(i)
    for i in range(SLOTS):
        if cached_data[i] == NULL:
            break
    else:
        drop(0)
        i = 0
    cached_data[i], cached_bytes[i] = data, nbytes
    cached_total += nbytes


cdef class Block:
    """nbytes of page-aligned memory exposed through the buffer protocol; returned to the
    cache when no array uses it any more."""
    cdef void* data
    cdef Py_ssize_t nbytes
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __cinit__(self, Py_ssize_t nbytes):
        self.nbytes = nbytes
        self.data = take(nbytes)
        if self.data == NULL:
            if posix_memalign(&self.data, ALIGNMENT, nbytes) != 0:
                self.data = NULL
                raise MemoryError(f"gradient: could not allocate {nbytes} bytes")
            PyTraceMalloc_Track(NPY_TRACE_DOMAIN, <size_t> self.data, nbytes)
            if nbytes >= HUGEPAGE_MIN:
                madvise(self.data, nbytes, MADV_HUGEPAGE)

    def __getbuffer__(self, Py_buffer* view, int flags):
        self.shape[0] = self.nbytes
        self.strides[0] = 1
        view.buf = self.data
        view.obj = self
        view.len = self.nbytes
        view.readonly = 0
        view.itemsize = 1
        view.format = "B"
        view.ndim = 1
        view.shape = self.shape
        view.strides = self.strides
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer* view):
        pass

    def __dealloc__(self):
        if self.data != NULL:
            give_back(self.data, self.nbytes)


def empty(shape, dtype):
    """np.empty(shape, dtype), large arrays from the cache (MemoryError when it cannot be had)."""
    if not isinstance(dtype, np.dtype):
        dtype = np.dtype(dtype)
    cdef cnp.npy_intp dims[MAX_SMALL_DIMS]
    cdef long long small = (<cnp.dtype> dtype).itemsize
    cdef int nd, i, overflow = 0
    if type(shape) is tuple and len(<tuple> shape) <= MAX_SMALL_DIMS and cnp.PyArray_ISNBO((<cnp.dtype> dtype).byteorder):
        # a small call's gradient straight from NumPy's C API: np.empty's argument parsing was
        # 1 us of a 64 x 10 cross entropy's 14 here (any extent that is not a non-negative int
        # goes the general way, and NumPy's errors with it)
        nd = len(<tuple> shape)
        for i in range(nd):
            extent = (<tuple> shape)[i]
            dims[i] = PyLong_AsLongLongAndOverflow(extent, &overflow) if type(extent) is int else -1
            if overflow or not 0 <= dims[i] < MIN_BYTES:
                small = MIN_BYTES
                break
            small *= dims[i]   # (each factor under 2^20 and the product kept under it: no wrap)
            if small >= MIN_BYTES:
                break
        if small < MIN_BYTES:
            return cnp.PyArray_EMPTY(nd, dims, (<cnp.dtype> dtype).type_num, 0)
    cdef object count = 1   # a Python int: no size can wrap around
    for extent in shape:
        count *= extent
    if count * dtype.itemsize < MIN_BYTES:
        return np.empty(shape, dtype)
    if count * dtype.itemsize >= 2 ** 62:
        raise MemoryError(f"gradient: could not allocate {count * dtype.itemsize} bytes")
    return np.frombuffer(Block(count * dtype.itemsize), dtype=dtype, count=count).reshape(shape)


cdef inline bint extent(object obj, char** start, char** stop):
    """The byte extent of a C-contiguous ndarray (True), else False."""
    if not cnp.PyArray_Check(obj) or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> obj):
        return False
    start[0] = <char*> cnp.PyArray_DATA(<cnp.ndarray> obj)
    stop[0] = start[0] + cnp.PyArray_NBYTES(<cnp.ndarray> obj)
    return True


def extents_overlap(tuple outs, tuple arrays, extra=None):
    """Whether the byte extent of an ndarray in `outs` meets that of an ndarray in `arrays`
    (or `extra`) or of another in `outs`; any other kind of array there (non-contiguous, not
    NumPy) counts as meeting, and None and numbers as nothing: the fast first look of the
    overlap check (fastloss._arrays.check_no_overlap decides when this says yes)."""
    cdef Py_ssize_t i, j, n = len(arrays)
    cdef char* a0
    cdef char* a1
    cdef char* b0
    cdef char* b1
    for i in range(len(outs)):
        if outs[i] is None:
            continue
        if not extent(outs[i], &a0, &a1):
            return True
        for j in range(n + 1 + i):
            other = arrays[j] if j < n else (extra if j == n else outs[j - n - 1])
            if other is None or isinstance(other, (int, float)):
                continue
            if not extent(other, &b0, &b1):
                return True
            if a0 < b1 and b0 < a1:
                return True
    return False


def empty_cache():
    """Free every cached buffer."""
    global cached_total
    cdef int i
    for i in range(SLOTS):
        if cached_data[i] != NULL:
            drop(i)


def cache_info():
    """(number of cached buffers, their bytes, the limit)."""
    return sum(cached_data[i] != NULL for i in range(SLOTS)), cached_total, limit


# ---------------------------------------------------------------- loss values
cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void* data, cnp.dtype descr, object base)


def loss_scalar(double value, object dtype):
    """value as a NumPy scalar of `dtype` when that is a native float32 or float64 np.dtype
    (rounded as dtype.type(value) rounds it: IEEE's, inf beyond float32's range, quietly), else
    None. NumPy's scalar constructor takes 0.6 us for a float32, this 0.1 (of a 64 x 10 cross
    entropy's 14 us here)."""
    cdef float single = <float> value
    if not isinstance(dtype, cnp.dtype) or not cnp.PyArray_ISNBO((<cnp.dtype> dtype).byteorder):
        return None
    if (<cnp.dtype> dtype).type_num == cnp.NPY_FLOAT64:
        return PyArray_Scalar(&value, <cnp.dtype> dtype, None)
    if (<cnp.dtype> dtype).type_num == cnp.NPY_FLOAT32:
        return PyArray_Scalar(&single, <cnp.dtype> dtype, None)
    return None
