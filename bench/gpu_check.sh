#!/usr/bin/env bash
# GPU check: install finsent (no dependencies), restore MiniLM from its fp16 copy, train ~1 epoch of LoRA on AllAgree
# on the GPU, predict and evaluate with --device cuda, then time the torch GPU path on ~200,000 PhraseBank sentences
# against the transformers pipeline (batch 64) and the tokenizer alone (bench/gpu.py). Needs torch with CUDA,
# transformers, peft, accelerate, scikit-learn and scipy; not mlflow (tracking warns and the run goes on).
#
#   here:   python bench/pack_weights.py pack "$(python -c 'from finsent.models.hub import packaged_model_dir as p; print(p())')" .gpu/minilm
#           cp ../shared/data/FinancialPhraseBank-v1.0.zip .gpu/    # .gpu/ is git-ignored: never committed
#   there:  bash bench/gpu_check.sh [OUT_DIR]         # device call with carry [".gpu"]; OUT_DIR: $OUT, else bench/results/gpu
#   dry:    bash bench/gpu_check.sh --dry-run DIR     # on a CPU: the same steps, tiny sizes, no install, --device cpu
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT_DIR=${1:-${OUT:-bench/results/gpu}}
PY=${PYTHON:-python3}
DATA=.gpu/FinancialPhraseBank-v1.0.zip
WORK=$(mktemp -d)
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "== $*" | tee -a "$OUT_DIR/gpu_check.log"; }
run() { log "$*"; "$@" 2>&1 | tee -a "$OUT_DIR/gpu_check.log"; }

[ -f .gpu/minilm/chunk-000 ] && [ -f "$DATA" ] || {
  echo "gpu_check: .gpu/ is missing; run 'python bench/pack_weights.py pack ...' (see the top of this file) and carry .gpu" >&2
  exit 2
}
if [ $DRY = 1 ]; then
  DEVICE=cpu; N=400; PIPE_N=64; BATCHES="64 128"; TRAIN=(--max_train_samples 64 --max_eval_samples 32 --max_length 64)
else
  DEVICE=cuda; N=200000; PIPE_N=50000; BATCHES="256 512 1024"; TRAIN=()
  nvidia-smi -L | tee -a "$OUT_DIR/gpu_check.log"
  # finsent itself, no dependencies (offline); PYTHONPATH above runs this checkout's code even if the install fails
  run $PY -m pip install -q --no-deps --no-build-isolation -e . || log "pip install failed; running from src/ via PYTHONPATH"
fi
run $PY bench/pack_weights.py restore .gpu/minilm "$WORK/minilm"
$PY - <<'EOF' 2>&1 | tee -a "$OUT_DIR/gpu_check.log"
import sys
import finsent.apps.cli, finsent.training.trainer, finsent.apps.predict, finsent.inference.predictor  # the train/predict paths import without mlflow
print("finsent imports; mlflow loaded:", "mlflow" in sys.modules)
EOF

RUN_DIR=$WORK/runs/gpu1
run $PY -m finsent train --model_name "$WORK/minilm" --data_path "$DATA" --use_lora --num_epochs 1 \
  --output_dir "$RUN_DIR" --version gpu1 "${TRAIN[@]}"
cp "$RUN_DIR/results.json" "$OUT_DIR/train_results.json"
run $PY -m finsent predict --model_dir "$RUN_DIR" --device $DEVICE "Operating profit rose to EUR 13.1 mn ." "Sales fell sharply ."
run $PY -m finsent evaluate --model_dir "$RUN_DIR" --device $DEVICE --data_path "$DATA" --agreement all \
  --output_dir "$WORK/eval"
$PY - "$DATA" "$N" >"$WORK/sentences.txt" <<'EOF'
import sys
from finsent.data.corpus import load_data
texts = load_data(sys.argv[1], "50").texts
n = int(sys.argv[2])
print("\n".join((texts * (n // len(texts) + 1))[:n]))
EOF
log "finsent predict --device $DEVICE on $N sentences from a file (streamed in chunks of 65536)"
start=$EPOCHREALTIME
$PY -m finsent predict --model_dir "$RUN_DIR" --device $DEVICE --input "$WORK/sentences.txt" \
  --output "$WORK/scored.jsonl" --chunk_size 65536 --quiet 2>&1 | tee -a "$OUT_DIR/gpu_check.log"
end=$EPOCHREALTIME
$PY -c "import sys; n, s = int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2]); print(f'finsent predict (file in, file out): {n} sentences in {s:.1f} s, {n / s:,.0f}/s')" \
  "$N" "$start" "$end" | tee -a "$OUT_DIR/gpu_check.log"
run $PY bench/gpu.py --model_dir "$RUN_DIR" --data_path "$DATA" --device $DEVICE --n $N --pipeline_n $PIPE_N \
  --batch_sizes $BATCHES --out "$OUT_DIR"
rm -rf "$WORK"
log "done: $OUT_DIR/gpu.md"
