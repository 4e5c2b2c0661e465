"""The run plan (halsal/plan/), without Snakemake: the grids of the shipped configs, the jobs
they are batched into, and the files each rule reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from halsal import plan as halsal_plan
from halsal import settings

REPO = Path(__file__).resolve().parents[1]


def load(name: str, **overrides) -> halsal_plan.Plan:
    config = yaml.safe_load((REPO / "config" / name).read_text())
    for key, value in overrides.items():
        section, _, sub = key.partition("__")
        if sub:
            config.setdefault(section, {})[sub] = value
        else:
            config[section] = value
    validate(config, schema=str(settings.SCHEMA_PATH))
    return halsal_plan.Plan(config)


def test_plan_imports_no_torch():
    code = "import sys, halsal.plan, halsal.settings; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_paper_grid_is_1008_runs_in_39_jobs():
    p = load("paper.yaml")
    jobs = p.jobs()
    assert len(p.report_metrics()) == 1008
    main = [j for j in jobs if not j.ablation]
    ablation = [j for j in jobs if j.ablation]
    # 2 archs x 3 datasets x 5 methods; 9 ablation-only variants (4 depths, 4 fusions, eq1)
    assert (len(main), len(ablation), len(jobs)) == (30, 9, 39)
    assert sum(len(j.runs) for j in jobs) == 1008
    assert {len(j.runs) for j in main} == {30} and {len(j.runs) for j in ablation} == {12}
    assert sorted(j.variant for j in ablation) == p.ablation_only_variants()
    assert "d4-pool2-eq1" in p.ablation_only_variants() and "d4-pool2-eq2" not in p.ablation_only_variants()


@pytest.mark.parametrize("batch, jobs", [("all", 39), ("seed", 117), ("run", 1008)])
def test_paper_grid_batching(batch, jobs):
    p = load("paper.yaml", train__finetune_batch=batch)
    assert len(p.jobs()) == jobs
    assert sum(len(j.runs) for j in p.jobs()) == 1008


def test_demo_grid_is_48_runs():
    p = load("config.yaml")
    assert len(p.report_metrics()) == 48
    # seeds_by_k: K runs the first seeds only, 1 and 5 every seed
    assert {k: len(p.seeds_for(k)) for k in p.ks} == {"1": 5, "5": 5, "K": 2}
    jobs = p.jobs()
    assert len(jobs) == 4 and sum(len(j.runs) for j in jobs) == 48


def test_job_runs_follow_the_wildcards_and_the_outputs():
    p = load("paper.yaml", train__finetune_batch="seed")
    wc = {"arch": "alexnet", "dataset": "flowers102", "method": "approach_b", "variant": "d4-pool2-eq2", "seed": "2"}
    runs = p.runs_of(wc)
    assert runs == [(k, 2) for k in p.ks]
    outputs = [o.format(**wc) for o in p.job_outputs()]
    assert outputs == [p.tree.run_file("alexnet", "flowers102", "approach_b", "d4-pool2-eq2", k, 2) for k in p.ks]
    # an ablation-only variant's job has the ablations' 4 ks
    assert [k for k, _ in p.runs_of({**wc, "variant": "d2-pool2-eq2"})] == ["1", "5", "10", "K"]


def test_run_args_name_each_runs_split_and_folder():
    p = load("config.yaml")

    class Wildcards(dict):
        __getattr__ = dict.__getitem__

    wc = Wildcards(arch="alexnet", dataset="synth_fine", method="baseline", variant=p.variants["alexnet"])
    args = p.run_args(wc)
    assert len(args) == 12
    k, seed, split, run_dir = args[0]
    assert split == p.tree.split("synth_fine", seed)
    assert run_dir == p.tree.run_dir("alexnet", "synth_fine", "baseline", wc.variant, k, seed)


def test_report_inputs_are_explicit_files():
    p = load("photos.yaml")
    data = p.data_inputs()
    assert set(data) == {"flowers102", "cub200", "tiny_imagenet"}  # Step 1 trains on the source set
    assert list(data["tiny_imagenet"]["splits"]) == ["0"]
    assert data["flowers102"]["info"] == p.tree.index_info("flowers102")  # a folder dataset
    assert set(p.reference_maps()) == {"flowers102", "cub200"}
    bench = p.benchmarks()
    assert list(bench)[:4] == ["datasets", "prepare", "splits", "smic_maps"]
    assert "probe" in bench and len(bench["finetune: baseline"]) == 30  # finetune_batch: run, 2 datasets x (10 + 5) runs
    # runs: 2 datasets x 3 methods x (10 seeds at k = 1 + 5 at k = 5)
    assert len(p.report_run_files("predictions.tsv")) == len(p.report_metrics()) == 90


def test_batch_by_seed_refuses_seeds_that_differ_by_k():
    # a seed's job trains every k: with seeds 5-9 at k = 1 only, it would train k = 5 runs no one asked for
    with pytest.raises(ValueError, match=r"finetune_batch: seed .* differ by k \(k = 1: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9; "
                                         r"k = 5: 0, 1, 2, 3, 4; seeds_by_k\): use finetune_batch: run"):
        load("photos.yaml", train__finetune_batch="seed")
    plan = load("photos.yaml", train__finetune_batch="seed", seeds_by_k={"1": [0, 1, 2, 3, 4]})  # the same seeds at every k
    assert len(plan.jobs()) == 2 * 3 * 5
    runs = load("photos.yaml").jobs()
    assert {(j.runs[0][0], j.runs[0][1]) for j in runs if j.dataset == "cub200" and j.method == "baseline"} == \
        {("1", s) for s in range(10)} | {("5", s) for s in range(5)}


def test_bad_vocabulary_and_fusion_are_errors():
    with pytest.raises(ValueError, match="archs: 'alexnett' is not one of"):
        load("config.yaml", archs=["alexnett"])
    with pytest.raises(ValueError, match="'layer9' is not a fusion point of alexnet"):
        load("config.yaml", model__fusion="layer9")


def test_a_dataset_may_set_its_own_val_and_test_images_per_class():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    first, *_ = config["datasets"]
    config["datasets"][first]["test_per_class"] = 25
    validate(config, schema=str(settings.SCHEMA_PATH))
    p = halsal_plan.Plan(config)
    assert p.data_policy(first, "test_per_class") == 25
    assert p.data_policy(first, "val_per_class") == config["data"]["val_per_class"]
    assert all(p.data_policy(d, "test_per_class") == config["data"]["test_per_class"] for d in p.datasets if d != first)
