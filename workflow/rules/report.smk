# Report: aggregate the fine-tuning runs, then the paper's Tables 1-2 beside ours, paired
# differences, the saliency health of every run with a map, accuracy-vs-k plots, Figures 2-3 (ablations), learning curves and the
# qualitative grids of Tables 3-4. Everything marked with report(...) is always written by
# its rule (absent run sets become a "not run in this configuration" table or panel), and
# per-dataset files live in directories registered through patterns=, so the report only
# ever lists files that exist.

from halsal.report.captions import config_summary

CAPTIONS = "../../reports/captions"
CONFIG_SUMMARY = config_summary(plan)
VARIANT_ARG = " ".join(f"{a}={v}" for a, v in plan.variants.items())


rule aggregate:
    input:
        plan.report_metrics(),
    output:
        runs=report(
            tree.runs_tsv,
            caption=f"{CAPTIONS}/runs.rst",
            category="Run details",
            subcategory="Runs",
            labels={"file": "runs.tsv (one row per run)"},
        ),
        summary=report(
            tree.summary_csv,
            caption=f"{CAPTIONS}/summary.rst",
            category="Run details",
            subcategory="Runs",
            labels={"file": "summary.csv (mean over seeds)"},
        ),
        accuracy=tree.accuracy_tsv,
    params:
        summary=CONFIG_SUMMARY,
        n=lambda wildcards, input: len(input),
    log:
        tree.log("report", "aggregate"),
    benchmark:
        tree.bench("report", "aggregate")
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


# The paired-differences bootstrap reads each run's predictions.tsv, and the health table's
# reference row each run's saliency.npz (through runs.tsv's run_dir); both are declared.
# Tables of configured archs that are not in the paper (EfficientNet-Lite0).
EXTRA_ARCHS = [a for a in plan.archs if a not in spec.PAPER_ARCHS]


rule report_tables:
    input:
        runs=rules.aggregate.output.runs,
        predictions=plan.report_run_files("predictions.tsv"),
        saliency=plan.report_run_files("saliency.npz"),
        probe=plan.probe_outputs(),
        reference_maps=list(plan.reference_maps().values()),
    output:
        alexnet=report(
            tree.report("table_alexnet.html"),
            caption=f"{CAPTIONS}/table.rst",
            category="Tables",
            subcategory="Accuracy (paper Tables 1-2)",
            labels={"table": "Table 1: AlexNet"},
        ),
        resnet=report(
            tree.report("table_resnet152.html"),
            caption=f"{CAPTIONS}/table.rst",
            category="Tables",
            subcategory="Accuracy (paper Tables 1-2)",
            labels={"table": "Table 2: ResNet-152"},
        ),
        differences=report(
            tree.report("differences.html"),
            caption=f"{CAPTIONS}/differences.rst",
            category="Tables",
            subcategory="Paired differences",
            labels={"table": "Approach A/B minus Baseline-RGB, 95% CI"},
        ),
        health=report(
            tree.report("saliency_health.html"),
            caption=f"{CAPTIONS}/saliency_health.rst",
            category="Tables",
            subcategory="Saliency health",
            labels={"table": "Saliency health: dead maps, map mean, object ratio"},
        ),
        extra=[report(tree.report(f"table_{spec.arch_slug(a)}.html"), caption=f"{CAPTIONS}/table.rst", category="Tables",
                      subcategory="Accuracy (not in the paper)", labels={"table": spec.arch_label(a)})
               for a in EXTRA_ARCHS],
        tsv=[tree.report(f"table_{a}.tsv") for a in spec.PAPER_ARCHS],
        extra_tsv=[tree.report(f"table_{spec.arch_slug(a)}.tsv") for a in EXTRA_ARCHS],
        diff_tsv=tree.report("differences.tsv"),
        health_tsv=tree.report("saliency_health.tsv"),
    params:
        summary=CONFIG_SUMMARY,
        variant=VARIANT_ARG,
        outdir=lambda wc: tree.report_dir,
        archs=plan.archs,
        datasets=plan.datasets,
        methods=plan.methods,
        ks=plan.ks,
        synthetic=[d for d in plan.datasets if plan.is_synthetic(d)],
        reference_maps=halsal_plan.as_json(plan.reference_maps()),
        # a capped dataset (per_class) is a subset, never the paper's dataset in full
        kinds=[f"{d}={s['kind'] + '-subset' if s.get('per_class') else s['kind']}" for d, s in config["datasets"].items()],
    log:
        tree.log("report", "tables"),
    benchmark:
        tree.bench("report", "tables")
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
        "--archs {params.archs} --probe {input.probe:q} --reference-maps {params.reference_maps:q} --datasets {params.datasets} --methods {params.methods} "
        "--ks {params.ks} --synthetic-datasets {params.synthetic} --dataset-kinds {params.kinds} > {log:q} 2>&1"


rule report_plots:
    input:
        runs=rules.aggregate.output.runs,
        history=plan.report_run_files("history.tsv"),
    output:
        accuracy=report(
            directory(tree.report("plots/accuracy")),
            patterns=["{arch}/{dataset}/{plot}.png"],
            caption=f"{CAPTIONS}/accuracy.rst",
            category="Accuracy vs k",
            subcategory="{dataset}",
            labels={"arch": "{arch}", "dataset": "{dataset}", "plot": "{plot}"},
        ),
        figure2=report(
            tree.report("plots/figure2_depth.png"),
            caption=f"{CAPTIONS}/figure2.rst",
            category="Ablations",
            labels={"figure": "Figure 2: saliency depth"},
        ),
        figure3=report(
            tree.report("plots/figure3_fusion.png"),
            caption=f"{CAPTIONS}/figure3.rst",
            category="Ablations",
            labels={"figure": "Figure 3: fusion point"},
        ),
        curves=report(
            tree.report("plots/learning_curves.png"),
            caption=f"{CAPTIONS}/learning_curves.rst",
            category="Run details",
            subcategory="Learning curves",
            labels={"file": "learning curves"},
        ),
    params:
        summary=CONFIG_SUMMARY,
        variant=VARIANT_ARG,
        outdir=lambda wc: tree.report("plots"),
    log:
        tree.log("report", "plots"),
    benchmark:
        tree.bench("report", "plots")
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
        runs=rules.aggregate.output.runs,
        saliency=plan.report_run_files("saliency.npz"),
        predictions=plan.report_run_files("predictions.tsv"),
        images=[d["images"] for d in plan.qualitative_inputs().values()],
        index=[d["index"] for d in plan.qualitative_inputs().values()],
    output:
        grids=report(
            directory(tree.report("qualitative")),
            patterns=["{dataset}/{grid}.png"],
            caption=f"{CAPTIONS}/qualitative.rst",
            category="Qualitative",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "grid": "{grid}"},
        ),
    params:
        summary=CONFIG_SUMMARY,
        variant=VARIANT_ARG,
        datasets=plan.datasets,
        arch=plan.archs[0],
        inputs=halsal_plan.as_json(plan.qualitative_inputs()),
    log:
        tree.log("report", "qualitative"),
    benchmark:
        tree.bench("report", "qualitative")
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
        "--inputs {params.inputs:q} --datasets {params.datasets} --arch {params.arch} > {log:q} 2>&1"


# The Data section: per dataset (and the source set, where a step uses it), the images
# indexed and used, every file skipped because it did not decode, every class dropped for
# too few images, and the hidden and non-image files the index left out.
DATA_INPUTS = plan.data_inputs()


rule report_data:
    input:
        index=[d["index"] for d in DATA_INPUTS.values()],
        info=[d["info"] for d in DATA_INPUTS.values() if d["info"]],
        manifest=[d["manifest"] for d in DATA_INPUTS.values()],
        splits=[path for d in DATA_INPUTS.values() for path in d["splits"].values()],
        notes=[path for d in DATA_INPUTS.values() for path in d["notes"].values()],
    output:
        html=report(
            tree.report("data.html"),
            caption=f"{CAPTIONS}/data.rst",
            category="Data",
            labels={"table": "Data: images used, skipped files, dropped classes, ignored files"},
        ),
        tsv=tree.report("data.tsv"),
        summary_tsv=tree.report("data_summary.tsv"),
    params:
        summary=CONFIG_SUMMARY,
        targets=plan.datasets,
        source=f"--source {plan.source}" if plan.source_used() else "",
        seeds=config["seeds"],
        kinds=[f"{d}={plan.dataset_spec(d)['kind']}" for d in DATA_INPUTS],
        policies=[f"{d}={plan.data_policy(d, 'on_bad_image')},{plan.data_policy(d, 'too_few_images')},"
                  f"{plan.data_policy(d, 'duplicates')}" for d in DATA_INPUTS],
        inputs=halsal_plan.as_json(DATA_INPUTS),
    log:
        tree.log("report", "data"),
    benchmark:
        tree.bench("report", "data")
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    message:
        "Data section: images used, skipped files, dropped classes and ignored files of {params.targets}"
    shell:
        "python -m halsal data-report --inputs {params.inputs:q} --targets {params.targets} {params.source} "
        "--seeds {params.seeds} --kinds {params.kinds} --policies {params.policies} --html {output.html:q} "
        "--tsv {output.tsv:q} --summary-tsv {output.summary_tsv:q} > {log:q} 2>&1"


# The results as one Markdown section (docs/results-photos.md): the tables above, Step 0/1 on
# the source set, every job's wall time (its benchmark file, declared: halsal.plan.Plan.benchmarks)
# and a few plots. `halsal publish-md` (make photos) splices it into the docs page.
MD_ARCH = plan.archs[0]
REPORT_HAS_STEP1 = bool(set(plan.methods) & set(spec.FROM_STEP1))
MD_BENCHMARKS = plan.benchmarks()


rule report_markdown:
    input:
        runs=rules.aggregate.output.runs,
        table=tree.report(f"table_{spec.arch_slug(MD_ARCH)}.tsv"),
        differences=rules.report_tables.output.diff_tsv,
        health=rules.report_tables.output.health_tsv,
        data=rules.report_data.output.summary_tsv,
        plots=rules.report_plots.output.accuracy,
        qualitative=rules.report_qualitative.output.grids,
        backbone=tree.backbone_info(MD_ARCH),
        step1=[tree.saliency_info(MD_ARCH, plan.variants[MD_ARCH])] if REPORT_HAS_STEP1 else [],
        benchmarks=[path for files in MD_BENCHMARKS.values() for path in files],
    output:
        md=tree.report("results.md"),
        images=directory(tree.report("results_md")),
    params:
        report_dir=lambda wc: tree.report_dir,
        step1=lambda wildcards, input: f"--saliency {input.step1}" if input.step1 else "",
        datasets=plan.datasets,
        arch=MD_ARCH,
        variant=plan.variants[MD_ARCH],
        source=plan.source,
        benchmarks=halsal_plan.as_json(MD_BENCHMARKS),
    log:
        tree.log("report", "markdown"),
    benchmark:
        tree.bench("report", "markdown")
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
