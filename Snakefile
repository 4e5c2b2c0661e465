# halsal: reproducibility workflow for "Hallucinating Saliency Maps for Fine-Grained Image
# Classification for Limited Data Domains" (Figueroa-Flores et al., VISAPP 2021).
#
#   snakemake --cores all                                  # default: synthetic, offline demo
#   snakemake --cores all --configfile config/paper.yaml   # the paper's protocol
#   snakemake --report reports/report.html                 # the HTML report
#   snakemake table1 | table2 | figure2 | figure3 | eq1_vs_eq2  # one piece of the paper alone
#
# Stages (one .smk each): datasets -> prepare -> train (Steps 0-2, the ablations' variants) -> probe -> report.
# Every path, the run grid and the report's inputs come from halsal.plan (common.smk).

include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/report.smk"


report: "reports/workflow.rst"


rule all:
    input:
        plan.finetune_metrics(),
        plan.report_targets(),
    default_target: True


# Named targets: the fine-tuning runs behind one table or figure of the paper (with their
# datasets, backbones, Step-1 branches and SMIC maps), nothing else.


rule table1:
    input:
        lambda wc: plan.table_metrics("alexnet"),
    localrule: True


rule table2:
    input:
        lambda wc: plan.table_metrics("resnet152"),
    localrule: True


rule figure2:
    input:
        plan.ablation_metrics("depth"),
    localrule: True


rule figure3:
    input:
        plan.ablation_metrics("fusion"),
    localrule: True


rule eq1_vs_eq2:
    input:
        plan.ablation_metrics("modulation"),
    localrule: True
