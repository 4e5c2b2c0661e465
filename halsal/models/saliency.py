"""The saliency branch and the modulation layer (Sec. 3.2-3.3 of the paper).

The saliency branch "hallucinates" a one-channel saliency map from the RGB image: AlexNet-
style convolutions (four in the paper), a 1x1 convolution to one channel, a ReLU, and a
bilinear upsampling to the spatial size of the RGB feature map it modulates (13x13 -> 27x27
for a 227x227 input fused before pool2).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from halsal import spec

# AlexNet's five convolutions as in Krizhevsky et al. (2012): (out_channels, kernel, stride,
# padding, followed by max-pool). The paper's branch uses the first four, which end at 384
# channels x 13x13 for a 227x227 input (Sec. 3.2); torchvision's AlexNet variant narrows
# conv4 to 256, so the original widths are used here to match the paper's 384.
ALEXNET_CONVS: tuple[tuple[int, int, int, int, bool], ...] = (
    (96, 11, 4, 2, True),
    (256, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
)


class SaliencyBranch(nn.Module):
    """``depth`` AlexNet-style conv layers -> 1x1 conv -> ReLU -> bilinear upsampling.

    ``forward(x, size)`` returns the hallucinated map ``s`` of shape ``(N, 1, *size)``.
    """

    def __init__(self, depth: int = spec.PAPER_DEPTH, convs: Sequence[tuple[int, int, int, int, bool]] = ALEXNET_CONVS):
        super().__init__()
        if not 1 <= depth <= len(convs):
            raise ValueError(f"saliency depth must be 1..{len(convs)}, got {depth}")
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch, kernel, stride, padding, pool in convs[:depth]:
            layers += [nn.Conv2d(in_ch, out_ch, kernel, stride, padding), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            in_ch = out_ch
        self.depth = depth
        self.features = nn.Sequential(*layers)
        # One saliency score per "pixel" of the last feature map (Sec. 3.2).
        self.score = nn.Conv2d(in_ch, 1, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier initialisation, as the paper does before Step 1 (Sec. 3.4)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        s = F.relu(self.score(self.features(x)))
        return F.interpolate(s, size=size, mode="bilinear", align_corners=False)


class TwoBranchForward:
    """Fig. 1's forward pass and set-up, shared by the AlexNet, ResNet-152 and EfficientNet-Lite0
    networks.

    A subclass provides ``rgb_branch``, ``joint_branch`` and ``top_layer``, and its metadata as
    class attributes: ``ARCH`` (its name in :data:`halsal.spec.ARCHS`), ``FUSION_POINTS`` (fusion
    point -> index of the last unit of the RGB branch; the names are :data:`halsal.spec.FUSION_POINTS`'),
    ``FUSION_CHOICES`` (the valid choices, as an error message names them) and ``TOP_KEY`` (the top
    layer's weight in the state dict: its rows are the classes). Its ``__init__`` takes the
    two-branch options first (:meth:`two_branch_options`: saliency depth, fusion point,
    modulation, saliency kind; the paper's by default), builds its layers, then calls
    :meth:`set_up_saliency` with them.
    """

    ARCH: str
    FUSION_POINTS: dict[str, int]
    FUSION_CHOICES: str
    TOP_KEY: str

    @classmethod
    def two_branch_options(cls, saliency_depth: int = spec.PAPER_DEPTH, fusion: str | None = None,
                           modulation: str = spec.PAPER_MODULATION, saliency: str = "hallucinated") -> dict:
        """The options every two-branch network takes, the fusion point checked (default: the
        paper's point for this network, ``spec.DEFAULT_FUSION``)."""
        fusion = fusion or spec.DEFAULT_FUSION[cls.ARCH]
        cls.check_fusion(fusion)
        return {"fusion": fusion, "modulation": modulation, "saliency": saliency, "saliency_depth": saliency_depth}

    @classmethod
    def check_fusion(cls, fusion: str) -> None:
        """A ValueError naming the choices when ``fusion`` is not one of this network's fusion points."""
        if fusion not in cls.FUSION_POINTS:
            raise ValueError(f"unknown {spec.ARCH_LABELS[cls.ARCH]} fusion point {fusion!r}; {cls.FUSION_CHOICES}")

    @classmethod
    def shape_options(cls, state: dict) -> dict:
        """Constructor options that a state dict implies (none but AlexNet's fc6/fc7 width)."""
        return {}

    def set_up_saliency(self, fusion: str, modulation: str, saliency: str, saliency_depth: int) -> None:
        """The fusion point (its name and the unit index where the network splits: units
        ``[0, split)`` form the RGB branch), Eq. 1/2, and the saliency branch: the paper's (Xavier
        init) for ``hallucinated`` with depth > 0, none for Baseline-RGB (depth 0) or an explicit
        map (``external``, SMIC). Then the top layer's Xavier init (Sec. 4.1: it is trained from
        scratch)."""
        self.fusion = fusion
        self.split = self.FUSION_POINTS[fusion] + 1
        self.modulation = modulation
        self.saliency = saliency
        self.saliency_branch = (
            SaliencyBranch(saliency_depth) if saliency == "hallucinated" and saliency_depth > 0 else None
        )
        self.has_saliency = saliency == "external" or self.saliency_branch is not None
        self.init_top_layer()

    def init_top_layer(self) -> None:
        """Xavier-initialise the top classification layer (fc8 for AlexNet), as in Sec. 4.1."""
        top = self.top_layer()
        nn.init.xavier_uniform_(top.weight)
        nn.init.zeros_(top.bias)

    def run_units(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """``x`` through units ``[start, stop)`` of a network that is a chain of units
        (``self._units()``: ResNet-152's stem and blocks, EfficientNet-Lite0's stem and stages)."""
        for unit in self._units()[start:stop]:
            x = unit(x)
        return x

    def saliency_map(self, x: torch.Tensor, size: tuple[int, int], external: torch.Tensor | None = None):
        """The map ``s`` at the fusion point's spatial ``size``."""
        if self.saliency == "external":
            if external is None:
                raise ValueError("this model takes an explicit saliency map: pass saliency=...")
            return F.interpolate(external, size=size, mode="bilinear", align_corners=False)
        return self.saliency_branch(x, size)

    def forward(self, x: torch.Tensor, saliency: torch.Tensor | None = None, return_saliency: bool = False):
        l = self.rgb_branch(x)
        s = None
        if self.has_saliency:
            s = self.saliency_map(x, tuple(l.shape[-2:]), saliency)
            l = modulate(l, s, self.modulation)
        logits = self.joint_branch(l)
        return (logits, s) if return_saliency else logits

    # Parameter groups used by the training steps (Sec. 3.4).
    def rgb_and_joint_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("saliency_branch.")]


def modulate(l: torch.Tensor, s: torch.Tensor, equation: str = spec.PAPER_MODULATION) -> torch.Tensor:
    """Saliency modulation of the RGB features ``l`` by the map ``s`` (broadcast over channels).

    eq1 (Eq. 1): ``l * s``. eq2 (Eq. 2, the paper's choice): ``l * (s + 1)``, a skip
    connection that keeps the RGB features when the map is zero. Autograd then gives the
    paper's Eq. 3 backward pass, ``dL/dl = dL/dl_hat * (s + 1)``.
    """
    if equation == "eq2":
        return l * (s + 1)
    if equation == "eq1":
        return l * s
    raise ValueError(f"modulation must be 'eq1' or 'eq2', got {equation!r}")
