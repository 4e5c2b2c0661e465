"""The results tree of a workflow run: every path under ``results/``, ``logs/`` and
``benchmarks/``, written once (:data:`LAYOUT`), and the files of each fine-tuning run. Torch-free;
:mod:`halsal.plan` and the workflow's rules take their paths from here."""

from __future__ import annotations

from dataclasses import dataclass

RUN_FILES = ("metrics.json", "predictions.tsv", "saliency.npz", "history.tsv")  # each run's declared outputs
PREPARED_IMAGES = "images.npy"  # a prepared folder's uint8 image cache (halsal.data.manifest.open_images reads it)
PREPARED_MANIFEST = "manifest.tsv"  # and its manifest (halsal.data.manifest.read_manifest)

# The results tree: each path's template, over the tree's roots ({results}, {logs},
# {benchmarks}) and its arguments in order ({0}, {1}, ...; Snakemake wildcards such as
# "{dataset}" pass through). Tree has one method per entry (a property where it has none).
LAYOUT = {
    # datasets -> prepare -> splits
    "dataset_dir": "{results}/datasets/{0}",  # the index, and a synthetic set's images/<class>/<file>
    "index": "{results}/datasets/{0}/index.tsv",
    "index_info": "{results}/datasets/{0}/index.json",
    "prepared": "{results}/prepared/{0}",
    "images": "{results}/prepared/{0}/" + PREPARED_IMAGES,
    "manifest": "{results}/prepared/{0}/" + PREPARED_MANIFEST,
    "split": "{results}/splits/{0}/seed{1}.tsv",
    "split_notes": "{results}/splits/{0}/seed{1}.notes.txt",
    # Steps 0-1 (arch; arch, variant), SMIC maps (dataset)
    "backbone": "{results}/models/{0}/backbone.pt",
    "backbone_info": "{results}/models/{0}/backbone.json",
    "saliency": "{results}/models/{0}/saliency_{1}.pt",
    "saliency_info": "{results}/models/{0}/saliency_{1}.json",
    "smic_maps": "{results}/smic/{0}/maps.npy",
    "smic_info": "{results}/smic/{0}/maps.json",
    # Step 2 (arch, dataset, method, variant, k, seed) and the probe (arch, dataset)
    "run_dir": "{results}/runs/{0}/{1}/{2}/{3}/k{4}/seed{5}",
    "probe": "{results}/probe/{0}/{1}/probe.tsv",
    # the report
    "runs_tsv": "{results}/tables/runs.tsv",
    "accuracy_tsv": "{results}/tables/accuracy.tsv",
    "summary_csv": "{results}/summary.csv",
    "report_dir": "{results}/report",
    "report": "{results}/report/{0}",
    # every job's log and benchmark file: <stage>/<name>
    "log": "{logs}/{0}/{1}.log",
    "bench": "{benchmarks}/{0}/{1}.tsv",
}


@dataclass(frozen=True)
class Tree:
    """The paths of a run (:data:`LAYOUT`); arguments may be Snakemake wildcards (``"{dataset}"``)."""

    results: str = "results"
    logs: str = "logs"
    benchmarks: str = "benchmarks"

    def path(self, name: str, *args) -> str:
        """The path :data:`LAYOUT` names ``name``, with these arguments."""
        return LAYOUT[name].format(*args, results=self.results, logs=self.logs, benchmarks=self.benchmarks)

    def run_file(self, arch, d, method, variant, k, seed, name="metrics.json") -> str:
        """One file of a fine-tuning run (``metrics.json``, ``predictions.tsv``, ...)."""
        return f"{self.path('run_dir', arch, d, method, variant, k, seed)}/{name}"


def _accessor(name: str, template: str):
    if "{0}" not in template:
        return property(lambda self: self.path(name), doc=template)

    def method(self, *args) -> str:
        return self.path(name, *args)

    method.__name__, method.__qualname__, method.__doc__ = name, f"Tree.{name}", template
    return method


for _name, _template in LAYOUT.items():
    setattr(Tree, _name, _accessor(_name, _template))


# A fine-tuning job's log/benchmark name, per train.finetune_batch (its wildcards, then its runs).
JOB_NAME = {"run": "{variant}/k{k}/seed{seed}", "seed": "{variant}/seed{seed}", "all": "{variant}"}
