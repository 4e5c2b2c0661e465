"""The Snakemake workflow: schema validation, lint, the paper's dry run, env files, the rules'
directives (parsed by Snakemake), and an end-to-end run of the tiny config with its report."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Only for test_ablations, test_own_data and test_photos_config, which still import
# `snakemake` and `job_counts` from here; tests take the conftest.py fixtures of those names.
from tests.conftest import count_jobs as job_counts, run_snakemake as snakemake  # noqa: E402,F401


def test_lint_is_clean(snakemake):
    proc = snakemake("--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_paper_dry_run_lists_the_whole_paper(tmp_path, snakemake, job_counts):
    proc = snakemake("-n", "--configfile", str(REPO / "config/paper.yaml"), cwd=tmp_path)
    counts = job_counts(proc.stdout)
    # Tables 1 and 2: archs x datasets x methods x k x seeds; Figures 2-3 and Eq. 1 vs 2 add
    # 9 AlexNet variants of approach_b on Flowers (4 k x 3 seeds); the rest are in Table 1.
    runs = set(re.findall(r"results/runs/(\S+)/metrics\.json", proc.stdout))
    assert len(runs) == 2 * 3 * 5 * 10 * 3 + 9 * 4 * 3 == 1008
    # One fine-tuning process per (arch, dataset, method, variant) trains all its k and seeds
    # (train.finetune_batch: all): 30 main-grid jobs of 30 runs, 9 ablation jobs of 12.
    assert counts["finetune"] == 2 * 3 * 5 and counts["finetune_ablation"] == 9
    assert counts["finetune"] + counts["finetune_ablation"] <= 110
    assert counts["fetch"] == 4  # three datasets and the ImageNet validation source
    assert counts["backbone"] == 2 and counts["smic_maps"] == 3
    assert counts["pretrain_saliency"] == 1 + 1 + 9  # ResNet-152, AlexNet main variant, 9 ablation variants


def test_bad_config_key_is_named(tmp_path, snakemake):
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cfg["data"]["imput_size"] = 64  # typo
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(tmp_path / "bad.yaml"), cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "imput_size" in proc.stdout + proc.stderr


def test_conda_env_files_parse_and_pin_the_stack():
    pins = {}
    for path in [*sorted((REPO / "envs").glob("*.yaml")), REPO / "environment.yml"]:
        env = yaml.safe_load(path.read_text())
        assert env["name"] and "conda-forge" in env["channels"]
        deps = env["dependencies"]
        assert any(str(d).startswith("python=") for d in deps), path
        pip = next((d["pip"] for d in deps if isinstance(d, dict)), [])
        pins.update({p.split("==")[0]: p for p in pip if "==" in p})
    assert pins["torch"] == "torch==2.14.1" and pins["torchvision"] == "torchvision==0.29.1"
    assert pins["nvidia-dali-cuda130"] == "nvidia-dali-cuda130==2.4.0"


# Loads the workflow with Snakemake's API (in a subprocess: the API sets up logging and state of
# its own) and writes each rule's parsed directives as JSON.
PARSE_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

repo, config, workdir, out = map(Path, sys.argv[1:5])
with SnakemakeApi(OutputSettings(quiet=True)) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(), storage_settings=StorageSettings(),
                            config_settings=ConfigSettings(configfiles=[config]), snakefile=repo / "Snakefile",
                            workdir=workdir)._workflow
    rules = {r.name: {"runs": not r.norun, "shell": r.shellcmd or "", "log": [str(x) for x in r.log],
                      "benchmark": str(r.benchmark) if r.benchmark else "", "message": r.message or "",
                      "conda": str(Path(r.snakefile).parent / r.conda_env) if r.conda_env else "",
                      "resources": sorted(k for k in r.resources if not k.startswith("_") and k != "tmpdir")}
             for r in workflow.rules}
out.write_text(json.dumps(rules))
"""


def _default_resources(profile: Path) -> set:
    entries = yaml.safe_load(profile.read_text()).get("default-resources") or {}
    if isinstance(entries, dict):
        return set(entries)
    return {str(e).split("=")[0].strip() for e in entries}


PROFILE_DEFAULT_RESOURCES = {p.parent.name: _default_resources(p) for p in sorted((REPO / "workflow/profiles").glob("*/config.yaml"))}


@pytest.fixture(scope="module")
def parsed_rules(tmp_path_factory) -> dict:
    """Every rule of the paper's workflow (all stages, the ablations included), as Snakemake parsed it."""
    work = tmp_path_factory.mktemp("parse")
    out = work / "rules.json"
    proc = subprocess.run([sys.executable, "-c", PARSE_RULES, str(REPO), str(REPO / "config/paper.yaml"), str(work),
                           str(out)], cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_rule_has_log_benchmark_conda_resources(parsed_rules):
    jobs = {name: r for name, r in parsed_rules.items() if r["runs"]}
    # The stages' rules; the rest are targets (all, table1, ...) that run nothing.
    assert {"generate_synthetic", "index_folder", "fetch", "split", "prepare", "backbone", "pretrain_saliency",
            "smic_maps", "finetune", "finetune_ablation", "aggregate", "report_tables", "report_plots",
            "report_qualitative", "report_data", "report_markdown"} <= set(jobs)
    assert all(not r["shell"] for r in parsed_rules.values() if not r["runs"])
    for name, r in jobs.items():
        assert len(r["log"]) == 1 and re.search(r"\{log(:q)?\}", r["shell"]), f"{name}: no log, or its log is not written"
        assert r["benchmark"], f"{name} lacks benchmark"
        # A rule states the resources that are its own; the rest are each profile's default-resources.
        for profile, defaults in PROFILE_DEFAULT_RESOURCES.items():
            assert {"mem_mb", "runtime"} <= set(r["resources"]) | defaults, f"{name}: resources {r['resources']} ({profile})"
        assert r["conda"] and Path(r["conda"]).resolve().is_file(), f"{name}: conda env {r['conda']!r}"
        env = yaml.safe_load(Path(r["conda"]).read_text())
        assert env["name"] and env["dependencies"], f"{name}: {r['conda']}"
    # Snakemake's own job line (rule, wildcards, files) describes the other jobs; a fine-tuning job
    # also names the k values and seeds it trains in one process.
    assert "{params.label}" in jobs["finetune"]["message"]


@pytest.mark.slow
def test_tiny_workflow_end_to_end_with_report(tmp_path, snakemake, artifacts_dir):
    snakemake("--cores", "2", "--configfile", str(REPO / "config/test.yaml"), cwd=tmp_path, timeout=1200)
    runs = sorted(tmp_path.glob("results/runs/alexnet/synth_tiny/*/d4-pool2-eq2/k*/seed0/metrics.json"))
    assert len(runs) == 4 * 2  # methods x k
    for path in runs:
        m = json.loads(path.read_text())
        # test_acc is the accuracy of predictions.tsv; val_acc and best_epoch are the history's
        # best validation epoch (the earliest on ties).
        preds = pd.read_csv(path.parent / "predictions.tsv", sep="\t")
        assert len(preds) == m["n_test"] and m["test_acc"] == pytest.approx((preds["pred"] == preds["label"]).mean())
        hist = pd.read_csv(path.parent / "history.tsv", sep="\t")
        assert list(hist["epoch"]) == [1, 2] and m["val_acc"] == pytest.approx(hist["val_acc"].max())
        assert m["best_epoch"] == int(hist.loc[hist["val_acc"].idxmax(), "epoch"])
        assert m["synthetic"] is True
        assert m["n_test"] == 15 and m["n_train"] == (3 if m["k"] == "1" else 6)
    assert (tmp_path / "results/tables/runs.tsv").read_text().count("\n") == 9
    # Re-running does nothing: every output is complete.
    again = snakemake("-n", "--configfile", str(REPO / "config/test.yaml"), cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
    snakemake("--configfile", str(REPO / "config/test.yaml"), "--report", str(tmp_path / "report.html"), cwd=tmp_path)
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "SYNTHETIC" in html
    shutil.copy(tmp_path / "report.html", artifacts_dir / "workflow-report.html")  # HALSAL_TEST_ARTIFACTS


@pytest.mark.slow
def test_real_photographs_flowers102_tiny(tmp_path, snakemake, shared_data):
    """The workflow on real photographs: Flowers 102 (10 classes x 12 images) as a `folder`
    dataset, Tiny ImageNet (10 classes) as the Step 0/1 source set."""
    flowers = shared_data("flowers102-tiny")
    source = shared_data("tiny_imagenet-tiny")
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cfg["datasets"] = {"flowers_tiny": {"kind": "folder", "source": str(flowers)}}
    cfg["source"] = {"name": "tinyimagenet_tiny", "kind": "folder", "source": str(source)}
    cfg["methods"] = ["baseline", "approach_b"]
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(cfg))
    snakemake("--cores", "2", "--configfile", str(tmp_path / "real.yaml"), cwd=tmp_path, timeout=1200)
    manifest = (tmp_path / "results/prepared/flowers_tiny/manifest.tsv").read_text().splitlines()
    assert len(manifest) == 121 and all(line.split("\t")[2] == "ok" for line in manifest[1:])
    for method in ("baseline", "approach_b"):
        for k, n_train in (("1", 10), ("K", 20)):
            m = json.loads((tmp_path / f"results/runs/alexnet/flowers_tiny/{method}/d4-pool2-eq2/k{k}/seed0/metrics.json").read_text())
            assert m["synthetic"] is False and m["num_classes"] == 10
            assert m["n_train"] == n_train and m["n_val"] == 50 and m["n_test"] == 50
