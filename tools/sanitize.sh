#!/usr/bin/env bash
# The CPU test suite against kernels built with AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   tools/sanitize.sh [pytest arguments...]       (default: the whole CPU suite, tests/)
#
# Builds the extensions in place in a scratch copy of the tracked tree (your build is left
# alone), with -fsanitize=address,undefined, and runs pytest there with the ASan runtime
# preloaded (the Python interpreter itself is not instrumented). Any report fails the run:
# UBSan halts on the first error, ASan on any bad access. Leak checking is off (CPython and
# its extensions keep memory until exit by design). Needs gcc; uses the current python3, which
# must have the test dependencies installed (pip install '.[test]'); Cython is installed if missing.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/fastloss-sanitize.XXXXXX")"
trap 'rm -rf "$work"' EXIT
git -C "$here" ls-files -z --cached --others --exclude-standard | (cd "$here" && xargs -0 cp --parents -t "$work")
cd "$work"
python3 -c "import Cython, setuptools" 2>/dev/null || python3 -m pip install -q 'cython>=3.0' 'setuptools>=64' wheel
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
# one CPU level (this machine's) instead of three: the same source, a third of the build
export FASTLOSS_MARCH="${FASTLOSS_MARCH:-native}" FASTLOSS_DEBUG=1
CFLAGS="$flags" LDFLAGS="$flags" python3 setup.py build_ext --inplace -j "$(nproc)" > build.log 2>&1 \
    || { tail -40 build.log; exit 1; }
asan="$(gcc -print-file-name=libasan.so)"
ubsan="$(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD="$asan:$ubsan"
export ASAN_OPTIONS="detect_leaks=0:alloc_dealloc_mismatch=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$work"
python3 -c "import fastloss, sys; assert fastloss.__file__.startswith('$work'), fastloss.__file__"
python3 -m pytest -q -p no:cacheprovider -m "not exhaustive and not accuracy and not commands" "${@:-tests}"
