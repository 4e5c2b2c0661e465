"""AlexNet with a hallucinated-saliency branch (Fig. 1 and Sec. 3 of the paper).

The RGB and joint branches are torchvision's AlexNet layers, kept under torchvision's own
attribute names (``features``, ``avgpool``, ``classifier``) so that an ImageNet state dict
from ``torchvision.models.AlexNet_Weights`` loads by key. The fusion point splits
``features`` in two: ``rgb_branch`` runs the layers before it and ``joint_branch`` the rest
(pool2, conv3-conv5, pool5, fc6-fc8 for the default fusion before pool2).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import alexnet as tv_alexnet

from halsal import spec
from halsal.models.saliency import TwoBranchForward


class HalSalAlexNet(TwoBranchForward, nn.Module):
    """Two-branch AlexNet. ``saliency_depth=0`` gives Baseline-RGB (no saliency branch).

    ``saliency="external"`` replaces the hallucinated map by one passed to ``forward``
    (explicit saliency, the SMIC row of the paper).
    """

    ARCH = "alexnet"
    # Fusion points (Fig. 3 of the paper) -> index into torchvision's `alexnet.features` of the
    # last layer of the RGB branch. features = [conv1, relu, pool1, conv2, relu, pool2, conv3,
    # relu, conv4, relu, conv5, relu, pool5].
    FUSION_POINTS = {
        "pool1": 1,  # before pool1 (after conv1 + ReLU)
        "pool2": 4,  # before pool2 (after conv2 + ReLU): the paper's choice
        "conv3": 7,  # after conv3 (+ ReLU)
        "conv4": 9,  # after conv4 (+ ReLU)
        "pool5": 11,  # before pool5 (after conv5 + ReLU)
    }
    FUSION_CHOICES = f"choose one of {sorted(FUSION_POINTS)}"
    TOP_KEY = "classifier.6.weight"  # the top layer's weight in the state dict (its rows: the classes)

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, fc_width: int = spec.ALEXNET_FC_WIDTH,
                 **two_branch):
        super().__init__()
        options = self.two_branch_options(**two_branch)
        base = tv_alexnet(weights=None, num_classes=num_classes, dropout=dropout)
        if fc_width != spec.ALEXNET_FC_WIDTH:
            # fc6/fc7 narrower than AlexNet's 4096: only for CPU-sized demos (config
            # model.fc_width); torchvision's ImageNet weights need 4096.
            base.classifier[1] = nn.Linear(256 * 6 * 6, fc_width)
            base.classifier[4] = nn.Linear(fc_width, fc_width)
            base.classifier[6] = nn.Linear(fc_width, num_classes)
        self.features = base.features
        self.avgpool = base.avgpool
        self.classifier = base.classifier
        self.set_up_saliency(**options)

    # The three parts of Fig. 1.
    def rgb_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.features[: self.split](x)

    def joint_branch(self, l_hat: torch.Tensor) -> torch.Tensor:
        x = self.features[self.split :](l_hat)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)

    def top_layer(self) -> nn.Linear:
        return self.classifier[-1]

    @classmethod
    def shape_options(cls, state: dict) -> dict:
        """The fc6/fc7 width of an AlexNet state dict (``fc_width``)."""
        return {"fc_width": int(state["classifier.1.weight"].shape[0])}

