"""The sequence family: the CTC loss (Graves et al., 2006) by log-space alpha-beta recursions.

For one batch element with T frames of log-probabilities lp[t, c] and a target l of length L,
the extended target l' puts a blank before, between and after the labels (S = 2L + 1 states).
In float64, whatever the input's dtype:

    alpha[0, s] = lp[0, l'_s] for s < 2, else -inf
    alpha[t, s] = lp[t, l'_s] + logsumexp(alpha[t-1, s], alpha[t-1, s-1],
                                          alpha[t-1, s-2] if l'_s is a label unlike l'_{s-2})
    nll = -logsumexp(alpha[T-1, S-1], alpha[T-1, S-2])

and beta the same recursion run backwards from the last two states (the forward recursion
on the reversed target and frames). A row keeps the blank states and the label states apart,
so that each frame's step is two vectorised loops: over the blanks, with one exp and a log
each (a blank is never entered from two states back), and over the labels, with two exps and a
log (libmvec's for float64 data, simd_math.h's float32 ones for float32 data, the sums in
float64 either way). The gradient is the one
torch reports for log_probs: grad[t, c] = g (exp(lp[t, c]) - exp(lcab[t, c] + nll - lp[t, c]))
with lcab[t, c] = logsumexp of alpha[t, s] + beta[t, s] over the states s with l'_s = c
(the gradient with respect to the logits under a log_softmax, as torch's kernel computes it),
and 0 at frames past the element's input length. The sum over states is taken of the
posteriors exp(alpha + beta + nll - lp), each in [0, 1], rather than in log space. An impossible alignment has nll = inf; with
zero_infinity its loss and gradient are 0. Batch elements run in parallel, each with its own
scratch (alpha and beta, T x S float64), allocated for every thread before the first element
runs (a MemoryError then leaves the gradient untouched); the loss total is summed exactly
afterwards, so every thread count gives the same bits.

float16/bfloat16 log-probabilities run the float32 kernel: the recursions widen the one value
per state they read, and the gradient widens a frame's row into float32 scratch and narrows
the row of its gradient out of more (half.h): the float32 call's bits on the same values.
"""
cimport numpy as cnp
import numpy as np
from libc.math cimport INFINITY, NAN
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from libc.string cimport memset

from ._half cimport fl_narrow_half, fl_widen_half, half_kind
from ._reduce cimport fl_run, fl_thread_id, threads_for

cnp.import_array()

cdef extern from "simd_math.h" nogil:
    ctypedef double* restrict_double "fl_restrict_double"   # outputs nothing else reads (simd_math.h)
    double fl_exp(double)
    double fl_exp_neg(double)   # of x <= 0 or NaN
    double fl_exp_neg_short(double)   # the same, within 1.01 ulp for 4 operations fewer
    double fl_log(double)
    double fl_log_normal(double)   # of a positive normal x

ctypedef fused real:
    float
    double

cdef enum:
    PAD = 2                # -inf entries in every row of alpha and beta: one before its blanks,
                           # one before its labels
    BLANKS_AT = 1          # where a row's blank states start


cdef inline Py_ssize_t labels_at(Py_ssize_t L) noexcept nogil:
    """Where a row's label states start: after its -inf, its L + 1 blanks and a second -inf."""
    return L + 3


cdef inline void target_labels(const int64_t* target, Py_ssize_t L, bint reverse, int64_t* labels,
                               double* skip) noexcept nogil:
    """The target's labels (reverse: reversed) and, per label, 0 where its state may be entered
    from two states back (a label unlike the one before it) and -inf where not."""
    cdef Py_ssize_t j
    for j in range(L):
        labels[j] = target[L - 1 - j if reverse else j]
    for j in range(L):
        skip[j] = 0.0 if j >= 1 and labels[j] != labels[j - 1] else -INFINITY


cdef inline void step(const double* prev, double* cur, double emit_blank, const double* emit,
                      const double* skip, Py_ssize_t L, Py_ssize_t lo, Py_ssize_t hi,
                      real precision) noexcept nogil:
    """cur = the next frame's row from prev, for the states lo .. hi - 1 (see `recursion` for a
    row's layout: blanks B, then labels A). State s's logsumexp of prev[s], prev[s - 1] and
    prev[s - 2] + skip[s], plus its emission, is for blank j (s = 2 j) of B[j] and A[j - 1] (a
    blank is never entered from two states back), and for label j (s = 2 j + 1) of A[j], B[j]
    and A[j - 1] + skip[j]. The largest term m contributes exp(0) = 1, so the exps left are of
    the other terms less m, d1 and d2: one for a blank, two for a label (the smaller of the
    first two, and the smaller of the larger one and the third). The log(1 + e^d1 (+ e^d2)), in
    [0, log 3], is computed in the data's precision (`precision` picks it): float32 data gets
    simd_math.h's inline float exp (the short one, within 1.01 ulp) and log (of a normal number:
    the sum is in [1, 3]), 8 lanes at AVX2 and 16 at AVX-512, with an absolute error near 1e-7
    per step, below the rounding of a float32 loss; m and the sum stay float64. d1 and d2 are
    rounded to that precision first and raised to -700 there (exp gives 0 or ~1e-304, nothing
    next to the 1; libmvec's float64 exp leaves its vector path for -inf and below about -708),
    which also turns the NaN of an inf less inf into -700. A state whose terms are all -inf is
    -inf. A NaN in the log-probabilities is caught by the caller (see `recursion`): the log need
    not take one."""
    cdef const double* prev_b = prev + BLANKS_AT
    cdef const double* prev_a = prev + labels_at(L)
    cdef double* cur_b = cur + BLANKS_AT
    cdef double* cur_a = cur + labels_at(L)
    cdef Py_ssize_t j
    cdef double a0, a1, a2, hi_term, lo_term, m, r
    cdef real d1, d2
    cdef bint live
    for j in range((lo + 1) // 2, (hi + 1) // 2):   # the blanks 2 j in [lo, hi)
        a0 = prev_b[j]
        a1 = prev_a[j - 1]
        m = a0 if a0 > a1 else a1
        live = m > -INFINITY   # else both terms are -inf, and so is the state
        d1 = <real> ((a1 if a0 > a1 else a0) - m)
        d1 = d1 if d1 > -700 else -700
        r = m + fl_log_normal(<real> 1 + fl_exp_neg_short(d1)) + emit_blank
        cur_b[j] = r if live else -INFINITY
    for j in range(lo // 2, hi // 2):   # the labels 2 j + 1 in [lo, hi)
        a0 = prev_a[j]
        a1 = prev_b[j]
        a2 = prev_a[j - 1] + skip[j]
        hi_term = a0 if a0 > a1 else a1
        lo_term = a1 if a0 > a1 else a0
        m = hi_term if hi_term > a2 else a2
        live = m > -INFINITY
        d1 = <real> (lo_term - m)
        d2 = <real> ((a2 if hi_term > a2 else hi_term) - m)
        d1 = d1 if d1 > -700 else -700
        d2 = d2 if d2 > -700 else -700
        r = m + fl_log_normal(<real> 1 + fl_exp_neg_short(d1) + fl_exp_neg_short(d2)) + emit[j]
        cur_a[j] = r if live else -INFINITY


cdef inline double lp_value(const void* lp, Py_ssize_t i, int half, real tag) noexcept nogil:
    """Element i of the log-probabilities: `real` data, or half data (kind `half`) widened."""
    cdef float v
    if half:
        fl_widen_half(half, <const char*> lp + 2 * i, &v, 1)
        return v
    return (<const real*> lp)[i]


cdef Py_ssize_t recursion(const void* lp, int half, Py_ssize_t N, Py_ssize_t C, Py_ssize_t b, Py_ssize_t frames,
                          const int64_t* labels, const double* skip, Py_ssize_t L, int64_t blank, bint reverse,
                          double* rows, double* emit, real tag) noexcept nogil:
    """alpha (reverse: beta on reversed states) for frames 0 .. frames - 1 into rows, each
    2 L + 1 + PAD wide: -inf, the L + 1 blank states B (state 2 j is B[j]), -inf, the L label
    states A (state 2 j + 1 is A[j]); row k holds frame k (reverse: frame frames - 1 - k).
    Returns how many NaNs the target's log-probabilities held (the loss is then NaN, as
    torch's). lp: `real` data, or half data of kind `half` (the float32 kernel: tag is a float)."""
    cdef Py_ssize_t k, s, j, t, S = 2 * L + 1, W = S + PAD, nans = 0, lo, hi, at
    cdef double emit_blank
    for k in range(frames):
        t = frames - 1 - k if reverse else k
        at = (t * N + b) * C
        emit_blank = lp_value(lp, at + blank, half, tag)
        nans += emit_blank != emit_blank
        for j in range(L):
            emit[j] = lp_value(lp, at + labels[j], half, tag)
        for j in range(L):
            nans += emit[j] != emit[j]
        for s in range(W):
            rows[k * W + s] = -INFINITY
        if k == 0:   # states 0 and 1
            rows[BLANKS_AT] = emit_blank
            if L:
                rows[labels_at(L)] = emit[0]
            continue
        # only states lo .. hi - 1 are reached by frame k and can still reach the last
        # state by the last frame; the others are -inf (they add 0 to the gradient as well)
        lo = max(0, S - 2 * (frames - k))
        hi = min(S, 2 * k + 2)
        step(rows + (k - 1) * W, rows + k * W, emit_blank, emit, skip, L, lo, hi, <real> 0)
    return nans


cdef inline void exp_minus(restrict_double occupancy, const real* row, Py_ssize_t C) noexcept nogil:
    """occupancy[c] = exp(row[c]) - occupancy[c]. occupancy is restrict (private scratch): gcc
    then needs no run-time overlap check with the input, whose scalar fallback would round exp
    differently from the vector body, so that the bits would depend on where the buffers sit."""
    cdef Py_ssize_t c
    for c in range(C):
        occupancy[c] = fl_exp(row[c]) - occupancy[c]


cdef object scratch_doubles(object frames, object S, object C):
    """float64 scratch of one element (a Python int: no size wraps around): alpha and beta
    (frames x (S + PAD) each), the skips (2 L: forward and reversed, in room for 2 S), emit (S),
    occupancy (C), the labels (2 L int64, in room for 2 S doubles) and, for half data, a widened
    row and a gradient row (2 C floats)."""
    return 2 * frames * (S + PAD) + 5 * S + 2 * C


cdef double ctc_element(const void* lp, void* grad, int half, int grad_half, Py_ssize_t T, Py_ssize_t N,
                        Py_ssize_t C, Py_ssize_t b, Py_ssize_t frames, const int64_t* target, Py_ssize_t L,
                        int64_t blank, double g, bint zero_infinity, double* alpha, real tag) noexcept nogil:
    """The nll of batch element b (inf for an impossible alignment; 0 for it with zero_infinity)
    and, when grad is not NULL, its gradient rows grad[:, b, :] scaled by g. alpha: scratch of
    scratch_doubles(frames, 2 L + 1, C) doubles. lp and grad hold `real` data, or half data of
    kind `half` and `grad_half` (the float32 kernel; a float32 gradient beside half lp too)."""
    cdef Py_ssize_t S = 2 * L + 1, W = S + PAD, t, s, j, c, nans, zero_from, at
    cdef Py_ssize_t grad_size = 2 if grad_half else sizeof(real)
    cdef double nll, last, value, blanks
    cdef real d
    cdef const double* alpha_row
    cdef const double* beta_row
    cdef const real* row
    cdef real* grow
    cdef double* beta
    cdef double* skip
    cdef double* emit
    cdef double* occupancy
    cdef int64_t* labels
    cdef float* wide_row
    beta = alpha + frames * W
    skip = beta + frames * W          # forward skips, then the reversed ones
    emit = skip + 2 * S               # (a frame's label emissions; its posteriors: blanks, labels)
    occupancy = emit + S
    labels = <int64_t*> (occupancy + C)   # forward labels, then the reversed ones
    wide_row = <float*> (labels + 2 * S)   # (half data: C floats of the row, C of its gradient)
    target_labels(target, L, False, labels, skip)
    if frames == 0:
        nll = 0.0 if L == 0 else INFINITY
    else:
        nans = recursion(lp, half, N, C, b, frames, labels, skip, L, blank, False, alpha, emit, tag)
        # states S - 1 (the last blank) and S - 2 (the last label)
        last = alpha[(frames - 1) * W + BLANKS_AT + L]
        value = alpha[(frames - 1) * W + labels_at(L) + L - 1] if L else -INFINITY
        nll = -(last if last > value else value)
        if nans:
            nll = NAN
        elif nll < INFINITY:
            nll -= fl_log(fl_exp(last + nll) + fl_exp(value + nll))
    if grad != NULL:
        zero_from = 0   # the frames from here on get a zero gradient
        if frames and not (zero_infinity and nll == INFINITY):
            zero_from = frames
            target_labels(target, L, True, labels + L, skip + L)
            recursion(lp, half, N, C, b, frames, labels + L, skip + L, L, blank, True, beta, emit, tag)
            for t in range(frames):
                at = (t * N + b) * C
                if half:   # (real is float)
                    fl_widen_half(half, <const char*> lp + 2 * at, wide_row, C)
                    row = <const real*> wide_row
                else:
                    row = <const real*> lp + at
                if grad_half:
                    grow = <real*> (wide_row + C)
                else:
                    grow = <real*> grad + at
                # the posterior of each state, exp(alpha + beta + nll - lp), summed per class
                # (all NaN where the alignment is impossible or the input NaN, as torch): the
                # blanks' into emit[0 .. L], the labels' after them (beta's states reversed)
                alpha_row = alpha + t * W
                beta_row = beta + (frames - 1 - t) * W
                for j in range(L + 1):
                    emit[j] = alpha_row[BLANKS_AT + j] + beta_row[BLANKS_AT + L - j] + nll - row[blank]
                for j in range(L):
                    emit[L + 1 + j] = (alpha_row[labels_at(L) + j] + beta_row[labels_at(L) + L - 1 - j] + nll
                                       - row[labels[j]])
                for s in range(S):   # (a loop of its own: gathers keep gcc from vectorising exp)
                    d = <real> emit[s]   # in the data's precision, raised to -700 there (see `step`)
                    d = d if d > -700 else -700
                    emit[s] = fl_exp(d)   # (float32 data: a float exp, within 2 ulp; see simd_math.h)
                for c in range(C):
                    occupancy[c] = 0.0 if nll < INFINITY else NAN   # impossible, or NaN input
                # the blank states' sum in a register (a scatter to the one class was a chain of
                # stores and reloads); added in the same order, so the same bits
                blanks = 0.0
                for j in range(L + 1):
                    blanks += emit[j]
                occupancy[blank] += blanks
                for j in range(L):
                    occupancy[labels[j]] += emit[L + 1 + j]
                exp_minus(occupancy, row, C)
                for c in range(C):
                    grow[c] = <real> (occupancy[c] * g)
                if grad_half:
                    fl_narrow_half(grad_half, wide_row + C, <char*> grad + 2 * at, C)
        for t in range(zero_from, T):   # (a half zero is all zero bits too)
            memset(<char*> grad + grad_size * (t * N + b) * C, 0, grad_size * C)
    if zero_infinity and nll == INFINITY:
        return 0.0
    return nll


ctypedef struct CTCJob:
    const void* lp
    void* grad
    bint is_float             # float32 data, or half data (the float32 kernel)
    int half, grad_half       # 0, or half.h's kind of lp and of grad
    Py_ssize_t T, N, C, per_thread
    const int64_t* input_lengths
    const int64_t* targets
    const int64_t* offsets
    const int64_t* target_lengths
    int64_t blank
    const double* grad_scale
    double* losses
    bint zero_infinity
    double* scratch


cdef void ctc_task(void* ctx, Py_ssize_t b) noexcept nogil:
    """Batch element b, with the running thread's alpha-beta scratch."""
    cdef CTCJob* job = <CTCJob*> ctx
    cdef double* scratch = job.scratch + fl_thread_id() * job.per_thread
    if job.is_float:
        job.losses[b] = ctc_element(job.lp, job.grad, job.half, job.grad_half, job.T, job.N, job.C, b,
                                    job.input_lengths[b], job.targets + job.offsets[b], job.target_lengths[b],
                                    job.blank, job.grad_scale[b], job.zero_infinity, scratch, <float> 0)
    else:
        job.losses[b] = ctc_element(job.lp, job.grad, 0, 0, job.T, job.N, job.C, b,
                                    job.input_lengths[b], job.targets + job.offsets[b], job.target_lengths[b],
                                    job.blank, job.grad_scale[b], job.zero_infinity, scratch, <double> 0)


def ctc(cnp.ndarray log_probs, const int64_t[::1] targets, const int64_t[::1] offsets,
        const int64_t[::1] input_lengths, const int64_t[::1] target_lengths, int64_t blank,
        const double[::1] grad_scale, cnp.ndarray grad, double[::1] losses, bint zero_infinity,
        int num_threads):
    """Per-element CTC losses into `losses` (N,); the gradient (T, N, C) when grad is not None,
    element b's rows scaled by grad_scale[b]. Element b's target is
    targets[offsets[b] : offsets[b] + target_lengths[b]] (targets is never empty). log_probs
    and grad: C-contiguous (T, N, C) float32 or float64 arrays of one dtype, or float16/bfloat16
    log_probs with a gradient in their dtype or float32. Checked by the caller, lengths included
    (input_lengths <= T)."""
    cdef Py_ssize_t T = log_probs.shape[0], N = log_probs.shape[1], C = log_probs.shape[2], b
    cdef Py_ssize_t frames = 0, L = 0, per_thread
    cdef CTCJob job
    job.half, job.grad_half = half_kind(log_probs), half_kind(grad)
    for a in (log_probs, grad):
        if a is not None and (a.ndim != 3 or not a.flags.c_contiguous or a.dtype.kind != "f" and not half_kind(a)
                              or a.shape[0] != T or a.shape[1] != N or a.shape[2] != C):
            raise ValueError("ctc: expected C-contiguous (T, N, C) float arrays")
    if grad is not None and grad.dtype != log_probs.dtype and not (job.half and grad.dtype == np.float32):
        raise ValueError(f"ctc: a {grad.dtype} gradient of {log_probs.dtype} log_probs")
    # each element's recursion is a few transcendentals per frame and target label
    num_threads = threads_for(num_threads, N, T * N * C, log_probs.dtype.itemsize * (1 if grad is None else 2), 2)
    for b in range(N):   # every thread's scratch fits the longest element
        frames = max(frames, input_lengths[b])
        L = max(L, target_lengths[b])
    needed = scratch_doubles(frames, 2 * <object> L + 1, C)
    if needed * num_threads * 8 >= 2 ** 62:
        raise MemoryError(f"CTCLoss: {frames} frames and targets of {L} labels need more scratch than can be addressed")
    per_thread = needed
    job.scratch = <double*> malloc(num_threads * per_thread * sizeof(double))
    if job.scratch == NULL:
        raise MemoryError(f"CTCLoss: could not allocate {num_threads} x {per_thread} float64 of alpha-beta scratch")
    job.lp = cnp.PyArray_DATA(log_probs)
    job.grad = NULL if grad is None else cnp.PyArray_DATA(grad)
    job.is_float = log_probs.dtype.itemsize <= 4
    job.T, job.N, job.C, job.per_thread = T, N, C, per_thread
    job.input_lengths, job.targets, job.offsets = &input_lengths[0], &targets[0], &offsets[0]
    job.target_lengths, job.blank, job.grad_scale = &target_lengths[0], blank, &grad_scale[0]
    job.losses, job.zero_infinity = &losses[0], zero_infinity
    try:
        with nogil:
            fl_run(ctc_task, &job, N, num_threads)
    finally:
        free(job.scratch)
