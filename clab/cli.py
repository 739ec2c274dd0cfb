"""Command-line interface: ``clab <command> [options]``.

Each command lives in its own module, which provides ``add_arguments(parser)`` and ``run(args) -> int``.
Only the module of the command being run is imported, so ``clab --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "make-synthetic": ("clab.data.synthetic", "generate the synthetic video set (JPEG frames + CocoVID json)"),
    "convert-imagenet-vid": ("clab.data.converters.imagenet_vid", "convert ILSVRC2015 VID/DET to CocoVID json"),
    "convert-mot": ("clab.data.converters.mot", "convert MOT-challenge sequences (gt/gt.txt) to CocoVID json"),
    "convert-cvat": ("clab.data.converters.cvat", "convert CVAT 'for video 1.1' XML exports to CocoVID json"),
    "check-data": ("clab.data.check", "preflight: check an ILSVRC2015 tree or a CocoVID json before a long run"),
    "infer-video": ("clab.inference", "detect on a video file or frame folder: annotated video + per-frame json"),
    "dataset-stats": ("clab.data.stats", "print statistics of a CocoVID json"),
    "train": ("clab.engine.train", "train a detector from a config (one device, or several with torchrun)"),
    "test": ("clab.engine.test", "detect on every validation frame and compute mAP@50 and friends"),
    "robustness": ("clab.engine.robustness", "mAP@50 under each degradation and severity"),
    "demo": ("clab.demo", "the main job: the six notebooks of papermill_params/demo.yaml (clab reproduce)"),
    "reproduce": ("clab.runner", "run the notebooks of a papermill_params/*.yaml run"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
