"""The plan of a workflow run, from a validated config: the run grid, the jobs the grid is
batched into, the other steps' runs, and the report's inputs. Torch-free (the Snakefile imports
it at parse time), and testable without Snakemake.

- :class:`halsal.tree.Tree` (``plan.tree``): every path under ``results/``, ``logs/`` and
  ``benchmarks/``, written once;
- :class:`Plan`, one part per question, each in its own module:
  :class:`~halsal.plan.datasets.DatasetPlan` (datasets, their policies, each arch's variant),
  :class:`~halsal.plan.grid.GridPlan` (the main grid, seeds per k, the ablations),
  :class:`~halsal.plan.jobs.JobPlan` (the fine-tuning jobs, ``train.finetune_batch``),
  :class:`~halsal.plan.steps.StepPlan` (Steps 0-1, SMIC maps, the probe) and
  :class:`~halsal.plan.report_inputs.ReportInputs` (what each report rule reads).

The workflow's rules take their inputs, outputs and arguments from here; a rule never rebuilds
a path from another path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from halsal import settings, spec
from halsal.plan.datasets import DatasetPlan
from halsal.plan.grid import GridPlan
from halsal.plan.jobs import Job, JobPlan
from halsal.plan.report_inputs import ReportInputs
from halsal.plan.steps import StepPlan
from halsal.tree import Tree

__all__ = ["Job", "Plan", "as_json"]


@dataclass
class Plan(DatasetPlan, GridPlan, JobPlan, StepPlan, ReportInputs):
    """The run grid of a validated config (``snakemake.utils.validate`` has filled its defaults)."""

    config: dict
    tree: Tree = field(default_factory=Tree)

    def __post_init__(self):
        config = self.config
        settings.check_vocabulary(config)
        settings.check_budgets(config)
        self.source = config["source"]["name"]
        self.archs = list(config["archs"])
        self.datasets = list(config["datasets"])
        self.methods = list(config["methods"])
        # k is a label from here on ("1", "5", spec.K_ALL): the config's ints become strings once, here;
        # only the split's row selection counts it (halsal.data.splits.select).
        self.ks = [str(k) for k in config["ks"]]
        self.ablations = config.get("ablations") or {}
        self.ablation_ks = [str(k) for k in self.ablations.get("ks") or self.ks]  # the ablations' (default: the grid's)
        self.batch = config["train"]["finetune_batch"]
        self.check_batch()
        timm_archs = [a for a in [*self.archs, *self.ablations.get("archs", [])] if spec.is_timm(a)]
        self.variants = {arch: self.variant_for(arch) for arch in dict.fromkeys([*spec.ARCHS, *timm_archs])}  # each arch's main variant
        self.variant = self.variants[self.archs[0]]  # the report's tables and plots use the first arch's
        self.check_fusion_points()


def as_json(value) -> str:
    """A structured rule argument (``--settings``, ``--inputs``, ``--benchmarks``)."""
    return json.dumps(value, sort_keys=False)
