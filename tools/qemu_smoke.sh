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
    python3 -m pip wheel -q --no-deps -w "$work/dist" "$here"
    wheel="$(ls "$work"/dist/fastloss-*.whl)"
fi
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel"
python="$work/venv/bin/python"
cd "$work"   # not the checkout: the installed wheel is what runs
"$python" "$here/tools/smoke.py" > native.json
status=0
for cpu in Haswell-v4:v3 Nehalem-v2:v2; do
    qemu-x86_64 -cpu "${cpu%%:*}" "$python" "$here/tools/smoke.py" > "${cpu%%:*}.json"
    "$python" "$here/tools/smoke.py" --compare native.json "${cpu%%:*}.json" --level "${cpu##*:}" || status=1
done
exit $status
