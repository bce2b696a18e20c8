#!/usr/bin/env bash
# The README tour's pictures in docs/images/, drawn by dsp3d itself: short demo runs of fixed length, one
# seed (baseline and full: STEPS steps; DSP: STEPS/2 + STEPS/2, the same number of steps in all), then
# `dsp3d plot` on the three run folders. A step budget, so that the pictures do not depend on how busy
# the machine is.
#
#   docs/make_images.sh [WORK_DIR]      (or: make tour-images)
#
# About 12 minutes on 2 CPU cores with the default STEPS=600, the protocol of docs/method.md (env: STEPS,
# DSP3D, WORK_DIR). On a shared machine, OMP_NUM_THREADS=1 avoids threads waiting on each other.
set -euo pipefail
cd "$(dirname "$0")/.."
dsp3d=${DSP3D:-.venv/bin/dsp3d}
python=$(dirname "$dsp3d")/python
work=${1:-${WORK_DIR:-${TMPDIR:-/tmp}/dsp3d_tour}}
steps=${STEPS:-600}

"$dsp3d" demo --steps "$steps" --seeds 1 --out "$work/demo"  # one seed; DSP: steps/2 + steps/2
# The runs by their names (plot names a run by its folder): baseline, dsp, full.
mkdir -p "$work/runs"
for run in baseline dsp full; do ln -sfn "$work/demo/$run/seed0" "$work/runs/$run"; done
"$dsp3d" plot "$work/runs/baseline" "$work/runs/dsp" "$work/runs/full" --scene 0 -o "$work/plots"

# The README's pictures, as 256-colour PNGs (a fraction of the size, the same look).
mkdir -p docs/images
"$python" - "$work/plots" docs/images <<'EOF'
import sys
from pathlib import Path

from PIL import Image

plots, images = Path(sys.argv[1]), Path(sys.argv[2])
chosen = {
    "iou_per_class.png": "tour_iou_per_class.png",
    "training_curves.png": "tour_training_curves.png",
}
chosen.update({path.name: f"tour_{path.name}" for path in sorted(plots.glob("scene_*_dsp.png"))[:1]})
for source, target in chosen.items():
    with Image.open(plots / source) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(images / target, optimize=True)
    print(f"{images / target}: {(images / target).stat().st_size / 1024:.0f} KB")
EOF
