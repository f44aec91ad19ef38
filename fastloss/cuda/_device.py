"""The caller's CUDA arrays in and out.

`Device` is one call's view of the GPU: which framework the caller's arrays come from (CuPy,
torch, numba, or another with a CUDA `__dlpack__`), the numba views the kernels read (no
copies), result arrays allocated by that framework (its memory pool, its kind of array back),
and the caller's current stream, on which every kernel of the call is launched.

Reductions are deterministic: each block of a launch sums its threads' float64 values in a
fixed tree (`block_sum`) and writes one partial; `Device.finish` sums the partials in a fixed
order on one block and writes the loss. The launch shape depends only on the problem's size,
so the order, and the bits, never change between runs.
"""
import functools
import importlib.metadata
import math

import numpy as np
from numba import config, cuda, float64

from .._arrays import FLOAT_DTYPES, fail


def numpy_mismatch(numpy_version, has_row_stack, numba_cuda_version):
    """Why this numba-cuda cannot compile a kernel beside this NumPy, or None. numba-cuda
    0.30.4 and older register an overload of np.row_stack as they compile their first kernel,
    and NumPy 2.5 removed row_stack: every GPU call would fail there, deep inside numba, with
    an AttributeError (seen on an H200 with numba-cuda 0.30.4 and NumPy 2.5.2)."""
    release = tuple(int(part) for part in numba_cuda_version.split("+")[0].split(".")[:3] if part.isdigit())
    if has_row_stack or release > (0, 30, 4):
        return None
    return (f"numba-cuda {numba_cuda_version} cannot compile GPU kernels with NumPy {numpy_version} (it overloads "
            "np.row_stack, which NumPy 2.5 removed): install 'numpy<2.5', or a numba-cuda release that supports "
            "your NumPy")


try:
    _NUMBA_CUDA = importlib.metadata.version("numba-cuda")
except importlib.metadata.PackageNotFoundError:   # (numba's own older CUDA target)
    _NUMBA_CUDA = None
if _NUMBA_CUDA and (_mismatch := numpy_mismatch(np.__version__, hasattr(np, "row_stack"), _NUMBA_CUDA)):
    raise ImportError(_mismatch)

SIMULATOR = bool(config.ENABLE_CUDASIM)
# threads per block: the simulator runs each as a Python thread and every barrier as a switch
# between them, so it gets few (still more than one, and fewer than the test rows' classes and
# features, so that the strided loops and the trees run as on the card)
THREADS = 4 if SIMULATOR else 256
MAX_BLOCKS = 3 if SIMULATOR else 2048     # grid-stride launches stop here: enough to fill any card


def flat(view):
    """A device array as one dimension (a 0-d array as one element)."""
    return view.reshape(view.size)


def grid(n, threads=THREADS):
    """Blocks of a grid-stride launch over n items: a function of n alone (determinism)."""
    return max(1, min(MAX_BLOCKS, -(-n // threads)))


def _block_reduction(combine, what):
    """A device function reducing `value` over the block's threads with `combine`, in a fixed
    tree (the same order every run); every thread of the block must call it, and every thread
    gets the result."""
    @cuda.jit(device=True)
    def reduce(value):
        shared = cuda.shared.array(THREADS, float64)
        t = cuda.threadIdx.x
        shared[t] = value
        cuda.syncthreads()
        step = THREADS // 2
        while step > 0:
            if t < step:
                shared[t] = combine(shared[t], shared[t + step])
            cuda.syncthreads()
            step //= 2
        total = shared[0]
        cuda.syncthreads()   # the array is reused by the caller's next reduction
        return total
    reduce.__doc__ = f"The float64 {what} of `value` over the block's threads, in every thread."
    return reduce


@cuda.jit(device=True, inline=True)
def _add(a, b):
    return a + b


@cuda.jit(device=True, inline=True)
def _larger(a, b):
    return b if b > a else a


block_sum = _block_reduction(_add, "sum")
block_max = _block_reduction(_larger, "maximum")


@cuda.jit(device=True)
def block_share(value):
    """Thread 0's `value`, in every thread of the block."""
    shared = cuda.shared.array(1, float64)
    if cuda.threadIdx.x == 0:
        shared[0] = value
    cuda.syncthreads()
    result = shared[0]
    cuda.syncthreads()
    return result


@cuda.jit
def _finish(partials, divisor, out):
    """out[0] = the sum of the partials (in a fixed order) / divisor (NaN for 0), as the CPU
    path divides its total."""
    acc = 0.0
    for i in range(cuda.threadIdx.x, partials.shape[0], THREADS):
        acc += partials[i]
    total = block_sum(acc)
    if cuda.threadIdx.x == 0:
        out[0] = total / divisor if divisor != 0 else math.nan


@cuda.jit
def _scale(src, factor, dst):
    if cuda.grid(1) == 0:
        dst[0] = src[0] * factor


TILE = 4 if SIMULATOR else 16   # the numba matrix product's square tile


@cuda.jit
def _gemm(a, b, c, trans_a, trans_b, accumulate):
    """c (m, n) = [c +] op(a) @ op(b), op a transpose where asked: tiles of a and b through
    shared memory, each element summed in float64 over k in order (the same bits every run).
    The fallback for numba device arrays; CuPy and torch arrays multiply in cuBLAS."""
    ta = cuda.shared.array((TILE, TILE), float64)
    tb = cuda.shared.array((TILE, TILE), float64)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    i, j = cuda.blockIdx.y * TILE + ty, cuda.blockIdx.x * TILE + tx
    m, n = c.shape[0], c.shape[1]
    depth = a.shape[0] if trans_a else a.shape[1]
    acc = 0.0
    for k0 in range(0, depth, TILE):
        ka, kb = k0 + tx, k0 + ty
        ta[ty, tx] = 0.0 if i >= m or ka >= depth else float64(a[ka, i] if trans_a else a[i, ka])
        tb[ty, tx] = 0.0 if j >= n or kb >= depth else float64(b[j, kb] if trans_b else b[kb, j])
        cuda.syncthreads()
        for k in range(TILE):
            acc += ta[ty, k] * tb[k, tx]
        cuda.syncthreads()
    if i < m and j < n:
        c[i, j] = acc + c[i, j] if accumulate else acc


@cuda.jit
def _cast(src, dst):
    for i in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[i] = src[i]


@cuda.jit
def _fill(arr, value):
    for i in range(cuda.grid(1), arr.shape[0], cuda.gridsize(1)):
        arr[i] = value


@cuda.jit
def _count_outside(x, lo, hi, nan_is_bad, partials):
    """Per block: how many elements of x lie outside [lo, hi] (or are NaN, when nan_is_bad)."""
    acc = 0.0
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        acc += 1.0 if (v < lo or v > hi or (nan_is_bad and v != v)) else 0.0
    total = block_sum(acc)
    if cuda.threadIdx.x == 0:
        partials[cuda.blockIdx.x] = total


@cuda.jit
def _count_bad_multilabel(target, rows, C, partials):
    """Per block: how many rows of (rows, C) multi-label targets hold an entry outside [0, C)
    before their first -1."""
    bad = 0.0
    for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
        for k in range(C):
            t = target[r * C + k]
            if t == -1:
                break
            if t < 0 or t >= C:
                bad += 1.0
                break
    total = block_sum(bad)
    if cuda.threadIdx.x == 0:
        partials[cuda.blockIdx.x] = total


@functools.lru_cache(maxsize=None)
def _gpu_available():
    return cuda.is_available()


def _from_dlpack(obj):
    """A CUDA array that offers only `__dlpack__` (JAX, say), as a CuPy array or else a torch
    tensor over the same memory: its results come back as that framework's arrays."""
    try:
        import cupy
        return cupy.from_dlpack(obj)
    except ImportError:
        import torch
        return torch.from_dlpack(obj)


class Device:
    """One call's arrays on the GPU: views, allocations, stream and reduction. Its checking
    methods mirror `fastloss._spec.Host`, so that a family builds its spec once for both."""
    device = True

    def __init__(self, arrays):
        if not (SIMULATOR or _gpu_available()):
            raise RuntimeError("arrays: expected a usable CUDA device for CUDA arrays, got none "
                               "(numba found no GPU or driver)")
        first = next(a for a in arrays if a is not None and not isinstance(a, (int, float)))
        if not (SIMULATOR or hasattr(first, "__cuda_array_interface__")):
            first = _from_dlpack(first)
        root = type(first).__module__.split(".")[0]
        self.kind = root if root in ("torch", "cupy") else "numba"
        self.like = first
        self.stream = self._current_stream()

    # ------------------------------------------------------------------ the framework
    def _current_stream(self):
        if SIMULATOR:
            return cuda.default_stream()
        if self.kind == "torch":
            import torch
            ptr = torch.cuda.current_stream(self.like.device).cuda_stream
        elif self.kind == "cupy":
            import cupy
            ptr = cupy.cuda.get_current_stream().ptr
        else:
            stream = getattr(self.like, "stream", 0)
            return stream if stream else cuda.default_stream()
        return cuda.external_stream(ptr) if ptr else cuda.default_stream()

    def view(self, obj, name):
        """A numba device array over `obj`'s memory (no copy, no synchronisation)."""
        if SIMULATOR or self.kind == "numba" and not hasattr(obj, "__cuda_array_interface__"):
            if not (type(obj).__module__.startswith("numba.cuda") and hasattr(obj, "copy_to_host")):
                fail(TypeError, name, "a CUDA array like the other arrays", type(obj).__name__)
            return obj
        if type(obj).__module__.split(".")[0] == "torch":
            obj = obj.detach()
        elif not hasattr(obj, "__cuda_array_interface__"):
            obj = _from_dlpack(obj)
        return cuda.as_cuda_array(obj, sync=False)

    def empty(self, shape, dtype):
        """(the caller's kind of array, its numba view) of a fresh array on the device."""
        dtype = np.dtype(dtype)
        if self.kind == "torch":
            import torch
            arr = torch.empty(shape, dtype=getattr(torch, dtype.name), device=self.like.device)
        elif self.kind == "cupy":
            import cupy
            arr = cupy.empty(shape, dtype)
        else:
            arr = cuda.device_array(shape, dtype, stream=self.stream)
            return arr, arr
        return arr, self.view(arr, "result")

    def upload(self, host):
        """A small host array (a constructor's class weights, say) on the device: its view."""
        host = np.ascontiguousarray(host)
        if self.kind == "torch":
            import torch
            return self.view(torch.as_tensor(host, device=self.like.device), "option")
        if self.kind == "cupy":
            import cupy
            return self.view(cupy.asarray(host), "option")
        return cuda.to_device(host, stream=self.stream)

    # ------------------------------------------------------------------ checks
    def input(self, obj, name, dtype=None):
        """A differentiable input: (caller's array made C-contiguous, view); float32/float64.
        (torch tensors are taken detached: a parameter's product runs outside autograd.)"""
        if type(obj).__module__.split(".")[0] == "torch":
            obj = obj.detach()
        if str(getattr(obj, "dtype", "")).split(".")[-1] == "bfloat16":
            # numba has no bfloat16 type (and CuPy none, and torch exports none through the CUDA
            # array interface): float16 is taken (see float16_call), bfloat16 is the host's
            fail(TypeError, name, "a float16, float32 or float64 array on the GPU (bfloat16 runs on the "
                 "host only; convert on the device first, e.g. x.float())", f"dtype {obj.dtype}")
        view = self.view(obj, name)
        if view.dtype not in FLOAT_DTYPES:
            fail(TypeError, name, "a float32 or float64 array", f"dtype {view.dtype}")
        if dtype is not None and view.dtype != dtype:
            fail(TypeError, name, f"dtype {dtype} (the input's)", f"dtype {view.dtype}")
        if not view.is_c_contiguous():
            obj = self.contiguous(obj)
            view = self.view(obj, name)
        return obj, view

    def float_input(self, obj, name):
        return self.input(obj, name)[1]

    def option(self, host, name, dtype):
        """An array option of the criterion (host memory) for the kernels: on the device."""
        return self.upload(np.asarray(host, dtype))

    def array(self, obj, name):
        """A target whose dtype decides what it means (class indices or not): its view."""
        return self.operand(obj, name)

    @staticmethod
    def cast(view, dtype):
        """A real array the kernels read in the input's dtype: they convert as they read."""
        return view

    def count_outside(self, arr, lo, hi, nan_is_bad):
        """How many elements of a device array lie outside [lo, hi] (one synchronisation)."""
        blocks = grid(arr.size)
        partials = self.partials(blocks)
        self.launch(_count_outside, blocks, THREADS, flat(arr), lo, hi, nan_is_bad, partials)
        return int(self.to_host(partials).sum())

    def count_bad_multilabel(self, target, C):
        """How many rows of MultiLabelMarginLoss's targets (rows, C) hold a bad entry."""
        rows = target.size // C if C else 0
        partials = self.partials(grid(rows))
        self.launch(_count_bad_multilabel, grid(rows), THREADS, flat(target), rows, C, partials)
        return int(self.to_host(partials).sum())

    def to_host(self, view):
        """A copy of a (small) device array on the host, after the caller's queued work."""
        host = view.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return host

    def operand(self, obj, name, dtype=None):
        """A non-differentiable array (target, weight, var...): real numbers, any dtype (the
        kernels convert as they read), C-contiguous."""
        view = self.view(obj, name)
        if view.dtype.kind not in "biuf":
            fail(TypeError, name, "a real-valued array", f"dtype {view.dtype}")
        return view if view.is_c_contiguous() else self.view(self.contiguous(obj), name)

    def contiguous(self, obj):
        if self.kind == "torch":
            return obj.contiguous()
        if self.kind == "cupy":
            import cupy
            return cupy.ascontiguousarray(obj)
        fail(ValueError, "input", "a C-contiguous numba device array", "a strided one")

    def out(self, out, shape, dtype, name):
        """The caller's gradient buffer, checked: (it, its view)."""
        view = self.view(out, f"out ({name})")
        if tuple(view.shape) != tuple(shape):
            fail(ValueError, f"out ({name})", f"shape {tuple(shape)}", tuple(view.shape))
        if view.dtype != dtype:
            fail(TypeError, f"out ({name})", f"dtype {dtype}", f"dtype {view.dtype}")
        if not view.is_c_contiguous():
            fail(ValueError, f"out ({name})", "a C-contiguous array", "a strided one")
        return out, view

    def gradients(self, shapes, dtype, out, names):
        """Per differentiable input (None where it has none): (array, view) from `out` or fresh."""
        if out is not None and not isinstance(out, tuple):
            out = (out,)
        present = [i for i, s in enumerate(shapes) if s is not None]
        if out is not None and len(out) == len(present) != len(shapes):   # only the gradients there are
            out = tuple(out[present.index(i)] if i in present else None for i in range(len(shapes)))
        if out is not None and len(out) != len(shapes):
            fail(ValueError, "out", f"a tuple of {len(shapes)} arrays ({', '.join(names)})", f"{len(out)} arrays")
        result = []
        for i, (shape, name) in enumerate(zip(shapes, names)):
            given = None if out is None else out[i]
            if shape is None:
                if given is not None:
                    fail(ValueError, f"out ({name})", "None (it has no gradient in this call)", type(given).__name__)
                result.append((None, None))
            else:
                result.append(self.empty(shape, dtype) if given is None else self.out(given, shape, dtype, name))
        return result

    def grad_output(self, grad_output, loss_shape, none):
        """(host factor, device array or None): a host number scales the gradient; a device array
        is read on the device, per row (for 'none', of the loss's shape) or as one scalar."""
        if grad_output is None or isinstance(grad_output, (int, float, np.integer, np.floating)) \
                and not isinstance(grad_output, bool):
            return (1.0 if grad_output is None else float(grad_output)), None
        view = self.operand(grad_output, "grad_output")
        if none and tuple(view.shape) == tuple(loss_shape):
            return 1.0, flat(view)
        if view.size != 1 or (not none and view.ndim > 1):
            fail(ValueError, "grad_output", f"shape {tuple(loss_shape)} (the loss's) or a scalar" if none
                 else "a scalar for a reduced loss", f"shape {tuple(view.shape)}")
        return 1.0, view.reshape(1)

    def row_scale(self, grad_output, loss_shape, none, divisor, want_grad):
        """(the gradients' scale, grad_output's device array or None) of a loss with a value per
        row: grad_output's host factor, over the divisor for a reduced loss (0 for none)."""
        factor, go = self.grad_output(grad_output, loss_shape, none) if want_grad else (1.0, None)
        return (factor if none else factor / divisor if divisor else 0.0), go

    def scaled(self, view, factor, dtype):
        """A one-element device array: view's value * factor, in dtype (read on the device)."""
        dst = self.empty((1,), dtype)[1]
        self.launch(_scale, 1, 1, view, factor, dst)
        return dst

    # ------------------------------------------------------------------ matrix products
    def matmul(self, a, b, c, trans_a=False, trans_b=False, accumulate=False):
        """c = op(a) @ op(b), or c += it: each argument an (array, view) pair of 2-D C-contiguous
        arrays. CuPy and torch multiply in cuBLAS on the caller's stream; numba arrays in `_gemm`."""
        (a, va), (b, vb), (c, vc) = a, b, c
        if self.kind == "torch":
            A, B = a.T if trans_a else a, b.T if trans_b else b
            if accumulate:
                c.addmm_(A, B)
            else:
                import torch
                torch.matmul(A, B, out=c)
        elif self.kind == "cupy":
            from cupy import cublas
            cublas.gemm("T" if trans_a else "N", "T" if trans_b else "N", a, b, out=c, beta=1.0 if accumulate else 0.0)
        elif vc.size:
            m, n = vc.shape
            self.launch(_gemm, ((n + TILE - 1) // TILE, (m + TILE - 1) // TILE), (TILE, TILE), va, vb, vc,
                        trans_a, trans_b, accumulate)

    def copy(self, src, dst):
        """dst[...] = src, converted to dst's dtype (views of one size)."""
        if dst.size:
            self.launch(_cast, grid(dst.size), THREADS, flat(src), flat(dst))

    def fill(self, view, value):
        if view.size:
            self.launch(_fill, grid(view.size), THREADS, flat(view), value)

    # ------------------------------------------------------------------ launches
    def launch(self, kernel, blocks, threads, *args):
        kernel[blocks, threads, self.stream](*args)

    def partials(self, blocks):
        return self.empty((blocks,), np.float64)[1]

    def finish(self, partials, divisor, dtype):
        """The 0-d loss of `dtype`: the partials' fixed-order sum / divisor (a host number)."""
        loss, view = self.empty((), dtype)
        self.launch(_finish, 1, THREADS, partials, float(divisor), view.reshape(1))
        return loss


# ---------------------------------------------------------------------- float16 device arrays
def is_float16(obj):
    """Whether obj is a float16 array (numba, CuPy or torch: by its dtype's name)."""
    return str(getattr(obj, "dtype", "")).split(".")[-1] == "float16"


def float16_call(crit, arrays, want_grad, out, grad_output, mode, result_type):
    """A call with float16 device arrays: each is widened on the device into a float32 array
    (a copy there: numba's kernels would otherwise compute in float16, and the float32 kernels
    are the ones tested), the float32 call runs, and its results are narrowed on the device to
    float16 (round to nearest even; a reduced loss was rounded to float32 first, as on the
    host) when the first differentiable input is float16. A float32 out= is written by the
    float32 call itself, a float16 one by the narrowing."""
    device = Device([a for a in arrays if a is not None and not isinstance(a, (int, float))])

    def widened(obj, name):
        if not is_float16(obj):
            return obj
        view = device.view(obj, name)
        wide, wide_view = device.empty(tuple(view.shape), np.float32)
        device.copy(view, wide_view)
        return wide

    wide = tuple(widened(a, name) for a, name in zip(arrays, crit.arguments))
    go = widened(grad_output, "grad_output") if grad_output is not None else None
    first = next((a for a, name in zip(arrays, crit.arguments) if name in crit.differentiable), arrays[0])
    narrow = is_float16(first)
    outs = out if isinstance(out, tuple) else (out,)
    given32 = tuple(o if o is None or not is_float16(o) else None for o in outs)
    result = crit._dispatch(wide, want_grad, given32 if isinstance(out, tuple) else given32[0], go, **mode)
    if not narrow:
        return result

    def narrowed(arr, given=None):
        if arr is None or given is arr:
            return arr
        view = device.view(arr, "result")
        if given is None:
            given, target = device.empty(tuple(view.shape), np.float16)
        else:
            target = device.out(given, tuple(view.shape), np.float16, "out")[1]
        device.copy(view, target)
        return given

    hess = mode.get("hess")   # (result_type is then GradHess: the gradient first, the hessian second)
    grads = result[0] if hess else result[1]
    if grads is not None:
        many = isinstance(grads, tuple)
        each = grads if many else (grads,)
        placed = tuple(narrowed(g, o) for g, o in zip(each, outs + (None,) * len(each)))
        grads = placed if many else placed[0]
    return result_type(grads, narrowed(result[1])) if hess else result_type(narrowed(result[0]), grads)
