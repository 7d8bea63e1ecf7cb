#!/usr/bin/env bash
# GPU check (issues 26, 27): every figure a lent GPU machine gives, in one run, under $OUT.
#
# Runs as-is on that machine: its own python3 and this working tree (PYTHONPATH); nothing is installed or
# uninstalled, no ROS, no network. Steps run one process each, in order of importance, each under its own
# timeout and all under a time budget (GPU_CHECK_BUDGET seconds, default 360), so that a slow step costs
# the steps after it, never the run. Every step's exit status is recorded; the script exits non-zero if one
# failed.
#   OUT=dir bash bench/gpu_check.sh          on the GPU (cuda:0)
#   GPU_CHECK_DEVICE=cpu OUT=dir bash ...    every step on the CPU at reduced sizes: the rehearsal
# With no GPU visible (e.g. CUDA_VISIBLE_DEVICES= empty) it says so, writes that under $OUT and exits 0.
# $OUT gets: summary.md, gpu_check.json (all figures), gpu_check.log, pytest.txt, status.txt.
# Shared data (real frames), where present: .gpu_data/ in the tree, else ../shared/data, else synthetic.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/gpu_out}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET:-360}
PY=${PYTHON:-python3}
mkdir -p "$OUT" || exit 1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 1
STATUS="$OUT/status.txt"
: > "$STATUS"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DEFM_ROS_CACHE="$WORK/cache"
if [ -d .gpu_data ]; then export DEFM_ROS_DATA="$PWD/.gpu_data"; fi
START=$SECONDS
echo "== gpu_check $(date -u +%FT%TZ), device $DEVICE, budget ${BUDGET}s, python $($PY -V 2>&1)"

if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    msg="no GPU: torch sees no CUDA device (CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES-unset}'); nothing was measured"
    echo "$msg"
    printf '# GPU check\n\n%s\n' "$msg" > "$OUT/summary.md"
    echo "no-gpu 0" >> "$STATUS"
    exit 0
fi
[ "$DEVICE" = cuda ] && { nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv \
    || echo "nvidia-smi failed"; }

failed=0
run() {  # run NAME TIMEOUT CMD...: one step, its exit status recorded; skipped once the budget is spent
    local name=$1 limit=$2 rc
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt 20 ]; then
        echo "== $name: skipped (budget spent: $((SECONDS - START)) s)"
        echo "$name skipped" >> "$STATUS"
        failed=1
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (at most ${limit} s)"
    timeout -k 10 "$limit" "$@"
    rc=$?
    echo "$name $rc$([ $rc = 124 ] && echo ' (timed out)')" >> "$STATUS"
    [ $rc = 0 ] || failed=1
    "$PY" bench/gpu_check.py summary --work "$WORK" --out "$OUT" --status "$STATUS" \
        || echo "summary failed" >> "$STATUS"
}
step() { run "$1" "$2" "$PY" bench/gpu_check.py "$1" --work "$WORK" --device "$DEVICE"; }

step env 60
step parity 150
step speed 100
step memory 60
step lingbot 60
step transfer 30
# The tests that carry the gpu mark and import without ROS; GPU_CHECK_DEVICE tells them the device.
run pytest 120 bash -c "GPU_CHECK_DEVICE=$DEVICE $PY -m pytest -q -rs -m gpu -p no:cacheprovider \
    test/test_gpu.py test/test_onnx_backend.py > '$OUT/pytest.txt' 2>&1; rc=\$?; tail -5 '$OUT/pytest.txt'; exit \$rc"
step onnx 90
step compile 120

echo "== done in $((SECONDS - START)) s; step statuses:"
cat "$STATUS"
rm -rf "$WORK"
exit $failed
