# Stages 3-5: Step 0 (backbone), Step 1 (saliency pretraining), Step 2 (fine-tuning, several
# runs per job: halsal.plan.Plan.job_runs), and the explicit saliency maps of the SMIC method.
# Each training step takes its settings as one JSON argument (halsal.settings.step_settings).


# Step 0 reads the source set: to train on it (scratch), or to measure the weights on its test
# images (ImageNet weights, or a local file).
rule backbone:
    input:
        images=tree.images(plan.source),
        manifest=tree.manifest(plan.source),
        split=tree.split(plan.source, 0),
    output:
        weights=tree.backbone("{arch}"),
        info=tree.backbone_info("{arch}"),
    params:
        weights=lambda wc: plan.weights_for(wc.arch),
        prepared=lambda wc: tree.prepared(plan.source),
        settings=step_settings("backbone"),
        fc_width=plan.fc_width,
    log:
        tree.log("backbone", "{arch}"),
    benchmark:
        tree.bench("backbone", "{arch}")
    conda:
        "../../envs/train.yaml"
    threads: config["resources"]["threads"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=gpu_resources(),
    message:
        "Step 0: {wildcards.arch} backbone ({params.weights})"
    shell:
        "python -m halsal --gpus {resources.gpu} backbone --arch {wildcards.arch} --weights {params.weights} "
        "--source-prepared {params.prepared} --source-split {input.split} --out {output.weights} "
        "--settings {params.settings:q} --fc-width {params.fc_width} --threads {threads} > {log} 2>&1"


rule pretrain_saliency:
    input:
        backbone=rules.backbone.output.weights,
        images=tree.images(plan.source),
        manifest=tree.manifest(plan.source),
        split=tree.split(plan.source, 0),
    output:
        weights=tree.saliency("{arch}", "{variant}"),
        info=tree.saliency_info("{arch}", "{variant}"),
    params:
        prepared=lambda wc: tree.prepared(plan.source),
        settings=step_settings("pretrain"),
        source=plan.source,
    log:
        tree.log("pretrain_saliency", "{arch}/{variant}"),
    benchmark:
        tree.bench("pretrain_saliency", "{arch}/{variant}")
    conda:
        "../../envs/train.yaml"
    threads: config["resources"]["threads"]
    # Every Approach A/B job waits for Step 1, Baseline-RGB and the probe do not: start it first,
    # so that the other cores run those beside it instead of idling after it.
    priority: 10
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=gpu_resources(),
    message:
        "Step 1: saliency branch {wildcards.variant} for {wildcards.arch} on {params.source} (RGB and joint branches frozen)"
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
        prepared=lambda wc: tree.prepared(wc.dataset),
        source=config["smic"]["source"],
        folder=lambda wc: f"--folder {plan.smic_folder(wc.dataset)}" if plan.smic_folder(wc.dataset) else "",
    log:
        tree.log("smic_maps", "{dataset}"),
    benchmark:
        tree.bench("smic_maps", "{dataset}")
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    message:
        "SMIC: explicit saliency maps of {wildcards.dataset} ({params.source})"
    shell:
        "python -m halsal smic-maps --index {input.index} --prepared {params.prepared} "
        "--source {params.source} {params.folder} --out {output.maps} > {log} 2>&1"


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
        prepared=lambda wc: tree.prepared(wc.dataset),
        runs=finetune_runs,
        label=finetune_label,
        saliency=saliency_arg,
        maps=maps_arg,
        synthetic=lambda wc: "--synthetic" if plan.is_synthetic(wc.dataset) else "",
        settings=step_settings("finetune"),
        save_model=config["train"]["save_model"],
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
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=gpu_resources(),
    message:
        "Step 2: {wildcards.method} on {wildcards.dataset} ({wildcards.arch}, {wildcards.variant}), {params.label}"
    shell:
        "python -m halsal --gpus {resources.gpu} finetune --arch {wildcards.arch} --method {wildcards.method} --variant {wildcards.variant} "
        "--dataset {wildcards.dataset} --prepared {params.prepared} --backbone {input.backbone} "
        "{params.saliency} {params.maps} {params.synthetic} --runs {params.runs:q} --settings {params.settings:q} "
        "--save-model {params.save_model} --threads {threads} > {log} 2>&1"


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
