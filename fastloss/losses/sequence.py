"""The sequence family: the CTC loss."""

import numpy as np

from .._arrays import as_float_input, as_host_array, as_int64_labels, contiguous, fail
from .._criterion import Criterion, LossAndGrad, reduced
from .._exact import exact_sum
from .._kernels import sequence as _kernel


def _lengths(value, name, batch):
    lengths = as_host_array(value, name)
    if lengths.dtype.kind not in "iu":
        fail(TypeError, name, "integer lengths", f"dtype {lengths.dtype}")
    if lengths.size != batch or lengths.ndim > 1:
        fail(ValueError, name, f"{batch} length(s), one per batch element", f"shape {tuple(lengths.shape)}")
    lengths = as_int64_labels(lengths.reshape(batch), name, "lengths >= 0")
    if batch and lengths.min() < 0:
        b = int(np.argmin(lengths))
        fail(ValueError, name, "lengths >= 0", f"{lengths[b]} at position ({b},)")
    return lengths


class CTCLoss(Criterion):
    """torch's CTCLoss (Connectionist Temporal Classification), ``crit(log_probs, targets,
    input_lengths, target_lengths)``: log_probs (T, N, C) (or (T, C) for one sequence) of
    log-probabilities over C classes, targets padded (N, S) or concatenated
    (sum(target_lengths),), lengths (N,) (ints, lists or arrays). Per element the negative
    log-likelihood of all alignments of its target with its first input_lengths[b] frames;
    'mean' divides each by max(target length, 1) and averages over the batch (torch's
    definition), 'sum' adds, 'none' gives (N,). An impossible alignment gives inf, or 0 (and a
    zero gradient) with zero_infinity. grad: d/d log_probs as torch reports it for a leaf
    log_probs, exp(lp) - exp(log(sum of alpha beta at the class) + nll - lp), i.e. the gradient
    through a log_softmax of the logits (see fastloss/_kernels/sequence.pyx).
    """
    arguments = ("log_probs", "targets", "input_lengths", "target_lengths")
    differentiable = ("log_probs",)

    def __init__(self, blank=0, reduction="mean", zero_infinity=False):
        super().__init__(reduction)
        if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or blank < 0:
            fail(ValueError, "blank", "a class index >= 0", repr(blank))
        self.blank = int(blank)
        self.zero_infinity = bool(zero_infinity)

    _partial = True
    _host_arguments = ("targets", "input_lengths", "target_lengths")   # torch's CUDA CTC takes them so too
    row_axes = (1, 0, 0, 0)   # log_probs is (T, N, C): the batch is its second axis

    def _chunk_gradient(self, arrays, scale):
        if self.reduction != "mean":
            return super()._chunk_gradient(arrays, scale)
        # 'mean' weighs each element by 1 / max(target length, 1): the whole's scale goes in
        # where one call's own 1 / N would
        return self._cpu(arrays, True, None, None, mean_scale=scale).grad

    def _cpu(self, arrays, want_grad, out, grad_output, partial=False, mean_scale=None):
        log_probs = as_float_input(arrays[0], "log_probs")
        if log_probs.ndim not in (2, 3):
            fail(ValueError, "log_probs", "shape (T, N, C) or (T, C)", tuple(log_probs.shape))
        batched = log_probs.ndim == 3
        lp = contiguous(log_probs if batched else log_probs[:, None, :])
        T, N, C = lp.shape
        if self.blank >= C:
            fail(ValueError, "blank", f"a class index in [0, {C})", self.blank)
        input_lengths = _lengths(arrays[2], "input_lengths", N)
        target_lengths = _lengths(arrays[3], "target_lengths", N)
        if N and input_lengths.max() > T:
            b = int(np.argmax(input_lengths))
            fail(ValueError, "input_lengths", f"lengths at most T = {T} (log_probs' frames)", f"{input_lengths[b]} at position ({b},)")
        targets, offsets = self._targets(as_host_array(arrays[1], "targets"), target_lengths, batched, C)
        loss_shape = (N,) if batched else ()
        divisor = N if self.reduction == "mean" else 1
        scale, rows_grad_output, (grad,), loss_out = self._row_reduction(
            want_grad, loss_shape, divisor, grad_output, (log_probs.shape,), lp.dtype, out)
        if mean_scale is not None:
            scale = mean_scale
        per_length = np.maximum(target_lengths, 1) if self.reduction == "mean" else np.ones(N)
        grad_scale = (np.full(N, scale) if rows_grad_output is None else rows_grad_output.reshape(N) * scale) / per_length
        losses = np.empty(N)
        _kernel.ctc(lp, targets, offsets, input_lengths, target_lengths, self.blank, grad_scale,
                    None if grad is None else grad.reshape(T, N, C), losses, self.zero_infinity, self._num_threads())
        if loss_out is not None:
            loss_out[...] = losses.reshape(loss_shape)
        # the exact sum of the per-element terms (as the other kernels' block sums), rounded
        # once, or kept for a partial state
        total = exact_sum((losses / per_length).tolist())
        if partial:
            return reduced(None, total, float(N) if self.reduction == "mean" else None, lp.dtype)
        return LossAndGrad(reduced(loss_out, total.value(), divisor, lp.dtype), grad)

    def _cuda(self, arrays, want_grad, out, grad_output, partial=False):
        from ..cuda.sequence import ctc
        return ctc(self, arrays, want_grad, out, grad_output, partial)

    def _targets(self, targets, target_lengths, batched, C):
        """Targets as one int64 vector (never empty) and each element's offset into it,
        after the checks: lengths within the padding or the concatenation, labels in [0, C)
        and not the blank."""
        if targets.dtype.kind not in "iu":
            fail(TypeError, "targets", "class indices of an integer dtype", f"dtype {targets.dtype}")
        N = len(target_lengths)
        if batched and targets.ndim == 2:   # padded (N, S)
            if targets.shape[0] != N:
                fail(ValueError, "targets", f"{N} padded rows (N, S)", tuple(targets.shape))
            S = targets.shape[1]
            if N and target_lengths.max() > S:
                b = int(np.argmax(target_lengths))
                fail(ValueError, "target_lengths", f"lengths at most S = {S} (the padded targets' width)",
                     f"{target_lengths[b]} at position ({b},)")
            offsets = np.arange(N, dtype=np.int64) * S
            used = np.arange(S)[None, :] < target_lengths[:, None]
        elif targets.ndim == 1:             # concatenated, or one sequence's (S,)
            total = int(target_lengths.sum())
            if (batched and targets.shape[0] != total) or (not batched and total > targets.shape[0]):
                fail(ValueError, "targets", f"{total} labels (the sum of target_lengths)" if batched
                     else f"at least {total} labels (target_lengths)", tuple(targets.shape))
            offsets = np.concatenate(([0], np.cumsum(target_lengths)[:-1])).astype(np.int64)
            used = np.arange(targets.shape[0]) < total
        else:
            fail(ValueError, "targets", "shape (N, S) or (sum(target_lengths),)" if batched else "shape (S,)",
                 tuple(targets.shape))
        flat = as_int64_labels(targets.reshape(-1), "targets", f"labels in [0, {C}) other than blank {self.blank}")
        bad = used.reshape(-1) & ((flat < 0) | (flat >= C) | (flat == self.blank))
        if bad.any():
            i = int(np.argmax(bad))
            position = tuple(int(p) for p in np.unravel_index(i, targets.shape))
            fail(ValueError, "targets", f"labels in [0, {C}) other than blank {self.blank}",
                 f"{flat[i]} at position {position}")
        return (flat if flat.size else np.zeros(1, np.int64)), offsets
