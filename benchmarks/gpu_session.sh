#!/usr/bin/env bash
# Build, test and benchmark on a CUDA machine, stage by stage (for a time-limited GPU lease).
#
#   bash benchmarks/gpu_session.sh [--out DIR] [STAGE...]     # default DIR: benchmarks/results
#
# Stages, in this order when none is named:
#   build       the extension for sm_90 (CUDA module required), no build isolation (offline machines)
#   tests       the GPU tests: the CUDA and Triton backends against the reference (fp32 exact paths,
#               TF32 and bf16 against the tolerance rule), the CUDA extension's ops, CUDA graphs and
#               torch.compile (in parallel processes when pytest-xdist is installed)
#   bench-tf32  the benchmark grid at TF32 (the comparison the README reports)
#   bench-bf16  the grid under bf16 autocast
#   bench-fp32  the grid at full fp32
# Each stage logs to DIR/<stage>.log and each grid writes DIR/cuda-<precision>-<date>.json, rewritten
# after every (provider, B) worker (fused backends first, the slowest compiles last), so a stage stopped
# early still leaves what ran, marked "complete": false. Every named stage runs even when an earlier one
# fails; the exit code is the first failure's. SSVAE_FAST_STAGE_TIMEOUT (seconds, default 540) stops a
# stage that would outlive one call of a lease capped at 10 minutes a command;
# SSVAE_FAST_WORKER_TIMEOUT (seconds, default 200) records one benchmark worker that runs longer as an
# error and goes on with the next.
#
# On a lease of 10-minute calls, one call per line (the build stays installed while the machine is warm):
#   bash benchmarks/gpu_session.sh --out "$OUT" build tests
#   bash benchmarks/gpu_session.sh --out "$OUT" bench-tf32
#   bash benchmarks/gpu_session.sh --out "$OUT" bench-bf16
#   bash benchmarks/gpu_session.sh --out "$OUT" bench-fp32
set -uo pipefail
cd "$(dirname "$0")/.."
results=benchmarks/results
stages=()
while [ $# -gt 0 ]; do
    case $1 in
        --out) results=$2; shift 2 ;;
        build|tests|bench-tf32|bench-bf16|bench-fp32) stages+=("$1"); shift ;;
        *) echo "gpu_session.sh: unknown argument '$1' (stages: build tests bench-tf32 bench-bf16 bench-fp32)" >&2
           exit 2 ;;
    esac
done
[ ${#stages[@]} -gt 0 ] || stages=(build tests bench-tf32 bench-bf16 bench-fp32)
mkdir -p "$results"
stamp=$(date -u +%Y-%m-%d)
limit=${SSVAE_FAST_STAGE_TIMEOUT:-540}
bench=(python3 benchmarks/run.py --device cuda --worker-timeout "${SSVAE_FAST_WORKER_TIMEOUT:-200}")
status=0
run() {  # run NAME CMD...: log to $results/NAME.log, stop it past $limit s, remember the first failure
    local name=$1; shift
    echo "== $name: $*"
    timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee "$results/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc$([ "$rc" -eq 124 ] && echo " (stopped after $limit s)")"
    [ "$status" -ne 0 ] || status=$rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
export PYTHONUNBUFFERED=1
parallel=()
if python3 -c "import xdist" 2>/dev/null; then parallel=(-n 8); fi
for stage in "${stages[@]}"; do
    case $stage in
        build) run build env SSVAE_FAST_CUDA=1 SSVAE_FAST_CUDA_ARCH=90 \
                   python3 -m pip install --no-build-isolation --no-deps -e . ;;
        tests) run tests python3 -m pytest tests -q -rs "${parallel[@]}" ;;
        bench-tf32) run bench-tf32 "${bench[@]}" --precisions tf32 --out "$results/cuda-tf32-$stamp.json" ;;
        bench-bf16) run bench-bf16 "${bench[@]}" --precisions bf16 \
                        --providers reference,reference-compile,torch,triton,cuda \
                        --out "$results/cuda-bf16-$stamp.json" ;;
        bench-fp32) run bench-fp32 "${bench[@]}" --precisions fp32 --providers reference,torch,triton,cuda \
                        --out "$results/cuda-fp32-$stamp.json" ;;
    esac
done
exit $status
