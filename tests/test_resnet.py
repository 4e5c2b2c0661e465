"""ResNet-152 with a hallucinated saliency branch: torchvision equivalence, Eq. 3, fusion
points, batch norm in Step 1, and the weights a user gives (imagenet, a path, scratch)."""

import argparse
import urllib.error

import pytest
import torch
from torchvision.models import alexnet as tv_alexnet
from torchvision.models import resnet152 as tv_resnet152

from halsal.errors import HalsalError
from halsal.models import HalSalResNet, build_model, variant_options, frozen_bn_eval
from halsal import spec
from halsal.models.resnet import UNITS
from halsal.models.weights import WEIGHT_ENUMS, backbone_state_dict, imagenet_state_dict, load_backbone
from halsal.train.steps import backbone
from tests.conftest import assert_eq3_gradient


@pytest.fixture(scope="module")
def ref():
    torch.manual_seed(0)
    return tv_resnet152(weights=None, num_classes=5).eval()


def _zero_saliency(model):
    torch.nn.init.zeros_(model.saliency_branch.score.weight)
    torch.nn.init.zeros_(model.saliency_branch.score.bias)


def test_zero_saliency_equals_torchvision_resnet152(ref):
    model = build_model("resnet152", 5).eval()
    assert model.fusion == spec.DEFAULT_FUSION["resnet152"] == "layer2.0"
    load_backbone(model, ref.state_dict())
    _zero_saliency(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, s = model(x, return_saliency=True)
        expected = ref(x)
    assert torch.count_nonzero(s) == 0
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_state_dict_keys_are_torchvision_resnet152s(ref):
    model = build_model("resnet152", 5)
    assert set(backbone_state_dict(model)) == set(ref.state_dict())
    tv_resnet152(weights=None, num_classes=5).load_state_dict(backbone_state_dict(model), strict=True)
    # Step 2 on a new dataset: every key but the top layer loads, fc stays Xavier-initialised.
    other = build_model("resnet152", 3)
    fc = other.fc.weight.detach().clone()
    load_backbone(other, ref.state_dict(), skip_top=True)
    torch.testing.assert_close(other.layer4[2].conv3.weight, ref.layer4[2].conv3.weight)
    torch.testing.assert_close(other.fc.weight, fc)


def test_baseline_resnet_has_no_saliency_branch(ref):
    model = build_model("resnet152", 5, saliency="none").eval()
    assert model.saliency_branch is None
    load_backbone(model, ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


@pytest.mark.parametrize("fusion", ["layer2.0", "layer4"])
def test_eq3_gradient_at_the_fusion_point(fusion):
    torch.manual_seed(1)
    model = build_model("resnet152", 4, fusion=fusion).eval()
    torch.nn.init.constant_(model.saliency_branch.score.bias, 0.5)  # a clearly non-zero map
    assert_eq3_gradient(model, torch.randn(2, 3, 64, 64))


def test_fusion_points_and_map_sizes():
    # 64 px input: stem 16x16, layer1 16x16, layer2 8x8, layer3 4x4, layer4 2x2.
    assert UNITS[0] == "stem" and UNITS[4] == "layer2.0" and len(UNITS) == 1 + 50
    assert HalSalResNet.FUSION_POINTS["layer1"] == HalSalResNet.FUSION_POINTS["layer1.2"]
    model = build_model("resnet152", 3, fusion="stem").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for fusion, (ch, hw) in {"stem": (64, 16), "layer1": (256, 16), "layer2.0": (512, 8), "layer3": (1024, 4),
                                 "layer4": (2048, 2), "layer3.7": (1024, 4)}.items():
            model.fusion, model.split = fusion, HalSalResNet.FUSION_POINTS[fusion] + 1
            l = model.rgb_branch(x)
            logits, s = model(x, return_saliency=True)
            assert l.shape[1:] == (ch, hw, hw) and s.shape[-2:] == (hw, hw), fusion
            assert logits.shape == (1, 3)


def test_unknown_fusion_points_are_named():
    with pytest.raises(ValueError, match="pool2"):
        build_model("resnet152", 3, fusion="pool2")
    with pytest.raises(ValueError, match="layer5"):
        variant_options("resnet152", "d4-layer5-eq2")
    with pytest.raises(ValueError, match="layer2.0"):
        variant_options("alexnet", "d4-layer2.0-eq2")
    assert variant_options("resnet152", "d3-layer2.0-eq1") == {"saliency_depth": 3, "fusion": "layer2.0", "modulation": "eq1"}


def test_external_map_as_fourth_channel(ref):
    model = build_model("resnet152", 5, saliency="external").eval()
    load_backbone(model, ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    m = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        a, s = model(torch.cat([x, m], 1), return_saliency=True)
        b = model(x, saliency=m)
        c = ref(x)
    torch.testing.assert_close(a, b)
    assert s.shape == (2, 1, 8, 8) and not torch.allclose(a, c)  # the map modulates
    with torch.no_grad():
        torch.testing.assert_close(model(x, saliency=torch.zeros_like(m)), c, rtol=1e-5, atol=1e-5)  # Eq. 2, s = 0


def test_step1_keeps_frozen_batchnorm_in_eval_mode():
    model = build_model("resnet152", 3)
    for p in model.rgb_and_joint_parameters():
        p.requires_grad_(False)
    frozen_bn_eval(model)
    assert model.training and model.saliency_branch.training
    assert not model.bn1.training and not model.layer3[5].bn2.training
    before = model.bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    torch.testing.assert_close(model.bn1.running_mean, before)  # statistics not updated
    assert model.saliency_branch.score.weight.grad is not None and model.fc.weight.grad is None
    # Nothing frozen (Step 2): plain train mode.
    full = build_model("resnet152", 3)
    frozen_bn_eval(full)
    assert all(m.training for m in full.modules())


def test_weights_from_a_local_file_for_both_archs(tmp_path):
    for arch, net in (("alexnet", tv_alexnet(weights=None, num_classes=7)),
                      ("resnet152", tv_resnet152(weights=None, num_classes=7))):
        path = tmp_path / f"{arch}.pth"
        torch.save(net.state_dict(), path)
        info = backbone(arch, str(path), tmp_path / f"{arch}_backbone.pt")
        assert info["num_classes"] == 7 and info["source"] == f"local file {path}"
        saved = torch.load(tmp_path / f"{arch}_backbone.pt", weights_only=True)
        assert saved.keys() == net.state_dict().keys()


def test_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": argparse.Namespace(cmd="rm -rf")}, path)  # arbitrary object: needs unpickling
    with pytest.raises(HalsalError, match="evil.pt"):
        backbone("resnet152", str(path), tmp_path / "out.pt")


@pytest.mark.parametrize("arch", ["alexnet", "resnet152"])
def test_offline_imagenet_error_names_the_file_the_url_and_where(arch, monkeypatch):
    enum = WEIGHT_ENUMS[arch]

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(enum), "get_state_dict", offline)
    fname = enum.url.rsplit("/", 1)[-1]
    with pytest.raises(HalsalError) as err:
        imagenet_state_dict(arch)
    msg = str(err.value)
    assert enum.url in msg and fname in msg and "checkpoints" in msg and "model.weights" in msg


def test_wrapped_and_data_parallel_checkpoints_load(tmp_path):
    from halsal.models.weights import load_weights_file

    net = tv_resnet152(weights=None, num_classes=4)
    path = tmp_path / "ddp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, path)
    state = load_weights_file(path)
    assert state.keys() == net.state_dict().keys()
    with pytest.raises(HalsalError, match="does not exist"):
        load_weights_file(tmp_path / "missing.pth")
