"""Run parameters for the notebooks: one flat schema shared by every notebook of a run (DESIGN.md, STYLE 7-8).

A run is described by one flat YAML file in ``papermill_params/`` (papermill merges parameter files
shallowly, so nesting would silently replace whole blocks). Every key must be a name of :data:`SCHEMA`
with a value of the declared type (lists hold scalars of the declared item type). :func:`check_parameters`
enforces that in the runner before any notebook starts (:func:`load_parameter_file`) and again inside each
notebook on what papermill injected (:func:`notebook_parameters`), so a typo fails at once with the
parameter named, instead of being ignored.

Relative paths in parameters (``DATA_ROOT``, ``RESULTS_DIR``, configs, checkpoints) are relative to the
repository root, the folder the notebooks run in. Every parameter is declared in the ``parameters`` cell of
the notebooks that use it, except :data:`RUNNER_ONLY` ones, which set up the notebooks' processes.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = ["Param", "SCHEMA", "NOTEBOOKS", "RUNNER_ONLY", "MODEL_NAMES", "defaults", "check_parameters",
           "training_seeds", "NotebookParameters", "notebook_parameters", "load_parameter_file", "parse_override"]

#: the notebooks of a run, in execution order (``notebooks/<name>.ipynb``)
NOTEBOOKS: tuple[str, ...] = ("00_data_prep", "01_train", "02_evaluate", "03_ablations", "04_embeddings_tsne",
                              "05_robustness", "06_explore")
#: parameters the runner applies itself (environment of the notebook kernels), declared by no notebook
RUNNER_ONLY: tuple[str, ...] = ("CPU_THREADS", "LAUNCHER", "NODES", "GPUS_PER_NODE")
#: the two models a run compares
MODEL_NAMES: tuple[str, ...] = ("baseline", "clab")
_DEGRADATIONS = ("motion_blur", "defocus_blur", "gaussian_noise", "occlusion", "jpeg_compression", "low_light")
_SCHEDULE_SHAPES = ("constant", "linear", "cosine", "step", "exponential")


@dataclass(frozen=True)
class Param:
    """One run parameter.

    Attributes:
        kind: ``str``, ``int``, ``float``, ``bool`` or ``list`` (an int is accepted for a float).
        default: the value when a run does not set it.
        help: one line for humans (shown in the run README).
        item: for lists, the type of every item.
        check: extra check ``value -> message`` (``None`` when the value is fine); for lists it is applied
            to every item.
    """

    kind: type
    default: Any
    help: str
    item: type | None = None
    check: Callable[[Any], str | None] | None = None


def _one_of(*choices: Any) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"one of {list(choices)}"


def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f">= {low}"


def _between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"in [{low}, {high}]"


def _positive(v: float) -> str | None:
    return None if v > 0 else "> 0"


def _folder_name(v: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v) else \
        "a folder name of letters, digits, '_', '-' or '.' (no '/')"


def _key_value(v: str) -> str | None:
    key = v.split("=", 1)[0].strip()
    return None if "=" in v and key and " " not in key else "a 'key=value' string (e.g. runner.max_epochs=1)"


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "a non-empty string"


SCHEMA: dict[str, Param] = {
    "RUN_NAME": Param(str, "demo", "folder name under RESULTS_DIR", check=_folder_name),
    "RESULTS_DIR": Param(str, "results", "parent folder of run folders", check=_non_empty),
    "DEVICE": Param(str, "auto", "auto, cpu or cuda", check=_one_of("auto", "cpu", "cuda")),
    "GPUS": Param(int, 1, "GPUs for training and testing; > 1 runs them through torchrun", check=_at_least(1)),
    "LAUNCHER": Param(str, "pytorch", "how trainings and tests with GPUS > 1 start: pytorch (torchrun) or slurm "
                      "(srun, inside an allocation); none refuses them", check=_one_of("none", "pytorch", "slurm")),
    "NODES": Param(int, 1, "machines of a run with GPUS > 1 (> 1: torchrun --nnodes started by srun, or srun)",
                   check=_at_least(1)),
    "GPUS_PER_NODE": Param(int, 0, "processes per machine of a run with GPUS > 1; 0: GPUS", check=_at_least(0)),
    "CPU_THREADS": Param(int, 0, "threads of each CPU process (OMP_NUM_THREADS) in a run; 0: the library default. "
                         "1 is much steadier on a CPU shared with other work", check=_at_least(0)),
    "SEED": Param(int, 0, "random seed of the synthetic set and of every degradation (and the training seed when "
                  "SEEDS is empty)", check=_at_least(0)),
    "SEEDS": Param(list, [], "training seeds: every model is trained and tested once per seed, and tables give the "
                   "mean, spread and 95% interval over them; empty: [SEED]", item=int, check=_at_least(0)),
    # data
    "DATASET": Param(str, "synthetic", "synthetic, imagenet_vid or custom (your videos: CUSTOM_* and a *_custom.py "
                     "config)", check=_one_of("synthetic", "imagenet_vid", "custom")),
    "DATA_ROOT": Param(str, "data/synthetic", "data root (synthetic set, or the ILSVRC2015 folder)",
                       check=_non_empty),
    "SYNTHETIC_TRAIN_VIDEOS": Param(int, 24, "synthetic set: training videos", check=_at_least(1)),
    "SYNTHETIC_VAL_VIDEOS": Param(int, 8, "synthetic set: validation videos", check=_at_least(1)),
    "SYNTHETIC_FRAMES": Param(int, 12, "synthetic set: frames per video", check=_at_least(2)),
    "CONVERT_IMAGENET": Param(bool, False, "imagenet_vid: convert the ILSVRC annotations first"),
    "CUSTOM_CLASSES": Param(list, [], "custom: class names, in the annotation files' category order", item=str,
                            check=_non_empty),
    "CUSTOM_TRAIN_ANN": Param(str, "", "custom: training CocoVID json (clab convert-mot / convert-cvat), image paths "
                              "relative to DATA_ROOT"),
    "CUSTOM_VAL_ANN": Param(str, "", "custom: validation CocoVID json, image paths relative to DATA_ROOT"),
    # models and training
    "MODELS": Param(list, ["baseline", "clab"], "which of baseline / clab to train and evaluate", item=str,
                    check=_one_of(*MODEL_NAMES)),
    "CONFIG_BASELINE": Param(str, "configs/selsa-troi_faster-rcnn_tiny_synthetic.py", "TRoI baseline config",
                             check=_non_empty),
    "CONFIG_CLAB": Param(str, "configs/clab_selsa-troi_faster-rcnn_tiny_synthetic.py", "CLAB config",
                         check=_non_empty),
    "CFG_OPTIONS": Param(list, [], "config overrides 'key=value' for every training and test", item=str,
                         check=_key_value),
    "TRAIN": Param(bool, True, "train (False: evaluate CHECKPOINT_BASELINE / CHECKPOINT_CLAB)"),
    "RESUME": Param(bool, True, "continue an interrupted training from its latest.pth"),
    "CHECKPOINT_BASELINE": Param(str, "", "checkpoint of the baseline when TRAIN is False"),
    "CHECKPOINT_CLAB": Param(str, "", "checkpoint of CLAB when TRAIN is False"),
    # evaluation
    "MAX_TEST_FRAMES": Param(int, 0, "validation frames tested (0: all)", check=_at_least(0)),
    # ablations (one factor at a time around the CLAB config)
    "ABLATION_WEIGHTS": Param(list, [], "initial CAB loss weights to try", item=float, check=_at_least(0)),
    "ABLATION_TEMPERATURES": Param(list, [], "NT-Xent temperatures to try", item=float, check=_positive),
    "ABLATION_SCHEDULES": Param(list, [], "CAB weight schedule shapes to try: " + ", ".join(_SCHEDULE_SHAPES),
                                item=str, check=_one_of(*_SCHEDULE_SHAPES)),
    "ABLATION_STAGES": Param(list, [], "backbone stages the branch taps: 1 (C3), 2 (C4), 3 (C5)", item=int,
                             check=_between(0, 3)),
    "ABLATION_CFG_OPTIONS": Param(list, [], "extra overrides for ablation runs only (e.g. shorter training)",
                                  item=str, check=_key_value),
    # embeddings
    "TSNE_FRAMES": Param(int, 200, "validation frames embedded for t-SNE", check=_at_least(4)),
    "TSNE_DEGRADATION": Param(str, "motion_blur", "degradation shown beside clean frames",
                              check=_one_of(*_DEGRADATIONS)),
    "TSNE_SEVERITY": Param(int, 3, "its severity (1..5)", check=_between(1, 5)),
    "TSNE_PERPLEXITY": Param(float, 30.0, "t-SNE perplexity (lowered for few points)", check=_positive),
    # robustness
    "ROBUSTNESS_KINDS": Param(list, [], "degradations (empty: all)", item=str, check=_one_of(*_DEGRADATIONS)),
    "ROBUSTNESS_SEVERITIES": Param(list, [1, 2, 3, 4, 5], "severities (1..5)", item=int, check=_between(1, 5)),
    "ROBUSTNESS_FRAMES": Param(int, 0, "validation frames per robustness cell (0: MAX_TEST_FRAMES)",
                               check=_at_least(0)),
    "DRAW_FRAMES": Param(int, 4, "degraded frames drawn with their detections", check=_at_least(0)),
    "SCORE_THR": Param(float, 0.3, "score threshold of drawn detections", check=_between(0.0, 1.0)),
    # explorer (06)
    "RUN_DIR": Param(str, "", "run folder the explorer opens ('': RESULTS_DIR/RUN_NAME); its recorded "
                     "parameters are used"),
    "EXPLORE_VIDEO": Param(str, "", "video the explorer shows first ('': the first validation video)"),
}


def defaults() -> dict[str, Any]:
    """Every parameter at its default value (lists are fresh copies)."""
    return {k: (list(p.default) if isinstance(p.default, list) else p.default) for k, p in SCHEMA.items()}


def _type_ok(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_one(name: str, value: Any, source: str) -> Any:
    """Validate one parameter's value; returns it normalised (ints of float parameters become floats)."""
    param = SCHEMA[name]
    if not _type_ok(value, param.kind):
        raise ValueError(f"{source}: parameter {name} must be {param.kind.__name__}, got {value!r} "
                         f"({type(value).__name__})")
    if param.kind is list:
        items = []
        for i, item in enumerate(value):
            if param.item is not None and not _type_ok(item, param.item):
                raise ValueError(f"{source}: parameter {name}[{i}] must be {param.item.__name__}, got {item!r} "
                                 f"({type(item).__name__})")
            if param.check is not None and (problem := param.check(item)):
                raise ValueError(f"{source}: parameter {name}[{i}] must be {problem}, got {item!r}")
            items.append(float(item) if param.item is float else item)
        return items
    if param.check is not None and (problem := param.check(value)):
        raise ValueError(f"{source}: parameter {name} must be {problem}, got {value!r}")
    return float(value) if param.kind is float else value


def check_parameters(params: dict[str, Any], source: str = "parameters") -> dict[str, Any]:
    """Validate ``params`` and return them merged over :func:`defaults`.

    Only UPPERCASE names are considered (lower-case names are ordinary notebook variables). Raises
    ``ValueError`` naming ``source`` and the parameter: an unknown name (with close matches), a value of the
    wrong type, or a value outside what the parameter allows.
    """
    merged = defaults()
    for name, value in params.items():
        if not isinstance(name, str) or not name.isupper() or name.startswith("_"):
            continue
        if name not in SCHEMA:
            close = difflib.get_close_matches(name, SCHEMA, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known parameters: {', '.join(SCHEMA)}"
            raise ValueError(f"{source}: unknown parameter {name!r}{hint}")
        merged[name] = _check_one(name, value, source)
    return merged


def training_seeds(params: dict[str, Any]) -> list[int]:
    """The training seeds of a run: ``SEEDS``, or ``[SEED]`` when it is empty (older parameter files set only
    SEED). A seed listed twice is an error (it would be one run counted twice in every statistic)."""
    seeds = list(params.get("SEEDS") or []) or [int(params["SEED"])]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"parameter SEEDS lists seed(s) {repeated} more than once; every seed is one training run")
    return [int(s) for s in seeds]


class NotebookParameters(dict):
    """The parameters a notebook declares; asking for one it does not declare is an error that says so
    (a notebook's ``parameters`` cell must list every parameter it uses: the runner injects only those and
    reruns a notebook when one of them changes)."""

    notebook = ""

    def __missing__(self, key: str) -> Any:
        raise KeyError(f"parameter {key} is not declared in the parameters cell of notebook {self.notebook}")


def notebook_parameters(namespace: dict[str, Any], notebook: str) -> NotebookParameters:
    """Inside a notebook: validate its UPPERCASE globals (``notebook_parameters(globals(), '01_train')``).

    Returns the validated values of those globals (its ``parameters`` cell, as papermill overrode it). An
    unknown or mistyped parameter raises ``ValueError`` naming the notebook and the parameter.

    It also makes the repository root the working directory when the kernel started elsewhere (JupyterLab
    starts kernels in the notebook's folder; papermill runs them in the root), so relative paths in
    parameters mean the same in both.
    """
    values = {k: v for k, v in namespace.items() if isinstance(k, str) and k.isupper() and not k.startswith("_")}
    checked = check_parameters(values, f"notebook {notebook}")
    result = NotebookParameters({k: checked[k] for k in values})
    result.notebook = notebook
    root = Path(__file__).resolve().parents[1]
    if (root / "notebooks").is_dir() and (root / "configs").is_dir() and Path.cwd().resolve() != root:
        os.chdir(root)
        print(f"working directory: {root} (relative paths in parameters are relative to it)")
    return result


def load_parameter_file(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML parameter file and validate it (errors name the file and the key).

    Returns only the keys the file sets (validated, floats normalised); merge with :func:`defaults` for the
    rest. An empty file is an empty run description.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a flat mapping of PARAMETER: value, got {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(key, str) or not key.isupper():
            raise ValueError(f"{path}: parameter names are UPPERCASE, got {key!r}")
        if isinstance(value, dict):
            raise ValueError(f"{path}: parameter {key} is a nested block; parameter files are flat "
                             f"(papermill would replace a nested block as a whole)")
    checked = check_parameters(data, str(path))
    return {k: checked[k] for k in data}


def parse_override(text: str) -> tuple[str, Any]:
    """``'KEY=value'`` -> ``(KEY, value)`` with ``value`` read as a YAML scalar or list (``--set``)."""
    import yaml

    if "=" not in text:
        raise ValueError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ValueError(f"--set {key}: cannot read {raw!r} ({err})") from err
    return key, value
