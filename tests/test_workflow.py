"""The Snakemake workflow: schema validation, lint, the paper's dry run, env files, and an
end-to-end run of the tiny config with its report."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(*args, cwd=REPO, timeout=900, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(cwd), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def job_counts(output: str) -> dict:
    counts = {}
    for line in output.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_lint_is_clean():
    proc = snakemake("--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_paper_dry_run_lists_the_whole_paper(tmp_path):
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


def test_bad_config_key_is_named(tmp_path):
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
    # Every rule's conda: file exists.
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        for rel in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / rel).resolve().is_file(), f"{smk.name}: {rel}"


def test_every_rule_has_log_benchmark_conda_resources_message():
    text = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    rules = re.split(r"\n(?=rule \w+:)", text)[1:]
    assert len(rules) >= 8
    for body in rules:
        name = body.split(":")[0]
        for directive in ("log:", "benchmark:", "conda:", "resources:", "message:", "threads:"):
            assert directive in body, f"{name} lacks {directive}"


@pytest.mark.slow
def test_tiny_workflow_end_to_end_with_report(tmp_path):
    snakemake("--cores", "2", "--configfile", str(REPO / "config/test.yaml"), cwd=tmp_path, timeout=1200)
    runs = sorted(tmp_path.glob("results/runs/alexnet/synth_tiny/*/d4-pool2-eq2/k*/seed0/metrics.json"))
    assert len(runs) == 4 * 2  # methods x k
    for path in runs:
        m = json.loads(path.read_text())
        assert 0.0 <= m["test_acc"] <= 1.0 and 0.0 <= m["val_acc"] <= 1.0
        assert m["synthetic"] is True and 1 <= m["best_epoch"] <= 2
        assert m["n_test"] == 15 and m["n_train"] == (3 if m["k"] == "1" else 6)
    assert (tmp_path / "results/tables/runs.tsv").read_text().count("\n") == 9
    # Re-running does nothing: every output is complete.
    again = snakemake("-n", "--configfile", str(REPO / "config/test.yaml"), cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
    snakemake("--configfile", str(REPO / "config/test.yaml"), "--report", str(tmp_path / "report.html"), cwd=tmp_path)
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "SYNTHETIC" in html
    artefacts = REPO / "tests" / "artifacts"
    artefacts.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "report.html", artefacts / "workflow-report.html")


@pytest.mark.slow
def test_real_photographs_flowers102_tiny(tmp_path):
    """The workflow on real photographs: Flowers 102 (10 classes x 12 images) as a `folder`
    dataset, Tiny ImageNet (10 classes) as the Step 0/1 source set."""
    from tests.conftest import shared_dataset

    flowers = shared_dataset("flowers102-tiny")
    source = shared_dataset("tiny_imagenet-tiny")
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
