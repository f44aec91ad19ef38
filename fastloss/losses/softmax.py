"""The softmax family: losses over rows of class scores, the margin losses over rows, and
the Dice loss over the classes of each position.

Shapes, as torch: input (C,) with a target of shape (); input (N, C) with target (N,);
input (N, C, d1, ..., dk) with target (N, d1, ..., dk), read in place (the classes of a
position lie d1 * ... * dk apart). Class-index targets may be any integer dtype;
CrossEntropyLoss also takes probability targets of the input's shape.

Each criterion checks its call once in ``_spec`` (through `HOST`, or the GPU's `Device`) and
runs the spec on the CPU in ``_cpu`` or on the GPU in ``fastloss/cuda/softmax.py``.
"""
import math
from collections import namedtuple
from typing import Literal, Optional

import numpy as np

from .. import _half
from .._arrays import (
    ArrayLike,
    as_host_array,
    check_index_option,
    check_number,
    check_option,
    check_optional_count,
    check_same_shape,
    fail,
    ieee_quietly,
    scalar_grad_output,
)
from .._criterion import Criterion, GradHess, LossAndGrad, Reductions, as_dtype, reduced, row_grad_output
from .._exact import ExactSum, exact_sum
from .._kernels import softmax as _kernel
from .._kernels.memory import empty
from .._spec import ClassOptions, ClassRows, DiceSpec, LinearRows, MarginRows, divided, reduction
from .._targets import (
    class_layout,
    class_targets,
    class_weight,
    dice_dims,
    linear_shapes,
    multilabel_targets,
    weight_total,
)


def _block_rows(shape):
    """Samples of an (N, C, d1, ...) input that make whole row blocks of the kernels."""
    positions = math.prod(shape[2:]) if len(shape) > 1 else 1
    return _kernel.BLOCK_ROWS // math.gcd(_kernel.BLOCK_ROWS, positions) if positions else 1


class _ClassRowLoss(Criterion):
    """The criteria run by the class-row kernel: CrossEntropyLoss, SoftmaxFocalLoss, NLLLoss."""
    _focal_gamma = -1.0   # SoftmaxFocalLoss runs the same kernel with gamma >= 0
    label_smoothing, z_loss, softcap = 0.0, 0.0, None   # CrossEntropyLoss's options (NLLLoss has none)
    _log_probs = False    # NLLLoss: the input holds log-probabilities
    _probabilities = True   # whether float targets are class probabilities (else a TypeError)
    _partial = True
    _half_kernels = True    # cross entropy widens half rows itself (any layout, hessians too)

    def block_rows(self, shape):
        return _block_rows(shape)

    def _class_targets(self, take, target, input_shape, classes, target_shape, weight, dtype):
        """(class indices or None, probabilities or None, the exact 'mean' divisor of the
        cross-entropy part, the z-loss part's), after the checks. Class indices: host int64
        on the CPU path, the caller's device array on the GPU (checked on a host copy)."""
        target = take.array(target, "target")
        mean = self.reduction == "mean"
        if (target.dtype.kind == "f" or _half.is_half(target.dtype)) and self._probabilities:   # probabilities
            if tuple(target.shape) != tuple(input_shape):
                fail(ValueError, "target", f"class probabilities of the input's shape {tuple(input_shape)} "
                     f"or class indices of shape {target_shape}", tuple(target.shape))
            rows = math.prod(target_shape) if mean else 1
            return None, take.cast(target, dtype), ExactSum.of_int(rows), rows
        host, weights, kept = class_targets(take.to_host(target), target_shape, classes, self.ignore_index,
                                            weight)
        target = target if take.device else host
        return (target, None) + ((weights, kept) if mean else (ExactSum.of_int(1), 1))

    def _plain_call(self, arrays, want_grad, out, grad_output):
        """The most common call, ``crit(x, target)`` with x an aligned C-contiguous (N, C) float
        ndarray, target its (N,) int64 ndarray of valid class indices, no class weights and out
        None or a plain array apart from both, without the general path's conversions: the same
        spec, so the same kernel and bits (a test compares them). None for any other call (and
        for a bad index or an overlapping out, which the general path names)."""
        if len(arrays) != 2 or self.weight is not None:
            return None
        x, target = arrays
        plain = _kernel.plain_class_rows(x, target, self.ignore_index, out)
        if plain is None:
            return None
        N, C, kept = plain
        # the spec's parts but the arrays depend only on the shape, the kept rows and the
        # reduction (and the options: see Criterion._derived); kept without the arrays
        derived = self._derived()
        key = (N, C, kept, self.reduction)
        cached = derived.get("plain")
        if cached is None or cached[0] != key:
            mean = self.reduction == "mean"
            spec = self._rows_spec(x, target, None, None, N, C, 1, (N,), ExactSum.of_int(kept if mean else 1),
                                   kept if mean else 1)
            red, z_divisor = spec.reduction, spec.z_divisor
            # _cpu's gradient scales for grad_output 1
            scales = (1.0 / red.divisor if red.divisor else 0.0, 1.0 / z_divisor if z_divisor else 0.0)
            cached = derived["plain"] = (key, red, spec.divisors, z_divisor, spec.options, scales)
        red, options, (scale_ce, scale_z) = cached[1], cached[4], cached[5]
        if red.none or grad_output is not None:
            return self._cpu(ClassRows(x, target, None, None, N, C, 1, *cached[1:5], self._log_probs),
                             want_grad, out, grad_output)
        # a reduced loss with grad_output 1: what _cpu does, in the fewest steps
        grad = (empty(x.shape, x.dtype) if out is None else out) if want_grad else None
        if self._log_probs:
            total = _kernel.nll(x, N, C, 1, target, None, grad, None, None, options, scale_ce, self._num_threads())
        else:
            total = _kernel.cross_entropy(x, N, C, 1, target, None, None, grad, None, None, options, scale_ce,
                                          scale_z, self._num_threads())
        return LossAndGrad(as_dtype(total / red.divisor if red.divisor else math.nan, x.dtype), grad)

    def _spec(self, take, arrays, hess=False, partial=False):
        x = take.float_input(arrays[0], "input")
        N, C, D, target_shape = class_layout(x.shape)
        if hess and self.softcap:
            raise NotImplementedError(f"{type(self).__name__}: no hessian with softcap")
        work = _half.work_dtype(x.dtype)   # (float32 for half data)
        weight = class_weight(self.weight, C, work)
        target, target_prob, divisors, z_divisor = self._class_targets(take, arrays[1], x.shape, C, target_shape,
                                                                       weight, work)
        return self._rows_spec(x, target, target_prob, weight, N, C, D, target_shape, divisors, z_divisor, partial)

    def _rows_spec(self, x, target, target_prob, weight, N, C, D, target_shape, divisors, z_divisor, partial=False):
        """The ClassRows spec of checked arrays, with the options the kernels read."""
        divisor = divisors.value()
        z_loss = self.z_loss
        if partial and z_loss and divisor != z_divisor:
            # the weighted 'mean' with z_loss: two sums over two divisors, not one state
            raise NotImplementedError(f"{type(self).__name__}: no partial state with z_loss and class weights "
                                      "under 'mean' (two means)")
        # (positional for speed at small calls: ignore_index, label_smoothing, z_loss, softcap,
        # focal_gamma, weight_total, z_share, as ClassOptions names them)
        options = ClassOptions(self.ignore_index, self.label_smoothing, z_loss, self.softcap or 0.0,
                               self._focal_gamma, weight_total(weight, C), divisor / z_divisor if z_divisor else 0.0)
        return ClassRows(x, target, target_prob, weight, N * D, C, D, divided(self.reduction, target_shape, divisor),
                         divisors, z_divisor, options, self._log_probs)

    def _cpu(self, spec, want_grad, out, grad_output, hess=False, partial=False):
        x, red = spec.x, spec.reduction
        dtype = x.dtype
        _half.rows_in_kernel(x, spec.target_prob)   # (half data: the kernel widens a row at a time)
        grad = rows_grad_output = None
        scale_ce = scale_z = 0.0
        if want_grad:
            if red.none:
                if grad_output is not None:
                    rows_grad_output = row_grad_output(grad_output, red.loss_shape, dtype)
                scale_ce = scale_z = 1.0
            else:
                go = scalar_grad_output(grad_output)
                scale_ce = go / red.divisor if red.divisor else 0.0
                scale_z = go / spec.z_divisor if spec.z_divisor else 0.0
            grad = self._gradient_buffers((x.shape,), dtype, out)[0]
        loss_out = empty(red.loss_shape, dtype) if red.none else None
        hess_x = empty(x.shape, dtype) if hess else None
        if spec.log_probs:
            total = _kernel.nll(x, spec.rows, spec.classes, spec.positions, spec.target, spec.weight, grad, loss_out,
                                rows_grad_output, spec.options, scale_ce, self._num_threads(), partial)
        else:
            total = _kernel.cross_entropy(x, spec.rows, spec.classes, spec.positions, spec.target, spec.target_prob,
                                          spec.weight, grad, loss_out, rows_grad_output, spec.options, scale_ce,
                                          scale_z, self._num_threads(), hess_x, partial)
        if hess:
            return GradHess(grad, hess_x)
        if partial:
            return reduced(None, total, None if red.kind == "sum" else spec.divisors, dtype)
        return LossAndGrad(reduced(loss_out, total, red.divisor, dtype), grad)

    def _cuda(self, device, spec, want_grad, out, grad_output, hess=False, partial=False):
        from ..cuda.softmax import class_rows
        return class_rows(device, spec, want_grad, out, grad_output, hess)


class CrossEntropyLoss(_ClassRowLoss):
    r"""Cross entropy of logits against class indices or class probabilities, as torch's
    (log_softmax and NLL fused).

    For logits z of a row, its class index t and class weights w:
    ``l = (1 - eps) w_t (logsumexp(z) - z_t) + eps / C sum_c w_c (logsumexp(z) - z_c)``
    with eps = label_smoothing. Beyond torch, ``z_loss`` adds ``z_loss * logsumexp(z)^2`` per
    row that is not ignored, and ``softcap`` c first maps the logits to ``c tanh(z / c)``.

    Args:
      weight: class weights (C,), or None for 1.
      ignore_index: a target value whose rows count nothing (loss and gradient 0). Default -100.
      reduction: 'none' (one loss per row), 'mean' (divided by the sum of w_t over the rows
        that are not ignored; by the number of rows for probability targets) or 'sum'.
      label_smoothing: eps in [0, 1]. Default 0.
      z_loss: >= 0; its 'mean' divides by the number of rows that are not ignored. Default 0.
      softcap: > 0, or None (default) for none.

    Shapes:
      input (C,), (N, C) or (N, C, d1, ..., dk); target (), (N,) or (N, d1, ..., dk) of class
      indices (any integer dtype), or class probabilities of the input's shape.

    Returns:
      ``crit(input, target)`` -> LossAndGrad(loss, d loss / d input), the gradient with respect
      to the logits x even under softcap; ``grad_hess`` (not with softcap) also gives the exact
      diagonal of the hessian.

    References:
      torch.nn.CrossEntropyLoss; z-loss: Chowdhery et al., "PaLM" (2022); logit soft-capping:
      Gemma 2 (2024).
    """

    def __init__(self, weight: Optional[ArrayLike] = None, *, ignore_index: int = -100,
                 reduction: Reductions = "mean", label_smoothing: float = 0.0, z_loss: float = 0.0,
                 softcap: Optional[float] = None):
        super().__init__(reduction)
        self.weight = None if weight is None else as_host_array(weight, "weight")
        self.ignore_index = check_index_option("ignore_index", ignore_index)
        self.label_smoothing = check_number("label_smoothing", label_smoothing, nonnegative=True)
        if self.label_smoothing > 1:
            fail(ValueError, "label_smoothing", "a number in [0, 1]", repr(label_smoothing))
        self.z_loss = check_number("z_loss", z_loss, nonnegative=True)
        self.softcap = None if softcap is None else check_number("softcap", softcap, positive=True)

    _hessian = True


class NLLLoss(_ClassRowLoss):
    r"""Negative log likelihood of log-probabilities, as torch's: ``l = -w_t x_t`` for the
    row's class index t.

    Args:
      weight: class weights (C,), or None for 1.
      ignore_index: a target value whose rows count nothing. Default -100.
      reduction: 'none', 'mean' (divided by the sum of w_t over the rows that are not
        ignored) or 'sum'.

    Shapes:
      input (C,), (N, C) or (N, C, d1, ..., dk) of log-probabilities; target (), (N,) or
      (N, d1, ..., dk) of class indices (any integer dtype).

    Returns:
      LossAndGrad(loss, d loss / d input): -w_t (times the reduction's scale) at each row's
      target, 0 elsewhere.

    References:
      torch.nn.NLLLoss.
    """
    _log_probs = True
    _probabilities = False

    def __init__(self, weight: Optional[ArrayLike] = None, *, ignore_index: int = -100,
                 reduction: Reductions = "mean"):
        super().__init__(reduction)
        self.weight = None if weight is None else as_host_array(weight, "weight")
        self.ignore_index = check_index_option("ignore_index", ignore_index)


class SoftmaxFocalLoss(CrossEntropyLoss):
    r"""Multi-class focal loss on logits: with p = softmax(x),
    ``l = -w_t (1 - p_t)^gamma log p_t`` per row (gamma = 0 is CrossEntropyLoss).

    Args:
      gamma: the focusing exponent, >= 0. Default 2.
      weight: class weights (C,), or None for 1.
      ignore_index: a target value whose rows count nothing. Default -100.
      reduction: 'none', 'mean' (divided by the sum of w_t over the rows that are not
        ignored; nan when all are, as torch's cross entropy) or 'sum'.

    Shapes:
      as CrossEntropyLoss with class-index targets (a float target is a TypeError).

    Returns:
      LossAndGrad(loss, d loss / d input) with d loss / d x = K (p - onehot(t)),
      ``K = w_t ((1 - p_t)^gamma - gamma p_t (1 - p_t)^(gamma - 1) log p_t)``; ``grad_hess``
      gives the hessian's diagonal too.

    References:
      Lin et al., "Focal Loss for Dense Object Detection" (2017).
    """
    _probabilities = False

    def __init__(self, gamma: float = 2.0, weight: Optional[ArrayLike] = None, *, ignore_index: int = -100,
                 reduction: Reductions = "mean"):
        super().__init__(weight, ignore_index=ignore_index, reduction=reduction)
        self.gamma = check_number("gamma", gamma, nonnegative=True)
        self._focal_gamma = self.gamma

    def _options_for_repr(self):
        return {k: v for k, v in super()._options_for_repr().items()
                if k not in ("label_smoothing", "z_loss", "softcap")}


# rows per chunk of logits by default: the weight gradient's product sums over a chunk's rows,
# and BLAS runs that product well below peak when it is thinner (~0.85x torch at 128 rows, 1.2x
# at 512). A constant, not a function of N: BLAS rounds a row's logits differently in products
# of different heights, so the chunks (the row blocks of a partial state) must be the same
# products in a slice as in one call on the whole.
_CHUNK_ROWS = 512


class LinearCrossEntropyLoss(CrossEntropyLoss):
    r"""Cross entropy of a linear layer's logits, fused and chunked: exactly
    ``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)`` (torch 2.13's
    F.linear_cross_entropy), without ever holding the (N, C) logits.

    Rows go in chunks: each chunk's logits come from one matrix product, the cross-entropy
    kernel overwrites them with their gradient, and two more products give the gradients of
    the input and of linear_weight (accumulated over chunks). Matrix products run in NumPy's
    BLAS (cuBLAS on the GPU), with its own threads. float16/bfloat16 data is multiplied in
    float32: each chunk of rows is widened, and linear_weight a slab of classes at a time (no
    float32 copy of it); the weight's gradient is summed in float32 (in a float32 out=, or in
    float32 scratch of its size narrowed at the end).

    Args:
      weight, ignore_index, reduction, label_smoothing: as CrossEntropyLoss.
      chunk_rows: rows per chunk (a positive int), or None for 512 (deep enough for BLAS).

    Shapes:
      ``crit(input, linear_weight, target, linear_bias=None)``: input (N, H) or (H,),
      linear_weight (C, H), target (N,) or () of class indices or (N, C) probabilities,
      linear_bias (C,).

    Returns:
      LossAndGrad(loss, (d/d input, d/d linear_weight[, d/d linear_bias])), the last only
      when a bias is given.

    References:
      Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models" (2024); Liger-Kernel's
      fused linear cross entropy.
    """
    arguments = ("input", "linear_weight", "target", "linear_bias")
    differentiable = ("input", "linear_weight", "linear_bias")
    _hessian = False
    _half_kernels = True    # chunks and weight slabs widened in _cpu
    row_axes = (0, None, 0, None)   # linear_weight and linear_bias are the classes', whole in every slice

    def __init__(self, weight: Optional[ArrayLike] = None, *, ignore_index: int = -100,
                 reduction: Reductions = "mean", label_smoothing: float = 0.0, chunk_rows: Optional[int] = None):
        super().__init__(weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
        self.chunk_rows = check_optional_count("chunk_rows", chunk_rows)

    def _options_for_repr(self):
        return {k: v for k, v in super()._options_for_repr().items() if k not in ("z_loss", "softcap")}

    def __call__(self, input, linear_weight, target, linear_bias=None, *, out=None, grad_output=None):
        return self._dispatch((input, linear_weight, target, linear_bias), True, out, grad_output)

    def loss(self, input, linear_weight, target, linear_bias=None):
        return self._dispatch((input, linear_weight, target, linear_bias), False, None, None).loss

    def partial(self, input, linear_weight, target, linear_bias=None):
        return super().partial(input, linear_weight, target, linear_bias)

    def block_rows(self, shape):
        """Rows per chunk: slices of a partial state start on multiples of it, so they run the
        same products as one call."""
        return self.chunk_rows or _CHUNK_ROWS

    def _spec(self, take, arrays, partial=False):
        x, linear_weight = take.input(arrays[0], "input"), take.input(arrays[1], "linear_weight")
        bias = None if arrays[3] is None else take.input(arrays[3], "linear_bias")
        if take is _half.HALF_HOST and len({a[1].dtype for a in (x, linear_weight, bias) if a is not None}) > 1:
            raise _half.NotInKernel   # half beside float32 inputs: staged, all widened
        C, H = linear_shapes(x[1], linear_weight[1], None if bias is None else bias[1])
        dtype = _half.work_dtype(x[1].dtype)
        logits_shape = (C,) if x[1].ndim == 1 else (x[1].shape[0], C)
        target_shape = logits_shape[:-1]
        weight = class_weight(self.weight, C, dtype)
        target, target_prob, divisors, _ = self._class_targets(take, arrays[2], logits_shape, C, target_shape,
                                                               weight, dtype)
        options = ClassOptions(ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
                               weight_total=weight_total(weight, C))
        return LinearRows(x, linear_weight, bias, target, target_prob, weight, math.prod(target_shape), C, H,
                          divided(self.reduction, target_shape, divisors.value()), divisors, self.block_rows(None),
                          options, self.differentiable)

    def _cuda(self, device, spec, want_grad, out, grad_output, partial=False):
        from ..cuda.softmax import linear_cross_entropy
        return linear_cross_entropy(device, spec, want_grad, out, grad_output)

    @ieee_quietly
    def _cpu(self, spec, want_grad, out, grad_output, partial=False):
        x, linear_weight = spec.x[1], spec.linear_weight[1]
        bias = None if spec.bias is None else spec.bias[1]
        C, H, N, red, dtype = spec.classes, spec.hidden, spec.N, spec.reduction, x.dtype
        half, work = _half.is_half(dtype), _half.work_dtype(dtype)   # (half data: float32 math)
        bias = _half.widened(bias)
        target_prob = None if spec.target_prob is None else spec.target_prob.reshape(-1, C)
        target = None if spec.target is None else spec.target.reshape(-1)
        X = x.reshape(N, H)   # (N, not -1: H may be 0)
        rows = spec.chunk_rows
        # slices of the weight gradient about the input's size: memory stays far under the logits
        classes = max(1, min(C, N))
        scale, rows_grad_output, grads, loss_out = self._row_reduction(
            want_grad, red.loss_shape, red.divisor, grad_output,
            (x.shape, linear_weight.shape, None if bias is None else bias.shape), dtype, out)
        if rows_grad_output is not None:
            rows_grad_output = rows_grad_output.reshape(-1)
        kernel_loss = loss_out if loss_out is None or not half else np.empty(loss_out.shape, work)
        chunk_rows = min(rows, N)
        # half data: the weight in float32 slabs of about 4 MB (2^20 floats, at least a chunk's
        # rows of classes), the chunk's rows, its probability targets and its input gradient
        # widened or narrowed through float32 buffers; float data: the weight whole, the chunk
        # in place
        slab = min(C, max(chunk_rows, (1 << 20) // max(H, 1), 1)) if half else C
        weight_slab = np.empty((slab, H), work) if half else None
        x_wide = np.empty((chunk_rows, H), work) if half else None
        prob_wide = np.empty((chunk_rows, C), work) if _half.is_half(getattr(target_prob, "dtype", None)) else None
        # the input's gradient, summed over slabs (and narrowed) through float32 buffers
        grad_wide = np.empty((2, chunk_rows, H), work) if want_grad and half else None
        if want_grad:
            grad_x = grads[0].reshape(N, H)
            # the weight's gradient is summed in float32 (a half one narrowed at the end)
            grad_w = grads[1] if grads[1].dtype == work else np.empty(linear_weight.shape, work)
            if N == 0:
                grad_w.fill(0)
            bias_sum = np.zeros(C)   # the bias gradient, summed over chunks in float64
        logits = empty((chunk_rows, C), work)   # from the buffer cache: its pages stay mapped
        # a slice of the weight gradient, for the chunks after the first
        weight_slice = np.empty((classes, H), work) if want_grad and rows < N else None

        def weight_slabs():
            """(c0, c1, linear_weight[c0:c1] in float32) over the classes: one slab of float data."""
            for c0 in range(0, C, slab):
                c1 = min(C, c0 + slab)
                yield c0, c1, _half.to_float32(linear_weight[c0:c1], weight_slab[: c1 - c0]) if half \
                    else linear_weight[c0:c1]

        total = exact_sum(())   # the exact sum of the chunks' losses
        for r0 in range(0, N, rows):
            r1 = min(N, r0 + rows)
            chunk = logits[: r1 - r0]
            x_chunk = _half.to_float32(X[r0:r1], x_wide[: r1 - r0]) if half else X[r0:r1]
            for c0, c1, w in weight_slabs():
                np.matmul(x_chunk, w.T, out=chunk[:, c0:c1])
            if bias is not None:
                chunk += bias
            probs = None if target_prob is None else target_prob[r0:r1]
            if prob_wide is not None:
                probs = _half.to_float32(probs, prob_wide[: r1 - r0])
            # the row kernel runs on this thread alone: NumPy's BLAS leaves its worker threads
            # spinning for a while after each product, and kernel threads sharing their cores ran
            # the kernel several times slower (1.4 ms alone, 9 ms right after a product, at 512x8000)
            total = total + ExactSum(*_kernel.cross_entropy(
                chunk, r1 - r0, C, 1, None if target is None else target[r0:r1], probs, spec.weight,
                chunk if want_grad else None, None if kernel_loss is None else kernel_loss.reshape(-1)[r0:r1],
                None if rows_grad_output is None else rows_grad_output[r0:r1], spec.options,
                scale_ce=scale, scale_z=0.0, num_threads=1, partial=True))
            if want_grad:  # chunk now holds d loss / d logits
                self._input_gradient(chunk, weight_slabs(), grad_x[r0:r1], grad_wide)
                if r0 == 0:   # the first chunk writes the weight gradient, the others add to it
                    np.matmul(chunk.T, x_chunk, out=grad_w)
                for c0 in range(0, C if r0 else 0, classes):
                    c1 = min(C, c0 + classes)
                    np.matmul(chunk[:, c0:c1].T, x_chunk, out=weight_slice[: c1 - c0])
                    grad_w[c0:c1] += weight_slice[: c1 - c0]
                if bias is not None:
                    bias_sum += chunk.sum(axis=0, dtype=np.float64)
        if want_grad:
            if grad_w is not grads[1]:
                _half.store(grad_w, grads[1])
            if bias is not None:
                _half.store(bias_sum.astype(work), grads[2])
        if kernel_loss is not loss_out:
            _half.store(kernel_loss, loss_out)
        if partial:
            return reduced(None, total, None if red.kind == "sum" else spec.divisors, dtype)
        grads = grads if bias is not None else grads[:2]   # one gradient per input given
        return LossAndGrad(reduced(loss_out, total.value(), red.divisor, dtype), grads if want_grad else None)

    @staticmethod
    def _input_gradient(chunk, slabs, grad_x, wide):
        """grad_x = chunk @ linear_weight: one product of float data (wide None); of half data,
        slab by slab into wide[0] (the first written, the rest added through wide[1]) and then
        stored into grad_x."""
        if wide is None:
            for _, _, w in slabs:
                np.matmul(chunk, w, out=grad_x)
            return
        total, part = wide[0][: len(chunk)], wide[1][: len(chunk)]
        for c0, c1, w in slabs:
            np.matmul(chunk[:, c0:c1], w, out=part if c0 else total)
            if c0:
                total += part
        _half.store(total, grad_x)


class _RowLoss(Criterion):
    """Losses with one value per row of an (N, C) or (C,) input; 'mean' averages the rows."""
    _margin_loss = None   # its name in the kernel's MARGIN_LOSSES
    _partial = True
    _zero_d = True   # torch takes a 0-d input as one class (MultiLabelSoftMarginLoss does not)
    _half_kernels = True   # the kernel widens half rows itself
    margin, p = 0.0, 1   # MultiMarginLoss's options

    def block_rows(self, shape):
        return _kernel.BLOCK_ROWS

    def _spec(self, take, arrays, partial=False):
        x = take.float_input(arrays[0], "input")
        if x.ndim not in ((0, 1, 2) if self._zero_d else (1, 2)):
            fail(ValueError, "input", "shape (N, C) or (C,)", tuple(x.shape))
        rows, C = (1, 1) if x.ndim == 0 else (1, x.shape[0]) if x.ndim == 1 else tuple(x.shape)  # 0-d: one class
        target, target_real, weight = self._targets(take, arrays[1], x, C)
        return MarginRows(self._margin_loss, x, target, target_real, weight, rows, C,
                          reduction(self.reduction, () if x.ndim < 2 else (rows,), rows),
                          self.margin, self.p)

    def _cpu(self, spec, want_grad, out, grad_output, partial=False):
        x, red = spec.x, spec.reduction
        _half.rows_in_kernel(x, spec.target_real)   # (half data: the kernel widens a row at a time)
        scale, rows_grad_output, (grad,), loss_out = self._row_reduction(want_grad, red.loss_shape, red.divisor,
                                                                         grad_output, (x.shape,), x.dtype, out)
        total = _kernel.margin_loss(_kernel.MARGIN_LOSSES.index(spec.loss), x, spec.rows, spec.classes, spec.target,
                                    spec.target_real, spec.weight, grad, loss_out, rows_grad_output, scale,
                                    self._num_threads(), partial, spec.margin, spec.p)
        if partial:
            return reduced(None, total, red.divisor if red.kind == "mean" else None, x.dtype)
        return LossAndGrad(reduced(loss_out, total, red.divisor, x.dtype), grad)

    def _cuda(self, device, spec, want_grad, out, grad_output, partial=False):
        from ..cuda.softmax import margin_rows
        return margin_rows(device, spec, want_grad, out, grad_output)


class MultiMarginLoss(_RowLoss):
    r"""Multi-class hinge loss, as torch's: for the row's class index t,
    ``l = w_t / C sum_{c != t} max(0, margin - x_t + x_c)^p``.

    Args:
      p: 1 or 2. Default 1.
      margin: the margin. Default 1.
      weight: class weights (C,), or None for 1.
      reduction: 'none', 'mean' (over the rows) or 'sum'.

    Shapes:
      input (N, C), (C,) or () (one class, as torch); target (N,) or () of class indices.

    Returns:
      LossAndGrad(loss, d loss / d input).

    References:
      torch.nn.MultiMarginLoss; Weston and Watkins, "Multi-class Support Vector Machines" (1998).
    """
    _margin_loss = "multi_margin"

    def __init__(self, p: int = 1, margin: float = 1.0, weight: Optional[ArrayLike] = None, *,
                 reduction: Reductions = "mean"):
        super().__init__(reduction)
        if p not in (1, 2) or isinstance(p, bool):
            fail(ValueError, "p", "1 or 2", repr(p))
        self.p, self.margin = int(p), check_number("margin", margin)
        self.weight = None if weight is None else as_host_array(weight, "weight")

    def _targets(self, take, target, x, C):
        weight = class_weight(self.weight, C, _half.work_dtype(x.dtype))
        target = take.array(target, "target")
        host, _, _ = class_targets(take.to_host(target), tuple(x.shape)[:-1], C, None, None)
        return (target if take.device else host), None, weight

    def _plain_call(self, arrays, want_grad, out, grad_output):
        """``crit(x, target)`` on a plain (N, C) float ndarray, (N,) int64 class indices and out
        None or a plain array apart from both, without class weights, checked by
        plain_class_rows (as _ClassRowLoss's plain call): the general path's spec, so its bits."""
        if len(arrays) != 2 or self.weight is not None:
            return None
        plain = _kernel.plain_class_rows(arrays[0], arrays[1], None, out)
        if plain is None:
            return None
        N, C, _ = plain
        spec = MarginRows(self._margin_loss, arrays[0], arrays[1], None, None, N, C, reduction(self.reduction, (N,), N),
                          self.margin, self.p)
        return self._cpu(spec, want_grad, out, grad_output)


class MultiLabelMarginLoss(_RowLoss):
    r"""Multi-label hinge loss, as torch's: each target row lists class indices, ended by the
    first -1 (the set T); ``l = 1 / C sum_{j in T} sum_{c not in T} max(0, 1 - (x_j - x_c))``.

    Args:
      reduction: 'none', 'mean' (over the rows) or 'sum'.

    Shapes:
      input (N, C), (C,) or () (one class, as torch); target of the input's shape, integers.

    Returns:
      LossAndGrad(loss, d loss / d input).

    References:
      torch.nn.MultiLabelMarginLoss.
    """
    _margin_loss = "multilabel_margin"

    def __init__(self, *, reduction: Reductions = "mean"):
        super().__init__(reduction)

    def _targets(self, take, target, x, C):
        target = take.array(target, "target")
        if target.dtype.kind not in "iu":
            fail(TypeError, "target", "class indices of an integer dtype", f"dtype {target.dtype}")
        check_same_shape("target", target, x.shape, "the input's")
        if not take.device:
            target = multilabel_targets(target)
        elif take.count_bad_multilabel(target, C):
            multilabel_targets(take.to_host(target))   # names the first bad entry
        return target, None, None


class MultiLabelSoftMarginLoss(_RowLoss):
    r"""Multi-label logistic loss, as torch's:
    ``l = -1 / C sum_c w_c (y_c log sigmoid(x_c) + (1 - y_c) log sigmoid(-x_c))`` per row.

    Args:
      weight: class weights (C,), or None for 1.
      reduction: 'none', 'mean' (over the rows) or 'sum'.

    Shapes:
      input (N, C) or (C,); target of the input's shape (0/1 or probabilities).

    Returns:
      LossAndGrad(loss, d loss / d input) = w_c (sigmoid(x_c) - y_c) / C per row.

    References:
      torch.nn.MultiLabelSoftMarginLoss.
    """
    _margin_loss = "multilabel_soft_margin"
    _zero_d = False

    def __init__(self, weight: Optional[ArrayLike] = None, *, reduction: Reductions = "mean"):
        super().__init__(reduction)
        self.weight = None if weight is None else as_host_array(weight, "weight")

    def _targets(self, take, target, x, C):
        target = take.operand(target, "target", x.dtype)
        check_same_shape("target", target, x.shape, "the input's")
        return None, target, class_weight(self.weight, C, _half.work_dtype(x.dtype))


class DiceLoss(Criterion):
    r"""Soft Dice loss for segmentation (the formula of segmentation_models_pytorch up to 0.3).

    p = softmax over the classes (mode 'multiclass') or sigmoid ('binary', 'multilabel') of
    the input when from_logits, else the input itself. Targets are hard: one-hot of the class
    indices for 'multiclass', 0/1 otherwise. Positions whose target equals ignore_index are
    masked out of p and the target. Per class, over the batch and space,
    ``I_c = sum p y``, ``S_c = sum (p + y)``,
    ``dice_c = (2 I_c + smooth) / max(S_c + smooth, eps)`` and
    ``loss_c = (1 - dice_c) [sum y_c > 0]``.

    Args:
      mode: 'binary', 'multiclass' or 'multilabel'.
      from_logits: whether the input holds logits (True, default) or probabilities.
      smooth: >= 0, added to the numerator and the denominator. Default 0.
      eps: >= 0, the denominator's floor. Default 1e-7.
      ignore_index: a target value to mask out, or None (default).
      reduction: 'mean' (over the C classes; absent ones count 0), 'sum', or 'none' (C,).

    Shapes:
      input (N, C, *) (binary: (N, *) or (N, 1, *)); target (N, *) of class indices for
      'multiclass', else 0/1 of the input's shape.

    Returns:
      LossAndGrad(loss, d loss / d input), through the softmax or sigmoid when from_logits.

    References:
      Milletari et al., "V-Net" (2016); segmentation_models_pytorch's DiceLoss.
    """
    arguments = ("input", "target")
    _partial = True             # per-class sums: see _DicePartial
    _partial_of_none = True     # ('none' is per class, not per sample)
    _chunked_gradient = False   # each chunk's gradient needs the whole's per-class sums
    _half_kernels = True        # the kernel widens half planes a run at a time

    def __init__(self, mode: Literal["binary", "multiclass", "multilabel"], *, from_logits: bool = True,
                 smooth: float = 0.0, eps: float = 1e-7, ignore_index: Optional[int] = None,
                 reduction: Reductions = "mean"):
        super().__init__(reduction)
        check_option("mode", mode, ("binary", "multiclass", "multilabel"))
        self.mode, self.from_logits = mode, bool(from_logits)
        self.smooth = check_number("smooth", smooth, nonnegative=True)
        self.eps = check_number("eps", eps, nonnegative=True)
        self.ignore_index = check_index_option("ignore_index", ignore_index, optional=True)

    def block_rows(self, shape):
        S = dice_dims(shape, self.mode == "binary")[2]   # blocks are runs of DICE_BLOCK_POSITIONS of the N S positions
        return _kernel.DICE_BLOCK_POSITIONS // math.gcd(_kernel.DICE_BLOCK_POSITIONS, S) if S else 1

    def _spec(self, take, arrays, partial=False):
        x = take.float_input(arrays[0], "input")
        N, C, S = dice_dims(x.shape, self.mode == "binary")
        target_index = target_real = None
        if self.mode == "multiclass":
            target = take.array(arrays[1], "target")
            host, _, _ = class_targets(take.to_host(target), (N,) + tuple(x.shape)[2:], C, self.ignore_index, None)
            target_index = target if take.device else host
        else:
            target_real = take.operand(arrays[1], "target", _half.work_dtype(x.dtype))
            check_same_shape("target", target_real, x.shape, "the input's")
        link = "probabilities" if not self.from_logits else ("softmax" if self.mode == "multiclass" else "sigmoid")
        return DiceSpec(x, target_index, target_real, N, C, S, link, self.smooth, self.eps, self.ignore_index,
                        reduction(self.reduction, (C,), C))

    def _loss_from_sums(self, sums, dtype):
        """(loss, I, S, present, denominator) from the per-class sums (C, 3) of I, S and Y."""
        C = sums.shape[0]
        inner, total, present = sums[:, 0], sums[:, 1], sums[:, 2] > 0
        denominator = np.maximum(total + self.smooth, self.eps)
        losses = (1 - (2 * inner + self.smooth) / denominator) * present
        if self.reduction == "none":
            loss = losses.astype(dtype)
        else:
            loss = dtype.type(losses.sum() / C if self.reduction == "mean" else losses.sum())
        return loss, inner, total, present, denominator

    def _cuda(self, device, spec, want_grad, out, grad_output, partial=False):
        from ..cuda.softmax import dice
        return dice(device, spec, want_grad, out, grad_output)

    def _cpu(self, spec, want_grad, out, grad_output, partial=False):
        x, C, dtype = spec.x, spec.C, spec.x.dtype
        work = _half.work_dtype(dtype)   # half data: float32 math, the loss narrowed at the end
        run = dict(ignore_index=spec.ignore_index, mode=_kernel.DICE_MODES[spec.link], num_threads=self._num_threads())
        arrays = (x, spec.N, C, spec.S, spec.target_index, spec.target_real)
        if partial:
            return _DicePartial(tuple(ExactSum(*state) for state in _kernel.dice(*arrays, partial=True, **run)),
                                self, work)
        if not want_grad:
            return LossAndGrad(_half.narrowed(self._loss_from_sums(_kernel.dice(*arrays, **run), work)[0], dtype), None)
        # everything that can fail is checked before pass 1 writes p into the gradient buffer
        if spec.reduction.none:
            scale = np.ones(C) if grad_output is None else row_grad_output(grad_output, (C,), np.float64)
        else:
            scale = scalar_grad_output(grad_output) / spec.reduction.divisor
        grad = self._gradient_buffers((x.shape,), dtype, out)[0]
        loss, inner, total, present, denominator = self._loss_from_sums(_kernel.dice(*arrays, grad=grad, **run), work)
        # d loss_c / d p = m (coef_y y + coef_1): the numerator's 2 y / D and the denominator's
        # -(2 I + smooth) / D^2 (zero where the eps clamp holds)
        coef_y = np.ascontiguousarray(-2.0 * present / denominator * scale)
        coef_1 = np.ascontiguousarray(present * (2 * inner + self.smooth) * (total + self.smooth >= self.eps)
                                      / denominator ** 2 * scale)
        _kernel.dice(*arrays, grad=grad, coef_y=coef_y, coef_1=coef_1, **run)
        return LossAndGrad(_half.narrowed(loss, dtype), grad)


class _DicePartial(namedtuple("_DicePartial", ["sums", "criterion", "dtype"])):
    """DiceLoss's partial state over some samples: the exact per-class sums of I, S and Y as
    ExactSums (3 per class, class-major). Combines with + like `Partial`; `value()` is the
    Dice loss of the combined samples, bitwise the one-call loss."""
    __slots__ = ()

    def __add__(self, other):
        return _DicePartial(tuple(a + b for a, b in zip(self.sums, other.sums)), self.criterion, self.dtype)

    def value(self):
        sums = np.array([e.value() for e in self.sums], dtype=np.float64).reshape(-1, 3)
        return self.criterion._loss_from_sums(sums, self.dtype)[0]
