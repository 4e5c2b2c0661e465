"""A fine-tuned network kept for reuse (``train.save_model: best``, GitHub issue 28).

A run that keeps its network writes, beside its ``metrics.json``:

- ``model.safetensors``: the selected epoch's state dict (safetensors: nothing is unpickled when
  it is read), every key of the network;
- ``model.json``: what rebuilds that network: the architecture, the number of classes and their
  names, the saliency kind ('hallucinated', 'external' for SMIC, 'none' for Baseline-RGB), the
  variant's constructor options (saliency depth, fusion point, modulation), the shape options of
  the backbone (AlexNet's fc6/fc7 width) and the input size and normalisation of its images.

:func:`load_run_model` rebuilds the network from a run's folder and loads the state dict by key,
every key checked; its predictions on the run's test images are ``predictions.tsv``'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from halsal.errors import HalsalError
from halsal.io import atomic_write, write_json

WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "model.json"
SAVE_CHOICES = ("none", "best")  # train.save_model


def save_run_model(out_dir: str | Path, model: nn.Module, info: dict) -> Path:
    """Write ``model``'s state dict and ``info`` (see the module docstring) into ``out_dir``,
    each atomically, the weights first (``model.json`` present means both are complete)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_write(out_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "arch": str(info["arch"])})
    write_json(out_dir / INFO_FILE, info)
    return out_dir / WEIGHTS_FILE


def run_model_info(run_dir: str | Path) -> dict:
    """A kept run's ``model.json``; an error naming the folder and the setting where it has none."""
    path = Path(run_dir) / INFO_FILE
    if not path.is_file() or not (Path(run_dir) / WEIGHTS_FILE).is_file():
        raise HalsalError(f"{run_dir} holds no kept network ({INFO_FILE} and {WEIGHTS_FILE}): set "
                          "train.save_model: best in the config (or --save-model best) and run the run again")
    return json.loads(path.read_text())


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The fine-tuned network of a run folder, in eval mode, and its ``model.json``."""
    from safetensors.torch import load_file

    from halsal.models import build_model

    info = run_model_info(run_dir)
    model = build_model(info["arch"], int(info["num_classes"]), saliency=info["saliency"], **info["variant_options"],
                        **info["shape_options"])
    state = load_file(str(Path(run_dir) / WEIGHTS_FILE), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise HalsalError(f"{Path(run_dir) / WEIGHTS_FILE} does not fit the network that {INFO_FILE} describes: "
                          f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return model.to(device).eval(), info
