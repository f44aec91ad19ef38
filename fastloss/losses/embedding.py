"""The embedding family: losses of distances between rows of embeddings.

Inputs are (N, D) rows or one (D,) row (the loss is then 0-d), all of one shape and one
float dtype; 'mean' averages the N row losses. Every input has a gradient.

NTXentLoss, how: with v_i = z_i / (max(||z_i||, 1e-12) sqrt(temperature)), s = v v^T. The
similarities go through NumPy's BLAS (cuBLAS on the GPU) in chunks of rows: the softmax
family's row kernel overwrites each chunk (its diagonal masked) with G = d loss / d s, two
more products per chunk add G v and G^T v_chunk to the gradient buffers (d loss / d v =
(G + G^T) v), and one pass at the end takes that through the normalisation. Scratch: v (the
input's size), one chunk of similarities and a chunk-by-D block.
"""
from typing import Callable, Optional, Tuple, Union

import numpy as np

from .. import _half
from .._arrays import check_number, check_optional_count, contiguous, fail, ieee_quietly
from .._criterion import Criterion, LossAndGrad, Reductions, reduced
from .._exact import exact_sum
from .._kernels import embedding as _kernel
from .._kernels import softmax as _softmax_kernel
from .._kernels.memory import empty
from .._spec import NORMALIZE_EPS, ClassOptions, NTXentSpec, PairSpec, reduction
from .._targets import embeddings, row_labels


class _PairLoss(Criterion):
    """A loss over rows of 2 or 3 embeddings (and per-row labels), run by the embedding kernel."""
    _kernel_loss = None   # its name in the kernel's LOSS_NAMES
    _labels = False       # whether the last argument is a per-row label y
    _partial = True
    _half_kernels = True  # the kernel widens half rows itself (one dtype for every input)
    swap, distance_function = False, None   # the triplet losses' options

    def __init__(self, margin=1.0, reduction="mean"):
        super().__init__(reduction)
        self.margin = check_number("margin", margin)

    def block_rows(self, shape):
        return _kernel.BLOCK_ROWS

    def _spec(self, take, arrays, partial=False):
        names = self.differentiable
        inputs = tuple([take.input(a, name) for a, name in zip(arrays, names)])
        if take is _half.HALF_HOST and len({view.dtype for _, view in inputs}) > 1:
            raise _half.NotInKernel   # half beside float32 inputs: staged blocks, all widened
        embeddings([view for _, view in inputs], names)
        shape = tuple(inputs[0][1].shape)
        rows, D = (1, shape[0]) if len(shape) == 1 else shape
        loss_shape = () if len(shape) == 1 else (rows,)
        y = None
        if self._labels:
            y = take.array(arrays[-1], "target")
            y = y if take.device else _half.widened(y)   # (half labels: N values)
            row_labels(y, loss_shape)
            y = y if take.device else contiguous(y, np.float64)
        p, eps = self._distance_options()
        distance = self.distance_function if self._kernel_loss is None else None
        return PairSpec(self._kernel_loss, inputs, y, rows, D, reduction(self.reduction, loss_shape, rows), p, eps,
                        self.margin, self.swap, distance, names)

    def _distance_options(self):
        """(p, eps) of the kernel's distance (the triplet losses' pairwise_distance)."""
        return 2.0, 0.0

    def _cpu(self, spec, want_grad, out, grad_output, partial=False):
        inputs = tuple(view for _, view in spec.inputs)
        x, red = inputs[0], spec.reduction
        if spec.distance is not None:
            if _half.is_half(x.dtype):
                raise _half.NotInKernel   # a Python distance function: staged float32 blocks
            return self._callable_distance(spec, want_grad, out, grad_output)
        scale, rows_grad_output, grads, loss_out = self._row_reduction(
            want_grad, red.loss_shape, red.divisor, grad_output, (x.shape,) * len(inputs), x.dtype, out)
        total = _kernel.pair_loss(_kernel.LOSS_NAMES.index(spec.loss), inputs, grads if want_grad else None, spec.y,
                                  loss_out, rows_grad_output, spec.rows, spec.D, scale, self._num_threads(), partial,
                                  spec.p, spec.eps, spec.margin, spec.swap)
        if partial:
            return reduced(None, total, red.divisor if red.kind == "mean" else None, x.dtype)
        return LossAndGrad(reduced(loss_out, total, red.divisor, x.dtype), self._pack(grads))

    def _cuda(self, device, spec, want_grad, out, grad_output, partial=False):
        from ..cuda import embedding
        run = embedding.pair_loss if spec.distance is None else embedding.triplet_with_callable
        return run(device, spec, want_grad, out, grad_output)


class TripletMarginLoss(_PairLoss):
    r"""Triplet margin loss, as torch's: ``l = max(0, margin + d(a, p) - d(a, n))`` with
    ``d(x, y) = ||x - y + eps||_p`` (torch's pairwise_distance).

    Args:
      margin: the margin. Default 1.
      p: the norm's degree, > 0. Default 2.
      eps: added to the difference inside the norm. Default 1e-6.
      swap: use min(d(a, n), d(p, n)) for the negative distance (the distance swap). Default False.
      reduction: 'none' (N,), 'mean' (over the rows) or 'sum'.

    Shapes:
      anchor, positive, negative: (N, D) rows or one (D,) row (the loss is then 0-d), one shape and float dtype.

    Returns:
      LossAndGrad(loss, (d/d anchor, d/d positive, d/d negative)).

    References:
      torch.nn.TripletMarginLoss; Balntas et al., "Learning local feature descriptors with
      triplets and shallow convolutional neural networks" (2016).
    """
    arguments = ("anchor", "positive", "negative")
    differentiable = ("anchor", "positive", "negative")
    _kernel_loss = "triplet_norm"

    def __init__(self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False,
                 reduction: Reductions = "mean"):
        super().__init__(margin, reduction)
        self.p = check_number("p", p, positive=True)
        self.eps = check_number("eps", eps)
        self.swap = bool(swap)

    def _distance_options(self):
        return self.p, self.eps


class TripletMarginWithDistanceLoss(_PairLoss):
    r"""Triplet margin loss with a chosen distance, as torch's:
    ``l = max(0, margin + d(a, p) - d(a, n))``.

    Args:
      distance_function: None or 'euclidean' (torch's default, pairwise_distance with p = 2,
        eps = 1e-6); 'cosine' (1 - cosine_similarity, norms clamped below at 1e-8, as torch);
        or a pair of callables ``(d, d_grad)``: ``d(x, y)`` returns the (N,) distances of
        rows and ``d_grad(x, y, g)`` returns ``(gx, gy)``, the gradients of
        ``sum(g * d(x, y))`` (NumPy arrays on the CPU, the caller's kind on the GPU). The
        built-in distances run in the fused kernel; a callable pair around the user's functions.
      margin: the margin, > 0 (torch's condition). Default 1.
      swap: use min(d(a, n), d(p, n)) for the negative distance. Default False.
      reduction: 'none' (N,), 'mean' (over the rows) or 'sum'.

    Shapes:
      anchor, positive, negative: (N, D) rows or one (D,) row (the loss is then 0-d), one shape and float dtype.

    Returns:
      LossAndGrad(loss, (d/d anchor, d/d positive, d/d negative)).

    References:
      torch.nn.TripletMarginWithDistanceLoss.
    """
    arguments = ("anchor", "positive", "negative")
    differentiable = ("anchor", "positive", "negative")

    def __init__(self, *, distance_function: Union[None, str, Tuple[Callable, Callable]] = None,
                 margin: float = 1.0, swap: bool = False, reduction: Reductions = "mean"):
        super().__init__(margin, reduction)
        if distance_function is None or distance_function in ("euclidean", "cosine"):
            self._kernel_loss = "triplet_cosine" if distance_function == "cosine" else "triplet_norm"
        elif not (isinstance(distance_function, tuple) and len(distance_function) == 2
                  and all(callable(f) for f in distance_function)):
            fail(TypeError, "distance_function", "None, 'euclidean', 'cosine' or a pair of callables (d, d_grad)",
                 repr(distance_function))
        self.distance_function = distance_function
        if self.margin <= 0:
            fail(ValueError, "margin", "a number > 0 (torch's condition)", repr(margin))
        self.swap = bool(swap)

    def _distance_options(self):
        return 2.0, 1e-6

    def _spec(self, take, arrays, partial=False):
        if partial and self._kernel_loss is None:
            raise NotImplementedError("TripletMarginWithDistanceLoss: no partial state with a callable distance")
        return super()._spec(take, arrays)

    def _callable_distance(self, spec, want_grad, out, grad_output):
        """The same loss around the user's (d, d_grad), in NumPy (float64 sums)."""
        distance, distance_grad = spec.distance
        a, p, n = (view for _, view in spec.inputs)
        loss_shape = spec.reduction.loss_shape

        def dist(x, y, what):
            d = np.asarray(distance(x, y), dtype=np.float64)
            if d.shape != loss_shape:
                fail(ValueError, f"distance_function's d({what})", f"shape {loss_shape}", tuple(d.shape))
            return d

        d_ap, d_an = dist(a, p, "anchor, positive"), dist(a, n, "anchor, negative")
        d_neg, w_an, w_pn = d_an, np.ones(loss_shape), np.zeros(loss_shape)
        if self.swap:
            d_pn = dist(p, n, "positive, negative")
            d_neg = np.minimum(d_an, d_pn)
            w_an = np.where(d_pn < d_an, 0.0, np.where(d_pn == d_an, 0.5, 1.0))
            w_pn = 1.0 - w_an
        pre = self.margin + d_ap - d_neg
        row_losses = np.where(pre < 0, 0.0, pre)
        divisor = spec.reduction.divisor
        scale, rows_grad_output, grads, loss_out = self._row_reduction(
            want_grad, loss_shape, divisor, grad_output, (a.shape,) * 3, a.dtype, out)
        if loss_out is not None:
            loss_out[...] = row_losses
        if want_grad:
            g = scale * (pre >= 0) * (1.0 if rows_grad_output is None else rows_grad_output)
            pairs = [(0, 1, a, p, g), (0, 2, a, n, -g * w_an)] + ([(1, 2, p, n, -g * w_pn)] if self.swap else [])
            for grad in grads:
                grad[...] = 0
            for i, j, x, y, coef in pairs:
                gx, gy = distance_grad(x, y, coef.astype(a.dtype))
                grads[i][...] += np.asarray(gx, dtype=a.dtype)
                grads[j][...] += np.asarray(gy, dtype=a.dtype)
        total = exact_sum(np.ravel(row_losses).tolist()).value()   # exact, as the kernels
        return LossAndGrad(reduced(loss_out, total, divisor, a.dtype), self._pack(grads))


class CosineEmbeddingLoss(_PairLoss):
    r"""Cosine embedding loss, as torch's: with
    ``c = x1.x2 / sqrt((|x1|^2 + 1e-12)(|x2|^2 + 1e-12))``, ``l = 1 - c`` where the target is 1,
    ``max(0, c - margin)`` where it is -1 (0 for any other label, as torch).

    Args:
      margin: the margin, usually in [-1, 1]. Default 0.
      reduction: 'none' (N,), 'mean' (over the rows) or 'sum'.

    Shapes:
      ``crit(input1, input2, target)``: input1 and input2 (N, D) or (D,); target (N,) or ().

    Returns:
      LossAndGrad(loss, (d/d input1, d/d input2)).

    References:
      torch.nn.CosineEmbeddingLoss.
    """
    arguments = ("input1", "input2", "target")
    differentiable = ("input1", "input2")
    _kernel_loss = "cosine_embedding"
    _labels = True

    def __init__(self, margin: float = 0.0, reduction: Reductions = "mean"):
        super().__init__(margin, reduction)


class ContrastiveLoss(_PairLoss):
    r"""The contrastive loss of pairs: with ``d = ||x1 - x2||_2`` (no eps),
    ``l = y d^2 + (1 - y) max(0, margin - d)^2``; at d = 0 the second term's gradient is taken as 0.

    Args:
      margin: the dissimilar pairs' margin. Default 1.
      reduction: 'none' (N,), 'mean' (over the rows) or 'sum'.

    Shapes:
      ``crit(x1, x2, target)``: x1 and x2 (N, D) or (D,); target (N,) or (), 1 for similar and
      0 for dissimilar pairs (any int, bool or float dtype; values between weight both terms).

    Returns:
      LossAndGrad(loss, (d/d x1, d/d x2)).

    References:
      Hadsell, Chopra and LeCun, "Dimensionality Reduction by Learning an Invariant Mapping" (2006).
    """
    arguments = ("x1", "x2", "target")
    differentiable = ("x1", "x2")
    _kernel_loss = "contrastive"
    _labels = True

    def __init__(self, margin: float = 1.0, reduction: Reductions = "mean"):
        super().__init__(margin, reduction)


class NTXentLoss(Criterion):
    r"""NT-Xent, SimCLR's normalised-temperature cross entropy (in-batch InfoNCE) over
    two views of N items. Rows are L2-normalised as F.normalize does (z / max(||z||, 1e-12))
    and stacked, z = [z1; z2] (2N rows); ``s_ij = z_i . z_j / temperature``; the positive of
    row i is its other view, and ``l_i = -s_i,pos + log sum_{k != i} exp(s_ik)``.

    Args:
      temperature: > 0. Default 0.5.
      reduction: 'none' (2N,), 'mean' (over the 2N rows) or 'sum'.
      chunk_rows: similarity rows per chunk (a positive int), or None for about 8 D (at least
        256): the (2N, 2N) matrix never exists (see the module's notes).

    Shapes:
      ``crit(z1, z2)``: z1, z2 (N, D) of one dtype.

    Returns:
      LossAndGrad(loss, (d/d z1, d/d z2)).

    References:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (2020).
    """
    arguments = ("z1", "z2")
    differentiable = ("z1", "z2")
    _half_kernels = True   # half rows widened into the normalised rows' float32 buffer (_cpu)

    def __init__(self, temperature: float = 0.5, reduction: Reductions = "mean", *,
                 chunk_rows: Optional[int] = None):
        super().__init__(reduction)
        self.temperature = check_number("temperature", temperature, positive=True)
        self.chunk_rows = check_optional_count("chunk_rows", chunk_rows)

    def _spec(self, take, arrays):
        z = tuple(take.input(a, name) for a, name in zip(arrays, self.differentiable))
        if take is _half.HALF_HOST and z[0][1].dtype != z[1][1].dtype:
            raise _half.NotInKernel   # half beside float32: both widened
        embeddings([view for _, view in z], self.differentiable)
        if z[0][1].ndim != 2:
            fail(ValueError, "z1", "shape (N, D)", tuple(z[0][1].shape))
        N, D = tuple(z[0][1].shape)
        return NTXentSpec(z, N, D, self.temperature, max(1, min(N, self.chunk_rows or max(256, 8 * D))),
                          reduction(self.reduction, (2 * N,), 2 * N), self.differentiable)

    def _cuda(self, device, spec, want_grad, out, grad_output):
        from ..cuda.embedding import nt_xent
        return nt_xent(device, spec, want_grad, out, grad_output)

    @ieee_quietly
    def _cpu(self, spec, want_grad, out, grad_output):
        views = [view for _, view in spec.z]
        N, D, dtype = spec.N, spec.D, views[0].dtype
        half, work = _half.is_half(dtype), _half.work_dtype(dtype)   # (half data: float32 math)
        M, root = 2 * N, spec.temperature ** 0.5
        norms = [np.empty(N) for _ in views]
        v = empty((M, D), work)
        # half rows: widened into v (the float32 call's z), normalised there in place
        wide = [_half.to_float32(z, v[h * N:(h + 1) * N]) if half else z for h, z in enumerate(views)]
        for h, (z, n) in enumerate(zip(wide, norms)):
            _kernel.row_norms(z, n)
            factor = (1.0 / (np.maximum(n, NORMALIZE_EPS) * root)).astype(work)
            np.multiply(z, factor[:, None], out=v[h * N:(h + 1) * N])
        divisor = spec.reduction.divisor
        scale, rows_grad_output, grads, loss_out = self._row_reduction(
            want_grad, (M,), divisor, grad_output, (views[0].shape,) * 2, dtype, out)
        kernel_loss = np.empty(M, work) if half and loss_out is not None else loss_out
        if rows_grad_output is not None:   # the kernel then takes each row's scale from here
            rows_grad_output = rows_grad_output / work.type(root)
        if want_grad:
            # half gradients are summed in float32 and narrowed at the end
            sums = [g if g.dtype == work else np.empty(g.shape, work) for g in grads]
            for g in sums:   # they hold d loss / d (normalised rows) until the last step
                g.fill(0)
        rows = spec.chunk_rows
        similarities = empty((rows, M), work)
        block = np.empty((rows, D), work)   # a chunk-by-D product before it is added
        # the similarity rows' cross entropy: each row's target is its other view (none ignored)
        positives = ClassOptions(ignore_index=-1, weight_total=float(M))
        total = 0.0
        for h in range(2):
            for r0 in range(0, N, rows):
                k, first = min(N - r0, rows), h * N + r0   # the chunk's rows, its first in [0, 2N)
                s, v_chunk = similarities[:k], v[first:first + k]
                np.matmul(v_chunk, v.T, out=s)
                s[np.arange(k), first + np.arange(k)] = -np.inf    # no row is its own candidate
                # the row kernel on one thread: see LinearCrossEntropyLoss (BLAS threads spin)
                total += _softmax_kernel.cross_entropy(
                    s, k, M, 1, (np.arange(first, first + k) + N) % M, None, None, s if want_grad else None,
                    None if kernel_loss is None else kernel_loss[first:first + k],
                    None if rows_grad_output is None else rows_grad_output[first:first + k],
                    positives, scale_ce=scale / root, scale_z=0.0, num_threads=1)
                if not want_grad:
                    continue
                # s now holds G / sqrt(temperature) = d loss / d (v v^T) for these rows
                np.matmul(s, v, out=block[:k])
                sums[h][r0:r0 + k] += block[:k]
                for hh, g in enumerate(sums):
                    for j0 in range(0, N, rows):
                        j1 = min(N, j0 + rows)
                        np.matmul(s[:, hh * N + j0:hh * N + j1].T, v_chunk, out=block[:j1 - j0])
                        g[j0:j1] += block[:j1 - j0]
        if want_grad:
            for h, (g, z, n) in enumerate(zip(sums, views, norms)):
                if half:   # v is free now: the half rows widened into it again
                    z = _half.to_float32(z, v[h * N:(h + 1) * N])
                _kernel.normalize_backward(g, z, n, NORMALIZE_EPS)
            for g, given in zip(sums, grads):
                if g is not given:
                    _half.store(g, given)
        if kernel_loss is not loss_out:
            _half.store(kernel_loss, loss_out)
        return LossAndGrad(reduced(loss_out, total, divisor, dtype), self._pack(grads))

