#!/usr/bin/env bash
# The cost of degraded_folder's on-the-fly degradation against the training step it feeds:
# loader images/s (plfw bench --loader, 12 batches of 8) beside the quickstart's fp32 MSE step,
# for 0, 1 and 2 loader workers at 96x96 crops and for 0 and 2 at Real-ESRGAN's 256x256, with
# hr_folder (no degradation) at 256 for comparison. Run from the repository root, on an idle
# machine (anything else on the cores lowers both figures). One line per run:
#   crop C workers W <dataset> <loader img/s> step img/s <step img/s> <loader / step>
set -euo pipefail
run() {
    local crop=$1 workers=$2 kind=$3
    shift 3
    plfw bench --json --config configs/quickstart.yaml --steps mse --batch 8 --crop "$crop" \
        --reference none --loader assets/photos/train --workers "$workers" --precision fp32 \
        "$@" 2>/dev/null | python -c "
import json, sys
d = json.load(sys.stdin)
s = d['steps']['mse']
print('crop $crop workers $workers $kind', d['loader']['images_per_s'], 'step img/s',
      s['images_per_s'], s.get('loader_ratio'))"
}
degraded() { echo "data.train={name: degraded_folder, root: assets/photos/train, crop: $1, _replace: true}"; }
for workers in 0 1 2; do run 96 "$workers" degraded_folder "$(degraded 96)"; done
for workers in 0 2; do
    run 256 "$workers" degraded_folder "$(degraded 256)"
    run 256 "$workers" hr_folder
done
