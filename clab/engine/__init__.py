"""Training and testing entry points (``clab train``, ``clab test``, ``clab robustness``) and their hooks."""
from . import runners  # noqa: F401  (registers EpochBasedRunnerNoPause, the tiny configs' runner)
