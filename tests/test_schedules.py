"""Loss-weight schedules (clab.schedules): exact values, argument checks, the mmcv hook on a real runner."""
from __future__ import annotations

import json
import math

import pytest
import torch
from mmcv.parallel import MMDataParallel
from mmcv.runner import IterBasedRunner
from mmcv.utils import get_logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clab import schedules
from clab.schedules import (CabWeightHook, build_schedule, constant, cosine, exponential, linear, step,
                            warmup)

PAPER = dict(type="linear", start=0.005, end=0.0, length=25000)


# ---------------------------------------------------------------------------------------------- values
def test_paper_linear_schedule_exact_points():
    f = build_schedule(PAPER)
    assert f(0) == 0.005
    assert f(12500) == 0.0025
    assert f(25000) == 0.0
    assert f(30000) == 0.0
    # the published hook: 0.005 - t * 2e-7 (SPEC 1.8), equal up to float rounding
    for t in (1, 777, 12345, 24999):
        assert f(t) == pytest.approx(0.005 - t * 2e-7, rel=0, abs=1e-15)
    assert f(24999) > 0.0


def test_cosine_and_constant():
    f = cosine(1.0, 0.0, 100)
    assert f(0) == 1.0
    assert f(50) == pytest.approx(0.5, abs=1e-15)
    assert f(25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2, abs=1e-15)
    assert f(100) == 0.0 and f(1000) == 0.0
    g = constant(0.3)
    assert g(0) == 0.3 and g(10 ** 9) == 0.3


def test_step_boundaries():
    f = step([1.0, 0.1, 0.01], [10, 20])
    assert [f(t) for t in (0, 9, 9.999, 10, 19, 20, 10 ** 6)] == [1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]


def test_exponential():
    f = exponential(2.0, 0.5, period=10)
    assert f(0) == 2.0
    assert f(10) == 1.0
    assert f(30) == 0.25
    assert f(5) == pytest.approx(2.0 * 0.5 ** 0.5)


def test_warmup_wraps_any_schedule():
    f = warmup(linear(1.0, 0.0, 100), warmup_length=10, warmup_start=0.2)
    assert f(0) == 0.2
    assert f(5) == pytest.approx(0.2 + (0.9 - 0.2) * 0.5)
    assert f(10) == pytest.approx(0.9)     # joins the wrapped schedule, time not shifted
    assert f(50) == 0.5
    g = build_schedule(dict(type="warmup", warmup_length=10, schedule=dict(type="constant", value=4.0)))
    assert [g(0), g(5), g(10), g(99)] == [0.0, 2.0, 4.0, 4.0]


def test_fraction_unit_equals_iter_unit_when_scaled():
    max_iters = 50000
    by_iter = build_schedule(PAPER)
    by_fraction = build_schedule(dict(PAPER, length=0.5, unit="fraction"), max_iters=max_iters)
    for t in (0, 1, 999, 12500, 24999, 25000, 40000, 49999):
        assert by_fraction(t) == by_iter(t)
    steps_iter = build_schedule(dict(type="step", values=[1, 2, 3], milestones=[1000, 3000]))
    steps_frac = build_schedule(dict(type="step", values=[1, 2, 3], milestones=[0.25, 0.75],
                                     unit="fraction"), max_iters=4000)
    assert [steps_frac(t) for t in (0, 999, 1000, 2999, 3000)] == [steps_iter(t) for t in
                                                                   (0, 999, 1000, 2999, 3000)]
    # a nested schedule inherits the outer unit
    inner = dict(type="linear", start=1.0, end=0.0, length=1.0)
    wrapped = build_schedule(dict(type="warmup", warmup_length=0.1, unit="fraction", schedule=inner),
                             max_iters=100)
    assert wrapped(10) == pytest.approx(0.9) and wrapped(100) == 0.0


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("factory, kwargs, words", [
    (linear, dict(start=1.0, end=0.0, length=0), "'length' must be > 0"),
    (linear, dict(start="a", end=0.0, length=10), "'start' must be a finite number"),
    (cosine, dict(start=1.0, end=float("nan"), length=10), "'end' must be a finite number"),
    (constant, dict(value=True), "'value' must be a finite number"),
    (step, dict(values=[1.0, 2.0], milestones=[5, 3]), "'values' must have len(milestones) + 1"),
    (step, dict(values=[1.0, 2.0, 3.0], milestones=[5, 3]), "strictly increasing"),
    (step, dict(values=[1.0, 2.0], milestones=[-1]), "'milestones[0]' must be > 0"),
    (exponential, dict(start=1.0, gamma=0.0), "'gamma' must be > 0"),
    (warmup, dict(schedule=1.0, warmup_length=5), "'schedule' must be a callable"),
    (warmup, dict(schedule=constant(1.0), warmup_length=-5), "'warmup_length' must be > 0"),
])
def test_argument_validation(factory, kwargs, words):
    with pytest.raises(ValueError) as err:
        factory(**kwargs)
    assert words in str(err.value)


def test_schedule_rejects_negative_progress():
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        linear(1.0, 0.0, 10)(-1)


@pytest.mark.parametrize("cfg, max_iters, words", [
    (dict(type="linaer", start=1, end=0, length=3), None, "'type' must be one of"),
    (dict(type="linear", start=1, end=0, lenght=3), None, "unknown parameter(s) ['lenght']"),
    (dict(type="linear", start=1, end=0), None, "missing parameter(s) ['length']"),
    (dict(type="linear", start=1, end=0, length=3, unit="epoch"), None, "'unit' must be one of"),
    (dict(type="linear", start=1, end=0, length=0.5, unit="fraction"), None, "needs max_iters"),
    (dict(type="linear", start=1, end=0, length=0.5, unit="fraction"), 0, "needs max_iters"),
    ("linear", None, "must be a dict"),
])
def test_build_schedule_validation(cfg, max_iters, words):
    with pytest.raises(ValueError) as err:
        build_schedule(cfg, max_iters=max_iters)
    assert words in str(err.value)


def test_hook_rejects_bad_config_at_construction():
    with pytest.raises(ValueError, match="unknown parameter"):
        CabWeightHook(schedule=dict(type="linear", start=1, end=0, length=3, value=2))


# ---------------------------------------------------------------------------------------------- the hook
class _Auxiliary(nn.Module):
    def __init__(self):
        super().__init__()
        self.loss_weight = -1.0


class _TinyModel(nn.Module):
    """A model with an ``auxiliary`` part; records the weight it sees at every training step."""

    def __init__(self, with_auxiliary: bool = True):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        if with_auxiliary:
            self.auxiliary = _Auxiliary()
        self.seen: list[float] = []

    def train_step(self, data_batch, optimizer, **kwargs):
        (x,) = data_batch
        loss = self.linear(x).pow(2).mean()
        log_vars = dict(loss=loss.item())
        if hasattr(self, "auxiliary"):
            self.seen.append(self.auxiliary.loss_weight)
        return dict(loss=loss, log_vars=log_vars, num_samples=x.shape[0])


def _run(tmp_path, model, schedule_cfg, max_iters, wrap=False):
    loader = DataLoader(TensorDataset(torch.randn(2 * max_iters, 2)), batch_size=2)   # one epoch
    runner_model = MMDataParallel(model) if wrap else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    logger = get_logger(f"test_schedules_{tmp_path.name}", log_file=None)
    runner = IterBasedRunner(runner_model, optimizer=optimizer, work_dir=str(tmp_path), max_iters=max_iters,
                             logger=logger)
    runner.register_training_hooks(lr_config=None, optimizer_config=dict(grad_clip=None),
                                   log_config=dict(interval=1, hooks=[dict(type="TextLoggerHook")]))
    runner.register_hook(CabWeightHook(schedule=schedule_cfg), priority="NORMAL")
    runner.run([loader], [("train", max_iters)])
    return runner


def _logged(tmp_path, key):
    (log_file,) = tmp_path.glob("*.log.json")
    rows = [json.loads(line) for line in log_file.read_text().splitlines()]
    return [row[key] for row in rows if row.get("mode") == "train"]


def test_hook_sets_weight_every_iteration_and_logs_it(tmp_path):
    model = _TinyModel()
    cfg = dict(type="linear", start=0.005, end=0.0, length=4)
    _run(tmp_path, model, cfg, max_iters=6)
    expected = [build_schedule(cfg)(t) for t in range(6)]
    assert model.seen == expected
    assert expected == pytest.approx([0.005, 0.00375, 0.0025, 0.00125, 0.0, 0.0], rel=1e-12, abs=0)
    assert model.auxiliary.loss_weight == 0.0
    assert _logged(tmp_path, "w_cab") == pytest.approx(expected, abs=1e-9)   # the text logger rounds


def test_hook_unwraps_data_parallel_and_uses_fraction_of_max_iters(tmp_path):
    model = _TinyModel()
    cfg = dict(type="step", values=[1.0, 0.5], milestones=[0.5], unit="fraction")
    _run(tmp_path, model, cfg, max_iters=4, wrap=True)
    assert model.seen == [1.0, 1.0, 0.5, 0.5]


def test_hook_without_auxiliary_warns_once(tmp_path):
    model = _TinyModel(with_auxiliary=False)
    with pytest.warns(UserWarning, match="no 'auxiliary'") as record:
        _run(tmp_path, model, PAPER, max_iters=3)
    assert sum("no 'auxiliary'" in str(w.message) for w in record) == 1
    assert "w_cab" not in _logged_keys(tmp_path)


def _logged_keys(tmp_path):
    (log_file,) = tmp_path.glob("*.log.json")
    return {key for line in log_file.read_text().splitlines() for key in json.loads(line)}


def test_hook_is_registered_in_mmcv_hooks():
    from mmcv.runner import HOOKS
    from mmcv.utils import build_from_cfg

    hook = build_from_cfg(dict(type="CabWeightHook", schedule=PAPER), HOOKS)
    assert isinstance(hook, schedules.CabWeightHook)
