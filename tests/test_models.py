"""The model follows Sec. 3 of the paper: shapes, Eq. 2/3, and torchvision compatibility."""

import pytest
import torch
from torchvision.models import alexnet as tv_alexnet

from halsal.models import build_model, variant_options
from halsal.models.saliency import modulate
from halsal.models.weights import backbone_state_dict, load_backbone
from tests.conftest import assert_eq3_gradient


def _zero_saliency(model):
    torch.nn.init.zeros_(model.saliency_branch.score.weight)
    torch.nn.init.zeros_(model.saliency_branch.score.bias)


@pytest.mark.parametrize("size", [227, 112])
def test_zero_saliency_equals_torchvision_alexnet(size):
    torch.manual_seed(0)
    ref = tv_alexnet(weights=None, num_classes=7).eval()
    model = build_model("alexnet", 7).eval()
    load_backbone(model, ref.state_dict())
    _zero_saliency(model)
    x = torch.randn(2, 3, size, size)
    logits, s = model(x, return_saliency=True)
    assert torch.count_nonzero(s) == 0
    torch.testing.assert_close(logits, ref(x), rtol=1e-5, atol=1e-5)


def test_state_dict_round_trips_into_torchvision_by_key():
    model = build_model("alexnet", 5)
    ref = tv_alexnet(weights=None, num_classes=5)
    ref.load_state_dict(backbone_state_dict(model), strict=True)  # every key matches
    assert set(backbone_state_dict(model)) == set(ref.state_dict())


def test_paper_shapes_for_227_input():
    model = build_model("alexnet", 102).eval()
    x = torch.randn(1, 3, 227, 227)
    l = model.rgb_branch(x)
    assert l.shape == (1, 192, 27, 27)  # conv2 output before pool2
    feats = model.saliency_branch.features(x)
    assert feats.shape == (1, 384, 13, 13)  # Sec. 3.2: 384 x 13 x 13
    s = model.saliency_branch(x, (27, 27))
    assert s.shape == (1, 1, 27, 27) and (s >= 0).all()  # ReLU, upsampled to 27 x 27
    assert model(x).shape == (1, 102)


def test_smaller_input_shapes_are_derived():
    model = build_model("alexnet", 10).eval()
    x = torch.randn(3, 3, 112, 112)
    logits, s = model(x, return_saliency=True)
    assert logits.shape == (3, 10)
    assert s.shape[-2:] == model.rgb_branch(x).shape[-2:] == (13, 13)


def test_eq3_gradient_into_rgb_branch_is_scaled_by_s_plus_1():
    torch.manual_seed(1)
    model = build_model("alexnet", 4).eval()
    # Make the map clearly non-zero so the check is not trivial.
    torch.nn.init.constant_(model.saliency_branch.score.bias, 0.5)
    assert_eq3_gradient(model, torch.randn(2, 3, 112, 112))


def test_eq1_and_eq2():
    l = torch.full((1, 2, 3, 3), 2.0)
    s = torch.full((1, 1, 3, 3), 0.5)
    assert torch.allclose(modulate(l, s, "eq1"), torch.full_like(l, 1.0))
    assert torch.allclose(modulate(l, s, "eq2"), torch.full_like(l, 3.0))
    with pytest.raises(ValueError):
        modulate(l, s, "eq3")


def test_baseline_has_no_saliency_branch_and_equals_torchvision():
    ref = tv_alexnet(weights=None, num_classes=3).eval()
    model = build_model("alexnet", 3, saliency="none").eval()
    assert model.saliency_branch is None
    load_backbone(model, ref.state_dict())
    x = torch.randn(1, 3, 112, 112)
    torch.testing.assert_close(model(x), ref(x))


@pytest.mark.parametrize("fusion,hw", [("pool1", 56), ("pool2", 27), ("conv3", 13), ("conv4", 13), ("pool5", 13)])
def test_fusion_points_map_resized_to_fused_features(fusion, hw):
    model = build_model("alexnet", 5, fusion=fusion).eval()
    x = torch.randn(1, 3, 227, 227)
    logits, s = model(x, return_saliency=True)
    assert s.shape[-2:] == (hw, hw)
    assert logits.shape == (1, 5)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_saliency_depths(depth):
    model = build_model("alexnet", 5, saliency_depth=depth).eval()
    convs = [m for m in model.saliency_branch.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == depth
    assert model(torch.randn(1, 3, 112, 112)).shape == (1, 5)


def test_variant_options():
    assert variant_options("alexnet", "d3-conv3-eq1") == {"saliency_depth": 3, "fusion": "conv3", "modulation": "eq1"}
    with pytest.raises(ValueError):
        variant_options("alexnet", "nonsense")


def test_smic_alexnet_takes_the_map_as_a_fourth_channel():
    torch.manual_seed(0)
    model = build_model("alexnet", 4, saliency="external").eval()
    assert model.saliency_branch is None and model.has_saliency
    x, m = torch.randn(2, 3, 112, 112), torch.rand(2, 1, 112, 112)
    logits, s = model(torch.cat([x, m], 1), return_saliency=True)
    torch.testing.assert_close(logits, model(x, saliency=m))
    assert s.shape == (2, 1, 13, 13) and s.min() >= 0
    with pytest.raises(ValueError, match="explicit saliency map"):
        model(x)


def test_default_fusion_per_arch():
    assert build_model("alexnet", 3).fusion == "pool2"
    with pytest.raises(ValueError, match="unknown AlexNet fusion point"):
        build_model("alexnet", 3, fusion="layer2.0")
