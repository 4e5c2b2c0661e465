# Ablations (Figures 2-3 of the paper, Eq. 1 vs Eq. 2): the `ablations:` config section turns
# into extra {variant} wildcards, one factor at a time around each arch's main variant
# (model.saliency_depth / fusion / modulation). Step 1 runs once per variant (pretrain_saliency).
# The runs of the ablation-only variants come from finetune_ablation (train.smk), the finetune
# rule with the ablations' ks and seeds as its job shape; the main variant's (Baseline-RGB
# reference and the main point of each figure) are main-grid runs of the finetune rule.
# ABL and ablation_variants() are in common.smk (the rules need them). The report (report.smk,
# included after this file) picks the runs up through ablation_metrics_list().

def ablation_metrics(factor=None):
    """metrics.json paths of the configured ablation runs (one factor, or all). Baseline-RGB
    has no saliency branch, so it only runs at the main variant (the figures' reference line)."""
    if not ABL:
        return []
    paths = []
    for arch in ABL.get("archs", ["alexnet"]):
        variants = ablation_variants(arch, factor)
        for method in ABL.get("methods", [spec.ABLATION_METHOD]):
            for variant in [VARIANTS[arch]] if method == "baseline" else variants:
                paths += finetune_metrics(archs=[arch], datasets=ABL.get("datasets") or list(config["datasets"]),
                                          methods=[method], ks=ABL.get("ks") or config["ks"],
                                          seeds=ABL.get("seeds") or config["seeds"], variant=variant)
    return list(dict.fromkeys(paths))


def ablation_metrics_list():
    """Every ablation run; report.smk aggregates them with the main grid."""
    return ablation_metrics()
