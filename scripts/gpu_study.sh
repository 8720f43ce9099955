#!/usr/bin/env bash
# A loss-network study on one GPU in about 10 minutes: one `plfw ablate` process per seed shares
# the GPU, then one writes the report. FILE picks the study (default: the v2 design,
# configs/study/loss_networks_v2_gpu.yaml; the v1 pilot: configs/study/loss_networks_gpu.yaml).
# Run from the repository root on the GPU machine. Expects .gpudata/{train,Set5,Set14,General100}
# (copies of ../shared/data; never committed) and, where the machine lacks them, wheels in .whl/.
# Extra arguments are overrides for every run (e.g. phases.srgan.steps=2 train.device=cpu for a
# dry run); RUNS="vgg54 mse" limits the arms. Writes the report and a small archive to $OUT.
set -euo pipefail
OUT=${OUT:-out}
FILE=${FILE:-configs/study/loss_networks_v2_gpu.yaml}
STUDY=${STUDY:-runs/$(basename "$FILE" .yaml)}
LIMIT=${LIMIT:-480}   # seconds of training before the report is written regardless
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
[ -n "${PLFW_NO_INSTALL:-}" ] || python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
ONLY=()
for r in ${RUNS:-}; do ONLY+=(--run "$r"); done
started=$(date +%s)
for seed in 0 1 2; do
  timeout "$LIMIT" python3 -m plfw ablate "$FILE" "$@" \
    --out "$STUDY" --seed "$seed" "${ONLY[@]}" --no-report --quiet > "$OUT/seed$seed.log" 2>&1 &
done
wait || true   # a process stopped by the time limit leaves resumable checkpoints
echo "training: $(( $(date +%s) - started )) s" | tee "$OUT/times.txt"
python3 -m plfw ablate "$FILE" "$@" --out "$STUDY" --report-only \
  --quiet 2>&1 | tail -3 | tee "$OUT/report.log" || echo "report failed (see report.log)"
echo "total: $(( $(date +%s) - started )) s" | tee -a "$OUT/times.txt"
cp "$STUDY"/report.md "$STUDY"/report.json "$STUDY"/*.png "$OUT/" 2>/dev/null || true
(cd "$STUDY" && tar czf - --exclude=checkpoints --exclude='*.pt' .) > "$OUT/jobs.tar.gz"
# the v2 files keep each job's final generator as fp16 safetensors (in jobs.tar.gz)
