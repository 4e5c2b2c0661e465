"""`train.save_model: best` (GitHub issue 28): a run keeps its selected network, and
:func:`halsal.models.saved.load_run_model` rebuilds it so that its predictions on the run's test
images are `predictions.tsv`'s, exactly."""

import numpy as np
import pandas as pd
import pytest
import torch

from halsal.errors import HalsalError
from halsal.models.saved import INFO_FILE, WEIGHTS_FILE, load_run_model
from halsal.train.inputs import load_split
from halsal.train.loop import OptimConfig, predict
from halsal.train.steps import FinetuneRun, finetune_batch, load_finetune_inputs


def _inputs(tiny, method, save_model):
    return load_finetune_inputs(arch="alexnet", method=method, variant="d4-pool2-eq2", dataset="fine",
                                prepared=tiny / "fine" / "prepared", backbone_pt=tiny / "backbone.pt",
                                saliency_pt=tiny / "sal.pt", cfg=OptimConfig(epochs=2, lr=0.01, batch_size=8),
                                input_size=64, save_model=save_model)


@pytest.mark.parametrize("method", ["approach_b", "baseline"])
def test_a_kept_network_reproduces_the_runs_predictions(tiny, tmp_path, method):
    torch.set_num_threads(1)
    out = tmp_path / method
    [(metrics, _)] = finetune_batch(_inputs(tiny, method, "best"), [FinetuneRun("2", 0, tiny / "fine" / "seed0.tsv", out)])
    assert (out / WEIGHTS_FILE).is_file() and (out / INFO_FILE).is_file()
    model, info = load_run_model(out)
    assert info["arch"] == "alexnet" and info["num_classes"] == metrics["num_classes"] and info["best_epoch"] == metrics["best_epoch"]
    assert model.has_saliency == (method != "baseline")
    data = load_split(tiny / "fine" / "prepared", tiny / "fine" / "seed0.tsv", "2", torch.device("cpu"), info["input_size"],
                      False, False, normalisation=tuple(tuple(v) for v in info["normalisation"]))
    kept = pd.read_csv(out / "predictions.tsv", sep="\t")
    np.testing.assert_array_equal(predict(model, data.test).numpy(), kept["pred"].to_numpy())
    assert list(data.test_rows["row"]) == list(kept["row"])


def test_off_by_default_and_a_run_without_it_says_how(tiny, tmp_path):
    out = tmp_path / "plain"
    finetune_batch(_inputs(tiny, "baseline", "none"), [FinetuneRun("2", 0, tiny / "fine" / "seed0.tsv", out)])
    assert (out / "metrics.json").is_file() and not (out / WEIGHTS_FILE).exists()
    with pytest.raises(HalsalError, match="train.save_model: best"):
        load_run_model(out)
    with pytest.raises(HalsalError, match="choose one of none, best"):
        _inputs(tiny, "baseline", "last")


def test_a_state_dict_that_does_not_fit_is_refused(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    out = tmp_path / "run"
    finetune_batch(_inputs(tiny, "approach_a", "best"), [FinetuneRun("2", 0, tiny / "fine" / "seed0.tsv", out)])
    state = load_file(str(out / WEIGHTS_FILE))
    save_file({k: v for k, v in state.items() if not k.startswith("saliency_branch.")}, str(out / WEIGHTS_FILE))
    with pytest.raises(HalsalError, match="missing .*saliency_branch"):
        load_run_model(out)
