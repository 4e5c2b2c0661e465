"""The model side of the SMIC row of the paper (Flores et al. 2019): an explicit saliency map
as a 4th input channel.

The maps themselves (spectral residual, or a folder of PNGs) are data preparation:
:mod:`halsal.data.smic_maps`. The value ``v`` of a map is used as ``s = v / 255`` in the
modulation (Eq. 2: ``l * (s+1)``); :class:`MapInput` lets a model take the map as a 4th input
channel.
"""

from __future__ import annotations

import torch


class MapInput:
    """Mixin for a two-branch model with ``saliency="external"``: a 4-channel input is the
    normalised RGB image plus the map in [0, 1] as the 4th channel (cropped and flipped with
    the image by the input pipeline); it is split off and passed as ``saliency=``."""

    def forward(self, x: torch.Tensor, saliency: torch.Tensor | None = None, return_saliency: bool = False):
        if saliency is None and x.shape[1] == 4:
            x, saliency = x[:, :3], x[:, 3:]
        return super().forward(x, saliency=saliency, return_saliency=return_saliency)
