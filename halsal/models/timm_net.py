"""Hallucinated saliency on any timm CNN (GitHub issue 28; not in the paper, whose Sec. 5 says the
method "could be extended to other convolutional neural network architectures").

timm describes every CNN's stages: ``model.feature_info`` gives each stage's module name, stride
("reduction") and channels, e.g. ``resnet50``: ``act1`` 2, ``layer1`` 4, ``layer2`` 8, ``layer3``
16, ``layer4`` 32. :class:`HalSalTimm` puts the paper's Eq. 2 at one of them with a forward hook:
the module's output ``l`` is replaced by ``l * (s + 1)``, ``s`` being the saliency branch's map
resized to that stage. No per-model code.

How the paper's names map onto a hooked network:

- ``rgb_branch(x)``: the timm model up to and including the fusion stage (it runs the trunk and
  stops at the hook), returning ``l``;
- ``saliency_branch``: the paper's branch (:class:`halsal.models.saliency.SaliencyBranch`),
  unchanged, on the same image;
- ``modulate``: the hook, ``l * (s + 1)`` (Eq. 2) or ``l * s`` (Eq. 1);
- ``joint_branch(l_hat, x)``: the rest of the timm model from the fusion stage on, fed ``l_hat``
  in place of the stage's output. A hooked trunk has no separate graph for it, so it runs the
  stages before the fusion point again and discards their output: a view for inspection and
  tests, not the training path (``forward`` runs the trunk once).

Fusion points are the ``feature_info`` stages, by module name (``layer2``, ``stages.1``) or by
stride (``stride8``: the stage whose stride is closest to 8, the earliest on a tie). The default,
:data:`DEFAULT_FUSION`, is ``stride8``: AlexNet's pool2 input, the paper's fusion point, is at
stride 8 (27 x 27 of 227). An explicit map (SMIC, ``saliency="external"``) goes through the same
hook. The classifier (``get_classifier()``) is Xavier-initialised as the paper's fc8 (Sec. 4.1);
batch norm is handled by the training steps as for every network (:func:`halsal.models.frozen_bn_eval`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from halsal import spec
from halsal.models.saliency import SaliencyBranch, TwoBranchForward, modulate

PREFIX = spec.TIMM_PREFIX  # config name of a timm architecture: "timm/<timm model name>"
DEFAULT_FUSION = spec.TIMM_DEFAULT_FUSION


def pretrained_cfg(model_name: str) -> dict:
    """timm's pretrained configuration of ``model_name`` (input normalisation, classifier name),
    read without building the model; an error naming the model where timm has none."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        from halsal.errors import HalsalError

        raise HalsalError(f"timm has no model {model_name!r}: see timm.list_models() for the names")
    return cfg.to_dict()


def classifier_key(model_name: str) -> str:
    """The state-dict key, in :class:`HalSalTimm`, of the model's classifier weight."""
    return f"trunk.{pretrained_cfg(model_name)['classifier']}.weight"


def fusion_stages(feature_info) -> dict[str, int]:
    """``{module name: stride}`` of a timm model's ``feature_info`` stages, in network order."""
    return {info["module"]: int(info["reduction"]) for info in feature_info}


def resolve_fusion(feature_info, fusion: str) -> str:
    """The module name of fusion point ``fusion`` (a stage's name, or ``stride<N>``); a
    ValueError listing the valid choices otherwise."""
    stages = fusion_stages(feature_info)
    if fusion in stages:
        return fusion
    if fusion.startswith("stride") and fusion[6:].isdigit() and int(fusion[6:]) > 0:
        want = math.log2(int(fusion[6:]))
        return min(stages, key=lambda name: abs(math.log2(stages[name]) - want))
    choices = ", ".join(f"{name} (stride {stride})" for name, stride in stages.items())
    raise ValueError(f"{fusion!r} is not a fusion point of this timm model; choose one of {choices}, "
                     "or stride<N> for the stage whose stride is closest to N")


class _Stop(Exception):
    """Raised by the hook to end the trunk's forward pass at the fusion stage (rgb_branch)."""

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.features = features


class HalSalTimm(nn.Module):
    """A two-branch network on timm model ``model_name`` (randomly initialised: weights come by
    key). ``saliency_depth=0`` gives Baseline-RGB: the plain timm model."""

    def __init__(self, model_name: str, num_classes: int = 1000, *, saliency_depth: int = spec.PAPER_DEPTH,
                 fusion: str | None = None, modulation: str = spec.PAPER_MODULATION, saliency: str = "hallucinated",
                 **timm_options):
        super().__init__()
        import timm

        if modulation not in spec.MODULATIONS:
            raise ValueError(f"modulation must be one of {spec.MODULATIONS}, got {modulation!r}")
        self.model_name = model_name
        self.trunk = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **timm_options)
        self.fusion = resolve_fusion(self.trunk.feature_info, fusion or DEFAULT_FUSION)
        self.modulation, self.saliency = modulation, saliency
        self.saliency_branch = SaliencyBranch(saliency_depth) if saliency == "hallucinated" and saliency_depth > 0 else None
        self.has_saliency = saliency == "external" or self.saliency_branch is not None
        self._call: dict = {}  # the current call's image, explicit map, mode and map (read by the hook)
        self.trunk.get_submodule(self.fusion).register_forward_hook(self._at_fusion)
        self.init_top_layer()

    @property
    def fusion_points(self) -> dict[str, int]:
        """This network's fusion points and their strides."""
        return fusion_stages(self.trunk.feature_info)

    def top_layer(self) -> nn.Linear:
        return self.trunk.get_classifier()

    # The map s at the fusion stage's size (the hallucinated one, or SMIC's explicit map), and the
    # top layer's Xavier init: the same as every two-branch network's.
    saliency_map = TwoBranchForward.saliency_map
    init_top_layer = TwoBranchForward.init_top_layer

    def _at_fusion(self, module, inputs, l: torch.Tensor):
        call = self._call
        if call.get("mode") == "rgb":
            raise _Stop(l)
        if call.get("mode") == "replace":
            return call["l_hat"]
        if not self.has_saliency or "x" not in call:
            return None  # Baseline-RGB, or the trunk called on its own: the plain timm model
        s = self.saliency_map(call["x"], tuple(l.shape[-2:]), call.get("external"))
        call["s"] = s
        return modulate(l, s, self.modulation)

    def _run(self, x, **call):
        self._call = {"x": x, **call}
        try:
            return self.trunk(x)
        finally:
            self._call = {}

    # The three parts of Fig. 1, as views of the hooked trunk (see the module docstring).
    def rgb_branch(self, x: torch.Tensor) -> torch.Tensor:
        try:
            self._run(x, mode="rgb")
        except _Stop as stop:
            return stop.features
        raise RuntimeError(f"the fusion stage {self.fusion} did not run")

    def joint_branch(self, l_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, mode="replace", l_hat=l_hat)

    def forward(self, x: torch.Tensor, saliency: torch.Tensor | None = None, return_saliency: bool = False):
        if self.saliency == "external" and saliency is None and x.shape[1] == 4:  # SMIC: the map as a 4th channel
            x, saliency = x[:, :3], x[:, 3:]
        self._call = {"x": x, "external": saliency}
        try:
            logits = self.trunk(x)
            s = self._call.get("s")
        finally:
            self._call = {}
        return (logits, s) if return_saliency else logits

    def rgb_and_joint_parameters(self):
        """Everything but the saliency branch: what Step 1 freezes (Sec. 3.4)."""
        return list(self.trunk.parameters())
