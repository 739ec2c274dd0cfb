"""Command-line interface: ``clab <command> [options]``.

Each command lives in its own module, which provides ``add_arguments(parser)`` and ``run(args) -> int``.
Only the module of the command being run is imported, so ``clab --help`` stays fast.

An error ends the command with one line on stderr, ``error: <what went wrong, naming the file or
parameter>``, and exit status 1 (130 for Ctrl-C). ``--debug`` (anywhere on the command line, or
``CLAB_DEBUG=1``) lets the exception propagate with its full traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
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
    "evaluate": ("clab.evaluation.cli", "score a COCO results json: COCO, ILSVRC devkit, motion splits, bootstrap CI"),
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


#: exceptions whose message is meant for the user as it is; others are programming errors, shown with their type
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError, RuntimeError)


def error_line(err: BaseException) -> str:
    """The one line ``clab`` prints for ``err``: ``error: <message>`` (the exception type too when the message
    alone would not say what happened)."""
    message = str(err).strip()
    if isinstance(err, KeyError) and len(err.args) == 1:
        message = str(err.args[0])
    if not message or not isinstance(err, _USER_ERRORS):
        message = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return f"error: {message}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CLAB_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (every error becomes one line unless --debug)
        if debug:
            raise
        print(error_line(err), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
