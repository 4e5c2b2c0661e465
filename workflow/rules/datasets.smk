# Stage 1: datasets -> results/datasets/{dataset}/index.tsv


rule generate_synthetic:
    output:
        index="results/datasets/{dataset}/index.tsv",
    params:
        root=lambda wc, output: os.path.dirname(output.index),
        spec=lambda wc: dataset_spec(wc.dataset),
        per_class=lambda wc: per_class_args(wc.dataset),
    wildcard_constraints:
        dataset=kinds("synthetic"),
    log:
        f"{LOGS}/datasets/{{dataset}}.log",
    benchmark:
        f"{BENCH}/datasets/{{dataset}}.tsv"
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
        "--task {params.spec[task]} --classes {params.spec[classes]} "
        "--images-per-class {params.spec[images_per_class]} --image-size {params.spec[image_size]} "
        "--seed {params.spec[seed]} {params.per_class} > {log} 2>&1"


# The index follows the folder: `listing` (names, sizes and mtimes of every file under it) is a
# params value, so Snakemake's params rerun trigger re-indexes after a file is added, removed or
# replaced, and re-runs everything downstream of the index.
rule index_folder:
    output:
        index="results/datasets/{dataset}/index.tsv",
        info="results/datasets/{dataset}/index.json",
    params:
        root=lambda wc: dataset_root(wc.dataset),
        listing=lambda wc: folder_listing(dataset_root(wc.dataset)),
        per_class=lambda wc: per_class_args(wc.dataset),
    wildcard_constraints:
        dataset=kinds("folder"),
    log:
        f"{LOGS}/datasets/{{dataset}}.log",
    benchmark:
        f"{BENCH}/datasets/{{dataset}}.tsv"
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
        index="results/datasets/{dataset}/index.tsv",
    params:
        kind=lambda wc: dataset_spec(wc.dataset)["kind"],
        root=lambda wc: dataset_spec(wc.dataset).get("root", f"data/{wc.dataset}"),
        source=lambda wc: (f"--source {dataset_spec(wc.dataset)['source']}" if dataset_spec(wc.dataset).get("source") else ""),
        subset=lambda wc: (f"--subset-per-class {dataset_spec(wc.dataset)['subset_per_class']}"
                           if dataset_spec(wc.dataset).get("subset_per_class") else ""),
        per_class=lambda wc: per_class_args(wc.dataset),
    wildcard_constraints:
        dataset=kinds("flowers102", "cub200", "cars196", "imagenet_val"),
    log:
        f"{LOGS}/datasets/{{dataset}}.log",
    benchmark:
        f"{BENCH}/datasets/{{dataset}}.tsv"
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
        index="results/datasets/{dataset}/index.tsv",
        manifest="results/prepared/{dataset}/manifest.tsv",
    output:
        split="results/splits/{dataset}/seed{seed}.tsv",
        notes="results/splits/{dataset}/seed{seed}.notes.txt",
    params:
        max_k=lambda wc: 1 if wc.dataset == SOURCE else max_k(),
        val=DATA["val_per_class"],
        test=DATA["test_per_class"],
        too_few=lambda wc: data_policy(wc.dataset, "too_few_images"),
        duplicates=lambda wc: data_policy(wc.dataset, "duplicates"),
    log:
        f"{LOGS}/splits/{{dataset}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/splits/{{dataset}}/seed{{seed}}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    message:
        "k-shot split of {wildcards.dataset}, seed {wildcards.seed}"
    shell:
        "python -m halsal split --index {input.index} --seed {wildcards.seed} --val-per-class {params.val} "
        "--test-per-class {params.test} --max-k {params.max_k} --too-few {params.too_few} --duplicates {params.duplicates} "
        "--manifest {input.manifest} --notes {output.notes} --out {output.split} > {log} 2>&1"
