# A reference row that is not in the paper (config `probe.enabled`): logistic regression on the
# frozen backbone's pooled features, per dataset, for every k and seed of the main grid, on the
# same split files as Step 2. The tables show it beside the paper's methods.

rule probe:
    input:
        images=tree.images("{dataset}"),
        manifest=tree.manifest("{dataset}"),
        backbone=rules.backbone.output.weights,
        split=[tree.split("{dataset}", s) for _, s in plan.probe_runs()],
    output:
        tsv=tree.probe("{arch}", "{dataset}"),
    params:
        prepared=lambda wc: tree.prepared(wc.dataset),
        runs=lambda wc: halsal_plan.as_json([[k, s, tree.split(wc.dataset, s)] for k, s in plan.probe_runs()]),
        variant=lambda wc: plan.variants[wc.arch],
        synthetic=lambda wc: "--synthetic" if plan.is_synthetic(wc.dataset) else "",
        input_size=config["data"]["input_size"],
        device=config["train"]["device"],
    log:
        tree.log("probe", "{arch}/{dataset}"),
    benchmark:
        tree.bench("probe", "{arch}/{dataset}")
    conda:
        "../../envs/train.yaml"
    threads: config["resources"]["threads"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=gpu_resources(),
    message:
        "Linear probe (not in the paper) on {wildcards.dataset}, {wildcards.arch} frozen features"
    shell:
        "python -m halsal --gpus {resources.gpu} probe --arch {wildcards.arch} --dataset {wildcards.dataset} --prepared {params.prepared} "
        "--backbone {input.backbone} --runs {params.runs:q} --variant {params.variant} {params.synthetic} "
        "--input-size {params.input_size} --device {params.device} --threads {threads} --out {output.tsv} > {log} 2>&1"
