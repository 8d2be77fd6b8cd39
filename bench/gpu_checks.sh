#!/usr/bin/env bash
# The GPU measurements of the GPU-scale issue, as one call on a lent machine (run from the repo root):
#   1. images/s of a ResNet-50 step at 800 x 1216 for PAA, ATSS and FreeAnchor, fp32 / fp16 / bf16, and the
#      share of the step in assignment (bench/gpu_step.py);
#   2. PAA's batched assignment for a 16-image COCO-like batch on the GPU (bench/paa_assign.py; goal < 5 ms);
#   3. a quick study of 4 rows (studies/piou_table3_coco.yaml, seed 0) with one worker per GPU.
# Figures go to $OUT (default ./gpu-out). Missing packages (mlflow, optuna, pycocotools) travel as wheels:
# see /work/.library/device/README.md; step 3 is skipped, saying so, when they cannot be imported.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  nproc; } 2>&1 | tee "$OUT/machine.txt"
t=$(date +%s)
timeout "${STEP_TIMEOUT:-240}" $PY bench/gpu_step.py --batch "${BATCH:-8}" --json "$OUT/gpu_step.json" 2>&1 | tee "$OUT/gpu_step.log"
echo "gpu_step: $(( $(date +%s) - t )) s"
t=$(date +%s)
timeout "${ASSIGN_TIMEOUT:-120}" $PY bench/paa_assign.py --device cuda --images 16 --repeats 10 2>&1 | tee "$OUT/paa_assign.log"
echo "paa_assign: $(( $(date +%s) - t )) s"
if $PY -c "import mlflow, optuna, pycocotools" 2>"$OUT/imports.err"; then
  gpus=$($PY -c "import torch; print(','.join(map(str, range(torch.cuda.device_count()))))")
  t=$(date +%s)
  timeout "${STUDY_TIMEOUT:-300}" $PY cli.py study run studies/piou_table3_coco.yaml --profile quick --seeds 0 \
    --gpus "$gpus" --workspace /tmp/anchorlab-gpu 2>&1 | tail -40 | tee "$OUT/study.log"
  echo "study ($gpus): $(( $(date +%s) - t )) s" | tee -a "$OUT/study.log"
else
  echo "study skipped: $(tail -1 "$OUT/imports.err")" | tee "$OUT/study.log"
fi
