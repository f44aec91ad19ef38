"""The embedding family on the GPU: one row kernel for the triplet, contrastive and cosine
losses (a block per row, rows grid-strided; the formulas are ``_kernels/embedding.pyx.tp``'s,
whose docstring derives them), and NTXentLoss through the softmax family's row kernel on
chunks of similarities that the caller's framework multiplies.

Per row: the block sums what the distances need (|v|^p per pair, or the dots x.x, y.y, x.y)
in float64 in a fixed tree, every thread then holds the row's loss and each pair's gradient
coefficient, and a second pass writes each input's gradient once.
"""
import functools
import math

import numpy as np
from numba import cuda, float32, float64

from ._device import THREADS, block_share, block_sum, grid
from .softmax import NO_GO, ROW_GO, go_mode

_TYPES = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}
LOSSES = ("triplet_norm", "triplet_cosine", "contrastive", "cosine_embedding")


@functools.lru_cache(maxsize=None)
def _pair_kernel(dtype, loss, grad, none):
    R = _TYPES[dtype]
    cosine = loss in ("triplet_cosine", "cosine_embedding")
    triplet = loss.startswith("triplet")

    @cuda.jit(device=True, inline=True)
    def gather(x, y, k, p, eps, cos):
        """What pair (x, y) adds at feature k: (|v|^p, 0, 0) or (x x, y y, x y)."""
        if cos:
            a, b = float64(x[k]), float64(y[k])
            return a * a, b * b, a * b
        v = float64(x[k] - y[k] + R(eps))
        return (v * v if p == 2.0 else abs(v) ** p), 0.0, 0.0

    @cuda.jit(device=True, inline=True)
    def pair_grad(x, y, k, p, eps, f, bx, by):
        """(d/dx, d/dy) at feature k of a pair with coefficients: norm u = f sgn(v)|v|^(p-1),
        (u, -u); cosine (f y + bx x, f x + by y)."""
        if cosine:
            return R(f) * y[k] + R(bx) * x[k], R(f) * x[k] + R(by) * y[k]
        v = x[k] - y[k] + R(eps)
        if p == 2.0:
            u = R(f) * v
        elif v == 0:
            u = R(0)
        else:
            u = R(f) * R(abs(v) ** (p - 1)) * (R(1) if v > 0 else R(-1))
        return u, -u

    @cuda.jit
    def kernel(x0, x1, x2, rows, D, y, p, eps, margin, swap, scale, go, go_mode, loss_out, g0, g1, g2, partials):
        t_id = cuda.threadIdx.x
        block_loss = 0.0
        pairs = 3 if triplet and swap else 2 if triplet else 1
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            o = r * D
            s = cuda.local.array((3, 3), float64)
            for q in range(3):
                for j in range(3):
                    s[q, j] = 0.0
            for k in range(o + t_id, o + D, THREADS):
                for q in range(pairs):   # (0, 1), (0, 2), (1, 2)
                    u, v, w = gather(x0 if q < 2 else x1, x1 if q == 0 else x2, k, p, eps, cosine)
                    s[q, 0] += u
                    s[q, 1] += v
                    s[q, 2] += w
            d = cuda.local.array(3, float64)
            nx = cuda.local.array(3, float64)
            ny = cuda.local.array(3, float64)
            for q in range(pairs):
                a, b, c = block_sum(s[q, 0]), block_sum(s[q, 1]), block_sum(s[q, 2])
                if loss == "triplet_cosine":
                    nx[q], ny[q] = max(math.sqrt(a), 1e-8), max(math.sqrt(b), 1e-8)
                    d[q] = c / (nx[q] * ny[q])           # the cosine; the distance is 1 - it
                elif loss == "cosine_embedding":
                    nx[q], ny[q] = a + 1e-12, b + 1e-12
                    d[q] = c / math.sqrt(nx[q] * ny[q])
                else:
                    d[q] = math.sqrt(a) if p == 2.0 else a ** (1.0 / p)
            row_go = scale * (float64(go[r if go_mode == ROW_GO else 0]) if go_mode != NO_GO else 1.0)
            f = cuda.local.array(3, float64)     # each pair's gradient coefficient
            for q in range(3):
                f[q] = 0.0
            if triplet:
                dist_ap = 1.0 - d[0] if cosine else d[0]
                d_an = 1.0 - d[1] if cosine else d[1]
                d_pn = (1.0 - d[2] if cosine else d[2]) if swap else 0.0
                d_neg, w_an, w_pn = d_an, 1.0, 0.0
                if swap and d_pn <= d_an:
                    d_neg = d_pn
                    w_an, w_pn = (0.5, 0.5) if d_pn == d_an else (0.0, 1.0)
                row_loss = margin + dist_ap - d_neg
                if not row_loss >= 0:
                    row_go = 0.0
                    if row_loss < 0:
                        row_loss = 0.0
                f[0], f[1], f[2] = row_go, -row_go * w_an, -row_go * w_pn
            elif loss == "contrastive":
                label = float64(y[r])
                c = margin - d[0] if margin - d[0] > 0 else 0.0
                row_loss = label * d[0] * d[0] + (1 - label) * c * c
                f[0] = 0.0 if d[0] == 0 else row_go * (2 * label - 2 * (1 - label) * c / d[0])
                d[0] = 1.0   # the coefficient is already per unit of x1 - x2
            else:
                label, cos, coef = float64(y[r]), d[0], 0.0
                row_loss = 0.0
                if label == 1:
                    row_loss, coef = 1.0 - cos, -1.0
                elif label == -1:
                    if cos - margin >= 0:
                        row_loss, coef = cos - margin, 1.0
                    elif cos - margin != cos - margin:
                        row_loss = cos - margin
                f[0] = coef * row_go
            if none and t_id == 0:
                loss_out[r] = row_loss
            block_loss += row_loss
            if grad:
                # each pair's (f, bx, by): norm f / d or f / d^(p-1); cosine as the docstring
                fb = cuda.local.array((3, 3), float64)
                for q in range(pairs):
                    if loss == "triplet_cosine":   # d = 1 - c: the pair's coefficient g gives
                        g = f[q]                  # -g / (nx ny), g c / nx^2, g c / ny^2
                        fb[q, 0], fb[q, 1], fb[q, 2] = -g / (nx[q] * ny[q]), g * d[q] / (nx[q] * nx[q]), g * d[q] / (ny[q] * ny[q])
                    elif loss == "cosine_embedding":
                        g = f[q]
                        fb[q, 0], fb[q, 1], fb[q, 2] = g / math.sqrt(nx[q] * ny[q]), -g * d[q] / nx[q], -g * d[q] / ny[q]
                    else:
                        fb[q, 0] = 0.0 if d[q] == 0 else (f[q] / d[q] if p == 2.0 else f[q] / d[q] ** (p - 1))
                        fb[q, 1] = fb[q, 2] = 0.0
                for k in range(o + t_id, o + D, THREADS):
                    a0, a1 = pair_grad(x0, x1, k, p, eps, fb[0, 0], fb[0, 1], fb[0, 2])
                    if triplet:
                        b0, b2 = pair_grad(x0, x2, k, p, eps, fb[1, 0], fb[1, 1], fb[1, 2])
                        c1, c2 = R(0), R(0)
                        if swap:
                            c1, c2 = pair_grad(x1, x2, k, p, eps, fb[2, 0], fb[2, 1], fb[2, 2])
                        g0[k], g1[k], g2[k] = a0 + b0, a1 + c1, b2 + c2
                    else:
                        g0[k], g1[k] = a0, a1
        block_loss = block_share(block_loss)
        if not none and t_id == 0:
            partials[cuda.blockIdx.x] = block_loss
    return kernel


def pair_loss(crit, arrays, want_grad, out, grad_output, partial=False):
    """A _PairLoss criterion on device arrays."""
    from .._arrays import fail
    from .._criterion import LossAndGrad
    from ._device import Device
    from .softmax import _grad_output, host_only
    host_only(crit, partial=partial)
    dev = Device(arrays)
    names = crit.differentiable
    inputs = [dev.input(arrays[0], names[0])[1]]
    if inputs[0].ndim not in (1, 2):
        fail(ValueError, names[0], "shape (N, D) or (D,)", tuple(inputs[0].shape))
    shape, dtype = tuple(inputs[0].shape), inputs[0].dtype
    for name, a in zip(names[1:], arrays[1:len(names)]):
        view = dev.input(a, name, dtype)[1]
        if tuple(view.shape) != shape:
            fail(ValueError, name, f"shape {shape} ({names[0]}'s)", tuple(view.shape))
        inputs.append(view)
    rows, D = (1, shape[0]) if len(shape) == 1 else shape
    loss_shape = () if len(shape) == 1 else (rows,)
    y = None
    if crit._labels:
        y = dev.operand(arrays[-1], "target")
        if tuple(y.shape) != loss_shape:
            fail(ValueError, "target", f"shape {loss_shape} (one label per row)", tuple(y.shape))
        y = y.reshape(-1) if y.ndim else y.reshape(1)
    none = crit.reduction == "none"
    divisor = rows if crit.reduction == "mean" else 1
    factor, go = _grad_output(dev, grad_output, loss_shape, none) if want_grad else (1.0, None)
    scale = factor if none else factor / divisor if divisor else 0.0
    grads = dev.gradients((shape,) * len(inputs), dtype, out, names) if want_grad else [(None, None)] * len(inputs)
    loss_obj, loss_out = dev.empty(loss_shape, dtype) if none else (None, None)
    p, eps, margin, swap = crit._kernel_options()
    flat = [v.reshape(-1) for v in inputs] + [inputs[0].reshape(-1)] * (3 - len(inputs))
    gflat = [inputs[0].reshape(-1) if g is None else g.reshape(-1) for _, g in grads] + [flat[0]] * (3 - len(grads))
    blocks = grid(rows, 1)
    partials = flat[0] if none else dev.partials(blocks)
    if rows and D:
        dev.launch(_pair_kernel(dtype, crit._kernel_loss, want_grad, none), blocks, THREADS, *flat, rows, D,
                   flat[0] if y is None else y, float(p), float(eps), float(margin), bool(swap), float(scale),
                   flat[0] if go is None else go, go_mode(go, rows, none),
                   flat[0] if loss_out is None else loss_out.reshape(-1) if loss_out.ndim else loss_out.reshape(1),
                   *gflat, partials)
    elif not none:
        partials = dev.partials(0)
    loss = loss_obj if none else dev.finish(partials, divisor, dtype)
    return LossAndGrad(loss, crit._pack([g for g, _ in grads]) if want_grad else None)
