#!/usr/bin/env bash
# The GPU checks of the noise index, as one script for a lent GPU machine (or any CUDA box with torch).
#   bash bench/gpu_check.sh OUT_DIR
# Installs wheels from .whl/ first when that folder exists (the lent machines reach no package index), then
# runs bench/gpu_noise.py (Markdown tables + JSON), the CUDA-only tests of index/ and the CPU decode rate.
# The wheels, fetched on a machine with PyPI for the GPU machine's Python 3.12:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl faiss-cpu==1.15.1 \
#     open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 pydantic==2.14.4 pydantic-core==2.50.5 \
#     annotated-types==0.8.0 typing-inspection==0.4.5
set -uo pipefail
out=${1:?usage: bench/gpu_check.sh OUT_DIR}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, triton, torchvision; print('torch', torch.__version__, 'triton', triton.__version__, 'torchvision', torchvision.__version__)" | tee -a "$out/gpu.txt"
timeout 420 python3 bench/gpu_noise.py --json "$out/gpu_noise.json" 2>&1 | tee "$out/gpu_noise.log"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/index/test_kmeans.py tests/index/test_device_decode.py \
  "tests/index/test_noise.py::test_whitened_in_place_embeddings_run_on_the_torch_backends" \
  2>&1 | tee "$out/pytest.log"
# The CPU side of --decode-on workers on this machine's cores (per-core rate, and with 14 workers).
timeout 60 python3 bench/noise_perf.py decode --workers 1 14 2>&1 | tee "$out/decode_cpu.log"
