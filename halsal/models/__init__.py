"""Models: the two-branch network of the paper, per architecture, and its weights.

``build_model`` is the registry: it maps an architecture name and the ablation values
(saliency depth, fusion point, modulation) to a network.
"""

from __future__ import annotations

from halsal.models.alexnet import FUSION_POINTS as ALEXNET_FUSION_POINTS
from halsal.models.alexnet import HalSalAlexNet
from halsal.models.saliency import SaliencyBranch, modulate

ARCHS = {"alexnet": HalSalAlexNet}
# ImageNet normalisation (torchvision's weights' transforms) applied to every input.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def build_model(
    arch: str,
    num_classes: int,
    *,
    saliency: str = "hallucinated",
    saliency_depth: int = 4,
    fusion: str = "pool2",
    modulation: str = "eq2",
    fc_width: int = 4096,
):
    """A network for ``arch``. ``saliency`` is 'hallucinated', 'external' (SMIC) or 'none'."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    depth = 0 if saliency == "none" else saliency_depth
    return ARCHS[arch](
        num_classes=num_classes,
        saliency_depth=depth,
        fusion=fusion,
        modulation=modulation,
        saliency="external" if saliency == "external" else "hallucinated",
        fc_width=fc_width,
    )


def init_from_scratch(model) -> None:
    """He (Kaiming) init for convolutions and N(0, 0.01) for linear layers, as torchvision
    initialises VGG: AlexNet (no batch norm) barely moves from PyTorch's default init when
    trained from scratch on a small source set (Step 0 offline). The saliency branch keeps
    its Xavier init (Sec. 3.4) and the top layer its Xavier init (Sec. 4.1)."""
    from torch import nn

    skip = set(model.saliency_branch.parameters()) if getattr(model, "saliency_branch", None) is not None else set()
    top = model.top_layer()
    for m in model.modules():
        if m is top or any(p in skip for p in m.parameters(recurse=False)):
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def parse_variant(variant: str) -> dict:
    """'d4-pool2-eq2' -> {'saliency_depth': 4, 'fusion': 'pool2', 'modulation': 'eq2'}."""
    try:
        depth, fusion, modulation = variant.split("-")
        return {"saliency_depth": int(depth[1:]), "fusion": fusion, "modulation": modulation}
    except ValueError as exc:
        raise ValueError(f"variant {variant!r} is not of the form d<depth>-<fusion>-<eq1|eq2>") from exc


__all__ = ["build_model", "init_from_scratch", "parse_variant", "HalSalAlexNet", "SaliencyBranch", "modulate", "ARCHS", "MEAN", "STD", "ALEXNET_FUSION_POINTS"]
