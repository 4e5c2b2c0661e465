# Stages 3-5: Step 0 (backbone), Step 1 (saliency pretraining), Step 2 (fine-tuning, several
# runs per job: halsal.plan.Plan.job_runs), and the explicit saliency maps of the SMIC method.
# Each training step takes its settings as one JSON argument (halsal.settings.step_settings).


# Step 0 reads the source set: to train on it (scratch), or to measure the weights on its test
# images (ImageNet weights, or a local file).
rule backbone:
    input:
        **SOURCE_INPUT,
    output:
        weights=tree.backbone("{arch}"),
        info=tree.backbone_info("{arch}"),
    params:
        weights=lambda wc: plan.weights_for(wc.arch),
        args=f"--source-prepared {SOURCE_PREPARED} --fc-width {plan.fc_width}",
        settings=step_settings("backbone"),
    log:
        tree.log("backbone", "{arch}"),
    benchmark:
        tree.bench("backbone", "{arch}")
    conda:
        "../../envs/train.yaml"
    threads: config["resources"]["threads"]
    resources:
        **GPU_JOB,
    shell:
        "python -m halsal --gpus {resources.gpu} backbone --arch {wildcards.arch} --weights {params.weights} {params.args} "
        "--source-split {input.split} --out {output.weights} --settings {params.settings:q} --threads {threads} > {log} 2>&1"


# Every Approach A/B job waits for Step 1, Baseline-RGB and the probe do not: priority starts it
# first, so that the other cores run those beside it instead of idling after it.
rule pretrain_saliency:
    input:
        **SOURCE_INPUT,
        backbone=rules.backbone.output.weights,
    output:
        weights=tree.saliency("{arch}", "{variant}"),
        info=tree.saliency_info("{arch}", "{variant}"),
    params:
        prepared=lambda wc: SOURCE_PREPARED,
        settings=step_settings("pretrain"),
    log:
        tree.log("pretrain_saliency", "{arch}/{variant}"),
    benchmark:
        tree.bench("pretrain_saliency", "{arch}/{variant}")
    conda:
        "../../envs/train.yaml"
    threads: config["resources"]["threads"]
    priority: 10
    resources:
        **GPU_JOB,
    shell:
        "python -m halsal --gpus {resources.gpu} pretrain-saliency --arch {wildcards.arch} --variant {wildcards.variant} "
        "--backbone {input.backbone} --source-prepared {params.prepared} --source-split {input.split} "
        "--out {output.weights} --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule smic_maps:
    input:
        index=tree.index("{dataset}"),
        images=tree.images("{dataset}"),
        manifest=tree.manifest("{dataset}"),
    output:
        maps=tree.smic_maps("{dataset}"),
        info=tree.smic_info("{dataset}"),
    params:
        args=smic_args,
    log:
        tree.log("smic_maps", "{dataset}"),
    benchmark:
        tree.bench("smic_maps", "{dataset}")
    conda:
        "../../envs/train.yaml"
    resources:
        **TRAIN_JOB,
    shell:
        "python -m halsal smic-maps --index {input.index} {params.args} --out {output.maps} > {log} 2>&1"


# Fine-tuning jobs (GitHub issue 11): one job trains a batch of runs in one process
# (train.finetune_batch: all = every k and seed of one arch, dataset, method and variant; seed;
# run), so torch, the image cache, the backbone and the Step-1 weights load once per job. Every
# file of a run is declared; a job that fails or is killed loses no finished run, because each
# run leaves a completion record from which the job, run again, restores it instead of training
# it again (halsal.train.records).
rule finetune:
    input:
        **finetune_input(),
    output:
        **finetune_output(),
    params:
        runs=finetune_runs,
        label=finetune_label,
        args=finetune_args,
        settings=step_settings("finetune"),
    log:
        plan.job_log(tree.log),
    benchmark:
        plan.job_log(tree.bench)
    conda:
        "../../envs/train.yaml"
    group:
        "finetune"
    wildcard_constraints:
        variant=one_of(plan.variants.values()),  # the ablation-only variants: finetune_ablation
    threads: config["resources"]["threads"]
    resources:
        **GPU_JOB,
    message:
        "Step 2: {wildcards.method} on {wildcards.dataset} ({wildcards.arch}, {wildcards.variant}), {params.label}"
    shell:
        "python -m halsal --gpus {resources.gpu} finetune --arch {wildcards.arch} --method {wildcards.method} --variant {wildcards.variant} "
        "--dataset {wildcards.dataset} {params.args} --backbone {input.backbone} --runs {params.runs:q} --settings {params.settings:q} "
        "--threads {threads} > {log} 2>&1"


# The ablation-only variants (Figures 2-3, Eq. 1 vs 2): the same jobs, shaped by the ablations'
# ks and seeds (config/paper.yaml: 4 k x 3 seeds).
if plan.ablation_only_variants():

    use rule finetune as finetune_ablation with:
        input:
            **finetune_input(ablation=True),
        output:
            **finetune_output(ablation=True),
        wildcard_constraints:
            variant=one_of(plan.ablation_only_variants()),
