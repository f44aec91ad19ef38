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

step 110 build.log python3 setup.py build_ext --inplace -j 16
python3 -c "import fastloss._kernels as k; print(k.build_info())"
step 150 gpu_tests.log python3 -m pytest tests_gpu -o addopts= -q -p no:warnings -n 12 -rfE --tb=short
step 180 gpu_bench.log python3 -m bench --family gpu --json "$OUT/gpu_bench.json"
LOSSES=(BCEWithLogitsLoss BCELoss SoftMarginLoss SigmoidFocalLoss MultiLabelSoftMargin CrossEntropyLoss
        "CE label_smoothing=0.1" NLLLoss "DiceLoss multiclass" CTCLoss)
JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES= step 125 cpu_v4.log taskset -c 0,1 \
  python3 -m bench --threads 2 --sizes 10000000 --loss "${LOSSES[@]}" --json "$OUT/cpu_v4.json"
