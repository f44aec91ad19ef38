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

from ._device import THREADS, block_max, block_share, block_sum, grid

_TYPES = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}
NO_GO, ROW_GO, SCALAR_GO = 0, 1, 2   # grad_output: none, one per row, one device scalar


@functools.lru_cache(maxsize=None)
def _row_kernel(dtype, grad, none, prob, softcap, focal, log_probs):
    """The row loop for one combination of modes (compile-time flags, so each variant is
    straight code): grad writes d loss / d input; none writes per-row losses; prob reads
    class probabilities; softcap maps the logits through c tanh(x / c); focal is the focal
    loss; log_probs is NLLLoss (no log-sum-exp)."""
    R = _TYPES[dtype]

    @cuda.jit
    def kernel(x, rows, C, D, target, target_prob, weight, has_weight, weight_total, ignore, eps, z_loss, cap,
               gamma, scale_ce, scale_z, z_ratio, go, go_mode, loss_out, g, partials):
        t_id = cuda.threadIdx.x
        block_loss = 0.0
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            base = (r // D) * C * D + r % D
            t = -1
            if not prob:
                t = target[r]
                if t == ignore:   # the whole row is 0, its gradient too
                    if none and t_id == 0:
                        loss_out[r] = 0
                    if grad:
                        for c in range(t_id, C, THREADS):
                            g[base + c * D] = 0
                    continue
            # pass 1: max and sum of exps (online, per thread), smoothing and probability sums
            m, s, wz, wp, wpz = -math.inf, 0.0, 0.0, 0.0, 0.0
            for c in range(t_id, C if not log_probs else 0, THREADS):
                z = x[base + c * D]
                if softcap:
                    z = R(cap) * math.tanh(z / R(cap))
                if not log_probs:
                    if z > m:
                        s = s * math.exp(m - z) + 1.0 if m > -math.inf else 1.0
                        m = z
                    else:
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
                row_max = block_max(m)
                s = s * math.exp(m - row_max) if m > -math.inf else 0.0
                lse = row_max + math.log(block_sum(s))
            w_t, z_t = 1.0, 0.0
            if not prob:
                w_t = float64(weight[t]) if has_weight else 1.0
                z_t = float64(x[base + t * D])
                if softcap:
                    z_t = cap * math.tanh(z_t / cap)
            # the row's loss and the gradient's coefficients: g_c = a p_c - b [c = t] - e w_c (- f w_c p'_c)
            if prob:
                wp, wpz = block_sum(wp), block_sum(wpz)
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
            else:
                wz = block_sum(wz) if eps > 0 else 0.0
                loss = (1 - eps) * w_t * (lse - z_t) + eps / C * (weight_total * lse - wz)
                a, b = (1 - eps) * w_t + eps / C * weight_total, (1 - eps) * w_t
            e = 0.0 if prob or focal else eps / C
            if z_loss > 0:
                loss += z_ratio * z_loss * lse * lse
            if none and t_id == 0:
                loss_out[r] = loss
            block_loss += loss
            if grad:
                row_go = 1.0
                if go_mode == ROW_GO:
                    row_go = float64(go[r])
                elif go_mode == SCALAR_GO:
                    row_go = float64(go[0])
                k = scale_ce * row_go
                kz = 2.0 * z_loss * lse * scale_z * row_go
                for c in range(t_id, C, THREADS):
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
        block_loss = block_share(block_loss)
        if not none and t_id == 0:
            partials[cuda.blockIdx.x] = block_loss
    return kernel


def rows_kernel(dev, x, rows, C, D, target, target_prob, weight, weight_total, ignore, eps, z_loss, softcap,
                gamma, scale_ce, scale_z, z_ratio, go, loss_out, grad, log_probs=False):
    """Launch the row kernel over device views (x flat; target (rows,) or None; target_prob
    flat or None; weight (C,) or None; go: None, a (rows,) array, or a one-element array read
    as a scalar); returns the block partials (None for 'none')."""
    dummy = x
    blocks = grid(rows, 1)
    none = loss_out is not None
    partials = dummy if none else dev.partials(blocks)
    kernel = _row_kernel(x.dtype, grad is not None, none, target_prob is not None, bool(softcap), gamma >= 0,
                         log_probs)
    if rows:
        dev.launch(kernel, blocks, THREADS, x, rows, C, D, dummy if target is None else target,
                   dummy if target_prob is None else target_prob, dummy if weight is None else weight,
                   weight is not None, float(weight_total), int(ignore), float(eps), float(z_loss),
                   float(softcap or 0.0), float(max(gamma, 0.0)), float(scale_ce), float(scale_z), float(z_ratio),
                   dummy if go is None else go, go_mode(go, rows, none), dummy if loss_out is None else loss_out,
                   dummy if grad is None else grad, partials)
    elif not none:
        partials = dev.partials(0)
    return None if none else partials


def go_mode(go, rows, none):
    """How a kernel reads the grad_output array that _grad_output gave."""
    return NO_GO if go is None else ROW_GO if none and go.shape[0] == rows else SCALAR_GO


def _grad_output(dev, grad_output, loss_shape, none):
    """(host factor, device array or None): a host number scales the gradient; a device array
    is read on the device, per row (for 'none', of the loss's shape) or as one scalar."""
    from .._arrays import fail
    if grad_output is None or isinstance(grad_output, (int, float, np.integer, np.floating)) and not isinstance(grad_output, bool):
        return (1.0 if grad_output is None else float(grad_output)), None
    view = dev.operand(grad_output, "grad_output")
    if none and tuple(view.shape) == tuple(loss_shape):
        return 1.0, view.reshape(-1) if view.ndim else view.reshape(1)
    if view.size != 1 or (not none and view.ndim > 1):
        fail(ValueError, "grad_output", f"shape {tuple(loss_shape)} (the loss's) or a scalar" if none
             else "a scalar for a reduced loss", f"shape {tuple(view.shape)}")
    return 1.0, view.reshape(1)


def host_only(crit, hess=False, partial=False):
    """The modes that stay on the host: partial states (exact expansions for evaluating
    prediction sets in slices) and, in this family, the hessian."""
    if partial:
        raise NotImplementedError(f"{type(crit).__name__}: partial states are for host arrays")
    if hess:
        raise NotImplementedError(f"{type(crit).__name__}: grad_hess is for host arrays in this family")


def cross_entropy(crit, arrays, want_grad, out, grad_output, hess=False, partial=False, log_probs=False):
    """CrossEntropyLoss, SoftmaxFocalLoss (crit._focal_gamma >= 0) and NLLLoss (log_probs) on
    device arrays. Class-index targets are checked on the host, with the CPU path's own code
    (a bad index raises before anything is written, and 'mean' divides by the same exact sum
    of weights): one copy of N integers and one synchronisation; the logits never leave."""
    from .._criterion import LossAndGrad
    from .._criterion import expansion_value
    from ..losses.softmax import _class_targets, _class_weight, _layout
    from ._device import Device
    host_only(crit, hess, partial)
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
        ce_divisor = z_divisor = expansion_value(weights) if crit.reduction == "mean" else 1
    else:
        _, _, divisors, z_divisor = crit._targets(target if prob else dev.to_host(target), x.shape, target_shape,
                                                  C, weight)
        ce_divisor = expansion_value(divisors)
    factor, go = _grad_output(dev, grad_output, target_shape, none) if want_grad else (1.0, None)
    scale_ce = factor if none else factor / ce_divisor if ce_divisor else 0.0
    scale_z = factor if none else factor / z_divisor if z_divisor else 0.0
    (grad_obj, grad), = dev.gradients((x.shape,), dtype, out, ("input",)) if want_grad else [(None, None)]
    loss_obj, loss_out = dev.empty(target_shape, dtype) if none else (None, None)
    weight_total = C if weight is None else float(np.asarray(weight, np.float64).sum())
    partials = rows_kernel(
        dev, x.reshape(-1), rows, C, D, None if prob else target.reshape(-1) if target.ndim else target.reshape(1),
        target.reshape(-1) if prob else None, None if weight is None else dev.upload(weight), weight_total,
        crit.ignore_index, 0.0 if log_probs else crit.label_smoothing, 0.0 if log_probs else crit.z_loss,
        None if log_probs else crit.softcap, -1.0 if log_probs else crit._focal_gamma, scale_ce, scale_z,
        ce_divisor / z_divisor if z_divisor else 0.0, go,
        None if loss_out is None else loss_out.reshape(-1) if loss_out.ndim else loss_out.reshape(1),
        None if grad is None else grad.reshape(-1), log_probs)
    loss = loss_obj if none else dev.finish(partials, ce_divisor, dtype)
    return LossAndGrad(loss, grad_obj)
