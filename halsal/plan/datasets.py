"""The plan's datasets and variants: each dataset's config entry and policies, the arch's
fusion point, weights and ``{variant}``. A part of :class:`halsal.plan.Plan`."""

from __future__ import annotations

from halsal import settings, spec
from halsal.plan.common import unique


class DatasetPlan:
    """Datasets (targets and the source set) and each arch's main variant."""

    # --- datasets ----------------------------------------------------------------------------
    def dataset_spec(self, name) -> dict:
        """The config entry of a target dataset or of the source set."""
        if name == self.source:
            return self.config["source"]
        if name in self.config["datasets"]:
            return self.config["datasets"][name]
        raise ValueError(f"dataset {name!r} is not in the config: add it under `datasets:` "
                         f"(known: {sorted(self.config['datasets'])} and source {self.source!r})")

    def is_synthetic(self, name) -> bool:
        s = self.dataset_spec(name)
        return s["kind"] == settings.SYNTHETIC or bool(s.get("synthetic", False))

    def data_policy(self, name, key):
        """`on_bad_image` / `too_few_images` / `duplicates` / `val_per_class` / `test_per_class` of one dataset: its own entry over
        `data.<key>` (each job gets its own dataset's value only)."""
        return self.dataset_spec(name).get(key, self.config["data"][key])

    def names_of_kind(self, *kinds) -> list[str]:
        """The configured datasets (targets and source) of these kinds."""
        every = {**self.config["datasets"], self.source: self.config["source"]}
        return [n for n, s in every.items() if s["kind"] in kinds]

    def dataset_root(self, name) -> str:
        """Where a folder dataset's images/<class>/<file> tree lives (`source`, else `root`)."""
        s = self.dataset_spec(name)
        return s.get("source") or s["root"]

    def source_used(self) -> bool:
        """Whether a step trains on the source set: Step 0 (weights: scratch) or Step 1."""
        methods, archs = set(self.methods), set(self.archs)
        if self.has_ablation_variants():
            methods |= set(self.ablation_methods())
            archs |= set(self.ablation_archs())
        return bool(methods & set(spec.FROM_STEP1)) or any(self.weights_for(a) == "scratch" for a in archs)

    def data_datasets(self) -> list[str]:
        """The datasets of the report's Data section: the targets, and the source where a step trains on it."""
        return unique(self.datasets + ([self.source] if self.source_used() else []))

    def max_k(self) -> int:
        """The largest integer k of the main grid and the ablations (the split needs it)."""
        ints = [int(k) for k in self.ks + (self.ablation_ks if self.ablations else []) if k != spec.K_ALL]
        return max(ints) if ints else 1

    # --- variants ------------------------------------------------------------------------------
    def _per_arch(self, value, arch, default=None):
        return value.get(arch, default) if isinstance(value, dict) else value

    def fusion_for(self, arch) -> str:
        return self._per_arch(self.config["model"].get("fusion", spec.DEFAULT_FUSION), arch, spec.default_fusion(arch))

    def weights_for(self, arch) -> str:
        return self._per_arch(self.config["model"]["weights"], arch, settings.default("model.weights"))

    def variant_for(self, arch, depth=None, fusion=None, modulation=None) -> str:
        """The {variant} wildcard: saliency depth, fusion point, modulation equation."""
        m = self.config["model"]
        return spec.format_variant(depth or m.get("saliency_depth", spec.PAPER_DEPTH), fusion or self.fusion_for(arch),
                                   modulation or m.get("modulation", spec.PAPER_MODULATION))

    @property
    def fc_width(self) -> int:
        """AlexNet's fc6/fc7 width (model.fc_width; default: AlexNet's own)."""
        return self.config["model"].get("fc_width", spec.ALEXNET_FC_WIDTH)

    def check_fusion_points(self, archs=None) -> None:
        """A ValueError (at parse time) on a fusion point that the arch does not have."""
        wanted = {(a, self.fusion_for(a), "model.fusion") for a in (archs or self.archs)}
        if archs is None:
            wanted |= {(a, f, "ablations.fusions") for a in self.ablations.get("archs", []) for f in self.ablations.get("fusions", [])}
        for arch, fusion, key in sorted(wanted):
            try:
                spec.check_fusion(arch, fusion)
            except ValueError as exc:
                raise ValueError(f"config {key}: {exc}, or give model.fusion per arch "
                                 "(see workflow/schemas/config.schema.yaml)") from None
