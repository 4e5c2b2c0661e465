"""The plan of a workflow run, from a validated config: the results tree, the run grid, the
jobs the grid is batched into, and the report's targets. Torch-free (the Snakefile imports it
at parse time), and testable without Snakemake.

- :class:`halsal.tree.Tree` (``plan.tree``): every path under ``results/``, ``logs/`` and
  ``benchmarks/``, written once;
- :class:`Plan`: the datasets, variants, seeds per k, the fine-tuning grid (the main grid and
  the ablations), its jobs (``train.finetune_batch``), the probe runs, and the inputs of each
  report rule, all as explicit file lists.

The workflow's rules take their inputs, outputs and arguments from here; a rule never rebuilds
a path from another path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from halsal import settings, spec
from halsal.tree import JOB_NAME, Tree

ABLATION_FACTORS = {"depth": "depths", "fusion": "fusions", "modulation": "modulations"}


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


def _unique(items) -> list:
    return list(dict.fromkeys(items))


@dataclass
class Plan:
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
        self.ks = [str(k) for k in config["ks"]]
        self.ablations = config.get("ablations") or {}
        self.batch = config["train"]["finetune_batch"]
        self.variants = {arch: self.variant_for(arch) for arch in spec.ARCHS}  # each arch's main variant
        self.variant = self.variants[self.archs[0]]  # the report's tables and plots use the first arch's
        self.check_fusion_points()

    # --- datasets ----------------------------------------------------------------------------
    def dataset_spec(self, name) -> dict:
        """The config entry of a target dataset or of the source set."""
        if name == self.source:
            return self.config["source"]
        if name in self.config["datasets"]:
            return self.config["datasets"][name]
        raise ValueError(f"dataset {name!r} is not in the config: add it under `datasets:` "
                         f"(known: {sorted(self.config['datasets'])} and source {self.source!r})")

    def is_synthetic(self, name) -> bool:
        s = self.dataset_spec(name)
        return s["kind"] == settings.SYNTHETIC or bool(s.get("synthetic", False))

    def data_policy(self, name, key):
        """`on_bad_image` / `too_few_images` / `duplicates` / `val_per_class` / `test_per_class` of one dataset: its own entry over
        `data.<key>` (each job gets its own dataset's value only)."""
        return self.dataset_spec(name).get(key, self.config["data"][key])

    def names_of_kind(self, *kinds) -> list[str]:
        """The configured datasets (targets and source) of these kinds."""
        every = {**self.config["datasets"], self.source: self.config["source"]}
        return [n for n, s in every.items() if s["kind"] in kinds]

    def dataset_root(self, name) -> str:
        """Where a folder dataset's images/<class>/<file> tree lives (`source`, else `root`)."""
        s = self.dataset_spec(name)
        return s.get("source") or s["root"]

    def source_used(self) -> bool:
        """Whether a step trains on the source set: Step 0 (weights: scratch) or Step 1."""
        methods, archs = set(self.methods), set(self.archs)
        if self.has_ablation_variants():
            methods |= set(self.ablation_methods())
            archs |= set(self.ablation_archs())
        return bool(methods & set(spec.FROM_STEP1)) or any(self.weights_for(a) == "scratch" for a in archs)

    def data_datasets(self) -> list[str]:
        """The datasets of the report's Data section: the targets, and the source where a step trains on it."""
        return _unique(self.datasets + ([self.source] if self.source_used() else []))

    def max_k(self) -> int:
        """The largest integer k of the main grid and the ablations (the split needs it)."""
        ints = [int(k) for k in self.ks + [str(k) for k in self.ablations.get("ks") or []] if k != spec.K_ALL]
        return max(ints) if ints else 1

    # --- variants ------------------------------------------------------------------------------
    def _per_arch(self, value, arch, default=None):
        return value.get(arch, default) if isinstance(value, dict) else value

    def fusion_for(self, arch) -> str:
        return self._per_arch(self.config["model"].get("fusion", spec.DEFAULT_FUSION), arch, spec.DEFAULT_FUSION[arch])

    def weights_for(self, arch) -> str:
        return self._per_arch(self.config["model"]["weights"], arch, settings.default("model.weights"))

    def variant_for(self, arch, depth=None, fusion=None, modulation=None) -> str:
        """The {variant} wildcard: saliency depth, fusion point, modulation equation."""
        m = self.config["model"]
        return spec.format_variant(depth or m.get("saliency_depth", spec.PAPER_DEPTH), fusion or self.fusion_for(arch),
                                   modulation or m.get("modulation", spec.PAPER_MODULATION))

    @property
    def fc_width(self) -> int:
        """AlexNet's fc6/fc7 width (model.fc_width; default: AlexNet's own)."""
        return self.config["model"].get("fc_width", spec.ALEXNET_FC_WIDTH)

    def check_fusion_points(self, archs=None) -> None:
        """A ValueError (at parse time) on a fusion point that the arch does not have."""
        wanted = {(a, self.fusion_for(a), "model.fusion") for a in (archs or self.archs)}
        if archs is None:
            wanted |= {(a, f, "ablations.fusions") for a in self.ablations.get("archs", []) for f in self.ablations.get("fusions", [])}
        for arch, fusion, key in sorted(wanted):
            try:
                spec.check_fusion(arch, fusion)
            except ValueError as exc:
                raise ValueError(f"config {key}: {exc}, or give model.fusion per arch "
                                 "(see workflow/schemas/config.schema.yaml)") from None

    # --- the main grid -----------------------------------------------------------------------
    def seeds_for(self, k) -> list[int]:
        """The main grid's seeds at ``k``: config `seeds_by_k` where it names k, else `seeds`."""
        by_k = {str(key): seeds for key, seeds in (self.config.get("seeds_by_k") or {}).items()}  # YAML may give int keys
        return list(by_k.get(str(k), self.config["seeds"]))

    def finetune_metrics(self, archs=None, datasets=None, methods=None, ks=None, seeds=None, variant=None) -> list[str]:
        """metrics.json of a fine-tuning grid (defaults: the main grid, each arch at its main variant)."""
        return [self.tree.run_file(a, d, m, variant or self.variants[a], k, s)
                for a, d, m, k, s in self.run_grid(archs, datasets, methods, ks, seeds)]

    def run_grid(self, archs=None, datasets=None, methods=None, ks=None, seeds=None) -> list[tuple]:
        """``(arch, dataset, method, k, seed)`` of a grid (defaults: the main grid)."""
        return [(a, d, m, str(k), s) for a in (archs or self.archs) for d in (datasets or self.datasets)
                for m in (methods or self.methods) for k in (ks or self.ks) for s in (seeds or self.seeds_for(k))]

    def table_metrics(self, arch) -> list[str]:
        """The main grid of ``arch`` (the table1/table2 targets; ``arch`` may be outside `archs`)."""
        self.check_fusion_points([arch])
        return self.finetune_metrics(archs=[arch])

    # --- ablations (Figures 2-3, Eq. 1 vs 2) ---------------------------------------------------
    def ablation_archs(self) -> list[str]:
        return list(self.ablations.get("archs") or spec.ABLATION_ARCHS)

    def ablation_methods(self) -> list[str]:
        return list(self.ablations.get("methods") or [spec.ABLATION_METHOD])

    def has_ablation_variants(self) -> bool:
        return any(self.ablations.get(key) for key in ABLATION_FACTORS.values())

    def ablation_variants(self, arch, factor=None) -> list[str]:
        """The variants of one factor (depth, fusion, modulation), or of all three, for ``arch``."""
        out = []
        for f, key in ABLATION_FACTORS.items():
            if factor in (None, f):
                out += [self.variant_for(arch, **{f: value}) for value in self.ablations.get(key, [])]
        return _unique(out)

    def ablation_only_variants(self) -> list[str]:
        """Variants that only the ablations use (their runs: rule finetune_ablation)."""
        if not self.ablations:
            return []
        if "_ablation_only" not in self.__dict__:
            self._ablation_only = sorted(
                {v for a in self.ablation_archs() for v in self.ablation_variants(a)} - set(self.variants.values()))
        return list(self._ablation_only)

    def ablation_grid(self, factor=None) -> list[tuple]:
        """``(arch, dataset, method, variant, k, seed)`` of the ablation runs (one factor, or all);
        Baseline-RGB has no saliency branch, so it runs at the main variant only."""
        if not self.ablations:
            return []
        ks = [str(k) for k in self.ablations.get("ks") or self.ks]
        seeds = list(self.ablations.get("seeds") or self.config["seeds"])
        out = []
        for arch in self.ablation_archs():
            for method in self.ablation_methods():
                for variant in [self.variants[arch]] if method == spec.BASELINE else self.ablation_variants(arch, factor):
                    out += [(arch, d, method, variant, k, s) for d in self.ablations.get("datasets") or self.datasets
                            for k in ks for s in seeds]
        return _unique(out)

    def ablation_metrics(self, factor=None) -> list[str]:
        return _unique(self.tree.run_file(a, d, m, v, k, s) for a, d, m, v, k, s in self.ablation_grid(factor))

    def report_grid(self) -> list[tuple]:
        """``(arch, dataset, method, variant, k, seed)`` of every run the report aggregates: the
        main grid, then the ablations."""
        return _unique([(a, d, m, self.variants[a], k, s) for a, d, m, k, s in self.run_grid()] + self.ablation_grid())

    def report_metrics(self) -> list[str]:
        return self.report_run_files("metrics.json")

    # --- fine-tuning jobs (train.finetune_batch) -----------------------------------------------
    def job_ks_and_seeds(self, ablation=False) -> tuple[list[str], list[int]]:
        """ks and seeds of the jobs of the main variants, or (ablation=True) of the ablation-only
        variants. The main variants' jobs also cover the ablations' ks and seeds (their
        Baseline-RGB reference and main-variant points are main-variant runs)."""
        ks = [str(k) for k in (self.ablations.get("ks") or self.ks)]
        seeds = list(self.ablations.get("seeds") or self.config["seeds"])
        if not ablation:
            ks = self.ks + ks
            seeds = list(self.config["seeds"]) + [s for k in self.ks for s in self.seeds_for(k)] + seeds
        return _unique(ks), _unique(seeds)

    def ablation_seeds(self, k) -> list[int]:
        """Seeds the ablations ask of the main variant's jobs at ``k`` (their reference runs)."""
        if not self.ablations or str(k) not in [str(x) for x in (self.ablations.get("ks") or self.ks)]:
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

    # --- Steps 0-1, SMIC maps, the probe -------------------------------------------------------
    def step1_variants(self) -> list[tuple[str, str]]:
        """``(arch, variant)`` of every Step-1 saliency branch the runs start from."""
        out = []
        if set(self.methods) & set(spec.FROM_STEP1):
            out += [(a, self.variants[a]) for a in self.archs]
        if set(self.ablation_methods()) & set(spec.FROM_STEP1) and self.ablations:
            out += [(a, v) for a, _, m, v, _, _ in self.ablation_grid() if m in spec.FROM_STEP1]
        return _unique(out)

    def model_archs(self) -> list[str]:
        """Every arch a job uses (its Step-0 backbone)."""
        return _unique(self.archs + [a for a, *_ in self.ablation_grid()])

    def reference_maps(self) -> dict[str, str]:
        """dataset -> spectral-residual maps for the health table's reference row (smic.reference)."""
        smic = self.config["smic"]
        if not smic.get("reference"):
            return {}
        if smic["source"] != "spectral_residual":
            raise ValueError("smic.reference: true needs smic.source: spectral_residual (the reference row is the "
                             f"spectral residual), not {smic['source']!r}")
        return {d: self.tree.smic_maps(d) for d in self.datasets}

    def smic_folder(self, dataset) -> str | None:
        """The folder of a dataset's precomputed SMIC maps (smic.source: folder), else None."""
        smic = self.config["smic"]
        if smic["source"] != "folder":
            return None
        folder = smic["folders"].get(dataset)
        if not folder:
            raise ValueError(f"smic.source is 'folder' but smic.folders has no entry for dataset {dataset!r}: "
                             "add the folder of its PNG maps, or set smic.source: spectral_residual")
        return folder

    def smic_datasets(self) -> list[str]:
        """The datasets whose SMIC maps a job reads (method smic, or the reference row)."""
        used = [d for a, d, m, *_ in self.run_grid() if m == "smic"]
        used += [d for a, d, m, *_ in self.ablation_grid() if m == "smic"]
        return _unique(used + list(self.reference_maps()))

    def probe_runs(self) -> list[tuple[str, int]]:
        """``(k, seed)`` of the linear probe: every k and seed of the main grid."""
        return [(k, s) for k in self.ks for s in self.seeds_for(k)]

    def probe_outputs(self) -> list[str]:
        if not self.config["probe"]["enabled"]:
            return []
        return [self.tree.probe(a, d) for a in self.archs for d in self.datasets]

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
        every = _unique([self.source] + self.datasets)
        jobs = self.jobs()
        split_seeds = {d: [0] if d == self.source else _unique(
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


def as_json(value) -> str:
    """A structured rule argument (``--settings``, ``--inputs``, ``--benchmarks``)."""
    return json.dumps(value, sort_keys=False)
