"""The plain specs a family's API layer builds once per call and hands to either backend.

A criterion checks its arrays and options once (`losses/<family>.py`, with the checks of
`_targets.py`), taking the arrays through `HOST` or, for device arrays, the GPU's `Device`
(fastloss/cuda/_device.py: the same methods), and returns one of the named tuples below:
the arrays as that backend reads them (host arrays or device views), the sizes, the
reduction, and the options under the names the kernels of both backends use. The CPU path
(`losses/<family>.py`) and the GPU path (`cuda/<family>.py`) read only the spec: neither
looks at the criterion again, and `cuda/` imports nothing from `losses/`.
"""
from typing import NamedTuple, Optional

import numpy as np

from ._arrays import as_float_input, as_host_array, as_operand
from ._kernels import pointwise as _pointwise_kernel
from ._threads import get_num_threads


class Host:
    """How the CPU path takes a call's arrays (the GPU's `Device` has the same methods)."""
    device = False

    @staticmethod
    def float_input(obj, name):
        """A differentiable input: float32/float64, C-contiguous."""
        return as_float_input(obj, name)

    @staticmethod
    def input(obj, name):
        """A differentiable input as an (array, view) pair (the GPU's: the caller's array and
        the kernels' view of it; here both are the one ndarray)."""
        arr = as_float_input(obj, name)
        return arr, arr

    @staticmethod
    def array(obj, name):
        """Any array-like as it is (its dtype decides what it means: class indices or not)."""
        return as_host_array(obj, name)

    @staticmethod
    def operand(obj, name, dtype):
        """A real-valued operand, converted to the input's dtype, C-contiguous."""
        return as_operand(obj, name, dtype)

    option = operand   # an array option of the criterion (host memory already)

    @staticmethod
    def cast(arr, dtype):
        """A real target the kernels read in the input's dtype."""
        return as_operand(arr, "target", dtype)

    @staticmethod
    def to_host(arr):
        """A host copy of a (small) array: here, the host array itself."""
        return arr

    @staticmethod
    def count_outside(arr, lo, hi, nan_is_bad):
        return _pointwise_kernel.count_outside(arr, lo, hi, nan_is_bad, get_num_threads())


HOST = Host()


class Reduction(NamedTuple):
    """A call's reduction: 'none' gives `loss_shape`; 'mean' divides the total by `divisor`."""
    kind: str
    loss_shape: tuple
    divisor: float   # 1 for 'none' and 'sum'
    none: bool       # kind == 'none'


def reduction(kind, loss_shape, count):
    """The Reduction of a loss with `count` values, averaged by 'mean'."""
    return Reduction(kind, tuple(loss_shape), float(count) if kind == "mean" else 1.0, kind == "none")


def divided(kind, loss_shape, divisor):
    """The Reduction of a loss whose divisor the family worked out (1 unless 'mean')."""
    return Reduction(kind, loss_shape, divisor, kind == "none")


# ------------------------------------------------------------------ the pointwise family
class PointOptions(NamedTuple):
    """The pointwise kernels' options (each loss reads its own; the rest keep these values).
    The kernel reads them by position (pointwise.pyx's pointwise()): a new field goes at the end."""
    beta: float = 0.0       # SmoothL1Loss's beta, HuberLoss's and PseudoHuberLoss's delta
    margin: float = 0.0     # HingeEmbeddingLoss, MarginRankingLoss
    eps: float = 0.0        # PoissonNLLLoss's and GaussianNLLLoss's clamp
    alpha: float = -1.0     # SigmoidFocalLoss (< 0: no alpha_t)
    gamma: float = 0.0      # SigmoidFocalLoss
    power: float = 0.0      # TweedieLoss
    full: bool = False      # GaussianNLLLoss's constant term


class PointwiseSpec(NamedTuple):
    """One pointwise loss over x: operands {'y' | 'a' | 'b': (array, name)} broadcast to x's
    shape; `grad_a`: (shape, slab_m, slab_q) of the gradient of operand a (summed over a
    broadcast axis of slab_m elements slab_q apart), or None."""
    kernel: str
    x: object
    operands: dict
    reduction: Reduction
    options: PointOptions
    grad_a: Optional[tuple]
    names: tuple            # the differentiable arguments (out= messages)


# ------------------------------------------------------------------ the softmax family
class ClassOptions(NamedTuple):
    """The class-row kernels' options (CrossEntropyLoss, SoftmaxFocalLoss, NLLLoss and the
    chunks of LinearCrossEntropyLoss and NTXentLoss), one name each on both backends. The CPU
    kernels read them by position (softmax.pyx's read_options): a new field goes at the end."""
    ignore_index: int = -100
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float = 0.0        # 0: none
    focal_gamma: float = -1.0   # < 0: cross entropy, else the focal loss's gamma
    weight_total: float = 0.0   # the class weights' sum (C without weights), for label smoothing
    z_share: float = 0.0        # 'mean': the cross-entropy divisor over the z-loss divisor


class ClassRows(NamedTuple):
    """Rows of class scores x (N, C, d...) with class-index `target` (host int64, or a device
    view) or probabilities `target_prob`; `weight` (C,) or None. `divisors`: the exact 'mean'
    divisor of the cross-entropy part (ExactSum; 1 for 'sum' and 'none'), `z_divisor` the
    z-loss part's. `log_probs`: x holds log-probabilities (NLLLoss)."""
    x: object
    target: object
    target_prob: object
    weight: object
    rows: int
    classes: int
    positions: int
    reduction: Reduction
    divisors: object
    z_divisor: float
    options: ClassOptions
    log_probs: bool = False


class LinearRows(NamedTuple):
    """LinearCrossEntropyLoss: input (N, H) pairs, linear_weight (C, H), linear_bias (C,) or
    None (each an (array, view) pair), targets as ClassRows; rows go `chunk_rows` at a time."""
    x: tuple
    linear_weight: tuple
    bias: Optional[tuple]
    target: object
    target_prob: object
    weight: object
    N: int
    classes: int
    hidden: int
    reduction: Reduction
    divisors: object
    chunk_rows: int
    options: ClassOptions
    names: tuple


class MarginRows(NamedTuple):
    """One of the kernels' MARGIN_LOSSES over rows of x (N, C): class-index `target` (MultiMargin: (N,),
    MultiLabelMargin: (N, C)) or real `target_real` (N, C); `weight` (C,) or None."""
    loss: str
    x: object
    target: object
    target_real: object
    weight: object
    rows: int
    classes: int
    reduction: Reduction
    margin: float = 0.0
    p: int = 1


class DiceSpec(NamedTuple):
    """DiceLoss over x (N, C, S positions): class-index `target_index` (N, S) or 0/1
    `target_real` of x's shape; `link` how p comes from x: 'softmax', 'sigmoid' or 'probabilities'."""
    x: object
    target_index: object
    target_real: object
    N: int
    C: int
    S: int
    link: str
    smooth: float
    eps: float
    ignore_index: Optional[int]
    reduction: Reduction


# ------------------------------------------------------------------ the embedding family
class PairSpec(NamedTuple):
    """One of the embedding kernels' LOSS_NAMES over rows of 2 or 3 embeddings (`inputs`: (array, view) pairs of one
    shape, (N, D) or (D,)), with per-row labels `y` or None. `distance`: a TripletMarginWith-
    DistanceLoss's callable pair (d, d_grad), in place of the kernel's distance."""
    loss: Optional[str]
    inputs: tuple
    y: object
    rows: int
    D: int
    reduction: Reduction
    p: float = 2.0
    eps: float = 0.0
    margin: float = 0.0
    swap: bool = False
    distance: Optional[tuple] = None
    names: tuple = ()


class NTXentSpec(NamedTuple):
    """NTXentLoss over two views z1, z2 (N, D) ((array, view) pairs): 2N rows in chunks of `chunk_rows`."""
    z: tuple
    N: int
    D: int
    temperature: float
    chunk_rows: int
    reduction: Reduction
    names: tuple


NORMALIZE_EPS = 1e-12   # F.normalize's


# ------------------------------------------------------------------ the sequence family
class CTCSpec(NamedTuple):
    """CTCLoss: log_probs (T, N, C) (a (T, C) input as N = 1), the checked host int64 targets
    (one vector) with each element's offset, the lengths, and per element the 'mean' weight
    1 / max(target length, 1) (ones otherwise)."""
    log_probs: object
    shape: tuple            # log_probs' own shape: (T, N, C) or (T, C)
    targets: np.ndarray
    offsets: np.ndarray
    input_lengths: np.ndarray
    target_lengths: np.ndarray
    T: int
    N: int
    C: int
    blank: int
    zero_infinity: bool
    per_length: np.ndarray
    reduction: Reduction
