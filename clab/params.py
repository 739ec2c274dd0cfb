"""Run parameters for the notebooks: one flat schema shared by every notebook of a run.

A run is described by one flat YAML file in ``papermill_params/`` (papermill merges parameter files
shallowly, so nesting would silently replace whole blocks). Every key must be a name of :data:`SCHEMA`
with a value of the declared type; :func:`check_parameters` enforces that in the runner before any notebook
starts and again inside each notebook (on the names papermill injected), so a typo fails at once with the
parameter named, instead of being ignored.
"""
from __future__ import annotations

import difflib
from typing import Any

#: name -> (type or tuple of types, default, help). Lists hold scalars only.
SCHEMA: dict[str, tuple[Any, Any, str]] = {
    "RUN_NAME": (str, "demo", "folder name under results/"),
    "RESULTS_DIR": (str, "results", "parent folder of run folders"),
    "DEVICE": (str, "auto", "auto, cpu or cuda"),
    "GPUS": (int, 1, "GPUs for training; > 1 trains through torchrun"),
    "SEED": (int, 0, "random seed of every training run"),
    # data
    "DATASET": (str, "synthetic", "synthetic or imagenet_vid"),
    "DATA_ROOT": (str, "data/synthetic", "data root (synthetic set, or the ILSVRC2015 folder)"),
    "SYNTHETIC_TRAIN_VIDEOS": (int, 24, "synthetic set: training videos"),
    "SYNTHETIC_VAL_VIDEOS": (int, 8, "synthetic set: validation videos"),
    "SYNTHETIC_FRAMES": (int, 12, "synthetic set: frames per video"),
    "CONVERT_IMAGENET": (bool, False, "imagenet_vid: convert the ILSVRC annotations first"),
    # models and training
    "MODELS": (list, ["baseline", "clab"], "which of baseline / clab to train and evaluate"),
    "CONFIG_BASELINE": (str, "configs/selsa-troi_faster-rcnn_tiny_synthetic.py", "TRoI baseline config"),
    "CONFIG_CLAB": (str, "configs/clab_selsa-troi_faster-rcnn_tiny_synthetic.py", "CLAB config"),
    "CFG_OPTIONS": (list, [], "config overrides 'key=value' applied to every training and test"),
    "TRAIN": (bool, True, "train (False: use CHECKPOINT_BASELINE / CHECKPOINT_CLAB)"),
    "RESUME": (bool, True, "resume an interrupted training from its latest checkpoint"),
    "CHECKPOINT_BASELINE": (str, "", "checkpoint to evaluate when TRAIN is False"),
    "CHECKPOINT_CLAB": (str, "", "checkpoint to evaluate when TRAIN is False"),
    # evaluation
    "MAX_TEST_FRAMES": (int, 0, "0: every validation frame"),
    # ablations (one factor at a time around the CLAB config)
    "ABLATION_WEIGHTS": (list, [], "initial CAB loss weights to try"),
    "ABLATION_TEMPERATURES": (list, [], "NT-Xent temperatures to try"),
    "ABLATION_SCHEDULES": (list, [], "schedule shapes to try: constant, linear, cosine, step, exponential"),
    "ABLATION_STAGES": (list, [], "backbone stages to tap: 1 (C3), 2 (C4), 3 (C5)"),
    "ABLATION_CFG_OPTIONS": (list, [], "extra overrides for ablation runs only (e.g. shorter training)"),
    # embeddings and robustness
    "TSNE_FRAMES": (int, 200, "validation frames embedded for t-SNE"),
    "TSNE_DEGRADATION": (str, "motion_blur", "degradation shown beside clean frames"),
    "TSNE_SEVERITY": (int, 3, "its severity"),
    "ROBUSTNESS_KINDS": (list, [], "degradations (empty: all)"),
    "ROBUSTNESS_SEVERITIES": (list, [1, 2, 3, 4, 5], "severities"),
}


def defaults() -> dict[str, Any]:
    return {k: (list(v[1]) if isinstance(v[1], list) else v[1]) for k, v in SCHEMA.items()}


def check_parameters(params: dict[str, Any], source: str = "parameters") -> dict[str, Any]:
    """Validate ``params`` (UPPERCASE names only are considered) and return them merged over the defaults.

    Raises ``ValueError`` naming an unknown parameter (with close matches) or a value of the wrong type.
    """
    merged = defaults()
    for name, value in params.items():
        if not name.isupper() or name.startswith("_"):
            continue
        if name not in SCHEMA:
            close = difflib.get_close_matches(name, SCHEMA, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"{source}: unknown parameter {name!r}{hint}")
        kind, _, _ = SCHEMA[name]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ValueError(f"{source}: parameter {name} must be {kind.__name__}, got {value!r}")
        if kind is list and any(isinstance(v, (dict, list)) for v in value):
            raise ValueError(f"{source}: parameter {name} must be a flat list of scalars, got {value!r}")
        merged[name] = value
    return merged


def notebook_parameters(namespace: dict[str, Any], source: str) -> dict[str, Any]:
    """Inside a notebook: validate the UPPERCASE globals (``check_parameters(globals())``)."""
    return check_parameters({k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_")},
                            source)
