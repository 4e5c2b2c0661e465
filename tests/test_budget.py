"""The training budget in optimizer steps (``steps``) and the evaluation cadence (``eval_every``)
of :func:`halsal.train.loop.fit` (GitHub issue 25)."""

import numpy as np
import pytest
import torch

from halsal.models import build_model
from halsal.train import loop
from halsal.train.device_cache import DeviceImages
from halsal.train.loop import OptimConfig, fit, schedule


def _data(n: int, seed: int = 0) -> DeviceImages:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 72, 72), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 2
    return DeviceImages(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), torch.device("cpu"), 64, True, True,
                        ((0.5,) * 3, (0.25,) * 3))


def _model():
    torch.manual_seed(0)
    return build_model("alexnet", 2, fc_width=16, saliency="none")


@pytest.mark.parametrize("n_train, batch, steps", [(10, 4, 7), (10, 4, 3), (10, 4, 9), (50, 32, 64), (102, 32, 40)])
def test_steps_budget_runs_exactly_that_many_optimizer_steps(monkeypatch, n_train, batch, steps):
    counted = []
    make = loop.make_optimizer

    def counting(model, cfg):
        opt = make(model, cfg)
        opt.register_step_post_hook(lambda *a: counted.append(1))
        return opt

    monkeypatch.setattr(loop, "make_optimizer", counting)
    per_epoch = -(-n_train // batch)
    cfg = OptimConfig(steps=steps, epochs=99, lr=1e-3, optimizer="adam", batch_size=batch)
    plan = schedule(n_train, cfg)
    assert sum(e.steps for e in plan) == steps and plan[-1].total_steps == steps
    assert len(plan) == -(-steps // per_epoch) and all(e.steps == per_epoch for e in plan[:-1])
    if n_train <= 10:  # the real loop too (the larger cases only check the schedule)
        result = fit(_model(), _data(n_train), _data(6, 1), cfg, seed=0)
        assert len(counted) == steps and result.steps == steps and result.epochs == len(plan)
        assert [h["step"] for h in result.history] == [e.total_steps for e in plan]


def test_epochs_budget_is_unchanged_without_steps():
    plan = schedule(10, OptimConfig(epochs=3, batch_size=4))
    assert [e.steps for e in plan] == [3, 3, 3] and all(e.evaluate for e in plan)


@pytest.mark.parametrize("n_train, batch, steps, every, want", [
    (10, 4, 12, 5, [2, 4]),  # 3 steps an epoch: epoch ends at 3, 6, 9, 12; multiples of 5 at 5, 10
    (10, 4, 11, 6, [2, 4]),  # ends at 3, 6, 9, 11: 6 at epoch 2, then the last
    (10, 4, 9, 100, [3]),  # only the last
    (40, 4, 20, 10, [1, 2]),  # 10 steps an epoch
])
def test_eval_cadence_evaluates_after_each_multiple_and_always_the_last(n_train, batch, steps, every, want):
    plan = schedule(n_train, OptimConfig(steps=steps, eval_every=every, batch_size=batch))
    assert [i + 1 for i, e in enumerate(plan) if e.evaluate] == want


def test_selection_is_among_the_evaluated_epochs_only(monkeypatch):
    """Validation runs only on the cadence's epochs, and the selected epoch is the best of those."""
    scores = []

    def fake_evaluate(model, data, boxes=None):
        return scores.pop(0), None, None, None

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    cfg = OptimConfig(steps=12, eval_every=5, lr=1e-3, optimizer="adam", batch_size=4)  # evaluated: epochs 2, 4
    scores[:] = [0.5, 0.9, 0.7]
    result = fit(_model(), _data(10), _data(6, 1), cfg, seed=0)
    assert scores == [0.7]  # two evaluations, not four (and not three)
    assert [h["val_acc"] for h in result.history] == [None, 0.5, None, 0.9]
    assert result.best_epoch == 4 and result.best_val_acc == 0.9
    scores[:] = [0.9, 0.5]
    result = fit(_model(), _data(10), _data(6, 1), cfg, seed=0)
    assert result.best_epoch == 2  # an unevaluated epoch (1 or 3) is never selected


def test_steps_and_eval_every_are_config_keys_with_the_schema_defaults():
    from halsal import settings

    d = settings.optim_defaults()
    assert d["steps"] is None and d["eval_every"] is None
    assert {"steps", "eval_every"} <= set(settings.SETTINGS_KEYS)


def test_a_budget_by_k_resolves_per_run_and_is_refused_unresolved():
    cfg = OptimConfig(steps={"1": 64, 5: 128}, eval_every=16, batch_size=32)
    assert cfg.at_k(1).steps == 64 and cfg.at_k("5").steps == 128
    assert schedule(102, cfg.at_k(1))[-1].total_steps == 64 and schedule(510, cfg.at_k(5))[-1].total_steps == 128
    with pytest.raises(Exception, match="not for k = 10"):
        cfg.at_k(10)
    with pytest.raises(Exception, match="is given by k"):
        schedule(102, cfg)
    assert OptimConfig(steps=80).at_k(1).steps == 80


def test_the_cli_takes_a_budget_by_k_and_the_workflows_mapping():
    import argparse

    from halsal.cli.options import steps_budget

    assert steps_budget("80") == 80 and steps_budget("1=64, 5=128") == {"1": 64, "5": 128}
    assert steps_budget({"1": 64}) == {"1": 64} and steps_budget(None) is None
    with pytest.raises(argparse.ArgumentTypeError, match="k=N pairs"):
        steps_budget("1=many")


def test_the_plan_refuses_a_budget_by_k_that_misses_a_k():
    from tests.test_plan import load

    plan = load("photos.yaml")
    steps = plan.config["train"]["finetune"]["steps"]
    if isinstance(steps, dict):
        assert {str(k) for k in steps} >= set(plan.ks)
    with pytest.raises(ValueError, match="no budget for k = 5"):
        load("photos.yaml", train={**plan.config["train"], "finetune": {**plan.config["train"]["finetune"], "steps": {"1": 64}}})
    with pytest.raises(ValueError, match="fine-tuning only"):
        load("photos.yaml", train={**plan.config["train"], "pretrain": {**plan.config["train"]["pretrain"], "steps": {"1": 9}}})


def test_lr_factor_constant_and_cosine():
    assert [loop.lr_factor("constant", t, 8) for t in (0, 4, 7)] == [1.0, 1.0, 1.0]
    assert [round(loop.lr_factor("cosine", t, 8), 6) for t in (0, 2, 4, 6)] == [1.0, 0.853553, 0.5, 0.146447]
    assert 0 < loop.lr_factor("cosine", 7, 8) < 0.04  # the last step: near 0, not 0
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        loop.lr_factor("step", 0, 8)


@pytest.mark.parametrize("name", ["constant", "cosine"])
def test_each_optimizer_step_runs_at_the_scheduled_rate_in_every_group(monkeypatch, name):
    """Across epochs (3 steps an epoch, the last cut short), for the body and for the saliency
    branch's own lr alike."""
    seen = []
    make = loop.make_optimizer

    def recording(model, cfg):
        opt = make(model, cfg)
        opt.register_step_pre_hook(lambda o, *a: seen.append([g["lr"] for g in o.param_groups]))
        return opt

    monkeypatch.setattr(loop, "make_optimizer", recording)
    torch.manual_seed(0)
    model = build_model("alexnet", 2, fc_width=16, saliency="hallucinated")
    cfg = OptimConfig(steps=8, lr=1e-2, saliency_lr=1e-4, lr_schedule=name, optimizer="adam", batch_size=4)
    fit(model, _data(10), _data(6, 1), cfg, seed=0)
    want = [[1e-2 * loop.lr_factor(name, t, 8), 1e-4 * loop.lr_factor(name, t, 8)] for t in range(8)]
    assert len(seen) == 8 and all(len(s) == 2 for s in seen)
    np.testing.assert_allclose(seen, want, rtol=1e-12)


def test_a_schedule_by_k_resolves_per_run_and_is_checked():
    from halsal.cli.options import schedule_by_k
    from tests.test_plan import load

    cfg = OptimConfig(steps={"1": 64, "5": 128}, lr_schedule={"1": "constant", "5": "cosine"})
    assert (cfg.at_k(1).lr_schedule, cfg.at_k(1).steps) == ("constant", 64)
    assert (cfg.at_k("5").lr_schedule, cfg.at_k("5").steps) == ("cosine", 128)
    with pytest.raises(Exception, match="lr_schedule gives a schedule for k = 1, 5 but not for k = 10"):
        OptimConfig(steps=64, lr_schedule={"1": "constant", "5": "cosine"}).at_k(10)
    with pytest.raises(Exception, match="lr_schedule .* is given by k"):
        schedule(102, OptimConfig(lr_schedule={"1": "cosine"}))
    assert schedule_by_k("cosine") == "cosine" and schedule_by_k("1=constant, 5=cosine") == {"1": "constant", "5": "cosine"}
    with pytest.raises(Exception, match="'linear' is not a schedule"):
        schedule_by_k("1=linear")
    plan = load("photos.yaml")
    finetune = plan.config["train"]["finetune"]
    with pytest.raises(ValueError, match="lr_schedule: no value for k = 5"):
        load("photos.yaml", train={**plan.config["train"], "finetune": {**finetune, "lr_schedule": {"1": "cosine"}}})
