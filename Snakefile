# halsal: reproducibility workflow for "Hallucinating Saliency Maps for Fine-Grained Image
# Classification for Limited Data Domains" (Figueroa-Flores et al., VISAPP 2021).
#
#   snakemake --cores all                                  # default: synthetic, offline demo
#   snakemake --cores all --configfile config/paper.yaml   # the paper's protocol
#   snakemake --report reports/report.html                 # the HTML report
#
# Stages (one .smk each): datasets -> prepare -> train (Steps 0-2) -> report.

include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


report: "reports/workflow.rst"


rule all:
    input:
        finetune_metrics(),
        report_targets(),
    default_target: True
