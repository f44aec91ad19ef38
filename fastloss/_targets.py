"""Backend-neutral checks of shapes, targets and lengths: the families' validation that the
CPU and GPU paths share. Each function takes host arrays or device views alike (it reads
`shape`, `ndim` and `dtype` only), except where it says it takes a host copy of integer
labels: those are checked by the CPU kernels' scans, which name the first bad value.

Nothing here knows a criterion class or a backend; `losses/` builds its specs with these,
and `cuda/` never needs them (it receives the checked spec).
"""
import math

import numpy as np

from ._arrays import as_host_array, as_int64_labels, contiguous, fail, position_of
from ._exact import ExactSum
from ._kernels import softmax as _softmax_kernel


def class_layout(shape):
    """(samples N, classes C, positions per sample D, the target's shape) of a class-score
    input: (C,), (N, C) or (N, C, d1, ..., dk)."""
    shape = tuple(shape)
    if not shape:
        fail(ValueError, "input", "at least 1 dimension (C,) or (N, C, ...)", "a 0-d array")
    if len(shape) == 1:
        return 1, shape[0], 1, ()
    return shape[0], shape[1], math.prod(shape[2:]), (shape[0],) + shape[2:]


def _expected_classes(classes, ignore_index):
    return f"class indices in [0, {classes})" + ("" if ignore_index is None else f" or ignore_index {ignore_index}")


def class_targets(target, target_shape, classes, ignore_index, weight):
    """Class-index targets (a host array) as int64 after the checks: (targets, the exact sum
    of the kept rows' class weights as an ExactSum, the number of kept rows). ignore_index
    None: every target must be a class."""
    if target.dtype.kind in "iub" and target.shape != target_shape:
        fail(ValueError, "target", f"shape {target_shape}", tuple(target.shape))
    if target.dtype != np.int64 or not target.flags.carray:
        target = as_int64_labels(target, "target", lambda: _expected_classes(classes, ignore_index))
    bad, value, weights, kept = _softmax_kernel.check_targets(
        target, classes, ignore_index, None if weight is None else contiguous(weight, np.float64))
    if bad >= 0:
        raise IndexError(f"target: expected {_expected_classes(classes, ignore_index)}, got {value} "
                         f"at position {position_of(bad, target_shape)}")
    return target, ExactSum.of_int(kept) if weights is None else ExactSum(*weights), kept


def class_weight(weight, classes, dtype):
    """A criterion's class weights (host) for C classes, in the input's dtype, or None."""
    if weight is None:
        return None
    if weight.dtype.kind not in "biuf":
        fail(TypeError, "weight", "real class weights", f"dtype {weight.dtype}")
    if weight.shape != (classes,):
        fail(ValueError, "weight", f"shape ({classes},) (one per class)", tuple(weight.shape))
    return contiguous(weight, dtype)


def weight_total(weight, classes):
    """The sum of the class weights, as label smoothing uses it (C without weights)."""
    return float(classes) if weight is None else float(weight.sum(dtype=np.float64))


def linear_shapes(x, linear_weight, bias):
    """(C, H) of LinearCrossEntropyLoss's input (N, H) or (H,), linear_weight (C, H) and
    linear_bias (C,) or None, after the checks."""
    shape, weight_shape = tuple(x.shape), tuple(linear_weight.shape)
    if len(shape) not in (1, 2):
        fail(ValueError, "input", "shape (N, H) or (H,)", shape)
    if len(weight_shape) != 2 or weight_shape[1] != shape[-1]:
        fail(ValueError, "linear_weight", f"shape (C, {shape[-1]})", weight_shape)
    C, H = weight_shape
    if bias is not None and tuple(bias.shape) != (C,):
        fail(ValueError, "linear_bias", f"shape ({C},)", tuple(bias.shape))
    for name, arr in (("linear_weight", linear_weight), ("linear_bias", bias)):
        if arr is not None and arr.dtype != x.dtype:
            fail(TypeError, name, f"dtype {x.dtype} (the input's)", f"dtype {arr.dtype}")
    return C, H


def multilabel_targets(target):
    """MultiLabelMarginLoss's targets (host, the input's shape) as int64, after the check: the
    entries before each row's first -1 are class indices (an IndexError names the first one
    that is not)."""
    C = target.shape[-1] if target.ndim else 1
    target = as_int64_labels(target, "target", f"class indices in [0, {C}) or -1")
    bad, value = _softmax_kernel.check_multilabel_targets(target, C)
    if bad >= 0:
        raise IndexError(f"target: expected class indices in [0, {C}) before each row's "
                         f"first -1, got {value} at position {position_of(bad, target.shape)}")
    return target


def dice_dims(shape, binary):
    """(N, C, S) of a DiceLoss input of `shape`: (N, C, *) with S the product of *; binary
    takes (N, *) or (N, 1, *) alike, as one channel over every position (as
    segmentation_models_pytorch flattens it)."""
    shape = tuple(shape)
    if binary:
        if len(shape) < 1:
            fail(ValueError, "input", "shape (N, *) or (N, 1, *) for mode 'binary'", shape)
        return shape[0], 1, math.prod(shape[1:])
    if len(shape) < 2:
        fail(ValueError, "input", "shape (N, C, ...)", shape)
    return shape[0], shape[1], math.prod(shape[2:])


def embeddings(views, names):
    """Refuse embedding inputs that are not all (N, D) or (D,) of the first's shape and dtype."""
    shape, dtype = tuple(views[0].shape), views[0].dtype
    if len(shape) not in (1, 2):
        fail(ValueError, names[0], "shape (N, D) or (D,)", shape)
    for name, view in zip(names[1:], views[1:]):
        if tuple(view.shape) != shape:
            fail(ValueError, name, f"shape {shape} ({names[0]}'s)", tuple(view.shape))
        if view.dtype != dtype:
            fail(TypeError, name, f"dtype {dtype} ({names[0]}'s)", f"dtype {view.dtype}")


def row_labels(y, loss_shape):
    """One real label per row (ContrastiveLoss, CosineEmbeddingLoss): a host or device array."""
    if y.dtype.kind not in "biuf":
        fail(TypeError, "target", "labels of a real or integer dtype", f"dtype {y.dtype}")
    if tuple(y.shape) != loss_shape:
        fail(ValueError, "target", f"shape {loss_shape} (one label per row)", tuple(y.shape))


def lengths(value, name, batch):
    """CTC's input or target lengths (any host array-like) as int64 (batch,), after the checks."""
    lengths = as_host_array(value, name)
    if lengths.dtype.kind not in "iu":
        fail(TypeError, name, "integer lengths", f"dtype {lengths.dtype}")
    if lengths.size != batch or lengths.ndim > 1:
        fail(ValueError, name, f"{batch} length(s), one per batch element", f"shape {tuple(lengths.shape)}")
    lengths = as_int64_labels(lengths.reshape(batch), name, "lengths >= 0")
    if batch and lengths.min() < 0:
        b = int(np.argmin(lengths))
        fail(ValueError, name, "lengths >= 0", f"{lengths[b]} at position ({b},)")
    return lengths


def at_most(name, values, limit, what):
    """Refuse lengths above `limit`, naming the first largest."""
    if values.size and values.max() > limit:
        b = int(np.argmax(values))
        fail(ValueError, name, f"lengths at most {what}", f"{values[b]} at position ({b},)")


def ctc_targets(targets, target_lengths, batched, classes, blank):
    """CTC's targets (a host array) as one int64 vector (never empty) and each element's offset
    into it, after the checks: lengths within the padding or the concatenation, labels in
    [0, C) and not the blank."""
    if targets.dtype.kind not in "iu":
        fail(TypeError, "targets", "class indices of an integer dtype", f"dtype {targets.dtype}")
    N = len(target_lengths)
    if batched and targets.ndim == 2:   # padded (N, S)
        if targets.shape[0] != N:
            fail(ValueError, "targets", f"{N} padded rows (N, S)", tuple(targets.shape))
        S = targets.shape[1]
        at_most("target_lengths", target_lengths, S, f"S = {S} (the padded targets' width)")
        offsets = np.arange(N, dtype=np.int64) * S
        used = np.arange(S)[None, :] < target_lengths[:, None]
    elif targets.ndim == 1:             # concatenated, or one sequence's (S,)
        total = int(target_lengths.sum())
        if (batched and targets.shape[0] != total) or (not batched and total > targets.shape[0]):
            fail(ValueError, "targets", f"{total} labels (the sum of target_lengths)" if batched
                 else f"at least {total} labels (target_lengths)", tuple(targets.shape))
        offsets = np.concatenate(([0], np.cumsum(target_lengths)[:-1])).astype(np.int64)
        used = np.arange(targets.shape[0]) < total
    else:
        fail(ValueError, "targets", "shape (N, S) or (sum(target_lengths),)" if batched else "shape (S,)",
             tuple(targets.shape))
    expected = f"labels in [0, {classes}) other than blank {blank}"
    flat = as_int64_labels(targets.reshape(-1), "targets", expected)
    bad = used.reshape(-1) & ((flat < 0) | (flat >= classes) | (flat == blank))
    if bad.any():
        i = int(np.argmax(bad))
        fail(ValueError, "targets", expected, f"{flat[i]} at position {position_of(i, targets.shape)}")
    return (flat if flat.size else np.zeros(1, np.int64)), offsets
