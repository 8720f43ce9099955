#!/usr/bin/env bash
# Train the next bundled generators (configs/models/bundled_391.yaml) and score them.
#   bash scripts/train_models.sh          # on a CUDA GPU: about 10 minutes
#   bash scripts/train_models.sh --cpu    # on a CPU: no minute caps; rerun to resume
#   bash scripts/train_models.sh KEY=VALUE ...   # config overrides, as for plfw train
# Run from the repository root. Data: $DATA (default ../shared/data, with train/ and
# benchmarks/Set5, Set14; on a GPU machine without it, .gpudata/ with the same layout).
# Results: the run in $RUN (default runs/bundled_391: checkpoints, log, models/srresnet.pt and
# models/srgan.pt) and $OUT/eval.json (PSNR-Y, SSIM-Y, ST-LPIPS, periodic-artefact score on Set5 and Set14).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
DATA=${DATA:-}
CPU=""
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1; shift ;;
    *=*) EXTRA+=("$1"); shift ;;
    *) echo "train_models.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$DATA" ]; then
  for d in ../shared/data .gpudata; do [ -d "$d/train" ] && { DATA="$d"; break; }; done
fi
[ -n "$DATA" ] || { echo "train_models.sh: no data: set DATA to a folder with train/ and benchmarks/" >&2; exit 2; }
mkdir -p "$OUT"
RUN=${RUN:-runs/bundled_391}
ARGS=(run_dir="$RUN" data.train.root="$DATA/train" data.val.root="$DATA/benchmarks/Set5/HR")
if [ -n "$CPU" ]; then
  ARGS+=(train.device=cpu phases.srresnet.minutes=0 phases.srgan.minutes=0 data.workers=1)
fi
ARGS+=("${EXTRA[@]}")
export PYTHONUNBUFFERED=1
if ls "$RUN"/checkpoints/*.pt >/dev/null 2>&1; then
  python3 -m plfw train configs/models/bundled_391.yaml "${ARGS[@]}" --resume --quiet
else
  python3 -m plfw train configs/models/bundled_391.yaml "${ARGS[@]}" --quiet
fi
python3 - "$RUN" "$DATA" "$OUT/eval.json" "${EVAL_LIMIT:-0}" <<'PY'
"""Score bicubic and both models on Set5 and Set14 (the model card's table)."""
import json
import subprocess
import sys

run, data, out, limit = sys.argv[1:]
results = {}
for model in ("bicubic", f"{run}/models/srresnet.pt", f"{run}/models/srgan.pt"):
    for s in ("Set5", "Set14"):
        cmd = [sys.executable, "-m", "plfw", "eval", "--model", model,
               "--hr", f"{data}/benchmarks/{s}/HR", "--lr", f"{data}/benchmarks/{s}/LR_bicubic/X4",
               "--metrics", "psnr_y,ssim_y,st_lpips_alex,st_lpips_vgg,periodic_db",
               "--precision", "fp32", "--limit", limit, "--json"]
        results[f"{model.split('/')[-1].removesuffix('.pt')}/{s}"] = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(f"scored {model} on {s}", file=sys.stderr)
with open(out, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
PY
echo "train_models.sh: wrote $OUT/eval.json" >&2
