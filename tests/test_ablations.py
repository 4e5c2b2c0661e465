"""The whole paper as Snakemake targets: the ablation grid (Figures 2-3, Eq. 1 vs 2), the
named targets of config/paper.yaml, config errors, and a tiny end-to-end run of every method
on both architectures plus one depth and one fusion ablation value."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, assert_test_acc_is_predictions
from tests.conftest import count_jobs as job_counts, run_snakemake as snakemake

PAPER = str(REPO / "config/paper.yaml")
METHODS_CFG = REPO / "config/test_methods.yaml"


def _runs(output: str) -> set[str]:
    return set(re.findall(r"results/runs/(\S+)/metrics\.json", output))


# Table 1: 3 datasets x 5 methods x 10 k x 3 seeds; Table 2 the same for ResNet-152. Figures 2
# and 3: approach_b at 5 values x 4 k x 3 seeds, plus the Baseline-RGB reference (4 k x 3 seeds).
# One fine-tuning job trains every k and seed of one (arch, dataset, method, variant): the main
# variant's jobs (finetune) hold the main grid's 10 k x 3 seeds, so a figure alone also trains
# their other k (Table 1's runs); the ablation-only variants' jobs (finetune_ablation) 4 k x 3.
@pytest.mark.parametrize("target,runs_needed,jobs,ablation_jobs,pretrain", [
    ("table1", 450, 15, 0, 1), ("table2", 450, 15, 0, 1), ("figure2", 72, 2, 4, 5), ("figure3", 72, 2, 4, 5),
    ("eq1_vs_eq2", 36, 2, 1, 2),
])
def test_paper_targets_list_their_runs(tmp_path, target, runs_needed, jobs, ablation_jobs, pretrain):
    proc = snakemake(target, "-n", "--configfile", PAPER, cwd=tmp_path)
    counts = job_counts(proc.stdout)
    assert counts["finetune"] == jobs and counts.get("finetune_ablation", 0) == ablation_jobs
    assert counts["pretrain_saliency"] == pretrain
    runs = _runs(proc.stdout)
    assert len(runs) == runs_needed  # the runs the target needs (its jobs also train the rest of their grid)
    if target == "table2":
        assert {r.split("/")[0] for r in runs} == {"resnet152"}
        assert {r.split("/")[3] for r in runs} == {"d4-layer2.0-eq2"}
        assert {r.split("/")[2] for r in runs} == {"baseline", "scratch_sal", "smic", "approach_a", "approach_b"}
        assert counts["smic_maps"] == 3
    if target == "figure2":
        variants = {r.split("/")[3] for r in runs if "/approach_b/" in r}
        assert variants == {f"d{d}-pool2-eq2" for d in range(1, 6)}
        assert {r.split("/")[1] for r in runs} == {"flowers102"}
    if target == "figure3":
        variants = {r.split("/")[3] for r in runs if "/approach_b/" in r}
        assert variants == {f"d4-{f}-eq2" for f in ("pool1", "pool2", "conv3", "conv4", "pool5")}


def test_tiny_ablation_grid_is_one_factor_at_a_time(tmp_path):
    proc = snakemake("figure2", "figure3", "-n", "--configfile", str(METHODS_CFG), cwd=tmp_path)
    runs = _runs(proc.stdout)
    assert runs == {"alexnet/synth_tiny/approach_b/d2-pool2-eq2/k1/seed0",
                    "alexnet/synth_tiny/approach_b/d4-conv3-eq2/k1/seed0"}
    assert job_counts(proc.stdout)["pretrain_saliency"] == 2


def _write_cfg(tmp_path, **changes):
    cfg = yaml.safe_load(METHODS_CFG.read_text())
    for dotted, value in changes.items():
        node = cfg
        *path, last = dotted.split(".")
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_a_fusion_point_the_arch_lacks_is_named(tmp_path):
    cfg = _write_cfg(tmp_path, **{"model.fusion": {"alexnet": "pool2", "resnet152": "pool2"}})
    proc = snakemake("-n", "--configfile", cfg, cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "'pool2' is not a fusion point of resnet152" in out and "layer4" in out


def test_smic_folder_source_needs_a_folder_per_dataset(tmp_path):
    cfg = _write_cfg(tmp_path, **{"smic.source": "folder"})
    proc = snakemake("table1", "-n", "--configfile", cfg, cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "smic.folders" in out and "synth_tiny" in out


@pytest.mark.slow
def test_every_method_on_both_archs_and_two_ablations_end_to_end(tmp_path):
    snakemake("table1", "table2", "figure2", "figure3", "--cores", "2", "--configfile", str(METHODS_CFG),
              cwd=tmp_path, timeout=1200)
    metrics = sorted(tmp_path.glob("results/runs/*/synth_tiny/*/*/k1/seed0/metrics.json"))
    found = {(m["arch"], m["method"], m["variant"]) for m in map(lambda p: json.loads(p.read_text()), metrics)}
    expected = {(a, m, v) for a, v in (("alexnet", "d4-pool2-eq2"), ("resnet152", "d4-layer2.0-eq2"))
                for m in ("baseline", "scratch_sal", "smic", "approach_a", "approach_b")}
    expected |= {("alexnet", "approach_b", "d2-pool2-eq2"), ("alexnet", "approach_b", "d4-conv3-eq2")}
    assert found == expected
    for path in metrics:
        m = json.loads(path.read_text())
        assert m["synthetic"] is True and m["n_train"] == 3 and m["n_test"] == 15
        assert_test_acc_is_predictions(path.parent, m)
        sal = np.load(path.parent / "saliency.npz")
        if m["method"] == "baseline":
            assert sal["before"].size == 0
        else:  # a hallucinated or explicit map on every test image, never NaN
            assert sal["before"].shape[0] == 15 and np.isfinite(sal["after"]).all()
        if m["method"] == "smic":
            assert "spectral residual" in m["saliency_maps"]
            assert np.array_equal(sal["before"], sal["after"])
    for arch, variants in (("alexnet", ["d4-pool2-eq2", "d2-pool2-eq2", "d4-conv3-eq2"]), ("resnet152", ["d4-layer2.0-eq2"])):
        assert json.loads((tmp_path / f"results/models/{arch}/backbone.json").read_text())["num_classes"] == 3
        for v in variants:
            info = json.loads((tmp_path / f"results/models/{arch}/saliency_{v}.json").read_text())
            assert math.isfinite(info["history"][0]["train_loss"])
    maps = np.load(tmp_path / "results/smic/synth_tiny/maps.npy")
    assert maps.shape == (33, 72, 72) and maps.dtype == np.uint8
