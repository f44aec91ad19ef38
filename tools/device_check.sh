#!/bin/bash
# One prepared run on a lent GPU machine (the `device` tool): build, the GPU parity tests, the
# GPU bench, then the CPU bench rows of the speed issue on two of the host's cores (its CPU is
# the AVX-512 machine this workplace otherwise lacks). Each step has a time limit of its own
# and writes its log under $OUT, so a step that runs long costs only itself.
#   device run: bash tools/device_check.sh            (timeout_s 600)
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
step() { local limit=$1 log=$2; shift 2; echo "== $log ($(date +%T), limit ${limit}s): $*"
         timeout "$limit" "$@" >"$OUT/$log" 2>&1; echo "   rc=$? at $(date +%T)"; tail -n 25 "$OUT/$log"; }

{ nvidia-smi -L; lscpu | grep -E "Model name|^CPU\(s\)|NUMA node\(s\)"
  grep -o -w -E 'avx2|avx512f|avx512bw|avx512vl|avx512_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' '; echo;
  python3 -c "import numba, numba_cuda, numpy, torch, Cython; print('numba', numba.__version__, 'numba-cuda',
numba_cuda.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__, 'cython', Cython.__version__)"; } \
  >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# numba-cuda 0.30.4 (the newest release) registers an overload of np.row_stack, which numpy 2.5
# removed: every kernel compile fails there with an AttributeError. Give it the old alias.
if ! python3 -c "import numpy; numpy.row_stack" 2>/dev/null; then
    mkdir -p /tmp/shim && echo "import numpy; numpy.row_stack = numpy.vstack" >/tmp/shim/sitecustomize.py
    export PYTHONPATH=/tmp/shim${PYTHONPATH:+:$PYTHONPATH}; echo "shim: numpy.row_stack = numpy.vstack"
fi

step 90 build.log python3 setup.py build_ext --inplace -j 16
python3 -c "import fastloss._kernels as k; print(k.build_info())"
step 100 gpu_tests.log python3 -m pytest tests_gpu -o addopts= -q -p no:warnings -n 12 -rfE --tb=short
step 210 gpu_bench.log python3 -m bench --family gpu --json "$OUT/gpu_bench.json"
# the speed issue's rows at the host's best level, then two at AVX2, on two CPUs of different
# physical cores (SMT siblings share one core's vector units; this session's first runs used
# CPUs 0 and 1 without checking)
export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=
pair=$(lscpu -p=CPU,CORE | grep -v '^#' | sort -t, -k2,2n -u | head -2 | cut -d, -f1 | paste -sd,)
echo "CPUs $pair (of: $(lscpu -p=CPU,CORE | grep -v '^#' | tr '\n' ' '))"
step 110 cpu_best.log taskset -c "$pair" python3 tools/issue_rows.py "DiceLoss multiclass" MultiLabelSoftMargin CTCLoss \
  NLLLoss "CE label_smoothing=0.1" CrossEntropyLoss BCELoss SoftMarginLoss BCEWithLogitsLoss SigmoidFocalLoss
FASTLOSS_CPU=v3 step 25 cpu_v3.log taskset -c "$pair" python3 tools/issue_rows.py BCELoss SoftMarginLoss
# cross entropy's streamed gradient against the plain one (neutral on the compute-bound Zen 1)
step 45 cpu_stream.log taskset -c "$pair" python3 tools/stream_ab.py
