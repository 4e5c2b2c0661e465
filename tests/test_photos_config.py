"""config/photos.yaml (`make photos`, GitHub issue 17: the ImageNet-pretrained EfficientNet-Lite0)
and config/photos-scratch.yaml (issue 10: AlexNet from scratch): the real-photo grids, as the dry
run lists them, and each config's promises (relative paths, labels, optimisation)."""

import json
import re

import yaml

from tests.conftest import REPO, shared_dataset
from tests.conftest import count_jobs as job_counts, run_snakemake as snakemake

PHOTOS = REPO / "config/photos.yaml"
SCRATCH = REPO / "config/photos-scratch.yaml"
METHODS = ["baseline", "scratch_sal", "smic", "approach_a", "approach_b"]
PRETRAINED_METHODS = ["baseline", "approach_a", "approach_b"]


def test_pretrained_photos_config_promises():
    cfg = yaml.safe_load(PHOTOS.read_text())
    assert cfg["archs"] == ["efficientnet_lite0"] and cfg["model"]["weights"] == "imagenet"
    assert cfg["methods"] == PRETRAINED_METHODS and {1, 5} <= set(cfg["ks"]) and len(cfg["seeds"]) >= 3
    assert cfg["data"]["input_size"] >= 160 and cfg["probe"]["enabled"] is True
    specs = {**cfg["datasets"], cfg["source"]["name"]: cfg["source"]}
    assert sorted(specs) == ["cub200", "flowers102", "tiny_imagenet"]
    for name, spec in specs.items():
        assert spec["kind"] == "folder" and spec["source"] == f"../shared/data/{name}"  # relative, read in place


def test_pretrained_photos_dry_run_lists_the_grid(tmp_path):
    for name in ("flowers102", "cub200", "tiny_imagenet"):
        shared = shared_dataset(name)
    work = tmp_path / "main"
    work.mkdir()
    (tmp_path / "shared").symlink_to(shared.parent.parent, target_is_directory=True)
    proc = snakemake("-n", "-p", "--configfile", str(PHOTOS), cwd=work)
    counts = job_counts(proc.stdout)
    cfg = yaml.safe_load(PHOTOS.read_text())
    assert counts["backbone"] == 1 and counts["pretrain_saliency"] == 1
    # no SMIC runs, but smic.reference: the spectral-residual maps of both datasets reach the health table
    assert counts["smic_maps"] == 2 and "method smic" not in proc.stdout
    assert re.search(r"""--reference-maps '\{"flowers102": "results/smic/flowers102/maps\.npy", "cub200": "results/smic/cub200/maps\.npy"\}'""",
                     proc.stdout)
    assert counts["probe"] == 2  # one linear probe per dataset, every k and seed inside
    # finetune_batch: seed -> one job per dataset, method and seed; resources.threads: 1 -> two such
    # 1-thread jobs run side by side on --cores 2 (docs/decisions.md, Threads)
    assert counts["finetune"] == 2 * len(PRETRAINED_METHODS) * len(cfg["seeds"])
    finetunes = [line for line in proc.stdout.splitlines() if " finetune --arch " in line]
    assert finetunes and all(line.rstrip().endswith(f"--threads {cfg['resources']['threads']} > "
                                                    + line.rsplit("> ", 1)[1]) for line in finetunes)
    settings_json = json.loads(re.search(r"--settings '([^']*)'", finetunes[0]).group(1))
    assert cfg["resources"]["threads"] == 1 and settings_json["steps"] == cfg["train"]["finetune"]["steps"]
    assert re.search(r"halsal (--gpus \d+ )?backbone --arch efficientnet_lite0 --weights imagenet --source-prepared", proc.stdout)
    runs = set(re.findall(r"results/runs/(efficientnet_lite0/\S+?)/metrics\.json", proc.stdout))
    assert runs == {f"efficientnet_lite0/{d}/{m}/d4-stage2-eq2/k{k}/seed{s}" for d in ("flowers102", "cub200")
                    for m in PRETRAINED_METHODS for k in cfg["ks"] for s in cfg["seeds"]}


def test_photos_config_promises():
    cfg = yaml.safe_load(SCRATCH.read_text())
    assert cfg["model"]["weights"] == "scratch" and cfg["smic"]["source"] == "spectral_residual"
    assert cfg["methods"] == METHODS and cfg["ks"] == [1, 3, 5, 10] and len(cfg["seeds"]) >= 3
    specs = {**cfg["datasets"], cfg["source"]["name"]: cfg["source"]}
    assert sorted(specs) == ["cub200", "flowers102", "tiny_imagenet"]
    for name, spec in specs.items():
        assert spec["kind"] == "folder" and spec["source"] == f"../shared/data/{name}"  # relative, read in place
    # "keep in step with config/config.yaml's train section": only the epochs differ.
    demo = yaml.safe_load((REPO / "config/config.yaml").read_text())["train"]
    for step in ("backbone", "pretrain", "finetune"):
        ours = {k: v for k, v in cfg["train"][step].items() if k != "epochs"}
        theirs = {k: v for k, v in demo[step].items() if k != "epochs"}
        assert ours == theirs, f"train.{step} differs from config/config.yaml's: {ours} != {theirs}"
    assert cfg["train"]["augment"] == demo["augment"]
    assert {k: cfg["data"][k] for k in ("resize", "input_size")} == {"resize": 72, "input_size": 64}


def test_scratch_photos_dry_run_lists_the_grid(tmp_path):
    """The dry run, in a scratch directory beside a link to ../shared/data, so the config's
    relative paths resolve as in the repository and nothing is written into it."""
    for name in ("flowers102", "cub200", "tiny_imagenet"):
        shared = shared_dataset(name)  # skips, with the reason, without the photographs
    work = tmp_path / "main"
    work.mkdir()
    (tmp_path / "shared").symlink_to(shared.parent.parent, target_is_directory=True)
    proc = snakemake("-n", "-p", "--configfile", str(SCRATCH), cwd=work)
    counts = job_counts(proc.stdout)
    assert counts["index_folder"] == 3 and counts["prepare"] == 3  # flowers102, cub200, tiny_imagenet
    assert counts["split"] == 1 + 2 * 3  # the source set's seed 0; each target's three seeds
    assert counts["backbone"] == 1 and counts["pretrain_saliency"] == 1 and counts["smic_maps"] == 2
    assert counts["report_markdown"] == 1  # results/report/results.md -> docs/results-photos.md (make photos)
    runs = set(re.findall(r"results/runs/(alexnet/\S+?)/metrics\.json", proc.stdout))
    assert runs == {f"alexnet/{d}/{m}/d4-pool2-eq2/k{k}/seed{s}" for d in ("flowers102", "cub200") for m in METHODS
                    for k in (1, 3, 5, 10) for s in (0, 1, 2)}
    assert len(runs) == 2 * 5 * 4 * 3 == 120
    batch = yaml.safe_load(SCRATCH.read_text())["train"].get("finetune_batch", "all")
    assert counts["finetune"] == {"all": 2 * 5, "seed": 2 * 5 * 3, "run": 120}[batch]
    # The per-class cap reaches the index command of each folder.
    assert len(re.findall(r"halsal index --root \.\./shared/data/\S+ .*--per-class 40 --per-class-seed 0", proc.stdout)) == 3


def test_make_photos_publishes_into_the_docs_page():
    """`make photos` ends by splicing the workflow's results.md into docs/results-photos.md
    (halsal publish-md), timed; the page has exactly one generated block for it."""
    import subprocess

    from halsal.report.results_md import BEGIN, END

    proc = subprocess.run(["make", "-n", "photos"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"halsal publish-md --markdown results/report/results\.md --doc docs/results-photos\.md "
                     r"\\\s*--images-dir results-photos --command \"make photos\" --elapsed-s", proc.stdout), proc.stdout
    page = (REPO / "docs/results-photos.md").read_text()
    assert page.count(BEGIN) == 1 and page.count(END) == 1 and page.index(BEGIN) < page.index(END)
