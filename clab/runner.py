"""``clab reproduce papermill_params/X.yaml``: run the notebooks of one run with papermill (STYLE 7-11).

1. The parameter file (flat YAML, ``clab.params``) and ``--set KEY=VALUE`` overrides are validated, and the
   notebooks, the Jupyter kernel and the config files are checked, before any notebook starts.
2. ``notebooks/NN_name.ipynb`` run in order with papermill (kernel ``clab``, working directory = the
   repository root, ``MPLBACKEND=agg``, ``OMP_NUM_THREADS=CPU_THREADS`` when set) into ``<RESULTS_DIR>/<RUN_NAME>/NN_name.ipynb``; the run's
   parameters that a notebook declares in its ``parameters`` cell are injected after that cell.
3. ``run_state.json`` records each notebook's status, time, fingerprint and outputs. The fingerprint is a
   hash of the values of the parameters its ``parameters`` cell declares, the notebook's own text and the
   code (:func:`code_digest`: every ``.py`` file of the ``clab`` package and of ``configs/``); the outputs
   are the files the notebook wrote into the run folder. A rerun skips a notebook only when it finished with
   the same fingerprint **on this checkout** (:func:`checkout_identity`: the machine and the repository
   folder; a committed ``run_state.json`` of a fresh clone names another one) and its executed copy and
   every output still exist; ``--force`` or an earlier notebook that ran again in this invocation reruns it.
   While a notebook runs, the progress lines its long cells report (trainings, tests, sweeps: iterations
   and ETA, see :mod:`clab.analysis.progress`) are printed to stderr.
4. ``README.md`` in the run folder summarises the run: notebooks, the metrics table, tables, figures and
   parameters. It is rewritten after every notebook, so it is current even when a notebook fails.

A failing notebook stops the run with an error naming the notebook, the cell (index and execution count) and
the exception; the executed copy with the traceback and everything finished before it are kept.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .params import NOTEBOOKS, SCHEMA, check_parameters, load_parameter_file, parse_override

__all__ = ["REPO_ROOT", "NotebookError", "parameters_cell", "resolve_parameters", "code_digest",
           "checkout_identity", "skip_reason", "reproduce", "write_readme", "add_arguments", "run"]

#: the repository root: notebooks run there, and relative paths in parameters are relative to it
REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_FILE = "run_state.json"


class NotebookError(RuntimeError):
    """A notebook of the run failed. Attributes name the notebook, the cell (0-based index in the source
    notebook, and the execution count) and the error."""

    def __init__(self, notebook: str, message: str, executed: Path, cell_index: int | None = None,
                 exec_count: int | None = None, ename: str = "", evalue: str = ""):
        self.notebook, self.executed = notebook, executed
        self.cell_index, self.exec_count, self.ename, self.evalue = cell_index, exec_count, ename, evalue
        super().__init__(message)


def parameters_cell(notebook: str | Path) -> dict[str, Any]:
    """``{NAME: value}`` of the notebook's one cell tagged ``parameters`` (literal assignments only)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    values = {}
    for node in ast.parse(cells[0].source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{notebook}: the parameters cell may only hold NAME = literal lines, found "
                             f"{ast.unparse(node)!r}")
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError as err:
            raise ValueError(f"{notebook}: parameter {node.targets[0].id} is not a literal") from err
    return values


def resolve_parameters(param_file: str | Path, overrides: list[str] = (), results_dir: str | None = None
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(given, merged)``: the parameters the file and ``overrides`` set (validated), and those merged over
    the defaults. ``results_dir`` (``--results-dir``, relative to the current folder) replaces RESULTS_DIR."""
    given = load_parameter_file(param_file)
    for text in overrides:
        key, value = parse_override(text)
        given[key] = value
    if results_dir is not None:
        given["RESULTS_DIR"] = repo_relative(results_dir)
    merged = check_parameters(given, f"{param_file} (with --set/--results-dir)")
    return {k: merged[k] for k in given}, merged


def repo_relative(path: str | Path) -> str:
    """``path`` (relative to the current folder) as run records show it: relative to the repository root when it
    lies inside it, so executed notebooks and READMEs name no machine's folders; absolute otherwise."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix() or "."
    except ValueError:
        return str(resolved)


def _scrub_papermill_paths(executed: Path) -> None:
    """Write the executed notebook's papermill metadata paths relative to the repository root."""
    import nbformat

    from .io import atomic_open
    nb = nbformat.read(str(executed), as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = repo_relative(meta[key])
    with atomic_open(executed, "w") as f:
        nbformat.write(nb, f)


def _check_environment(merged: dict[str, Any], names: list[str], kernel_name: str) -> None:
    """Everything that can be checked without running: notebooks, kernel, config files, checkpoints."""
    for name in names:
        path = REPO_ROOT / "notebooks" / f"{name}.ipynb"
        if not path.is_file():
            raise FileNotFoundError(f"notebook not found: {path}")
        declared = parameters_cell(path)
        unknown = sorted(set(declared) - set(SCHEMA))
        if unknown:
            raise ValueError(f"{path}: its parameters cell declares {unknown}, which clab.params.SCHEMA lacks")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel as err:
        raise ValueError(f"Jupyter kernel {kernel_name!r} is not registered; register it with "
                         f"`python -m ipykernel install --user --name {kernel_name}`") from err
    models = list(merged["MODELS"])
    if any(merged[k] for k in ("ABLATION_WEIGHTS", "ABLATION_TEMPERATURES", "ABLATION_SCHEDULES",
                               "ABLATION_STAGES")) and "03_ablations" in names:
        models += [m for m in ("baseline", "clab") if m not in models]
    for model in models:
        key = f"CONFIG_{model.upper()}"
        if not (REPO_ROOT / merged[key]).is_file():  # notebooks run in the repository root
            raise FileNotFoundError(f"parameter {key}: config file not found: {merged[key]} (relative paths are "
                                    f"relative to the repository root)")
        if not merged["TRAIN"] and not merged[f"CHECKPOINT_{model.upper()}"]:
            raise ValueError(f"TRAIN is false, so parameter CHECKPOINT_{model.upper()} must name a checkpoint")


def code_digest(root: Path = REPO_ROOT) -> str:
    """A short sha256 of the code a run's results depend on: every ``.py`` file under ``clab/`` and
    ``configs/`` (relative path and bytes, in sorted order)."""
    digest = hashlib.sha256()
    for folder in ("clab", "configs"):
        for path in sorted((root / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def checkout_identity(root: Path = REPO_ROOT) -> str:
    """This machine and this checkout: the host name, the machine id when the system has one, the repository
    folder's path and its inode. A fresh clone (even at the same path) is another checkout, so a committed
    ``run_state.json`` never makes it skip work it has not done."""
    machine = ""
    for name in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            machine = Path(name).read_text().strip()
            break
    st = root.resolve().stat()
    payload = json.dumps([socket.gethostname(), machine, str(root.resolve()), st.st_dev, st.st_ino])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _fingerprint(notebook: Path, merged: dict[str, Any], code: str) -> str:
    declared = sorted(parameters_cell(notebook))
    payload = json.dumps({k: merged[k] for k in declared}, sort_keys=True) + notebook.read_text() + code
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


_RUNNER_FILES = {STATE_FILE, "README.md"}


def _snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file in the run folder."""
    files = {}
    for path in run_dir.rglob("*"):
        if path.is_file():
            st = path.stat()
            files[str(path.relative_to(run_dir))] = (st.st_size, st.st_mtime_ns)
    return files


def _outputs(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """Files written (created or changed) between two snapshots, except the runner's own."""
    return sorted(k for k, v in after.items() if before.get(k) != v and k not in _RUNNER_FILES)


def skip_reason(previous: dict, fingerprint: str, checkout: str, run_dir: Path, executed: Path) -> str | None:
    """Why a notebook must run again (None: it may be skipped): never finished, other parameters or code,
    made by another checkout, or an output missing."""
    if previous.get("status") != "ok":
        return "not finished before" if not previous else f"status {previous.get('status')} before"
    if previous.get("checkout") != checkout:
        return "made by another checkout or machine"
    if previous.get("fingerprint") != fingerprint:
        return "parameters, notebook or code changed"
    if not executed.is_file():
        return f"its executed copy {executed.name} is missing"
    missing = [p for p in previous.get("outputs", []) if not (run_dir / p).is_file()]
    if missing:
        return f"output {missing[0]} is missing" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
    return None


def _injected(notebook: Path, given: dict[str, Any]) -> dict[str, Any]:
    """What papermill injects into ``notebook``: the run's parameters that its parameters cell declares."""
    declared = parameters_cell(notebook)
    return {k: v for k, v in given.items() if k in declared}


def _kernel_environment(merged: dict[str, Any]) -> dict[str, str]:
    """Environment of the notebook kernels: Agg plots, and CPU_THREADS threads per process when set."""
    env = {"MPLBACKEND": "agg"}
    if merged["CPU_THREADS"]:
        env.update(OMP_NUM_THREADS=str(merged["CPU_THREADS"]), MKL_NUM_THREADS=str(merged["CPU_THREADS"]))
    from .engine.launch import launch_environment
    env.update(launch_environment(merged))       # how torchrun/srun start multi-GPU trainings and tests
    return env


def _run_dir(merged: dict[str, Any]) -> Path:
    results = Path(merged["RESULTS_DIR"])
    return (results if results.is_absolute() else REPO_ROOT / results) / merged["RUN_NAME"]


def _load_state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILE
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    return {"notebooks": {}}


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _source_cell_index(notebook: Path, source: str, fallback: int) -> int:
    """Index of the cell with ``source`` in the source notebook (papermill's index counts the injected cell)."""
    import nbformat
    cells = nbformat.read(str(notebook), as_version=4).cells
    return next((i for i, c in enumerate(cells) if c.source == source), fallback)


def _first_line(source: str) -> str:
    lines = [line for line in (source or "").splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


def reproduce(param_file: str | Path, only: list[str] | None = None, results_dir: str | None = None,
              force: bool = False, overrides: list[str] = (), timeout: int | None = None,
              log_output: bool = False, kernel_name: str = "clab", progress: bool = True) -> Path:
    """Run the notebooks of ``param_file`` (all, or ``only`` these, in the canonical order); returns the run
    folder. Raises ``ValueError``/``FileNotFoundError`` before anything runs for bad parameters or files, and
    :class:`NotebookError` when a notebook fails. ``timeout``: seconds allowed per cell (None: no limit)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from .analysis.progress import ProgressMonitor
    from .io import atomic_write_json

    given, merged = resolve_parameters(param_file, list(overrides), results_dir)
    unknown = sorted(set(only or []) - set(NOTEBOOKS))
    if unknown:
        raise ValueError(f"--only: unknown notebook(s) {unknown}; expected some of {list(NOTEBOOKS)}")
    names = [n for n in NOTEBOOKS if not only or n in only]
    _check_environment(merged, names, kernel_name)
    run_dir = _run_dir(merged)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = _load_state(run_dir)
    state["parameter_file"] = repo_relative(param_file)
    state["parameters"] = given
    code, checkout = code_digest(), checkout_identity()
    cascade = False
    for i, name in enumerate(names, 1):
        src = REPO_ROOT / "notebooks" / f"{name}.ipynb"
        out = run_dir / f"{name}.ipynb"
        fingerprint = _fingerprint(src, merged, code)
        previous = state["notebooks"].get(name, {})
        reason = "forced" if force else "an earlier notebook ran again" if cascade else \
            skip_reason(previous, fingerprint, checkout, run_dir, out)
        if reason is None:
            print(f"[{i}/{len(names)}] {name}: done before on this checkout with the same parameters and code, "
                  f"skipped", flush=True)
            continue
        cascade = True
        print(f"[{i}/{len(names)}] {name}: running ({reason}) -> {out}", flush=True)
        t0 = time.perf_counter()
        before = _snapshot(run_dir)
        record: dict[str, Any] = {"fingerprint": fingerprint, "code": code, "checkout": checkout,
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        progress_path = Path(tempfile.gettempdir()) / f"clab-progress-{os.getpid()}-{name}.log"
        try:
            with _environment(**_kernel_environment(merged), CLAB_PROGRESS_FILE=str(progress_path)), \
                    ProgressMonitor(progress_path, prefix=f"  [{name}] "):
                pm.execute_notebook(str(src), str(out), parameters=_injected(src, given),
                                    kernel_name=kernel_name, cwd=str(REPO_ROOT), progress_bar=progress,
                                    log_output=log_output, execution_timeout=timeout)
        except PapermillExecutionError as err:
            cell = _source_cell_index(src, err.source, err.cell_index)
            record.update(status="failed", seconds=round(time.perf_counter() - t0, 1), cell_index=cell,
                          exec_count=err.exec_count, error=f"{err.ename}: {err.evalue}")
            state["notebooks"][name] = record
            atomic_write_json(run_dir / STATE_FILE, state, indent=1)
            write_readme(run_dir, given, merged, state)
            raise NotebookError(
                name, f"notebook {name} failed in cell {cell} of notebooks/{name}.ipynb (0-based; execution count "
                f"{err.exec_count}, starting {_first_line(err.source)!r}): {err.ename}: {err.evalue}\n"
                f"  the executed notebook with the traceback: {out}\n"
                f"  notebooks that finished before it are kept in {run_dir}", out, cell,
                err.exec_count, err.ename, err.evalue) from err
        except Exception as err:  # kernel died, cell timeout, ...
            record.update(status="failed", seconds=round(time.perf_counter() - t0, 1),
                          error=f"{type(err).__name__}: {err}")
            state["notebooks"][name] = record
            atomic_write_json(run_dir / STATE_FILE, state, indent=1)
            write_readme(run_dir, given, merged, state)
            raise NotebookError(name, f"notebook {name} failed: {type(err).__name__}: {err}\n"
                                f"  the partly executed notebook: {out}\n"
                                f"  notebooks that finished before it are kept in {run_dir}", out) from err
        _scrub_papermill_paths(out)
        record.update(status="ok", seconds=round(time.perf_counter() - t0, 1),
                      finished=time.strftime("%Y-%m-%d %H:%M:%S"), outputs=_outputs(before, _snapshot(run_dir)))
        state["notebooks"][name] = record
        atomic_write_json(run_dir / STATE_FILE, state, indent=1)
        write_readme(run_dir, given, merged, state)
        print(f"[{i}/{len(names)}] {name}: done in {record['seconds']:.0f} s", flush=True)
    write_readme(run_dir, given, merged, state)
    return run_dir


def _value_text(value: Any) -> str:
    return "`" + json.dumps(value) + "`"


def _sentences(run_dir: Path, table: str) -> list[str]:
    """What the numbers of ``table`` support, in words (the gain with its interval; robustness), for the README."""
    try:
        if table == "main":
            from .analysis.results import gain_sentence
            metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
            return ["", f"**The gain.** {gain_sentence(metrics.get('comparison'))}"]
        if table == "robustness":
            import pandas as pd

            from .analysis.robustness import robustness_sentence
            wide = pd.read_csv(run_dir / "tables" / "robustness.csv").set_index(["degradation", "severity"])
            return ["", f"**Robustness.** {robustness_sentence(wide)}"]
    except (OSError, ValueError, KeyError) as err:
        return ["", f"(no summary sentence: {type(err).__name__}: {err})"]
    return []


def write_readme(run_dir: Path, given: dict[str, Any], merged: dict[str, Any], state: dict) -> Path:
    """``<run>/README.md``: notebooks and their status, the main metrics table (``tables/main.md``) and the
    paper comparison, links to every table and figure, and the parameters."""
    from .engine.provenance import git_revision
    from .io import atomic_write_text

    run_dir = Path(run_dir)
    lines = [f"# Run `{merged['RUN_NAME']}`", "",
             f"Made by `clab reproduce {state.get('parameter_file', '')}` (git {git_revision() or 'unknown'}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}). Data set: {merged['DATASET']} (`{merged['DATA_ROOT']}`).", "",
             "## Notebooks", "", "| notebook | status | seconds | note |", "| --- | --- | ---: | --- |"]
    for name in NOTEBOOKS:
        rec = state.get("notebooks", {}).get(name)
        if rec is None:
            continue
        link = f"[{name}]({name}.ipynb)" if (run_dir / f"{name}.ipynb").is_file() else name
        note = ""
        if rec.get("status") == "failed":
            cell = f"cell {rec['cell_index']} (0-based): " if rec.get("cell_index") is not None else ""
            note = (cell + str(rec.get("error", ""))).replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(f"| {link} | {rec.get('status')} | {rec.get('seconds', '')} | {note} |")
    tables = run_dir / "tables"
    for table, title in (("main", "Results"), ("per_seed", "Every run on its own"),
                         ("paper_comparison", "Beside the paper"), ("ablations", "Ablations"),
                         ("robustness", "Robustness (mAP@50)")):
        if (tables / f"{table}.md").is_file():
            lines += ["", f"## {title}", "", (tables / f"{table}.md").read_text().strip()]
            lines += _sentences(run_dir, table)
    if tables.is_dir() and any(tables.glob("*.md")):
        lines += ["", "## All tables", ""]
        lines += [f"- [{p.stem}](tables/{p.name}) ([csv](tables/{p.stem}.csv))" for p in sorted(tables.glob("*.md"))]
    figures = run_dir / "figures"
    if figures.is_dir() and any(figures.glob("*.png")):
        lines += ["", "## Figures", ""]
        for p in sorted(figures.glob("*.png")):
            lines += [f"### {p.stem}", "", f"![{p.stem}](figures/{p.name})", ""]
    lines += ["", "## Parameters", "", "Set by the run (the others are at their defaults):", "",
              "| parameter | value | meaning |", "| --- | --- | --- |"]
    for key in SCHEMA:
        if key in given:
            lines.append(f"| {key} | {_value_text(merged[key])} | {SCHEMA[key].help} |")
    path = run_dir / "README.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("params", help="flat YAML parameter file, e.g. papermill_params/demo.yaml")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", choices=NOTEBOOKS,
                        help=f"run only these notebooks (of {', '.join(NOTEBOOKS)})")
    parser.add_argument("--results-dir", default=None, help="parent folder of the run folder (sets RESULTS_DIR)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one parameter (value read as YAML), e.g. --set SEED=1; repeatable; "
                        "relative paths are relative to the repository root")
    parser.add_argument("--force", action="store_true",
                        help="run notebooks even if done on this checkout with the same parameters and code")
    parser.add_argument("--timeout", type=int, default=None, help="seconds allowed per notebook cell")
    parser.add_argument("--log-output", action="store_true", help="also print the notebooks' output here")
    parser.add_argument("--kernel", default="clab", help="Jupyter kernel name (default: clab)")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        run_dir = reproduce(args.params, args.only, args.results_dir, args.force, args.overrides, args.timeout,
                            args.log_output, args.kernel)
    except (ValueError, FileNotFoundError, NotebookError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"run finished in {time.perf_counter() - t0:.0f} s: {run_dir / 'README.md'}")
    return 0
