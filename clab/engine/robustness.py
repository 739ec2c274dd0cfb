"""``clab robustness CONFIG CHECKPOINT``: mAP@50 under each degradation and severity (see clab.engine.test)."""
from __future__ import annotations

import argparse
import json
import os

from .config import DictAction, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--out", required=True)
    parser.add_argument("--kinds", nargs="+", default=None, help="degradations (default: all)")
    parser.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--max-frames", type=int, default=None)


def run_robustness(cfg, checkpoint, out_dir, kinds=None, severities=(1, 2, 3, 4, 5), seed=0, device="auto",
                   max_frames=None, progress=True) -> dict:
    """Fill ``<out_dir>/robustness.json`` with ``{"clean": mAP50, kind: {severity: mAP50}}``, resumably."""
    from ..data.degradations import DEGRADATIONS
    from ..io import atomic_write_json
    from .test import insert_degradation, run_test

    kinds = list(kinds or DEGRADATIONS)
    unknown = [k for k in kinds if k not in DEGRADATIONS]
    if unknown:
        raise ValueError(f"--kinds: unknown degradation(s) {unknown}; expected some of {sorted(DEGRADATIONS)}")
    for s in severities:
        if not 1 <= int(s) <= 5:
            raise ValueError(f"--severities: {s} is outside 1..5")
    path = os.path.join(out_dir, "robustness.json")
    table = json.load(open(path)) if os.path.exists(path) else {}
    if "clean" not in table:
        table["clean"] = run_test(cfg, checkpoint, out_dir, device, max_frames=max_frames, progress=progress,
                                  write=False)["bbox_mAP_50"]
        atomic_write_json(path, table)
    for kind in kinds:
        for severity in severities:
            if str(severity) in table.get(kind, {}):
                continue  # finished in an earlier, interrupted sweep
            degraded = insert_degradation(cfg, kind, int(severity), seed)
            value = run_test(degraded, checkpoint, out_dir, device, max_frames=max_frames, progress=progress,
                             write=False)["bbox_mAP_50"]
            table.setdefault(kind, {})[str(severity)] = value
            atomic_write_json(path, table)
    return table


def run(args) -> int:
    cfg = load_config(args.config, args.cfg_options)
    table = run_robustness(cfg, args.checkpoint, args.out, args.kinds, args.severities, args.seed, args.device,
                           args.max_frames)
    print(json.dumps(table, indent=1))
    return 0
