"""``import clab`` prints nothing (issue 12, point 2), and only the two known notices are filtered: each test
runs a fresh interpreter, since the notices appear once per process at import."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from clab import _quiet
from clab._quiet import CUDA_HOME_LOGGER, CUDA_HOME_NOTE


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_clab_prints_nothing():
    done = _python("import clab")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_only_the_two_notices_are_filtered():
    # the notice is real: importing mmcv alone shows it
    alone = _python("import mmcv")
    assert "MMCV will release v2.0.0" in alone.stderr
    # the filters alone (clab/_quiet.py loaded by path, without the rest of clab), then the real mmcv import
    code = f"""
import importlib.util, logging, warnings
spec = importlib.util.spec_from_file_location("quiet", {str(Path(_quiet.__file__))!r})
quiet = importlib.util.module_from_spec(spec); spec.loader.exec_module(quiet); quiet.install()
import mmcv
warnings.warn("a different mmcv warning")
log = logging.getLogger({CUDA_HOME_LOGGER!r})
log.warning({CUDA_HOME_NOTE + "'%s'"!r}, "/opt/cuda")   # the note itself: dropped
log.warning("something else about CUDA_HOME")          # another record of the same logger: shown
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "MMCV will release" not in done.stderr
    assert "a different mmcv warning" in done.stderr
    assert "something else about CUDA_HOME" in done.stderr
    assert "No CUDA runtime is found" not in done.stderr
