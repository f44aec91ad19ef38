"""float16 and bfloat16 data on the CPU: float32 math, float64 sums, gradients in the
input's dtype.

bfloat16 is ml_dtypes.bfloat16 (the NumPy dtype JAX uses); torch float16/bfloat16 CPU
tensors are read through a zero-copy view of their bits. Two ways in:

* In the kernels' loops (families with `_half_kernels`: the pointwise family, the softmax
  rows, the margin losses, DiceLoss). Half arrays are taken as they are (HalfHost); the
  kernels widen each tile, row or run of them into float32 scratch and narrow their losses,
  gradients and hessians out of it (_kernels/half.h: F16C where the level has it, bfloat16
  by its bits). One pass, no extra memory, and half the float32 call's bytes to read.
* Staged blocks of rows (the other families): each block of every half array is widened
  into a reused float32 buffer (convert.pyx, at memory speed), so no float32 copy of the
  input is made. The blocks start on the kernels' block boundaries (`block_rows`) and their
  partial states are exact; each block's gradient, computed in float32 with the whole call's
  scale, is narrowed to the input's dtype or written as it is into a float32 `out=`. A
  reduced loss with a gradient takes two passes over the data for 'mean' (the divisor of the
  whole scales every block's gradient). The criteria whose gradients are not per row
  (LinearCrossEntropyLoss's weight, NTXentLoss), hessians of the staged families and
  partial-less options convert the whole arrays instead: a float32 copy, said here.

Either way the results are the float32 call's on the same values, bitwise (every half value
is exact in float32; outputs are rounded to nearest even). Losses come back in the input's
dtype as SPEC.md says (a 0-d scalar for 'mean' and 'sum'): the float32 call's loss, from the
float64 total, narrowed like the gradients.
"""
import sys

import numpy as np

from ._arrays import as_float_input, as_host_array, as_operand, broadcast_plan, contiguous, fail, scalar_grad_output
from ._kernels.convert import narrow, widen
from ._spec import Host
from ._threads import get_num_threads

FLOAT16 = np.dtype(np.float16)
_bfloat16 = None


def bfloat16(load=False):
    """ml_dtypes' bfloat16 dtype, or None. A bfloat16 NumPy array exists only once ml_dtypes
    is imported, so a call looks in sys.modules and imports nothing (ml_dtypes takes a second
    to import beside NumPy 2.4, most of `import fastloss` when it was done there); `load`
    imports it (a torch bfloat16 tensor to view, a bfloat16 .npy to read), None if absent."""
    global _bfloat16
    if _bfloat16 is None:
        module = sys.modules.get("ml_dtypes")
        if module is None and load:
            try:
                import ml_dtypes as module
            except ImportError:
                return None
        if module is not None:
            _bfloat16 = np.dtype(module.bfloat16)
    return _bfloat16


def _is_half(dtype):
    if dtype.itemsize != 2:   # (one attribute: the float32 and float64 calls stop here)
        return False
    if dtype == FLOAT16:
        return True
    bf16 = bfloat16() if dtype.kind == "V" else None
    return bf16 is not None and dtype == bf16


_TORCH_HALF = ("torch.float16", "torch.bfloat16")
STAGE_ELEMENTS = 1 << 20   # elements of all arrays per staged block (4 MiB of float32)


def present(arrays):
    """Whether any array is float16 or bfloat16 (NumPy, or a torch CPU tensor)."""
    for a in arrays:
        dtype = getattr(a, "dtype", None)
        if dtype is None:
            continue
        if isinstance(dtype, np.dtype):
            if _is_half(dtype):
                return True
        elif str(dtype) in _TORCH_HALF:
            return True
    return False


def is_half(dtype):
    return dtype is not None and isinstance(dtype, np.dtype) and _is_half(dtype)


def as_numpy(a):
    """A torch float16/bfloat16 CPU tensor as a zero-copy NumPy view; anything else as it is."""
    dtype = getattr(a, "dtype", None)
    if dtype is None or isinstance(dtype, np.dtype) or str(dtype) not in _TORCH_HALF:
        return a
    import torch
    if a.device.type != "cpu":
        raise TypeError(f"expected a CPU tensor for half precision on the host, got one on {a.device}")
    bits = a.detach().view(torch.int16).numpy()   # shares the tensor's memory
    if str(dtype) == "torch.float16":
        return bits.view(np.float16)
    bf16 = bfloat16(load=True)
    if bf16 is None:
        raise ImportError("bfloat16 tensors need ml_dtypes (pip install ml_dtypes)")
    return bits.view(bf16)


def work_dtype(dtype):
    """The dtype a call computes in: float32 for half data, else the data's own."""
    return np.dtype(np.float32) if is_half(dtype) else dtype


class NotInKernel(Exception):
    """A half call that the kernels cannot take as it is (see HalfHost): the staged path does."""


def operand(obj, name, dtype):
    """A real operand as the kernels read it in a call computing in `dtype`: half data as it is
    (C-contiguous) when that is float32, else converted to `dtype`."""
    arr = as_numpy(obj)
    if dtype == np.float32 and is_half(getattr(arr, "dtype", None)):
        return contiguous(arr)
    return as_operand(arr, name, dtype)


class HalfHost(Host):
    """How a family whose kernels read and write half data in their loops (the pointwise
    family: `_half_kernels`) takes a half call's arrays. Half arrays stay half, read in place;
    every other real array is taken in float32, as a float32 call takes it. An input of
    another dtype, or an operand of more than a staged block's elements that would need a
    float32 copy (a float64 target, say), is NotInKernel: the staged path takes that call."""

    @staticmethod
    def float_input(obj, name):
        arr = as_numpy(obj)
        if is_half(getattr(arr, "dtype", None)):
            return contiguous(arr)
        arr = as_float_input(arr, name)
        if arr.dtype != np.float32:
            raise NotInKernel
        return arr

    @staticmethod
    def input(obj, name):
        arr = HalfHost.float_input(obj, name)
        return arr, arr

    @staticmethod
    def operand(obj, name, dtype):
        arr = as_numpy(obj)
        if not is_half(getattr(arr, "dtype", None)):
            arr = arr if type(arr) is np.ndarray else as_host_array(arr, name)
            if arr.dtype != np.float32 and arr.size > STAGE_ELEMENTS:
                raise NotInKernel
        return operand(arr, name, np.dtype(np.float32))

    option = operand

    @staticmethod
    def cast(arr, dtype):
        return HalfHost.operand(arr, "target", dtype)

    @staticmethod
    def count_outside(arr, lo, hi, nan_is_bad):
        """As Host's (lo, hi exact in float32), half data widened a staged block at a time."""
        if not is_half(arr.dtype):
            return Host.count_outside(arr, lo, hi, nan_is_bad)
        flat = arr.reshape(-1)
        buffer = np.empty(min(flat.size, STAGE_ELEMENTS), np.float32)
        bad = 0
        for start in range(0, flat.size, STAGE_ELEMENTS):
            part = flat[start:start + STAGE_ELEMENTS]
            bad += Host.count_outside(to_float32(part, buffer[:part.size]), lo, hi, nan_is_bad)
        return bad


HALF_HOST = HalfHost()


def rows_in_kernel(x, *arrays):
    """The row kernels widen a row of half x and what goes with it: half targets beside a
    float32 input are NotInKernel (staged)."""
    for a in arrays:   # (a loop, not any() over a generator: small calls)
        if a is not None and is_half(getattr(a, "dtype", None)) and not is_half(x.dtype):
            raise NotInKernel


def plan(name, arr, shape):
    """broadcast_plan of an operand the kernels read: a broadcast half operand (small: a
    weight, a var) is widened to float32, as the kernels read only full ones as half."""
    result = broadcast_plan(name, arr, shape)
    if result[1] is not None and is_half(arr.dtype):
        result = broadcast_plan(name, to_float32(arr), shape)
    return result


def outputs(shapes, dtype, out):
    """The gradient buffers of a half call: the caller's out= (float32 or `dtype`, checked) or
    new arrays in `dtype`; None where a shape is None."""
    given = _outs(out, len(shapes))
    return tuple(None if shape is None else _output(o, shape, dtype) for shape, o in zip(shapes, given))


def widened(obj):
    """A (small) half array, or torch half tensor, as float32; anything else as it is."""
    arr = as_numpy(obj)
    return to_float32(arr) if is_half(getattr(arr, "dtype", None)) else obj


def to_float32(a, out=None):
    """A half array widened to float32 (into `out`, C-contiguous, when given)."""
    a = np.asarray(a, order="C")   # (np.ascontiguousarray makes a 0-d array 1-d)
    if out is None:
        out = np.empty(a.shape, np.float32)
    widen(a.reshape(-1).view(np.uint16), out.reshape(-1), a.dtype == bfloat16(), get_num_threads())
    return out


def narrow_scalar(value, dtype):
    """A reduced loss in `dtype`: the float32 call's value (the float64 total rounded to
    float32), rounded once more to the half dtype (to nearest even; beyond its range, inf)."""
    with np.errstate(over="ignore"):
        return np.asarray(np.float32(value)).astype(dtype)[()]


def narrowed(loss, dtype):
    """A float32 call's loss (a scalar, or per-row/per-class losses) in `dtype`: narrowed when
    that is a half dtype (as narrow_scalar, or elementwise to nearest even), else as it is."""
    if not is_half(dtype):
        return loss
    if np.ndim(loss):
        return np.asarray(loss, np.float32).astype(dtype)
    return narrow_scalar(loss, dtype)


def store(values, target):
    """target[...] = values (float32), narrowed to target's half dtype, or copied."""
    if not is_half(target.dtype) or getattr(values, "dtype", None) == target.dtype:
        target[...] = values
        return
    values = np.asarray(values, np.float32, order="C")
    if target.flags.c_contiguous:
        narrow(values.reshape(-1), target.reshape(-1).view(np.uint16), target.dtype == bfloat16(), get_num_threads())
    else:
        staged = np.empty(values.shape, target.dtype)
        store(values, staged)
        target[...] = staged


def call(crit, arrays, want_grad, out, grad_output, mode, result_type):
    """The criterion's call on arrays of which some are float16/bfloat16 (see the module);
    `result_type` is the call's namedtuple (LossAndGrad; GradHess, whose fields then take the
    gradient's place and the hessian's, both narrowed to the input's dtype)."""
    arrays = [as_numpy(a) for a in arrays]
    differentiable = [i for i, name in enumerate(crit.arguments) if name in crit.differentiable]
    first = arrays[differentiable[0]] if differentiable else arrays[0]
    dtype = np.dtype(first.dtype) if is_half(getattr(first, "dtype", None)) else np.dtype(np.float32)
    if crit._half_kernels:   # read in place by the kernels' loops
        try:
            return crit._cpu(crit._spec(HALF_HOST, arrays, **mode), want_grad, out, grad_output, **mode)
        except NotInKernel:
            pass
    if not mode.get("hess") and _stageable(crit, arrays, want_grad, mode):
        try:
            return _staged(crit, arrays, want_grad, out, grad_output, mode, dtype, result_type)
        except (NotImplementedError, ValueError, IndexError, TypeError):
            # no partial state with these options (a callable distance, ...), or bad data: the
            # whole call raises its error with positions in the whole arrays, not in a block
            pass
    return _whole(crit, arrays, want_grad, out, grad_output, mode, dtype)


def _stageable(crit, arrays, want_grad, mode):
    """Whether blocks of rows give the whole's results: partial states for the loss, and every
    gradient per row (along axis 0 of an argument that has all the rows)."""
    if not crit._partial or crit.reduction == "none" and crit._partial_of_none:
        return False
    if crit.reduction != "none" and want_grad and not crit._chunked_gradient:
        return False
    axes = crit.row_axes
    rows = _rows(crit, arrays)
    for i, (a, name) in enumerate(zip(arrays, crit.arguments)):
        if a is None or isinstance(a, (int, float)):
            continue
        if axes[i] is None:   # taken whole by every block: fine unless its gradient sums over the rows
            if name in crit.differentiable and want_grad:
                return False
        elif np.ndim(a) <= axes[i] or np.shape(a)[axes[i]] != rows:   # broadcast, or no rows at all
            return False
    return not mode.get("partial") or crit.reduction != "none"


def _rows(crit, arrays):
    shape = np.shape(arrays[0])
    return shape[crit.row_axes[0]] if len(shape) > crit.row_axes[0] else 0


def _whole(crit, arrays, want_grad, out, grad_output, mode, dtype):
    """Every half array widened whole (a float32 copy), the float32 call, outputs narrowed."""
    widened = [to_float32(a) if is_half(getattr(a, "dtype", None)) else a for a in arrays]
    if grad_output is not None and is_half(getattr(as_numpy(grad_output), "dtype", None)):
        grad_output = to_float32(as_numpy(grad_output))
    result = crit._dispatch(widened, want_grad, None, grad_output, **mode)
    if mode.get("partial"):
        return result
    return _narrowed(result, out, dtype, reduced_loss=not mode.get("hess"))


def _narrowed(result, out, dtype, reduced_loss):
    """A float32 call's result in the half call's terms: outputs in `dtype` or in `out`."""
    loss = result[0]
    if isinstance(loss, np.ndarray) and loss.ndim:
        narrowed = np.empty(loss.shape, dtype)
        store(loss, narrowed)
        loss = narrowed
    elif reduced_loss:   # (not for grad_hess, whose first field is a gradient)
        loss = narrow_scalar(loss, dtype)
    grads = result[1]
    if grads is None:
        return type(result)(loss, None)
    many = isinstance(grads, tuple)
    outs = _outs(out, len(grads) if many else 1)
    placed = []
    for g, o in zip(grads if many else (grads,), outs):
        if g is None:
            placed.append(None)
            continue
        target = _output(o, g.shape, dtype)
        store(g, target)
        placed.append(target)
    return type(result)(loss, tuple(placed) if many else placed[0])


def _output(out, shape, dtype):
    """The caller's out= buffer (float32 or the input's dtype, the gradient's shape), or a new one."""
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray) or tuple(out.shape) != tuple(shape) or out.dtype not in (dtype, np.float32) \
            or not out.flags.writeable:
        fail(ValueError, "out", f"a writable array of shape {tuple(shape)} and dtype {dtype} or float32",
             f"{type(out).__name__} of shape {getattr(out, 'shape', None)} and dtype {getattr(out, 'dtype', None)}")
    return out


def _staged(crit, arrays, want_grad, out, grad_output, mode, dtype, result_type):
    """Blocks of rows, each half array widened into a reused float32 buffer (see the module)."""
    axes, rows = crit.row_axes, _rows(crit, arrays)
    row_elements = sum(int(np.prod(np.shape(a))) // max(rows, 1) for a, ax in zip(arrays, axes)
                       if a is not None and ax is not None and np.ndim(a))
    block = crit.block_rows(np.shape(arrays[0]))
    step = max(block, STAGE_ELEMENTS // max(row_elements, 1) // block * block)
    buffers = {}

    def chunk(r0, r1, values=None):
        parts = []
        for i, a in enumerate(arrays if values is None else values):
            ax = axes[i] if values is None else 0
            if a is None or np.ndim(a) == 0:
                parts.append(a)
                continue
            if ax is None:   # an argument every block takes whole (LinearCrossEntropyLoss's weight): widened once
                if is_half(a.dtype) and ("whole", i) not in buffers:
                    buffers["whole", i] = to_float32(a)
                parts.append(buffers.get(("whole", i), a))
                continue
            part = a[(slice(None),) * ax + (slice(r0, r1),)]
            if is_half(part.dtype):
                key = (i if values is None else "g", part.shape)
                if key not in buffers:   # (two shapes at most: the blocks' and the last one's)
                    buffers[key] = np.empty(part.shape, np.float32)
                part = to_float32(part, buffers[key])
            parts.append(part)
        return parts

    spans = [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)] or [(0, 0)]
    if crit.reduction == "none":
        return _staged_none(crit, arrays, chunk, spans, rows, want_grad, out, grad_output, dtype, result_type)
    state = None
    scale = scalar_grad_output(grad_output) if want_grad else 0.0
    grads = _gradients(crit, arrays, out, dtype) if want_grad else None
    one_pass = want_grad and crit.reduction == "sum"
    for r0, r1 in spans:
        parts = chunk(r0, r1)
        part = crit.partial(*parts)
        state = part if state is None else state + part
        if one_pass:
            _place(grads, crit._chunk_gradient(parts, scale), r0, r1)
    if mode.get("partial"):
        return state
    if want_grad and not one_pass:   # grad_output over the whole's divisor, as the one call divides it
        divisor = state.divisor.value() if state.divisor is not None else 1.0
        whole_scale = scale / divisor if divisor else 0.0
        for r0, r1 in spans:
            _place(grads, crit._chunk_gradient(chunk(r0, r1), whole_scale), r0, r1)
    loss = narrow_scalar(state.value(), dtype)
    return result_type(loss, _packed(crit, grads) if want_grad else None)


def _staged_none(crit, arrays, chunk, spans, rows, want_grad, out, grad_output, dtype, result_type):
    """'none': each block's losses and gradients, written into the whole's outputs."""
    go = as_numpy(grad_output) if grad_output is not None and np.ndim(grad_output) else grad_output
    grads = _gradients(crit, arrays, out, dtype) if want_grad else None
    losses = None
    for r0, r1 in spans:
        parts = chunk(r0, r1)
        g = chunk(r0, r1, [go])[0] if go is not None and np.ndim(go) else go
        result = crit._dispatch(parts, want_grad, None, g)
        if losses is None:
            losses = np.empty((rows,) + np.shape(result[0])[1:], dtype)
        store(result[0], losses[r0:r1])
        if want_grad:
            _place(grads, result[1], r0, r1)
    return result_type(losses, _packed(crit, grads) if want_grad else None)


def _gradients(crit, arrays, out, dtype):
    """The whole's gradient buffers, one per differentiable argument (None where it has none
    in this call), each with the axis its rows run along."""
    present = [i for i, name in enumerate(crit.arguments) if name in crit.differentiable]
    return [None if arrays[i] is None or isinstance(arrays[i], (int, float))
            else (_output(o, np.shape(arrays[i]), dtype), crit.row_axes[i])
            for i, o in zip(present, _outs(out, len(present)))]


def _packed(crit, grads):
    arrays = [None if g is None else g[0] for g in grads]
    return arrays[0] if len(crit.differentiable) == 1 else tuple(arrays)


def _outs(out, count):
    """out= per differentiable input: the caller's tuple, or one buffer for the first."""
    return out if isinstance(out, tuple) else (out,) + (None,) * (count - 1)


def _place(grads, block, r0, r1):
    """A block's gradients into the whole's, along each argument's row axis."""
    for target, g in zip(grads, block if isinstance(block, tuple) else (block,)):
        if target is not None and g is not None:
            whole, axis = target
            store(g, whole[(slice(None),) * axis + (slice(r0, r1),)])


