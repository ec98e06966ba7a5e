#!/usr/bin/env bash
# GPU check of training throughput (not a test; UNTESTED so far: no GPU machine has run it yet).
#
# On a fresh GPU machine with the repo checked out, from the repo root:
#     bash scripts/device_check.sh
# It makes a virtualenv, installs torch (PyPI's default CUDA build) and this package, then runs
#   - scripts/bench_train.py for the small and medium presets in bf16 with torch.compile
#     (Lightning vs bare loop: target lightning / bare >= 0.95; MFU target >= 40 %),
#   - scripts/bench_generate.py on the GPU (KV-cache speedup),
#   - the real path on the GPU: the demo's model trained there (trainer=gpu, bf16), then rolled with every kind of
#     constraint, served through the batching engine and scored there (scripts/device_roll.py: the same notes as
#     the CPU for greedy rolls, the same bits/note within 1e-3).
# Each run's output is also written to "$OUT" when that is set (else ./outputs/device_check).
#
# Environment:
#   VENV=path            where the virtualenv goes (default /tmp/theremin-gpu-venv: outside the work tree)
#   USE_SYSTEM_PYTHON=1  skip the venv and the installs: use python3 as it is (a machine with torch, Lightning
#                        and torchmetrics already there and no network); wheels in ./.whl (omegaconf and
#                        antlr4-python3-runtime, say) are installed offline into /tmp/site first
#   TORCH_SPEC=...       what `pip install` gets for torch (default: torch)
set -euo pipefail

cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-outputs/device_check}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1

if [[ "${USE_SYSTEM_PYTHON:-0}" == 1 ]]; then
    PY=python3
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    VENV="${VENV:-/tmp/theremin-gpu-venv}"
    python3 -m venv "$VENV"
    PY="$VENV/bin/python"
    "$PY" -m pip install --upgrade --quiet pip
    "$PY" -m pip install --quiet "${TORCH_SPEC:-torch}"
    "$PY" -m pip install --quiet -e .
fi

{
    nvidia-smi || true
    "$PY" -c 'import torch, pytorch_lightning as pl; print("torch", torch.__version__, "cuda", torch.version.cuda,
"lightning", pl.__version__, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
} 2>&1 | tee "$OUT_DIR/env.txt"

status=0
for preset in small medium; do
    echo "=== bench_train --preset $preset"
    "$PY" scripts/bench_train.py --preset "$preset" --device cuda --precision bf16-mixed \
        --batch-size 32 --block-size 1024 --steps 40 --warmup 10 --compile 2>&1 \
        | tee "$OUT_DIR/bench_train_$preset.txt" || status=1
done

echo "=== bench_generate"
"$PY" scripts/bench_generate.py --device cuda 2>&1 | tee "$OUT_DIR/bench_generate.txt" || status=1

echo "=== the demo's model trained, rolled, served and scored on the GPU"
"$PY" -m theremin.apps.train experiment=demo trainer=gpu paths.data_dir="$OUT_DIR/data" \
    hydra.run.dir="$OUT_DIR/train" 2>&1 | tail -5 | tee "$OUT_DIR/train_gpu.txt" || status=1
"$PY" scripts/device_roll.py "$OUT_DIR/train/checkpoints/last.ckpt" --device cuda --out "$OUT_DIR/rolls" 2>&1 \
    | tee "$OUT_DIR/device_roll.txt" || status=1

echo "outputs in $OUT_DIR"
exit "$status"
