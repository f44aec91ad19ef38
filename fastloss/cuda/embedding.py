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

from .._arrays import fail
from .._criterion import LossAndGrad
from .._spec import NORMALIZE_EPS, ClassOptions
from ._device import THREADS, block_share, block_sum, flat, grid
from .softmax import NO_GO, ROW_GO, _slice, go_mode, row_blocks, rows_kernel

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
                        fb[q, 0] = -g / (nx[q] * ny[q])
                        fb[q, 1], fb[q, 2] = g * d[q] / (nx[q] * nx[q]), g * d[q] / (ny[q] * ny[q])
                    elif loss == "cosine_embedding":
                        g = f[q]
                        fb[q, 0] = g / math.sqrt(nx[q] * ny[q])
                        fb[q, 1], fb[q, 2] = -g * d[q] / nx[q], -g * d[q] / ny[q]
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


def pair_loss(dev, spec, want_grad, out, grad_output):
    """A pair or triplet loss on device arrays (a PairSpec): a block per row."""
    inputs = [view for _, view in spec.inputs]
    shape, dtype, red, rows, D = tuple(inputs[0].shape), inputs[0].dtype, spec.reduction, spec.rows, spec.D
    none, loss_shape = red.none, red.loss_shape
    y = None if spec.y is None else flat(spec.y)
    scale, go = dev.row_scale(grad_output, loss_shape, none, red.divisor, want_grad)
    grads = dev.gradients((shape,) * len(inputs), dtype, out, spec.names) if want_grad else [(None, None)] * len(inputs)
    loss_obj, loss_out = dev.empty(loss_shape, dtype) if none else (None, None)
    flat_inputs = [flat(v) for v in inputs] + [flat(inputs[0])] * (3 - len(inputs))
    flat_grads = [flat_inputs[0] if g is None else flat(g) for _, g in grads] + [flat_inputs[0]] * (3 - len(grads))
    blocks = grid(rows, 1)
    partials = flat_inputs[0] if none else dev.partials(blocks)
    if rows and D:
        dev.launch(_pair_kernel(dtype, spec.loss, want_grad, none), blocks, THREADS, *flat_inputs, rows, D,
                   flat_inputs[0] if y is None else y, float(spec.p), float(spec.eps), float(spec.margin),
                   bool(spec.swap), float(scale),
                   flat_inputs[0] if go is None else go, go_mode(go, rows, none),
                   flat_inputs[0] if loss_out is None else flat(loss_out),
                   *flat_grads, partials)
    elif not none:
        partials = dev.partials(0)
    loss = loss_obj if none else dev.finish(partials, red.divisor, dtype)
    return LossAndGrad(loss, tuple(g for g, _ in grads) if want_grad else None)


@cuda.jit
def _normalize_rows(z, norms, v, offset, root):
    """Per row r (a block each): norms[r] = ||z_r|| (squares summed in float64) and
    v[offset + r] = z_r / (max(norms[r], 1e-12) sqrt(temperature)), as F.normalize then the
    temperature."""
    D = z.shape[1]
    for r in range(cuda.blockIdx.x, z.shape[0], cuda.gridDim.x):
        acc = 0.0
        for k in range(cuda.threadIdx.x, D, THREADS):
            acc += float64(z[r, k]) * float64(z[r, k])
        n = math.sqrt(block_sum(acc))
        if cuda.threadIdx.x == 0:
            norms[r] = n
        factor = 1.0 / (max(n, NORMALIZE_EPS) * root)
        for k in range(cuda.threadIdx.x, D, THREADS):
            v[offset + r, k] = z[r, k] * factor


@cuda.jit
def _normalize_backward(g, z, norms):
    """In place, g <- d loss / d z from g = d loss / d (z / max(||z||, eps)): (g - (g.u) u) / ||z||
    per row, or g / eps where the norm was clamped (F.normalize's derivative)."""
    D = z.shape[1]
    for r in range(cuda.blockIdx.x, z.shape[0], cuda.gridDim.x):
        n = norms[r]
        acc = 0.0
        for k in range(cuda.threadIdx.x, D, THREADS):
            acc += float64(g[r, k]) * float64(z[r, k])
        dot = block_sum(acc)
        for k in range(cuda.threadIdx.x, D, THREADS):
            if n > NORMALIZE_EPS:
                g[r, k] = (g[r, k] - dot / (n * n) * z[r, k]) / n
            else:
                g[r, k] = g[r, k] / NORMALIZE_EPS


@cuda.jit
def _mask_diagonal(s, first):
    """No row is its own candidate: s[i, first + i] = -inf."""
    for i in range(cuda.grid(1), s.shape[0], cuda.gridsize(1)):
        s[i, first + i] = -math.inf


def nt_xent(dev, spec, want_grad, out, grad_output):
    """NTXentLoss on device arrays (an NTXentSpec), in the CPU path's chunks of similarity rows:
    v (the normalised, temperature-scaled rows, the input's size), one chunk of similarities
    from a product (cuBLAS through the caller's framework, or `_gemm`), the softmax row kernel
    (targets: each row's other view) overwriting it with d loss / d s, and two products adding
    (G + G^T) v into the gradients, which one pass at the end takes through the normalisation."""
    z, N, D, red = spec.z, spec.N, spec.D, spec.reduction
    dtype, none = z[0][1].dtype, red.none
    M, root = 2 * N, spec.temperature ** 0.5
    scale, go = dev.row_scale(grad_output, (M,), none, red.divisor, want_grad)
    grads = dev.gradients(((N, D), (N, D)), dtype, out, spec.names) if want_grad else [(None, None)] * 2
    loss_obj, loss_out = dev.empty((M,), dtype) if none else (None, None)
    v = dev.empty((M, D), dtype)
    norms = [dev.empty((N,), np.float64)[1] for _ in z]
    for h, (_, view) in enumerate(z):
        dev.launch(_normalize_rows, grid(N, 1), THREADS, view, norms[h], v[1], h * N, root)
    positives = dev.upload((np.arange(M) + N) % M)
    rows = spec.chunk_rows
    options = ClassOptions(ignore_index=-1, weight_total=float(M))   # each row's target: its other view
    similarities = dev.empty((rows, M), dtype)
    blocks = row_blocks(rows, M, 1)
    chunks = [(h, r0) for h in range(2) for r0 in range(0, N, rows)]
    partials = None if none else dev.partials(len(chunks) * blocks)
    row_go = go is not None and go.shape[0] == M and none
    for g in grads:
        if g[1] is not None:
            dev.fill(g[1], 0.0)   # they hold d loss / d (normalised rows) until the last step
    for i, (h, r0) in enumerate(chunks):
        k, first = min(N - r0, rows), h * N + r0
        s, v_chunk = _slice(similarities, 0, k), _slice(v, first, first + k)
        dev.matmul(v_chunk, v, s, trans_b=True)
        dev.launch(_mask_diagonal, grid(k), THREADS, s[1], first)
        rows_kernel(dev, flat(s[1]), k, M, 1, positives[first:first + k], None, None, options, scale / root, 0.0,
                    go[first:first + k] if row_go else go,
                    None if loss_out is None else loss_out[first:first + k], flat(s[1]) if want_grad else None,
                    partials=None if partials is None else partials[i * blocks:(i + 1) * blocks])
        if not want_grad:
            continue
        # s now holds G / sqrt(temperature) = d loss / d (v v^T) for these rows
        dev.matmul(s, v, _slice(grads[h], r0, r0 + k), accumulate=True)
        for hh, g in enumerate(grads):
            dev.matmul((s[0][:, hh * N:(hh + 1) * N], s[1][:, hh * N:(hh + 1) * N]), v_chunk, g, trans_a=True,
                       accumulate=True)
    if want_grad:
        for (g, view), (_, zv), n in zip(grads, z, norms):
            dev.launch(_normalize_backward, grid(N, 1), THREADS, view, zv, n)
    loss = loss_obj if none else dev.finish(partials, red.divisor, dtype)
    return LossAndGrad(loss, tuple(g for g, _ in grads) if want_grad else None)


@cuda.jit
def _triplet_rows(d_ap, d_an, d_pn, swap, margin, scale, go, go_mode, loss_out, c_ap, c_an, c_pn, partials):
    """TripletMarginWithDistanceLoss from a callable's distances, a thread per row: the loss
    max(0, margin + d_ap - d_neg), d_neg = d_an or, with swap, min(d_an, d_pn) (ties share
    the gradient), and each pair's coefficient for the callable's gradient."""
    acc = 0.0
    for r in range(cuda.grid(1), d_ap.shape[0], cuda.gridsize(1)):
        ap, an = float64(d_ap[r]), float64(d_an[r])
        d_neg, w_an = an, 1.0
        if swap:
            pn = float64(d_pn[r])
            if pn <= an:
                d_neg, w_an = pn, 0.5 if pn == an else 0.0
        pre = margin + ap - d_neg
        row_go = scale * (float64(go[r if go_mode == ROW_GO else 0]) if go_mode != NO_GO else 1.0)
        g = row_go if pre >= 0 else 0.0
        c_ap[r], c_an[r], c_pn[r] = g, -g * w_an, -g * (1.0 - w_an)
        row_loss = pre if not pre < 0 else 0.0
        if loss_out.shape[0] == d_ap.shape[0]:
            loss_out[r] = row_loss
        acc += row_loss
    total = block_sum(acc)
    if cuda.threadIdx.x == 0:
        partials[cuda.blockIdx.x] = total


@cuda.jit
def _add(dst, src):
    for i in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[i] += src[i]


def triplet_with_callable(dev, spec, want_grad, out, grad_output):
    """TripletMarginWithDistanceLoss with a callable pair (d, d_grad) on device arrays (a
    PairSpec with its `distance`): the callables take and give the caller's kind of arrays
    (CuPy, torch, numba), the rest runs in `_triplet_rows` and adds the callable's gradients
    on the device."""
    distance, distance_grad = spec.distance
    inputs, red, rows = spec.inputs, spec.reduction, spec.rows
    shape, dtype, loss_shape = tuple(inputs[0][1].shape), inputs[0][1].dtype, red.loss_shape

    def dist(i, j, what):
        d = dev.view(distance(inputs[i][0], inputs[j][0]), f"distance_function's d({what})")
        if tuple(d.shape) != loss_shape:
            fail(ValueError, f"distance_function's d({what})", f"shape {loss_shape}", tuple(d.shape))
        return flat(d)

    d_ap, d_an = dist(0, 1, "anchor, positive"), dist(0, 2, "anchor, negative")
    d_pn = dist(1, 2, "positive, negative") if spec.swap else d_an
    none = red.none
    scale, go = dev.row_scale(grad_output, loss_shape, none, red.divisor, want_grad)
    loss_obj, loss_out = dev.empty(loss_shape, dtype) if none else (None, None)
    coefs = [dev.empty(loss_shape, dtype) for _ in range(3)]
    blocks = grid(rows)
    partials = dev.partials(blocks)
    dev.launch(_triplet_rows, blocks, THREADS, d_ap, d_an, d_pn, spec.swap, spec.margin, scale,
               d_ap if go is None else go, go_mode(go, rows, none), d_ap if loss_out is None else flat(loss_out),
               *(flat(view) for _, view in coefs), partials)
    loss = loss_obj if none else dev.finish(partials, red.divisor, dtype)
    if not want_grad:
        return LossAndGrad(loss, None)
    grads = dev.gradients((shape,) * 3, dtype, out, spec.names)
    for _, view in grads:
        dev.fill(view, 0.0)
    pairs = ((0, 1), (0, 2)) + (((1, 2),) if spec.swap else ())
    for (i, j), (coef, _) in zip(pairs, coefs):
        for k, g in zip((i, j), distance_grad(inputs[i][0], inputs[j][0], coef)):
            view = flat(dev.view(g, "distance_function's d_grad"))
            target = flat(grads[k][1])
            if view.shape[0] != target.shape[0]:
                fail(ValueError, "distance_function's d_grad", f"gradients of shape {shape}", tuple(view.shape))
            dev.launch(_add, grid(target.shape[0]), THREADS, target, view)
    return LossAndGrad(loss, tuple(g for g, _ in grads))
