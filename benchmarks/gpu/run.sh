#!/usr/bin/env bash
# The GPU benchmark and check run, for a machine with one CUDA GPU and PyTorch installed
# (nothing is downloaded; pure-Python wheels this project needs may be carried in .whl/).
#
#   bash benchmarks/gpu/run.sh            # writes results under $OUT (default /tmp/tfs-gpu)
#
# 1. the conformance suite (CUDA device moves, bfloat16) over every registered implementation;
# 2. every attention kernel from 1k to 16k tokens, bfloat16: time, TFLOP/s, allocator peak;
# 3. a gpt2 (124M) training step, context 1024, batch 16, bfloat16 autocast, torch.compile,
#    beside the plain-PyTorch reference, with MFU against a matmul peak measured on the spot.
#    Then nanoGPT's own settings for both models: vocabulary padded to 50304, TF32 allowed,
#    batches of 12 with 40 of them per optimiser step (its gradient accumulation, which makes
#    the optimiser's share of the time 40x smaller), fused AdamW and compile as before.
# 4. tfs train on one GPU with --parallel fsdp (a process group of one) beside --parallel ddp:
#    the training tokens/s of each, gpt2 shapes, context 1024, bfloat16.
# 5. the Triton plugin's GPU tests (compiled kernels against the formula; memory linear in length)
#    and generation against transformers' generate, where pytest and transformers are present.
# 6. (QUALITY=1, about 3-5 more minutes) nanoGPT's Shakespeare configuration with dropout 0.2
#    (benchmarks/gpu/shakespeare_char.toml) for its 5,000 steps: the validation loss to beat is 1.47.
# The plugin registers itself through a wheel in .whl/ (build it with
# `pip wheel --no-deps -w .whl plugins/triton-flash`), so step 2 includes triton_flash.
# A short table is printed last. About 8-10 minutes on an H100.
set -uo pipefail
OUT=${OUT:-/tmp/tfs-gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/tfs-site .whl/*.whl && export PYTHONPATH=/tmp/tfs-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
tfs() { python3 -m transformer_from_scratch "$@"; }
SEQ=${SEQ:-1024,2048,4096,8192,16384}
SPEC=${SPEC:-gpt2}

python3 -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0))" | tee "$OUT/machine.txt"

echo "== 1/4 conformance (CUDA moves, bfloat16)"
timeout 240 python3 -m transformer_from_scratch check --jobs 12 --json "$OUT/check.json" > "$OUT/check.txt" 2>&1
echo "exit $?: $(tail -1 "$OUT/check.txt")"

echo "== 2/4 attention kernels, bfloat16"
timeout 300 python3 -m transformer_from_scratch bench attention --device cuda --dtype bfloat16 \
  --seq "$SEQ" --batch 1 --heads 16 --d-head 64 --repeats 5 --baseline sdpa \
  --json "$OUT/attention_gpu.json" --plot "$OUT/attention_gpu.png" > "$OUT/attention_gpu.txt" 2> "$OUT/attention_gpu.err"
echo "exit $?"

echo "== 3/4 training step, $SPEC, bfloat16, compiled"
timeout 300 python3 -m transformer_from_scratch bench train --spec "$SPEC" --kernel sdpa --batch-size 16 \
  --device cuda --dtype bfloat16 --compile --rounds 5 > "$OUT/train_gpu.txt" 2> "$OUT/train_gpu.err"
echo "exit $?"
timeout 300 python3 -m transformer_from_scratch bench train --spec "$SPEC" --kernel sdpa --batch-size 12 \
  --accumulate 40 --set d_vocab=50304 --tf32 --device cuda --dtype bfloat16 --compile --rounds 3 \
  > "$OUT/train_gpu_nanogpt.txt" 2> "$OUT/train_gpu_nanogpt.err"
echo "exit $?"

echo "== 4/4 tfs train on one GPU: fsdp beside ddp"
for mode in ddp fsdp; do
  timeout 240 python3 -m transformer_from_scratch train --spec "$SPEC" --device cuda --dtype bfloat16 \
    --parallel $mode --steps 40 --batch-size 8 --context 1024 --eval-every 1000 --eval-batches 1 \
    --checkpoint-every 1000 --sample-tokens 0 --quiet --out "$OUT/train_$mode" \
    > "$OUT/train_$mode.txt" 2>&1
  echo "$mode exit $?: $(grep -o '[0-9.]*k tok/s while training' "$OUT/train_$mode.txt")" | tee -a "$OUT/parallel.txt"
done

echo "== 5 triton plugin on the GPU; generation against transformers"
timeout 240 python3 -m pytest -q -p no:cacheprovider -o addopts="" plugins/triton-flash/tests/test_kernel.py \
  -k gpu > "$OUT/triton_tests.txt" 2>&1
echo "exit $?: $(tail -1 "$OUT/triton_tests.txt")"
timeout 240 python3 benchmarks/generation_vs_hf.py --device cuda --rounds 3 > "$OUT/generation_gpu.txt" 2>&1
echo "exit $?"

if [ "${QUALITY:-0}" = 1 ]; then
  echo "== 6 nanoGPT's Shakespeare configuration, 5,000 steps"
  timeout 600 python3 -m transformer_from_scratch train --spec benchmarks/gpu/shakespeare_char.toml \
    --data "${DATA:-../shared/data/tinyshakespeare.txt}" --tokenizer char --steps 5000 --batch-size 64 \
    --lr 1e-3 --min-lr 1e-4 --warmup 100 --beta2 0.99 --weight-decay 0.1 --grad-clip 1.0 \
    --device cuda --dtype bfloat16 --compile --eval-every 250 --eval-batches 200 \
    --checkpoint-every 5000 --sample-tokens 200 --quiet --out "$OUT/shakespeare" > "$OUT/shakespeare.txt" 2>&1
  echo "exit $?: $(grep -o 'validation loss [0-9.]*' "$OUT/shakespeare.txt" | tail -1)"
fi

echo; echo "================ summary ================"
cat "$OUT/machine.txt"
tail -1 "$OUT/check.txt"
grep -E "^FAIL" "$OUT/check.txt" | head -5
cat "$OUT/train_gpu.txt"
cat "$OUT/train_gpu_nanogpt.txt"
tail -1 "$OUT/triton_tests.txt"
cat "$OUT/generation_gpu.txt"
cat "$OUT/parallel.txt"
echo
cat "$OUT/attention_gpu.txt"
