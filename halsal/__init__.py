"""halsal: Hallucinating Saliency Maps for fine-grained classification (Figueroa-Flores et al., VISAPP 2021).

A two-branch CNN whose saliency branch "hallucinates" a saliency map from the RGB image and
modulates the RGB features by ``l * (s + 1)`` (Eq. 2 of the paper), wrapped in a Snakemake
reproducibility workflow. See ``docs/design.md`` for the layout.
"""

__version__ = "0.1.0"
