"""The GPU backend against the CPU path, which tests/ checks against torch float64: every
family's kernels with their options and reductions, out=, grad_output=, the errors, and
repeatability. In CI it runs under numba's CUDA simulator on small inputs:

    NUMBA_ENABLE_CUDASIM=1 pytest tests_gpu

On a machine with a GPU, plain ``pytest tests_gpu`` runs the same on the device and adds the
interop with torch CUDA tensors and CuPy arrays and the parity with torch CUDA itself
(test_torch_cuda.py). The simulator interprets the kernels and never meets numba's CUDA
compiler: compile_check.py compiles every kernel these tests launch, for their argument types,
to PTX for sm_90 (no GPU needed; ten minutes of CPU on a 2-core machine, so it runs in
tools/full_check.sh rather than in CI's budget)."""
import pathlib
import sys

import ml_dtypes
import numpy as np
import pytest
from numba import config, cuda

import fastloss as fl

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))   # the case registry
import cases  # noqa: E402
from cases import CASES, IDS, S, build, dev, host, labels, normal, unit  # noqa: E402

SIMULATOR = bool(config.ENABLE_CUDASIM)
if not SIMULATOR and not cuda.is_available():
    pytest.skip("no GPU and NUMBA_ENABLE_CUDASIM is not set", allow_module_level=True)

RTOL = {np.float32: 2e-5, np.float64: 1e-11}
cases.TO_DEVICE = cuda.to_device


def assert_matches(ours, reference, dtype, what):
    ours, reference = host(ours), np.asarray(reference)
    assert ours.shape == reference.shape, what
    scale = max(1.0, float(np.nanmax(np.abs(reference), initial=0.0)))
    np.testing.assert_allclose(ours, reference, rtol=RTOL[dtype], atol=RTOL[dtype] * scale, err_msg=what)


def grads(g):
    return g if isinstance(g, tuple) else (g,)


@pytest.mark.parametrize("case", CASES, ids=IDS)
# each reduction once ('mean' in float32: its divisor and the float32 kernels together; the
# simulator runs every thread in Python, and a fourth variant was a minute of CI)
@pytest.mark.parametrize("reduction,dtype", [("none", np.float64), ("sum", np.float64), ("mean", np.float32)])
def test_matches_the_cpu_path(case, reduction, dtype):
    crit, arrays, on_device = build(case, reduction, dtype)
    expected, ours = crit(*arrays), crit(*on_device)
    assert_matches(ours.loss, expected.loss, dtype, "loss")
    assert host(ours.loss).dtype == dtype
    for g, e in zip(grads(ours.grad), grads(expected.grad)):
        assert (g is None) == (e is None)
        if g is not None:
            assert type(g) is type(on_device[0]) and g.dtype == dtype
            assert_matches(g, e, dtype, "gradient")
    assert_matches(crit.loss(*on_device), expected.loss, dtype, "loss()")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grad_output_and_out(case):
    """grad_output as a device array (per row for 'none', one value for 'mean') and as a
    number, gradients written into the caller's out= buffers and returned as themselves."""
    crit, arrays, on_device = build(case, "none", np.float64, seed=1)
    loss_shape = np.shape(crit(*arrays).loss)
    g_rows = np.random.default_rng(2).uniform(0.5, 1.5, loss_shape)
    expected = crit(*arrays, grad_output=g_rows)
    outs = tuple(None if e is None else dev(np.full(e.shape, np.nan)) for e in grads(expected.grad))
    ours = crit(*on_device, grad_output=dev(g_rows), out=outs if len(outs) > 1 else outs[0])
    for g, o, e in zip(grads(ours.grad), outs, grads(expected.grad)):
        assert g is o
        if e is not None:
            assert_matches(g, e, np.float64, "gradient with grad_output (rows)")
    mean = crit._with_reduction("mean")
    expected = mean(*arrays, grad_output=2.5)
    for go in (2.5, dev(np.array(2.5))):
        for g, e in zip(grads(mean(*on_device, grad_output=go).grad), grads(expected.grad)):
            if e is not None:
                assert_matches(g, e, np.float64, "gradient with grad_output (scalar)")


@pytest.mark.parametrize("case", CASES[::4], ids=IDS[::4])
def test_repeatable_to_the_bit(case):
    crit, _, on_device = build(case, "mean", np.float32)
    first, second = crit(*on_device), crit(*on_device)
    assert host(first.loss).tobytes() == host(second.loss).tobytes()
    for a, b in zip(grads(first.grad), grads(second.grad)):
        if a is not None:
            assert host(a).tobytes() == host(b).tobytes()


def test_results_stay_on_the_device_as_zero_d_arrays():
    x, y = dev(np.arange(6.0)), dev(np.ones(6))
    loss, grad = fl.MSELoss()(x, y)
    assert loss.shape == () and type(loss) is type(x) and type(grad) is type(x)
    assert host(loss) == np.mean((np.arange(6.0) - 1) ** 2)


def test_empty_input_gives_nan_mean_and_zero_sum():
    x = dev(np.zeros((0, 3)))
    assert np.isnan(host(fl.MSELoss()(x, x).loss))
    assert host(fl.L1Loss(reduction="sum")(x, x).loss) == 0


# one case of each criterion (the float16 path is the same for all: widen, the float32 call, narrow)
FIRST_OF_EACH = [i for i, c in enumerate(CASES) if [type(d[1]) for d in CASES].index(type(c[1])) == i]


@pytest.mark.parametrize("case,reduction", [(CASES[i], "none" if k % 2 else "mean") for k, i in enumerate(FIRST_OF_EACH)],
                         ids=[f"{IDS[i]}-{'none' if k % 2 else 'mean'}" for k, i in enumerate(FIRST_OF_EACH)])
def test_float16_device_arrays_are_the_float32_call_narrowed(case, reduction):
    """float16 device arrays (every float array of the call, grad_output too): widened on the
    device, the float32 kernels, results narrowed to float16 on the device: the float32 device
    call on the same values, narrowed, bitwise; a float32 out= is written as the float32 call
    writes it, a float16 one with the narrowed gradient. Every criterion, 'none' or 'mean'."""
    crit, arrays, _ = build(case, reduction, np.float32)
    if reduction not in crit.reductions:
        return   # (DiceLoss's 'none' is per class: covered by its 'mean')
    half = [a.astype(np.float16) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in arrays]
    names = crit.arguments
    kept = [a is None or isinstance(a, float) or name in cases.HOST_ARGUMENTS for a, name in zip(half, names)]
    on_device = [a if keep else dev(a) for a, keep in zip(half, kept)]
    wide = [a if keep else dev(a.astype(np.float32) if a.dtype == np.float16 else a) for a, keep in zip(half, kept)]
    go = None
    if reduction == "none":
        go = np.random.default_rng(3).uniform(0.5, 1.5, np.shape(host(crit(*wide).loss))).astype(np.float16)
    ref = crit(*wide, grad_output=None if go is None else dev(go.astype(np.float32)))
    ours = crit(*on_device, grad_output=None if go is None else dev(go))
    assert host(ours.loss).dtype == np.float16
    assert host(ours.loss).tobytes() == host(ref.loss).astype(np.float16).tobytes()
    for g, e in zip(grads(ours.grad), grads(ref.grad)):
        assert (g is None) == (e is None)
        if g is not None:
            assert host(g).dtype == np.float16 and host(g).tobytes() == host(e).astype(np.float16).tobytes()
    outs = tuple(None if e is None else dev(np.full(e.shape, np.nan, np.float16 if i % 2 else np.float32))
                 for i, e in enumerate(grads(ref.grad)))
    placed = crit(*on_device, grad_output=None if go is None else dev(go), out=outs if len(outs) > 1 else outs[0]).grad
    for g, o, e in zip(grads(placed), outs, grads(ref.grad)):
        assert g is o
        if e is not None:
            assert host(g).tobytes() == host(e).astype(host(o).dtype).tobytes()


def test_float16_hessians_are_the_float32_ones_narrowed():
    r = np.random.default_rng(4)
    x, t, y = r.standard_normal((9, 6)).astype(np.float16), r.integers(0, 6, 9), r.random((9, 6)).astype(np.float16)
    for crit, args in [(fl.CrossEntropyLoss(label_smoothing=0.1), [x, t]), (fl.BCEWithLogitsLoss(), [x, y])]:
        ours = crit.grad_hess(*[dev(a) for a in args])
        ref = crit.grad_hess(*[dev(a.astype(np.float32) if a.dtype == np.float16 else a) for a in args])
        for a, b in zip(ours, ref):
            assert host(a).dtype == np.float16 and host(a).tobytes() == host(b).astype(np.float16).tobytes()


BAD = [
    (lambda: fl.MSELoss()(dev(np.zeros(3)), np.zeros(3)), ValueError, "all on the host or all on a CUDA device"),
    (lambda: fl.MSELoss()(dev(np.zeros(3, np.int64)), dev(np.zeros(3))), TypeError, "input: expected a float32 or float64"),
    # (allocated on the device: numba cannot copy an ml_dtypes array there, its buffer has no format)
    (lambda: fl.MSELoss()(cuda.device_array(3, ml_dtypes.bfloat16), cuda.device_array(3, ml_dtypes.bfloat16)), TypeError,
     r"input: expected a float16, float32 or float64 array on the GPU \(bfloat16 runs on the host only"),
    (lambda: fl.MSELoss()(dev(np.zeros(3)), dev(np.zeros(4))), ValueError, "target: expected a shape that broadcasts"),
    (lambda: fl.MSELoss()(dev(np.zeros(3)), dev(np.zeros(3)), out=dev(np.zeros(4))), ValueError, r"out \(input\): expected shape"),
    (lambda: fl.MSELoss()(dev(np.zeros(3)), dev(np.zeros(3)), out=dev(np.zeros(3, np.float32))), TypeError, "dtype float64"),
    (lambda: fl.BCELoss()(dev(np.array([0.5, 1.5])), dev(np.zeros(2))), ValueError, "input: expected all elements between 0 and 1"),
    (lambda: fl.GaussianNLLLoss()(dev(np.zeros(2)), dev(np.zeros(2)), dev(np.array([1.0, -1.0]))), ValueError, "var: expected non-negative"),
    (lambda: fl.CrossEntropyLoss()(dev(np.zeros((2, 3))), dev(np.array([0, 3]))), IndexError, r"target: expected class indices in \[0, 3\)"),
    (lambda: fl.SoftmaxFocalLoss()(dev(np.zeros((2, 3))), dev(np.zeros((2, 3)))), TypeError, "target: expected class indices"),
    (lambda: fl.TripletMarginLoss()(dev(np.zeros((2, 3))), dev(np.zeros((2, 3))), dev(np.zeros((2, 4)))), ValueError, "negative: expected shape"),
    (lambda: fl.CTCLoss()(dev(np.zeros((4, 1, 3))), dev(np.array([[1, 0]])), [4], [2]), ValueError, "targets: expected labels"),
    (lambda: fl.MultiMarginLoss()(dev(np.zeros((2, 3))), dev(np.array([0, -1]))), IndexError, r"target: expected class indices in \[0, 3\)"),
    (lambda: fl.MultiLabelMarginLoss()(dev(np.zeros((2, 3))), dev(np.array([[0, -1, 0], [1, 3, -1]]))), IndexError,
     r"got 3 at position \(1, 1\)"),
    (lambda: fl.MultiLabelSoftMarginLoss()(dev(np.zeros((2, 3))), dev(np.zeros((2, 4)))), ValueError, "target: expected shape"),
    (lambda: fl.DiceLoss("binary")(dev(np.zeros(())), dev(np.zeros(()))), ValueError, r"expected shape \(N, \*\) or \(N, 1, \*\)"),
    (lambda: fl.DiceLoss("multiclass")(dev(np.zeros((2, 3, 4))), dev(np.full((2, 4), 3))), IndexError, "class indices in"),
    (lambda: fl.LinearCrossEntropyLoss()(dev(np.zeros((2, 3))), dev(np.zeros((4, 2))), dev(np.array([0, 1]))), ValueError,
     r"linear_weight: expected shape \(C, 3\)"),
    (lambda: fl.LinearCrossEntropyLoss()(dev(np.zeros((2, 3))), dev(np.zeros((4, 3), np.float32)), dev(np.array([0, 1]))),
     TypeError, "linear_weight: expected dtype float64"),
    (lambda: fl.NTXentLoss()(dev(np.zeros((2, 3))), dev(np.zeros((3, 3)))), ValueError, r"z2: expected shape \(2, 3\)"),
    (lambda: fl.MSELoss().partial(dev(np.zeros(3)), dev(np.zeros(3))), NotImplementedError, "partial states are for host arrays"),
    (lambda: fl.CrossEntropyLoss(softcap=2.0).grad_hess(dev(np.zeros((2, 3))), dev(np.array([0, 1]))), NotImplementedError,
     "no hessian with softcap"),
]


@pytest.mark.parametrize("call,error,message", BAD)
def test_bad_input_is_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_nothing_is_written_on_a_bad_target():
    out = dev(np.full((2, 3), 7.0))
    with pytest.raises(IndexError):
        fl.CrossEntropyLoss()(dev(np.zeros((2, 3))), dev(np.array([0, 5])), out=out)
    assert (host(out) == 7.0).all()


HESSIANS = [   # (criterion, arrays(rng)): every kernel with a hessian mode
    (fl.MSELoss(), lambda r: [normal(r, S), normal(r, S)]),
    (fl.BCEWithLogitsLoss(pos_weight=np.linspace(1, 2, 5)), lambda r: [normal(r, S), unit(r, S)]),
    (fl.HuberLoss(reduction="sum"), lambda r: [normal(r, S), normal(r, S)]),
    (fl.CrossEntropyLoss(weight=np.linspace(0.5, 2, 5), label_smoothing=0.1, z_loss=0.01),
     lambda r: [normal(r, (6, 5)), labels(r, (6,), 5)]),
    (fl.CrossEntropyLoss(reduction="sum"), lambda r: [normal(r, (3, 5, 2)), np.moveaxis(r.dirichlet(np.ones(5), (3, 2)), -1, 1)]),
    (fl.SoftmaxFocalLoss(gamma=1.5, reduction="none"), lambda r: [normal(r, (6, 5)), labels(r, (6,), 5)]),
]


@pytest.mark.parametrize("crit,make", HESSIANS, ids=[type(c).__name__ for c, _ in HESSIANS])
def test_hessian_matches_the_cpu_path(crit, make):
    arrays = make(np.random.default_rng(3))
    expected, ours = crit.grad_hess(*arrays), crit.grad_hess(*map(dev, arrays))
    assert type(ours.hess) is type(dev(arrays[0]))
    assert_matches(ours.grad, expected.grad, np.float64, "grad")
    assert_matches(ours.hess, expected.hess, np.float64, "hess")


# past several grid strides (the simulator's grid is 3 blocks of 4 threads: 12 apart) and a
# tail of 7: each thread's elements in order, broadcast operands read by the plan
LONG = 4 * 12 * 2 + 7
STRIDED = [
    (fl.MSELoss(reduction="sum"), lambda r: [normal(r, (LONG,)), normal(r, (LONG,))]),
    (fl.GaussianNLLLoss(reduction="none"), lambda r: [normal(r, (LONG,)), normal(r, (LONG,)), unit(r, (LONG,)) + 0.5]),
    (fl.BCEWithLogitsLoss(pos_weight=np.array([2.0])), lambda r: [normal(r, (LONG, 1)), unit(r, (LONG, 1))]),
]


@pytest.mark.parametrize("crit,make", STRIDED, ids=[type(c).__name__ for c, _ in STRIDED])
def test_the_pointwise_loop_over_many_strides(crit, make):
    arrays = make(np.random.default_rng(4))
    expected, ours = crit(*arrays), crit(*map(dev, arrays))
    assert_matches(ours.loss, expected.loss, np.float64, "loss")
    for a, b in zip(grads(ours.grad), grads(expected.grad)):
        assert_matches(a, b, np.float64, "grad")
    if isinstance(crit, fl.BCEWithLogitsLoss):
        expected, ours = crit.grad_hess(*arrays), crit.grad_hess(*map(dev, arrays))
        assert_matches(ours.hess, expected.hess, np.float64, "hess")


def test_a_numba_cuda_that_cannot_run_beside_numpy_is_named():
    # numba-cuda 0.30.4 fails on NumPy 2.5 (no np.row_stack) at its first compile, deep inside numba
    from fastloss.cuda._device import numpy_mismatch
    message = numpy_mismatch("2.5.2", False, "0.30.4")
    assert "numba-cuda 0.30.4 cannot compile GPU kernels with NumPy 2.5.2" in message and "numpy<2.5" in message
    assert numpy_mismatch("2.4.6", True, "0.30.4") is None
    assert numpy_mismatch("2.5.2", False, "0.31.0") is None
    assert numpy_mismatch("2.5.2", False, "0.30.10") is None
