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
import re
import secrets
import sys
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _half
from ._arrays import byte_extent, check_no_overlap, check_optional_count, fail
from ._kernels.memory import empty
from .metrics import Tally

__all__ = ["evaluate", "Evaluation", "CHUNK_BYTES", "check_chunkable"]

CHUNK_BYTES = 64 << 20   # input bytes per chunk when chunk_rows is not given: L3-sized, far under memory

Evaluation = namedtuple("Evaluation", ["loss", "state", "rows", "chunk_rows", "bytes", "seconds", "passes",
                                       "metrics"])
Evaluation.__doc__ = """The loss, its exact partial state, the rows evaluated, the rows per
chunk, the bytes read and the wall time in seconds over all passes, the passes over the data
(2 for a 'mean' gradient), and the metrics (a dict, `fastloss.metrics`; None when none
were asked for)."""


class _Source:
    """Rows [r0, r1) of one array (along its row axis) into a reused buffer: positioned reads
    for a memory-mapped file (any layout: a short file is then an OSError, never a SIGBUS from a
    page past its end), slicing for other arrays; a view of an in-memory NumPy array; an array
    without a row axis (axis None: LinearCrossEntropyLoss's linear_weight) read once."""

    def __init__(self, array, name, axis, widen=True):
        if not hasattr(array, "shape") or not hasattr(array, "dtype") or not hasattr(array, "__getitem__"):
            fail(TypeError, name, "an array that slices along its rows (NumPy, np.memmap, h5py, zarr...)",
                 type(array).__name__)
        self.array, self.name, self.axis = array, name, axis
        self.dtype = np.dtype(array.dtype)
        self.half = _half.is_half(self.dtype)   # read as it is, computed in float32
        # half chunks widened to float32 as they are read (for the metrics' kernels), or passed
        # as they are to the criterion, whose kernels widen them in their loops (fastloss/_half.py)
        self.widen = self.half and widen
        self.fd = self.filename = None
        if isinstance(array, np.memmap) and getattr(array, "filename", None):
            self._open_file(array)
        self.whole = None
        if axis is None:
            self.whole = self.read_all() if self.fd is not None else np.asarray(array)
        self.rows = None if axis is None else array.shape[axis]
        rest = tuple(array.shape[:axis or 0]) + tuple(array.shape[(axis or 0) + 1:])
        self.row_bytes = 0 if axis is None else int(np.prod(rest, dtype=np.int64)) * self.dtype.itemsize

    def _open_file(self, array):
        """Positioned reads from the file behind a memory map: its offset, and a first check
        that the file holds every byte the array spans. (A reversed view of a map is sliced
        instead, after the same check: rare, and a file cut short after that is the one
        case left to a signal.)"""
        base = array
        while isinstance(base.base, np.memmap):   # a slice of a map: its offset inside the file
            base = base.base
        start = array.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        self.filename = array.filename
        self.fd = os.open(array.filename, os.O_RDONLY)
        self.position = int(getattr(base, "offset", 0)) + start
        try:
            self._check_size(self.position + byte_extent(array.shape, array.strides, self.dtype.itemsize)[1])
        except OSError:
            self.close()
            raise
        if any(st < 0 for st in array.strides):
            self.close()

    def _check_size(self, needed):
        size = os.fstat(self.fd).st_size
        if size < needed:
            raise OSError(f"{self.name}: the file {self.filename!r} holds {size} bytes, the array needs {needed} "
                          "(a short or truncated .npy file)")

    def buffer(self, rows):
        """A reused buffer for chunks of `rows` rows: the file's rows (None for an array in
        memory), and for half-precision data widened here a dict of float32 buffers by chunk shape."""
        raw = None
        if self.axis is not None and type(self.array) is not np.ndarray:
            shape = list(self.array.shape)
            shape[self.axis] = rows
            raw = empty(shape, self.dtype)   # (from the buffer cache: pages already mapped)
        return (raw, {}) if self.widen else raw

    def read_all(self):
        out = np.empty(self.array.shape, self.dtype)
        self._pread_view(self.array, self.position, out)
        return _half.to_float32(out) if self.half else out

    def read(self, r0, r1, buffer):
        """Rows [r0, r1): float16/bfloat16 widened to float32 (into the buffer, reused) when
        `widen`."""
        if not self.widen:
            return self._read(r0, r1, buffer)
        raw, wide = buffer
        part = self._read(r0, r1, raw)
        if self.axis is None:
            return part
        if part.shape not in wide:   # (two shapes at most: the chunks' and the last one's)
            wide[part.shape] = empty(part.shape, np.float32)
        return _half.to_float32(part, wide[part.shape])

    def _read(self, r0, r1, buffer):
        if self.axis is None:
            return self.whole
        rows = (slice(None),) * self.axis + (slice(r0, r1),)
        if type(self.array) is np.ndarray:   # in memory already: a view, no copy
            return self.array[rows]
        out = buffer[(slice(None),) * self.axis + (slice(0, r1 - r0),)]
        if self.fd is None:
            out[...] = self.array[rows]
            return out
        view = self.array[rows]
        offset = view.__array_interface__["data"][0] - self.array.__array_interface__["data"][0]
        self._pread_view(view, self.position + offset, out)
        return out

    def _pread_view(self, view, position, out):
        """out[...] = view, a strided view of the file starting at byte `position`, by positioned
        reads of its contiguous runs (all of it in one read for a C-ordered slab)."""
        if view.size == 0:
            return
        order = sorted(range(view.ndim), key=lambda d: -view.strides[d])   # outermost first
        shape = [view.shape[d] for d in order]
        strides = [view.strides[d] for d in order]
        inner, run = view.ndim, self.dtype.itemsize   # merge the innermost dims that are contiguous
        while inner > 0 and (shape[inner - 1] == 1 or strides[inner - 1] == run):
            run *= shape[inner - 1]
            inner -= 1
        staged = out if order == list(range(view.ndim)) and out.flags.c_contiguous else np.empty(shape, self.dtype)
        flat = memoryview(staged.reshape(-1).view(np.uint8))
        for k, index in enumerate(np.ndindex(*shape[:inner])):
            self._pread(flat[k * run:(k + 1) * run], position + sum(i * st for i, st in zip(index, strides)))
        if staged is not out:
            out[...] = staged.transpose(np.argsort(order))

    def _pread(self, target, pos):
        done = 0
        while done < len(target):
            n = os.preadv(self.fd, [target[done:]], pos + done)
            if n <= 0:
                raise OSError(f"{self.name}: the file {self.filename!r} ended early at byte {pos + done} "
                              "(truncated while being read?)")
            done += n

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


class _Progress:
    """A progress line on stderr without tqdm: the pass, the bytes read, the rate and an ETA,
    redrawn at most five times a second."""

    def __init__(self, total, label):
        self.total, self.label, self.n = total, label, 0
        self.start = self.shown = time.perf_counter()

    def update(self, k):
        self.n += k
        now = time.perf_counter()
        if now - self.shown >= 0.2 or self.n >= self.total:
            self.shown = now
            rate = self.n / (now - self.start) if now > self.start else 0.0
            eta = f"{(self.total - self.n) / rate:.0f} s" if rate else "?"
            print(f"\r{self.label}: {self.n / 1e9:.2f}/{self.total / 1e9:.2f} GB, {rate / 1e9:.2f} GB/s, ETA {eta}  ",
                  end="", file=sys.stderr, flush=True)

    def close(self):
        print(file=sys.stderr)


def _progress_bar(total, label, enabled):
    """A progress display of `total` bytes read: tqdm.auto's (a widget in a notebook, else a bar
    on stderr, in GB and GB/s with an ETA), or a plain line without tqdm."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Progress(total, label)
    return tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr)


def _chunks(criterion, sources, rows, chunk_rows):
    block = criterion.block_rows(sources[0].array.shape)
    if chunk_rows is None:   # (half-precision rows counted as the float32 they are widened to)
        per_row = max(1, sum(s.row_bytes * (2 if s.widen else 1) for s in sources))
        chunk_rows = max(1, CHUNK_BYTES // per_row)
    chunk_rows = max(block, -(-int(chunk_rows) // block) * block)   # whole blocks: exact partials
    return chunk_rows, [(r0, min(rows, r0 + chunk_rows)) for r0 in range(0, rows, chunk_rows)]


def _passes(sources, chunks, chunk_rows, on_chunk, progress, label):
    """Read the chunks in order, the next one while `on_chunk` computes the current one."""
    buffers = [[s.buffer(chunk_rows) for s in sources] for _ in range(2)]
    row_bytes = sum(s.row_bytes for s in sources)
    bar = _progress_bar((chunks[-1][1] if chunks else 0) * row_bytes, label, progress)
    try:
        with ThreadPoolExecutor(1) as pool:
            load = lambda i: [s.read(*chunks[i], b) for s, b in zip(sources, buffers[i % 2])]  # noqa: E731
            pending = pool.submit(load, 0) if chunks else None
            for i, (r0, r1) in enumerate(chunks):
                arrays = pending.result()
                pending = pool.submit(load, i + 1) if i + 1 < len(chunks) else None
                try:
                    on_chunk(r0, r1, arrays)
                except (ValueError, IndexError, TypeError) as error:
                    raise _in_whole(error, r0, sources, arrays) from None
                if bar is not None:
                    bar.update((r1 - r0) * row_bytes)
    finally:
        if bar is not None:
            bar.close()


def _in_whole(error, r0, sources, chunk):
    """`error`, raised for a chunk starting at row r0, with its positions and shapes in the
    whole arrays' terms (the user never made the chunk)."""
    message = str(error)
    by_name = {s.name: (s, part) for s, part in zip(sources, chunk)}
    name = message.split(":", 1)[0]
    source = by_name.get(name, (None, None))[0]
    if source is not None and source.axis is not None:
        def shift(match):
            position = [int(p) for p in match.group(1).split(",") if p.strip()]
            if len(position) > source.axis:
                position[source.axis] += r0
            return f"at position {tuple(position)}"
        message = re.sub(r"at position \(([-\d, ]*)\)", shift, message)
    for s, part in by_name.values():
        if s.axis is not None and part is not None and tuple(part.shape) != tuple(s.array.shape):
            message = message.replace(str(tuple(part.shape)), str(tuple(s.array.shape)))
    return type(error)(message)


def _same_file(path, filename):
    try:
        return os.path.samefile(path, filename)
    except OSError:
        return False


def _exists(name, path):
    return FileExistsError(f"{name}: expected a new file (or overwrite), got the existing {path!r}")


class _OutputFile:
    """An array written to a new .npy file at `path` (`name`: the argument's), atomically: into
    a temporary file in the same folder, renamed to `path` only when every chunk is written
    (nothing is left behind on failure). Never one of the input files; an existing file only
    with overwrite."""

    def __init__(self, name, path, sources, shape, dtype, overwrite):
        self.name, self.path = name, os.fspath(path)
        for s in sources:
            if s.filename is not None and _same_file(self.path, s.filename):
                fail(ValueError, name, "a file other than the inputs", f"{self.path!r}, the file of {s.name}")
        if os.path.lexists(self.path) and not overwrite:
            raise _exists(name, self.path)
        folder, base = os.path.split(os.path.abspath(self.path))
        while True:   # a new name beside it (mode 0666 less the umask, as any new file)
            self.temporary = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.tmp")
            try:
                os.close(os.open(self.temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                break
            except FileExistsError:
                continue
        self.overwrite = overwrite
        try:
            self.array = np.lib.format.open_memmap(self.temporary, "w+", dtype, shape)
        except BaseException:
            os.unlink(self.temporary)
            raise

    def commit(self):
        self.array.flush()
        del self.array
        if self.overwrite:
            os.replace(self.temporary, self.path)
            return
        try:   # no clobbering a file that appeared meanwhile: a hard link fails if the name exists
            os.link(self.temporary, self.path)
        except FileExistsError:
            raise _exists(self.name, self.path) from None
        except OSError:   # a file system without hard links
            if os.path.lexists(self.path):
                raise _exists(self.name, self.path) from None
            os.rename(self.temporary, self.path)
            return
        os.unlink(self.temporary)

    def discard(self):
        self.array = None
        if os.path.lexists(self.temporary):
            os.unlink(self.temporary)


class _Given(namedtuple("_Given", ["name", "array"])):
    """A caller's output array: nothing to commit or discard."""
    path = None

    def commit(self):
        pass

    def discard(self):
        pass


def _output(name, target, sources, shape, dtype, overwrite, files):
    """An output array: a new .npy file for a path, or the caller's array after checking it
    (either appended to `files`, the outputs so far, which it must not meet)."""
    if isinstance(target, (str, bytes, os.PathLike)):
        for other in files:
            if other.path is not None and (_same_file(target, other.path)
                                           or os.path.abspath(target) == os.path.abspath(other.path)):
                fail(ValueError, name, f"a file other than {other.name}'s", repr(os.fspath(target)))
        files.append(_OutputFile(name, target, sources, shape, dtype, overwrite))
        return files[-1].array
    _check_output(name, target, sources, shape, dtype)
    for other in files:
        if not isinstance(other, _OutputFile):
            check_no_overlap((target,), (name,), (other.array,), (other.name,))
    files.append(_Given(name, target))
    return target


def _row_loss_shape(criterion, none, sources):
    """The shape and dtype of the per-row ('none') losses of the whole: the loss of the first
    rows (a block at most) says what follows the row axis."""
    rows = sources[0].rows
    probe = min(rows, criterion.block_rows(sources[0].array.shape))
    losses = none.loss(*[s.read(0, probe, s.buffer(probe)) for s in sources])
    if np.ndim(losses) == 0 or np.shape(losses)[0] != probe or probe == 0 and rows:
        raise NotImplementedError(f"{type(criterion).__name__}: its 'none' loss is not one per row "
                                  "(no per-row losses, worst rows or per-class losses)")
    return (rows,) + tuple(np.shape(losses)[1:]), np.asarray(losses).dtype


def evaluate(criterion, *arrays, chunk_rows=None, grad_out=None, loss_out=None, metrics=None, overwrite=False,
             progress=False):
    """The loss of `criterion` over `arrays` (its call's arrays, sliced along their rows as
    `criterion.row_axes` says), evaluated chunk by chunk: bitwise the loss of
    ``criterion.loss(*arrays)``, with metrics beside it from the same pass.

    chunk_rows: rows per chunk (rounded up to whole kernel blocks); by default about
    CHUNK_BYTES of input per chunk. grad_out: where the gradient of the loss with respect to
    the first input goes, chunk by chunk: a writable array of the first input's shape and dtype
    that shares no memory (and no file) with the inputs, or the path of a .npy file to create,
    written atomically (a temporary file in the same folder, renamed on success; never an input
    file; an existing file only with `overwrite`). For 'mean' this takes a second pass, since
    each chunk's gradient is scaled by the whole's divisor. loss_out: the per-row losses
    (reduction='none', in the input's dtype), to an array or a new .npy file as grad_out.
    metrics: "all" or names of metrics (`fastloss.metrics`: accuracy, top_k=5, per_class,
    confusion, ece, roc_auc, mae, quantiles, worst=10, ...), computed in the loss pass.
    progress: a progress display on stderr (tqdm.auto's, or a plain line without tqdm), per
    pass, with GB/s and an ETA. Returns an `Evaluation`. Errors about the data name
    positions and shapes in the whole arrays; a short or truncated file is an OSError.
    """
    check_chunkable(criterion, grad_out is not None)
    check_optional_count("chunk_rows", chunk_rows)
    if not arrays:
        fail(TypeError, "arrays", "the criterion's arrays", "none")
    names, axes = criterion.arguments, criterion.row_axes
    if len(arrays) > len(names):
        fail(TypeError, "arrays", f"at most {len(names)} ({', '.join(names)})", f"{len(arrays)}")
    tally = None if metrics is None else Tally(criterion, metrics)
    sources, files = [], []
    try:
        # half chunks go to the criterion as they are (its kernels widen them), widened as they
        # are read only for the metrics' kernels
        sources += [_Source(a, names[i], axes[i], widen=tally is not None) for i, a in enumerate(arrays)
                    if a is not None]
        rows = sources[0].rows
        for s in sources[1:]:
            if s.rows is not None and s.rows != rows:
                fail(ValueError, s.name, f"{rows} rows ({sources[0].name}'s)", f"{s.rows} rows")
        shape, dtype = tuple(sources[0].array.shape), sources[0].dtype
        if grad_out is not None:
            grad_out = _output("grad_out", grad_out, sources, shape, dtype, overwrite, files)
        none = None
        if loss_out is not None or tally is not None and tally.needs_row_losses:
            none = criterion._with_reduction("none")
            loss_shape, loss_dtype = _row_loss_shape(criterion, none, sources)
            loss_dtype = sources[0].dtype if sources[0].half else loss_dtype   # a call's 'none' dtype
        if loss_out is not None:
            loss_out = _output("loss_out", loss_out, sources, loss_shape, loss_dtype, overwrite, files)
        chunk_rows, chunks = _chunks(criterion, sources, rows, chunk_rows)
        state = None
        with_grad_now = grad_out is not None and criterion.reduction == "sum"

        def place(r0, r1, grad):   # this chunk's gradient of the first array, along its row axis
            _half.store(grad[0] if isinstance(grad, tuple) else grad,
                        grad_out[(slice(None),) * sources[0].axis + (slice(r0, r1),)])

        def loss_chunk(r0, r1, chunk):
            nonlocal state
            part = criterion.partial(*chunk)
            state = part if state is None else state + part
            losses = None if none is None else none.loss(*chunk)
            if loss_out is not None:
                _half.store(losses, loss_out[r0:r1])
            if tally is not None:
                tally.update(r0, chunk, losses)
            if with_grad_now:
                place(r0, r1, criterion._chunk_gradient(chunk, 1.0))

        second = grad_out is not None and not with_grad_now   # 'mean': the whole's divisor scales every chunk
        passes = 2 if second else 1
        start = time.perf_counter()
        _passes(sources, chunks, chunk_rows, loss_chunk, progress, f"pass 1/{passes}: loss" + (
            " and metrics" if tally is not None else "") + (" and gradient" if with_grad_now else ""))
        if state is None:   # no rows
            state = criterion.partial(*[s.read(0, 0, s.buffer(0)) for s in sources])
        if second:
            scale = state.gradient_scale()

            def grad_chunk(r0, r1, chunk):
                place(r0, r1, criterion._chunk_gradient(chunk, scale))

            _passes(sources, chunks, chunk_rows, grad_chunk, progress, "pass 2/2: gradient")
        for f in files:
            f.commit()
        files = []
        seconds = time.perf_counter() - start
        read = sum(s.row_bytes for s in sources) * rows * passes
        loss = _half.narrow_scalar(state.value(), sources[0].dtype) if sources[0].half else state.value()
        return Evaluation(loss, state, rows, chunk_rows, read, seconds, passes,
                          None if tally is None else tally.result())
    finally:
        for f in files:   # it failed: nothing is left behind
            f.discard()
        for s in sources:
            s.close()


def _check_output(name, out, sources, shape, dtype):
    """A caller's output array: the expected shape and dtype, writable, and sharing no memory
    and no file with the inputs."""
    wide = _half.is_half(dtype) and out.dtype == np.float32   # float32 for half-precision inputs, as out=
    if tuple(out.shape) != shape or np.dtype(out.dtype) != dtype and not wide:
        fail(ValueError, name, f"shape {shape} and dtype {dtype}" + (" (or float32)" if _half.is_half(dtype) else ""),
             f"shape {tuple(out.shape)} and dtype {out.dtype}")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        fail(ValueError, name, "a writable array", "a read-only one")
    check_no_overlap((out,), (name,), [s.array for s in sources], [s.name for s in sources])
    filename = getattr(out, "filename", None)
    for s in sources:
        if filename is not None and s.filename is not None and _same_file(filename, s.filename):
            fail(ValueError, name, "a file other than the inputs", f"a map of {s.name}'s file {s.filename!r}")
