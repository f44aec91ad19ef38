"""Array-likes in, checks, and every error message, in one voice:
``input: expected shape (N, C), got (3, 4)``.
"""
import functools
from math import prod
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# what the public API takes as an array: an ndarray or any array-like (buffer,
# __array_interface__, __dlpack__, a torch CPU tensor), or a CUDA array (CuPy, torch, numba)
ArrayLike = Any

# DLPack device types that live on a GPU: kDLCUDA, kDLCUDAHost, kDLCUDAManaged
_DLPACK_CUDA = (2, 3, 13)


def fail(exception, name, expected, got):
    raise exception(f"{name}: expected {expected}, got {got}")


def ieee_quietly(method):
    """Run a method's NumPy arithmetic (matrix products of data with inf or NaN) without
    RuntimeWarnings: special values propagate as IEEE says, as the kernels let them."""
    @functools.wraps(method)
    def quiet(*args, **kwargs):
        with np.errstate(all="ignore"):
            return method(*args, **kwargs)
    return quiet


def is_device_array(obj):
    """True for arrays that live on a CUDA device (CuPy, torch CUDA, numba device arrays)."""
    if type(obj) is np.ndarray:
        return False
    if hasattr(obj, "__cuda_array_interface__"):
        return True
    if type(obj).__module__.startswith("numba.cuda.simulator"):   # NUMBA_ENABLE_CUDASIM's arrays
        return True
    device = getattr(obj, "__dlpack_device__", None)
    if device is not None and not isinstance(obj, np.ndarray):
        try:
            return device()[0] in _DLPACK_CUDA
        except Exception:
            return False
    return False


def as_host_array(obj, name):
    """Any CPU array-like as an ndarray, without a copy where the object allows it."""
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, (int, float, bool, complex, list, tuple, np.generic)):
        return np.asarray(obj)
    if hasattr(obj, "__array_interface__") or hasattr(obj, "__array__"):
        return np.asarray(obj)
    if hasattr(obj, "__dlpack__"):
        return np.from_dlpack(obj)
    try:
        return np.asarray(memoryview(obj))
    except TypeError:
        fail(TypeError, name, "an array-like (ndarray, buffer, __array_interface__ or __dlpack__)",
             type(obj).__name__)


_NO_COPY = None if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else False


def contiguous(arr, dtype=None):
    """arr as C-contiguous and aligned (copied once if it is not: a misaligned buffer, e.g.
    from a pickle or a byte offset, would be undefined behaviour in the kernels' loads),
    keeping 0-d arrays 0-d."""
    if arr.flags.c_contiguous and arr.flags.aligned and (dtype is None or arr.dtype == dtype):
        return arr
    return np.array(arr, dtype=dtype, order="C", copy=True if not arr.flags.aligned else _NO_COPY)


def as_float_input(obj, name):
    """A differentiable input: float32 or float64, C-contiguous (copied once if it is not)."""
    arr = obj if type(obj) is np.ndarray else as_host_array(obj, name)
    if arr.dtype not in FLOAT_DTYPES:
        fail(TypeError, name, "a float32 or float64 array", f"dtype {arr.dtype}")
    return contiguous(arr)


def as_operand(obj, name, dtype):
    """A non-differentiable array (target, weight, ...): real numbers, converted to dtype."""
    arr = obj if type(obj) is np.ndarray else as_host_array(obj, name)
    if arr.dtype.kind not in "biuf":
        fail(TypeError, name, "a real-valued array", f"dtype {arr.dtype}")
    return contiguous(arr, dtype)


def check_same_shape(name, arr, shape, what="the input's shape"):
    """Refuse an array (host, or a device view) whose shape is not `shape`."""
    if tuple(arr.shape) != tuple(shape):
        fail(ValueError, name, f"shape {tuple(shape)} ({what})", tuple(arr.shape))


def check_option(name, value, allowed):
    if value not in allowed:
        fail(ValueError, name, "one of " + ", ".join(repr(a) for a in allowed), repr(value))


def check_number(name, value, *, positive=False, nonnegative=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        fail(TypeError, name, "a real number", repr(value))
    if positive and not value > 0:
        fail(ValueError, name, "a positive number", repr(value))
    if nonnegative and not value >= 0:
        fail(ValueError, name, "a non-negative number", repr(value))
    return float(value)


def check_optional_count(name, value):
    """A positive int, or None (an option such as chunk_rows)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        fail(ValueError, name, "a positive int or None", repr(value))
    return value


def check_index_option(name, value, optional=False):
    """An int (or None when optional), such as ignore_index."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        fail(TypeError, name, "an int or None" if optional else "an int", repr(value))
    if not -2 ** 63 <= int(value) < 2 ** 63:
        fail(ValueError, name, "an int64 (labels are int64 inside)", repr(int(value)))
    return int(value)


def position_of(flat_index, shape):
    """The position in an array of `shape` of its flat (C-order) element index, as a tuple."""
    return tuple(int(p) for p in np.unravel_index(flat_index, shape)) if shape else ()


def as_int64_labels(target, name, expected):
    """Integer labels as C-contiguous int64: a label beyond int64 (only uint64 can hold one) is
    an IndexError with the user's value and position, never wrapped around. `expected`: what
    the labels should be, or a function giving it (built only for the message)."""
    if target.dtype.kind not in "iub":
        fail(TypeError, name, "class indices of an integer dtype", f"dtype {target.dtype}")
    if target.dtype.kind == "u" and target.dtype.itemsize == 8 and target.size:
        too_big = target > np.iinfo(np.int64).max
        if too_big.any():
            i = int(np.argmax(too_big.reshape(-1)))
            expected = expected() if callable(expected) else expected
            raise IndexError(f"{name}: expected {expected}, got {int(target.reshape(-1)[i])} "
                             f"at position {position_of(i, target.shape)}")
    return contiguous(target, np.int64)


def broadcast_plan(name, arr, shape):
    """How the kernel reads `arr` at the flat positions of an array of `shape`.

    Returns (arr, None) when arr has that shape (read in place), or (arr, sizes, strides):
    `shape` collapsed to few dimensions with arr's element strides (0 where arr is
    broadcast). arr must broadcast to `shape` without `shape` changing.
    """
    if arr.shape == shape:
        return arr, None
    if arr.ndim == 0 or arr.size == 1 and arr.ndim <= len(shape):  # one value everywhere
        return arr, (max(1, prod(shape)),), (0,)
    if arr.ndim > len(shape) or any(a not in (1, s) for a, s in zip(arr.shape[::-1], shape[::-1])):
        fail(ValueError, name, f"a shape that broadcasts to {shape}", tuple(arr.shape))
    padded = (1,) * (len(shape) - arr.ndim) + arr.shape
    sizes, strides, stride = [], [], 1
    for size, own in zip(shape[::-1], padded[::-1]):
        step = stride if own == size and size != 1 else 0
        stride *= own
        if size == 1:
            continue
        if sizes and (strides[-1] == 0) == (step == 0) and (step == 0 or step == strides[-1] * sizes[-1]):
            sizes[-1] *= size  # merge with the faster-moving dimension
            continue
        sizes.append(size)
        strides.append(step)
    if not sizes:
        sizes, strides = [1], [0]
    return arr, tuple(sizes[::-1]), tuple(strides[::-1])


def scalar_grad_output(grad_output, name="grad_output"):
    """grad_output of a scalar loss: a number (default 1)."""
    if grad_output is None:
        return 1.0
    arr = as_host_array(grad_output, name)
    if arr.size != 1 or arr.ndim > 1:
        fail(ValueError, name, "a scalar for a reduced loss", f"shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "biuf":
        fail(TypeError, name, "a real number", f"dtype {arr.dtype}")
    return float(arr.reshape(()))


def check_out(out, shapes, dtypes, names):
    """Validate the caller's gradient buffers (one array, or a tuple for several inputs)."""
    if len(shapes) == 1 and not isinstance(out, tuple):
        out = (out,)
    if not isinstance(out, tuple) or len(out) != len(shapes):
        fail(ValueError, "out", f"a tuple of {len(shapes)} arrays ({', '.join(names)})", repr(type(out).__name__))
    for buf, shape, dtype, name in zip(out, shapes, dtypes, names):
        label = f"out ({name})"
        if buf is None:
            continue
        if not isinstance(buf, np.ndarray):
            fail(TypeError, label, "a NumPy array", type(buf).__name__)
        if buf.shape != tuple(shape):
            fail(ValueError, label, f"shape {tuple(shape)}", tuple(buf.shape))
        if buf.dtype != dtype:
            fail(TypeError, label, f"dtype {dtype}", f"dtype {buf.dtype}")
        if not buf.flags.c_contiguous or not buf.flags.writeable or not buf.flags.aligned:
            fail(ValueError, label, "a writeable, aligned C-contiguous array",
                 "a non-contiguous, read-only or misaligned one")
    return out


_TOO_HARD = getattr(getattr(np, "exceptions", np), "TooHardError")


def byte_extent(shape, strides, itemsize):
    """(lowest, end) byte offsets, from an array's first element, of the memory it spans."""
    if not prod(shape):
        return 0, 0
    low = sum(st * (n - 1) for st, n in zip(strides, shape) if st < 0)
    return low, itemsize + sum(st * (n - 1) for st, n in zip(strides, shape) if st > 0)


def _memory(obj):
    """What an array-like's memory is, for overlap checks, without copying it: ('host', an
    ndarray view), ('device', (first byte, end)) from __cuda_array_interface__, or None
    for objects that are converted by copying anyway (lists, scalars) or are not arrays."""
    if isinstance(obj, np.ndarray):
        return "host", obj
    if obj is None or isinstance(obj, (int, float, bool, complex, list, tuple, np.generic)):
        return None
    interface = getattr(obj, "__cuda_array_interface__", None)
    if interface is not None:
        shape, itemsize = tuple(interface["shape"]), np.dtype(interface["typestr"]).itemsize
        strides = interface.get("strides") or tuple(
            itemsize * prod(shape[d + 1:]) for d in range(len(shape)))
        low, end = byte_extent(shape, strides, itemsize)
        return "device", (interface["data"][0] + low, interface["data"][0] + end)
    if is_device_array(obj):
        return None   # (the simulator's arrays: host memory the simulator owns)
    try:
        arr = as_host_array(obj, "array")
    except Exception:   # not an array-like: its own check reports it
        return None
    return ("host", arr) if isinstance(arr, np.ndarray) else None


def _overlap(a, b):
    """Whether two memories share bytes (host: exactly, or yes when that is too hard to tell;
    device: their extents meet)."""
    if a[0] != b[0]:
        return False
    if a[0] == "device":
        (s1, e1), (s2, e2) = a[1], b[1]
        return s1 < e2 and s2 < e1
    x, y = a[1], b[1]
    if not np.may_share_memory(x, y):
        return False
    try:
        return bool(np.shares_memory(x, y, max_work=1 << 20))
    except _TOO_HARD:
        return True


def check_no_overlap(outs, out_names, inputs, input_names):
    """Refuse gradient buffers that share memory with an array the call reads, or with each
    other (ValueError naming both): a kernel writing a gradient over its own input reads
    overwritten values, and the kernels declare their outputs `restrict` (see simd_math.h)."""
    seen = []
    for buf, name in zip(outs, out_names):
        mine = _memory(buf)
        if mine is None:
            continue
        for arr, arr_name in zip(inputs, input_names):
            theirs = _memory(arr)
            if theirs is None:
                continue
            if _overlap(mine, theirs):
                fail(ValueError, name, "a buffer that shares no memory with the arrays the call reads",
                     f"one that overlaps {arr_name}")
        for other, other_name in seen:
            if _overlap(mine, other):
                fail(ValueError, name, f"a buffer that shares no memory with {other_name}", "one that overlaps it")
        seen.append((mine, name))
