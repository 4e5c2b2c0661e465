"""Text shared by every caption of the Snakemake report. Torch-free: report.smk imports it
when the workflow loads."""

from __future__ import annotations


def config_summary(plan) -> str:
    """One RST paragraph stating the configuration; every report caption includes it."""
    c = plan.config
    ft = c["train"]["finetune"]
    ds = ", ".join(f"{d} ({s['kind']}{', synthetic' if plan.is_synthetic(d) else ''})" for d, s in c["datasets"].items())
    text = (
        f"Configuration: datasets {ds}; architectures {', '.join(plan.archs)}; methods "
        f"{', '.join(plan.methods)}; k {', '.join(map(str, c['ks']))}; seeds "
        f"{', '.join(map(str, c['seeds']))}; input size {c['data']['input_size']} px; fine-tuning "
        f"{ft['epochs']} epochs (lr {ft['lr']}, weight decay {ft['weight_decay']}, {ft['optimizer']}, "
        f"batch {ft['batch_size']}); backbone weights: {c['model']['weights']}; saliency variant {plan.variant} "
        f"(source set {plan.source}{', synthetic' if plan.is_synthetic(plan.source) else ''})."
    )
    if any(plan.is_synthetic(d) for d in c["datasets"]):
        text += " **SYNTHETIC data \u2014 not a reproduction of the paper**: the paper's values are shown for reference only."
    return text
