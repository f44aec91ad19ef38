"""The GPU backend: numba CUDA kernels for every family, taking the caller's device arrays
(CuPy, torch CUDA tensors, numba device arrays, or any CUDA `__dlpack__`) in place and giving
results back as the same framework's arrays, on the caller's current stream.

Nothing here is imported unless a criterion is called with device arrays, so a CPU-only
install never imports numba. Install with ``pip install 'fastloss[cuda]'`` (numba-cuda).
"""
