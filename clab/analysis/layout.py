"""The folder of one run, ``<RESULTS_DIR>/<RUN_NAME>/``, and how run parameters map to configs, config
overrides and checkpoints (DESIGN.md, "Results and provenance"; STYLE 11).

::

    <run>/NN_name.ipynb                 executed notebooks (written by the runner)
    <run>/README.md, run_state.json     summary and notebook status (runner)
    <run>/metrics.json                  merged metrics: {"models": {name: ...}, "ablations": ..., ...}
    <run>/dataset_stats.json            00
    <run>/work_dirs/<model>/seed<s>/    01: checkpoints, metrics.jsonl, logs, config, provenance
    <run>/eval/<model>/seed<s>/         02: metrics.json, coco_results.json
    <run>/ablations/<name>/seed<s>/     03: config.py, work_dir/, eval/metrics.json
    <run>/embeddings/                   04: features and t-SNE coordinates (models of the first seed)
    <run>/robustness/<model>/seed<s>/   05: robustness.json
    <run>/figures/*.png, tables/*.csv|md

Every model is trained once per training seed (``SEEDS``, see :func:`clab.params.training_seeds`); methods
taking ``seed=None`` mean the first of them, so single-seed callers need not know about seeds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_write_json
from .tables import clean_json, write_table

__all__ = ["RunLayout", "parse_cfg_options", "model_config", "cfg_options", "model_checkpoint", "run_seeds",
           "file_digest",
           "config_digest", "checkpoint_stamp", "sync_inputs"]


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run folder (see the module docstring). Folders are created when first asked for."""

    root: Path
    seeds: tuple[int, ...] = (0,)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "RunLayout":
        from ..params import training_seeds
        seeds = training_seeds(params) if "SEED" in params else [0]
        return cls(Path(params["RESULTS_DIR"]) / params["RUN_NAME"], tuple(seeds))

    def seed(self, seed: int | None = None) -> int:
        """``seed``, or the first training seed of the run when None."""
        return int(self.seeds[0] if seed is None else seed)

    def _seed_part(self, seed: int | None) -> str:
        return f"seed{self.seed(seed)}"

    def _dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def figures(self) -> Path:
        return self._dir("figures")

    @property
    def tables(self) -> Path:
        return self._dir("tables")

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.json"

    def work_dir(self, model: str, seed: int | None = None) -> Path:
        """``work_dirs/<model>/seed<s>/``: the training of ``model`` with seed ``seed``."""
        return self._dir("work_dirs", model, self._seed_part(seed))

    def eval_dir(self, model: str, seed: int | None = None) -> Path:
        """``eval/<model>/seed<s>/``: its test on the validation set."""
        return self._dir("eval", model, self._seed_part(seed))

    def ablation_dir(self, name: str, seed: int | None = None) -> Path:
        """``ablations/<name>/seed<s>/``: one ablation run (training and test) with seed ``seed``."""
        return self._dir("ablations", name, self._seed_part(seed))

    def robustness_dir(self, model: str, seed: int | None = None) -> Path:
        """``robustness/<model>/seed<s>/``: its degradation sweep."""
        return self._dir("robustness", model, self._seed_part(seed))

    def checkpoint(self, model: str, seed: int | None = None) -> Path:
        """``work_dirs/<model>/seed<s>/latest.pth`` (not created)."""
        return self.root / "work_dirs" / model / self._seed_part(seed) / "latest.pth"

    @property
    def embeddings_dir(self) -> Path:
        return self._dir("embeddings")

    def write_table(self, df: pd.DataFrame, name: str, floatfmt: str = ".4f", title: str | None = None):
        """``tables/<name>.csv`` and ``.md`` (see :func:`clab.analysis.tables.write_table`)."""
        return write_table(df, self.tables, name, floatfmt, title)

    def read_metrics(self) -> dict:
        """The merged ``metrics.json`` (an empty dict before 02 ran)."""
        if not self.metrics_file.is_file():
            return {}
        return json.loads(self.metrics_file.read_text())

    def write_json(self, name: str, value: Any) -> Path:
        """``<run>/<name>`` as JSON (NaN written as null), atomically."""
        path = self.root / name
        atomic_write_json(path, clean_json(value), indent=1)
        return path

    def update_metrics(self, section: str, value: Any) -> Path:
        """Set ``metrics.json[section] = value`` (NaN written as null), keeping the other sections."""
        merged = self.read_metrics()
        merged[section] = clean_json(value)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.metrics_file, merged, indent=1)
        return self.metrics_file


def parse_cfg_options(items: list[str], source: str = "CFG_OPTIONS") -> dict[str, Any]:
    """``['runner.max_epochs=1', 'data.samples_per_gpu=2']`` -> ``{'runner.max_epochs': 1, ...}``.

    Values are read exactly as ``clab train --cfg-options`` reads them (mmcv's ``DictAction``: ints, floats,
    ``true``/``false``/``none``, ``[a,b]`` lists and ``(a,b)`` tuples).
    """
    from mmcv import DictAction

    for item in items:
        if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"{source}: {item!r} is not a 'key=value' string")
    if not items:
        return {}
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--options", nargs="+", action=DictAction, default={})
    return dict(parser.parse_args(["--options", *items]).options)


def model_config(params: dict[str, Any], model: str) -> str:
    """The config file of ``model`` (``'baseline'`` or ``'clab'``); raises if it does not exist."""
    key = {"baseline": "CONFIG_BASELINE", "clab": "CONFIG_CLAB"}.get(model)
    if key is None:
        raise ValueError(f"unknown model {model!r}; expected 'baseline' or 'clab'")
    path = params[key]
    if not Path(path).is_file():
        raise FileNotFoundError(f"parameter {key}: config file not found: {path}")
    return path


def cfg_options(params: dict[str, Any], *extra: list[str]) -> list[str]:
    """The ``key=value`` overrides of a training/test: ``data_root=DATA_ROOT``, then CFG_OPTIONS, then
    ``extra`` lists (later ones win)."""
    items = [f"data_root={params['DATA_ROOT']}", *params["CFG_OPTIONS"]]
    for more in extra:
        items += list(more)
    parse_cfg_options(items)  # fail early on a malformed item
    return items


def model_checkpoint(params: dict[str, Any], layout: RunLayout, model: str, must_exist: bool = True,
                     seed: int | None = None) -> str:
    """The checkpoint a run evaluates for ``model`` and training seed ``seed`` (None: the first):
    ``work_dirs/<model>/seed<s>/latest.pth`` when TRAIN, else the CHECKPOINT_<MODEL> parameter (one
    checkpoint, whatever the seed)."""
    if params["TRAIN"]:
        path = layout.checkpoint(model, seed)
        if must_exist and not path.is_file():
            raise FileNotFoundError(f"no checkpoint for {model}: {path} does not exist; run notebook 01_train "
                                    f"first (or set TRAIN: false and CHECKPOINT_{model.upper()})")
        return str(path)
    key = f"CHECKPOINT_{model.upper()}"
    if not params[key]:
        raise ValueError(f"TRAIN is false, so parameter {key} must name the checkpoint to evaluate")
    path = params[key]
    if must_exist and not path.startswith(("http://", "https://")) and not Path(path).is_file():
        raise FileNotFoundError(f"parameter {key}: checkpoint not found: {path}")
    return path


def run_seeds(params: dict[str, Any]) -> list[int]:
    """The training seeds whose runs a notebook trains, tests or sweeps: :func:`clab.params.training_seeds`,
    or only the first of them when ``TRAIN`` is false (one given checkpoint per model)."""
    from ..params import training_seeds
    seeds = training_seeds(params)
    return seeds if params.get("TRAIN", True) else seeds[:1]


def file_digest(path: str | Path) -> str:
    """A short sha256 of a file's bytes (to notice that a config or checkpoint changed)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def config_digest(config: str, options: list[str]) -> str:
    """A short sha256 of the resolved config text of ``config`` with ``options`` (bases and overrides
    included), to notice that what a folder was trained from changed."""
    from ..engine.config import load_config
    text = load_config(config, parse_cfg_options(options)).pretty_text
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_stamp(path: str) -> dict[str, Any]:
    """``{'path', 'size', 'mtime_ns'}`` of a checkpoint file (just the path for a URL)."""
    p = Path(path)
    if not p.is_file():
        return {"path": str(path)}
    st = p.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def sync_inputs(folder: str | Path, inputs: dict[str, Any]) -> bool:
    """Keep derived results in ``folder`` only while they were made from the same ``inputs``.

    ``folder/inputs.json`` records the inputs (config digest, overrides, seed, checkpoint, ...) of what the
    folder holds. When it records different inputs, the folder's content is removed (it was made from
    something else: resuming or reusing it would mix runs) and False is returned; otherwise True. The new
    inputs are written in both cases.
    """
    folder = Path(folder)
    record = folder / "inputs.json"
    inputs = json.loads(json.dumps(clean_json(inputs)))
    same = True
    if record.is_file():
        try:
            same = json.loads(record.read_text()) == inputs
        except json.JSONDecodeError:
            same = False
    elif folder.is_dir() and any(folder.iterdir()):
        same = False  # results without a record of their inputs
    if not same:
        print(f"{folder}: made from other inputs than now; its previous content is removed", flush=True)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, inputs, indent=1)
    return same
