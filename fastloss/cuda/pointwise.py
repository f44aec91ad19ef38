"""The pointwise family on the GPU: one grid-stride kernel, specialised per loss and mode.

The point functions mirror ``_kernels/pointwise.pyx.tp`` formula for formula (the comments
there give the derivations): each takes one element's input x, target y, extra operands a
and b and the options, in the input's dtype `R`, and returns (loss, dl/dx, dl/da, d2l/dx2).
Numba drops what a mode does not store. Operands are read in place through a plan: the
input's own shape (FULL), one host value (CONSTANT), or a broadcast (the input's shape
collapsed to at most 4 dimensions, with the operand's strides, 0 where it is broadcast).
"""
import functools
import math

import numpy as np
from numba import cuda, float32, float64

from .._arrays import broadcast_plan, fail
from .._criterion import GradHess, LossAndGrad
from ._device import THREADS, block_sum, flat, grid

FULL, CONSTANT, BROADCAST = 0, 1, 2
MAXD = 4
_PLAN = 1 + 2 * MAXD        # a plan's ints: mode, sizes, strides
LOG_2PI = math.log(2 * math.pi)
# the point functions' option tuple o, by name (PointOptions, with 1 / beta worked out once)
(OPTION_BETA, OPTION_INV_BETA, OPTION_MARGIN, OPTION_EPS, OPTION_ALPHA, OPTION_GAMMA, OPTION_FULL,
 OPTION_POWER) = range(8)


def _option_values(options):
    """A PointOptions as the tuple `o` the point functions index by the names above."""
    return (float(options.beta), 1.0 / options.beta if options.beta else 0.0, float(options.margin),
            float(options.eps), float(options.alpha), float(options.gamma), float(options.full),
            float(options.power))


def _points(R):
    """The point functions in dtype R (float32 or float64): {kernel name: function}."""
    zero, one, two = R(0), R(1), R(2)
    tiny_normal = R(np.finfo(np.float32 if R is float32 else np.float64).tiny)
    bce_eps, log_2pi, ln2, far = R(1e-12), R(LOG_2PI), R(math.log(2)), R(2.0 ** 60)
    jit = cuda.jit(device=True, inline=True)

    @jit
    def sign(d):
        return R(d > zero) - R(d < zero)

    @jit
    def sigmoid_from(x, e):
        return (one if x >= zero else e) / (one + e)

    @jit
    def l1(x, y, a, b, o):
        d = x - y
        return abs(d), sign(d), zero, zero

    @jit
    def mse(x, y, a, b, o):
        d = x - y
        return d * d, two * d, zero, two

    @jit
    def smooth_l1(x, y, a, b, o):
        d = x - y
        ad, beta, inv_beta = abs(d), R(o[OPTION_BETA]), R(o[OPTION_INV_BETA])
        if ad < beta:
            return d * d * inv_beta / two, d * inv_beta, zero, inv_beta
        return ad - beta / two, sign(d), zero, zero

    @jit
    def huber(x, y, a, b, o):
        d = x - y
        ad, delta = abs(d), R(o[OPTION_BETA])
        if ad <= delta:
            return d * d / two, d, zero, one
        return delta * (ad - delta / two), delta * sign(d), zero, zero

    @jit
    def soft_margin(x, y, a, b, o):
        z = -y * x
        e = math.exp(-abs(z))
        s = sigmoid_from(z, e)
        return math.log1p(e) + (z if z > zero else zero), -y * s, zero, y * y * s * (one - s)

    @jit
    def bce(x, y, a, b, o):
        lx, l1x, den = math.log(x), math.log1p(-x), x * (one - x)
        lx = R(-100) if lx < R(-100) else lx
        l1x = R(-100) if l1x < R(-100) else l1x
        return -a * (y * lx + (one - y) * l1x), a * (x - y) / (bce_eps if den < bce_eps else den), zero, zero

    @jit
    def bce_with_logits(x, y, a, b, o):
        e = math.exp(-abs(x))
        lw, s = one + (b - one) * y, sigmoid_from(x, e)
        softplus_neg = math.log1p(e) + (-x if x < zero else zero)
        return a * ((one - y) * x + lw * softplus_neg), a * (lw * s - b * y), zero, a * lw * s * (one - s)

    def poisson(log_input, full):
        @jit
        def point(x, y, a, b, o):
            if log_input:
                ex = math.exp(x)
                loss, dx = ex - y * x, ex - y
            else:
                eps = R(o[OPTION_EPS])
                loss, dx = x - y * math.log(x + eps), one - y / (x + eps)
            if full and y > one:
                loss += y * math.log(y) - y + (log_2pi + math.log(y)) / two
            return loss, dx, zero, dx + y
        return point

    @jit
    def gaussian_nll(x, y, a, b, o):
        eps = R(o[OPTION_EPS])
        v = eps if a < eps else a
        d, r = x - y, one / v
        constant = log_2pi / two if o[OPTION_FULL] else zero
        return (math.log(v) + d * d * r) / two + constant, d * r, r * (one - d * d * r) / two, r

    def kl_div(log_target):
        @jit
        def point(x, y, a, b, o):
            if log_target:
                ey = math.exp(y)
                return ey * (y - x), -ey, zero, zero
            ylogy = y * math.log(y) if y != zero else zero
            return ylogy - y * x, -y, zero, zero
        return point

    @jit
    def hinge_embedding(x, y, a, b, o):
        h = R(o[OPTION_MARGIN]) - x
        neg, pos = y != one, y != -one
        dx = (-one if (neg and h >= zero) else zero) + (one if pos else zero)
        return ((h if h > zero else zero) if neg else zero) + (x if pos else zero), dx, zero, zero

    @jit
    def margin_ranking(x, y, a, b, o):
        h = -y * (x - a) + R(o[OPTION_MARGIN])
        dx = -y if h >= zero else zero
        return (zero if h < zero else h), dx, -dx, zero

    def sigmoid_focal(square):
        @jit
        def point(x, y, a, b, o):
            e = math.exp(-abs(x))
            p = sigmoid_from(x, e)
            ce = (one - y) * x + math.log1p(e) + (-x if x < zero else zero)
            q = p + y - two * p * y
            alpha, gamma = R(o[OPTION_ALPHA]), R(o[OPTION_GAMMA])
            at = one if alpha < zero else alpha * y + (one - alpha) * (one - y)
            if square:
                m, dm = q * q, two * q
            else:
                lq = math.log(q if q > tiny_normal else tiny_normal)
                m, dm = math.exp(gamma * lq), gamma * math.exp((gamma - one) * lq)
            return at * ce * m, at * ((p - y) * m + ce * dm * p * (one - p) * (one - two * y)), zero, zero
        return point

    @jit
    def times_exp(c, h):   # in float64, as the CPU kernel: c e^z from h = exp(z / 2), 0 where c = 0
        v = c * h * h
        return 0.0 if c == 0.0 else v

    @jit
    def pinball(x, y, a, b, o):
        d = y - x
        return (a * d if d >= zero else (a - one) * d), (-a if y >= x else one - a), zero, zero

    @jit
    def pseudo_huber(x, y, a, b, o):
        delta = R(o[OPTION_BETA])
        t = (x - y) / delta
        at = abs(t)
        if at >= far:   # h is |t| to the last bit (the hessian 1 / h^3 as the CPU kernel's)
            inverse = one / at
            return delta * (delta * (at - one)), delta * sign(t), zero, inverse * inverse * inverse
        h = math.sqrt(one + t * t)
        inverse = one / h
        return delta * (delta * (t * t / (one + h))), delta * t / h, zero, inverse * inverse * inverse

    @jit
    def log_cosh(x, y, a, b, o):
        r = x - y
        s = abs(r)
        u = math.exp(-two * s)
        m = math.expm1(-two * s)   # the CPU kernel's Kahan form of it, from CUDA's own expm1
        t = -m / (two + m)
        loss = -math.log1p(-t * t) / two if s < one else s - ln2 + math.log1p(u)
        return loss, (-t if r < zero else t), zero, R(4) * u / ((one + u) * (one + u))

    # the log-link losses compute in float64 for either dtype, as the CPU kernels do
    @jit
    def tweedie(x, y, a, b, o):
        p, xd, yd = o[OPTION_POWER], float64(x), float64(y)
        h1, h2 = math.exp((1.0 - p) * xd / 2.0), math.exp((2.0 - p) * xd / 2.0)
        ya, e2 = times_exp(yd, h1), times_exp(1.0, h2)
        hess = times_exp(2.0 - p, h2) + times_exp((p - 1.0) * yd, h1)
        return R(ya / (p - 1.0) + e2 / (2.0 - p)), R(e2 - ya), zero, R(hess)

    @jit
    def gamma(x, y, a, b, o):
        xd = float64(x)
        ye = times_exp(float64(y), math.exp(-xd / 2.0))
        return R(xd + ye), R(1.0 - ye), zero, R(ye)

    @jit
    def exponential(x, y, a, b, o):
        yd = float64(y)
        g = math.exp(abs(float64(x)) / 2.0)
        positive = x >= zero
        big = times_exp(1.0 - yd if positive else yd, g)
        small = (yd if positive else 1.0 - yd) / g / g
        loss = small + big
        return R(loss), R(big - small if positive else small - big), zero, R(loss)

    return {"l1": l1, "mse": mse, "smooth_l1": smooth_l1, "huber": huber, "soft_margin": soft_margin,
            "bce": bce, "bce_with_logits": bce_with_logits,
            "poisson_nll": poisson(True, False), "poisson_nll_full": poisson(True, True),
            "poisson_nll_rate": poisson(False, False), "poisson_nll_rate_full": poisson(False, True),
            "gaussian_nll": gaussian_nll, "kl_div": kl_div(False), "kl_div_log_target": kl_div(True),
            "hinge_embedding": hinge_embedding, "margin_ranking": margin_ranking,
            "sigmoid_focal": sigmoid_focal(False), "sigmoid_focal_gamma2": sigmoid_focal(True),
            "pinball": pinball, "pseudo_huber": pseudo_huber, "log_cosh": log_cosh, "tweedie": tweedie,
            "gamma": gamma, "exponential": exponential}


_TYPES = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}


@functools.lru_cache(maxsize=None)
def _point(name, dtype):
    return _points(_TYPES[dtype])[name]


@cuda.jit(device=True, inline=True)
def _at_whole(arr, plan, k, constant, i):
    """_at for an operand of the input's shape or a constant (no broadcast: a kernel without
    `_at`'s index arithmetic compiles in half the time or less, 0.7-0.9 s against 1.7-2.2)."""
    if plan[k * _PLAN] == FULL:
        return float64(arr[i])
    return constant


@cuda.jit(device=True, inline=True)
def _at(arr, plan, k, constant, i):
    """Operand k's value at the input's flat position i (as float64: exact for both dtypes)."""
    base = k * _PLAN
    if plan[base] != BROADCAST:
        return _at_whole(arr, plan, k, constant, i)
    offset, rest = 0, i
    for d in range(MAXD - 1, -1, -1):
        size = plan[base + 1 + d]
        if size != 1:
            offset += (rest % size) * plan[base + 1 + MAXD + d]
            rest //= size
    return float64(arr[offset])


@functools.lru_cache(maxsize=None)
def _kernel(name, dtype, grad, none, hess, grad_a, broadcast):
    """The loop for one loss and mode (grad: write dl/dx; none: per-element losses, else
    block partials; hess: the hessian's diagonal; grad_a: dl/da elementwise; broadcast:
    some operand is read through a broadcast plan)."""
    point, R = _point(name, dtype), _TYPES[dtype]
    at = _at if broadcast else _at_whole

    @cuda.jit
    def kernel(n, x, y, a, b, g, plan, c, o, loss_out, gx, ga, hx, partials):
        acc = 0.0
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            loss, dx, da, dh = point(x[i], R(at(y, plan, 0, c[0], i)), R(at(a, plan, 1, c[1], i)),
                                  R(at(b, plan, 2, c[2], i)), o)
            if none:
                loss_out[i] = loss
            else:
                acc += loss
            if grad:
                s = R(at(g, plan, 3, c[3], i))
                gx[i] = dx * s
                if grad_a:
                    ga[i] = da * s
                if hess:
                    hx[i] = dh * s
        if not none:
            total = block_sum(acc)
            if cuda.threadIdx.x == 0:
                partials[cuda.blockIdx.x] = total
    return kernel


@functools.lru_cache(maxsize=None)
def _slab_kernel(name, dtype):
    """dl/da for an operand a shared along an axis (GaussianNLL's var of shape (N, 1)): one
    thread per element of a sums its slab of slab_m input elements, slab_q apart, in order."""
    point, R = _point(name, dtype), _TYPES[dtype]

    @cuda.jit
    def kernel(count, slab_m, slab_q, x, y, a, b, g, plan, c, o, ga):
        for j in range(cuda.grid(1), count, cuda.gridsize(1)):
            first = (j // slab_q) * slab_m * slab_q + j % slab_q
            acc = 0.0
            for k in range(slab_m):
                i = first + k * slab_q
                loss, dx, da, dh = point(x[i], R(_at(y, plan, 0, c[0], i)), R(_at(a, plan, 1, c[1], i)),
                                      R(_at(b, plan, 2, c[2], i)), o)
                acc += da * R(_at(g, plan, 3, c[3], i))
            ga[j] = acc
    return kernel


def _plan(operand, name, shape, dummy):
    """(array read, plan ints, constant) of an operand given as (array, name): a host value
    (a NumPy scalar or one-element array) is a constant; a device array is read in place."""
    if operand is None:
        return dummy, (CONSTANT,) + (1,) * MAXD + (0,) * MAXD, 0.0
    if isinstance(operand, np.ndarray):
        return dummy, (CONSTANT,) + (1,) * MAXD + (0,) * MAXD, float(operand.reshape(-1)[0])
    plan = broadcast_plan(name, operand, shape)
    if plan[1] is None:
        return flat(operand), (FULL,) + (1,) * MAXD + (0,) * MAXD, 0.0
    sizes, strides = plan[1], plan[2]
    if len(sizes) > MAXD:
        fail(ValueError, name, f"a broadcast over at most {MAXD} collapsed dimensions", f"{len(sizes)}")
    pad = MAXD - len(sizes)
    return flat(operand), (BROADCAST,) + (1,) * pad + tuple(sizes) + (0,) * pad + tuple(strides), 0.0


def run(dev, point_name, x, operands, options, g, loss_out, gx, ga, hx, slab):
    """Launch the loop over x (a device view) with operands {'y'|'a'|'b': (array, name)} and
    the grad_output operand g (array, name); returns the block partials (None for 'none').
    slab: (slab_m, slab_q) of a broadcast dl/da, or None."""
    shape, n = tuple(x.shape), x.size
    flat_x = flat(x)
    dummy = flat_x
    arrays, plan, constants = [], (), []
    for key in ("y", "a", "b", "g"):
        spec = g if key == "g" else operands.get(key)
        arr, ints, constant = _plan(None if spec is None else spec[0], None if spec is None else spec[1],
                                    shape, dummy)
        arrays.append(arr)
        plan += ints
        constants.append(constant)
    o = tuple(float(v) for v in options)
    blocks = grid(n)
    none, grad_a = loss_out is not None, ga is not None and slab is None
    partials = dummy if none else dev.partials(blocks)
    broadcast = BROADCAST in plan[::_PLAN]
    kernel = _kernel(point_name, x.dtype, gx is not None, none, hx is not None, grad_a, broadcast)
    out = [dummy if v is None else flat(v) for v in (loss_out, gx, ga if grad_a else None, hx)]
    if n:
        dev.launch(kernel, blocks, THREADS, n, flat_x, *arrays, plan, tuple(constants), o, *out, partials)
    elif not none:
        partials = dev.partials(0)
    if ga is not None and slab is not None:
        count = ga.size
        dev.launch(_slab_kernel(point_name, x.dtype), grid(count), THREADS, count, slab[0], slab[1], flat_x,
                   *arrays, plan, tuple(constants), o, flat(ga))
    return None if none else partials


def pointwise(dev, spec, want_grad, out, grad_output, hess):
    """A pointwise loss on device arrays (a PointwiseSpec): one launch (two for a broadcast
    var's gradient)."""
    x, red = spec.x, spec.reduction
    shape, dtype = tuple(x.shape), x.dtype
    g, slab, grads = None, None, [(None, None)] * 2
    if want_grad:
        if red.none:
            g = None if grad_output is None else (dev.operand(grad_output, "grad_output"), "grad_output")
            g = g or (np.ones((), dtype), "grad_output")
        else:
            factor, on_device = dev.grad_output(grad_output, (), False)
            factor = factor / red.divisor if red.divisor else 0.0
            scaled = np.full((), factor, dtype) if on_device is None else dev.scaled(on_device, factor, dtype)
            g = (scaled, "grad_output")
        two = len(spec.names) == 2
        shapes = (shape,) + ((None if spec.grad_a is None else spec.grad_a[0],) if two else ())
        grads = dev.gradients(shapes, dtype, out, spec.names) + [(None, None)]
        if spec.grad_a is not None and spec.grad_a[1:] != (1, 1):
            slab = spec.grad_a[1:]
    loss_obj, loss_out = dev.empty(shape, dtype) if red.none else (None, None)
    hess_obj, hess_x = dev.empty(shape, dtype) if hess else (None, None)
    partials = run(dev, spec.kernel, x, spec.operands, _option_values(spec.options), g, loss_out, grads[0][1],
                   grads[1][1], hess_x, slab)
    if hess:
        return GradHess(grads[0][0], hess_obj)
    loss = loss_obj if red.none else dev.finish(partials, red.divisor, dtype)
    grads = (grads[0][0], grads[1][0]) if len(spec.names) == 2 else grads[0][0]
    return LossAndGrad(loss, grads if want_grad else None)
