#!/usr/bin/env bash
# Train the next bundled generators and score them.
#   bash scripts/train_models.sh          # on a CUDA GPU: configs/models/bundled_391.yaml, ~10 min
#   bash scripts/train_models.sh --cpu    # on a CPU: configs/models/bundled_391_cpu.yaml (its
#                                         # phases take 1.5-2 h each on 2 cores); rerun to resume
#   bash scripts/train_models.sh --srgan-v3 [--cpu]   # issue 37's SRGAN only (configs/models/
#                                         # srgan_v3[_cpu].yaml, from the bundled SRResNet), then
#                                         # the de-grid step
#   bash scripts/train_models.sh KEY=VALUE ...   # config overrides, as for plfw train
# Run from the repository root. Data: $DATA (default ../shared/data, with train/ and
# benchmarks/Set5, Set14; on a GPU machine without it, .gpudata/ with the same layout).
# Results: the run in $RUN (default runs/bundled_391: checkpoints, log, models/srresnet.pt and
# models/srgan.pt; degrid/generator.pt, the SRGAN that is bundled), $OUT/eval.json and
# $OUT/eval.md (PSNR-Y, SSIM-Y, ST-LPIPS, periodic-artefact score on Set5 and Set14 for bicubic,
# the previous and the new models; issue 14's targets).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
DATA=${DATA:-}
CPU=""
V3=""
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1; shift ;;
    --srgan-v3) V3=1; shift ;;
    *=*) EXTRA+=("$1"); shift ;;
    *) echo "train_models.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$DATA" ]; then
  for d in ../shared/data .gpudata; do [ -d "$d/train" ] && { DATA="$d"; break; }; done
fi
[ -n "$DATA" ] || { echo "train_models.sh: no data: set DATA to a folder with train/ and benchmarks/" >&2; exit 2; }
mkdir -p "$OUT"
BASE=bundled_391
[ -z "$V3" ] || BASE=srgan_v3
RUN=${RUN:-runs/$BASE${CPU:+_cpu}}
ARGS=(run_dir="$RUN" data.train.root="$DATA/train" data.val.root="$DATA/benchmarks/Set5/HR")
if [ -n "$CPU" ]; then
  ARGS+=(train.device=cpu phases.srresnet.minutes=0 phases.srgan.minutes=0 data.workers=1)
fi
CONFIG=${CONFIG:-configs/models/$BASE${CPU:+_cpu}.yaml}
ARGS+=("${EXTRA[@]}")
export PYTHONUNBUFFERED=1
if ls "$RUN"/checkpoints/*.pt >/dev/null 2>&1; then
  python3 -m plfw train "$CONFIG" "${ARGS[@]}" --resume --quiet
else
  python3 -m plfw train "$CONFIG" "${ARGS[@]}" --quiet
fi
# De-grid the SRGAN: its upsampling layers fine-tuned against the spectral peaks that
# periodic_db measures, in each colour channel, the rest frozen (scripts/degrid.py; resumes from
# $RUN/degrid/state.pt). --srgan-v3's GAN phase leaves a stronger grid: twice the updates at 3x
# the weight (docs/models.md). Skipped when the run has no SRGAN (phases.srgan.steps=0); the
# scores then leave it out.
DEGRID=(--steps "${DEGRID_STEPS:-800}" --weight "${DEGRID_WEIGHT:-1e-3}")
[ -z "$V3" ] || DEGRID=(--steps "${DEGRID_STEPS:-1600}" --weight "${DEGRID_WEIGHT:-3e-3}")
if [ -f "$RUN/models/srgan.pt" ]; then
  python3 scripts/degrid.py "$RUN/models/srgan.pt" "$DATA" "$RUN/degrid" "${DEGRID[@]}"
fi
SRRESNET=()  # --srgan-v3 has no MSE phase: its SRResNet is the bundled one it started from
[ -z "$V3" ] || SRRESNET=(--srresnet plfw/weights/srresnet.pt)
python3 scripts/score_models.py "$RUN" "$DATA" "$OUT" --limit "${EVAL_LIMIT:-0}" \
  "${SRRESNET[@]}" --srgan "$RUN/degrid/generator.pt"
echo "train_models.sh: wrote $OUT/eval.json and $OUT/eval.md" >&2
