#!/usr/bin/env bash
# A wheel built here, on older x86-64 CPUs: qemu-x86_64 (Debian's qemu-user) emulates a
# Haswell (x86-64-v3: AVX2, no AVX-512) and a Nehalem (x86-64-v2: SSE4.2, no AVX), and the
# installed wheel must import there, load the v3 and v2 kernels, and give the same losses and
# gradients as natively (rtol 1e-5; tools/smoke.py).
#
#   tools/qemu_smoke.sh [WHEEL]        (default: builds one with `pip wheel .`, default settings)
#
# Needs qemu-x86_64 (apt-get install qemu-user) and pip access to numpy. Takes a few minutes:
# Python and NumPy start slowly under emulation.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/fastloss-qemu.XXXXXX")"
trap 'rm -rf "$work"' EXIT
command -v qemu-x86_64 > /dev/null || { echo "qemu-x86_64 not found: apt-get install qemu-user" >&2; exit 1; }
wheel="${1:-}"
if [ -z "$wheel" ]; then
    # the build tools at hand when there are (CI has them after tools/sanitize.sh): no
    # isolated build environment to install first
    isolation=""
    python3 -c "import Cython, setuptools, numpy" 2> /dev/null && isolation="--no-build-isolation"
    python3 -m pip wheel -q --no-deps $isolation -w "$work/dist" "$here"
    wheel="$(ls "$work"/dist/fastloss-*.whl)"
fi
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel"
python="$work/venv/bin/python"
cd "$work"   # not the checkout: the installed wheel is what runs
"$python" "$here/tools/smoke.py" > native.json
status=0
# (cpu model, level it must load, OpenBLAS core type: NumPy's OpenBLAS guesses its kernels from
# the CPU model number, and for qemu's Nehalem picks one with instructions that CPU lacks)
for cpu in Haswell-v4:v3:Haswell Nehalem-v2:v2:Nehalem; do
    IFS=: read -r model level blas <<< "$cpu"
    OPENBLAS_CORETYPE="$blas" qemu-x86_64 -cpu "$model" "$python" "$here/tools/smoke.py" > "$model.json" \
        2> >(grep -v "TCG doesn't support requested feature" >&2)
    "$python" "$here/tools/smoke.py" --compare native.json "$model.json" --level "$level" || status=1
done
# forcing the AVX-512 kernels on the Haswell is an ImportError that says why, not a crash
refusal="$(FASTLOSS_CPU=v4 OPENBLAS_CORETYPE=Haswell qemu-x86_64 -cpu Haswell-v4 "$python" -c "import fastloss" 2>&1 \
           | grep -v "TCG doesn't support requested feature" || true)"
if grep -q "ImportError: FASTLOSS_CPU=v4: this CPU (with its OS) supports x86-64 v3" <<< "$refusal"; then
    echo "Haswell-v4 with FASTLOSS_CPU=v4: refused with an ImportError"
else
    echo "Haswell-v4 with FASTLOSS_CPU=v4: expected an ImportError, got: ${refusal: -300}"; status=1
fi
exit $status
