# Stages 3-5: Step 0 (backbone), Step 1 (saliency pretraining), Step 2 (fine-tuning, several
# runs per job: see finetune_runs() in common.smk), and the explicit saliency maps of the SMIC
# method.


rule backbone:
    input:
        unpack(backbone_inputs),
    output:
        weights="results/models/{arch}/backbone.pt",
        info="results/models/{arch}/backbone.json",
    params:
        weights=lambda wc: weights_for(wc.arch),
        source=lambda wc, input: (f"--source-prepared {os.path.dirname(input.prepared)} --source-split {input.split}"
                                  if "split" in input.keys() else ""),
        optim=optim_args("backbone"),
        fc_width=config["model"]["fc_width"],
    log:
        f"{LOGS}/backbone/{{arch}}.log",
    benchmark:
        f"{BENCH}/backbone/{{arch}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpu_resources(),
    message:
        "Step 0: {wildcards.arch} backbone ({params.weights})"
    shell:
        "python -m halsal --gpus {resources.gpu} backbone --arch {wildcards.arch} --weights {params.weights} {params.source} "
        "--out {output.weights} {params.optim} --fc-width {params.fc_width} --threads {threads} > {log} 2>&1"


rule pretrain_saliency:
    input:
        backbone="results/models/{arch}/backbone.pt",
        prepared=f"results/prepared/{SOURCE}/images.npy",
        split=f"results/splits/{SOURCE}/seed0.tsv",
    output:
        weights="results/models/{arch}/saliency_{variant}.pt",
        info="results/models/{arch}/saliency_{variant}.json",
    params:
        prepared=lambda wc, input: os.path.dirname(input.prepared),
        optim=optim_args("pretrain"),
        source=SOURCE,
    log:
        f"{LOGS}/pretrain_saliency/{{arch}}/{{variant}}.log",
    benchmark:
        f"{BENCH}/pretrain_saliency/{{arch}}/{{variant}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: RES["threads"]
    # Every Approach A/B job waits for Step 1, Baseline-RGB and the probe do not: start it first,
    # so that the other cores run those beside it instead of idling after it.
    priority: 10
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpu_resources(),
    message:
        "Step 1: saliency branch {wildcards.variant} for {wildcards.arch} on {params.source} (RGB and joint branches frozen)"
    shell:
        "python -m halsal --gpus {resources.gpu} pretrain-saliency --arch {wildcards.arch} --variant {wildcards.variant} "
        "--backbone {input.backbone} --source-prepared {params.prepared} --source-split {input.split} "
        "--out {output.weights} {params.optim} --threads {threads} > {log} 2>&1"


rule smic_maps:
    input:
        index="results/datasets/{dataset}/index.tsv",
        prepared="results/prepared/{dataset}/images.npy",
    output:
        maps="results/smic/{dataset}/maps.npy",
        info="results/smic/{dataset}/maps.json",
    params:
        prepared=lambda wc, input: os.path.dirname(input.prepared),
        source=SMIC["source"],
        folder=lambda wc: smic_folder(wc.dataset),
    log:
        f"{LOGS}/smic_maps/{{dataset}}.log",
    benchmark:
        f"{BENCH}/smic_maps/{{dataset}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
    message:
        "SMIC: explicit saliency maps of {wildcards.dataset} ({params.source})"
    shell:
        "python -m halsal smic-maps --index {input.index} --prepared {params.prepared} "
        "--source {params.source} {params.folder} --out {output.maps} > {log} 2>&1"


rule finetune:
    input:
        **finetune_input(finetune_runs()),
    output:
        metrics=finetune_outputs(finetune_runs()),
    params:
        prepared=lambda wc, input: os.path.dirname(input.prepared),
        runs=finetune_run_args,
        label=finetune_runs_label,
        saliency=lambda wc, input: f"--saliency {input.saliency}" if input.saliency else "",
        maps=lambda wc, input: f"--maps {input.maps}" if input.maps else "",
        synthetic=lambda wc: "--synthetic" if is_synthetic(wc.dataset) else "",
        optim=optim_args("finetune"),
    log:
        finetune_job_path(LOGS, "log"),
    benchmark:
        finetune_job_path(BENCH, "tsv")
    conda:
        "../../envs/train.yaml"
    group:
        "finetune"
    wildcard_constraints:
        variant=variants_regex(VARIANTS.values()),  # the ablation-only variants: finetune_ablation
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpu_resources(),
    message:
        "Step 2: {wildcards.method} on {wildcards.dataset} ({wildcards.arch}, {wildcards.variant}), {params.label}"
    shell:
        "python -m halsal --gpus {resources.gpu} finetune --arch {wildcards.arch} --method {wildcards.method} --variant {wildcards.variant} "
        "--dataset {wildcards.dataset} --prepared {params.prepared} --backbone {input.backbone} "
        "{params.saliency} {params.maps} {params.synthetic} {params.runs} {params.optim} "
        "--threads {threads} > {log} 2>&1"


# The ablation-only variants (Figures 2-3, Eq. 1 vs 2): the same jobs, shaped by the ablations'
# ks and seeds (config/paper.yaml: 4 k x 3 seeds).
if ABLATION_ONLY_VARIANTS:

    use rule finetune as finetune_ablation with:
        input:
            **finetune_input(finetune_runs(ablation=True)),
        output:
            metrics=finetune_outputs(finetune_runs(ablation=True)),
        wildcard_constraints:
            variant=variants_regex(ABLATION_ONLY_VARIANTS),
