#!/usr/bin/env bash
# Idempotent set-up of the clab environment in a virtual environment.
#
#   bash scripts/install.sh [VENV]        (default VENV: .venv)
#
# Order matters: mmcv-full 1.7.2 has no wheels and compiles its C++ ops against the torch that is
# already installed, so torch comes first, then the build tools, then mmcv-full without build isolation,
# then mmdet and the rest. Every step is skipped when what it installs is already there, so a second run
# takes seconds (pip also keeps the mmcv-full wheel it built in its cache).
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3.11}
TORCH_VERSION=2.9.1
TORCHVISION_VERSION=0.24.1
MMCV_VERSION=1.7.2

log() { printf '[install] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

has() { "$PY" -c "$1" >/dev/null 2>&1; }

if ! has "import torch, torchvision, sys; sys.exit(not (torch.__version__.split('+')[0] == '$TORCH_VERSION' and torchvision.__version__.split('+')[0] == '$TORCHVISION_VERSION'))"; then
    log "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"
    "${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

if ! has "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')"; then
    log "building mmcv-full $MMCV_VERSION with its ops (about 11 minutes the first time, seconds once pip has cached the wheel)"
    "${PIP[@]}" install "setuptools<70" wheel ninja "numpy==2.2.6" "opencv-python==4.12.0.88" "yapf==0.40.1"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" install --no-build-isolation "mmcv-full==$MMCV_VERSION"
fi

if [ -f pyproject.toml ]; then
    log "installing clab and its pinned dependencies"
    "${PIP[@]}" install --no-build-isolation -e ".[test]"
    log "registering the 'clab' Jupyter kernel"
    "$PY" -m ipykernel install --user --name clab --display-name "Python (clab)" >/dev/null
fi
log "done: $("$PY" -c 'import torch, mmcv, mmdet; print("torch", torch.__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__)' 2>/dev/null || echo 'clab not installed yet')"
