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


def test_timm_weights_offline_name_the_cache_and_a_local_file_loads_by_key(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from halsal.errors import HalsalError
    from halsal.models import build_model, state_classes
    from halsal.models.weights import imagenet_state_dict, load_backbone, load_weights_file, timm_keys

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HalsalError, match=r"timm's pretrained weights for resnet18 .*huggingface.*model.weights"):
        imagenet_state_dict("timm/resnet18")
    import timm

    plain = timm.create_model("resnet18", num_classes=7)  # a file in timm's own keys
    save_file(plain.state_dict(), str(tmp_path / "r18.safetensors"))
    state = timm_keys("timm/resnet18", load_weights_file(tmp_path / "r18.safetensors"))
    assert state_classes("timm/resnet18", state) == 7
    net = build_model("timm/resnet18", 7, saliency="none")
    load_backbone(net, state)
    assert torch.equal(net.trunk.conv1.weight, plain.conv1.weight)
    with pytest.raises(HalsalError, match="missing .*trunk.fc"):
        load_backbone(net, {k: v for k, v in state.items() if not k.startswith("trunk.fc.")})


@pytest.mark.slow
def test_a_workflow_on_convnext_atto_reaches_the_report_and_keeps_its_networks(tmp_path, snakemake):
    """Synthetic data, scratch weights, Baseline-RGB and Approach B at k = 1, save_model: best."""
    import json

    import pandas as pd
    import yaml

    from halsal.models.saved import load_run_model
    from halsal.train.inputs import load_split
    from halsal.train.loop import predict
    from tests.conftest import REPO

    config = yaml.safe_load((REPO / "config/test.yaml").read_text())
    config.update(archs=["timm/convnext_atto"], methods=["baseline", "approach_b"], ks=[1])
    config["train"]["save_model"] = "best"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake("--cores", "2", "--configfile", str(tmp_path / "config.yaml"), cwd=tmp_path, timeout=1200)
    runs = sorted(tmp_path.glob("results/runs/timm/convnext_atto/synth_tiny/*/d4-stride8-eq2/k1/seed0"))
    assert [r.parent.parent.parent.name for r in runs] == ["approach_b", "baseline"]
    for run in runs:
        model, info = load_run_model(run)
        data = load_split(tmp_path / "results/prepared/synth_tiny", tmp_path / "results/splits/synth_tiny/seed0.tsv", "1",
                          torch.device("cpu"), info["input_size"], False, False,
                          normalisation=tuple(tuple(v) for v in info["normalisation"]))
        kept = pd.read_csv(run / "predictions.tsv", sep="\t")
        assert (predict(model, data.test).numpy() == kept["pred"].to_numpy()).all()
        assert json.loads((run / "metrics.json").read_text())["arch"] == "timm/convnext_atto"
    md = (tmp_path / "results/report/results.md").read_text()
    assert "convnext_atto (timm), a timm model; not the paper's AlexNet or ResNet-152" in md
    snakemake("--configfile", str(tmp_path / "config.yaml"), "--report", str(tmp_path / "report.html"), cwd=tmp_path)
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert "convnext_atto (timm) (the map modulates its features at stride8; not in the paper)" in html
