# Stage 1: datasets -> tree.index(dataset) (results/datasets/{dataset}/index.tsv)


rule generate_synthetic:
    output:
        index=tree.index("{dataset}"),
    params:
        root=lambda wc: tree.dataset_dir(wc.dataset),  # images/<class>/<file> beside the index
        args=generate_args,
    wildcard_constraints:
        dataset=one_of(plan.names_of_kind(settings.SYNTHETIC)),
    log:
        tree.log("datasets", "{dataset}"),
    benchmark:
        tree.bench("datasets", "{dataset}")
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m halsal generate --root {params.root} --out {output.index} {params.args} > {log} 2>&1"


# The index follows the folder: `listing` (names, sizes and mtimes of every file under it) is a
# params value, so Snakemake's params rerun trigger re-indexes after a file is added, removed or
# replaced, and re-runs everything downstream of the index.
rule index_folder:
    output:
        index=tree.index("{dataset}"),
        info=tree.index_info("{dataset}"),
    params:
        root=lambda wc: plan.dataset_root(wc.dataset),
        listing=lambda wc: folder_listing(plan.dataset_root(wc.dataset)),
        per_class=lambda wc: per_class_args(wc.dataset),
    wildcard_constraints:
        dataset=one_of(plan.names_of_kind(settings.FOLDER)),
    log:
        tree.log("datasets", "{dataset}"),
    benchmark:
        tree.bench("datasets", "{dataset}")
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m halsal index --root {params.root:q} --out {output.index} --info {output.info} {params.per_class} > {log} 2>&1"


# Downloads need the internet, which cluster compute nodes often lack: run on the submit host.
rule fetch:
    localrule: True
    output:
        index=tree.index("{dataset}"),
    params:
        args=fetch_args,
    wildcard_constraints:
        dataset=one_of(plan.names_of_kind(*settings.FETCHED_KINDS)),
    log:
        tree.log("datasets", "{dataset}"),
    benchmark:
        tree.bench("datasets", "{dataset}")
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=240,
    shell:
        "python -m halsal fetch {params.args} --out {output.index} > {log} 2>&1"


# Drawn from the images that decode (prepare's manifest), so a skipped file never holds a
# val/test place.
rule split:
    input:
        index=tree.index("{dataset}"),
        manifest=tree.manifest("{dataset}"),
    output:
        split=tree.split("{dataset}", "{seed}"),
        notes=tree.split_notes("{dataset}", "{seed}"),
    params:
        args=split_args,
    log:
        tree.log("splits", "{dataset}/seed{seed}"),
    benchmark:
        tree.bench("splits", "{dataset}/seed{seed}")
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m halsal split --dataset {wildcards.dataset} --index {input.index} --seed {wildcards.seed} {params.args} "
        "--manifest {input.manifest} --notes {output.notes} --out {output.split} > {log} 2>&1"
