"""Pretrained weights: torchvision enums, local files, and torchvision-keyed state dicts.

A backbone is always exchanged as a plain torchvision state dict (``features.*`` /
``classifier.*`` for AlexNet, ``conv1.*`` ... ``layer4.*`` / ``fc.*`` for ResNet-152), so it
loads into ``torchvision.models.alexnet()`` / ``resnet152()`` by key and into the RGB and
joint branches of :class:`~halsal.models.alexnet.HalSalAlexNet` /
:class:`~halsal.models.resnet.HalSalResNet`.

``model.weights`` in the config: ``imagenet`` (the torchvision enum below: downloads to the
torch hub cache and checks the hash), a local ``.pt``/``.pth``/``.safetensors`` file (read with
``weights_only=True`` or safetensors: nothing is unpickled), or ``scratch`` (Step 0 trains it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import models as tvm

from halsal import spec
from halsal.errors import HalsalError
from halsal.io import torch_load
from halsal.models.efficientnet import EfficientNetLite0_Weights

# Weight enums per architecture: torchvision's (they download and check the hash when online)
# and EfficientNet-Lite0's (the file of an installed package, sha256-checked).
WEIGHT_ENUMS = {
    "alexnet": tvm.AlexNet_Weights.IMAGENET1K_V1,
    "resnet152": tvm.ResNet152_Weights.IMAGENET1K_V1,
    "efficientnet_lite0": EfficientNetLite0_Weights.IMAGENET1K_TF,
}


def normalisation(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` on [0, 1] pixels that ``arch``'s ImageNet weights were trained with, read
    from their enum's transforms (torchvision's ImageNet statistics for AlexNet and ResNet-152,
    also used when they are trained from scratch; ``(x*255 - 127) / 128`` for EfficientNet-Lite0's
    TF weights; timm's pretrained configuration for a timm model). Every consumer of an input
    normalisation takes it from here."""
    if spec.is_timm(arch):
        from halsal.models.timm_net import pretrained_cfg

        cfg = pretrained_cfg(arch[len(spec.TIMM_PREFIX):])
        return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    t = WEIGHT_ENUMS[arch].transforms()
    return tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)


def imagenet_state_dict(arch: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``arch``; a clear error when they cannot be had."""
    if spec.is_timm(arch):
        return timm_imagenet_state_dict(arch)
    enum = WEIGHT_ENUMS[arch]
    if isinstance(enum, EfficientNetLite0_Weights):
        return enum.get_state_dict()  # from the installed package: its own clear errors
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return enum.get_state_dict(progress=progress, check_hash=True)
    except Exception as exc:  # URLError, hash mismatch, ...
        fname = enum.url.rsplit("/", 1)[-1]
        raise HalsalError(
            f"could not obtain the ImageNet weights for {arch} ({type(exc).__name__}: {exc}). "
            f"Download {enum.url} on a machine with internet access and place it at "
            f"{hub_dir / fname} (torchvision checks its hash), or set `model.weights` to the "
            f"path of that file, or to `scratch` to train the backbone on the source set."
        ) from exc


def timm_imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """timm's pretrained weights for a timm model, keyed as :class:`~halsal.models.timm_net.HalSalTimm`;
    offline, an error that names timm's cache and how to use a local file instead."""
    import timm

    name = arch[len(spec.TIMM_PREFIX):]
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as exc:  # no network, no cached file, no such weights
        cache = Path(__import__("huggingface_hub").constants.HF_HUB_CACHE)
        raise HalsalError(
            f"could not obtain timm's pretrained weights for {name} ({type(exc).__name__}: {exc}). timm reads them "
            f"from the Hugging Face hub into {cache} (HF_HOME moves it): fetch them there on a machine with internet "
            f"access (python -c \"import timm; timm.create_model('{name}', pretrained=True)\"), or set model.weights "
            f"to a local .safetensors/.pth state dict of {name} (timm's keys), or to scratch") from exc
    return timm_keys(arch, model.state_dict())


def timm_keys(arch: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm model's own state dict (``conv1.weight``) -> HalSalTimm's keys (``trunk.conv1.weight``);
    a state dict already in those keys is returned as it is."""
    if not spec.is_timm(arch) or all(k.startswith("trunk.") for k in state):
        return state
    return {f"trunk.{k}": v for k, v in state.items()}


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pt/.pth (``weights_only=True``) or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise HalsalError(
            f"weights file {path} does not exist: set `model.weights` to an existing "
            f".pt/.pth/.safetensors file, to `imagenet`, or to `scratch`"
        )
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise HalsalError(f"{path}: reading .safetensors needs `pip install safetensors`") from exc
        state = load_file(str(path))
    else:
        try:
            state = torch_load(path)
        except Exception as exc:
            raise HalsalError(f"{path} is not a loadable weights file ({exc}); it must hold a state dict of tensors") from exc
    for key in ("state_dict", "model"):  # training checkpoints that wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if isinstance(state, dict) and state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel/DDP
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HalsalError(f"{path} does not hold a state dict of tensors")
    return state


def backbone_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The torchvision-keyed part of a two-branch model (everything but the saliency branch)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("saliency_branch.")}


def load_backbone(model: torch.nn.Module, state: dict[str, torch.Tensor], *, skip_top: bool = False) -> None:
    """Load a torchvision-keyed backbone into ``model``'s RGB and joint branches.

    ``skip_top`` leaves the top classification layer as initialised (Xavier) when the class
    count differs (Step 2 on a new dataset). Any other missing or unexpected key is an error.
    """
    state = dict(state)
    top_prefix = _top_prefix(model)
    if skip_top:
        state = {k: v for k, v in state.items() if not k.startswith(top_prefix)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("saliency_branch.")]
    if skip_top:
        missing = [k for k in missing if not k.startswith(top_prefix)]
    if missing or result.unexpected_keys:
        raise HalsalError(
            f"backbone state dict does not match the model: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def _top_prefix(model: torch.nn.Module) -> str:
    top = model.top_layer()
    for name, module in model.named_modules():
        if module is top:
            return name + "."
    raise RuntimeError("model has no top layer")
