# Report: aggregate the fine-tuning runs, then the paper's Tables 1-2 beside ours, paired
# differences, the saliency health of every run with a map, accuracy-vs-k plots, Figures 2-3 (ablations), learning curves and the
# qualitative grids of Tables 3-4. Everything marked with report(...) is always written by
# its rule (absent run sets become a "not run in this configuration" table or panel), and
# per-dataset files live in directories registered through patterns=, so the report only
# ever lists files that exist.

rule aggregate:
    input:
        plan.report_metrics(),
    output:
        runs=report_item(tree.runs_tsv, "runs", "Run details", "Runs", file="runs.tsv (one row per run)"),
        summary=report_item(tree.summary_csv, "summary", "Run details", "Runs", file="summary.csv (mean over seeds)"),
        accuracy=tree.accuracy_tsv,
    params:
        summary=CONFIG_SUMMARY,
    log:
        tree.log("report", "aggregate"),
    benchmark:
        tree.bench("report", "aggregate")
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m halsal aggregate --metrics {input:q} --runs-tsv {output.runs:q} "
        "--summary-csv {output.summary:q} --accuracy-tsv {output.accuracy:q} > {log:q} 2>&1"


# The paired-differences bootstrap reads each run's predictions.tsv, and the health table's
# reference row each run's saliency.npz (through runs.tsv's run_dir); both are declared.
# Tables of configured archs that are not in the paper (EfficientNet-Lite0).
EXTRA_ARCHS = [a for a in plan.archs if a not in spec.PAPER_ARCHS]
ACCURACY = "Accuracy (paper Tables 1-2)"


rule report_tables:
    input:
        runs=rules.aggregate.output.runs,
        predictions=plan.report_run_files("predictions.tsv"),
        saliency=plan.report_run_files("saliency.npz"),
        probe=plan.probe_outputs(),
        reference_maps=list(plan.reference_maps().values()),
    output:
        alexnet=report_item(tree.report("table_alexnet.html"), "table", "Tables", ACCURACY, table="Table 1: AlexNet"),
        resnet=report_item(tree.report("table_resnet152.html"), "table", "Tables", ACCURACY, table="Table 2: ResNet-152"),
        differences=report_item(tree.report("differences.html"), "differences", "Tables", "Paired differences",
                                table="Approach A/B minus Baseline-RGB, 95% CI"),
        health=report_item(tree.report("saliency_health.html"), "saliency_health", "Tables", "Saliency health",
                           table="Saliency health: dead maps, map mean, object ratio"),
        extra=[report_item(tree.report(f"table_{spec.arch_slug(a)}.html"), "table", "Tables", "Accuracy (not in the paper)",
                           table=spec.arch_label(a)) for a in EXTRA_ARCHS],
        tsv=[tree.report(f"table_{a}.tsv") for a in spec.PAPER_ARCHS],
        extra_tsv=[tree.report(f"table_{spec.arch_slug(a)}.tsv") for a in EXTRA_ARCHS],
        diff_tsv=tree.report("differences.tsv"),
        health_tsv=tree.report("saliency_health.tsv"),
    params:
        summary=CONFIG_SUMMARY,
        args=tables_args(),
        reference_maps=halsal_plan.as_json(plan.reference_maps()),
    log:
        tree.log("report", "tables"),
    benchmark:
        tree.bench("report", "tables")
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m halsal tables --runs {input.runs:q} --probe {input.probe:q} --reference-maps {params.reference_maps:q} "
        "{params.args} > {log:q} 2>&1"


rule report_plots:
    input:
        runs=rules.aggregate.output.runs,
        history=plan.report_run_files("history.tsv"),
    output:
        accuracy=report_item(directory(tree.report("plots/accuracy")), "accuracy", "Accuracy vs k", "{dataset}", ["{arch}/{dataset}/{plot}.png"]),
        figure2=report_item(tree.report("plots/figure2_depth.png"), "figure2", "Ablations", figure="Figure 2: saliency depth"),
        figure3=report_item(tree.report("plots/figure3_fusion.png"), "figure3", "Ablations", figure="Figure 3: fusion point"),
        curves=report_item(tree.report("plots/learning_curves.png"), "learning_curves", "Run details", "Learning curves", file="learning curves"),
    params:
        summary=CONFIG_SUMMARY,
        args=f"--outdir {tree.report('plots')} --variant {VARIANT_ARG}",
    log:
        tree.log("report", "plots"),
    benchmark:
        tree.bench("report", "plots")
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m halsal plots --runs {input.runs:q} {params.args} > {log:q} 2>&1"


rule report_qualitative:
    input:
        runs=rules.aggregate.output.runs,
        saliency=plan.report_run_files("saliency.npz"),
        predictions=plan.report_run_files("predictions.tsv"),
        images=[d["images"] for d in plan.qualitative_inputs().values()],
        index=[d["index"] for d in plan.qualitative_inputs().values()],
    output:
        grids=report_item(directory(tree.report("qualitative")), "qualitative", "Qualitative", "{dataset}", ["{dataset}/{grid}.png"]),
    params:
        summary=CONFIG_SUMMARY,
        inputs=halsal_plan.as_json(plan.qualitative_inputs()),
        args=f"--variant {VARIANT_ARG} --datasets {DATASETS} --arch {MD_ARCH}",
    log:
        tree.log("report", "qualitative"),
    benchmark:
        tree.bench("report", "qualitative")
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m halsal qualitative --runs {input.runs:q} --outdir {output.grids:q} --inputs {params.inputs:q} "
        "{params.args} > {log:q} 2>&1"


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
        html=report_item(tree.report("data.html"), "data", "Data",
                         table="Data: images used, skipped files, dropped classes, ignored files"),
        tsv=tree.report("data.tsv"),
        summary_tsv=tree.report("data_summary.tsv"),
    params:
        summary=CONFIG_SUMMARY,
        args=data_report_args(DATA_INPUTS),
        inputs=halsal_plan.as_json(DATA_INPUTS),
    log:
        tree.log("report", "data"),
    benchmark:
        tree.bench("report", "data")
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m halsal data-report --inputs {params.inputs:q} {params.args} --html {output.html:q} "
        "--tsv {output.tsv:q} --summary-tsv {output.summary_tsv:q} > {log:q} 2>&1"


# The results as one Markdown section (docs/results-photos.md): the tables above, Step 0/1 on
# the source set, every job's wall time (its benchmark file, declared: halsal.plan benchmarks)
# and a few plots. `halsal publish-md` (make photos) splices it into the docs page.
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
        step1=lambda wildcards, input: f"--saliency {input.step1}" if input.step1 else "",
        benchmarks=halsal_plan.as_json(MD_BENCHMARKS),
        args=markdown_args(),
    log:
        tree.log("report", "markdown"),
    benchmark:
        tree.bench("report", "markdown")
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m halsal results-md --runs {input.runs:q} --out {output.md:q} --benchmarks {params.benchmarks:q} "
        "--backbone {input.backbone:q} {params.step1} {params.args} > {log:q} 2>&1"
