"""Run parameters, notebook hygiene, the runner's checks before anything runs, and the analysis/plot helpers
the notebooks call (real configs, real mmdet models, real files; no notebook is run here except one that must
fail at its parameter check)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from clab.params import (NOTEBOOKS, SCHEMA, check_parameters, defaults, load_parameter_file, notebook_parameters,
                         training_seeds)
from clab.runner import REPO_ROOT, parameters_cell, reproduce, resolve_parameters

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PARAM_DIR = REPO_ROOT / "papermill_params"
TINY_CLAB = str(REPO_ROOT / "configs" / "clab_selsa-troi_faster-rcnn_tiny_synthetic.py")
TINY_BASE = str(REPO_ROOT / "configs" / "selsa-troi_faster-rcnn_tiny_synthetic.py")
R50_CLAB = str(REPO_ROOT / "configs" / "clab_selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _yaml(tmp_path: Path, data: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------------------------- parameters
def test_defaults_pass_their_own_checks():
    assert check_parameters(defaults()) == defaults()


@pytest.mark.parametrize("data, message", [
    ({"SEEDZ": [1]}, r"unknown parameter .SEEDZ.; did you mean SEED, SEEDS\?"),
    ({"SEEDS": 1}, r"parameter SEEDS must be list, got 1"),
    ({"SEEDS": [1, -1]}, r"parameter SEEDS\[1\] must be >= 0, got -1"),
    ({"GPUS": "8"}, r"parameter GPUS must be int, got '8'"),
    ({"SEED": True}, r"parameter SEED must be int, got True"),
    ({"TRAIN": "yes"}, r"parameter TRAIN must be bool"),
    ({"ABLATION_WEIGHTS": [0.001, "a"]}, r"parameter ABLATION_WEIGHTS\[1\] must be float, got 'a'"),
    ({"MODELS": ["baseline", "troi"]}, r"parameter MODELS\[1\] must be one of \['baseline', 'clab'\]"),
    ({"TSNE_SEVERITY": 7}, r"parameter TSNE_SEVERITY must be in \[1, 5\], got 7"),
    ({"ROBUSTNESS_KINDS": ["fog"]}, r"parameter ROBUSTNESS_KINDS\[0\] must be one of"),
    ({"CFG_OPTIONS": ["runner.max_epochs"]}, r"parameter CFG_OPTIONS\[0\] must be a 'key=value' string"),
    ({"RUN_NAME": "a/b"}, r"parameter RUN_NAME must be a folder name"),
    ({"CFG": {"a": 1}}, r"parameter CFG is a nested block; parameter files are flat"),
    ({"seed": 1}, r"parameter names are UPPERCASE, got 'seed'"),
])
def test_parameter_file_errors_name_the_file_and_the_parameter(tmp_path, data, message):
    path = _yaml(tmp_path, data)
    with pytest.raises(ValueError, match=message) as err:
        load_parameter_file(path)
    assert str(path) in str(err.value)


def test_parameter_file_values_are_normalised(tmp_path):
    got = load_parameter_file(_yaml(tmp_path, {"SCORE_THR": 1, "ABLATION_WEIGHTS": [1, 0.5], "SEED": 3}))
    assert got == {"SCORE_THR": 1.0, "ABLATION_WEIGHTS": [1.0, 0.5], "SEED": 3}
    assert isinstance(got["SCORE_THR"], float) and isinstance(got["ABLATION_WEIGHTS"][0], float)
    assert load_parameter_file(_yaml(tmp_path, {}, "empty.yaml")) == {}


def test_notebook_parameters_work_from_the_repository_root(monkeypatch, capsys):
    monkeypatch.chdir(NOTEBOOK_DIR)  # where JupyterLab starts a notebook's kernel
    notebook_parameters({"RUN_NAME": "x"}, "00_data_prep")
    assert Path.cwd() == REPO_ROOT and "working directory" in capsys.readouterr().out
    notebook_parameters({"RUN_NAME": "x"}, "00_data_prep")
    assert capsys.readouterr().out == ""  # already there: nothing to say


def test_notebook_parameters_reject_unknown_and_mistyped_and_undeclared_names():
    with pytest.raises(ValueError, match=r"notebook 02_evaluate: unknown parameter 'MAX_FRAMES'; did you mean "
                                         r"MAX_TEST_FRAMES"):
        notebook_parameters({"RUN_NAME": "x", "MAX_FRAMES": 3, "lowercase_is_ignored": 1}, "02_evaluate")
    with pytest.raises(ValueError, match=r"notebook 05_robustness: parameter SCORE_THR must be float, got 'high'"):
        notebook_parameters({"SCORE_THR": "high"}, "05_robustness")
    params = notebook_parameters({"RUN_NAME": "x", "SEED": 2, "__name__": "__main__", "np": np}, "01_train")
    assert dict(params) == {"RUN_NAME": "x", "SEED": 2}
    with pytest.raises(KeyError, match="parameter GPUS is not declared in the parameters cell of notebook 01_train"):
        params["GPUS"]


def test_every_run_file_of_the_repository_is_valid(tmp_path):
    files = sorted(PARAM_DIR.glob("*.yaml"))
    assert {p.stem for p in files} >= {"smoke", "demo", "paper_r50", "paper_r101", "paper_x101", "ablations_r50"}
    for path in files:
        given, merged = resolve_parameters(path)
        for key in ("CONFIG_BASELINE", "CONFIG_CLAB"):
            assert (REPO_ROOT / merged[key]).is_file(), (path, key)
        assert given["RUN_NAME"] == (path.stem if path.stem != "ablations_r50" else "paper_r50")
    grid = load_parameter_file(PARAM_DIR / "ablations_r50.yaml")
    assert grid["ABLATION_WEIGHTS"] == [0.001, 0.005, 0.01] and grid["ABLATION_STAGES"] == [1, 2, 3]
    assert grid["ABLATION_TEMPERATURES"] == [0.05, 0.1, 0.5]
    assert grid["ABLATION_SCHEDULES"] == ["constant", "linear", "cosine"] and grid["GPUS"] == 8
    # it shares the run folder of paper_r50.yaml: every other parameter must be the same, so that the runner
    # reuses that file's notebooks instead of training the baseline and CLAB again
    paper = load_parameter_file(PARAM_DIR / "paper_r50.yaml")
    assert {k: v for k, v in grid.items() if not k.startswith("ABLATION_")} == paper


def test_overrides_and_results_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    given, merged = resolve_parameters(PARAM_DIR / "smoke.yaml", ["SEED=4", "MODELS=[clab]", "DATA_ROOT=x/y"],
                                       "out")
    assert merged["SEED"] == 4 and merged["MODELS"] == ["clab"] and merged["DATA_ROOT"] == "x/y"
    assert given["RESULTS_DIR"] == str(tmp_path / "out")
    with pytest.raises(ValueError, match=r"parameter SEED must be int, got 'four'"):
        resolve_parameters(PARAM_DIR / "smoke.yaml", ["SEED=four"])


def test_demo_command_line_maps_to_the_demo_run(tmp_path, monkeypatch):
    from clab.cli import build_parser
    from clab.demo import DEMO_PARAMETERS, demo_overrides
    args = build_parser("demo").parse_args(["demo", "--out", "results/demo", "--seed", "0"])
    overrides, results_dir = demo_overrides(args.out, args.seed, args.data)
    assert overrides == ["RUN_NAME=demo", "SEED=0"] and results_dir == "results"
    monkeypatch.chdir(tmp_path)
    _, merged = resolve_parameters(DEMO_PARAMETERS, *demo_overrides("elsewhere/mine", 3, "data/x"))
    assert (merged["RUN_NAME"], merged["SEED"], merged["DATA_ROOT"]) == ("mine", 3, "data/x")
    assert merged["RESULTS_DIR"] == str(tmp_path / "elsewhere")
    reproduce_args = build_parser("reproduce").parse_args(["reproduce", "p.yaml", "--only", "02_evaluate",
                                                           "--set", "SEED=1", "--set", "GPUS=2"])
    assert reproduce_args.only == ["02_evaluate"] and reproduce_args.overrides == ["SEED=1", "GPUS=2"]


# ----------------------------------------------------------------------------------------------- notebooks
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_thin_clean_and_declares_schema_parameters(name):
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "clab"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "committed without outputs"
            tree = ast.parse(cell.source)
            assert not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
                           for n in ast.walk(tree)), "no functions defined in notebooks"
            assert "sys.path" not in cell.source
    declared = parameters_cell(path)
    for key, value in declared.items():
        assert key.isupper() and key in SCHEMA, key
        assert value == SCHEMA[key].default, f"{name}: {key} default differs from clab.params.SCHEMA"
    check = nb.cells[tagged[0] + 1].source
    assert f"notebook_parameters(globals(), {name!r})" in check
    assert {"RUN_NAME", "RESULTS_DIR"} <= set(declared)


def test_every_parameter_is_used_by_some_notebook_or_the_runner():
    from clab.params import RUNNER_ONLY
    declared = set().union(*(parameters_cell(NOTEBOOK_DIR / f"{n}.ipynb") for n in NOTEBOOKS))
    assert declared == set(SCHEMA) - set(RUNNER_ONLY)


def test_gitattributes_strips_notebook_outputs_and_the_filter_changes_nothing():
    import subprocess
    import sys
    lines = (REPO_ROOT / ".gitattributes").read_text().splitlines()
    assert "*.ipynb filter=nbstripout" in lines
    for name in NOTEBOOKS:  # what the filter would commit is exactly what is there
        path = NOTEBOOK_DIR / f"{name}.ipynb"
        stripped = subprocess.run([sys.executable, "-m", "nbstripout", "-t", str(path)], capture_output=True,
                                  text=True, check=True).stdout
        assert stripped == path.read_text(), name


def test_injected_unknown_parameter_fails_in_the_notebook(tmp_path):
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    out = tmp_path / "02.ipynb"
    with pytest.raises(PapermillExecutionError) as err:
        pm.execute_notebook(str(NOTEBOOK_DIR / "02_evaluate.ipynb"), str(out), kernel_name="clab",
                            parameters={"RESULTS_DIR": str(tmp_path), "NOT_A_PARAM": 1}, cwd=str(REPO_ROOT),
                            progress_bar=False, execution_timeout=120)
    assert err.value.ename == "ValueError"
    assert "notebook 02_evaluate: unknown parameter 'NOT_A_PARAM'" in err.value.evalue
    assert not (tmp_path / "demo").exists()  # stopped before the first result was written


# ----------------------------------------------------------------------------------------------- runner checks
def test_runner_rejects_bad_files_before_anything_runs(tmp_path):
    results = tmp_path / "results"
    with pytest.raises(ValueError, match=r"unknown parameter 'TSNE_FRAME'; did you mean TSNE_FRAMES"):
        reproduce(_yaml(tmp_path, {"RUN_NAME": "bad", "TSNE_FRAME": 3}), results_dir=str(results))
    with pytest.raises(FileNotFoundError, match=r"parameter CONFIG_CLAB: config file not found: configs/nope.py"):
        reproduce(_yaml(tmp_path, {"RUN_NAME": "bad", "CONFIG_CLAB": "configs/nope.py"}), results_dir=str(results))
    with pytest.raises(ValueError, match=r"TRAIN is false, so parameter CHECKPOINT_BASELINE must name a checkpoint"):
        reproduce(_yaml(tmp_path, {"RUN_NAME": "bad", "TRAIN": False}), results_dir=str(results))
    with pytest.raises(ValueError, match=r"Jupyter kernel 'no-such-kernel' is not registered"):
        reproduce(_yaml(tmp_path, {"RUN_NAME": "bad"}), results_dir=str(results), kernel_name="no-such-kernel")
    assert not results.exists()


# ----------------------------------------------------------------------------------------------- analysis
def test_cfg_options_are_read_like_the_command_line():
    from clab.analysis import cfg_options, parse_cfg_options
    got = parse_cfg_options(["runner.max_epochs=2", "a.b=[1,2]", "c=true", "d=0.5", "e=text"])
    assert got == {"runner.max_epochs": 2, "a.b": [1, 2], "c": True, "d": 0.5, "e": "text"}
    with pytest.raises(ValueError, match=r"CFG_OPTIONS: 'runner.max_epochs' is not a 'key=value' string"):
        parse_cfg_options(["runner.max_epochs"])
    params = {**defaults(), "DATA_ROOT": "d", "CFG_OPTIONS": ["x=1"]}
    assert cfg_options(params, ["x=2"]) == ["data_root=d", "x=1", "x=2"]


def test_model_checkpoint_names_what_is_missing(tmp_path):
    from clab.analysis import RunLayout, model_checkpoint
    layout = RunLayout(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="run notebook 01_train first"):
        model_checkpoint(defaults(), layout, "clab")
    with pytest.raises(ValueError, match="parameter CHECKPOINT_CLAB must name the checkpoint"):
        model_checkpoint({**defaults(), "TRAIN": False}, layout, "clab")
    ckpt = tmp_path / "c.pth"
    ckpt.write_bytes(b"x")
    assert model_checkpoint({**defaults(), "TRAIN": False, "CHECKPOINT_CLAB": str(ckpt)}, layout, "clab") == str(ckpt)


def test_sync_inputs_clears_results_made_from_other_inputs(tmp_path):
    from clab.analysis.layout import sync_inputs
    folder = tmp_path / "robustness" / "clab"
    assert sync_inputs(folder, {"checkpoint": "a", "frames": 6})
    (folder / "robustness.json").write_text("{}")
    assert sync_inputs(folder, {"checkpoint": "a", "frames": 6})
    assert (folder / "robustness.json").exists()
    assert not sync_inputs(folder, {"checkpoint": "b", "frames": 6})
    assert not (folder / "robustness.json").exists()
    assert json.loads((folder / "inputs.json").read_text()) == {"checkpoint": "b", "frames": 6}


def test_tables_are_written_as_csv_and_markdown(tmp_path):
    from clab.analysis.tables import clean_json, write_table
    df = pd.DataFrame({"mAP@50": [0.5, float("nan")], "n": [1, 2]}, index=pd.Index(["a", "b"], name="model"))
    csv, md = write_table(df, tmp_path, "t", title="caption")
    assert csv.read_text().splitlines() == ["model,mAP@50,n", "a,0.5,1", "b,,2"]
    assert md.read_text().splitlines()[2:] == ["| model | mAP@50 | n |", "| --- | ---: | ---: |",
                                              "| a | 0.5000 | 1 |", "| b | - | 2 |"]
    assert clean_json({"x": float("nan"), "y": (np.float32(1.5),)}) == {"x": None, "y": [1.5]}


def test_ablation_config_moves_the_tapped_stage_and_builds():
    from mmdet.models import build_detector

    import clab  # noqa: F401
    from clab.analysis.ablation import ablation_config, cab_defaults, stage_channels
    from clab.engine.config import load_config
    cfg = load_config(TINY_CLAB)
    assert cab_defaults(cfg) == {"weight": 0.005, "temperature": 0.1, "schedule": "linear", "stage": 2}
    for stage, channels, out_indices in ((1, 32, (1, 3)), (3, 128, (3, ))):
        edited = ablation_config(cfg, stage=stage)
        assert edited.model.cab_stage == stage and tuple(edited.model.detector.backbone.out_indices) == out_indices
        assert edited.model.auxiliary.in_channels == channels
        model = build_detector(edited.model)  # SELSA checks the branch's channels against the stage
        import torch
        with torch.no_grad():
            outs = model.detector.backbone(torch.zeros(1, 3, 64, 64))
        assert outs[list(out_indices).index(stage)].shape[1] == channels
    assert cfg.model.cab_stage == 2  # the original is untouched
    r50 = load_config(R50_CLAB)
    assert [stage_channels(r50.model.detector.backbone, s) for s in (0, 1, 2, 3)] == [256, 512, 1024, 2048]
    x101 = load_config(str(REPO_ROOT / "configs" / "clab_selsa-troi_faster-rcnn_x101-dc5_8xb2-7e_imagenetvid.py"))
    assert stage_channels(x101.model.detector.backbone, 1) == 512
    with pytest.raises(ValueError, match="not a CLAB config"):
        ablation_config(load_config(TINY_BASE), weight=0.01)


def test_ablation_config_weight_temperature_schedule():
    from clab.analysis.ablation import ablation_config
    from clab.engine.config import load_config
    from clab.schedules import build_schedule
    cfg = load_config(TINY_CLAB)
    edited = ablation_config(cfg, weight=0.01, temperature=0.5)
    hook = edited.custom_hooks[0]
    assert edited.model.auxiliary.loss_weight == 0.01 and edited.model.auxiliary.temperature == 0.5
    assert hook.schedule == dict(type="linear", start=0.01, end=0.0, length=0.5, unit="fraction")
    cosine = ablation_config(cfg, schedule="cosine").custom_hooks[0].schedule
    assert cosine == dict(type="cosine", start=0.005, end=0.0, length=0.5, unit="fraction")
    f = build_schedule(cosine, max_iters=100)
    assert f(0) == pytest.approx(0.005) and f(25) == pytest.approx(0.0025) and f(50) == 0.0
    const = ablation_config(cfg, schedule="constant", weight=0.002).custom_hooks[0].schedule
    assert const == dict(type="constant", value=0.002)
    r50_cfg = load_config(R50_CLAB)
    r50 = ablation_config(r50_cfg, schedule="cosine").custom_hooks[0].schedule
    assert r50 == dict(type="cosine", start=0.005, end=0.0, length=0.51, unit="fraction")  # its own length and unit
    r50_cfg.custom_hooks[0].schedule = dict(type="linear", start=0.005, end=0.0, length=25000)   # in iterations
    r50 = ablation_config(r50_cfg, schedule="cosine").custom_hooks[0].schedule
    assert r50 == dict(type="cosine", start=0.005, end=0.0, length=25000)  # no unit added: iterations


def test_ablation_grid_shares_the_default_run():
    from clab.analysis.ablation import ablation_grid, ablation_table
    from clab.engine.config import load_config
    grid = ablation_grid(load_config(TINY_CLAB), weights=[0.001, 0.005], temperatures=[0.1, 0.5],
                         schedules=["linear", "cosine"], stages=[2, 1])
    names = [(r.factor, r.value, r.name, r.is_default) for r in grid]
    assert names == [("weight", 0.001, "weight_0.001", False), ("weight", 0.005, "clab_default", True),
                     ("temperature", 0.1, "clab_default", True), ("temperature", 0.5, "temperature_0.5", False),
                     ("schedule", "linear", "clab_default", True), ("schedule", "cosine", "schedule_cosine", False),
                     ("stage", 2, "clab_default", True), ("stage", 1, "stage_1", False)]
    summary = {k: None for k in ("bbox_mAP", "bbox_mAP_50_slow", "bbox_mAP_50_medium", "bbox_mAP_50_fast")}
    results = {name: {**summary, "bbox_mAP_50": v} for name, v in
               (("branch_off", 0.4), ("clab_default", 0.5), ("weight_0.001", 0.45), ("temperature_0.5", 0.55),
                ("schedule_cosine", 0.5), ("stage_1", 0.3))}
    table = ablation_table(grid, results, {})
    assert list(table["run"][:2]) == ["branch_off", "clab_default"]
    assert table.set_index("run")["vs default (points)"].to_dict()["temperature_0.5"] == pytest.approx(5.0)
    assert len(table) == 2 + len(grid)


def test_silhouette_and_tsne():
    from clab.analysis.embeddings import EmbeddingSet, silhouette, silhouette_table, tsne_2d
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.05, (10, 8)) + np.eye(8)[0]
    b = rng.normal(0, 0.05, (10, 8)) + np.eye(8)[1]
    feats = np.concatenate([a, b])
    groups = ["a"] * 10 + ["b"] * 10
    assert silhouette(feats, groups) > 0.8
    assert silhouette(feats, [0, 1] * 10) < 0.1
    assert np.isnan(silhouette(feats, ["x"] * 20))
    xy = tsne_2d(feats, perplexity=30, seed=0)  # perplexity capped for 20 points
    assert xy.shape == (20, 2) and np.isfinite(xy).all()
    labels = pd.DataFrame({"video": groups, "class": groups, "degradation": ["clean"] * 20})
    table = silhouette_table(EmbeddingSet(labels, {"m backbone": feats}))
    assert table.loc["m backbone", "by video"] > 0.8 and np.isnan(table.loc["m backbone", "by degradation"])


def test_plots_write_png_files(tmp_path):
    from clab import viz
    curves = pd.DataFrame({"model": ["baseline"] * 5 + ["clab"] * 5, "iter": list(range(1, 6)) * 2,
                           "loss": np.linspace(2, 1, 10), "lr": [0.01] * 10,
                           "loss_cab": [None] * 5 + list(np.linspace(0.01, 0, 5)),
                           "w_cab": [None] * 5 + list(np.linspace(0.005, 0, 5))})
    assert _is_png(viz.training_curves(curves, tmp_path / "curves.png"))
    assert viz.training_curves(pd.DataFrame(columns=["model", "iter"]), tmp_path / "none.png") is None
    per_class = pd.DataFrame({"baseline": [0.5, np.nan], "clab": [0.6, 0.2]},
                             index=pd.Index(["disc", "star"], name="class"))
    assert _is_png(viz.per_class_ap(per_class, tmp_path / "ap.png"))
    main = pd.DataFrame({"mAP@50": [0.5, 0.6], "mAP@50 slow": [0.7, 0.8], "mAP@50 fast": [-1.0, 0.1]},
                        index=pd.Index(["baseline", "clab"], name="model"))
    assert _is_png(viz.speed_map(main, tmp_path / "speed.png"))
    rob = pd.DataFrame([{"degradation": k, "severity": s, "model": m, "mAP@50": 0.5 - 0.1 * s}
                        for k in ("motion_blur", "occlusion") for s in (0, 1, 3) for m in ("baseline", "clab")])
    assert _is_png(viz.robustness_curves(rob, tmp_path / "rob.png"))
    points = pd.DataFrame({"features": ["clab cab"] * 8, "x": np.arange(8.0), "y": np.arange(8.0) ** 2,
                           "video": list("aabbccdd"), "class": list("xyxyxyxy"),
                           "degradation": ["clean", "blur"] * 4})
    assert _is_png(viz.tsne_grid(points, tmp_path / "tsne.png"))
    image = np.full((48, 64, 3), 90, np.uint8)
    frames = [{"image": image, "gt": np.array([[4, 4, 20, 20]], np.float32), "name": "v/000000.JPEG",
               "detections": {"clab": [np.array([[5, 5, 21, 19, 0.9], [0, 0, 3, 3, 0.1]], np.float32)]}}]
    assert _is_png(viz.detections_figure(frames, ["disc"], 0.3, tmp_path / "det.png"))
    boxes, labels = viz.detection_boxes(frames[0]["detections"]["clab"], ["disc"], 0.3)
    assert boxes.tolist() == [[5, 5, 21, 19]] and labels == ["disc 0.90"]
    drawn = viz.draw_boxes(image, boxes, labels)
    assert drawn.shape == (48 * 8, 64 * 8, 3) and (drawn != 90).any()


@pytest.mark.slow
def test_several_devices_train_and_test_through_torchrun(tmp_path):
    """GPUS > 1 goes through torchrun with the pytorch launcher (2 gloo processes on the CPU here)."""
    from clab.analysis.results import test_model
    from clab.analysis.training import read_training_log, train_model
    from clab.data.synthetic import make_synthetic
    data = make_synthetic(tmp_path / "data", seed=1, train_videos=4, val_videos=1, frames=6)
    options = [f"data_root={data}", "runner.max_epochs=1", "lr_config.warmup_iters=2", "data.workers_per_gpu=0"]
    checkpoint = train_model(TINY_CLAB, tmp_path / "wd", options, gpus=2, resume=True, seed=0, device="cpu")
    assert Path(checkpoint) == tmp_path / "wd" / "latest.pth" and Path(checkpoint).is_file()
    log = read_training_log(tmp_path / "wd")
    assert list(log["iter"]) == [1, 2]  # 8 clips over 2 processes x 2 clips per batch
    prov = json.loads((tmp_path / "wd" / "provenance.json").read_text())
    assert prov["world_size"] == 2
    metrics = test_model(TINY_CLAB, checkpoint, tmp_path / "test", options, gpus=2, device="cpu")
    assert metrics["world_size"] == 2 and metrics["num_frames"] == 6 and 0.0 <= metrics["bbox_mAP_50"] <= 1.0
    with pytest.raises(RuntimeError, match=r"torchrun clab train failed with exit code"):
        train_model(TINY_CLAB, tmp_path / "bad", [*options, "runner.max_epoch=1"], gpus=2, device="cpu")


def test_data_prep_converts_and_reads_a_miniature_imagenet_vid(tmp_path):
    """Notebook 00's path for DATASET=imagenet_vid: convert, build the VID+DET training and the VID test set of
    the paper config through their pipelines, and describe every annotation file."""
    import cv2
    from test_convert_imagenet_vid import make_tree

    from clab.analysis import data_prep
    root = make_tree(tmp_path / "ILSVRC")
    for xml in (root / "Annotations").rglob("*.xml"):  # a JPEG for every annotated frame / image
        size = xml.read_text().split("<size><width>")[1]
        w, h = int(size.split("<")[0]), int(size.split("<height>")[1].split("<")[0])
        jpeg = root / "Data" / xml.relative_to(root / "Annotations").with_suffix(".JPEG")
        jpeg.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(jpeg), np.full((h, w, 3), 128, np.uint8))
    params = {**defaults(), "DATASET": "imagenet_vid", "DATA_ROOT": str(root), "CONVERT_IMAGENET": True,
              "CONFIG_BASELINE": "configs/selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py",
              "CONFIG_CLAB": "configs/clab_selsa-troi_faster-rcnn_r50-dc5_8xb2-7e_imagenetvid.py"}
    with pytest.raises(FileNotFoundError, match="set CONVERT_IMAGENET: true"):
        data_prep.prepare_dataset({**params, "CONVERT_IMAGENET": False}, progress=False)
    summary = data_prep.prepare_dataset(params, progress=False)
    assert set(summary["converted"]) == {"vid_train", "vid_val", "det"}
    files = data_prep.split_files(params)
    assert {n: f["split"] for n, f in files.items()} == {"imagenet_vid_train": "train",
                                                        "imagenet_det_30plus1cls": "train", "imagenet_vid_val": "test"}
    checked = data_prep.validate_dataset(params)
    assert list(checked.index) == ["train", "test"] and checked.loc["test", "items"] == 3
    stats = data_prep.split_statistics(params)
    table = data_prep.statistics_table(stats)
    assert table.loc["videos", "imagenet_vid_val"] == 1 and table.loc["frames", "imagenet_vid_train"] == 9
    boxes = data_prep.box_tables(params)
    assert boxes["imagenet_det_30plus1cls"]["motion_iou"].isna().all()  # DET images have no video
    assert boxes["imagenet_vid_val"]["motion"].notna().all()
    from clab import viz
    assert _is_png(viz.dataset_overview(boxes, stats, tmp_path / "overview.png"))  # no speed, no degradations


def test_kernel_environment_sets_plot_backend_and_threads():
    from clab.runner import _kernel_environment
    assert _kernel_environment(defaults()) == {"MPLBACKEND": "agg"}
    assert _kernel_environment({**defaults(), "CPU_THREADS": 1}) == {"MPLBACKEND": "agg", "OMP_NUM_THREADS": "1",
                                                                     "MKL_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------------------------- skip rule
def _tree(root: Path) -> Path:
    for rel, text in {"clab/__init__.py": "x = 1\n", "clab/sub/mod.py": "y = 2\n", "configs/a.py": "c = 3\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_code_digest_follows_the_package_and_configs(tmp_path):
    from clab.runner import code_digest
    root = _tree(tmp_path / "repo")
    first = code_digest(root)
    assert code_digest(root) == first and len(first) == 16
    (root / "clab" / "sub" / "__pycache__").mkdir()
    (root / "clab" / "sub" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"compiled")
    (root / "notes.txt").write_text("not code")
    assert code_digest(root) == first                                   # caches and other files do not count
    (root / "clab" / "sub" / "mod.py").write_text("y = 3\n")
    changed = code_digest(root)
    assert changed != first
    (root / "configs" / "a.py").write_text("c = 4\n")
    assert code_digest(root) not in (first, changed)
    assert code_digest() == code_digest(REPO_ROOT)                      # the repository's own code by default


def test_checkout_identity_differs_between_clones(tmp_path):
    from clab.runner import checkout_identity
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert checkout_identity(a) == checkout_identity(a)
    assert checkout_identity(a) != checkout_identity(b)
    moved = tmp_path / "a_again"
    a.rename(moved)
    _tree(a)                                                            # a fresh clone at the same path
    assert checkout_identity(a) != checkout_identity(moved)


def test_skip_rule_needs_same_fingerprint_checkout_and_outputs(tmp_path):
    from clab.runner import skip_reason
    run = tmp_path / "run"
    (run / "eval" / "clab" / "seed0").mkdir(parents=True)
    executed = run / "02_evaluate.ipynb"
    executed.write_text("{}")
    (run / "eval" / "clab" / "seed0" / "metrics.json").write_text("{}")
    record = {"status": "ok", "fingerprint": "f1", "checkout": "here",
              "outputs": ["02_evaluate.ipynb", "eval/clab/seed0/metrics.json"]}
    assert skip_reason(record, "f1", "here", run, executed) is None
    assert skip_reason(record, "f2", "here", run, executed) == "parameters, notebook or code changed"
    assert skip_reason(record, "f1", "elsewhere", run, executed) == "made by another checkout or machine"
    assert skip_reason({}, "f1", "here", run, executed) == "not finished before"
    assert skip_reason({**record, "status": "failed"}, "f1", "here", run, executed) == "status failed before"
    (run / "eval" / "clab" / "seed0" / "metrics.json").unlink()
    assert skip_reason(record, "f1", "here", run, executed) == "output eval/clab/seed0/metrics.json is missing"
    executed.unlink()
    assert skip_reason(record, "f1", "here", run, executed) == "its executed copy 02_evaluate.ipynb is missing"


def test_committed_demo_state_does_not_make_a_clone_skip(tmp_path):
    """results/demo/run_state.json is committed: a fresh clone (another checkout) must run every notebook even
    though the executed copies, the parameters and the code are the same."""
    from clab.runner import _fingerprint, checkout_identity, code_digest, skip_reason
    run = REPO_ROOT / "results" / "demo"
    state = json.loads((run / "run_state.json").read_text())
    _, merged = resolve_parameters(PARAM_DIR / "demo.yaml", ["RUN_NAME=demo"], "results")
    clone = tmp_path / "clone"
    clone.mkdir()
    code = code_digest()
    assert set(state["notebooks"]) >= set(NOTEBOOKS[:6])
    for name, record in state["notebooks"].items():
        fingerprint = _fingerprint(NOTEBOOK_DIR / f"{name}.ipynb", merged, code)
        assert skip_reason(record, fingerprint, checkout_identity(clone), run, run / f"{name}.ipynb") is not None


# ----------------------------------------------------------------------------------------------- progress
def test_progress_lines_reach_the_runner_terminal(tmp_path, monkeypatch):
    from clab.analysis import progress
    path = tmp_path / "progress.log"
    shown: list[str] = []
    progress.report("outside the runner: nothing happens")
    assert not path.exists()
    monkeypatch.setenv(progress.PROGRESS_ENV, str(path))
    with progress.ProgressMonitor(path, prefix="  [01_train] ", emit=shown.append, poll=0.05):
        progress.report("[clab seed1] train 10/40 eta 0:30")
        import io
        notebook = io.StringIO()
        tee = progress.TeeStream(notebook)
        tee.write("[baseline seed0] started\n[baseline seed0] tra")
        tee.write("in 3/40\n")
        assert notebook.getvalue() == "[baseline seed0] started\n[baseline seed0] train 3/40\n" and not tee.isatty()
    assert shown == ["  [01_train] [clab seed1] train 10/40 eta 0:30", "  [01_train] [baseline seed0] started",
                     "  [01_train] [baseline seed0] train 3/40"]
    assert not path.exists()                                            # removed when the notebook ends


def test_training_progress_line_from_the_log_records():
    from clab.analysis.progress import training_progress
    assert training_progress([], 6, 0.0) == "starting"
    first_epoch = [{"iter": i, "epoch": 1} for i in range(1, 5)]
    assert training_progress(first_epoch[:3], 6, 3.0) == "iteration 3, epoch 1/6"
    records = first_epoch + [{"iter": 5, "epoch": 2}, {"iter": 6, "epoch": 2}]
    assert training_progress(records, 6, 12.0) == "iteration 6/24, epoch 2/6, eta 0:36"  # 2 s/iteration, 18 left


def test_a_new_training_starts_its_own_log(tmp_path):
    """A work dir with an old metrics.jsonl but no checkpoint (e.g. committed without its .pth files): the new
    training's log holds only its own iterations, not the old lines followed by the new ones."""
    from clab.analysis.training import read_training_log, train_model
    from clab.data.synthetic import make_synthetic
    data = make_synthetic(tmp_path / "data", seed=2, train_videos=2, val_videos=1, frames=6)
    work = tmp_path / "wd"
    work.mkdir()
    (work / "metrics.jsonl").write_text("".join(json.dumps({"iter": i, "epoch": 1, "loss": 9.0}) + "\n"
                                                for i in range(1, 289)))
    options = [f"data_root={data}", "runner.max_epochs=1", "lr_config.warmup_iters=1", "data.workers_per_gpu=0"]
    train_model(TINY_BASE, work, options, resume=True, seed=0, device="cpu", progress=False)
    log = read_training_log(work)
    assert list(log["iter"]) == [1, 2] and (log["loss"] != 9.0).all()
