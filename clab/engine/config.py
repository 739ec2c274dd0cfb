"""Loading a run's mmcv config, with the checks that must pass before anything is built.

* ``--cfg-options key=value`` overrides may only name keys that exist in the config (a typo would otherwise
  silently add an unused key); an unknown key raises :class:`ConfigError` naming it and its close matches.
* Every annotation file and image folder a data split points at must exist before the model is built.
"""
from __future__ import annotations

import difflib
import os
from typing import Any, Iterable

from mmcv import Config, DictAction  # noqa: F401  (DictAction re-exported for the CLIs)


class ConfigError(ValueError):
    """A config or an override that cannot describe a valid run."""


def _flat_keys(node: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            yield key
            yield from _flat_keys(v, key)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            key = f"{prefix}.{i}"
            yield key
            yield from _flat_keys(v, key)


def _lookup(cfg: dict, dotted: str) -> bool:
    node: Any = cfg
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def check_override_keys(cfg: Config, options: dict | None, source: str = "--cfg-options") -> None:
    """Raise :class:`ConfigError` if an override names a key the config does not have."""
    if not options:
        return
    plain = cfg._cfg_dict.to_dict()
    known = list(_flat_keys(plain))
    for key in options:
        if not _lookup(plain, key):
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"{source}: unknown config key {key!r} in {cfg.filename}{hint}")


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """Read ``path`` and apply validated ``cfg_options`` (``{'a.b.c': value}``).

    ``data_root=DIR`` among the options moves every data path that starts with the config's ``data_root``
    (config variables are resolved when the file is read, so overriding the variable alone changes nothing).
    """
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    cfg = Config.fromfile(path)
    options = dict(cfg_options or {})
    check_override_keys(cfg, options)
    new_root = options.pop("data_root", None)
    if new_root is not None:
        set_data_root(cfg, str(new_root))
    if options:
        cfg.merge_from_dict(options)
    return cfg


def set_data_root(cfg: Config, new_root: str) -> None:
    """Replace the prefix ``cfg.data_root`` of every ``ann_file`` / ``img_prefix`` by ``new_root``."""
    old_root = cfg.get("data_root")
    if not old_root:
        raise ConfigError(f"{cfg.filename} has no data_root to replace")
    new_root = new_root if new_root.endswith("/") else new_root + "/"
    for split in ("train", "val", "test"):
        for ds in _split_configs(cfg.data.get(split, [])):
            for field in ("ann_file", "img_prefix"):
                value = ds.get(field)
                if isinstance(value, str) and value.startswith(old_root):
                    ds[field] = new_root + value[len(old_root):]
    cfg.data_root = new_root


def _split_configs(data_cfg: Any) -> Iterable[dict]:
    if isinstance(data_cfg, (list, tuple)):
        for item in data_cfg:
            yield from _split_configs(item)
    elif isinstance(data_cfg, dict):
        if "datasets" in data_cfg:  # ConcatDataset / RepeatDataset style wrappers
            yield from _split_configs(data_cfg["datasets"])
        elif "dataset" in data_cfg:
            yield from _split_configs(data_cfg["dataset"])
        else:
            yield data_cfg


def check_data_paths(cfg: Config, splits: Iterable[str] = ("train",)) -> None:
    """Raise :class:`ConfigError` naming the first missing ``ann_file`` / ``img_prefix`` of ``splits``."""
    for split in splits:
        if split not in cfg.data:
            raise ConfigError(f"{cfg.filename}: data.{split} is not defined")
        for ds in _split_configs(cfg.data[split]):
            for field in ("ann_file", "img_prefix"):
                path = ds.get(field)
                if path and not os.path.exists(path):
                    raise ConfigError(
                        f"data.{split}.{field} does not exist: {path} (set data_root or override it with "
                        f"--cfg-options data.{split}.{field}=...)")
