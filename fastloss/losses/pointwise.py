"""The pointwise family: losses that act element by element on an input and its target.

Every class here runs the same fused kernel (``_kernels/pointwise.pyx.tp``): one pass reads
each operand once, writes the gradient once and reduces the loss deterministically. A class
only holds its options, says which arrays feed the kernel's operands (target y, extra
operands a and b) and checks what torch checks.

Shapes: the input is any shape (0-d included). The target and the array options (weight,
pos_weight, var, grad_output for 'none') must broadcast to the input's shape; broadcast
operands are read in place, never expanded to the input's size.
"""
import math
from typing import Literal, Optional

import numpy as np

from .. import _half
from .._arrays import (
    ArrayLike,
    as_host_array,
    broadcast_plan,
    check_number,
    check_same_shape,
    fail,
    scalar_grad_output,
)
from .._criterion import Criterion, GradHess, LossAndGrad, Reductions, as_dtype, reduced
from .._half import work_dtype
from .._kernels import pointwise as _kernel
from .._kernels.memory import empty
from .._spec import HOST, PointOptions, PointwiseSpec, divided

_KERNEL_INDEX = {name: i for i, name in enumerate(_kernel.LOSSES)}
_NO_OPTIONS = PointOptions()
_ONE = {np.dtype(t): np.ones((), t) for t in (np.float32, np.float64)}  # absent weights: read-only 1
for _one in _ONE.values():
    _one.flags.writeable = False


class PointwiseLoss(Criterion):
    """Base of the pointwise family. Subclasses set `kernel` and may override `_operands`,
    `_options`, `_validate`, `_divisor` and `_grad_a` (for a second differentiable operand).
    The hooks take the arrays through `take` (`HOST`, or the GPU's Device) and state the
    operands and checks once, for both backends; `_spec` gathers them into a PointwiseSpec."""

    kernel = None
    _hessian = True             # for the kernels in HESSIAN_LOSSES (checked per call)
    _partial = True
    _half_kernels = True        # the kernels widen float16/bfloat16 tiles themselves
    target_same_shape = False   # torch requires target.shape == input.shape (BCE losses)

    # -- hooks --------------------------------------------------------------------------
    def _operands(self, x, rest, take):
        """{'y'|'a'|'b': (array, name)} from the arrays after the input."""
        target = take.operand(rest[0], "target", x.dtype)
        if self.target_same_shape:
            check_same_shape("target", target, x.shape)
        return {"y": (target, "target")}

    def _options(self):
        """The loss's options under the kernels' names."""
        return _NO_OPTIONS

    def _point_options(self):
        """_options(), built once per criterion and again after any option is set."""
        derived = self._derived()
        options = derived.get("options")
        if options is None:
            options = derived["options"] = self._options()
        return options

    def _kernel_name(self):
        return self.kernel

    def _validate(self, x, operands, take):
        pass

    def _divisor(self, x):
        return x.size if self.reduction == "mean" else 1

    def _grad_a(self, x, operands):
        """(shape, slab_m, slab_q) of the gradient of operand a, or None."""
        return None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # the fast call below serves the losses whose target needs no check of its own
        cls._plain = cls._operands is PointwiseLoss._operands and cls._cpu is PointwiseLoss._cpu

    def _plain_call(self, arrays, want_grad, out, grad_output):
        """The most common call, ``crit(x, y)`` (``crit(x1, x2, y)``, ``crit(input, target,
        var)``), with or without ``out=``, on C-contiguous NumPy arrays of one float dtype and
        shape and a reduced loss, without the general path's conversions: the same kernel with
        the same operands, so the same bits. At 64 elements the general path's Python work is
        most of the call's time. None when the call is not of that form (loss() and
        grad_output= go the general way)."""
        two = len(self.differentiable) == 2   # a gradient for operand a as well (elementwise here)
        if (not want_grad or grad_output is not None or self.reduction == "none" or len(arrays) != len(self.arguments)
                or not _kernel.plain_operands(arrays, out, 1 + two)):
            return None
        x = arrays[0]
        plans = self._fast_operands(x, arrays[1:])
        if plans is None:
            return None
        self._validate(x, plans, HOST)
        divisor = self._divisor(x)
        # what depends only on the size, dtype and divisor (and the options: see _derived):
        # the plan of grad_output 1 / divisor everywhere, the kernel's number and its options
        derived, key = self._derived(), (x.size, x.dtype, divisor)
        cached = derived.get("fast")
        if cached is None or cached[0] != key:
            cached = derived["fast"] = (key, broadcast_plan("grad_output", np.array(1.0 / divisor, x.dtype), x.shape),
                                        _KERNEL_INDEX[self._kernel_name()], self._point_options())
        if out is None:
            grads = (empty(x.shape, x.dtype), empty(x.shape, x.dtype)) if two else (empty(x.shape, x.dtype),)
        else:
            grads = out if two else (out,)
        total = _kernel.pointwise(cached[2], x, plans.get("y"), plans.get("a"), plans.get("b"), cached[1], None,
                                  grads[0], grads[1] if two else None, 1, 1, self._num_threads(), cached[3])
        return LossAndGrad(as_dtype(total / divisor, x.dtype), grads if two else grads[0])

    def _fast_operands(self, x, rest):
        """The operand plans (``{'y': (target, None), ...}``, read in place) of the fast call,
        given the arrays after the input, or None when this call needs the general path."""
        return {"y": (rest[0], None)} if self._plain else None

    def _ones_plan(self, x):
        """The plan of an absent weight (1 everywhere) over x, kept per size and dtype."""
        derived, key = self._derived(), (x.size, x.dtype)
        cached = derived.get("ones")
        if cached is None or cached[0] != key:
            cached = derived["ones"] = (key, broadcast_plan("weight", _ONE[x.dtype], x.shape))
        return cached[1]

    # -- the CPU path -------------------------------------------------------------------
    def block_rows(self, shape):
        row = math.prod(shape[1:])   # elements per row; blocks are BLOCK elements from the start
        return _kernel.BLOCK_ELEMENTS // math.gcd(_kernel.BLOCK_ELEMENTS, row) if row else 1

    def _spec(self, take, arrays, hess=False, partial=False):
        x = take.float_input(arrays[0], self.arguments[0])
        kernel = self._kernel_name()
        if hess and kernel not in _kernel.HESSIAN_LOSSES:
            raise NotImplementedError(f"{type(self).__name__}: no hessian with these options "
                                      "(PoissonNLLLoss has one with log_input=True)")
        operands = self._operands(x, arrays[1:], take)
        self._validate(x, operands, take)
        grad_a = None if hess else self._grad_a(x, operands)
        divisor = 1 if self.reduction == "none" else self._divisor(x)
        return PointwiseSpec(kernel, x, {key: operands[key] for key in "yab" if key in operands},
                             divided(self.reduction, tuple(x.shape), divisor), self._point_options(),
                             grad_a, self.differentiable)

    def _cpu(self, spec, want_grad, out, grad_output, hess=False, partial=False):
        x, red = spec.x, spec.reduction
        # half data (float16/bfloat16, from _half.call) runs the float32 kernels, which widen
        # each tile of it; losses and gradients come back in its dtype (or a float32 out=)
        shape, dtype, work = x.shape, x.dtype, work_dtype(x.dtype)
        plans = {key: _half.plan(operand[1], operand[0], shape) for key, operand in spec.operands.items()}
        grad_x = grad_a = g_plan = None
        slab_m = slab_q = 1
        if want_grad:
            if red.none:
                g = _ONE[work] if grad_output is None else _half.operand(grad_output, "grad_output", work)
                g_plan = _half.plan("grad_output", g, shape)
            else:
                scale = scalar_grad_output(grad_output) / red.divisor if red.divisor else 0.0
                g_plan = broadcast_plan("grad_output", np.array(scale, work), shape)
            two = len(spec.names) == 2
            grad_a_shape = None if spec.grad_a is None else spec.grad_a[0]
            grads = self._gradient_buffers((shape,) + ((grad_a_shape,) if two else ()), dtype, out)
            grad_x = grads[0]
            if spec.grad_a is not None:
                grad_a, (_, slab_m, slab_q) = grads[1], spec.grad_a
        loss_out = empty(shape, dtype) if red.none else None
        hess_x = empty(shape, dtype) if hess else None
        if grad_a is not None and not x.size:
            grad_a.fill(0)   # a broadcast operand's gradient sums over no elements (no block runs)
        total = _kernel.pointwise(
            _KERNEL_INDEX[spec.kernel], x, plans.get("y"), plans.get("a"), plans.get("b"), g_plan,
            loss_out, grad_x, grad_a, slab_m, slab_q, self._num_threads(), spec.options, hess_x, partial)
        if partial:
            return reduced(None, total, None if red.kind == "sum" else float(red.divisor), dtype)
        loss = loss_out if red.none else as_dtype(total / red.divisor if red.divisor else math.nan, dtype)
        if hess:
            return GradHess(grad_x, hess_x)
        if not want_grad:
            return LossAndGrad(loss, None)
        return LossAndGrad(loss, self._pack((grad_x, grad_a)))

    def _cuda(self, device, spec, want_grad, out, grad_output, hess=False, partial=False):
        from ..cuda.pointwise import pointwise
        return pointwise(device, spec, want_grad, out, grad_output, hess)


_SMALLEST_POSITIVE = {np.dtype(t): float(np.finfo(t).smallest_subnormal) for t in (np.float32, np.float64)}


def _check_range(arr, name, lo, hi, nan_is_bad, expected, take):
    """A ValueError naming the first element of arr outside [lo, hi] (and NaN when nan_is_bad)
    and its position, if there is one; lo and hi exact in arr's dtype."""
    if take.count_outside(arr, lo, hi, nan_is_bad):
        arr = take.to_host(arr)
        inside = (arr >= lo) & (arr <= hi)
        bad = np.flatnonzero(~inside if nan_is_bad else ~(inside | np.isnan(arr)))[0]
        position = np.unravel_index(bad, arr.shape) if arr.ndim else ()
        where = tuple(int(p) for p in position)
        fail(ValueError, name, expected, f"{arr.reshape(-1)[bad].item()!r} at position {where}")


def _weight_operand(value, name, x, take):
    return None if value is None else (take.option(value, name, x.dtype), name)


class L1Loss(PointwiseLoss):
    r"""Mean absolute error: ``l = |x - y|``.

    Args:
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input any shape (0-d included); target broadcastable to it (read in place, never expanded).

    Returns:
      LossAndGrad(loss, d loss / d input) with d l / d x = sgn(x - y) (0 at 0, as torch);
      ``grad_hess`` gives a hessian of 0.

    References:
      torch.nn.L1Loss.
    """
    kernel = "l1"

    def __init__(self, *, reduction: Reductions = "mean"):
        super().__init__(reduction)


class MSELoss(PointwiseLoss):
    r"""Mean squared error: ``l = (x - y)^2``.

    Args:
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input any shape (0-d included); target broadcastable to it (read in place, never expanded).

    Returns:
      LossAndGrad(loss, d loss / d input) with d l / d x = 2 (x - y); ``grad_hess`` gives the
      hessian 2 too.

    References:
      torch.nn.MSELoss.
    """
    kernel = "mse"

    def __init__(self, *, reduction: Reductions = "mean"):
        super().__init__(reduction)


class SmoothL1Loss(PointwiseLoss):
    r"""Smooth L1: ``l = (x - y)^2 / (2 beta)`` where ``|x - y| < beta``, else
    ``|x - y| - beta / 2``.

    Args:
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.
      beta: the switch point, >= 0 (0 is L1Loss, as torch). Default 1.

    Shapes:
      input any shape (0-d included); target broadcastable to it (read in place, never expanded).

    Returns:
      LossAndGrad(loss, d loss / d input); ``grad_hess`` gives the hessian diagonal too.

    References:
      torch.nn.SmoothL1Loss; Girshick, "Fast R-CNN" (2015).
    """
    kernel = "smooth_l1"

    def __init__(self, *, reduction: Reductions = "mean", beta: float = 1.0):
        super().__init__(reduction)
        self.beta = check_number("beta", beta, nonnegative=True)

    def _options(self):
        return PointOptions(beta=self.beta)

    def _kernel_name(self):
        # beta = 0: torch runs l1_loss, whose gradient differs at |x - y| = beta = 0
        return "l1" if self.beta == 0.0 else self.kernel


class HuberLoss(PointwiseLoss):
    r"""Huber loss: ``l = (x - y)^2 / 2`` where ``|x - y| <= delta``, else
    ``delta (|x - y| - delta / 2)``.

    Args:
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.
      delta: the switch point, > 0. Default 1.

    Shapes:
      input any shape (0-d included); target broadcastable to it (read in place, never expanded).

    Returns:
      LossAndGrad(loss, d loss / d input); ``grad_hess`` gives the hessian diagonal too.

    References:
      torch.nn.HuberLoss; Huber, "Robust Estimation of a Location Parameter" (1964).
    """
    kernel = "huber"

    def __init__(self, *, reduction: Reductions = "mean", delta: float = 1.0):
        super().__init__(reduction)
        self.delta = check_number("delta", delta, positive=True)

    def _options(self):
        return PointOptions(beta=self.delta)


class SoftMarginLoss(PointwiseLoss):
    r"""Two-class logistic loss: ``l = log(1 + exp(-y x))`` for y in {-1, 1},
    computed stably where torch's form overflows.

    Args:
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input any shape (0-d included); target broadcastable to it (read in place, never expanded).

    Returns:
      LossAndGrad(loss, d loss / d input) with d l / d x = -y sigmoid(-y x); ``grad_hess``
      gives the hessian diagonal too.

    References:
      torch.nn.SoftMarginLoss.
    """
    kernel = "soft_margin"

    def __init__(self, *, reduction: Reductions = "mean"):
        super().__init__(reduction)


class BCELoss(PointwiseLoss):
    r"""Binary cross entropy on probabilities:
    ``l = -w (y log x + (1 - y) log(1 - x))``, each log clamped at -100 as torch.

    Args:
      weight: per-element weights broadcastable to the input, or None for 1.
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input: probabilities in [0, 1], any shape (anything else, NaN included, is a
      ValueError, as torch); target: the input's shape.

    Returns:
      LossAndGrad(loss, d loss / d input) with d l / d x = w (x - y) / max(x (1 - x), 1e-12).

    References:
      torch.nn.BCELoss.
    """
    kernel = "bce"
    target_same_shape = True

    def __init__(self, weight: Optional[ArrayLike] = None, *, reduction: Reductions = "mean"):
        super().__init__(reduction)
        self.weight = None if weight is None else as_host_array(weight, "weight")

    def _operands(self, x, rest, take):
        operands = super()._operands(x, rest, take)
        operands["a"] = _weight_operand(self.weight, "weight", x, take) or (_ONE[work_dtype(x.dtype)], "weight")
        return operands

    def _fast_operands(self, x, rest):
        if self.weight is not None:
            return None
        return {"y": (rest[0], None), "a": self._ones_plan(x)}

    def _validate(self, x, operands, take):
        _check_range(x, "input", 0.0, 1.0, True, "all elements between 0 and 1", take)


class BCEWithLogitsLoss(PointwiseLoss):
    r"""Binary cross entropy on logits, the sigmoid fused in:
    ``l = w ((1 - y) x + (1 + (p - 1) y) log(1 + exp(-x)))`` with p = pos_weight.

    Args:
      weight: per-element weights broadcastable to the input, or None for 1.
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.
      pos_weight: weights of the positive term broadcastable to the input (usually (C,), one
        per class along the last axis), or None for 1.

    Shapes:
      input: logits, any shape; target: the input's shape.

    Returns:
      LossAndGrad(loss, d loss / d input) with d l / d x = w ((1 + (p - 1) y) sigmoid(x) - p y);
      ``grad_hess`` gives the hessian diagonal too.

    References:
      torch.nn.BCEWithLogitsLoss.
    """
    kernel = "bce_with_logits"
    target_same_shape = True

    def __init__(self, weight: Optional[ArrayLike] = None, *, reduction: Reductions = "mean",
                 pos_weight: Optional[ArrayLike] = None):
        super().__init__(reduction)
        self.weight = None if weight is None else as_host_array(weight, "weight")
        self.pos_weight = None if pos_weight is None else as_host_array(pos_weight, "pos_weight")

    def _operands(self, x, rest, take):
        operands = super()._operands(x, rest, take)
        one = _ONE[work_dtype(x.dtype)]
        operands["a"] = _weight_operand(self.weight, "weight", x, take) or (one, "weight")
        operands["b"] = _weight_operand(self.pos_weight, "pos_weight", x, take) or (one, "pos_weight")
        return operands

    def _fast_operands(self, x, rest):
        if self.weight is not None or self.pos_weight is not None:
            return None
        one = self._ones_plan(x)
        return {"y": (rest[0], None), "a": one, "b": one}


class PoissonNLLLoss(PointwiseLoss):
    r"""Poisson negative log likelihood: ``l = exp(x) - y x`` (log_input), else
    ``l = x - y log(x + eps)``; full adds Stirling's ``y log y - y + log(2 pi y) / 2`` where y > 1.

    Args:
      log_input: whether the input is the log of the rate (default) or the rate.
      full: whether to add Stirling's term. Default False.
      eps: added to the rate inside the log when not log_input. Default 1e-8.
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input any shape (0-d included); target broadcastable to it (read in place, never expanded).

    Returns:
      LossAndGrad(loss, d loss / d input); ``grad_hess`` (log_input only) gives the hessian
      diagonal too.

    References:
      torch.nn.PoissonNLLLoss.
    """
    kernel = "poisson_nll"

    def __init__(self, log_input: bool = True, full: bool = False, *, eps: float = 1e-8,
                 reduction: Reductions = "mean"):
        super().__init__(reduction)
        self.log_input, self.full = bool(log_input), bool(full)
        self.eps = check_number("eps", eps)
        self.kernel = "poisson_nll" + ("" if self.log_input else "_rate") + ("_full" if self.full else "")

    def _options(self):
        return PointOptions(eps=self.eps)


class GaussianNLLLoss(PointwiseLoss):
    r"""Gaussian negative log likelihood with a predicted variance:
    ``l = (log v + (x - y)^2 / v) / 2 [+ log(2 pi) / 2]`` with v = max(var, eps) (the clamp
    carries no gradient mask, as torch).

    Args:
      full: whether to add the constant log(2 pi) / 2. Default False.
      eps: the variance's floor. Default 1e-6.
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      ``crit(input, target, var)``: target broadcastable to the input; var the input's shape,
      its shape without the last axis, its shape with one axis of size 1 (one variance shared
      along it), or a float. A negative var is a ValueError.

    Returns:
      LossAndGrad(loss, (d/d input, d/d var)), the second of var's shape (None for a float);
      ``grad_hess`` gives the input's hessian diagonal.

    References:
      torch.nn.GaussianNLLLoss; Nix and Weigend, "Estimating the mean and variance of the
      target probability distribution" (1994).
    """
    kernel = "gaussian_nll"
    arguments = ("input", "target", "var")
    differentiable = ("input", "var")

    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: Reductions = "mean"):
        super().__init__(reduction)
        self.full = bool(full)
        self.eps = check_number("eps", eps)

    def _options(self):
        return PointOptions(full=self.full, eps=self.eps)

    def _operands(self, x, rest, take):
        operands = super()._operands(x, rest[:1], take)
        var = rest[1]
        if isinstance(var, (int, float)) and not isinstance(var, bool):
            operands["a"] = (np.full((), var, work_dtype(x.dtype)), "var")
            return operands
        var = take.operand(var, "var", x.dtype)
        slab = self._var_slab(tuple(x.shape), tuple(var.shape))
        operands["a"] = (var.reshape(slab[0]), "var")
        operands["var"] = var, slab
        return operands

    @staticmethod
    def _var_slab(shape, var_shape):
        """(var as broadcastable, slab_m, slab_q): var is shared along an axis of slab_m
        input elements that lie slab_q apart (slab_m == 1: var has the input's shape)."""
        if var_shape == shape:
            return shape, 1, 1
        if len(shape) >= 1 and var_shape == shape[:-1]:
            return var_shape + (1,), shape[-1], 1
        if len(var_shape) == len(shape):
            mismatched = [d for d, (s, v) in enumerate(zip(shape, var_shape)) if s != v]
            if len(mismatched) == 1 and var_shape[mismatched[0]] == 1:
                d = mismatched[0]
                return var_shape, shape[d], int(np.prod(shape[d + 1:], dtype=np.int64))
        fail(ValueError, "var", f"the input's shape {shape}, or it without the last dimension, "
             "or with one dimension of size 1", tuple(var_shape))

    def _fast_operands(self, x, rest):
        return {"y": (rest[0], None), "a": (rest[1], None)}   # var of the input's shape: elementwise

    def _grad_a(self, x, operands):
        if "var" not in operands:
            return None
        var, (_, slab_m, slab_q) = operands["var"]
        return var.shape, slab_m, slab_q

    def _validate(self, x, operands, take):
        var = operands["a"][0]
        if take.count_outside(var, 0.0, math.inf, False):
            fail(ValueError, "var", "non-negative entries", "negative entries")


class KLDivLoss(PointwiseLoss):
    r"""Kullback-Leibler divergence with a log-probability input x:
    ``l = y (log y - x)`` (0 where y = 0), or with log_target ``l = exp(y) (y - x)``.

    Args:
      reduction: 'none', 'mean' (over the elements, as torch), 'sum' or 'batchmean' (the sum
        over the input's first dimension: the KL divergence proper).
      log_target: whether the target holds log-probabilities. Default False.

    Shapes:
      input any shape (0-d included); target broadcastable to it (read in place, never expanded).

    Returns:
      LossAndGrad(loss, d loss / d input) = -y (or -exp(y)).

    References:
      torch.nn.KLDivLoss.
    """
    kernel = "kl_div"
    reductions = ("none", "mean", "sum", "batchmean")

    def __init__(self, *, reduction: Literal["none", "mean", "sum", "batchmean"] = "mean",
                 log_target: bool = False):
        super().__init__(reduction)
        self.log_target = bool(log_target)
        self.kernel = "kl_div_log_target" if self.log_target else "kl_div"

    def _divisor(self, x):
        if self.reduction == "batchmean":
            return x.shape[0] if x.ndim else 1
        return super()._divisor(x)


class HingeEmbeddingLoss(PointwiseLoss):
    r"""Hinge embedding loss: ``l = x`` where y = 1, ``max(0, margin - x)`` where
    y = -1 (both terms for other y, as torch).

    Args:
      margin: the margin. Default 1.
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input any shape (usually distances); target broadcastable, values +-1.

    Returns:
      LossAndGrad(loss, d loss / d input).

    References:
      torch.nn.HingeEmbeddingLoss.
    """
    kernel = "hinge_embedding"

    def __init__(self, margin: float = 1.0, *, reduction: Reductions = "mean"):
        super().__init__(reduction)
        self.margin = check_number("margin", margin)

    def _options(self):
        return PointOptions(margin=self.margin)


class MarginRankingLoss(PointwiseLoss):
    r"""Margin ranking loss: ``l = max(0, -y (x1 - x2) + margin)`` for y in {-1, 1}.

    Args:
      margin: the margin. Default 0.
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      ``crit(input1, input2, target)``: input1 and input2 of one shape; target broadcastable
      to it with the same number of dimensions (as torch).

    Returns:
      LossAndGrad(loss, (d/d input1, d/d input2)).

    References:
      torch.nn.MarginRankingLoss.
    """
    kernel = "margin_ranking"
    arguments = ("input1", "input2", "target")
    differentiable = ("input1", "input2")

    def __init__(self, margin: float = 0.0, *, reduction: Reductions = "mean"):
        super().__init__(reduction)
        self.margin = check_number("margin", margin)

    def _options(self):
        return PointOptions(margin=self.margin)

    def _operands(self, x, rest, take):
        x2 = take.float_input(rest[0], "input2")
        if work_dtype(x2.dtype) != work_dtype(x.dtype):   # (half data with float32 is a float32 call)
            fail(TypeError, "input2", f"dtype {x.dtype} (input1's)", f"dtype {x2.dtype}")
        check_same_shape("input2", x2, x.shape, "input1's shape")
        target = take.operand(rest[1], "target", x.dtype)
        if target.ndim != x.ndim:
            fail(ValueError, "target", f"{x.ndim} dimensions (as input1)", f"shape {tuple(target.shape)}")
        return {"y": (target, "target"), "a": (x2, "input2")}

    def _fast_operands(self, x, rest):
        return {"y": (rest[1], None), "a": (rest[0], None)}

    def _grad_a(self, x, operands):
        return x.shape, 1, 1


class SigmoidFocalLoss(PointwiseLoss):
    r"""Focal loss on logits, torchvision's sigmoid_focal_loss: with p = sigmoid(x),
    ce = BCEWithLogits(x, y), p_t = p y + (1 - p)(1 - y) and
    alpha_t = alpha y + (1 - alpha)(1 - y): ``l = alpha_t ce (1 - p_t)^gamma`` (no alpha_t
    when alpha < 0).

    Args:
      alpha: the positives' weight in [0, 1], or < 0 for none. Default 0.25.
      gamma: the focusing exponent, >= 0. Default 2.
      reduction: 'none', 'mean' (the default here, as every criterion; torchvision's is
        'none') or 'sum'.

    Shapes:
      input: logits, any shape; target broadcastable to it.

    Returns:
      LossAndGrad(loss, d loss / d input).

    References:
      Lin et al., "Focal Loss for Dense Object Detection" (2017); torchvision.ops.sigmoid_focal_loss.
    """
    kernel = "sigmoid_focal"

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, *, reduction: Reductions = "mean"):
        super().__init__(reduction)
        self.alpha = check_number("alpha", alpha)
        self.gamma = check_number("gamma", gamma, nonnegative=True)
        self.kernel = "sigmoid_focal_gamma2" if self.gamma == 2.0 else "sigmoid_focal"

    def _options(self):
        return PointOptions(alpha=self.alpha, gamma=self.gamma)


class PinballLoss(PointwiseLoss):
    r"""Pinball (quantile) loss for quantile q: ``l = q (y - x)`` where y >= x, else
    ``(1 - q) (x - y)``.

    Args:
      quantile: q in (0, 1), or a sequence of them: then the input's last dimension holds one
        prediction per quantile (XGBoost's ``quantile_alpha`` list). Default 0.5 (half the
        absolute error).
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input any shape (with a sequence of Q quantiles: (..., Q)); target broadcastable to it, or
      with a sequence the input's shape without its last dimension (one target per row).

    Returns:
      LossAndGrad(loss, d loss / d input) with d l / d x = -q where y >= x, else 1 - q (at y = x
      scikit-learn's -q); ``grad_hess`` gives the exact hessian, 0 (the boosting adapters'
      ``hessian="constant"`` gives the boosters' convention instead).

    References:
      scikit-learn's PinballLoss; XGBoost's ``reg:quantileerror``; LightGBM's ``quantile``;
      Koenker and Bassett, "Regression Quantiles" (1978).
    """
    kernel = "pinball"

    def __init__(self, quantile=0.5, *, reduction: Reductions = "mean"):
        super().__init__(reduction)
        if np.ndim(quantile) == 0:
            self.quantile = check_number("quantile", quantile)
            values = np.array([self.quantile])
        else:
            values = np.array([check_number("quantile", q) for q in quantile], np.float64)
            if values.ndim != 1 or not values.size:
                fail(ValueError, "quantile", "a number or a non-empty sequence of numbers", repr(quantile))
            self.quantile = tuple(float(q) for q in values)
        if not np.all((values > 0) & (values < 1)):
            fail(ValueError, "quantile", "values in the open interval (0, 1)", repr(quantile))

    def _quantiles(self, dtype):
        """The quantile operand in dtype: 0-d for one quantile, (Q,) for a sequence (read-only)."""
        derived = self._derived()
        key = ("quantile", np.dtype(dtype))
        if key not in derived:
            q = np.array(self.quantile, dtype)
            q.flags.writeable = False
            derived[key] = q
        return derived[key]

    def _operands(self, x, rest, take):
        q, shape = self._quantiles(work_dtype(x.dtype)), tuple(x.shape)
        target = take.operand(rest[0], "target", x.dtype)
        if q.ndim:   # one column per quantile, read from the kernels' side (a device copy on the GPU)
            if not shape or shape[-1] != q.size:
                fail(ValueError, "input", f"a last dimension of {q.size} (one column per quantile)",
                     f"shape {shape}")
            if tuple(target.shape) == shape[:-1]:
                target = target.reshape(shape[:-1] + (1,))   # one target per row
            q = take.option(q, "quantile", x.dtype)
        return {"y": (target, "target"), "a": (q, "quantile")}

    def _fast_operands(self, x, rest):
        q = self._quantiles(work_dtype(x.dtype))
        return None if q.ndim else {"y": (rest[0], None), "a": broadcast_plan("quantile", q, x.shape)}



class PseudoHuberLoss(PointwiseLoss):
    r"""Pseudo-Huber loss: ``l = delta^2 (sqrt(1 + ((x - y) / delta)^2) - 1)``, smooth
    everywhere: quadratic near 0, linear with slope delta far out.

    Args:
      delta: the scale where it turns from quadratic to linear, > 0 (XGBoost's
        ``huber_slope``). Default 1.
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input any shape (0-d included); target broadcastable to it (read in place, never expanded).

    Returns:
      LossAndGrad(loss, d loss / d input) with d l / d x = (x - y) / sqrt(1 + ((x - y) / delta)^2);
      ``grad_hess`` gives the hessian ``(1 + ((x - y) / delta)^2)^(-3/2)`` too. Finite for any
      finite input (the loss is computed without squaring large residuals).

    References:
      XGBoost's ``reg:pseudohubererror``; Charbonnier et al., "Two deterministic half-quadratic
      regularization algorithms for computed imaging" (1994).
    """
    kernel = "pseudo_huber"

    def __init__(self, delta: float = 1.0, *, reduction: Reductions = "mean"):
        super().__init__(reduction)
        self.delta = check_number("delta", delta, positive=True)

    def _options(self):
        return PointOptions(beta=self.delta)


class LogCoshLoss(PointwiseLoss):
    r"""Log-cosh loss: ``l = log(cosh(x - y))``, computed without overflow (no cosh) and to full
    precision near 0 (where it is (x - y)^2 / 2).

    Args:
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input any shape (0-d included); target broadcastable to it (read in place, never expanded).

    Returns:
      LossAndGrad(loss, d loss / d input) with d l / d x = tanh(x - y); ``grad_hess`` gives the
      hessian ``1 - tanh^2(x - y)`` too.

    References:
      optax.log_cosh; Chen et al., "Log hyperbolic cosine loss improves variational
      auto-encoder" (2019).
    """
    kernel = "log_cosh"

    def __init__(self, *, reduction: Reductions = "mean"):
        super().__init__(reduction)


class _RangedTargetLoss(PointwiseLoss):
    """A loss whose target must lie in a range (NaN passes through, as elsewhere)."""

    def _target_range(self, dtype):
        """(lo, hi, what the range is called): bounds exact in dtype."""
        return 0.0, math.inf, "non-negative values"

    def _validate(self, x, operands, take):
        lo, hi, expected = self._target_range(work_dtype(x.dtype))
        _check_range(operands["y"][0], "target", lo, hi, False, f"{expected} ({type(self).__name__})", take)


class TweedieLoss(_RangedTargetLoss):
    r"""Tweedie deviance with a log link, for power p in (1, 2) (compound Poisson-gamma:
    non-negative targets with exact zeros): on the raw prediction x (the log of the mean),
    ``l = y exp((1 - p) x) / (p - 1) + exp((2 - p) x) / (2 - p)``.

    Args:
      power: p, in the open interval (1, 2). Default 1.5.
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input any shape (0-d included); target broadcastable to it, every element >= 0.

    Returns:
      LossAndGrad(loss, d loss / d input) with d l / d x = exp((2 - p) x) - y exp((1 - p) x);
      ``grad_hess`` gives the hessian ``(2 - p) exp((2 - p) x) + (p - 1) y exp((1 - p) x)`` too.
      Exponentials are evaluated so that no result overflows where the true value is finite, and
      a zero target contributes 0 (not 0 * inf).

    References:
      XGBoost's ``reg:tweedie`` (``tweedie_variance_power``), the same gradient and hessian;
      scikit-learn's HalfTweedieLoss (log link), which equals l up to terms free of x (its
      ``loss`` equals l exactly); LightGBM's ``tweedie``.
    """
    kernel = "tweedie"

    def __init__(self, power: float = 1.5, *, reduction: Reductions = "mean"):
        super().__init__(reduction)
        self.power = check_number("power", power)
        if not 1.0 < self.power < 2.0:
            fail(ValueError, "power", "a number in the open interval (1, 2)", repr(power))

    def _options(self):
        return PointOptions(power=self.power)


class GammaLoss(_RangedTargetLoss):
    r"""Gamma deviance with a log link: on the raw prediction x (the log of the mean),
    ``l = x + y exp(-x)``.

    Args:
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input any shape (0-d included); target broadcastable to it, every element > 0.

    Returns:
      LossAndGrad(loss, d loss / d input) with d l / d x = 1 - y exp(-x); ``grad_hess`` gives the
      hessian ``y exp(-x)`` too (evaluated without overflow where it is finite).

    References:
      scikit-learn's HalfGammaLoss (the same loss); XGBoost's ``reg:gamma`` (the same gradient
      and hessian); LightGBM's ``gamma``.
    """
    kernel = "gamma"

    def __init__(self, *, reduction: Reductions = "mean"):
        super().__init__(reduction)

    def _target_range(self, dtype):   # y > 0: from the dtype's smallest positive number on
        return _SMALLEST_POSITIVE[dtype], math.inf, "positive values"


class ExponentialLoss(_RangedTargetLoss):
    r"""Exponential loss (AdaBoost's) on a raw score x: ``l = y exp(-x) + (1 - y) exp(x)``,
    which for labels y in {0, 1} is ``exp(-s x)`` with s = 2y - 1.

    Args:
      reduction: 'none' (the input's shape), 'mean' (over the elements) or 'sum'.

    Shapes:
      input any shape (0-d included); target broadcastable to it, every element in [0, 1].

    Returns:
      LossAndGrad(loss, d loss / d input) with d l / d x = (1 - y) exp(x) - y exp(-x);
      ``grad_hess`` gives the hessian, which equals the loss.

    References:
      scikit-learn's ExponentialLoss: the same loss, gradient and hessian of the same raw score.
      Its link has a factor 2: the probability it predicts is ``sigmoid(2 x)`` (the minimiser of
      the expected loss is half the log-odds), not ``sigmoid(x)``. Freund and Schapire (1997).
    """
    kernel = "exponential"

    def __init__(self, *, reduction: Reductions = "mean"):
        super().__init__(reduction)

    def _target_range(self, dtype):
        return 0.0, 1.0, "values in [0, 1]"
