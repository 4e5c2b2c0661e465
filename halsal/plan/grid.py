"""The plan's run grid: the main grid (seeds per k) and the ablations (Figures 2-3, Eq. 1 vs 2).
A part of :class:`halsal.plan.Plan`."""

from __future__ import annotations

from halsal import spec
from halsal.plan.common import ABLATION_FACTORS, unique


class GridPlan:
    """``(arch, dataset, method, [variant,] k, seed)`` of every run the config asks for."""

    # --- the main grid -----------------------------------------------------------------------
    def seeds_for(self, k) -> list[int]:
        """The main grid's seeds at ``k``: config `seeds_by_k` where it names k, else `seeds`."""
        by_k = {str(key): seeds for key, seeds in (self.config.get("seeds_by_k") or {}).items()}  # YAML may give int keys
        return list(by_k.get(str(k), self.config["seeds"]))

    def finetune_metrics(self, archs=None, datasets=None, methods=None, ks=None, seeds=None, variant=None) -> list[str]:
        """metrics.json of a fine-tuning grid (defaults: the main grid, each arch at its main variant)."""
        return [self.tree.run_file(a, d, m, variant or self.variants[a], k, s)
                for a, d, m, k, s in self.run_grid(archs, datasets, methods, ks, seeds)]

    def run_grid(self, archs=None, datasets=None, methods=None, ks=None, seeds=None) -> list[tuple]:
        """``(arch, dataset, method, k, seed)`` of a grid (defaults: the main grid)."""
        return [(a, d, m, str(k), s) for a in (archs or self.archs) for d in (datasets or self.datasets)
                for m in (methods or self.methods) for k in (ks or self.ks) for s in (seeds or self.seeds_for(k))]

    def table_metrics(self, arch) -> list[str]:
        """The main grid of ``arch`` (the table1/table2 targets; ``arch`` may be outside `archs`)."""
        self.check_fusion_points([arch])
        return self.finetune_metrics(archs=[arch])

    # --- ablations (Figures 2-3, Eq. 1 vs 2) ---------------------------------------------------
    def ablation_archs(self) -> list[str]:
        return list(self.ablations.get("archs") or spec.ABLATION_ARCHS)

    def ablation_methods(self) -> list[str]:
        return list(self.ablations.get("methods") or [spec.ABLATION_METHOD])

    def has_ablation_variants(self) -> bool:
        return any(self.ablations.get(key) for key in ABLATION_FACTORS.values())

    def ablation_variants(self, arch, factor=None) -> list[str]:
        """The variants of one factor (depth, fusion, modulation), or of all three, for ``arch``."""
        out = []
        for f, key in ABLATION_FACTORS.items():
            if factor in (None, f):
                out += [self.variant_for(arch, **{f: value}) for value in self.ablations.get(key, [])]
        return unique(out)

    def ablation_only_variants(self) -> list[str]:
        """Variants that only the ablations use (their runs: rule finetune_ablation)."""
        if not self.ablations:
            return []
        if "_ablation_only" not in self.__dict__:
            self._ablation_only = sorted(
                {v for a in self.ablation_archs() for v in self.ablation_variants(a)} - set(self.variants.values()))
        return list(self._ablation_only)

    def ablation_grid(self, factor=None) -> list[tuple]:
        """``(arch, dataset, method, variant, k, seed)`` of the ablation runs (one factor, or all);
        Baseline-RGB has no saliency branch, so it runs at the main variant only."""
        if not self.ablations:
            return []
        ks = self.ablation_ks
        seeds = list(self.ablations.get("seeds") or self.config["seeds"])
        out = []
        for arch in self.ablation_archs():
            for method in self.ablation_methods():
                for variant in [self.variants[arch]] if method == spec.BASELINE else self.ablation_variants(arch, factor):
                    out += [(arch, d, method, variant, k, s) for d in self.ablations.get("datasets") or self.datasets
                            for k in ks for s in seeds]
        return unique(out)

    def ablation_metrics(self, factor=None) -> list[str]:
        return unique(self.tree.run_file(a, d, m, v, k, s) for a, d, m, v, k, s in self.ablation_grid(factor))

    def report_grid(self) -> list[tuple]:
        """``(arch, dataset, method, variant, k, seed)`` of every run the report aggregates: the
        main grid, then the ablations."""
        return unique([(a, d, m, self.variants[a], k, s) for a, d, m, k, s in self.run_grid()] + self.ablation_grid())

    def report_metrics(self) -> list[str]:
        return self.report_run_files("metrics.json")
