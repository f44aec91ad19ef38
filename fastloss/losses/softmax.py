"""The softmax family: losses over rows of class scores.

Shapes, as torch: input (C,) with a target of shape (); input (N, C) with target (N,);
input (N, C, d1, ..., dk) with target (N, d1, ..., dk), read in place (the classes of a
position lie d1 * ... * dk apart). Class-index targets may be any integer dtype;
CrossEntropyLoss also takes probability targets of the input's shape.
"""
import math
from collections import namedtuple

import numpy as np

from .._arrays import (as_float_input, as_host_array, as_int64_labels, as_operand, check_index_option, check_number,
                       check_option, check_optional_count, contiguous, fail, ieee_quietly, position_of, scalar_grad_output)
from .._criterion import Criterion, GradHess, LossAndGrad, reduced, row_grad_output as _row_grad_output
from .._exact import ExactSum, exact_sum
from .._kernels import softmax as _kernel
from .._kernels.memory import empty


def _layout(x):
    """(samples N, classes C, positions per sample D, the target's shape)."""
    if x.ndim == 0:
        fail(ValueError, "input", "at least 1 dimension (C,) or (N, C, ...)", "a 0-d array")
    if x.ndim == 1:
        return 1, x.shape[0], 1, ()
    return x.shape[0], x.shape[1], math.prod(x.shape[2:]), (x.shape[0],) + x.shape[2:]


def _round_up(n, multiple):
    return -(-n // multiple) * multiple


def _block_rows(shape):
    """Samples of an (N, C, d1, ...) input that make whole row blocks of the kernels."""
    positions = math.prod(shape[2:]) if len(shape) > 1 else 1
    return _kernel.BLOCK_ROWS // math.gcd(_kernel.BLOCK_ROWS, positions) if positions else 1


def _expected_classes(classes, ignore_index):
    return f"class indices in [0, {classes})" + ("" if ignore_index is None else f" or ignore_index {ignore_index}")


def _class_targets(target, target_shape, classes, ignore_index, weight):
    """int64 targets after the checks; (targets, the exact sum of the target weights, an
    ExactSum, kept rows). ignore_index None: every target must be a class."""
    if target.dtype.kind in "iub" and target.shape != target_shape:
        fail(ValueError, "target", f"shape {target_shape}", tuple(target.shape))
    if target.dtype != np.int64 or not target.flags.carray:
        target = as_int64_labels(target, "target", lambda: _expected_classes(classes, ignore_index))
    bad, value, weights, kept = _kernel.check_targets(
        target, classes, ignore_index, None if weight is None else contiguous(weight, np.float64))
    if bad >= 0:
        raise IndexError(f"target: expected {_expected_classes(classes, ignore_index)}, got {value} "
                         f"at position {position_of(bad, target_shape)}")
    return target, ExactSum.of_int(kept) if weights is None else ExactSum(*weights), kept


def _weight_total(weight, classes):
    """The sum of the class weights, as the kernel's label smoothing uses it (C without weights)."""
    return float(classes) if weight is None else float(weight.sum(dtype=np.float64))


def _class_weight(weight, classes, dtype):
    if weight is None:
        return None
    if weight.dtype.kind not in "biuf":
        fail(TypeError, "weight", "real class weights", f"dtype {weight.dtype}")
    if weight.shape != (classes,):
        fail(ValueError, "weight", f"shape ({classes},) (one per class)", tuple(weight.shape))
    return contiguous(weight, dtype)


class CrossEntropyLoss(Criterion):
    """Cross entropy of logits against class indices or class probabilities, as torch's
    (log_softmax and NLL fused). For logits z, class index t, weights w:
    ``l = (1 - eps) w_t (logsumexp(z) - z_t) + eps / C sum_c w_c (logsumexp(z) - z_c)``
    (eps = label_smoothing); 'mean' divides by the sum of w_t over the rows that are not
    ignore_index (by the number of rows for probability targets).

    Beyond torch: ``z_loss`` adds z_loss * logsumexp(z)^2 per row that is not ignored ('mean'
    divides that part by the number of such rows), and ``softcap`` c first maps the logits to
    c tanh(x / c) (the gradient is still with respect to x). grad: d(loss)/d(input).
    """
    arguments = ("input", "target")
    _focal_gamma = -1.0   # SoftmaxFocalLoss runs the same kernel with gamma >= 0

    def __init__(self, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0,
                 z_loss=0.0, softcap=None):
        super().__init__(reduction)
        self.weight = None if weight is None else as_host_array(weight, "weight")
        self.ignore_index = check_index_option("ignore_index", ignore_index)
        self.label_smoothing = check_number("label_smoothing", label_smoothing, nonnegative=True)
        if self.label_smoothing > 1:
            fail(ValueError, "label_smoothing", "a number in [0, 1]", repr(label_smoothing))
        self.z_loss = check_number("z_loss", z_loss, nonnegative=True)
        self.softcap = None if softcap is None else check_number("softcap", softcap, positive=True)

    def _targets(self, target, input_shape, target_shape, C, weight):
        """(class indices or None, probabilities or None, the 'mean' divisors of the
        cross-entropy part as an ExactSum and of the z-loss part), after the checks. target:
        an array (probabilities: the GPU path's device array; class indices on the host)."""
        if target.dtype.kind == "f":  # probabilities, one per class
            if target.shape != input_shape:
                fail(ValueError, "target", f"class probabilities of the input's shape {input_shape} "
                     f"or class indices of shape {target_shape}", tuple(target.shape))
            rows = math.prod(target_shape) if self.reduction == "mean" else 1
            return None, target, ExactSum.of_int(rows), rows
        target, weights, kept = _class_targets(target, target_shape, C, self.ignore_index, weight)
        return (target, None) + ((weights, kept) if self.reduction == "mean" else (ExactSum.of_int(1), 1))

    _hessian = True
    _partial = True

    def block_rows(self, shape):
        return _block_rows(shape)

    def _cpu(self, arrays, want_grad, out, grad_output, hess=False, partial=False):
        x = as_float_input(arrays[0], "input")
        N, C, D, target_shape = _layout(x)
        rows, dtype = N * D, x.dtype
        if hess and self.softcap:
            raise NotImplementedError(f"{type(self).__name__}: no hessian with softcap")
        weight = _class_weight(self.weight, C, dtype)
        target, target_prob, ce_divisors, z_divisor = self._targets(as_host_array(arrays[1], "target"), x.shape,
                                                                    target_shape, C, weight)
        ce_divisor = ce_divisors.value()
        if partial and self.z_loss and ce_divisor != z_divisor:
            # the weighted 'mean' with z_loss: two sums over two divisors, not one state
            raise NotImplementedError(f"{type(self).__name__}: no partial state with z_loss and class weights "
                                      "under 'mean' (two means)")
        target_prob = None if target_prob is None else contiguous(target_prob, dtype)
        none = self.reduction == "none"
        grad = row_grad_output = None
        scale_ce = scale_z = 0.0
        if want_grad:
            if none:
                if grad_output is not None:
                    row_grad_output = _row_grad_output(grad_output, target_shape, dtype)
                scale_ce = scale_z = 1.0
            else:
                go = scalar_grad_output(grad_output)
                scale_ce = go / ce_divisor if ce_divisor else 0.0
                scale_z = go / z_divisor if z_divisor else 0.0
            grad = self._gradient_buffers((x.shape,), dtype, out)[0]
        loss_out = empty(target_shape, dtype) if none else None
        hess_x = empty(x.shape, dtype) if hess else None
        total = _kernel.cross_entropy(
            x, rows, C, D, target, target_prob, weight, grad, loss_out, row_grad_output,
            _weight_total(weight, C), self.ignore_index,
            self.label_smoothing, self.z_loss, self.softcap or 0.0, scale_ce, scale_z,
            ce_divisor / z_divisor if z_divisor else 0.0, self._num_threads(), self._focal_gamma, hess_x, partial)
        if hess:
            return GradHess(grad, hess_x)
        if partial:
            return reduced(None, total, None if self.reduction == "sum" else ce_divisors, dtype)
        return LossAndGrad(reduced(loss_out, total, ce_divisor, dtype), grad)

    def _cuda(self, arrays, want_grad, out, grad_output, hess=False, partial=False):
        from ..cuda.softmax import cross_entropy
        return cross_entropy(self, arrays, want_grad, out, grad_output, hess, partial)


class NLLLoss(Criterion):
    """Negative log likelihood of log-probabilities: ``l = -w_t x_t`` for class index t;
    'mean' divides by the sum of w_t over the rows that are not ignore_index.
    grad: d(loss)/d(input), -w_t (times the reduction's scale) at each row's target."""
    arguments = ("input", "target")

    def __init__(self, weight=None, *, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.weight = None if weight is None else as_host_array(weight, "weight")
        self.ignore_index = check_index_option("ignore_index", ignore_index)

    _partial = True

    def block_rows(self, shape):
        return _block_rows(shape)

    def _cpu(self, arrays, want_grad, out, grad_output, partial=False):
        x = as_float_input(arrays[0], "input")
        N, C, D, target_shape = _layout(x)
        dtype = x.dtype
        weight = _class_weight(self.weight, C, dtype)
        target, weights, _ = _class_targets(as_host_array(arrays[1], "target"), target_shape, C,
                                            self.ignore_index, weight)
        divisor = weights.value() if self.reduction == "mean" else 1
        scale, row_grad_output, (grad,), loss_out = self._row_reduction(want_grad, target_shape, divisor,
                                                                        grad_output, (x.shape,), dtype, out)
        total = _kernel.nll(x, N * D, C, D, target, weight, grad, loss_out, row_grad_output,
                            self.ignore_index, scale, self._num_threads(), partial)
        if partial:
            return reduced(None, total, weights if self.reduction == "mean" else None, dtype)
        return LossAndGrad(reduced(loss_out, total, divisor, dtype), grad)

    def _cuda(self, arrays, want_grad, out, grad_output, partial=False):
        from ..cuda.softmax import cross_entropy
        return cross_entropy(self, arrays, want_grad, out, grad_output, partial=partial, log_probs=True)


class SoftmaxFocalLoss(CrossEntropyLoss):
    """Multi-class focal loss on logits (Lin et al. 2017): with p = softmax(x),
    ``l = -w_t (1 - p_t)^gamma log p_t`` per row; shapes and targets as CrossEntropyLoss with
    class indices; 'mean' divides by the sum of w_t over the rows that are not ignore_index
    (all ignored: nan, as torch's cross entropy). gamma = 0 is CrossEntropyLoss.
    grad: d(loss)/d(input) = K (p - onehot(t)), K = w_t ((1 - p_t)^gamma - gamma p_t (1 - p_t)^(gamma - 1) log p_t)."""

    def __init__(self, gamma=2.0, weight=None, *, ignore_index=-100, reduction="mean"):
        super().__init__(weight, ignore_index=ignore_index, reduction=reduction)
        self.gamma = check_number("gamma", gamma, nonnegative=True)
        self._focal_gamma = self.gamma

    def _options_for_repr(self):
        return {k: v for k, v in super()._options_for_repr().items()
                if k not in ("label_smoothing", "z_loss", "softcap")}

    def _cpu(self, arrays, want_grad, out, grad_output, hess=False, partial=False):
        target = as_host_array(arrays[1], "target")
        if target.dtype.kind == "f":
            fail(TypeError, "target", "class indices of an integer dtype", f"dtype {target.dtype}")
        return super()._cpu((arrays[0], target), want_grad, out, grad_output, hess, partial)


# rows per chunk of logits by default: the weight gradient's product sums over a chunk's rows,
# and BLAS runs that product well below peak when it is thinner (~0.85x torch at 128 rows, 1.2x
# at 512). A constant, not a function of N: BLAS rounds a row's logits differently in products
# of different heights, so the chunks (the row blocks of a partial state) must be the same
# products in a slice as in one call on the whole.
_CHUNK_ROWS = 512


class LinearCrossEntropyLoss(CrossEntropyLoss):
    """Cross entropy of a linear layer's logits, fused and chunked: exactly
    ``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)`` (torch 2.13's
    F.linear_cross_entropy), without ever holding the (N, C) logits.

    ``crit(input, linear_weight, target, linear_bias=None)``: input (N, H) or (H,),
    linear_weight (C, H), linear_bias (C,); targets, weight, ignore_index, label_smoothing and
    reductions as CrossEntropyLoss. Rows go in chunks of `chunk_rows` (512 by default, deep
    enough for BLAS): each chunk's logits come from one matrix product,
    the cross-entropy kernel overwrites them with their gradient, and two more products give the gradients of
    the input and of linear_weight (accumulated over chunks). grad: (d/d input,
    d/d linear_weight, d/d linear_bias), the last only when a bias is given. Matrix products run in
    NumPy's BLAS, with its own threads.
    """
    arguments = ("input", "linear_weight", "target", "linear_bias")
    differentiable = ("input", "linear_weight", "linear_bias")
    _hessian = False
    _partial = True
    row_axes = (0, None, 0, None)   # linear_weight and linear_bias are the classes', whole in every slice

    def __init__(self, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0,
                 chunk_rows=None):
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
        return self._chunk()

    def _chunk(self):
        """Rows per chunk of logits: chunk_rows, or _CHUNK_ROWS. Slices of a partial state start
        on multiples of it, so they run the same products as one call."""
        return self.chunk_rows or _CHUNK_ROWS

    def _cuda(self, arrays, want_grad, out, grad_output, partial=False):
        from ..cuda.softmax import linear_cross_entropy
        return linear_cross_entropy(self, arrays, want_grad, out, grad_output, partial)

    @ieee_quietly
    def _cpu(self, arrays, want_grad, out, grad_output, partial=False):
        x = as_float_input(arrays[0], "input")
        dtype = x.dtype
        linear_weight = as_float_input(arrays[1], "linear_weight")
        bias = None if arrays[3] is None else as_float_input(arrays[3], "linear_bias")
        C, H = _linear_shapes(x, linear_weight, bias)
        logits_shape = (C,) if x.ndim == 1 else (x.shape[0], C)
        target_shape = logits_shape[:-1]
        weight = _class_weight(self.weight, C, dtype)
        target, target_prob, divisors, _ = self._targets(as_host_array(arrays[2], "target"), logits_shape,
                                                         target_shape, C, weight)
        divisor = divisors.value()
        target_prob = None if target_prob is None else contiguous(target_prob, dtype).reshape(-1, C)
        target = None if target is None else target.reshape(-1)
        X = x.reshape(-1, H)
        N = X.shape[0]
        # slices of the weight gradient about the input's size: memory stays far under the logits
        rows = self._chunk()
        classes = max(1, min(C, N))
        scale, row_grad_output, grads, loss_out = self._row_reduction(
            want_grad, target_shape, divisor, grad_output,
            (x.shape, linear_weight.shape, None if bias is None else bias.shape), dtype, out)
        if row_grad_output is not None:
            row_grad_output = row_grad_output.reshape(-1)
        if want_grad:
            grad_x = grads[0].reshape(-1, H)
            if N == 0:
                grads[1].fill(0)
            bias_sum = np.zeros(C)   # the bias gradient, summed over chunks in float64
        logits = empty((min(rows, N), C), dtype)   # from the buffer cache: its pages stay mapped
        # a slice of the weight gradient, for the chunks after the first
        weight_slice = np.empty((classes, H), dtype) if want_grad and rows < N else None
        weight_total = _weight_total(weight, C)
        total = exact_sum(())   # the exact sum of the chunks' losses
        for r0 in range(0, N, rows):
            r1 = min(N, r0 + rows)
            chunk, x_chunk = logits[: r1 - r0], X[r0:r1]
            np.matmul(x_chunk, linear_weight.T, out=chunk)
            if bias is not None:
                chunk += bias
            # the row kernel runs on this thread alone: NumPy's BLAS leaves its worker threads
            # spinning for a while after each product, and kernel threads sharing their cores ran
            # the kernel several times slower (1.4 ms alone, 9 ms right after a product, at 512x8000)
            total = total + ExactSum(*_kernel.cross_entropy(
                chunk, r1 - r0, C, 1, None if target is None else target[r0:r1],
                None if target_prob is None else target_prob[r0:r1], weight, chunk if want_grad else None,
                None if loss_out is None else loss_out.reshape(-1)[r0:r1],
                None if row_grad_output is None else row_grad_output[r0:r1], weight_total,
                self.ignore_index, self.label_smoothing, 0.0, 0.0, scale, 0.0, 0.0, 1, partial=True))
            if want_grad:  # chunk now holds d loss / d logits
                np.matmul(chunk, linear_weight, out=grad_x[r0:r1])
                if r0 == 0:   # the first chunk writes the weight gradient, the others add to it
                    np.matmul(chunk.T, x_chunk, out=grads[1])
                for c0 in range(0, C if r0 else 0, classes):
                    c1 = min(C, c0 + classes)
                    np.matmul(chunk[:, c0:c1].T, x_chunk, out=weight_slice[: c1 - c0])
                    grads[1][c0:c1] += weight_slice[: c1 - c0]
                if bias is not None:
                    bias_sum += chunk.sum(axis=0, dtype=np.float64)
        if want_grad and bias is not None:
            grads[2][...] = bias_sum
        if partial:
            return reduced(None, total, None if self.reduction == "sum" else divisors, dtype)
        grads = grads if bias is not None else grads[:2]   # one gradient per input given
        return LossAndGrad(reduced(loss_out, total.value(), divisor, dtype), grads if want_grad else None)


def _linear_shapes(x, linear_weight, bias):
    """(C, H) of LinearCrossEntropyLoss's arrays (host arrays or device views) after the checks."""
    shape, weight_shape = tuple(x.shape), tuple(linear_weight.shape)
    if len(shape) not in (1, 2):
        fail(ValueError, "input", "shape (N, H) or (H,)", shape)
    if len(weight_shape) != 2 or weight_shape[1] != shape[-1]:
        fail(ValueError, "linear_weight", f"shape (C, {shape[-1]})", weight_shape)
    C, H = weight_shape
    if bias is not None and tuple(bias.shape) != (C,):
        fail(ValueError, "linear_bias", f"shape ({C},)", tuple(bias.shape))
    for name, arr in (("linear_weight", linear_weight), ("linear_bias", bias)):
        if arr is not None and arr.dtype != x.dtype:
            fail(TypeError, name, f"dtype {x.dtype} (the input's)", f"dtype {arr.dtype}")
    return C, H


class _RowLoss(Criterion):
    """Losses with one value per row of an (N, C) or (C,) input; 'mean' averages the rows."""
    _margin_loss = None   # the kernel's name in _kernel.MARGIN_LOSSES
    _partial = True

    def block_rows(self, shape):
        return _kernel.BLOCK_ROWS

    def _rows(self, arrays, want_grad, out, grad_output, partial, target=None, target_real=None, weight=None,
              margin=0.0, p=1):
        x = arrays[0]
        rows, C = (1, 1) if x.ndim == 0 else (1, x.shape[0]) if x.ndim == 1 else x.shape   # 0-d: one class, as torch
        loss_shape = () if x.ndim < 2 else (rows,)
        dtype = x.dtype
        divisor = rows if self.reduction == "mean" else 1
        scale, row_grad_output, (grad,), loss_out = self._row_reduction(want_grad, loss_shape, divisor,
                                                                        grad_output, (x.shape,), dtype, out)
        total = _kernel.margin_loss(_kernel.MARGIN_LOSSES.index(self._margin_loss), x, rows, C, target,
                                    target_real, weight, grad, loss_out, row_grad_output, scale, margin, p,
                                    self._num_threads(), partial)
        if partial:
            return reduced(None, total, float(rows) if self.reduction == "mean" else None, dtype)
        return LossAndGrad(reduced(loss_out, total, divisor, dtype), grad)

    def _cuda(self, arrays, want_grad, out, grad_output, partial=False):
        from ..cuda.softmax import margin_rows
        return margin_rows(self, arrays, want_grad, out, grad_output, partial)

    _zero_d = True   # torch takes a 0-d input as one class (MultiLabelSoftMarginLoss does not)

    def _input(self, arrays):
        x = as_float_input(arrays[0], "input")
        if x.ndim not in ((0, 1, 2) if self._zero_d else (1, 2)):
            fail(ValueError, "input", "shape (N, C) or (C,)", tuple(x.shape))
        return x


class MultiMarginLoss(_RowLoss):
    """Multi-class hinge loss, as torch's: for class index t,
    ``l = w_t / C sum_{c != t} max(0, margin - x_t + x_c)^p`` with p = 1 or 2; 'mean' averages
    the rows. input (N, C), (C,) or () (one class, as torch); target (N,) or ().
    grad: d(loss)/d(input)."""
    _margin_loss = "multi_margin"

    def __init__(self, p=1, margin=1.0, weight=None, *, reduction="mean"):
        super().__init__(reduction)
        if p not in (1, 2) or isinstance(p, bool):
            fail(ValueError, "p", "1 or 2", repr(p))
        self.p, self.margin = int(p), check_number("margin", margin)
        self.weight = None if weight is None else as_host_array(weight, "weight")

    def _cpu(self, arrays, want_grad, out, grad_output, partial=False):
        x = self._input(arrays)
        C = x.shape[-1] if x.ndim else 1
        weight = _class_weight(self.weight, C, x.dtype)
        target, _, _ = _class_targets(as_host_array(arrays[1], "target"), x.shape[:-1], C, None, None)
        return self._rows((x,), want_grad, out, grad_output, partial, target=target, weight=weight,
                          margin=self.margin, p=self.p)


class MultiLabelMarginLoss(_RowLoss):
    """Multi-label hinge loss, as torch's: each target row lists class indices, ended by the
    first -1 (set T); ``l = 1 / C sum_{j in T} sum_{c not in T} max(0, 1 - (x_j - x_c))``.
    input (N, C), (C,) or () (one class, as torch); target of the input's shape, integers.
    grad: d(loss)/d(input)."""
    _margin_loss = "multilabel_margin"

    def __init__(self, *, reduction="mean"):
        super().__init__(reduction)

    def _cpu(self, arrays, want_grad, out, grad_output, partial=False):
        x = self._input(arrays)
        target = as_host_array(arrays[1], "target")
        if target.dtype.kind not in "iu":
            fail(TypeError, "target", "class indices of an integer dtype", f"dtype {target.dtype}")
        if target.shape != x.shape:
            fail(ValueError, "target", f"shape {x.shape} (the input's)", tuple(target.shape))
        target = self._check_targets(target)
        return self._rows((x,), want_grad, out, grad_output, partial, target=target)

    @staticmethod
    def _check_targets(target):
        """target (host, the input's shape) as int64, after the check: the entries before each
        row's first -1 are class indices (an IndexError names the first one that is not)."""
        C = target.shape[-1] if target.ndim else 1
        target = as_int64_labels(target, "target", f"class indices in [0, {C}) or -1")
        bad, value = _kernel.check_multilabel_targets(target, C)
        if bad >= 0:
            position = position_of(bad, target.shape)
            raise IndexError(f"target: expected class indices in [0, {C}) before each row's "
                             f"first -1, got {value} at position {position}")
        return target


class MultiLabelSoftMarginLoss(_RowLoss):
    """Multi-label logistic loss, as torch's: ``l = -1 / C sum_c w_c (y_c log sigmoid(x_c) +
    (1 - y_c) log sigmoid(-x_c))`` per row; 'mean' averages the rows. input (N, C) or (C,);
    target of the input's shape (0/1 or probabilities); weight (C,). grad: d(loss)/d(input)."""
    _margin_loss = "multilabel_soft_margin"
    _zero_d = False

    def __init__(self, weight=None, *, reduction="mean"):
        super().__init__(reduction)
        self.weight = None if weight is None else as_host_array(weight, "weight")

    def _cpu(self, arrays, want_grad, out, grad_output, partial=False):
        x = self._input(arrays)
        target = as_operand(arrays[1], "target", x.dtype)
        if target.shape != x.shape:
            fail(ValueError, "target", f"shape {x.shape} (the input's)", tuple(target.shape))
        weight = _class_weight(self.weight, x.shape[-1], x.dtype)
        return self._rows((x,), want_grad, out, grad_output, partial, target_real=target, weight=weight)


class DiceLoss(Criterion):
    """Soft Dice loss for segmentation (the formula of segmentation_models_pytorch up to 0.3).

    input (N, C, *) scores (binary: C = 1); p = softmax over C (mode 'multiclass') or sigmoid
    ('binary', 'multilabel') when from_logits, else p = input. Targets are hard: class indices
    of shape (N, *) for 'multiclass' (one-hot inside), 0/1 of the input's shape otherwise.
    Positions whose target equals ignore_index are masked out of p and the target. Per class,
    over batch and space: I_c = sum p y, S_c = sum (p + y);
    ``dice_c = (2 I_c + smooth) / max(S_c + smooth, eps)``, ``loss_c = (1 - dice_c) [sum y_c > 0]``;
    'mean' averages the C classes (absent ones count 0), 'sum' adds them, 'none' gives (C,).
    grad: d(loss)/d(input), through the softmax or sigmoid when from_logits.
    """
    arguments = ("input", "target")

    def __init__(self, mode, *, from_logits=True, smooth=0.0, eps=1e-7, ignore_index=None, reduction="mean"):
        super().__init__(reduction)
        check_option("mode", mode, ("binary", "multiclass", "multilabel"))
        self.mode, self.from_logits = mode, bool(from_logits)
        self.smooth = check_number("smooth", smooth, nonnegative=True)
        self.eps = check_number("eps", eps, nonnegative=True)
        self.ignore_index = check_index_option("ignore_index", ignore_index, optional=True)

    _partial = True             # per-class sums: see _DicePartial
    _partial_of_none = True     # ('none' is per class, not per sample)
    _chunked_gradient = False   # each chunk's gradient needs the whole's per-class sums

    def block_rows(self, shape):
        S = self._dims(shape)[2]   # blocks are runs of DICE_BLOCK_POSITIONS of the N S positions
        return _kernel.DICE_BLOCK_POSITIONS // math.gcd(_kernel.DICE_BLOCK_POSITIONS, S) if S else 1

    def _dims(self, shape):
        """(N, C, S) of an input of `shape`: (N, C, *) with S the product of *; 'binary' takes
        (N, *) or (N, 1, *) alike, as one channel over every position (as
        segmentation_models_pytorch flattens it)."""
        shape = tuple(shape)
        if self.mode == "binary":
            if len(shape) < 1:
                fail(ValueError, "input", "shape (N, *) or (N, 1, *) for mode 'binary'", shape)
            return shape[0], 1, math.prod(shape[1:])
        if len(shape) < 2:
            fail(ValueError, "input", "shape (N, C, ...)", shape)
        return shape[0], shape[1], math.prod(shape[2:])

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

    def _cuda(self, arrays, want_grad, out, grad_output, partial=False):
        from ..cuda.softmax import dice
        return dice(self, arrays, want_grad, out, grad_output, partial)

    def _cpu(self, arrays, want_grad, out, grad_output, partial=False):
        x = as_float_input(arrays[0], "input")
        N, C, S = self._dims(x.shape)
        dtype = x.dtype
        target_index = target_real = None
        if self.mode == "multiclass":
            target_index, _, _ = _class_targets(as_host_array(arrays[1], "target"), (N,) + x.shape[2:], C,
                                                self.ignore_index, None)
        else:
            target_real = as_operand(arrays[1], "target", dtype)
            if target_real.shape != x.shape:
                fail(ValueError, "target", f"shape {x.shape} (the input's)", tuple(target_real.shape))
        link = "probabilities" if not self.from_logits else ("softmax" if self.mode == "multiclass" else "sigmoid")
        mode = _kernel.DICE_MODES[link]
        threads = self._num_threads()
        sums = _kernel.dice(x, N, C, S, target_index, target_real, self.ignore_index, mode, None, None, None, threads,
                            partial)
        if partial:
            return _DicePartial(tuple(ExactSum(*state) for state in sums), self, dtype)
        loss, inner, total, present, denominator = self._loss_from_sums(sums, dtype)
        if not want_grad:
            return LossAndGrad(loss, None)
        if self.reduction == "none":
            scale = np.ones(C) if grad_output is None else _row_grad_output(grad_output, (C,), np.float64)
        else:
            scale = scalar_grad_output(grad_output) / (C if self.reduction == "mean" else 1)
        # d loss_c / d p = m (coef_y y + coef_1): the numerator's 2 y / D and the denominator's
        # -(2 I + smooth) / D^2 (zero where the eps clamp holds)
        coef_y = np.ascontiguousarray(-2.0 * present / denominator * scale)
        coef_1 = np.ascontiguousarray(present * (2 * inner + self.smooth) * (total + self.smooth >= self.eps)
                                      / denominator ** 2 * scale)
        grad = self._gradient_buffers((x.shape,), dtype, out)[0]
        _kernel.dice(x, N, C, S, target_index, target_real, self.ignore_index, mode, grad, coef_y, coef_1, threads)
        return LossAndGrad(loss, grad)


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
