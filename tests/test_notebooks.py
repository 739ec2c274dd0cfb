"""Every notebook through papermill with papermill_params/smoke.yaml, via the runner, then the files they wrote;
a rerun that skips finished notebooks; a run that fails in a notebook on purpose (STYLE 9-10)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import nbformat
import pytest

from clab.params import NOTEBOOKS
from clab.runner import REPO_ROOT, NotebookError, reproduce

SMOKE = REPO_ROOT / "papermill_params" / "smoke.yaml"
CELL_TIMEOUT = 600  # seconds per cell; the whole smoke run takes about 5 minutes on 2 CPU cores
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("dataset_overview", "sample_frames", "training_curves", "per_class_ap", "map_by_speed", "ablations",
           "tsne", "robustness", "detections_motion_blur_3")
TABLES = ("dataset_check", "dataset_stats", "training", "main", "per_seed", "per_class_ap", "paper_comparison",
          "ablations", "silhouette", "robustness")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke run in a temporary results folder, with its synthetic set in a temporary data folder."""
    base = tmp_path_factory.mktemp("smoke")
    t0 = time.perf_counter()
    run_dir = reproduce(SMOKE, results_dir=str(base / "results"), overrides=[f"DATA_ROOT={base / 'data'}"],
                        timeout=CELL_TIMEOUT, progress=False)
    return {"run": run_dir, "base": base, "seconds": time.perf_counter() - t0}


def _in_unit_interval(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def test_every_notebook_ran_and_kept_its_outputs(smoke_run):
    run = smoke_run["run"]
    state = json.loads((run / "run_state.json").read_text())
    for name in NOTEBOOKS:
        assert state["notebooks"][name]["status"] == "ok"
        nb = nbformat.read(str(run / f"{name}.ipynb"), as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert outputs, f"{name} has no outputs"
        assert not [o for o in outputs if o.output_type == "error"]
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and "RUN_NAME = \"smoke\"" in injected[0].source
    print(f"smoke run: {smoke_run['seconds']:.0f} s")


def test_figures_and_tables_are_written(smoke_run):
    run = smoke_run["run"]
    for name in FIGURES:
        path = run / "figures" / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 5000 and path.read_bytes()[:8] == PNG_MAGIC, name
    for name in TABLES:
        csv, md = run / "tables" / f"{name}.csv", run / "tables" / f"{name}.md"
        assert csv.is_file() and len(csv.read_text().splitlines()) >= 2, name
        assert md.is_file() and "| ---" in md.read_text(), name
    readme = (run / "README.md").read_text()
    for name in NOTEBOOKS:
        assert f"[{name}]({name}.ipynb) | ok" in readme
    assert "![tsne](figures/tsne.png)" in readme and "## Results" in readme and "| RUN_NAME | `\"smoke\"`" in readme
    # the sentences follow the numbers: the gain with its interval over the two seeds, and what it supports
    gain = next(line for line in readme.splitlines() if line.startswith("**The gain.** CLAB - baseline: "))
    assert "the mean of 2 seeds paired by seed" in gain and "95% CI [" in gain
    assert ("The interval excludes zero" in gain) != ("The interval includes zero" in gain)
    assert "**Robustness.**" in readme and "Student t interval over seeds" in readme


def test_metrics_json_has_named_numbers_in_range(smoke_run):
    run = smoke_run["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"models", "comparison", "ablations", "robustness"}
    for model in ("baseline", "clab"):
        assert sorted(metrics["models"][model]["seeds"]) == ["0", "1"]
        for seed in ("0", "1"):
            m = metrics["models"][model]["seeds"][seed]
            for key in ("bbox_mAP_50", "bbox_mAP", "bbox_mAP_75"):
                assert _in_unit_interval(m[key]), (model, seed, key, m[key])
            for key in ("bbox_mAP_50_slow", "bbox_mAP_50_medium", "bbox_mAP_50_fast"):
                assert m[key] is None or m[key] == -1.0 or _in_unit_interval(m[key]), (model, key)
            assert m["num_frames"] == 6 and m["fps"] > 0
            assert set(m["AP50_per_class"]) == {"disc", "square", "triangle", "cross", "ring", "star"}
            rob = metrics["robustness"][model][seed]
            assert _in_unit_interval(rob["clean"]) and _in_unit_interval(rob["motion_blur"]["3"])
            assert rob["clean"] == m["bbox_mAP_50"]  # same frames, same checkpoint
            per_run = json.loads((run / "eval" / model / f"seed{seed}" / "metrics.json").read_text())
            assert per_run["bbox_mAP_50"] == m["bbox_mAP_50"]
            assert (run / "work_dirs" / model / f"seed{seed}" / "latest.pth").is_file()
        stats = metrics["models"][model]["over_seeds"]["bbox_mAP_50"]
        values = [metrics["models"][model]["seeds"][s]["bbox_mAP_50"] for s in ("0", "1")]
        assert stats["n"] == 2 and math.isclose(stats["mean"], sum(values) / 2)
        assert stats["ci_low"] <= stats["mean"] <= stats["ci_high"]
    paired = metrics["comparison"]["paired"]["bbox_mAP_50"]
    diffs = [metrics["models"]["clab"]["seeds"][s]["bbox_mAP_50"] - metrics["models"]["baseline"]["seeds"][s]
             ["bbox_mAP_50"] for s in ("0", "1")]
    assert paired["seeds"] == [0, 1] and math.isclose(paired["mean"], sum(diffs) / 2)
    for seed, d in zip(("0", "1"), diffs):
        boot = metrics["comparison"]["bootstrap"][seed]
        assert boot["n_videos"] == 1 and math.isclose(boot["differences"]["clab-baseline"]["mean"], d)
    two_seeds = [json.loads(line)["iter"] for line in
                 (run / "work_dirs" / "clab" / "seed1" / "metrics.jsonl").read_text().splitlines()]
    assert two_seeds == [1, 2, 3]
    rows = {r["run"]: r for r in metrics["ablations"]["rows"]}
    assert set(rows) == {"branch_off", "clab_default", "weight_0.01"}
    assert math.isclose(rows["branch_off"]["mAP@50"], metrics["models"]["baseline"]["over_seeds"]["bbox_mAP_50"]["mean"])
    assert rows["weight_0.01"]["seeds"] == 2
    for seed in (0, 1):
        assert (run / "ablations" / "weight_0.01" / f"seed{seed}" / "eval" / "metrics.json").is_file()
    trained = [json.loads(line) for line in (run / "work_dirs" / "clab" / "seed0" / "metrics.jsonl").read_text()
               .splitlines()]
    assert [r["iter"] for r in trained] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in trained)
    points = (run / "embeddings" / "tsne_points.csv").read_text().splitlines()
    assert len(points) == 1 + 3 * 16  # baseline backbone, clab backbone, clab cab x (8 clean + 8 degraded)


def test_rerun_skips_finished_notebooks_and_reruns_one_whose_output_is_missing(smoke_run, capsys, monkeypatch):
    import clab.runner
    run, base = smoke_run["run"], smoke_run["base"]
    stamps = {n: (run / f"{n}.ipynb").stat().st_mtime_ns for n in NOTEBOOKS}
    # the code digest of the smoke run is held fixed: the checkout may be edited while the suite runs, and a
    # changed digest reruns everything (tests/test_params_runner.py checks that part of the rule)
    recorded = json.loads((run / "run_state.json").read_text())["notebooks"]["00_data_prep"]["code"]
    monkeypatch.setattr(clab.runner, "code_digest", lambda root=REPO_ROOT: recorded)
    capsys.readouterr()
    reproduce(SMOKE, results_dir=str(base / "results"), overrides=[f"DATA_ROOT={base / 'data'}"], progress=False)
    printed = capsys.readouterr().out
    assert printed.count("done before on this checkout with the same parameters and code, skipped") == len(NOTEBOOKS)
    assert {n: (run / f"{n}.ipynb").stat().st_mtime_ns for n in NOTEBOOKS} == stamps

    # an output of the last notebook is gone: only that notebook runs again, and it reports its progress
    (run / "robustness" / "clab" / "seed1" / "robustness.json").unlink()
    reproduce(SMOKE, results_dir=str(base / "results"), overrides=[f"DATA_ROOT={base / 'data'}"], progress=False,
              timeout=CELL_TIMEOUT)
    captured = capsys.readouterr()
    before = NOTEBOOKS[:NOTEBOOKS.index("05_robustness")]             # the later ones follow it
    assert captured.out.count("skipped") == len(before)
    assert "05_robustness: running (output robustness/clab/seed1/robustness.json is missing)" in captured.out
    assert "[05_robustness] [clab seed1] " in captured.err         # its job's progress lines, in the terminal
    assert (run / "robustness" / "clab" / "seed1" / "robustness.json").is_file()
    assert {n: (run / f"{n}.ipynb").stat().st_mtime_ns for n in before} == {n: stamps[n] for n in before}


def test_failing_notebook_is_named_with_its_cell_and_earlier_outputs_are_kept(tmp_path):
    base = tmp_path
    results = base / "failing"
    missing = base / "no_such_checkpoint.pth"  # a checkpoint to evaluate that is not there
    with pytest.raises(NotebookError) as err:
        reproduce(SMOKE, only=["00_data_prep", "01_train", "02_evaluate"], results_dir=str(results),
                  overrides=[f"DATA_ROOT={base / 'data'}", "TRAIN=false", f"CHECKPOINT_BASELINE={missing}",
                             f"CHECKPOINT_CLAB={missing}"], timeout=CELL_TIMEOUT, progress=False)
    message = str(err.value)
    assert err.value.notebook == "01_train" and err.value.ename == "FileNotFoundError"
    source = nbformat.read(str(REPO_ROOT / "notebooks" / "01_train.ipynb"), as_version=4).cells
    assert source[err.value.cell_index].source.startswith("checkpoints = training.train_models(params, run)")
    assert (f"notebook 01_train failed in cell {err.value.cell_index} of notebooks/01_train.ipynb (0-based; "
            f"execution count {err.value.exec_count}, starting 'checkpoints = training.train_models(params, run)')"
            in message)
    assert f"parameter CHECKPOINT_BASELINE: checkpoint not found: {missing}" in message
    run = results / "smoke"
    failed = nbformat.read(str(run / "01_train.ipynb"), as_version=4)
    errors = [c for c in failed.cells if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]
    assert len(errors) == 1 and errors[0].source == source[err.value.cell_index].source
    assert (run / "00_data_prep.ipynb").is_file() and (run / "figures" / "dataset_overview.png").is_file()
    assert not (run / "02_evaluate.ipynb").exists()
    state = json.loads((run / "run_state.json").read_text())
    assert state["notebooks"]["00_data_prep"]["status"] == "ok"
    assert state["notebooks"]["01_train"]["status"] == "failed"
    assert "| failed |" in (run / "README.md").read_text()


def test_mistyped_injected_parameter_fails_naming_it(tmp_path):
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    with pytest.raises(PapermillExecutionError) as err:
        pm.execute_notebook(str(REPO_ROOT / "notebooks" / "05_robustness.ipynb"), str(tmp_path / "05.ipynb"),
                            kernel_name="clab", parameters={"RESULTS_DIR": str(tmp_path), "DRAW_FRAMES": "four"},
                            cwd=str(REPO_ROOT), progress_bar=False, execution_timeout=120)
    assert "notebook 05_robustness: parameter DRAW_FRAMES must be int, got 'four'" in err.value.evalue
