#!/usr/bin/env bash
# The GPU measurement in one shot: `scripts/bench.py --device cuda` (benchmarks/accelerator.py) with its JSON, its
# report section and its log written under $OUT.
#
#   scripts/gpu_bench.sh prepare   on a machine with pip and the network: the wheels of what the GPU machine's image
#                                  lacks (hydra-core, omegaconf, antlr4-python3-runtime, simplejpeg), for its
#                                  Python 3.12, into .whl/ (git-ignored; about 1 MB)
#   scripts/gpu_bench.sh           on the GPU machine, from a copy of the working tree with .whl/ beside it: installs
#                                  those wheels into a private folder if its python3 lacks them, then measures
#
# With the `run` tool: command `scripts/gpu_bench.sh`, carry [".whl"], timeout_s 600. What it expects of the machine:
# a `python3` holding torch (with CUDA), torchvision, lightning, timm, torchmetrics, numpy, pillow, pandas, pyyaml,
# psutil and tensorboard (the image's own; the project's pinned versions are not needed), and for the fp32 and int8
# ONNX serving rows onnx, onnxscript and onnxruntime (not among the wheels: with onnx_ir, ml_dtypes, flatbuffers and
# protobuf they are about 45 MB, most of what `run` carries, and protobuf would shadow the image's own; where they
# are missing, those rows are recorded as skipped, in one line, and the TorchScript rows still run), no network, a
# few GB of
# disk under /tmp (generated images and the pre-decoded caches). Environment: OUT (default /tmp/faceattr-gpu),
# PYTHON (python3), DEVICE (cuda; cpu runs the same code on the CPU), MODE (full; quick and tiny are shorter),
# LIMIT_S (seconds before the measurement is stopped, 480: the log is kept, the JSON and report are not written).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEELS=(hydra-core==1.3.8 omegaconf==2.3.1 simplejpeg==1.9.0)

if [ "${1:-}" = prepare ]; then
    mkdir -p .whl
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    # antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is published as source only: a pure-Python wheel.
    "$PYTHON" -m pip wheel -q --no-deps --no-cache-dir -w .whl antlr4-python3-runtime==4.9.3
    ls .whl
    exit 0
fi

OUT=${OUT:-/tmp/faceattr-gpu}
DEVICE=${DEVICE:-cuda}
MODE=${MODE:-full}
LIMIT_S=${LIMIT_S:-480}
mkdir -p "$OUT"

missing=$("$PYTHON" -c 'import importlib.util as u; print(*[m for m in ("hydra", "omegaconf", "antlr4", "simplejpeg") if u.find_spec(m) is None])')
if [ -n "$missing" ]; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "error: $PYTHON lacks $missing and there is no .whl/: run 'scripts/gpu_bench.sh prepare' where pip works, and carry .whl" >&2
        exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/faceattr-site .whl/*.whl
    export PYTHONPATH=/tmp/faceattr-site${PYTHONPATH:+:$PYTHONPATH}
fi

export FACEATTR_CACHE=${FACEATTR_CACHE:-/tmp/faceattr-cache} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 BENTOML_DO_NOT_TRACK=True
{
    date -u
    nvidia-smi || echo "(no nvidia-smi)"
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())'
    "$PYTHON" -c 'import importlib.util as u; print("ONNX rows need onnx, onnxscript, onnxruntime; missing:", *[m for m in ("onnx", "onnxscript", "onnxruntime") if u.find_spec(m) is None] or ["none"])'
} >"$OUT/env.txt" 2>&1

set -o pipefail
timeout "$LIMIT_S" "$PYTHON" scripts/bench.py --device "$DEVICE" --mode "$MODE" \
    --json "$OUT/gpu.json" --markdown "$OUT/gpu.md" 2>&1 | tee "$OUT/gpu.log"
