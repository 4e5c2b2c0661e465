"""ResNet-152 with a hallucinated-saliency branch (Table 2 of the paper).

The RGB and joint branches are torchvision's ``resnet152`` modules kept under torchvision's
own attribute names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, ``fc``), so the ImageNet
state dict of ``torchvision.models.ResNet152_Weights`` loads by key. The network is a chain
of units - the stem (conv1, bn1, ReLU, max-pool) and the 50 bottleneck blocks - and the
fusion point names the unit after which the RGB branch ends:

- ``stem``: after the stem's max-pool (64 x 56 x 56 for a 224 input);
- ``layer<i>.<j>``: after bottleneck block j of stage i (``layer2.0`` is the 4th block);
- ``layer<i>``: after the last block of stage i (``layer4``: 2048 x 7 x 7, before avgpool).

The saliency branch is the AlexNet-style branch of :mod:`halsal.models.saliency`; its map is
resized to the fused feature map's spatial size and modulates it (Eq. 1 / Eq. 2).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet152 as tv_resnet152

from halsal import spec
from halsal.models.saliency import TwoBranchForward

# torchvision resnet152: Bottleneck blocks per stage (He et al. 2016, Table 1: 3, 8, 36, 3).
STAGE_BLOCKS = spec.RESNET_STAGE_BLOCKS
# Footnote 2 of the paper: "after the fourth residual block". Read as the fourth bottleneck
# block (He et al. call each of them a residual block; the stages are conv2_x .. conv5_x),
# i.e. the first block of torchvision's layer2: its 28 x 28 output (224 input) is at the
# scale of AlexNet's chosen fusion before pool2 (27 x 27). The other readings are config
# values: `layer4` (the fourth stage) and `layer3` (the fourth unit counting the stem).


def _unit_names() -> list[str]:
    return ["stem"] + [f"layer{i + 1}.{j}" for i, n in enumerate(STAGE_BLOCKS) for j in range(n)]


UNITS = _unit_names()


def _fusion_points() -> dict[str, int]:
    """Every fusion point -> index of the last unit of the RGB branch (a stage: its last block)."""
    points = {name: i for i, name in enumerate(UNITS)}
    points.update({f"layer{i + 1}": points[f"layer{i + 1}.{n - 1}"] for i, n in enumerate(STAGE_BLOCKS)})
    return points


class HalSalResNet(TwoBranchForward, nn.Module):
    """Two-branch ResNet-152. ``saliency_depth=0`` gives Baseline-RGB (no saliency branch).

    ``saliency="external"`` takes the map as ``forward(x, saliency=maps)`` (SMIC).
    """

    ARCH = "resnet152"
    FUSION_POINTS = _fusion_points()
    FUSION_CHOICES = f"choose stem, layer1..layer4 or a block layer<i>.<j> (blocks per stage: {STAGE_BLOCKS})"
    TOP_KEY = "fc.weight"  # the top layer's weight in the state dict (its rows: the classes)

    def __init__(self, num_classes: int = 1000, **two_branch):
        super().__init__()
        options = self.two_branch_options(**two_branch)
        base = tv_resnet152(weights=None, num_classes=num_classes)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"):
            setattr(self, name, getattr(base, name))
        self.set_up_saliency(**options)

    def _units(self) -> list[nn.Module]:
        stem = lambda x: self.maxpool(self.relu(self.bn1(self.conv1(x))))  # noqa: E731
        return [stem, *self.layer1, *self.layer2, *self.layer3, *self.layer4]

    # The three parts of Fig. 1.
    def rgb_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_units(x, 0, self.split)

    def joint_branch(self, l_hat: torch.Tensor) -> torch.Tensor:
        x = self.run_units(l_hat, self.split)
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def top_layer(self) -> nn.Linear:
        return self.fc
