"""The CPU levels (which kernels load, FASTLOSS_CPU, build_info) and the worker pool (threads
that start late or never, several Python threads at once, fork)."""
import json
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import fastloss_env, parallel

import fastloss as fl
from fastloss import _kernels
from fastloss._kernels import pool

LEVEL_PROBE = """
import json, sys, numpy as np, fastloss as fl
rng = np.random.default_rng(5)
x = rng.standard_normal(50_000).astype(np.float32)
y = (rng.random(50_000) < 0.5).astype(np.float32)
logits = rng.standard_normal((500, 100)).astype(np.float32)
labels = rng.integers(0, 100, 500)
lp = np.log(np.full((30, 4, 6), 1 / 6, np.float32))
out = {"info": fl.build_info()}
for name, (loss, grad) in {"mse": fl.MSELoss()(x, y), "bce": fl.BCEWithLogitsLoss()(x, y),
                           "ce": fl.CrossEntropyLoss()(logits, labels),
                           "ctc": fl.CTCLoss()(lp, np.ones((4, 5), int), np.full(4, 30), np.full(4, 5))}.items():
    out[name] = [float(loss), grad.astype(float).ravel()[::97].tolist()]
print(json.dumps(out))
"""


def run_probe(env_extra):
    env = {**fastloss_env(), **env_extra}
    result = subprocess.run([sys.executable, "-c", LEVEL_PROBE], env=env, capture_output=True, text=True,
                            cwd=os.path.dirname(__file__))
    return result


def test_the_best_level_the_cpu_runs_is_loaded():
    info = fl.build_info()
    assert info["levels_built"], "no kernels built"
    if info["forced"] is None:
        runnable = [lvl for lvl in info["levels_built"] if _kernels._runs_here(lvl, info["cpu_supports"])]
        assert info["level"] == runnable[0]
    assert sys.modules["fastloss._kernels.pointwise"].__file__.split(os.sep)[-2] == info["level"]


@pytest.mark.commands
@pytest.mark.parametrize("level", [lvl for lvl in _kernels.LEVELS_BUILT
                                   if _kernels._runs_here(lvl, _kernels.CPU_SUPPORTS)])
def test_every_level_gives_the_same_losses_and_gradients(level):
    """Each level this CPU runs, forced with FASTLOSS_CPU, against the level loaded here: the
    same values within float32 rounding (libmvec's variants differ in the last bits)."""
    result = run_probe({"FASTLOSS_CPU": level})
    assert result.returncode == 0, result.stderr
    forced = json.loads(result.stdout)
    here = json.loads(run_probe({"FASTLOSS_CPU": fl.build_info()["level"]}).stdout)
    assert forced["info"]["level"] == level and forced["info"]["forced"] == level
    for name in ("mse", "bce", "ce", "ctc"):
        np.testing.assert_allclose(forced[name][0], here[name][0], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(forced[name][1], here[name][1], rtol=1e-5, atol=1e-9, err_msg=name)


def test_fastloss_cpu_names_a_level_that_is_built():
    result = run_probe({"FASTLOSS_CPU": "v9"})
    assert result.returncode != 0
    assert "FASTLOSS_CPU: expected one of the levels this fastloss was built for" in result.stderr
    assert "got 'v9'" in result.stderr


def test_a_level_the_cpu_cannot_run_is_refused_not_loaded():
    """Loading AVX-512 code on an AVX2 CPU would kill the interpreter: it is an ImportError."""
    with pytest.raises(ImportError, match=r"FASTLOSS_CPU=v4: this CPU \(with its OS\) supports x86-64 v3"):
        _kernels._choose(["v4", "v3", "v2"], "v3", "v4")
    assert _kernels._choose(["v4", "v3", "v2"], "v3", "") == "v3"
    assert _kernels._choose(["v4", "v3", "v2"], "v2", "") == "v2"
    with pytest.raises(ImportError, match="no kernels for this CPU"):
        _kernels._choose(["v4", "v3", "v2"], "v1", "")
    assert _kernels._choose(["native"], "v2", "") == "native"
    assert _kernels._choose(["generic"], None, "") == "generic"


@pytest.mark.commands
def test_the_info_command_says_which_level_runs():
    result = subprocess.run([sys.executable, "-m", "fastloss.cli", "info"], env=fastloss_env(), capture_output=True,
                            text=True, cwd=os.path.dirname(__file__), check=True)
    assert f"kernels: {fl.build_info()['level']}" in result.stdout
    assert re.search(r"^threads: \d+ of \d+ usable cores", result.stdout, re.M), result.stdout


# ---------------------------------------------------------------- the worker pool

def reference(case):
    with fl.threads(1):
        loss, grad = case()
    return loss.tobytes(), grad.tobytes()


CASES = {
    "mse": lambda x, y: (lambda: fl.MSELoss()(x, y)),
    "bce": lambda x, y: (lambda: fl.BCEWithLogitsLoss()(x, (y > 0).astype(x.dtype))),
    "ce": lambda x, y: (lambda: fl.CrossEntropyLoss(label_smoothing=0.1)(x.reshape(-1, 50), np.arange(x.size // 50) % 50)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_python_threads_calling_at_once_get_the_same_bits(name):
    """Several Python threads in kernels at once (the GIL is released): one holds the pool,
    the others run their blocks alone; every result is the one-thread result."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 400_000)).astype(np.float32)
    case = CASES[name](x, y)
    expected = reference(case)
    seen, errors = [], []

    def work():
        try:
            with fl.threads(3):   # (a new thread starts with the default context)
                for _ in range(10):
                    loss, grad = case()
                    seen.append((loss.tobytes(), grad.tobytes()))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(4)]
    with parallel(3):
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    assert not errors
    assert len(seen) == 40 and set(seen) == {expected}


@pytest.mark.parametrize("threads", [2, 5, 16])
def test_more_threads_than_blocks_or_cores(threads):
    """Threads beyond the blocks get no slot (the per-thread scratch is sized for the threads
    a job may use), and threads beyond the cores only queue: same bits either way."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3 * 512 + 7, 40)).astype(np.float32)
    t = rng.integers(0, 40, x.shape[0])
    labels = np.where(rng.random(x.shape) < 0.3, rng.integers(0, 40, x.shape), -1)
    results = set()
    for n in (1, threads):
        with parallel(n):
            loss, grad = fl.MultiLabelMarginLoss()(x, labels)   # per-thread class flags
            ce_loss, ce_grad = fl.CrossEntropyLoss()(x, t)
        results.add((loss.tobytes(), grad.tobytes(), ce_loss.tobytes(), ce_grad.tobytes()))
    assert len(results) == 1
    assert pool.workers() >= pool.THREADED   # (none in a build without the pool)


FORK_PROBE = """
import os, sys, numpy as np, fastloss as fl
from fastloss import _threads
from fastloss._kernels import pool
_threads._cores[0] = 2            # two threads even on one core,
pool.set_work_per_thread(0)       # and for a small call
x, y = np.random.default_rng(3).standard_normal((2, 300_000))
with fl.threads(2):
    fl.MSELoss()(x, y)            # the parent's pool has started its worker
assert pool.workers() >= 1
read, write = os.pipe()
pid = os.fork()
if pid == 0:                      # the child: none of the parent's threads exist here
    with fl.threads(2):
        loss = fl.MSELoss()(x, y)[0]
    os.write(write, loss.tobytes() + bytes([pool.workers()]))
    os._exit(0)
os.close(write)
got = os.read(read, 9)
os.waitpid(pid, 0)
with fl.threads(1):
    assert got[:8] == fl.MSELoss()(x, y)[0].tobytes()
print("child workers:", got[8])
"""


@pytest.mark.skipif(not hasattr(os, "fork") or not pool.THREADED, reason="fork() is POSIX; no pool, nothing to test")
def test_a_forked_child_starts_its_own_pool():
    """After fork the child has none of the parent's worker threads: it starts its own and
    gets the same bits, instead of waiting for workers that do not exist (which would hang).
    In a fresh interpreter: this one has JAX's threads, and forking beside them may deadlock."""
    result = subprocess.run([sys.executable, "-c", FORK_PROBE], env=fastloss_env(), capture_output=True,
                            text=True, cwd=os.path.dirname(__file__), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child workers: 1"


def test_small_calls_stay_on_the_caller():
    """The cost model keeps small work on the calling thread: a 1000-element call with the
    default price of a thread starts no job on the pool (checked through its job counter)."""
    before = pool.jobs()
    with fl.threads(fl.get_num_threads()):
        fl.MSELoss()(np.ones(1000, np.float32), np.zeros(1000, np.float32))
    assert pool.jobs() == before
    with parallel(2):
        fl.MSELoss()(np.ones(100_000, np.float32), np.zeros(100_000, np.float32))
    assert pool.jobs() == before + pool.THREADED   # (a build without the pool runs no jobs)


@pytest.mark.commands
def test_the_version_command_gives_the_package_version():
    result = subprocess.run([sys.executable, "-m", "fastloss.cli", "--version"], env=fastloss_env(),
                            capture_output=True, text=True, cwd=os.path.dirname(__file__), check=True)
    pyproject = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pyproject.toml")
    declared = re.search(r'^version = "([^"]+)"', open(pyproject).read(), re.M).group(1)
    assert result.stdout.strip() == f"fastloss {declared}" == f"fastloss {fl.__version__}"
