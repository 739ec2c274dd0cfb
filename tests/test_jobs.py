"""Parallel jobs (clab.analysis.jobs) with real subprocesses: parallelism, thread variables, logs, progress
lines, failures, fail-fast, and Ctrl-C stopping every child."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clab.analysis.jobs import (Job, JobError, Progress, clab_job, default_processes, parse_progress,
                                run_jobs)

REPO = Path(__file__).resolve().parents[1]


def _py(name: str, code: str, log: Path, **kw) -> Job:
    return Job(name, [sys.executable, "-c", textwrap.dedent(code)], log, **kw)


def test_jobs_run_in_parallel_with_their_thread_variables(tmp_path):
    # each job waits for the other's flag file: this finishes only when both run at the same time
    code = """
        import os, sys, time
        from pathlib import Path
        me, other = sys.argv[1], sys.argv[2]
        Path(me).touch()
        deadline = time.time() + 30
        while not Path(other).exists():
            if time.time() > deadline:
                sys.exit("the other job never ran beside this one")
            time.sleep(0.02)
        print("threads", os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"], os.environ["EXTRA"])
    """
    a, b = str(tmp_path / "a.flag"), str(tmp_path / "b.flag")
    jobs = [Job("first", [sys.executable, "-c", textwrap.dedent(code), a, b], tmp_path / "logs" / "first.log",
                env={"EXTRA": "x1"}),
            Job("second", [sys.executable, "-c", textwrap.dedent(code), b, a], tmp_path / "logs" / "second.log",
                env={"EXTRA": "x2"})]
    results = run_jobs(jobs, processes=2, threads=3, progress=False)
    assert [r.name for r in results] == ["first", "second"] and all(r.ok for r in results)
    assert "threads 3 3 x1" in (tmp_path / "logs" / "first.log").read_text()
    assert results[1].tail[-1] == "threads 3 3 x2"
    assert (tmp_path / "logs" / "second.log").read_text().startswith(f"$ {sys.executable} -c")


def test_one_process_runs_jobs_one_after_the_other(tmp_path):
    code = """
        import sys, time
        from pathlib import Path
        lock = Path(sys.argv[1])
        if lock.exists():
            sys.exit("another job is running")
        lock.touch(); time.sleep(0.3); lock.unlink()
    """
    lock = str(tmp_path / "lock")
    jobs = [Job(f"j{i}", [sys.executable, "-c", textwrap.dedent(code), lock], tmp_path / f"j{i}.log")
            for i in range(3)]
    assert all(r.ok for r in run_jobs(jobs, processes=1, progress=False))


def test_a_failed_job_is_named_with_its_last_lines(tmp_path):
    jobs = [_py("good", "print('fine')", tmp_path / "good.log"),
            _py("clab seed1", "import sys\nfor i in range(30): print('line', i)\nsys.exit(3)",
                tmp_path / "bad.log")]
    with pytest.raises(JobError) as info:
        run_jobs(jobs, processes=2, progress=False)
    first_line, *rest = str(info.value).splitlines()
    assert first_line == f"job 'clab seed1' failed (exit status 3), log: {tmp_path / 'bad.log'}; its last lines:"
    assert rest[-1].strip() == "line 29" and "line 14" not in str(info.value)   # only the tail
    assert [r.ok for r in info.value.results] == [True, False]
    # without check the results say the same
    results = run_jobs(jobs, processes=2, progress=False, check=False)
    assert [r.returncode for r in results] == [0, 3]
    assert "line 29" in (tmp_path / "bad.log").read_text()


def test_fail_fast_stops_the_others(tmp_path):
    jobs = [_py("sleeper", "import time; time.sleep(60)", tmp_path / "s.log"),
            _py("crash", "raise SystemExit(2)", tmp_path / "c.log"),
            _py("never", "print('ran')", tmp_path / "n.log")]
    t0 = time.monotonic()
    results = run_jobs(jobs, processes=2, progress=False, check=False, fail_fast=True)
    assert time.monotonic() - t0 < 30
    assert results[0].returncode == -signal.SIGTERM and results[1].returncode == 2
    assert results[2].returncode is None and not (tmp_path / "n.log").exists()


def test_progress_lines_come_from_the_jobs_tqdm_bars(tmp_path):
    code = """
        import sys, time
        from tqdm import tqdm
        for _ in tqdm(range(5), desc="train", mininterval=0):
            time.sleep(0.2)
    """
    out = io.StringIO()
    results = run_jobs([_py("clab seed1", code, tmp_path / "t.log")], processes=1, stream=out, interval=0)
    lines = out.getvalue().splitlines()
    assert results[0].ok
    assert lines[0] == "[clab seed1] started"
    assert any(re.fullmatch(r"\[clab seed1\] train [1-4]/5 eta 0:0\d \(0:0\d\)", line) for line in lines), lines
    assert len(lines) == len(set(lines)), "a line is printed only when it changed"
    assert lines[-2].startswith("[clab seed1] done in 0:0")
    assert lines[-1].startswith("1/1 jobs succeeded in ")
    assert b"\r" in (tmp_path / "t.log").read_bytes()  # the log keeps the bar as written


def test_parse_progress_reads_real_tqdm_and_mmcv_lines():
    from tqdm import tqdm
    buf = io.StringIO()
    bar = tqdm(total=288, desc="train", file=buf, mininterval=0, unit="it")
    bar.update(120)
    bar.close()
    found = parse_progress(buf.getvalue())
    assert (found.stage, found.done, found.total) == ("train", 120, 288) and found.eta is not None
    assert str(Progress("train", 120, 288, "1:10")) == "train 120/288 eta 1:10"
    assert parse_progress("2026-01-01 INFO - Epoch [3][10/48]\tlr: 2e-02") == Progress("epoch 3", 10, 48)
    assert parse_progress("INFO - Epoch [2][40/48]\tlr: 2.000e-02, eta: 0:01:01, time: 0.31\nsaved checkpoint") \
        == Progress("epoch 2", 40, 48, "1:01")
    assert parse_progress("iteration 120/288, epoch 3/6, eta 1:10") == Progress("iteration", 120, 288, "1:10")
    assert parse_progress("train: 10%|# | 1/10 [00:01<00:09]\rtrain: 20%|## | 2/10 [00:02<00:08]") == \
        Progress("train", 2, 10, "0:08")  # the last report wins
    assert parse_progress("test:  50%|#####     | 18/36 [00:04<00:04,  4.02frame/s]") == \
        Progress("test", 18, 36, "0:04")
    assert parse_progress("nothing to see") is None


@pytest.mark.parametrize("sig, message", [(signal.SIGINT, "KeyboardInterrupt"),
                                          (signal.SIGTERM, "run_jobs: stopped by SIGTERM")])
def test_ctrl_c_or_sigterm_stops_every_child(tmp_path, sig, message):
    pid_file = tmp_path / "child.pid"
    # the parent loads jobs.py on its own (standard library only), so it starts in a fraction of a second
    # a shell starts background commands with SIGINT ignored, and Python keeps it ignored: give the parent
    # a terminal's Ctrl-C handling whatever started the test run
    parent = textwrap.dedent(f"""
        import importlib.util, signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)
        spec = importlib.util.spec_from_file_location("jobs", {str(REPO / "clab" / "analysis" / "jobs.py")!r})
        jobs = importlib.util.module_from_spec(spec)
        sys.modules["jobs"] = jobs
        spec.loader.exec_module(jobs)
        Job, run_jobs = jobs.Job, jobs.run_jobs
        code = "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
        run_jobs([Job("long", [sys.executable, "-c", code], {str(tmp_path / 'long.log')!r})], progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "the job never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and message in err, err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_arguments_are_checked(tmp_path):
    job = _py("a", "pass", tmp_path / "a.log")
    with pytest.raises(ValueError, match=r"distinct, \['a'\] repeat"):
        run_jobs([job, job], progress=False)
    with pytest.raises(ValueError, match="processes must be an integer >= 1, got 0"):
        run_jobs([job], processes=0, progress=False)
    with pytest.raises(ValueError, match="argv must be a non-empty list of strings"):
        Job("b", "python -c pass", tmp_path / "b.log")
    assert default_processes(1, cpus=2) == 2 and default_processes(2, cpus=2) == 1
    assert default_processes(4, cpus=2) == 1 and default_processes(0, cpus=16) == 1
    assert clab_job("t", ["train", "x.py"], "l.log").argv == [sys.executable, "-m", "clab", "train", "x.py"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_job_lines_are_redrawn_in_place(tmp_path):
    out = _Terminal()
    jobs = [_py(f"j{i}", "print('hello')", tmp_path / f"j{i}.log") for i in range(2)]
    run_jobs(jobs, processes=2, stream=out)
    text = out.getvalue()
    assert "\x1b[2K[j0] started\n\x1b[2K[j1] started\n" in text     # one block of two lines ...
    assert "\x1b[2F" in text                                            # ... redrawn from its first line
    assert "[j0] done in 0:0" in text.rsplit("\x1b[2F", 1)[-1]


@pytest.mark.slow
def test_a_real_tiny_training_reports_its_iterations(tmp_path):
    from clab.data.synthetic import make_synthetic
    root = make_synthetic(tmp_path / "data", seed=1, train_videos=3, val_videos=1, frames=6)  # 3 iterations
    config = str(REPO / "configs" / "selsa-troi_faster-rcnn_tiny_synthetic.py")
    args = ["train", config, "--work-dir", str(tmp_path / "work"), "--device", "cpu", "--cfg-options",
            f"data_root={root}/", "data.workers_per_gpu=0", "runner.max_epochs=1", "lr_config.warmup_iters=1",
            "log_config.interval=1"]
    out = io.StringIO()
    [result] = run_jobs([clab_job("baseline seed0", args, tmp_path / "train.log", cwd=REPO)], threads=1,
                        stream=out, interval=0)
    assert result.ok and (tmp_path / "work" / "latest.pth").is_file()
    lines = out.getvalue().splitlines()
    # the training's progress bar is off when its output is not a terminal; mmcv's log lines tell the iteration
    assert any(re.match(r"\[baseline seed0\] epoch 1 [12]/3 eta 0:0\d", line) for line in lines), lines
    assert "saved checkpoint" in (tmp_path / "train.log").read_text()
