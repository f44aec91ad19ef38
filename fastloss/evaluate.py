"""Losses over prediction sets larger than memory: ``fastloss.evaluate``.

The rows are read in chunks (from NumPy arrays, ``np.memmap`` or ``.npy`` files opened with
``mmap_mode='r'``, or anything that slices like an array) while the previous chunk is being
computed, each chunk's exact partial state (`Criterion.partial`) is added to the others, and
the result is the loss of one call on the whole, bitwise: every chunk starts on a multiple
of the criterion's `block_rows`, so the kernels' fixed blocks are the same ones either way.
Memory-mapped files are read with plain positioned reads into two reused buffers, so the
process holds two chunks (and, with a gradient, one chunk of it), not the file's pages.
"""
import os
import sys
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._arrays import fail

__all__ = ["evaluate", "Evaluation", "CHUNK_BYTES", "check_chunkable"]

CHUNK_BYTES = 64 << 20   # input bytes per chunk when chunk_rows is not given: L3-sized, far under memory

Evaluation = namedtuple("Evaluation", ["loss", "state", "rows", "chunk_rows", "bytes", "seconds"])
Evaluation.__doc__ = """The loss, its exact partial state, the rows evaluated, the rows per
chunk, the bytes read, and the wall time of the loss pass in seconds."""


class _Source:
    """Rows [r0, r1) of one array (along its row axis) into a reused buffer: positioned reads
    for a C-ordered memory-mapped file with its rows first, slicing otherwise; a view of an
    in-memory NumPy array; an array without a row axis (axis None: LinearCrossEntropyLoss's
    linear_weight) read once."""

    def __init__(self, array, name, axis):
        if not hasattr(array, "shape") or not hasattr(array, "dtype") or not hasattr(array, "__getitem__"):
            fail(TypeError, name, "an array that slices along its rows (NumPy, np.memmap, h5py, zarr...)",
                 type(array).__name__)
        self.array, self.name, self.axis = array, name, axis
        self.dtype = np.dtype(array.dtype)
        self.whole = np.asarray(array) if axis is None else None
        self.rows = None if axis is None else array.shape[axis]
        rest = tuple(array.shape[:axis or 0]) + tuple(array.shape[(axis or 0) + 1:])
        self.row_bytes = 0 if axis is None else int(np.prod(rest, dtype=np.int64)) * self.dtype.itemsize
        self.fd = None
        if axis == 0 and isinstance(array, np.memmap) and getattr(array, "filename", None) and array.flags.c_contiguous:
            base = array
            while isinstance(base.base, np.memmap):   # a slice of a map: its offset inside the file
                base = base.base
            start = array.__array_interface__["data"][0] - base.__array_interface__["data"][0]
            self.fd = os.open(array.filename, os.O_RDONLY)
            self.position = int(getattr(base, "offset", 0)) + start

    def buffer(self, rows):
        if self.axis is None or type(self.array) is np.ndarray:
            return None
        shape = list(self.array.shape)
        shape[self.axis] = rows
        return np.empty(shape, self.dtype)

    def read(self, r0, r1, buffer):
        if self.axis is None:
            return self.whole
        rows = (slice(None),) * self.axis + (slice(r0, r1),)
        if type(self.array) is np.ndarray:   # in memory already: a view, no copy
            return self.array[rows]
        out = buffer[(slice(None),) * self.axis + (slice(0, r1 - r0),)]
        if self.fd is None:
            out[...] = self.array[rows]
            return out
        view, pos, done = memoryview(out.reshape(-1).view(np.uint8)), self.position + r0 * self.row_bytes, 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], pos + done)
            if n <= 0:
                raise OSError(f"{self.name}: the file ended early at byte {pos + done}")
            done += n
        return out

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def check_chunkable(criterion, gradient=False):
    """Chunked evaluation slices the arrays along their rows and adds partial states; a
    chunked gradient also needs each chunk's to depend only on the whole's divisor."""
    if criterion.reduction == "none" and not criterion._partial_of_none:
        fail(ValueError, "criterion", "a reduced loss ('mean' or 'sum')", "reduction='none'")
    if not criterion._partial:
        raise NotImplementedError(f"{type(criterion).__name__}: no chunked evaluation (every row's loss "
                                  "involves all rows)")
    if gradient and not criterion._chunked_gradient:
        raise NotImplementedError(f"{type(criterion).__name__}: no chunked gradient (each chunk's needs "
                                  "the whole's sums)")


def _progress_bar(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:   # a plain line on stderr
        class _Line:
            def __init__(self):
                self.n = 0

            def update(self, k):
                self.n += k
                print(f"\r{self.n}/{total} rows", end="", file=sys.stderr, flush=True)

            def close(self):
                print(file=sys.stderr)
        return _Line()
    return tqdm(total=total, unit="row", unit_scale=True, file=sys.stderr)


def _chunks(criterion, sources, rows, chunk_rows):
    block = criterion.block_rows(sources[0].array.shape)
    if chunk_rows is None:
        per_row = max(1, sum(s.row_bytes for s in sources))
        chunk_rows = max(1, CHUNK_BYTES // per_row)
    chunk_rows = max(block, -(-int(chunk_rows) // block) * block)   # whole blocks: exact partials
    return chunk_rows, [(r0, min(rows, r0 + chunk_rows)) for r0 in range(0, rows, chunk_rows)]


def _passes(sources, chunks, chunk_rows, on_chunk, progress):
    """Read the chunks in order, the next one while `on_chunk` computes the current one."""
    buffers = [[s.buffer(chunk_rows) for s in sources] for _ in range(2)]
    bar = _progress_bar(chunks[-1][1] if chunks else 0, progress)
    try:
        with ThreadPoolExecutor(1) as pool:
            load = lambda i: [s.read(*chunks[i], b) for s, b in zip(sources, buffers[i % 2])]  # noqa: E731
            pending = pool.submit(load, 0) if chunks else None
            for i, (r0, r1) in enumerate(chunks):
                arrays = pending.result()
                pending = pool.submit(load, i + 1) if i + 1 < len(chunks) else None
                on_chunk(r0, r1, arrays)
                if bar is not None:
                    bar.update(r1 - r0)
    finally:
        if bar is not None:
            bar.close()


def evaluate(criterion, *arrays, chunk_rows=None, grad_out=None, progress=False):
    """The loss of `criterion` over `arrays` (its call's arrays, sliced along their rows as
    `criterion.row_axes` says), evaluated chunk by chunk: bitwise the loss of
    ``criterion.loss(*arrays)``.

    chunk_rows: rows per chunk (rounded up to whole kernel blocks); by default about
    CHUNK_BYTES of input per chunk. grad_out: a writable array of the first input's shape and
    dtype (an ``np.lib.format.open_memmap`` file for out-of-core training) that receives the
    gradient of the loss with respect to the first input, chunk by chunk; for 'mean' this takes
    a second pass, since each chunk's gradient is scaled by the whole's divisor. progress: a
    tqdm progress bar on stderr (a plain line without tqdm). Returns an `Evaluation`.
    """
    check_chunkable(criterion, grad_out is not None)
    if not arrays:
        fail(TypeError, "arrays", "the criterion's arrays", "none")
    names, axes = criterion.arguments, criterion.row_axes
    if len(arrays) > len(names):
        fail(TypeError, "arrays", f"at most {len(names)} ({', '.join(names)})", f"{len(arrays)}")
    sources = [_Source(a, names[i], axes[i]) for i, a in enumerate(arrays) if a is not None]
    try:
        rows = sources[0].rows
        for s in sources[1:]:
            if s.rows is not None and s.rows != rows:
                fail(ValueError, s.name, f"{rows} rows ({sources[0].name}'s)", f"{s.rows} rows")
        if grad_out is not None and (tuple(grad_out.shape) != tuple(sources[0].array.shape)
                                     or np.dtype(grad_out.dtype) != sources[0].dtype):
            fail(ValueError, "grad_out", f"shape {tuple(sources[0].array.shape)} and dtype {sources[0].dtype}",
                 f"shape {tuple(grad_out.shape)} and dtype {grad_out.dtype}")
        chunk_rows, chunks = _chunks(criterion, sources, rows, chunk_rows)
        state = None
        with_grad_now = grad_out is not None and criterion.reduction == "sum"

        def place(r0, r1, grad):   # this chunk's gradient of the first array, along its row axis
            grad_out[(slice(None),) * sources[0].axis + (slice(r0, r1),)] = grad[0] if isinstance(grad, tuple) else grad

        def loss_chunk(r0, r1, chunk):
            nonlocal state
            part = criterion.partial(*chunk)
            state = part if state is None else state + part
            if with_grad_now:
                place(r0, r1, criterion._chunk_gradient(chunk, 1.0))

        start = time.perf_counter()
        _passes(sources, chunks, chunk_rows, loss_chunk, progress)
        seconds = time.perf_counter() - start
        if state is None:   # no rows
            state = criterion.partial(*[s.read(0, 0, s.buffer(0)) for s in sources])
        if grad_out is not None and not with_grad_now:   # 'mean': the whole's divisor scales every chunk
            scale = state.gradient_scale()

            def grad_chunk(r0, r1, chunk):
                place(r0, r1, criterion._chunk_gradient(chunk, scale))

            _passes(sources, chunks, chunk_rows, grad_chunk, progress)
        read = sum(s.row_bytes for s in sources) * rows
        return Evaluation(state.value(), state, rows, chunk_rows, read, seconds)
    finally:
        for s in sources:
            s.close()
