#!/usr/bin/env bash
# The bundled models with and without --self-ensemble on Set5 and Set14 (fp32), one JSON per
# model, set and mode beside this script. Run from anywhere: bash docs/models/self_ensemble/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
D=${DATA:-../shared/data}/benchmarks
for m in srresnet srgan; do for s in Set5 Set14; do for e in "" "--self-ensemble"; do
  tag=$m-$s${e:+-ens}
  [ -s "$here/$tag.json" ] && continue
  python -m plfw eval --model $m --hr $D/$s/HR --lr $D/$s/LR_bicubic/X4 --scale 4 \
    --metrics psnr_y,ssim_y,st_lpips_alex,st_lpips_vgg,periodic_db --json $e > "$here/$tag.tmp"
  mv "$here/$tag.tmp" "$here/$tag.json"
  echo "$tag done $(date +%T)"
done; done; done
