# A reference row that is not in the paper (config `probe.enabled`): logistic regression on the
# frozen backbone's pooled features, per dataset, for every k and seed of the main grid, on the
# same split files as Step 2. The tables show it beside the paper's methods.

rule probe:
    input:
        prepared="results/prepared/{dataset}/images.npy",
        backbone="results/models/{arch}/backbone.pt",
        split=[f"results/splits/{{dataset}}/seed{s}.tsv" for _, s in PROBE_RUNS],
    output:
        tsv="results/probe/{arch}/{dataset}/probe.tsv",
    params:
        prepared=lambda wc, input: os.path.dirname(input.prepared),
        runs=lambda wc, input: " ".join(f"--run {k} {s} {p}" for (k, s), p in zip(PROBE_RUNS, input.split, strict=True)),
        variant=lambda wc: VARIANTS[wc.arch],
        synthetic=lambda wc: "--synthetic" if is_synthetic(wc.dataset) else "",
        input_size=DATA["input_size"],
        device=config["train"]["device"],
    log:
        f"{LOGS}/probe/{{arch}}/{{dataset}}.log",
    benchmark:
        f"{BENCH}/probe/{{arch}}/{{dataset}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpu_resources(),
    message:
        "Linear probe (not in the paper) on {wildcards.dataset}, {wildcards.arch} frozen features"
    shell:
        "python -m halsal --gpus {resources.gpu} probe --arch {wildcards.arch} --dataset {wildcards.dataset} --prepared {params.prepared} "
        "--backbone {input.backbone} {params.runs} --variant {params.variant} {params.synthetic} "
        "--input-size {params.input_size} --device {params.device} --threads {threads} --out {output.tsv} > {log} 2>&1"
