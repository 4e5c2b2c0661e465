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
        runs=lambda wc: halsal_plan.as_json([[k, s, tree.split(wc.dataset, s)] for k, s in plan.probe_runs()]),
        args=probe_args,
    log:
        tree.log("probe", "{arch}/{dataset}"),
    benchmark:
        tree.bench("probe", "{arch}/{dataset}")
    conda:
        "../../envs/train.yaml"
    threads: config["resources"]["threads"]
    resources:
        **GPU_JOB,
    shell:
        "python -m halsal --gpus {resources.gpu} probe --arch {wildcards.arch} --dataset {wildcards.dataset} {params.args} "
        "--backbone {input.backbone} --runs {params.runs:q} --threads {threads} --out {output.tsv} > {log} 2>&1"
