"""The softmax family on the GPU: one row kernel (a block per row, rows grid-strided) for
CrossEntropyLoss with every option, SoftmaxFocalLoss, NLLLoss (the same loop with the
log-sum-exp pass left out: the input already holds log-probabilities), and the chunks of
LinearCrossEntropyLoss and NTXentLoss, whose matrix products run in the caller's framework.

Per row: one pass keeps a running max and float64 sum of exps per thread (the online
softmax), merged over the block in a fixed tree; a second pass writes the gradient. Row
losses are summed per block in row order, the blocks' partials by `Device.finish`.
"""
import functools
import math

import numpy as np
from numba import cuda, float32, float64

from .._criterion import GradHess, LossAndGrad
from ._device import THREADS, block_max, block_share, block_sum, flat, grid

_TYPES = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}
NO_GO, ROW_GO, SCALAR_GO = 0, 1, 2   # grad_output: none, one per row, one device scalar


# rows of at most this many classes, and K-dimensional rows (their classes lie D apart, their
# positions side by side), run a thread each, so that neighbouring threads read neighbouring
# memory; wider rows run a block each, its threads over the classes
SMALL_C = THREADS // 4


def _thread_per_row(C, D):
    return D > 1 or C <= SMALL_C


def row_blocks(rows, C, D):
    """The row kernel's blocks for `rows` rows: a function of the shape alone (determinism)."""
    return grid(rows) if _thread_per_row(C, D) else grid(rows, 1)


@cuda.jit(device=True, inline=True)
def _same(value):
    return value


@functools.lru_cache(maxsize=None)
def _row_kernel(dtype, grad, none, prob, capped, focal, log_probs, hess, per_thread):
    """The row loop for one combination of modes (compile-time flags, so each variant is
    straight code): grad writes d loss / d input; none writes per-row losses; prob reads
    class probabilities; capped maps the logits through c tanh(x / c); focal is the focal
    loss; log_probs is NLLLoss (no log-sum-exp); hess writes the hessian's diagonal;
    per_thread runs a row per thread (else a block per row, its threads over the classes)."""
    R = _TYPES[dtype]
    row_sum, row_max = (_same, _same) if per_thread else (block_sum, block_max)

    @cuda.jit
    def kernel(x, rows, C, D, target, target_prob, weight, has_weight, weight_total, ignore_index, label_smoothing,
               z_loss, softcap, focal_gamma, scale_ce, scale_z, z_share, go, go_mode, loss_out, g, h, partials):
        lane, lanes = (0, 1) if per_thread else (cuda.threadIdx.x, THREADS)
        first, step = (cuda.grid(1), cuda.gridsize(1)) if per_thread else (cuda.blockIdx.x, cuda.gridDim.x)
        block_loss = 0.0
        for r in range(first, rows, step):
            base = (r // D) * C * D + r % D
            t = -1
            if not prob:
                t = target[r]
                if t == ignore_index:   # the whole row is 0, its gradient too
                    if none and lane == 0:
                        loss_out[r] = 0
                    if grad:
                        for c in range(lane, C, lanes):
                            g[base + c * D] = 0
                            if hess:
                                h[base + c * D] = 0
                    continue
            # pass 1: max and sum of exps (online, per thread), smoothing and probability sums
            m, s, wz, wp, wpz = -math.inf, 0.0, 0.0, 0.0, 0.0
            for c in range(lane, C if not log_probs else 0, lanes):
                z = x[base + c * D]
                if capped:
                    z = R(softcap) * math.tanh(z / R(softcap))
                if not log_probs:
                    if z > m:   # (from m = -inf: 0 * 0 + 1, or a NaN seen before stays NaN)
                        s = s * math.exp(m - z) + 1.0
                        m = z
                    elif z != -math.inf:   # (a masked -inf adds nothing; a NaN propagates)
                        s += math.exp(R(z - m))
                w = float64(weight[c]) if has_weight else 1.0
                if prob:
                    p = float64(target_prob[base + c * D]) * (1.0 - label_smoothing) + label_smoothing / C
                    wp += w * p
                    wpz += w * p * z
                elif label_smoothing > 0:
                    wz += w * z
            lse = 0.0
            if not log_probs:
                peak = row_max(m)
                s = s * math.exp(m - peak) if m > -math.inf else s
                lse = peak + math.log(row_sum(s))
            w_t, z_t = 1.0, 0.0
            if not prob:
                w_t = float64(weight[t]) if has_weight else 1.0
                z_t = float64(x[base + t * D])
                if capped:
                    z_t = softcap * math.tanh(z_t / softcap)
            # the row's loss and the gradient's coefficients: g_c = a p_c - b [c = t] - e w_c (- f w_c p'_c)
            f1 = f2 = pt = 0.0
            if prob:
                wp, wpz = row_sum(wp), row_sum(wpz)
                loss = wp * lse - wpz
                a, b = wp, 0.0
            elif focal:
                log_pt = z_t - lse
                pt = math.exp(log_pt)
                q = 1.0 - pt
                qg = q ** focal_gamma if focal_gamma > 0 else 1.0
                loss = -w_t * qg * log_pt
                dq = focal_gamma * pt * q ** (focal_gamma - 1) * log_pt if focal_gamma > 0 else 0.0
                a = b = w_t * (qg - dq)
                if hess:   # d(-f)/dp and d2(-f)/dp2 of f(p) = (1 - p)^focal_gamma log p, at p_t
                    f1 = focal_gamma * q ** (focal_gamma - 1) * log_pt - qg / pt
                    f2 = (-focal_gamma * (focal_gamma - 1) * q ** (focal_gamma - 2) * log_pt
                          + 2 * focal_gamma * q ** (focal_gamma - 1) / pt + qg / (pt * pt))
            else:
                wz = row_sum(wz) if label_smoothing > 0 else 0.0
                loss = (1 - label_smoothing) * w_t * (lse - z_t) + label_smoothing / C * (weight_total * lse - wz)
                a, b = (1 - label_smoothing) * w_t + label_smoothing / C * weight_total, (1 - label_smoothing) * w_t
            e = 0.0 if prob or focal else label_smoothing / C
            if z_loss > 0:
                loss += z_share * z_loss * lse * lse
            if none and lane == 0:
                loss_out[r] = loss
            block_loss += loss
            if grad:
                if not per_thread:
                    cuda.syncthreads()   # every thread has read z_t: g may overwrite x (LinearCE's chunks)
                row_go = 1.0
                if go_mode == ROW_GO:
                    row_go = float64(go[r])
                elif go_mode == SCALAR_GO:
                    row_go = float64(go[0])
                k = scale_ce * row_go
                kz = 2.0 * z_loss * lse * scale_z * row_go
                for c in range(lane, C, lanes):
                    i = base + c * D
                    z = x[i]
                    dcap = R(1)
                    if capped:
                        th = math.tanh(z / R(softcap))
                        z, dcap = R(softcap) * th, R(1) - th * th
                    p = R(0) if log_probs else math.exp(R(z - lse))
                    w = float64(weight[c]) if has_weight else 1.0
                    d = a * p - e * w
                    if prob:
                        d -= w * (float64(target_prob[i]) * (1.0 - label_smoothing) + label_smoothing / C)
                    elif c == t:
                        d -= b
                    g[i] = R((k * d + kz * p) * dcap)
                    if hess:   # cross entropy a p (1 - p) plus the z-loss's; the focal row through p_t
                        p64 = float64(p)
                        if focal:
                            dd = (1.0 if c == t else 0.0) - p64
                            h[i] = R(k * w_t * (f2 * pt * pt * dd * dd + f1 * pt * (dd * dd - p64 * (1 - p64))))
                        else:
                            h[i] = R(k * a * p64 * (1 - p64)
                                     + scale_z * row_go * 2 * z_loss * (p64 * p64 + lse * p64 * (1 - p64)))
        block_loss = block_sum(block_loss) if per_thread else block_share(block_loss)
        if not none and cuda.threadIdx.x == 0:
            partials[cuda.blockIdx.x] = block_loss
    return kernel


def rows_kernel(dev, x, rows, C, D, target, target_prob, weight, options, scale_ce, scale_z, go, loss_out, grad,
                log_probs=False, partials=None, hess=None):
    """Launch the row kernel over device views (x flat; target (rows,) or None; target_prob
    flat or None; weight (C,) or None; options: the spec's ClassOptions; go: None, a (rows,)
    array, or a one-element array read as a scalar; hess: the hessian's diagonal, flat, or
    None); returns the block partials (None for 'none'). `partials`: where the blocks write
    them (`row_blocks` of them), else a fresh array."""
    dummy = x
    none = loss_out is not None
    blocks = partials.shape[0] if partials is not None and not none else row_blocks(rows, C, D)
    partials = dummy if none else dev.partials(blocks) if partials is None else partials
    focal = options.focal_gamma >= 0
    kernel = _row_kernel(x.dtype, grad is not None, none, target_prob is not None, options.softcap > 0, focal,
                         log_probs, hess is not None, _thread_per_row(C, D))
    if rows:
        dev.launch(kernel, blocks, THREADS, x, rows, C, D, dummy if target is None else target,
                   dummy if target_prob is None else target_prob, dummy if weight is None else weight,
                   weight is not None, float(options.weight_total), int(options.ignore_index),
                   float(options.label_smoothing), float(options.z_loss), float(options.softcap),
                   float(max(options.focal_gamma, 0.0)), float(scale_ce), float(scale_z), float(options.z_share),
                   dummy if go is None else go, go_mode(go, rows, none), dummy if loss_out is None else loss_out,
                   dummy if grad is None else grad, dummy if hess is None else hess, partials)
    elif not none and partials.shape[0]:
        dev.fill(partials, 0.0)
    return None if none else partials


def go_mode(go, rows, none):
    """How a kernel reads the grad_output array that `Device.grad_output` gave."""
    return NO_GO if go is None else ROW_GO if none and go.shape[0] == rows else SCALAR_GO


def class_rows(dev, spec, want_grad, out, grad_output, hess=False):
    """CrossEntropyLoss, SoftmaxFocalLoss and NLLLoss (spec.log_probs) on device arrays: a
    ClassRows spec whose class-index targets were checked on a host copy (the divisors are
    the CPU path's exact sums); the logits never leave the device."""
    x, red = spec.x, spec.reduction
    dtype = x.dtype
    factor, go = dev.grad_output(grad_output, red.loss_shape, red.none) if want_grad else (1.0, None)
    scale_ce = factor if red.none else factor / red.divisor if red.divisor else 0.0
    scale_z = factor if red.none else factor / spec.z_divisor if spec.z_divisor else 0.0
    (grad_obj, grad), = dev.gradients((tuple(x.shape),), dtype, out, ("input",)) if want_grad else [(None, None)]
    loss_obj, loss_out = dev.empty(red.loss_shape, dtype) if red.none else (None, None)
    hess_obj, hess_view = dev.empty(tuple(x.shape), dtype) if hess else (None, None)
    partials = rows_kernel(
        dev, flat(x), spec.rows, spec.classes, spec.positions, None if spec.target is None else flat(spec.target),
        None if spec.target_prob is None else flat(spec.target_prob),
        None if spec.weight is None else dev.upload(spec.weight), spec.options, scale_ce, scale_z, go,
        None if loss_out is None else flat(loss_out), None if grad is None else flat(grad), spec.log_probs,
        hess=None if hess_view is None else flat(hess_view))
    if hess:
        return GradHess(grad_obj, hess_obj)
    loss = loss_obj if red.none else dev.finish(partials, red.divisor, dtype)
    return LossAndGrad(loss, grad_obj)


@functools.lru_cache(maxsize=None)
def _margin_kernel(dtype, loss, grad, none):
    """The margin losses' row loop (``_kernels/softmax.pyx.tp`` has the formulas): a block
    per row, its threads over the classes; a row's terms are summed in float64 in the block's
    fixed tree."""
    R = _TYPES[dtype]

    @cuda.jit(device=True, inline=True)
    def is_target(target, base, C, c):
        """Whether class c is among the row's targets (MultiLabelMargin: those before the first -1)."""
        for k in range(C):
            t = target[base + k]
            if t < 0:
                return False
            if t == c:
                return True
        return False

    @cuda.jit
    def kernel(x, rows, C, target, target_real, weight, has_weight, margin, p, scale, go, go_mode, loss_out, g,
               partials):
        t_id = cuda.threadIdx.x
        block_loss = 0.0
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            base = r * C
            row_go = scale * (float64(go[r if go_mode == ROW_GO else 0]) if go_mode != NO_GO else 1.0)
            acc = slope = 0.0
            if loss == "multi_margin":
                # l = w_t / C sum_{c != t} max(0, margin - x_t + x_c)^p; dl/dx_t = -sum_c dl/dx_c
                t = target[r]
                w_t = float64(weight[t]) if has_weight else 1.0
                margin_t = R(margin) - x[base + t]
                factor = w_t * row_go / C
                for c in range(t_id, C, THREADS):
                    h = margin_t + x[base + c]
                    h = h if h > 0 else R(0)
                    term = float64(h) if p == 1 else float64(h * h)
                    s = (1.0 if h > 0 else 0.0) if p == 1 else 2.0 * float64(h)
                    if c == t:
                        term = s = 0.0
                    acc += term
                    slope += s
                    if grad:
                        g[base + c] = R(factor * s)
                row_loss = w_t * block_sum(acc) / C
                slopes = block_sum(slope) if grad else 0.0
                if grad and t_id == 0:
                    g[base + t] = R(-factor * slopes)
            elif loss == "multilabel_margin":
                # l = 1 / C sum_{j in T} sum_{c not in T} max(0, 1 - x_j + x_c): a class outside T
                # gains 1 / C per positive hinge, each target entry j loses 1 / C per one
                for c in range(t_id, C, THREADS):
                    xc, count = x[base + c], 0.0
                    if not is_target(target, base, C, c):
                        for k in range(C):
                            j = target[base + k]
                            if j < 0:
                                break
                            h = R(1) - x[base + j] + xc
                            if h > 0:
                                acc += float64(h)
                                count += 1.0
                    else:   # one count per entry of c in T, over the classes outside T
                        for k in range(C):
                            j = target[base + k]
                            if j < 0:
                                break
                            if j == c:
                                for e in range(C):
                                    if R(1) - xc + x[base + e] > 0 and not is_target(target, base, C, e):
                                        count -= 1.0
                    if grad:
                        g[base + c] = R(count * row_go / C)
                row_loss = block_sum(acc) / C
            else:
                # l = 1 / C sum_c w_c ((1 - y_c) x_c + log(1 + e^-x_c)); dl/dx_c = w_c (sigma(x_c) - y_c) / C
                for c in range(t_id, C, THREADS):
                    xv, yv = x[base + c], R(target_real[base + c])
                    w = R(weight[c]) if has_weight else R(1)
                    e = math.exp(-abs(xv))
                    acc += float64(w * ((R(1) - yv) * xv + math.log1p(e) + (-xv if xv < 0 else R(0))))
                    if grad:
                        g[base + c] = R(w * ((R(1) if xv >= 0 else e) / (R(1) + e) - yv) * R(row_go / C))
                row_loss = block_sum(acc) / C
            if none and t_id == 0:
                loss_out[r] = row_loss
            block_loss += row_loss
        block_loss = block_share(block_loss)
        if not none and t_id == 0:
            partials[cuda.blockIdx.x] = block_loss
    return kernel


def margin_rows(dev, spec, want_grad, out, grad_output):
    """MultiMarginLoss, MultiLabelMarginLoss and MultiLabelSoftMarginLoss on device arrays (a
    MarginRows spec): a block per row."""
    x, red, rows, C = spec.x, spec.reduction, spec.rows, spec.classes
    dtype = x.dtype
    scale, go = dev.row_scale(grad_output, red.loss_shape, red.none, red.divisor, want_grad)
    (grad_obj, grad), = dev.gradients((tuple(x.shape),), dtype, out, ("input",)) if want_grad else [(None, None)]
    loss_obj, loss_out = dev.empty(red.loss_shape, dtype) if red.none else (None, None)
    flat_x = flat(x)
    target = flat(spec.target if spec.target is not None else spec.target_real)
    blocks = grid(rows, 1)
    partials = flat_x if red.none else dev.partials(blocks)
    if rows and C:
        dev.launch(_margin_kernel(dtype, spec.loss, want_grad, red.none), blocks, THREADS, flat_x, rows, C,
                   target, target, flat_x if spec.weight is None else dev.upload(spec.weight),
                   spec.weight is not None, float(spec.margin), int(spec.p), float(scale),
                   flat_x if go is None else go, go_mode(go, rows, red.none),
                   flat_x if loss_out is None else flat(loss_out), flat_x if grad is None else flat(grad), partials)
    elif not red.none:
        partials = dev.partials(0)
    loss = loss_obj if red.none else dev.finish(partials, red.divisor, dtype)
    return LossAndGrad(loss, grad_obj)


@cuda.jit
def _add_bias(logits, bias):
    """logits (rows, C) += bias (C,)."""
    C = bias.shape[0]
    for i in range(cuda.grid(1), logits.shape[0] * C, cuda.gridsize(1)):
        logits[i // C, i % C] += bias[i % C]


@cuda.jit
def _add_column_sums(g, sums):
    """sums (C,) += the float64 column sums of g (rows, C), each column in row order."""
    for c in range(cuda.grid(1), g.shape[1], cuda.gridsize(1)):
        acc = sums[c]
        for r in range(g.shape[0]):
            acc += g[r, c]
        sums[c] = acc


def _rows_of(pair, rows, width):
    """An (array, view) pair as (rows, width)."""
    return pair[0].reshape(rows, width), pair[1].reshape(rows, width)


def _slice(pair, r0, r1):
    return pair[0][r0:r1], pair[1][r0:r1]


def linear_cross_entropy(dev, spec, want_grad, out, grad_output):
    """LinearCrossEntropyLoss on device arrays (a LinearRows spec), in the CPU path's chunks:
    each chunk's logits come from one product (cuBLAS through the caller's framework, or
    `_gemm`), the row kernel overwrites them with their gradient, and two more products give
    the input's gradient and add to the weight's; the bias gradient is summed per column in
    float64. The chunks' block partials go into one array that `Device.finish` sums in order."""
    x, w, bias, red = spec.x, spec.linear_weight, spec.bias, spec.reduction
    C, H, N, dtype = spec.classes, spec.hidden, spec.N, x[1].dtype
    scale, go = dev.row_scale(grad_output, red.loss_shape, red.none, red.divisor, want_grad)
    shapes = (tuple(x[1].shape), (C, H), None if bias is None else (C,))
    grads = dev.gradients(shapes, dtype, out, spec.names) if want_grad else [(None, None)] * 3
    loss_obj, loss_out = dev.empty(red.loss_shape, dtype) if red.none else (None, None)
    rows = spec.chunk_rows
    logits = dev.empty((min(rows, N), C), dtype)
    blocks = row_blocks(rows, C, 1)
    partials = None if red.none else dev.partials(-(-N // rows) * blocks)
    X = _rows_of(x, N, H)
    flat_target = flat(spec.target if spec.target is not None else spec.target_prob)
    prob = spec.target_prob is not None
    flat_loss = None if loss_out is None else flat(loss_out)
    row_go = go is not None and go_mode(go, N, red.none) == ROW_GO
    weight_view = None if spec.weight is None else dev.upload(spec.weight)
    if want_grad:
        grad_x = _rows_of(grads[0], N, H)
        if N == 0:
            dev.fill(grads[1][1], 0.0)
        if bias is not None:
            bias_sums = dev.empty((C,), np.float64)[1]
            dev.fill(bias_sums, 0.0)
    for i, r0 in enumerate(range(0, N, rows)):
        r1 = min(N, r0 + rows)
        chunk, x_chunk = _slice(logits, 0, r1 - r0), _slice(X, r0, r1)
        dev.matmul(x_chunk, w, chunk, trans_b=True)
        if bias is not None:
            dev.launch(_add_bias, grid((r1 - r0) * C), THREADS, chunk[1], bias[1])
        rows_kernel(dev, flat(chunk[1]), r1 - r0, C, 1, None if prob else flat_target[r0:r1],
                    flat_target[r0 * C:r1 * C] if prob else None, weight_view, spec.options, scale, 0.0,
                    go[r0:r1] if row_go else go, None if flat_loss is None else flat_loss[r0:r1],
                    flat(chunk[1]) if want_grad else None,
                    partials=None if partials is None else partials[i * blocks:(i + 1) * blocks])
        if want_grad:   # the chunk now holds d loss / d logits
            dev.matmul(chunk, w, _slice(grad_x, r0, r1))
            dev.matmul(chunk, x_chunk, grads[1], trans_a=True, accumulate=r0 > 0)
            if bias is not None:
                dev.launch(_add_column_sums, grid(C), THREADS, chunk[1], bias_sums)
    if want_grad and bias is not None:
        dev.copy(bias_sums, grads[2][1])
    loss = loss_obj if red.none else dev.finish(partials, red.divisor, dtype)
    given = grads if bias is not None else grads[:2]   # one gradient per input given
    return LossAndGrad(loss, tuple(g for g, _ in given) if want_grad else None)


# ---------------------------------------------------------------- Dice
SOFTMAX, SIGMOID, PROBABILITIES = 0, 1, 2   # the kernels' compile-time link (DiceSpec.link by name)
_LINKS = {"softmax": SOFTMAX, "sigmoid": SIGMOID, "probabilities": PROBABILITIES}
# Positions q = (n, s) of an (N, C, S) input. A first kernel keeps each position's log-sum-exp
# over the classes (multiclass from logits: O(N S) float64 scratch); the sums kernel runs a
# class per grid row and positions across blocks, each block summing I, S, Y in float64 in its
# fixed tree; one thread per class then adds its blocks in order and gives the class's loss
# and gradient coefficients; the gradient kernel runs a thread per position over the classes.

@functools.lru_cache(maxsize=None)
def _dice_kernels(dtype, link, index_target, has_ignore):
    """(log-sum-exp, sums, gradient) kernels for one link (SOFTMAX over the classes, SIGMOID,
    or PROBABILITIES: the input itself); targets as class indices (N, S) or 0/1 (N, C, S)."""
    R = _TYPES[dtype]

    @cuda.jit(device=True, inline=True)
    def probability(x, lse, i, q):
        v = x[i]
        if link == SOFTMAX:
            return R(math.exp(float64(v) - lse[q]))
        if link == SIGMOID:
            e = math.exp(-abs(v))
            return (R(1) if v >= 0 else e) / (R(1) + e)
        return v

    @cuda.jit(device=True, inline=True)
    def target_and_mask(target, ignore, n, c, s, C, S):
        if index_target:
            t = target[n * S + s]
            return R(t == c), R(not (has_ignore and t == ignore))
        y = target[(n * C + c) * S + s]
        return R(y), R(not (has_ignore and y == ignore))

    @cuda.jit
    def log_sum_exp(x, N, C, S, lse):
        for q in range(cuda.grid(1), N * S, cuda.gridsize(1)):
            base = (q // S) * C * S + q % S
            m = -math.inf
            for c in range(C):
                m = max(m, float64(x[base + c * S]))
            acc = 0.0
            for c in range(C):
                acc += math.exp(float64(x[base + c * S]) - m)
            lse[q] = m + math.log(acc)

    @cuda.jit
    def sums(x, N, C, S, target, ignore, lse, partials):
        c = cuda.blockIdx.y
        inner = both = present = 0.0
        for q in range(cuda.blockIdx.x * THREADS + cuda.threadIdx.x, N * S, cuda.gridDim.x * THREADS):
            n, s = q // S, q % S
            y, mask = target_and_mask(target, ignore, n, c, s, C, S)
            p = probability(x, lse, (n * C + c) * S + s, q) * mask
            y *= mask
            inner += float64(p * y)
            both += float64(p) + float64(y)
            present += float64(y)
        base = (c * cuda.gridDim.x + cuda.blockIdx.x) * 3
        inner, both, present = block_sum(inner), block_sum(both), block_sum(present)
        if cuda.threadIdx.x == 0:
            partials[base], partials[base + 1], partials[base + 2] = inner, both, present

    @cuda.jit
    def gradient(x, N, C, S, target, ignore, lse, coef_y, coef_1, g):
        # d loss / d p_c = mask (coef_y[c] y_c + coef_1[c]); through a softmax
        # dx_c = p_c (dp_c - sum_k p_k dp_k), through a sigmoid dp_c p_c (1 - p_c)
        for q in range(cuda.grid(1), N * S, cuda.gridsize(1)):
            n, s = q // S, q % S
            weighted = 0.0
            if link == SOFTMAX:
                for c in range(C):
                    y, mask = target_and_mask(target, ignore, n, c, s, C, S)
                    weighted += float64(probability(x, lse, (n * C + c) * S + s, q)) * mask * (
                        coef_y[c] * y + coef_1[c])
            for c in range(C):
                i = (n * C + c) * S + s
                y, mask = target_and_mask(target, ignore, n, c, s, C, S)
                p, dp = probability(x, lse, i, q), mask * (coef_y[c] * y + coef_1[c])
                if link == SOFTMAX:
                    g[i] = R(p * (dp - weighted))
                elif link == SIGMOID:
                    g[i] = R(dp * p * (R(1) - p))
                else:
                    g[i] = R(dp)

    return log_sum_exp, sums, gradient


@cuda.jit
def _dice_classes(partials, blocks, smooth, eps, factor, go, go_mode, class_losses, coef_y, coef_1):
    """Per class c (a thread each): its blocks' sums added in order, loss_c and the gradient's
    coefficients (DiceLoss._cpu derives them), scaled by the reduction and grad_output."""
    c = cuda.grid(1)
    if c >= class_losses.shape[0]:
        return
    inner = total = present = 0.0
    for b in range(blocks):
        base = (c * blocks + b) * 3
        inner += partials[base]
        total += partials[base + 1]
        present += partials[base + 2]
    has = 1.0 if present > 0 else 0.0
    denominator = max(total + smooth, eps)
    class_losses[c] = (1.0 - (2.0 * inner + smooth) / denominator) * has
    scale = factor * (float64(go[c if go_mode == ROW_GO else 0]) if go_mode != NO_GO else 1.0)
    coef_y[c] = -2.0 * has / denominator * scale
    coef_1[c] = has * (2.0 * inner + smooth) * (1.0 if total + smooth >= eps else 0.0) / denominator ** 2 * scale


def dice(dev, spec, want_grad, out, grad_output):
    """DiceLoss on device arrays (a DiceSpec): the per-class sums, the class losses and
    coefficients, and the gradient, all on the device."""
    x, red, N, C, S = spec.x, spec.reduction, spec.N, spec.C, spec.S
    shape, dtype = tuple(x.shape), x.dtype
    index_target = spec.target_index is not None
    link = _LINKS[spec.link]
    has_ignore = spec.ignore_index is not None
    ignore = spec.ignore_index if has_ignore else 0
    log_sum_exp, sums, gradient = _dice_kernels(dtype, link, index_target, has_ignore)
    flat_x = flat(x)
    flat_target = flat(spec.target_index if index_target else spec.target_real)
    positions = N * S
    lse = dev.empty((max(positions, 1) if link == SOFTMAX else 1,), np.float64)[1]
    if link == SOFTMAX and positions:
        dev.launch(log_sum_exp, grid(positions), THREADS, flat_x, N, C, S, lse)
    blocks = grid(positions)
    partials = dev.partials(max(C, 1) * blocks * 3)
    if C:
        dev.launch(sums, (blocks, C), THREADS, flat_x, N, C, S, flat_target, ignore, lse, partials)
    factor, go = dev.row_scale(grad_output, (C,), red.none, red.divisor, want_grad)
    class_losses, coef_y, coef_1 = (dev.empty((C,), np.float64)[1] for _ in range(3))
    if C:
        dev.launch(_dice_classes, grid(C), THREADS, partials, blocks, spec.smooth, spec.eps, factor,
                   flat_x if go is None else go, go_mode(go, C, red.none), class_losses, coef_y, coef_1)
    if red.none:
        loss, loss_view = dev.empty((C,), dtype)
        dev.copy(class_losses, loss_view)
    else:
        loss = dev.finish(class_losses, red.divisor, dtype)
    if not want_grad:
        return LossAndGrad(loss, None)
    (grad_obj, grad), = dev.gradients((shape,), dtype, out, ("input",))
    if positions and C:
        dev.launch(gradient, grid(positions), THREADS, flat_x, N, C, S, flat_target, ignore, lse, coef_y, coef_1,
                   flat(grad))
    return LossAndGrad(loss, grad_obj)
