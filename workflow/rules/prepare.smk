# Stage 2: decode + resize + crop every image once (DALI; GPU `mixed` decoding where present).


rule prepare:
    input:
        index=tree.index("{dataset}"),
    output:
        images=tree.images("{dataset}"),
        manifest=tree.manifest("{dataset}"),
    params:
        out_dir=lambda wc: tree.prepared(wc.dataset),
        resize=config["data"]["resize"],
        backend=config["data"]["decode_backend"],
        on_error=lambda wc: plan.data_policy(wc.dataset, "on_bad_image"),
    log:
        tree.log("prepare", "{dataset}"),
    benchmark:
        tree.bench("prepare", "{dataset}")
    conda:
        "../../envs/data.yaml"
    threads: 2
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=gpu_resources(),
    message:
        "Decoding {wildcards.dataset} to {params.resize}px uint8 arrays ({params.backend} backend)"
    shell:
        "python -m halsal --gpus {resources.gpu} prepare --index {input.index} --out-dir {params.out_dir} "
        "--resize {params.resize} --backend {params.backend} --on-error {params.on_error} --threads {threads} "
        "> {log} 2>&1"
