"""The sequence family: the CTC loss."""

import numpy as np

from .. import _half
from .._arrays import as_host_array, fail, is_device_array
from .._criterion import Criterion, LossAndGrad, Reductions, reduced
from .._exact import exact_sum
from .._kernels import sequence as _kernel
from .._spec import HOST, CTCSpec, reduction
from .._targets import at_most, ctc_targets, lengths


class CTCLoss(Criterion):
    r"""Connectionist Temporal Classification, as torch's CTCLoss: per batch element the
    negative log-likelihood of all alignments of its target with its first input_lengths[b]
    frames of log-probabilities. An impossible alignment gives inf (or 0, and a zero
    gradient, with zero_infinity).

    Args:
      blank: the blank class, an index >= 0 (below C). Default 0.
      reduction: 'none' (N,), 'mean' (each element divided by max(target length, 1), then
        averaged over the batch: torch's definition) or 'sum'.
      zero_infinity: whether impossible alignments count 0. Default False.

    Shapes:
      ``crit(log_probs, targets, input_lengths, target_lengths)``: log_probs (T, N, C) (or
      (T, C) for one sequence); targets padded (N, S) or concatenated (sum(target_lengths),);
      lengths (N,) of ints (lists or arrays; host arrays on the GPU path too).

    Returns:
      LossAndGrad(loss, d/d log_probs) as torch reports it for a leaf log_probs:
      exp(lp) - exp(log(sum of alpha beta at the class) + nll - lp), i.e. the gradient through
      a log_softmax of the logits (see fastloss/_kernels/sequence.pyx).

    References:
      Graves et al., "Connectionist Temporal Classification" (2006); torch.nn.CTCLoss.
    """
    arguments = ("log_probs", "targets", "input_lengths", "target_lengths")
    differentiable = ("log_probs",)

    def __init__(self, blank: int = 0, reduction: Reductions = "mean", zero_infinity: bool = False):
        super().__init__(reduction)
        if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or blank < 0:
            fail(ValueError, "blank", "a class index >= 0", repr(blank))
        self.blank = int(blank)
        self.zero_infinity = bool(zero_infinity)

    _partial = True
    _half_kernels = True   # the kernel widens half log-probabilities itself
    _host_arguments = ("targets", "input_lengths", "target_lengths")   # torch's CUDA CTC takes them so too
    row_axes = (1, 0, 0, 0)   # log_probs is (T, N, C): the batch is its second axis

    def _chunk_gradient(self, arrays, scale):
        if self.reduction != "mean":
            return super()._chunk_gradient(arrays, scale)
        # 'mean' weighs each element by 1 / max(target length, 1): the whole's scale goes in
        # where one call's own 1 / N would
        return self._cpu(self._spec(HOST, arrays), True, None, None, mean_scale=scale).grad

    def _spec(self, take, arrays, partial=False):
        log_probs = take.float_input(arrays[0], "log_probs")
        if log_probs.ndim not in (2, 3):
            fail(ValueError, "log_probs", "shape (T, N, C) or (T, C)", tuple(log_probs.shape))
        batched = log_probs.ndim == 3
        lp = log_probs if batched else log_probs.reshape(log_probs.shape[0], 1, log_probs.shape[1])
        T, N, C = tuple(lp.shape)
        if self.blank >= C:
            fail(ValueError, "blank", f"a class index in [0, {C})", self.blank)
        # the targets and lengths are checked on the host (on the GPU path: one small copy, as
        # torch's CUDA CTC makes); the log-probabilities never leave their device
        host = [take.to_host(take.operand(a, name, None)) if is_device_array(a) else as_host_array(a, name)
                for a, name in zip(arrays[1:], ("targets", "input_lengths", "target_lengths"))]
        input_lengths = lengths(host[1], "input_lengths", N)
        target_lengths = lengths(host[2], "target_lengths", N)
        at_most("input_lengths", input_lengths, T, f"T = {T} (log_probs' frames)")
        targets, offsets = ctc_targets(np.asarray(host[0]), target_lengths, batched, C, self.blank)
        per_length = np.maximum(target_lengths, 1.0) if self.reduction == "mean" else np.ones(N)
        return CTCSpec(lp, tuple(log_probs.shape), targets, offsets, input_lengths, target_lengths, T, N, C,
                       self.blank, self.zero_infinity, per_length,
                       reduction(self.reduction, (N,) if batched else (), N))

    def _cpu(self, spec, want_grad, out, grad_output, partial=False, mean_scale=None):
        lp, red, N = spec.log_probs, spec.reduction, spec.N
        scale, rows_grad_output, (grad,), loss_out = self._row_reduction(
            want_grad, red.loss_shape, red.divisor, grad_output, (spec.shape,), lp.dtype, out)
        if mean_scale is not None:
            scale = mean_scale
        grad_scale = (np.full(N, scale) if rows_grad_output is None else rows_grad_output.reshape(N) * scale) \
            / spec.per_length
        losses = np.empty(N)
        _kernel.ctc(lp, spec.targets, spec.offsets, spec.input_lengths, spec.target_lengths, blank=spec.blank,
                    grad_scale=grad_scale, grad=None if grad is None else grad.reshape(lp.shape), losses=losses,
                    zero_infinity=spec.zero_infinity, num_threads=self._num_threads())
        if loss_out is not None:   # (half data: the float32 call's losses, narrowed)
            _half.store(losses.reshape(red.loss_shape).astype(_half.work_dtype(lp.dtype)), loss_out)
        # the exact sum of the per-element terms (as the other kernels' block sums), rounded
        # once, or kept for a partial state
        total = exact_sum((losses / spec.per_length).tolist())
        if partial:
            return reduced(None, total, red.divisor if red.kind == "mean" else None, lp.dtype)
        return LossAndGrad(reduced(loss_out, total.value(), red.divisor, lp.dtype), grad)

    def _cuda(self, device, spec, want_grad, out, grad_output, partial=False):
        from ..cuda.sequence import ctc
        return ctc(device, spec, want_grad, out, grad_output)
