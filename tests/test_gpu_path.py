"""The GPU path, checked on CPUs: launching (SLURM node lists and environment, launch commands), the global
batch (warning, linear lr scaling, gradient accumulation), device placement, the ordered test loader, and two
processes started the way srun starts them that train and test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from mmcv import Config

from clab.engine import launch, scaling
from clab.engine.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
TINY_CLAB = str(CONFIGS / "clab_selsa-troi_faster-rcnn_tiny_synthetic.py")
PAPER_CLAB = str(CONFIGS / "clab_selsa-troi_faster-rcnn_r101-dc5_8xb2-7e_imagenetvid.py")


# ------------------------------------------------------------------ SLURM
@pytest.mark.parametrize("nodelist, hosts", [
    ("gpu7", ["gpu7"]),
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("node[8-10],login1", ["node8", "node9", "node10", "login1"]),
    ("a[1-2]-b[03,04]", ["a1-b03", "a1-b04", "a2-b03", "a2-b04"]),
    ("n[099-101]", ["n099", "n100", "n101"]),
])
def test_compact_node_lists_expand_in_order(nodelist, hosts):
    assert launch.parse_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["", "node[01-03", "node01]", "node[03-01]", "node[a-b]"])
def test_bad_node_lists_name_the_variable(bad):
    with pytest.raises(ValueError, match="SLURM_NODELIST"):
        launch.parse_nodelist(bad)


def test_slurm_environment_gives_torch_its_variables():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_NODELIST": "gpu[12-13]"}
    if launch.shutil.which("scontrol") is None:  # the parser, not SLURM's tools, names the master here
        assert launch.slurm_environment(env) == {"RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "1",
                                                 "MASTER_ADDR": "gpu12", "MASTER_PORT": "29500"}
    # an address and a port already set win, as in mmcv
    out = launch.slurm_environment(dict(env, MASTER_ADDR="10.0.0.1", MASTER_PORT="1234"))
    assert (out["MASTER_ADDR"], out["MASTER_PORT"]) == ("10.0.0.1", "1234")
    with pytest.raises(RuntimeError, match="SLURM_LOCALID"):
        launch.slurm_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    with pytest.raises(RuntimeError, match="SLURM_PROCID=2 is not below SLURM_NTASKS=2"):
        launch.slurm_environment(dict(env, SLURM_PROCID="2", SLURM_NTASKS="2"))


def test_launch_commands(monkeypatch):
    cmd = launch.launch_command(["train", "c.py"], "slurm", nodes=2, gpus_per_node=8, python="py")
    assert cmd[:7] == ["srun", "--nodes", "2", "--ntasks-per-node", "8", "--gpus-per-task", "1"]
    assert cmd[-6:] == ["-m", "clab", "train", "c.py", "--launcher", "slurm"]
    one = launch.launch_command(["test", "c.py", "k.pth"], "pytorch", 1, 4, python="py")
    assert one == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m", "clab",
                   "test", "c.py", "k.pth", "--launcher", "pytorch"]
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("SLURM_NODELIST", raising=False)
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    with pytest.raises(RuntimeError, match="NODES > 1"):
        launch.launch_command(["train", "c.py"], "pytorch", 2, 8)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[3-4]")
    monkeypatch.setenv("MASTER_ADDR", "n3")
    multi = launch.launch_command(["train", "c.py"], "pytorch", 2, 8, python="py", port=29600)
    assert multi[:6] == ["srun", "--nodes", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]
    assert "--nnodes" in multi and multi[multi.index("--rdzv_endpoint") + 1] == "n3:29600"
    with pytest.raises(ValueError, match="GPUS_PER_NODE"):
        launch.launch_command(["train"], "pytorch", 1, 0)


def test_process_plan_and_run_parameters():
    assert launch.process_plan(1) is None
    assert launch.process_plan(8) == ("pytorch", 1, 8)
    assert launch.process_plan(1, "slurm") == ("slurm", 1, 1)
    assert launch.process_plan(8, "slurm", nodes=2, gpus_per_node=4) == ("slurm", 2, 4)
    with pytest.raises(ValueError, match="LAUNCHER none"):
        launch.process_plan(8, "none")
    env = launch.launch_environment({"LAUNCHER": "slurm", "NODES": 2, "GPUS_PER_NODE": 4, "GPUS": 8})
    assert env == {"CLAB_LAUNCHER": "slurm", "CLAB_NODES": "2", "CLAB_GPUS_PER_NODE": "4"}
    assert launch.launch_from_environment(env) == {"launcher": "slurm", "nodes": 2, "gpus_per_node": 4}
    assert launch.launch_from_environment({}) == {"launcher": "pytorch", "nodes": 1, "gpus_per_node": 0}
    assert launch.launch_environment({"LAUNCHER": "pytorch", "NODES": 1, "GPUS_PER_NODE": 0}) == {}
    from clab.params import RUNNER_ONLY, check_parameters
    assert {"LAUNCHER", "NODES", "GPUS_PER_NODE"} <= set(RUNNER_ONLY)
    with pytest.raises(ValueError, match="LAUNCHER"):
        check_parameters({"LAUNCHER": "mpi"})


# ------------------------------------------------------------------ global batch
def test_other_world_size_warns_and_scales_or_accumulates():
    cfg = Config.fromfile(PAPER_CLAB)
    same = scaling.plan_batch(cfg, world_size=8)
    assert same.global_batch == 16 and same.warning is None and same.lr == 0.01
    fewer = scaling.plan_batch(cfg, world_size=4)
    assert fewer.global_batch == 8 and fewer.lr == 0.01
    assert "global batch 8" in fewer.warning and "config's 16" in fewer.warning and "--accumulate 2" in fewer.warning
    scaled = scaling.plan_batch(cfg, world_size=4, auto_scale_lr=True)
    assert scaled.lr == pytest.approx(0.005) and "0.005" in scaled.warning
    accumulated = scaling.plan_batch(cfg, world_size=2, accumulate=4)
    assert accumulated.global_batch == 16 and accumulated.warning is None and accumulated.lr == 0.01
    assert accumulated.warmup_iters == 500 * 4            # the same 500 optimizer steps of warmup
    assert scaling.optimizer_hook(cfg, 4) == dict(type="GradientCumulativeOptimizerHook", cumulative_iters=4,
                                                  grad_clip=dict(max_norm=35, norm_type=2))
    amp = scaling.optimizer_hook(cfg, 4, amp=True, distributed=True)
    assert amp["type"] == "GradientCumulativeFp16OptimizerHook" and amp["loss_scale"] == "dynamic"
    assert scaling.optimizer_hook(cfg, 1, amp=True)["type"] == "Fp16OptimizerHook"
    # mmcv knows every hook named here
    from mmcv.runner import HOOKS
    for hook in (amp, scaling.optimizer_hook(cfg, 4), scaling.optimizer_hook(cfg, 1)):
        assert HOOKS.get(hook["type"]) is not None
    with pytest.raises(ConfigError, match="--auto-scale-lr"):
        scaling.plan_batch(Config.fromfile(TINY_CLAB), 2, auto_scale_lr=True)   # states no global batch
    with pytest.raises(ConfigError, match="--accumulate"):
        scaling.plan_batch(cfg, 8, accumulate=0)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    from clab.data.synthetic import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp("synthetic"), seed=3, train_videos=3, val_videos=2, frames=6)


def _fast(root: Path, **extra) -> dict:
    return {"data_root": f"{root}/", "data.workers_per_gpu": 0, "lr_config.warmup_iters": 2,
            "log_config.interval": 1, "runner.max_epochs": 1, **extra}


def test_accumulation_steps_once_per_k_iterations_and_warns(tiny_set, tmp_path):
    """A real training on one process with a stated global batch of 8 and 2 clips x 3 accumulated steps: the
    warning names both batches, the optimizer steps once over the epoch's 3 iterations (mmcv logs grad_norm
    only at a step) and the warmup covers 2 x 3 iterations."""
    from clab.engine.train import train
    config = tmp_path / "tiny_8.py"      # the tiny CLAB config, stating a global batch of 8
    config.write_text(f"_base_ = {TINY_CLAB!r}\nauto_scale_lr = dict(enable=False, base_batch_size=8)\n")
    work = tmp_path / "acc"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(str(config), str(work), _fast(tiny_set), progress=False, accumulate=3)
    messages = [str(w.message) for w in caught if "global batch" in str(w.message)]
    assert messages and "global batch 6 (1 process(es) x 2 clip(s) x 3 accumulated step(s))" in messages[0]
    assert "config's 8" in messages[0]
    prov = json.loads((work / "provenance.json").read_text())
    assert (prov["accumulate"], prov["global_batch"], prov["base_batch"]) == (3, 6, 8)
    log = [json.loads(line) for line in (work / sorted(p.name for p in work.glob("*.log.json"))[-1])
           .read_text().splitlines() if '"mode": "train"' in line]
    assert [("grad_norm" in r) for r in log] == [False, False, True]
    lrs = [r["lr"] for r in log]
    # logged to 5 digits
    assert lrs == pytest.approx([0.02 * (1 / 3 + (1 - 1 / 3) * i / 6) for i in range(3)], abs=1e-5)


# ------------------------------------------------------------------ devices and the test loader
def test_batches_follow_the_model_device():
    from mmcv.parallel import DataContainer, collate
    model = torch.nn.Linear(2, 2)
    batch = collate([{"img": DataContainer(torch.zeros(3, 4, 4), stack=True), "img_metas":
                      DataContainer({"frame_id": 0}, cpu_only=True)}], samples_per_gpu=1)
    out = launch.to_model_device(batch, model)
    assert out["img"].device == torch.device("cpu") and out["img_metas"] == [{"frame_id": 0}]
    assert launch.model_device(torch.nn.DataParallel(model)) == torch.device("cpu")
    meta = torch.nn.Linear(2, 2, device="meta")       # a model elsewhere: the batch is sent there, or refused
    assert launch.model_device(meta) == torch.device("meta")
    with pytest.raises(ValueError, match="unsupported device meta"):
        launch.to_model_device(batch, meta)
    assert launch.resolve_device("cuda:3") == "cuda:3"
    with pytest.raises(ValueError, match="--device"):
        launch.resolve_device("gpu")


def test_ordered_test_loader_keeps_video_order_with_workers(tiny_set):
    from mmdet.datasets import build_dataset

    import clab  # noqa: F401
    from clab.engine.config import load_config
    from clab.engine.loaders import build_test_loader, video_shards
    cfg = load_config(TINY_CLAB, {"data_root": f"{tiny_set}/"})
    dataset = build_dataset(cfg.data.test, dict(test_mode=True))
    shards = video_shards(dataset, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(dataset)))
    for shard in shards:
        seen = [(b["img_metas"][0].data[0][0]["video_id"], b["img_metas"][0].data[0][0]["frame_id"])
                for b in build_test_loader(dataset, shard, workers=2)]
        expected = [(dataset.data_infos[i]["video_id"], dataset.data_infos[i]["frame_id"]) for i in shard]
        assert seen == expected
        for video in {v for v, _ in seen}:   # every video whole, frame 0 first, on one process
            assert [f for v, f in seen if v == video] == list(range(6))


# ------------------------------------------------------------------ SLURM-style processes
def _srun_like(args: list[str], port: int, tmp_path: Path, tag: str) -> None:
    """Start ``clab <args> --launcher slurm`` twice with the variables srun sets for 2 tasks on one node."""
    procs = []
    for rank in range(2):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", SLURM_PROCID=str(rank),
                   SLURM_NTASKS="2", SLURM_LOCALID=str(rank), SLURM_NODELIST="localhost",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            env.pop(name, None)
        log = open(tmp_path / f"{tag}{rank}.log", "w")
        procs.append((subprocess.Popen([sys.executable, "-m", "clab", *args, "--launcher", "slurm", "--device",
                                        "cpu"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        code = proc.wait(timeout=600)
        log.close()
        assert code == 0, Path(log.name).read_text()[-3000:]


def test_two_slurm_style_processes_train_and_test(tiny_set, tmp_path):
    work = tmp_path / "wd"
    opts = [f"{k}={v}" for k, v in _fast(tiny_set).items()]
    _srun_like(["train", TINY_CLAB, "--work-dir", str(work), "--no-progress", "--cfg-options", *opts], 29561,
               tmp_path, "train")
    prov = json.loads((work / "provenance.json").read_text())
    assert prov["world_size"] == 2
    out = tmp_path / "test"
    _srun_like(["test", TINY_CLAB, str(work / "latest.pth"), "--out", str(out), "--no-progress",
                "--cfg-options", f"data_root={tiny_set}/", "data.workers_per_gpu=1"], 29562, tmp_path, "test")
    metrics = json.loads((out / "metrics.json").read_text())       # written by rank 0 alone
    assert metrics["world_size"] == 2 and metrics["num_frames"] == 12
    assert len(json.loads((out / "coco_results.json").read_text())) > 0


# ------------------------------------------------------------------ the per-video cache
def _frame_meta(video: int, frame_id: int, **extra) -> dict:
    import numpy as np
    h, w = 96, 160
    return dict(filename=f"v{video}/{frame_id:06d}.JPEG", ori_shape=(h, w, 3), img_shape=(h, w, 3),
                pad_shape=(h, w, 3), scale_factor=np.ones(4, dtype=np.float32), flip=False, flip_direction=None,
                frame_id=frame_id, video_id=video, is_video_data=True,
                img_norm_cfg=dict(mean=np.zeros(3, np.float32), std=np.ones(3, np.float32), to_rgb=False), **extra)


@pytest.fixture(scope="module")
def tiny_model():
    from mmdet.models import build_detector

    import clab  # noqa: F401
    torch.manual_seed(0)
    model = build_detector(Config.fromfile(TINY_CLAB).model)
    model.init_weights()
    return model.eval()


def _step(model, video, frame_id, refs=0, **extra):
    g = torch.Generator().manual_seed(100 * video + frame_id)
    kwargs = {}
    if refs:
        kwargs = dict(ref_img=[torch.randn(1, refs, 3, 96, 160, generator=g)],
                      ref_img_metas=[[[_frame_meta(video, frame_id, **extra) for _ in range(refs)]]])
    with torch.no_grad():
        return model(img=[torch.randn(1, 3, 96, 160, generator=g)],
                     img_metas=[[_frame_meta(video, frame_id, **extra)]], return_loss=False, rescale=True, **kwargs)


def test_cache_refuses_another_video_and_bad_frame_order(tiny_model):
    _step(tiny_model, 1, 0, refs=3)
    _step(tiny_model, 1, 1)
    _step(tiny_model, 1, 4)                           # adaptive stride: fixed references, frames may be skipped
    assert tiny_model.memo.video == ("video_id", 1) and tiny_model.memo.last_frame_id == 4
    with pytest.raises(RuntimeError, match="belongs to video 2 but the reference cache holds video 1 "
                                           r"\(last frame 4\); a new video must start at frame 0"):
        _step(tiny_model, 2, 5)
    with pytest.raises(RuntimeError, match="frame 4 follows frame 4 of its video; frame ids must increase"):
        _step(tiny_model, 1, 4)
    _step(tiny_model, 2, 0, refs=3)                   # frame 0 of a new video replaces the cache
    assert tiny_model.memo.video == ("video_id", 2) and tiny_model.memo.frame_ids == [0]
    tiny_model.reset_video_memo()
    assert tiny_model.memo is None
    with pytest.raises(RuntimeError, match="arrived before frame 0 of its video"):
        _step(tiny_model, 2, 1)


def test_fixed_stride_cache_refuses_a_gap(tiny_model):
    fix = dict(num_left_ref_imgs=1, frame_stride=2)
    _step(tiny_model, 3, 0, refs=3, **fix)
    _step(tiny_model, 3, 1, **fix)
    with pytest.raises(RuntimeError, match="fixed-stride frame 3 follows frame 1 of its video; frames must be "
                                           "consecutive"):
        _step(tiny_model, 3, 3, **fix)
    tiny_model.reset_video_memo()


def test_amp_wrapping_reaches_the_video_detector(tiny_model):
    """What --amp does before training (mmcv's Fp16OptimizerHook.before_run -> wrap_fp16_model): every module
    with an fp16_enabled switch, SELSA itself included, has it turned on, so SELSA.forward (decorated with
    auto_fp16 for img and ref_img) runs under autocast and casts its images to half."""
    import copy

    from mmcv.runner import wrap_fp16_model
    model = copy.deepcopy(tiny_model)
    switches = [m for m in model.modules() if hasattr(m, "fp16_enabled")]
    assert model in switches and not any(m.fp16_enabled for m in switches)
    wrap_fp16_model(model)
    assert all(m.fp16_enabled for m in switches)
    assert getattr(type(model).forward, "__wrapped__", None) is not None      # the auto_fp16 decorator
    # the model stays fp32 (autocast casts per op), as mmcv does for torch >= 1.6
    assert all(p.dtype == torch.float32 for p in model.parameters())
