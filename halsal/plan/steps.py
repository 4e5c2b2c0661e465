"""The plan's other training steps: the Step-1 saliency branches, the Step-0 backbones, the
SMIC maps and the linear probe. A part of :class:`halsal.plan.Plan`."""

from __future__ import annotations

from halsal import spec
from halsal.plan.common import unique


class StepPlan:
    """Steps 0-1, the SMIC maps and the probe runs."""

    # --- Steps 0-1, SMIC maps, the probe -------------------------------------------------------
    def step1_variants(self) -> list[tuple[str, str]]:
        """``(arch, variant)`` of every Step-1 saliency branch the runs start from."""
        out = []
        if set(self.methods) & set(spec.FROM_STEP1):
            out += [(a, self.variants[a]) for a in self.archs]
        if set(self.ablation_methods()) & set(spec.FROM_STEP1) and self.ablations:
            out += [(a, v) for a, _, m, v, _, _ in self.ablation_grid() if m in spec.FROM_STEP1]
        return unique(out)

    def model_archs(self) -> list[str]:
        """Every arch a job uses (its Step-0 backbone)."""
        return unique(self.archs + [a for a, *_ in self.ablation_grid()])

    def reference_maps(self) -> dict[str, str]:
        """dataset -> spectral-residual maps for the health table's reference row (smic.reference)."""
        smic = self.config["smic"]
        if not smic.get("reference"):
            return {}
        if smic["source"] != "spectral_residual":
            raise ValueError("smic.reference: true needs smic.source: spectral_residual (the reference row is the "
                             f"spectral residual), not {smic['source']!r}")
        return {d: self.tree.smic_maps(d) for d in self.datasets}

    def smic_folder(self, dataset) -> str | None:
        """The folder of a dataset's precomputed SMIC maps (smic.source: folder), else None."""
        smic = self.config["smic"]
        if smic["source"] != "folder":
            return None
        folder = smic["folders"].get(dataset)
        if not folder:
            raise ValueError(f"smic.source is 'folder' but smic.folders has no entry for dataset {dataset!r}: "
                             "add the folder of its PNG maps, or set smic.source: spectral_residual")
        return folder

    def smic_datasets(self) -> list[str]:
        """The datasets whose SMIC maps a job reads (method smic, or the reference row)."""
        used = [d for a, d, m, *_ in self.run_grid() if m == "smic"]
        used += [d for a, d, m, *_ in self.ablation_grid() if m == "smic"]
        return unique(used + list(self.reference_maps()))

    def probe_runs(self) -> list[tuple[str, int]]:
        """``(k, seed)`` of the linear probe: every k and seed of the main grid."""
        return [(k, s) for k in self.ks for s in self.seeds_for(k)]

    def probe_outputs(self) -> list[str]:
        if not self.config["probe"]["enabled"]:
            return []
        return [self.tree.probe(a, d) for a in self.archs for d in self.datasets]
