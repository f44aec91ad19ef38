"""fastloss on Dask arrays: ``fastloss.dask.evaluate(criterion, *arrays)``, the same call on one
machine's cores or a cluster.

Each chunk of rows computes its exact partial state (`Criterion.partial`) where it lives, the
states meet in a tree reduction (only a few floats travel), and the loss is bitwise the
in-memory ``criterion.loss(*arrays)``: the arrays are first rechunked, along their rows only,
to whole multiples of the criterion's `block_rows`. With ``grad=True`` the gradient with
respect to the first array comes back as a Dask array with the same chunks, each chunk scaled
by the whole's divisor (known once the loss is). Dask is optional: importing fastloss never
imports it.
"""
import dask
import dask.array as da
import numpy as np

from .evaluate import check_chunkable

__all__ = ["evaluate"]


def _row_chunks(rows, size, block):
    size = max(block, -(-size // block) * block)
    return tuple(min(size, rows - r0) for r0 in range(0, rows, size)) or (0,)


def _aligned(criterion, arrays):
    """The arrays rechunked to common row chunks of whole kernel blocks, whole along the
    other axes."""
    x = arrays[0]
    block = criterion.block_rows(x.shape)
    chunks = _row_chunks(x.shape[0], max(x.chunks[0]), block)
    return [a.rechunk({0: chunks, **{axis: -1 for axis in range(1, a.ndim)}}) for a in arrays]


def _partial(criterion, *blocks):
    return criterion.partial(*blocks)


def _add(a, b):
    return a + b


def _tree(parts):
    while len(parts) > 1:
        parts = [dask.delayed(_add)(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def evaluate(criterion, *arrays, grad=False):
    """The loss (and with ``grad`` the lazy gradient of the first array) of dask arrays, all
    chunked or rechunked along their rows together. Returns the loss, or (loss, gradient)."""
    check_chunkable(criterion, grad)
    if any(axis != 0 for axis in criterion.row_axes[: len(arrays)]):
        raise NotImplementedError(f"{type(criterion).__name__}: fastloss.dask takes criteria whose arrays all "
                                  "have their rows first (fastloss.evaluate takes this one)")
    arrays = [a if isinstance(a, da.Array) else da.from_array(np.asarray(a)) for a in arrays]
    arrays = _aligned(criterion, arrays)
    blocks = [a.to_delayed().ravel() for a in arrays]
    parts = [dask.delayed(_partial)(criterion, *row) for row in zip(*blocks)]
    state = _tree(parts).compute()
    loss = state.value()
    if not grad:
        return loss
    scale = state.gradient_scale()

    def block_grad(*blocks):
        g = criterion._chunk_gradient(blocks, scale)
        return g[0] if isinstance(g, tuple) else g

    # the row axis shared by every array; the other axes (single chunks) named apart
    letters = iter("bcdefghijklmnopqrstuvwxyz")
    indices = ["a" + "".join(next(letters) for _ in range(a.ndim - 1)) for a in arrays]
    pairs = [item for a, ind in zip(arrays, indices) for item in (a, ind)]
    x = arrays[0]
    gradient = da.blockwise(block_grad, indices[0], *pairs, dtype=x.dtype, concatenate=True,
                            meta=np.empty((0,) * x.ndim, x.dtype))
    return loss, gradient
