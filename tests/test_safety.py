"""Hostile inputs (SPEC section 3: memory safety, aliasing, files, labels): every scratch buffer
bounded for every input, allocation failures as MemoryError with nothing written, out= that
overlaps an input refused, files written atomically and never over an input, and the numeric
edge cases where torch's answer is defined. Calls that once crashed the interpreter run in a
subprocess, so that a regression fails a test instead of killing the run."""
import json
import math
import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import conftest
import numpy as np
import pytest
from adversarial import hostile, hostile_blocks, most_partials
from conftest import assert_close, prediction_files, torch

import fastloss as fl
from fastloss._exact import exact_sum

F = torch.nn.functional
TESTS = os.path.dirname(os.path.abspath(__file__))


def isolated(code, limit_bytes=None, timeout=600):
    """Run `code` in a fresh interpreter (tests/ on its path, optionally under an address-space
    limit); its stdout, after asserting it exited cleanly (a signal is a failure here)."""
    prelude = "import sys; sys.path.insert(0, %r)\n" % TESTS
    env = conftest.fastloss_env()   # tests/ itself is put on sys.path by the prelude
    if limit_bytes and "libasan" in os.environ.get("LD_PRELOAD", ""):
        # AddressSanitizer reserves terabytes of shadow address space: it limits each
        # allocation instead, and makes malloc return NULL beyond it, as a real failure does
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + \
            f":allocator_may_return_null=1:max_allocation_size_mb={limit_bytes >> 20}"
    elif limit_bytes:
        prelude += "import resource; resource.setrlimit(resource.RLIMIT_AS, (%d, %d))\n" % (limit_bytes, limit_bytes)
    # (run from tests/: the checkout's own fastloss/ in the working directory would shadow an
    # installed one)
    run = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                         env=env, timeout=timeout, cwd=TESTS)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run.stdout


# ---------------------------------------------------------------- 1. exact sums, bounded

def test_the_hostile_values_are_hostile():
    # the old 64-double expansion would have needed far more room for these
    assert most_partials(hostile()) > 140
    assert most_partials(hostile_blocks(2000, 2.0 ** -900)) > 450


@pytest.mark.parametrize("values", [
    hostile(), hostile_blocks(3000, -2.0 ** -1000), [1e308, 1e308, -1e308], [5e-324, -5e-324, 5e-324],
    [1.0, 1e100, 1.0, -1e100], [0.1] * 10, [], [2.0 ** 1023] * 2, [-(2.0 ** 1023)] * 3,
    list(np.random.default_rng(0).standard_normal(1000) * 10.0 ** np.random.default_rng(1).integers(-300, 300, 1000)),
])
def test_exact_sum_is_fsum(values):
    total = exact_sum(values)
    exact = sum(map(Fraction, values), Fraction(0))
    try:
        expected = float(exact)   # correctly rounded
    except OverflowError:
        expected = math.inf if exact > 0 else -math.inf
    try:
        assert math.fsum(values) == expected
    except OverflowError:   # fsum gives up on intermediate overflow (1e308 + 1e308 - 1e308)
        pass
    assert total.value() == expected
    half = len(values) // 3
    assert (exact_sum(values[:half]) + exact_sum(values[half:])).value() == expected


def test_exact_sum_specials_add_plainly():
    assert exact_sum([1.0, math.inf, 2.0]).value() == math.inf
    assert math.isnan(exact_sum([math.inf, -math.inf]).value())
    assert math.isnan(exact_sum([1.0, math.nan]).value())
    assert exact_sum([-0.0]).value() == 0.0


# One hostile value per reduction block, the rest zeros: each block's sum is that value, so the
# loss is exactly math.fsum of them. The old kernels crashed (SIGBUS) or corrupted the heap here.
KERNEL_CASES = {
    "l1-sum": """
        n = 1000
        v = np.array(hostile_blocks(n))
        x = np.zeros(n * 8192); x[::8192] = v
        total = fl.L1Loss(reduction='sum').loss(x, np.zeros_like(x))
        assert total == math.fsum(np.abs(v)), (total, math.fsum(np.abs(v)))
        """,
    "nll-sum": """
        n = 10000
        v = np.array(hostile_blocks(n, -1.0))
        x = np.zeros((n * 16, 2)); x[::16, 1] = v
        t = np.ones(n * 16, np.int64)
        total = fl.NLLLoss(reduction='sum').loss(x, t)
        assert total == math.fsum(-v), (total, math.fsum(-v))
        state = fl.NLLLoss(reduction='sum').partial(x[:16 * 5000], t[:16 * 5000]) + \\
            fl.NLLLoss(reduction='sum').partial(x[16 * 5000:], t[16 * 5000:])
        assert state.value() == total
        """,
    "cross-entropy-weight": """
        w = np.abs(np.array(hostile(150)))
        x = np.random.default_rng(0).standard_normal((150, 150))
        t = np.arange(150)
        crit = fl.CrossEntropyLoss(weight=w)
        assert crit.partial(x, t).divisor.value() == math.fsum(w)
        loss, grad = crit(x, t)
        import torch
        ref = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(t), weight=torch.tensor(w))
        assert abs(loss - ref.item()) <= 1e-10 * abs(ref.item()), (loss, ref.item())
        """,
    "multi-margin-sum": """
        n = 10000
        v = np.abs(np.array(hostile_blocks(n)))
        x = np.zeros((n * 16, 2)); x[::16, 1] = v
        total = fl.MultiMarginLoss(margin=0.0, reduction='sum').loss(x, np.zeros(n * 16, np.int64))
        assert total == math.fsum(v / 2), (total, math.fsum(v / 2))
        """,
    "contrastive-sum": """
        n = 3000
        v = np.abs(np.array(hostile_blocks(n, 2.0 ** -400)))
        x1 = np.zeros((n * 64, 1)); x1[::64, 0] = np.sqrt(v)
        y = np.ones(n * 64)
        crit = fl.ContrastiveLoss(reduction='none')
        rows = crit.loss(x1, np.zeros_like(x1), y)
        total = fl.ContrastiveLoss(reduction='sum').loss(x1, np.zeros_like(x1), y)
        assert total == math.fsum(rows[::64]), (total, math.fsum(rows[::64]))
        """,
    "dice-per-class": """
        n = 2000
        v = np.abs(np.array(hostile_blocks(n)))
        x = np.zeros((1, 3, n * 512)); x[0, 0, ::512] = v
        y = np.zeros_like(x); y[0, 0, ::512] = 1
        crit = fl.DiceLoss('multilabel', from_logits=False)
        sums = crit.partial(x, y).sums
        assert sums[0].value() == math.fsum(v)          # I_0 = sum p y
        assert sums[2].value() == n                     # Y_0
        loss = crit.loss(x, y)
        expected = (1 - 2 * math.fsum(v) / math.fsum(list(v) + [float(n)])) / 3
        assert abs(loss - expected) <= 1e-12 * abs(expected), (loss, expected)
        """,
    "pointwise-partials-in-any-order": """
        n = 700
        v = np.array(hostile_blocks(n, 2.0 ** -700))
        x = np.zeros(n * 8192); x[::8192] = v
        crit = fl.MSELoss(reduction='sum')
        y = np.zeros_like(x)
        parts = [crit.partial(x[i:i + 8192 * 50], y[i:i + 8192 * 50]) for i in range(0, x.size, 8192 * 50)]
        a = parts[0]
        for p in parts[1:]:
            a = a + p
        b = parts[-1]
        for p in parts[-2::-1]:
            b = b + p
        assert a.value() == b.value() == crit.loss(x, y) == math.fsum(v * v)
        """,
}


@pytest.mark.parametrize("name", sorted(KERNEL_CASES))
def test_hostile_block_sums_are_exact_in_every_reducing_kernel(name):
    isolated("import math\nimport numpy as np\nimport fastloss as fl\nfrom adversarial import hostile, hostile_blocks\n"
             + textwrap.dedent(KERNEL_CASES[name]))


def test_dice_with_millions_of_classes_takes_scratch_of_its_classes_not_512_times():
    # was: malloc(2 C 512 doubles) per block failed, and the loss came back 0 with a zero gradient
    out = isolated("""
        import numpy as np, fastloss as fl
        C = 3_000_000
        x = np.zeros((1, C)); x[0, 7] = 2.0
        loss, grad = fl.DiceLoss('multiclass')(x, np.array([7]))
        p7 = np.exp(2.0) / (np.exp(2.0) + C - 1)
        print(float(loss), float(p7), float(grad[0, 7]))
    """, limit_bytes=3 << 30)
    loss, p7, g7 = map(float, out.split())
    expected = (1 - 2 * p7 / (p7 + 1)) / 3_000_000
    assert loss == pytest.approx(expected, rel=1e-9)
    assert g7 < 0


def test_dice_refuses_2_31_classes_of_class_index_targets():
    # the kernel keeps each position's class in 32 bits; the shapes it refuses would be 8 GiB and more
    from fastloss.losses import softmax
    x, t = np.zeros(1, np.float32), np.zeros((1, 1), np.int64)
    with pytest.raises(ValueError, match=r"2147483648 classes \(expected at most 2\^31 - 1"):
        softmax._kernel.dice(x, 1, 2 ** 31, 1, t, None, ignore_index=None, mode=0, num_threads=1)


ALLOCATION_FAILURES = {
    # scratch that cannot be had: a MemoryError, before anything is written to out=
    "ctc": """
        T, L = 200_000, 50_000
        lp = np.full((T, 2, 3), np.log(1 / 3))
        targets = np.ones((2, L), np.int64)
        out = np.full_like(lp, 7.0)
        try:
            fl.CTCLoss()(lp, targets, np.array([T, T]), np.array([L, 3]), out=out)
        except MemoryError as e:
            print("MemoryError", e)
        assert (out == 7.0).all()
        """,
    "dice": """
        x = np.zeros((1, 70_000_000, 1), np.float32)   # scratch 2 C floats, block sums 3 C doubles
        out = np.full_like(x, 7.0)
        try:
            fl.DiceLoss('multilabel')(x, np.zeros_like(x), out=out)
        except MemoryError as e:
            print("MemoryError", e)
        assert (out == 7.0).all()
        """,
}


@pytest.mark.parametrize("name", sorted(ALLOCATION_FAILURES))
def test_allocation_failure_is_a_memory_error_with_out_untouched(name):
    out = isolated("import numpy as np\nimport fastloss as fl\n" + textwrap.dedent(ALLOCATION_FAILURES[name]),
                   limit_bytes=1400 << 20)
    assert "MemoryError" in out


# ---------------------------------------------------------------- 2. out= that aliases an input

def _overlap_cases():
    r = np.random.default_rng(3)
    x = r.standard_normal((6, 5))
    t = r.integers(0, 5, 6)
    a, p, n = (r.standard_normal((6, 4)) for _ in range(3))
    prob = r.dirichlet(np.ones(5), 6)
    ml_target = np.array([[0, 2, -1, 0, 0]] * 6)
    W = r.standard_normal((5, 3))
    h = r.standard_normal((6, 3))
    return [
        ("NLLLoss out=input", fl.NLLLoss(), (x, t), lambda args: args[0]),
        ("MultiLabelMargin out=input", fl.MultiLabelMarginLoss(), (x, ml_target), lambda args: args[0]),
        ("CE softcap out=input", fl.CrossEntropyLoss(softcap=2.0), (x, t), lambda args: args[0]),
        ("CE out=prob target", fl.CrossEntropyLoss(), (x, prob), lambda args: args[1]),
        ("Triplet out=anchor", fl.TripletMarginLoss(), (a, p, n), lambda args: (args[0], np.empty_like(a), np.empty_like(a))),
        ("TripletWithDistance", fl.TripletMarginWithDistanceLoss(distance_function="cosine"), (a, p, n),
         lambda args: (np.empty_like(a), args[2], np.empty_like(a))),
        ("NTXent out=(z1, z2)", fl.NTXentLoss(), (a, p), lambda args: (args[0], args[1])),
        ("LinearCE out=input", fl.LinearCrossEntropyLoss(), (h, W, t), lambda args: (args[0], np.empty_like(W))),
        ("MSE out=shifted input", fl.MSELoss(), (np.zeros(31)[1:], np.zeros(30)), lambda args: args[0].base[:-1]),
        ("MSE out=grad_output", fl.MSELoss(reduction="none"), (x, x * 2), "grad_output"),
        ("MarginRanking out=(g, g)", fl.MarginRankingLoss(), (x, x * 2, np.ones_like(x)), lambda args: (np.zeros_like(x),) * 2),
        ("GaussianNLL out=var", fl.GaussianNLLLoss(), (x, x, np.ones((6, 1))), lambda args: (np.empty_like(x), args[2])),
    ]


@pytest.mark.parametrize("case", _overlap_cases(), ids=lambda c: c[0])
def test_out_that_overlaps_an_input_is_refused_and_nothing_is_written(case):
    name, crit, arrays, make_out = case
    if make_out == "grad_output":
        g = np.ones_like(arrays[0])
        before = [a.copy() for a in arrays]
        with pytest.raises(ValueError, match=r"out \(input\): expected a buffer that shares no memory .* overlaps grad_output"):
            crit(*arrays, out=g, grad_output=g)
        return
    out = make_out(arrays)
    before = [a.copy() for a in arrays]
    outs_before = [o.copy() for o in (out if isinstance(out, tuple) else (out,))]
    with pytest.raises(ValueError, match=r"out \(\w+\d?\): expected a buffer that shares no memory"):
        crit(*arrays, out=out)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)
    for o, b in zip(out if isinstance(out, tuple) else (out,), outs_before):
        np.testing.assert_array_equal(o, b)


@pytest.mark.parametrize("make, arrays, slot", [
    (fl.MSELoss, lambda r: (r.standard_normal((40, 7)), r.standard_normal((40, 7))), 0),
    (fl.MSELoss, lambda r: (r.standard_normal((40, 7)), r.standard_normal((40, 7))), 1),
    (lambda: fl.HuberLoss(reduction="none"), lambda r: (r.standard_normal(300), r.standard_normal(300)), 0),
    (fl.SoftMarginLoss, lambda r: (r.standard_normal(1000).astype(np.float32), np.sign(r.standard_normal(1000)).astype(np.float32)), 0),
    (fl.MarginRankingLoss, lambda r: (r.standard_normal(50), r.standard_normal(50), np.sign(r.standard_normal(50))), 1),
])
def test_pointwise_gradient_over_its_own_input_or_target_is_refused(make, arrays, slot):
    # the pointwise kernels declare their outputs restrict: even exact aliasing is refused
    args = arrays(np.random.default_rng(5))
    crit = make()
    mine = [a.copy() for a in args]
    out = (mine[slot], np.empty_like(mine[0])) if len(crit.differentiable) == 2 else mine[slot]
    with pytest.raises(ValueError, match=r"out \(input1?\): expected a buffer that shares no memory"):
        crit(*mine, out=out)
    for a, b in zip(mine, args):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make, shape", [
    (fl.SoftMarginLoss, (10,)), (fl.BCEWithLogitsLoss, (3, 4)), (fl.SigmoidFocalLoss, (11,)), (fl.KLDivLoss, (9,)),
    (lambda: fl.PoissonNLLLoss(log_input=False), (12,)), (fl.CrossEntropyLoss, (1, 10)),
    (lambda: fl.CrossEntropyLoss(softcap=3.0, label_smoothing=0.1), (1, 13)), (fl.SoftmaxFocalLoss, (1, 9)),
    (fl.MultiLabelSoftMarginLoss, (1, 12)), (lambda: fl.DiceLoss("binary"), (1, 1, 10)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_same_bits_wherever_the_gradient_buffer_sits(make, shape, dtype):
    # A gradient buffer a few bytes after the input once made gcc's run-time overlap check
    # fall back to the scalar loop, whose libm exp/log/tanh round differently from libmvec's
    # vector body (the fuzz found it). Every distance from 0 to 128 bytes past the input's end.
    r = np.random.default_rng(6)
    crit = make()
    x = (r.standard_normal(shape) * 3).astype(dtype)
    if isinstance(crit, (fl.CrossEntropyLoss, fl.SoftmaxFocalLoss)):
        target = np.array([1])
    elif isinstance(crit, fl.KLDivLoss):
        target = r.random(shape).astype(dtype)
    else:
        target = (r.random(shape) < 0.5).astype(dtype)
    reference = crit(x, target)
    for gap in range(0, 129, 4):
        buffer = np.zeros(2 * x.nbytes + 256, np.uint8)
        base = (-buffer.ctypes.data) % 64
        mine = buffer[base:base + x.nbytes].view(dtype).reshape(shape)
        mine[...] = x
        start = base + x.nbytes + gap
        start += (-start) % x.itemsize
        out = buffer[start:start + x.nbytes].view(dtype).reshape(shape)
        loss, grad = crit(mine, target, out=out)
        assert np.asarray(loss).tobytes() == np.asarray(reference.loss).tobytes(), gap
        assert grad.tobytes() == reference.grad.tobytes(), gap


def test_evaluate_refuses_a_grad_out_that_is_an_input(tmp_path):
    x = np.random.default_rng(1).standard_normal((100, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="grad_out: expected a buffer that shares no memory .* overlaps input"):
        fl.evaluate(fl.MSELoss(), x, x * 2, grad_out=x)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    other_map = np.load(tmp_path / "x.npy", mmap_mode="r+")
    with pytest.raises(ValueError, match="grad_out: expected a file other than the inputs"):
        fl.evaluate(fl.MSELoss(), mapped, x, grad_out=other_map)
    with pytest.raises(ValueError, match="grad_out: expected a file other than the inputs"):   # a reversed view
        fl.evaluate(fl.MSELoss(), mapped[::-1], x, grad_out=other_map)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), x)
    os.truncate(tmp_path / "x.npy", 1000)   # mapped already: a reversed view of it is checked too
    with pytest.raises(OSError, match="holds 1000 bytes"):
        fl.evaluate(fl.MSELoss(), mapped[::-1], x)


# ---------------------------------------------------------------- 3. files

def run_cli(*args, cwd):
    return conftest.run_cli(*args, "--no-progress", cwd=cwd)


@pytest.fixture
def files(tmp_path):
    return (tmp_path,) + prediction_files(tmp_path, 9)


@pytest.mark.commands
def test_grad_out_onto_the_input_is_refused_and_the_input_kept(files):
    tmp_path, x, _ = files
    os.symlink(tmp_path / "p.npy", tmp_path / "link.npy")
    for target in ("p.npy", "link.npy", str(tmp_path / "p.npy")):
        run = run_cli("--loss", "cross_entropy", "--input", "p.npy", "--target", "t.npy", "--grad-out", target,
                      "--overwrite", cwd=tmp_path)
        assert run.returncode == 2 and "grad_out: expected a file other than the inputs" in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1
        np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), x)
    assert sorted(os.listdir(tmp_path)) == ["link.npy", "p.npy", "t.npy"]


@pytest.mark.commands
def test_grad_out_never_replaces_a_file_without_overwrite(files):
    tmp_path, x, t = files
    (tmp_path / "g.npy").write_bytes(b"mine")
    run = run_cli("--loss", "cross_entropy", "--input", "p.npy", "--target", "t.npy", "--grad-out", "g.npy",
                  cwd=tmp_path)
    assert run.returncode == 2 and "expected a new file (or overwrite), got the existing 'g.npy'" in run.stderr
    assert (tmp_path / "g.npy").read_bytes() == b"mine"
    run = run_cli("--loss", "cross_entropy", "--input", "p.npy", "--target", "t.npy", "--grad-out", "g.npy",
                  "--overwrite", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert np.load(tmp_path / "g.npy").tobytes() == fl.CrossEntropyLoss()(x, t).grad.tobytes()
    assert sorted(os.listdir(tmp_path)) == ["g.npy", "p.npy", "t.npy"]


@pytest.mark.commands
def test_a_failed_run_leaves_no_gradient_file_behind(files):
    tmp_path, x, t = files
    bad = t.copy()
    bad[2345] = 99
    np.save(tmp_path / "bad.npy", bad)
    run = run_cli("--loss", "cross_entropy", "--input", "p.npy", "--target", "bad.npy", "--grad-out", "g.npy",
                  "--chunk-rows", "1000", cwd=tmp_path)
    assert run.returncode == 2
    # the position in the whole file, not in the third chunk
    assert "got 99 at position (2345,)" in run.stderr, run.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.npy", "p.npy", "t.npy"]


def test_errors_name_whole_file_positions_and_shapes(tmp_path):
    x = np.full((5000, 3), 0.5, np.float32)
    x[4321, 1] = 1.5
    with pytest.raises(ValueError, match=r"got 1\.5 at position \(4321, 1\)"):
        fl.evaluate(fl.BCELoss(), x, np.zeros_like(x), chunk_rows=1000)
    with pytest.raises(ValueError, match=r"chunk_rows: expected a positive int or None, got 0"):
        fl.evaluate(fl.MSELoss(), x, x, chunk_rows=0)
    lp = np.log(np.full((10, 4000, 5), 0.2))
    with pytest.raises(ValueError, match=r"input_lengths: expected lengths at most T = 10 .* got 11 at position \(3210,\)"):
        fl.evaluate(fl.CTCLoss(), lp, np.ones((4000, 2), np.int64), np.where(np.arange(4000) == 3210, 11, 10),
                    np.full(4000, 2), chunk_rows=1000)


@pytest.mark.parametrize("layout", ["fortran", "ctc"])
def test_a_truncated_file_of_any_layout_is_an_oserror_not_a_signal(tmp_path, layout):
    path = tmp_path / "x.npy"
    if layout == "fortran":
        np.save(path, np.asfortranarray(np.ones((4000, 30), np.float32)))
        code = "fl.evaluate(fl.MSELoss(), x, np.ones(x.shape, np.float32), chunk_rows=512)"
    else:
        np.save(path, np.log(np.full((50, 400, 6), 1 / 6, np.float32)))
        code = "fl.evaluate(fl.CTCLoss(), x, np.ones((400, 3), np.int64), np.full(400, 50), np.full(400, 3), chunk_rows=64)"
    out = isolated(f"""
        import os, numpy as np, fastloss as fl
        x = np.load({str(path)!r}, mmap_mode='r')
        os.truncate({str(path)!r}, os.path.getsize({str(path)!r}) // 2)   # after the map, before the reads
        try:
            {code}
        except OSError as e:
            print('OSError', e)
    """)
    assert "OSError" in out and "x.npy" in out


@pytest.mark.parametrize("args, message", [
    (["--loss", "mse_loss", "--input", "corrupt.npy", "--target", "p.npy"], "--input: 'corrupt.npy' is not a readable .npy file"),
    (["--loss", "mse_loss", "--input", "p.npy", "--target", "p.npy", "--grad-out", "nowhere/g.npy"], "No such file or directory"),
    (["--loss", "mse_loss", "--input", "p.npy", "--target", "p.npy", "--threads", "-1"], "--threads: expected a positive int, got -1"),
    (["--loss", "mse_loss", "--input", "p.npy", "--target", "p.npy", "--threads", "x"], "invalid int value"),
    (["--loss", "mse_loss", "--input", "p.npy", "--target", "p.npy", "--chunk-rows", "0"], "--chunk-rows: expected a positive int"),
    (["--loss", "mse_loss", "--input", "p.npy", "--target", "short.npy"], "--target: 'short.npy' is not a readable .npy file"),
])
@pytest.mark.commands
def test_cli_failures_are_one_line_and_exit_code_2(files, args, message):
    tmp_path, x, _ = files
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4', 'fortr")
    with open(tmp_path / "short.npy", "wb") as f:   # a valid header, half the data
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (3000, 20)})
        f.write(b"\0" * 1000)
    run = run_cli(*args, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert message in lines[0], lines


@pytest.mark.commands
def test_cli_reads_booleans_in_any_case_and_prints_valid_json(files):
    tmp_path, x, _ = files
    y = np.abs(x)
    np.save(tmp_path / "y.npy", y)
    run = run_cli("--loss", "poisson_nll_loss", "--input", "y.npy", "--target", "y.npy", "--option", "log_input=FALSE",
                  "--option", "full=true", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert np.float32(report["loss"]) == fl.PoissonNLLLoss(log_input=False, full=True).loss(y, y)
    x[0, 0] = np.nan
    np.save(tmp_path / "n.npy", x)
    run = run_cli("--loss", "mse_loss", "--input", "n.npy", "--target", "p.npy", "--json", cwd=tmp_path)
    report = json.loads(run.stdout)   # strict JSON: no NaN literal
    assert report["loss"] is None and report["loss_is_finite"] is False and report["loss_text"] == "nan"


def test_evaluate_writes_a_gradient_file_atomically(files):
    tmp_path, x, t = files
    X = np.load(tmp_path / "p.npy", mmap_mode="r")
    T = np.load(tmp_path / "t.npy", mmap_mode="r")
    result = fl.evaluate(fl.CrossEntropyLoss(), X, T, grad_out=tmp_path / "g.npy", chunk_rows=512)
    assert np.load(tmp_path / "g.npy").tobytes() == fl.CrossEntropyLoss()(x, t).grad.tobytes()
    assert result.loss == fl.CrossEntropyLoss().loss(x, t)
    with pytest.raises(FileExistsError):
        fl.evaluate(fl.CrossEntropyLoss(), X, T, grad_out=tmp_path / "g.npy")
    with pytest.raises(ValueError, match="grad_out: expected a file other than the inputs"):
        fl.evaluate(fl.CrossEntropyLoss(), X, T, grad_out=tmp_path / "p.npy", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["g.npy", "p.npy", "t.npy"]


# ---------------------------------------------------------------- 4. labels, read-only inputs

@pytest.mark.parametrize("make, arrays, message", [
    (fl.MultiMarginLoss, lambda: (np.zeros((2, 3)), np.array([0, -2 ** 63])), r"got -9223372036854775808 at position \(1,\)"),
    (lambda: fl.DiceLoss("multiclass"), lambda: (np.zeros((2, 3, 4)), np.full((2, 4), -2 ** 63)),
     r"got -9223372036854775808 at position \(0, 0\)"),
    (fl.CrossEntropyLoss, lambda: (np.zeros((2, 3)), np.array([1, 2 ** 64 - 100], np.uint64)),
     r"got 18446744073709551516 at position \(1,\)"),
    (fl.NLLLoss, lambda: (np.zeros((2, 3)), np.array([2 ** 63], np.uint64)[[0, 0]]), r"got 9223372036854775808"),
    (fl.MultiLabelMarginLoss, lambda: (np.zeros((1, 3)), np.array([[2 ** 64 - 1, 0, 0]], np.uint64)), r"got 18446744073709551615"),
    (fl.CTCLoss, lambda: (np.zeros((5, 1, 3)), np.array([[1]]), np.array([5]), np.array([2 ** 64 - 1], np.uint64)),
     r"target_lengths: expected lengths >= 0, got 18446744073709551615"),
])
def test_labels_that_collide_with_sentinels_or_wrap_around_are_errors(make, arrays, message):
    with pytest.raises(IndexError if "lengths" not in message else IndexError, match=message):
        make()(*arrays())


def test_options_beyond_int64_and_complex_weights_are_errors():
    with pytest.raises(ValueError, match="ignore_index: expected an int64"):
        fl.CrossEntropyLoss(ignore_index=2 ** 64)
    with pytest.raises(TypeError, match="weight: expected real class weights, got dtype complex128"):
        fl.CrossEntropyLoss(weight=np.array([1 + 1j, 1, 1]))(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(TypeError, match="weight: expected real class weights"):
        fl.MultiMarginLoss(weight=np.ones(3, complex))(np.zeros((2, 3)), np.array([0, 1]))


def _read_only(*arrays):
    out = []
    for a in arrays:
        a = np.array(a)
        a.flags.writeable = False
        out.append(a)
    return out


def test_read_only_inputs_work_where_non_const_memoryviews_refused_them(tmp_path):
    r = np.random.default_rng(4)
    z1, z2 = _read_only(r.standard_normal((8, 5)), r.standard_normal((8, 5)))
    assert np.isfinite(fl.NTXentLoss()(z1, z2).loss)
    lp = np.log(r.dirichlet(np.ones(4), (12, 3)))
    np.save(tmp_path / "lp.npy", lp)
    mapped = np.load(tmp_path / "lp.npy", mmap_mode="r")
    loss, grad = fl.CTCLoss()(mapped, *_read_only(np.ones((3, 2), np.int64), np.full(3, 12), np.full(3, 2)))
    assert loss == fl.CTCLoss().loss(np.array(lp), np.ones((3, 2), np.int64), np.full(3, 12), np.full(3, 2))


# ---------------------------------------------------------------- 5. numeric edges, against torch

def _torch_call(f, arrays, differentiable=(0,)):
    ts = [torch.tensor(a, requires_grad=i in differentiable) for i, a in enumerate(arrays)]
    loss = f(*ts)
    loss.backward()
    return loss.detach().numpy(), [ts[i].grad.numpy() for i in differentiable]


def test_cross_entropy_at_huge_logits_keeps_log_c():
    x = np.array([[1e20, 1e20, 1e20], [-1e300, 1e300, 0.0]])
    t = np.array([0, 1])
    for crit in (fl.CrossEntropyLoss(reduction="none"), fl.SoftmaxFocalLoss(gamma=0.0, reduction="none"),
                 fl.CrossEntropyLoss(reduction="none", label_smoothing=0.1)):
        ref = F.cross_entropy(torch.tensor(x), torch.tensor(t), reduction="none",
                              label_smoothing=getattr(crit, "label_smoothing", 0.0)).numpy()
        np.testing.assert_allclose(crit.loss(x, t), ref, rtol=1e-12)
    assert fl.CrossEntropyLoss().loss(np.float32([[1e30] * 3]), np.array([2])) == np.float32(np.log(3))


@pytest.mark.parametrize("make, f, arrays", [
    (lambda: fl.SmoothL1Loss(reduction="sum"), lambda x, y: F.smooth_l1_loss(x, y, reduction="sum"),
     lambda: (np.array([np.nan, 1.0, 3.0, -np.inf]), np.zeros(4))),
    (lambda: fl.HuberLoss(reduction="sum", delta=0.5), lambda x, y: F.huber_loss(x, y, reduction="sum", delta=0.5),
     lambda: (np.array([np.nan, 1.0, 0.1, np.inf]), np.zeros(4))),
    (lambda: fl.L1Loss(reduction="sum"), lambda x, y: F.l1_loss(x, y, reduction="sum"),
     lambda: (np.array([np.nan, 1.0, 0.0]), np.zeros(3))),
    (lambda: fl.MultiLabelSoftMarginLoss(reduction="none"), lambda x, y: F.multilabel_soft_margin_loss(x, y, reduction="none").sum(),
     lambda: (np.array([[-np.inf, np.inf, 1.0], [-np.inf, 0.5, 2.0], [np.inf, 0.0, 1.0]]),
              np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))),
    (lambda: fl.BCELoss(reduction="sum"), lambda x, y: F.binary_cross_entropy(x, y, reduction="sum"),
     lambda: (np.array([0.0, 1.0, 0.5, 1e-13]), np.array([1.0, 0.0, 1.0, 0.0]))),
])
def test_special_values_give_torch_gradients(make, f, arrays):
    args = arrays()
    ref_loss, (ref_grad,) = _torch_call(f, args)
    loss, grad = make()(*args)
    loss = np.sum(loss)
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(ref_grad))
    assert_close(grad[~np.isnan(grad)], ref_grad[~np.isnan(ref_grad)], np.float64)
    if isinstance(make(), fl.BCELoss):   # torch's clamp at p in {0, 1}, bit for bit
        np.testing.assert_array_equal(grad, ref_grad)
    assert (np.isnan(loss) and np.isnan(ref_loss)) or loss == pytest.approx(float(ref_loss), rel=1e-12)


def test_cosine_embedding_nan_rows_give_nan_gradients_as_torch():
    x1 = np.array([[np.nan, 1.0], [1.0, 2.0], [1.0, 2.0], [np.inf, 1.0]])
    x2 = np.array([[1.0, 0.0], [np.nan, 1.0], [1.0, 1.0], [1.0, 1.0]])
    for y in ([1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0], [0.0, 0.0, 1.0, 0.0]):
        y = np.array(y)
        ref_loss, (g1, g2) = _torch_call(lambda a, b, t: F.cosine_embedding_loss(a, b, t, reduction="sum"),
                                         (x1, x2, y), (0, 1))
        loss, (o1, o2) = fl.CosineEmbeddingLoss(reduction="sum")(x1, x2, y)
        np.testing.assert_array_equal(np.isnan(o1), np.isnan(g1))
        np.testing.assert_array_equal(np.isnan(o2), np.isnan(g2))
        assert_close(np.nan_to_num(o1), np.nan_to_num(g1), np.float64)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_margin_losses_take_0d_inputs_as_torch(reduction):
    for make, f, target in [(fl.MultiMarginLoss, F.multi_margin_loss, 0), (fl.MultiLabelMarginLoss, F.multilabel_margin_loss, 0),
                            (fl.MultiLabelMarginLoss, F.multilabel_margin_loss, -1)]:
        x = np.array(0.5)
        ref, (ref_grad,) = _torch_call(lambda a, t: f(a, t, reduction=reduction), (x, np.array(target)))
        loss, grad = make(reduction=reduction)(x, np.array(target))
        assert np.shape(loss) == ref.shape == () and grad.shape == ()
        assert loss == ref and grad == ref_grad


# ---------------------------------------------------------------- 6. a fuzz run that stays

def test_fuzz_every_criterion():
    # tests/fuzz.py in a subprocess: a crash is a failed test, not a lost run.
    # FASTLOSS_FUZZ_EXAMPLES=100000 (and FASTLOSS_FUZZ_SEED) for a long local run.
    run = subprocess.run([sys.executable, os.path.join(TESTS, "fuzz.py")], capture_output=True, text=True,
                         env=conftest.fastloss_env(), timeout=3600, cwd=TESTS)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    assert "no failure" in run.stdout
