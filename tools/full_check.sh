#!/usr/bin/env bash
# The checks beyond CI's: run before resolving an issue that touches the kernels or the build.
# CI (.ci/run) runs README.md's test command and ruff within its ~15 minutes; this adds, in an
# environment where README's install ran (`. .venv/bin/activate`):
#   - the CPU suite (less the `commands` tests: CLI, reports, pictures, subprocesses and the
#     adapters' training, which run no kernel of their own) on each of the v2 (SSE4.2) and v3
#     (AVX2) kernels that the first run did not load;
#   - the CPU suite against kernels built with ASan + UBSan (tools/sanitize.sh);
#   - a wheel built here and run on an emulated Haswell and Nehalem (tools/qemu_smoke.sh;
#     Debian's qemu-user is installed for it when missing);
#   - every GPU kernel that tests_gpu launches compiled by numba's CUDA compiler, to PTX for
#     sm_90 (tests_gpu/compile_check.py: the simulator never meets that compiler);
#   - the exhaustive float32 scans of test_simd_math.py over every input (FASTLOSS_SCAN=all:
#     README's test command scans one input in 16).
# About 40 minutes on a 2-core machine.
set -eo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-x86_64 > /dev/null; then
    (apt-get update -qq && apt-get install -y -qq qemu-user) > /dev/null
fi
# (asked outside the checkout, whose unbuilt sources would shadow the installed package; on an
# AVX2-only machine the first run was v3's already)
others="$(cd "${TMPDIR:-/tmp}" && python -c 'from fastloss import _kernels as k; print(*(v for v in ("v2", "v3") if v != k.LEVEL))')"
python tests_gpu/compile_check.py
export FASTLOSS_SCAN=all
pytest tests/test_simd_math.py
for level in $others; do
    FASTLOSS_CPU="$level" pytest tests -n auto -m "not commands"
done
tools/sanitize.sh
tools/qemu_smoke.sh
