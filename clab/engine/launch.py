"""One home for starting processes and placing tensors: process groups, devices, SLURM, launch commands.

* :func:`init_distributed` joins the process group of a run started by ``torchrun`` (``--launcher pytorch``)
  or by ``srun`` (``--launcher slurm``), after :func:`setup_multi_processes` has applied the config's
  ``mp_start_method`` / ``opencv_num_threads`` (mmcv's ``init_dist`` would otherwise switch to ``spawn``).
  On GPUs each process binds ``cuda:<local rank>`` and uses NCCL; on CPUs gloo.
* :func:`model_device` / :func:`to_device`: a batch goes to the device the model's parameters are on,
  never to a hard-coded device index.
* :func:`parse_nodelist` / :func:`slurm_master_addr`: the first host of a SLURM node list
  (``scontrol show hostnames``, or a pure-Python parser of the compact syntax ``node[01-03,07]``).
* :func:`launch_command` builds the command line that runs ``clab <args>`` on several processes
  (``torchrun``, one or several nodes, or ``srun``); :func:`run_clab` runs it and streams its output.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Mapping, Sequence

LAUNCHERS = ("none", "pytorch", "slurm")
DEFAULT_PORT = 29500


# --------------------------------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    """``'auto'`` -> ``'cuda'`` when a GPU is visible, else ``'cpu'``; ``'cpu'`` / ``'cuda'`` / ``'cuda:N'``
    are returned unchanged (``ValueError`` for anything else)."""
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device in ("cpu", "cuda") or re.fullmatch(r"cuda:\d+", str(device)):
        return device
    raise ValueError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}")


def local_device(device: str):
    """The ``torch.device`` this process computes on: ``cpu``, or the CUDA device it is bound to
    (``cuda:<local rank>`` after :func:`init_distributed`, the current device otherwise)."""
    import torch
    device = resolve_device(device)
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device)


def model_device(model):
    """The device of ``model``'s first parameter (unwrapped from DP/DDP); CPU for a model without any."""
    import torch
    module = model.module if hasattr(model, "module") else model
    for param in module.parameters():
        return param.device
    return torch.device("cpu")


def to_device(batch, device):
    """Unpack a collated batch (mmcv ``DataContainer``s) onto ``device`` (a ``torch.device`` or string).

    ``cpu`` keeps tensors on the CPU; ``cuda:N`` moves them to GPU N (``cuda`` means the current device).
    """
    import torch
    from mmcv.parallel import scatter
    device = torch.device(device)
    if device.type == "cpu":
        return scatter(batch, [-1])[0]
    if device.type != "cuda":
        raise ValueError(f"to_device: unsupported device {device}")
    index = device.index if device.index is not None else torch.cuda.current_device()
    return scatter(batch, [index])[0]


def to_model_device(batch, model):
    """:func:`to_device` onto the device of ``model`` (see :func:`model_device`)."""
    return to_device(batch, model_device(model))


# --------------------------------------------------------------------------------------------------
# SLURM
# --------------------------------------------------------------------------------------------------
def _split_top_level(text: str) -> list[str]:
    """Split ``text`` at the commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"SLURM_NODELIST: unbalanced ']' in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"SLURM_NODELIST: unbalanced '[' in {text!r}")
    parts.append(text[start:])
    return [p for p in (s.strip() for s in parts) if p]


def _expand_range(item: str, where: str) -> list[str]:
    """``'01-03'`` -> ``['01', '02', '03']`` (zero padding kept), ``'7'`` -> ``['7']``."""
    if "-" not in item:
        if not item:
            raise ValueError(f"SLURM_NODELIST: empty range in {where!r}")
        return [item]
    lo, _, hi = item.partition("-")
    if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
        raise ValueError(f"SLURM_NODELIST: bad range {item!r} in {where!r}; expected e.g. 01-03")
    width = len(lo) if lo.startswith("0") else 0
    return [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]


def _expand_host(pattern: str) -> list[str]:
    """Expand one host pattern with any number of bracket groups, e.g. ``'rack[1-2]-n[01,03]'``."""
    match = re.search(r"\[([^\[\]]*)\]", pattern)
    if match is None:
        if "[" in pattern or "]" in pattern:
            raise ValueError(f"SLURM_NODELIST: unbalanced brackets in {pattern!r}")
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    values = [v for item in match.group(1).split(",") for v in _expand_range(item.strip(), pattern)]
    return [head + v + rest for v in values for rest in _expand_host(tail)]


def parse_nodelist(nodelist: str) -> list[str]:
    """Host names of a SLURM node list in its compact syntax, in order.

    ``'node[01-03,07],gpu5'`` -> ``['node01', 'node02', 'node03', 'node07', 'gpu5']``. Raises ``ValueError``
    naming ``SLURM_NODELIST`` for an empty list, unbalanced brackets or a bad range.
    """
    if not isinstance(nodelist, str) or not nodelist.strip():
        raise ValueError(f"SLURM_NODELIST: expected a node list such as 'node[01-02]', got {nodelist!r}")
    return [host for part in _split_top_level(nodelist.strip()) for host in _expand_host(part)]


def slurm_master_addr(nodelist: str) -> str:
    """The first host of ``nodelist``: from ``scontrol show hostnames`` when SLURM's tools are installed
    (as mmcv does), else from :func:`parse_nodelist`."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass
    return parse_nodelist(nodelist)[0]


def slurm_environment(environ: Mapping[str, str] | None = None, port: int | None = None) -> dict[str, str]:
    """The ``torch.distributed`` variables of a process started by ``srun``.

    Reads ``SLURM_PROCID`` (rank), ``SLURM_NTASKS`` (world size), ``SLURM_LOCALID`` (local rank) and
    ``SLURM_NODELIST`` (master: its first host). An existing ``MASTER_ADDR`` / ``MASTER_PORT`` wins, as in
    mmcv; the port defaults to ``port`` or 29500.

    Returns:
        ``{'RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'}`` as strings.
    """
    env = os.environ if environ is None else environ
    values = {}
    for name in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        raw = env.get(name)
        if raw is None or not str(raw).isdigit():
            raise RuntimeError(f"--launcher slurm: environment variable {name} must be a non-negative integer "
                               f"(is this process started by srun?), got {raw!r}")
        values[name] = int(raw)
    if values["SLURM_PROCID"] >= values["SLURM_NTASKS"]:
        raise RuntimeError(f"--launcher slurm: SLURM_PROCID={values['SLURM_PROCID']} is not below "
                           f"SLURM_NTASKS={values['SLURM_NTASKS']}")
    master = env.get("MASTER_ADDR")
    if not master:
        nodelist = env.get("SLURM_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if not nodelist:
            raise RuntimeError("--launcher slurm: neither MASTER_ADDR nor SLURM_NODELIST is set")
        master = slurm_master_addr(nodelist)
    master_port = env.get("MASTER_PORT") or str(port or DEFAULT_PORT)
    return {"RANK": str(values["SLURM_PROCID"]), "WORLD_SIZE": str(values["SLURM_NTASKS"]),
            "LOCAL_RANK": str(values["SLURM_LOCALID"]), "MASTER_ADDR": master, "MASTER_PORT": master_port}


# --------------------------------------------------------------------------------------------------
# process groups
# --------------------------------------------------------------------------------------------------
def setup_multi_processes(cfg) -> None:
    """Apply the config's ``mp_start_method`` and ``opencv_num_threads`` (and one OpenMP/MKL thread per
    process when loader workers are used), through mmdet's helper. Call it before joining a process group."""
    if cfg is None:
        return
    from mmdet.utils import setup_multi_processes as _setup
    _setup(cfg)


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(launcher: str, device: str = "auto", cfg=None, port: int | None = None) -> bool:
    """Join the process group for ``launcher`` (``none``: nothing, returns False).

    ``pytorch``: ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_*`` come from torchrun.
    ``slurm``: they are derived from ``SLURM_*`` (:func:`slurm_environment`) and exported, so that the
    rest of the process sees what torchrun would have set. On a GPU the process binds
    ``cuda:<LOCAL_RANK mod visible GPUs>`` and uses NCCL; on a CPU gloo. A process group that already
    exists (a sweep that tests many times) is kept. Returns True when distributed.
    """
    import torch
    import torch.distributed as dist
    if launcher not in LAUNCHERS:
        raise ValueError(f"--launcher: expected one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "none":
        return False
    setup_multi_processes(cfg)
    if launcher == "slurm":
        os.environ.update(slurm_environment(port=port))
    for name in ("RANK", "WORLD_SIZE"):
        if name not in os.environ:
            raise RuntimeError(f"--launcher {launcher}: environment variable {name} is not set "
                               f"(start the command with torchrun, or use --launcher none)")
    device = resolve_device(device)
    use_cuda = device.startswith("cuda")
    if use_cuda:
        count = torch.cuda.device_count()
        if count == 0:
            raise RuntimeError(f"--launcher {launcher} --device {device}: no CUDA device is visible")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % count)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def gather_to_rank0(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, None elsewhere (``[obj]`` without a group)."""
    import torch.distributed as dist
    rank, world_size = dist_info()
    if world_size == 1:
        return [obj]
    parts = [None] * world_size if rank == 0 else None
    dist.gather_object(obj, parts, dst=0)
    return parts


# --------------------------------------------------------------------------------------------------
# launch commands
# --------------------------------------------------------------------------------------------------
def launch_command(args: Sequence[str], launcher: str = "pytorch", nodes: int = 1, gpus_per_node: int = 1,
                   python: str | None = None, port: int | None = None) -> list[str]:
    """The command line that runs ``clab <args>`` on ``nodes x gpus_per_node`` processes.

    ``pytorch``, one node: ``python -m torch.distributed.run --standalone --nproc_per_node G -m clab ...``.
    ``pytorch``, several nodes: ``--nnodes N --nproc_per_node G --rdzv_backend c10d --rdzv_endpoint
    HOST:PORT`` (HOST: ``MASTER_ADDR``, else the first node of the SLURM allocation); inside an allocation
    ``srun --nodes N --ntasks-per-node 1`` starts one torchrun per node, elsewhere start the command on
    every node. ``slurm``: ``srun --nodes N --ntasks-per-node G --gpus-per-task 1 python -m clab ...``
    (inside ``salloc`` / ``sbatch``), one process per GPU. ``--launcher`` is appended to ``args``.
    """
    if launcher not in ("pytorch", "slurm"):
        raise ValueError(f"LAUNCHER: launch_command needs 'pytorch' or 'slurm', got {launcher!r}")
    for name, value in (("NODES", nodes), ("GPUS_PER_NODE", gpus_per_node)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    python = python or sys.executable
    clab_args = [*args, "--launcher", launcher]
    if launcher == "slurm":
        return ["srun", "--nodes", str(nodes), "--ntasks-per-node", str(gpus_per_node), "--gpus-per-task", "1",
                "--kill-on-bad-exit=1", python, "-m", "clab", *clab_args]
    cmd = [python, "-m", "torch.distributed.run"]
    if nodes == 1:
        return cmd + ["--standalone", "--nproc_per_node", str(gpus_per_node), "-m", "clab", *clab_args]
    host = os.environ.get("MASTER_ADDR")
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not host and nodelist:
        host = slurm_master_addr(nodelist)
    if not host:
        raise RuntimeError("NODES > 1 with LAUNCHER pytorch: run inside a SLURM allocation (one torchrun per "
                           "node is started with srun) or set MASTER_ADDR to the first node's address")
    endpoint = f"{host}:{port or os.environ.get('MASTER_PORT', DEFAULT_PORT)}"
    cmd += ["--nnodes", str(nodes), "--nproc_per_node", str(gpus_per_node), "--rdzv_backend", "c10d",
            "--rdzv_endpoint", endpoint]
    if nodelist:  # one torchrun per node of the allocation
        cmd = ["srun", "--nodes", str(nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1", *cmd]
    return cmd + ["-m", "clab", *clab_args]


def run_clab(args: Sequence[str], launcher: str = "pytorch", nodes: int = 1, gpus_per_node: int = 1) -> None:
    """Run ``clab <args>`` through :func:`launch_command`, printing its output as it comes.

    Raises ``RuntimeError`` with the last 40 lines of output when the command fails.
    """
    cmd = launch_command(args, launcher, nodes, gpus_per_node)
    print("$", " ".join(cmd), flush=True)
    tail: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail = (tail + [line])[-40:]
        code = proc.wait()
    if code != 0:
        starter = "srun" if cmd[0] == "srun" else "torchrun"
        raise RuntimeError(f"{starter} clab {args[0]} failed with exit code {code}:\n{''.join(tail)}")


#: run parameters that say how multi-process runs start, and the environment variables that carry them from
#: ``clab reproduce`` into the notebook kernels (:func:`launch_environment`, :func:`launch_from_environment`)
LAUNCH_VARIABLES = {"LAUNCHER": "CLAB_LAUNCHER", "NODES": "CLAB_NODES", "GPUS_PER_NODE": "CLAB_GPUS_PER_NODE"}


_LAUNCH_DEFAULTS = {"LAUNCHER": "pytorch", "NODES": 1, "GPUS_PER_NODE": 0}


def launch_environment(params: Mapping) -> dict[str, str]:
    """``{'CLAB_LAUNCHER', 'CLAB_NODES', 'CLAB_GPUS_PER_NODE'}`` of run parameters ``LAUNCHER``, ``NODES``,
    ``GPUS_PER_NODE``; only those that differ from their defaults (pytorch, 1, 0), which an absent variable
    means (:func:`launch_from_environment`)."""
    return {var: str(params[name]) for name, var in LAUNCH_VARIABLES.items()
            if name in params and params[name] != _LAUNCH_DEFAULTS[name]}


def launch_from_environment(environ: Mapping[str, str] | None = None) -> dict:
    """``{'launcher', 'nodes', 'gpus_per_node'}`` from :data:`LAUNCH_VARIABLES` (defaults pytorch, 1, 0)."""
    env = os.environ if environ is None else environ
    out = {"launcher": env.get("CLAB_LAUNCHER") or "pytorch"}
    for key, var in (("nodes", "CLAB_NODES"), ("gpus_per_node", "CLAB_GPUS_PER_NODE")):
        raw = env.get(var) or ("1" if key == "nodes" else "0")
        if not raw.isdigit():
            raise ValueError(f"{var}: expected a non-negative integer, got {raw!r}")
        out[key] = int(raw)
    return out


def process_plan(gpus: int = 1, launcher: str = "pytorch", nodes: int = 1,
                 gpus_per_node: int = 0) -> tuple[str, int, int] | None:
    """How ``clab reproduce`` runs a training or test: None in the calling process, else
    ``(launcher, nodes, processes per node)`` for :func:`run_clab`.

    ``gpus_per_node`` 0 means ``gpus``. ``slurm`` always goes through ``srun`` (also for one GPU, so the job
    uses its allocation); ``pytorch`` only for more than one process; ``none`` never (one process only).
    """
    per_node = gpus_per_node or gpus
    if launcher not in LAUNCHERS:
        raise ValueError(f"LAUNCHER: expected one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "none":
        if nodes * per_node > 1:
            raise ValueError(f"LAUNCHER none runs in this process, but NODES={nodes} x GPUS_PER_NODE/GPUS="
                             f"{per_node} asks for {nodes * per_node} processes; use pytorch or slurm")
        return None
    if launcher == "pytorch" and nodes * per_node == 1:
        return None
    return launcher, nodes, per_node
