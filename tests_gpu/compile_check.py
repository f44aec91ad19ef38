"""Compile every kernel the GPU tests launch with numba's CUDA compiler, for the argument
types of those launches, on a machine without a GPU.

The simulator runs the kernels as Python, so it never meets numba's type inference or NVVM:
a kernel that a real GPU would refuse to compile passes there. This script runs the cases of
cases.py (every reduction and dtype, grad_output on the device, the hessians) through the
criteria with a stand-in Device whose arrays are host memory and whose launches compile the
kernel to PTX for sm_90 (the H100/H200) instead of running it. It prints the count of
kernels compiled and exits 1 on a failure, 2 when no CUDA compiler (NVVM, NVRTC) is found.

    python tests_gpu/compile_check.py      (NUMBA_ENABLE_CUDASIM unset)
"""
import os
import sys
import types

import numpy as np

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") != "0":
    sys.exit("compile_check: unset NUMBA_ENABLE_CUDASIM (it compiles for the real GPU target)")

import numba  # noqa: E402
import numba.cuda.dispatcher as dispatcher  # noqa: E402
from numba import cuda  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import cases  # noqa: E402

from fastloss.cuda import _device  # noqa: E402

CC = (9, 0)
# device functions compile for the current device's compute capability: there is none here
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)


class HostDeviceArray(np.ndarray):
    """Host memory standing in for a device array (what the Device methods ask of one)."""
    __cuda_array_interface__ = {}
    stream = 0

    def is_c_contiguous(self):
        return self.flags.c_contiguous

    def copy_to_host(self, stream=None):
        return np.array(self)


def on_device(a):
    return np.asarray(a).view(HostDeviceArray)


compiled, failures = {}, []


def launch(self, kernel, blocks, threads, *args):
    signature = tuple(numba.typeof(np.asarray(a) if isinstance(a, np.ndarray) else a) for a in args)
    key = (id(kernel), signature)
    if key not in compiled:
        try:
            compiled[key] = cuda.compile_ptx(kernel.py_func, signature, cc=CC)
        except Exception as error:   # noqa: BLE001 (every failure is reported)
            compiled[key] = None
            failures.append(f"{kernel.py_func.__qualname__}{signature}: {type(error).__name__}: {error}")


def stand_in(self, arrays):
    self.kind, self.like, self.stream = "numba", None, None


Device = _device.Device
Device.__init__ = stand_in
Device.launch = launch
Device.view = lambda self, obj, name: on_device(obj)
Device.empty = lambda self, shape, dtype: (lambda a: (a, a))(on_device(np.zeros(shape, dtype)))
Device.upload = lambda self, host: on_device(np.ascontiguousarray(host))
Device.to_host = lambda self, view: np.array(view)
Device.contiguous = lambda self, obj: on_device(np.ascontiguousarray(obj))
cases.TO_DEVICE = on_device


def run_all():
    import fastloss as fl
    for case in cases.CASES:
        for reduction, dtype in (("none", np.float64), ("mean", np.float64), ("sum", np.float32),
                                 ("none", np.float32), ("mean", np.float32)):
            crit, arrays, device_arrays = cases.build(case, reduction, dtype)
            crit(*device_arrays)
            crit.loss(*device_arrays)
            loss_shape = np.shape(crit.loss(*arrays))
            grad_output = on_device(np.ones(loss_shape, dtype)) if reduction == "none" else on_device(np.ones((), dtype))
            crit(*device_arrays, grad_output=grad_output)
        # float16 device arrays: the widening and narrowing copies (Device.float16_call)
        crit, _, device_arrays = cases.build(case, "mean", np.float32)
        crit(*[on_device(np.asarray(a).astype(np.float16)) if getattr(a, "dtype", None) == np.float32 else a
               for a in device_arrays])
    for crit, make in ((fl.MSELoss(), None), (fl.BCEWithLogitsLoss(pos_weight=np.ones(5)), None),
                       (fl.CrossEntropyLoss(z_loss=0.1, label_smoothing=0.1), "index"),
                       (fl.CrossEntropyLoss(), "probabilities"), (fl.SoftmaxFocalLoss(gamma=1.5), "index")):
        for dtype in (np.float32, np.float64):
            x = on_device(np.zeros((4, 5), dtype))
            y = {None: on_device(np.zeros((4, 5), dtype)), "index": on_device(np.zeros(4, np.int64)),
                 "probabilities": on_device(np.full((4, 5), 0.2, dtype))}[make]
            crit.grad_hess(x, y)


def main():
    try:
        cuda.compile_ptx(_device._fill.py_func, (numba.typeof(np.zeros(1)), numba.float64), cc=CC)
    except Exception as error:   # noqa: BLE001
        print(f"compile_check: no CUDA compiler here ({type(error).__name__}: {str(error)[:200]})")
        return 2
    run_all()
    print(f"compile_check: {sum(v is not None for v in compiled.values())} kernel variants compiled for "
          f"sm_{CC[0]}{CC[1]}, {len(failures)} failed")
    for failure in failures:
        print(failure[:3000])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
