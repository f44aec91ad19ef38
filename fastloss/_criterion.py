"""The Criterion base: reduction, out=, grad_output=, loss() versus __call__, and the choice
of backend. It knows no particular loss; each family module subclasses it.

Data flows one way: public class -> Criterion (which backend, out= overlap) -> the family's
``_spec`` (every check, once, through `_spec.HOST` or the GPU's `Device`) -> a plain spec ->
the family's ``_cpu(spec, ...)`` (the Cython kernels) or ``_cuda(device, spec, ...)``
(fastloss/cuda/, imported only then) -> back as LossAndGrad. The backend is chosen in
`backend_for`, and only there.
"""
import copy
import importlib.util
import math
from collections import namedtuple
from typing import Any, Literal

import numpy as np

from . import _half
from ._arrays import (
    ArrayLike,
    as_operand,
    check_no_overlap,
    check_option,
    check_out,
    fail,
    is_device_array,
    scalar_grad_output,
)
from ._exact import ExactSum, exact_sum
from ._kernels.memory import empty, extents_overlap, loss_scalar
from ._spec import HOST
from ._threads import get_num_threads

Reductions = Literal["none", "mean", "sum"]   # the reductions every criterion takes

LossAndGrad = namedtuple("LossAndGrad", ["loss", "grad"])
LossAndGrad.__doc__ = """(loss, grad): grad is one array, or a tuple with one per differentiable input."""
GradHess = namedtuple("GradHess", ["grad", "hess"])
GradHess.__doc__ = """(grad, hess): the gradient with respect to the input and the diagonal of the hessian."""


def backend_for(arrays):
    """'cpu' or 'cuda', from where the arrays live; mixing the two is an error."""
    host = device = False
    for a in arrays:
        if type(a) is np.ndarray:   # (the common case, without the general look)
            host = True
        elif a is not None and not isinstance(a, (int, float)):
            if is_device_array(a):
                device = True
            else:
                host = True
    if not device:
        return "cpu"
    if host:
        raise ValueError("arrays: expected all on the host or all on a CUDA device, got a mix of both")
    return "cuda"


class Partial(namedtuple("Partial", ["total", "divisor", "dtype"])):
    """The exact partial state of a reduced loss over a slice of the rows (`crit.partial`):
    the loss sum and, for 'mean', the divisor, each an `ExactSum`. Partials combine with
    ``+`` in any order and grouping, and ``value()`` of the combination is bitwise the loss of
    one call on the whole, provided every slice starts on a boundary of the kernel's fixed
    blocks (`Criterion.partial` says which)."""
    __slots__ = ()

    def __add__(self, other):
        divisor = None if self.divisor is None else self.divisor + other.divisor
        return Partial(self.total + other.total, divisor, self.dtype)

    def gradient_scale(self):
        """What the gradient of each slice of this whole is scaled by, as one call on the whole
        scales it: 1 for 'sum', 1 / the whole's divisor for 'mean' (see _chunk_gradient)."""
        if self.divisor is None:
            return 1.0
        divisor = self.divisor.value()
        return 1.0 / divisor if divisor else 0.0

    def value(self):
        """The loss, as the one-call loss: the exact sum rounded once, over the divisor."""
        total = self.total.value()
        if self.divisor is None:
            return as_dtype(total, self.dtype)
        divisor = self.divisor.value()
        return as_dtype(total / divisor if divisor else math.nan, self.dtype)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_dtype(value, dtype):
    """A float64 loss as a NumPy scalar of the loss's dtype (beyond float32's range: inf, quietly);
    for float16/bfloat16 the float32 loss, narrowed (fastloss/_half.py)."""
    scalar = loss_scalar(value, dtype)
    if scalar is not None:
        return scalar
    if dtype.itemsize == 2:
        return _half.narrow_scalar(value, dtype)
    if -_FLOAT32_MAX <= value <= _FLOAT32_MAX:
        return dtype.type(value)
    with np.errstate(over="ignore"):
        return dtype.type(value)


def row_grad_output(grad_output, shape, dtype):
    """grad_output for a 'none' loss of `shape`: an array of that shape, or a scalar spread over it
    (in float32 for half data, which the kernels widen: they read grad_output per row in float32)."""
    dtype = _half.work_dtype(dtype)
    g = as_operand(_half.widened(grad_output), "grad_output", dtype)
    if g.shape != shape:
        if g.size != 1:
            fail(ValueError, "grad_output", f"shape {shape} (the loss's) or a scalar", tuple(g.shape))
        g = np.full(shape, g.reshape(()), dtype)
    return g


def reduced(loss_out, total, divisor, dtype):
    """The loss: the per-row losses for 'none', else the float64 total over the divisor (nan
    for 0). With `total` an exact state (a `partial` call: a kernel's (scaled, special) or an
    ExactSum), the Partial state; the divisor then is exact too (a float is taken as one), or
    None for 'sum'."""
    if isinstance(total, (tuple, ExactSum)):
        if divisor is not None and not isinstance(divisor, ExactSum):
            divisor = exact_sum((divisor,))
        # (of half data: the float32 call's state, narrowed where the value is taken)
        return Partial(total if isinstance(total, ExactSum) else ExactSum(*total), divisor, _half.work_dtype(dtype))
    if loss_out is not None:
        return loss_out
    return as_dtype(total / divisor if divisor else math.nan, dtype)


class Criterion:
    """A loss criterion: ``loss, grad = crit(*arrays)`` or ``crit.loss(*arrays)``.

    Subclasses set `arguments` (torch's positional array names, in torch's order),
    `differentiable` (the ones with a gradient) and `reductions`, and implement
    ``_spec(take, arrays, **mode) -> spec`` (the checks; `take` is `HOST` or a `Device`),
    ``_cpu(spec, want_grad, out, grad_output, **mode) -> LossAndGrad`` and
    ``_cuda(device, spec, want_grad, out, grad_output, **mode)``. The modes are ``hess=True``
    (-> GradHess) and ``partial=True`` (-> a partial state, host arrays only), for the
    families whose `_hessian` and `_partial` flags say so.
    """

    arguments = ("input", "target")
    differentiable = ("input",)
    reductions = ("none", "mean", "sum")
    _hessian = False   # whether the backend methods take hess=True (see grad_hess)
    _partial = False   # whether they take partial=True (see partial)
    _chunked_gradient = True   # a chunk's gradient needs only the whole's divisor
    _partial_of_none = False   # a partial state for reduction='none' (DiceLoss: per-class losses)
    _host_arguments = ()       # arguments that may stay on the host in a GPU call (CTC's lengths)
    _half_kernels = False      # _spec and _cpu take half data through _half.HALF_HOST (see _half.py)

    def __init__(self, reduction: str = "mean"):
        check_option("reduction", reduction, self.reductions)
        self.reduction = reduction

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        self.__dict__.pop("_derived_values", None)   # an option changed: forget what came from it

    def _derived(self):
        """Values the families work out from the options once (a small call's time is mostly
        such Python work), by key; emptied whenever an attribute is set."""
        derived = self.__dict__.get("_derived_values")
        if derived is None:
            derived = self.__dict__["_derived_values"] = {}
        return derived

    def __call__(self, *arrays: ArrayLike, out: Any = None, grad_output: Any = None) -> LossAndGrad:
        """Loss and gradient. `out`: gradient buffer(s) to write into; `grad_output`: the
        incoming gradient (a scalar for reduced losses, the loss's shape for 'none')."""
        plain = self._plain_call(arrays, True, out, grad_output)
        return self._dispatch(arrays, True, out, grad_output) if plain is None else plain

    def loss(self, *arrays: ArrayLike) -> Any:
        """The loss alone: no gradient is computed and no gradient memory is taken."""
        plain = self._plain_call(arrays, False, None, None)
        return (self._dispatch(arrays, False, None, None) if plain is None else plain).loss

    def _plain_call(self, arrays, want_grad, out, grad_output):
        """A family's shortcut for its most common call (plain NumPy arrays, checked in C):
        the general path's kernel and operands without its conversions, so its bits, as a
        LossAndGrad; None for any other call, which the general path checks and names."""
        return None

    def grad_hess(self, *arrays: ArrayLike, grad_output: Any = None) -> GradHess:
        """The gradient with respect to the input and the exact diagonal of the hessian,
        from the same fused pass (as gradient boosting uses them), as `GradHess`. The
        criteria that have one: MSELoss, L1Loss, HuberLoss, SmoothL1Loss, SoftMarginLoss,
        BCEWithLogitsLoss, PoissonNLLLoss(log_input=True), GaussianNLLLoss (input only),
        CrossEntropyLoss (any targets and options but softcap) and SoftmaxFocalLoss."""
        return self._dispatch(arrays, True, None, grad_output, hess=True)

    def partial(self, *arrays: ArrayLike) -> Partial:
        """The exact partial state (`Partial`) of the loss over these arrays, a slice of the
        rows of a larger evaluation: partial states of slices combine with ``+`` to the one-call
        loss, bitwise, when each slice starts on a multiple of `block_rows` rows (the kernels'
        fixed blocks). For 'mean' and 'sum' (DiceLoss: also 'none'; its state is per-class
        sums); not for NTXentLoss (every row's loss involves all rows) or CrossEntropyLoss with
        z_loss and class weights under 'mean' (two means over two divisors)."""
        if self.reduction == "none" and not self._partial_of_none:
            raise ValueError(f"{type(self).__name__}: partial states are for reduced losses, not reduction='none'")
        if not self._partial:
            raise NotImplementedError(f"{type(self).__name__}: no partial state (every row's loss involves all rows)")
        return self._dispatch(arrays, False, None, None, partial=True)

    def _chunk_gradient(self, arrays, scale):
        """The gradient of a slice of the rows as a part of the whole's: the loss summed over
        the slice, times `scale` (`Partial.gradient_scale` of the whole), which is what one
        call on the whole gives these rows."""
        return self._with_reduction("sum")(*arrays, grad_output=scale)[1]

    def _with_reduction(self, reduction):
        """A copy of this criterion with another reduction (its other options shared)."""
        other = copy.copy(self)
        other.reduction = reduction
        return other

    @property
    def row_axes(self):
        """Per argument, the axis its rows (the samples a partial state slices) run along, or
        None for an argument every slice takes whole."""
        return (0,) * len(self.arguments)

    def block_rows(self, shape):
        """How many rows (first-axis entries) of an input of `shape` make whole kernel blocks:
        slices starting on multiples of it give partial states that combine bitwise."""
        return 1

    def _dispatch(self, arrays, want_grad, out, grad_output, **mode):
        if len(arrays) != len(self.arguments):
            raise TypeError(f"{type(self).__name__}: expected {len(self.arguments)} arrays "
                            f"({', '.join(self.arguments)}), got {len(arrays)}")
        backend = backend_for(arrays if not self._host_arguments else
                              [a for a, name in zip(arrays, self.arguments) if name not in self._host_arguments])
        if backend == "cuda" and importlib.util.find_spec("numba") is None:
            raise ImportError(f"{type(self).__name__}: CUDA arrays need the GPU backend: pip install 'fastloss[cuda]'")
        if out is not None:
            self._check_out_overlap(arrays, out, grad_output)
        if mode.get("hess") and not self._hessian:
            raise NotImplementedError(f"{type(self).__name__}: no hessian (grad_hess covers the losses "
                                      "its docstring lists)")
        if backend == "cpu":
            if _half.present(arrays) or grad_output is not None and _half.present((grad_output,)):
                return _half.call(self, arrays, want_grad, out, grad_output, mode,
                                  GradHess if mode.get("hess") else LossAndGrad)
            return self._cpu(self._spec(HOST, arrays, **mode), want_grad, out, grad_output, **mode)
        if mode.get("partial"):
            raise NotImplementedError(f"{type(self).__name__}: partial states are for host arrays")
        from .cuda._device import Device, float16_call, is_float16
        if any(is_float16(a) for a in list(arrays) + [grad_output]):
            return float16_call(self, arrays, want_grad, out, grad_output, mode,
                                GradHess if mode.get("hess") else LossAndGrad)
        device = Device(arrays)
        return self._cuda(device, self._spec(device, arrays, **mode), want_grad, out, grad_output, **mode)

    def _check_out_overlap(self, arrays, out, grad_output):
        """out= buffers must not share memory with what the call reads, nor with each other."""
        outs = out if isinstance(out, tuple) else (out,)
        if not extents_overlap(outs, arrays, grad_output):
            return
        check_no_overlap(outs, [f"out ({name})" for name in self.differentiable[:len(outs)]],
                         tuple(arrays) + (grad_output,), self.arguments + ("grad_output",))

    # ------------------------------------------------------------- helpers for the families
    @staticmethod
    def _num_threads():
        return get_num_threads()

    def _spec(self, take, arrays, **mode):
        raise NotImplementedError

    def _cpu(self, spec, want_grad, out, grad_output, **mode):
        raise NotImplementedError

    def _cuda(self, device, spec, want_grad, out, grad_output, **mode):
        raise NotImplementedError(f"{type(self).__name__}: no GPU path")

    def _gradient_buffers(self, shapes, dtype, out):
        """Fresh gradient arrays, or the caller's `out` buffers after checking them (of half
        data: in its dtype, or the caller's float32 ones)."""
        if dtype.itemsize == 2:
            return _half.outputs(shapes, dtype, out)
        if out is None:
            if len(shapes) == 1:   # (the common case, without a generator: small calls)
                return (None if shapes[0] is None else empty(shapes[0], dtype),)
            return tuple(None if s is None else empty(s, dtype) for s in shapes)
        if (type(out) is np.ndarray and len(shapes) == 1 and out.shape == shapes[0] and out.dtype == dtype
                and out.flags.carray and out.flags.writeable):
            return (out,)
        names = self.differentiable[: len(shapes)]
        present = [i for i, s in enumerate(shapes) if s is not None]
        if isinstance(out, tuple) and len(out) == len(shapes) != len(present):
            # one slot per differentiable input: those without a gradient must be None
            for i, buf in enumerate(out):
                if shapes[i] is None and buf is not None:
                    fail(ValueError, f"out ({names[i]})", "None (it has no gradient in this call)",
                         type(buf).__name__)
            out = tuple(out[i] for i in present)
        given = check_out(out, [shapes[i] for i in present], [dtype] * len(present),
                          [names[i] for i in present])
        buffers = [None] * len(shapes)
        for i, buf in zip(present, given):
            buffers[i] = empty(shapes[i], dtype) if buf is None else buf
        return tuple(buffers)

    def _row_reduction(self, want_grad, loss_shape, divisor, grad_output, grad_shapes, dtype, out):
        """What a kernel with one loss per row needs for the reduction: (the gradients' scale,
        per-row grad_output or None, the gradient buffers (None without a gradient), the
        per-row loss buffer for 'none' or None). 'mean' divides by `divisor`."""
        scale, rows_grad_output, grads = 0.0, None, (None,) * len(grad_shapes)
        none = self.reduction == "none"
        if want_grad:
            if none:
                scale = 1.0
                if grad_output is not None:
                    rows_grad_output = row_grad_output(grad_output, loss_shape, dtype)
            else:
                go = scalar_grad_output(grad_output)
                scale = go / divisor if divisor else 0.0
            grads = self._gradient_buffers(grad_shapes, dtype, out)
        return scale, rows_grad_output, grads, empty(loss_shape, dtype) if none else None

    def _pack(self, grads):
        return grads[0] if len(self.differentiable) == 1 else tuple(grads)

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self._options_for_repr().items())
        return f"{type(self).__name__}({options})"

    def _options_for_repr(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "kernel"}
