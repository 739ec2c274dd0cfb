#!/usr/bin/env bash
# Build, on a CPU machine with a CUDA 13 toolkit, the wheels a GPU machine needs to run clab when its image
# already has Python 3.12 and torch 2.11.0 (CUDA 13) but no mmcv: mmcv-full 1.7.2 with CUDA ops for the
# chosen architectures, plus mmdet, yapf, pytorch-metric-learning, pycocotools, terminaltables, addict and
# clab itself. The wheels are not committed (wheels/ is ignored).
#
#   bash scripts/build_gpu_wheels.sh [OUT_DIR]        (default OUT_DIR: wheels/gpu-cp312)
#   ARCH=9.0 (H100/H200, default)   ARCH="8.0;9.0" (A100 too)   CUDA_HOME=/path/to/cuda-13   MAX_JOBS=2
#
# torch's CUDA headers include cuBLAS/cuSPARSE headers that a bare CUDA 13 toolkit may lack; the
# nvidia-*-cu13 packages that come with torch carry them, so their include folder is added to CPATH and to
# nvcc's flags. On the GPU machine:  pip install --no-deps wheels/gpu-cp312/*.whl
set -euo pipefail
OUT=${1:-wheels/gpu-cp312}
VENV=${VENV:-.venv-gpu-build}
ARCH=${ARCH:-9.0}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
if [ -z "${PYTHON:-}" ]; then
    if python3.12 -c "" >/dev/null 2>&1; then PYTHON=python3.12  # a pyenv shim exists even when 3.12 is not active
    elif command -v pyenv >/dev/null; then PYTHON="$(pyenv root)/versions/$(pyenv versions --bare | grep '^3\.12' | tail -1)/bin/python"
    else echo "need Python 3.12 (set PYTHON=...)" >&2; exit 2; fi
fi
[ -x "$CUDA_HOME/bin/nvcc" ] || { echo "no nvcc under CUDA_HOME=$CUDA_HOME" >&2; exit 2; }
log() { printf '[gpu-wheels] %s\n' "$*"; }

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
log "torch 2.11.0 (CUDA 13) and build tools in $VENV"
"${PIP[@]}" install "torch==2.11.0" "torchvision==0.26.0" "setuptools<70" wheel ninja "numpy<3"
INC="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "include"))')"
[ -d "$INC" ] || { echo "no cu13 headers at $INC" >&2; exit 2; }
log "extra CUDA headers from $INC"
mkdir -p "$OUT"
log "mmcv-full 1.7.2 with CUDA ops for sm_${ARCH} (about 27 minutes with MAX_JOBS=2)"
CPATH="$INC${CPATH:+:$CPATH}" NVCC_APPEND_FLAGS="-I$INC" CUDA_HOME="$CUDA_HOME" FORCE_CUDA=1 MMCV_WITH_OPS=1 \
    TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=${MAX_JOBS:-2} \
    "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$OUT" "mmcv-full==1.7.2"
log "pure-Python dependencies and clab"
"${PIP[@]}" wheel --no-deps -w "$OUT" "mmdet==2.28.2" "yapf==0.40.1" "pytorch-metric-learning==2.9.0" \
    "pycocotools==2.0.11" terminaltables addict
"${PIP[@]}" wheel --no-deps --no-build-isolation -w "$OUT" .
log "check: mmcv ops import beside torch 2.11"
"${PIP[@]}" install --no-deps "$OUT"/mmcv_full-*.whl
"$VENV/bin/python" -c "import torch, mmcv.ops; print('torch', torch.__version__, 'mmcv', mmcv.__version__, 'ops ok')"
ls -la "$OUT"
