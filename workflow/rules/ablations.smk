# Ablations (Figures 2-3 of the paper, Eq. 1 vs Eq. 2): the `ablations:` config section turns
# into extra {variant} wildcards of the finetune rule, one factor at a time around each arch's
# main variant (model.saliency_depth / fusion / modulation). Step 1 runs once per variant.
# No rules here: the finetune and pretrain_saliency rules build every grid point. The report
# (report.smk, included after this file) picks the runs up through ablation_metrics_list().

ABL = config.get("ablations") or {}
ABLATION_FACTORS = {"depth": "depths", "fusion": "fusions", "modulation": "modulations"}


def ablation_variants(arch, factor=None):
    """The variants of one factor (depth, fusion, modulation), or of all three, for ``arch``."""
    out = []
    for f, key in ABLATION_FACTORS.items():
        if factor in (None, f):
            out += [variant_for(arch, **{f: value}) for value in ABL.get(key, [])]
    return list(dict.fromkeys(out))


def ablation_metrics(factor=None):
    """metrics.json paths of the configured ablation runs (one factor, or all). Baseline-RGB
    has no saliency branch, so it only runs at the main variant (the figures' reference line)."""
    if not ABL:
        return []
    paths = []
    for arch in ABL.get("archs", ["alexnet"]):
        variants = ablation_variants(arch, factor)
        for method in ABL.get("methods", ["approach_b"]):
            for variant in [VARIANTS[arch]] if method == "baseline" else variants:
                paths += finetune_metrics(archs=[arch], datasets=ABL.get("datasets") or list(config["datasets"]),
                                          methods=[method], ks=ABL.get("ks") or config["ks"],
                                          seeds=ABL.get("seeds") or config["seeds"], variant=variant)
    return list(dict.fromkeys(paths))


def ablation_metrics_list():
    """Every ablation run; report.smk aggregates them with the main grid."""
    return ablation_metrics()
