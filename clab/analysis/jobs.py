"""Independent jobs (``clab train`` / ``clab test`` / ``clab robustness`` of several seeds) in parallel
processes on one CPU machine.

A :class:`Job` is a name, a full command line and a log file. :func:`run_jobs` starts at most
``processes`` of them at a time, each with ``threads`` threads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``), writes everything a job prints (stdout and stderr) to its log, and shows one
progress line per job, read from the job's own progress bars (tqdm) or mmcv log lines::

    [clab seed1] train 120/288 eta 1:10
    [baseline seed2] done in 3:05

Example::

    jobs = [clab_job(f"clab seed{s}", ["train", cfg, "--work-dir", f"work/clab_{s}", "--seed", str(s)],
                     f"work/clab_{s}/job.log") for s in (0, 1, 2)]
    results = run_jobs(jobs, processes=2, threads=1)        # raises JobError if a job failed

On a terminal the lines are redrawn in place; elsewhere (a notebook, a file) a job's line is printed when it
starts, at most every ``interval`` seconds while it runs, and when it ends. Ctrl-C, or any exception in the
calling process, terminates every running job (its whole process group) before it propagates; so does a
SIGTERM sent to the calling process while :func:`run_jobs` runs in its main thread.
"""
from __future__ import annotations

import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Mapping, Sequence

__all__ = ["Job", "JobResult", "JobError", "Progress", "clab_job", "default_processes", "parse_progress",
           "run_jobs", "THREAD_VARIABLES"]

#: environment variables that set the thread count of the numeric libraries in a job
THREAD_VARIABLES: tuple[str, ...] = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_TAIL_LINES = 15


@dataclass(frozen=True)
class Job:
    """One command to run in its own process.

    Attributes:
        name: shown in the progress lines and error messages, e.g. ``"clab seed1"``.
        argv: the full command line, e.g. ``[sys.executable, "-m", "clab", "train", ...]`` (see :func:`clab_job`).
        log: file that receives the command line and everything the job prints (replaced on every run).
        env: extra environment variables (they override the thread variables set by :func:`run_jobs`).
        cwd: working directory (default: the caller's).
    """

    name: str
    argv: Sequence[str]
    log: Path | str
    env: Mapping[str, str] | None = None
    cwd: Path | str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Job.name must be a non-empty string, got {self.name!r}")
        if isinstance(self.argv, (str, bytes)) or not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise ValueError(f"Job {self.name!r}: argv must be a non-empty list of strings, got {self.argv!r}")
        object.__setattr__(self, "argv", list(self.argv))
        object.__setattr__(self, "log", Path(self.log))


@dataclass(frozen=True)
class JobResult:
    """What became of a job: ``returncode`` (0: success; negative: killed by that signal; None: never
    started), wall ``seconds``, its ``log`` and the last lines it printed (``tail``)."""

    name: str
    returncode: int | None
    seconds: float
    log: Path
    tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class JobError(RuntimeError):
    """A job failed. The first line of the message names the job, its exit status and its log; the last
    lines of the log follow. ``results`` holds every job's :class:`JobResult`."""

    def __init__(self, message: str, results: list[JobResult]):
        super().__init__(message)
        self.results = results


@dataclass(frozen=True)
class Progress:
    """A progress report parsed from a job's output: ``done`` of ``total`` steps of ``stage``
    (``"train"``, ``"test"``, ...), and the remaining time as printed (``"1:10"``) or None."""

    stage: str
    done: int
    total: int
    eta: str | None = None

    def __str__(self) -> str:
        text = f"{self.stage} {self.done}/{self.total}".strip()
        return f"{text} eta {self.eta}" if self.eta else text


def clab_job(name: str, args: Sequence[str], log: Path | str, env: Mapping[str, str] | None = None,
             cwd: Path | str | None = None) -> Job:
    """A :class:`Job` running ``python -m clab <args>`` with this interpreter."""
    return Job(name, [sys.executable, "-m", "clab", *args], log, env, cwd)


def default_processes(threads: int = 1, cpus: int | None = None) -> int:
    """How many jobs of ``threads`` threads each fit the usable cores (at least 1). ``threads=0`` (the
    libraries' default, all cores) gives 1."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads <= 0:
        return 1
    return max(1, cpus // threads)


# tqdm:  "train:  42%|████▏     | 120/288 [01:10<01:38,  1.70it/s, epoch=3, loss=0.9]"
_TQDM = re.compile(r"(?:(?P<stage>[\w .-]*?):\s*)?\d+%\|[^|]*\|\s*(?P<done>\d+)/(?P<total>\d+)\s*"
                   r"\[(?P<elapsed>[\d:]+)<(?P<eta>[\d:?]+)")
# tqdm without a known total:  "test: 12frame [00:03, 3.9frame/s]" is not progress towards an end; ignored.
# mmcv's text logger (a training whose progress bar is off when its output is not a terminal):
#   "Epoch [3][10/48]\tlr: 2.000e-02, eta: 0:01:01, time: 0.310, ..."
_MMCV = re.compile(r"Epoch \[(?P<epoch>\d+)\]\[(?P<done>\d+)/(?P<total>\d+)\][^\r\n]*?(?:eta: (?P<eta>[\d:]+)|$)",
                   re.MULTILINE)
# plain lines:  "iteration 120/288, epoch 3/6, eta 1:10"
_PLAIN = re.compile(r"\b(?P<stage>iteration|frame)s? (?P<done>\d+)/(?P<total>\d+)\b"
                    r"[^\r\n]*?(?:eta:? (?P<eta>[\d:]+)|$)", re.MULTILINE)


def _eta(text: str | None) -> str | None:
    """``[H:]MM:SS`` as :func:`_clock` writes it; None for a missing or unknown (``?``) time."""
    if not text or "?" in text:
        return None
    return _clock(sum(int(p) * 60 ** i for i, p in enumerate(reversed(text.split(":")))))


def parse_progress(text: str) -> Progress | None:
    """The last progress report in ``text`` (one or more lines of a job's output), or None.

    Understands tqdm bars (``desc: 42%|...| 120/288 [01:10<01:38, ...]``: stage ``desc``, eta ``1:38``,
    as ``M:SS`` or ``H:MM:SS``), mmcv's text-logger lines (``Epoch [3][10/48] ... eta: 0:01:01``: stage
    ``epoch 3``, eta ``1:01``) and plain ``iteration 120/288 ... eta 1:10`` / ``frame 20/96`` lines.
    """
    found: list[tuple[int, Progress]] = []
    for match in _TQDM.finditer(text):
        found.append((match.start(), Progress((match.group("stage") or "").strip(), int(match.group("done")),
                                              int(match.group("total")), _eta(match.group("eta")))))
    for match in _MMCV.finditer(text):
        found.append((match.start(), Progress(f"epoch {match.group('epoch')}", int(match.group("done")),
                                              int(match.group("total")), _eta(match.group("eta")))))
    for match in _PLAIN.finditer(text):
        found.append((match.start(), Progress(match.group("stage"), int(match.group("done")),
                                              int(match.group("total")), _eta(match.group("eta")))))
    return max(found, key=lambda item: item[0])[1] if found else None


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Running:
    """A started job: its process, log file, the undecoded end of its output and what it last reported."""

    def __init__(self, job: Job, env: dict[str, str]):
        self.job = job
        job.log.parent.mkdir(parents=True, exist_ok=True)
        self.logfile = open(job.log, "wb")
        self.logfile.write(f"$ {shlex.join(job.argv)}\n".encode())
        self.logfile.flush()
        self.start = time.monotonic()
        try:
            # a session of its own: a terminal's Ctrl-C reaches only the caller, which then stops the
            # whole group (the job and any worker processes it forked)
            self.proc = subprocess.Popen(job.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, cwd=job.cwd,
                                         start_new_session=True)
        except OSError as err:
            self.logfile.write(f"could not start: {err}\n".encode())
            self.logfile.close()
            raise
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.partial = ""               # text after the last line break
        self.lines: deque[str] = deque(maxlen=_TAIL_LINES)
        self.progress: Progress | None = None
        self.open = True                # output pipe not at EOF yet
        self.exited: float | None = None  # when the process was first seen to have exited

    def feed(self, data: bytes) -> None:
        self.logfile.write(data)
        self.logfile.flush()
        text = self.partial + data.decode("utf-8", errors="replace")
        found = parse_progress(text)
        if found is not None:
            self.progress = found
        # keep what a terminal would show: the text after the last carriage return of every line
        *complete, self.partial = text.split("\n")
        for line in complete:
            shown = line.rsplit("\r", 1)[-1].rstrip()
            if shown:
                self.lines.append(shown)
        if "\r" in self.partial:
            self.partial = self.partial.rsplit("\r", 1)[-1]
        self.partial = self.partial[-4096:]

    def tail(self) -> list[str]:
        lines = list(self.lines)
        if self.partial.strip():
            lines.append(self.partial.strip())
        return lines[-_TAIL_LINES:]

    def finish(self, returncode: int | None) -> JobResult:
        seconds = time.monotonic() - self.start
        if not self.logfile.closed:
            self.logfile.write(f"\n[exit status {returncode} after {seconds:.1f} s]\n".encode())
            self.logfile.close()
        return JobResult(self.job.name, returncode, seconds, self.job.log, self.tail())

    def status(self) -> str:
        elapsed = _clock(time.monotonic() - self.start)
        return f"{self.progress} ({elapsed})" if self.progress else f"running ({elapsed})"


def _kill(running: Sequence[_Running], grace: float = 5.0) -> None:
    """SIGTERM every job's process group, then SIGKILL what is still alive after ``grace`` seconds."""
    alive = [r for r in running if r.proc.poll() is None]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for r in alive:
            try:
                os.killpg(r.proc.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [r for r in alive if r.proc.poll() is None]
            if alive:
                time.sleep(0.05)
        if not alive:
            break
    for r in running:
        r.proc.wait()
        r.proc.stdout.close()


class _Display:
    """One line per job: redrawn in place on a terminal, printed now and then elsewhere."""

    def __init__(self, stream: IO[str] | None, interval: float):
        self.stream = stream
        self.interval = interval
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.lines: dict[str, str] = {}
        self.printed: dict[str, tuple[float, str]] = {}   # name -> (time, line) last printed
        self.drawn = 0
        self.last_draw = 0.0

    def update(self, name: str, text: str, final: bool = False) -> None:
        if self.stream is None:
            return
        line = f"[{name}] {text}"
        if self.tty:
            self.lines[name] = line
            if final or time.monotonic() - self.last_draw > 0.5:
                self.redraw()
            return
        now = time.monotonic()
        last_time, last_line = self.printed.get(name, (None, None))
        if final or last_time is None or (now - last_time >= self.interval and line != last_line):
            self.printed[name] = (now, line)
            print(line, file=self.stream, flush=True)

    def redraw(self) -> None:
        if not self.tty:
            return
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        body = "".join(f"\x1b[2K{line}\n" for line in self.lines.values())
        self.stream.write(up + body)
        self.stream.flush()
        self.drawn = len(self.lines)
        self.last_draw = time.monotonic()

    def message(self, text: str) -> None:
        """A line outside the per-job block (printed below it; the block restarts underneath)."""
        if self.stream is None:
            return
        if self.tty:
            self.redraw()
            self.lines.clear()
            self.drawn = 0
        print(text, file=self.stream, flush=True)


def _stop_on_sigterm(signum, frame) -> None:
    raise SystemExit(f"run_jobs: stopped by {signal.Signals(signum).name}; the running jobs were stopped too")


def _job_environment(job: Job, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    if threads > 0:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    env["PYTHONUNBUFFERED"] = "1"   # the job's prints reach its log (and the progress line) at once
    env.update({str(k): str(v) for k, v in (job.env or {}).items()})
    return env


def run_jobs(jobs: Sequence[Job], processes: int | None = None, threads: int = 1, progress: bool = True, *,
             check: bool = True, fail_fast: bool = False, stream: IO[str] | None = None,
             interval: float = 15.0) -> list[JobResult]:
    """Run ``jobs``, at most ``processes`` at a time, in the given order; returns one :class:`JobResult`
    per job, in the order of ``jobs``.

    Args:
        jobs: :class:`Job` s with distinct names.
        processes: parallel processes (default: :func:`default_processes` of ``threads``).
        threads: threads per job (``OMP_NUM_THREADS`` etc.); 0 leaves the libraries' default.
        progress: show one progress line per job on ``stream`` (default ``sys.stderr``).
        check: raise :class:`JobError` when a job failed (after the others finished, unless ``fail_fast``).
        fail_fast: at the first failure, stop the running jobs and start no more (their ``returncode`` is the
            negative signal number, or None for jobs never started).
        interval: seconds between two progress lines of the same job when ``stream`` is not a terminal.

    Raises:
        ValueError: bad arguments (duplicate names, ``processes`` < 1, ``threads`` < 0).
        JobError: with ``check``, when a job did not succeed.
    """
    jobs = list(jobs)
    names = [j.name for j in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"run_jobs: job names must be distinct, {duplicates} repeat")
    if not isinstance(threads, int) or threads < 0:
        raise ValueError(f"run_jobs: threads must be an integer >= 0, got {threads!r}")
    if processes is None:
        processes = default_processes(threads)
    if not isinstance(processes, int) or processes < 1:
        raise ValueError(f"run_jobs: processes must be an integer >= 1, got {processes!r}")
    display = _Display((stream or sys.stderr) if progress else None, interval)
    results: dict[str, JobResult] = {}
    pending = list(jobs)
    running: list[_Running] = []
    selector = selectors.DefaultSelector()
    t0 = time.monotonic()
    stopping = False
    # SIGTERM (a killed notebook kernel, `kill`) becomes an exception here, so the jobs are stopped with us
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _stop_on_sigterm) if in_main_thread else None
    try:
        while pending or running:
            while pending and len(running) < processes and not stopping:
                job = pending.pop(0)
                try:
                    r = _Running(job, _job_environment(job, threads))
                except OSError as err:
                    results[job.name] = JobResult(job.name, None, 0.0, job.log, [f"could not start: {err}"])
                    display.update(job.name, f"FAILED to start: {err}", final=True)
                    stopping = stopping or fail_fast
                    continue
                running.append(r)
                selector.register(r.proc.stdout, selectors.EVENT_READ, r)
                display.update(job.name, "started", final=True)
            if not running:
                if stopping:
                    break
                continue
            if selector.get_map():
                events = selector.select(timeout=0.5)
            else:
                events = []
                time.sleep(0.1)
            for key, _ in events:
                r = key.data
                try:
                    data = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if data:
                    r.feed(data)
                    display.update(r.job.name, r.status())
                else:  # EOF: the job (and whatever shared its output) closed the pipe
                    selector.unregister(key.fileobj)
                    r.open = False
            for r in list(running):
                code = r.proc.poll()
                if code is None:
                    display.update(r.job.name, r.status())
                    continue
                if r.open:  # exited: read what is left in the pipe, unless a leftover child holds it open
                    r.exited = r.exited or time.monotonic()
                    if time.monotonic() - r.exited < 2.0:
                        continue
                    selector.unregister(r.proc.stdout)
                    r.open = False
                r.proc.stdout.close()
                running.remove(r)
                result = r.finish(code)
                results[r.job.name] = result
                if result.ok:
                    display.update(r.job.name, f"done in {_clock(result.seconds)}", final=True)
                    continue
                display.update(r.job.name, f"FAILED (exit status {code}) after {_clock(result.seconds)}, "
                                           f"log: {result.log}", final=True)
                if fail_fast and not stopping:
                    stopping = True
                    for other in running:
                        if other.open:
                            selector.unregister(other.proc.stdout)
                    _kill(running)
                    for other in running:
                        results[other.job.name] = other.finish(other.proc.returncode)
                        display.update(other.job.name, "stopped", final=True)
                    running.clear()
                    break
    except BaseException:
        _kill(running)
        for r in running:
            r.finish(r.proc.returncode)
        raise
    finally:
        selector.close()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm if previous_sigterm is not None else signal.SIG_DFL)
    for job in jobs:
        results.setdefault(job.name, JobResult(job.name, None, 0.0, job.log, []))
    ordered = [results[j.name] for j in jobs]
    failed = [r for r in ordered if not r.ok]
    used = max(1, min(processes, len(jobs)))
    display.message(f"{len(ordered) - len(failed)}/{len(ordered)} jobs succeeded in {_clock(time.monotonic() - t0)}"
                    f" ({used} process{'es' if used > 1 else ''} x {threads or 'default'} "
                    f"thread{'s' if threads != 1 else ''})")
    if check and failed:
        first = next((r for r in failed if r.returncode is not None), failed[0])
        status = "never started" if first.returncode is None else f"exit status {first.returncode}"
        others = f"; {len(failed) - 1} more job(s) did not succeed" if len(failed) > 1 else ""
        tail = "\n".join(f"    {line}" for line in first.tail) or "    (no output)"
        raise JobError(f"job {first.name!r} failed ({status}), log: {first.log}{others}; its last lines:\n{tail}",
                       ordered)
    return ordered
