#!/usr/bin/env bash
# GPU check for the deployment backends (issue 10), in one go on a machine with an NVIDIA GPU:
#   1. installs what is missing: the project's .venv (make venv), onnxruntime-gpu instead of the CPU
#      wheel, and TensorRT from pip if it installs (it may not: then the TRT rows are skipped, not faked);
#   2. runs the gpu-marked tests;
#   3. benches torch fp32 eager vs ONNX Runtime CUDA fp32 vs ONNX Runtime TensorRT fp16, and prints
#      whether TensorRT fp16 reaches the target: end-to-end >= 2x torch fp32 eager;
#   4. (issue 9) one batched defm_node for four cameras against four single-camera nodes, on the GPU,
#      where batching should pay (on a 2-core CPU it did not: bench/RESULTS.md).
# Usage: bash bench/gpu_check.sh [model ...]   (default: defm_resnet18 defm_efficientnet_b0 defm_vit_s14)
set -uo pipefail
cd "$(dirname "$0")/.."
MODELS=("${@:-defm_resnet18 defm_efficientnet_b0 defm_vit_s14}")
read -r -a MODELS <<< "${MODELS[*]}"
OUT=${OUT:-bench/gpu_out}
mkdir -p "$OUT"
PY=.venv/bin/python

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || { echo "no GPU visible"; exit 1; }
[ -x "$PY" ] || make venv || exit 1
if ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    "$PY" -m pip uninstall -q -y onnxruntime
    "$PY" -m pip install -q onnxruntime-gpu || { echo "onnxruntime-gpu did not install"; exit 1; }
fi
"$PY" -c "import tensorrt" 2>/dev/null || timeout 300 "$PY" -m pip install -q tensorrt \
    || echo "NOTE: TensorRT did not install from pip; TensorRT rows will be skipped"
# ORT's CUDA/TensorRT providers load cuDNN, cuBLAS and nvinfer from the nvidia/tensorrt pip wheels.
LIBS=$("$PY" - <<'EOF'
import glob, os, site
dirs = []
for sp in site.getsitepackages():
    dirs += glob.glob(os.path.join(sp, "nvidia", "*", "lib")) + glob.glob(os.path.join(sp, "tensorrt_libs"))
print(":".join(dirs))
EOF
)
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$PY" -c "import onnxruntime as o, torch; print('torch', torch.__version__, torch.cuda.get_device_name(), \
'| onnxruntime', o.__version__, o.get_available_providers())"

echo "== gpu tests"
"$PY" -m pytest -q -m gpu -rs test/ 2>&1 | tail -15

export DEFM_ROS_CACHE="$OUT/cache"
for m in "${MODELS[@]}"; do
    echo "== $m: torch fp32 eager vs onnxruntime CUDA fp32"
    .venv/bin/defm-ros bench -m "$m" --device cuda --precision fp32 --iters 200 --warmup 30 \
        -b torch onnxruntime --json "$OUT/$m-fp32.json" 2>/dev/null
    echo "== $m: onnxruntime TensorRT fp16 (first run builds the engine) vs torch fp16 autocast"
    .venv/bin/defm-ros bench -m "$m" --device cuda --precision fp16 --iters 200 --warmup 30 \
        -b onnxruntime:trt torch --json "$OUT/$m-fp16.json" 2>/dev/null
done

echo "== target: TensorRT fp16 end-to-end >= 2x torch fp32 eager"
"$PY" - "$OUT" "${MODELS[@]}" <<'EOF'
import json, sys
out, models = sys.argv[1], sys.argv[2:]
for m in models:
    try:
        fp32 = {r["backend"]: r for r in json.load(open(f"{out}/{m}-fp32.json"))["results"]}
        fp16 = {r["backend"]: r for r in json.load(open(f"{out}/{m}-fp16.json"))["results"]}
    except (OSError, ValueError) as exc:
        print(f"{m}: no results ({exc})")
        continue
    base = fp32["torch"]["end_to_end"]["median_ms"]
    trt = fp16["onnxruntime:trt"]
    if "TensorrtExecutionProvider" not in trt["info"]["providers"]:
        print(f"{m}: TensorRT provider not in use ({trt['info']['providers']}); no TensorRT figure")
        continue
    ms = trt["end_to_end"]["median_ms"]
    print(f"{m}: torch fp32 {base:.2f} ms, ORT CUDA fp32 {fp32['onnxruntime']['end_to_end']['median_ms']:.2f} ms, "
          f"TensorRT fp16 {ms:.2f} ms -> {base / ms:.2f}x {'PASS' if base / ms >= 2 else 'FAIL'}")
EOF

echo "== issue 9: four cameras x 15 Hz, R18 on cuda: one batched node vs four single-camera nodes"
timeout 300 "$PY" bench/bench_node.py --parts multi --device cuda --models defm_resnet18 --seconds 6 2>&1 \
    | grep -v "RANDOM WEIGHTS"
