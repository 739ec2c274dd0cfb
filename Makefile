# Two commands do everything on a fresh machine with Python 3.11 and a C++ compiler:
#   make demo   set up .venv (torch, mmcv-full ops, mmdet, clab, the 'clab' Jupyter kernel), run the main job
#   make test   same set-up, then the test suite
# The set-up is idempotent: a second run installs nothing and rebuilds nothing.
VENV ?= .venv
PY := $(VENV)/bin/python
SEED ?= 0

.PHONY: install demo test
install:
	bash scripts/install.sh $(VENV)

demo: install
	$(PY) -m clab demo --out results/demo --seed $(SEED)

test: install
	$(PY) -m pytest -q tests
