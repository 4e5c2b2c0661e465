# Stage 1: datasets -> tree.index(dataset) (results/datasets/{dataset}/index.tsv)


rule generate_synthetic:
    output:
        index=tree.index("{dataset}"),
    params:
        root=lambda wc: tree.dataset_dir(wc.dataset),  # images/<class>/<file> beside the index
        entry=lambda wc: plan.dataset_spec(wc.dataset),
        per_class=lambda wc: per_class_args(wc.dataset),
    wildcard_constraints:
        dataset=one_of(plan.names_of_kind(settings.SYNTHETIC)),
    log:
        tree.log("datasets", "{dataset}"),
    benchmark:
        tree.bench("datasets", "{dataset}")
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    message:
        "Generating the SYNTHETIC dataset {wildcards.dataset}"
    shell:
        "python -m halsal generate --root {params.root} --out {output.index} "
        "--task {params.entry[task]} --classes {params.entry[classes]} "
        "--images-per-class {params.entry[images_per_class]} --image-size {params.entry[image_size]} "
        "--seed {params.entry[seed]} {params.per_class} > {log} 2>&1"


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
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    message:
        "Indexing the image folder {params.root} as {wildcards.dataset}"
    shell:
        "python -m halsal index --root {params.root:q} --out {output.index} --info {output.info} {params.per_class} "
        "> {log} 2>&1"


# Downloads need the internet, which cluster compute nodes often lack: run on the submit host.
rule fetch:
    localrule: True
    output:
        index=tree.index("{dataset}"),
    params:
        kind=lambda wc: plan.dataset_spec(wc.dataset)["kind"],
        root=lambda wc: plan.dataset_spec(wc.dataset).get("root", f"data/{wc.dataset}"),
        source=lambda wc: (f"--source {plan.dataset_spec(wc.dataset)['source']}" if plan.dataset_spec(wc.dataset).get("source") else ""),
        subset=lambda wc: (f"--subset-per-class {plan.dataset_spec(wc.dataset)['subset_per_class']}"
                           if plan.dataset_spec(wc.dataset).get("subset_per_class") else ""),
        per_class=lambda wc: per_class_args(wc.dataset),
    wildcard_constraints:
        dataset=one_of(plan.names_of_kind(*settings.FETCHED_KINDS)),
    log:
        tree.log("datasets", "{dataset}"),
    benchmark:
        tree.bench("datasets", "{dataset}")
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    message:
        "Fetching and verifying {params.kind} into {params.root}"
    shell:
        "python -m halsal fetch --dataset {params.kind} --root {params.root} {params.source} {params.subset} "
        "{params.per_class} --out {output.index} > {log} 2>&1"


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
        max_k=lambda wc: 1 if wc.dataset == plan.source else plan.max_k(),
        val=lambda wc: plan.data_policy(wc.dataset, "val_per_class"),
        test=lambda wc: plan.data_policy(wc.dataset, "test_per_class"),
        too_few=lambda wc: plan.data_policy(wc.dataset, "too_few_images"),
        duplicates=lambda wc: plan.data_policy(wc.dataset, "duplicates"),
    log:
        tree.log("splits", "{dataset}/seed{seed}"),
    benchmark:
        tree.bench("splits", "{dataset}/seed{seed}")
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    message:
        "k-shot split of {wildcards.dataset}, seed {wildcards.seed}"
    shell:
        "python -m halsal split --dataset {wildcards.dataset} --index {input.index} --seed {wildcards.seed} --val-per-class {params.val} "
        "--test-per-class {params.test} --max-k {params.max_k} --too-few {params.too_few} --duplicates {params.duplicates} "
        "--manifest {input.manifest} --notes {output.notes} --out {output.split} > {log} 2>&1"
