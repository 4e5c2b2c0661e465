# Shared helpers: config validation, the run plan (halsal.plan: the run grid and the report's
# inputs), the results tree (halsal.tree: every path) and wildcard constraints. The rules take
# their files and arguments from `plan` and `tree`; no rule takes a path apart.
import re

from snakemake.utils import validate, min_version

from halsal import front_page, plan as halsal_plan, settings, smk_env, spec, tree as halsal_tree

min_version("9.0")

# The default config is used unless --configfile names others: Snakemake would otherwise
# merge the two (the default's synthetic datasets would join the paper's grid).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, schema="../schemas/config.schema.yaml")

try:
    plan = halsal_plan.Plan(config)  # also checks archs, methods and fusion points against halsal.spec
except ValueError as exc:
    raise WorkflowError(f"{exc} (see workflow/schemas/config.schema.yaml)") from None
tree = plan.tree
config[front_page.KEY] = front_page.facts(plan)  # the report's front page (reports/workflow.rst) describes this run


wildcard_constraints:
    dataset=r"[A-Za-z0-9_\-]+",
    arch="|".join(re.escape(a) for a in plan.variants),  # the paper's archs, EfficientNet-Lite0 and any timm/<name>
    method="|".join(spec.METHOD_NAMES),
    variant=spec.VARIANT_PATTERN,
    k=rf"[0-9]+|{spec.K_ALL}",
    seed=r"[0-9]+",


# Rules run `python -m halsal` from this checkout (see halsal/smk_env.py).
smk_env.setup(workflow.basedir, bool(workflow.deployment_settings.deployment_method))


def gpu_resources():
    """GPUs per GPU job (config resources.gpu; a profile's set-resources wins). Every GPU rule
    runs `python -m halsal --gpus {resources.gpu} ...`: with 0 the job's GPUs are hidden
    (CUDA_VISIBLE_DEVICES=''), so `device: auto` trains on the CPU and nothing starts CUDA work
    that Snakemake did not count; with N > 0 the job claims N free GPU slots of its own
    (flock, halsal/gpu.py) and narrows CUDA_VISIBLE_DEVICES to them, so jobs that run side by
    side (at most the profile's `resources: gpu=<GPU count>`) never share a GPU, and a GPU that
    torch/DALI cannot use stops the job with the cause instead of a CPU run."""
    return config["resources"]["gpu"]


def one_of(names):
    """A wildcard regex matching exactly these names (none: matches nothing)."""
    import re

    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def folder_listing(root):
    """A checksum of every file under ``root`` (relative name, size, mtime): a params value of
    the index_folder rule, so that adding, removing or replacing a file re-indexes the folder
    (Snakemake's params rerun trigger) and re-runs everything downstream of the index."""
    import hashlib
    import os

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


def per_class_args(name):
    """`--per-class N --per-class-seed S` from datasets.<name>.per_class / per_class_seed, "" without
    a cap: a params value of each indexing rule, so changing the cap re-indexes."""
    entry = plan.dataset_spec(name)
    if entry.get("per_class") is None:
        return ""
    return f"--per-class {entry['per_class']} --per-class-seed {entry['per_class_seed']}"


def step_settings(step):
    """A training step's settings as the one JSON argument of `halsal <step> --settings`."""
    return settings.step_settings_json(config, step)


def saliency_input(wildcards):
    """Step 1's saliency branch, for the methods that start from it."""
    if wildcards.method in spec.FROM_STEP1:
        return tree.saliency(wildcards.arch, wildcards.variant)
    return []


def smic_maps_input(wildcards):
    """The dataset's explicit saliency maps, for method smic only."""
    return tree.smic_maps(wildcards.dataset) if wildcards.method == "smic" else []


def smic_info_input(wildcards):
    return tree.smic_info(wildcards.dataset) if wildcards.method == "smic" else []


def finetune_input(ablation=False):
    """Inputs of a fine-tuning job; `split` lists each run's split file in the order of its runs."""
    return dict(
        images=tree.images("{dataset}"),
        manifest=tree.manifest("{dataset}"),
        split=plan.job_split_inputs(ablation),
        backbone=tree.backbone("{arch}"),
        backbone_info=tree.backbone_info("{arch}"),
        saliency=saliency_input,
        maps=smic_maps_input,
        maps_info=smic_info_input,
    )


def finetune_output(ablation=False):
    """Every file of each run of a job: the report reads them all."""
    return {name.split(".")[0]: plan.job_outputs(ablation, name) for name in halsal_tree.RUN_FILES}


def finetune_runs(wildcards):
    """`--runs` of a job: [k, seed, split, run_dir] of each run, from the plan (never from paths)."""
    return halsal_plan.as_json(plan.run_args(wildcards))


def finetune_label(wildcards):
    """The runs of a job, for its message: k values and seeds."""
    runs = plan.runs_of(wildcards)
    ks, seeds = dict.fromkeys(k for k, _ in runs), dict.fromkeys(str(s) for _, s in runs)
    return f"k={','.join(ks)}, seed {','.join(seeds)} ({len(runs)} run{'s' if len(runs) > 1 else ''} in one process)"


def saliency_arg(wildcards, input):
    return f"--saliency {input.saliency}" if input.saliency else ""


def maps_arg(wildcards, input):
    return f"--maps {input.maps}" if input.maps else ""
