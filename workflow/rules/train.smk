# Stages 3-5: Step 0 (backbone), Step 1 (saliency pretraining), Step 2 (fine-tuning), and
# the explicit saliency maps of the SMIC method.


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
    threads: 2
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpu_resources(),
    message:
        "Step 0: {wildcards.arch} backbone ({params.weights})"
    shell:
        "python -m halsal backbone --arch {wildcards.arch} --weights {params.weights} {params.source} "
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
        optim=optim_args("pretrain"),
        source=SOURCE,
    log:
        f"{LOGS}/pretrain_saliency/{{arch}}/{{variant}}.log",
    benchmark:
        f"{BENCH}/pretrain_saliency/{{arch}}/{{variant}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpu_resources(),
    message:
        "Step 1: saliency branch {wildcards.variant} for {wildcards.arch} on {params.source} (RGB and joint branches frozen)"
    shell:
        "python -m halsal pretrain-saliency --arch {wildcards.arch} --variant {wildcards.variant} "
        "--backbone {input.backbone} --source-prepared results/prepared/{params.source} --source-split {input.split} "
        "--out {output.weights} {params.optim} --threads {threads} > {log} 2>&1"


rule smic_maps:
    input:
        index="results/datasets/{dataset}/index.tsv",
        prepared="results/prepared/{dataset}/images.npy",
    output:
        maps="results/smic/{dataset}/maps.npy",
        info="results/smic/{dataset}/maps.json",
    params:
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
        "python -m halsal smic-maps --index {input.index} --prepared results/prepared/{wildcards.dataset} "
        "--source {params.source} {params.folder} --out {output.maps} > {log} 2>&1"


rule finetune:
    input:
        prepared="results/prepared/{dataset}/images.npy",
        split="results/splits/{dataset}/seed{seed}.tsv",
        backbone="results/models/{arch}/backbone.pt",
        saliency=saliency_input,
        maps=smic_maps_input,
    output:
        metrics="results/runs/{arch}/{dataset}/{method}/{variant}/k{k}/seed{seed}/metrics.json",
        history="results/runs/{arch}/{dataset}/{method}/{variant}/k{k}/seed{seed}/history.tsv",
        predictions="results/runs/{arch}/{dataset}/{method}/{variant}/k{k}/seed{seed}/predictions.tsv",
        saliency="results/runs/{arch}/{dataset}/{method}/{variant}/k{k}/seed{seed}/saliency.npz",
    params:
        saliency=lambda wc, input: f"--saliency {input.saliency}" if input.saliency else "",
        maps=lambda wc, input: f"--maps {input.maps}" if input.maps else "",
        synthetic=lambda wc: "--synthetic" if is_synthetic(wc.dataset) else "",
        optim=optim_args("finetune"),
    log:
        f"{LOGS}/finetune/{{arch}}/{{dataset}}/{{method}}/{{variant}}/k{{k}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/finetune/{{arch}}/{{dataset}}/{{method}}/{{variant}}/k{{k}}/seed{{seed}}.tsv"
    conda:
        "../../envs/train.yaml"
    group:
        "finetune"
    threads: 2
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpu_resources(),
    message:
        "Step 2: {wildcards.method} on {wildcards.dataset} ({wildcards.arch}, {wildcards.variant}), k={wildcards.k}, seed {wildcards.seed}"
    shell:
        "python -m halsal finetune --arch {wildcards.arch} --method {wildcards.method} --variant {wildcards.variant} "
        "--k {wildcards.k} --seed {wildcards.seed} --dataset {wildcards.dataset} "
        "--prepared results/prepared/{wildcards.dataset} --split {input.split} --backbone {input.backbone} "
        "{params.saliency} {params.maps} {params.synthetic} --out-dir results/runs/{wildcards.arch}/{wildcards.dataset}/"
        "{wildcards.method}/{wildcards.variant}/k{wildcards.k}/seed{wildcards.seed} {params.optim} "
        "--threads {threads} > {log} 2>&1"
