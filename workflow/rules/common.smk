# Shared helpers: config validation, wildcard constraints and path builders.
import os
import re

from snakemake.utils import validate, min_version

from halsal import smk_env, spec

min_version("9.0")

# The default config is used unless --configfile names others: Snakemake would otherwise
# merge the two (the default's synthetic datasets would join the paper's grid).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, schema="../schemas/config.schema.yaml")

M = config["model"]
DATA = config["data"]
RES = config["resources"]
# The paper's vocabulary (methods, archs, fusion points, the variant format) is halsal.spec's:
# torch-free, so loading the workflow imports no torch.
DEFAULT_FUSION = spec.DEFAULT_FUSION


def per_arch(value, arch, default=None):
    """A model setting given as one value for every arch or as an {arch: value} mapping."""
    if isinstance(value, dict):
        return value.get(arch, default)
    return value


def fusion_for(arch):
    return per_arch(M["fusion"], arch, DEFAULT_FUSION[arch])


def weights_for(arch):
    return per_arch(M["weights"], arch, "imagenet")


def variant_for(arch, depth=None, fusion=None, modulation=None):
    """The {variant} wildcard: saliency depth, fusion point, modulation equation."""
    return spec.format_variant(depth or M["saliency_depth"], fusion or fusion_for(arch), modulation or M["modulation"])


# The main (non-ablation) variant of each arch; VARIANT is the first configured arch's (the
# report's tables and plots use it).
VARIANTS = {arch: variant_for(arch) for arch in spec.ARCHS}
VARIANT = VARIANTS[config["archs"][0]]
SOURCE = config["source"]["name"]
LOGS = "logs"
BENCH = "benchmarks"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_\-]+",
    arch="|".join(spec.ARCHS),
    method="|".join(spec.METHOD_NAMES),
    variant=spec.VARIANT_PATTERN,
    k=r"[0-9]+|K",
    seed=r"[0-9]+",


def dataset_spec(name):
    """The config entry of a target dataset or of the source set."""
    if name == SOURCE:
        return config["source"]
    if name in config["datasets"]:
        return config["datasets"][name]
    raise ValueError(
        f"dataset {name!r} is not in the config: add it under `datasets:` "
        f"(known: {sorted(config['datasets'])} and source {SOURCE!r})"
    )


def is_synthetic(name):
    spec = dataset_spec(name)
    return spec["kind"] == "synthetic" or bool(spec.get("synthetic", False))


def data_policy(name, key):
    """`on_bad_image` / `too_few_images` of one dataset: its own entry (datasets.<name> or
    source) over `data.<key>`. Each job gets its own dataset's value only, so changing a target's
    policy re-runs that dataset's jobs, not the source set's (backbone, Step 1) or the others'."""
    return dataset_spec(name).get(key, DATA[key])


def source_used():
    """Whether a step trains on the source set: Step 0 (weights: scratch) or Step 1 (the
    methods that start from it, in the main grid or the ablations)."""
    abl = config.get("ablations") or {}
    methods, archs = set(config["methods"]), set(config["archs"])
    if any(abl.get(key) for key in ("depths", "fusions", "modulations")):
        methods |= set(abl.get("methods", [spec.ABLATION_METHOD]))
        archs |= set(abl.get("archs", ["alexnet"]))
    return bool(methods & FROM_STEP1) or any(weights_for(a) == "scratch" for a in archs)


def dataset_root(name):
    """Where a folder dataset's images/<class>/<file> tree lives (`source`, else `root`)."""
    spec = dataset_spec(name)
    return spec.get("source") or spec["root"]


def per_class_args(name):
    """`--per-class N --per-class-seed S` from datasets.<name>.per_class / per_class_seed (or the
    source set's), "" without a cap: the index keeps a seeded sample of at most N images per
    class. A params value of each indexing rule (datasets.smk), so changing the cap re-indexes."""
    spec = dataset_spec(name)
    if spec.get("per_class") is None:
        return ""
    return f"--per-class {spec['per_class']} --per-class-seed {spec.get('per_class_seed', 0)}"


def folder_listing(root):
    """A checksum of every file under ``root`` (relative name, size, mtime): a params value of
    the index_folder rule, so that adding, removing or replacing a file re-indexes the folder
    (Snakemake's params rerun trigger) and re-runs everything downstream of the index."""
    import hashlib

    if not os.path.isdir(root):
        return "missing"
    digest = hashlib.sha1()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        digest.update(f"{os.path.relpath(dirpath, root)}/\n".encode())
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:  # a dangling link
                continue
            digest.update(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def run_dir(arch, dataset, method, variant, k, seed):
    return f"results/runs/{arch}/{dataset}/{method}/{variant}/k{k}/seed{seed}"


def finetune_metrics(archs=None, datasets=None, methods=None, ks=None, seeds=None, variant=None):
    """metrics.json paths of a fine-tuning grid (defaults: the configured main grid, each arch
    at its main variant)."""
    return [
        f"{run_dir(a, d, m, variant or VARIANTS[a], k, s)}/metrics.json"
        for a in (archs or config["archs"])
        for d in (datasets or list(config["datasets"]))
        for m in (methods or config["methods"])
        for k in (ks or config["ks"])
        for s in (seeds or seeds_for(k))
    ]


def seeds_for(k):
    """The main grid's seeds at ``k``: config `seeds_by_k` where it names k, else `seeds`
    (the demo runs more seeds where runs are cheap, so its intervals can decide)."""
    return list((config.get("seeds_by_k") or {}).get(str(k), config["seeds"]))


def gpu_resources():
    """GPUs per GPU job (config resources.gpu; a profile's set-resources wins). Every GPU rule
    runs `python -m halsal --gpus {resources.gpu} ...`: with 0 the job's GPUs are hidden
    (CUDA_VISIBLE_DEVICES=''), so `device: auto` trains on the CPU and nothing starts CUDA work
    that Snakemake did not count; with N > 0 the job claims N free GPU slots of its own
    (flock, halsal/gpu.py) and narrows CUDA_VISIBLE_DEVICES to them, so jobs that run side by
    side (at most the profile's `resources: gpu=<GPU count>`) never share a GPU, and a GPU that
    torch/DALI cannot use stops the job with the cause instead of a CPU run."""
    return RES["gpu"]


# Rules run `python -m halsal` from this checkout (see halsal/smk_env.py).
smk_env.setup(workflow.basedir, bool(workflow.deployment_settings.deployment_method))


def kinds(*wanted):
    """Wildcard regex matching the configured datasets (targets and source) of these kinds."""
    names = [n for n, s in {**config["datasets"], SOURCE: config["source"]}.items() if s["kind"] in wanted]
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def optim_args(step):
    """CLI options for a training step from config['train'][step] and config['data']."""
    o, aug = config["train"][step], config["train"]["augment"]
    args = (f"--epochs {o['epochs']} --lr {o['lr']} --optimizer {o['optimizer']} --momentum {o['momentum']} "
            f"--weight-decay {o['weight_decay']} --batch-size {o['batch_size']} --input-size {DATA['input_size']} "
            f"--device {config['train']['device']} --checkpoint-seconds {config['train']['checkpoint_seconds']}")
    if o.get("saliency_lr"):
        args += f" --saliency-lr {o['saliency_lr']}"
    args += f" --precision {config['train']['precision']}"
    if config["train"]["channels_last"]:
        args += " --channels-last"
    if not aug["random_crop"]:
        args += " --no-random-crop"
    if not aug["flip"]:
        args += " --no-flip"
    return args


def max_k():
    """The largest integer k of the main grid and the ablations (the split needs it)."""
    ks = list(config["ks"]) + list(config.get("ablations", {}).get("ks") or [])
    ints = [k for k in ks if k != "K"]
    return max(ints) if ints else 1


def backbone_inputs(wildcards):
    """Step 0 reads the source set: to train on it (scratch), or to measure the weights on its
    test images (ImageNet weights, or a local file)."""
    return {"prepared": f"results/prepared/{SOURCE}/images.npy", "split": f"results/splits/{SOURCE}/seed0.tsv"}


# Methods that start from the Step-1 saliency branch (halsal.spec).
FROM_STEP1 = set(spec.FROM_STEP1)


def saliency_input(wildcards):
    if wildcards.method in FROM_STEP1:
        return f"results/models/{wildcards.arch}/saliency_{wildcards.variant}.pt"
    return []


SMIC = config["smic"]


def smic_maps_input(wildcards):
    """The dataset's explicit saliency maps, for method smic only."""
    if wildcards.method == "smic":
        return f"results/smic/{wildcards.dataset}/maps.npy"
    return []


def reference_maps_inputs():
    """The spectral-residual maps of every dataset for the health table's reference row
    (config smic.reference), else none."""
    if not SMIC.get("reference"):
        return []
    if SMIC["source"] != "spectral_residual":
        raise ValueError("smic.reference: true needs smic.source: spectral_residual (the reference row is the "
                         f"spectral residual), not {SMIC['source']!r}")
    return [f"results/smic/{d}/maps.npy" for d in config["datasets"]]


def smic_folder(dataset):
    """`--folder` of the smic-maps command for this dataset (source: folder)."""
    if SMIC["source"] != "folder":
        return ""
    folder = SMIC["folders"].get(dataset)
    if not folder:
        raise ValueError(f"smic.source is 'folder' but smic.folders has no entry for dataset {dataset!r}: "
                         "add the folder of its PNG maps, or set smic.source: spectral_residual")
    return f"--folder {folder}"


def check_fusion_points(archs=None):
    """Fail at parse time (a dry run) on a fusion point that the arch does not have."""
    abl = config.get("ablations") or {}
    wanted = {(a, fusion_for(a), "model.fusion") for a in (archs or config["archs"])}
    if archs is None:
        wanted |= {(a, f, "ablations.fusions") for a in abl.get("archs", []) for f in abl.get("fusions", [])}
    for arch, fusion, key in sorted(wanted):
        try:
            spec.check_fusion(arch, fusion)
        except ValueError as exc:
            raise ValueError(f"config {key}: {exc}, or give model.fusion per arch "
                             "(see workflow/schemas/config.schema.yaml)") from None


check_fusion_points()


def table_metrics(arch):
    """Input function of the table1/table2 targets: the main grid of ``arch``, which may be
    outside config `archs` (so its fusion point is checked here, when the target is asked for)."""

    def metrics(wildcards):
        check_fusion_points([arch])
        return finetune_metrics(archs=[arch])

    return metrics


# Ablations (ablations.smk): the variants of each factor, one at a time around the main variant.
ABL = config.get("ablations") or {}
ABLATION_FACTORS = {"depth": "depths", "fusion": "fusions", "modulation": "modulations"}


def ablation_variants(arch, factor=None):
    """The variants of one factor (depth, fusion, modulation), or of all three, for ``arch``."""
    out = []
    for f, key in ABLATION_FACTORS.items():
        if factor in (None, f):
            out += [variant_for(arch, **{f: value}) for value in ABL.get(key, [])]
    return list(dict.fromkeys(out))


# Variants that only the ablations use: their runs come from the finetune_ablation rule.
ABLATION_ONLY_VARIANTS = sorted(
    {v for arch in ABL.get("archs", ["alexnet"]) for v in ablation_variants(arch)} - set(VARIANTS.values())
)


# Fine-tuning jobs (GitHub issue 11): one `finetune` job trains a batch of runs in one
# process (halsal.train.steps.finetune_batch), so torch, the image cache, the backbone and the
# Step-1 weights are loaded once per job, not once per run. train.finetune_batch sets the batch:
#   all   every k and seed of one (arch, dataset, method, variant)  (paper: 39 jobs, 1008 runs)
#   seed  every k of one (arch, dataset, method, variant, seed)
#   run   one run per job
# Only each run's metrics.json is declared: a job that fails or is killed loses no finished
# run, because every run also leaves a completion record (complete.json) from which the job,
# run again, restores metrics.json instead of training again (halsal.train.steps.restore_run).
FINETUNE_BATCH = config["train"]["finetune_batch"]


def finetune_grid(ablation=False):
    """ks and seeds of the fine-tuning jobs of the main variants, or (ablation=True) of the
    ablation-only variants. The main variants' jobs also cover the ablations' ks and seeds,
    whose Baseline-RGB reference and main-variant points are main-variant runs."""
    abl = config.get("ablations") or {}
    ks = [str(k) for k in (abl.get("ks") or config["ks"])]
    seeds = list(abl.get("seeds") or config["seeds"])
    if not ablation:
        ks = [str(k) for k in config["ks"]] + ks
        seeds = list(config["seeds"]) + [s for k in config["ks"] for s in seeds_for(k)] + seeds
    return list(dict.fromkeys(ks)), list(dict.fromkeys(seeds))


def finetune_runs(ablation=False):
    """(k, seed) of the runs of one fine-tuning job, literal values or {k}/{seed} wildcards."""
    ks, seeds = finetune_grid(ablation)
    if FINETUNE_BATCH == "run":
        return [("{k}", "{seed}")]
    if FINETUNE_BATCH == "seed":
        return [(k, "{seed}") for k in ks]
    if not ablation:  # the main grid may run other seeds at some k (seeds_by_k)
        return [(k, s) for s in seeds for k in ks if s in seeds_for(k) or s in abl_seeds(k)]
    return [(k, s) for s in seeds for k in ks]


def abl_seeds(k):
    """Seeds the ablations ask of the main variant's jobs at ``k`` (their reference runs)."""
    abl = config.get("ablations") or {}
    if not abl or str(k) not in [str(x) for x in (abl.get("ks") or config["ks"])]:
        return []
    return list(abl.get("seeds") or config["seeds"])


def finetune_outputs(runs):
    """metrics.json of each run of a job (the only declared outputs, see above)."""
    return [f"results/runs/{{arch}}/{{dataset}}/{{method}}/{{variant}}/k{k}/seed{s}/metrics.json" for k, s in runs]


def finetune_input(runs):
    """Inputs of a fine-tuning job; `split` lists each run's split file in the order of the
    outputs (one seed's file repeats for its k), so len(input.split) counts the runs."""
    return dict(
        prepared="results/prepared/{dataset}/images.npy",
        split=[f"results/splits/{{dataset}}/seed{s}.tsv" for _, s in runs],
        backbone="results/models/{arch}/backbone.pt",
        saliency=saliency_input,
        maps=smic_maps_input,
    )


def finetune_job_path(root, ext):
    """The log or benchmark file of a fine-tuning job (one per job, named by its wildcards)."""
    name = {"run": "{variant}/k{k}/seed{seed}", "seed": "{variant}/seed{seed}", "all": "{variant}"}[FINETUNE_BATCH]
    return f"{root}/finetune/{{arch}}/{{dataset}}/{{method}}/{name}.{ext}"


# k and seed of a run, from its metrics.json path
RUN_METRICS_RE = re.compile(r"(?<![^/])k([^/]+)/seed([0-9]+)/metrics\.json$")


def _as_list(files):
    return [files] if isinstance(files, str) else list(files)


def finetune_run_args(wildcards, input, output):
    """`--run K SEED SPLIT OUT_DIR` for each run of the job, from its outputs and split inputs."""
    args = []
    for metrics, split in zip(_as_list(output.metrics), _as_list(input.split), strict=True):
        k, seed = RUN_METRICS_RE.search(metrics).groups()
        args.append(f"--run {k} {seed} {split} {os.path.dirname(metrics)}")
    return " ".join(args)


def finetune_runs_label(wildcards, output):
    """The runs of a job, for its message: k values and seeds."""
    found = [RUN_METRICS_RE.search(m).groups() for m in _as_list(output.metrics)]
    ks, seeds = dict.fromkeys(k for k, _ in found), dict.fromkeys(s for _, s in found)
    return f"k={','.join(ks)}, seed {','.join(seeds)} ({len(found)} run{'s' if len(found) > 1 else ''} in one process)"


def variants_regex(variants):
    return "|".join(re.escape(v) for v in variants) if variants else "(?!x)x"


# The linear probe (workflow/rules/probe.smk): every k and seed of the main grid.
PROBE_RUNS = [(str(k), s) for k in config["ks"] for s in seeds_for(k)]


def probe_outputs():
    """probe.tsv of every configured arch and dataset, or nothing when the probe is off."""
    if not config["probe"]["enabled"]:
        return []
    return [f"results/probe/{a}/{d}/probe.tsv" for a in config["archs"] for d in config["datasets"]]
