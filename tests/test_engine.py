"""clab train / test on the tiny synthetic config: bad input, NaN losses, kill-and-resume, two torchrun processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CLAB = str(REPO / "configs" / "clab_selsa-troi_faster-rcnn_tiny_synthetic.py")
# 3 training videos of 6 frames -> key frames 1 and 4 -> 6 clips -> 3 iterations of 2 clips per epoch
FAST = {"data.workers_per_gpu": 0, "lr_config.warmup_iters": 2, "log_config.interval": 1}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    from clab.data.synthetic import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp("synthetic"), seed=1, train_videos=3, val_videos=2, frames=6)


def _options(root: Path, **extra) -> list[str]:
    opts = {"data_root": f"{root}/", **FAST, **extra}
    return [f"{k}={v}" for k, v in opts.items()]


def _clab(*args, timeout=600, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "clab", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"clab {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def _losses(work_dir: Path) -> dict[int, dict]:
    """The last record of every iteration in metrics.jsonl (a resumed run rewrites the replayed ones)."""
    records = {}
    for line in (work_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["iter"]] = record
    return records


def test_unknown_cfg_option_names_the_key_and_close_matches():
    from clab.engine.config import ConfigError, load_config
    with pytest.raises(ConfigError, match=r"runner\.max_epoch'.*did you mean 'runner\.max_epochs'"):
        load_config(TINY_CLAB, {"runner.max_epoch": 1})


def test_missing_data_root_fails_before_the_model_is_built(tmp_path):
    from clab.engine.config import ConfigError
    from clab.engine.train import train
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=f"data.train.ann_file does not exist: {missing}/annotations"):
        train(TINY_CLAB, str(tmp_path / "wd"), {"data_root": str(missing)})
    assert not (tmp_path / "wd").exists()  # nothing was started


def test_training_writes_checkpoints_logs_and_provenance(tiny_set, tmp_path):
    work = tmp_path / "run"
    _clab("train", TINY_CLAB, "--work-dir", str(work), "--no-progress", "--cfg-options",
          *_options(tiny_set, **{"runner.max_epochs": 1}))
    import torch
    ckpt = torch.load(work / "epoch_1.pth", weights_only=True)  # primitives only in meta
    assert ckpt["meta"]["epoch"] == 1 and ckpt["meta"]["iter"] == 3
    assert any(k.startswith("auxiliary.") for k in ckpt["state_dict"])
    assert (work / "latest.pth").read_bytes() == (work / "epoch_1.pth").read_bytes()
    records = _losses(work)
    assert sorted(records) == [1, 2, 3]
    for key in ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_cab", "w_cab", "lr", "time",
                "memory_mb"):
        assert key in records[1], key
    # the CAB weight decays linearly over the first half of training (fraction schedule): 3 iterations
    assert records[1]["w_cab"] == pytest.approx(0.005)
    prov = json.loads((work / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["packages"]["mmdet"] == "2.28.2" and prov["git_revision"]
    assert "ContrastiveHead" in (work / "config.py").read_text()
    assert list(work.glob("**/events.out.tfevents*")), "TensorBoard events missing"


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tiny_set, tmp_path):
    work = tmp_path / "run"
    _clab("train", TINY_CLAB, "--work-dir", str(work), "--no-progress", "--cfg-options",
          *_options(tiny_set, **{"runner.max_epochs": 1}))
    before = (work / "epoch_1.pth").read_bytes()
    proc = _clab("train", TINY_CLAB, "--work-dir", str(work), "--no-progress", "--resume", "auto",
                 "--cfg-options", *_options(tiny_set, **{"runner.max_epochs": 2,
                                                         "model.detector.rpn_head.loss_cls.loss_weight": "nan"}),
                 check=False)
    assert proc.returncode != 0
    assert "non-finite loss_rpn_cls = nan at iteration 4 (epoch 2)" in proc.stderr
    assert (work / "epoch_1.pth").read_bytes() == before
    assert not (work / "epoch_2.pth").exists()


def test_killed_run_resumes_to_the_same_losses(tiny_set, tmp_path):
    opts = _options(tiny_set, **{"runner.max_epochs": 3})
    whole = tmp_path / "whole"
    _clab("train", TINY_CLAB, "--work-dir", str(whole), "--no-progress", "--deterministic", "--cfg-options",
          *opts)
    killed = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "clab", "train", TINY_CLAB, "--work-dir", str(killed),
                             "--no-progress", "--deterministic", "--cfg-options", *opts], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (killed / "epoch_1.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / "epoch_1.pth").exists() and not (killed / "epoch_3.pth").exists()
    _clab("train", TINY_CLAB, "--work-dir", str(killed), "--no-progress", "--deterministic", "--resume", "auto",
          "--cfg-options", *opts)
    a, b = _losses(whole), _losses(killed)
    assert sorted(a) == sorted(b) == list(range(1, 10))
    for it in range(4, 10):  # every iteration after the resume point
        for key in ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_cab", "w_cab", "lr"):
            assert b[it][key] == pytest.approx(a[it][key], rel=1e-5, abs=1e-7), (it, key)


def test_two_gloo_processes_train(tiny_set, tmp_path):
    work = tmp_path / "dist"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "clab", "train", TINY_CLAB, "--work-dir", str(work), "--no-progress", "--launcher", "pytorch",
           "--device", "cpu", "--cfg-options", *_options(tiny_set, **{"runner.max_epochs": 1})]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prov = json.loads((work / "provenance.json").read_text())
    assert prov["world_size"] == 2
    records = _losses(work)
    # 6 clips over 2 processes x 2 clips per step -> 2 iterations (mmdet pads groups to whole batches)
    assert sorted(records) == [1, 2]
    assert records[1]["loss_cab"] > 0 and records[1]["w_cab"] == pytest.approx(0.005)
    # testing on two processes (gather to rank 0, loader workers) is covered with SLURM-style processes in
    # tests/test_gpu_path.py
