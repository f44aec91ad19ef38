"""The contract every criterion keeps (SPEC section 1 and 3): out=, grad_output=, loss() versus
__call__, errors that name the argument, bitwise determinism across thread counts, threads,
the GIL, memory, array-likes and the functional API."""
import os
import subprocess
import sys
import threading
import time
import tracemalloc

import cases
import numpy as np
import pytest
from conftest import parallel, torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pointwise import CASES, IDS, build

import fastloss as fl
from fastloss._kernels import memory, pool
from fastloss._threads import usable_cores

F = torch.nn.functional
RNG = np.random.default_rng(11)


def arrays_for(case, shape=(40, 7), dtype=np.float64, seed=0):
    return build(case, case.options[-1], shape, np.random.default_rng(seed), dtype)


# ---------------------------------------------------------------- out= and grad_output=

@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_out_is_written_and_returned(case, reduction):
    options, _, arrays = arrays_for(case)
    crit = case.criterion(reduction=reduction, **options)
    loss, grads = crit(*arrays)
    grads = grads if isinstance(grads, tuple) else (grads,)
    buffers = tuple(np.full_like(g, np.nan) for g in grads)
    out = buffers if len(buffers) > 1 else buffers[0]
    loss2, grads2 = crit(*arrays, out=out)
    grads2 = grads2 if isinstance(grads2, tuple) else (grads2,)
    for ours, buf, fresh in zip(grads2, buffers, grads):
        assert ours is buf
        np.testing.assert_array_equal(ours, fresh)
    np.testing.assert_array_equal(loss, loss2)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_only_equals_the_loss_of_the_full_call(case, dtype):
    # Two kernels: gcc may vectorise them at different widths, and libmvec's variants can
    # round exp/log differently in the last bit; each is deterministic on its own.
    for reduction in ("mean", "sum", "none"):
        options, _, arrays = arrays_for(case, dtype=dtype)
        crit = case.criterion(reduction=reduction, **options)
        np.testing.assert_allclose(crit.loss(*arrays), crit(*arrays).loss, rtol=8 * np.finfo(dtype).eps, atol=0)


def test_grad_output_scales_reduced_and_weights_none():
    x, y = RNG.standard_normal((2, 30, 4))
    _, g1 = fl.MSELoss()(x, y)
    _, g3 = fl.MSELoss()(x, y, grad_output=np.float64(3.0))
    np.testing.assert_allclose(g3, 3 * g1, rtol=1e-15)
    weights = RNG.uniform(size=(30, 4))
    loss, g = fl.MSELoss(reduction="none")(x, y, grad_output=weights)
    np.testing.assert_allclose(g, 2 * (x - y) * weights, rtol=1e-15)
    # a grad_output that broadcasts to the loss's shape
    _, g_row = fl.MSELoss(reduction="none")(x, y, grad_output=weights[:1])
    np.testing.assert_allclose(g_row, 2 * (x - y) * weights[:1], rtol=1e-15)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_range_scan_finds_every_bad_element(dtype):
    """BCELoss's input scan (vectorised, in x's dtype, over threads): 0, -0.0 and 1 pass;
    the nearest values outside, NaN and infinities anywhere in a large input are named."""
    from fastloss._kernels import pointwise
    x = RNG.uniform(0, 1, 300_001).astype(dtype)
    x[:3] = [0.0, -0.0, 1.0]
    y = np.zeros_like(x)
    fl.BCELoss()(x, y)
    for position in (0, 4097, 300_000):
        for value in (-np.finfo(dtype).smallest_subnormal, np.nextafter(dtype(1), dtype(2)), np.nan, np.inf, -np.inf):
            bad = x.copy()
            bad[position] = value
            assert pointwise.count_outside(bad, 0.0, 1.0, True, 4) == 1
            with pytest.raises(ValueError, match=rf"input: expected all elements between 0 and 1, got .* at position \({position},\)"):
                fl.BCELoss()(bad, y)
    assert pointwise.count_outside(np.array([np.nan, -1.0, 2.0, np.inf], dtype), 0.0, np.inf, False, 1) == 1
    with pytest.raises(ValueError, match="not exact in float32"):
        pointwise.count_outside(x.astype(np.float32), 0.1, 1.0, True, 1)


def test_errors_name_the_argument_and_leave_out_untouched():
    x = RNG.uniform(0.1, 0.9, (5, 3))
    out = np.full_like(x, 7.0)
    bad = x.copy()
    bad[2, 1] = 1.5
    with pytest.raises(ValueError, match=r"input: expected all elements between 0 and 1, got 1\.5 at position \(2, 1\)"):
        fl.BCELoss()(bad, x, out=out)
    nan_input = x.copy()
    nan_input[0, 0] = np.nan
    with pytest.raises(ValueError, match="input: expected all elements between 0 and 1"):
        fl.BCELoss()(nan_input, x, out=out)
    with pytest.raises(ValueError, match="var: expected non-negative entries"):
        fl.GaussianNLLLoss()(x, x, -x, out=(out, np.full_like(x, 7.0)))
    with pytest.raises(ValueError, match=r"target: expected a shape that broadcasts to \(5, 3\), got \(4,\)"):
        fl.MSELoss()(x, np.zeros(4), out=out)
    with pytest.raises(ValueError, match=r"out \(input\): expected shape \(5, 3\), got \(3, 5\)"):
        fl.MSELoss()(x, x, out=np.zeros((3, 5)))
    with pytest.raises(TypeError, match=r"out \(input\): expected dtype float64, got dtype float32"):
        fl.MSELoss()(x, x, out=np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="out \\(input\\): expected a writeable, aligned C-contiguous array"):
        fl.MSELoss()(x, x, out=np.zeros((3, 5)).T)
    np.testing.assert_array_equal(out, 7.0)


@pytest.mark.parametrize("make, arrays, error, message", [
    (fl.MSELoss, lambda: (np.arange(6), np.zeros(6)), TypeError, "input: expected a float32 or float64 array, got dtype int64"),
    (fl.MSELoss, lambda: (np.zeros(6, complex), np.zeros(6)), TypeError, "input: expected a float32 or float64 array, got dtype complex128"),
    (fl.MSELoss, lambda: (np.zeros(6, bool), np.zeros(6)), TypeError, "input: expected a float32 or float64 array, got dtype bool"),
    (fl.MSELoss, lambda: (np.zeros(6), np.zeros(6, complex)), TypeError, "target: expected a real-valued array, got dtype complex128"),
    (fl.MSELoss, lambda: (np.zeros((2, 3)), np.zeros((3, 2))), ValueError, r"target: expected a shape that broadcasts to \(2, 3\), got \(3, 2\)"),
    (fl.BCELoss, lambda: (np.full(6, 0.5), np.zeros(3)), ValueError, r"target: expected shape \(6,\) \(the input's shape\), got \(3,\)"),
    (fl.BCEWithLogitsLoss, lambda: (np.zeros(6), np.zeros((6, 1))), ValueError, r"target: expected shape \(6,\)"),
    (lambda: fl.BCELoss(weight=np.ones(4)), lambda: (np.full((2, 3), 0.5), np.zeros((2, 3))), ValueError, r"weight: expected a shape that broadcasts to \(2, 3\), got \(4,\)"),
    (fl.GaussianNLLLoss, lambda: (np.zeros((4, 3)), np.zeros((4, 3)), np.ones((2, 3))), ValueError, r"var: expected the input's shape \(4, 3\)"),
    (fl.MarginRankingLoss, lambda: (np.zeros(4), np.zeros(5), np.ones(4)), ValueError, r"input2: expected shape \(4,\) \(input1's shape\), got \(5,\)"),
    (fl.MarginRankingLoss, lambda: (np.zeros(4), np.zeros(4), np.ones((1, 4))), ValueError, "target: expected 1 dimensions"),
    (fl.MSELoss, lambda: (np.zeros(4),), TypeError, r"MSELoss: expected 2 arrays \(input, target\), got 1"),
])
def test_bad_input(make, arrays, error, message):
    with pytest.raises(error, match=message):
        make()(*arrays())


@pytest.mark.parametrize("make, message", [
    (lambda: fl.MSELoss(reduction="avg"), "reduction: expected one of 'none', 'mean', 'sum', got 'avg'"),
    (lambda: fl.MSELoss(reduction="batchmean"), "reduction: expected one of 'none', 'mean', 'sum', got 'batchmean'"),
    (lambda: fl.SmoothL1Loss(beta=-1.0), "beta: expected a non-negative number, got -1.0"),
    (lambda: fl.HuberLoss(delta=0.0), "delta: expected a positive number, got 0.0"),
    (lambda: fl.SigmoidFocalLoss(gamma=-2.0), "gamma: expected a non-negative number, got -2.0"),
])
def test_bad_options(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_grad_output_errors():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"grad_output: expected a scalar for a reduced loss, got shape \(3, 2\)"):
        fl.MSELoss()(x, x, grad_output=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"grad_output: expected a shape that broadcasts to \(3, 2\), got \(4,\)"):
        fl.MSELoss(reduction="none")(x, x, grad_output=np.ones(4))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.lists(st.integers(1, 5), min_size=1, max_size=3))
def test_target_shapes_that_do_not_broadcast_are_rejected(input_shape, target_shape):
    x, y = np.zeros(input_shape), np.zeros(target_shape)
    try:
        fits = np.broadcast_shapes(x.shape, y.shape) == x.shape
    except ValueError:
        fits = False
    if fits:
        assert fl.MSELoss(reduction="none")(x, y).grad.shape == x.shape
    else:
        with pytest.raises(ValueError, match="target: expected a shape that broadcasts to"):
            fl.MSELoss()(x, y)


def test_device_arrays_need_a_gpu_and_cannot_mix_with_host_arrays():
    class FakeDeviceArray:
        __cuda_array_interface__ = {"shape": (3,), "typestr": "<f4", "data": (0, False), "version": 3}

    with pytest.raises(ValueError, match="arrays: expected all on the host or all on a CUDA device"):
        fl.MSELoss()(FakeDeviceArray(), np.zeros(3, np.float32))
    # no GPU here (CI never has one): the GPU backend says so, or that it is not installed
    with pytest.raises((RuntimeError, ImportError), match="CUDA"):
        fl.MSELoss()(FakeDeviceArray(), FakeDeviceArray())


# ---------------------------------------------------------------- determinism and threads

@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_identical_for_any_thread_count_and_placement(case, dtype):
    options, _, arrays = arrays_for(case, shape=(1201, 257), dtype=dtype, seed=3)  # 308657 elements
    results = []
    for threads in (1, 2, 4):
        with parallel(threads):
            results.append(case.criterion(**options)(*arrays))
    # the same numbers at another address (a copy at a different alignment)
    shifted = []
    for a in arrays:
        buf = np.empty(a.size + 3, a.dtype)[3:].reshape(a.shape)
        buf[...] = a
        shifted.append(buf)
    results.append(case.criterion(**options)(*shifted))
    first_loss, first_grads = results[0]
    for loss, grads in results[1:]:
        assert np.asarray(loss).tobytes() == np.asarray(first_loss).tobytes()
        for g, g0 in zip(grads if isinstance(grads, tuple) else (grads,),
                         first_grads if isinstance(first_grads, tuple) else (first_grads,)):
            assert g.tobytes() == g0.tobytes()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bitwise_identical_wherever_the_buffers_sit(case):
    """The vectoriser must not peel by alignment: the same numbers give the same bits for
    any address of the inputs and of the out= buffers."""
    options, _, arrays = arrays_for(case, shape=(3001, 7), dtype=np.float32, seed=5)
    crit = case.criterion(reduction="none", **options)
    results = set()
    for shift in range(0, 16, 3):
        placed = []
        for a in arrays:
            buf = np.empty(a.size + 16, a.dtype)[shift:shift + a.size].reshape(a.shape)
            buf[...] = a
            placed.append(buf)
        grads = crit(*arrays)[1]
        grads = grads if isinstance(grads, tuple) else (grads,)
        out = tuple(np.empty(g.size + 16, g.dtype)[15 - shift:15 - shift + g.size].reshape(g.shape) for g in grads)
        loss, got = crit(*placed, out=out if len(out) > 1 else out[0])
        got = got if isinstance(got, tuple) else (got,)
        results.add((loss.tobytes(),) + tuple(g.tobytes() for g in got))
    assert len(results) == 1


CORES = usable_cores()   # the cores this process may use (1 in a build without the worker pool)


def test_thread_settings():
    before = fl.get_num_threads()
    with fl.threads(1):
        assert fl.get_num_threads() == 1
        with fl.threads(CORES):
            assert fl.get_num_threads() == CORES
        assert fl.get_num_threads() == 1
    assert fl.get_num_threads() == before
    fl.set_num_threads(1)
    try:
        assert fl.get_num_threads() == 1
    finally:
        fl.set_num_threads(before)
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="n: expected a positive int"):
            fl.set_num_threads(bad)


def test_thread_counts_above_the_cores_are_capped():
    """More threads than usable cores are accepted, and get_num_threads shows the cap."""
    before = fl.get_num_threads()
    fl.set_num_threads(CORES + 5)
    try:
        assert fl.get_num_threads() == CORES
        with fl.threads(10 * CORES):
            assert fl.get_num_threads() == CORES
    finally:
        fl.set_num_threads(before)


def test_threadpoolctl_sees_and_limits_the_pool():
    import threadpoolctl
    before = fl.get_num_threads()
    found = [info for info in threadpoolctl.threadpool_info() if info["user_api"] == "fastloss"]
    assert len(found) == 1 and found[0]["num_threads"] == fl.get_num_threads()
    assert found[0]["filepath"].endswith(os.path.basename(pool.__file__))
    with threadpoolctl.threadpool_limits(1, user_api="fastloss"):
        assert fl.get_num_threads() == 1
    assert fl.get_num_threads() == before
    with threadpoolctl.threadpool_limits(1):   # every library's pool, ours included
        assert fl.get_num_threads() == 1


@pytest.mark.parametrize("env, expected", [
    ({"FASTLOSS_NUM_THREADS": "1", "OMP_NUM_THREADS": "5"}, "1"),
    ({"OMP_NUM_THREADS": "1"}, "1"),
    ({"FASTLOSS_NUM_THREADS": "999"}, str(CORES)),   # capped
    ({}, str(CORES)),
])
@pytest.mark.commands
def test_default_thread_count_from_the_environment(env, expected, tmp_path):
    clean = {k: v for k, v in os.environ.items() if k not in ("FASTLOSS_NUM_THREADS", "OMP_NUM_THREADS")}
    # the fastloss under test (installed or built in place), not the sources of the working directory
    clean["PYTHONPATH"] = os.path.dirname(os.path.dirname(fl.__file__))
    result = subprocess.run([sys.executable, "-c", "import fastloss; print(fastloss.get_num_threads())"],
                            env={**clean, **env}, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert result.stdout.strip() == expected


@pytest.mark.commands
def test_the_cpu_path_never_imports_numba(tmp_path):
    """The GPU backend (numba) is imported only when a device array arrives."""
    code = ("import sys, numpy as np, fastloss as fl; x = np.zeros((4, 3)); "
            "fl.MSELoss()(x, x); fl.CrossEntropyLoss()(x, np.zeros(4, int)); fl.CTCLoss(); "
            "print(any(m == 'numba' or m.startswith('numba.') for m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(fl.__file__))}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                            cwd=tmp_path)
    assert result.stdout.strip() == "False"


def test_threads_setting_is_per_python_thread():
    seen = {}

    def worker():
        seen["worker"] = fl.get_num_threads()

    with fl.threads(1):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert seen["worker"] == fl.get_num_threads()


def test_kernels_release_the_gil():
    """While a long kernel runs in one Python thread, another keeps running Python code."""
    x = RNG.standard_normal(8_000_000)
    y = (x > 0).astype(np.float64)
    crit = fl.BCEWithLogitsLoss()
    with fl.threads(1):
        start = time.perf_counter()
        crit(x, y)
        kernel_seconds = time.perf_counter() - start
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        done = threading.Event()

        def work():
            with fl.threads(1):
                crit(x, y)
            done.set()

        stamps = []
        t = threading.Thread(target=work)
        t.start()
        while not done.is_set():
            stamps.append(time.perf_counter())
        t.join()
    finally:
        sys.setswitchinterval(switch)
    largest_gap = max(np.diff(stamps), default=0.0)
    assert largest_gap < kernel_seconds / 3, (largest_gap, kernel_seconds)


# ---------------------------------------------------------------- memory

def test_forward_only_allocates_no_gradient_and_a_call_only_the_gradient():
    x, y = RNG.standard_normal((2, 1_000_000))
    fl.empty_cache()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fl.MSELoss().loss(x, y)
        loss_only = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        _, grad = fl.MSELoss()(x, y)
        call = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert loss_only < 64 * 1024                      # O(blocks) scratch, no gradient
    assert grad.nbytes <= call < grad.nbytes + 64 * 1024  # the gradient and O(blocks) scratch


def test_gradient_buffers_are_reused_after_they_are_freed():
    x, y = RNG.standard_normal((2, 500_000))
    fl.empty_cache()
    _, g = fl.MSELoss()(x, y)
    address = g.ctypes.data
    del g
    assert memory.cache_info()[0] == 1
    _, g2 = fl.MSELoss()(x, y)
    assert g2.ctypes.data == address and g2.flags.writeable and g2.flags.c_contiguous
    _, g3 = fl.MSELoss()(x, y)       # g2 still alive: a distinct buffer
    assert g3.ctypes.data != g2.ctypes.data
    fl.empty_cache()
    assert memory.cache_info()[:2] == (0, 0)


@pytest.mark.parametrize("shape", [(), (0,), (64, 10), (3, 0, 5), (1,) * 8, (1,) * 9, (1024, 256), (1024, 257),
                                   (np.int64(4), 5), (2 ** 70, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.dtype(">f4"), np.float16])
def test_empty_gives_what_numpy_gives(shape, dtype):
    # small arrays come from NumPy's C API, the others from np.empty or the cache: the same
    # shape, dtype and layout either way, and NumPy's error for an extent it refuses
    try:
        expected = np.empty(shape, dtype)
    except Exception as error:
        with pytest.raises(type(error)):
            memory.empty(shape, dtype)
        return
    got = memory.empty(shape, dtype)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert got.flags.c_contiguous and got.flags.writeable and got.flags.aligned


@pytest.mark.parametrize("shape", [(-1,), (2, -3), (2 ** 40, 2 ** 40)])
def test_empty_refuses_what_numpy_refuses(shape):
    with pytest.raises((ValueError, MemoryError)):
        memory.empty(shape, np.float32)


def test_loss_scalar_rounds_as_numpy():
    values = [0.0, -0.0, 1.234, -7.5e-40, 1e-46, 3.4028235677973366e38, 3.4028235e38 * (1 + 2 ** -25), 1e39,
              -1e300, np.inf, -np.inf, np.nan, 2.0 ** -149 * 1.5]
    for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
        for v in values:
            with np.errstate(over="ignore"):
                expected = dtype.type(v)
            got = memory.loss_scalar(v, dtype)
            assert type(got) is type(expected) and np.asarray(got).tobytes() == np.asarray(expected).tobytes(), v
    assert memory.loss_scalar(1.0, np.dtype(">f4")) is None            # not native: the general way
    assert memory.loss_scalar(1.0, np.dtype(np.float16)) is None
    assert memory.loss_scalar(1.0, np.float32) is None                  # a type, not a dtype


# ---------------------------------------------------------------- array-likes and functions

def test_array_likes_in_numpy_out():
    x = RNG.standard_normal((6, 5))
    y = RNG.standard_normal((6, 5))
    expected_loss, expected_grad = fl.MSELoss()(x, y)

    class DLPackOnly:
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kwargs):
            return self.a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    for xin, yin in [(x.tolist(), y.tolist()), (torch.tensor(x), torch.tensor(y)),
                     (DLPackOnly(x), DLPackOnly(y)), (memoryview(x), memoryview(y)),
                     (np.asfortranarray(x), y), (np.repeat(x, 2, axis=1)[:, ::2], y)]:
        loss, grad = fl.MSELoss()(xin, yin)
        assert type(grad) is np.ndarray and grad.flags.c_contiguous
        np.testing.assert_array_equal(grad, expected_grad)
        np.testing.assert_array_equal(loss, expected_loss)


def test_scalar_loss_type_and_empty_inputs():
    loss = fl.MSELoss()(np.ones(3, np.float32), np.zeros(3, np.float32)).loss
    assert isinstance(loss, np.float32) and loss == 1.0
    empty = np.zeros((0, 4))
    assert np.isnan(fl.MSELoss()(empty, empty).loss)
    assert fl.MSELoss(reduction="sum")(empty, empty).loss == 0.0
    loss, grad = fl.MSELoss(reduction="none")(empty, empty)
    assert loss.shape == grad.shape == (0, 4)


def test_functional_api_matches_the_classes():
    from fastloss.losses import FUNCTIONAL_NAMES
    assert set(FUNCTIONAL_NAMES) >= {c.criterion for c in CASES}
    for case in {c.criterion: c for c in CASES}.values():
        criterion, name = case.criterion, FUNCTIONAL_NAMES[case.criterion]
        options, _, arrays = arrays_for(case)
        loss = getattr(fl.functional, name)(*arrays, reduction="sum", **options)
        both = getattr(fl.functional, name + "_and_grad")(*arrays, reduction="sum", **options)
        expected = criterion(reduction="sum", **options)(*arrays)
        np.testing.assert_array_equal(loss, expected.loss)
        np.testing.assert_array_equal(both.loss, expected.loss)
        for g, e in zip(both.grad if isinstance(both.grad, tuple) else (both.grad,),
                        expected.grad if isinstance(expected.grad, tuple) else (expected.grad,)):
            np.testing.assert_array_equal(g, e)


def test_repr_shows_the_options():
    assert repr(fl.HuberLoss(delta=0.5)) == "HuberLoss(reduction='mean', delta=0.5)"


@pytest.mark.parametrize("make", [fl.L1Loss, fl.MSELoss, lambda: fl.SmoothL1Loss(beta=0.5), fl.HuberLoss, fl.SoftMarginLoss,
                                  fl.BCEWithLogitsLoss, fl.PoissonNLLLoss, lambda: fl.KLDivLoss(reduction="batchmean"),
                                  fl.HingeEmbeddingLoss, fl.SigmoidFocalLoss, lambda: fl.MSELoss(reduction="sum")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fast_call_gives_the_general_paths_bits(make, dtype):
    """crit(x, y) on plain NumPy arrays skips the general checks: same kernel, same bits
    (grad_output=1.0 takes the general path with the same scale)."""
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((2, 70000)).astype(dtype)   # a parallel size
    x[5], y[7] = np.nan, np.inf
    crit = make()
    fast, general = crit(x, y), crit(x, y, grad_output=1.0)
    assert fast.loss.tobytes() == general.loss.tobytes() and fast.grad.tobytes() == general.grad.tobytes()
    out = np.empty_like(x)
    loss, grad = crit(x, y, out=out)
    assert grad is out and loss.tobytes() == general.loss.tobytes() and out.tobytes() == general.grad.tobytes()


@pytest.mark.parametrize("make", [fl.GaussianNLLLoss, lambda: fl.GaussianNLLLoss(full=True, reduction="sum"),
                                  lambda: fl.MarginRankingLoss(margin=0.2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fast_call_with_two_gradients_gives_the_general_paths_bits(make, dtype):
    rng = np.random.default_rng(7)
    x, y, z = rng.standard_normal((3, 70000)).astype(dtype)
    third = np.abs(z) if isinstance(make(), fl.GaussianNLLLoss) else np.sign(z)
    crit = make()
    fast, general = crit(x, y, third), crit(x, y, third, grad_output=1.0)
    assert fast.loss.tobytes() == general.loss.tobytes()
    assert all(f.tobytes() == g.tobytes() for f, g in zip(fast.grad, general.grad))
    out = (np.empty_like(x), np.empty_like(x))
    _, grads = crit(x, y, third, out=out)
    assert grads[0] is out[0] and grads[1] is out[1] and out[1].tobytes() == general.grad[1].tobytes()


def test_the_kernels_read_the_option_tuples_in_their_order():
    """The CPU kernels read ClassOptions and PointOptions by position: their fields must stay in
    the order the kernels name."""
    from fastloss._spec import ClassOptions, PointOptions
    from fastloss.losses.pointwise import _kernel as pointwise
    from fastloss.losses.softmax import _kernel as softmax
    assert ClassOptions._fields == softmax.OPTION_FIELDS
    assert PointOptions._fields == pointwise.OPTION_FIELDS


def test_only_plain_operands_take_the_fast_call():
    """plain_operands says True only for aligned, C-contiguous, native float32/float64 ndarrays
    of one shape and dtype, and out None or writeable such arrays apart from every input and
    each other; every other call goes the general way, which takes it with the same results
    or names what is wrong."""
    from fastloss.losses.pointwise import _kernel
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((2, 6, 4))
    crit = fl.MSELoss()
    expected = crit(x, y, grad_output=1.0)
    assert _kernel.plain_operands((x, y), None, 1) and _kernel.plain_operands((x, y), np.empty_like(x), 1)
    readonly = x.copy()
    readonly.flags.writeable = False
    assert _kernel.plain_operands((readonly, y), None, 1)   # (inputs are only read)
    taken = [(x.view(np.matrix).reshape(6, 4), y), (np.asfortranarray(x), y), (x, y.astype(">f8")),
             (x, y.astype(np.float32))]
    for a, b in taken:
        assert not _kernel.plain_operands((a, b), None, 1)
        loss, grad = crit(a, b)
        np.testing.assert_allclose(loss, expected.loss, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(grad).reshape(6, 4), expected.grad, rtol=1e-6)
    row = crit(x, y[:1].repeat(6, axis=0), grad_output=1.0)   # a broadcast target: the general path
    assert not _kernel.plain_operands((x, y[0]), None, 1)
    assert crit(x, y[0]).loss == row.loss
    assert not _kernel.plain_operands((x.astype(">f8"), y), None, 1)
    with pytest.raises(TypeError, match="input: expected a float32 or float64 array, got dtype >f8"):
        crit(x.astype(">f8"), y)
    assert not _kernel.plain_operands((x[:0], y[:0]), None, 1)   # empty: the general path's nan
    assert np.isnan(crit(x[:0], y[:0]).loss)
    shared = np.empty(3 * x.size)
    x_in, y_in = shared[:x.size].reshape(6, 4), shared[x.size:2 * x.size].reshape(6, 4)
    x_in[:], y_in[:] = x, y
    refused = [(x, y, np.empty_like(x, np.float32), "dtype float64"), (x, y, np.empty((4, 6)), r"shape \(6, 4\)"),
               (x, y, readonly, "writeable"), (x, y, np.asfortranarray(np.empty_like(x)), "C-contiguous"),
               (x, y, x, "overlaps input"), (x_in, y_in, shared[x.size + 1:2 * x.size + 1].reshape(6, 4),
                                              "overlaps target")]
    for a, b, out, match in refused:
        assert not _kernel.plain_operands((a, b), out, 1)
        with pytest.raises((TypeError, ValueError), match=match):
            crit(a, b, out=out)
    # two gradients (GaussianNLLLoss: input and var): a tuple of two, apart from each other too
    var = np.abs(y) + 0.1
    gauss = fl.GaussianNLLLoss()
    both = np.empty((2, 6, 4))
    assert _kernel.plain_operands((x, y, var), (both[0], both[1]), 2)
    for out in [both[0], (both[0], both[0]), (both[0],), (both[0], None)]:
        assert not _kernel.plain_operands((x, y, var), out, 2)
    with pytest.raises(ValueError, match="overlaps"):
        gauss(x, y, var, out=(both[0], both[0]))


def test_the_fast_call_still_checks_bce_input():
    with pytest.raises(ValueError, match=r"input: expected all elements between 0 and 1, got 1.5 at position \(1,\)"):
        fl.BCELoss()(np.array([0.5, 1.5]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="var: expected non-negative entries"):
        fl.GaussianNLLLoss()(np.zeros(3), np.zeros(3), np.array([1.0, -1.0, 1.0]))


# ---------------------------------------------------------------- every criterion (tests/cases.py)
def _grads(grad):
    return grad if isinstance(grad, tuple) else (grad,)


def _registry(case, reduction="sum", dtype=np.float64):
    crit, arrays, _ = cases.build(case, reduction, dtype)
    return crit, arrays


@pytest.mark.parametrize("case", cases.CASES, ids=cases.IDS)
def test_every_criterion_writes_out_and_scales_by_grad_output(case):
    crit, arrays = _registry(case)
    loss, grad = crit(*arrays)
    assert np.isfinite(loss) and loss.dtype == np.float64
    bufs = tuple(None if g is None else np.full_like(g, np.nan) for g in _grads(grad))
    loss_out, grad_out = crit(*arrays, out=bufs if isinstance(grad, tuple) else bufs[0])
    assert loss_out == loss
    for g, g_out, buf in zip(_grads(grad), _grads(grad_out), bufs):
        if g is not None:
            assert g_out is buf   # written in place and returned
            np.testing.assert_array_equal(g_out, g)
    _, grad_twice = crit(*arrays, grad_output=np.float64(2.0))
    for g, g2 in zip(_grads(grad), _grads(grad_twice)):
        if g is not None:
            np.testing.assert_allclose(g2, 2 * g, rtol=1e-12, atol=1e-300)
    assert crit.loss(*arrays) == loss


@pytest.mark.parametrize("case", cases.CASES, ids=cases.IDS)
def test_every_criterion_none_reduction_with_grad_output_of_ones(case):
    crit, arrays = _registry(case, "none")
    loss, grad = crit(*arrays)
    _, grad_ones = crit(*arrays, grad_output=np.ones(np.shape(loss)))
    for g, g1 in zip(_grads(grad), _grads(grad_ones)):
        if g is not None:
            np.testing.assert_array_equal(g1, g)
    total = fl.__dict__[type(crit).__name__].__new__(type(crit))
    total.__dict__.update(crit.__dict__, reduction="sum")
    np.testing.assert_allclose(np.sum(loss, dtype=np.float64), total.loss(*arrays), rtol=1e-12)


@pytest.mark.parametrize("case", cases.CASES, ids=cases.IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_criterion_is_bitwise_identical_for_any_thread_count(case, dtype):
    crit, arrays = _registry(case, "mean", dtype)
    with fl.threads(1):
        one = crit(*arrays)
    with parallel(2):
        two = crit(*arrays)
    assert one.loss.tobytes() == two.loss.tobytes()
    for a, b in zip(_grads(one.grad), _grads(two.grad)):
        assert (a is None) == (b is None) and (a is None or a.tobytes() == b.tobytes())


@pytest.mark.parametrize("case", cases.CASES, ids=cases.IDS)
def test_every_criterion_names_its_arguments_in_errors(case):
    crit, arrays = _registry(case)
    with pytest.raises(TypeError, match=f"expected {len(crit.arguments)} arrays|missing 2 required positional"):
        crit(*arrays[:1])
    first = crit.arguments[0]
    with pytest.raises(TypeError, match=rf"^{first}: expected a float32 or float64 array, got dtype int64"):
        crit(np.ones(np.shape(arrays[0]), np.int64), *arrays[1:])
    shape = np.shape(arrays[0])
    out = tuple(None if g is None else np.zeros(shape + (2,)) for g in _grads(crit(*arrays).grad))
    with pytest.raises(ValueError, match=rf"out \({first}\): expected shape"):
        crit(*arrays, out=out if len(crit.differentiable) > 1 else out[0])


def _empty(crit, arrays):
    """The arrays with no rows: each sliced to 0 along its row axis where it has the input's rows."""
    rows = np.shape(arrays[0])[crit.row_axes[0]]
    sliced = []
    for a, axis in zip(arrays, crit.row_axes):
        if isinstance(a, np.ndarray) and axis is not None and a.ndim > axis and a.shape[axis] == rows:
            a = np.take(a, np.arange(0), axis=axis)
        elif isinstance(a, np.ndarray) and a.ndim == 1 and len(arrays) == 4 and axis == 0:
            a = a[:0]   # CTC's lengths (and its concatenated targets)
        sliced.append(a)
    return sliced


@pytest.mark.parametrize("case", [c for c in cases.CASES if np.ndim(c[2](np.random.default_rng(0), None)[0]) >= 2],
                         ids=[c[0] for c in cases.CASES if np.ndim(c[2](np.random.default_rng(0), None)[0]) >= 2])
def test_every_criterion_takes_an_empty_batch(case):
    crit, arrays = _registry(case)
    empty = _empty(crit, arrays)
    loss, grad = crit(*empty)
    assert loss == 0   # 'sum' over no rows
    for g, name in zip(_grads(grad), crit.differentiable):
        a = empty[crit.arguments.index(name)]
        if g is not None and isinstance(a, np.ndarray):
            assert g.shape == a.shape and not np.any(g)
    mean = crit._with_reduction("mean")
    if not isinstance(crit, fl.DiceLoss):   # (Dice's mean is over the classes, which remain)
        assert np.isnan(mean.loss(*empty))


@pytest.mark.parametrize("name", sorted(cases.CRITERIA))
def test_every_criterion_documents_its_arguments_shapes_result_and_references(name):
    doc = getattr(fl, name).__doc__
    for section in ("Args:", "Shapes:", "Returns:", "References:"):
        assert f"\n    {section}\n" in doc, f"{name}: no {section} section"


def test_the_registry_covers_every_criterion():
    public = {getattr(fl, name).__name__ for name in fl.__all__ if isinstance(getattr(fl, name), type)
              and issubclass(getattr(fl, name), fl.Criterion) and name != "Criterion"}
    assert cases.CRITERIA == public   # (an alias such as QuantileLoss counts as its class)
    assert fl.QuantileLoss is fl.PinballLoss
    import fuzz
    assert cases.CRITERIA <= set(fuzz.REGISTRY), "tests/fuzz.py lacks a criterion"


def test_an_option_set_after_construction_takes_effect():
    x, y = RNG.standard_normal(64), RNG.standard_normal(64)
    crit = fl.SmoothL1Loss(beta=1.0)
    crit(x, y)
    crit.beta = 0.25
    for call in (lambda c: c(x, y), lambda c: c(x, y, grad_output=2.0), lambda c: c._with_reduction("none")(x, y)):
        ours, ref = call(crit), call(fl.SmoothL1Loss(beta=0.25))
        np.testing.assert_array_equal(ours.loss, ref.loss)
        np.testing.assert_array_equal(ours.grad, ref.grad)
    crit.beta = 0.0   # (another kernel: torch's l1_loss)
    for call in (lambda c: c(x, y), lambda c: c(x, y, grad_output=2.0), lambda c: c._with_reduction("none")(x, y)):
        ours, ref = call(crit), call(fl.SmoothL1Loss(beta=0.0))
        np.testing.assert_array_equal(ours.loss, ref.loss)
        np.testing.assert_array_equal(ours.grad, ref.grad)


def test_only_plain_class_rows_take_the_plain_call():
    """plain_class_rows says (N, C, kept) only for an aligned, writeable, C-contiguous, native
    float32/float64 (N, C) ndarray with (N,) int64 labels, all valid; every other call goes the
    general way, with the same results."""
    from fastloss.losses.softmax import _kernel
    x, t = RNG.standard_normal((6, 4)), np.array([0, 3, -100, 1, 2, 2])
    assert _kernel.plain_class_rows(x, t, -100) == (6, 4, 5)
    assert _kernel.plain_class_rows(x.astype(np.float32), t, None) is None   # -100 is no class then
    readonly = x.copy()
    readonly.flags.writeable = False
    others = [(x.view(np.matrix), t), (np.asfortranarray(x), t), (x[:, ::2], t), (x.astype(">f8"), t),
              (readonly, t), (x.astype(np.float16), t), (x[None], t), (x, t.astype(np.int32)), (x, t[:5]),
              (x, t.astype(">i8")), (x, np.where(t == 3, 4, t))]
    for a, b in others:
        assert _kernel.plain_class_rows(a, b, -100) is None
    crit = fl.CrossEntropyLoss()
    expected = crit(x, t)
    for a, b in [others[1], others[4], others[7], others[9]]:
        loss, grad = crit(a, b)
        np.testing.assert_array_equal(loss, expected.loss)
        np.testing.assert_array_equal(grad, expected.grad)
    # out=: a plain buffer of x's shape and dtype sharing no byte with x or t; the general path
    # names what is wrong with any other
    assert _kernel.plain_class_rows(x, t, -100, np.empty_like(x)) == (6, 4, 5)
    shared = np.empty(2 * x.size + t.size)   # x, t, then room for an out over t's end
    x_in, t_in = shared[:x.size].reshape(6, 4), shared[x.size:x.size + t.size].view(np.int64)
    x_in[:], t_in[:] = x, t
    contiguous = "a writeable, aligned C-contiguous array"
    refused = [(x, t, np.asfortranarray(np.empty_like(x)), contiguous), (x, t, np.empty((12, 4))[::2], contiguous),
               (x, t, readonly, contiguous), (x, t, np.empty_like(x, np.float32), "dtype float64"),
               (x, t, np.empty((4, 6)), r"shape \(6, 4\)"), (x, t, x, "overlaps input"),
               (x_in, t_in, shared[1:1 + x.size].reshape(6, 4), "overlaps input"),
               (x_in, t_in, shared[x.size + 1:2 * x.size + 1].reshape(6, 4), "overlaps target")]
    for a, b, out, match in refused:
        assert _kernel.plain_class_rows(a, b, -100, out) is None
        with pytest.raises((TypeError, ValueError), match=match):
            crit(a, b, out=out)


def assert_plain_call_is_the_general_one(crit, x, t):
    """crit(x, t), crit.loss, out= and grad_output= give the general path's bits, 2 threads."""
    with parallel(2):
        general = crit._dispatch((x, t), True, None, None)
        fast = crit(x, t)
        assert fast.loss.tobytes() == general.loss.tobytes() and fast.grad.tobytes() == general.grad.tobytes()
        assert crit.loss(x, t).tobytes() == general.loss.tobytes()
        out = np.empty_like(x)
        assert crit(x, t, out=out).grad is out and out.tobytes() == general.grad.tobytes()
        g = np.full(np.shape(general.loss), 2.0)
        assert crit(x, t, grad_output=g).grad.tobytes() == crit._dispatch((x, t), True, None, g).grad.tobytes()


@pytest.mark.parametrize("make", [fl.MultiMarginLoss, lambda: fl.MultiMarginLoss(p=2, margin=0.5, reduction="sum"),
                                  lambda: fl.MultiMarginLoss(reduction="none")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [64, 9000])
def test_the_multi_margin_plain_call_gives_the_general_paths_bits(make, dtype, rows):
    """MultiMarginLoss's plain call (plain_class_rows, every label a class): the general path's
    spec and bits, with out= and grad_output; a bad label or an overlapping out goes the
    general way, which names it."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((rows, 10)).astype(dtype)
    x[3, 4] = np.nan
    t = rng.integers(0, 10, rows)
    crit = make()
    assert_plain_call_is_the_general_one(crit, x, t)
    t[5] = -100
    with pytest.raises(IndexError, match=r"target: expected class indices in \[0, 10\), got -100 at position \(5,\)"):
        crit(x, t)
    with pytest.raises(ValueError, match="overlaps input"):
        crit(x, np.abs(t), out=x)


@pytest.mark.parametrize("make", [fl.CrossEntropyLoss, lambda: fl.CrossEntropyLoss(label_smoothing=0.1, z_loss=1e-3),
                                  lambda: fl.CrossEntropyLoss(softcap=3.0, reduction="sum"), fl.NLLLoss,
                                  lambda: fl.SoftmaxFocalLoss(gamma=1.5), lambda: fl.CrossEntropyLoss(reduction="none")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [64, 9000])   # one block, and enough for the pool
def test_the_softmax_plain_call_gives_the_general_paths_bits(make, dtype, rows):
    """crit(x, t) on a plain (N, C) ndarray and int64 labels builds its spec without the general
    checks: the same spec, kernel and bits as the general path, with out= and grad_output too."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((rows, 10)).astype(dtype)
    x[3, 4] = np.nan
    t = rng.integers(0, 10, rows)
    t[5] = -100
    crit = make()
    assert_plain_call_is_the_general_one(crit, x, t)
    with pytest.raises(IndexError, match=r"target: expected class indices in \[0, 10\) or ignore_index -100, got 10"):
        crit(x, np.full(rows, 10))   # (the plain call leaves a bad index to the general path, which names it)
    with pytest.raises(ValueError, match="overlaps input"):
        crit(x, t, out=x)
    with pytest.raises(ValueError, match=rf"target: expected shape \({rows},\), got \(\)"):
        crit(x, np.array(1))   # a 0-d label beside an (N, C) input: the general path's message
