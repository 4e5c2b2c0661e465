# Report: aggregate the fine-tuning runs, then the paper's Tables 1-2 beside ours, paired
# differences, the saliency health of every run with a map, accuracy-vs-k plots, Figures 2-3 (ablations), learning curves and the
# qualitative grids of Tables 3-4. Everything marked with report(...) is always written by
# its rule (absent run sets become a "not run in this configuration" table or panel), and
# per-dataset files live in directories registered through patterns=, so the report only
# ever lists files that exist.

import os

from halsal.report.smk import REPORT_DIR as REPORT, config_summary, report_targets

CAPTIONS = "../../reports/captions"
# Ablation runs (Figures 2-3): an ablation .smk included before this file may define
# ablation_metrics_list(); the default configuration has none.
REPORT_METRICS = list(
    dict.fromkeys(finetune_metrics() + list(globals().get("ablation_metrics_list", list)()))
)
CONFIG_SUMMARY = config_summary(config, VARIANT, is_synthetic)
SYNTHETIC_DATASETS = [d for d in config["datasets"] if is_synthetic(d)]


rule aggregate:
    input:
        REPORT_METRICS,
    output:
        runs=report(
            "results/tables/runs.tsv",
            caption=f"{CAPTIONS}/runs.rst",
            category="Run details",
            subcategory="Runs",
            labels={"file": "runs.tsv (one row per run)"},
        ),
        summary=report(
            "results/summary.csv",
            caption=f"{CAPTIONS}/summary.rst",
            category="Run details",
            subcategory="Runs",
            labels={"file": "summary.csv (mean over seeds)"},
        ),
        accuracy="results/tables/accuracy.tsv",
    params:
        summary=CONFIG_SUMMARY,
        n=lambda wildcards, input: len(input),
    log:
        f"{LOGS}/report/aggregate.log",
    benchmark:
        f"{BENCH}/report/aggregate.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    message:
        "Aggregating {params.n} fine-tuning runs into one table"
    shell:
        "python -m halsal aggregate --metrics {input:q} --runs-tsv {output.runs:q} "
        "--summary-csv {output.summary:q} --accuracy-tsv {output.accuracy:q} > {log:q} 2>&1"


# The paired-differences bootstrap reads each run's predictions.tsv through runs.tsv's run_dir
# (not declared here: thousands of inputs in the paper's grid). predictions.tsv is written by
# the same finetune job as the metrics.json that `aggregate` depends on, so runs.tsv is
# rebuilt, and this rule re-run, whenever a predictions file changes.
# Tables of configured archs that are not in the paper (EfficientNet-Lite0).
EXTRA_ARCHS = [a for a in config["archs"] if a not in spec.PAPER_ARCHS]


rule report_tables:
    input:
        runs="results/tables/runs.tsv",
        probe=probe_outputs(),
        reference_maps=reference_maps_inputs(),
    output:
        alexnet=report(
            f"{REPORT}/table_alexnet.html",
            caption=f"{CAPTIONS}/table.rst",
            category="Tables",
            subcategory="Accuracy (paper Tables 1-2)",
            labels={"table": "Table 1: AlexNet"},
        ),
        resnet=report(
            f"{REPORT}/table_resnet152.html",
            caption=f"{CAPTIONS}/table.rst",
            category="Tables",
            subcategory="Accuracy (paper Tables 1-2)",
            labels={"table": "Table 2: ResNet-152"},
        ),
        differences=report(
            f"{REPORT}/differences.html",
            caption=f"{CAPTIONS}/differences.rst",
            category="Tables",
            subcategory="Paired differences",
            labels={"table": "Approach A/B minus Baseline-RGB, 95% CI"},
        ),
        health=report(
            f"{REPORT}/saliency_health.html",
            caption=f"{CAPTIONS}/saliency_health.rst",
            category="Tables",
            subcategory="Saliency health",
            labels={"table": "Saliency health: dead maps, map mean, object ratio"},
        ),
        extra=[report(f"{REPORT}/table_{a}.html", caption=f"{CAPTIONS}/table.rst", category="Tables",
                      subcategory="Accuracy (not in the paper)", labels={"table": spec.ARCH_LABELS[a]})
               for a in EXTRA_ARCHS],
        tsv=multiext(f"{REPORT}/table_", "alexnet.tsv", "resnet152.tsv"),
        extra_tsv=[f"{REPORT}/table_{a}.tsv" for a in EXTRA_ARCHS],
        diff_tsv=f"{REPORT}/differences.tsv",
        health_tsv=f"{REPORT}/saliency_health.tsv",
    params:
        summary=CONFIG_SUMMARY,
        variant=" ".join(f"{a}={v}" for a, v in VARIANTS.items()),
        outdir=lambda wildcards, output: os.path.dirname(output.alexnet),
        archs=config["archs"],
        datasets=list(config["datasets"]),
        methods=config["methods"],
        ks=[str(k) for k in config["ks"]],
        synthetic=SYNTHETIC_DATASETS,
        # a capped dataset (per_class) is a subset, never the paper's dataset in full
        kinds=[f"{d}={s['kind'] + '-subset' if s.get('per_class') else s['kind']}" for d, s in config["datasets"].items()],
    log:
        f"{LOGS}/report/tables.log",
    benchmark:
        f"{BENCH}/report/tables.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    message:
        "Accuracy tables in the paper's layout, paired differences and saliency health -> {params.outdir}"
    shell:
        "python -m halsal tables --runs {input.runs:q} --outdir {params.outdir:q} --variant {params.variant} "
        "--archs {params.archs} --probe {input.probe:q} --reference-maps {input.reference_maps:q} --datasets {params.datasets} --methods {params.methods} "
        "--ks {params.ks} --synthetic-datasets {params.synthetic} --dataset-kinds {params.kinds} > {log:q} 2>&1"


rule report_plots:
    input:
        runs="results/tables/runs.tsv",
    output:
        accuracy=report(
            directory(f"{REPORT}/plots/accuracy"),
            patterns=["{arch}/{dataset}/{plot}.png"],
            caption=f"{CAPTIONS}/accuracy.rst",
            category="Accuracy vs k",
            subcategory="{dataset}",
            labels={"arch": "{arch}", "dataset": "{dataset}", "plot": "{plot}"},
        ),
        figure2=report(
            f"{REPORT}/plots/figure2_depth.png",
            caption=f"{CAPTIONS}/figure2.rst",
            category="Ablations",
            labels={"figure": "Figure 2: saliency depth"},
        ),
        figure3=report(
            f"{REPORT}/plots/figure3_fusion.png",
            caption=f"{CAPTIONS}/figure3.rst",
            category="Ablations",
            labels={"figure": "Figure 3: fusion point"},
        ),
        curves=report(
            f"{REPORT}/plots/learning_curves.png",
            caption=f"{CAPTIONS}/learning_curves.rst",
            category="Run details",
            subcategory="Learning curves",
            labels={"file": "learning curves"},
        ),
    params:
        summary=CONFIG_SUMMARY,
        variant=" ".join(f"{a}={v}" for a, v in VARIANTS.items()),
        outdir=lambda wildcards, output: os.path.dirname(output.figure2),
    log:
        f"{LOGS}/report/plots.log",
    benchmark:
        f"{BENCH}/report/plots.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    message:
        "Plots: accuracy and improvement vs k, Figures 2-3, learning curves"
    shell:
        "python -m halsal plots --runs {input.runs:q} --outdir {params.outdir:q} --variant {params.variant} > {log:q} 2>&1"


rule report_qualitative:
    input:
        runs="results/tables/runs.tsv",
        images=expand("results/prepared/{dataset}/images.npy", dataset=list(config["datasets"])),
        index=expand("results/datasets/{dataset}/index.tsv", dataset=list(config["datasets"])),
    output:
        grids=report(
            directory(f"{REPORT}/qualitative"),
            patterns=["{dataset}/{grid}.png"],
            caption=f"{CAPTIONS}/qualitative.rst",
            category="Qualitative",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "grid": "{grid}"},
        ),
    params:
        summary=CONFIG_SUMMARY,
        variant=" ".join(f"{a}={v}" for a, v in VARIANTS.items()),
        datasets=list(config["datasets"]),
        arch=config["archs"][0],
        # results/prepared/<dataset>/images.npy -> results
        results_root=lambda wildcards, input: os.path.dirname(os.path.dirname(os.path.dirname(input.images[0]))),
    log:
        f"{LOGS}/report/qualitative.log",
    benchmark:
        f"{BENCH}/report/qualitative.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    message:
        "Qualitative grids (paper Tables 3-4) and saliency galleries"
    shell:
        "python -m halsal qualitative --runs {input.runs:q} --outdir {output.grids:q} --variant {params.variant} "
        "--results-root {params.results_root:q} --datasets {params.datasets} --arch {params.arch} > {log:q} 2>&1"


# The Data section: per dataset (and the source set, where a step uses it), the images
# indexed and used, every file skipped because it did not decode, every class dropped for
# too few images, and the hidden and non-image files the index left out.
DATA_TARGETS = list(config["datasets"])
DATA_ALL = list(dict.fromkeys(DATA_TARGETS + ([SOURCE] if source_used() else [])))
DATA_SPLITS = [f"results/splits/{d}/seed{s}.tsv" for d in DATA_TARGETS for s in config["seeds"]]
DATA_SPLITS += [f"results/splits/{SOURCE}/seed0.tsv"] if source_used() else []


rule report_data:
    input:
        index=expand("results/datasets/{dataset}/index.tsv", dataset=DATA_ALL),
        info=[f"results/datasets/{d}/index.json" for d in DATA_ALL if dataset_spec(d)["kind"] == "folder"],
        manifest=expand("results/prepared/{dataset}/manifest.tsv", dataset=DATA_ALL),
        splits=DATA_SPLITS,
    output:
        html=report(
            f"{REPORT}/data.html",
            caption=f"{CAPTIONS}/data.rst",
            category="Data",
            labels={"table": "Data: images used, skipped files, dropped classes, ignored files"},
        ),
        tsv=f"{REPORT}/data.tsv",
        summary_tsv=f"{REPORT}/data_summary.tsv",
    params:
        summary=CONFIG_SUMMARY,
        targets=DATA_TARGETS,
        source=f"--source {SOURCE}" if source_used() else "",
        seeds=config["seeds"],
        kinds=[f"{d}={dataset_spec(d)['kind']}" for d in DATA_ALL],
        policies=[f"{d}={data_policy(d, 'on_bad_image')},{data_policy(d, 'too_few_images')},{data_policy(d, 'duplicates')}" for d in DATA_ALL],
        # results/datasets/<dataset>/index.tsv -> results
        results_root=lambda wildcards, input: os.path.dirname(os.path.dirname(os.path.dirname(input.index[0]))),
    log:
        f"{LOGS}/report/data.log",
    benchmark:
        f"{BENCH}/report/data.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    message:
        "Data section: images used, skipped files, dropped classes and ignored files of {params.targets}"
    shell:
        "python -m halsal data-report --results-root {params.results_root:q} --targets {params.targets} {params.source} "
        "--seeds {params.seeds} --kinds {params.kinds} --policies {params.policies} --html {output.html:q} "
        "--tsv {output.tsv:q} --summary-tsv {output.summary_tsv:q} > {log:q} 2>&1"


# The results as one Markdown section (docs/results-photos.md): the tables above, Step 0/1 on
# the source set, every job's wall time (benchmarks/, read, not declared: no rule outputs them)
# and a few plots. `halsal publish-md` (make photos) splices it into the docs page.
MD_ARCH = config["archs"][0]
MD_STEP1 = bool(set(config["methods"]) & FROM_STEP1)


rule report_markdown:
    input:
        runs="results/tables/runs.tsv",
        table=f"{REPORT}/table_{MD_ARCH}.tsv",
        differences=f"{REPORT}/differences.tsv",
        health=f"{REPORT}/saliency_health.tsv",
        data=f"{REPORT}/data_summary.tsv",
        plots=f"{REPORT}/plots/accuracy",
        qualitative=f"{REPORT}/qualitative",
        backbone=f"results/models/{MD_ARCH}/backbone.json",
        step1=[f"results/models/{MD_ARCH}/saliency_{VARIANTS[MD_ARCH]}.json"] if MD_STEP1 else [],
    output:
        md=f"{REPORT}/results.md",
        images=directory(f"{REPORT}/results_md"),
    params:
        report_dir=lambda wildcards, input: os.path.dirname(input.table),
        step1=lambda wildcards, input: f"--saliency {input.step1}" if input.step1 else "",
        datasets=list(config["datasets"]),
        arch=MD_ARCH,
        variant=VARIANTS[MD_ARCH],
        source=SOURCE,
        benchmarks=BENCH,
    log:
        f"{LOGS}/report/markdown.log",
    benchmark:
        f"{BENCH}/report/markdown.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    message:
        "Results as Markdown (tables, Step 0/1, wall time per stage, plots) -> {output.md}"
    shell:
        "python -m halsal results-md --report-dir {params.report_dir:q} --arch {params.arch} --variant {params.variant} "
        "--runs {input.runs:q} --out {output.md:q} "
        "--benchmarks {params.benchmarks:q} --backbone {input.backbone:q} {params.step1} --source {params.source} "
        "--datasets {params.datasets} > {log:q} 2>&1"
