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


# Resources. The small CPU jobs of the data and report stages take the profile's
# default-resources (workflow/profiles/*/config.yaml); a rule states only what is its own. The
# training rules take the config's size (resources.mem_mb / runtime), and GPU_JOB adds the GPUs
# each job claims (gpu_resources). A profile's set-resources overrides any of them.
TRAIN_JOB = {"mem_mb": config["resources"]["mem_mb"], "runtime": config["resources"]["runtime"]}


def gpu_resources():
    """GPUs per GPU job (config resources.gpu; a profile's set-resources wins). Every GPU rule
    runs `python -m halsal --gpus {resources.gpu} ...`: with 0 the job's GPUs are hidden
    (CUDA_VISIBLE_DEVICES=''), so `device: auto` trains on the CPU and nothing starts CUDA work
    that Snakemake did not count; with N > 0 the job claims N free GPU slots of its own
    (flock, halsal/gpu.py) and narrows CUDA_VISIBLE_DEVICES to them, so jobs that run side by
    side (at most the profile's `resources: gpu=<GPU count>`) never share a GPU, and a GPU that
    torch/DALI cannot use stops the job with the cause instead of a CPU run."""
    return config["resources"]["gpu"]


GPU_JOB = {**TRAIN_JOB, "gpu": gpu_resources()}


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


# The options each command gets are values of the config: one helper per command, a params value
# (so that changing one of them reruns its jobs), never a path taken apart.
def generate_args(wildcards):
    """`halsal generate`'s options: the synthetic dataset's entry."""
    e = plan.dataset_spec(wildcards.dataset)
    return (f"--task {e['task']} --classes {e['classes']} --images-per-class {e['images_per_class']} "
            f"--image-size {e['image_size']} --seed {e['seed']} {per_class_args(wildcards.dataset)}")


def fetch_args(wildcards):
    """`halsal fetch`'s options: the kind, the download folder, a local archive, the subset."""
    e = plan.dataset_spec(wildcards.dataset)
    source = f"--source {e['source']}" if e.get("source") else ""
    subset = f"--subset-per-class {e['subset_per_class']}" if e.get("subset_per_class") else ""
    return (f"--dataset {e['kind']} --root {e.get('root', f'data/{wildcards.dataset}')} {source} {subset} "
            f"{per_class_args(wildcards.dataset)}")


def split_args(wildcards):
    """`halsal split`'s policy options: images per class for val and test, the largest k, and what
    a small class or a duplicate does (the dataset's own entry over `data:`)."""
    name = wildcards.dataset
    policy = lambda key: plan.data_policy(name, key)
    max_k = 1 if name == plan.source else plan.max_k()
    return (f"--val-per-class {policy('val_per_class')} --test-per-class {policy('test_per_class')} --max-k {max_k} "
            f"--too-few {policy('too_few_images')} --duplicates {policy('duplicates')}")


def prepare_args(wildcards):
    """`halsal prepare`'s options: the output folder, the resize, the decoder and what a bad image does."""
    return (f"--out-dir {tree.prepared(wildcards.dataset)} --resize {config['data']['resize']} --backend {config['data']['decode_backend']} "
            f"--on-error {plan.data_policy(wildcards.dataset, 'on_bad_image')}")


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


def finetune_args(wildcards, input):
    """The options of a fine-tuning job beyond its runs and settings: the prepared dataset, the
    Step-1 weights or the SMIC maps where the method starts from them, whether the dataset is
    synthetic (its metrics say so) and what each run keeps of its network."""
    args = [f"--prepared {tree.prepared(wildcards.dataset)}"]
    args += [f"--saliency {input.saliency}"] if input.saliency else []
    args += [f"--maps {input.maps}"] if input.maps else []
    args += ["--synthetic"] if plan.is_synthetic(wildcards.dataset) else []
    return " ".join(args + [f"--save-model {config['train']['save_model']}"])


# Steps 0 and 1 read the source set (config `source`): its prepared images and its split.
SOURCE = plan.source
SOURCE_PREPARED = tree.prepared(SOURCE)
SOURCE_INPUT = dict(images=tree.images(SOURCE), manifest=tree.manifest(SOURCE), split=tree.split(SOURCE, 0))


def probe_args(wildcards):
    """`halsal probe`'s options: the prepared dataset, the arch's variant (for its input size and
    normalisation), whether the dataset is synthetic, the input size and the device."""
    synthetic = " --synthetic" if plan.is_synthetic(wildcards.dataset) else ""
    return (f"--prepared {tree.prepared(wildcards.dataset)} --variant {plan.variants[wildcards.arch]}{synthetic} "
            f"--input-size {config['data']['input_size']} --device {config['train']['device']}")


def smic_args(wildcards):
    """`halsal smic-maps`'s options: the prepared dataset, the maps' source, a folder of maps."""
    folder = plan.smic_folder(wildcards.dataset)
    return (f"--prepared {tree.prepared(wildcards.dataset)} --source {config['smic']['source']}"
            + (f" --folder {folder}" if folder else ""))


# The report (report.smk): captions, the config summary every caption shows, and the options of
# its commands.
from halsal.report.captions import config_summary

CAPTIONS = "../../reports/captions"
CONFIG_SUMMARY = config_summary(plan)
VARIANT_ARG = " ".join(f"{a}={v}" for a, v in plan.variants.items())
DATASETS = " ".join(plan.datasets)
MD_ARCH = plan.archs[0]  # the arch of the Markdown results and of the qualitative grids


def report_item(path, caption, category, subcategory=None, patterns=(), **labels):
    """An output the HTML report shows: its caption (reports/captions/<caption>.rst), category,
    subcategory and labels. A directory's files are listed by `patterns`, and labelled by the
    patterns' wildcards unless labels are given."""
    if patterns and not labels:
        labels = {name: f"{{{name}}}" for name in re.findall(r"{(\w+)}", patterns[0])}
    return report(path, caption=f"{CAPTIONS}/{caption}.rst", category=category, subcategory=subcategory,
                  labels=labels, patterns=list(patterns))


def tables_args():
    """`halsal tables`' options: the output folder, the grid the tables lay out, and which datasets
    are synthetic or a subset (a capped dataset, per_class, is never the paper's dataset in full)."""
    kinds = [f"{d}={s['kind'] + '-subset' if s.get('per_class') else s['kind']}" for d, s in config["datasets"].items()]
    synthetic = [d for d in plan.datasets if plan.is_synthetic(d)]
    return (f"--outdir {tree.report_dir} --variant {VARIANT_ARG} --archs {' '.join(plan.archs)} --datasets {DATASETS} "
            f"--methods {' '.join(plan.methods)} --ks {' '.join(map(str, plan.ks))} "
            f"--synthetic-datasets {' '.join(synthetic)} --dataset-kinds {' '.join(kinds)}")


def data_report_args(inputs):
    """`halsal data-report`'s options: the target datasets, the source set where a step uses it,
    the seeds, and each dataset's kind and data policies."""
    policy = lambda d, key: plan.data_policy(d, key)
    kinds = [f"{d}={plan.dataset_spec(d)['kind']}" for d in inputs]
    policies = [f"{d}={policy(d, 'on_bad_image')},{policy(d, 'too_few_images')},{policy(d, 'duplicates')}" for d in inputs]
    source = f" --source {plan.source}" if plan.source_used() else ""
    return (f"--targets {DATASETS}{source} --seeds {' '.join(map(str, config['seeds']))} "
            f"--kinds {' '.join(kinds)} --policies {' '.join(policies)}")


def markdown_args():
    """`halsal results-md`'s options: the report folder, the arch and variant it describes, the
    source set and the datasets."""
    return (f"--report-dir {tree.report_dir} --arch {MD_ARCH} --variant {plan.variants[MD_ARCH]} "
            f"--source {plan.source} --datasets {DATASETS}")
