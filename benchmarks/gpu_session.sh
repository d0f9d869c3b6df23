#!/usr/bin/env bash
# Build, test and benchmark on a CUDA machine in one go (for a time-limited GPU lease).
#
#   bash benchmarks/gpu_session.sh [RESULTS_DIR]      # default RESULTS_DIR: benchmarks/results
#
# 1. builds the extension for sm_90 (CUDA module required) without build isolation (offline machines);
# 2. runs the GPU tests: the CUDA and Triton backends against the reference (fp32 exact paths, TF32
#    and bf16 against the tolerance rule), the CUDA extension's ops, CUDA graphs and torch.compile;
# 3. runs the benchmark grid at TF32 first (the comparison the README reports), then bf16 and fp32,
#    each into its own JSON file, so a lease that ends early still leaves the most important results.
# Logs go next to the JSON. Every stage runs even when an earlier one fails; the exit code is the
# first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-benchmarks/results}
mkdir -p "$results"
stamp=$(date -u +%Y-%m-%d)
status=0
run() {  # run NAME CMD...: log to $results/NAME.log, remember the first failure
    local name=$1; shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$results/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc"
    [ "$status" -ne 0 ] || status=$rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
export PYTHONUNBUFFERED=1
run build env SSVAE_FAST_CUDA=1 SSVAE_FAST_CUDA_ARCH=90 \
    python3 -m pip install --no-build-isolation --no-deps -e .
run tests python3 -m pytest tests -q -x -rs
run bench-tf32 python3 -m ssvae_fast.bench --device cuda --precisions tf32 \
    --out "$results/cuda-tf32-$stamp.json"
run bench-bf16 python3 -m ssvae_fast.bench --device cuda --precisions bf16 \
    --providers reference,reference-compile,torch,triton,cuda --out "$results/cuda-bf16-$stamp.json"
run bench-fp32 python3 -m ssvae_fast.bench --device cuda --precisions fp32 \
    --providers reference,torch,triton,cuda --out "$results/cuda-fp32-$stamp.json"
exit $status
