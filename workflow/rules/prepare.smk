# Stage 2: decode + resize + crop every image once (DALI; GPU `mixed` decoding where present).


rule prepare:
    input:
        index=tree.index("{dataset}"),
    output:
        images=tree.images("{dataset}"),
        manifest=tree.manifest("{dataset}"),
    params:
        args=prepare_args,
    log:
        tree.log("prepare", "{dataset}"),
    benchmark:
        tree.bench("prepare", "{dataset}")
    conda:
        "../../envs/data.yaml"
    threads: 2
    resources:
        **GPU_JOB,
    shell:
        "python -m halsal --gpus {resources.gpu} prepare --index {input.index} {params.args} --threads {threads} > {log} 2>&1"
