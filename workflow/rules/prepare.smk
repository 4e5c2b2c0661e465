# Stage 2: decode + resize + crop every image once (DALI; GPU `mixed` decoding where present).


rule prepare:
    input:
        index="results/datasets/{dataset}/index.tsv",
    output:
        images="results/prepared/{dataset}/images.npy",
        manifest="results/prepared/{dataset}/manifest.tsv",
    params:
        out_dir=lambda wc, output: os.path.dirname(output.images),
        resize=DATA["resize"],
        backend=DATA["decode_backend"],
        on_error=lambda wc: data_policy(wc.dataset, "on_bad_image"),
    log:
        f"{LOGS}/prepare/{{dataset}}.log",
    benchmark:
        f"{BENCH}/prepare/{{dataset}}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 2
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpu_resources(),
    message:
        "Decoding {wildcards.dataset} to {params.resize}px uint8 arrays ({params.backend} backend)"
    shell:
        "python -m halsal --gpus {resources.gpu} prepare --index {input.index} --out-dir {params.out_dir} "
        "--resize {params.resize} --backend {params.backend} --on-error {params.on_error} > {log} 2>&1"
