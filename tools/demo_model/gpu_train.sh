#!/usr/bin/env bash
# The demo model trained ~100x longer on one GPU, as one prepared command for the device tool.
#
# Here, on the CPU, once (the work folder built by `python -m tools.demo_model all ...`, with the chosen
# recipe's parallel stream; ~17 MiB packed, checked against a 35 MiB budget):
#     python -m tools.demo_model --work-dir cache/demo_train parallel --layout alone --tokens 4000000
#     python -m tools.demo_model --work-dir cache/demo_train pack --out cache/gpu_pack --parallel-layout alone
# then with the device tool (the pack is gitignored, so it must be carried):
#     run(command="bash tools/demo_model/gpu_train.sh", timeout_s=560, carry=["cache/gpu_pack"])
#
# On the GPU: unpack (every stream checked against its SHA-256), then train the largest Llama that stays
# <= 25 MB in bf16 with 8 layers (hidden 288, FFN 1152: 12,317,472 parameters, 24.6 MB) on the chosen
# recipe (10 % of rows from the `alone` parallel-program stream; README "Parallel programs") for 300M
# tokens or MAX_MINUTES (default 8), whichever comes first: the learning-rate schedule follows the nearer
# budget, so a slower card still ends its schedule. The model is saved to $OUT/model every minute in
# shards under 16 MiB (swapped in whole), so a run cut off by the time limit still returns one; the log is
# $OUT/train.out. At most 8 files come back: the finished run drops the tokenizer files (they are in the pack).
#
# Back here: python -m tools.recipe_experiment --model shipped=neuro/assets/demo_model --model gpu=<files_at>/model
#   --baseline shipped --work-dir <a work folder unpacked from the same pack> --transfer --out DIR
# (copy the pack's tokenizer into the model folder first); replace the shipped model only if it passes.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
PACK=${PACK:-cache/gpu_pack}
OUT=${OUT:-cache/gpu_out}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
RECIPE=(--parallel-share 0.10 --parallel-layout alone)
ARCH=(--layers 8 --hidden 288 --intermediate 1152 --heads 8 --kv-heads 4)
{
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$PY" -m tools.demo_model --work-dir "$WORK" unpack --packed "$PACK"
    "$PY" -m tools.demo_model --work-dir "$WORK" --out-dir "$OUT/model" train "${ARCH[@]}" "${RECIPE[@]}" \
        --max-tokens "${MAX_TOKENS:-300000000}" --max-minutes "${MAX_MINUTES:-8}" --snapshot-minutes 1 \
        --max-shard-mb 15 --log-every 200 --eval-every 2000 ${TRAIN_ARGS:-}
    cp "$WORK/train_metrics.json" "$OUT/"
    rm -f "$OUT/model/tokenizer.json" "$OUT/model/tokenizer_config.json"
} 2>&1 | tee "$OUT/train.out"
