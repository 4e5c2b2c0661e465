"""The report's inputs: the files of every run it reads, each dataset's files for the Data
section and the qualitative grids, and the benchmark file of every job for the wall-time table.
A part of :class:`halsal.plan.Plan`."""

from __future__ import annotations

from halsal import settings
from halsal.plan.common import unique
from halsal.tree import JOB_NAME


class ReportInputs:
    """What the report rules read, as explicit file lists."""

    # --- the report ----------------------------------------------------------------------------
    def report_targets(self) -> list[str]:
        """The report's final outputs (`rule all` depends on these)."""
        r = self.tree.report
        return [self.tree.runs_tsv, self.tree.summary_csv, r("table_alexnet.html"), r("table_resnet152.html"),
                r("differences.html"), r("saliency_health.html"), r("data.html"), r("plots/accuracy"),
                r("plots/figure2_depth.png"), r("plots/figure3_fusion.png"), r("plots/learning_curves.png"),
                r("qualitative"), r("results.md")]

    def report_run_files(self, name) -> list[str]:
        """One file of every run the report reads (``predictions.tsv``, ``saliency.npz``, ...)."""
        return [self.tree.run_file(*run, name) for run in self.report_grid()]

    def data_split_seeds(self, name) -> list[int]:
        return [0] if name == self.source else list(self.config["seeds"])

    def data_inputs(self) -> dict:
        """``halsal data-report --inputs``: each dataset's index, index.json (folders), manifest,
        splits and their notes (the classes each dropped)."""
        t = self.tree
        return {d: {"index": t.index(d),
                    "info": t.index_info(d) if self.dataset_spec(d)["kind"] == settings.FOLDER else None,
                    "manifest": t.manifest(d),
                    "splits": {str(s): t.split(d, s) for s in self.data_split_seeds(d)},
                    "notes": {str(s): t.split_notes(d, s) for s in self.data_split_seeds(d)}}
                for d in self.data_datasets()}

    def qualitative_inputs(self) -> dict:
        """``halsal qualitative --inputs``: each target's prepared images and index."""
        return {d: {"images": self.tree.images(d), "index": self.tree.index(d)} for d in self.datasets}

    def benchmarks(self) -> dict[str, list[str]]:
        """The benchmark file of every job before the Markdown report, by the row of its wall-time
        table (``halsal results-md --benchmarks``), in workflow order."""
        t = self.tree
        every = unique([self.source] + self.datasets)
        jobs = self.jobs()
        split_seeds = {d: [0] if d == self.source else unique(
            [s for j in jobs if j.dataset == d for _, s in j.runs] + list(self.config["seeds"])
            + ([s for _, s in self.probe_runs()] if self.config["probe"]["enabled"] else [])) for d in every}
        out: dict[str, list[str]] = {
            "datasets": [t.bench("datasets", d) for d in every],
            "prepare": [t.bench("prepare", d) for d in every],
            "splits": [t.bench("splits", f"{d}/seed{s}") for d in every for s in split_seeds[d]],
            "smic_maps": [t.bench("smic_maps", d) for d in self.smic_datasets()],
            "backbone": [t.bench("backbone", a) for a in self.model_archs()],
            "pretrain_saliency": [t.bench("pretrain_saliency", f"{a}/{v}") for a, v in self.step1_variants()],
        }
        by_method: dict[str, list[str]] = {}  # the ablation-only jobs share their method's row
        for job in jobs:
            k, s = job.runs[0]
            name = JOB_NAME[self.batch].format(variant=job.variant, k=k, seed=s)
            by_method.setdefault(f"finetune: {job.method}", []).append(
                t.bench("finetune", f"{job.arch}/{job.dataset}/{job.method}/{name}"))
        out.update(sorted(by_method.items()))
        if self.config["probe"]["enabled"]:
            out["probe"] = [t.bench("probe", f"{a}/{d}") for a in self.archs for d in self.datasets]
        out["report"] = [t.bench("report", part) for part in ("aggregate", "tables", "plots", "qualitative", "data")]
        return {stage: files for stage, files in out.items() if files}
