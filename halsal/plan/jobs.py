"""The plan's fine-tuning jobs: how the run grid is batched into processes
(``train.finetune_batch``), each job's runs, outputs, split inputs and log. A part of
:class:`halsal.plan.Plan`."""

from __future__ import annotations

from dataclasses import dataclass

from halsal.plan.common import unique
from halsal.tree import JOB_NAME


@dataclass(frozen=True)
class Job:
    """One fine-tuning job: the runs ``(k, seed)`` of one arch, dataset, method and variant that
    one process trains (``train.finetune_batch``)."""

    arch: str
    dataset: str
    method: str
    variant: str
    runs: tuple[tuple[str, int], ...]
    ablation: bool = False  # a variant that only the ablations use (rule finetune_ablation)


class JobPlan:
    """The fine-tuning jobs of the run grid."""

    # --- fine-tuning jobs (train.finetune_batch) -----------------------------------------------
    def check_batch(self) -> None:
        """A ValueError where `finetune_batch: seed` meets seeds that differ by k (`seeds_by_k`): a
        seed's job trains every k, so it would train runs that no k asks for."""
        if self.batch != "seed":
            return
        by_k = {k: sorted(self.seeds_for(k)) for k in self.ks}
        if len({tuple(s) for s in by_k.values()}) > 1:
            listed = "; ".join(f"k = {k}: {', '.join(map(str, s))}" for k, s in by_k.items())
            raise ValueError(f"config train.finetune_batch: seed trains every k of a seed in one job, but the seeds "
                             f"differ by k ({listed}; seeds_by_k): use finetune_batch: run (one job per run) or all")

    def job_ks_and_seeds(self, ablation=False) -> tuple[list[str], list[int]]:
        """ks and seeds of the jobs of the main variants, or (ablation=True) of the ablation-only
        variants. The main variants' jobs also cover the ablations' ks and seeds (their
        Baseline-RGB reference and main-variant points are main-variant runs)."""
        ks = self.ablation_ks
        seeds = list(self.ablations.get("seeds") or self.config["seeds"])
        if not ablation:
            ks = self.ks + ks
            seeds = list(self.config["seeds"]) + [s for k in self.ks for s in self.seeds_for(k)] + seeds
        return unique(ks), unique(seeds)

    def ablation_seeds(self, k) -> list[int]:
        """Seeds the ablations ask of the main variant's jobs at ``k`` (their reference runs)."""
        if not self.ablations or str(k) not in self.ablation_ks:
            return []
        return list(self.ablations.get("seeds") or self.config["seeds"])

    def job_runs(self, ablation=False) -> list[tuple[str, str]]:
        """``(k, seed)`` of the runs of one job: values, or ``{k}``/``{seed}`` wildcards."""
        ks, seeds = self.job_ks_and_seeds(ablation)
        if self.batch == "run":
            return [("{k}", "{seed}")]
        if self.batch == "seed":
            return [(k, "{seed}") for k in ks]
        if not ablation:  # the main grid may run other seeds at some k (seeds_by_k)
            return [(k, str(s)) for s in seeds for k in ks if s in self.seeds_for(k) or s in self.ablation_seeds(k)]
        return [(k, str(s)) for s in seeds for k in ks]

    def runs_of(self, wildcards, ablation=None) -> list[tuple[str, int]]:
        """The runs of the job with these wildcards, as values (the order of its outputs); an
        ablation-only variant's job has the ablations' shape."""
        wc = dict(wildcards.items()) if hasattr(wildcards, "items") else dict(wildcards)
        if ablation is None:
            ablation = wc["variant"] in self.ablation_only_variants()
        return [(k.format(**wc), int(s.format(**wc))) for k, s in self.job_runs(ablation)]

    def job_outputs(self, ablation=False, name="metrics.json") -> list[str]:
        """One output file (``name``) of each run of a job, with the job's wildcards."""
        return [self.tree.run_file("{arch}", "{dataset}", "{method}", "{variant}", k, s, name)
                for k, s in self.job_runs(ablation)]

    def job_split_inputs(self, ablation=False) -> list[str]:
        """Each run's split file, in the order of the outputs (one seed's file repeats for its k)."""
        return [self.tree.split("{dataset}", s) for _, s in self.job_runs(ablation)]

    def job_log(self, root_of) -> str:
        """A fine-tuning job's log or benchmark path (``root_of``: ``tree.log`` or ``tree.bench``)."""
        return root_of("finetune", "{arch}/{dataset}/{method}/" + JOB_NAME[self.batch])

    def run_args(self, wildcards, ablation=None) -> list[list]:
        """``[k, seed, split, run_dir]`` of each run of a job (``halsal finetune --run``)."""
        return [[k, s, self.tree.split(wildcards.dataset, s),
                 self.tree.run_dir(wildcards.arch, wildcards.dataset, wildcards.method, wildcards.variant, k, s)]
                for k, s in self.runs_of(wildcards, ablation)]

    def jobs(self) -> list[Job]:
        """Every fine-tuning job of the config (main grid, table targets excluded, and ablations)."""
        wanted = self.report_grid()
        ablation_only = set(self.ablation_only_variants())
        jobs: dict[tuple, Job] = {}
        for a, d, m, v, k, s in wanted:
            is_ablation = v in ablation_only
            wc = {"arch": a, "dataset": d, "method": m, "variant": v, "k": k, "seed": s}
            key = (a, d, m, v, *([k, s] if self.batch == "run" else [s] if self.batch == "seed" else []))
            if key not in jobs:
                jobs[key] = Job(a, d, m, v, tuple(self.runs_of(wc, is_ablation)), is_ablation)
        return list(jobs.values())
