#!/usr/bin/env bash
# One-call GPU check (issue 16.5): build the CUDA extension against the machine's torch, run the
# CUDA tests, then every kernel's GPU benchmark row; writes gpu_check.md (the table), gpu_pytest.txt
# and gpu_build.log under $OUT (or benchmarks/ when $OUT is unset). Sized to finish within 8 minutes.
#   usage: bash benchmarks/gpu_check.sh            (from anywhere; no internet needed)
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-benchmarks}"
mkdir -p "$OUTDIR"
START=$(date +%s)
left() { echo $(( 470 - ($(date +%s) - START) )); }   # seconds left of the 8-minute budget

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
} > "$OUTDIR/gpu_build.log" 2>&1

# 1. build (no build isolation: compile against the installed torch; all cores)
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
BUILD_OK=1
if ! timeout 240 pip install --no-build-isolation --no-deps -e . >> "$OUTDIR/gpu_build.log" 2>&1; then
  BUILD_OK=0
  echo "gpu_check: BUILD FAILED (see $OUTDIR/gpu_build.log)" | tee -a "$OUTDIR/gpu_build.log"
fi
python -c "import semvis_ext; print(semvis_ext.info())" >> "$OUTDIR/gpu_build.log" 2>&1 || BUILD_OK=0
tail -3 "$OUTDIR/gpu_build.log"

# 2. the CUDA tests (bounded: the rows need ~3 minutes)
T=$(( $(left) - 180 )); [ "$T" -lt 60 ] && T=60
timeout "$T" python -m pytest -q -m cuda -p no:cacheprovider tests > "$OUTDIR/gpu_pytest.txt" 2>&1
echo "pytest -m cuda exit $? ($(tail -1 "$OUTDIR/gpu_pytest.txt"))"

# 3. the benchmark rows: one table, every row guarded, rewritten after each row (a row still
#    running when the outer timeout hits is lost, the others stay in the table)
B=$(( $(left) - 30 )); [ "$B" -lt 60 ] && B=60
timeout $(( B + 30 )) python benchmarks/gpu_check.py --out "$OUTDIR/gpu_check.md" --pytest-log "$OUTDIR/gpu_pytest.txt" \
  --budget-s "$B" "$@"
RC=$?
[ "$BUILD_OK" = 1 ] || RC=2
echo "gpu_check: done in $(( $(date +%s) - START )) s, table in $OUTDIR/gpu_check.md (exit $RC)"
exit $RC
