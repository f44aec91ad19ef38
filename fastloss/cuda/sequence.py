"""The CTC loss on the GPU: one block per batch element runs the alpha and beta recursions of
``_kernels/sequence.pyx`` (its docstring has the formulas) with a thread per extended-target
state and a barrier per frame, in float64, then writes the gradient frame by frame: every
class's exp(lp) term first, then, for each label, the sum of its states' posteriors (taken
in state order by the thread of the label's first state, so no two threads write one entry).
Scratch: alpha and beta, T x (2 S + 1) float64 per element, as on the CPU.
"""
import functools
import math

import numpy as np
from numba import cuda, float32, float64

from .._criterion import LossAndGrad
from ._device import THREADS

_TYPES = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}


@cuda.jit(device=True, inline=True)
def _logsumexp3(a, b, c):
    m = max(a, max(b, c))
    if m == -math.inf:
        return m
    return m + math.log(math.exp(a - m) + math.exp(b - m) + math.exp(c - m))


@cuda.jit(device=True, inline=True)
def _label(targets, offset, blank, s):
    return blank if s % 2 == 0 else targets[offset + s // 2]


@functools.lru_cache(maxsize=None)
def _ctc_kernel(dtype, grad_wanted):
    R = _TYPES[dtype]

    @cuda.jit
    def kernel(lp, T, N, C, targets, offsets, in_len, tgt_len, blank, grad_scale, go, row_go, zero_infinity,
               per_length, alpha, beta, terms, losses, grad):
        tid = cuda.threadIdx.x
        for b in range(cuda.blockIdx.x, N, cuda.gridDim.x):
            Tb, L, off = in_len[b], tgt_len[b], offsets[b]
            S = 2 * L + 1
            A, B = alpha[b], beta[b]
            for s in range(tid, S, THREADS):   # the first frame, both ends
                if Tb > 0:
                    A[0, s] = float64(lp[0, b, _label(targets, off, blank, s)]) if s < 2 else -math.inf
                    B[Tb - 1, s] = float64(lp[Tb - 1, b, _label(targets, off, blank, s)]) if s >= S - 2 else -math.inf
            cuda.syncthreads()
            for t in range(1, Tb):
                u = Tb - 1 - t     # beta runs backwards in step with alpha
                for s in range(tid, S, THREADS):
                    c = _label(targets, off, blank, s)
                    skip = s % 2 == 1 and s >= 2 and c != _label(targets, off, blank, s - 2)
                    A[t, s] = float64(lp[t, b, c]) + _logsumexp3(
                        A[t - 1, s], A[t - 1, s - 1] if s >= 1 else -math.inf, A[t - 1, s - 2] if skip else -math.inf)
                    skip = s % 2 == 1 and s + 2 < S and c != _label(targets, off, blank, s + 2)
                    B[u, s] = float64(lp[u, b, c]) + _logsumexp3(
                        B[u + 1, s], B[u + 1, s + 1] if s + 1 < S else -math.inf,
                        B[u + 1, s + 2] if skip else -math.inf)
                cuda.syncthreads()
            if Tb > 0:
                last = A[Tb - 1, S - 1]
                nll = -_logsumexp3(last, A[Tb - 1, S - 2] if S >= 2 else -math.inf, -math.inf)
            else:
                nll = 0.0 if L == 0 else math.inf
            dead = zero_infinity and nll == math.inf
            if dead:
                nll = 0.0
            if tid == 0:
                losses[b] = nll
                terms[b] = nll / per_length[b]
            if not grad_wanted:
                continue
            g = grad_scale[b] * (float64(go[b if row_go else 0]) if go.shape[0] else 1.0)
            for t in range(T):
                for c in range(tid, C, THREADS):
                    # (an impossible alignment, or a NaN input: NaN over the frame, as torch)
                    grad[t, b, c] = R(0) if dead or t >= Tb else R(
                        g * math.exp(float64(lp[t, b, c])) if nll < math.inf else math.nan)
                cuda.syncthreads()
                if dead or t >= Tb:
                    continue
                for s in range(tid, S, THREADS):
                    c = _label(targets, off, blank, s)
                    first = s == 0 or s % 2 == 1
                    for k in range(1, s, 2):   # a label's first state takes its sum
                        if first and s % 2 == 1 and _label(targets, off, blank, k) == c:
                            first = False
                    if first:
                        posterior = 0.0
                        for k in range(s, S, 2):
                            if _label(targets, off, blank, k) == c:
                                posterior += math.exp(A[t, k] + B[t, k] + nll - float64(lp[t, b, c]))
                        grad[t, b, c] = R(grad[t, b, c] - g * posterior)
                cuda.syncthreads()
    return kernel


def ctc(dev, spec, want_grad, out, grad_output):
    """CTCLoss on device arrays (a CTCSpec: targets and lengths checked on the host); the
    log-probabilities, the recursions and the gradient stay on the device."""
    lp3, red, T, N, C = spec.log_probs, spec.reduction, spec.T, spec.N, spec.C
    dtype = lp3.dtype
    scale, go = dev.row_scale(grad_output, red.loss_shape, red.none, red.divisor, want_grad)
    (grad_obj, grad), = dev.gradients((spec.shape,), dtype, out, ("log_probs",)) if want_grad else [(None, None)]
    width = 2 * int(spec.target_lengths.max(initial=0)) + 1
    alpha, beta = (dev.empty((N, max(T, 1), width), np.float64)[1] for _ in range(2))
    terms, losses = dev.empty((N,), np.float64)[1], dev.empty((N,), np.float64)[1]
    up = [dev.upload(a) for a in (spec.targets, spec.offsets, spec.input_lengths, spec.target_lengths,
                                  scale / spec.per_length, spec.per_length)]
    if N:
        dev.launch(_ctc_kernel(dtype, want_grad), N, THREADS, lp3, T, N, C, up[0], up[1], up[2], up[3], spec.blank,
                   up[4], dev.empty((0,), np.float64)[1] if go is None else go,
                   red.none and go is not None and go.shape[0] == N, spec.zero_infinity, up[5], alpha, beta, terms,
                   losses, lp3 if grad is None else grad.reshape(T, N, C))
    if red.none:
        loss_obj, loss_view = dev.empty(red.loss_shape, dtype)
        dev.copy(losses, loss_view)
        return LossAndGrad(loss_obj, grad_obj)
    return LossAndGrad(dev.finish(terms, red.divisor, dtype), grad_obj)
