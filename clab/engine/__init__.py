"""Training and testing entry points (``clab train``, ``clab test``, ``clab robustness``) and their hooks."""
