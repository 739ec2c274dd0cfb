"""Progress of long notebook cells, shown in the terminal that runs ``clab reproduce`` (issue 10, point 6).

Papermill runs a notebook in a Jupyter kernel whose output goes into the executed notebook, so a training
of ten minutes would show nothing in the terminal but papermill's cell counter. The runner therefore names
a *progress file* in the kernel's environment (``CLAB_PROGRESS_FILE``) and prints every line written to it
while the notebook runs (:class:`ProgressMonitor`). Inside the kernel:

* :func:`report` appends one line (a no-op outside the runner);
* :class:`TeeStream` is a text stream that writes to the notebook's output and to the progress file (the
  per-job progress lines of :func:`clab.analysis.jobs.run_jobs` go through it);
* :func:`watch_training_log` follows a work dir's ``metrics.jsonl`` during an in-process training and
  reports ``iteration N/M, epoch e/E, eta m:ss`` every ``interval`` seconds.

Lines are plain text, one event per line.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterator

__all__ = ["PROGRESS_ENV", "progress_file", "report", "TeeStream", "training_progress", "watch_training_log",
           "ProgressMonitor", "clock"]

#: environment variable naming the progress file of the notebook being run
PROGRESS_ENV = "CLAB_PROGRESS_FILE"


def progress_file() -> Path | None:
    """The progress file the runner named for this process, or None (not run by the runner)."""
    value = os.environ.get(PROGRESS_ENV, "")
    return Path(value) if value else None


def report(line: str) -> None:
    """Append ``line`` to the progress file (nothing happens outside the runner)."""
    path = progress_file()
    if path is None:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n").replace("\n", " ") + "\n")
    except OSError:
        pass  # progress is a courtesy: never fail the work because the terminal cannot be told


def clock(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TeeStream:
    """A text stream writing to ``stream`` (default: ``sys.stdout``, the notebook) and, line by line, to the
    progress file. Not a terminal, so :func:`clab.analysis.jobs.run_jobs` prints its lines now and then
    instead of redrawing them."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if line.strip():
                report(line.rsplit("\r", 1)[-1])
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def training_progress(records: list[dict], max_epochs: int | None, seconds: float) -> str:
    """One progress line from the ``metrics.jsonl`` records of a training so far: ``iteration N/M, epoch
    e/E, eta m:ss`` (``M`` and the eta once the first epoch finished, i.e. its length is known)."""
    if not records:
        return "starting"
    last = records[-1]
    done, epoch = int(last["iter"]), int(last["epoch"])
    first_epoch = [r for r in records if int(r["epoch"]) == int(records[0]["epoch"])]
    text = f"iteration {done}"
    if max_epochs and epoch > int(records[0]["epoch"]):
        per_epoch = int(first_epoch[-1]["iter"]) - int(first_epoch[0]["iter"]) + 1
        total = per_epoch * int(max_epochs)
        text += f"/{total}"
        rate = seconds / max(1, len(records))
        text += f", epoch {epoch}/{max_epochs}, eta {clock(rate * max(0, total - done))}"
    elif max_epochs:
        text += f", epoch {epoch}/{max_epochs}"
    return text


def _read_records(path: Path) -> list[dict]:
    records = []
    try:
        text = path.read_text()
    except OSError:
        return records
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written
    return records


@contextlib.contextmanager
def watch_training_log(work_dir: str | Path, label: str, max_epochs: int | None = None,
                       interval: float = 15.0) -> Iterator[None]:
    """While the ``with`` block trains into ``work_dir``, report ``<label> train <progress>`` every
    ``interval`` seconds from its ``metrics.jsonl`` (see :func:`training_progress`); does nothing outside the
    runner."""
    if progress_file() is None:
        yield
        return
    path = Path(work_dir) / "metrics.jsonl"
    start = time.monotonic()
    stop = threading.Event()
    known = len(_read_records(path))   # lines of an earlier run of a resumed training

    def follow() -> None:
        while not stop.wait(interval):
            records = _read_records(path)[known:]
            report(f"[{label}] train {training_progress(records, max_epochs, time.monotonic() - start)} "
                   f"({clock(time.monotonic() - start)})")

    thread = threading.Thread(target=follow, daemon=True)
    report(f"[{label}] train started")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        report(f"[{label}] train finished in {clock(time.monotonic() - start)}")


class ProgressMonitor:
    """Runner side: a thread printing every line appended to ``path`` through ``emit`` (default: to
    ``sys.stderr`` with ``prefix``), checking every ``poll`` seconds; the rest is printed on exit."""

    def __init__(self, path: str | Path, prefix: str = "", emit: Callable[[str], None] | None = None,
                 poll: float = 1.0):
        self.path = Path(path)
        self.prefix = prefix
        self.emit = emit or (lambda line: print(line, file=sys.stderr, flush=True))
        self.poll = poll
        self._offset = 0
        self._partial = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _drain(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data.decode("utf-8", errors="replace")).split("\n")
        for line in lines:
            if line.strip():
                self.emit(f"{self.prefix}{line}")

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self._drain()

    def __enter__(self) -> "ProgressMonitor":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()
        with contextlib.suppress(OSError):
            self.path.unlink()
