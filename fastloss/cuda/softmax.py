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
def _row_kernel(dtype, grad, none, prob, softcap, focal, log_probs, hess, per_thread):
    """The row loop for one combination of modes (compile-time flags, so each variant is
    straight code): grad writes d loss / d input; none writes per-row losses; prob reads
    class probabilities; softcap maps the logits through c tanh(x / c); focal is the focal
    loss; log_probs is NLLLoss (no log-sum-exp); hess writes the hessian's diagonal;
    per_thread runs a row per thread (else a block per row, its threads over the classes)."""
    R = _TYPES[dtype]
    row_sum, row_max = (_same, _same) if per_thread else (block_sum, block_max)

    @cuda.jit
    def kernel(x, rows, C, D, target, target_prob, weight, has_weight, weight_total, ignore, eps, z_loss, cap,
               gamma, scale_ce, scale_z, z_ratio, go, go_mode, loss_out, g, h, partials):
        lane, lanes = (0, 1) if per_thread else (cuda.threadIdx.x, THREADS)
        first, step = (cuda.grid(1), cuda.gridsize(1)) if per_thread else (cuda.blockIdx.x, cuda.gridDim.x)
        block_loss = 0.0
        for r in range(first, rows, step):
            base = (r // D) * C * D + r % D
            t = -1
            if not prob:
                t = target[r]
                if t == ignore:   # the whole row is 0, its gradient too
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
                if softcap:
                    z = R(cap) * math.tanh(z / R(cap))
                if not log_probs:
                    if z > m:   # (from m = -inf: 0 * 0 + 1, or a NaN seen before stays NaN)
                        s = s * math.exp(m - z) + 1.0
                        m = z
                    elif z != -math.inf:   # (a masked -inf adds nothing; a NaN propagates)
                        s += math.exp(R(z - m))
                w = float64(weight[c]) if has_weight else 1.0
                if prob:
                    p = float64(target_prob[base + c * D]) * (1.0 - eps) + eps / C
                    wp += w * p
                    wpz += w * p * z
                elif eps > 0:
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
                if softcap:
                    z_t = cap * math.tanh(z_t / cap)
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
                qg = q ** gamma if gamma > 0 else 1.0
                loss = -w_t * qg * log_pt
                dq = gamma * pt * q ** (gamma - 1) * log_pt if gamma > 0 else 0.0
                a = b = w_t * (qg - dq)
                if hess:   # d(-f)/dp and d2(-f)/dp2 of f(p) = (1 - p)^gamma log p, at p_t
                    f1 = gamma * q ** (gamma - 1) * log_pt - qg / pt
                    f2 = -gamma * (gamma - 1) * q ** (gamma - 2) * log_pt + 2 * gamma * q ** (gamma - 1) / pt + qg / (pt * pt)
            else:
                wz = row_sum(wz) if eps > 0 else 0.0
                loss = (1 - eps) * w_t * (lse - z_t) + eps / C * (weight_total * lse - wz)
                a, b = (1 - eps) * w_t + eps / C * weight_total, (1 - eps) * w_t
            e = 0.0 if prob or focal else eps / C
            if z_loss > 0:
                loss += z_ratio * z_loss * lse * lse
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
                    if softcap:
                        th = math.tanh(z / R(cap))
                        z, dcap = R(cap) * th, R(1) - th * th
                    p = R(0) if log_probs else math.exp(R(z - lse))
                    w = float64(weight[c]) if has_weight else 1.0
                    d = a * p - e * w
                    if prob:
                        d -= w * (float64(target_prob[i]) * (1.0 - eps) + eps / C)
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


def rows_kernel(dev, x, rows, C, D, target, target_prob, weight, weight_total, ignore, eps, z_loss, softcap,
                gamma, scale_ce, scale_z, z_ratio, go, loss_out, grad, log_probs=False, partials=None, hess=None):
    """Launch the row kernel over device views (x flat; target (rows,) or None; target_prob
    flat or None; weight (C,) or None; go: None, a (rows,) array, or a one-element array read
    as a scalar; hess: the hessian's diagonal, flat, or None); returns the block partials (None
    for 'none'). `partials`: where the blocks write them (`row_blocks` of them), else a fresh array."""
    dummy = x
    none = loss_out is not None
    blocks = partials.shape[0] if partials is not None and not none else row_blocks(rows, C, D)
    partials = dummy if none else dev.partials(blocks) if partials is None else partials
    kernel = _row_kernel(x.dtype, grad is not None, none, target_prob is not None, bool(softcap), gamma >= 0,
                         log_probs, hess is not None, _thread_per_row(C, D))
    if rows:
        dev.launch(kernel, blocks, THREADS, x, rows, C, D, dummy if target is None else target,
                   dummy if target_prob is None else target_prob, dummy if weight is None else weight,
                   weight is not None, float(weight_total), int(ignore), float(eps), float(z_loss),
                   float(softcap or 0.0), float(max(gamma, 0.0)), float(scale_ce), float(scale_z), float(z_ratio),
                   dummy if go is None else go, go_mode(go, rows, none), dummy if loss_out is None else loss_out,
                   dummy if grad is None else grad, dummy if hess is None else hess, partials)
    elif not none and partials.shape[0]:
        dev.fill(partials, 0.0)
    return None if none else partials


def go_mode(go, rows, none):
    """How a kernel reads the grad_output array that `Device.grad_output` gave."""
    return NO_GO if go is None else ROW_GO if none and go.shape[0] == rows else SCALAR_GO


def host_only(crit, partial=False):
    """The mode that stays on the host: partial states (exact expansions for evaluating
    prediction sets in slices, whose blocks the CPU kernels fix)."""
    if partial:
        raise NotImplementedError(f"{type(crit).__name__}: partial states are for host arrays")


def cross_entropy(crit, arrays, want_grad, out, grad_output, hess=False, partial=False, log_probs=False):
    """CrossEntropyLoss, SoftmaxFocalLoss (crit._focal_gamma >= 0) and NLLLoss (log_probs) on
    device arrays. Class-index targets are checked on the host, with the CPU path's own code
    (a bad index raises before anything is written, and 'mean' divides by the same exact sum
    of weights): one copy of N integers and one synchronisation; the logits never leave."""
    from .._criterion import GradHess, LossAndGrad
    from ..losses.softmax import _class_targets, _class_weight, _layout, _weight_total
    from ._device import Device
    host_only(crit, partial)
    if hess and crit.softcap:
        raise NotImplementedError(f"{type(crit).__name__}: no hessian with softcap")
    dev = Device(arrays)
    _, x = dev.input(arrays[0], "input")
    N, C, D, target_shape = _layout(x)
    rows, dtype, none = N * D, x.dtype, crit.reduction == "none"
    weight = _class_weight(crit.weight, C, dtype)
    target = dev.operand(arrays[1], "target")
    prob = not log_probs and target.dtype.kind == "f"
    if log_probs or crit._focal_gamma >= 0 and prob:
        from .._arrays import fail
        if prob or target.dtype.kind not in "iub":
            fail(TypeError, "target", "class indices of an integer dtype", f"dtype {target.dtype}")
    if log_probs:
        _, weights, _ = _class_targets(dev.to_host(target), target_shape, C, crit.ignore_index, weight)
        ce_divisor = z_divisor = weights.value() if crit.reduction == "mean" else 1
    else:
        _, _, divisors, z_divisor = crit._targets(target if prob else dev.to_host(target), x.shape, target_shape,
                                                  C, weight)
        ce_divisor = divisors.value()
    factor, go = dev.grad_output(grad_output, target_shape, none) if want_grad else (1.0, None)
    scale_ce = factor if none else factor / ce_divisor if ce_divisor else 0.0
    scale_z = factor if none else factor / z_divisor if z_divisor else 0.0
    (grad_obj, grad), = dev.gradients((x.shape,), dtype, out, ("input",)) if want_grad else [(None, None)]
    loss_obj, loss_out = dev.empty(target_shape, dtype) if none else (None, None)
    hess_obj, hess_view = dev.empty(tuple(x.shape), dtype) if hess else (None, None)
    weight_total = _weight_total(weight, C)
    partials = rows_kernel(
        dev, flat(x), rows, C, D, None if prob else flat(target),
        flat(target) if prob else None, None if weight is None else dev.upload(weight), weight_total,
        crit.ignore_index, 0.0 if log_probs else crit.label_smoothing, 0.0 if log_probs else crit.z_loss,
        None if log_probs else crit.softcap, -1.0 if log_probs else crit._focal_gamma, scale_ce, scale_z,
        ce_divisor / z_divisor if z_divisor else 0.0, go,
        None if loss_out is None else flat(loss_out),
        None if grad is None else flat(grad), log_probs, hess=None if hess_view is None else flat(hess_view))
    if hess:
        return GradHess(grad_obj, hess_obj)
    loss = loss_obj if none else dev.finish(partials, ce_divisor, dtype)
    return LossAndGrad(loss, grad_obj)


MARGIN_LOSSES = ("multi_margin", "multilabel_margin", "multilabel_soft_margin")


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


@cuda.jit
def _count_bad_multilabel(target, rows, C, partials):
    """How many rows of MultiLabelMargin's targets hold an entry outside [0, C) before their first -1."""
    bad = 0.0
    for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
        for k in range(C):
            t = target[r * C + k]
            if t == -1:
                break
            if t < 0 or t >= C:
                bad += 1.0
                break
    total = block_sum(bad)
    if cuda.threadIdx.x == 0:
        partials[cuda.blockIdx.x] = total


def margin_rows(crit, arrays, want_grad, out, grad_output, partial=False):
    """MultiMarginLoss, MultiLabelMarginLoss and MultiLabelSoftMarginLoss on device arrays.
    MultiMargin's class indices are checked on the host (N integers, as cross entropy's);
    MultiLabelMargin's (N, C) targets are counted on the device, and copied to the host only
    to name the first bad entry."""
    from .._arrays import fail
    from .._criterion import LossAndGrad
    from ..losses.softmax import _class_targets, _class_weight
    from ._device import Device
    host_only(crit, partial)
    dev = Device(arrays)
    _, x = dev.input(arrays[0], "input")
    if x.ndim not in (1, 2):
        fail(ValueError, "input", "shape (N, C) or (C,)", tuple(x.shape))
    rows, C = (1, x.shape[0]) if x.ndim == 1 else tuple(x.shape)
    loss_shape, dtype, none = tuple(x.shape[:-1]), x.dtype, crit.reduction == "none"
    target = dev.operand(arrays[1], "target")
    weight = None
    if crit._margin_loss == "multi_margin":
        weight = _class_weight(crit.weight, C, dtype)
        _class_targets(dev.to_host(target), loss_shape, C, None, None)
    else:
        if tuple(target.shape) != tuple(x.shape):
            fail(ValueError, "target", f"shape {tuple(x.shape)} (the input's)", tuple(target.shape))
        if crit._margin_loss == "multilabel_margin":
            if target.dtype.kind not in "iu":
                fail(TypeError, "target", "class indices of an integer dtype", f"dtype {target.dtype}")
            partials = dev.partials(grid(rows))
            dev.launch(_count_bad_multilabel, grid(rows), THREADS, flat(target), rows, C, partials)
            if dev.to_host(partials).sum():   # the CPU path's check names the entry
                crit._check_targets(dev.to_host(target))
        else:
            weight = _class_weight(crit.weight, C, dtype)
    divisor = rows if crit.reduction == "mean" else 1
    scale, go = dev.row_scale(grad_output, loss_shape, none, divisor, want_grad)
    (grad_obj, grad), = dev.gradients((tuple(x.shape),), dtype, out, ("input",)) if want_grad else [(None, None)]
    loss_obj, loss_out = dev.empty(loss_shape, dtype) if none else (None, None)
    flat_x = flat(x)
    blocks = grid(rows, 1)
    partials = flat_x if none else dev.partials(blocks)
    if rows and C:
        dev.launch(_margin_kernel(dtype, crit._margin_loss, want_grad, none), blocks, THREADS, flat_x, rows, C,
                   flat(target), flat(target),
                   flat_x if weight is None else dev.upload(weight), weight is not None, float(getattr(crit, "margin", 0.0)),
                   int(getattr(crit, "p", 1)), float(scale), flat_x if go is None else go, go_mode(go, rows, none),
                   flat_x if loss_out is None else flat(loss_out),
                   flat_x if grad is None else flat(grad), partials)
    elif not none:
        partials = dev.partials(0)
    loss = loss_obj if none else dev.finish(partials, divisor, dtype)
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


def linear_cross_entropy(crit, arrays, want_grad, out, grad_output, partial=False):
    """LinearCrossEntropyLoss on device arrays, in the CPU path's chunks: each chunk's logits
    come from one product (cuBLAS through the caller's framework, or `_gemm`), the row kernel
    overwrites them with their gradient, and two more products give the input's gradient and
    add to the weight's; the bias gradient is summed per column in float64. The chunks' block
    partials go into one array that `Device.finish` sums in order."""
    from .._criterion import LossAndGrad
    from ..losses.softmax import _class_weight, _linear_shapes, _weight_total
    from ._device import Device
    host_only(crit, partial)
    dev = Device([a for a in arrays if a is not None])
    x, w = dev.input(arrays[0], "input"), dev.input(arrays[1], "linear_weight")
    bias = None if arrays[3] is None else dev.input(arrays[3], "linear_bias")
    C, H = _linear_shapes(x[1], w[1], None if bias is None else bias[1])
    dtype, N = x[1].dtype, 1 if x[1].ndim == 1 else x[1].shape[0]
    target_shape = tuple(x[1].shape[:-1])
    weight = _class_weight(crit.weight, C, dtype)
    target = dev.operand(arrays[2], "target")
    prob = target.dtype.kind == "f"
    _, _, divisors, _ = crit._targets(target if prob else dev.to_host(target), target_shape + (C,), target_shape,
                                      C, weight)
    divisor = divisors.value()
    none = crit.reduction == "none"
    scale, go = dev.row_scale(grad_output, target_shape, none, divisor, want_grad)
    shapes = (tuple(x[1].shape), (C, H), None if bias is None else (C,))
    grads = dev.gradients(shapes, dtype, out, crit.differentiable) if want_grad else [(None, None)] * 3
    loss_obj, loss_out = dev.empty(target_shape, dtype) if none else (None, None)
    rows = crit._chunk()
    logits = dev.empty((min(rows, N), C), dtype)
    blocks = row_blocks(rows, C, 1)
    partials = None if none else dev.partials(-(-N // rows) * blocks)
    X = _rows_of(x, N, H)
    flat_target = flat(target)
    flat_loss = None if loss_out is None else flat(loss_out)
    row_go = go is not None and go_mode(go, N, none) == ROW_GO
    weight_view = None if weight is None else dev.upload(weight)
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
                    flat_target[r0 * C:r1 * C] if prob else None, weight_view, _weight_total(weight, C),
                    crit.ignore_index, crit.label_smoothing, 0.0, None, -1.0, scale, 0.0, 0.0,
                    go[r0:r1] if row_go else go, None if flat_loss is None else flat_loss[r0:r1],
                    flat(chunk[1]) if want_grad else None,
                    partials=None if partials is None else partials[i * blocks:(i + 1) * blocks])
        if want_grad:   # the chunk now holds d loss / d logits
            dev.matmul(chunk, w, _slice(grad_x, r0, r1))
            dev.matmul(chunk, x_chunk, grads[1], trans_a=True, accumulate=r0 > 0)
            if bias is not None:
                dev.launch(_add_column_sums, grid(C), THREADS, chunk[1], bias_sums)
    if want_grad and bias is not None:
        dev.cast(bias_sums, grads[2][1])
    loss = loss_obj if none else dev.finish(partials, divisor, dtype)
    given = grads if bias is not None else grads[:2]   # one gradient per input given
    return LossAndGrad(loss, tuple(g for g, _ in given) if want_grad else None)


# ---------------------------------------------------------------- Dice
# Positions q = (n, s) of an (N, C, S) input. A first kernel keeps each position's log-sum-exp
# over the classes (multiclass from logits: O(N S) float64 scratch); the sums kernel runs a
# class per grid row and positions across blocks, each block summing I, S, Y in float64 in its
# fixed tree; one thread per class then adds its blocks in order and gives the class's loss
# and gradient coefficients; the gradient kernel runs a thread per position over the classes.

@functools.lru_cache(maxsize=None)
def _dice_kernels(dtype, mode, index_target, has_ignore):
    """(log-sum-exp, sums, gradient) kernels for one mode: 0 softmax over the classes, 1
    sigmoid, 2 the input as probabilities; targets as class indices (N, S) or 0/1 (N, C, S)."""
    R = _TYPES[dtype]

    @cuda.jit(device=True, inline=True)
    def probability(x, lse, i, q):
        v = x[i]
        if mode == 0:
            return R(math.exp(float64(v) - lse[q]))
        if mode == 1:
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
            if mode == 0:
                for c in range(C):
                    y, mask = target_and_mask(target, ignore, n, c, s, C, S)
                    weighted += float64(probability(x, lse, (n * C + c) * S + s, q)) * mask * (
                        coef_y[c] * y + coef_1[c])
            for c in range(C):
                i = (n * C + c) * S + s
                y, mask = target_and_mask(target, ignore, n, c, s, C, S)
                p, dp = probability(x, lse, i, q), mask * (coef_y[c] * y + coef_1[c])
                if mode == 0:
                    g[i] = R(p * (dp - weighted))
                elif mode == 1:
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


def dice(crit, arrays, want_grad, out, grad_output, partial=False):
    """DiceLoss on device arrays: the per-class sums, the class losses and coefficients, and
    the gradient, all on the device (multiclass class indices are checked on the host)."""
    from .._arrays import fail
    from .._criterion import LossAndGrad
    from ..losses.softmax import _class_targets
    from ._device import Device
    host_only(crit, partial)
    dev = Device(arrays)
    _, x = dev.input(arrays[0], "input")
    shape = tuple(x.shape)
    (N, C, S), dtype = crit._dims(shape), x.dtype
    target = dev.operand(arrays[1], "target")
    index_target = crit.mode == "multiclass"
    if index_target:
        _class_targets(dev.to_host(target), (N,) + shape[2:], C, crit.ignore_index, None)
    elif tuple(target.shape) != shape:
        fail(ValueError, "target", f"shape {shape} (the input's)", tuple(target.shape))
    mode = 2 if not crit.from_logits else (0 if index_target else 1)
    has_ignore = crit.ignore_index is not None
    ignore = crit.ignore_index if has_ignore else 0
    log_sum_exp, sums, gradient = _dice_kernels(dtype, mode, index_target, has_ignore)
    flat_x = flat(x)
    flat_target = flat(target)
    positions = N * S
    lse = dev.empty((max(positions, 1) if mode == 0 else 1,), np.float64)[1]
    if mode == 0 and positions:
        dev.launch(log_sum_exp, grid(positions), THREADS, flat_x, N, C, S, lse)
    blocks = grid(positions)
    partials = dev.partials(max(C, 1) * blocks * 3)
    if C:
        dev.launch(sums, (blocks, C), THREADS, flat_x, N, C, S, flat_target, ignore, lse, partials)
    none = crit.reduction == "none"
    factor, go = dev.row_scale(grad_output, (C,), none, C if crit.reduction == "mean" else 1, want_grad)
    class_losses, coef_y, coef_1 = (dev.empty((C,), np.float64)[1] for _ in range(3))
    if C:
        dev.launch(_dice_classes, grid(C), THREADS, partials, blocks, crit.smooth, crit.eps, factor,
                   flat_x if go is None else go, go_mode(go, C, none), class_losses, coef_y, coef_1)
    if none:
        loss, loss_view = dev.empty((C,), dtype)
        dev.cast(class_losses, loss_view)
    else:
        loss = dev.finish(class_losses, C if crit.reduction == "mean" else 1, dtype)
    if not want_grad:
        return LossAndGrad(loss, None)
    (grad_obj, grad), = dev.gradients((shape,), dtype, out, ("input",))
    if positions and C:
        dev.launch(gradient, grid(positions), THREADS, flat_x, N, C, S, flat_target, ignore, lse, coef_y, coef_1,
                   flat(grad))
    return LossAndGrad(loss, grad_obj)
