# Shared helpers: config validation, wildcard constraints and path builders.
from snakemake.utils import validate, min_version

min_version("9.0")

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
