"""Quiet imports: drop the two notices that ``import clab`` would print on every machine, and nothing else.

* mmcv 1.7 announces its 2.0 release with a ``UserWarning`` issued from ``mmcv/__init__.py`` at import
  ("On January 1, 2023, MMCV will release v2.0.0, ..."). It says nothing about this kit's use of mmcv.
* torch logs "No CUDA runtime is found, using CUDA_HOME='...'" through the ``torch.utils.cpp_extension``
  logger (a WARNING record, printed to stderr by logging's last-resort handler) when that module is
  imported on a machine that has a CUDA toolkit but no GPU; mmcv imports it. On a CPU machine that is the
  expected state, not a problem.

Both are matched by their exact text, so every other warning and log record still shows. :func:`install`
must run before mmcv or ``torch.utils.cpp_extension`` are first imported (``clab/__init__.py`` calls it
first); it is idempotent.
"""
from __future__ import annotations

import logging
import warnings

__all__ = ["MMCV_NOTICE", "CUDA_HOME_NOTE", "CUDA_HOME_LOGGER", "CudaHomeNoteFilter", "install"]

#: start of mmcv's release notice (a regular expression, as ``warnings.filterwarnings`` takes it)
MMCV_NOTICE = r"On January 1, 2023, MMCV will release v2\.0\.0"
#: start of torch's note (the logging format string, before its CUDA_HOME argument is filled in)
CUDA_HOME_NOTE = "No CUDA runtime is found, using CUDA_HOME="
#: the logger torch writes that note to
CUDA_HOME_LOGGER = "torch.utils.cpp_extension"


class CudaHomeNoteFilter(logging.Filter):
    """Drops the "No CUDA runtime is found" record; lets every other record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(CUDA_HOME_NOTE))


_installed = False


def install() -> None:
    """Add the mmcv warning filter and the torch logger filter (once per process)."""
    global _installed
    if _installed:
        return
    warnings.filterwarnings("ignore", message=MMCV_NOTICE, category=UserWarning, module=r"mmcv\Z")
    # getLogger returns the same object the torch module gets later, so the filter is in place before the
    # record is made
    logging.getLogger(CUDA_HOME_LOGGER).addFilter(CudaHomeNoteFilter())
    _installed = True
