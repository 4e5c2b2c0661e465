"""Hallucinated saliency on any timm CNN (GitHub issue 28): a forward hook puts Eq. 2 at one of
the model's feature_info stages. Random-init models only (no download)."""

import pytest
import torch

from halsal.models.timm_net import HalSalTimm, resolve_fusion

MODELS = ["resnet18", "convnext_atto", "mobilenetv3_small_100", "regnetx_002"]


def _net(name, **kw):
    torch.manual_seed(0)
    return HalSalTimm(name, 5, **kw).eval()


@pytest.mark.parametrize("name", MODELS)
def test_a_zero_map_gives_exactly_the_plain_timm_models_logits(name):
    net = _net(name, saliency="external")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = net.trunk(x)  # the trunk on its own: the hook passes the stage's output through
        zero = net(x, saliency=torch.zeros(2, 1, 64, 64))
        one = net(x, saliency=torch.ones(2, 1, 64, 64))
    assert torch.equal(zero, plain) and not torch.allclose(one, plain)


@pytest.mark.parametrize("name", MODELS)
def test_every_feature_info_stage_is_a_fusion_point(name):
    net = _net(name)
    x = torch.randn(2, 3, 64, 64)
    for stage, stride in net.fusion_points.items():
        fused = _net(name, fusion=stage)
        logits, s = fused(x, return_saliency=True)
        l = fused.rgb_branch(x)
        assert logits.shape == (2, 5) and s.shape == (2, 1, *l.shape[-2:]), stage
        assert l.shape[-1] == -(-64 // stride) or l.shape[-1] == 64 // stride, (stage, stride, l.shape)


def test_a_bad_fusion_point_names_the_valid_ones_and_strides_pick_the_nearest():
    net = _net("resnet18")
    with pytest.raises(ValueError, match=r"'layer9' is not a fusion point.*act1 \(stride 2\), layer1 \(stride 4\), "
                                         r"layer2 \(stride 8\), layer3 \(stride 16\), layer4 \(stride 32\)"):
        resolve_fusion(net.trunk.feature_info, "layer9")
    assert net.fusion == "layer2"  # the default, stride8
    assert resolve_fusion(net.trunk.feature_info, "stride12") in {"layer2", "layer3"}
    assert resolve_fusion(net.trunk.feature_info, "stride100") == "layer4"


@pytest.mark.parametrize("name, stages", [("resnet18", ["layer1", "layer3"]), ("convnext_atto", ["stages.0", "stages.2"])])
def test_eq3_the_rgb_gradient_is_the_modulated_gradient_times_s_plus_one(name, stages):
    for stage in stages:
        net = _net(name, fusion=stage)
        x = torch.randn(2, 3, 64, 64)
        l = net.rgb_branch(x).detach().requires_grad_(True)
        s = net.saliency_map(x, tuple(l.shape[-2:])).detach()
        l_hat = (l * (s + 1)).detach().requires_grad_(True)
        net.joint_branch(l_hat, x).sum().backward()
        l_hat2 = l * (s + 1)
        net.joint_branch(l_hat2, x).sum().backward()
        torch.testing.assert_close(l.grad, l_hat.grad * (s + 1))  # Eq. 3
        # and the forward pass is rgb_branch -> modulate -> joint_branch
        torch.testing.assert_close(net(x), net.joint_branch(l_hat2.detach(), x))


def test_step1_trains_only_the_saliency_branch():
    net = _net("regnetx_002")
    net.train()
    for p in net.rgb_and_joint_parameters():
        p.requires_grad_(False)
    trunk = {k: v.clone() for k, v in net.trunk.state_dict().items() if v.is_floating_point()}
    sal = {k: v.clone() for k, v in net.saliency_branch.state_dict().items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    after = net.trunk.state_dict()
    assert all(torch.equal(after[k], v) for k, v in trunk.items() if "running" not in k)
    assert any(not torch.equal(net.saliency_branch.state_dict()[k], v) for k, v in sal.items())


def test_efficientnet_lite0_through_the_generic_path_gives_the_same_logits_bit_for_bit():
    from halsal.models import build_model

    torch.manual_seed(0)
    ours = build_model("efficientnet_lite0", 7, fusion="stage2").eval()
    generic = HalSalTimm("tf_efficientnet_lite0", 7, fusion="blocks.2").eval()
    state = ours.state_dict()
    generic.load_state_dict({(k if k.startswith("saliency_branch.") else f"trunk.{k}"): v for k, v in state.items()})
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(ours(x), generic(x))
