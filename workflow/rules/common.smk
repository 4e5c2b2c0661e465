# Shared helpers: config validation, wildcard constraints and path builders.
import os
import re

from snakemake.utils import validate, min_version

from halsal import smk_env

min_version("9.0")

# The default config is used unless --configfile names others: Snakemake would otherwise
# merge the two (the default's synthetic datasets would join the paper's grid).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, schema="../schemas/config.schema.yaml")

M = config["model"]
DATA = config["data"]
RES = config["resources"]
# The default ablation variant: saliency depth, fusion point, modulation equation.
VARIANT = f"d{M['saliency_depth']}-{M['fusion']}-{M['modulation']}"
SOURCE = config["source"]["name"]
LOGS = "logs"
BENCH = "benchmarks"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_\-]+",
    arch=r"alexnet|resnet152",
    method=r"baseline|scratch_sal|smic|approach_a|approach_b",
    variant=r"d[1-5]-[A-Za-z0-9_.]+-eq[12]",
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


def run_dir(arch, dataset, method, variant, k, seed):
    return f"results/runs/{arch}/{dataset}/{method}/{variant}/k{k}/seed{seed}"


def finetune_metrics(archs=None, datasets=None, methods=None, ks=None, seeds=None, variant=None):
    """metrics.json paths of a fine-tuning grid (defaults: the configured main grid)."""
    return [
        f"{run_dir(a, d, m, variant or VARIANT, k, s)}/metrics.json"
        for a in (archs or config["archs"])
        for d in (datasets or list(config["datasets"]))
        for m in (methods or config["methods"])
        for k in (ks or config["ks"])
        for s in (seeds or config["seeds"])
    ]


def gpu_resources():
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
    if not aug["random_crop"]:
        args += " --no-random-crop"
    if not aug["flip"]:
        args += " --no-flip"
    return args


def max_k():
    ints = [k for k in config["ks"] if k != "K"]
    return max(ints) if ints else 1


def backbone_inputs(wildcards):
    if config["model"]["weights"] == "scratch":
        return {"prepared": f"results/prepared/{SOURCE}/images.npy", "split": f"results/splits/{SOURCE}/seed0.tsv"}
    return {}


# Methods that start from the Step-1 saliency branch (halsal.train.steps.METHODS).
FROM_STEP1 = {"approach_a", "approach_b"}


def saliency_input(wildcards):
    if wildcards.method in FROM_STEP1:
        return f"results/models/{wildcards.arch}/saliency_{wildcards.variant}.pt"
    return []
