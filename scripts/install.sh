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
# Installed versions are read from package metadata (fast: nothing heavy is imported).
version_is() { has "import importlib.metadata as m, sys; sys.exit(m.version('$1').split('+')[0] != '$2')"; }
mmcv_ops_built() { has "import importlib.util, glob, os, sys; d = os.path.dirname(importlib.util.find_spec('mmcv').origin); sys.exit(not glob.glob(os.path.join(d, '_ext*.so')))"; }

if ! version_is torch "$TORCH_VERSION" || ! version_is torchvision "$TORCHVISION_VERSION"; then
    log "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"
    "${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

if ! version_is mmcv-full "$MMCV_VERSION" || ! mmcv_ops_built; then
    log "building mmcv-full $MMCV_VERSION with its ops (about 11 minutes the first time, seconds once pip has cached the wheel)"
    "${PIP[@]}" install "setuptools<70" wheel ninja "numpy==2.2.6" "opencv-python==4.12.0.88" "yapf==0.40.1"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" install --no-build-isolation "mmcv-full==$MMCV_VERSION"
fi

STAMP="$VENV/.clab-install-stamp"
WANT="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1) $(pwd)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! version_is clab "$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)"; then
    log "installing clab and its pinned dependencies"
    "${PIP[@]}" install --no-build-isolation -e ".[test]"
    echo "$WANT" > "$STAMP"
fi
KERNEL_JSON="$("$PY" -c 'import jupyter_core.paths as p; print(p.jupyter_data_dir())' 2>/dev/null)/kernels/clab/kernel.json"
if ! grep -qF "\"$(cd "$(dirname "$PY")" && pwd)/python\"" "$KERNEL_JSON" 2>/dev/null; then
    log "registering the 'clab' Jupyter kernel"
    "$PY" -m ipykernel install --user --name clab --display-name "Python (clab)" >/dev/null
fi
# the position-first search's compiled kernel (clab/models/native.py): built once per machine and kernel
# version (seconds), so that the first test frame does not build it; where it cannot be built or run, the
# search keeps torch ops
KERNEL_STATE="$("$PY" -c 'import warnings; warnings.simplefilter("ignore"); from clab.models import native; print(f"ready ({native.cpu_isas()[0]})" if native.tiled_top() else "not used on this machine (torch ops)")')"
log "compiled search kernel: $KERNEL_STATE"
log "ready: $("$PY" -c 'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ("torch", "mmcv-full", "mmdet", "clab")))')"
