"""Models: the two-branch network of the paper, per architecture, and its weights.

``build_model`` is the registry: it maps an architecture name and the ablation values
(saliency depth, fusion point, modulation) to a network.
"""

from __future__ import annotations

from halsal import spec
from halsal.models.alexnet import HalSalAlexNet
from halsal.models.efficientnet import HalSalEfficientNet
from halsal.models.resnet import HalSalResNet
from halsal.models.saliency import SaliencyBranch, modulate
from halsal.models.smic import MapInput


class SMICAlexNet(MapInput, HalSalAlexNet):
    """AlexNet taking an explicit map as the 4th input channel (SMIC)."""


class SMICResNet(MapInput, HalSalResNet):
    """ResNet-152 taking an explicit map as the 4th input channel (SMIC)."""


class SMICEfficientNet(MapInput, HalSalEfficientNet):
    """EfficientNet-Lite0 taking an explicit map as the 4th input channel (SMIC)."""


# The registry: architecture name (halsal.spec.ARCHS) -> network class, with a hallucinated or no
# saliency branch, and with an explicit map (SMIC). Each class owns its metadata: its fusion points
# (FUSION_POINTS: name -> where it splits), its top layer (TOP_KEY, top_layer()).
MODEL_CLASSES = {cls.ARCH: cls for cls in (HalSalAlexNet, HalSalResNet, HalSalEfficientNet)}
SMIC_CLASSES = {cls.ARCH: cls for cls in (SMICAlexNet, SMICResNet, SMICEfficientNet)}
if tuple(MODEL_CLASSES) != spec.ARCHS or tuple(SMIC_CLASSES) != spec.ARCHS:
    raise RuntimeError(f"the model registry {tuple(MODEL_CLASSES)} is not halsal.spec.ARCHS {spec.ARCHS}")
# The input normalisation belongs to the weights: halsal.models.weights.normalisation(arch).


def build_model(
    arch: str,
    num_classes: int,
    *,
    saliency: str = "hallucinated",
    saliency_depth: int = spec.PAPER_DEPTH,
    fusion: str | None = None,
    modulation: str = spec.PAPER_MODULATION,
    fc_width: int = spec.ALEXNET_FC_WIDTH,
):
    """A network for ``arch``. ``saliency`` is 'hallucinated', 'external' (SMIC) or 'none'.

    ``fusion`` defaults to the paper's point for ``arch`` (``spec.DEFAULT_FUSION``); ``fc_width``
    (fc6/fc7) applies to AlexNet only; ResNet-152 and EfficientNet-Lite0 have a single fc layer.
    """
    if not spec.is_arch(arch):
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(MODEL_CLASSES)}, "
                         f"or {spec.TIMM_PREFIX}<timm model name>")
    if saliency not in ("hallucinated", "external", "none"):
        raise ValueError(f"saliency must be 'hallucinated', 'external' or 'none', got {saliency!r}")
    depth = 0 if saliency == "none" else saliency_depth
    if spec.is_timm(arch):  # any timm CNN, hooked (halsal.models.timm_net; not in the paper)
        from halsal.models.timm_net import HalSalTimm

        return HalSalTimm(arch[len(spec.TIMM_PREFIX):], num_classes, saliency_depth=depth,
                          fusion=fusion or spec.default_fusion(arch), modulation=modulation,
                          saliency="external" if saliency == "external" else "hallucinated")
    cls = SMIC_CLASSES[arch] if saliency == "external" else MODEL_CLASSES[arch]
    extra = {"fc_width": fc_width} if arch == "alexnet" else {}
    return cls(
        num_classes=num_classes,
        saliency_depth=depth,
        fusion=fusion or spec.DEFAULT_FUSION[arch],
        modulation=modulation,
        saliency="external" if saliency == "external" else "hallucinated",
        **extra,
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
            if m.bias is not None:  # ResNet's convolutions have none (batch norm follows)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def variant_options(arch: str, variant: str) -> dict:
    """A run's ``{variant}`` (:func:`halsal.spec.parse_variant`) as the constructor's keywords,
    ``'d4-pool2-eq2'`` -> ``{'saliency_depth': 4, 'fusion': 'pool2', 'modulation': 'eq2'}``, after a
    check that the fusion point exists in ``arch``."""
    v = spec.parse_variant(variant)
    try:
        spec.check_fusion(arch, v["fusion"])
    except ValueError as exc:
        raise ValueError(f"variant {variant!r}: {exc}") from None
    return {"saliency_depth": v["depth"], "fusion": v["fusion"], "modulation": v["modulation"]}


def top_key(arch: str) -> str:
    """The state-dict key of ``arch``'s top layer weight (its rows: the classes)."""
    if spec.is_timm(arch):
        from halsal.models.timm_net import classifier_key

        return classifier_key(arch[len(spec.TIMM_PREFIX):])
    return MODEL_CLASSES[arch].TOP_KEY


def state_classes(arch: str, state: dict) -> int:
    """The number of classes of a state dict of ``arch``: the rows of its top layer."""
    key = top_key(arch)
    if key not in state:
        from halsal.errors import HalsalError

        raise HalsalError(f"the {arch} state dict has no top layer {key!r}: is it a state dict of {arch}?")
    return int(state[key].shape[0])


def shape_options(arch: str, state: dict) -> dict:
    """Constructor options that a state dict of ``arch`` implies (AlexNet's fc6/fc7 width)."""
    return {} if spec.is_timm(arch) else MODEL_CLASSES[arch].shape_options(state)


def frozen_bn_eval(model) -> None:
    """``model.train()``, except batch-norm layers whose parameters are all frozen, which stay in
    eval mode (running statistics used, not updated): Step 1 freezes the RGB and joint branches,
    and a frozen ResNet must not drift its statistics towards the source batches. Dropout stays
    active (it regularises what is trained). AlexNet has no batch norm: this is model.train()."""
    from torch import nn

    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


__all__ = ["build_model", "init_from_scratch", "variant_options", "state_classes", "shape_options", "frozen_bn_eval",
           "HalSalAlexNet", "HalSalResNet", "HalSalEfficientNet", "SMICAlexNet", "SMICResNet", "SMICEfficientNet",
           "SaliencyBranch", "modulate", "MODEL_CLASSES", "SMIC_CLASSES"]
