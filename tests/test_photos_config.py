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
    # resources.threads: 1 -> two 1-thread jobs run side by side on --cores 2 (docs/decisions.md, Threads)
    # seeds_by_k: more seeds at k = 1, where a run is cheap; a seed outside `seeds` runs only that k
    seeds_at = {k: cfg.get("seeds_by_k", {}).get(str(k), cfg["seeds"]) for k in cfg["ks"]}
    assert len(seeds_at[1]) == 10 and seeds_at[5] == cfg["seeds"]
    # finetune_batch: run -> one job per run, and no job trains a run that no k asks for
    assert cfg["train"]["finetune_batch"] == "run"
    assert counts["finetune"] == 2 * len(PRETRAINED_METHODS) * sum(len(s) for s in seeds_at.values())
    finetunes = [line for line in proc.stdout.splitlines() if " finetune --arch " in line]
    assert finetunes and all(line.rstrip().endswith(f"--threads {cfg['resources']['threads']} > "
                                                    + line.rsplit("> ", 1)[1]) for line in finetunes)
    settings_json = json.loads(re.search(r"--settings '([^']*)'", finetunes[0]).group(1))
    assert cfg["resources"]["threads"] == 1 and settings_json["steps"] == cfg["train"]["finetune"]["steps"]
    assert re.search(r"halsal (--gpus \d+ )?backbone --arch efficientnet_lite0 --weights imagenet --source-prepared", proc.stdout)
    runs = set(re.findall(r"results/runs/(efficientnet_lite0/\S+?)/metrics\.json", proc.stdout))
    assert runs == {f"efficientnet_lite0/{d}/{m}/d4-stage2-eq2/k{k}/seed{s}" for d in ("flowers102", "cub200")
                    for m in PRETRAINED_METHODS for k in cfg["ks"] for s in seeds_at[k]}




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


def test_make_photos_publishes_into_the_docs_page(tmp_path):
    """`make photos` runs the workflow and its report, then splices the workflow's results.md
    into the page's one generated block, with the measured time: the recipe itself is run, with
    a stand-in `snakemake` that records its arguments and the real `halsal publish-md`."""
    import os
    import subprocess
    import sys

    from halsal.report.results_md import BEGIN, END

    bin_dir, data = tmp_path / "bin", tmp_path / "shared"
    bin_dir.mkdir()
    (bin_dir / "snakemake").write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path}/snakemake.calls\n")
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    for tool in ("snakemake", "python"):
        os.chmod(bin_dir / tool, 0o755)
    for name in ("flowers102", "cub200", "tiny_imagenet"):
        (data / name / "images").mkdir(parents=True)
    (tmp_path / "results/report").mkdir(parents=True)
    (tmp_path / "results/report/results.md").write_text("### Results\n\nthe numbers\n")
    doc = tmp_path / "page.md"
    doc.write_text(f"# Page\n\n{BEGIN}\nold\n{END}\n\nprose\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["make", "-f", str(REPO / "Makefile"), "photos", f"BIN={bin_dir}", "STAMP=", f"PHOTOS_DATA={data}",
                           f"PHOTOS_DOC={doc}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "snakemake.calls").read_text().splitlines()
    assert len(calls) == 2 and "--configfile config/photos.yaml" in calls[0] and "--report reports/photos.html" in calls[1]
    text = doc.read_text()
    assert "old" not in text and "the numbers" in text and "**Measured: `make photos` took" in text
    assert text.count(BEGIN) == 1 and text.endswith(f"{END}\n\nprose\n")
    page = (REPO / "docs/results-photos.md").read_text()
    assert page.count(BEGIN) == 1 and page.count(END) == 1 and page.index(BEGIN) < page.index(END)
