#!/usr/bin/env bash
# One-shot GPU benchmark: bench/bench_capture.py for the real shapes of Llama-3.1-8B and Qwen2.5-Coder-32B
# (random weights, bf16, built directly on the GPU), each with its side-by-side table (forward,
# forward+statistics, activation-only forward+backward, forward+backward+PLS; peak memory; early-exit
# embeddings) and whole-corpus HumanEval-X PLS; then the cross-device check (bench/bench_cross_device.py)
# and the memory plans of both presets (python -m neuro plan) beside the measured peaks. About 4-5 minutes on one H200, 8 at most (per-step
# timeouts); the 32B step needs an H200 (65.5 GB of weights), the 8B step fits an H100.
#
#   llama-3.1-8b       batches of 8 x 512 tokens (the design notes' H200 prototype shape), 3 per repetition,
#                      median of 5; ~16 GB weights + ~30 GB activations for forward+backward.
#   qwen2.5-coder-32b  batches of 2 x 512 tokens, 2 per repetition, median of 3: 65.5 GB of weights leave
#                      ~75 GB of an H200, and an activation-only forward+backward keeps ~25-30 MB a token
#                      (64 layers, 152k-entry logits), so ~30 GB a batch; HumanEval-X in batches of 1024 tokens.
#
# JSON results go to $OUT/<preset>.json and the log to $OUT/gpu_bench.log when OUT is set.
#
# HumanEval-X: the first of $HEX_DIR, .bench-data/humaneval-x, ../shared/data/humaneval-x. The device
# machine receives only the repository, so copy the data in first, here (not committed):
#     mkdir -p .bench-data && cp -r ../shared/data/humaneval-x .bench-data/ && echo /.bench-data/ >> .git/info/exclude
# then, with the device tool:
#     run(command="bash bench/gpu_bench.sh", kind="nvidia-h200", timeout_s=540,
#         carry=[".bench-data", "neuro/assets/demo_model/tokenizer.json",
#                "neuro/assets/demo_model/tokenizer_config.json"])
# (the demo tokenizer encodes the text of the random-weight models; without it a character-level
# stand-in is used and the output says so). The machine's python3 has torch and transformers; it has no
# tree-sitter, so the app-default HumanEval-X timing (syntax profile) is reported as skipped there.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

HEX=""
for dir in "${HEX_DIR:-}" .bench-data/humaneval-x ../shared/data/humaneval-x; do
    if [ -n "$dir" ] && [ -d "$dir" ]; then HEX=$dir; break; fi
done
if [ -n "$HEX" ]; then HEX_ARGS=(--humaneval-x "$HEX"); else HEX_ARGS=(); echo "HumanEval-X not found: skipped"; fi

LOG=/dev/null
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; LOG=$OUT/gpu_bench.log; fi

step() {  # step SECONDS PRESET ARGS...
    local limit=$1 preset=$2; shift 2
    local json=()
    if [ -n "${OUT:-}" ]; then json=(--json-out "$OUT/$preset.json"); fi
    echo "=== $preset ($(date +%T))"
    timeout "$limit" "$PY" bench/bench_capture.py --config "$preset" "${json[@]}" "$@" \
        || echo "=== $preset: exit status $? (124: over its ${limit} s)"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
    step 200 llama-3.1-8b "${HEX_ARGS[@]}"
    step 260 qwen2.5-coder-32b "${HEX_ARGS[@]}"
    echo "=== cross-device: half the blocks on cuda:0, half on the CPU, against one device ($(date +%T))"
    cross=/dev/null
    if [ -n "${OUT:-}" ]; then cross=$OUT/cross_device.json; fi
    timeout 120 "$PY" bench/bench_cross_device.py --json | tee "$cross" || echo "=== cross-device: exit status $?"
    echo "=== plan vs measured: python -m neuro plan for both presets (compare device_bytes with the peaks above)"
    for preset in llama-3.1-8b qwen2.5-coder-32b; do
        "$PY" -m neuro plan --model "bench/configs/$preset" --device-memory 80GB --json > "${OUT:-/tmp}/plan-$preset.json" \
            && echo "plan-$preset.json written"
    done
    echo "=== done ($(date +%T))"
} 2>&1 | tee "$LOG"
