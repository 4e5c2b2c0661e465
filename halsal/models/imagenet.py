"""ImageNet-1k class indices of an ImageNet-derived source set (Step 1 on a frozen classifier).

Step 1 keeps the backbone's 1000-way ImageNet classifier frozen (Sec. 3.4), so a source set of
ImageNet images with fewer classes (Tiny ImageNet: 200) must be labelled with the ImageNet
indices of its classes. Each class is identified by its WordNet id (``n01443537``), which every
ImageNet-family folder carries in its class folder name; the 1000 wnids in index order are
timm's ``timm/data/_info/imagenet_synsets.txt``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from halsal.errors import HalsalError

_WNID = re.compile(r"(?<![0-9a-z])(n\d{8})(?![0-9])")


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order (from timm)."""
    import timm

    path = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    wnids = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(wnids) != 1000:
        raise HalsalError(f"{path} lists {len(wnids)} wnids, expected 1000: reinstall timm")
    return wnids


def wnid_of(path: str) -> str | None:
    """The wnid in an image path's class folder name (``.../000_n01443537_goldfish/x.jpg``)."""
    m = _WNID.search(Path(path).parent.name)
    return m.group(1) if m else None


def imagenet_labels(paths_by_class: dict[int, str]) -> dict[int, int]:
    """Class label -> ImageNet-1k index, from one image path per class. A class whose folder
    name has no wnid, or a wnid outside ImageNet-1k, is an error naming it."""
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    out, bad = {}, []
    for label, path in paths_by_class.items():
        w = wnid_of(path)
        if w is None or w not in index:
            bad.append(f"{Path(path).parent.name} ({'no wnid' if w is None else w + ' not in ImageNet-1k'})")
        else:
            out[label] = index[w]
    if bad:
        raise HalsalError(
            f"Step 1 on a frozen ImageNet classifier needs ImageNet classes, but {len(bad)} source class folder(s) "
            f"name no ImageNet-1k wnid: {', '.join(bad[:5])}. Name each class folder with its wnid "
            f"(e.g. 000_n01443537_goldfish), or use a backbone trained on the source set (model.weights: scratch)")
    if len(set(out.values())) != len(out):
        raise HalsalError("two source classes map to the same ImageNet-1k class (same wnid): merge them")
    return out
