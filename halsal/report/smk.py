"""Helpers for workflow/rules/report.smk (kept here: Snakemake's linter wants no functions
beside rules). Imports nothing heavy: the Snakefile imports this at parse time."""

from __future__ import annotations

REPORT_DIR = "results/report"


def report_targets(report_dir: str = REPORT_DIR) -> list[str]:
    """The report's final outputs; `rule all` depends on these."""
    return [
        "results/tables/runs.tsv",
        "results/summary.csv",
        f"{report_dir}/table_alexnet.html",
        f"{report_dir}/table_resnet152.html",
        f"{report_dir}/differences.html",
        f"{report_dir}/saliency_health.html",
        f"{report_dir}/data.html",
        f"{report_dir}/plots/accuracy",
        f"{report_dir}/plots/figure2_depth.png",
        f"{report_dir}/plots/figure3_fusion.png",
        f"{report_dir}/plots/learning_curves.png",
        f"{report_dir}/qualitative",
        f"{report_dir}/results.md",
    ]


def config_summary(config: dict, variant: str, is_synthetic) -> str:
    """One RST paragraph stating the configuration; every report caption includes it."""
    ft = config["train"]["finetune"]
    source = config["source"]["name"]
    ds = ", ".join(f"{d} ({spec['kind']}{', synthetic' if is_synthetic(d) else ''})"
                   for d, spec in config["datasets"].items())
    text = (
        f"Configuration: datasets {ds}; architectures {', '.join(config['archs'])}; methods "
        f"{', '.join(config['methods'])}; k {', '.join(map(str, config['ks']))}; seeds "
        f"{', '.join(map(str, config['seeds']))}; input size {config['data']['input_size']} px; fine-tuning "
        f"{ft['epochs']} epochs (lr {ft['lr']}, weight decay {ft['weight_decay']}, {ft['optimizer']}, "
        f"batch {ft['batch_size']}); backbone weights: {config['model']['weights']}; saliency variant {variant} "
        f"(source set {source}{', synthetic' if is_synthetic(source) else ''})."
    )
    if any(is_synthetic(d) for d in config["datasets"]):
        text += " **SYNTHETIC data \u2014 not a reproduction of the paper**: the paper's values are shown for reference only."
    return text
